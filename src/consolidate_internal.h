/*
 * consolidate_internal.h - private to consolidation: include it ONLY from
 * src/consolidate*.c.  The rest of the library sees consolidation through
 * hfdcp_consolidate() in include/hfdcp.h.
 *
 * Consolidation's files (consolidate.c uses the two others, which use
 * neither each other nor it):
 *   consolidate.c      hfdcp_consolidate(): its steps put together, the
 *                      plan, the data rounds, the publication
 *   consolidate_args.c the arguments and directories, checked before
 *                      anything is read
 *   consolidate_crc.c  its CRC-32C: the shard chunks' values checked as
 *                      their bytes are read, the output tensors' values
 *                      computed as their bytes are written
 *   consolidate_times.c  its phase timers (HFDCP_CONSOLIDATE_TIMES)
 *   consolidate_ahead.c  its read-ahead of the next slice's shard bytes
 */
#ifndef HFDCP_CONSOLIDATE_INTERNAL_H
#define HFDCP_CONSOLIDATE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hfdcp_internal.h"

/* ------------------------------------------------------------------------
 * consolidate_args.c
 * ---------------------------------------------------------------------- */

/* buffer_bytes when 0, its smallest value, and the most num_threads. */
#define HFDCP_CONS_DEFAULT_BUFFER ((uint64_t)32 << 20)
#define HFDCP_CONS_MIN_BUFFER 64
#define HFDCP_CONS_MAX_THREADS 1024

/* Local: the directories given, the cast dtype, num_threads and
 * buffer_bytes.  HFDCP_ERR_ARG naming what is wrong. */
int hfdcp__cons_check_args(const char *in, const char *out,
                           const hfdcp_consolidate_options *o);

/* Collective: every rank's paths, options (the progress callback aside),
 * file map entries (in name order) and data alignment `align` against
 * rank 0's; HFDCP_ERR_MISMATCH naming what differs.  Agreed status. */
int hfdcp__cons_compare_args(MPI_Comm comm, int rank, const char *in,
                             const char *out, const hfdcp_file_map *map,
                             const hfdcp_consolidate_options *o,
                             uint64_t align);

/* Rank 0: input_dir must be a directory, and output_dir (when it exists)
 * another one: publishing removes shard files from the output
 * directory. */
int hfdcp__cons_check_dirs(const char *in, const char *out);

/* ------------------------------------------------------------------------
 * consolidate_crc.c
 * ---------------------------------------------------------------------- */

/* The checksums of one consolidation.  Every rank feeds the runs it reads
 * (parts of shard chunks) and writes (parts of output tensors) into run
 * accumulators (hfdcp__crc32c_runs); XOR reductions to rank 0 join them.
 * The runs of all ranks are disjoint because every output byte is in one
 * rank's slice and every tensor element in one chunk of the catalog.
 * Tensors and chunks are numbered as in the catalog. */
typedef struct {
    bool check;  /* some chunk read has a recorded CRC (the same on every
                    rank: it comes from the catalog) */
    bool write;  /* the output headers carry hfdcp_crc32c */
    /* The shard chunks, when check: */
    size_t n_chunks;
    size_t *first;            /* per tensor: its first chunk's number;
                                 n_tensors + 1 entries */
    bool *has;                /* per chunk: its file records its CRC */
    uint32_t *want;           /* per chunk: the recorded CRC */
    uint64_t *len;            /* per chunk: its bytes */
    hfdcp__crc32c_runs *read; /* per chunk: the runs this rank read */
    /* The output tensors, when write: */
    hfdcp__crc32c_runs *wrote; /* per tensor: the runs this rank wrote */
    uint64_t *crc_at;          /* per tensor: where its 8 hex digits are in
                                  its file's header */
    uint64_t *out_len;         /* per tensor: its output bytes */
    size_t *file_first;        /* per output file: by_file[file_first[f]
                                  .. file_first[f + 1]) are its tensors */
    size_t *by_file;
    /* The reductions' buffers, allocated beforehand so that no rank can
     * fail to take part: max(tensors, chunks) values each. */
    uint32_t *parts, *x;
} hfdcp__ccrc;

/* Local, the same on every rank: `c` for the shard catalog `cat`; with
 * `on` false (no_checksums) nothing is checked or written and every
 * function below does nothing.  A shard file whose hfdcp_crc32c is
 * malformed is HFDCP_ERR_FORMAT naming it; files without one are not
 * checked.  On failure the caller still frees c. */
int hfdcp__ccrc_init(hfdcp__ccrc *c, const hfdcp__catalog *cat, bool on);

