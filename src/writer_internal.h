/*
 * writer_internal.h - private to the writer: include it ONLY from
 * src/writer*.c.  The rest of the library and the tests see the writer
 * through include/hfdcp.h and the "writer" section of hfdcp_internal.h,
 * never through this file.  It holds the writer's state and what its
 * files share among themselves.
 *
 * The writer's files (each uses only the ones listed after it; none calls
 * back up):
 *   writer.c         the public API: options, open, add, free, and the
 *                    commit as a sequence of agreed steps
 *   writer_async.c   the asynchronous commit: a snapshot of the chunks,
 *                    a background thread that writes them, the wait
 *   writer_commit.c  the commit's steps, shared by both commits
 *   writer_shards.c  the sharded save: this rank's shard files written
 *                    with POSIX calls, their publication, and the
 *                    consolidation that may follow
 *   writer_direct.c  the direct save: every file of the plan written with
 *                    collective MPI-IO transfers, helper threads that
 *                    fsync; and what the other two share (the chunks
 *                    grouped by file, collapse, the outcome of a job run
 *                    by a helper thread)
 */
#ifndef HFDCP_WRITER_INTERNAL_H
#define HFDCP_WRITER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hfdcp_internal.h"

struct hfdcp_writer_s {
    MPI_Comm comm;
    int rank, size;
    char *path;
    hfdcp_file_map *file_map; /* the writer's copy, or NULL */
    uint64_t max_shard_bytes;
    uint64_t align; /* data buffers' alignment (hint hfdcp_data_alignment) */
    MPI_Info info;            /* the writer's copy, or MPI_INFO_NULL */
    hfdcp__wchunk *chunks;    /* names and shapes owned */
    size_t n, cap;
    int thread_count;         /* files in flight per rank, >= 1 */
    bool sharded;             /* save_sharded */
    char *consolidated;       /* consolidated_output_path, or NULL */
    int consolidation_threads; /* num_threads_consolidation */
    hfdcp__strmap *seen;      /* "<box>;<name>" of this rank's chunks */
    int first_error;          /* first failed add, reported by commit */
    char *first_message;
    bool committed;
    uint64_t snapshot_max_bytes; /* the bound of commit_async; 0: none */
    bool checksums;              /* write hfdcp_crc32c (!no_checksums) */
    struct hfdcp__async *async;  /* the asynchronous commit not yet waited
                                    for, or NULL */
    bool async_waited;           /* one was waited for */
    uint64_t snapshot_bytes;     /* what the last commit_async copied */
};

/* ------------------------------------------------------------------------
 * writer_direct.c: shared by the three files
 * ---------------------------------------------------------------------- */

/* HFDCP_MAX_NDIM zeros: the start of a box that starts at the origin. */
extern const int64_t hfdcp__zeros[HFDCP_MAX_NDIM];

/* Merges trailing dimensions that the box (off, size) of an array of
 * `shape` covers whole: the same bytes described with fewer, longer
 * dimensions (a whole tensor, or a block of whole rows, becomes one run),
 * into cshape, coff, csize (ndim each).  Returns the new ndim (>= 1 if
 * ndim >= 1). */
int hfdcp__collapse(int ndim, const int64_t *shape, const int64_t *off,
                    const int64_t *size, int64_t *cshape, int64_t *coff,
                    int64_t *csize);

/* This rank's parts of the tensors' CRC-32C for the plan's headers: XORs
 * into parts[t] (plan->n_tensors values, zeroed by the caller) those of
 * the chunks it writes (plan->assign[i].write), read from chunks[i].data;
 * with `mask`, only the chunks i with mask[i] == want.  The XOR of every
 * rank's parts is what hfdcp__wplan_put_crcs takes.  Local, reads only:
 * a helper thread may run it. */
void hfdcp__crc_parts(const hfdcp__wplan *plan, const hfdcp__wchunk *chunks,
                      const bool *mask, bool want, uint32_t *parts);

/* This rank's chunks grouped by plan file: the chunks of file f are
 * by_file[first[f] .. first[f+1]), in registration order. */
typedef struct {
    size_t *first;   /* n_files + 1 */
    size_t *by_file; /* chunk indices */
} hfdcp__wbuckets;

