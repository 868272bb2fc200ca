/*
 * hfdcp.h - parallel HuggingFace safetensors checkpoints for MPI programs.
 *
 * This header is the manual.  Read it top to bottom:
 *   1. status codes and error messages,
 *   2. dtypes,
 *   3. key maps (regex renaming of tensor names),
 *   4. the reader (load any slice of any tensor on any number of ranks),
 *   5. the writer (one collective commit from rank-held chunks to a
 *      complete checkpoint, or per-rank shard files),
 *   6. consolidation of shard files into a standard checkpoint,
 *   7. the buffer kept between calls,
 *   8. the version.
 *
 * Conventions, true of every function below:
 *   - Every fallible function returns an int status: HFDCP_OK (0) on
 *     success, a negative HFDCP_ERR_* code otherwise.  Results come back
 *     through trailing pointer arguments, which are left untouched on
 *     failure unless said otherwise.
 *   - After a failure, hfdcp_last_error() returns a detailed message for
 *     the calling thread (which file, which tensor, which rank, what the OS
 *     or MPI said).
 *   - "Collective" means every rank of the object's communicator must call
 *     the function, in the same order relative to other collective calls on
 *     that object.  A collective call returns the same status on every rank,
 *     and on failure the message of the first failing rank is available on
 *     every rank through hfdcp_last_error().
 *   - "Local" means the call involves no communication.
 *   - Objects are opaque; *_free(NULL) does nothing.
 *   - Tensors are row-major (C order), as PyTorch and the file format see
 *     them.  Shapes, offsets and sizes are int64_t arrays of length ndim.
 *
 * Thread safety: distinct objects may be used from distinct threads; one
 * object must not be used from two threads at once.  Collective calls need
 * the usual MPI thread level for the calling pattern.
 */
#ifndef HFDCP_H
#define HFDCP_H

#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Only the functions of this header are exported from the shared library. */
#if defined(__GNUC__) && __GNUC__ >= 4
#define HFDCP_API __attribute__((visibility("default")))
#else
#define HFDCP_API
#endif

/* ------------------------------------------------------------------------
 * 1. Status codes
 * ---------------------------------------------------------------------- */

/* X(symbol, value, short description).  Values never change once released. */
#define HFDCP_STATUS_MAP(X)                                                   \
    X(HFDCP_OK, 0, "success")                                                 \
    X(HFDCP_ERR_ARG, -1, "invalid argument")                                  \
    X(HFDCP_ERR_NOMEM, -2, "out of memory")                                   \
    X(HFDCP_ERR_IO, -3, "I/O error")                                          \
    X(HFDCP_ERR_FORMAT, -4, "malformed safetensors file or index")            \
    X(HFDCP_ERR_PLAN, -5, "inconsistent save or load plan")                   \
    X(HFDCP_ERR_NOT_FOUND, -6, "not found")                                   \
    X(HFDCP_ERR_MPI, -7, "MPI error")                                         \
    X(HFDCP_ERR_MISMATCH, -8, "arguments differ across ranks")                \
    X(HFDCP_ERR_UNSUPPORTED, -9, "unsupported operation")                     \
    X(HFDCP_ERR_RANGE, -10, "value out of range")                             \
    X(HFDCP_ERR_INTERNAL, -11, "internal error")

typedef enum {
#define HFDCP_X_ENUM(sym, val, desc) sym = (val),
    HFDCP_STATUS_MAP(HFDCP_X_ENUM)
#undef HFDCP_X_ENUM
} hfdcp_status;

/*! hfdcp_status_name() : Local.
 *  @return the symbol of a status ("HFDCP_ERR_FORMAT"), or
 *          "HFDCP_ERR_UNKNOWN" for a value that is not a status. */
HFDCP_API const char *hfdcp_status_name(int status);

/*! hfdcp_status_string() : Local.
 *  @return a short description of a status ("malformed safetensors file or
 *          index"). */
HFDCP_API const char *hfdcp_status_string(int status);

/*! hfdcp_last_error() : Local.
 *  @return the detailed message of the calling thread's last failure, or ""
 *          if none.  The string stays valid until the thread's next hfdcp
 *          call. */
HFDCP_API const char *hfdcp_last_error(void);

/* ------------------------------------------------------------------------
 * 2. Dtypes: the 22 element types of the safetensors format
 * ---------------------------------------------------------------------- */

/* X(symbol suffix, file name, bits per element).  The enum values are part
 * of the ABI; the order is the format specification's. */
