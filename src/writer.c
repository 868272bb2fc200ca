/*
 * writer.c - the public writer: one collective commit from rank-held
 * chunks to a complete HuggingFace checkpoint, or to per-rank DCP shard
 * files.
 *
 * open   duplicates the communicator, checks that the path and options
 *        match on every rank, and copies the file map and the hints.
 * add    checks a chunk locally and remembers it (the data is not copied);
 *        an error is also kept for the next commit, so that a rank that
 *        ignores it cannot leave the others waiting.
 * commit 1. plan (plan.c): rank 0 gathers every chunk, checks and lays out
 *           the files, each rank gets what it writes where;
 *        2. write, direct save: per output file, under a temporary name in
 *           the target directory, one collective transfer per rank
 *           combining all of its chunks in that file (rank 0 adds the
 *           header), then set size, sync, close, the files one after
 *           another.  With thread_count > 1 the sync is not collective:
 *           after the close, each rank hands the file to helper threads
 *           that fsync it while the calling thread writes the next file
 *           (helper threads make no MPI call);
 *           sharded save (save_sharded): each rank writes the chunks it
 *           was chosen to write into its own shard files with POSIX
 *           writes and fsync, up to thread_count files at once;
 *        3. publish (publish.c), direct save (rank 0, after every rank
 *           agreed that every file is durable): write the index under a
 *           temporary name and sync it, remove the old index, then stale
 *           checkpoint files, rename the new files into place, sync the
 *           directory, rename the index, sync the directory.  At no moment
 *           does the directory hold an index naming files that are not all
 *           there.  Sharded save: rank 0 removes the old index and stale
 *           files, then every rank renames its own files and syncs the
 *           directory.  A failure removes every file of this commit,
 *           temporary or renamed;
 *        4. with consolidated_output_path: hfdcp_consolidate() of the
 *           published shards into that directory, with the plan's files.
 *        Every step ends with an agreement: same status everywhere, the
 *        first failing rank's message on every rank.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hfdcp_testing.h"

/* Largest tensor accepted, so that element counts of sub-byte types and
 * file offsets stay far from 64-bit limits. */
#define MAX_TENSOR_BYTES ((uint64_t)1 << 60)

