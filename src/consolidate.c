/*
 * consolidate.c - per-rank shard files (DCP_SHARDING_INFO) -> a standard
 * checkpoint, byte for byte what hfdcp_writer_commit() writes for the same
 * tensors and file map.
 *
 * hfdcp_consolidate(), every step ending with an agreement (same status on
 * every rank, the first failing rank's message):
 *   1. arguments: checked locally, then against rank 0's (paths, options
 *      but the progress callback, the file map's entries;
 *      consolidate_args.c);
 *   2. input: rank 0 checks that input_dir is a directory and not
 *      output_dir; the catalog of the shard files
 *      (hfdcp__catalog_open_shards) refuses a file without
 *      DCP_SHARDING_INFO, and a tensor whose shards disagree on dtype,
 *      leave a hole or overlap, before anything is written; so is a
 *      malformed hfdcp_crc32c (consolidate_crc.c);
 *   3. plan: every rank computes the writer's global plan (plan.c) for one
 *      pseudo-rank holding every tensor whole, in its output dtype (the
 *      cast dtype for cast floating-point tensors), with the map's file
 *      indices.  So the file names, headers, offsets and index are the
 *      writer's by construction;
 *   4. data: output files one after another, each under its temporary
 *      name.  A file's data region [0, D) is cut into slices of S bytes
 *      (S from buffer_bytes, see slice_bytes()), cut points moved down to
 *      element boundaries; round k gives slice k*P + r to rank r of P.  In
 *      a round every rank requests its slice's tensor pieces from a
 *      reader of step 2's catalog (shard files opened once) as boxes (an
 *      element range of a row-major tensor is at most 2*ndim - 1 boxes),
 *      in the stored dtype, straight into its staging buffer;
 *      hfdcp_reader_load() reads them with collective reads of just
 *      those bytes; the bytes read go into the CRC runs of
 *      the shard chunks they come from; cast segments are converted
 *      (split over num_threads threads) into the output buffer, whose
 *      bytes go into the CRC runs of their output tensors; the shard
 *      bytes of the rank's next slice are asked of the kernel
 *      (consolidate_ahead.c) so that they are read during the write;
 *      then one collective write of every rank's slice.  In a file's
 *      last round, an XOR reduction gives rank 0 the file's CRCs, and
 *      rank 0 adds the header, complete, to its write.  Then set size,
 *      sync, close.
 *      After the last file, an XOR reduction gives rank 0 every chunk's
 *      CRC, checked against the shard files' (a mismatch fails the
 *      consolidation, nothing published);
 *   5. publication as the writer's (publish.c, hfdcp__publish: index
 *      last).
 *
 * Memory per rank: one output buffer of at most S bytes (+ the input
 * buffer of the cast slices, S scaled by the size ratio, S chosen so that
 * both fit in buffer_bytes), whatever the tensor sizes.  Sub-byte tensors
 * (F4, F6) are cut only between whole-byte groups of rows, which may
 * exceed S for a tensor whose rows are never whole bytes.
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consolidate_internal.h"

/* The output staging buffer comes from the buffer kept between
 * transfers (hfdcp_release_buffers) when that is large enough, and is
 * kept after the consolidation when it is no larger than the default. */
#define DEFAULT_BUFFER HFDCP_CONS_DEFAULT_BUFFER
#define MAX_THREADS HFDCP_CONS_MAX_THREADS

/* Below this many elements to convert in a round, threads cost more than
 * they save. */
#define THREAD_MIN_ELEMS 65536

void hfdcp_consolidate_options_init(hfdcp_consolidate_options *o)
{
    if (o == NULL)
        return;
    memset(o, 0, sizeof *o);
    o->cast_dtype = HFDCP_BF16;
    o->info = MPI_INFO_NULL;
    o->progress = NULL;
    o->progress_arg = NULL;
}

static bool is_float(hfdcp_dtype d)
{
    return hfdcp__can_convert(d, HFDCP_F64);
}

/* ---- 3. plan ---- */

static const int64_t zeros[HFDCP_MAX_NDIM];

static hfdcp_dtype out_dtype(const hfdcp__tensor *t,
                             const hfdcp_consolidate_options *o)
{
    return o->cast && is_float(t->dtype) ? o->cast_dtype : t->dtype;
}

/* The writer's plan for one rank holding every tensor whole.  Local and
 * deterministic: every rank computes the same plan. */