#define HFDCP_DTYPE_MAP(X)                                                    \
    X(BOOL, "BOOL", 8)                                                        \
    X(F4, "F4", 4)                                                            \
    X(F6_E2M3, "F6_E2M3", 6)                                                  \
    X(F6_E3M2, "F6_E3M2", 6)                                                  \
    X(U8, "U8", 8)                                                            \
    X(I8, "I8", 8)                                                            \
    X(F8_E5M2, "F8_E5M2", 8)                                                  \
    X(F8_E4M3, "F8_E4M3", 8)                                                  \
    X(F8_E8M0, "F8_E8M0", 8)                                                  \
    X(F8_E4M3FNUZ, "F8_E4M3FNUZ", 8)                                          \
    X(F8_E5M2FNUZ, "F8_E5M2FNUZ", 8)                                          \
    X(I16, "I16", 16)                                                         \
    X(U16, "U16", 16)                                                         \
    X(F16, "F16", 16)                                                         \
    X(BF16, "BF16", 16)                                                       \
    X(I32, "I32", 32)                                                         \
    X(U32, "U32", 32)                                                         \
    X(F32, "F32", 32)                                                         \
    X(C64, "C64", 64)                                                         \
    X(F64, "F64", 64)                                                         \
    X(I64, "I64", 64)                                                         \
    X(U64, "U64", 64)

typedef enum {
#define HFDCP_X_DTYPE(sym, name, bits) HFDCP_##sym,
    HFDCP_DTYPE_MAP(HFDCP_X_DTYPE)
#undef HFDCP_X_DTYPE
    HFDCP_DTYPE_COUNT
} hfdcp_dtype;

/*! hfdcp_dtype_bits() : Local.
 *  @return bits per element (4, 6, 8, 16, 32 or 64), or 0 for a value that
 *          is not a dtype. */
HFDCP_API int hfdcp_dtype_bits(hfdcp_dtype dtype);

/*! hfdcp_dtype_name() : Local.
 *  @return the name used in files ("BF16"), or NULL for a value that is not
 *          a dtype. */
HFDCP_API const char *hfdcp_dtype_name(hfdcp_dtype dtype);

/*! hfdcp_dtype_from_name() : Local.  Exact, case-sensitive match.
 *  @return HFDCP_OK, or HFDCP_ERR_FORMAT for any other string (never a
 *          default). */
HFDCP_API int hfdcp_dtype_from_name(const char *name, hfdcp_dtype *out);

/* Tensors of more dimensions than this are refused with
 * HFDCP_ERR_UNSUPPORTED (PyTorch's own limit is 64 dims). */
#define HFDCP_MAX_NDIM 64

/* ------------------------------------------------------------------------
 * 3. Key maps: ordered regex renaming of tensor names (Python re syntax)
 * ---------------------------------------------------------------------- */

typedef struct hfdcp_key_map_s hfdcp_key_map;

/*! hfdcp_key_map_create() : Local.  Creates an empty key map (renames
 *  nothing).  Free with hfdcp_key_map_free(). */
HFDCP_API int hfdcp_key_map_create(hfdcp_key_map **out);

/*! hfdcp_key_map_add() : Local.  Appends a rule.  `pattern` is a regular
 *  expression in Python `re` syntax (compiled with PCRE2), `replacement` a
 *  Python replacement string: `\1`..`\99`, `\g<1>`, `\g<name>`, and the
 *  escapes \n \t \\ etc. are understood.  Semantics are Python 3.11's;
 *  the few constructs PCRE2 cannot reproduce faithfully (\N{...}, group
 *  references under (?i), `\0` in a replacement, ...: see docs/api.md) are
 *  refused rather than approximated.
 *  @return HFDCP_OK, or HFDCP_ERR_ARG naming the rule, the pattern and the
 *          position of the problem (Python's own message where Python
 *          refuses it) when the pattern or replacement is invalid. */
HFDCP_API int hfdcp_key_map_add(hfdcp_key_map *km, const char *pattern,
                      const char *replacement);

/*! hfdcp_key_map_apply() : Local.  Renames `key` with the first rule whose
 *  pattern matches it somewhere (every non-overlapping occurrence is
 *  replaced, as Python's re.subn); no match copies `key` unchanged.
 *  `km` may be NULL (no renaming).
 *  @return HFDCP_OK, or HFDCP_ERR_RANGE when the result with its NUL does
 *          not fit in `out_size` bytes, or HFDCP_ERR_UNSUPPORTED when a
 *          pathological pattern exceeds PCRE2's backtracking limit. */
