/*
 * consolidate_crc.c - the CRC-32C of a consolidation (see
 * consolidate_internal.h): the values the shard files record for their
 * chunks (hfdcp_crc32c) checked from the bytes as they are read, and the
 * output tensors' values computed from the bytes as they are written and
 * filled into the output headers.
 *
 * Each rank reads parts of chunks and writes parts of tensors, round
 * after round, through its bounded buffer: every run goes into the run
 * accumulator of its chunk or tensor with its byte offset there
 * (crc32c.c's algebra), and one XOR reduction per output file (its
 * tensors) and one at the end (every chunk) give rank 0 the whole values.
 * A value so computed does not depend on how a tensor was split: a
 * direct save, a consolidation and another file map give the same.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consolidate_internal.h"

void hfdcp__ccrc_free(hfdcp__ccrc *c)
{
    free(c->first);
    free(c->has);
    free(c->want);
    free(c->len);
    free(c->read);
    free(c->wrote);
    free(c->crc_at);
    free(c->out_len);
    free(c->file_first);
    free(c->by_file);
    free(c->parts);
    free(c->x);
    memset(c, 0, sizeof *c);
}

/* ---- the shard chunks' recorded values ---- */

/* The entry of file f's header that chunk ch of tensor t comes from: at
 * data offset ch->file_offset - data_start, with t's name (several empty
 * entries may share an offset); SIZE_MAX when none (cannot happen for a
 * catalog made from these headers). */
static size_t find_entry(const hfdcp__file *f, const hfdcp__tensor *t,
                         const hfdcp__chunk *ch)
{
    const hfdcp__header *h = &f->hdr;
    uint64_t begin = ch->file_offset - f->data_start;
    size_t lo = 0, hi = h->n_entries;

    while (lo < hi) { /* the first entry with begin >= `begin` */
        size_t mid = lo + (hi - lo) / 2;
        if (h->entries[mid].begin < begin)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < h->n_entries && h->entries[lo].begin == begin; lo++)
        if (strcmp(h->entries[lo].name, t->name) == 0)
            return lo;
    return SIZE_MAX;
}

/* c->len, c->has and c->want of every chunk, the values from the
 * files' hfdcp_crc32c (crcs[file], NULL for a file without). */
static int take_values(hfdcp__ccrc *c, const hfdcp__catalog *cat,
                       uint32_t *const *crcs)
{
    for (size_t t = 0; t < cat->n_tensors; t++) {
        const hfdcp__tensor *T = &cat->tensors[t];
        for (size_t k = 0; k < T->n_chunks; k++) {
            const hfdcp__chunk *ch = &T->chunks[k];
            size_t n = c->first[t] + k, e;
            HFDCP_TRY(hfdcp__tensor_bytes(T->dtype, T->ndim, ch->sizes,
                                          T->name, &c->len[n]));
            if (crcs[ch->file] == NULL ||
                (e = find_entry(&cat->files[ch->file], T, ch)) == SIZE_MAX)
                continue;
            c->has[n] = true;
            c->want[n] = crcs[ch->file][e];
            c->check = true;
        }
    }
    return HFDCP_OK;
}

