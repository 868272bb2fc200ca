/*
 * hfdcp_internal.h - shared internal declarations.  Included by the library
 * sources in src/ and
 * by the tests in mpi_tests/ (which link the static library); never
 * installed.  Names here start with hfdcp__ (double underscore).
 *
 * Layers, bottom up (each file may use the ones above it in this list):
 *   status.c   errors, thread-local message, agreement across ranks
 *   dtype.c    the 22 dtypes
 *   util.c     string map, growable buffers, checked arithmetic
 *   box.c      n-dimensional boxes: intersection, tiling checks
 *   format.c   the safetensors header: parse, check, serialize (cJSON)
 *   index.c    model.safetensors.index.json: parse, serialize (cJSON)
 *   keymap.c   regex renaming (PCRE2)
 *   catalog.c  what a checkpoint directory holds; shared with every rank
 *   mpiio.c    the only user of MPI_File_*: pieces -> datatypes -> I/O
 *   convert.c  F64/F32/F16/BF16 conversion
 *   reader.c   the public reader
 *   filemap.c, plan.c, writer.c   the public writer
 */
#ifndef HFDCP_INTERNAL_H
#define HFDCP_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hfdcp.h"

/* ------------------------------------------------------------------------
 * status.c: errors
 * ---------------------------------------------------------------------- */

/* Sets the calling thread's detailed message (printf-style) and returns
 * `status`, so that `return hfdcp__error(HFDCP_ERR_FORMAT, "...")` reads
 * well.  The message should name the file, tensor and rank concerned. */
