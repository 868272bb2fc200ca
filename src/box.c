/*
 * box.c - n-dimensional boxes [offsets, offsets + sizes): intersection, and
 * the check that a set of boxes tiles a tensor exactly (no hole, no
 * overlap), used by the catalog for DCP shards and by the writer's planner.
 *
 * The tiling check, for n boxes:
 *   1. every box lies inside the shape (O(n));
 *   2. no two boxes of non-zero volume overlap: a recursive slab sweep.
 *      Along one dimension d, the boundaries of the boxes cut the axis into
 *      elementary slabs; the boxes crossing one slab all overlap in d, so
 *      two of them overlap iff their projections on the other dimensions
 *      do: recurse on each slab's boxes with d removed; with one dimension
 *      left, sorting by start finds an overlap between neighbours.  The
 *      cost is the sum over slabs of the boxes crossing them; each level
 *      sweeps the dimension that minimises it, so rows, columns and 2-D or
 *      3-D blocks cost O(n log n);
 *   3. the volumes (counted in 128 bits where the compiler has them, with
 *      overflow checks) sum to the number of elements.  Disjoint boxes
 *      inside the shape with that total cover it; with less, the same slab
 *      recursion, following a slab whose cross-section is short of volume,
 *      finds one element that no box covers, for the message.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp_internal.h"

/* Element counts.  128 bits when available: a tensor's element count fits
 * in 64 bits, but a sum of chunk volumes (overlapping chunks) or the shape
 * of a malicious DCP shard may not. */
#ifdef __SIZEOF_INT128__
__extension__ typedef unsigned __int128 count_t;
#else
typedef uint64_t count_t;
#endif
#define COUNT_MAX ((count_t)-1)

/* Saturating arithmetic: COUNT_MAX means "too many to count". */
static count_t count_mul(count_t a, count_t b)
{
    count_t r;
    return __builtin_mul_overflow(a, b, &r) ? COUNT_MAX : r;
}

static count_t count_add(count_t a, count_t b)
{
    count_t r;
    return __builtin_add_overflow(a, b, &r) ? COUNT_MAX : r;
}

/* Decimal text of a count. */
static void count_format(char *buf, size_t size, count_t v)
{
    char tmp[48];
    size_t i = sizeof tmp;

    tmp[--i] = '\0';
    do {
        tmp[--i] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v != 0 && i > 0);
    snprintf(buf, size, "%s", tmp + i);
}

bool hfdcp__box_intersect(int ndim, const int64_t *a_off,
                          const int64_t *a_size, const int64_t *b_off,
                          const int64_t *b_size, int64_t *out_off,
                          int64_t *out_size)
{
    for (int d = 0; d < ndim; d++) {
        int64_t lo = a_off[d] > b_off[d] ? a_off[d] : b_off[d];
        int64_t a_end = a_off[d] + a_size[d];
        int64_t b_end = b_off[d] + b_size[d];
        int64_t hi = a_end < b_end ? a_end : b_end;
        if (hi <= lo)
            return false;
        out_off[d] = lo;
        out_size[d] = hi - lo;
    }
    return true;
}

/* ---- the tiling check ---- */

typedef struct {
    const char *tensor;
    int ndim;
    const int64_t *shape;
    const hfdcp__tile *tiles;
    const char *owner_kind;
    const char *const *owner_names;
} tiling;

/* A sort key: a coordinate and the tile it belongs to. */
typedef struct {
    int64_t key;
    size_t tile;
} keyed;

static int keyed_cmp(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->tile < y->tile ? -1 : x->tile > y->tile;
}

static int int64_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t tile_start(const tiling *t, size_t i, int d)
{
    return t->tiles[i].offsets[d];
}

static int64_t tile_end(const tiling *t, size_t i, int d)
{
    return t->tiles[i].offsets[d] + t->tiles[i].sizes[d];
}

/* "(rank 3)" or "(file 'a.safetensors')". */
static void describe_owner(const tiling *t, size_t i, char *buf, size_t size)
{
    int owner = t->tiles[i].owner;
    if (t->owner_names != NULL)
        snprintf(buf, size, "(%s '%s')", t->owner_kind,
                 t->owner_names[owner]);
    else
        snprintf(buf, size, "(%s %d)", t->owner_kind, owner);
}

