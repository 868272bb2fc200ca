/*
 * plan.c - the writer's save plan: which rank writes which chunk, in which
 * file, at which offset.
 *
 * Every rank packs the chunks it registered (hfdcp__wplan_pack); rank 0
 * gathers them and computes the global plan (hfdcp__wplan_global):
 *   1. parse every rank's chunks.  Tensors are numbered in registration
 *      order: order of first appearance, rank 0's chunks first in the
 *      order it added them, then rank 1's new names, and so on.  Every
 *      holder of a tensor must agree with its first holder on dtype, shape
 *      and file map entry, and every chunk must lie inside its tensor;
 *   2. sort all chunks by (tensor, box, rank): identical boxes held by
 *      several ranks become neighbours and form one group; the distinct
 *      boxes of a tensor must tile it exactly (hfdcp__tiling_check);
 *   3. a group with one holder is written by it; replicated groups, the
 *      largest first, go to the holder with the fewest bytes so far
 *      (greedy longest-first balance of the bytes written per rank);
 *   4. file indices: from the file map; else HF's greedy split under
 *      max_shard_bytes in registration order; else everything in file 1.
 *      Files are named model-{i:05d}-of-{N:05d}.safetensors.  With a file
 *      map, N is the largest index in the map (every rank's map must have
 *      the same), used by a saved tensor or not, also when it is 1, as
 *      PyTorch's HuggingFace writer names them.  Without one, N is the
 *      number of files, and a single file is model.safetensors, as
 *      transformers' save_pretrained names it.  An index no tensor uses
 *      (a gap in a file map, or indices above the largest used) gives no
 *      file;
 *   5. each file's layout: tensors sorted by hfdcp__entry_layout_cmp,
 *      contiguous from data offset 0, and its header bytes; with
 *      checksums, hfdcp_crc32c holds 00000000 for every tensor until the
 *      writer, once the ranks have combined the CRCs of the runs they
 *      write, fills the values in (hfdcp__wplan_put_crcs).
 * The cost is O(C log C) for C chunks (hash map, sorts), plus the tiling
 * checks, skipped for the common tensor held whole.
 *
 * hfdcp__wplan_make() runs this as a collective: Gather of the packed
 * sizes, Gatherv of the packed chunks to rank 0, then Scatterv of each
 * rank's assignments (24 bytes per chunk) and a broadcast of the file
 * table.  Every step ends with an agreement, so a failure on one rank
 * (or a bad plan found by rank 0) reaches every rank.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp_internal.h"

/* The packed form of a rank's chunks, every field 8-byte aligned so that
 * the planner reads shapes and boxes in place (no copy):
 *   u64 count, u64 map_files (hfdcp__file_map_files of the rank's map)
 *   per chunk: u64 name length L; the name, its NUL, zeros up to a
 *   multiple of 8; i32 dtype, i32 ndim, i32 file index, i32 zero;
 *   i64 shape[ndim], offsets[ndim], sizes[ndim].
 * Smallest chunk: 8 + 8 + 16 bytes. */
#define MIN_PACKED_CHUNK 32
#define PACKED_HEAD 16

static size_t padded_name(size_t len)
{
    return (len + 1 + 7) / 8 * 8;
}

/* Room for a shape or a box of HFDCP_MAX_NDIM dims in messages. */
#define DIMS_TEXT 512

int hfdcp__wplan_pack(const hfdcp__wchunk *chunks, size_t n, int map_files,
                      hfdcp__buf *out)
{
    static const char zeros[8];
    size_t total = PACKED_HEAD;

    hfdcp__buf_init(out);
    /* One allocation of the exact size: no regrowth for large plans. */
    for (size_t i = 0; i < n; i++)
        total += 8 + padded_name(strlen(chunks[i].name)) + 16 +
                 3 * (size_t)chunks[i].ndim * sizeof(int64_t);
    if ((out->data = malloc(total)) == NULL)
        return hfdcp__nomem("the packed chunk list");
    out->cap = total;
    hfdcp__buf_put_u64(out, (uint64_t)n);
    hfdcp__buf_put_u64(out, (uint64_t)(map_files > 0 ? map_files : 0));
    for (size_t i = 0; i < n; i++) {
        const hfdcp__wchunk *c = &chunks[i];
        size_t len = strlen(c->name);
        int32_t v[4] = {(int32_t)c->dtype, c->ndim, c->file_index, 0};
        size_t dims = (size_t)c->ndim * sizeof(int64_t);

        hfdcp__buf_put_u64(out, len);
        hfdcp__buf_put(out, c->name, len);
        hfdcp__buf_put(out, zeros, padded_name(len) - len); /* NUL, pad */
        hfdcp__buf_put(out, v, sizeof v);
        if (c->ndim > 0) {
            hfdcp__buf_put(out, c->shape, dims);
            hfdcp__buf_put(out, c->offsets, dims);
            hfdcp__buf_put(out, c->sizes, dims);
        }
    }
    return hfdcp__buf_status(out);
}

/* ---- the global plan ---- */

typedef struct {
    const char *name;     /* in the packed input */
    hfdcp_dtype dtype;
    int ndim;
    int map_index;        /* the first holder's file map entry */
    int first_rank;       /* the first holder, for messages */
    const int64_t *shape; /* in the packed input */
    uint64_t nbytes;
    int64_t file;         /* 1-based file index, then index in the table */
    uint64_t offset;      /* absolute file offset of the data */
} tensor_t;

/* 32 bytes: planning touches little memory. */
typedef struct {
    const int64_t *box;  /* offsets (ndim) then sizes (ndim), in the packed
                            input */
    uint32_t tensor;
    uint32_t local;      /* index among the rank's chunks */
    uint32_t self;       /* index in planner.chunks */
    int32_t rank;
    int16_t ndim;
    int16_t write;
} chunk_t;

/* A box held by several ranks: order[start .. start+count). */
typedef struct {
    size_t start, count;
    uint64_t bytes;
} group_t;

