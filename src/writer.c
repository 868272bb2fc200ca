/*
 * writer.c - the public writer: one collective commit from rank-held
 * chunks to a complete HuggingFace checkpoint.
 *
 * open   duplicates the communicator, checks that the path and options
 *        match on every rank, and copies the file map and the hints.
 * add    checks a chunk locally and remembers it (the data is not copied);
 *        an error is also kept for the next commit, so that a rank that
 *        ignores it cannot leave the others waiting.
 * commit 1. plan (plan.c): rank 0 gathers every chunk, checks and lays out
 *           the files, each rank gets what it writes where;
 *        2. write: per output file, under a temporary name in the target
 *           directory, one collective transfer per rank combining all of
 *           its chunks in that file (rank 0 adds the header), then set
 *           size, sync, close; the files one after another (thread_count
 *           above 1 is refused: see check_options);
 *        3. publish (rank 0, after every rank agreed that every file is
 *           durable): write the index under a temporary name and sync it,
 *           remove the old index, then stale checkpoint files, rename the
 *           new files into place, sync the directory, rename the index,
 *           sync the directory.  At no moment does the directory hold an
 *           index naming files that are not all there.  A failure removes
 *           every file of this commit, temporary or renamed.
 *        Every step ends with an agreement: same status everywhere, the
 *        first failing rank's message on every rank.
 */
#define _GNU_SOURCE /* fallocate() */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hfdcp_internal.h"

/* Temporary files: ".hfdcp-tmp-<16 hex digits>-<final name>.tmp".  The
 * ".tmp" suffix keeps them out of every "*.safetensors" listing. */
#define TMP_PREFIX ".hfdcp-tmp-"

/* Largest tensor accepted, so that element counts of sub-byte types and
 * file offsets stay far from 64-bit limits. */
#define MAX_TENSOR_BYTES ((uint64_t)1 << 60)

struct hfdcp_writer_s {
    MPI_Comm comm;
    int rank, size;
    char *path;
    hfdcp_file_map *file_map; /* the writer's copy, or NULL */
    uint64_t max_shard_bytes;
    MPI_Info info;            /* the writer's copy, or MPI_INFO_NULL */
    hfdcp__wchunk *chunks;    /* names and shapes owned */
    size_t n, cap;
    hfdcp__strmap *seen;      /* "<box>;<name>" of this rank's chunks */
    int first_error;          /* first failed add, reported by commit */
    char *first_message;
    bool committed;
};

void hfdcp_save_options_init(hfdcp_save_options *o)
{
    if (o == NULL)
        return;
    memset(o, 0, sizeof *o);
    o->file_map = NULL;
    o->consolidated_output_path = NULL;
    o->info = MPI_INFO_NULL;
}

/* ---- open ---- */

static int check_options(const char *path, const hfdcp_save_options *o)
{
    if (path == NULL || path[0] == '\0')
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_open: the path is %s",
                            path ? "empty" : "NULL");
    if (o->save_sharded)
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "hfdcp_writer_open: save_sharded (per-rank shard "
                            "files) is not implemented yet");
    if (o->consolidated_output_path != NULL)
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "hfdcp_writer_open: consolidated_output_path "
                            "(consolidation of shard files) is not "
                            "implemented yet");
    if (o->num_threads_consolidation != 0)
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "hfdcp_writer_open: num_threads_consolidation "
                            "(consolidation of shard files) is not "
                            "implemented yet");
    if (o->thread_count < 0)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_open: thread_count %d is negative",
                            o->thread_count);
    /* Note: files written concurrently by helper threads (each on its own
     * communicator) were built and measured, then withdrawn: slower on the
     * machines we have, a deadlock under Open MPI's ROMIO (one lock held
     * through every MPI-IO call), and a hang inside OMPIO when a write
     * fails in one thread's file (MPI_File_sync then fails on one rank
     * before OMPIO's internal barrier).  See docs/api.md. */
    if (o->thread_count > 1)
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "hfdcp_writer_open: thread_count %d: writing "
                            "several files at once is not supported; every "
                            "file is written by all ranks, one file after "
                            "another (use 0 or 1)",
                            o->thread_count);
    return HFDCP_OK;
}

/* Rank 0's path and options against this rank's: HFDCP_ERR_MISMATCH
 * naming what differs. */