struct hfdcp_writer_s {
    MPI_Comm comm;
    int rank, size;
    char *path;
    hfdcp_file_map *file_map; /* the writer's copy, or NULL */
    uint64_t max_shard_bytes;
    uint64_t align; /* data buffers' alignment (hint hfdcp_data_alignment) */
    MPI_Info info;            /* the writer's copy, or MPI_INFO_NULL */
    hfdcp__wchunk *chunks;    /* names and shapes owned */
    size_t n, cap;
    int thread_count;         /* files in flight per rank, >= 1 */
    bool sharded;             /* save_sharded */
    char *consolidated;       /* consolidated_output_path, or NULL */
    int consolidation_threads; /* num_threads_consolidation */
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
    if (o->thread_count < 0)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_open: thread_count %d is negative",
                            o->thread_count);
    if (o->num_threads_consolidation < 0)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_open: num_threads_consolidation %d "
                            "is negative",
                            o->num_threads_consolidation);
    if (o->consolidated_output_path == NULL) {
        if (o->num_threads_consolidation != 0)
            return hfdcp__error(HFDCP_ERR_ARG,
                                "hfdcp_writer_open: num_threads_consolidation "
                                "%d has no effect without "
                                "consolidated_output_path",
                                o->num_threads_consolidation);
        return HFDCP_OK;
    }
    if (!o->save_sharded)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_open: consolidated_output_path "
                            "'%s' needs save_sharded = 1 (it consolidates "
                            "the shard files of a sharded save)",
                            o->consolidated_output_path);
    if (o->consolidated_output_path[0] == '\0')
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_open: consolidated_output_path is "
                            "empty");
    if (strcmp(o->consolidated_output_path, path) == 0)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_open: consolidated_output_path "
                            "'%s' is the shard directory itself (publishing "
                            "the consolidated files would remove the shards)",
                            path);
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
    char *p0 = NULL, *c0 = NULL;
    const char *cons = o->consolidated_output_path;
    uint64_t max0 = 0, align0 = 0;
    int32_t v[5] = {o->file_map != NULL, o->thread_count,
                    o->save_sharded != 0, o->num_threads_consolidation,
                    cons != NULL},
            v0[5] = {0, 0, 0, 0, 0};
    int rc;

    hfdcp__buf_init(&b);
    if (w->rank == 0) {
        hfdcp__buf_put_str(&b, path);
        hfdcp__buf_put_u64(&b, o->max_shard_bytes);
        hfdcp__buf_put_u64(&b, w->align);
        hfdcp__buf_put(&b, v, sizeof v);
        hfdcp__buf_put_str(&b, cons ? cons : "");
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
            !hfdcp__rbuf_get_u64(&r, &align0) ||
            !hfdcp__rbuf_get(&r, v0, sizeof v0) ||
            !hfdcp__rbuf_get_str(&r, &c0))
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
        else if (align0 != w->align)
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_writer_open: hint hfdcp_data_alignment "
                              "gives %" PRIu64 " bytes, rank 0's %" PRIu64,
                              w->align, align0);
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
        else if (v0[2] != v[2])
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_writer_open: save_sharded is %s on this "
                              "rank but %s on rank 0",
                              v[2] ? "set" : "not set",
                              v0[2] ? "set" : "not set");
        else if (v0[3] != v[3])
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_writer_open: num_threads_consolidation "
                              "%d differs from rank 0's %d",
                              (int)v[3], (int)v0[3]);
        else if (v0[4] != v[4] || (cons != NULL && strcmp(cons, c0) != 0))
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_writer_open: consolidated_output_path "
                              "'%s' differs from rank 0's '%s'",
                              cons ? cons : "(none)",
                              v0[4] ? c0 : "(none)");
    }
    free(p0);
    free(c0);
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
    free(w->consolidated);
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
    rc = hfdcp__comm_dup(comm, "hfdcp_writer_open", &dup);
    if (dup == MPI_COMM_NULL)
        return rc;
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
    if (rc == HFDCP_OK)
        rc = hfdcp__align_hint(opts->info, "hfdcp_writer_open", &w->align);
    if (rc == HFDCP_OK)
        rc = hfdcp__mpiio_check_hints(opts->info, "hfdcp_writer_open", path);
    if (rc == HFDCP_OK) {
        w->max_shard_bytes = opts->max_shard_bytes;
        w->thread_count = opts->thread_count > 1 ? opts->thread_count : 1;
        w->sharded = opts->save_sharded != 0;
        w->consolidation_threads = opts->num_threads_consolidation;
        if ((w->path = hfdcp__strdup(path)) == NULL ||
            (w->seen = hfdcp__strmap_new()) == NULL ||
            (opts->consolidated_output_path != NULL &&
             (w->consolidated =
                  hfdcp__strdup(opts->consolidated_output_path)) == NULL))
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

int hfdcp__writer_add_failed(hfdcp_writer *w, int status, const char *name,
                             const char *why)
{
    if (w == NULL)
        return hfdcp__error(status, "hfdcp_writer_add: tensor '%.200s': %s",
                            name ? name : "(NULL)", why ? why : "refused");
    hfdcp__error(status, "hfdcp_writer_add (rank %d): tensor '%.200s': %s",
                 w->rank, name ? name : "(NULL)", why ? why : "refused");
    if (w->first_error == HFDCP_OK && !w->committed) {
        w->first_error = status;
        w->first_message = hfdcp__strdup(hfdcp_last_error());
    }
    return status;
}

/* ---- commit: writing the files ---- */

/* The temporary and final paths of one commit (publish.c, as the
 * functions named hfdcp__ that make, create and publish them). */
typedef hfdcp__paths paths_t;

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

/* Collective: writes file f under its temporary name, sets its size and
 * closes it; with `sync`, MPI_File_sync before the close (otherwise the
 * caller makes the file durable).  Agreed status. */
static int write_file(const hfdcp_writer *w, const hfdcp__wplan *plan,
                      const buckets_t *b, const paths_t *paths, size_t f,
                      bool sync)
{
    MPI_Comm comm = w->comm;
    hfdcp__piece *pieces = NULL;
    int64_t *dims = NULL;
    size_t np = 0;
    hfdcp__mfile *mf = NULL;
    int rc, rc2;

    rc = hfdcp__agree(comm, build_pieces(w, plan, b, f, &pieces, &dims,
                                         &np));
    if (rc == HFDCP_OK)
        rc = hfdcp__create_shared(comm, paths->tmp[f], plan->file_sizes[f]);
    if (rc == HFDCP_OK)
        rc = hfdcp__mfile_open(comm, paths->tmp[f], true, w->info, &mf);
    if (rc == HFDCP_OK) {
        rc = hfdcp__mfile_transfer(mf, true, pieces, np);
        if (rc == HFDCP_OK)
            rc = hfdcp__mfile_set_size(mf, plan->file_sizes[f]);
        if (rc == HFDCP_OK && sync)
            rc = hfdcp__mfile_sync(mf);
        rc2 = hfdcp__mfile_close(mf);
        if (rc == HFDCP_OK)
            rc = rc2;
    }
    free(pieces);
    free(dims);
    return rc;
}

/* ---- helper threads (no MPI calls in them) ---- */

int hfdcp__writer_fault_file = -1;

/* The outcome of one job run by a helper thread.  hfdcp_last_error() is
 * thread-local: the message is copied out of the thread that failed. */
typedef struct {
    int status;
    char *message; /* malloc'd, or NULL */
} outcome_t;

static void outcome_set(outcome_t *o, int status)
{
    o->status = status;
    if (status != HFDCP_OK)
        o->message = hfdcp__strdup(hfdcp_last_error());
}

/* Re-raises the first failed outcome (in job order) on the calling
 * thread; frees the messages. */
static int outcome_collect(outcome_t *o, size_t n)
{
    int rc = HFDCP_OK;

    for (size_t i = 0; i < n; i++) {
        if (rc == HFDCP_OK && o[i].status != HFDCP_OK)
            rc = hfdcp__error(o[i].status, "%s",
                              o[i].message ? o[i].message
                                           : "a helper thread failed (no "
                                             "memory for its message)");
        free(o[i].message);
        o[i].message = NULL;
    }
    return rc;
}

/* open + fsync + close: the page cache's dirty pages of the file reach
 * the disk, whichever process wrote them (what MPI_File_sync does for
 * this process's writes). */
static int flush_file(const char *path, int rank, bool fault)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC), rc = HFDCP_OK;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno,
                               "opening '%s' to sync it on rank %d", path,
                               rank);
    if (fault)
        rc = hfdcp__os_error(HFDCP_ERR_IO, EIO,
                             "syncing '%s' on rank %d (test fault)", path,
                             rank);
    else if (fsync(fd) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "syncing '%s' on rank %d",
                             path, rank);
    if (close(fd) != 0 && rc == HFDCP_OK)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "closing '%s' on rank %d",
                             path, rank);
    return rc;
}