/* Appends printf output to buf[0..size), keeping it NUL-terminated and
 * truncating when full. */
static void append(char *buf, size_t size, size_t *used, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t size, size_t *used, const char *fmt,
                   ...)
{
    va_list ap;
    int n;

    if (*used >= size)
        return;
    va_start(ap, fmt);
    n = vsnprintf(buf + *used, size - *used, fmt, ap);
    va_end(ap);
    if (n < 0)
        buf[*used] = '\0';
    else
        *used = *used + (size_t)n < size ? *used + (size_t)n : size;
}

/* Formats a box that may lie outside the shape, where offset + size may
 * not be representable: "[o:e, ...]", or "[o:+s, ...]" for such a
 * dimension. */
static void format_any_box(char *buf, size_t size, int ndim,
                           const int64_t *off, const int64_t *sz)
{
    size_t used = 0;

    buf[0] = '\0';
    append(buf, size, &used, "[");
    for (int d = 0; d < ndim; d++) {
        int64_t end;
        if (sz[d] >= 0 && !__builtin_add_overflow(off[d], sz[d], &end))
            append(buf, size, &used, "%s%" PRId64 ":%" PRId64,
                   d ? ", " : "", off[d], end);
        else
            append(buf, size, &used, "%s%" PRId64 ":+%" PRId64,
                   d ? ", " : "", off[d], sz[d]);
    }
    append(buf, size, &used, "]");
}

/* "[8, 8]" (also used for an element's coordinates). */
static void format_shape(char *buf, size_t size, int ndim,
                         const int64_t *shape)
{
    size_t used = 0;

    buf[0] = '\0';
    append(buf, size, &used, "[");
    for (int d = 0; d < ndim; d++)
        append(buf, size, &used, "%s%" PRId64, d ? ", " : "", shape[d]);
    append(buf, size, &used, "]");
}

/* Distinct boundaries (starts and ends in dimension d) of the tiles in
 * set[0..m), plus `extra` values, sorted.  Returns the count in *k, or
 * HFDCP_ERR_NOMEM. */
static int boundaries(const tiling *t, const size_t *set, size_t m, int d,
                      const int64_t *extra, size_t n_extra, int64_t **out,
                      size_t *k)
{
    int64_t *b = malloc((2 * m + n_extra) * sizeof *b + 1);
    size_t n = 0;

    if (b == NULL)
        return hfdcp__nomem("tiling check boundaries");
    for (size_t i = 0; i < m; i++) {
        b[n++] = tile_start(t, set[i], d);
        b[n++] = tile_end(t, set[i], d);
    }
    for (size_t i = 0; i < n_extra; i++)
        b[n++] = extra[i];
    qsort(b, n, sizeof *b, int64_cmp);
    *k = 0;
    for (size_t i = 0; i < n; i++)
        if (*k == 0 || b[*k - 1] != b[i])
            b[(*k)++] = b[i];
    *out = b;
    return HFDCP_OK;
}

