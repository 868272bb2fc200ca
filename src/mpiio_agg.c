/*
 * mpiio_agg.c - hfdcp's own two-phase aggregation: a transfer of short
 * runs cut into windows of the file, one aggregator per window, the runs
 * exchanged between the ranks' memory and the aggregators' windows
 * (MPI_Alltoallw, or copies through node-shared windows) and each window
 * read or written in a few long ranges.  mpiio.c decides when (its plan);
 * this file carries it out.
 */
#define _GNU_SOURCE /* fallocate() */
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "mpiio_internal.h"

int hfdcp__mpiio_shared_fault = -1;

/* ---------------------------------------------------------------------- */
/* Aggregation: hfdcp's own two-phase transfer                            */
/* ---------------------------------------------------------------------- */

/*
 * A transfer made of many short runs (a column-split tensor: one short run
 * per row, the ranks' runs interleaved) is slow through a collective call
 * when the MPI-IO component does not aggregate it: OMPIO in Open MPI 4.1
 * picks its "individual" fcoll component whenever a file is open on two
 * ranks or fewer, and then every rank writes each of its runs with its own
 * pwritev (125,000 calls per rank for 128 MB of 1 KB runs), the ranks
 * contending for the file's lock; reads go through data sieving.  So
 * hfdcp aggregates such transfers itself:
 *
 *   - the file range the transfer touches on any rank is cut into one
 *     contiguous domain per rank (its bounds aligned to
 *     min(1 MiB, window)), and each domain into windows of the buffer size
 *     (hint hfdcp_aggregate_buffer_size, default 32 MiB), smaller when
 *     the runs are so short that a window would hold more than 65,536 of
 *     them on average (but not under 256 KiB);
 *   - in round r every rank is the aggregator of window r of its domain:
 *     the ranks exchange the lists of their runs in each window
 *     (MPI_Alltoall + MPI_Alltoallv), then the data itself with ONE
 *     MPI_Alltoallw whose datatypes are built from the runs (hindexed on
 *     the user's memory, at absolute addresses, and on the aggregator's
 *     buffer), so the user's bytes are not staged anywhere else; an
 *     aggregator's own runs are copied between its memory and its window
 *     directly, not sent to itself; with every rank on one node the
 *     windows are shared and every run is copied so, with no
 *     MPI_Alltoallw (hfdcp__mpiio_agg_share, below; hint hfdcp_exchange);
 *   - each aggregator then writes (or, before the exchange, reads) the
 *     runs' union in its window, a few long contiguous ranges, with
 *     independent MPI_File_write_at / read_at calls: the aggregation, the
 *     collective part, is done, and a collective call would let the
 *     component aggregate the windows again (OMPIO's vulcan on three
 *     ranks or more: a second exchange, and its own 32 MiB buffers).
 *
 * When it is used (hint hfdcp_aggregate): "The plan" in mpiio.c.
 */

#define AGG_ALIGN ((uint64_t)1 << 20)
#define AGG_RUNS_PER_ROUND ((uint64_t)65536)
#define AGG_BUFFER_MIN ((uint64_t)256 << 10)

/* The runs one rank moves to or from each aggregator in one round. */
typedef struct {
    uint64_t *meta; /* pairs (file offset, length), grouped by aggregator */
    char **mem;     /* first memory byte of each run */
    size_t n, meta_cap, mem_cap;
} runlist;

static int runlist_push(runlist *l, uint64_t off, uint64_t len, char *mem)
{
    const char *what = "the runs of an aggregated transfer";

    HFDCP_TRY(hfdcp__grow(&l->meta, &l->meta_cap, 2 * l->n + 1,
                          sizeof *l->meta, what));
    HFDCP_TRY(hfdcp__grow(&l->mem, &l->mem_cap, l->n, sizeof *l->mem,
                          what));
    l->meta[2 * l->n] = off;
    l->meta[2 * l->n + 1] = len;
    l->mem[l->n] = mem;
    l->n++;
    return HFDCP_OK;
}

static int push_run(void *ctx, uint64_t off, uint64_t len, char *mem)
{
    return runlist_push(ctx, off, len, mem);
}

