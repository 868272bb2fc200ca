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
                                    commit found it (test hook) */
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

/* Collective: the direct save's writing.  Every file of the plan in turn,
 * under its temporary name paths->tmp[f], each by every rank (ranks with
 * nothing to write in a file still take part in its collective calls),
 * opened with the hints `info`; every file is durable when this returns
 * HFDCP_OK.  Agreed status. */
int hfdcp__write_files(MPI_Comm comm, MPI_Info info, const hfdcp__wjob *job,
                       const hfdcp__paths *paths);

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

/* Writes and syncs this rank's shard files with POSIX calls, up to
 * job->thread_count at once.  Local (the caller agrees). */
int hfdcp__shards_write(const hfdcp__wjob *job, const hfdcp__shards *s);

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

#endif /* HFDCP_WRITER_INTERNAL_H */
