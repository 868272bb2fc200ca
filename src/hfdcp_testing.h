/*
 * hfdcp_testing.h - the library's test hooks: switches that make rare code
 * run on small data or inject a fault, and queries of what the last
 * transfer did.  Not part of the internal API: only the files that define
 * a hook and the tests (mpi_tests/) include this header.
 *
 * Every switch is a plain global read by the library at the start of a
 * collective call.  Set it only between collective calls, from one thread,
 * to the same value on every rank unless its comment says otherwise, and
 * set it back afterwards.
 */
#ifndef HFDCP_TESTING_H
#define HFDCP_TESTING_H

#include "hfdcp_internal.h"

/* ------------------------------------------------------------------------
 * catalog.c
 * ---------------------------------------------------------------------- */

/* Test hook: the largest count, in units, given to the MPI_Allgatherv that
 * shares the parsed headers (default INT_MAX, the limit of an int count).
 * Above it the headers travel in units of 2^k bytes.  Tests lower it so
 * that this code runs on small checkpoints.  Set it only between
 * collective calls, from one thread, to the same value on every rank. */
extern uint64_t hfdcp__catalog_gather_max;

/* ------------------------------------------------------------------------
 * mpiio*.c
 * ---------------------------------------------------------------------- */

/* Test hook: the largest count given to one MPI datatype constructor
 * (bytes of a contiguous run, elements of a vector), and the block size a
 * larger count is split into (a vector of blocks plus a remainder).
 * Default 1 GiB; tests lower it (at least 2) so that the large-count code
 * runs on small data.  Set it only between transfers, from one thread. */
extern uint64_t hfdcp__mpiio_block;

/* Test hook: the most bytes one rank moves in one collective round; larger
 * transfers are split (pieces along their outermost repeat dimension, long
 * runs into shorter runs) across more rounds.  Default 1 GiB: ROMIO 3.2.1
 * (Open MPI 4.1's romio321) corrupts a collective write above 2 GiB per
 * rank that mixes a small piece with a large one.  Tests lower it (at
 * least 1).  Set it only between transfers, from one thread. */
extern uint64_t hfdcp__mpiio_round_max;

/* Test hook: whether transfers are aggregated by hfdcp (see "Aggregation"
 * in mpiio_agg.c) when the hint hfdcp_aggregate is not given: 0 auto (the
 * default), 1 always, 2 never.  Set it only between transfers, from one
 * thread, to the same value on every rank. */
extern int hfdcp__mpiio_aggregate_default;

/* Test hook: the rank (of the transfer's communicator) that fails to map
 * the shared windows of an aggregated transfer, as if it could not (see
 * "Aggregation" in mpiio_agg.c); -1, the default, for none.  Set it only
 * between transfers, from one thread, to the same value on every rank. */
extern int hfdcp__mpiio_shared_fault;

/* Test counter (mpiio_sieve.c): the transfers this process has read by
 * sieving ("Sieving reads"), for tests on several nodes, which cannot see
 * the files' state.  Only incremented. */
extern _Atomic uint64_t hfdcp__mpiio_sieved;

/* Local: the value of hint `key` as the open file reports it
 * (MPI_File_get_info); *found tells whether it is set.  The value is
 * truncated to `size` bytes with its NUL.  For tests and diagnostics. */
int hfdcp__mfile_get_hint(hfdcp__mfile *f, const char *key, char *value,
                          size_t size, bool *found);

/* Local: the number of collective rounds the last transfer on `f` made
 * (the same on every rank), for tests. */
int hfdcp__mfile_last_rounds(const hfdcp__mfile *f);

/* Local: false when reads on `f` use independent MPI_File_read calls to
 * avoid a known MPI-IO bug ("A known bug" in mpiio_open.c), for tests and
 * diagnostics. */
bool hfdcp__mfile_collective_reads(const hfdcp__mfile *f);

/* Whether the last transfer on `f` was written with independent calls
 * (long runs: the hint hfdcp_long_runs, "Long runs" in mpiio_open.c). */
bool hfdcp__mfile_last_independent(const hfdcp__mfile *f);

/* Whether the last transfer on `f` was read by sieving (every rank reading
 * the spans of its own runs; the hint hfdcp_sieve_reads, "Sieving reads"
 * in mpiio_sieve.c).  Its rounds are then 0. */
bool hfdcp__mfile_last_sieved(const hfdcp__mfile *f);

/* Whether the last transfer on `f` was aggregated through node-shared
 * windows rather than MPI_Alltoallw ("Aggregation" in mpiio_agg.c; the hint
 * hfdcp_exchange). */
bool hfdcp__mfile_last_shared(const hfdcp__mfile *f);

/* ------------------------------------------------------------------------
 * writer.c
 * ---------------------------------------------------------------------- */

/* Test hook (writer.c): when >= 0, on the ranks where it is set, the
 * helper-thread job for this rank's file number `hfdcp__writer_fault_file`
 * fails as if fsync had returned EIO: the flush of file f of the plan
 * (direct save, thread_count > 1) or the write of the rank's f-th shard
 * file (sharded save).  Default -1.  Set it only between commits, from
 * one thread. */
extern int hfdcp__writer_fault_file;

/* Test hooks (writer_async.c): when hfdcp__async_fault_file >= 0 on a
 * rank, that rank's background work of hfdcp_writer_commit_async fails on
 * the file it handles in that position (0: the first), as if a system
 * call had returned EIO: hfdcp__async_fault_step 1 its write, 2 its
 * fsync.  Defaults -1 and 0.  Set them only between commits, from one
 * thread. */
extern int hfdcp__async_fault_file;
extern int hfdcp__async_fault_step;

/* ------------------------------------------------------------------------
 * publish.c
 * ---------------------------------------------------------------------- */

/* Test hook (publish.c, hfdcp__publish): 1 fails the rename of the plan's
 * last file, 2 the directory's sync after the index is in place, each as
 * if the system call had returned EIO.  Default 0.  Set it only between
 * commits, on rank 0, from one thread. */
extern int hfdcp__publish_fault;

#endif /* HFDCP_TESTING_H */
