/*
 * mpiio.c - the transfer: moves "pieces" (a box of a row-major array in a
 * file <-> a box of a row-major array in memory) between an open file and
 * memory with reads and writes described by MPI datatypes (no staging
 * copy), and chooses how, in ONE place: the plan.  The MPI-IO layer is
 * mpiio*.c, the only files that call MPI_File_* (mpiio_internal.h lists
 * them in the order of the data flow); mpiio_open.c opens the files, with
 * hfdcp's hints merged under the caller's.
 *
 * A transfer, on each rank:
 *   1. Normalizes every piece (mpiio_types.c): sub-byte elements (4 and 6
 *      bits) are folded into bytes along the innermost dimension (after
 *      merging the trailing dimensions whole in both arrays, so that a
 *      whole tensor with rows of 1.5 bytes still moves); trailing
 *      dimensions that are whole in both arrays are merged into one
 *      contiguous run; outer dimensions of extent 1 are dropped.  What is
 *      left is a run of R bytes repeated along k dimensions, with byte
 *      strides in the file and in memory.
 *   2. Splits every piece of more than hfdcp__mpiio_round_max bytes (1
 *      GiB) into parts that fit: groups of slices along its outermost
 *      dimension, each slice split in turn when one is too large, a single
 *      run into shorter runs.  Then sorts the parts by their first file
 *      byte and splits them into rounds whose file byte ranges [first,
 *      last] are disjoint (interval partitioning), because a file view's
 *      displacements must never decrease and a write must not touch a byte
 *      twice, and which move at most hfdcp__mpiio_round_max bytes on this
 *      rank.  Two column blocks of one tensor on one rank interleave: they
 *      go in two rounds.  The byte limit works around ROMIO 3.2.1 (Open
 *      MPI 4.1's romio321): a collective write of more than 2 GiB on one
 *      rank that mixes a small piece with a large one writes the small
 *      piece's bytes a second time in the middle of the large one.
 *   3. Chooses how the parts move, the same on every rank (plan(), "The
 *      plan" below): short runs by hfdcp's own aggregation (mpiio_agg.c)
 *      or by sieving reads (mpiio_sieve.c), and then the rounds of step 2
 *      are not used; else through the MPI-IO component, as in step 4.
 *   4. Agrees with every rank on the number of rounds (the maximum).  In
 *      each round every rank sets ONE file view (a struct of nested
 *      hvectors at the pieces' absolute file offsets, etype MPI_BYTE,
 *      "native") and makes ONE MPI_File_read_all / write_all of count 1 on
 *      a memory struct at the pieces' absolute addresses (MPI_BOTTOM), or
 *      of count 0 when it has nothing in that round.  (Reads are
 *      independent MPI_File_read calls on MPI libraries with a known read
 *      bug: see "A known bug" in mpiio_open.c.)
 *
 * Large counts: see mpiio_types.c.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "mpiio_internal.h"

/* ---------------------------------------------------------------------- */
/* The plan                                                               */
/* ---------------------------------------------------------------------- */

/*
 * hfdcp's own aggregation ("Aggregation" in mpiio_agg.c) is used when the
 * hint hfdcp_aggregate is "enable", or "auto" (the default) with more
 * than one rank and runs of less than 8 KiB on average over all ranks
 * (measured with hfdcp bench --alt-hint hfdcp_aggregate=disable,
 * docs/benchmarks.md: aggregation is faster on runs of 64 bytes to 2 KB,
 * slower on runs of 12.8 and 128 KB, where the component's path does few,
 * long requests and the exchange is pure cost).  "disable" keeps the
 * MPI-IO component's own collective path.  A read that would be
 * aggregated is sieved instead as the hint hfdcp_sieve_reads says
 * ("Sieving reads" in mpiio_sieve.c); the writes of runs of 8 KiB or
 * more may be independent ("Long runs" in mpiio_open.c).
 */
#define AGG_RUN_THRESHOLD ((uint64_t)8 << 10)

/* What the plan weighs: this rank's parts (weigh), then every rank's
 * parts and hints (weigh_all). */