static int compare_with_rank0(hfdcp_writer *w, const char *path,
                              const hfdcp_save_options *o)
{
    hfdcp__buf b;
    void *data = NULL;
    size_t len = 0;
    hfdcp__rbuf r;
    char *p0 = NULL;
    uint64_t max0 = 0;
    int32_t v[2] = {o->file_map != NULL, o->thread_count}, v0[2] = {0, 0};
    int rc;

    hfdcp__buf_init(&b);
    if (w->rank == 0) {
        hfdcp__buf_put_str(&b, path);
        hfdcp__buf_put_u64(&b, o->max_shard_bytes);
        hfdcp__buf_put(&b, v, sizeof v);
        data = b.data;
        len = b.len;
    }
    rc = hfdcp__agree(w->comm, w->rank == 0 ? hfdcp__buf_status(&b)
                                            : HFDCP_OK);
    if (rc == HFDCP_OK)
        rc = hfdcp__bcast_bytes(w->comm, 0, &data, &len);
    if (rc == HFDCP_OK) {
        hfdcp__rbuf_init(&r, data, len);
        if (!hfdcp__rbuf_get_str(&r, &p0) || !hfdcp__rbuf_get_u64(&r, &max0) ||
            !hfdcp__rbuf_get(&r, v0, sizeof v0))
            rc = hfdcp__error(HFDCP_ERR_INTERNAL, "malformed options message");
        else if (strcmp(p0, path) != 0)
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_writer_open: the path '%s' differs from "
                              "rank 0's '%s'",
                              path, p0);
        else if (max0 != o->max_shard_bytes)
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_writer_open: max_shard_bytes %" PRIu64
                              " differs from rank 0's %" PRIu64,
                              o->max_shard_bytes, max0);
        else if (v0[0] != v[0])
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_writer_open: this rank %s a file map but "
                              "rank 0 %s",
                              v[0] ? "has" : "has no",
                              v0[0] ? "has one" : "has none");
        else if (v0[1] != v[1])
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_writer_open: thread_count %d differs "
                              "from rank 0's %d",
                              (int)v[1], (int)v0[1]);
    }
    free(p0);
    if (w->rank != 0)
        free(data);
    hfdcp__buf_free(&b);
    return rc;
}

static void writer_release(hfdcp_writer *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free((char *)w->chunks[i].name);
        free((int64_t *)w->chunks[i].shape);
    }
    free(w->chunks);
    hfdcp__strmap_free(w->seen);
    hfdcp_file_map_free(w->file_map);
    if (w->info != MPI_INFO_NULL)
        MPI_Info_free(&w->info);
    free(w->path);
    free(w->first_message);
}