int hfdcp__error(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like hfdcp__error() for a failed MPI call: appends ": " and
 * MPI_Error_string(mpi_rc) to the message; returns HFDCP_ERR_MPI. */
int hfdcp__mpi_error(int mpi_rc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like hfdcp__error() for a failed system call: appends ": " and
 * strerror(errnum); returns `status` (usually HFDCP_ERR_IO). */
int hfdcp__os_error(int status, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the current message with "prefix: " (used to add the file or
 * tensor name on the way up).  Returns `status` unchanged. */
int hfdcp__error_prefix(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Clears the calling thread's message. */
void hfdcp__error_clear(void);

/* Collective on `comm`.  Every rank passes its local status; every rank
 * gets back the status of the lowest-numbered failing rank (HFDCP_OK if
 * none), and on failure every rank's thread-local message becomes that
 * rank's message prefixed with "rank R: ".  Never hangs as long as every
 * rank calls it.  Errors of the agreement itself become HFDCP_ERR_MPI. */
int hfdcp__agree(MPI_Comm comm, int local_status);

/* Pass a status up. */
#define HFDCP_TRY(expr)                                                      \
    do {                                                                     \
        int hfdcp_try_rc_ = (expr);                                          \
        if (hfdcp_try_rc_ != HFDCP_OK) return hfdcp_try_rc_;                 \
    } while (0)

/* In functions with a `rc` variable and a `cleanup:` label. */
#define HFDCP_CHECK(expr)                                                    \
    do {                                                                     \
        rc = (expr);                                                         \
        if (rc != HFDCP_OK) goto cleanup;                                    \
    } while (0)

#define HFDCP_FAIL(status, ...)                                              \
    do {                                                                     \
        rc = hfdcp__error((status), __VA_ARGS__);                            \
        goto cleanup;                                                        \
    } while (0)

/* An MPI call that returns an MPI error code, converted where it is made. */
#define HFDCP_MPI_CHECK(call)                                                \
    do {                                                                     \
        int hfdcp_mpi_rc_ = (call);                                          \
        if (hfdcp_mpi_rc_ != MPI_SUCCESS) {                                  \
            rc = hfdcp__mpi_error(hfdcp_mpi_rc_, "%s", #call);               \
            goto cleanup;                                                    \
        }                                                                    \
    } while (0)

/* Out-of-memory message naming what was being allocated. */
int hfdcp__nomem(const char *what);

/* ------------------------------------------------------------------------
 * util.c: checked arithmetic, strings, string map, byte buffers
 * ---------------------------------------------------------------------- */

/* *out = a * b (resp. a + b); false on uint64 overflow. */
bool hfdcp__mul_u64(uint64_t a, uint64_t b, uint64_t *out);
bool hfdcp__add_u64(uint64_t a, uint64_t b, uint64_t *out);

/* Bytes of a tensor of `ndim` dims `shape` and `dtype`: numel * bits / 8.
 * HFDCP_ERR_RANGE on overflow or a negative dim; HFDCP_ERR_FORMAT when
 * numel * bits is not a multiple of 8 (sub-byte dtypes).  Message names
 * `what` (e.g. "tensor 'x' in file 'f'"). */
int hfdcp__tensor_bytes(hfdcp_dtype dtype, int ndim, const int64_t *shape,
                        const char *what, uint64_t *out);

char *hfdcp__strdup(const char *s);
char *hfdcp__strndup(const char *s, size_t n);
/* malloc'd printf; NULL on failure. */
char *hfdcp__asprintf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Joins a directory and a file name with one '/'. malloc'd; NULL on ENOMEM. */
char *hfdcp__path_join(const char *dir, const char *name);

/* A string -> size_t hash map (open addressing).  Keys are copied. */
typedef struct hfdcp__strmap hfdcp__strmap;
hfdcp__strmap *hfdcp__strmap_new(void);
void hfdcp__strmap_free(hfdcp__strmap *m);
/* Inserts or replaces; HFDCP_ERR_NOMEM on failure. *existed (may be NULL)
 * tells whether the key was already there (its old value is replaced). */
int hfdcp__strmap_put(hfdcp__strmap *m, const char *key, size_t value,
                      bool *existed);
/* true and *value if found. */
bool hfdcp__strmap_get(const hfdcp__strmap *m, const char *key,
                       size_t *value);
size_t hfdcp__strmap_count(const hfdcp__strmap *m);

/* A growable byte buffer, used to pack messages for MPI. */
typedef struct {
    unsigned char *data;
    size_t len, cap;
    bool failed; /* an allocation failed: every later put is ignored */
} hfdcp__buf;
void hfdcp__buf_init(hfdcp__buf *b);
void hfdcp__buf_free(hfdcp__buf *b);
void hfdcp__buf_put(hfdcp__buf *b, const void *p, size_t n);
void hfdcp__buf_put_u64(hfdcp__buf *b, uint64_t v);
void hfdcp__buf_put_i64(hfdcp__buf *b, int64_t v);
void hfdcp__buf_put_str(hfdcp__buf *b, const char *s); /* length + bytes */
/* HFDCP_ERR_NOMEM if any put failed. */
int hfdcp__buf_status(const hfdcp__buf *b);

/* Reading side of hfdcp__buf: every get fails (returns false and sets
 * `bad`) past the end, so a truncated message is caught, never overrun. */
typedef struct {
    const unsigned char *p, *end;
    bool bad;
} hfdcp__rbuf;
void hfdcp__rbuf_init(hfdcp__rbuf *r, const void *data, size_t len);
bool hfdcp__rbuf_get(hfdcp__rbuf *r, void *out, size_t n);
bool hfdcp__rbuf_get_u64(hfdcp__rbuf *r, uint64_t *v);
bool hfdcp__rbuf_get_i64(hfdcp__rbuf *r, int64_t *v);
/* malloc'd NUL-terminated copy. */
bool hfdcp__rbuf_get_str(hfdcp__rbuf *r, char **s);

/* Broadcasts a byte buffer of any size (> 2 GiB included) from `root`.
 * On non-root ranks *data is malloc'd and *len set.  Collective. */
int hfdcp__bcast_bytes(MPI_Comm comm, int root, void **data, size_t *len);

/* Formats a box as "[o0:e0, o1:e1]" into buf (always NUL-terminated). */
void hfdcp__format_box(char *buf, size_t size, int ndim,
                       const int64_t *offsets, const int64_t *sizes);

/* ------------------------------------------------------------------------
 * box.c: n-dimensional boxes [offsets, offsets + sizes)
 * ---------------------------------------------------------------------- */

/* Intersection of boxes a and b.  Returns true and fills out_offsets /
 * out_sizes when it is non-empty (every out size > 0). For ndim 0 both
 * boxes are the single scalar element: returns true. */
bool hfdcp__box_intersect(int ndim, const int64_t *a_off,
                          const int64_t *a_size, const int64_t *b_off,
                          const int64_t *b_size, int64_t *out_off,
                          int64_t *out_size);

/* One chunk of a tensor as seen by a tiling check. */
typedef struct {
    const int64_t *offsets; /* ndim */
    const int64_t *sizes;   /* ndim */
    int owner;              /* a rank or a file number, for messages */
} hfdcp__tile;

/* Checks that the boxes `tiles[0..n)` lie inside `shape` and tile it
 * exactly: no hole, no overlap (boxes of zero volume are ignored for
 * overlap).  Cost about O(n log n) for the usual splits.
 * On failure returns `status` with a message naming `tensor`, the
 * offending boxes and their owners (described with `owner_kind`, e.g.
 * "rank" or "file"; `owner_names`, if not NULL, maps owner -> a name to
 * print instead of the number), and for a hole one element not covered. */
int hfdcp__tiling_check(int status, const char *tensor, int ndim,
                        const int64_t *shape, const hfdcp__tile *tiles,
                        size_t n, const char *owner_kind,
                        const char *const *owner_names);

/* ------------------------------------------------------------------------
 * format.c: one safetensors header
 * ---------------------------------------------------------------------- */

/* Largest header we accept when reading (the Rust crate's limit) and when
 * writing (the Hub's metadata parser limit). */
#define HFDCP_HEADER_MAX_READ 100000000u
#define HFDCP_HEADER_MAX_WRITE 25000000u

typedef struct {
    char *name;        /* NUL-terminated UTF-8, as stored */
    hfdcp_dtype dtype;
    int ndim;
    int64_t *shape;    /* ndim entries (NULL when ndim == 0) */
    int64_t *offsets;  /* saved_offsets from DCP_SHARDING_INFO: ndim
                          entries, or NULL when the file has none */
    uint64_t begin;    /* data_offsets, relative to the data buffer */
    uint64_t end;
} hfdcp__entry;

typedef struct {
    char *key;
    char *value;
} hfdcp__kv;

typedef struct {
    hfdcp__entry *entries; /* sorted by begin (data order) */
    size_t n_entries;
    hfdcp__kv *meta;       /* __metadata__ pairs in file order */
    size_t n_meta;
    bool meta_null;        /* __metadata__ was JSON null */
    bool sharded;          /* __metadata__ has DCP_SHARDING_INFO (then every
                              entry has offsets) */
    uint64_t header_len;   /* N, the JSON length (padding included) */
    uint64_t data_size;    /* bytes of the data buffer (= last end) */
} hfdcp__header;

/* Reads the 8-byte little-endian prefix `prefix` of a file of `file_size`
 * bytes and checks N against the limits and the file size.  `file` names
 * the file in messages. */
int hfdcp__header_len(const unsigned char prefix[8], uint64_t file_size,
                      const char *file, uint64_t *n);

/* Parses and checks the N-byte header JSON `json` (not NUL-terminated) of a
 * file of `file_size` bytes, every rule of docs/format.md, including that
 * the data buffer is exactly file_size - 8 - N bytes.  DCP_SHARDING_INFO,
 * when present, is parsed into the entries' offsets (and must name exactly
 * the file's tensors with the right number of dims).  On failure,
 * HFDCP_ERR_FORMAT (or HFDCP_ERR_UNSUPPORTED, HFDCP_ERR_NOMEM) with a
 * message naming `file`, the tensor and the rule.  *out is zeroed on
 * failure; free with hfdcp__header_free(). */
int hfdcp__header_parse(const char *json, uint64_t n, uint64_t file_size,
                        const char *file, hfdcp__header *out);

void hfdcp__header_free(hfdcp__header *h);

/* Serializes `h` into a complete file prefix: the 8-byte length, then
 * compact JSON starting with '{': "__metadata__" first with
 * "format":"pt" and then h->meta in order (a "format" key in h->meta
 * replaces "pt"); when h->sharded, DCP_SHARDING_INFO and DCP_VERSION "1.0"
 * as the reference writes them; then the entries in the given order with
 * their begin/end as given; padded with spaces to a multiple of 8.
 * Refused (HFDCP_ERR_RANGE) above HFDCP_HEADER_MAX_WRITE.  *out is
 * malloc'd, *out_len = 8 + N. */
int hfdcp__header_serialize(const hfdcp__header *h, char **out,
                            size_t *out_len);

/* The dtype order of the reference writers: larger element first, then
 * the Rust crate's enum order, then name (strcmp).  A qsort comparator on
 * hfdcp__entry. */
int hfdcp__entry_layout_cmp(const void *a, const void *b);

/* ------------------------------------------------------------------------
 * index.c: model.safetensors.index.json
 * ---------------------------------------------------------------------- */

#define HFDCP_INDEX_NAME "model.safetensors.index.json"

typedef struct {
    uint64_t total_size;
    size_t n;       /* weight_map entries, in file order */
    char **names;   /* tensor names */
    char **files;   /* file names, checked: no '/', no "..", not absolute,
                       not empty */
} hfdcp__index;

/* Parses an index file's bytes (`what` names it in messages). Duplicate
 * keys, a missing or non-integer total_size, non-string values and bad
 * file names are HFDCP_ERR_FORMAT. */
int hfdcp__index_parse(const char *buf, size_t len, const char *what,
                       hfdcp__index *out);
void hfdcp__index_free(hfdcp__index *ix);

/* Serializes an index as the Python tooling does (indent 2).  *out is
 * malloc'd and NUL-terminated. */
int hfdcp__index_serialize(const hfdcp__index *ix, char **out,
                           size_t *out_len);

/* ------------------------------------------------------------------------
 * keymap.c
 * ---------------------------------------------------------------------- */

/* Like hfdcp_key_map_apply() but returns a malloc'd string. */
int hfdcp__key_map_rename(const hfdcp_key_map *km, const char *key,
                          char **out);

/* Packs / unpacks the rules (pattern, replacement) so that every rank can
 * check it has the same key map. */
int hfdcp__key_map_pack(const hfdcp_key_map *km, hfdcp__buf *b);

/* ------------------------------------------------------------------------
 * catalog.c: what a checkpoint holds
 * ---------------------------------------------------------------------- */

typedef struct {
    char *name;          /* base name */
    char *path;          /* full path */
    uint64_t size;       /* file size in bytes */
    uint64_t data_start; /* 8 + N */
    hfdcp__header hdr;   /* parsed header, kept for inspect/verify; its
                            entries hold stored names */
} hfdcp__file;

typedef struct {
    int file;             /* index in catalog files */
    int64_t *offsets;     /* ndim: where the chunk sits in the tensor */
    int64_t *sizes;       /* ndim: the chunk's shape */
    uint64_t file_offset; /* absolute byte offset of the chunk's data */
} hfdcp__chunk;

typedef struct {
    char *name;            /* after renaming */
    hfdcp_dtype dtype;
    int ndim;
    int64_t *shape;        /* global shape */
    uint64_t nbytes;       /* bytes of the whole tensor */
    size_t n_chunks;       /* 1 unless sharded */
    hfdcp__chunk *chunks;
} hfdcp__tensor;

typedef struct {
    char *path;             /* as given */
    bool is_file;           /* path was a single .safetensors file */
    bool has_index;         /* a model.safetensors.index.json was used */
    bool sharded;           /* DCP shard files */
    size_t n_files;
    hfdcp__file *files;     /* sorted by name */
    size_t n_tensors;
    hfdcp__tensor *tensors; /* sorted by name (strcmp) */
    hfdcp__strmap *by_name; /* name -> tensor index */
    uint64_t total_size;    /* sum of tensor bytes */
} hfdcp__catalog;

/* One problem found by hfdcp__catalog_verify(). */
typedef struct {
    int status;
    char *message; /* names the file and tensor */
} hfdcp__problem;

/* Collective on `comm`.  Lists the checkpoint at `path` (a directory or a
 * .safetensors file), reads and checks every header (spread over the
 * ranks), checks the index against the files, renames with `km` (may be
 * NULL; a collision is HFDCP_ERR_FORMAT), merges DCP shards (holes and
 * overlaps are HFDCP_ERR_FORMAT naming the tensor and the boxes), and
 * gives every rank the same catalog or the same error. */
int hfdcp__catalog_open(MPI_Comm comm, const char *path,
                        const hfdcp_key_map *km, hfdcp__catalog **out);

/* Like hfdcp__catalog_open() on one process (MPI_COMM_SELF) but does not
 * stop at the first problem: every problem found is appended to
 * *problems (caller frees with hfdcp__problems_free()).  Returns HFDCP_OK
 * when there are none; *out (may be NULL) receives the catalog when it
 * could be built. */
int hfdcp__catalog_verify(const char *path, hfdcp__catalog **out,
                          hfdcp__problem **problems, size_t *n_problems);
void hfdcp__problems_free(hfdcp__problem *p, size_t n);

const hfdcp__tensor *hfdcp__catalog_find(const hfdcp__catalog *c,
                                         const char *name);
void hfdcp__catalog_free(hfdcp__catalog *c);

/* ------------------------------------------------------------------------
 * mpiio.c: the only file that calls MPI_File_*
 * ---------------------------------------------------------------------- */

/* One transfer between a box of a row-major array in the file and a box of
 * a row-major array in memory.  Both arrays have elements of `bits` bits;
 * for sub-byte dtypes (bits 4, 6) the innermost extents and starts must
 * cover whole bytes (else HFDCP_ERR_UNSUPPORTED).  ndim 0 is one element. */
typedef struct {
    uint64_t file_offset;  /* byte offset in the file of the file array's
                              first element */
    void *mem;             /* first element of the memory array */
    int ndim;
    int bits;
    const int64_t *fshape; /* file array shape */
    const int64_t *fstart; /* box start in the file array */
    const int64_t *mshape; /* memory array shape */
    const int64_t *mstart; /* box start in the memory array */
    const int64_t *count;  /* box size (same in both) */
} hfdcp__piece;

typedef struct hfdcp__mfile hfdcp__mfile;

/* Collective on `comm`: opens `path` (MPI_MODE_RDONLY, or
 * MPI_MODE_WRONLY|MPI_MODE_CREATE when `write`) with `info` merged over
 * hfdcp's default hints.  Agreed status on every rank. */
int hfdcp__mfile_open(MPI_Comm comm, const char *path, bool write,
                      MPI_Info info, hfdcp__mfile **out);

/* Collective: moves every piece of this rank (n may be 0) with collective
 * MPI-IO calls whose file view and memory datatype are built from the
 * pieces (no staging copy).  Pieces may come in any order; pieces whose
 * file bytes overlap (reads only) are handled.  Sizes above 2 GiB per
 * rank, per piece and per file work.  Agreed status on every rank; the
 * message names the file. */
int hfdcp__mfile_transfer(hfdcp__mfile *f, bool write,
                          const hfdcp__piece *pieces, size_t n);

/* Collective: MPI_File_sync. Agreed status. */
int hfdcp__mfile_sync(hfdcp__mfile *f);

/* Collective: closes and frees (also on error).  Agreed status. */
int hfdcp__mfile_close(hfdcp__mfile *f);

/* Collective: sets the file size (MPI_File_set_size).  Agreed status. */
int hfdcp__mfile_set_size(hfdcp__mfile *f, uint64_t size);

/* ------------------------------------------------------------------------
 * convert.c
 * ---------------------------------------------------------------------- */

/* true if values of `from` can be converted to `to` (same dtype, or both
 * among F64, F32, F16, BF16). */
bool hfdcp__can_convert(hfdcp_dtype from, hfdcp_dtype to);

/* Converts n elements in place-free fashion: src (dtype from) -> dst
 * (dtype to); exact where representable, round to nearest even otherwise;
 * NaN stays NaN, overflow becomes infinity. */
void hfdcp__convert(hfdcp_dtype from, const void *src, hfdcp_dtype to,
                    void *dst, size_t n);

#endif /* HFDCP_INTERNAL_H */