/* Direct save with thread_count > 1: files closed by the calling thread
 * wait here to be flushed by n_threads helper threads.  At most n_threads
 * files are queued or being flushed: the caller blocks before handing
 * over one more, so thread_count files are in flight per rank. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    int n_threads;
    int rank;
    const char **paths;   /* per file (the commit's temporary paths) */
    outcome_t *outcomes;  /* per file */
    size_t *queue;        /* file indices; head..tail */
    size_t head, tail;
    size_t busy;          /* queued + being flushed */
    bool closing;
} flusher_t;

static void *flusher_main(void *arg)
{
    flusher_t *fl = arg;

    pthread_mutex_lock(&fl->mu);
    for (;;) {
        size_t f;
        int rc;
        while (fl->head == fl->tail && !fl->closing)
            pthread_cond_wait(&fl->cv, &fl->mu);
        if (fl->head == fl->tail)
            break;
        f = fl->queue[fl->head++];
        pthread_mutex_unlock(&fl->mu);
        rc = flush_file(fl->paths[f], fl->rank,
                        (int64_t)f == (int64_t)hfdcp__writer_fault_file);
        pthread_mutex_lock(&fl->mu);
        outcome_set(&fl->outcomes[f], rc);
        fl->busy--;
        pthread_cond_broadcast(&fl->cv);
    }
    pthread_mutex_unlock(&fl->mu);
    return NULL;
}

/* Starts up to n helper threads for n_files files.  If no thread can be
 * started, files are flushed by the caller in flusher_add (same result,
 * no overlap).  Local. */
static int flusher_start(flusher_t *fl, int n, int rank, char *const *paths,
                         size_t n_files)
{
    memset(fl, 0, sizeof *fl);
    fl->rank = rank;
    fl->paths = (const char **)paths;
    fl->outcomes = calloc(n_files ? n_files : 1, sizeof *fl->outcomes);
    fl->queue = malloc((n_files ? n_files : 1) * sizeof *fl->queue);
    fl->threads = malloc((size_t)n * sizeof *fl->threads);
    if (fl->outcomes == NULL || fl->queue == NULL || fl->threads == NULL) {
        free(fl->outcomes);
        free(fl->queue);
        free(fl->threads);
        return hfdcp__nomem("the flushing threads");
    }
    pthread_mutex_init(&fl->mu, NULL);
    pthread_cond_init(&fl->cv, NULL);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&fl->threads[i], NULL, flusher_main, fl) != 0)
            break;
        fl->n_threads++;
    }
    return HFDCP_OK;
}

/* Hands file f (closed) over to be flushed; waits while the helper
 * threads already have as many files as there are threads. */