static int make_plan(const hfdcp__catalog *cat, const hfdcp_file_map *map,
                     const hfdcp_consolidate_options *o, uint64_t align,
                     hfdcp__wplan *plan)
{
    size_t n = cat->n_tensors;
    hfdcp__wchunk *ch = calloc(n ? n : 1, sizeof *ch);
    hfdcp__buf packed;
    const void *part;
    int rc = HFDCP_OK;

    hfdcp__buf_init(&packed);
    if (ch == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory planning %zu tensors", n);
    for (size_t i = 0; i < n; i++) {
        const hfdcp__tensor *t = &cat->tensors[i];
        ch[i].name = t->name;
        ch[i].dtype = out_dtype(t, o);
        ch[i].ndim = t->ndim;
        ch[i].shape = t->shape;
        ch[i].offsets = zeros;
        ch[i].sizes = t->shape;
        ch[i].file_index = 0;
        if (map != NULL &&
            hfdcp_file_map_get(map, t->name, &ch[i].file_index) != HFDCP_OK)
            HFDCP_FAIL(HFDCP_ERR_PLAN,
                       "tensor '%s' of the shard files in '%s' is not in the "
                       "file map",
                       t->name, cat->path);
    }
    HFDCP_CHECK(hfdcp__wplan_pack(ch, n, hfdcp__file_map_files(map),
                                  &packed));
    part = packed.data;
    rc = hfdcp__wplan_global(1, &part, &packed.len, 0, align,
                             !o->no_checksums, plan);
cleanup:
    hfdcp__buf_free(&packed);
    free(ch);
    return rc;
}

/* ---- 4. data ---- */

/* One tensor's bytes in an output file's data region. */
typedef struct {
    const hfdcp__tensor *t;
    hfdcp_dtype in, out;
    uint64_t begin, bytes; /* in the output's data region */
    uint64_t unit;         /* elements between possible cut points */
    uint64_t gran;         /* bytes of a unit in the output */
} segment;

/* Elements between cut points: 1, or for sub-byte dtypes the smallest
 * block of trailing dimensions whose boxes start and end on whole bytes
 * (P_k = prod(shape[k+1..]) with P_k * bits a multiple of 8; if none, the
 * whole tensor).  Boxes of such units are what the reader accepts. */
static uint64_t cut_unit(const hfdcp__tensor *t, int bits)
{
    uint64_t p = 1, numel = 1;

    if (bits >= 8)
        return 1;
    for (int d = 0; d < t->ndim; d++)
        numel *= (uint64_t)t->shape[d];
    for (int k = t->ndim - 1; k >= 0; k--) {
        if (p * (uint64_t)bits % 8 == 0)
            return p;
        p *= (uint64_t)t->shape[k];
    }
    return numel;
}

typedef struct {
    segment *segs; /* by begin; empty tensors left out */
    size_t n;
    uint64_t data; /* D: bytes of the data region */
} file_layout;

static int seg_cmp(const void *a, const void *b)
{
    const segment *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* The segments of every output file, from the plan's offsets. */
static int make_layouts(const hfdcp__catalog *cat, const hfdcp__wplan *plan,
                        const hfdcp_consolidate_options *o,
                        file_layout **out)
{
    size_t nf = plan->n_files;
    file_layout *fl = calloc(nf, sizeof *fl);

    *out = fl;
    if (fl == NULL)
        return hfdcp__nomem("the output layout");
    for (size_t i = 0; i < cat->n_tensors; i++)
        if (cat->tensors[i].nbytes > 0)
            fl[plan->assign[i].file].n++;
    for (size_t f = 0; f < nf; f++) {
        fl[f].data = plan->file_sizes[f] - plan->header_lens[f];
        if ((fl[f].segs = malloc((fl[f].n + 1) * sizeof *fl[f].segs)) ==
            NULL)
            return hfdcp__nomem("the output layout");
        fl[f].n = 0;
    }
    for (size_t i = 0; i < cat->n_tensors; i++) {
        const hfdcp__tensor *t = &cat->tensors[i];
        const hfdcp__wassign *a = &plan->assign[i];
        segment *s;
        int bits;

        if (t->nbytes == 0)
            continue;
        s = &fl[a->file].segs[fl[a->file].n++];
        s->t = t;
        s->in = t->dtype;
        s->out = out_dtype(t, o);
        bits = hfdcp_dtype_bits(s->out);
        s->begin = a->offset - plan->header_lens[a->file];
        /* A cast tensor's dtypes are whole bytes (F64, F32, F16, BF16). */
        s->bytes = s->in == s->out
                       ? t->nbytes
                       : t->nbytes / (uint64_t)(hfdcp_dtype_bits(s->in) / 8) *
                             (uint64_t)(bits / 8);
        s->unit = cut_unit(t, bits);
        s->gran = s->unit * (uint64_t)bits / 8;
    }
    for (size_t f = 0; f < nf; f++) {
        uint64_t at = 0;
        qsort(fl[f].segs, fl[f].n, sizeof *fl[f].segs, seg_cmp);
        for (size_t k = 0; k < fl[f].n; k++) {
            if (fl[f].segs[k].begin != at)
                return hfdcp__error(HFDCP_ERR_INTERNAL,
                                    "output file '%s': tensor '%s' at %" PRIu64
                                    ", expected %" PRIu64,
                                    plan->file_names[f],
                                    fl[f].segs[k].t->name,
                                    fl[f].segs[k].begin, at);
            at += fl[f].segs[k].bytes;
        }
        if (at != fl[f].data)
            return hfdcp__error(HFDCP_ERR_INTERNAL,
                                "output file '%s': %" PRIu64 " bytes of "
                                "tensors for %" PRIu64 " of data",
                                plan->file_names[f], at, fl[f].data);
    }
    return HFDCP_OK;
}

static void layouts_free(file_layout *fl, size_t n)
{
    if (fl == NULL)
        return;
    for (size_t f = 0; f < n; f++)
        free(fl[f].segs);
    free(fl);
}

/* The segment holding byte x (< data) of a file. */
static size_t find_seg(const file_layout *fl, uint64_t x)
{
    size_t lo = 0, hi = fl->n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (fl->segs[mid].begin <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Cut point j of a file cut into slices of s bytes: j*s moved down to the
 * start of its unit. */
static uint64_t cut(const file_layout *fl, uint64_t s, uint64_t j)
{
    uint64_t x;
    const segment *g;

    if (j >= (fl->data + s - 1) / s)
        return fl->data;
    x = j * s;
    g = &fl->segs[find_seg(fl, x)];
    return g->begin + (x - g->begin) / g->gran * g->gran;
}

/* Rounds of a file: ceil(J / P) for J slices, at least one (rank 0 writes
 * the header in round 0 even when there is no data). */
static uint64_t file_rounds(const file_layout *fl, uint64_t s, int nranks)
{
    uint64_t j = (fl->data + s - 1) / s;
    uint64_t r = (j + (uint64_t)nranks - 1) / (uint64_t)nranks;
    return r ? r : 1;
}

/* Slice bytes S: the output slice and the input bytes of its cast
 * segments must fit in `buffer` together; a margin of 7 bytes for cut
 * points moved down to element boundaries. */
static uint64_t slice_bytes(const hfdcp__catalog *cat,
                            const hfdcp_consolidate_options *o,
                            uint64_t buffer)
{
    uint64_t s = buffer;

    for (size_t i = 0; i < cat->n_tensors; i++) {
        const hfdcp__tensor *t = &cat->tensors[i];
        hfdcp_dtype od = out_dtype(t, o);
        uint64_t ib = (uint64_t)hfdcp_dtype_bits(t->dtype);
        uint64_t ob = (uint64_t)hfdcp_dtype_bits(od);
        uint64_t fit = buffer / (ib + ob) * ob + buffer % (ib + ob) * ob /
                                                   (ib + ob);
        if (od != t->dtype && fit < s)
            s = fit;
    }
    return s > 16 ? s - 7 : s > 0 ? s : 1;
}

/* The conversions of one round. */
typedef struct {
    hfdcp_dtype from, to;
    const unsigned char *src;
    unsigned char *dst;
    uint64_t n;
} conversion;

typedef struct {
    const conversion *jobs;
    size_t n_jobs;
    uint64_t first, last; /* elements [first, last) of all the jobs */
} convert_part;

static void *convert_range(void *arg)
{
    const convert_part *p = arg;
    uint64_t at = 0;

    for (size_t k = 0; k < p->n_jobs && at < p->last; k++) {
        const conversion *c = &p->jobs[k];
        uint64_t a = p->first > at ? p->first - at : 0;
        uint64_t b = p->last - at < c->n ? p->last - at : c->n;
        if (a < b) {
            size_t ib = (size_t)hfdcp_dtype_bits(c->from) / 8;
            size_t ob = (size_t)hfdcp_dtype_bits(c->to) / 8;
            hfdcp__convert(c->from, c->src + a * ib, c->to, c->dst + a * ob,
                           (size_t)(b - a));
        }
        at += c->n;
    }
    return NULL;
}

/* Runs the round's conversions on up to `threads` threads (the calling
 * one included), each an equal share of the elements.  A thread that
 * cannot be started leaves its share to the calling thread: no failure. */
static void convert_all(const conversion *jobs, size_t n_jobs, int threads)
{
    convert_part parts[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS];
    uint64_t total = 0;

    for (size_t k = 0; k < n_jobs; k++)
        total += jobs[k].n;
    if (threads < 2 || total < THREAD_MIN_ELEMS) {
        convert_part all = {jobs, n_jobs, 0, total};
        convert_range(&all);
        return;
    }
    for (int i = 0; i < threads; i++) {
        parts[i] = (convert_part){jobs, n_jobs, total / (uint64_t)threads * (uint64_t)i,
                                  i == threads - 1 ? total
                                                   : total / (uint64_t)threads *
                                                         (uint64_t)(i + 1)};
        started[i] = i > 0 && pthread_create(&tid[i], NULL, convert_range,
                                             &parts[i]) == 0;
    }
    convert_range(&parts[0]);
    for (int i = 1; i < threads; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            convert_range(&parts[i]);
    }
}

/* A rank's work in one round: the requests given to the reader, the
 * conversions, the staging buffers. */
typedef struct {
    hfdcp_reader *rd;
    const hfdcp_consolidate_options *o;
    unsigned char *out_buf, *in_buf;
    uint64_t out_cap; /* out_buf's size (hfdcp__buffer_take) */
    conversion *jobs;
    size_t n_jobs, cap_jobs;
} stage;

/* stride[d] = prod(shape[d..]) of an ndim tensor (stride[ndim] = 1):
 * stride[d + 1] is the size of one step along dimension d. */
static void strides(const hfdcp__tensor *t, uint64_t *stride)
{
    stride[t->ndim] = 1;
    for (int d = t->ndim - 1; d >= 0; d--)
        stride[d] = stride[d + 1] * (uint64_t)t->shape[d];
}

/* The first box of the elements [e0, e1) of tensor t (row-major, ndim >
 * 0, e0 < e1): the largest block of whole trailing dimensions that starts
 * at e0 and fits, repeated along its dimension as far as possible, into
 * off and size.  Returns its elements. */
static uint64_t range_box(const hfdcp__tensor *t, const uint64_t *stride,
                          uint64_t e0, uint64_t e1, int64_t *off,
                          int64_t *size)
{
    int k = 0, n = t->ndim;
    uint64_t count, pos;

    while (e0 % stride[k + 1] != 0 || e0 + stride[k + 1] > e1)
        k++;
    pos = e0 / stride[k + 1] % (uint64_t)t->shape[k];
    count = (e1 - e0) / stride[k + 1];
    if (count > (uint64_t)t->shape[k] - pos)
        count = (uint64_t)t->shape[k] - pos;
    for (int d = 0; d < n; d++) {
        if (d < k) {
            off[d] = (int64_t)(e0 / stride[d + 1] % (uint64_t)t->shape[d]);
            size[d] = 1;
        } else if (d == k) {
            off[d] = (int64_t)pos;
            size[d] = (int64_t)count;
        } else {
            off[d] = 0;
            size[d] = t->shape[d];
        }
    }
    return count * stride[k + 1];
}

/* Requests the elements [e0, e1) of tensor t (row-major) into `dest`
 * (elements of `bits` bits, contiguous), as boxes (range_box): at most
 * 2*ndim - 1 of them. */
static int request_range(hfdcp_reader *rd, const hfdcp__tensor *t,
                         uint64_t e0, uint64_t e1, unsigned char *dest,
                         int bits)
{
    int64_t off[HFDCP_MAX_NDIM], size[HFDCP_MAX_NDIM];
    uint64_t stride[HFDCP_MAX_NDIM + 1];

    if (t->ndim == 0)
        return hfdcp_reader_add(rd, t->name, t->dtype, 0, NULL, NULL, dest);
    strides(t, stride);
    while (e0 < e1) {
        uint64_t n = range_box(t, stride, e0, e1, off, size);
        HFDCP_TRY(hfdcp_reader_add(rd, t->name, t->dtype, t->ndim, off, size,
                                   dest));
        dest += n * (uint64_t)bits / 8;
        e0 += n;
    }
    return HFDCP_OK;
}

/* The same boxes as request_range, once read into `src`: fed into the
 * CRC runs of the chunks they meet. */
static void check_range(hfdcp__ccrc *crc, const hfdcp__catalog *cat,
                        const hfdcp__tensor *t, uint64_t e0, uint64_t e1,
                        const unsigned char *src, int bits)
{
    int64_t off[HFDCP_MAX_NDIM], size[HFDCP_MAX_NDIM];
    uint64_t stride[HFDCP_MAX_NDIM + 1];
    size_t i = (size_t)(t - cat->tensors);

    if (t->ndim == 0) {
        hfdcp__ccrc_read(crc, cat, i, NULL, NULL, src);
        return;
    }
    strides(t, stride);
    while (e0 < e1) {
        uint64_t n = range_box(t, stride, e0, e1, off, size);
        hfdcp__ccrc_read(crc, cat, i, off, size, src);
        src += n * (uint64_t)bits / 8;
        e0 += n;
    }
}

/* Bytes [a, b) of a file's data region: requests into st->out_buf (and
 * st->in_buf for cast segments), conversions to run after the load.
 * *in_bytes receives the input bytes used (when `dry`, nothing is
 * requested: only the sizes are computed). */
static int plan_slice(stage *st, const file_layout *fl, uint64_t a,
                      uint64_t b, bool dry, uint64_t *in_bytes)
{
    uint64_t in_at = 0;

    st->n_jobs = 0;
    for (size_t k = a < b ? find_seg(fl, a) : fl->n; k < fl->n; k++) {
        const segment *g = &fl->segs[k];
        uint64_t lo = a > g->begin ? a : g->begin;
        uint64_t hi = b < g->begin + g->bytes ? b : g->begin + g->bytes;
        uint64_t e0, e1, n;
        int ib = hfdcp_dtype_bits(g->in);

        if (g->begin >= b)
            break;
        e0 = (lo - g->begin) / g->gran * g->unit;
        e1 = (hi - g->begin) / g->gran * g->unit;
        n = e1 - e0;
        if (g->in == g->out) {
            if (!dry)
                HFDCP_TRY(request_range(st->rd, g->t, e0, e1,
                                        st->out_buf + (lo - a), ib));
            continue;
        }
        if (!dry) {
            conversion *c;
            HFDCP_TRY(request_range(st->rd, g->t, e0, e1, st->in_buf + in_at,
                                    ib));
            HFDCP_TRY(hfdcp__grow(&st->jobs, &st->cap_jobs, st->n_jobs,
                                  sizeof *st->jobs, "the conversion list"));
            c = &st->jobs[st->n_jobs++];
            c->from = g->in;
            c->to = g->out;
            c->src = st->in_buf + in_at;
            c->dst = st->out_buf + (lo - a);
            c->n = n;
        }
        in_at += n * (uint64_t)ib / 8;
    }
    *in_bytes = in_at;
    return HFDCP_OK;
}

/* After the load of bytes [a, b) of a file (plan_slice): the bytes read,
 * in st->out_buf and, for cast segments, st->in_buf, fed into the CRC
 * runs of the shard chunks they come from.  Before the conversions, which
 * leave them as they are anyway. */
static void check_slice(const stage *st, hfdcp__ccrc *crc,
                        const hfdcp__catalog *cat, const file_layout *fl,
                        uint64_t a, uint64_t b)
{
    uint64_t in_at = 0;

    for (size_t k = a < b ? find_seg(fl, a) : fl->n; k < fl->n; k++) {
        const segment *g = &fl->segs[k];
        uint64_t lo = a > g->begin ? a : g->begin;
        uint64_t hi = b < g->begin + g->bytes ? b : g->begin + g->bytes;
        uint64_t e0, e1;
        int ib = hfdcp_dtype_bits(g->in);

        if (g->begin >= b)
            break;
        e0 = (lo - g->begin) / g->gran * g->unit;
        e1 = (hi - g->begin) / g->gran * g->unit;
        if (g->in == g->out) {
            check_range(crc, cat, g->t, e0, e1, st->out_buf + (lo - a), ib);
            continue;
        }
        check_range(crc, cat, g->t, e0, e1, st->in_buf + in_at, ib);
        in_at += (e1 - e0) * (uint64_t)ib / 8;
    }
}

/* The output bytes [a, b) of a file, in st->out_buf and about to be
 * written, fed into the CRC runs of their tensors. */
static void sum_slice(const stage *st, hfdcp__ccrc *crc,
                      const hfdcp__catalog *cat, const file_layout *fl,
                      uint64_t a, uint64_t b)
{
    for (size_t k = a < b ? find_seg(fl, a) : fl->n; k < fl->n; k++) {
        const segment *g = &fl->segs[k];
        uint64_t lo = a > g->begin ? a : g->begin;
        uint64_t hi = b < g->begin + g->bytes ? b : g->begin + g->bytes;

        if (g->begin >= b)
            break;
        hfdcp__ccrc_wrote(crc, (size_t)(g->t - cat->tensors), lo - g->begin,
                          st->out_buf + (lo - a), (size_t)(hi - lo));
    }
}

/* Read-ahead of the shard bytes of output bytes [a, b) of a file (the
 * rank's next slice), each segment's element range at its tensor. */
static void ahead_slice(hfdcp__ahead *ah, const hfdcp__catalog *cat,
                        const file_layout *fl, uint64_t a, uint64_t b)
{
    for (size_t k = a < b ? find_seg(fl, a) : fl->n; k < fl->n; k++) {
        const segment *g = &fl->segs[k];
        uint64_t lo = a > g->begin ? a : g->begin;
        uint64_t hi = b < g->begin + g->bytes ? b : g->begin + g->bytes;

        if (g->begin >= b)
            break;
        hfdcp__ahead_range(ah, cat, g->t, (lo - g->begin) / g->gran * g->unit,
                           (hi - g->begin) / g->gran * g->unit);
    }
}

/* This rank's slice of round k: [*a, *b). */
static void my_slice(const file_layout *fl, uint64_t s, int rank, int nranks,
                     uint64_t k, uint64_t *a, uint64_t *b)
{
    uint64_t j = k * (uint64_t)nranks + (uint64_t)rank;
    *a = cut(fl, s, j);
    *b = cut(fl, s, j + 1);
}

/* The staging buffers this rank needs: the largest slice it handles and
 * the largest input of its cast segments.  Local. */
static int size_buffers(stage *st, const file_layout *fl, size_t nf,
                        uint64_t s, int rank, int nranks)
{
    uint64_t out_max = 0, in_max = 0;

    for (size_t f = 0; f < nf; f++) {
        uint64_t rounds = file_rounds(&fl[f], s, nranks);
        for (uint64_t k = 0; k < rounds; k++) {
            uint64_t a, b, in;
            my_slice(&fl[f], s, rank, nranks, k, &a, &b);
            HFDCP_TRY(plan_slice(st, &fl[f], a, b, true, &in));
            if (b - a > out_max)
                out_max = b - a;
            if (in > in_max)
                in_max = in;
        }
    }
    if (out_max > SIZE_MAX || in_max > SIZE_MAX)
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "consolidation buffers of %" PRIu64 " bytes",
                            out_max + in_max);
    st->out_cap = out_max;
    if ((out_max > 0 &&
         (st->out_buf = hfdcp__buffer_take(&st->out_cap, true)) == NULL) ||
        (in_max > 0 && (st->in_buf = malloc((size_t)in_max)) == NULL))
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "out of memory allocating %" PRIu64 " bytes of "
                            "consolidation buffers (buffer_bytes)",
                            out_max + in_max);
    return HFDCP_OK;
}

typedef struct {
    MPI_Comm comm;
    int rank, size;
    const hfdcp_consolidate_options *o;
    const hfdcp__wplan *plan;
    const hfdcp__catalog *cat;
    const hfdcp__paths *paths;
    const file_layout *fl;
    hfdcp__ccrc *crc;
    uint64_t s;           /* slice bytes */
    uint64_t done, total; /* progress */
    stage *st;
    hfdcp__ctimes *ct;    /* phase timers */
    hfdcp__ahead *ahead;  /* read-ahead of the next slice */
} job;

/* Collective: one round of file f: read, check, convert, sum, write;
 * then rank 0 reports progress, but after the file's last round
 * (write_file() does, once the file is synced).  In the last round rank
 * 0 adds the header, whose CRCs are then known.  Agreed status. */
static int write_round(job *J, hfdcp__mfile *mf, size_t f, uint64_t k,
                       bool last)
{
    const file_layout *fl = &J->fl[f];
    const hfdcp__wplan *plan = J->plan;
    stage *st = J->st;
    uint64_t a, b, in, hl = plan->header_lens[f];
    int64_t dims[4];
    hfdcp__piece pieces[2];
    size_t np = 0;
    double t = MPI_Wtime();
    int rc;

    my_slice(fl, J->s, J->rank, J->size, k, &a, &b);
    rc = plan_slice(st, fl, a, b, false, &in);
    HFDCP_TRY(hfdcp__agree(J->comm, rc));
    t = hfdcp__ctimes_add(J->ct, HFDCP__CT_REQUESTS, t);
    HFDCP_TRY(hfdcp_reader_load(st->rd));
    t = hfdcp__ctimes_add(J->ct, HFDCP__CT_READS, t);
    check_slice(st, J->crc, J->cat, fl, a, b);
    t = hfdcp__ctimes_add(J->ct, HFDCP__CT_CRC_IN, t);
    convert_all(st->jobs, st->n_jobs, J->o->num_threads);
    t = hfdcp__ctimes_add(J->ct, HFDCP__CT_CONVERT, t);
    sum_slice(st, J->crc, J->cat, fl, a, b);
    if (last)
        HFDCP_TRY(hfdcp__ccrc_fill(J->crc, J->comm, J->rank, f,
                                   plan->headers[f]));
    t = hfdcp__ctimes_add(J->ct, HFDCP__CT_CRC_OUT, t);

    if (J->rank == 0 && last) {
        dims[0] = (int64_t)hl;
        hfdcp__piece_bytes(&pieces[np++], 0, plan->headers[f], &dims[0]);
    }
    if (!last) {
        uint64_t na, nb;
        my_slice(fl, J->s, J->rank, J->size, k + 1, &na, &nb);
        ahead_slice(J->ahead, J->cat, fl, na, nb);
    }
    if (b > a) {
        hfdcp__piece *p = &pieces[np++];
        dims[1] = (int64_t)(b - a);
        p->file_offset = hl + a;
        p->mem = st->out_buf;
        p->ndim = 1;
        p->bits = 8;
        p->fshape = p->mshape = p->count = &dims[1];
        p->fstart = p->mstart = zeros;
    }
    HFDCP_TRY(hfdcp__mfile_transfer(mf, true, pieces, np));
    (void)hfdcp__ctimes_add(J->ct, HFDCP__CT_WRITES, t);
    if (J->rank == 0 && J->o->progress != NULL && !last) {
        uint64_t end = cut(fl, J->s, (k + 1) * (uint64_t)J->size);
        J->o->progress(J->done + end, J->total, J->o->progress_arg);
    }
    return HFDCP_OK;
}

/* Collective: writes output file f under its temporary name, sets its
 * size, syncs and closes it.  Agreed status. */
static int write_file(job *J, size_t f)
{
    const hfdcp__wplan *plan = J->plan;
    hfdcp__mfile *mf = NULL;
    uint64_t rounds = file_rounds(&J->fl[f], J->s, J->size);
    double t = MPI_Wtime();
    int rc = HFDCP_OK, rc2;

    HFDCP_TRY(hfdcp__create_shared(J->comm, J->paths->tmp[f],
                                   plan->file_sizes[f]));
    HFDCP_TRY(hfdcp__mfile_open(J->comm, J->paths->tmp[f], true, J->o->info,
                                &mf));
    (void)hfdcp__ctimes_add(J->ct, HFDCP__CT_CREATE, t);
    for (uint64_t k = 0; k < rounds && rc == HFDCP_OK; k++)
        rc = write_round(J, mf, f, k, k + 1 == rounds);
    t = MPI_Wtime();
    if (rc == HFDCP_OK)
        rc = hfdcp__mfile_set_size(mf, plan->file_sizes[f]);
    if (rc == HFDCP_OK)
        rc = hfdcp__mfile_sync(mf);
    rc2 = hfdcp__mfile_close(mf);
    (void)hfdcp__ctimes_add(J->ct, HFDCP__CT_SYNCS, t);
    if (rc == HFDCP_OK)
        rc = rc2;
    if (rc == HFDCP_OK)
        J->done += J->fl[f].data;
    /* Note: a file's last bytes count once it is synced, so that 100%
     * (and the rate) never runs ahead of the data being durable. */
    if (rc == HFDCP_OK && J->rank == 0 && J->o->progress != NULL)
        J->o->progress(J->done, J->total, J->o->progress_arg);
    return rc;
}

/* Collective: every output file, one after another.  Agreed status. */
static int write_files(job *J)
{
    int rc = HFDCP_OK;

    for (size_t f = 0; f < J->plan->n_files && rc == HFDCP_OK; f++)
        rc = write_file(J, f);
    return rc;
}

/* ---- the whole ---- */

/* 1. Collective on J->comm: the arguments checked locally, then against
 * rank 0's; J->rank and J->size set, *align from the hint
 * hfdcp_data_alignment.  `rc` is the status of the communicator's
 * duplication, agreed on here with the local checks.  Agreed status. */
static int check_all_args(job *J, int rc, const char *input_dir,
                          const char *output_dir, const hfdcp_file_map *map,
                          uint64_t *align)
{
    const hfdcp_consolidate_options *opts = J->o;
    int mpi_rc;

    if (rc == HFDCP_OK &&
        ((mpi_rc = MPI_Comm_rank(J->comm, &J->rank)) != MPI_SUCCESS ||
         (mpi_rc = MPI_Comm_size(J->comm, &J->size)) != MPI_SUCCESS))
        rc = hfdcp__mpi_error(mpi_rc, "hfdcp_consolidate");
    if (rc == HFDCP_OK)
        rc = hfdcp__cons_check_args(input_dir, output_dir, opts);
    if (rc == HFDCP_OK)
        rc = hfdcp__align_hint(opts->info, "hfdcp_consolidate", align);
    if (rc == HFDCP_OK)
        rc = hfdcp__mpiio_check_hints(opts->info, "hfdcp_consolidate",
                                      output_dir);
    HFDCP_TRY(hfdcp__agree(J->comm, rc));
    return hfdcp__cons_compare_args(J->comm, J->rank, input_dir, output_dir,
                                    map, opts, *align);
}

/* 3. Collective: the writer's plan for the shard files' catalog `cat`
 * into *plan (its headers with CRC placeholders, unless no_checksums)
 * and the output files' layouts into *fl (the caller frees both, also on
 * failure), then the job's plan, slice bytes and total.
 * The same on every rank.  Agreed status. */
static int plan_job(job *J, const hfdcp__catalog *cat,
                    const hfdcp_file_map *map, uint64_t align,
                    hfdcp__wplan *plan, file_layout **fl)
{
    const hfdcp_consolidate_options *opts = J->o;
    int rc;

    rc = make_plan(cat, map, opts, align, plan);
    if (rc == HFDCP_OK)
        rc = hfdcp__ccrc_headers(J->crc, cat, plan);
    if (rc == HFDCP_OK)
        rc = make_layouts(cat, plan, opts, fl);
    HFDCP_TRY(hfdcp__agree(J->comm, rc));
    J->plan = plan;
    J->cat = cat;
    J->fl = *fl;
    J->s = slice_bytes(cat, opts,
                       opts->buffer_bytes ? opts->buffer_bytes
                                          : DEFAULT_BUFFER);
    J->total = plan->index.total_size;
    return HFDCP_OK;
}

/* Collective: what step 4 needs.  A reader of the shard files' catalog
 * `cat` (borrowed: no second reading of the headers; it keeps the shard
 * files open from their first round to the last), the staging buffers of
 * J->st, the temporary names (one random tag, rank 0's) into *paths and
 * J->paths, the output directory.  Agreed status. */
static int prepare_data(job *J, hfdcp__catalog *cat, const char *output_dir,
                        hfdcp__paths *paths)
{
    uint64_t tag = 0;
    int rc, mpi_rc;

    HFDCP_TRY(hfdcp__reader_open_catalog(J->comm, cat, J->o->info,
                                         &J->st->rd));
    rc = size_buffers(J->st, J->fl, J->plan->n_files, J->s, J->rank,
                      J->size);
    if (J->rank == 0)
        tag = hfdcp__random_tag();
    mpi_rc = MPI_Bcast(&tag, 1, MPI_UINT64_T, 0, J->comm);
    if (mpi_rc != MPI_SUCCESS && rc == HFDCP_OK)
        rc = hfdcp__mpi_error(mpi_rc, "broadcasting the temporary names' tag");
    if (rc == HFDCP_OK)
        rc = hfdcp__paths_make(output_dir, J->plan, tag, paths);
    if (rc == HFDCP_OK && J->rank == 0)
        rc = hfdcp__make_dir(output_dir);
    HFDCP_TRY(hfdcp__agree(J->comm, rc));
    J->paths = paths;
    return HFDCP_OK;
}

/* Collective, after a failure once writing began: rank 0 removes the
 * temporary files, and no rank returns before they are gone. */
static void remove_temporaries(const job *J, const hfdcp__paths *paths)
{
    if (J->rank == 0)
        for (size_t f = 0; f < paths->n; f++)
            unlink(paths->tmp[f]);
    (void)MPI_Barrier(J->comm);
}

/* Frees the reader (its files closed) and the buffers of st (the output
 * buffer kept for the next transfer when no larger than the default). */
static void stage_free(stage *st)
{
    if (st->rd != NULL)
        hfdcp_reader_free(st->rd);
    hfdcp__buffer_give(st->out_buf, st->out_cap,
                       st->out_cap <= DEFAULT_BUFFER);
    free(st->in_buf);
    free(st->jobs);
}

int hfdcp_consolidate(MPI_Comm comm, const char *input_dir,
                      const char *output_dir, const hfdcp_file_map *map,
                      const hfdcp_consolidate_options *opts)
{
    hfdcp_consolidate_options defaults;
    hfdcp__catalog *cat = NULL;
    hfdcp__wplan plan;
    hfdcp__paths paths;
    file_layout *fl = NULL;
    hfdcp__ccrc crc;
    hfdcp__ctimes ct;
    hfdcp__ahead ahead = {NULL, 0};
    stage st;
    job J;
    MPI_Comm dup = MPI_COMM_NULL;
    uint64_t align = 0; /* the hint hfdcp_data_alignment */
    double t;
    bool wrote = false, named = false;
    int rc = HFDCP_OK;

    memset(&plan, 0, sizeof plan);
    memset(&paths, 0, sizeof paths);
    memset(&st, 0, sizeof st);
    memset(&J, 0, sizeof J);
    memset(&crc, 0, sizeof crc);
    hfdcp__ctimes_init(&ct);
    if (comm == MPI_COMM_NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_consolidate: comm is MPI_COMM_NULL");
    if (opts == NULL) {
        hfdcp_consolidate_options_init(&defaults);
        opts = &defaults;
    }
    rc = hfdcp__comm_dup(comm, "hfdcp_consolidate", &dup);
    if (dup == MPI_COMM_NULL)
        return rc;
    J.comm = dup;
    J.o = opts;
    J.st = &st;
    J.crc = &crc;
    J.ct = &ct;
    J.ahead = &ahead;
    st.o = opts;
    HFDCP_CHECK(check_all_args(&J, rc, input_dir, output_dir, map, &align));
    t = hfdcp__ctimes_add(&ct, HFDCP__CT_ARGS, ct.start);

    /* 2. The input, checked whole before anything is written. */
    rc = J.rank == 0 ? hfdcp__cons_check_dirs(input_dir, output_dir)
                    : HFDCP_OK;
    HFDCP_CHECK(hfdcp__agree(dup, rc));
    named = true; /* from here on, messages say what was consolidated */
    HFDCP_CHECK(hfdcp__catalog_open_shards(dup, input_dir, &cat));
    t = hfdcp__ctimes_add(&ct, HFDCP__CT_CATALOG, t);
    HFDCP_CHECK(hfdcp__agree(dup, hfdcp__ccrc_init(&crc, cat,
                                                   !opts->no_checksums)));
    t = hfdcp__ctimes_add(&ct, HFDCP__CT_CHECKS, t);

    /* 3. The plan, the same on every rank; then the reader, buffers,
     * names and output directory of step 4. */
    HFDCP_CHECK(plan_job(&J, cat, map, align, &plan, &fl));
    t = hfdcp__ctimes_add(&ct, HFDCP__CT_PLAN, t);
    HFDCP_CHECK(prepare_data(&J, cat, output_dir, &paths));
    HFDCP_CHECK(hfdcp__agree(dup, hfdcp__ahead_open(&ahead, cat->n_files)));
    (void)hfdcp__ctimes_add(&ct, HFDCP__CT_PREPARE, t);

    /* 4. Every output file, by every rank; then every chunk read
     * against the CRC its shard file records. */
    wrote = true;
    HFDCP_CHECK(write_files(&J));
    t = MPI_Wtime();
    HFDCP_CHECK(hfdcp__reader_close_files(st.rd));
    HFDCP_CHECK(hfdcp__ccrc_verify(&crc, dup, J.rank, cat));
    t = hfdcp__ctimes_add(&ct, HFDCP__CT_VERIFY, t);

    /* 5. Publish. */
    rc = J.rank == 0 ? hfdcp__publish(output_dir, &plan, &paths) : HFDCP_OK;
    rc = hfdcp__agree(dup, rc);
    (void)hfdcp__ctimes_add(&ct, HFDCP__CT_PUBLISH, t);
    if (rc == HFDCP_OK)
        hfdcp__ctimes_print(&ct, J.rank, J.total);

cleanup:
    if (rc != HFDCP_OK && wrote)
        remove_temporaries(&J, &paths);
    if (st.rd != NULL)
        (void)hfdcp__reader_close_files(st.rd);
    stage_free(&st);
    hfdcp__ahead_close(&ahead);
    hfdcp__ccrc_free(&crc);
    layouts_free(fl, plan.n_files);
    hfdcp__paths_free(&paths);
    hfdcp__wplan_free(&plan);
    hfdcp__catalog_free(cat);
    if (rc != HFDCP_OK && named)
        hfdcp__error_prefix(rc, "consolidating '%s'", input_dir);
    MPI_Comm_free(&dup);
    return rc;
}