typedef struct {
    int nranks;
    size_t n_chunks, n_tensors;
    chunk_t *chunks;     /* in rank order */
    uint32_t *order;     /* chunk indices sorted by (tensor, box, rank) */
    tensor_t *tensors;
    hfdcp__strmap *by_name;
    uint64_t align;      /* the data buffers' alignment (hfdcp__header) */
    bool checksums;      /* headers with hfdcp_crc32c placeholders */
    int map_files;       /* N of the file map's names (rank 0's, which
                            every rank's must match); 0: no file map */
} planner;

static void format_shape(char *buf, size_t size, int ndim,
                         const int64_t *shape)
{
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n >= 0 && (size_t)n < size; i++)
        n += snprintf(buf + n, size - (size_t)n, "%s%" PRId64,
                      i ? ", " : "", shape[i]);
    if (n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, "]");
}

static int bad_packet(int rank, const char *what)
{
    return hfdcp__error(HFDCP_ERR_INTERNAL,
                        "the packed chunks of rank %d are malformed (%s)",
                        rank, what);
}

/* Reads the packed input in place: every field is 8-byte aligned
 * (checked), so shapes and boxes are used where they lie. */
typedef struct {
    const unsigned char *p, *end;
} reader_t;

static bool take(reader_t *r, size_t n, const void **at)
{
    if ((size_t)(r->end - r->p) < n)
        return false;
    *at = r->p;
    r->p += n;
    return true;
}

/* A name packed with its length, its NUL and padding. */
static bool read_name(reader_t *r, const char **name)
{
    const void *at;
    uint64_t len;

    if (!take(r, 8, &at))
        return false;
    memcpy(&len, at, sizeof len);
    if ((uint64_t)(r->end - r->p) < 8 || len > (uint64_t)(r->end - r->p) - 8)
        return false;
    if (!take(r, padded_name((size_t)len), &at))
        return false;
    *name = at;
    return (*name)[len] == '\0' && memchr(*name, '\0', (size_t)len) == NULL;
}

/* A later holder of tensor t must agree with the first. */
static int check_agreement(const planner *p, size_t t, int rank,
                           hfdcp_dtype dtype, int ndim, const int64_t *shape,
                           int map_index)
{
    const tensor_t *T = &p->tensors[t];
    char a[DIMS_TEXT], b[DIMS_TEXT];

    if (dtype != T->dtype)
        return hfdcp__error(HFDCP_ERR_PLAN,
                            "tensor '%s': rank %d saves it as %s but rank %d "
                            "as %s",
                            T->name, T->first_rank, hfdcp_dtype_name(T->dtype),
                            rank, hfdcp_dtype_name(dtype));
    if (ndim != T->ndim ||
        (ndim > 0 && memcmp(shape, T->shape, (size_t)ndim * sizeof *shape))) {
        format_shape(a, sizeof a, T->ndim, T->shape);
        format_shape(b, sizeof b, ndim, shape);
        return hfdcp__error(HFDCP_ERR_PLAN,
                            "tensor '%s': rank %d gives the global shape %s "
                            "but rank %d gives %s",
                            T->name, T->first_rank, a, rank, b);
    }
    if (map_index != T->map_index) {
        if ((map_index == 0) != (T->map_index == 0))
            return hfdcp__error(HFDCP_ERR_MISMATCH,
                                "tensor '%s': rank %d has a file map but "
                                "rank %d has none",
                                T->name,
                                T->map_index ? T->first_rank : rank,
                                T->map_index ? rank : T->first_rank);
        snprintf(a, sizeof a, T->map_index < 0 ? "lacks it" :
                 "puts it in file %d", T->map_index);
        snprintf(b, sizeof b, map_index < 0 ? "lacks it" :
                 "puts it in file %d", map_index);
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "tensor '%s': the file map of rank %d %s but the "
                            "one of rank %d %s",
                            T->name, T->first_rank, a, rank, b);
    }
    return HFDCP_OK;
}

/* The tensor of a chunk of `rank` into *t: found by name (a later holder
 * must agree with the first) or added to p's table. */
static int find_tensor(planner *p, int rank, const char *name,
                       hfdcp_dtype dtype, int ndim, const int64_t *shape,
                       int map_index, size_t *t)
{
    tensor_t *T;
    int rc;

    if (hfdcp__strmap_get(p->by_name, name, t))
        return check_agreement(p, *t, rank, dtype, ndim, shape, map_index);
    T = &p->tensors[p->n_tensors];
    *t = p->n_tensors;
    HFDCP_TRY(hfdcp__strmap_put(p->by_name, name, *t, NULL));
    p->n_tensors++;
    T->name = name;
    T->dtype = dtype;
    T->ndim = ndim;
    T->map_index = map_index;
    T->first_rank = rank;
    T->shape = shape;
    if ((rc = hfdcp__tensor_bytes(dtype, ndim, shape, "size", &T->nbytes)) !=
        HFDCP_OK)
        return hfdcp__error_prefix(rc, "tensor '%s' (rank %d)", name, rank);
    return HFDCP_OK;
}

/* The chunk of `rank` at offsets `off` of sizes `sz` must lie inside the
 * shape of tensor `name`. */
static int check_inside(int rank, const char *name, int ndim,
                        const int64_t *shape, const int64_t *off,
                        const int64_t *sz)
{
    for (int d = 0; d < ndim; d++) {
        if (off[d] < 0 || sz[d] < 0 || off[d] > shape[d] - sz[d]) {
            char box[DIMS_TEXT], sh[DIMS_TEXT];
            if (sz[d] < 0 || off[d] < 0)
                snprintf(box, sizeof box, "with offset %" PRId64
                         " and size %" PRId64 " in dim %d",
                         off[d], sz[d], d);
            else
                hfdcp__format_box(box, sizeof box, ndim, off, sz);
            format_shape(sh, sizeof sh, ndim, shape);
            return hfdcp__error(HFDCP_ERR_PLAN,
                                "tensor '%s': the chunk %s of rank %d "
                                "lies outside the tensor's shape %s",
                                name, box, rank, sh);
        }
    }
    return HFDCP_OK;
}

