/*
 * bench.h - shared by the files of `hfdcp bench` (src/tool/bench*.c): the
 * generated model, the measurements, and the peers.
 *
 * bench.c        options, the model, the repetition loop, table and CSV
 * bench_peers.c  plain write()/read(), hfdcp direct save and loads,
 *                sharded save + consolidation, the naive gather to rank 0
 * bench_async.c  hfdcp's asynchronous commit, as a trainer sees it
 * bench_hdf5.c   parallel HDF5 (only when built with it)
 */
#ifndef HFDCP_BENCH_H
#define HFDCP_BENCH_H

#include "tool.h"

/* How a tensor is spread over the ranks. */
typedef tool_split bench_split;

/* One tensor of the model, and what this rank holds of it. */
typedef struct {
    char name[96];
    int ndim;           /* 1 or 2 */
    int64_t shape[2];
    bench_split split;  /* how it is saved */
    int64_t off[2], size[2]; /* this rank's chunk */
    uint64_t bytes;     /* this rank's chunk bytes */
    unsigned char *data; /* the chunk (the user's buffer) */
    /* What this rank writes in the peers that write every byte once (plain,
     * HDF5): its chunk, or for a replicated tensor a block of rows of it.
     * A contiguous part of `data`. */
    int64_t woff[2], wsize[2];
    uint64_t wbegin, wbytes; /* byte range in `data` */
} bench_tensor;

typedef struct {
    bench_tensor *t;
    size_t n, cap;
    hfdcp_dtype dtype;
    int esize;           /* bytes per element */
    uint64_t total;      /* bytes of the whole model */
    uint64_t held;       /* bytes this rank holds */
    uint64_t wtotal;     /* bytes this rank writes in plain/HDF5 peers */
    unsigned char *arena; /* load buffer, >= every load of this rank */
    uint64_t arena_bytes;
} bench_model;

/* Everything one measurement needs. */
typedef struct {
    MPI_Comm comm;
    int rank, nranks;
    bench_model *m;
    const char *dir;      /* this repetition's scratch directory */
    int verify;           /* check the bytes (quick mode) */
    int rep;
    const char *fault;    /* --inject-fault: peer whose output to spoil */
    int threads;          /* hfdcp thread_count */
    uint64_t shard_bytes; /* hfdcp max_shard_bytes */
    MPI_Info info;        /* hints passed to every peer (MPI_INFO_NULL) */
    MPI_Info alt_info;    /* --alt-hint: --hint's and these, for hfdcp_alt */
    double step_seconds;  /* --step-ms: hfdcp-async's simulated training step */
    int step_idle;        /* --step-idle: the step sleeps instead */
    int no_checksums;     /* hfdcp saves with no_checksums (hfdcp-nocrc) */
    uint64_t snapshot_bound; /* --snapshot-max-bytes: hfdcp-async's bounded
                                run; BENCH_BOUND_QUARTER: a quarter of each
                                rank's share; 0: no bounded run */
} bench_ctx;

#define BENCH_BOUND_QUARTER UINT64_MAX

/* A peer's outcome: seconds on the slowest rank, bytes moved (the model's
 * unique bytes), extra memory per rank (max over ranks, and rank 0's),
 * measured as VmHWM after minus VmRSS before, with the high-water mark
 * reset before the step (/proc/self/clear_refs "5"), plus the buffer hfdcp
 * kept from an earlier step when the step took it (hfdcp_release_buffers):
 * resident before the step, it is the step's memory all the same. */
typedef struct {
    double seconds;
    uint64_t bytes;
    int64_t mem_max, mem_rank0;
} bench_result;

/* Called by a peer around each timed step. */
typedef struct {
    double t0;
    int64_t rss0;
    uint64_t kept0, taken0; /* hfdcp's kept buffer: bytes, times taken */
    uint64_t shm0, shm_taken0; /* its kept shared windows: the same */
} bench_timer;
void bench_start(const bench_ctx *c, bench_timer *t);
void bench_stop(const bench_ctx *c, const bench_timer *t, uint64_t bytes,
                bench_result *out);

/* Records a measurement `what` (e.g. "hfdcp_save"). */
void bench_record(const bench_ctx *c, const char *what, const bench_result *r);

/* Reports a verification failure (rank 0 prints; every rank calls). */
void bench_mismatch(const bench_ctx *c, const char *what, uint64_t bad);
/* Ends the check `what`, collectively: `bad` summed over the ranks;
 * "verified `what`" (TOOL_EXIT_OK) when 0, else bench_mismatch() and
 * TOOL_EXIT_INVALID. */
int bench_verdict(const bench_ctx *c, const char *what, uint64_t bad);

/* True when `what` is in the comma list of --inject-fault. */
int bench_fault(const bench_ctx *c, const char *what);

/* Helpers. */
void bench_box(const bench_tensor *t, bench_split split, int rank, int nranks,
               int64_t *off, int64_t *size);