HFDCP_API int hfdcp_key_map_apply(const hfdcp_key_map *km, const char *key, char *out,
                        size_t out_size);

/*! hfdcp_key_map_free() : Local. */
HFDCP_API void hfdcp_key_map_free(hfdcp_key_map *km);

/* ------------------------------------------------------------------------
 * 4. Reader
 * ---------------------------------------------------------------------- */

typedef struct hfdcp_reader_s hfdcp_reader;

typedef struct {
    const char *name;     /* tensor name, after renaming */
    hfdcp_dtype dtype;    /* stored dtype */
    int ndim;             /* 0 for a scalar */
    const int64_t *shape; /* ndim entries, owned by the reader */
} hfdcp_tensor_info;

typedef struct {
    const hfdcp_key_map *key_map; /* NULL: names as stored */
    MPI_Info info;                /* MPI-IO hints for every file opened;
                                     MPI_INFO_NULL: hfdcp's defaults.
                                     hfdcp's own: hfdcp_aggregate =
                                     auto|enable|disable,
                                     hfdcp_aggregate_buffer_size (bytes,
                                     default 32 MiB), for writes
                                     hfdcp_long_runs = auto|collective|
                                     independent, for reads
                                     hfdcp_sieve_reads = auto|enable|
                                     disable; hfdcp_keep_buffer =
                                     enable|disable (section 7);
                                     hfdcp_exchange = auto|alltoallw:
                                     docs/api.md; hfdcp_verify_checksums
                                     = disable|enable: check the CRC-32C
                                     (hfdcp_crc32c) of the chunks a load
                                     reads in full, a mismatch being
                                     HFDCP_ERR_FORMAT (docs/api.md).  A
                                     bad value of one of these is
                                     HFDCP_ERR_ARG at open */
} hfdcp_load_options;

/*! hfdcp_load_options_init() : Local.  Sets every field to its default. */
HFDCP_API void hfdcp_load_options_init(hfdcp_load_options *o);

/*! hfdcp_reader_open() : Collective on `comm`.
 *  Opens a checkpoint: `path` is a directory (with or without
 *  model.safetensors.index.json; per-rank shard files carrying
 *  DCP_SHARDING_INFO are merged into whole tensors) or a single
 *  .safetensors file.  Every header is read once, by ranks in turn when
 *  there are many files, checked against the rules of docs/format.md that
 *  loaders rely on (not the index's bookkeeping that no loader reads, which
 *  only `hfdcp verify --strict` refuses: docs/format.md), and the
 *  resulting catalog is shared with every rank.
 *  Must match across ranks: `path`; the key map's rules.  `opts` may be
 *  NULL (defaults).  `comm` is duplicated; the caller keeps its own.
 *  @return HFDCP_OK and *out, or the same error on every rank
 *          (HFDCP_ERR_FORMAT for a malformed file or index,
 *          HFDCP_ERR_NOT_FOUND for a missing path or an empty directory,
 *          HFDCP_ERR_IO, HFDCP_ERR_MISMATCH, ...). */
HFDCP_API int hfdcp_reader_open(MPI_Comm comm, const char *path,
                      const hfdcp_load_options *opts, hfdcp_reader **out);

/*! hfdcp_reader_count() : Local.  Number of tensors in the checkpoint. */
HFDCP_API size_t hfdcp_reader_count(const hfdcp_reader *r);

/*! hfdcp_reader_tensor() : Local.  Describes tensor `i` (0 <= i < count),
 *  tensors being sorted by name (byte order).  info's pointers stay valid
 *  until hfdcp_reader_free().
 *  @return HFDCP_OK, or HFDCP_ERR_RANGE. */
HFDCP_API int hfdcp_reader_tensor(const hfdcp_reader *r, size_t i,
                        hfdcp_tensor_info *info);

/*! hfdcp_reader_find() : Local.  Describes the tensor named `name`.
 *  @return HFDCP_OK, or HFDCP_ERR_NOT_FOUND. */
HFDCP_API int hfdcp_reader_find(const hfdcp_reader *r, const char *name,
                      hfdcp_tensor_info *info);