/* Runs (offset, length) by offset. */
static int cmp_run(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* An hindexed datatype of `n` runs: lengths meta[2i+1], displacements
 * meta[2i] - base (or the address of mem[i] when mem is given). */
static int runs_type(const uint64_t *meta, char *const *mem, size_t n,
                     uint64_t base, int *lens, MPI_Aint *disp,
                     MPI_Datatype *out)
{
    int rc = HFDCP_OK;

    for (size_t i = 0; i < n; i++) {
        lens[i] = (int)meta[2 * i + 1];
        if (mem == NULL)
            disp[i] = (MPI_Aint)(meta[2 * i] - base);
        else
            HFDCP_MPI_CHECK(MPI_Get_address(mem[i], &disp[i]));
    }
    HFDCP_MPI_CHECK(MPI_Type_create_hindexed((int)n, lens, disp, MPI_BYTE,
                                             out));
    HFDCP_MPI_CHECK(MPI_Type_commit(out));
cleanup:
    return rc;
}

/* The state of one aggregated transfer. */
typedef struct {
    hfdcp__mfile *f;
    bool write;
    int nranks, rank;
    uint64_t base, dsize, buf_size; /* domains: base + a * dsize */
    uint64_t buf_cap;               /* buf's size, buf_size or more */
    int rounds;
    char *buf;                      /* this rank's window */
    runlist mine;                   /* this rank's runs, by aggregator */
    int *scount, *rcount, *sdisp, *rdisp, *ones_s, *ones_r, *zeros;
    uint64_t *rmeta;                /* runs received, by source */
    size_t rmeta_cap;               /* in uint64_t */
    MPI_Datatype *stype, *rtype;
    int *lens;
    MPI_Aint *disp;
    size_t lens_cap, disp_cap;
    npiece *segs;
    npiece **segp;
    size_t segs_cap, segp_cap;
    heap_item *heap; /* coverage: one entry per source */
    size_t heap_cap;
    mpiio_shm shm; /* node-shared windows (rank a's at shm.base +
                      a * buf_size), or base NULL: MPI_Alltoallw */
} aggr;

/* Window r of aggregator a: [*w0, *w1), empty when *w0 >= *w1. */
static void window(const aggr *g, int a, int r, uint64_t lo, uint64_t hi,
                   uint64_t *w0, uint64_t *w1)
{
    uint64_t d0 = g->base + (uint64_t)a * g->dsize, d1 = d0 + g->dsize;
    uint64_t s = d0 + (uint64_t)r * g->buf_size, e = s + g->buf_size;
    if (e > d1)
        e = d1;
    if (s < lo)
        s = lo;
    if (e > hi)
        e = hi;
    *w0 = s;
    *w1 = e > s ? e : s;
}

/* Room for the lengths and displacements of `n` runs. */
static int grow_scratch(aggr *g, size_t n)
{
    const char *what = "the datatypes of an aggregated transfer";

    if (n == 0)
        return HFDCP_OK;
    HFDCP_TRY(hfdcp__grow(&g->lens, &g->lens_cap, n - 1, sizeof *g->lens,
                          what));
    return hfdcp__grow(&g->disp, &g->disp_cap, n - 1, sizeof *g->disp, what);
}

/* The union of the received runs in window [w0, w1): pieces on g->buf for
 * agg_io, sorted and disjoint.  Each source's runs come in file order
 * unless its parts interleave (two column blocks of one tensor on one
 * rank), and such a source's list is sorted first; the sources are then
 * merged through a heap by their next offset, not sorted together. */
static int coverage(aggr *g, size_t nr, uint64_t w0, size_t *nseg)
{
    const char *what = "the ranges of an aggregated transfer";
    size_t n = 0, nh = 0;

    *nseg = 0;
    if (nr == 0)
        return HFDCP_OK;
    HFDCP_TRY(hfdcp__grow(&g->segs, &g->segs_cap, nr - 1, sizeof *g->segs,
                          what));
    HFDCP_TRY(hfdcp__grow(&g->segp, &g->segp_cap, nr - 1, sizeof *g->segp,
                          what));
    HFDCP_TRY(hfdcp__grow(&g->heap, &g->heap_cap, (size_t)g->nranks - 1,
                          sizeof *g->heap, what));
    for (int a = 0; a < g->nranks; a++) {
        size_t r0 = (size_t)g->rdisp[a] / 2, rn = (size_t)g->rcount[a] / 2;
        uint64_t *m = g->rmeta + 2 * r0;
        if (rn == 0)
            continue;
        for (size_t i = 1; i < rn; i++)
            if (m[2 * i] < m[2 * i - 2]) {
                qsort(m, rn, 2 * sizeof *m, cmp_run);
                break;
            }
        /* end: the source's next offset; bytes: its next run's index */
        g->heap[nh] = (heap_item){m[0], r0, a};
        hfdcp__mpiio_heap_up(g->heap, nh++);
    }
    while (nh > 0) {
        heap_item *h = &g->heap[0];
        size_t i = (size_t)h->bytes;
        size_t last = (size_t)(g->rdisp[h->round] + g->rcount[h->round]) / 2;
        uint64_t off = g->rmeta[2 * i], end = off + g->rmeta[2 * i + 1];
        if (i + 1 < last) {
            h->bytes = i + 1;
            h->end = g->rmeta[2 * i + 2];
        } else {
            *h = g->heap[--nh];
        }
        hfdcp__mpiio_heap_down(g->heap, nh, 0);
        if (n > 0 && off <= g->segs[n - 1].fend) {
            if (end > g->segs[n - 1].fend)
                g->segs[n - 1].fend = end;
            continue;
        }
        memset(&g->segs[n], 0, sizeof g->segs[n]);
        g->segs[n].foff = off;
        g->segs[n].fend = end;
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        npiece *s = &g->segs[i];
        s->run = s->bytes = s->fend - s->foff;
        s->maddr = g->buf + (s->foff - w0);
        g->segp[i] = s;
    }
    *nseg = n;
    return HFDCP_OK;
}

/* Collective: hfdcp__agree between full memory fences, so that the stores
 * one rank made into the shared windows before it are seen by every rank
 * after it (the MPI call synchronizes the ranks, the fences order the
 * stores around it). */
static int shared_agree(MPI_Comm comm, int rc)
{
    atomic_thread_fence(memory_order_seq_cst);
    rc = hfdcp__agree(comm, rc);
    atomic_thread_fence(memory_order_seq_cst);
    return rc;
}

/* The aggregator's I/O of one round: each covered range of its window
 * (contiguous on both sides: the collective part, the exchange, is
 * done).  Collective only in its agreement, which is fenced: after a
 * read, the other ranks copy their runs out of a shared window. */
static int agg_io(aggr *g, size_t nseg)
{
    int rc = HFDCP_OK;

    for (size_t i = 0; i < nseg && rc == HFDCP_OK; i++)
        rc = hfdcp__mpiio_range_io(g->f, g->write, g->segp[i]->foff,
                                   g->segp[i]->maddr, g->segp[i]->bytes);
    return shared_agree(g->f->comm, rc);
}

/* Local: this rank's runs in aggregator a's window, which starts at file
 * offset w0 and at `buf` in memory, copied between its memory and the
 * window (into the window before a write, out of it after a read).  For
 * its own window, rather than sending them to itself through
 * MPI_Alltoallw, which would build datatypes for them and pack and unpack
 * them; for every window when they are shared. */
static void copy_runs(aggr *g, int a, char *buf, uint64_t w0)
{
    size_t s0 = (size_t)g->sdisp[a] / 2;
    size_t sn = (size_t)g->scount[a] / 2;

    for (size_t i = s0; i < s0 + sn; i++) {
        char *win = buf + (g->mine.meta[2 * i] - w0);
        size_t len = (size_t)g->mine.meta[2 * i + 1];
        if (g->write)
            memcpy(win, g->mine.mem[i], len);
        else
            memcpy(g->mine.mem[i], win, len);
    }
}

/* Local: this rank's runs of round r copied into (write) or out of (read)
 * every aggregator's shared window. */
static void shared_copy(aggr *g, int r, uint64_t lo, uint64_t hi)
{
    for (int a = 0; a < g->nranks; a++) {
        uint64_t w0, w1;
        window(g, a, r, lo, hi, &w0, &w1);
        if (w0 < w1)
            copy_runs(g, a, g->shm.base + (uint64_t)a * g->buf_size, w0);
    }
}

/* Local: the datatypes of a round's MPI_Alltoallw: this rank's runs in
 * its memory, for each other aggregator; each other source's runs in this
 * rank's window, which starts at file offset my0 (its own runs are
 * copied directly: copy_runs); MPI_BYTE with a count of 0 where there is
 * nothing. */
static int exchange_types(aggr *g, size_t nr, uint64_t my0)
{
    int rc = grow_scratch(g, g->mine.n > nr ? g->mine.n : nr);

    for (int a = 0; a < g->nranks && rc == HFDCP_OK; a++) {
        size_t s0 = (size_t)g->sdisp[a] / 2, sn = (size_t)g->scount[a] / 2;
        size_t r0 = (size_t)g->rdisp[a] / 2, rn = (size_t)g->rcount[a] / 2;
        if (a == g->rank)
            sn = rn = 0;
        g->ones_s[a] = sn > 0;
        g->ones_r[a] = rn > 0;
        if (sn > 0)
            rc = runs_type(g->mine.meta + 2 * s0, g->mine.mem + s0, sn, 0,
                           g->lens, g->disp, &g->stype[a]);
        if (rc == HFDCP_OK && rn > 0)
            rc = runs_type(g->rmeta + 2 * r0, NULL, rn, my0, g->lens,
                           g->disp, &g->rtype[a]);
    }
    for (int a = 0; a < g->nranks; a++) {
        if (g->stype[a] == MPI_DATATYPE_NULL)
            g->stype[a] = MPI_BYTE;
        if (g->rtype[a] == MPI_DATATYPE_NULL)
            g->rtype[a] = MPI_BYTE;
    }
    return rc;
}

/* Collective: the data of round r between the ranks' memory and the
 * aggregators' windows, into them before a write, out of them after a
 * read: copied straight through the shared windows, or MPI_Alltoallw
 * (this rank's own window copied directly).  Agreed status. */
static int exchange(aggr *g, int r, uint64_t lo, uint64_t hi, uint64_t my0)
{
    MPI_Comm comm = g->f->comm;
    int rc = HFDCP_OK, mpi_rc;

    if (g->shm.base != NULL) {
        shared_copy(g, r, lo, hi);
        return shared_agree(comm, HFDCP_OK);
    }
    copy_runs(g, g->rank, g->buf, my0);
    if (g->write)
        mpi_rc = MPI_Alltoallw(MPI_BOTTOM, g->ones_s, g->zeros, g->stype,
                               g->buf, g->ones_r, g->zeros, g->rtype, comm);
    else
        mpi_rc = MPI_Alltoallw(g->buf, g->ones_r, g->zeros, g->rtype,
                               MPI_BOTTOM, g->ones_s, g->zeros, g->stype,
                               comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "MPI_Alltoallw");
    return hfdcp__agree(comm, rc);
}

/* Local: this rank's runs of round r in every aggregator's window, into
 * g->mine (grouped by aggregator: g->sdisp, g->scount). */
static int list_runs(aggr *g, npiece *const *sorted, size_t m, int r,
                     uint64_t lo, uint64_t hi)
{
    int rc = HFDCP_OK;

    g->mine.n = 0;
    for (int a = 0; a < g->nranks && rc == HFDCP_OK; a++) {
        uint64_t w0, w1;
        size_t before = g->mine.n;
        window(g, a, r, lo, hi, &w0, &w1);
        for (size_t i = 0; i < m && w0 < w1 && rc == HFDCP_OK; i++)
            rc = hfdcp__mpiio_part_runs(sorted[i], w0, w1, push_run,
                                        &g->mine);
        g->sdisp[a] = (int)(2 * before);
        g->scount[a] = (int)(g->mine.n - before);
        if (g->mine.n > (size_t)INT_MAX / 2)
            rc = hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                              "'%s': too many runs in one aggregation round",
                              g->f->path);
    }
    return rc;
}