/* Rank 0's map_files becomes the plan's; every other rank's must be the
 * same: the file names depend on it, whoever saves which tensor. */
static int agree_map_files(planner *p, int rank, uint64_t files)
{
    if (files > (uint64_t)INT_MAX)
        return bad_packet(rank, "file map size out of range");
    if (rank == 0)
        p->map_files = (int)files;
    if ((int)files == p->map_files)
        return HFDCP_OK;
    if (files == 0 || p->map_files == 0)
        return hfdcp__error(HFDCP_ERR_MISMATCH,
                            "rank %d has a file map but rank %d has none",
                            files ? rank : 0, files ? 0 : rank);
    return hfdcp__error(HFDCP_ERR_MISMATCH,
                        "the largest index in the file map of rank 0 is %d "
                        "but in the one of rank %d it is %d",
                        p->map_files, rank, (int)files);
}

static int parse_rank(planner *p, int rank, const void *data, size_t len)
{
    reader_t r = {data, (const unsigned char *)data + len};
    const void *at;
    uint64_t count, files;

    if (((uintptr_t)data & 7) != 0)
        return bad_packet(rank, "not 8-byte aligned");
    if (!take(&r, 8, &at))
        return bad_packet(rank, "no chunk count");
    memcpy(&count, at, sizeof count);
    if (!take(&r, 8, &at))
        return bad_packet(rank, "no file map size");
    memcpy(&files, at, sizeof files);
    HFDCP_TRY(agree_map_files(p, rank, files));
    for (uint64_t j = 0; j < count; j++) {
        const char *name;
        const int32_t *v;
        const int64_t *shape = NULL, *off, *sz;
        hfdcp_dtype dtype;
        int ndim;
        size_t t;

        if (!read_name(&r, &name) || !take(&r, 16, &at))
            return bad_packet(rank, "truncated");
        v = at;
        if (v[0] < 0 || v[0] >= HFDCP_DTYPE_COUNT || v[1] < 0 ||
            v[1] > HFDCP_MAX_NDIM)
            return bad_packet(rank, "bad dtype or ndim");
        dtype = (hfdcp_dtype)v[0];
        ndim = v[1];
        if (ndim > 0) {
            if (!take(&r, 3 * (size_t)ndim * sizeof *shape, &at))
                return bad_packet(rank, "truncated");
            shape = at;
        }
        off = shape + ndim;
        sz = shape + 2 * ndim;

        HFDCP_TRY(find_tensor(p, rank, name, dtype, ndim, shape, v[2], &t));
        HFDCP_TRY(check_inside(rank, name, ndim, shape, off, sz));
        chunk_t *c = &p->chunks[p->n_chunks];
        c->box = off;
        c->tensor = (uint32_t)t;
        c->local = (uint32_t)j;
        c->self = (uint32_t)p->n_chunks;
        c->rank = rank;
        c->ndim = (int16_t)ndim;
        c->write = 0;
        p->n_chunks++;
    }
    if (r.p != r.end)
        return bad_packet(rank, "trailing bytes");
    return HFDCP_OK;
}

/* Orders two chunks of one tensor by box (offsets, then sizes), then
 * rank. */
static int chunk_cmp(const void *a, const void *b)
{
    const chunk_t *x = a, *y = b;

    for (int d = 0; d < 2 * x->ndim; d++)
        if (x->box[d] != y->box[d])
            return x->box[d] < y->box[d] ? -1 : 1;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return (x->local > y->local) - (x->local < y->local);
}

/* Step 2a: p->order = chunk indices by (tensor, box, rank).  A counting
 * sort by tensor (stable: rank order within a tensor), then each tensor's
 * chunks by box: insertion sort for the usual handful, qsort of copies
 * for more.  *first receives each tensor's range start in order
 * (n_tensors + 1 entries). */