typedef struct {
    uint64_t bytes, runs; /* summed over the ranks */
    uint64_t lo, hi;      /* the first file byte (min) and the end (max) */
    int mode;             /* hfdcp_aggregate: "disable" wins, then "enable" */
    uint64_t buffer;      /* the largest hfdcp_aggregate_buffer_size */
    int sieve;            /* hfdcp_sieve_reads, as hfdcp_aggregate */
    bool no_auto_sieve;   /* some rank may not sieve in "auto" */
} weighed;

/* Local: the bytes, runs and file extent of this rank's parts. */
static void weigh(npiece *const *sorted, size_t m, weighed *w)
{
    memset(w, 0, sizeof *w);
    w->lo = UINT64_MAX;
    for (size_t i = 0; i < m; i++) {
        w->bytes += sorted[i]->bytes;
        w->runs += sorted[i]->bytes / sorted[i]->run;
        if (sorted[i]->foff < w->lo)
            w->lo = sorted[i]->foff;
        if (sorted[i]->fend > w->hi)
            w->hi = sorted[i]->fend;
    }
}

/* Collective: what every rank weighs (*all) from this rank's (*mine) and
 * hints.  HFDCP_OK, the same on every rank (the reductions are), or an
 * agreed error. */
static int weigh_all(hfdcp__mfile *f, bool write, npiece *const *sorted,
                     size_t m, const weighed *mine, weighed *all)
{
    uint64_t loc[2] = {mine->bytes, mine->runs}, glob[2];
    uint64_t lmax[6], gmax[6];
    int mpi_rc;

    memset(all, 0, sizeof *all);
    /* sums of bytes and runs; min of first byte (as max of its
     * complement) and max of last */
    lmax[0] = UINT64_MAX - mine->lo;
    lmax[1] = mine->hi;
    lmax[2] = (uint64_t)f->aggregate; /* ranks that disagree: "disable" */
    lmax[3] = f->agg_buffer;          /* wins, and the largest buffer */
    lmax[4] = (uint64_t)f->sieve;     /* "disable" wins, then "enable" */
    /* ranks that may not sieve in "auto" (the spans walked only when
     * that can matter) */
    lmax[5] = !write && f->sieve == AGG_AUTO &&
              !(f->local && hfdcp__mpiio_sieve_fits(sorted, m, mine->bytes));
    mpi_rc = MPI_Allreduce(loc, glob, 2, MPI_UINT64_T, MPI_SUM, f->comm);
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = hfdcp__allreduce_u64(lmax, gmax, 6, MPI_MAX, f->comm);
    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__agree(f->comm, hfdcp__mpi_error(
                                         mpi_rc, "planning the aggregated "
                                         "transfer of '%s'", f->path));
    all->bytes = glob[0];
    all->runs = glob[1];
    all->lo = UINT64_MAX - gmax[0];
    all->hi = gmax[1];
    all->mode = (int)gmax[2];
    all->buffer = gmax[3];
    all->sieve = (int)gmax[4];
    all->no_auto_sieve = gmax[5] != 0;
    return HFDCP_OK;
}

/* Local: the plan of a transfer through the MPI-IO component's rounds. */
static int plan_rounds(const hfdcp__mfile *f, bool write, mpiio_plan *p)
{
    /* the same on every rank: avg_run is global from two ranks */
    p->how = MPIIO_ROUNDS;
    p->independent =
        write && f->independent_long && p->avg_run >= AGG_RUN_THRESHOLD;
    return HFDCP_OK;
}

/* Collective: the plan of a transfer of short runs (`all`: what every
 * rank weighs): sieved or aggregated, and through which windows.  Agreed
 * status. */