/* Collective: the lists of runs: counts, then (offset, length) pairs,
 * received into g->rmeta (by source: g->rdisp, g->rcount, in uint64_t);
 * *nr the runs received.  Agreed status. */
static int swap_lists(aggr *g, size_t *nr)
{
    MPI_Comm comm = g->f->comm;
    int rc = HFDCP_OK, mpi_rc;

    *nr = 0;
    mpi_rc = MPI_Alltoall(g->scount, 1, MPI_INT, g->rcount, 1, MPI_INT,
                          comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "MPI_Alltoall");
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        return rc;
    for (int a = 0; a < g->nranks; a++) {
        g->rdisp[a] = (int)(2 * *nr);
        *nr += (size_t)g->rcount[a];
        g->scount[a] *= 2;
        g->rcount[a] *= 2;
    }
    if (*nr > 0)
        rc = hfdcp__grow(&g->rmeta, &g->rmeta_cap, 2 * *nr - 1,
                         sizeof *g->rmeta,
                         "the runs of an aggregated transfer");
    if (rc == HFDCP_OK &&
        (mpi_rc = MPI_Alltoallv(g->mine.meta, g->scount, g->sdisp,
                                MPI_UINT64_T, g->rmeta, g->rcount, g->rdisp,
                                MPI_UINT64_T, comm)) != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "MPI_Alltoallv");
    return hfdcp__agree(comm, rc);
}