int hfdcp_writer_open(MPI_Comm comm, const char *path,
                      const hfdcp_save_options *opts, hfdcp_writer **out)
{
    hfdcp_save_options defaults;
    hfdcp_writer *w;
    MPI_Comm dup;
    int rc = HFDCP_OK, mpi_rc;

    if (out == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_writer_open: out is NULL");
    *out = NULL;
    if (comm == MPI_COMM_NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_open: comm is MPI_COMM_NULL");
    if (opts == NULL) {
        hfdcp_save_options_init(&defaults);
        opts = &defaults;
    }
    /* The duplicate first: from here on every failure is agreed on it. */
    if ((mpi_rc = MPI_Comm_dup(comm, &dup)) != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "hfdcp_writer_open: MPI_Comm_dup");
    if ((mpi_rc = MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN)) !=
        MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "hfdcp_writer_open: "
                              "MPI_Comm_set_errhandler");
    if ((w = calloc(1, sizeof *w)) == NULL) {
        rc = hfdcp__agree(dup, hfdcp__nomem("a writer"));
        MPI_Comm_free(&dup);
        return rc;
    }
    w->comm = dup;
    w->info = MPI_INFO_NULL;
    if (rc == HFDCP_OK &&
        ((mpi_rc = MPI_Comm_rank(w->comm, &w->rank)) != MPI_SUCCESS ||
         (mpi_rc = MPI_Comm_size(w->comm, &w->size)) != MPI_SUCCESS))
        rc = hfdcp__mpi_error(mpi_rc, "hfdcp_writer_open");
    if (rc == HFDCP_OK)
        rc = check_options(path, opts);
    if (rc == HFDCP_OK) {
        w->max_shard_bytes = opts->max_shard_bytes;
        if ((w->path = hfdcp__strdup(path)) == NULL ||
            (w->seen = hfdcp__strmap_new()) == NULL)
            rc = hfdcp__nomem("a writer");
    }
    if (rc == HFDCP_OK)
        rc = hfdcp__file_map_dup(opts->file_map, &w->file_map);
    if (rc == HFDCP_OK && opts->info != MPI_INFO_NULL &&
        (mpi_rc = MPI_Info_dup(opts->info, &w->info)) != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "hfdcp_writer_open: MPI_Info_dup");
    rc = hfdcp__agree(w->comm, rc);
    if (rc == HFDCP_OK)
        rc = hfdcp__agree(w->comm, compare_with_rank0(w, path, opts));
    if (rc != HFDCP_OK) {
        writer_release(w);
        MPI_Comm_free(&w->comm);
        free(w);
        return rc;
    }
    *out = w;
    return HFDCP_OK;
}

void hfdcp_writer_free(hfdcp_writer *w)
{
    if (w == NULL)
        return;
    writer_release(w);
    MPI_Comm_free(&w->comm);
    free(w);
}

/* ---- add ---- */

/* Merges trailing dimensions that the box covers whole: the same bytes
 * described with fewer, longer dimensions (a whole tensor, or a block of
 * whole rows, becomes one run).  Returns the new ndim (>= 1 if ndim >= 1). */
static int collapse(int ndim, const int64_t *shape, const int64_t *off,
                    const int64_t *size, int64_t *cshape, int64_t *coff,
                    int64_t *csize)
{
    int64_t rs[HFDCP_MAX_NDIM], ro[HFDCP_MAX_NDIM], rz[HFDCP_MAX_NDIM];
    int64_t s, o, z;
    int m = 0;

    if (ndim == 0)
        return 0;
    s = shape[ndim - 1];
    o = off[ndim - 1];
    z = size[ndim - 1];
    for (int d = ndim - 2; d >= 0; d--) {
        if (z == s) { /* the inner block is whole: fold dim d into it */
            o = off[d] * s;
            z = size[d] * s;
            s = shape[d] * s;
        } else {
            rs[m] = s;
            ro[m] = o;
            rz[m] = z;
            m++;
            s = shape[d];
            o = off[d];
            z = size[d];
        }
    }
    rs[m] = s;
    ro[m] = o;
    rz[m] = z;
    m++;
    for (int i = 0; i < m; i++) {
        cshape[i] = rs[m - 1 - i];
        coff[i] = ro[m - 1 - i];
        csize[i] = rz[m - 1 - i];
    }
    return m;
}

/* Checks one chunk; fills *bytes with the chunk's size in bytes. */
static int check_chunk(const hfdcp_writer *w, const char *name,
                       hfdcp_dtype dtype, int ndim,
                       const int64_t *shape, const int64_t *off,
                       const int64_t *size, const void *data,
                       uint64_t *bytes)
{
    char what[320], box[512];
    const char *why = "";
    size_t bad_at = 0;
    uint64_t tbytes;
    int bits = hfdcp_dtype_bits(dtype);
    int rc;

    if (name == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_add (rank %d): the name is NULL",
                            w->rank);
    snprintf(what, sizeof what, "hfdcp_writer_add (rank %d): tensor '%.200s'",
             w->rank, name);
    if (w->committed)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: the writer has already committed", what);
    if (strcmp(name, "__metadata__") == 0)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: the name is reserved for the header's "
                            "metadata", what);
    if (!hfdcp__utf8_valid(name, strlen(name), &bad_at, &why))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: the name is not valid UTF-8 at byte %zu "
                            "(%s)",
                            what, bad_at, why);
    if (bits == 0)
        return hfdcp__error(HFDCP_ERR_ARG, "%s: invalid dtype %d", what,
                            (int)dtype);
    if (ndim < 0)
        return hfdcp__error(HFDCP_ERR_ARG, "%s: ndim %d is negative", what,
                            ndim);
    if (ndim > HFDCP_MAX_NDIM)
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "%s: %d dimensions (at most %d)", what, ndim,
                            HFDCP_MAX_NDIM);
    if (ndim > 0 && (shape == NULL || off == NULL || size == NULL))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: global_shape, offsets or sizes is NULL",
                            what);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return hfdcp__error(HFDCP_ERR_ARG,
                                "%s: global shape dimension %d is %" PRId64,
                                what, d, shape[d]);
        if (off[d] < 0 || size[d] < 0 || off[d] > shape[d] - size[d])
            return hfdcp__error(HFDCP_ERR_ARG,
                                "%s: the box (offset %" PRId64 ", size %" PRId64
                                " in dimension %d) is not inside the global "
                                "shape (%" PRId64 ")",
                                what, off[d], size[d], d, shape[d]);
    }
    if ((rc = hfdcp__tensor_bytes(dtype, ndim, shape, what, &tbytes)) !=
        HFDCP_OK)
        return rc == HFDCP_ERR_FORMAT ? HFDCP_ERR_ARG : rc;
    if (tbytes > MAX_TENSOR_BYTES)
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "%s: %" PRIu64 " bytes (at most 2^60)", what,
                            tbytes);
    if ((rc = hfdcp__tensor_bytes(dtype, ndim, size, what, bytes)) !=
        HFDCP_OK) {
        hfdcp__format_box(box, sizeof box, ndim, off, size);
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "%s: the chunk %s of %s elements is not a whole "
                            "number of bytes",
                            what, box, hfdcp_dtype_name(dtype));
    }
    if (bits < 8 && *bytes > 0) {
        /* Sub-byte elements: the collapsed runs must start and end on
         * byte boundaries (no two ranks share a byte). */
        int64_t cs[HFDCP_MAX_NDIM], co[HFDCP_MAX_NDIM], cz[HFDCP_MAX_NDIM];
        int m = collapse(ndim, shape, off, size, cs, co, cz);
        if ((cs[m - 1] * bits) % 8 || (co[m - 1] * bits) % 8 ||
            (cz[m - 1] * bits) % 8) {
            hfdcp__format_box(box, sizeof box, ndim, off, size);
            return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                                "%s: the rows of the chunk %s of %s elements "
                                "(%d bits) do not start and end on whole "
                                "bytes",
                                what, box, hfdcp_dtype_name(dtype), bits);
        }
    }
    if (data == NULL && *bytes > 0)
        return hfdcp__error(HFDCP_ERR_ARG, "%s: data is NULL", what);
    return HFDCP_OK;
}

