/*
 * mpiio_sieve.c - sieving reads: each rank reads the spans of its own
 * short runs, a window at a time, with independent reads into one buffer,
 * and copies its runs out of it; no bytes cross between ranks.  mpiio.c
 * decides when (its plan); this file carries it out.
 */
#include <stdint.h>
#include <string.h>

#include "mpiio_internal.h"

_Atomic uint64_t hfdcp__mpiio_sieved;

/* ---------------------------------------------------------------------- */
/* Sieving reads                                                          */
/* ---------------------------------------------------------------------- */

/*
 * A read of short runs (one that would be aggregated: mpiio_agg.c) whose
 * runs fill at least half of the file spans they lie in on every rank -- a
 * column-split tensor read on two ranks, a 2 x 2 block grid on four, rows
 * read by half columns -- is cheaper read by sieving: each rank reads the
 * spans of its own runs, a window at a time, with independent
 * MPI_File_read_at calls into one buffer (hint
 * hfdcp_aggregate_buffer_size), and copies its runs out of it.  No bytes
 * cross between ranks.  Each rank reads at most twice the bytes it needs,
 * but on a local file system the ranks that read the same blocks share
 * them through the page cache, so the disk reads the file once, as the
 * aggregation does, while the aggregation's exchange (a copy of every
 * byte through MPI_Alltoallw, which Open MPI 4.1 cannot overlap with the
 * I/O) is not paid.  On a network or parallel file system every rank's
 * bytes would cross the network, so there the reads stay aggregated.  A
 * span is the extent of this rank's parts, parts less than SIEVE_GAP
 * apart sharing one.
 *
 * With shared windows (every rank on one node) the aggregation is the
 * cheaper: its exchange is one copy of each run out of the windows, as
 * sieving copies its runs out of its buffer, and each byte of the file is
 * read once in all, where sieving reads up to SIEVE_SPAN_MAX times the
 * bytes on every rank (columns and blocks side by side, hfdcp bench
 * --alt-hint hfdcp_sieve_reads=enable: warm loads on a tmpfs faster
 * aggregated, cold loads the same within the noise; docs/design.md,
 * "Sieving reads").  So sieving is for ranks on several nodes reading
 * node-local copies of the files, or where the shared windows could not
 * be had.
 *
 * Hint hfdcp_sieve_reads: "auto" (the default) sieves such reads when every
 * rank sees a local file system (as in "Long runs", mpiio_open.c), reads at
 * most SIEVE_SPAN_MAX times its bytes (hfdcp__mpiio_sieve_fits), and the
 * windows are not shared; "enable" sieves every read that would be
 * aggregated; "disable" never sieves.  The ranks agree ("disable" wins):
 * "The plan" in mpiio.c.
 */

#define SIEVE_GAP ((uint64_t)64 << 10)
#define SIEVE_SPAN_MAX 2

/* The span starting with part i of `sorted[0..m)` (by file offset): its
 * parts are [i, return value), its bytes [sorted[i]->foff, *end). */
static size_t span(npiece *const *sorted, size_t m, size_t i, uint64_t *end)
{
    size_t j = i + 1;

    *end = sorted[i]->fend;
    for (; j < m && sorted[j]->foff <= *end + SIEVE_GAP; j++)
        if (sorted[j]->fend > *end)
            *end = sorted[j]->fend;
    return j;
}

/* The bytes this rank's sieving read of `sorted[0..m)` covers. */
static uint64_t sieve_span(npiece *const *sorted, size_t m)
{
    uint64_t total = 0, end;

    for (size_t i = 0, j; i < m; i = j) {
        j = span(sorted, m, i, &end);
        total += end - sorted[i]->foff;
    }
    return total;
}

bool hfdcp__mpiio_sieve_fits(npiece *const *sorted, size_t m,
                             uint64_t bytes)
{
    return sieve_span(sorted, m) <= SIEVE_SPAN_MAX * bytes;
}

/* The first and last byte of the runs met in a window. */
typedef struct {
    uint64_t lo, hi;
} bounds;

static int bound_run(void *ctx, uint64_t off, uint64_t len, char *mem)
{
    bounds *b = ctx;
    (void)mem;
    if (off < b->lo)
        b->lo = off;
    if (off + len > b->hi)
        b->hi = off + len;
    return HFDCP_OK;
}

/* A window's bytes, file offset `base` at `buf`. */
typedef struct {
    const char *buf;
    uint64_t base;
} sieved;