static void flusher_add(flusher_t *fl, size_t f)
{
    if (fl->n_threads == 0) {
        outcome_set(&fl->outcomes[f],
                    flush_file(fl->paths[f], fl->rank,
                               (int64_t)f ==
                                   (int64_t)hfdcp__writer_fault_file));
        return;
    }
    pthread_mutex_lock(&fl->mu);
    while (fl->busy >= (size_t)fl->n_threads)
        pthread_cond_wait(&fl->cv, &fl->mu);
    fl->queue[fl->tail++] = f;
    fl->busy++;
    pthread_cond_broadcast(&fl->cv);
    pthread_mutex_unlock(&fl->mu);
}

/* Waits for every flush, stops the threads, and returns the first failure
 * (in file order) on the calling thread.  Local. */
static int flusher_finish(flusher_t *fl, size_t n_files)
{
    int rc;

    pthread_mutex_lock(&fl->mu);
    fl->closing = true;
    pthread_cond_broadcast(&fl->cv);
    pthread_mutex_unlock(&fl->mu);
    for (int i = 0; i < fl->n_threads; i++)
        pthread_join(fl->threads[i], NULL);
    rc = outcome_collect(fl->outcomes, n_files);
    pthread_cond_destroy(&fl->cv);
    pthread_mutex_destroy(&fl->mu);
    free(fl->threads);
    free(fl->queue);
    free(fl->outcomes);
    return rc;
}

/* Every file in turn, each by every rank (ranks with nothing to write
 * in a file still take part in its collective calls).  With
 * thread_count > 1, file f is flushed to disk by helper threads while file
 * f+1 is written; every flush has ended (and its outcome is agreed) when
 * this returns. */
static int write_files(const hfdcp_writer *w, const hfdcp__wplan *plan,
                       const buckets_t *b, const paths_t *paths)
{
    flusher_t fl;
    bool threaded = w->thread_count > 1;
    int rc = HFDCP_OK, frc;

    if (threaded) {
        int local = flusher_start(&fl, w->thread_count - 1, w->rank,
                                  paths->tmp, plan->n_files);
        rc = hfdcp__agree(w->comm, local);
        if (rc != HFDCP_OK) {
            if (local == HFDCP_OK) /* another rank failed: stop ours */
                (void)flusher_finish(&fl, 0);
            return rc;
        }
    }
    for (size_t f = 0; f < plan->n_files && rc == HFDCP_OK; f++) {
        rc = write_file(w, plan, b, paths, f, !threaded);
        if (rc == HFDCP_OK && threaded)
            flusher_add(&fl, f);
    }
    if (threaded) {
        frc = flusher_finish(&fl, plan->n_files);
        if (rc == HFDCP_OK)
            rc = hfdcp__agree(w->comm, frc);
    }
    return rc;
}

/* ---- commit, sharded save: this rank's shard files ---- */

/* One entry of a shard file and the chunk it comes from.  The entry comes
 * first, so that hfdcp__entry_layout_cmp sorts these. */
typedef struct {
    hfdcp__entry e;
    size_t chunk;
} shard_entry_t;

/* Layout order, then registration order (qsort is not stable). */
static int shard_entry_cmp(const void *a, const void *b)
{
    const shard_entry_t *x = a, *y = b;
    int c = hfdcp__entry_layout_cmp(&x->e, &y->e);

    if (c != 0)
        return c;
    return (x->chunk > y->chunk) - (x->chunk < y->chunk);
}

/* One shard file of this rank. */
typedef struct {
    char *tmp, *final;      /* paths */
    char *header;           /* 8-byte length + JSON */
    size_t header_len;
    shard_entry_t *entries; /* in layout order */
    size_t n_entries;
} shard_t;

typedef struct {
    shard_t *files;
    size_t n;
    size_t renamed; /* files renamed into place by publish_shards */
} shards_t;

static void shards_free(shards_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->files[i].tmp);
        free(s->files[i].final);
        free(s->files[i].header);
        free(s->files[i].entries);
    }
    free(s->files);
    memset(s, 0, sizeof *s);
}

/* The file index and the largest index of a file of the plan:
 * "model-00002-of-00005.safetensors" gives 2 and 5, "model.safetensors" 1
 * and 1 (plan.c names files so). */
static int plan_file_index(const char *name, int *idx, int *max)
{
    int n = 0;

    if (strcmp(name, "model.safetensors") == 0) {
        *idx = *max = 1;
        return HFDCP_OK;
    }
    if (sscanf(name, "model-%d-of-%d.safetensors%n", idx, max, &n) == 2 &&
        name[n] == '\0' && *idx >= 1 && *idx <= *max)
        return HFDCP_OK;
    return hfdcp__error(HFDCP_ERR_INTERNAL,
                        "the plan's file name '%s' carries no file index",
                        name);
}

static bool zero_elements(int ndim, const int64_t *shape)
{
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0)
            return true;
    return false;
}