static int plan_short(hfdcp__mfile *f, bool write, const weighed *all,
                      mpiio_plan *p)
{
    /* Sieving ("Sieving reads"): with "enable" now; with "auto" when the
     * ranks may sieve and the windows turn out not to be shared, below. */
    int sieve = write ? AGG_OFF
                : all->sieve == AGG_ON ? AGG_ON
                : all->sieve == AGG_AUTO && !all->no_auto_sieve ? AGG_AUTO
                                                                : AGG_OFF;
    int rc;

    p->buffer = all->buffer;
    if (sieve == AGG_ON) {
        p->how = MPIIO_SIEVE;
        return HFDCP_OK;
    }
    uint64_t buf = hfdcp__mpiio_agg_buffer(p->avg_run, all->buffer);
    uint64_t P = (uint64_t)p->nranks;
    /* Shared windows (hfdcp__mpiio_agg_share): each is a P-th of the
     * buffer, so that the node holds one buffer in all, and a rank's
     * resident set, which counts every window it stores into, holds one
     * buffer too.  Without them (MPI_Alltoallw) each rank's window is the
     * buffer. */
    p->window = (buf + P - 1) / P;
    if (f->shared_exchange &&
        (rc = hfdcp__mpiio_agg_share(f, p->nranks, p->window, &p->shm)) !=
            HFDCP_OK)
        return rc; /* agreed */
    if (sieve == AGG_AUTO && p->shm.base == NULL) {
        p->how = MPIIO_SIEVE;
        return HFDCP_OK;
    }
    if (p->shm.base == NULL)
        p->window = buf;
    p->how = MPIIO_AGGREGATE;
    p->lo = all->lo;
    p->hi = all->hi;
    return HFDCP_OK;
}

/*
 * Collective: the ONE place the strategy of a transfer is chosen: *p,
 * the same on every rank, from every rank's parts `sorted[0..m)` and
 * hints.  Whether the node-shared windows can be had decides between
 * aggregating and sieving a read, so the plan maps them too (p->shm, for
 * hfdcp__mpiio_agg_transfer).  Agreed status.
 */
static int plan(hfdcp__mfile *f, bool write, npiece *const *sorted,
                size_t m, mpiio_plan *p)
{
    weighed mine, all;
    int rc;

    memset(p, 0, sizeof *p);
    MPI_Comm_size(f->comm, &p->nranks);
    weigh(sorted, m, &mine);
    if (p->nranks < 2 && f->aggregate != AGG_ON) {
        p->avg_run = mine.runs ? mine.bytes / mine.runs : 0;
        return plan_rounds(f, write, p);
    }
    if ((rc = weigh_all(f, write, sorted, m, &mine, &all)) != HFDCP_OK)
        return rc; /* agreed */
    p->avg_run = all.runs ? all.bytes / all.runs : 0;
    if (all.mode == AGG_OFF || all.runs == 0 || all.hi <= all.lo)
        return plan_rounds(f, write, p); /* nothing anywhere: the plain
                                          * path joins */
    if (all.mode == AGG_AUTO && all.bytes / all.runs >= AGG_RUN_THRESHOLD)
        return plan_rounds(f, write, p);
    return plan_short(f, write, &all, p); /* agreed */
}

/* ---------------------------------------------------------------------- */
/* The MPI-IO component's rounds                                          */
/* ---------------------------------------------------------------------- */

/* One collective call (an independent one when `indep`, see "Long runs"
 * in mpiio_open.c, or on reads with OMPIO's bug): this rank's pieces
 * `round[0..n)` (n may be 0). */
