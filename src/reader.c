/*
 * reader.c - the public reader: opens a checkpoint (the catalog), collects
 * requests (any box of any tensor, in any dtype convertible from the
 * stored one) and fills them with collective MPI-IO reads.
 *
 * hfdcp_reader_load(), on every rank:
 *   1. agrees on the requests' errors: a rank whose hfdcp_reader_add()
 *      failed makes every rank return that first error (and nothing is
 *      read), so a rank that ignored the error cannot leave the others
 *      waiting;
 *   2. finds, for every file of the catalog, whether this rank needs it
 *      (a request intersects a chunk stored there), and agrees with an
 *      MPI_Allreduce (MAX) on which files some rank needs;
 *   3. for each such file, in catalog order: opens it collectively, moves
 *      this rank's pieces with one hfdcp__mfile_transfer() (a piece is the
 *      intersection of a request with a chunk: file array = the chunk,
 *      memory array = the request's destination), closes it (a reader
 *      of hfdcp__reader_open_catalog(), consolidation's, keeps it open
 *      for the next loads instead).  A rank with nothing to read in a
 *      file still joins;
 *   4. converts the requests that asked for another dtype.
 * With the hint hfdcp_verify_checksums=enable, step 3 also checks the
 * CRC-32C of the chunks of each file read in full (load_check.c), before
 * any conversion: the file's bytes.
 *
 * Dtype conversion: a request whose dtype differs from the stored one is
 * read into a temporary buffer of the request's shape in the stored dtype,
 * allocated before any I/O, then converted into `dest` after the reads.
 * The extra memory is the request's size in the stored dtype; a request
 * in the stored dtype is read straight into `dest`.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp_internal.h"

typedef struct {
    size_t tensor;     /* index in the catalog */
    hfdcp_dtype dtype; /* requested */
    int64_t *offsets;  /* ndim of the tensor (NULL for a scalar) */
    int64_t *sizes;
    void *dest;
    void *tmp;         /* stored-dtype buffer when converting, else NULL */
    uint64_t numel;
} request;

struct hfdcp_reader_s {
    MPI_Comm comm;
    MPI_Info info;      /* a copy of the caller's hints, or MPI_INFO_NULL */
    hfdcp__catalog *cat;
    request *reqs;
    size_t n_reqs, cap_reqs;
    bool check;         /* hint hfdcp_verify_checksums=enable */
    int req_status;     /* first error of hfdcp_reader_add() since load */
    char *req_message;  /* its message */
    bool borrowed;      /* cat is the caller's (hfdcp__reader_open_catalog) */
    hfdcp__mfile **kept; /* per file, open between loads; NULL: a public
                            reader, which opens a file per load */
};

void hfdcp_load_options_init(hfdcp_load_options *o)
{
    if (o == NULL)
        return;
    o->key_map = NULL;
    o->info = MPI_INFO_NULL;
}

/* ---------------------------------------------------------------------- */
/* Open, free, describe                                                   */
/* ---------------------------------------------------------------------- */

