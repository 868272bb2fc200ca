/*
 * mpiio_types.c - what a transfer moves, described for MPI: every piece
 * normalized (a run of bytes repeated along byte strides), split into
 * parts that fit a round, sorted and assigned to rounds whose file bytes
 * are disjoint; the MPI datatypes of a round's parts; the runs of a part
 * that meet a window of the file (for the aggregation and the sieve).
 * No I/O here.
 *
 * Large counts: Open MPI 4.1 implements MPI 3.1 (no large-count calls).  No
 * count given to a datatype constructor exceeds hfdcp__mpiio_block (1 GiB):
 * a longer run or vector becomes a vector of blocks plus a remainder,
 * joined by a struct.  Strides and displacements are MPI_Aint, so nothing
 * depends on int-sized subarray dimensions.  A round may move more than
 * 2^31 bytes if hfdcp__mpiio_round_max is raised: its types are checked with
 * MPI_Type_size_x and the bytes moved with MPI_Get_elements_x (do_round,
 * mpiio.c).
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpiio_internal.h"

uint64_t hfdcp__mpiio_block = (uint64_t)1 << 30;
uint64_t hfdcp__mpiio_round_max = (uint64_t)1 << 30;

/* ---------------------------------------------------------------------- */
/* Normalized pieces                                                      */
/* ---------------------------------------------------------------------- */

/* Describes piece `i` for messages. */
static void describe(char *buf, size_t size, const hfdcp__piece *p, size_t i)
{
    char fbox[256], mbox[256];
    hfdcp__format_box(fbox, sizeof fbox, p->ndim, p->fstart, p->count);
    hfdcp__format_box(mbox, sizeof mbox, p->ndim, p->mstart, p->count);
    snprintf(buf, size, "piece %zu (file box %s at byte %" PRIu64
             ", memory box %s, %d-bit elements)",
             i, fbox, p->file_offset, mbox, p->bits);
}

/* A piece's box while normalize() works on it, per dimension: the file
 * array's shape (fsh) and the box's start in it (fst), the same in
 * memory (msh, mst), the box's count (cnt), and the byte strides in the
 * file and in memory (fstr, mstr); nd dimensions. */
typedef struct {
    int nd;
    uint64_t fsh[HFDCP_MAX_NDIM], fst[HFDCP_MAX_NDIM], msh[HFDCP_MAX_NDIM],
        mst[HFDCP_MAX_NDIM], cnt[HFDCP_MAX_NDIM], fstr[HFDCP_MAX_NDIM],
        mstr[HFDCP_MAX_NDIM];
} dims;

static int overflow(const char *path, const char *what)
{
    return hfdcp__error(HFDCP_ERR_RANGE,
                        "'%s': %s: byte offsets overflow 63 bits", path, what);
}

/* Checks piece p (`what` describes it) and copies its box into *s;
 * *empty when a count is 0 (the dimensions after it are not checked). */
static int check_dims(const hfdcp__piece *p, const char *path,
                      const char *what, dims *s, bool *empty)
{
    int nd = p->ndim, d;

    *empty = false;
    s->nd = nd;
    if (nd < 0 || nd > HFDCP_MAX_NDIM || p->mem == NULL ||
        (nd > 0 && (p->fshape == NULL || p->fstart == NULL ||
                    p->mshape == NULL || p->mstart == NULL ||
                    p->count == NULL)))
        return hfdcp__error(HFDCP_ERR_ARG, "'%s': %s: bad dims or NULL array",
                            path, what);
    if (p->bits != 4 && p->bits != 6 && p->bits != 8 && p->bits != 16 &&
        p->bits != 32 && p->bits != 64)
        return hfdcp__error(HFDCP_ERR_ARG, "'%s': %s: bad element size",
                            path, what);
    for (d = 0; d < nd; d++) {
        if (p->fshape[d] < 0 || p->fstart[d] < 0 || p->mshape[d] < 0 ||
            p->mstart[d] < 0 || p->count[d] < 0 ||
            p->count[d] > p->fshape[d] - p->fstart[d] ||
            p->count[d] > p->mshape[d] - p->mstart[d])
            return hfdcp__error(HFDCP_ERR_ARG,
                                "'%s': %s: box outside its array in dim %d",
                                path, what, d);
        s->fsh[d] = (uint64_t)p->fshape[d];
        s->fst[d] = (uint64_t)p->fstart[d];
        s->msh[d] = (uint64_t)p->mshape[d];
        s->mst[d] = (uint64_t)p->mstart[d];
        s->cnt[d] = (uint64_t)p->count[d];
        if (s->cnt[d] == 0) {
            *empty = true;
            return HFDCP_OK;
        }
    }
    return HFDCP_OK;
}

