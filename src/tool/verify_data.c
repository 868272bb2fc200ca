/*
 * verify_data.c - `hfdcp verify --data`: reads every byte of every
 * tensor (every chunk of every shard file) and checks its CRC-32C against
 * the file's hfdcp_crc32c, and that the copies of a chunk saved in
 * several shard files hold the same bytes.
 *
 * The work: the tensors' bytes of all files, one after the other, form
 * one sequence, cut into equal parts, one per rank, so that every rank
 * reads about as much, a large tensor is split and a small one costs no
 * extra read.  Each rank reads its part with pread through a buffer of
 * BUF_BYTES, adds each tensor's run (hfdcp__crc32c_runs) and one MPI_BXOR
 * of the parts gives every CRC on every rank; rank 0 compares and
 * reports, and broadcasts the exit code.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tool.h"

#define BUF_BYTES ((size_t)4 << 20)

/* One chunk's bytes: entry `entry` of file `file`, `len` > 0 bytes. */
typedef struct {
    size_t file, entry;
    uint64_t len;
} unit;

typedef struct {
    const hfdcp__catalog *c;
    unit *units;
    size_t n;
    uint64_t total;   /* the bytes of all units */
    uint32_t *crc;    /* per unit: its CRC-32C, once computed */
    size_t problems;  /* rank 0 */
} data_check;

static const hfdcp__entry *entry_of(const data_check *d, const unit *u)
{
    return &d->c->files[u->file].hdr.entries[u->entry];
}

/* Absolute byte offset in its file of unit u's first byte. */
static uint64_t unit_at(const data_check *d, const unit *u)
{
    return d->c->files[u->file].data_start + entry_of(d, u)->begin;
}

static int list_units(data_check *d)
{
    size_t n = 0;

    for (size_t f = 0; f < d->c->n_files; f++)
        n += d->c->files[f].hdr.n_entries;
    d->units = malloc((n ? n : 1) * sizeof *d->units);
    d->crc = calloc(n ? n : 1, sizeof *d->crc);
    if (d->units == NULL || d->crc == NULL)
        return hfdcp__nomem("the list of tensors to read");
    for (size_t f = 0; f < d->c->n_files; f++)
        for (size_t e = 0; e < d->c->files[f].hdr.n_entries; e++) {
            const hfdcp__entry *en = &d->c->files[f].hdr.entries[e];
            if (en->end == en->begin)
                continue; /* nothing to read; its CRC is 0 */
            d->units[d->n] = (unit){f, e, en->end - en->begin};
            d->total += d->units[d->n++].len;
        }
    return HFDCP_OK;
}

/* Reads bytes [from, to) of unit u into `buf` piece by piece, adding
 * them to r.  `fd` is the unit's file, open. */
static int read_run(const data_check *d, const unit *u, int fd, uint64_t from,
                    uint64_t to, unsigned char *buf, hfdcp__crc32c_runs *r)
{
    uint64_t at = unit_at(d, u);

    while (from < to) {
        size_t want = to - from < BUF_BYTES ? (size_t)(to - from) : BUF_BYTES;
        ssize_t got = pread(fd, buf, want, (off_t)(at + from));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return hfdcp__os_error(HFDCP_ERR_IO, errno, "reading bytes %" PRIu64
                                   " to %" PRIu64 " of '%s'", at + from, at + to,
                                   d->c->files[u->file].path);
        if (got == 0) /* shorter than when its header was read */
            return hfdcp__error(HFDCP_ERR_IO, "'%s' ends at byte %" PRIu64
                                ", before tensor '%s' (bytes %" PRIu64 " to %"
                                PRIu64 "): was it changed while verify ran?",
                                d->c->files[u->file].path, at + from,
                                entry_of(d, u)->name, at, at + u->len);
        hfdcp__crc32c_runs_add(r, from, buf, (size_t)got);
        from += (uint64_t)got;
    }
    return HFDCP_OK;
}

/* This rank's part of every unit's CRC (0 for the units it reads
 * nothing of): its share [lo, lo + size) of the sequence of all units'
 * bytes. */
