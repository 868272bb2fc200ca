/*
 * mpiio_internal.h - private to the MPI-IO layer: include it ONLY from
 * src/mpiio*.c.  The rest of the library and the tests see the layer
 * through the "mpiio" section of hfdcp_internal.h, never through this
 * file.  It holds what the layer's files share among themselves: the open
 * file's state, the normalized piece, the plan of a transfer, and the
 * functions one file offers the others.
 *
 * The layer's files, in the order of the data flow (each uses only the
 * ones listed before it: buffer, open and types none of the others, agg
 * and sieve those three, mpiio.c all but buffer; none calls back up):
 *   mpiio_buffer.c  the buffer and the shared segment kept between calls
 *   mpiio_open.c    hints, detection of the MPI-IO implementation,
 *                   open/close/sync/set_size, byte-range I/O, file errors
 *   mpiio_types.c   pieces -> normalized parts -> MPI datatypes, rounds
 *   mpiio_agg.c     hfdcp's own two-phase aggregation (exchange, shared
 *                   windows)
 *   mpiio_sieve.c   sieving reads
 *   mpiio.c         the transfer: its plan (the ONE place the strategy is
 *                   chosen) and the rounds of the MPI-IO component
 */
#ifndef HFDCP_MPIIO_INTERNAL_H
#define HFDCP_MPIIO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hfdcp_testing.h"

/* ---------------------------------------------------------------------- */
/* The kept buffer and shared segment (mpiio_buffer.c)                    */
/* ---------------------------------------------------------------------- */

/* A node-shared segment: mapped here and in the other ranks of the group
 * that made it, `id` its maker's (rank 0's pid and serial number),
 * `nranks` the group's size and `rank` this rank's place in it. */
typedef struct {
    char *base;
    uint64_t size;
    uint64_t id[2];
    int nranks, rank;
} mpiio_shm;

/* Local: the id of the kept segment into `id`, unchanged when none is
 * kept. */
void hfdcp__mpiio_kept_shm_id(uint64_t id[2]);

/* Local: takes the kept segment into *out when it has `id`, `nranks` and
 * `rank` and at least `size` bytes (none is kept any more); else leaves
 * *out alone. */
void hfdcp__mpiio_kept_shm_take(const uint64_t id[2], int nranks, int rank,
                                uint64_t size, mpiio_shm *out);

/* Local: counts a transfer that took the kept segment. */
void hfdcp__mpiio_kept_shm_count(void);

/* Local: ends the use of the segment *s (base may be NULL): kept for the
 * next transfer when `keep` allows and it can be freed at MPI_Finalize,
 * in place of the one kept before, or unmapped. */
void hfdcp__mpiio_kept_shm_give(const mpiio_shm *s, bool keep);

/* ---------------------------------------------------------------------- */
/* The open file (mpiio_open.c)                                           */
/* ---------------------------------------------------------------------- */

/* hfdcp's own hints (see "Aggregation" in mpiio_agg.c and "Long runs" in
 * mpiio_open.c). */
enum { AGG_AUTO = 0, AGG_ON = 1, AGG_OFF = 2 };
enum { LONG_AUTO = 0, LONG_COLLECTIVE = 1, LONG_INDEPENDENT = 2 };

struct hfdcp__mfile {
    MPI_File fh;
    MPI_Comm comm; /* the caller's; must outlive the file */
    int rank;
    char *path;
    bool write;
    bool independent_reads; /* work around OMPIO's read bug (mpiio_open.c) */
    bool independent_long;  /* long-run writes are independent (ditto) */
    bool last_independent;  /* the last transfer was written so */
    int last_rounds;
    int aggregate;       /* AGG_AUTO, AGG_ON or AGG_OFF (hint) */
    uint64_t agg_buffer; /* bytes per aggregation window (hint) */
    int long_runs;       /* LONG_AUTO, LONG_COLLECTIVE or LONG_INDEPENDENT */
    int sieve;           /* AGG_AUTO, AGG_ON or AGG_OFF (hint) */
    bool local;          /* reading: this rank sees a local file system */
    bool last_sieved;    /* the last transfer was read by sieving */
    bool keep_buffer;    /* take and keep the kept buffer (hint) */
    bool shared_exchange; /* aggregate through node-shared memory (agreed) */
    bool last_shared;     /* the last transfer did */
};