static int sort_chunks(planner *p, size_t **first_out)
{
    size_t T = p->n_tensors, n = p->n_chunks, most = 0;
    size_t *first = calloc(T + 2, sizeof *first);
    chunk_t *tmp = NULL;
    int rc = HFDCP_OK;

    p->order = malloc((n ? n : 1) * sizeof *p->order);
    if (first == NULL || p->order == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory sorting %zu chunks", n);
    for (size_t i = 0; i < n; i++)
        first[p->chunks[i].tensor + 2]++;
    for (size_t t = 0; t < T; t++) {
        if (first[t + 2] > most)
            most = first[t + 2];
        first[t + 2] += first[t + 1];
    }
    for (size_t i = 0; i < n; i++)
        p->order[first[p->chunks[i].tensor + 1]++] = (uint32_t)i;
    /* first[t] is now the start of tensor t's range. */
    if (most > 16 && (tmp = malloc(most * sizeof *tmp)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory sorting %zu chunks", n);
    for (size_t t = 0; t < T; t++) {
        uint32_t *o = p->order + first[t];
        size_t m = first[t + 1] - first[t];
        if (m <= 16) {
            for (size_t i = 1; i < m; i++) {
                uint32_t v = o[i];
                size_t j = i;
                while (j > 0 &&
                       chunk_cmp(&p->chunks[o[j - 1]], &p->chunks[v]) > 0) {
                    o[j] = o[j - 1];
                    j--;
                }
                o[j] = v;
            }
            continue;
        }
        for (size_t i = 0; i < m; i++)
            tmp[i] = p->chunks[o[i]];
        qsort(tmp, m, sizeof *tmp, chunk_cmp);
        for (size_t i = 0; i < m; i++)
            o[i] = tmp[i].self;
    }
    *first_out = first;
    first = NULL;
cleanup:
    free(first);
    free(tmp);
    return rc;
}

static bool same_box(const chunk_t *x, const chunk_t *y)
{
    return x->ndim == 0 ||
           memcmp(x->box, y->box, 2 * (size_t)x->ndim * sizeof *x->box) == 0;
}

static bool whole_tensor(const chunk_t *c, const tensor_t *T)
{
    for (int d = 0; d < c->ndim; d++)
        if (c->box[d] != 0 || c->box[c->ndim + d] != T->shape[d])
            return false;
    return true;
}

/* Bytes of a chunk: whole bytes by the writer's checks (the rounding only
 * matters for balance). */
static uint64_t chunk_bytes(const chunk_t *c, const tensor_t *T)
{
    uint64_t numel = 1, bits = (uint64_t)hfdcp_dtype_bits(T->dtype);

    for (int d = 0; d < c->ndim; d++)
        numel *= (uint64_t)c->box[c->ndim + d]; /* <= the tensor's numel */
    return numel / 8 * bits + numel % 8 * bits / 8;
}

/* Largest first; among equals, in sorted order (deterministic). */
static int group_cmp(const void *a, const void *b)
{
    const group_t *x = a, *y = b;

    if (x->bytes != y->bytes)
        return x->bytes > y->bytes ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

static void add_bytes(uint64_t *sum, uint64_t v)
{
    if (!hfdcp__add_u64(*sum, v, sum))
        *sum = UINT64_MAX;
}

/* Steps 2b and 3: tiling of the distinct boxes, and who writes them. */
static int choose_writers(planner *p, const size_t *first,
                          uint64_t *rank_bytes)
{
    chunk_t *ch = p->chunks;
    const uint32_t *o = p->order;
    size_t n = p->n_chunks, ng = 0;
    hfdcp__tile *tiles = malloc((n ? n : 1) * sizeof *tiles);
    group_t *groups = malloc((n ? n : 1) * sizeof *groups);
    int rc = HFDCP_OK;

    if (tiles == NULL || groups == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory planning %zu chunks", n);
    for (size_t t = 0; t < p->n_tensors; t++) {
        const tensor_t *T = &p->tensors[t];
        size_t a = first[t], end = first[t + 1], ntiles = 0;

        for (size_t g = a; g < end;) {
            chunk_t *c = &ch[o[g]];
            size_t ge = g + 1;
            while (ge < end && same_box(c, &ch[o[ge]])) {
                if (ch[o[ge]].rank == ch[o[ge - 1]].rank) {
                    char box[DIMS_TEXT];
                    hfdcp__format_box(box, sizeof box, c->ndim, c->box,
                                      c->box + c->ndim);
                    HFDCP_FAIL(HFDCP_ERR_PLAN,
                               "tensor '%s': rank %d holds the chunk %s "
                               "twice",
                               T->name, (int)c->rank, box);
                }
                ge++;
            }
            tiles[ntiles].offsets = c->box;
            tiles[ntiles].sizes = c->box + c->ndim;
            tiles[ntiles].owner = c->rank;
            ntiles++;
            if (ge - g == 1) {
                c->write = 1;
                add_bytes(&rank_bytes[c->rank], chunk_bytes(c, T));
            } else {
                groups[ng].start = g;
                groups[ng].count = ge - g;
                groups[ng].bytes = chunk_bytes(c, T);
                ng++;
            }
            g = ge;
        }
        if (!(ntiles == 1 && whole_tensor(&ch[o[a]], T)))
            HFDCP_CHECK(hfdcp__tiling_check(HFDCP_ERR_PLAN, T->name, T->ndim,
                                            T->shape, tiles, ntiles, "rank",
                                            NULL));
    }
    qsort(groups, ng, sizeof *groups, group_cmp);
    for (size_t k = 0; k < ng; k++) {
        size_t best = groups[k].start;
        for (size_t j = best + 1; j < groups[k].start + groups[k].count; j++)
            if (rank_bytes[ch[o[j]].rank] < rank_bytes[ch[o[best]].rank])
                best = j;
        ch[o[best]].write = 1;
        add_bytes(&rank_bytes[ch[o[best]].rank], groups[k].bytes);
    }
cleanup:
    free(tiles);
    free(groups);
    return rc;
}

/* Step 4 without a file map: huggingface_hub's split.  In registration
 * order, a tensor larger than the limit gets a file of its own at once;
 * any other tensor that would take the current file over the limit closes
 * it first.  Files are numbered in the order they are completed, as HF's
 * shard list is (so an oversize tensor's file can come before the file
 * being filled when it appeared). */
static int split_by_size(planner *p, uint64_t max)
{
    size_t T = p->n_tensors, nslots = 0, done = 0;
    int64_t cur = -1;
    uint64_t cur_bytes = 0;
    size_t *pos = malloc((T + 1) * sizeof *pos);

    if (pos == NULL)
        return hfdcp__nomem("the file split");
    for (size_t t = 0; t < T; t++) {
        tensor_t *X = &p->tensors[t];
        if (X->nbytes > max) {
            pos[nslots] = done++;
            X->file = (int64_t)nslots++;
            continue;
        }
        if (cur >= 0 && X->nbytes > max - cur_bytes) {
            pos[cur] = done++;
            cur = -1;
        }
        if (cur < 0) {
            cur = (int64_t)nslots++;
            cur_bytes = 0;
        }
        X->file = cur;
        cur_bytes += X->nbytes;
    }
    if (cur >= 0)
        pos[cur] = done++;
    for (size_t t = 0; t < T; t++)
        p->tensors[t].file = (int64_t)pos[p->tensors[t].file] + 1;
    free(pos);
    return HFDCP_OK;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Step 4a: every tensor's 1-based file index, from the file map or
 * split_by_size. */
static int index_tensors(planner *p, uint64_t max)
{
    bool use_map = p->map_files > 0;

    for (size_t t = 0; t < p->n_tensors; t++) {
        tensor_t *X = &p->tensors[t];
        if (use_map && X->map_index < 0)
            return hfdcp__error(HFDCP_ERR_PLAN,
                                "tensor '%s' (saved by rank %d) is not in "
                                "the file map",
                                X->name, X->first_rank);
        /* Note: a rank packs its map's entries and its map's size
         * together, and every rank's size is rank 0's (agree_map_files). */
        if ((X->map_index != 0) != use_map || X->map_index > p->map_files)
            return hfdcp__error(HFDCP_ERR_INTERNAL,
                                "tensor '%s' (rank %d): file map entry %d "
                                "in a map whose largest index is %d",
                                X->name, X->first_rank, X->map_index,
                                p->map_files);
        X->file = use_map ? X->map_index : 1;
    }
    if (!use_map && max > 0)
        return split_by_size(p, max);
    return HFDCP_OK;
}

/* File `idx` of `n_of`: model-{idx:05d}-of-{n_of:05d}.safetensors, or
 * model.safetensors for the only file of a save without a file map. */
static char *file_name(const planner *p, int64_t idx, int64_t n_of)
{
    if (p->map_files == 0 && n_of == 1)
        return hfdcp__strdup("model.safetensors");
    return hfdcp__asprintf("model-%05" PRId64 "-of-%05" PRId64 ".safetensors",
                           idx, n_of);
}

/* Step 4: every tensor's file index, then the file table (the indices in
 * use, ascending) and each tensor's place in it. */
static int assign_files(planner *p, uint64_t max, hfdcp__wplan *out)
{
    size_t T = p->n_tensors, nf = 0;
    int64_t *idx = NULL, n_of = 1;
    int rc = HFDCP_OK;

    HFDCP_CHECK(index_tensors(p, max));
    if ((idx = malloc((T ? T : 1) * sizeof *idx)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory planning %zu files", T);
    for (size_t t = 0; t < T; t++)
        idx[t] = p->tensors[t].file;
    if (T == 0)
        idx[0] = 1; /* an empty checkpoint still has one (empty) file */
    qsort(idx, T ? T : 1, sizeof *idx, cmp_i64);
    for (size_t i = 0; i < (T ? T : 1); i++)
        if (nf == 0 || idx[i] != idx[nf - 1])
            idx[nf++] = idx[i];
    n_of = p->map_files > 0 ? p->map_files : idx[nf - 1];

    out->n_files = nf;
    if ((out->file_names = calloc(nf, sizeof *out->file_names)) == NULL ||
        (out->file_sizes = calloc(nf, sizeof *out->file_sizes)) == NULL ||
        (out->headers = calloc(nf, sizeof *out->headers)) == NULL ||
        (out->header_lens = calloc(nf, sizeof *out->header_lens)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory planning %zu files", nf);
    for (size_t f = 0; f < nf; f++)
        if ((out->file_names[f] = file_name(p, idx[f], n_of)) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory naming files");
    for (size_t t = 0; t < T; t++) {
        int64_t *at = bsearch(&p->tensors[t].file, idx, nf, sizeof *idx,
                              cmp_i64);
        p->tensors[t].file = at - idx;
    }
cleanup:
    free(idx);
    return rc;
}

static int entry_ptr_cmp(const void *a, const void *b)
{
    return hfdcp__entry_layout_cmp(*(const hfdcp__entry *const *)a,
                                   *(const hfdcp__entry *const *)b);
}

/* Step 5: each file's order, offsets and header.  The entries are made in
 * tensor order (entries[t] is tensor t), grouped by file through a
 * pointer array sorted with hfdcp__entry_layout_cmp. */
static int lay_out(planner *p, hfdcp__wplan *out)
{
    size_t T = p->n_tensors, nf = out->n_files;
    size_t *first = calloc(nf + 1, sizeof *first);
    hfdcp__entry *entries = calloc(T ? T : 1, sizeof *entries);
    hfdcp__entry **by_file = malloc((T ? T : 1) * sizeof *by_file);
    hfdcp__entry *ent = malloc((T ? T : 1) * sizeof *ent);
    uint64_t *crc_at = malloc((T ? T : 1) * sizeof *crc_at);
    int rc = HFDCP_OK;

    out->n_tensors = T;
    out->tensor_file = malloc((T ? T : 1) * sizeof *out->tensor_file);
    out->tensor_bytes = malloc((T ? T : 1) * sizeof *out->tensor_bytes);
    if (p->checksums)
        out->crc_at = malloc((T ? T : 1) * sizeof *out->crc_at);
    if (first == NULL || entries == NULL || by_file == NULL || ent == NULL ||
        crc_at == NULL || out->tensor_file == NULL ||
        out->tensor_bytes == NULL || (p->checksums && out->crc_at == NULL))
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory laying out %zu tensors", T);
    for (size_t t = 0; t < T; t++) {
        tensor_t *X = &p->tensors[t];
        entries[t].name = (char *)X->name;
        entries[t].dtype = X->dtype;
        entries[t].ndim = X->ndim;
        entries[t].shape = (int64_t *)X->shape;
        out->tensor_file[t] = (uint32_t)X->file;
        out->tensor_bytes[t] = X->nbytes;
        first[X->file + 1]++;
    }
    for (size_t f = 0; f < nf; f++)
        first[f + 1] += first[f];
    for (size_t t = 0; t < T; t++)
        by_file[first[p->tensors[t].file]++] = &entries[t];
    /* first[f] is now the end of file f's range. */
    for (size_t f = 0; f < nf; f++) {
        size_t a = f ? first[f - 1] : 0, n = first[f] - a;
        hfdcp__entry **e = by_file + a;
        uint64_t at = 0;
        hfdcp__header h;

        qsort(e, n, sizeof *e, entry_ptr_cmp);
        for (size_t k = 0; k < n; k++) {
            e[k]->begin = at;
            if (!hfdcp__add_u64(at, p->tensors[e[k] - entries].nbytes, &at))
                HFDCP_FAIL(HFDCP_ERR_RANGE, "file '%s' would exceed 2^64 "
                           "bytes", out->file_names[f]);
            e[k]->end = at;
            ent[k] = *e[k];
        }
        memset(&h, 0, sizeof h);
        h.entries = ent;
        h.n_entries = n;
        h.data_size = at;
        h.align = p->align;
        h.crc32c = p->checksums;
        h.crc_at = crc_at;
        rc = hfdcp__header_serialize(&h, &out->headers[f],
                                     &out->header_lens[f]);
        if (rc != HFDCP_OK) {
            hfdcp__error_prefix(rc, "file '%s'", out->file_names[f]);
            goto cleanup;
        }
        for (size_t k = 0; p->checksums && k < n; k++)
            out->crc_at[e[k] - entries] = crc_at[k];
        if (!hfdcp__add_u64(at, out->header_lens[f], &out->file_sizes[f]) ||
            out->file_sizes[f] > (uint64_t)INT64_MAX)
            HFDCP_FAIL(HFDCP_ERR_RANGE, "file '%s' would exceed 2^63 bytes",
                       out->file_names[f]);
        for (size_t k = 0; k < n; k++)
            p->tensors[e[k] - entries].offset =
                out->header_lens[f] + e[k]->begin;
    }
cleanup:
    free(first);
    free(entries);
    free(by_file);
    free(ent);
    free(crc_at);
    return rc;
}

void hfdcp__wplan_put_crcs(hfdcp__wplan *p, const uint32_t *xor_parts)
{
    for (size_t t = 0; t < p->n_tensors; t++)
        hfdcp__header_put_crc(p->headers[p->tensor_file[t]], p->crc_at[t],
                              hfdcp__crc32c_finish(xor_parts[t],
                                                   p->tensor_bytes[t]));
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp((*(const tensor_t *const *)a)->name,
                  (*(const tensor_t *const *)b)->name);
}

/* The index: every tensor, sorted by name, with its file. */
static int make_index(planner *p, hfdcp__wplan *out)
{
    size_t T = p->n_tensors;
    const tensor_t **by = malloc((T ? T : 1) * sizeof *by);
    hfdcp__index *ix = &out->index;
    int rc = HFDCP_OK;

    ix->names = calloc(T ? T : 1, sizeof *ix->names);
    ix->files = calloc(T ? T : 1, sizeof *ix->files);
    if (by == NULL || ix->names == NULL || ix->files == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory building the index");
    for (size_t t = 0; t < T; t++) {
        by[t] = &p->tensors[t];
        add_bytes(&ix->total_size, p->tensors[t].nbytes);
    }
    qsort(by, T, sizeof *by, name_cmp);
    for (size_t i = 0; i < T; i++) {
        if ((ix->names[i] = hfdcp__strdup(by[i]->name)) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory building the index");
        ix->files[i] = out->file_names[by[i]->file];
        ix->n = i + 1;
    }
cleanup:
    free(by);
    return rc;
}

int hfdcp__wplan_global(int nranks, const void *const *packed,
                        const size_t *lens, uint64_t max_shard_bytes,
                        uint64_t align, bool checksums, hfdcp__wplan *out)
{
    planner p;
    size_t total_chunks = 0, *first = NULL;
    int rc = HFDCP_OK;

    memset(out, 0, sizeof *out);
    memset(&p, 0, sizeof p);
    if (nranks < 1)
        return hfdcp__error(HFDCP_ERR_ARG, "planning for %d ranks", nranks);
    p.nranks = nranks;
    p.align = align;
    p.checksums = checksums;
    for (int r = 0; r < nranks; r++) {
        uint64_t count;
        if (lens[r] < PACKED_HEAD)
            return bad_packet(r, "no chunk count");
        memcpy(&count, packed[r], sizeof count);
        if (count > (lens[r] - PACKED_HEAD) / MIN_PACKED_CHUNK)
            return bad_packet(r, "chunk count larger than the message");
        total_chunks += (size_t)count;
    }
    if (total_chunks >= UINT32_MAX)
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "%zu chunks to plan (at most 2^32 - 1)",
                            total_chunks);
    out->nranks = nranks;
    p.chunks = malloc((total_chunks ? total_chunks : 1) * sizeof *p.chunks);
    p.tensors = malloc((total_chunks ? total_chunks : 1) * sizeof *p.tensors);
    p.by_name = hfdcp__strmap_new();
    out->rank_chunks = calloc((size_t)nranks, sizeof *out->rank_chunks);
    out->rank_bytes = calloc((size_t)nranks, sizeof *out->rank_bytes);
    out->assign = malloc((total_chunks ? total_chunks : 1) *
                         sizeof *out->assign);
    if (p.chunks == NULL || p.tensors == NULL ||
        p.by_name == NULL || out->rank_chunks == NULL ||
        out->rank_bytes == NULL || out->assign == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory planning %zu chunks",
                   total_chunks);
    out->n_assign = total_chunks;

    for (int r = 0; r < nranks; r++) {
        size_t before = p.n_chunks;
        HFDCP_CHECK(parse_rank(&p, r, packed[r], lens[r]));
        out->rank_chunks[r] = p.n_chunks - before;
    }
    HFDCP_CHECK(sort_chunks(&p, &first));
    HFDCP_CHECK(choose_writers(&p, first, out->rank_bytes));
    HFDCP_CHECK(assign_files(&p, max_shard_bytes, out));
    HFDCP_CHECK(lay_out(&p, out));
    HFDCP_CHECK(make_index(&p, out));
    /* Chunks are in rank order, as the assignments. */
    for (size_t i = 0; i < p.n_chunks; i++) {
        const chunk_t *c = &p.chunks[i];
        hfdcp__wassign *a = &out->assign[i];
        a->file = (int32_t)p.tensors[c->tensor].file;
        a->write = c->write;
        a->offset = p.tensors[c->tensor].offset;
        a->tensor = c->tensor;
        a->unused = 0;
    }
cleanup:
    free(p.chunks);
    free(p.order);
    free(p.tensors);
    free(first);
    hfdcp__strmap_free(p.by_name);
    if (rc != HFDCP_OK)
        hfdcp__wplan_free(out);
    return rc;
}

void hfdcp__wplan_free(hfdcp__wplan *p)
{
    if (p == NULL)
        return;
    for (size_t f = 0; f < p->n_files; f++) {
        if (p->file_names)
            free(p->file_names[f]);
        if (p->headers)
            free(p->headers[f]);
    }
    free(p->file_names);
    free(p->file_sizes);
    free(p->headers);
    free(p->header_lens);
    free(p->tensor_file);
    free(p->tensor_bytes);
    free(p->crc_at);
    if (p->index.names)
        for (size_t i = 0; i < p->index.n; i++)
            free(p->index.names[i]);
    free(p->index.names);
    free(p->index.files); /* they point into file_names */
    free(p->assign);
    free(p->rank_chunks);
    free(p->rank_bytes);
    memset(p, 0, sizeof *p);
}

/* ---- the collective ---- */

/* The file table every rank needs: names and sizes. */
static int pack_files(const hfdcp__wplan *g, hfdcp__buf *b)
{
    hfdcp__buf_init(b);
    hfdcp__buf_put_u64(b, g->n_tensors);
    hfdcp__buf_put_u64(b, g->n_files);
    for (size_t f = 0; f < g->n_files; f++) {
        hfdcp__buf_put_str(b, g->file_names[f]);
        hfdcp__buf_put_u64(b, g->file_sizes[f]);
    }
    return hfdcp__buf_status(b);
}

static int unpack_files(const void *data, size_t len, hfdcp__wplan *out)
{
    hfdcp__rbuf r;
    uint64_t n;

    hfdcp__rbuf_init(&r, data, len);
    if (!hfdcp__rbuf_get_u64(&r, &n) || n > UINT32_MAX)
        return hfdcp__error(HFDCP_ERR_INTERNAL, "malformed file table");
    out->n_tensors = (size_t)n;
    if (!hfdcp__rbuf_get_u64(&r, &n) || n == 0 || n > len / 16)
        return hfdcp__error(HFDCP_ERR_INTERNAL, "malformed file table");
    out->file_names = calloc((size_t)n, sizeof *out->file_names);
    out->file_sizes = calloc((size_t)n, sizeof *out->file_sizes);
    if (out->file_names == NULL || out->file_sizes == NULL)
        return hfdcp__nomem("the file table");
    out->n_files = (size_t)n;
    for (size_t f = 0; f < n; f++)
        if (!hfdcp__rbuf_get_str(&r, &out->file_names[f]) ||
            !hfdcp__rbuf_get_u64(&r, &out->file_sizes[f]))
            return hfdcp__error(HFDCP_ERR_INTERNAL, "malformed file table");
    return HFDCP_OK;
}

/* Converts an MPI return code where the call is made. */
static int mpi_status(int mpi_rc, const char *what)
{
    return mpi_rc == MPI_SUCCESS ? HFDCP_OK
                                 : hfdcp__mpi_error(mpi_rc, "%s", what);
}

/* Collective: rank 0 receives every rank's packed chunks, one after the
 * other in *gathered (8-byte aligned: every packed length is a multiple of
 * 8), rank r's at (*displs)[r], (*lens)[r] bytes.  Agreed status. */
static int gather_chunks(MPI_Comm comm, int rank, int size,
                         const hfdcp__buf *packed, unsigned char **gathered,
                         size_t **lens, int **displs)
{
    uint64_t mylen = packed->len, *lens64 = NULL, total = 0;
    int *counts = NULL, rc = HFDCP_OK;

    if (rank == 0) {
        lens64 = malloc((size_t)size * sizeof *lens64);
        counts = malloc((size_t)size * sizeof *counts);
        *lens = malloc((size_t)size * sizeof **lens);
        *displs = malloc((size_t)size * sizeof **displs);
        if (!lens64 || !counts || !*lens || !*displs)
            rc = hfdcp__nomem("the plan's gather buffers");
    }
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    rc = mpi_status(MPI_Gather(&mylen, 1, MPI_UINT64_T, lens64, 1,
                               MPI_UINT64_T, 0, comm),
                    "gathering the plan sizes");
    for (int r = 0; rc == HFDCP_OK && rank == 0 && r < size; r++) {
        (*lens)[r] = (size_t)lens64[r];
        counts[r] = (int)lens64[r];
        (*displs)[r] = (int)total;
        total += lens64[r];
        if (total > (uint64_t)INT_MAX)
            rc = hfdcp__error(HFDCP_ERR_RANGE,
                              "the ranks' chunk lists take more than 2 GiB "
                              "(an MPI count) at rank %d",
                              r);
    }
    if (rc == HFDCP_OK && rank == 0 &&
        (*gathered = malloc(total ? (size_t)total : 1)) == NULL)
        rc = hfdcp__nomem("the gathered chunk lists");
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    rc = mpi_status(MPI_Gatherv(packed->data, (int)mylen, MPI_BYTE,
                                *gathered, counts, *displs, MPI_BYTE, 0,
                                comm),
                    "gathering the chunk lists");
    rc = hfdcp__agree(comm, rc);
cleanup:
    free(lens64);
    free(counts);
    return rc;
}

/* Collective: each rank receives its n assignments from rank 0's global
 * plan `g` (significant on rank 0 only).  Agreed status. */
static int scatter_assignments(MPI_Comm comm, int rank, int size,
                               const hfdcp__wplan *g, size_t n,
                               hfdcp__wplan *out)
{
    int *counts = NULL, *displs = NULL, rc = HFDCP_OK;
    uint64_t total = 0;

    if (n > 0 && (out->assign = malloc(n * sizeof *out->assign)) == NULL)
        rc = hfdcp__nomem("this rank's part of the plan");
    out->n_assign = n;
    if (rc == HFDCP_OK && rank == 0) {
        counts = malloc((size_t)size * sizeof *counts);
        displs = malloc((size_t)size * sizeof *displs);
        if (counts == NULL || displs == NULL)
            rc = hfdcp__nomem("the plan's scatter buffers");
        for (int r = 0; rc == HFDCP_OK && r < size; r++) {
            counts[r] = (int)(g->rank_chunks[r] * sizeof *g->assign);
            displs[r] = (int)total;
            total += g->rank_chunks[r] * sizeof *g->assign;
            if (total > (uint64_t)INT_MAX)
                rc = hfdcp__error(HFDCP_ERR_RANGE,
                                  "the plan's assignments take more than "
                                  "2 GiB (an MPI count)");
        }
    }
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    rc = mpi_status(MPI_Scatterv(g->assign, counts, displs, MPI_BYTE,
                                 out->assign, (int)(n * sizeof *out->assign),
                                 MPI_BYTE, 0, comm),
                    "scattering the plan");
    for (size_t i = 0; rc == HFDCP_OK && i < n; i++)
        if (out->assign[i].file < 0)
            rc = hfdcp__error(HFDCP_ERR_INTERNAL,
                              "chunk %zu assigned to file %d", i,
                              (int)out->assign[i].file);
    rc = hfdcp__agree(comm, rc);
cleanup:
    free(counts);
    free(displs);
    return rc;
}

/* Collective: every rank gets the file table; rank 0 moves the file
 * table, headers and index of its global plan `g` into `out`.  Agreed
 * status. */
static int share_files(MPI_Comm comm, int rank, hfdcp__wplan *g,
                       hfdcp__wplan *out)
{
    hfdcp__buf table;
    void *data = NULL;
    size_t len = 0;
    int rc = HFDCP_OK;

    hfdcp__buf_init(&table);
    if (rank == 0) {
        rc = pack_files(g, &table);
        data = table.data;
        len = table.len;
    }
    rc = hfdcp__agree(comm, rc);
    if (rc == HFDCP_OK)
        rc = hfdcp__bcast_bytes(comm, 0, &data, &len);
    if (rc == HFDCP_OK && rank != 0)
        rc = unpack_files(data, len, out);
    if (rc == HFDCP_OK && rank == 0) {
        out->n_files = g->n_files;
        out->file_names = g->file_names;
        out->file_sizes = g->file_sizes;
        out->headers = g->headers;
        out->header_lens = g->header_lens;
        out->n_tensors = g->n_tensors;
        out->tensor_file = g->tensor_file;
        out->tensor_bytes = g->tensor_bytes;
        out->crc_at = g->crc_at;
        out->index = g->index;
        g->n_files = 0;
        g->file_names = NULL;
        g->file_sizes = NULL;
        g->headers = NULL;
        g->header_lens = NULL;
        g->tensor_file = NULL;
        g->tensor_bytes = NULL;
        g->crc_at = NULL;
        memset(&g->index, 0, sizeof g->index);
    }
    for (size_t i = 0; rc == HFDCP_OK && i < out->n_assign; i++)
        if ((size_t)out->assign[i].file >= out->n_files)
            rc = hfdcp__error(HFDCP_ERR_INTERNAL,
                              "chunk %zu assigned to file %d of %zu", i,
                              (int)out->assign[i].file, out->n_files);
    if (rank != 0)
        free(data);
    hfdcp__buf_free(&table);
    return hfdcp__agree(comm, rc);
}

int hfdcp__wplan_make(MPI_Comm comm, const hfdcp__wchunk *chunks, size_t n,
                      int map_files, uint64_t max_shard_bytes, uint64_t align,
                      bool checksums, hfdcp__wplan *out)
{
    int rank, size, rc, mpi_rc;
    hfdcp__buf packed;
    unsigned char *gathered = NULL;
    size_t *lens = NULL;
    int *displs = NULL;
    const void **parts = NULL;
    hfdcp__wplan g;

    memset(out, 0, sizeof *out);
    memset(&g, 0, sizeof g);
    if ((mpi_rc = MPI_Comm_rank(comm, &rank)) != MPI_SUCCESS ||
        (mpi_rc = MPI_Comm_size(comm, &size)) != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "planning the save");

    /* 1. Every rank packs its chunks; rank 0 gathers them. */
    rc = hfdcp__wplan_pack(chunks, n, map_files, &packed);
    if (rc == HFDCP_OK && packed.len > (size_t)INT_MAX)
        rc = hfdcp__error(HFDCP_ERR_RANGE,
                          "the %zu chunks of this rank describe themselves "
                          "in %zu bytes, more than an MPI count (2 GiB)",
                          n, packed.len);
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    HFDCP_CHECK(gather_chunks(comm, rank, size, &packed, &gathered, &lens,
                              &displs));
    hfdcp__buf_free(&packed);

    /* 2. Rank 0 plans. */
    if (rank == 0) {
        if ((parts = malloc((size_t)size * sizeof *parts)) == NULL) {
            rc = hfdcp__nomem("the plan's inputs");
        } else {
            for (int r = 0; r < size; r++)
                parts[r] = gathered + displs[r];
            rc = hfdcp__wplan_global(size, parts, lens, max_shard_bytes,
                                     align, checksums, &g);
        }
        free(gathered);
        gathered = NULL;
    }
    HFDCP_CHECK(hfdcp__agree(comm, rc));

    /* 3. Each rank gets its assignments, every rank the file table. */
    HFDCP_CHECK(scatter_assignments(comm, rank, size, &g, n, out));
    rc = share_files(comm, rank, &g, out);

cleanup:
    hfdcp__buf_free(&packed);
    hfdcp__wplan_free(&g);
    free(gathered);
    free(lens);
    free(displs);
    free(parts);
    if (rc != HFDCP_OK)
        hfdcp__wplan_free(out);
    return rc;
}