/* "<o0>:<s0>,...;<name>": a box text never holds ';', so keys differ iff
 * (box, name) pairs do. */
static char *box_key(const char *name, int ndim, const int64_t *off,
                     const int64_t *size)
{
    size_t cap = strlen(name) + (size_t)ndim * 42 + 2, n = 0;
    char *k = malloc(cap);

    if (k == NULL)
        return NULL;
    for (int d = 0; d < ndim; d++)
        n += (size_t)snprintf(k + n, cap - n, "%" PRId64 ":%" PRId64 ",",
                              off[d], size[d]);
    snprintf(k + n, cap - n, ";%s", name);
    return k;
}

static int add_chunk(hfdcp_writer *w, const char *name, hfdcp_dtype dtype,
                     int ndim, const int64_t *shape, const int64_t *off,
                     const int64_t *size, const void *data)
{
    uint64_t bytes;
    hfdcp__wchunk *c;
    char *key;
    bool existed;
    int rc;

    HFDCP_TRY(check_chunk(w, name, dtype, ndim, shape, off, size, data,
                          &bytes));
    if ((key = box_key(name, ndim, off, size)) == NULL)
        return hfdcp__nomem("a chunk key");
    rc = hfdcp__strmap_put(w->seen, key, w->n, &existed);
    free(key);
    HFDCP_TRY(rc);
    if (existed) {
        char box[512];
        hfdcp__format_box(box, sizeof box, ndim, off, size);
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_add (rank %d): tensor '%s': the "
                            "chunk %s was already added on this rank",
                            w->rank, name, box);
    }
    HFDCP_TRY(hfdcp__grow(&w->chunks, &w->cap, w->n, sizeof *w->chunks,
                          "the writer's chunk list"));
    c = &w->chunks[w->n];
    memset(c, 0, sizeof *c);
    if ((c->name = hfdcp__strdup(name)) == NULL)
        return hfdcp__nomem("a tensor name");
    if (ndim > 0) {
        int64_t *dims = malloc(3 * (size_t)ndim * sizeof *dims);
        if (dims == NULL) {
            free((char *)c->name);
            return hfdcp__nomem("a chunk's box");
        }
        memcpy(dims, shape, (size_t)ndim * sizeof *dims);
        memcpy(dims + ndim, off, (size_t)ndim * sizeof *dims);
        memcpy(dims + 2 * ndim, size, (size_t)ndim * sizeof *dims);
        c->shape = dims;
        c->offsets = dims + ndim;
        c->sizes = dims + 2 * ndim;
    }
    c->dtype = dtype;
    c->ndim = ndim;
    c->data = data;
    c->file_index = 0;
    if (w->file_map != NULL &&
        hfdcp_file_map_get(w->file_map, name, &c->file_index) != HFDCP_OK)
        c->file_index = -1;
    hfdcp__error_clear();
    w->n++;
    return HFDCP_OK;
}