/* An MPI error that is not about the file itself (datatypes, info). */
#define MPI_TRY(call, path)                                                  \
    do {                                                                     \
        int mpi_rc_ = (call);                                                \
        if (mpi_rc_ != MPI_SUCCESS)                                          \
            return hfdcp__mpi_error(mpi_rc_, "%s for '%s'", #call, (path));  \
    } while (0)

/* An MPI error on a file: the message names the call and the file and ends
 * with MPI_Error_string; errors of the I/O classes become HFDCP_ERR_IO. */
int hfdcp__mpiio_file_error(int mpi_rc, const char *call, const char *path);

/* Local: writes or reads `len` bytes (at most one window) at file offset
 * `off` from or into `buf`, with an independent MPI_File_write_at /
 * read_at; the file view must be bytes. */
int hfdcp__mpiio_range_io(hfdcp__mfile *f, bool write, uint64_t off,
                          char *buf, uint64_t len);

/* Collective: sets the byte view the explicit-offset I/O of the
 * aggregation and the sieve needs.  Agreed status. */
int hfdcp__mpiio_byte_view(hfdcp__mfile *f);

/* ---------------------------------------------------------------------- */
/* Normalized pieces, datatypes, rounds (mpiio_types.c)                   */
/* ---------------------------------------------------------------------- */

/* A piece reduced to a run of `run` contiguous bytes repeated along k
 * outer dimensions (outermost first), with byte strides. */
typedef struct {
    uint64_t foff;     /* absolute file offset of the first byte */
    uint64_t fend;     /* one past the last file byte */
    char *maddr;       /* first byte in memory */
    uint64_t run;      /* bytes of the innermost contiguous run */
    uint64_t bytes;    /* total bytes */
    int k;             /* outer dimensions */
    uint64_t count0;   /* count of dimension 0 (count[0] is not used) */
    uint64_t *count;   /* k entries each, in a pool owned by the caller */
    uint64_t *fstride;
    uint64_t *mstride;
    int round;
} npiece;

/* The count of outer dimension j of q. */
static inline uint64_t dim_count(const npiece *q, int j)
{
    return j == 0 ? q->count0 : q->count[j];
}

#define AINT_MAX ((uint64_t)INT64_MAX)

static inline bool mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return hfdcp__mul_u64(a, b, out) && *out <= AINT_MAX;
}

static inline bool add_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return hfdcp__add_u64(a, b, out) && *out <= AINT_MAX;
}

/* A growing array of pieces. */
typedef struct {
    npiece *v;
    size_t n, cap;
} parts;

/* The parts of one transfer on this rank: its pieces normalized, then
 * split to fit a round (hfdcp__mpiio_parts). */
typedef struct {
    npiece *np;       /* the normalized pieces */
    uint64_t *pool;   /* their dimension arrays */
    parts ps;         /* the parts, sharing np's dimension arrays */
    npiece **sorted;  /* the m parts by first file byte */
    npiece **byround; /* room for m: the parts bucketed by round */
    size_t m;
    uint64_t lim;     /* the most bytes of one round on this rank */
} mpiio_parts;

/* Local: normalizes `pieces[0..n)` (checking each: messages name the
 * piece and `path`), splits each into parts of at most the round limit
 * (hfdcp__mpiio_round_max) and sorts the parts by their first file byte.
 * *out is set even on failure: free it with hfdcp__mpiio_parts_free. */
int hfdcp__mpiio_parts(const hfdcp__piece *pieces, size_t n,
                       const char *path, mpiio_parts *out);
void hfdcp__mpiio_parts_free(mpiio_parts *pt);

/* Frees a datatype built here (not MPI_BYTE); sets it to NULL. */
void hfdcp__mpiio_free_type(MPI_Datatype *t);

/* Local: the committed file type and memory type of the pieces
 * `round[0..n)` of one round; see mpiio_types.c. */
int hfdcp__mpiio_round_types(npiece *const *round, size_t n, uint64_t bytes,
                             const char *path, MPI_Datatype *ftype,
                             MPI_Datatype *mtype);