/* The buckets of `n` chunks planned by `plan`.  On failure the caller
 * still frees both arrays.  Local. */
int hfdcp__wbuckets_make(const hfdcp__wplan *plan, size_t n,
                         hfdcp__wbuckets *b);

/* The writing of one commit: everything the write steps
 * (hfdcp__write_files, hfdcp__shards_make, hfdcp__shards_write) read,
 * none of it owned but `by_file`.  They read nothing of the writer, so
 * that they can be given any copy of the chunks. */
typedef struct {
    const hfdcp__wplan *plan;
    const hfdcp__wchunk *chunks; /* as planned: plan->assign[i] is about
                                    chunks[i]; their data is written */
    hfdcp__wbuckets by_file;     /* this rank's chunks grouped by file */
    int rank;
    int thread_count;            /* files in flight on this rank, >= 1 */
    int fault_file;              /* hfdcp__writer_fault_file as the
                                    commit found it (test hook), -1 */
    int fault_step;              /* where fault_file fails: 1 its write,
                                    2 its sync */
    bool no_sync;                /* sharded: leave the files unsynced */
    bool checksums;              /* sharded: the shard files carry their
                                    chunks' CRC-32C (!no_checksums) */
} hfdcp__wjob;

/* The outcome of one job run by a helper thread.  hfdcp_last_error() is
 * thread-local: the message is copied out of the thread that failed. */
typedef struct {
    int status;
    char *message; /* malloc'd, or NULL */
} hfdcp__outcome;

/* Records `status` and, on failure, the calling thread's message. */
void hfdcp__outcome_set(hfdcp__outcome *o, int status);

/* Re-raises the first failed outcome of o[0..n) (in job order) on the
 * calling thread; frees the messages. */
int hfdcp__outcome_collect(hfdcp__outcome *o, size_t n);

/* Writes `len` bytes at `off` of the open file `fd`, in calls of at
 * most 1 GiB (Linux moves at most about 2 GiB per call); the message
 * names `path` and `rank`.  Local. */
int hfdcp__pwrite_all(int fd, const void *data, uint64_t len, uint64_t off,
                      const char *path, int rank);

/* open + fsync + close of `path`: the page cache's dirty pages of the
 * file reach the disk, whichever process wrote them.  `fault`: fail as
 * if fsync had returned EIO (test hook).  Local. */
int hfdcp__flush_file(const char *path, int rank, bool fault);

/* Collective: the direct save's writing.  Every file of the plan in turn,
 * under its temporary name paths->tmp[f], each by every rank (ranks with
 * nothing to write in a file still take part in its collective calls),
 * opened with the hints `info`; with `durable`, every file is synced when
 * this returns HFDCP_OK (else the caller syncs them).  Agreed status. */
int hfdcp__write_files(MPI_Comm comm, MPI_Info info, const hfdcp__wjob *job,
                       const hfdcp__paths *paths, bool durable);

/* ------------------------------------------------------------------------
 * writer_shards.c: the sharded save, used by writer.c
 * ---------------------------------------------------------------------- */

/* This rank's shard files (the shard file itself is private to
 * writer_shards.c). */
typedef struct {
    struct hfdcp__shard *files;
    size_t n;
    size_t renamed; /* files renamed into place by hfdcp__shards_publish */
} hfdcp__shards;

/* This rank's shard files in the directory `dir`, named after the plan's
 * files, with their headers (data aligned to `align`) and temporary names
 * carrying `tag`: one per plan file in which it writes a chunk (on rank 0,
 * one empty file when the checkpoint has no tensor at all, so that the
 * directory still reads as an empty checkpoint).  A chunk that a shard
 * file cannot hold is refused here, before anything is written.  On
 * failure the caller still frees *s.  Local. */
int hfdcp__shards_make(const hfdcp__wjob *job, const char *dir,
                       uint64_t align, const char *tag, hfdcp__shards *s);

/* Writes this rank's shard files with POSIX calls, up to
 * job->thread_count at once, and syncs them unless job->no_sync.  Local
 * (the caller agrees).  Makes no MPI call: may run on a helper thread. */
int hfdcp__shards_write(const hfdcp__wjob *job, const hfdcp__shards *s);

/* Syncs the shard files of `s` (written with job->no_sync).  Local; no
 * MPI call. */