int hfdcp_writer_add(hfdcp_writer *w, const char *name, hfdcp_dtype dtype,
                     int ndim, const int64_t *global_shape,
                     const int64_t *offsets, const int64_t *sizes,
                     const void *data)
{
    int rc;

    if (w == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_writer_add: writer is NULL");
    rc = add_chunk(w, name, dtype, ndim, global_shape, offsets, sizes, data);
    if (rc != HFDCP_OK && w->first_error == HFDCP_OK && !w->committed) {
        w->first_error = rc;
        w->first_message = hfdcp__strdup(hfdcp_last_error());
    }
    return rc;
}

/* ---- commit: writing the files ---- */

/* The temporary and final paths of one commit. */
typedef struct {
    size_t n;
    char **tmp;        /* per file */
    char **final;      /* per file */
    char *index_tmp, *index_final;
    char tag[17];
} paths_t;

static void paths_free(paths_t *p)
{
    for (size_t f = 0; f < p->n; f++) {
        if (p->tmp)
            free(p->tmp[f]);
        if (p->final)
            free(p->final[f]);
    }
    free(p->tmp);
    free(p->final);
    free(p->index_tmp);
    free(p->index_final);
    memset(p, 0, sizeof *p);
}

static int make_paths(const hfdcp_writer *w, const hfdcp__wplan *plan,
                      uint64_t tag, paths_t *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->tag, sizeof p->tag, "%016" PRIx64, tag);
    p->n = plan->n_files;
    p->tmp = calloc(p->n, sizeof *p->tmp);
    p->final = calloc(p->n, sizeof *p->final);
    if (p->tmp == NULL || p->final == NULL)
        return hfdcp__nomem("file names");
    for (size_t f = 0; f < p->n; f++) {
        char *tmp = hfdcp__asprintf(TMP_PREFIX "%s-%s.tmp", p->tag,
                                    plan->file_names[f]);
        if (tmp == NULL)
            return hfdcp__nomem("file names");
        p->tmp[f] = hfdcp__path_join(w->path, tmp);
        free(tmp);
        p->final[f] = hfdcp__path_join(w->path, plan->file_names[f]);
        if (p->tmp[f] == NULL || p->final[f] == NULL)
            return hfdcp__nomem("file names");
    }
    char *itmp = hfdcp__asprintf(TMP_PREFIX "%s-%s.tmp", p->tag,
                                 HFDCP_INDEX_NAME);
    if (itmp == NULL)
        return hfdcp__nomem("file names");
    p->index_tmp = hfdcp__path_join(w->path, itmp);
    free(itmp);
    p->index_final = hfdcp__path_join(w->path, HFDCP_INDEX_NAME);
    if (p->index_tmp == NULL || p->index_final == NULL)
        return hfdcp__nomem("file names");
    return HFDCP_OK;
}

/* Rank 0's random tag for temporary names. */
static uint64_t random_tag(void)
{
    uint64_t v = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    struct timespec ts;

    if (f != NULL) {
        if (fread(&v, sizeof v, 1, f) != 1)
            v = 0;
        fclose(f);
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    v ^= ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^
         ((uint64_t)getpid() << 16);
    return v;
}

/* mkdir -p, then check that `path` is a directory. */
static int make_dir(const char *path)
{
    char *p = hfdcp__strdup(path);
    struct stat st;
    int rc = HFDCP_OK;

    if (p == NULL)
        return hfdcp__nomem("a path");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                                 "creating the directory '%s' for '%s'", p,
                                 path);
            goto cleanup;
        }
        *s = '/';
    }
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                             "creating the checkpoint directory '%s'", path);
        goto cleanup;
    }
    if (stat(p, &st) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                             "checking the checkpoint directory '%s'", path);
    else if (!S_ISDIR(st.st_mode))
        rc = hfdcp__error(HFDCP_ERR_IO,
                          "the checkpoint path '%s' exists and is not a "
                          "directory",
                          path);
cleanup:
    free(p);
    return rc;
}

/* This rank's chunks grouped by file: by_file[first[f] .. first[f+1]). */
typedef struct {
    size_t *first;
    size_t *by_file;
} buckets_t;

static int make_buckets(const hfdcp_writer *w, const hfdcp__wplan *plan,
                        buckets_t *b)
{
    size_t nf = plan->n_files;

    b->first = calloc(nf + 1, sizeof *b->first);
    b->by_file = malloc((w->n ? w->n : 1) * sizeof *b->by_file);
    if (b->first == NULL || b->by_file == NULL)
        return hfdcp__nomem("the write lists");
    for (size_t i = 0; i < w->n; i++)
        b->first[plan->assign[i].file + 1]++;
    for (size_t f = 0; f < nf; f++)
        b->first[f + 1] += b->first[f];
    {
        size_t *at = malloc((nf ? nf : 1) * sizeof *at);
        if (at == NULL)
            return hfdcp__nomem("the write lists");
        memcpy(at, b->first, nf * sizeof *at);
        for (size_t i = 0; i < w->n; i++)
            b->by_file[at[plan->assign[i].file]++] = i;
        free(at);
    }
    return HFDCP_OK;
}