int hfdcp_reader_open(MPI_Comm comm, const char *path,
                      const hfdcp_load_options *opts, hfdcp_reader **out)
{
    hfdcp_load_options defaults;
    hfdcp_reader *r = NULL;
    MPI_Comm dup = MPI_COMM_NULL;
    int rc = HFDCP_OK, mpi_rc;
    bool check = false;

    if (comm == MPI_COMM_NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_reader_open: "
                                           "MPI_COMM_NULL communicator");
    if (opts == NULL) {
        hfdcp_load_options_init(&defaults);
        opts = &defaults;
    }
    /* Our own communicator, whose errors come back as codes. */
    rc = hfdcp__comm_dup(comm, "hfdcp_reader_open", &dup);
    if (dup == MPI_COMM_NULL)
        return rc;
    if (rc == HFDCP_OK && (path == NULL || out == NULL))
        rc = hfdcp__error(HFDCP_ERR_ARG, "hfdcp_reader_open: NULL %s",
                          path == NULL ? "path" : "output pointer");
    else if (rc == HFDCP_OK &&
             (rc = hfdcp__mpiio_check_hints(opts->info, "hfdcp_reader_open",
                                            path)) != HFDCP_OK)
        ; /* a bad hint: refused before anything is read */
    else if (rc == HFDCP_OK &&
             (rc = hfdcp__verify_hint(opts->info, "hfdcp_reader_open",
                                      &check)) != HFDCP_OK)
        ;
    else if (rc == HFDCP_OK && (r = calloc(1, sizeof *r)) == NULL)
        rc = hfdcp__nomem("a reader");
    else if (rc == HFDCP_OK) {
        r->comm = dup;
        r->check = check;
        r->info = MPI_INFO_NULL;
        if (opts->info != MPI_INFO_NULL &&
            (mpi_rc = MPI_Info_dup(opts->info, &r->info)) != MPI_SUCCESS) {
            r->info = MPI_INFO_NULL;
            rc = hfdcp__mpi_error(mpi_rc, "hfdcp_reader_open: MPI_Info_dup");
        }
    }
    if ((rc = hfdcp__agree(dup, rc)) != HFDCP_OK)
        goto fail;
    if ((rc = hfdcp__catalog_open(dup, path, opts->key_map, &r->cat)) !=
        HFDCP_OK)
        goto fail;
    *out = r;
    return HFDCP_OK;

fail:
    if (r != NULL) {
        if (r->info != MPI_INFO_NULL)
            MPI_Info_free(&r->info);
        free(r);
    }
    MPI_Comm_free(&dup);
    return rc;
}

int hfdcp__reader_open_catalog(MPI_Comm comm, hfdcp__catalog *cat,
                               MPI_Info info, hfdcp_reader **out)
{
    hfdcp_reader *r = NULL;
    MPI_Comm dup = MPI_COMM_NULL;
    int rc, mpi_rc;

    rc = hfdcp__comm_dup(comm, "opening the shard files", &dup);
    if (dup == MPI_COMM_NULL)
        return rc;
    if (rc == HFDCP_OK && ((r = calloc(1, sizeof *r)) == NULL ||
                           (r->kept = calloc(cat->n_files ? cat->n_files : 1,
                                             sizeof *r->kept)) == NULL))
        rc = hfdcp__nomem("a reader");
    if (rc == HFDCP_OK) {
        r->comm = dup;
        r->info = MPI_INFO_NULL;
        r->cat = cat;
        r->borrowed = true;
        if (info != MPI_INFO_NULL &&
            (mpi_rc = MPI_Info_dup(info, &r->info)) != MPI_SUCCESS) {
            r->info = MPI_INFO_NULL;
            rc = hfdcp__mpi_error(mpi_rc, "opening the shard files: "
                                          "MPI_Info_dup");
        }
    }
    if ((rc = hfdcp__agree(dup, rc)) == HFDCP_OK) {
        *out = r;
        return HFDCP_OK;
    }
    if (r != NULL) {
        if (r->info != MPI_INFO_NULL)
            MPI_Info_free(&r->info);
        free(r->kept);
        free(r);
    }
    MPI_Comm_free(&dup);
    return rc;
}

int hfdcp__reader_close_files(hfdcp_reader *r)
{
    int rc = HFDCP_OK, rc2;

    for (size_t f = 0; r->kept != NULL && f < r->cat->n_files; f++) {
        if (r->kept[f] == NULL)
            continue;
        rc2 = hfdcp__mfile_close(r->kept[f]);
        r->kept[f] = NULL;
        if (rc == HFDCP_OK)
            rc = rc2;
    }
    return hfdcp__agree(r->comm, rc);
}

static void clear_requests(hfdcp_reader *r)
{
    for (size_t i = 0; i < r->n_reqs; i++) {
        free(r->reqs[i].offsets);
        free(r->reqs[i].sizes);
        free(r->reqs[i].tmp);
    }
    r->n_reqs = 0;
    r->req_status = HFDCP_OK;
    free(r->req_message);
    r->req_message = NULL;
}

void hfdcp_reader_free(hfdcp_reader *r)
{
    if (r == NULL)
        return;
    clear_requests(r);
    free(r->reqs);
    free(r->kept);
    if (!r->borrowed)
        hfdcp__catalog_free(r->cat);
    if (r->info != MPI_INFO_NULL)
        MPI_Info_free(&r->info);
    MPI_Comm_free(&r->comm);
    free(r);
}