/* Sub-byte elements (p->bits 4 or 6): *s in bytes instead of elements. */
static int fold_bits(const hfdcp__piece *p, const char *path,
                     const char *what, dims *s)
{
    /* First merge the trailing dimensions whole in both arrays into
     * the one before them: a [2, 3] F4 tensor read whole is one run of
     * 6 elements (3 bytes) although its rows are 1.5 bytes. */
    uint64_t b = (uint64_t)p->bits;
    int nd = s->nd, d;
    while (nd > 1 && s->fst[nd - 1] == 0 && s->mst[nd - 1] == 0 &&
           s->cnt[nd - 1] == s->fsh[nd - 1] &&
           s->cnt[nd - 1] == s->msh[nd - 1]) {
        uint64_t k = s->cnt[nd - 1];
        if (!mul_ok(s->fsh[nd - 2], k, &s->fsh[nd - 2]) ||
            !mul_ok(s->fst[nd - 2], k, &s->fst[nd - 2]) ||
            !mul_ok(s->msh[nd - 2], k, &s->msh[nd - 2]) ||
            !mul_ok(s->mst[nd - 2], k, &s->mst[nd - 2]) ||
            !mul_ok(s->cnt[nd - 2], k, &s->cnt[nd - 2]))
            return overflow(path, what);
        nd--;
    }
    s->nd = nd;
    /* Then fold elements into bytes: along the innermost dimension
     * every extent and start must be a whole number of bytes, so that
     * every row of both arrays starts on a byte. */
    d = nd - 1;
    if (nd == 0 || (s->fsh[d] * b) % 8 || (s->fst[d] * b) % 8 ||
        (s->msh[d] * b) % 8 || (s->mst[d] * b) % 8 || (s->cnt[d] * b) % 8)
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "'%s': %s: a box of %d-bit elements must "
                            "start and end on whole bytes along the "
                            "innermost dimension, in the file and in "
                            "memory",
                            path, what, p->bits);
    s->fsh[d] = s->fsh[d] * b / 8;
    s->fst[d] = s->fst[d] * b / 8;
    s->msh[d] = s->msh[d] * b / 8;
    s->mst[d] = s->mst[d] * b / 8;
    s->cnt[d] = s->cnt[d] * b / 8;
    return HFDCP_OK;
}

/* Byte strides, offsets of the first byte (*foff in the file, *moff in
 * memory, each added to), and of the last (*last, from the first).
 * false on overflow. */
static bool byte_strides(dims *s, uint64_t elem, uint64_t *foff,
                         uint64_t *moff, uint64_t *last)
{
    uint64_t t;

    for (int d = s->nd - 1; d >= 0; d--) {
        if (d == s->nd - 1) {
            s->fstr[d] = elem;
            s->mstr[d] = elem;
        } else if (!mul_ok(s->fstr[d + 1], s->fsh[d + 1], &s->fstr[d]) ||
                   !mul_ok(s->mstr[d + 1], s->msh[d + 1], &s->mstr[d])) {
            return false;
        }
        if (!mul_ok(s->fst[d], s->fstr[d], &t) || !add_ok(*foff, t, foff) ||
            !mul_ok(s->mst[d], s->mstr[d], &t) || !add_ok(*moff, t, moff) ||
            !mul_ok(s->cnt[d] - 1, s->fstr[d], &t) || !add_ok(*last, t, last))
            return false;
    }
    return true;
}