/* Index of the first boundary >= v (v is always present). */
static size_t boundary_index(const int64_t *b, size_t k, int64_t v)
{
    size_t lo = 0, hi = k;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The dimension of `dims` whose slab sweep costs least: the one where the
 * tiles cross the fewest elementary slabs in total. */
static int choose_dim(const tiling *t, const size_t *set, size_t m,
                      uint64_t dims, int *best)
{
    uint64_t best_cost = UINT64_MAX;

    *best = -1;
    for (int d = 0; d < t->ndim; d++) {
        int64_t *b = NULL;
        size_t k = 0;
        uint64_t cost = 0;

        if (!(dims & ((uint64_t)1 << d)))
            continue;
        if (*best < 0)
            *best = d;
        HFDCP_TRY(boundaries(t, set, m, d, NULL, 0, &b, &k));
        for (size_t i = 0; i < m; i++)
            cost += boundary_index(b, k, tile_end(t, set[i], d)) -
                    boundary_index(b, k, tile_start(t, set[i], d));
        free(b);
        if (cost < best_cost) {
            best_cost = cost;
            *best = d;
        }
    }
    return HFDCP_OK;
}

/* The tiles of set[0..m) sorted by their start in dimension d. */
static int sort_by_start(const tiling *t, const size_t *set, size_t m, int d,
                         keyed **out)
{
    keyed *s = malloc(m * sizeof *s + 1);
    if (s == NULL)
        return hfdcp__nomem("tiling check sort");
    for (size_t i = 0; i < m; i++) {
        s[i].key = tile_start(t, set[i], d);
        s[i].tile = set[i];
    }
    qsort(s, m, sizeof *s, keyed_cmp);
    *out = s;
    return HFDCP_OK;
}

/*
 * A slab sweep along dimension d over the tiles of set[0..m) (non-zero
 * volume).  For each elementary slab [b[j], b[j+1]) crossed by at least
 * `min_active` tiles, calls visit(slab tiles, their count, b[j], arg); a
 * non-OK status or *stop ends the sweep.
 */
typedef int (*slab_fn)(const tiling *t, const size_t *active, size_t n,
                       int64_t slab_start, void *arg, bool *stop);

static int sweep(const tiling *t, const size_t *set, size_t m, int d,
                 const int64_t *extra, size_t n_extra, size_t min_active,
                 slab_fn visit, void *arg)
{
    int rc;
    int64_t *b = NULL;
    keyed *s = NULL;
    size_t *active = NULL, n_active = 0, k = 0, next = 0;
    bool stop = false;

    HFDCP_CHECK(boundaries(t, set, m, d, extra, n_extra, &b, &k));
    HFDCP_CHECK(sort_by_start(t, set, m, d, &s));
    if ((active = malloc(m * sizeof *active + 1)) == NULL)
        HFDCP_CHECK(hfdcp__nomem("tiling check slab"));
    for (size_t j = 0; j + 1 < k && !stop; j++) {
        size_t kept = 0;
        for (size_t i = 0; i < n_active; i++)
            if (tile_end(t, active[i], d) > b[j])
                active[kept++] = active[i];
        n_active = kept;
        while (next < m && s[next].key == b[j])
            active[n_active++] = s[next++].tile;
        if (n_active >= min_active)
            HFDCP_CHECK(visit(t, active, n_active, b[j], arg, &stop));
    }
    rc = HFDCP_OK;
cleanup:
    free(b);
    free(s);
    free(active);
    return rc;
}

/* ---- overlaps ---- */

typedef struct {
    uint64_t dims; /* dimensions not yet fixed by an enclosing slab */
    bool found;
    size_t a, b;   /* the overlapping tiles */
} overlap_search;

static int find_overlap(const tiling *t, const size_t *set, size_t m,
                        overlap_search *o);

static int overlap_in_slab(const tiling *t, const size_t *active, size_t n,
                           int64_t slab_start, void *arg, bool *stop)
{
    overlap_search *o = arg;
    (void)slab_start;
    HFDCP_TRY(find_overlap(t, active, n, o));
    *stop = o->found;
    return HFDCP_OK;
}

/* Looks for two tiles of set[0..m) that overlap in every dimension of
 * o->dims (they overlap in the others by construction). */
static int find_overlap(const tiling *t, const size_t *set, size_t m,
                        overlap_search *o)
{
    int d, rc;
    uint64_t dims = o->dims;

    if (m < 2)
        return HFDCP_OK;
    if (dims == 0) {
        /* Nothing left to tell them apart (e.g. two scalars). */
        o->found = true;
        o->a = set[0];
        o->b = set[1];
        return HFDCP_OK;
    }
    HFDCP_TRY(choose_dim(t, set, m, dims, &d));
    if ((dims & ~((uint64_t)1 << d)) == 0) {
        /* Last dimension: sorted by start, an overlap shows between
         * neighbours. */
        keyed *s = NULL;
        HFDCP_TRY(sort_by_start(t, set, m, d, &s));
        for (size_t i = 0; i + 1 < m; i++) {
            if (tile_end(t, s[i].tile, d) > s[i + 1].key) {
                o->found = true;
                o->a = s[i].tile;
                o->b = s[i + 1].tile;
                break;
            }
        }
        free(s);
        return HFDCP_OK;
    }
    o->dims = dims & ~((uint64_t)1 << d);
    rc = sweep(t, set, m, d, NULL, 0, 2, overlap_in_slab, o);
    o->dims = dims;
    return rc;
}

/* ---- holes ---- */

typedef struct {
    int64_t *coord; /* the uncovered element, filled as dims get fixed */
    count_t region; /* elements of the shape's cross-section over dims
                       without the swept one */
    uint64_t rest;  /* dims without the swept one */
    int d;          /* the swept dimension */
    bool found;
} hole_search;

static int find_hole(const tiling *t, const size_t *set, size_t m,
                     uint64_t dims, int64_t *coord);

static count_t cross_volume(const tiling *t, size_t tile, uint64_t dims)
{
    count_t v = 1;
    for (int d = 0; d < t->ndim; d++)
        if (dims & ((uint64_t)1 << d))
            v = count_mul(v, (count_t)t->tiles[tile].sizes[d]);
    return v;
}

static int hole_in_slab(const tiling *t, const size_t *active, size_t n,
                        int64_t slab_start, void *arg, bool *stop)
{
    hole_search *h = arg;
    count_t covered = 0;

    for (size_t i = 0; i < n; i++)
        covered = count_add(covered, cross_volume(t, active[i], h->rest));
    if (covered >= h->region)
        return HFDCP_OK;
    h->coord[h->d] = slab_start;
    h->found = *stop = true;
    return find_hole(t, active, n, h->rest, h->coord);
}

/* Fills coord (for every dimension of `dims`) with an element of the
 * shape's cross-section over `dims` that no tile of set[0..m) covers.  The
 * tiles are disjoint in their projection on `dims` and their projected
 * volume is less than the cross-section's, so there is one. */
static int find_hole(const tiling *t, const size_t *set, size_t m,
                     uint64_t dims, int64_t *coord)
{
    hole_search h;
    int64_t extra[2];

    if (dims == 0)
        return HFDCP_OK;
    memset(&h, 0, sizeof h);
    h.coord = coord;
    HFDCP_TRY(choose_dim(t, set, m, dims, &h.d));
    h.rest = dims & ~((uint64_t)1 << h.d);
    h.region = 1;
    for (int d = 0; d < t->ndim; d++)
        if (h.rest & ((uint64_t)1 << d))
            h.region = count_mul(h.region, (count_t)t->shape[d]);
    extra[0] = 0;
    extra[1] = t->shape[h.d];
    HFDCP_TRY(sweep(t, set, m, h.d, extra, 2, 0, hole_in_slab, &h));
    if (!h.found)
        return hfdcp__error(HFDCP_ERR_INTERNAL,
                            "tensor '%s': tiling check lost track of a hole",
                            t->tensor);
    return HFDCP_OK;
}

/* ---- the check ---- */

static int report_overlap(int status, const tiling *t, size_t a, size_t b)
{
    char box_a[512], box_b[512], box_i[512], own_a[300], own_b[300];
    int64_t off[HFDCP_MAX_NDIM], size[HFDCP_MAX_NDIM];
    size_t lo = a < b ? a : b, hi = a < b ? b : a;

    hfdcp__format_box(box_a, sizeof box_a, t->ndim, t->tiles[lo].offsets,
                      t->tiles[lo].sizes);
    hfdcp__format_box(box_b, sizeof box_b, t->ndim, t->tiles[hi].offsets,
                      t->tiles[hi].sizes);
    describe_owner(t, lo, own_a, sizeof own_a);
    describe_owner(t, hi, own_b, sizeof own_b);
    if (!hfdcp__box_intersect(t->ndim, t->tiles[lo].offsets,
                              t->tiles[lo].sizes, t->tiles[hi].offsets,
                              t->tiles[hi].sizes, off, size))
        return hfdcp__error(HFDCP_ERR_INTERNAL,
                            "tensor '%s': tiling check misreported an "
                            "overlap of %s and %s",
                            t->tensor, box_a, box_b);
    hfdcp__format_box(box_i, sizeof box_i, t->ndim, off, size);
    return hfdcp__error(status, "tensor '%s': chunks %s %s and %s %s overlap on %s",
                        t->tensor, box_a, own_a, box_b, own_b, box_i);
}

static int check_bounds(int status, const tiling *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const hfdcp__tile *tile = &t->tiles[i];
        for (int d = 0; d < t->ndim; d++) {
            if (tile->offsets[d] < 0 || tile->sizes[d] < 0 ||
                tile->offsets[d] > t->shape[d] - tile->sizes[d]) {
                char box[512], owner[300], shape[512];
                format_any_box(box, sizeof box, t->ndim, tile->offsets,
                               tile->sizes);
                describe_owner(t, i, owner, sizeof owner);
                format_shape(shape, sizeof shape, t->ndim, t->shape);
                if (tile->offsets[d] < 0 || tile->sizes[d] < 0)
                    return hfdcp__error(status,
                                        "tensor '%s': chunk %s %s has a "
                                        "negative offset or size",
                                        t->tensor, box, owner);
                return hfdcp__error(status,
                                    "tensor '%s': chunk %s %s lies outside "
                                    "the tensor's shape %s",
                                    t->tensor, box, owner, shape);
            }
        }
    }
    return HFDCP_OK;
}