static int do_round(hfdcp__mfile *f, bool write, bool indep,
                    npiece *const *round, size_t n)
{
    MPI_Datatype ftype = MPI_DATATYPE_NULL, mtype = MPI_DATATYPE_NULL;
    MPI_Status st;
    MPI_Count got = 0;
    uint64_t bytes = 0;
    int rc = HFDCP_OK, mpi_rc, count = n > 0 ? 1 : 0;
    const char *call = write ? (indep ? "MPI_File_write" : "MPI_File_write_all")
                       : f->independent_reads ? "MPI_File_read"
                                              : "MPI_File_read_all";

    for (size_t i = 0; i < n; i++)
        bytes += round[i]->bytes; /* each checked; the sum below */
    if (n > 0)
        rc = hfdcp__mpiio_round_types(round, n, bytes, f->path, &ftype,
                                      &mtype);
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        goto cleanup;

    mpi_rc = MPI_File_set_view(f->fh, 0, MPI_BYTE,
                               n > 0 ? ftype : MPI_BYTE, "native",
                               MPI_INFO_NULL);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpiio_file_error(mpi_rc, "MPI_File_set_view", f->path);
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        goto cleanup;

    if (write && indep)
        mpi_rc = n > 0 ? MPI_File_write(f->fh, MPI_BOTTOM, count, mtype, &st)
                       : MPI_SUCCESS;
    else if (write)
        mpi_rc = MPI_File_write_all(f->fh, MPI_BOTTOM, count,
                                    n > 0 ? mtype : MPI_BYTE, &st);
    else if (!f->independent_reads)
        mpi_rc = MPI_File_read_all(f->fh, MPI_BOTTOM, count,
                                   n > 0 ? mtype : MPI_BYTE, &st);
    else if (n > 0)
        mpi_rc = MPI_File_read(f->fh, MPI_BOTTOM, count, mtype, &st);
    else
        mpi_rc = MPI_SUCCESS;
    if (mpi_rc != MPI_SUCCESS) {
        rc = hfdcp__mpiio_file_error(mpi_rc, call, f->path);
    } else if (n > 0) {
        mpi_rc = MPI_Get_elements_x(&st, mtype, &got);
        if (mpi_rc != MPI_SUCCESS)
            rc = hfdcp__mpi_error(mpi_rc, "MPI_Get_elements_x after %s on "
                                  "'%s'", call, f->path);
        else if (got != (MPI_Count)bytes)
            rc = hfdcp__error(HFDCP_ERR_IO,
                              "%s on '%s': moved %lld of %" PRIu64
                              " bytes (%s)",
                              call, f->path, (long long)got, bytes,
                              write ? "short write"
                                    : "short read: the file ends early");
    }
    rc = hfdcp__agree(f->comm, rc);
cleanup:
    hfdcp__mpiio_free_type(&ftype);
    hfdcp__mpiio_free_type(&mtype);
    return rc;
}

/* A read past the end of the file is an error, caught before the read:
 * the status of a collective read does not reliably count a short read
 * (OMPIO reports the bytes asked for). */
static int check_size(hfdcp__mfile *f, npiece *const *sorted, size_t m)
{
    MPI_Offset size = 0;
    uint64_t end = 0;
    int mpi_rc = MPI_File_get_size(f->fh, &size);

    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__mpiio_file_error(mpi_rc, "MPI_File_get_size", f->path);
    for (size_t i = 0; i < m; i++)
        if (sorted[i]->fend > end)
            end = sorted[i]->fend;
    if (end > (uint64_t)size)
        return hfdcp__error(HFDCP_ERR_IO,
                            "short read: '%s' has %lld bytes, a read needs "
                            "bytes up to %" PRIu64 " (truncated file?)",
                            f->path, (long long)size, end);
    return HFDCP_OK;
}

/* Local: the sorted parts bucketed by round into pt->byround, keeping
 * their order: round r's are byround[start[r] .. start[r + 1]). */
static void bucket(mpiio_parts *pt, int nrounds, size_t *start)
{
    npiece **sorted = pt->sorted;

    for (size_t i = 0; i < pt->m; i++)
        start[sorted[i]->round + 1]++;
    for (int r = 0; r < nrounds; r++)
        start[r + 1] += start[r];
    {
        size_t *fill = start; /* reused as write cursors, then restored */
        for (size_t i = 0; i < pt->m; i++)
            pt->byround[fill[sorted[i]->round]++] = sorted[i];
        for (int r = nrounds; r > 0; r--)
            fill[r] = fill[r - 1];
        fill[0] = 0;
    }
}

/* Collective: moves the parts *pt through the MPI-IO component, one call
 * per round (independent writes when `indep`).  Agreed status. */