/* Merge trailing dimensions whole in both arrays into the run, then the
 * first partial one (its elements are contiguous in both); the dimensions
 * left, but those of extent 1, are q's outer ones.  false on overflow. */
static bool merge_run(const dims *s, uint64_t elem, npiece *q)
{
    int d = s->nd - 1;

    q->run = elem;
    while (d >= 0 && s->fst[d] == 0 && s->mst[d] == 0 &&
           s->cnt[d] == s->fsh[d] && s->cnt[d] == s->msh[d]) {
        if (!mul_ok(q->run, s->cnt[d], &q->run))
            return false;
        d--;
    }
    if (d >= 0) {
        if (!mul_ok(q->run, s->cnt[d], &q->run))
            return false;
        d--;
    }
    q->bytes = q->run;
    for (int j = 0; j <= d; j++) {
        if (s->cnt[j] == 1)
            continue;
        q->count[q->k] = s->cnt[j];
        q->fstride[q->k] = s->fstr[j];
        q->mstride[q->k] = s->mstr[j];
        q->k++;
        if (!mul_ok(q->bytes, s->cnt[j], &q->bytes))
            return false;
    }
    return true;
}

/*
 * Normalizes piece `i` into *q, whose arrays point into `pool` (3 * ndim
 * entries).  An empty piece gets bytes == 0.
 */
static int normalize(const hfdcp__piece *p, size_t i, const char *path,
                     uint64_t *pool, npiece *q)
{
    dims s;
    uint64_t elem, foff = p->file_offset, moff = 0, last = 0;
    int nd = p->ndim;
    bool empty = false;
    char what[640];

    memset(q, 0, sizeof *q);
    q->count = pool;
    q->fstride = pool + (nd > 0 ? nd : 0);
    q->mstride = pool + 2 * (nd > 0 ? nd : 0);
    describe(what, sizeof what, p, i);

    HFDCP_TRY(check_dims(p, path, what, &s, &empty));
    if (empty)
        return HFDCP_OK; /* empty */
    if (p->bits < 8) {
        HFDCP_TRY(fold_bits(p, path, what, &s));
        elem = 1;
    } else {
        elem = (uint64_t)p->bits / 8;
    }
    if (!byte_strides(&s, elem, &foff, &moff, &last) ||
        !merge_run(&s, elem, q))
        return overflow(path, what);
    /* `last` is the offset of the last element from the first; the piece
     * ends one element after it. */
    q->count0 = q->k > 0 ? q->count[0] : 0;
    q->foff = foff;
    if (!add_ok(last, elem, &last) || !add_ok(foff, last, &q->fend))
        return overflow(path, what);
    q->maddr = (char *)p->mem + moff;
    return HFDCP_OK;
}

/* ---------------------------------------------------------------------- */
/* Datatypes                                                              */
/* ---------------------------------------------------------------------- */

static uint64_t block_count(void)
{
    uint64_t b = hfdcp__mpiio_block;
    if (b < 2)
        b = 2;
    if (b > (uint64_t)INT_MAX)
        b = (uint64_t)INT_MAX;
    return b;
}

void hfdcp__mpiio_free_type(MPI_Datatype *t)
{
    if (*t != MPI_DATATYPE_NULL && *t != MPI_BYTE)
        MPI_Type_free(t);
    *t = MPI_DATATYPE_NULL;
}

/*
 * *out = `count` copies of `inner`, `stride` bytes apart (a run of bytes
 * when inner is MPI_BYTE and stride 1).  Counts above the block size
 * become a vector of blocks (recursively) plus a remainder.  `inner` is
 * not freed.
 */