/*! hfdcp_reader_add() : Local.  Requests the box [offsets, offsets+sizes)
 *  of tensor `name`, to be stored in `dest` as a contiguous row-major array
 *  of shape `sizes` and element type `dtype` by the next hfdcp_reader_load().
 *  The box need not match how the tensor was stored (resharding).  When
 *  `dtype` differs from the stored dtype, values are converted among F64,
 *  F32, F16 and BF16: exactly to a wider type, and with one correct
 *  rounding (to nearest, ties to even; too large gives infinity, NaN stays
 *  NaN) to a narrower one, whatever the FPU's rounding mode; any other
 *  conversion is HFDCP_ERR_UNSUPPORTED.  For a scalar, ndim is 0 and
 *  offsets/sizes may be NULL.  `dest` must stay valid until load returns.
 *  Note: errors in a request are also remembered and reported by the next
 *  hfdcp_reader_load() on every rank, so a rank that ignores this status
 *  still cannot leave the others waiting.
 *  @return HFDCP_OK, or HFDCP_ERR_NOT_FOUND (unknown tensor), HFDCP_ERR_ARG
 *          (wrong ndim, box out of bounds), HFDCP_ERR_UNSUPPORTED. */
HFDCP_API int hfdcp_reader_add(hfdcp_reader *r, const char *name, hfdcp_dtype dtype,
                     int ndim, const int64_t *offsets, const int64_t *sizes,
                     void *dest);

/*! hfdcp_reader_load() : Collective.  Fills every slice requested with
 *  hfdcp_reader_add() since the last load, with MPI-IO collective reads of
 *  just the bytes needed, straight into the destinations.  Ranks may have
 *  requested overlapping, identical or no slices.  The request list is
 *  emptied, whatever the outcome.  With the hint hfdcp_verify_checksums=
 *  enable, the chunks read in full are checked against their CRC-32C.
 *  @return HFDCP_OK, or the same error on every rank (HFDCP_ERR_FORMAT
 *          naming the file, tensor and byte range for a checksum that
 *          does not match). */
HFDCP_API int hfdcp_reader_load(hfdcp_reader *r);

/*! hfdcp_reader_free() : Collective (it frees the reader's duplicated
 *  communicator, which MPI defines as collective).  Releases the reader. */
HFDCP_API void hfdcp_reader_free(hfdcp_reader *r);

/* ------------------------------------------------------------------------
 * 5. File maps and the writer
 * ---------------------------------------------------------------------- */

/* A file map assigns tensor names to 1-based file indices: a save with it
 * writes model-0000i-of-0000N.safetensors, N the largest index in the map
 * (used by a saved tensor or not, also 1), as PyTorch's HuggingFace writer
 * names them.  Without a map, one file is model.safetensors. */
typedef struct hfdcp_file_map_s hfdcp_file_map;

/*! hfdcp_file_map_create() : Local.  An empty map. */
HFDCP_API int hfdcp_file_map_create(hfdcp_file_map **out);

/*! hfdcp_file_map_set() : Local.  Maps `name` to `file_index` (>= 1),
 *  replacing an earlier entry for the same name.
 *  @return HFDCP_OK, or HFDCP_ERR_ARG. */
HFDCP_API int hfdcp_file_map_set(hfdcp_file_map *m, const char *name, int file_index);

/*! hfdcp_file_map_get() : Local.
 *  @return HFDCP_OK and *file_index, or HFDCP_ERR_NOT_FOUND. */
HFDCP_API int hfdcp_file_map_get(const hfdcp_file_map *m, const char *name,
                       int *file_index);

/*! hfdcp_file_map_free() : Local. */
HFDCP_API void hfdcp_file_map_free(hfdcp_file_map *m);

/*! hfdcp_file_map_size() : Local.  Number of entries. */
HFDCP_API size_t hfdcp_file_map_size(const hfdcp_file_map *m);

/*! hfdcp_file_map_entry() : Local.  Entry `i` (0 <= i < size), in the order
 *  the names were first set.  *name stays valid until the map changes.
 *  @return HFDCP_OK, or HFDCP_ERR_RANGE. */
HFDCP_API int hfdcp_file_map_entry(const hfdcp_file_map *m, size_t i,
                                   const char **name, int *file_index);

/*! hfdcp_file_map_warning() : Local.
 *  @return "" or a warning about how the map was made (see
 *          hfdcp_file_map_from_reference()); valid while the map lives. */
HFDCP_API const char *hfdcp_file_map_warning(const hfdcp_file_map *m);