size_t hfdcp_reader_count(const hfdcp_reader *r)
{
    return r ? r->cat->n_tensors : 0;
}

static void describe(const hfdcp__tensor *t, hfdcp_tensor_info *info)
{
    info->name = t->name;
    info->dtype = t->dtype;
    info->ndim = t->ndim;
    info->shape = t->shape;
}

int hfdcp_reader_tensor(const hfdcp_reader *r, size_t i,
                        hfdcp_tensor_info *info)
{
    if (r == NULL || info == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_reader_tensor: NULL %s",
                            r == NULL ? "reader" : "info");
    if (i >= r->cat->n_tensors)
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "tensor %zu of '%s': the checkpoint has %zu "
                            "tensors",
                            i, r->cat->path, r->cat->n_tensors);
    describe(&r->cat->tensors[i], info);
    return HFDCP_OK;
}

int hfdcp_reader_find(const hfdcp_reader *r, const char *name,
                      hfdcp_tensor_info *info)
{
    size_t i;

    if (r == NULL || name == NULL || info == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_reader_find: NULL %s",
                            r == NULL ? "reader" : name == NULL ? "name"
                                                                : "info");
    if (!hfdcp__strmap_get(r->cat->by_name, name, &i))
        return hfdcp__error(HFDCP_ERR_NOT_FOUND,
                            "no tensor '%s' in '%s'", name, r->cat->path);
    describe(&r->cat->tensors[i], info);
    return HFDCP_OK;
}

/* ---------------------------------------------------------------------- */
/* Requests                                                               */
/* ---------------------------------------------------------------------- */

/* Remembers the first error of a request, for load. */
static int remember(hfdcp_reader *r, int status)
{
    if (r->req_status == HFDCP_OK) {
        r->req_status = status;
        free(r->req_message);
        r->req_message = hfdcp__strdup(hfdcp_last_error());
    }
    return status;
}

int hfdcp__reader_add_failed(hfdcp_reader *r, int status, const char *name,
                             const char *why)
{
    hfdcp__error(status, "request for tensor '%s': %s",
                 name ? name : "(NULL)", why ? why : "refused");
    return r != NULL ? remember(r, status) : status;
}

/* Whether the box of a sub-byte tensor starts and ends on whole bytes
 * along its innermost dimension, once the trailing dimensions it covers
 * whole are merged into it (as the MPI-IO layer does). */
static bool whole_bytes(const hfdcp__tensor *t, const int64_t *offsets,
                        const int64_t *sizes)
{
    uint64_t bits = (uint64_t)hfdcp_dtype_bits(t->dtype), inner = 1;
    int d = t->ndim - 1;

    if (d < 0)
        return bits % 8 == 0;
    while (d > 0 && offsets[d] == 0 && sizes[d] == t->shape[d])
        inner *= (uint64_t)t->shape[d--];
    /* Each product is at most the tensor's size in bits, which the
     * format layer checked fits in 64 bits. */
    return ((uint64_t)offsets[d] * inner * bits) % 8 == 0 &&
           ((uint64_t)sizes[d] * inner * bits) % 8 == 0 &&
           ((uint64_t)t->shape[d] * inner * bits) % 8 == 0;
}