static int vector_type(uint64_t count, uint64_t stride, MPI_Datatype inner,
                       const char *path, MPI_Datatype *out)
{
    uint64_t b = block_count(), q, r, bstride, rdisp;
    MPI_Datatype blk = MPI_DATATYPE_NULL, outer = MPI_DATATYPE_NULL,
                 rem = MPI_DATATYPE_NULL;
    int rc = HFDCP_OK;

    if (count <= b) {
        if (inner == MPI_BYTE && stride == 1)
            MPI_TRY(MPI_Type_contiguous((int)count, MPI_BYTE, out), path);
        else
            MPI_TRY(MPI_Type_create_hvector((int)count, 1, (MPI_Aint)stride,
                                            inner, out),
                    path);
        return HFDCP_OK;
    }
    q = count / b;
    r = count % b;
    if (!mul_ok(b, stride, &bstride) || !mul_ok(q, bstride, &rdisp))
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "'%s': a vector of %" PRIu64 " x %" PRIu64
                            " bytes overflows",
                            path, count, stride);
    HFDCP_CHECK(vector_type(b, stride, inner, path, &blk));
    HFDCP_CHECK(vector_type(q, bstride, blk, path, &outer));
    if (r == 0) {
        *out = outer;
        outer = MPI_DATATYPE_NULL;
    } else {
        int lens[2] = {1, 1};
        MPI_Aint disps[2] = {0, (MPI_Aint)rdisp};
        MPI_Datatype types[2];
        HFDCP_CHECK(vector_type(r, stride, inner, path, &rem));
        types[0] = outer;
        types[1] = rem;
        HFDCP_MPI_CHECK(MPI_Type_create_struct(2, lens, disps, types, out));
    }
cleanup:
    hfdcp__mpiio_free_type(&blk);
    hfdcp__mpiio_free_type(&outer);
    hfdcp__mpiio_free_type(&rem);
    return rc;
}

/* The datatype of one piece on the file side or the memory side; its first
 * byte is at displacement 0. */
static int piece_type(const npiece *q, bool file, const char *path,
                      MPI_Datatype *out)
{
    MPI_Datatype t = MPI_DATATYPE_NULL, t2;
    int rc;

    HFDCP_TRY(vector_type(q->run, 1, MPI_BYTE, path, &t));
    for (int j = q->k - 1; j >= 0; j--) {
        rc = vector_type(dim_count(q, j),
                         file ? q->fstride[j] : q->mstride[j], t,
                         path, &t2);
        hfdcp__mpiio_free_type(&t);
        if (rc != HFDCP_OK)
            return rc;
        t = t2;
    }
    *out = t;
    return HFDCP_OK;
}

/*
 * Builds, for the pieces `round[0..n)` (sorted, disjoint in the file), the
 * committed file type (displacements = absolute file offsets) and memory
 * type (displacements = absolute addresses, used with MPI_BOTTOM), and
 * checks their sizes against `bytes`.
 */