/* One round: runs, exchange of their lists, then read-exchange or
 * exchange-write.  Collective; agreed status. */
static int aggr_round(aggr *g, npiece *const *sorted, size_t m, int r,
                      uint64_t lo, uint64_t hi)
{
    MPI_Comm comm = g->f->comm;
    uint64_t my0, my1;
    size_t nr = 0, nseg = 0;
    int rc, P = g->nranks;

    for (int a = 0; a < P; a++)
        g->stype[a] = g->rtype[a] = MPI_DATATYPE_NULL;
    rc = list_runs(g, sorted, m, r, lo, hi);
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        return rc;

    if ((rc = swap_lists(g, &nr)) != HFDCP_OK)
        goto cleanup;
    window(g, g->rank, r, lo, hi, &my0, &my1);

    /* The datatypes of MPI_Alltoallw; none through shared windows. */
    if (g->shm.base == NULL)
        rc = exchange_types(g, nr, my0);
    if (rc == HFDCP_OK)
        rc = coverage(g, nr, my0, &nseg);
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        goto cleanup;

    /* A window is read (agg_io's agreement) before any rank copies runs
     * out of it; the next round's exchange of run lists waits for every
     * rank before any window is read or written again. */
    if (g->write) {
        if ((rc = exchange(g, r, lo, hi, my0)) == HFDCP_OK)
            rc = agg_io(g, nseg); /* agreed */
    } else {
        if ((rc = agg_io(g, nseg)) == HFDCP_OK)
            rc = exchange(g, r, lo, hi, my0); /* agreed */
    }
cleanup:
    for (int a = 0; a < P; a++) {
        hfdcp__mpiio_free_type(&g->stype[a]);
        hfdcp__mpiio_free_type(&g->rtype[a]);
    }
    if (rc == HFDCP_ERR_MPI)
        hfdcp__error_prefix(rc, "aggregated %s of '%s'",
                            g->write ? "write" : "read", g->f->path);
    return rc;
}
/* ---------------------------------------------------------------------- */
/* Node-shared windows                                                    */
/* ---------------------------------------------------------------------- */