/* Checks a request against tensor `t`.  `box` is the box as text. */
static int check_request(const hfdcp__tensor *t, const char *name,
                         hfdcp_dtype dtype, int ndim, const int64_t *offsets,
                         const int64_t *sizes, const void *dest,
                         const char *box, uint64_t *numel)
{
    char shape[512];
    uint64_t n = 1, bits;
    int tb = hfdcp_dtype_bits(t->dtype);

    hfdcp__format_box(shape, sizeof shape, t->ndim,
                      (const int64_t[HFDCP_MAX_NDIM]){0}, t->shape);
    if (hfdcp_dtype_bits(dtype) == 0)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "request for tensor '%s': invalid dtype %d", name,
                            (int)dtype);
    if (ndim != t->ndim)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "request for tensor '%s' has %d dimensions, the "
                            "tensor has %d (shape %s)",
                            name, ndim, t->ndim, shape);
    if (ndim > 0 && (offsets == NULL || sizes == NULL))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "request for tensor '%s': NULL offsets or sizes",
                            name);
    for (int d = 0; d < ndim; d++) {
        if (offsets[d] < 0 || sizes[d] < 0 ||
            sizes[d] > t->shape[d] - offsets[d] ||
            offsets[d] > t->shape[d])
            return hfdcp__error(HFDCP_ERR_ARG,
                                "request for tensor '%s': box %s is out of "
                                "bounds of shape %s (dimension %d)",
                                name, box, shape, d);
        if (!hfdcp__mul_u64(n, (uint64_t)sizes[d], &n))
            return hfdcp__error(HFDCP_ERR_RANGE,
                                "request for tensor '%s': box %s is too "
                                "large", name, box);
    }
    if (!hfdcp__can_convert(t->dtype, dtype))
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "request for tensor '%s' box %s: cannot convert "
                            "%s to %s (conversions are among F64, F32, F16 "
                            "and BF16)",
                            name, box, hfdcp_dtype_name(t->dtype),
                            hfdcp_dtype_name(dtype));
    if (tb < 8 && n > 0 && !whole_bytes(t, offsets, sizes))
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "request for tensor '%s' box %s: %s elements "
                            "are %d bits; the box must start and end on "
                            "whole bytes along the last dimension that it "
                            "does not cover whole",
                            name, box, hfdcp_dtype_name(t->dtype), tb);
    if (!hfdcp__mul_u64(n, (uint64_t)(tb > hfdcp_dtype_bits(dtype)
                                          ? tb
                                          : hfdcp_dtype_bits(dtype)),
                        &bits))
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "request for tensor '%s': box %s is too large",
                            name, box);
    if (dest == NULL && n > 0)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "request for tensor '%s' box %s: NULL dest",
                            name, box);
    *numel = n;
    return HFDCP_OK;
}

