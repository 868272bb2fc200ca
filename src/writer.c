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
 *        2. names: the commit's temporary names (publish.c), this rank's
 *           chunks grouped by file and, sharded, its shard files' headers
 *           (writer_shards.c), then the directory;
 *        3. write: direct save (writer_direct.c), every file of the plan
 *           under its temporary name, one collective transfer per rank
 *           and file; sharded save (writer_shards.c), each rank its own
 *           shard files with POSIX writes;
 *        4. publish, once every rank agreed that every file is durable:
 *           direct save (publish.c), rank 0 renames the files into place
 *           and writes the index last, so that the directory never holds
 *           an index naming files that are not all there; sharded save
 *           (writer_shards.c), each rank renames its own files.  A failure
 *           removes every file of this commit, temporary or renamed;
 *        5. with consolidated_output_path: hfdcp_consolidate() of the
 *           published shards into that directory, with the plan's files
 *           (writer_shards.c).
 *        Every step ends with an agreement: same status everywhere, the
 *        first failing rank's message on every rank.
 *
 * The writer's state and what its files share: writer_internal.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "writer_internal.h"

/* Largest tensor accepted, so that element counts of sub-byte types and
 * file offsets stay far from 64-bit limits. */
#define MAX_TENSOR_BYTES ((uint64_t)1 << 60)

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

/* The arguments of hfdcp_writer_open() that must match on every rank, as
 * compare_with_rank0 sends rank 0's. */
enum { HAS_MAP, THREADS, SHARDED, CONS_THREADS, HAS_CONS, NO_CRC, N_FLAGS };
typedef struct {
    const char *path;
    uint64_t max_shard_bytes;
    uint64_t align;
    int32_t v[N_FLAGS];       /* indexed by the enum above */
    const char *consolidated; /* NULL for none (rank 0's: "" for none) */
} open_args_t;

/* HFDCP_ERR_MISMATCH naming the first of this rank's arguments `a` that
 * differs from rank 0's `r0`, or HFDCP_OK. */
static int first_difference(const open_args_t *a, const open_args_t *r0)
{
    if (strcmp(r0->path, a->path) != 0)
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "hfdcp_writer_open: the path '%s' differs from "
                            "rank 0's '%s'",
                            a->path, r0->path);
    if (r0->max_shard_bytes != a->max_shard_bytes)
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "hfdcp_writer_open: max_shard_bytes %" PRIu64
                            " differs from rank 0's %" PRIu64,
                            a->max_shard_bytes, r0->max_shard_bytes);
    if (r0->align != a->align)
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "hfdcp_writer_open: hint hfdcp_data_alignment "
                            "gives %" PRIu64 " bytes, rank 0's %" PRIu64,
                            a->align, r0->align);
    if (r0->v[HAS_MAP] != a->v[HAS_MAP])
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "hfdcp_writer_open: this rank %s a file map but "
                            "rank 0 %s",
                            a->v[HAS_MAP] ? "has" : "has no",
                            r0->v[HAS_MAP] ? "has one" : "has none");
    if (r0->v[THREADS] != a->v[THREADS])
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "hfdcp_writer_open: thread_count %d differs "
                            "from rank 0's %d",
                            (int)a->v[THREADS], (int)r0->v[THREADS]);
    if (r0->v[SHARDED] != a->v[SHARDED])
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "hfdcp_writer_open: save_sharded is %s on this "
                            "rank but %s on rank 0",
                            a->v[SHARDED] ? "set" : "not set",
                            r0->v[SHARDED] ? "set" : "not set");
    if (r0->v[NO_CRC] != a->v[NO_CRC])
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "hfdcp_writer_open: no_checksums is %s on this "
                            "rank but %s on rank 0",
                            a->v[NO_CRC] ? "set" : "not set",
                            r0->v[NO_CRC] ? "set" : "not set");
    if (r0->v[CONS_THREADS] != a->v[CONS_THREADS])
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "hfdcp_writer_open: num_threads_consolidation "
                            "%d differs from rank 0's %d",
                            (int)a->v[CONS_THREADS], (int)r0->v[CONS_THREADS]);
    if (r0->v[HAS_CONS] != a->v[HAS_CONS] ||
        (a->consolidated != NULL &&
         strcmp(a->consolidated, r0->consolidated) != 0))
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "hfdcp_writer_open: consolidated_output_path "
                            "'%s' differs from rank 0's '%s'",
                            a->consolidated ? a->consolidated : "(none)",
                            r0->v[HAS_CONS] ? r0->consolidated : "(none)");
    return HFDCP_OK;
}

/* Rank 0's path and options against this rank's: HFDCP_ERR_MISMATCH
 * naming what differs. */