static const int64_t zeros[HFDCP_MAX_NDIM];

/* The pieces this rank writes in file f: its chunks there that it was
 * chosen to write (straight from the user's memory, trailing whole
 * dimensions merged), and on rank 0 the header at offset 0. */
static int build_pieces(const hfdcp_writer *w, const hfdcp__wplan *plan,
                        const buckets_t *b, size_t f, hfdcp__piece **out,
                        int64_t **out_dims, size_t *out_n)
{
    size_t a = b->first[f], e = b->first[f + 1], np = 0, nd = 0;
    hfdcp__piece *pieces = malloc((e - a + 1) * sizeof *pieces);
    int64_t *dims;

    for (size_t k = a; k < e; k++)
        nd += 3 * (size_t)(w->chunks[b->by_file[k]].ndim);
    dims = malloc((nd + 3) * sizeof *dims);
    if (pieces == NULL || dims == NULL) {
        free(pieces);
        free(dims);
        return hfdcp__nomem("the write pieces");
    }
    nd = 0;
    if (w->rank == 0 && plan->headers != NULL) {
        hfdcp__piece *p = &pieces[np++];
        dims[0] = (int64_t)plan->header_lens[f];
        p->file_offset = 0;
        p->mem = plan->headers[f];
        p->ndim = 1;
        p->bits = 8;
        p->fshape = p->mshape = p->count = &dims[0];
        p->fstart = p->mstart = zeros;
        nd = 1;
    }
    for (size_t k = a; k < e; k++) {
        size_t i = b->by_file[k];
        const hfdcp__wchunk *c = &w->chunks[i];
        hfdcp__piece *p;
        bool empty = false;

        if (!plan->assign[i].write)
            continue;
        for (int d = 0; d < c->ndim; d++)
            empty = empty || c->sizes[d] == 0;
        if (empty)
            continue;
        p = &pieces[np++];
        p->file_offset = plan->assign[i].offset;
        p->mem = (void *)c->data; /* only read from: this is a write */
        p->bits = hfdcp_dtype_bits(c->dtype);
        p->ndim = collapse(c->ndim, c->shape, c->offsets, c->sizes,
                           dims + nd, dims + nd + c->ndim,
                           dims + nd + 2 * c->ndim);
        p->fshape = dims + nd;
        p->fstart = dims + nd + c->ndim;
        p->count = p->mshape = dims + nd + 2 * c->ndim;
        p->mstart = zeros;
        nd += 3 * (size_t)c->ndim;
    }
    *out = pieces;
    *out_dims = dims;
    *out_n = np;
    return HFDCP_OK;
}

/* Collective: writes file f under its temporary name, sets its size,
 * syncs and closes it.  Agreed status. */
/* Rank 0 creates the file and reserves its blocks before any data moves,
 * so that a full disk (or a quota, or a file size limit) is an error here
 * and not a silent short write later.  Note: Open MPI 4.1's OMPIO does not
 * return the error of a failed pwritev from MPI_File_write_all (it only
 * prints it), so without this a full disk could go unnoticed until the
 * index is written.  File systems without fallocate() (EOPNOTSUPP) are
 * written without a reservation; glibc's posix_fallocate() is not used
 * because it falls back to writing zeros, doubling the I/O. */
static int reserve_space(const char *path, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666), rc = HFDCP_OK;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno, "creating '%s'", path);
#if defined(__linux__)
    if (size > 0 && size <= (uint64_t)INT64_MAX &&
        fallocate(fd, 0, 0, (off_t)size) != 0 && errno != EOPNOTSUPP &&
        errno != ENOSYS && errno != EINVAL)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                             "reserving %" PRIu64 " bytes for '%s'", size, path);
#else
    (void)size;
#endif
    if (close(fd) != 0 && rc == HFDCP_OK)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "closing '%s'", path);
    return rc;
}