int hfdcp__shards_sync(const hfdcp__wjob *job, const hfdcp__shards *s);

/* The shard files [a, b) of `s` as a set of their own (not owned: never
 * give it to hfdcp__shards_free or _remove). */
void hfdcp__shards_range(const hfdcp__shards *s, size_t a, size_t b,
                         hfdcp__shards *view);

/* The data bytes (headers excluded) of shard file i of `s`. */
uint64_t hfdcp__shards_data_bytes(const hfdcp__shards *s, size_t i);

/* Copies the data of shard file i into `to` (hfdcp__shards_data_bytes
 * bytes) and has the file written from there from now on.  Local. */
void hfdcp__shards_copy_data(hfdcp__shards *s, size_t i, unsigned char *to);

/* Collective, once every rank's shard files are durable under their
 * temporary names: rank 0 removes the old index and stale files of
 * w->path (earlier shards, model files, leftovers), then every rank
 * renames its own files into place and syncs the directory.  Agreed
 * status. */
int hfdcp__shards_publish(const hfdcp_writer *w, hfdcp__shards *s,
                          const char *tag);

/* Local, after a failed commit: removes this rank's shard files, under
 * their final names those that hfdcp__shards_publish renamed. */
void hfdcp__shards_remove(const hfdcp__shards *s);

void hfdcp__shards_free(hfdcp__shards *s);

/* Collective: the published shards of w->path into w->consolidated, laid
 * out as a direct save of `plan` would be.  Agreed status. */
int hfdcp__consolidate_shards(const hfdcp_writer *w,
                              const hfdcp__wplan *plan);

/* ------------------------------------------------------------------------
 * writer_commit.c: the commit's steps, each ending with an agreement,
 * used by writer.c and writer_async.c
 * ---------------------------------------------------------------------- */

/* One commit's state, freed by hfdcp__commit_free whatever happened. */
typedef struct {
    hfdcp__wplan plan;
    hfdcp__paths paths;
    hfdcp__wjob job;      /* the writing of `plan` from the writer's chunks */
    hfdcp__shards shards; /* sharded save: this rank's shard files */
} hfdcp__commit;

/* Local, before the commit's first agreement (the caller agrees): the
 * writer may commit (once, after adds that all succeeded) and, on rank 0,
 * consolidation would not remove the shards.  `who` begins the message.
 * The writer counts as committed from here on. */
int hfdcp__commit_check(hfdcp_writer *w, const char *who);

/* The plan (plan.c); the commit's tag, the files' temporary names, the
 * job and, sharded, this rank's shard files and headers (a chunk a shard
 * file cannot hold is refused here, before anything is written); then
 * the directory.  Nothing is written.  Agreed status. */
int hfdcp__commit_prepare(const hfdcp_writer *w, hfdcp__commit *c);

/* Every file written and durable under its temporary name.  Agreed
 * status. */
int hfdcp__commit_write(const hfdcp_writer *w, hfdcp__commit *c);

/* Whether the commit's plan has CRC-32C placeholders to fill: a direct
 * save without no_checksums. */
static inline bool hfdcp__commit_checksums(const hfdcp_writer *w)
{
    return w->checksums && !w->sharded;
}

/* Direct save with checksums, once every file is written and synced:
 * XOR-reduces every rank's CRC parts (`parts`, plan.n_tensors values,
 * from hfdcp__crc_parts) to rank 0, which writes the values into the
 * headers of the temporary files and syncs them again.  Agreed status. */
int hfdcp__commit_put_crcs(const hfdcp_writer *w, hfdcp__commit *c,
                           const uint32_t *parts);

/* Agrees on `rc`, the outcome of the writing; then the publication (the
 * files renamed into place, and the index, direct save) and, after a
 * sharded save, the consolidation into consolidated_output_path.  A
 * failure before the publication is complete removes this commit's files
 * (hfdcp__commit_remove).  Agreed status. */
int hfdcp__commit_finish(const hfdcp_writer *w, hfdcp__commit *c, int rc);

/* Collective: removes this commit's files after a failure. */
void hfdcp__commit_remove(const hfdcp_writer *w, const hfdcp__commit *c);

void hfdcp__commit_free(hfdcp__commit *c);

#endif /* HFDCP_WRITER_INTERNAL_H */