static int compare_with_rank0(hfdcp_writer *w, const char *path,
                              const hfdcp_save_options *o)
{
    const char *cons = o->consolidated_output_path;
    open_args_t a = {path, o->max_shard_bytes, w->align,
                     {o->file_map != NULL, o->thread_count,
                      o->save_sharded != 0, o->num_threads_consolidation,
                      cons != NULL, o->no_checksums != 0},
                     cons},
                r0;
    hfdcp__buf b;
    void *data = NULL;
    size_t len = 0;
    hfdcp__rbuf r;
    char *p0 = NULL, *c0 = NULL;
    int rc;

    memset(&r0, 0, sizeof r0);
    hfdcp__buf_init(&b);
    if (w->rank == 0) {
        hfdcp__buf_put_str(&b, path);
        hfdcp__buf_put_u64(&b, a.max_shard_bytes);
        hfdcp__buf_put_u64(&b, a.align);
        hfdcp__buf_put(&b, a.v, sizeof a.v);
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
        if (!hfdcp__rbuf_get_str(&r, &p0) ||
            !hfdcp__rbuf_get_u64(&r, &r0.max_shard_bytes) ||
            !hfdcp__rbuf_get_u64(&r, &r0.align) ||
            !hfdcp__rbuf_get(&r, r0.v, sizeof r0.v) ||
            !hfdcp__rbuf_get_str(&r, &c0)) {
            rc = hfdcp__error(HFDCP_ERR_INTERNAL, "malformed options message");
        } else {
            r0.path = p0;
            r0.consolidated = c0;
            rc = first_difference(&a, &r0);
        }
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
        w->snapshot_max_bytes = opts->snapshot_max_bytes;
        w->checksums = opts->no_checksums == 0;
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
    if (w->async != NULL)
        (void)hfdcp_writer_wait(w);
    writer_release(w);
    MPI_Comm_free(&w->comm);
    free(w);
}

/* ---- add ---- */

/* The name of a chunk (not NULL); `what` names it in messages. */
static int check_name(const char *what, const char *name)
{
    const char *why = "";
    size_t bad_at = 0;

    if (strcmp(name, "__metadata__") == 0)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: the name is reserved for the header's "
                            "metadata", what);
    if (!hfdcp__utf8_valid(name, strlen(name), &bad_at, &why))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: the name is not valid UTF-8 at byte %zu "
                            "(%s)",
                            what, bad_at, why);
    return HFDCP_OK;
}

/* The dtype, the number of dimensions, and the box (off, size) inside the
 * global shape. */
static int check_box(const char *what, hfdcp_dtype dtype, int ndim,
                     const int64_t *shape, const int64_t *off,
                     const int64_t *size)
{
    if (hfdcp_dtype_bits(dtype) == 0)
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
    return HFDCP_OK;
}

/* The sizes in bytes of the tensor (at most MAX_TENSOR_BYTES) and of the
 * chunk (*bytes, whole bytes; with sub-byte elements, whole bytes in every
 * row too).  Called on a box check_box accepted. */
static int check_bytes(const char *what, hfdcp_dtype dtype, int ndim,
                       const int64_t *shape, const int64_t *off,
                       const int64_t *size, uint64_t *bytes)
{
    char box[512];
    uint64_t tbytes;
    int bits = hfdcp_dtype_bits(dtype);
    int rc;

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
        int m = hfdcp__collapse(ndim, shape, off, size, cs, co, cz);
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
    return HFDCP_OK;
}

/* Checks one chunk; fills *bytes with the chunk's size in bytes. */
static int check_chunk(const hfdcp_writer *w, const char *name,
                       hfdcp_dtype dtype, int ndim,
                       const int64_t *shape, const int64_t *off,
                       const int64_t *size, const void *data,
                       uint64_t *bytes)
{
    char what[320];

    if (name == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_add (rank %d): the name is NULL",
                            w->rank);
    snprintf(what, sizeof what, "hfdcp_writer_add (rank %d): tensor '%.200s'",
             w->rank, name);
    if (w->committed)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: the writer has already committed", what);
    HFDCP_TRY(check_name(what, name));
    HFDCP_TRY(check_box(what, dtype, ndim, shape, off, size));
    HFDCP_TRY(check_bytes(what, dtype, ndim, shape, off, size, bytes));
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

/* ---- commit ---- */

/* The steps of the first comment (writer_commit.c), each ending with an
 * agreement. */
int hfdcp_writer_commit(hfdcp_writer *w)
{
    hfdcp__commit c;
    int rc;

    if (w == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_writer_commit: writer is NULL");
    memset(&c, 0, sizeof c);
    rc = hfdcp__agree(w->comm, hfdcp__commit_check(w, "hfdcp_writer_commit"));
    if (rc == HFDCP_OK)
        rc = hfdcp__commit_prepare(w, &c);
    if (rc == HFDCP_OK)
        rc = hfdcp__commit_finish(w, &c, hfdcp__commit_write(w, &c));
    hfdcp__commit_free(&c);
    return rc;
}