/* Local, the same on every rank, with c->write: where each tensor's
 * value goes in the headers of `plan`, made with checksums for `cat`
 * (one pseudo-rank holding every tensor whole, so tensor i of the plan is
 * tensor i of `cat`), and which tensors each file holds, kept in c. */
int hfdcp__ccrc_headers(hfdcp__ccrc *c, const hfdcp__catalog *cat,
                        const hfdcp__wplan *plan);

/* Local: the box (off, size) of tensor number t of `cat`, just read in
 * its stored dtype into `buf` (row-major, contiguous), fed into the runs
 * of the chunks it meets. */
void hfdcp__ccrc_read(hfdcp__ccrc *c, const hfdcp__catalog *cat, size_t t,
                      const int64_t *off, const int64_t *size,
                      const unsigned char *buf);

/* Local: `len` bytes of output tensor t at byte `offset` in it, about to
 * be written. */
void hfdcp__ccrc_wrote(hfdcp__ccrc *c, size_t t, uint64_t offset,
                       const void *buf, size_t len);

/* Collective, once every rank has fed the bytes of output file f: one
 * XOR reduction of its tensors' parts to rank 0, which writes their
 * CRC-32C into `header` (its serialized header).  Agreed status. */
int hfdcp__ccrc_fill(hfdcp__ccrc *c, MPI_Comm comm, int rank, size_t f,
                     char *header);

/* Collective, once every chunk has been read: one XOR reduction of the
 * chunks' parts to rank 0, which compares each chunk's CRC-32C with the
 * recorded one.  A mismatch is HFDCP_ERR_FORMAT naming the tensor, the
 * chunk's box and its shard file, on every rank.  Agreed status. */
int hfdcp__ccrc_verify(hfdcp__ccrc *c, MPI_Comm comm, int rank,
                       const hfdcp__catalog *cat);

void hfdcp__ccrc_free(hfdcp__ccrc *c);

/* ------------------------------------------------------------------------
 * consolidate_times.c
 * ---------------------------------------------------------------------- */

/* The phases timed, in the order of hfdcp_consolidate()'s steps. */
enum {
    HFDCP__CT_ARGS, HFDCP__CT_CATALOG, HFDCP__CT_CHECKS, HFDCP__CT_PLAN,
    HFDCP__CT_PREPARE, HFDCP__CT_CREATE, HFDCP__CT_REQUESTS,
    HFDCP__CT_READS, HFDCP__CT_CRC_IN, HFDCP__CT_CONVERT, HFDCP__CT_CRC_OUT,
    HFDCP__CT_WRITES, HFDCP__CT_SYNCS, HFDCP__CT_VERIFY, HFDCP__CT_PUBLISH,
    HFDCP__CT_COUNT
};

/* One rank's seconds per phase. */
typedef struct {
    bool on;                       /* HFDCP_CONSOLIDATE_TIMES set */
    double start;                  /* MPI_Wtime() at init */
    double sec[HFDCP__CT_COUNT];
} hfdcp__ctimes;

/* Local: zeroed, started, `on` from the environment. */
void hfdcp__ctimes_init(hfdcp__ctimes *ct);

/* Local: adds the time since `since` (an MPI_Wtime()) to `phase`;
 * returns the time now, the start of the next phase. */
double hfdcp__ctimes_add(hfdcp__ctimes *ct, int phase, double since);

/* Local: when on, one line on stderr: this rank's total, its phases and
 * the rate of `bytes`. */
void hfdcp__ctimes_print(const hfdcp__ctimes *ct, int rank, uint64_t bytes);

/* ------------------------------------------------------------------------
 * consolidate_ahead.c
 * ---------------------------------------------------------------------- */

/* One rank's descriptors of the shard files, for advice only. */
typedef struct {
    int *fds;   /* per catalog file: -2 not opened yet, -1 failed */
    size_t n;
} hfdcp__ahead;

/* Local: no file opened yet.  HFDCP_ERR_NOMEM or HFDCP_OK. */
int hfdcp__ahead_open(hfdcp__ahead *a, size_t n_files);

/* Local: asks the kernel to read ahead the shard bytes of elements
 * [e0, e1) of tensor t: in each chunk, the whole rows (of dimension 0)
 * the range meets, a superset of what the reader will read. */
void hfdcp__ahead_range(hfdcp__ahead *a, const hfdcp__catalog *cat,
                        const hfdcp__tensor *t, uint64_t e0, uint64_t e1);

/* Local: closes the descriptors; a zeroed or closed one is left alone. */
void hfdcp__ahead_close(hfdcp__ahead *a);

#endif /* HFDCP_CONSOLIDATE_INTERNAL_H */
