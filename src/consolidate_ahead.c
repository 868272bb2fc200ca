/*
 * consolidate_ahead.c - consolidation's read-ahead: while a round writes,
 * the kernel is asked (POSIX_FADV_WILLNEED) to read the shard bytes of
 * the rank's next slice, so that reads and writes overlap instead of
 * taking turns.  Advice only: a failure changes nothing but the speed,
 * and nothing is read into user memory here.  Local, POSIX only.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "consolidate_internal.h"

int hfdcp__ahead_open(hfdcp__ahead *a, size_t n_files)
{
    a->n = n_files;
    a->fds = malloc((n_files ? n_files : 1) * sizeof *a->fds);
    if (a->fds == NULL)
        return hfdcp__nomem("the read-ahead's file list");
    for (size_t f = 0; f < n_files; f++)
        a->fds[f] = -2; /* not opened yet */
    return HFDCP_OK;
}

/* The descriptor of catalog file f, opened at first use; -1 if it cannot
 * be opened (then no advice for it). */
static int fd_of(hfdcp__ahead *a, const hfdcp__catalog *cat, int f)
{
    if (a->fds[f] == -2)
        a->fds[f] = open(cat->files[f].path, O_RDONLY);
    return a->fds[f];
}

void hfdcp__ahead_range(hfdcp__ahead *a, const hfdcp__catalog *cat,
                        const hfdcp__tensor *t, uint64_t e0, uint64_t e1)
{
    uint64_t row = 1, r0, r1;
    int bits = hfdcp_dtype_bits(t->dtype);

    if (a->fds == NULL || e1 <= e0)
        return;
    for (int d = 1; d < t->ndim; d++)
        row *= (uint64_t)t->shape[d];
    if (row == 0)
        return;
    r0 = t->ndim > 0 ? e0 / row : 0;
    r1 = t->ndim > 0 ? (e1 + row - 1) / row : 1;
    for (size_t c = 0; c < t->n_chunks; c++) {
        const hfdcp__chunk *ch = &t->chunks[c];
        uint64_t c0 = t->ndim > 0 ? (uint64_t)ch->offsets[0] : 0;
        uint64_t c1 = t->ndim > 0 ? c0 + (uint64_t)ch->sizes[0] : 1;
        uint64_t lo = r0 > c0 ? r0 : c0, hi = r1 < c1 ? r1 : c1, crow = 1;
        uint64_t off, len;
        int fd;

        if (lo >= hi || (fd = fd_of(a, cat, ch->file)) < 0)
            continue;
        for (int d = 1; d < t->ndim; d++)
            crow *= (uint64_t)ch->sizes[d];
        /* Whole bytes around the rows (sub-byte dtypes round out). */
        off = ch->file_offset + (lo - c0) * crow * (uint64_t)bits / 8;
        len = ((hi - lo) * crow * (uint64_t)bits + 7) / 8 + 1;
        (void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
    }
}

void hfdcp__ahead_close(hfdcp__ahead *a)
{
    for (size_t f = 0; a->fds != NULL && f < a->n; f++)
        if (a->fds[f] >= 0)
            close(a->fds[f]);
    free(a->fds);
    a->fds = NULL;
}