/* The box rank `rank` of `nranks` loads in a load of kind `mode`:
 * BENCH_SAVED its chunk; BENCH_RESHARD columns for a tensor saved by rows,
 * else rows in reversed rank order; BENCH_FEWER rows split over the first
 * bench_fewer(nranks) ranks (other ranks load nothing). */
enum { BENCH_SAVED, BENCH_RESHARD, BENCH_FEWER };
void bench_load_box(const bench_tensor *t, int mode, int rank, int nranks, int64_t *off,
                    int64_t *size);
/* The rank count of the BENCH_FEWER load: half the ranks, at least 1. */
int bench_fewer(int nranks);
uint64_t bench_box_bytes(const bench_model *m, const bench_tensor *t,
                         const int64_t *size);
/* Fills (check = 0) or checks (returns the elements that differ) a box of
 * tensor number `id` against the generator. */
uint64_t bench_fill(const bench_model *m, size_t id, const int64_t *off,
                    const int64_t *size, unsigned char *buf, int check);
/* Evicts every file under `dir` from the page cache: fsync, then
 * posix_fadvise(POSIX_FADV_DONTNEED), by every rank; ends with a barrier. */
void bench_evict(const bench_ctx *c, const char *dir);
/* Before a timed write: syncfs() of the scratch file system by rank 0, so
 * that no earlier write or removal is flushed inside the timing. */
void bench_settle(const bench_ctx *c);
/* hfdcp_writer_open of `dir` with `so`, then every chunk of this rank's
 * model added (an add's error is reported by the commit, on every rank).
 * The status of the open. */
int bench_writer_open(const bench_ctx *c, const char *dir,
                      const hfdcp_save_options *so, hfdcp_writer **w);
/* With verification on: reads the checkpoint at `dir` back in the saved
 * boxes and compares it with the chunks (check `tag`_files), and with
 * `format` checks every format rule (`tag`_format).  TOOL_EXIT_OK at once
 * without verification. */
int bench_check_saved(const bench_ctx *c, const char *dir, const char *tag, int format);
/* This rank's chunks as the planner sees them (calloc'd; NULL when out of
 * memory). */
hfdcp__wchunk *bench_chunks(const bench_model *m);
/* Removes `path` and everything under it (rank 0), then a barrier. */
void bench_rmtree(const bench_ctx *c, const char *path);
/* Makes the directory `path` (rank 0), then a barrier. */
int bench_mkdir(const bench_ctx *c, const char *path);
/* The sum over ranks of `v`. */
uint64_t bench_sum(const bench_ctx *c, uint64_t v);
/* "what" x in the table is unavailable, with the reason (rank 0 prints). */
void bench_unavailable(const bench_ctx *c, const char *what, const char *why);

/* The peers: each returns TOOL_EXIT_OK, TOOL_EXIT_INVALID (a byte
 * differed), or TOOL_EXIT_ERROR (a call failed: printed), the same on
 * every rank; an unavailable peer prints why, returns TOOL_EXIT_OK and sets
 * *available to 0. */
int bench_plain(const bench_ctx *c, int shared);
int bench_hfdcp(const bench_ctx *c, int with_loads);
int bench_plan(const bench_ctx *c);
/* thread_count K for the direct and the sharded save, and a casting
 * consolidation at num_threads 1 and K (the other peers use one thread). */
int bench_threads(const bench_ctx *c, int threads);

/* hfdcp's direct save and loads again, with the hints of alt_info:
 * measurements hfdcp_alt_save, hfdcp_alt_load_cold, ... (--alt-hint). */
int bench_hfdcp_alt(const bench_ctx *c);

/* The direct save again with no_checksums, as hfdcp_nocrc_save: the cost
 * of the CRC-32C, side by side. */
int bench_hfdcp_nocrc(const bench_ctx *c);
int bench_sharded(const bench_ctx *c, int *available);
/* The plain copy of the shard-* files of `shards` into the one file
 * `copy` (bench_copy.c): each rank its turn of the files, read() and
 * pwrite() at their offsets in the concatenation, fsync; timed into *r
 * (the model's bytes), `copy` removed before and after.  0, or -1 (the
 * same on every rank) when a call failed. */
int bench_shard_copy(const bench_ctx *c, const char *shards, const char *copy,
                     bench_result *r);
int bench_naive(const bench_ctx *c);
/* hfdcp_writer_commit_async + hfdcp_writer_wait: waited for at once,
 * after a simulated training step, and with a bounded snapshot; and the
 * memory copy the snapshot costs at the least (bench_async.c). */
int bench_async(const bench_ctx *c);
int bench_hdf5(const bench_ctx *c, int *available);
/* "parallel HDF5 peer: built (HDF5 x.y.z)" or "... not built". */
const char *bench_hdf5_status(void);

#endif