/*! hfdcp_extract_file_index() : Local.  The 1-based file index that a
 *  checkpoint file name carries: "model-00002-of-00008.safetensors",
 *  "model.safetensors-00002-of-00008.safetensors" and
 *  "shard-00001-model-00002-of-00008.safetensors" give 2;
 *  "model.safetensors" gives 1.  A directory part is ignored.
 *  @return HFDCP_OK and *index, or HFDCP_ERR_NOT_FOUND ("not a recognised
 *          checkpoint file name"), HFDCP_ERR_ARG. */
HFDCP_API int hfdcp_extract_file_index(const char *filename, int *index);

/*! hfdcp_file_map_from_reference() : Local (reads files).  A file map
 *  copying the file layout of the model at `reference_model_path` (a
 *  directory): from its model.safetensors.index.json when present, else
 *  from the headers of its *.safetensors files.  Each tensor name is
 *  renamed by `km` (may be NULL) and mapped to the index its file name
 *  carries.  When those indices are not exactly 1..N for the N files,
 *  files are numbered 1..N in sorted name order instead, and
 *  hfdcp_file_map_warning() of the new map says so.
 *  @return HFDCP_OK and *out, or HFDCP_ERR_NOT_FOUND, HFDCP_ERR_FORMAT,
 *          HFDCP_ERR_IO, HFDCP_ERR_ARG (two tensors renamed to one name). */
HFDCP_API int hfdcp_file_map_from_reference(const char *reference_model_path,
                                            const hfdcp_key_map *km,
                                            hfdcp_file_map **out);

typedef struct {
    const hfdcp_file_map *file_map; /* NULL: split by max_shard_bytes, or
                                       one file */
    uint64_t max_shard_bytes;       /* 0: no limit */
    int save_sharded;               /* 1: each rank writes its own chunks to
                                       shard-{rank+1:05d}-model-{idx:05d}-
                                       of-{max:05d}.safetensors with
                                       DCP_SHARDING_INFO, no index */
    const char *consolidated_output_path; /* with save_sharded: then
                                       consolidate into this directory */
    int thread_count;               /* files in flight per rank (0 = 1):
                                       direct saves flush up to
                                       thread_count-1 finished files to disk
                                       in helper threads while the next is
                                       written; sharded saves write up to
                                       thread_count shard files at once
                                       (docs/api.md) */
    int num_threads_consolidation;  /* with consolidated_output_path: the
                                       consolidation's num_threads
                                       (hfdcp_consolidate_options) */
    MPI_Info info;                  /* MPI-IO hints; MPI_INFO_NULL: hfdcp's
                                       defaults (hfdcp's own hints: see
                                       hfdcp_load_options; and
                                       hfdcp_data_alignment, bytes, a
                                       power of two from 8 to 16 MiB,
                                       default 8: each file's data starts
                                       at a multiple of it, docs/api.md) */
    uint64_t snapshot_max_bytes;    /* hfdcp_writer_commit_async: the most
                                       bytes of this rank's chunks it
                                       copies; the chunks beyond it are
                                       written before it returns.  0: no
                                       bound (docs/api.md) */
    int no_checksums;               /* 1: write no CRC-32C of the tensors
                                       (by default every file written
                                       carries them: hfdcp_crc32c,
                                       docs/format.md) */
} hfdcp_save_options;

/*! hfdcp_save_options_init() : Local.  Sets every field to its default. */
HFDCP_API void hfdcp_save_options_init(hfdcp_save_options *o);

typedef struct hfdcp_writer_s hfdcp_writer;

/*! hfdcp_writer_open() : Collective on `comm`.  Prepares a save into the
 *  directory `path` (created if missing).  Nothing is written before
 *  hfdcp_writer_commit().  Must match across ranks: `path` and the options
 *  (the file map may differ only in entries for tensors no rank saves).
 *  `opts` may be NULL (defaults).  `comm` is duplicated.
 *  @return HFDCP_OK and *out, or the same error on every rank. */
HFDCP_API int hfdcp_writer_open(MPI_Comm comm, const char *path,
                      const hfdcp_save_options *opts, hfdcp_writer **out);