static int component_rounds(hfdcp__mfile *f, bool write, mpiio_parts *pt,
                            bool indep)
{
    size_t *start = NULL;
    int rc, nrounds = 0, all_rounds = 0, mpi_rc;

    /* The component's rounds, only now that the transfer is not
     * aggregated; a failure is agreed after the rounds are. */
    rc = hfdcp__mpiio_assign_rounds(pt->sorted, pt->m, pt->lim, &nrounds);
    mpi_rc = MPI_Allreduce(&nrounds, &all_rounds, 1, MPI_INT, MPI_MAX,
                           f->comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "agreeing on the rounds of a transfer "
                              "on '%s'", f->path);
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        return rc;

    /* Bucket the sorted pieces by round, keeping their order. */
    if ((start = calloc((size_t)nrounds + 1, sizeof *start)) == NULL)
        rc = hfdcp__nomem("the rounds of a transfer");
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        goto out;
    bucket(pt, nrounds, start);

    f->last_rounds = all_rounds;
    f->last_independent = indep;
    for (int r = 0; r < all_rounds && rc == HFDCP_OK; r++) {
        size_t lo = r < nrounds ? start[r] : 0;
        size_t hi = r < nrounds ? start[r + 1] : 0;
        rc = do_round(f, write, indep, pt->byround + lo, hi - lo);
    }
out:
    free(start);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* The transfer                                                           */
/* ---------------------------------------------------------------------- */

/* Local: checks the call, then makes this rank's parts (*pt, see
 * hfdcp__mpiio_parts) and, on reads, checks them against the file's
 * size. */
static int prepare(hfdcp__mfile *f, bool write, const hfdcp__piece *pieces,
                   size_t n, mpiio_parts *pt)
{
    if (n > 0 && pieces == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "'%s': %zu pieces but a NULL array",
                            f->path, n);
    if (write && !f->write)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "'%s' was opened for reading, not writing",
                            f->path);
    HFDCP_TRY(hfdcp__mpiio_parts(pieces, n, f->path, pt));
    if (!write && pt->m > 0)
        HFDCP_TRY(check_size(f, pt->sorted, pt->m));
    return HFDCP_OK;
}

/* Collective: carries out plan *p on the parts *pt.  Agreed status. */
static int carry_out(hfdcp__mfile *f, bool write, mpiio_parts *pt,
                     mpiio_plan *p)
{
    switch (p->how) {
    case MPIIO_SIEVE:
        return hfdcp__mpiio_sieve_all(f, pt->sorted, pt->m, p->buffer);
    case MPIIO_AGGREGATE:
        return hfdcp__mpiio_agg_transfer(f, write, pt->sorted, pt->m, p);
    case MPIIO_ROUNDS:
    default:
        return component_rounds(f, write, pt, p->independent);
    }
}

void hfdcp__piece_bytes(hfdcp__piece *p, uint64_t off, void *mem,
                        const int64_t *len)
{
    static const int64_t zero[1];

    p->file_offset = off;
    p->mem = mem;
    p->ndim = 1;
    p->bits = 8;
    p->fshape = p->mshape = p->count = len;
    p->fstart = p->mstart = zero;
}

int hfdcp__mfile_transfer(hfdcp__mfile *f, bool write,
                          const hfdcp__piece *pieces, size_t n)
{
    mpiio_parts pt;
    mpiio_plan p;
    int rc;

    memset(&pt, 0, sizeof pt);
    if (f == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "transfer on a NULL file");
    f->last_rounds = 0;
    f->last_independent = false;
    f->last_sieved = false;
    f->last_shared = false;
    rc = prepare(f, write, pieces, n, &pt);
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        goto out;
    rc = plan(f, write, pt.sorted, pt.m, &p); /* agreed */
    if (rc == HFDCP_OK)
        rc = carry_out(f, write, &pt, &p); /* agreed */
out:
    hfdcp__mpiio_parts_free(&pt);
    return rc;
}

int hfdcp__mfile_last_rounds(const hfdcp__mfile *f)
{
    return f->last_rounds;
}

bool hfdcp__mfile_last_independent(const hfdcp__mfile *f)
{
    return f->last_independent;
}

bool hfdcp__mfile_last_sieved(const hfdcp__mfile *f)
{
    return f->last_sieved;
}

bool hfdcp__mfile_last_shared(const hfdcp__mfile *f)
{
    return f->last_shared;
}