#ifdef __linux__
/* What rank 0 tells the others of the segment (hfdcp__mpiio_agg_share). */
typedef struct {
    uint64_t id[2]; /* rank 0's kept segment, then the new one */
    int ok;
    char name[60];
} shm_note;

/* Collective: takes the segment kept by the last transfer into *shm when
 * every rank holds the same one and it has `total` bytes (*all);
 * otherwise *shm is left empty.  Rank 0's kept segment in note->id.  An
 * MPI status, not agreed. */
static int reuse_kept(hfdcp__mfile *f, int nranks, uint64_t total,
                      shm_note *note, mpiio_shm *shm, int *all)
{
    MPI_Comm comm = f->comm;
    int mine, mpi_rc;

    if (f->rank == 0)
        hfdcp__mpiio_kept_shm_id(note->id);
    mpi_rc = MPI_Bcast(note->id, 2, MPI_UINT64_T, 0, comm);
    /* taken at once, so that no other thread takes it meanwhile; given
     * back when some rank has no match */
    if (mpi_rc == MPI_SUCCESS && f->keep_buffer)
        hfdcp__mpiio_kept_shm_take(note->id, nranks, f->rank, total, shm);
    mine = shm->base != NULL;
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = MPI_Allreduce(&mine, all, 1, MPI_INT, MPI_MIN, comm);
    if (mpi_rc == MPI_SUCCESS && *all) {
        hfdcp__mpiio_kept_shm_count();
        return mpi_rc;
    }
    if (shm->base != NULL) {
        hfdcp__mpiio_kept_shm_give(shm, f->keep_buffer);
        memset(shm, 0, sizeof *shm);
    }
    return mpi_rc;
}

/* Rank 0: creates the POSIX shared memory object of a new segment (its
 * id and name into *note) and reserves its `total` bytes (note->ok);
 * *fd its descriptor.  Whether the object was created. */