int hfdcp_reader_add(hfdcp_reader *r, const char *name, hfdcp_dtype dtype,
                     int ndim, const int64_t *offsets, const int64_t *sizes,
                     void *dest)
{
    char box[512];
    size_t ti;
    const hfdcp__tensor *t;
    request *q;
    uint64_t numel = 0;
    int rc;

    if (r == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_reader_add: NULL reader");
    if (name == NULL)
        return remember(r, hfdcp__error(HFDCP_ERR_ARG,
                                        "hfdcp_reader_add: NULL name"));
    if (ndim < 0 || ndim > HFDCP_MAX_NDIM)
        return remember(r, hfdcp__error(HFDCP_ERR_ARG,
                                        "request for tensor '%s': %d "
                                        "dimensions", name, ndim));
    if (ndim > 0 && offsets != NULL && sizes != NULL)
        hfdcp__format_box(box, sizeof box, ndim, offsets, sizes);
    else
        snprintf(box, sizeof box, "[]");
    if (!hfdcp__strmap_get(r->cat->by_name, name, &ti))
        return remember(r, hfdcp__error(HFDCP_ERR_NOT_FOUND,
                                        "request for tensor '%s' box %s: no "
                                        "such tensor in '%s'",
                                        name, box, r->cat->path));
    t = &r->cat->tensors[ti];
    rc = check_request(t, name, dtype, ndim, offsets, sizes, dest, box,
                       &numel);
    if (rc != HFDCP_OK)
        return remember(r, rc);

    if (r->n_reqs == r->cap_reqs) {
        size_t cap = r->cap_reqs ? 2 * r->cap_reqs : 16;
        request *nr = realloc(r->reqs, cap * sizeof *nr);
        if (nr == NULL)
            return remember(r, hfdcp__nomem("a read request"));
        r->reqs = nr;
        r->cap_reqs = cap;
    }
    q = &r->reqs[r->n_reqs];
    memset(q, 0, sizeof *q);
    q->tensor = ti;
    q->dtype = dtype;
    q->dest = dest;
    q->numel = numel;
    if (ndim > 0) {
        q->offsets = malloc((size_t)ndim * sizeof *q->offsets);
        q->sizes = malloc((size_t)ndim * sizeof *q->sizes);
        if (q->offsets == NULL || q->sizes == NULL) {
            free(q->offsets);
            free(q->sizes);
            return remember(r, hfdcp__nomem("a read request"));
        }
        memcpy(q->offsets, offsets, (size_t)ndim * sizeof *q->offsets);
        memcpy(q->sizes, sizes, (size_t)ndim * sizeof *q->sizes);
    }
    r->n_reqs++;
    return HFDCP_OK;
}

/* ---------------------------------------------------------------------- */
/* Load                                                                   */
/* ---------------------------------------------------------------------- */

/* Allocates the temporary buffers of converting requests. */
static int alloc_tmps(hfdcp_reader *r)
{
    for (size_t i = 0; i < r->n_reqs; i++) {
        request *q = &r->reqs[i];
        const hfdcp__tensor *t = &r->cat->tensors[q->tensor];
        if (q->dtype == t->dtype || q->numel == 0)
            continue;
        /* checked in add: fits in size_t */
        size_t bytes = (size_t)(q->numel * (uint64_t)hfdcp_dtype_bits(
                                                t->dtype) / 8);
        if ((q->tmp = malloc(bytes)) == NULL)
            return hfdcp__error(HFDCP_ERR_NOMEM,
                                "out of memory allocating %zu bytes to "
                                "convert tensor '%s' from %s to %s",
                                bytes, t->name, hfdcp_dtype_name(t->dtype),
                                hfdcp_dtype_name(q->dtype));
    }
    return HFDCP_OK;
}

/* Calls fn(r, q, chunk, off, size, arg) for every non-empty intersection of
 * a request with a chunk stored in file `file`; `off`/`size` is the
 * intersection.  Returns the number of intersections. */
typedef void (*piece_fn)(const request *q, const hfdcp__tensor *t,
                         const hfdcp__chunk *c, const int64_t *off,
                         const int64_t *size, void *arg);

static size_t for_each_piece(const hfdcp_reader *r, int file, piece_fn fn,
                             void *arg)
{
    int64_t off[HFDCP_MAX_NDIM], size[HFDCP_MAX_NDIM];
    size_t n = 0;

    for (size_t i = 0; i < r->n_reqs; i++) {
        const request *q = &r->reqs[i];
        const hfdcp__tensor *t = &r->cat->tensors[q->tensor];
        if (q->numel == 0)
            continue;
        for (size_t k = 0; k < t->n_chunks; k++) {
            const hfdcp__chunk *c = &t->chunks[k];
            if (c->file != file ||
                !hfdcp__box_intersect(t->ndim, q->offsets, q->sizes,
                                      c->offsets, c->sizes, off, size))
                continue;
            n++;
            if (fn)
                fn(q, t, c, off, size, arg);
        }
    }
    return n;
}

/* Fills pieces one after the other; arrays of 3 * ndim per piece. */
typedef struct {
    hfdcp__piece *pieces;
    int64_t *pool;
    size_t n, used;
} piece_fill;

static void add_piece(const request *q, const hfdcp__tensor *t,
                      const hfdcp__chunk *c, const int64_t *off,
                      const int64_t *size, void *arg)
{
    piece_fill *pf = arg;
    hfdcp__piece *p = &pf->pieces[pf->n++];
    int64_t *fstart = pf->pool + pf->used;
    int64_t *mstart = fstart + t->ndim;
    int64_t *count = mstart + t->ndim;

    pf->used += 3 * (size_t)t->ndim;
    for (int d = 0; d < t->ndim; d++) {
        fstart[d] = off[d] - c->offsets[d];
        mstart[d] = off[d] - q->offsets[d];
        count[d] = size[d];
    }
    p->file_offset = c->file_offset;
    p->mem = q->tmp ? q->tmp : q->dest;
    p->ndim = t->ndim;
    p->bits = hfdcp_dtype_bits(t->dtype);
    p->fshape = c->sizes;
    p->fstart = fstart;
    p->mshape = q->sizes;
    p->mstart = mstart;
    p->count = count;
}

/* The pieces of this rank in file `file`: *pieces and *pool malloc'd. */
static int make_pieces(const hfdcp_reader *r, int file, hfdcp__piece **pieces,
                       size_t *n, int64_t **pool)
{
    piece_fill pf = {0};
    size_t count = for_each_piece(r, file, NULL, NULL);

    *pieces = NULL;
    *pool = NULL;
    *n = 0;
    if (count == 0)
        return HFDCP_OK;
    pf.pieces = malloc(count * sizeof *pf.pieces);
    pf.pool = malloc(count * 3 * HFDCP_MAX_NDIM * sizeof *pf.pool);
    if (pf.pieces == NULL || pf.pool == NULL) {
        free(pf.pieces);
        free(pf.pool);
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "out of memory describing %zu reads from '%s'",
                            count, r->cat->files[file].path);
    }
    for_each_piece(r, file, add_piece, &pf);
    *pieces = pf.pieces;
    *pool = pf.pool;
    *n = pf.n;
    return HFDCP_OK;
}