static int copy_run(void *ctx, uint64_t off, uint64_t len, char *mem)
{
    const sieved *w = ctx;
    memcpy(mem, w->buf + (off - w->base), len);
    return HFDCP_OK;
}

/* Reads window [w0, w1), met by parts sorted[k0..k1) at most, into buf
 * and copies its runs out. */
static int sieve_window(hfdcp__mfile *f, npiece *const *sorted, size_t k0,
                        size_t k1, uint64_t w0, uint64_t w1, char *buf)
{
    bounds b = {UINT64_MAX, 0};
    int rc = HFDCP_OK;

    for (size_t k = k0; k < k1 && sorted[k]->foff < w1; k++)
        HFDCP_TRY(hfdcp__mpiio_part_runs(sorted[k], w0, w1, bound_run, &b));
    if (b.lo >= b.hi)
        return HFDCP_OK;
    HFDCP_TRY(hfdcp__mpiio_range_io(f, false, b.lo, buf, b.hi - b.lo));
    sieved sv = {buf, b.lo};
    for (size_t k = k0; k < k1 && sorted[k]->foff < w1 && rc == HFDCP_OK;
         k++)
        rc = hfdcp__mpiio_part_runs(sorted[k], w0, w1, copy_run, &sv);
    return rc;
}

/*
 * Goes through the windows of this rank's spans in file order, numbering
 * them from 0, and reads those numbered [from, to) (none when buf is
 * NULL).  *count: the number of windows.
 */
static int sieve_pass(hfdcp__mfile *f, npiece *const *sorted, size_t m,
                      uint64_t buf_size, char *buf, uint64_t from,
                      uint64_t to, uint64_t *count)
{
    uint64_t idx = 0, end;

    for (size_t i = 0, j; i < m; i = j) {
        j = span(sorted, m, i, &end);
        size_t k0 = i;
        for (uint64_t w0 = sorted[i]->foff; w0 < end; w0 += buf_size) {
            uint64_t w1 = end - w0 > buf_size ? w0 + buf_size : end;
            /* parts before k0 end before this window, and the next */
            while (k0 < j && sorted[k0]->fend <= w0)
                k0++;
            if (buf != NULL && idx >= from && idx < to)
                HFDCP_TRY(sieve_window(f, sorted, k0, j, w0, w1, buf));
            idx++;
        }
    }
    *count = idx;
    return HFDCP_OK;
}

/*
 * Reads this rank's parts `sorted[0..m)` (by file offset) by sieving,
 * through a buffer of `buf_size` bytes.  Rank r of P starts r/P of the
 * way through its windows and wraps around: on a cold file the ranks that
 * share blocks then fetch different ones at first, side by side, and each
 * finds the rest in the page cache, read there by another.  The file view
 * must be bytes.  Collective only in its agreement.
 */
static int sieve_read(hfdcp__mfile *f, npiece *const *sorted, size_t m,
                      uint64_t buf_size)
{
    char *buf = NULL;
    uint64_t n = 0, first, cap = buf_size;
    int rc, P = 1;

    MPI_Comm_size(f->comm, &P);
    rc = sieve_pass(f, sorted, m, buf_size, NULL, 0, 0, &n);
    if (n > 0 && (buf = hfdcp__buffer_take(&cap, f->keep_buffer)) == NULL)
        rc = hfdcp__nomem("the buffer of a sieving read");
    first = n / (uint64_t)P * (uint64_t)f->rank +
            n % (uint64_t)P * (uint64_t)f->rank / (uint64_t)P;
    if (rc == HFDCP_OK && n > 0)
        rc = sieve_pass(f, sorted, m, buf_size, buf, first, n, &n);
    if (rc == HFDCP_OK && first > 0)
        rc = sieve_pass(f, sorted, m, buf_size, buf, 0, first, &n);
    hfdcp__buffer_give(buf, cap, f->keep_buffer);
    if (rc == HFDCP_ERR_MPI)
        hfdcp__error_prefix(rc, "sieving read of '%s'", f->path);
    return hfdcp__agree(f->comm, rc);
}

int hfdcp__mpiio_sieve_all(hfdcp__mfile *f, npiece *const *sorted, size_t m,
                           uint64_t buf_size)
{
    int rc = hfdcp__mpiio_byte_view(f);
    if (rc == HFDCP_OK)
        rc = sieve_read(f, sorted, m, buf_size); /* agreed */
    f->last_sieved = rc == HFDCP_OK;
    if (rc == HFDCP_OK)
        hfdcp__mpiio_sieved++;
    return rc;
}