/* The chunks' numbering, and their recorded values. */
static int init_chunks(hfdcp__ccrc *c, const hfdcp__catalog *cat)
{
    size_t nf = cat->n_files, n = 0;
    uint32_t **crcs = calloc(nf + 1, sizeof *crcs);
    int rc = HFDCP_OK;

    if (crcs == NULL ||
        (c->first = malloc((cat->n_tensors + 1) * sizeof *c->first)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory for the chunks' CRCs");
    for (size_t t = 0; t < cat->n_tensors; t++) {
        c->first[t] = n;
        n += cat->tensors[t].n_chunks;
    }
    c->first[cat->n_tensors] = c->n_chunks = n;
    for (size_t f = 0; f < nf; f++)
        HFDCP_CHECK(hfdcp__header_crc32c(&cat->files[f].hdr,
                                         cat->files[f].path, &crcs[f]));
    if ((c->has = calloc(n + 1, sizeof *c->has)) == NULL ||
        (c->want = calloc(n + 1, sizeof *c->want)) == NULL ||
        (c->len = calloc(n + 1, sizeof *c->len)) == NULL ||
        (c->read = calloc(n + 1, sizeof *c->read)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory for the chunks' CRCs");
    HFDCP_CHECK(take_values(c, cat, crcs));
cleanup:
    for (size_t f = 0; crcs != NULL && f < nf; f++)
        free(crcs[f]);
    free(crcs);
    return rc;
}

int hfdcp__ccrc_init(hfdcp__ccrc *c, const hfdcp__catalog *cat, bool on)
{
    size_t n = cat->n_tensors, most;

    memset(c, 0, sizeof *c);
    if (!on)
        return HFDCP_OK;
    c->write = true;
    if ((c->wrote = calloc(n + 1, sizeof *c->wrote)) == NULL ||
        (c->crc_at = calloc(n + 1, sizeof *c->crc_at)) == NULL ||
        (c->out_len = calloc(n + 1, sizeof *c->out_len)) == NULL ||
        (c->by_file = calloc(n + 1, sizeof *c->by_file)) == NULL)
        return hfdcp__nomem("the tensors' CRCs");
    HFDCP_TRY(init_chunks(c, cat));
    most = n > c->n_chunks ? n : c->n_chunks;
    if ((c->parts = calloc(most + 1, sizeof *c->parts)) == NULL ||
        (c->x = calloc(most + 1, sizeof *c->x)) == NULL)
        return hfdcp__nomem("the CRCs' reductions");
    return HFDCP_OK;
}

/* ---- the output headers ---- */

int hfdcp__ccrc_headers(hfdcp__ccrc *c, const hfdcp__catalog *cat,
                        const hfdcp__wplan *plan)
{
    size_t n = cat->n_tensors, nf = plan->n_files;

    if (!c->write)
        return HFDCP_OK;
    if (plan->n_tensors != n || plan->crc_at == NULL)
        return hfdcp__error(HFDCP_ERR_INTERNAL, "the consolidation's plan "
                            "has %zu tensors%s, its catalog %zu",
                            plan->n_tensors,
                            plan->crc_at ? "" : " and no checksums", n);
    if ((c->file_first = calloc(nf + 1, sizeof *c->file_first)) == NULL)
        return hfdcp__nomem("the headers' CRCs");
    for (size_t i = 0; i < n; i++)
        c->file_first[plan->tensor_file[i] + 1]++;
    for (size_t f = 0; f < nf; f++)
        c->file_first[f + 1] += c->file_first[f];
    for (size_t i = 0, *at = c->file_first; i < n; i++) {
        c->crc_at[i] = plan->crc_at[i];
        c->out_len[i] = plan->tensor_bytes[i];
        c->by_file[at[plan->tensor_file[i]]++] = i;
    }
    /* The loop moved each file's start to its end: move them back. */
    for (size_t f = nf; f > 0; f--)
        c->file_first[f] = c->file_first[f - 1];
    c->file_first[0] = 0;
    return HFDCP_OK;
}

/* ---- the runs ---- */

/* One piece: the intersection of a box read with a chunk, as the MPI-IO
 * layer normalizes it (trailing dimensions whole in both arrays merged),
 * in elements: where it starts in the chunk (cst, shape csh) and in the
 * buffer (mst, shape msh), and its size cnt. */
typedef struct {
    int nd;
    uint64_t csh[HFDCP_MAX_NDIM], cst[HFDCP_MAX_NDIM];
    uint64_t msh[HFDCP_MAX_NDIM], mst[HFDCP_MAX_NDIM];
    uint64_t cnt[HFDCP_MAX_NDIM];
} piece_t;

/* The piece of chunk ch in the box (off, size) of an ndim tensor; false
 * when they do not meet. */
static bool make_piece(int ndim, const hfdcp__chunk *ch, const int64_t *off,
                       const int64_t *size, piece_t *p)
{
    for (int d = 0; d < ndim; d++) {
        int64_t lo = off[d] > ch->offsets[d] ? off[d] : ch->offsets[d];
        int64_t e0 = off[d] + size[d], e1 = ch->offsets[d] + ch->sizes[d];
        int64_t hi = e0 < e1 ? e0 : e1;
        if (hi <= lo)
            return false;
        p->csh[d] = (uint64_t)ch->sizes[d];
        p->cst[d] = (uint64_t)(lo - ch->offsets[d]);
        p->msh[d] = (uint64_t)size[d];
        p->mst[d] = (uint64_t)(lo - off[d]);
        p->cnt[d] = (uint64_t)(hi - lo);
    }
    p->nd = ndim;
    while (p->nd > 1) {
        int d = p->nd - 1;
        uint64_t k = p->cnt[d];
        if (p->cst[d] != 0 || p->mst[d] != 0 || k != p->csh[d] ||
            k != p->msh[d])
            break;
        p->csh[d - 1] *= k;
        p->cst[d - 1] *= k;
        p->msh[d - 1] *= k;
        p->mst[d - 1] *= k;
        p->cnt[d - 1] *= k;
        p->nd--;
    }
    return true;
}

/* The rows of piece p (elements of `bits` bits) into r: one run per
 * index of the outer dimensions.  The load succeeded, so every row starts
 * and ends on a whole byte (the MPI-IO layer refuses other pieces). */
static void feed_piece(hfdcp__crc32c_runs *r, const piece_t *p, int bits,
                       const unsigned char *buf)
{
    uint64_t idx[HFDCP_MAX_NDIM] = {0}, b = (uint64_t)bits;
    int last = p->nd - 1;
    uint64_t len = p->cnt[last] * b / 8;

    for (;;) {
        uint64_t ci = 0, mi = 0;
        for (int d = 0; d < last; d++) {
            ci = ci * p->csh[d] + p->cst[d] + idx[d];
            mi = mi * p->msh[d] + p->mst[d] + idx[d];
        }
        ci = ci * p->csh[last] + p->cst[last];
        mi = mi * p->msh[last] + p->mst[last];
        hfdcp__crc32c_runs_add(r, ci * b / 8, buf + mi * b / 8, (size_t)len);
        int d = last - 1;
        while (d >= 0 && ++idx[d] == p->cnt[d])
            idx[d--] = 0;
        if (d < 0)
            return;
    }
}

void hfdcp__ccrc_read(hfdcp__ccrc *c, const hfdcp__catalog *cat, size_t t,
                      const int64_t *off, const int64_t *size,
                      const unsigned char *buf)
{
    const hfdcp__tensor *T = &cat->tensors[t];
    int bits = hfdcp_dtype_bits(T->dtype);

    if (!c->check)
        return;
    for (size_t k = 0; k < T->n_chunks; k++) {
        size_t n = c->first[t] + k;
        piece_t p;
        if (!c->has[n])
            continue;
        if (T->ndim == 0)
            hfdcp__crc32c_runs_add(&c->read[n], 0, buf, (size_t)bits / 8);
        else if (make_piece(T->ndim, &T->chunks[k], off, size, &p))
            feed_piece(&c->read[n], &p, bits, buf);
    }
}

void hfdcp__ccrc_wrote(hfdcp__ccrc *c, size_t t, uint64_t offset,
                       const void *buf, size_t len)
{
    if (c->write)
        hfdcp__crc32c_runs_add(&c->wrote[t], offset, buf, len);
}

/* ---- the reductions ---- */

/* XOR of every rank's n parts, to rank 0's x.  Local status. */
static int xor_to_root(MPI_Comm comm, const uint32_t *parts, uint32_t *x,
                       size_t n, const char *what)
{
    int mpi_rc;

    if (n > INT_MAX)
        return hfdcp__error(HFDCP_ERR_RANGE, "%zu CRCs of %s in one "
                            "reduction", n, what);
    mpi_rc = MPI_Reduce(parts, x, (int)n, MPI_UINT32_T, MPI_BXOR, 0, comm);
    return mpi_rc == MPI_SUCCESS
               ? HFDCP_OK
               : hfdcp__mpi_error(mpi_rc, "reducing the CRCs of %s", what);
}

int hfdcp__ccrc_fill(hfdcp__ccrc *c, MPI_Comm comm, int rank, size_t f,
                     char *header)
{
    size_t a, n;
    int rc;

    if (!c->write)
        return HFDCP_OK;
    a = c->file_first[f];
    n = c->file_first[f + 1] - a;
    for (size_t k = 0; k < n; k++)
        c->parts[k] = hfdcp__crc32c_runs_part(&c->wrote[c->by_file[a + k]],
                                              c->out_len[c->by_file[a + k]]);
    rc = xor_to_root(comm, c->parts, c->x, n, "the output tensors");
    for (size_t k = 0; rc == HFDCP_OK && rank == 0 && k < n; k++) {
        size_t t = c->by_file[a + k];
        hfdcp__header_put_crc(header, c->crc_at[t],
                              hfdcp__crc32c_finish(c->x[k], c->out_len[t]));
    }
    return hfdcp__agree(comm, rc);
}

/* Rank 0: chunk k of tensor t, whose runs' parts XOR to `parts`, against
 * its recorded value. */
static int compare(const hfdcp__ccrc *c, const hfdcp__catalog *cat,
                   size_t t, size_t k, uint32_t parts)
{
    const hfdcp__tensor *T = &cat->tensors[t];
    const hfdcp__chunk *ch = &T->chunks[k];
    uint32_t want = c->want[c->first[t] + k];
    uint32_t got = hfdcp__crc32c_finish(parts, c->len[c->first[t] + k]);
    char box[256];

    if (got == want)
        return HFDCP_OK;
    hfdcp__format_box(box, sizeof box, T->ndim, ch->offsets, ch->sizes);
    return hfdcp__error(HFDCP_ERR_FORMAT,
                        "tensor '%s': the chunk %s in shard file '%s' has "
                        "CRC-32C %08" PRIx32 ", its header records %08" PRIx32
                        " (the file changed after it was written)",
                        T->name, box, cat->files[ch->file].path, got, want);
}

int hfdcp__ccrc_verify(hfdcp__ccrc *c, MPI_Comm comm, int rank,
                       const hfdcp__catalog *cat)
{
    int rc;

    if (!c->check)
        return HFDCP_OK;
    for (size_t k = 0; k < c->n_chunks; k++)
        c->parts[k] = hfdcp__crc32c_runs_part(&c->read[k], c->len[k]);
    rc = xor_to_root(comm, c->parts, c->x, c->n_chunks, "the shard chunks");
    for (size_t t = 0; rc == HFDCP_OK && rank == 0 && t < cat->n_tensors; t++)
        for (size_t k = c->first[t]; rc == HFDCP_OK && k < c->first[t + 1];
             k++)
            if (c->has[k])
                rc = compare(c, cat, t, k - c->first[t], c->x[k]);
    return hfdcp__agree(comm, rc);
}