int hfdcp__mpiio_round_types(npiece *const *round, size_t n, uint64_t bytes,
                             const char *path, MPI_Datatype *ftype,
                             MPI_Datatype *mtype)
{
    int *lens = NULL, rc = HFDCP_OK;
    MPI_Aint *fdisp = NULL, *mdisp = NULL;
    MPI_Datatype *ft = NULL, *mt = NULL;
    MPI_Count fsize = 0, msize = 0;
    size_t built = 0;

    *ftype = *mtype = MPI_DATATYPE_NULL;
    if (n > (size_t)INT_MAX)
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "'%s': %zu pieces in one round (at most %d)",
                            path, n, INT_MAX);
    lens = malloc(n * sizeof *lens);
    fdisp = malloc(n * sizeof *fdisp);
    mdisp = malloc(n * sizeof *mdisp);
    ft = malloc(n * sizeof *ft);
    mt = malloc(n * sizeof *mt);
    if (!lens || !fdisp || !mdisp || !ft || !mt)
        HFDCP_FAIL(HFDCP_ERR_NOMEM,
                   "out of memory describing %zu pieces of '%s'", n, path);
    for (size_t i = 0; i < n; i++) {
        ft[i] = mt[i] = MPI_DATATYPE_NULL;
        lens[i] = 1;
        fdisp[i] = (MPI_Aint)round[i]->foff;
        HFDCP_MPI_CHECK(MPI_Get_address(round[i]->maddr, &mdisp[i]));
        built = i + 1;
        HFDCP_CHECK(piece_type(round[i], true, path, &ft[i]));
        HFDCP_CHECK(piece_type(round[i], false, path, &mt[i]));
    }
    HFDCP_MPI_CHECK(MPI_Type_create_struct((int)n, lens, fdisp, ft, ftype));
    HFDCP_MPI_CHECK(MPI_Type_commit(ftype));
    HFDCP_MPI_CHECK(MPI_Type_create_struct((int)n, lens, mdisp, mt, mtype));
    HFDCP_MPI_CHECK(MPI_Type_commit(mtype));
    HFDCP_MPI_CHECK(MPI_Type_size_x(*ftype, &fsize));
    HFDCP_MPI_CHECK(MPI_Type_size_x(*mtype, &msize));
    if (fsize != (MPI_Count)bytes || msize != (MPI_Count)bytes)
        HFDCP_FAIL(HFDCP_ERR_INTERNAL,
                   "'%s': datatypes of %zu pieces hold %lld (file) and %lld "
                   "(memory) bytes, expected %" PRIu64,
                   path, n, (long long)fsize, (long long)msize, bytes);
cleanup:
    for (size_t i = 0; i < built; i++) {
        hfdcp__mpiio_free_type(&ft[i]);
        hfdcp__mpiio_free_type(&mt[i]);
    }
    if (rc != HFDCP_OK) {
        hfdcp__mpiio_free_type(ftype);
        hfdcp__mpiio_free_type(mtype);
        if (rc == HFDCP_ERR_MPI)
            hfdcp__error_prefix(rc, "describing pieces of '%s'", path);
    }
    free(lens);
    free(fdisp);
    free(mdisp);
    free(ft);
    free(mt);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Rounds                                                                 */
/* ---------------------------------------------------------------------- */

static int cmp_npiece(const void *a, const void *b)
{
    const npiece *x = *(npiece *const *)a, *y = *(npiece *const *)b;
    if (x->foff != y->foff)
        return x->foff < y->foff ? -1 : 1;
    if (x->fend != y->fend)
        return x->fend < y->fend ? -1 : 1;
    return 0;
}

static uint64_t round_max(void)
{
    return hfdcp__mpiio_round_max > 0 ? hfdcp__mpiio_round_max : 1;
}

static int parts_push(parts *ps, const npiece *q)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 16;
        npiece *v = cap > SIZE_MAX / sizeof *v
                        ? NULL
                        : realloc(ps->v, cap * sizeof *v);
        if (v == NULL)
            return hfdcp__nomem("the parts of a transfer");
        ps->v = v;
        ps->cap = cap;
    }
    ps->v[ps->n++] = *q;
    return HFDCP_OK;
}

/*
 * Appends `q` to `ps`, split into parts of at most `lim` bytes: groups of
 * its outermost dimension's slices when one slice fits, else each slice
 * split in turn; a single run longer than `lim` becomes shorter runs.
 * Parts share q's dimension arrays (a part without q's outermost
 * dimension points one entry further).
 */