static int write_file(const hfdcp_writer *w, const hfdcp__wplan *plan,
                      const buckets_t *b, const paths_t *paths, size_t f)
{
    MPI_Comm comm = w->comm;
    hfdcp__piece *pieces = NULL;
    int64_t *dims = NULL;
    size_t np = 0;
    hfdcp__mfile *mf = NULL;
    int rc, rc2;

    rc = build_pieces(w, plan, b, f, &pieces, &dims, &np);
    if (rc == HFDCP_OK && w->rank == 0)
        rc = reserve_space(paths->tmp[f], plan->file_sizes[f]);
    rc = hfdcp__agree(comm, rc);
    if (rc == HFDCP_OK)
        rc = hfdcp__mfile_open(comm, paths->tmp[f], true, w->info, &mf);
    if (rc == HFDCP_OK) {
        rc = hfdcp__mfile_transfer(mf, true, pieces, np);
        if (rc == HFDCP_OK)
            rc = hfdcp__mfile_set_size(mf, plan->file_sizes[f]);
        if (rc == HFDCP_OK)
            rc = hfdcp__mfile_sync(mf);
        rc2 = hfdcp__mfile_close(mf);
        if (rc == HFDCP_OK)
            rc = rc2;
    }
    free(pieces);
    free(dims);
    return rc;
}

/* Every file in turn, each by every rank (ranks with nothing to write
 * in a file still take part in its collective calls). */
static int write_files(const hfdcp_writer *w, const hfdcp__wplan *plan,
                       const buckets_t *b, const paths_t *paths)
{
    int rc = HFDCP_OK;

    for (size_t f = 0; f < plan->n_files && rc == HFDCP_OK; f++)
        rc = write_file(w, plan, b, paths, f);
    return rc;
}

/* ---- commit: publishing (rank 0) ---- */

static int sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY), rc = HFDCP_OK;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno,
                               "opening the directory '%s' to sync it", path);
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "syncing the directory '%s'",
                             path);
    close(fd);
    return rc;
}

/* Writes `len` bytes to a new file and makes them durable. */
static int write_durable(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    int rc = HFDCP_OK;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno, "creating '%s'", path);
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "writing '%s'", path);
            break;
        }
        data += n;
        len -= (size_t)n;
    }
    if (rc == HFDCP_OK && fsync(fd) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "syncing '%s'", path);
    if (close(fd) != 0 && rc == HFDCP_OK)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "closing '%s'", path);
    return rc;
}

/* Files of an earlier checkpoint (or an interrupted save) that a loader
 * listing the directory would pick up.  The new files' names are not
 * stale: renaming replaces them atomically. */
static bool is_stale(const char *name, const char *own_tmp_prefix,
                     const hfdcp__strmap *new_names)
{
    static const char *const patterns[] = {
        "model.safetensors",
        "model-*-of-*.safetensors",
        "model.safetensors-*-of-*.safetensors",
        "shard-*.safetensors",
        TMP_PREFIX "*",
    };

    if (strncmp(name, own_tmp_prefix, strlen(own_tmp_prefix)) == 0 ||
        hfdcp__strmap_get(new_names, name, NULL))
        return false;
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++)
        if (fnmatch(patterns[i], name, FNM_PERIOD) == 0)
            return true;
    return false;
}

/* The names of stale files in the directory. */
static int list_stale(const hfdcp_writer *w, const hfdcp__wplan *plan,
                      const paths_t *paths, char ***out, size_t *out_n)
{
    hfdcp__strmap *new_names = hfdcp__strmap_new();
    char own[64];
    DIR *d = NULL;
    struct dirent *e;
    char **list = NULL;
    size_t n = 0, cap = 0;
    int rc = HFDCP_OK;

    snprintf(own, sizeof own, TMP_PREFIX "%s-", paths->tag);
    if (new_names == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory listing '%s'", w->path);
    for (size_t f = 0; f < plan->n_files; f++)
        HFDCP_CHECK(hfdcp__strmap_put(new_names, plan->file_names[f], f, NULL));
    if ((d = opendir(w->path)) == NULL) {
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "listing '%s'", w->path);
        goto cleanup;
    }
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (!is_stale(e->d_name, own, new_names))
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 16;
            char **l = realloc(list, c * sizeof *l);
            if (l == NULL)
                HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory listing '%s'",
                           w->path);
            list = l;
            cap = c;
        }
        if ((list[n] = hfdcp__strdup(e->d_name)) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory listing '%s'", w->path);
        n++;
        errno = 0;
    }
    if (errno != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "listing '%s'", w->path);
cleanup:
    if (d != NULL)
        closedir(d);
    hfdcp__strmap_free(new_names);
    if (rc != HFDCP_OK) {
        for (size_t i = 0; i < n; i++)
            free(list[i]);
        free(list);
        return rc;
    }
    *out = list;
    *out_n = n;
    return HFDCP_OK;
}

static int remove_file(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        return hfdcp__os_error(HFDCP_ERR_IO, errno, "removing '%s'", path);
    return HFDCP_OK;
}

/* Rank 0: the new files are durable under temporary names; put them in
 * place.  On failure, every file of this commit is removed. */