/* Local: the round of every part of `sorted[0..n)`; see mpiio_types.c. */
int hfdcp__mpiio_assign_rounds(npiece **sorted, size_t n, uint64_t lim,
                               int *nrounds);

/* A min-heap of open rounds by the end of their last piece (and, in an
 * aggregation window's coverage, of sources by their next run's offset:
 * end = that offset, bytes = the run's index, round = the source). */
typedef struct {
    uint64_t end;
    uint64_t bytes;
    int round;
} heap_item;

void hfdcp__mpiio_heap_down(heap_item *h, size_t n, size_t i);
void hfdcp__mpiio_heap_up(heap_item *h, size_t i);

/* What is done with each run of a part met in a window: its file offset,
 * length and first memory byte. */
typedef int (*run_fn)(void *ctx, uint64_t off, uint64_t len, char *mem);

/* Local: calls fn on each run of part q that meets the file range
 * [w0, w1), cut to it, in file order. */
int hfdcp__mpiio_part_runs(const npiece *q, uint64_t w0, uint64_t w1,
                           run_fn fn, void *ctx);

/* ---------------------------------------------------------------------- */
/* The plan of a transfer (chosen in mpiio.c, carried out by all)         */
/* ---------------------------------------------------------------------- */

/* How a transfer moves its parts, the same on every rank. */
typedef enum {
    MPIIO_ROUNDS,    /* the MPI-IO component's rounds (mpiio.c) */
    MPIIO_SIEVE,     /* sieving reads (mpiio_sieve.c) */
    MPIIO_AGGREGATE, /* hfdcp's two-phase aggregation (mpiio_agg.c) */
} mpiio_how;

typedef struct {
    mpiio_how how;
    int nranks;        /* of the file's communicator */
    uint64_t avg_run;  /* bytes per run: over every rank when there are
                          two or more, this rank's on one */
    bool independent;  /* MPIIO_ROUNDS writes: independent calls ("Long
                          runs", mpiio_open.c) */
    uint64_t buffer;   /* MPIIO_SIEVE: bytes of the buffer (the largest
                          hfdcp_aggregate_buffer_size of the ranks) */
    uint64_t lo, hi;   /* MPIIO_AGGREGATE: the file bytes [lo, hi) some
                          rank moves */
    uint64_t window;   /* MPIIO_AGGREGATE: bytes of each rank's window */
    mpiio_shm shm;     /* MPIIO_AGGREGATE: the node-shared windows, or
                          base NULL for MPI_Alltoallw; owned by the plan
                          until hfdcp__mpiio_agg_transfer takes it */
} mpiio_plan;

/* ---------------------------------------------------------------------- */
/* Aggregation (mpiio_agg.c) and sieving (mpiio_sieve.c)                  */
/* ---------------------------------------------------------------------- */

/* Local: the bytes of the aggregation buffer for runs of `avg_run` bytes
 * on average, given the hint's `buffer` bytes. */
uint64_t hfdcp__mpiio_agg_buffer(uint64_t avg_run, uint64_t buffer);

/* Collective: the node-shared windows of `nranks` ranks, `window` bytes
 * each, into *shm (base NULL when they cannot be had); see mpiio_agg.c.
 * Agreed status. */
int hfdcp__mpiio_agg_share(hfdcp__mfile *f, int nranks, uint64_t window,
                           mpiio_shm *shm);

/* Collective: moves every rank's parts `sorted[0..m)` by aggregation as
 * plan `p` (MPIIO_AGGREGATE) says; takes p->shm.  Agreed status. */
int hfdcp__mpiio_agg_transfer(hfdcp__mfile *f, bool write,
                              npiece *const *sorted, size_t m, mpiio_plan *p);

/* Local: whether this rank's sieving read of `sorted[0..m)` reads at
 * most SIEVE_SPAN_MAX times its `bytes` (see mpiio_sieve.c). */
bool hfdcp__mpiio_sieve_fits(npiece *const *sorted, size_t m,
                             uint64_t bytes);

/* Collective: reads `sorted[0..m)` by sieving through windows of
 * `buf_size` bytes.  Agreed status. */
int hfdcp__mpiio_sieve_all(hfdcp__mfile *f, npiece *const *sorted, size_t m,
                           uint64_t buf_size);

#endif /* HFDCP_MPIIO_INTERNAL_H */