static bool create_segment(shm_note *note, uint64_t total, int *fd)
{
    static atomic_uint serial;

    note->id[0] = (uint64_t)getpid();
    note->id[1] = atomic_fetch_add(&serial, 1u);
    snprintf(note->name, sizeof note->name, "/hfdcp-%" PRIu64 "-%" PRIu64,
             note->id[0], note->id[1]);
    *fd = shm_open(note->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    note->ok = *fd >= 0 && ftruncate(*fd, (off_t)total) == 0 &&
               fallocate(*fd, 0, 0, (off_t)total) == 0;
    return *fd >= 0;
}

/* Collective: a new segment of `total` bytes mapped on every rank, into
 * *shm, or nothing when some rank cannot have it.  `mpi_rc`, the status
 * of the MPI calls before: after a failure only the agreement is made.
 * Agreed status. */
static int new_segment(hfdcp__mfile *f, int nranks, uint64_t total,
                       int mpi_rc, shm_note *note, mpiio_shm *shm)
{
    MPI_Comm comm = f->comm;
    int fd = -1, mine = 0, all = 0, rc = HFDCP_OK;
    bool created = false;
    void *p = MAP_FAILED;

    if (mpi_rc == MPI_SUCCESS && f->rank == 0 &&
        total <= (uint64_t)INT64_MAX / 2)
        created = create_segment(note, total, &fd);
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = MPI_Bcast(note, (int)sizeof *note, MPI_BYTE, 0, comm);
    if (mpi_rc == MPI_SUCCESS && note->ok) {
        if (f->rank != 0)
            fd = shm_open(note->name, O_RDWR | O_CLOEXEC, 0);
        if (fd >= 0 && f->rank != hfdcp__mpiio_shared_fault)
            p = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED,
                     fd, 0);
        mine = p != MAP_FAILED;
    }
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm);
    if (fd >= 0)
        (void)close(fd);
    if (created)
        (void)shm_unlink(note->name); /* every rank has opened it */
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "sharing the windows of '%s'",
                              f->path);
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK || !all) {
        if (p != MAP_FAILED)
            (void)munmap(p, (size_t)total);
        return rc;
    }
    shm->base = p;
    shm->size = total;
    memcpy(shm->id, note->id, sizeof shm->id);
    shm->nranks = nranks;
    shm->rank = f->rank;
    return HFDCP_OK;
}
#endif

/*
 * Collective: node-shared memory for the windows of every rank (all on
 * one node, f->shared_exchange), rank a's at shm->base + a * window.
 * The segment kept by the last transfer is taken when every rank holds
 * the same one (the same maker, group size and place in it) and it is
 * large enough.  Otherwise rank 0 creates a POSIX shared memory object
 * and reserves its pages (fallocate: a full /dev/shm is a refusal here,
 * not a SIGBUS at the first store), every rank maps it, then rank 0
 * unlinks its name: the mappings hold it until aggr_free unmaps it or
 * keeps it.  When any rank cannot have it, shm->base stays NULL on every
 * rank and the exchange is MPI_Alltoallw: not an error.  Agreed status
 * (an error only when MPI fails).
 */
int hfdcp__mpiio_agg_share(hfdcp__mfile *f, int nranks, uint64_t window,
                           mpiio_shm *shm)
{
    memset(shm, 0, sizeof *shm);
#ifdef __linux__
    uint64_t total = (uint64_t)nranks * window;
    shm_note note;
    int all = 0, mpi_rc;

    memset(&note, 0, sizeof note);
    mpi_rc = reuse_kept(f, nranks, total, &note, shm, &all);
    if (mpi_rc == MPI_SUCCESS && all)
        return hfdcp__agree(f->comm, HFDCP_OK);
    return new_segment(f, nranks, total, mpi_rc, &note, shm);
#else
    (void)f;
    (void)nranks;
    (void)window;
    return HFDCP_OK;
#endif
}
static void aggr_free(aggr *g)
{
    if (g->shm.base != NULL)
        hfdcp__mpiio_kept_shm_give(&g->shm, g->f->keep_buffer);
    else
        hfdcp__buffer_give(g->buf, g->buf_cap, g->f->keep_buffer);
    free(g->mine.meta);
    free(g->mine.mem);
    free(g->scount);
    free(g->rcount);
    free(g->sdisp);
    free(g->rdisp);
    free(g->ones_s);
    free(g->ones_r);
    free(g->zeros);
    free(g->rmeta);
    free(g->stype);
    free(g->rtype);
    free(g->lens);
    free(g->disp);
    free(g->segs);
    free(g->segp);
    free(g->heap);
}
/* ---------------------------------------------------------------------- */
/* The aggregated transfer                                                */
/* ---------------------------------------------------------------------- */