static int publish(const hfdcp_writer *w, const hfdcp__wplan *plan,
                   const paths_t *paths)
{
    char *json = NULL, **stale = NULL;
    size_t json_len = 0, n_stale = 0, renamed = 0;
    int rc = HFDCP_OK;

    /* Everything that can fail without touching the old checkpoint. */
    HFDCP_CHECK(hfdcp__index_serialize(&plan->index, &json, &json_len));
    HFDCP_CHECK(write_durable(paths->index_tmp, json, json_len));
    HFDCP_CHECK(list_stale(w, plan, paths, &stale, &n_stale));

    /* The old index first: from now on no index names missing files. */
    HFDCP_CHECK(remove_file(paths->index_final));
    for (size_t i = 0; i < n_stale; i++) {
        char *p = hfdcp__path_join(w->path, stale[i]);
        if (p == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory naming a file");
        rc = remove_file(p);
        free(p);
        HFDCP_CHECK(rc);
    }
    for (; renamed < plan->n_files; renamed++)
        if (rename(paths->tmp[renamed], paths->final[renamed]) != 0) {
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "renaming '%s' to '%s'",
                                 paths->tmp[renamed], paths->final[renamed]);
            goto cleanup;
        }
    HFDCP_CHECK(sync_dir(w->path));
    if (rename(paths->index_tmp, paths->index_final) != 0) {
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "renaming '%s' to '%s'",
                             paths->index_tmp, paths->index_final);
        goto cleanup;
    }
    HFDCP_CHECK(sync_dir(w->path));
cleanup:
    if (rc != HFDCP_OK) {
        for (size_t f = 0; f < renamed; f++)
            unlink(paths->final[f]);
        unlink(paths->index_tmp);
    }
    for (size_t i = 0; i < n_stale; i++)
        free(stale[i]);
    free(stale);
    free(json);
    return rc;
}

/* ---- commit ---- */

int hfdcp_writer_commit(hfdcp_writer *w)
{
    hfdcp__wplan plan;
    paths_t paths;
    buckets_t b = {NULL, NULL};
    uint64_t tag = 0;
    int rc, mpi_rc;
    bool wrote = false;

    if (w == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_commit: writer is NULL");
    memset(&plan, 0, sizeof plan);
    memset(&paths, 0, sizeof paths);
    if (w->committed)
        rc = hfdcp__error(HFDCP_ERR_ARG,
                          "hfdcp_writer_commit: the writer has already "
                          "committed");
    else if (w->first_error != HFDCP_OK)
        rc = hfdcp__error(w->first_error, "%s",
                          w->first_message ? w->first_message
                                           : "an earlier hfdcp_writer_add "
                                             "failed");
    else
        rc = HFDCP_OK;
    w->committed = true;
    HFDCP_CHECK(hfdcp__agree(w->comm, rc));

    /* 1. Plan. */
    HFDCP_CHECK(hfdcp__wplan_make(w->comm, w->chunks, w->n,
                                  w->max_shard_bytes, &plan));

    /* 2. Names and the directory. */
    if (w->rank == 0)
        tag = random_tag();
    mpi_rc = MPI_Bcast(&tag, 1, MPI_UINT64_T, 0, w->comm);
    rc = mpi_rc == MPI_SUCCESS
             ? HFDCP_OK
             : hfdcp__mpi_error(mpi_rc, "broadcasting the commit's tag");
    if (rc == HFDCP_OK)
        rc = make_paths(w, &plan, tag, &paths);
    if (rc == HFDCP_OK)
        rc = make_buckets(w, &plan, &b);
    if (rc == HFDCP_OK && w->rank == 0)
        rc = make_dir(w->path);
    HFDCP_CHECK(hfdcp__agree(w->comm, rc));

    /* 3. Write every file; every rank agreed on the outcome. */
    wrote = true;
    HFDCP_CHECK(write_files(w, &plan, &b, &paths));

    /* 4. Publish. */
    rc = w->rank == 0 ? publish(w, &plan, &paths) : HFDCP_OK;
    rc = hfdcp__agree(w->comm, rc);

cleanup:
    if (rc != HFDCP_OK && wrote) {
        /* Remove this commit's temporary files, then let no rank return
         * before they are gone (a failing barrier changes nothing: the
         * commit has failed already). */
        if (w->rank == 0)
            for (size_t f = 0; f < paths.n; f++)
                unlink(paths.tmp[f]);
        (void)MPI_Barrier(w->comm);
    }
    free(b.first);
    free(b.by_file);
    paths_free(&paths);
    hfdcp__wplan_free(&plan);
    return rc;
}