/* One file: open (unless kept open), one transfer of this rank's
 * pieces, close (unless kept open); then, in a checked load, the
 * checksums of what was read (load_check.c). */
static int load_file(hfdcp_reader *r, int file)
{
    hfdcp__piece *pieces = NULL;
    int64_t *pool = NULL;
    hfdcp__mfile *f = r->kept != NULL ? r->kept[file] : NULL;
    size_t n = 0;
    int rc, rc2;

    rc = hfdcp__agree(r->comm, make_pieces(r, file, &pieces, &n, &pool));
    if (rc == HFDCP_OK && f == NULL)
        rc = hfdcp__mfile_open(r->comm, r->cat->files[file].path, false,
                               r->info, &f);
    if (rc == HFDCP_OK && r->kept != NULL) {
        r->kept[file] = f;
        rc = hfdcp__mfile_transfer(f, false, pieces, n);
    } else if (rc == HFDCP_OK) {
        rc = hfdcp__mfile_transfer(f, false, pieces, n);
        rc2 = hfdcp__mfile_close(f);
        if (rc == HFDCP_OK)
            rc = rc2;
    }
    if (rc == HFDCP_OK && r->check)
        rc = hfdcp__load_check(r->comm, &r->cat->files[file], pieces, n);
    free(pieces);
    free(pool);
    return rc;
}

int hfdcp_reader_load(hfdcp_reader *r)
{
    int *need = NULL, *any = NULL, rc = HFDCP_OK, mpi_rc;
    size_t nf;

    if (r == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_reader_load: NULL reader");
    nf = r->cat->n_files;

    /* 1. The first request error of any rank, on every rank. */
    if (r->req_status != HFDCP_OK)
        rc = hfdcp__error(r->req_status, "%s",
                          r->req_message ? r->req_message
                                         : hfdcp_status_string(r->req_status));
    if ((rc = hfdcp__agree(r->comm, rc)) != HFDCP_OK)
        goto out;

    /* 2. Which files some rank needs; buffers for conversions. */
    need = calloc(nf ? nf : 1, sizeof *need);
    any = calloc(nf ? nf : 1, sizeof *any);
    if (need == NULL || any == NULL)
        rc = hfdcp__nomem("the list of files to read");
    else if (nf > (size_t)INT_MAX)
        rc = hfdcp__error(HFDCP_ERR_UNSUPPORTED, "'%s': %zu files",
                          r->cat->path, nf);
    else
        rc = alloc_tmps(r);
    if (rc == HFDCP_OK)
        for (size_t f = 0; f < nf; f++)
            need[f] = for_each_piece(r, (int)f, NULL, NULL) > 0;
    if ((rc = hfdcp__agree(r->comm, rc)) != HFDCP_OK)
        goto out;
    mpi_rc = MPI_Allreduce(need, any, (int)nf, MPI_INT, MPI_MAX, r->comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "agreeing on the files to read from "
                                      "'%s'", r->cat->path);
    if ((rc = hfdcp__agree(r->comm, rc)) != HFDCP_OK)
        goto out;

    /* 3. One collective transfer per needed file. */
    for (size_t f = 0; f < nf && rc == HFDCP_OK; f++)
        if (any[f])
            rc = load_file(r, (int)f);

    /* 4. Conversions. */
    if (rc == HFDCP_OK) {
        for (size_t i = 0; i < r->n_reqs; i++) {
            request *q = &r->reqs[i];
            if (q->tmp != NULL)
                hfdcp__convert(r->cat->tensors[q->tensor].dtype, q->tmp,
                               q->dtype, q->dest, (size_t)q->numel);
        }
    }

out:
    free(need);
    free(any);
    clear_requests(r);
    return rc;
}