static int read_share(const data_check *d, uint32_t *part)
{
    int rank, size, fd = -1, rc = HFDCP_OK;
    int64_t lo, len;
    size_t open_file = SIZE_MAX;
    uint64_t start = 0; /* the sequence's offset of unit i */
    unsigned char *buf = malloc(BUF_BYTES);

    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    tool_split_range((int64_t)d->total, size, rank, &lo, &len);
    if (buf == NULL)
        return hfdcp__nomem("a read buffer");
    for (size_t i = 0; i < d->n && rc == HFDCP_OK; start += d->units[i++].len) {
        const unit *u = &d->units[i];
        uint64_t from = (uint64_t)lo > start ? (uint64_t)lo - start : 0;
        uint64_t end = (uint64_t)(lo + len) - start;
        hfdcp__crc32c_runs r = {0};
        if (start + u->len <= (uint64_t)lo || start >= (uint64_t)(lo + len))
            continue;
        if (u->file != open_file) {
            if (fd >= 0)
                close(fd);
            open_file = u->file;
            if ((fd = open(d->c->files[u->file].path, O_RDONLY)) < 0) {
                rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "opening '%s'",
                                     d->c->files[u->file].path);
                break;
            }
        }
        rc = read_run(d, u, fd, from, end < u->len ? end : u->len, buf, &r);
        part[i] = hfdcp__crc32c_runs_part(&r, u->len);
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

/* Collective: every unit's CRC-32C into d->crc, on every rank.  Agreed
 * status. */
static int compute_crcs(data_check *d)
{
    uint32_t *part = calloc(d->n ? d->n : 1, sizeof *part);
    int rc = part ? read_share(d, part) : hfdcp__nomem("the checksums"), mpi_rc;

    if (rc == HFDCP_OK && d->n > INT_MAX)
        rc = hfdcp__error(HFDCP_ERR_UNSUPPORTED, "%zu tensors to check", d->n);
    if ((rc = hfdcp__agree(MPI_COMM_WORLD, rc)) == HFDCP_OK) {
        mpi_rc = MPI_Allreduce(part, d->crc, (int)d->n, MPI_UINT32_T, MPI_BXOR,
                               MPI_COMM_WORLD);
        if (mpi_rc != MPI_SUCCESS)
            rc = hfdcp__mpi_error(mpi_rc, "reducing the checksums");
        rc = hfdcp__agree(MPI_COMM_WORLD, rc);
    }
    for (size_t i = 0; rc == HFDCP_OK && i < d->n; i++)
        d->crc[i] = hfdcp__crc32c_finish(d->crc[i], d->units[i].len);
    free(part);
    return rc;
}

/* Rank 0: one problem line on stdout. */
static void problem(data_check *d, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(data_check *d, int status, const char *fmt, ...)
{
    va_list ap;

    printf("%s: ", hfdcp_status_name(status));
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    d->problems++;
}

/* Rank 0: the units of file f (from units[i] on) against its
 * hfdcp_crc32c; *i moves past them.  Returns whether f has checksums. */
static bool compare_file(data_check *d, size_t f, size_t *i)
{
    const hfdcp__file *file = &d->c->files[f];
    uint32_t *crcs = NULL;
    int rc = hfdcp__header_crc32c(&file->hdr, file->path, &crcs);
    bool has = rc == HFDCP_OK && crcs != NULL;

    if (rc != HFDCP_OK)
        problem(d, rc, "%s", hfdcp_last_error());
    else if (crcs == NULL)
        printf("note: '%s': no checksums (" HFDCP_CRC32C_KEY "): its data "
               "was read, not checked\n", file->path);
    for (; *i < d->n && d->units[*i].file == f; (*i)++) {
        const unit *u = &d->units[*i];
        uint64_t at = unit_at(d, u);
        if (crcs != NULL && crcs[u->entry] != d->crc[*i])
            problem(d, HFDCP_ERR_FORMAT, "'%s': tensor '%s', bytes [%" PRIu64
                    ", %" PRIu64 ") of the file: CRC-32C %08" PRIx32 ", but "
                    HFDCP_CRC32C_KEY " says %08" PRIx32 " (the data is damaged)",
                    file->path, entry_of(d, u)->name, at, at + u->len,
                    d->crc[*i], crcs[u->entry]);
    }
    free(crcs);
    return has;
}

/* A unit of a shard file, sorted by its chunk: stored name, then box. */
typedef struct {
    const hfdcp__entry *e;
    size_t i; /* its unit */
} copy;

static int copy_cmp(const void *pa, const void *pb)
{
    const hfdcp__entry *a = ((const copy *)pa)->e, *b = ((const copy *)pb)->e;
    int c = strcmp(a->name, b->name);

    if (c != 0 || a->ndim != b->ndim)
        return c != 0 ? c : a->ndim - b->ndim;
    for (int d = 0; d < a->ndim; d++) {
        if (a->offsets[d] != b->offsets[d])
            return a->offsets[d] < b->offsets[d] ? -1 : 1;
        if (a->shape[d] != b->shape[d])
            return a->shape[d] < b->shape[d] ? -1 : 1;
    }
    /* Equal chunks stay in file order (qsort is not stable). */
    return ((const copy *)pa)->i < ((const copy *)pb)->i ? -1 : 1;
}

static bool same_chunk(const hfdcp__entry *a, const hfdcp__entry *b)
{
    if (strcmp(a->name, b->name) != 0 || a->ndim != b->ndim)
        return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->offsets[d] != b->offsets[d] || a->shape[d] != b->shape[d])
            return false;
    return true;
}

/* Rank 0: the copies of a chunk saved in several shard files (the same
 * tensor and box) must hold the same bytes: each against the first. */
static int compare_copies(data_check *d)
{
    copy *cp;
    size_t n = 0;

    if (!d->c->sharded)
        return HFDCP_OK;
    if ((cp = malloc((d->n ? d->n : 1) * sizeof *cp)) == NULL)
        return hfdcp__nomem("the list of chunks");
    for (size_t i = 0; i < d->n; i++)
        if (entry_of(d, &d->units[i])->offsets != NULL)
            cp[n++] = (copy){entry_of(d, &d->units[i]), i};
    qsort(cp, n, sizeof *cp, copy_cmp);
    for (size_t k = 1, first = 0; k < n; k++) {
        if (!same_chunk(cp[first].e, cp[k].e)) {
            first = k;
            continue;
        }
        const unit *a = &d->units[cp[first].i], *b = &d->units[cp[k].i];
        char box[512];
        if (d->crc[cp[first].i] == d->crc[cp[k].i])
            continue;
        hfdcp__format_box(box, sizeof box, cp[k].e->ndim, cp[k].e->offsets,
                          cp[k].e->shape);
        problem(d, HFDCP_ERR_FORMAT, "tensor '%s' box %s: its copies in '%s' "
                "(bytes [%" PRIu64 ", %" PRIu64 ")) and '%s' (bytes [%" PRIu64
                ", %" PRIu64 ")) differ: CRC-32C %08" PRIx32 " and %08" PRIx32,
                cp[k].e->name, box, d->c->files[a->file].path, unit_at(d, a),
                unit_at(d, a) + a->len, d->c->files[b->file].path,
                unit_at(d, b), unit_at(d, b) + b->len, d->crc[cp[first].i],
                d->crc[cp[k].i]);
    }
    free(cp);
    return HFDCP_OK;
}

/* Rank 0: compares and reports; returns the exit code. */
static int report(data_check *d, const char *path, double seconds)
{
    uint64_t checked = 0;
    size_t without = 0, i = 0, first;
    int rc;

    for (size_t f = 0; f < d->c->n_files; f++) {
        first = i;
        if (!compare_file(d, f, &i)) {
            without++;
            continue;
        }
        for (size_t k = first; k < i; k++)
            checked += d->units[k].len;
    }
    if ((rc = compare_copies(d)) != HFDCP_OK)
        return tool_fail("verify", rc);
    printf("%s: data %s: %" PRIu64 " bytes read in %.2f s (%.1f MB/s), %"
           PRIu64 " bytes checked", path, d->problems ? "not valid" : "valid",
           d->total, seconds, seconds > 0 ? (double)d->total / seconds / 1e6 : 0.0,
           checked);
    if (without > 0)
        printf(", %zu file%s without checksums", without, without == 1 ? "" : "s");
    printf("\n");
    fflush(stdout);
    if (d->problems == 0)
        return TOOL_EXIT_OK;
    fprintf(stderr, "hfdcp verify: %s: data not valid, %zu problem%s (listed on "
            "stdout)\n", path, d->problems, d->problems == 1 ? "" : "s");
    return TOOL_EXIT_INVALID;
}

int tool_verify_data(const char *path)
{
    data_check d = {0};
    hfdcp__catalog *c = NULL;
    double t0;
    int rc, code = TOOL_EXIT_OK;

    if ((rc = hfdcp__catalog_open(MPI_COMM_WORLD, path, NULL, &c)) != HFDCP_OK)
        return tool_fail("verify", rc);
    d.c = c;
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    rc = hfdcp__agree(MPI_COMM_WORLD, list_units(&d));
    if (rc == HFDCP_OK)
        rc = compute_crcs(&d);
    if (rc != HFDCP_OK)
        code = tool_fail("verify", rc);
    else if (tool_rank() == 0)
        code = report(&d, path, MPI_Wtime() - t0);
    MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
    free(d.units);
    free(d.crc);
    hfdcp__catalog_free(c);
    return code;
}