/*! hfdcp_writer_add() : Local.  Registers one chunk of tensor `name`: the
 *  box [offsets, offsets+sizes) of a tensor of shape `global_shape` and
 *  type `dtype`.  `data` holds the chunk, contiguous and row-major; it is
 *  not copied and must stay valid and unchanged until commit returns.
 *  Several ranks may hold the same box (replicated tensors); it is written
 *  once.  For a scalar, ndim is 0 and the arrays may be NULL.
 *  Note: errors are also remembered and reported by the next commit on
 *  every rank.
 *  @return HFDCP_OK, or HFDCP_ERR_ARG (bad box, duplicate chunk on this
 *          rank), HFDCP_ERR_NOMEM. */
HFDCP_API int hfdcp_writer_add(hfdcp_writer *w, const char *name, hfdcp_dtype dtype,
                     int ndim, const int64_t *global_shape,
                     const int64_t *offsets, const int64_t *sizes,
                     const void *data);

/*! hfdcp_writer_commit() : Collective.  Plans, writes and publishes the
 *  checkpoint in one call: gathers every rank's chunks, checks that every
 *  tensor is tiled exactly with one dtype and shape, lays out the files,
 *  writes every file with MPI-IO collective writes under temporary names,
 *  syncs, renames them into place and writes model.safetensors.index.json
 *  last.  With save_sharded, each rank instead writes its own chunks to
 *  its shard files (POSIX writes, no index), published the same way, then
 *  consolidates them into consolidated_output_path if one is given.  A
 *  failed commit leaves no file that looks complete.  After commit
 *  (successful or not) the writer accepts no more chunks.
 *  @return HFDCP_OK, or the same error on every rank (HFDCP_ERR_PLAN for
 *          holes, overlaps or disagreement, HFDCP_ERR_IO, ...). */
HFDCP_API int hfdcp_writer_commit(hfdcp_writer *w);

/*! hfdcp_writer_commit_async() : Collective.  Does what
 *  hfdcp_writer_commit() does up to the point where every chunk this rank
 *  contributes is in hfdcp's own memory (plan, checks, and a copy of the
 *  chunks it writes), then returns.  From then on the caller may change or
 *  free the buffers it passed to hfdcp_writer_add().  The files are written
 *  and synced in the background by one helper thread per rank, which makes
 *  no MPI call (any thread level works, MPI_THREAD_SINGLE included);
 *  hfdcp_writer_wait() agrees on the outcome and publishes (direct save:
 *  renames and index; save_sharded: renames, then the consolidation into
 *  consolidated_output_path, if any, also runs in hfdcp_writer_wait).
 *  Memory: the bytes of the chunks this rank writes (after the plan's
 *  deduplication) plus, on rank 0, the files' headers; with
 *  snapshot_max_bytes B, the chunks beyond B are written (not synced)
 *  before this returns.  Nothing is visible in the directory until
 *  hfdcp_writer_wait() succeeds.
 *  @return the plan's status (the same on every rank; HFDCP_ERR_ARG when
 *          the writer has committed already).  I/O errors of the
 *          background work come from hfdcp_writer_wait(). */
HFDCP_API int hfdcp_writer_commit_async(hfdcp_writer *w);

/*! hfdcp_writer_wait() : Collective.  Waits until the asynchronous commit
 *  has ended, agrees on its outcome and publishes; returns the final
 *  status, the same on every rank (HFDCP_OK: the checkpoint is durable and
 *  published; otherwise nothing complete-looking was left, and the
 *  message names the file and the rank that failed).
 *  @return HFDCP_OK, HFDCP_ERR_IO, ..., or HFDCP_ERR_ARG without an
 *          asynchronous commit to wait for (none, or waited for already). */
HFDCP_API int hfdcp_writer_wait(hfdcp_writer *w);

/*! hfdcp_writer_test() : Local.  *done = 1 when this rank's background
 *  work has ended (hfdcp_writer_wait() will then not wait for it), else 0.
 *  @return HFDCP_OK, or HFDCP_ERR_ARG (NULL, or no asynchronous commit
 *          was started). */
HFDCP_API int hfdcp_writer_test(hfdcp_writer *w, int *done);

/*! hfdcp_writer_free() : Collective (frees the duplicated communicator).
 *  A writer whose asynchronous commit has not been waited for is waited
 *  for first (hfdcp_writer_wait(), its status lost). */
HFDCP_API void hfdcp_writer_free(hfdcp_writer *w);

/* ------------------------------------------------------------------------
 * 6. Consolidation: per-rank shard files -> a standard checkpoint
 * ---------------------------------------------------------------------- */