static int split_piece(const npiece *q, uint64_t lim, parts *ps)
{
    npiece sub = *q;

    if (q->bytes <= lim)
        return parts_push(ps, q);
    if (q->k == 0) {
        for (uint64_t off = 0; off < q->run; off += lim) {
            sub.run = q->run - off < lim ? q->run - off : lim;
            sub.bytes = sub.run;
            sub.foff = q->foff + off;
            sub.fend = sub.foff + sub.run;
            sub.maddr = q->maddr + off;
            HFDCP_TRY(parts_push(ps, &sub));
        }
        return HFDCP_OK;
    }
    /* One slice of dimension 0: its bytes, and its extent in the file. */
    uint64_t slice = q->bytes / q->count0;
    uint64_t extent = q->fend - q->foff - (q->count0 - 1) * q->fstride[0];
    if (slice <= lim) {
        uint64_t g = lim / slice;
        for (uint64_t i = 0; i < q->count0; i += g) {
            sub.count0 = q->count0 - i < g ? q->count0 - i : g;
            sub.bytes = sub.count0 * slice;
            sub.foff = q->foff + i * q->fstride[0];
            sub.fend = sub.foff + (sub.count0 - 1) * q->fstride[0] + extent;
            sub.maddr = q->maddr + i * q->mstride[0];
            HFDCP_TRY(parts_push(ps, &sub));
        }
        return HFDCP_OK;
    }
    sub.k = q->k - 1;
    sub.count = q->count + 1;
    sub.fstride = q->fstride + 1;
    sub.mstride = q->mstride + 1;
    sub.count0 = sub.k > 0 ? sub.count[0] : 0;
    sub.bytes = slice;
    for (uint64_t i = 0; i < q->count0; i++) {
        sub.foff = q->foff + i * q->fstride[0];
        sub.fend = sub.foff + extent;
        sub.maddr = q->maddr + i * q->mstride[0];
        HFDCP_TRY(split_piece(&sub, lim, ps));
    }
    return HFDCP_OK;
}

/* The normalized pieces' dimension arrays: 3 * ndim entries each. */
static size_t pool_entries(const hfdcp__piece *pieces, size_t n)
{
    size_t pool_len = 0;

    for (size_t i = 0; i < n; i++)
        pool_len += 3 * (size_t)(pieces[i].ndim > 0 ? pieces[i].ndim : 0);
    return pool_len;
}

int hfdcp__mpiio_parts(const hfdcp__piece *pieces, size_t n,
                       const char *path, mpiio_parts *out)
{
    npiece *np;
    uint64_t *pool, total = 0, lim = round_max();
    size_t pool_len = pool_entries(pieces, n), m;
    int rc = HFDCP_OK;

    memset(out, 0, sizeof *out);
    out->lim = lim;
    out->np = np = malloc((n ? n : 1) * sizeof *np);
    out->pool = pool = malloc((pool_len ? pool_len : 1) * sizeof *pool);
    if (!np || !pool)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory describing %zu pieces of "
                   "'%s'", n, path);
    pool_len = 0;
    for (size_t i = 0; i < n; i++) {
        HFDCP_CHECK(normalize(&pieces[i], i, path, pool + pool_len, &np[i]));
        pool_len += 3 * (size_t)(pieces[i].ndim > 0 ? pieces[i].ndim : 0);
        if (np[i].bytes == 0)
            continue;
        if (!add_ok(total, np[i].bytes, &total))
            HFDCP_FAIL(HFDCP_ERR_RANGE, "'%s': pieces total above 2^63 bytes",
                       path);
        HFDCP_CHECK(split_piece(&np[i], lim, &out->ps));
    }
    out->m = m = out->ps.n;
    out->sorted = malloc((m ? m : 1) * sizeof *out->sorted);
    out->byround = malloc((m ? m : 1) * sizeof *out->byround);
    if (!out->sorted || !out->byround)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory describing %zu parts of "
                   "'%s'", m, path);
    for (size_t i = 0; i < m; i++)
        out->sorted[i] = &out->ps.v[i];
    qsort(out->sorted, m, sizeof *out->sorted, cmp_npiece);
cleanup:
    return rc;
}

void hfdcp__mpiio_parts_free(mpiio_parts *pt)
{
    free(pt->np);
    free(pt->ps.v);
    free(pt->sorted);
    free(pt->byround);
    free(pt->pool);
}

/* The heap of heap_item (mpiio_internal.h), by `end`. */
void hfdcp__mpiio_heap_down(heap_item *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].end < h[m].end)
            m = l;
        if (r < n && h[r].end < h[m].end)
            m = r;
        if (m == i)
            return;
        heap_item t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

void hfdcp__mpiio_heap_up(heap_item *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].end <= h[i].end)
            return;
        heap_item t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