int hfdcp__tiling_check(int status, const char *tensor, int ndim,
                        const int64_t *shape, const hfdcp__tile *tiles,
                        size_t n, const char *owner_kind,
                        const char *const *owner_names)
{
    tiling t = {tensor, ndim, shape, tiles, owner_kind, owner_names};
    count_t numel = 1, covered = 0;
    size_t *set = NULL, m = 0;
    uint64_t all_dims;
    overlap_search o;
    int rc;

    if (ndim < 0 || ndim > HFDCP_MAX_NDIM)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "tensor '%s': %d dimensions (at most %d)", tensor,
                            ndim, HFDCP_MAX_NDIM);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return hfdcp__error(status,
                                "tensor '%s': negative dimension %" PRId64,
                                tensor, shape[d]);
        numel = count_mul(numel, (count_t)shape[d]);
    }
    if (numel == COUNT_MAX)
        return hfdcp__error(status,
                            "tensor '%s': too many elements to check its "
                            "chunks",
                            tensor);
    HFDCP_TRY(check_bounds(status, &t, n));

    /* Tiles of zero volume cover nothing and overlap nothing. */
    if ((set = malloc(n * sizeof *set + 1)) == NULL)
        return hfdcp__nomem("tiling check tiles");
    for (size_t i = 0; i < n; i++) {
        count_t v = cross_volume(&t, i, UINT64_MAX);
        if (v > 0)
            set[m++] = i;
        covered = count_add(covered, v);
    }

    all_dims = ndim == 64 ? UINT64_MAX : ((uint64_t)1 << ndim) - 1;
    memset(&o, 0, sizeof o);
    o.dims = all_dims;
    HFDCP_CHECK(find_overlap(&t, set, m, &o));
    if (o.found) {
        rc = report_overlap(status, &t, o.a, o.b);
        goto cleanup;
    }
    if (covered != numel) {
        int64_t coord[HFDCP_MAX_NDIM];
        char at[512], have[48], want[48];
        if (covered > numel)
            HFDCP_FAIL(HFDCP_ERR_INTERNAL,
                       "tensor '%s': chunks hold more elements than the "
                       "tensor but no overlap was found",
                       tensor);
        HFDCP_CHECK(find_hole(&t, set, m, all_dims, coord));
        format_shape(at, sizeof at, ndim, coord);
        count_format(have, sizeof have, covered);
        count_format(want, sizeof want, numel);
        HFDCP_FAIL(status,
                   "tensor '%s': element %s is not covered by any chunk "
                   "(chunks cover %s of %s elements)",
                   tensor, at, have, want);
    }
    rc = HFDCP_OK;
cleanup:
    free(set);
    return rc;
}