/* Shard file `sh` of plan file f: this rank's chunks there that the plan
 * chose it to write (by_file[a..e)), laid out in hfdcp__entry_layout_cmp
 * order, and the header.  A chunk's entry has the chunk's shape and its
 * offsets in the tensor (DCP_SHARDING_INFO); a chunk of a tensor with no
 * elements is described as the whole tensor at offset 0 (the same zero
 * bytes), so that its global shape can be read back from the shards. */
static int make_shard(const hfdcp_writer *w, const hfdcp__wplan *plan,
                      const buckets_t *b, size_t f, const char *tag,
                      shard_t *sh)
{
    size_t a = b->first[f], e = b->first[f + 1], n = 0;
    int idx, max, rc = HFDCP_OK;
    uint64_t at = 0;
    hfdcp__header h;
    hfdcp__entry *ent = NULL;
    char *name = NULL, *tmp = NULL;

    HFDCP_TRY(plan_file_index(plan->file_names[f], &idx, &max));
    if ((sh->entries = calloc(e - a + 1, sizeof *sh->entries)) == NULL ||
        (ent = malloc((e - a + 1) * sizeof *ent)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory for the shard files");
    for (size_t k = a; k < e; k++) {
        size_t i = b->by_file[k];
        const hfdcp__wchunk *c = &w->chunks[i];
        shard_entry_t *x = &sh->entries[n];

        if (!plan->assign[i].write)
            continue;
        x->chunk = i;
        x->e.name = (char *)c->name;
        x->e.dtype = c->dtype;
        x->e.ndim = c->ndim;
        if (zero_elements(c->ndim, c->shape)) {
            x->e.shape = (int64_t *)c->shape;
            x->e.offsets = (int64_t *)zeros;
        } else {
            x->e.shape = (int64_t *)c->sizes;
            x->e.offsets = (int64_t *)c->offsets;
        }
        n++;
    }
    sh->n_entries = n;
    qsort(sh->entries, n, sizeof *sh->entries, shard_entry_cmp);
    for (size_t k = 0; k < n; k++) {
        shard_entry_t *x = &sh->entries[k];
        uint64_t bytes;

        if (k > 0 && strcmp(x->e.name, sh->entries[k - 1].e.name) == 0 &&
            zero_elements(x->e.ndim, w->chunks[x->chunk].shape)) {
            /* Two empty chunks of an empty tensor: one whole-tensor entry
             * says it all. */
            memmove(x, x + 1, (n - k - 1) * sizeof *x);
            n--;
            k--;
            continue;
        }
        if (k > 0 && strcmp(x->e.name, sh->entries[k - 1].e.name) == 0) {
            const hfdcp__wchunk *c0 = &w->chunks[sh->entries[k - 1].chunk],
                                *c1 = &w->chunks[x->chunk];
            char b0[256], b1[256];
            hfdcp__format_box(b0, sizeof b0, c0->ndim, c0->offsets,
                              c0->sizes);
            hfdcp__format_box(b1, sizeof b1, c1->ndim, c1->offsets,
                              c1->sizes);
            HFDCP_FAIL(HFDCP_ERR_UNSUPPORTED,
                       "tensor '%s': rank %d would write two chunks of it, "
                       "%s and %s, to one shard file; a shard file holds one "
                       "chunk per tensor (save_sharded: give each rank one "
                       "box per tensor)",
                       x->e.name, w->rank, b0, b1);
        }
        HFDCP_CHECK(hfdcp__tensor_bytes(x->e.dtype, x->e.ndim, x->e.shape,
                                        x->e.name, &bytes));
        x->e.begin = at;
        x->e.end = at + bytes;
        at += bytes;
        ent[k] = x->e;
    }
    sh->n_entries = n;
    memset(&h, 0, sizeof h);
    h.entries = ent;
    h.n_entries = n;
    h.sharded = true;
    h.data_size = at;
    h.align = w->align;
    if ((name = hfdcp__asprintf("shard-%05d-model-%05d-of-%05d.safetensors",
                                w->rank + 1, idx, max)) == NULL ||
        (tmp = hfdcp__asprintf(HFDCP_TMP_PREFIX "%s-%s.tmp", tag,
                               name)) == NULL ||
        (sh->final = hfdcp__path_join(w->path, name)) == NULL ||
        (sh->tmp = hfdcp__path_join(w->path, tmp)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory naming the shard files");
    rc = hfdcp__header_serialize(&h, &sh->header, &sh->header_len);
    if (rc != HFDCP_OK)
        hfdcp__error_prefix(rc, "shard file '%s' of rank %d", name, w->rank);
cleanup:
    free(ent);
    free(name);
    free(tmp);
    return rc;
}

/* This rank's shard files: one per plan file in which it writes a chunk
 * (on rank 0, one empty file when the checkpoint has no tensor at all, so
 * that the directory still reads as an empty checkpoint).  Local. */
static int make_shards(const hfdcp_writer *w, const hfdcp__wplan *plan,
                       const buckets_t *b, const char *tag, shards_t *s)
{
    bool empty_checkpoint = w->rank == 0 && plan->headers != NULL &&
                            plan->index.n == 0;

    memset(s, 0, sizeof *s);
    if ((s->files = calloc(plan->n_files, sizeof *s->files)) == NULL)
        return hfdcp__nomem("the shard files");
    for (size_t f = 0; f < plan->n_files; f++) {
        bool writes = empty_checkpoint && f == 0;
        for (size_t k = b->first[f]; !writes && k < b->first[f + 1]; k++)
            writes = plan->assign[b->by_file[k]].write != 0;
        if (!writes)
            continue;
        s->n++;
        HFDCP_TRY(make_shard(w, plan, b, f, tag, &s->files[s->n - 1]));
    }
    return HFDCP_OK;
}

/* Writes `len` bytes at `off`, in calls of at most 1 GiB (Linux moves at
 * most about 2 GiB per call). */
static int pwrite_all(int fd, const void *data, uint64_t len, uint64_t off,
                      const char *path, int rank)
{
    const char *p = data;

    while (len > 0) {
        size_t n = len > ((uint64_t)1 << 30) ? (size_t)1 << 30 : (size_t)len;
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return hfdcp__os_error(HFDCP_ERR_IO, errno,
                                   "writing %zu bytes at offset %" PRIu64
                                   " of '%s' on rank %d",
                                   n, off, path, rank);
        if (k == 0)
            return hfdcp__error(HFDCP_ERR_IO,
                                "writing '%s' on rank %d: no progress at "
                                "offset %" PRIu64,
                                path, rank, off);
        p += k;
        off += (uint64_t)k;
        len -= (uint64_t)k;
    }
    return HFDCP_OK;
}

/* One shard file, by one thread: create, write the header and every
 * chunk straight from the user's buffer, fsync, close. */
static int write_shard(const hfdcp_writer *w, const shard_t *sh, bool fault)
{
    int fd = open(sh->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    int rc, rank = w->rank;
    uint64_t at;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno,
                               "creating '%s' on rank %d", sh->tmp, rank);
    rc = pwrite_all(fd, sh->header, sh->header_len, 0, sh->tmp, rank);
    at = sh->header_len;
    for (size_t k = 0; rc == HFDCP_OK && k < sh->n_entries; k++) {
        const shard_entry_t *x = &sh->entries[k];
        uint64_t n = x->e.end - x->e.begin;
        if (n > 0)
            rc = pwrite_all(fd, w->chunks[x->chunk].data, n, at, sh->tmp,
                            rank);
        at += n;
    }
    if (rc == HFDCP_OK && fault)
        rc = hfdcp__os_error(HFDCP_ERR_IO, EIO,
                             "syncing '%s' on rank %d (test fault)", sh->tmp,
                             rank);
    if (rc == HFDCP_OK && fsync(fd) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "syncing '%s' on rank %d",
                             sh->tmp, rank);
    if (close(fd) != 0 && rc == HFDCP_OK)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "closing '%s' on rank %d",
                             sh->tmp, rank);
    return rc;
}

/* Up to thread_count shard files at once: the calling thread and helper
 * threads take the next file in turn. */
typedef struct {
    const hfdcp_writer *w;
    const shards_t *s;
    outcome_t *outcomes;
    pthread_mutex_t mu;
    size_t next;
} shard_pool_t;

static void *shard_worker(void *arg)
{
    shard_pool_t *pool = arg;

    for (;;) {
        size_t i;
        pthread_mutex_lock(&pool->mu);
        i = pool->next++;
        pthread_mutex_unlock(&pool->mu);
        if (i >= pool->s->n)
            break;
        outcome_set(&pool->outcomes[i],
                    write_shard(pool->w, &pool->s->files[i],
                                (int64_t)i ==
                                    (int64_t)hfdcp__writer_fault_file));
    }
    return NULL;
}

/* Writes and syncs this rank's shard files.  Local (the caller agrees). */
static int write_shards(const hfdcp_writer *w, const shards_t *s)
{
    shard_pool_t pool;
    pthread_t *threads = NULL;
    int want = w->thread_count, started = 0;

    if ((size_t)want > s->n)
        want = (int)s->n;
    memset(&pool, 0, sizeof pool);
    pool.w = w;
    pool.s = s;
    if ((pool.outcomes = calloc(s->n + 1, sizeof *pool.outcomes)) == NULL)
        return hfdcp__nomem("the shard writers");
    pthread_mutex_init(&pool.mu, NULL);
    if (want > 1 && (threads = malloc((size_t)want * sizeof *threads)) != NULL)
        for (int i = 0; i < want - 1; i++) {
            if (pthread_create(&threads[i], NULL, shard_worker, &pool) != 0)
                break; /* fewer threads: the same files, less overlap */
            started++;
        }
    shard_worker(&pool);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    pthread_mutex_destroy(&pool.mu);
    int rc = outcome_collect(pool.outcomes, s->n);
    free(pool.outcomes);
    return rc;
}

/* ---- commit, sharded save: publishing (direct save: publish.c) ---- */

/* Collective, sharded save, once every rank's shard files are durable
 * under temporary names: rank 0 removes the old index and stale files
 * (earlier shards, model files, leftovers), then every rank renames its
 * own files into place and syncs the directory.  On failure each rank
 * removes the files it renamed.  Agreed status. */
static int publish_shards(const hfdcp_writer *w, shards_t *s,
                          const char *tag)
{
    int rc = w->rank == 0 ? hfdcp__remove_old(w->path, tag, NULL)
                          : HFDCP_OK;

    HFDCP_TRY(hfdcp__agree(w->comm, rc));
    while (rc == HFDCP_OK && s->renamed < s->n) {
        const shard_t *sh = &s->files[s->renamed];
        if (rename(sh->tmp, sh->final) != 0)
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                                 "renaming '%s' to '%s' on rank %d", sh->tmp,
                                 sh->final, w->rank);
        else
            s->renamed++;
    }
    if (rc == HFDCP_OK && s->n > 0)
        rc = hfdcp__sync_dir(w->path);
    return hfdcp__agree(w->comm, rc);
}

/* ---- commit: consolidation ---- */

/* Collective: the file map under which hfdcp_consolidate() writes the
 * files of this plan, from rank 0's index (tensor -> the index its file
 * name carries), broadcast; *out = NULL when the plan has the single file
 * model.safetensors, which is what no map gives (every rank has the file
 * table, so every rank takes the same branch).  Agreed status. */
static int plan_file_map(const hfdcp_writer *w, const hfdcp__wplan *plan,
                         hfdcp_file_map **out)
{
    hfdcp__buf b;
    hfdcp__rbuf r;
    void *data = NULL;
    size_t len = 0;
    hfdcp_file_map *m = NULL;
    uint64_t n = 0;
    int rc = HFDCP_OK;

    *out = NULL;
    if (plan->n_files == 1 &&
        strcmp(plan->file_names[0], "model.safetensors") == 0)
        return HFDCP_OK;
    hfdcp__buf_init(&b);
    if (w->rank == 0) {
        hfdcp__buf_put_u64(&b, plan->index.n);
        for (size_t i = 0; rc == HFDCP_OK && i < plan->index.n; i++) {
            int idx, max;
            rc = plan_file_index(plan->index.files[i], &idx, &max);
            hfdcp__buf_put_str(&b, plan->index.names[i]);
            hfdcp__buf_put_u64(&b, (uint64_t)idx);
        }
        if (rc == HFDCP_OK)
            rc = hfdcp__buf_status(&b);
        data = b.data;
        len = b.len;
    }
    HFDCP_CHECK(hfdcp__agree(w->comm, rc));
    HFDCP_CHECK(hfdcp__agree(w->comm,
                             hfdcp__bcast_bytes(w->comm, 0, &data, &len)));
    rc = hfdcp_file_map_create(&m);
    hfdcp__rbuf_init(&r, data, len);
    if (rc == HFDCP_OK && !hfdcp__rbuf_get_u64(&r, &n))
        rc = hfdcp__error(HFDCP_ERR_INTERNAL, "malformed file map message");
    for (uint64_t i = 0; rc == HFDCP_OK && i < n; i++) {
        char *name = NULL;
        uint64_t idx = 0;
        if (!hfdcp__rbuf_get_str(&r, &name) || !hfdcp__rbuf_get_u64(&r, &idx))
            rc = hfdcp__error(HFDCP_ERR_INTERNAL,
                              "malformed file map message");
        else
            rc = hfdcp_file_map_set(m, name, (int)idx);
        free(name);
    }
    rc = hfdcp__agree(w->comm, rc);
cleanup:
    if (w->rank != 0)
        free(data);
    hfdcp__buf_free(&b);
    if (rc != HFDCP_OK)
        hfdcp_file_map_free(m);
    else
        *out = m;
    return rc;
}

/* Collective: the published shards of w->path into w->consolidated, laid
 * out as a direct save of the same plan would be. */
static int consolidate_shards(const hfdcp_writer *w,
                              const hfdcp__wplan *plan)
{
    hfdcp_consolidate_options co;
    hfdcp_file_map *map = NULL;
    int rc;

    HFDCP_TRY(plan_file_map(w, plan, &map));
    hfdcp_consolidate_options_init(&co);
    co.num_threads = w->consolidation_threads;
    co.info = w->info;
    rc = hfdcp_consolidate(w->comm, w->path, w->consolidated, map, &co);
    hfdcp_file_map_free(map);
    if (rc != HFDCP_OK)
        hfdcp__error_prefix(rc,
                            "hfdcp_writer_commit: the shard files are saved "
                            "in '%s' but consolidating them into '%s' failed",
                            w->path, w->consolidated);
    return rc;
}

/* Rank 0: consolidated_output_path must not be the shard directory under
 * another name (its publication would remove the shards). */
static int check_output_dir(const hfdcp_writer *w)
{
    struct stat a, b;

    if (w->consolidated == NULL || stat(w->path, &a) != 0 ||
        stat(w->consolidated, &b) != 0)
        return HFDCP_OK;
    if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_commit: consolidated_output_path "
                            "'%s' is the shard directory '%s' itself",
                            w->consolidated, w->path);
    return HFDCP_OK;
}

/* ---- commit ---- */

int hfdcp_writer_commit(hfdcp_writer *w)
{
    hfdcp__wplan plan;
    paths_t paths;
    shards_t shards;
    buckets_t b = {NULL, NULL};
    uint64_t tag = 0;
    int rc, mpi_rc;
    bool wrote = false;

    if (w == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_commit: writer is NULL");
    memset(&plan, 0, sizeof plan);
    memset(&paths, 0, sizeof paths);
    memset(&shards, 0, sizeof shards);
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
        rc = w->rank == 0 ? check_output_dir(w) : HFDCP_OK;
    w->committed = true;
    HFDCP_CHECK(hfdcp__agree(w->comm, rc));

    /* 1. Plan. */
    HFDCP_CHECK(hfdcp__wplan_make(w->comm, w->chunks, w->n,
                                  w->max_shard_bytes, w->align, &plan));

    /* 2. Names (and, sharded, this rank's headers: a chunk a shard file
     * cannot hold is refused here, before anything is written), then the
     * directory. */
    if (w->rank == 0)
        tag = hfdcp__random_tag();
    mpi_rc = MPI_Bcast(&tag, 1, MPI_UINT64_T, 0, w->comm);
    rc = mpi_rc == MPI_SUCCESS
             ? HFDCP_OK
             : hfdcp__mpi_error(mpi_rc, "broadcasting the commit's tag");
    if (rc == HFDCP_OK)
        rc = hfdcp__paths_make(w->path, &plan, tag, &paths);
    if (rc == HFDCP_OK)
        rc = make_buckets(w, &plan, &b);
    if (rc == HFDCP_OK && w->sharded)
        rc = make_shards(w, &plan, &b, paths.tag, &shards);
    HFDCP_CHECK(hfdcp__agree(w->comm, rc));
    rc = w->rank == 0 ? hfdcp__make_dir(w->path) : HFDCP_OK;
    HFDCP_CHECK(hfdcp__agree(w->comm, rc));

    /* 3. Write every file; every rank agreed on the outcome. */
    wrote = true;
    if (w->sharded)
        HFDCP_CHECK(hfdcp__agree(w->comm, write_shards(w, &shards)));
    else
        HFDCP_CHECK(write_files(w, &plan, &b, &paths));

    /* 4. Publish. */
    if (w->sharded) {
        HFDCP_CHECK(publish_shards(w, &shards, paths.tag));
    } else {
        rc = w->rank == 0 ? hfdcp__publish(w->path, &plan, &paths)
                          : HFDCP_OK;
        HFDCP_CHECK(hfdcp__agree(w->comm, rc));
    }
    wrote = false; /* published: a failed consolidation keeps the shards */

    /* 5. Consolidate. */
    if (w->consolidated != NULL)
        rc = consolidate_shards(w, &plan);

cleanup:
    if (rc != HFDCP_OK && wrote) {
        /* Remove this commit's files (temporary, or renamed by a failed
         * sharded publication), then let no rank return before they are
         * gone (a failing barrier changes nothing: the commit has failed
         * already). */
        if (w->rank == 0 && !w->sharded)
            for (size_t f = 0; f < paths.n; f++)
                unlink(paths.tmp[f]);
        for (size_t i = 0; i < shards.n; i++)
            unlink(i < shards.renamed ? shards.files[i].final
                                      : shards.files[i].tmp);
        (void)MPI_Barrier(w->comm);
    }
    free(b.first);
    free(b.by_file);
    shards_free(&shards);
    hfdcp__paths_free(&paths);
    hfdcp__wplan_free(&plan);
    return rc;
}