typedef struct {
    uint64_t buffer_bytes; /* staging memory per rank; 0: 32 MiB */
    int cast;              /* 1: convert floating-point tensors (F64, F32,
                              F16, BF16) to cast_dtype; integer, BOOL and
                              FP8 tensors are copied unchanged */
    hfdcp_dtype cast_dtype; /* with cast: F64, F32, F16 or BF16 */
    int num_threads;       /* CPU threads per rank converting the staged
                              data of cast tensors (no effect without a
                              cast); 0 or 1: the calling thread only
                              (docs/api.md) */
    MPI_Info info;         /* MPI-IO hints; MPI_INFO_NULL: defaults
                              (hfdcp's own as for a save) */
    int no_checksums;      /* 1: write no CRC-32C of the tensors and check
                              none of the shards' (default: check the
                              shards' where present, write the tensors':
                              hfdcp_crc32c, docs/format.md) */
    /* Called on rank 0 only, from the calling thread, after each round of
     * writes: bytes of the output's tensor data done and in all; a
     * file's last round counts once the file is synced, so `done`
     * reaches the total only when every file is durable. */
    void (*progress)(uint64_t done, uint64_t total, void *arg);
    void *progress_arg;
} hfdcp_consolidate_options;

/*! hfdcp_consolidate_options_init() : Local.  Sets every field to its
 *  default. */
HFDCP_API void hfdcp_consolidate_options_init(hfdcp_consolidate_options *o);

/*! hfdcp_consolidate() : Collective on `comm`.  Turns the per-rank shard
 *  files (DCP_SHARDING_INFO) of `input_dir` into a standard checkpoint in
 *  `output_dir`: model-0000i-of-0000N.safetensors laid out by `map`, N its
 *  largest index (NULL: one file, model.safetensors), and
 *  model.safetensors.index.json, the same
 *  bytes hfdcp_writer_commit() writes for the same tensors and map.  Every
 *  rank reads (collectively) and writes (collectively) part of every output
 *  file, through at most buffer_bytes of memory.  Checks before writing
 *  anything that every tensor is covered exactly once with one dtype.
 *  Publication as by the writer: nothing complete-looking on failure.
 *  Must match across ranks: the paths, the map, the options but progress.
 *  @return HFDCP_OK, or the same error on every rank (HFDCP_ERR_PLAN for a
 *          hole, an overlap or mixed dtypes, HFDCP_ERR_FORMAT for a file
 *          without DCP_SHARDING_INFO, HFDCP_ERR_NOT_FOUND, HFDCP_ERR_IO,
 *          ...). */
HFDCP_API int hfdcp_consolidate(MPI_Comm comm, const char *input_dir,
                                const char *output_dir,
                                const hfdcp_file_map *map,
                                const hfdcp_consolidate_options *opts);

/* ------------------------------------------------------------------------
 * 7. Memory kept between calls
 * ---------------------------------------------------------------------- */

/*! hfdcp_release_buffers() : Local.
 *  Frees the buffer hfdcp keeps between saves and loads.  An aggregated or
 *  sieved transfer (short runs: column-split and block layouts) moves the
 *  file through a window of hfdcp_aggregate_buffer_size bytes (32 MiB by
 *  default); when it ends, the window is kept (one per process, the
 *  largest) for the next transfer, which then skips the page faults of
 *  fresh memory; with every rank on one node, so are the node-shared
 *  windows of the aggregation (this rank's mapping is unmapped).
 *  Consolidation stages through it too (and keeps its staging buffer
 *  when it is at most 32 MiB).  MPI_Finalize frees them too.  Hint hfdcp_keep_buffer = disable makes a save or load neither
 *  use nor keep it. */
HFDCP_API void hfdcp_release_buffers(void);

/* ------------------------------------------------------------------------
 * 8. Version
 * ---------------------------------------------------------------------- */

#define HFDCP_VERSION_MAJOR 0
#define HFDCP_VERSION_MINOR 2
#define HFDCP_VERSION_PATCH 0
#define HFDCP_VERSION_NUMBER                                                  \
    (HFDCP_VERSION_MAJOR * 10000 + HFDCP_VERSION_MINOR * 100 +               \
     HFDCP_VERSION_PATCH)

/*! hfdcp_version() : Local.
 *  @return "MAJOR.MINOR.PATCH" of the library actually linked (compare with
 *          the macros to detect a header/library mismatch). */
HFDCP_API const char *hfdcp_version(void);

#ifdef __cplusplus
}
#endif

#endif /* HFDCP_H */