uint64_t hfdcp__mpiio_agg_buffer(uint64_t avg_run, uint64_t buffer)
{
    /* The window holds at most AGG_RUNS_PER_ROUND runs of the average
     * length: the run lists and the datatypes built from them cost some
     * 180 bytes per run. */
    uint64_t buf = buffer;
    if (avg_run < buf / AGG_RUNS_PER_ROUND) {
        buf = avg_run * AGG_RUNS_PER_ROUND;
        if (buf < AGG_BUFFER_MIN)
            buf = AGG_BUFFER_MIN < buffer ? AGG_BUFFER_MIN : buffer;
    }
    return buf;
}

/* Local: domains and rounds, the same on every rank, for the file bytes
 * [lo, hi) and windows of g->buf_size bytes. */
static int layout(aggr *g, uint64_t lo, uint64_t hi)
{
    uint64_t P = (uint64_t)g->nranks, buf = g->buf_size;
    uint64_t align = buf < AGG_ALIGN ? buf : AGG_ALIGN;

    g->base = lo - lo % align;
    g->dsize = (hi - g->base + P - 1) / P;
    g->dsize = (g->dsize + align - 1) / align * align;
    uint64_t rounds = (g->dsize + g->buf_size - 1) / g->buf_size;
    if (rounds > (uint64_t)INT_MAX)
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "'%s': %" PRIu64 " aggregation rounds "
                            "(raise hfdcp_aggregate_buffer_size)",
                            g->f->path, rounds);
    g->rounds = (int)rounds;
    return HFDCP_OK;
}

/* Local: this rank's window (in the shared segment, or the kept buffer)
 * and the per-rank arrays of the exchange. */
static int aggr_alloc(aggr *g)
{
    size_t np = (size_t)g->nranks;

    if (g->shm.base != NULL) {
        g->buf = g->shm.base + (uint64_t)g->rank * g->buf_size;
        g->buf_cap = g->buf_size;
    } else {
        g->buf_cap = g->buf_size;
        g->buf = hfdcp__buffer_take(&g->buf_cap, g->f->keep_buffer);
    }
    g->scount = calloc(np, sizeof *g->scount);
    g->rcount = calloc(np, sizeof *g->rcount);
    g->sdisp = calloc(np, sizeof *g->sdisp);
    g->rdisp = calloc(np, sizeof *g->rdisp);
    g->ones_s = calloc(np, sizeof *g->ones_s);
    g->ones_r = calloc(np, sizeof *g->ones_r);
    g->zeros = calloc(np, sizeof *g->zeros);
    g->stype = calloc(np, sizeof *g->stype);
    g->rtype = calloc(np, sizeof *g->rtype);
    if (!g->buf || !g->scount || !g->rcount || !g->sdisp || !g->rdisp ||
        !g->ones_s || !g->ones_r || !g->zeros || !g->stype || !g->rtype)
        return hfdcp__nomem("the buffer of an aggregated transfer");
    return HFDCP_OK;
}

int hfdcp__mpiio_agg_transfer(hfdcp__mfile *f, bool write,
                              npiece *const *sorted, size_t m, mpiio_plan *p)
{
    aggr g;
    int rc;

    memset(&g, 0, sizeof g);
    g.f = f;
    g.write = write;
    g.nranks = p->nranks;
    g.rank = f->rank;
    g.shm = p->shm; /* now g's: aggr_free keeps or unmaps it */
    memset(&p->shm, 0, sizeof p->shm);
    g.buf_size = p->window;
    if ((rc = layout(&g, p->lo, p->hi)) != HFDCP_OK) {
        aggr_free(&g);
        return hfdcp__agree(f->comm, rc);
    }

    rc = aggr_alloc(&g);
    if ((rc = hfdcp__agree(f->comm, rc)) == HFDCP_OK)
        rc = hfdcp__mpiio_byte_view(f); /* the aggregators' explicit offsets */
    if (rc == HFDCP_OK) {
        f->last_rounds = g.rounds;
        f->last_shared = g.shm.base != NULL;
        for (int r = 0; r < g.rounds && rc == HFDCP_OK; r++)
            rc = aggr_round(&g, sorted, m, r, p->lo, p->hi);
    }
    aggr_free(&g);
    return rc;
}