/*
 * Assigns a round to every piece of `sorted[0..n)` (sorted by first byte,
 * each at most `lim` bytes) so that in each round the file byte ranges are
 * disjoint and the bytes total at most `lim` (greedy interval
 * partitioning: a piece joins the round that ended earliest, if it ended
 * before the piece starts; a round with no room for that piece is closed
 * for good).  Without the byte limit this takes as few rounds as there are
 * pieces over any one byte.
 */
int hfdcp__mpiio_assign_rounds(npiece **sorted, size_t n, uint64_t lim,
                               int *nrounds)
{
    heap_item *h = malloc((n ? n : 1) * sizeof *h);
    size_t hn = 0;
    int nr = 0;

    if (h == NULL)
        return hfdcp__nomem("the rounds of a transfer");
    for (size_t i = 0; i < n; i++) {
        npiece *q = sorted[i];
        while (hn > 0 && h[0].end <= q->foff && h[0].bytes > lim - q->bytes) {
            h[0] = h[--hn]; /* full: closed */
            hfdcp__mpiio_heap_down(h, hn, 0);
        }
        if (hn > 0 && h[0].end <= q->foff) {
            q->round = h[0].round;
            h[0].end = q->fend;
            h[0].bytes += q->bytes;
            hfdcp__mpiio_heap_down(h, hn, 0);
        } else {
            if (nr == INT_MAX) {
                free(h);
                return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                                    "too many rounds (overlapping or large "
                                    "pieces)");
            }
            q->round = nr;
            h[hn].end = q->fend;
            h[hn].bytes = q->bytes;
            h[hn].round = nr++;
            hfdcp__mpiio_heap_up(h, hn);
            hn++;
        }
    }
    free(h);
    *nrounds = nr;
    return HFDCP_OK;
}

/* ---------------------------------------------------------------------- */
/* The runs of a part in a window                                         */
/* ---------------------------------------------------------------------- */

/*
 * Calls fn on each run of q's slice at outer dimension j (first file byte
 * `foff`, first memory byte `mem`) that meets [w0, w1), cut to it, in
 * file order.  `ext` holds the file extent of one slice of each dimension
 * (ext[k] = run).
 */
static int clip_runs(const npiece *q, int j, const uint64_t *ext,
                     uint64_t foff, char *mem, uint64_t w0, uint64_t w1,
                     run_fn fn, void *ctx)
{
    if (j == q->k) {
        uint64_t a = foff > w0 ? foff : w0;
        uint64_t b = foff + q->run < w1 ? foff + q->run : w1;
        if (a >= b)
            return HFDCP_OK;
        return fn(ctx, a, b - a, mem + (a - foff));
    }
    uint64_t n = dim_count(q, j), fs = q->fstride[j], e = ext[j + 1];
    uint64_t lo = 0, hi;
    if (foff + e <= w0)
        lo = (w0 - foff - e) / fs + 1; /* first slice ending after w0 */
    if (foff >= w1)
        return HFDCP_OK;
    hi = (w1 - 1 - foff) / fs + 1; /* slices starting before w1 */
    if (hi > n)
        hi = n;
    for (uint64_t i = lo; i < hi; i++)
        HFDCP_TRY(clip_runs(q, j + 1, ext, foff + i * fs,
                            mem + i * q->mstride[j], w0, w1, fn, ctx));
    return HFDCP_OK;
}

int hfdcp__mpiio_part_runs(const npiece *q, uint64_t w0, uint64_t w1,
                           run_fn fn, void *ctx)
{
    uint64_t ext[HFDCP_MAX_NDIM + 1];

    if (q->fend <= w0 || q->foff >= w1)
        return HFDCP_OK;
    ext[q->k] = q->run;
    for (int j = q->k - 1; j >= 0; j--)
        ext[j] = (dim_count(q, j) - 1) * q->fstride[j] + ext[j + 1];
    return clip_runs(q, 0, ext, q->foff, q->maddr, w0, w1, fn, ctx);
}
