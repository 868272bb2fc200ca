/*
 * hfdcp_internal.h - shared internal declarations.  Included by the library
 * sources in src/ and by the tests in mpi_tests/ (which link the static
 * library); never installed.  Names here start with hfdcp__ (double
 * underscore).  The test hooks are in hfdcp_testing.h.
 *
 * Layers, bottom up (each file may use the ones above it in this list):
 *   status.c   errors, thread-local message, agreement across ranks
 *   dtype.c    the 22 dtypes
 *   util.c     string map, growable buffers, checked arithmetic
 *   crc32c.c   CRC-32C of buffers, joined across pieces and ranks (ISA-L)
 *   box.c      n-dimensional boxes: intersection, tiling checks
 *   utf8.c     the one UTF-8 decoder, the strict UTF-8 check
 *   json.c     strict JSON reading and writing (the only user of cJSON)
 *   format.c   the safetensors header: parse, check, serialize
 *   index.c    model.safetensors.index.json: parse, serialize
 *   keymap/    regex renaming: Python re on PCRE2 (see keymap_internal.h)
 *   catalog_list.c, catalog_read.c, catalog_merge.c, catalog.c
 *              what a checkpoint directory holds: its files listed, their
 *              headers read, merged into tensors; shared with every rank
 *              (see catalog_internal.h)
 *   mpiio*.c   the only users of MPI_File_*: pieces -> datatypes -> I/O
 *   convert.c  F64/F32/F16/BF16 conversion
 *   load_check.c   checked loads: CRC-32C of the chunks a load reads
 *   reader.c   the public reader
 *   filemap.c, plan.c   file maps, the save plan
 *   publish.c  temporary names, shared creation, renames, index last
 *   consolidate.c   shard files -> a checkpoint (reader + plan + publish)
 *   writer_direct.c, writer_shards.c, writer_commit.c, writer_async.c,
 *   writer.c   the public writer: the direct and the sharded writing, the
 *              commit's steps (plan + publish; consolidation after a
 *              sharded save), the asynchronous commit, the API (see
 *              writer_internal.h)
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

/* Collective on `comm`.  The library's own communicator: a duplicate of
 * `comm` whose errors come back as codes (MPI_ERRORS_RETURN).  `who`
 * names the caller in messages.  When the duplicate fails, *out is
 * MPI_COMM_NULL and the status is not agreed (there is nothing to agree
 * on); when only the error handler fails, *out is the duplicate and the
 * caller agrees on the status and frees it. */
int hfdcp__comm_dup(MPI_Comm comm, const char *who, MPI_Comm *out);

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

/* Makes room for element `count` (0-based) in a growable array: when
 * count >= *cap, doubles the capacity of *array (first 64) until it holds
 * it; elements of `elem` bytes.  Pushing one element is count == the
 * number held.  HFDCP_ERR_NOMEM naming `what` on failure (the array is
 * kept). */
int hfdcp__grow(void *array, size_t *cap, size_t count, size_t elem,
                const char *what);

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

/* MPI_Allreduce of n uint64_t values with MPI_MIN or MPI_MAX (in and out
 * may not overlap).  Every unsigned MIN and MAX of the library goes through
 * here: MPICH 4.0.2 compares every unsigned integer type as signed
 * (pmodels/mpich#6083), and Open MPI 4.1.2-4.1.4 does so for
 * MPI_UNSIGNED_LONG (open-mpi/ompi#10525); both are Debian 12's.  The
 * values travel as MPI_INT64_T with the top bit flipped, an order-keeping
 * map, which every MPI reduces right.  Collective; an MPI status. */
int hfdcp__allreduce_u64(const uint64_t *in, uint64_t *out, int n, MPI_Op op,
                         MPI_Comm comm);

/* Formats a box as "[o0:e0, o1:e1]" into buf (always NUL-terminated). */
void hfdcp__format_box(char *buf, size_t size, int ndim,
                       const int64_t *offsets, const int64_t *sizes);

/* ------------------------------------------------------------------------
 * crc32c.c: CRC-32C (Castagnoli, as iSCSI and ext4), for tensor checksums
 * ---------------------------------------------------------------------- */

/* Every function here is local, pure and thread-safe. */

/* The CRC-32C of buf[0..len), continuing `crc`: 0 starts a checksum, a
 * previous result continues it (zlib's crc32() convention), so
 * crc32c(crc32c(0, A), B) == crc32c(0, A || B).  crc32c(0, "123456789")
 * is 0xE3069283.  buf may be NULL when len is 0. */
uint32_t hfdcp__crc32c(uint32_t crc, const void *buf, size_t len);

/* The CRC-32C of A || B from crc1 = crc32c(A), crc2 = crc32c(B) and
 * len2 = |B| (zlib's crc32_combine()).  O(log len2). */
uint32_t hfdcp__crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);

/* A CRC register moved over `len` zero bytes, with no init or final xor:
 * reg * x^(8 len) mod P, the primitive of the two above and below.
 * O(log len); any len up to 2^64 - 1. */
uint32_t hfdcp__crc32c_shift(uint32_t reg, uint64_t len);

/* One tensor's CRC-32C when its bytes are split into runs held by several
 * ranks (a column split: every row's r-th part on rank r).  Each rank adds
 * the runs it holds, with their byte offsets in the tensor, then takes its
 * part; the XOR of every rank's part (MPI_BXOR on MPI_UINT32_T) and the
 * tensor's length give the CRC-32C:
 *     hfdcp__crc32c_runs r = {0};
 *     for each run held: hfdcp__crc32c_runs_add(&r, offset, buf, len);
 *     part = hfdcp__crc32c_runs_part(&r, L);
 *     MPI_Allreduce(&part, &x, 1, MPI_UINT32_T, MPI_BXOR, comm);
 *     crc = hfdcp__crc32c_finish(x, L);
 * A rank holding nothing contributes 0.  Runs may come in any order: in
 * increasing offset each costs its bytes and one 32-step product (the gap
 * between runs is kept), otherwise O(log L) more.  The runs of all ranks
 * must not overlap (overlapping bytes would cancel in the XOR) and must
 * end by L; bytes no run covers count as zeros.  Zero-initialize; nothing
 * to free. */
typedef struct {
    uint32_t crc0;    /* the runs so far, as if the tensor ended at `end` */
    uint64_t end;     /* the furthest end of a run added so far */
    uint64_t gap;     /* the last gap moved over (0: none yet) */
    uint32_t gap_x8n; /* and its x^(8 gap) mod P */
} hfdcp__crc32c_runs;
void hfdcp__crc32c_runs_add(hfdcp__crc32c_runs *r, uint64_t offset,
                            const void *buf, size_t len);
uint32_t hfdcp__crc32c_runs_part(const hfdcp__crc32c_runs *r,
                                 uint64_t tensor_len);
/* The CRC-32C of a tensor of `tensor_len` bytes from the XOR of the parts
 * of its runs: hfdcp__crc32c_finish(p, L) with p the crc0 (init 0, no
 * final xor) of the whole tensor. */
uint32_t hfdcp__crc32c_finish(uint32_t parts, uint64_t tensor_len);

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
 * utf8.c: the one UTF-8 decoder
 * ---------------------------------------------------------------------- */

/* Decodes the code point starting at s[0], of the `len` bytes available.
 * Returns the bytes it takes (1 to 4) and sets *cp (may be NULL); returns
 * 0 and leaves *cp alone when the bytes there are not well-formed UTF-8
 * (Unicode Table 3-7, as Python's strict decoder and PCRE2 see it): a
 * continuation byte without a lead byte, C0, C1 or F5-FF, an overlong
 * form, a surrogate (U+D800-U+DFFF), a code point above U+10FFFF, a
 * missing continuation byte, a sequence cut by `len`, or len == 0.  A NUL
 * byte is U+0000 (1 byte).  The bytes are read in order and none after
 * the first that does not fit, so it never reads past a string's NUL:
 * len = 4 is safe there.  Local; no message. */
size_t hfdcp__utf8_next(const unsigned char *s, size_t len, uint32_t *cp);
/* Strict UTF-8 check of `n` bytes (what hfdcp__utf8_next() accepts, NUL
 * bytes included).  On failure returns false, *bad_at (may be NULL) = the
 * offset of the offending sequence's first byte, *why (may be NULL) = a
 * short reason ("overlong encoding", ...); no message is set. */
bool hfdcp__utf8_valid(const char *s, size_t n, size_t *bad_at,
                       const char **why);

/* ------------------------------------------------------------------------
 * json.c: strict JSON for the safetensors header and the index
 * ---------------------------------------------------------------------- */

/* Strict JSON, used by format.c and index.c; json.c is the only file that
 * includes cJSON.h (elsewhere a node is an incomplete type, read with the
 * accessors below).  RFC 8259 exactly: strict UTF-8 (no overlong forms,
 * surrogates or code points above U+10FFFF), no raw control characters in
 * strings, no leading zeros, only JSON whitespace, nothing after the
 * value, no duplicate key in any object at any depth.  "\u0000" is
 * HFDCP_ERR_UNSUPPORTED (a C string cannot hold it).  Numbers keep their
 * exact text, so integers are read exactly.  Messages start with `what`
 * ("file 'x': header is not valid JSON at byte 12: ...").  Local. */

/* Largest integer a JSON number may hold here (as the Python and JS
 * readers can represent it exactly). */
#define HFDCP_JSON_MAX_INT (UINT64_C(1) << 53)

typedef struct cJSON hfdcp__json_node;
typedef struct hfdcp__json_num hfdcp__json_num;
typedef struct {
    hfdcp__json_node *root;
    hfdcp__json_num *nums; /* the number tokens that are not plain
                              integers in [0, 2^53], in document order */
    size_t n_nums;
    const char *text;      /* the text parsed (not owned: keep it alive
                              while the numbers are read) */
} hfdcp__json;
/* *out is zeroed on failure; free with hfdcp__json_free(). */
int hfdcp__json_parse(const char *text, size_t len, const char *what,
                      hfdcp__json *out);
void hfdcp__json_free(hfdcp__json *doc);

/* Reading a tree: nodes are borrowed from their document.  Every function
 * but the first two takes a non-NULL node. */
enum {
    HFDCP_JSON_MISSING, /* NULL: an absent member */
    HFDCP_JSON_NULL,
    HFDCP_JSON_BOOL,
    HFDCP_JSON_NUMBER,
    HFDCP_JSON_STRING,
    HFDCP_JSON_ARRAY,
    HFDCP_JSON_OBJECT
};
int hfdcp__json_kind(const hfdcp__json_node *node);
/* "an object", "an array", "a string", "a number", "a boolean", "null" or
 * "missing", for messages. */
const char *hfdcp__json_kind_name(const hfdcp__json_node *node);
/* An array's first element or an object's first member (NULL if none),
 * and the one after `node` (NULL after the last). */
const hfdcp__json_node *hfdcp__json_first(const hfdcp__json_node *node);
const hfdcp__json_node *hfdcp__json_next(const hfdcp__json_node *node);
/* How many elements or members. */
size_t hfdcp__json_count(const hfdcp__json_node *node);
/* A member's key; NULL for an array element or the root. */
const char *hfdcp__json_key(const hfdcp__json_node *node);
/* A string's value; NULL when `node` is not a string. */
const char *hfdcp__json_str(const hfdcp__json_node *node);

/* Reads `item` of `doc` as an integer in [0, 2^53].  HFDCP_ERR_FORMAT
 * naming `what` when it is not a number, negative, above 2^53, or written
 * with a fraction or exponent (with `allow_float_form`, "4305.0" and
 * "4.305e3" are accepted when the value is a whole number). */
int hfdcp__json_uint(const hfdcp__json *doc, const hfdcp__json_node *item,
                     bool allow_float_form, const char *what, uint64_t *out);
/* The fast path of hfdcp__json_uint(), without a message: true and *out
 * when `item` is written as a plain integer in [0, 2^53]; false for
 * anything else (then hfdcp__json_uint() says what is wrong). */
bool hfdcp__json_plain_uint(const hfdcp__json *doc,
                            const hfdcp__json_node *item, uint64_t *out);

/* Returns a key that occurs twice in keys[0..n) (may sort `keys`), or
 * NULL.  Also used on the names a serializer is about to write. */
const char *hfdcp__json_find_dup(const char **keys, size_t n);

/* A top-level object read one member at a time (the safetensors header:
 * a whole tree of 100,000 entries is over a million small allocations).
 * _open checks the whole text as hfdcp__json_parse() does; if it is not
 * '{' members '}' it fails with the message a whole parse would give.
 * Each _next parses one member on its own (its keys checked at every
 * depth) and frees the one before: *member is the member (its key is the
 * top-level key; duplicates among those are the caller's to find), NULL
 * after the last.  The members' numbers are read with `doc`.  _done
 * (after the last member) is HFDCP_ERR_INTERNAL, naming `what`, when the
 * members did not hold every number token.  _close frees everything; it
 * is safe on a zeroed struct or after a failed _open. */
typedef struct {
    hfdcp__json doc;   /* the text and its numbers (root: NULL) */
    size_t n_seps;     /* the top-level ',' and '}': at least the number
                          of members */
    /* private to json.c */
    size_t len, *seps, n_total, start, k, num_i;
    const char *what;
    hfdcp__json_node *root;
    hfdcp__buf wrap;
} hfdcp__json_members;
int hfdcp__json_members_open(const char *text, size_t len, const char *what,
                             hfdcp__json_members *m);
int hfdcp__json_members_next(hfdcp__json_members *m,
                             const hfdcp__json_node **member);
int hfdcp__json_members_done(const hfdcp__json_members *m, const char *what);
void hfdcp__json_members_close(hfdcp__json_members *m);

/* Appends `s` (valid UTF-8) as a JSON string literal: with `ascii`, as
 * Python's json.dumps does by default (ensure_ascii: \uXXXX for everything
 * outside ' '..'~', lowercase hex, surrogate pairs); without, as the Rust
 * crate's serde_json does (only '"', '\\' and control characters escaped;
 * UTF-8 passed through). */
void hfdcp__json_put_string(hfdcp__buf *b, const char *s, bool ascii);

/* ------------------------------------------------------------------------
 * format.c: one safetensors header
 * ---------------------------------------------------------------------- */

/* Largest header we accept when reading (the Rust crate's limit) and when
 * writing (the Hub's metadata parser limit). */
#define HFDCP_HEADER_MAX_READ 100000000u
#define HFDCP_HEADER_MAX_WRITE 25000000u
/* The data buffer's alignment in the files hfdcp writes (hint
 * hfdcp_data_alignment, docs/format.md): the default and the largest. */
#define HFDCP_ALIGN_DEFAULT ((uint64_t)8)
#define HFDCP_ALIGN_MAX ((uint64_t)16 << 20)

/* Whether `a` is a valid data alignment: a power of two from
 * HFDCP_ALIGN_DEFAULT to HFDCP_ALIGN_MAX. */
static inline bool hfdcp__align_ok(uint64_t a)
{
    return a >= HFDCP_ALIGN_DEFAULT && a <= HFDCP_ALIGN_MAX &&
           (a & (a - 1)) == 0;
}

typedef struct {
    char *name;        /* NUL-terminated UTF-8, as stored */
    hfdcp_dtype dtype;
    int ndim;
    int64_t *shape;    /* ndim entries (NULL when ndim == 0) */
    int64_t *offsets;  /* saved_offsets from DCP_SHARDING_INFO: ndim
                          entries (never NULL when parsed from a sharded
                          file, even for a scalar), or NULL when the file
                          has none */
    uint64_t begin;    /* data_offsets, relative to the data buffer */
    uint64_t end;
    uint32_t crc;      /* serializing with hfdcp__header.crc32c: the
                          CRC-32C of the entry's data (not parsed: see
                          hfdcp__header_crc32c) */
} hfdcp__entry;

typedef struct {
    char *key;
    char *value;
} hfdcp__kv;

typedef struct {
    hfdcp__entry *entries; /* parsed: sorted by (begin, end, name), the
                              data order, zero-size tensors first among
                              those at one offset, ties by name */
    size_t n_entries;
    hfdcp__kv *meta;       /* __metadata__ pairs in file order, without
                              DCP_SHARDING_INFO (parsed into the entries'
                              offsets); every string malloc'd */
    size_t n_meta;
    bool meta_null;        /* __metadata__ was JSON null */
    bool sharded;          /* __metadata__ has DCP_SHARDING_INFO (then every
                              entry has offsets); DCP_VERSION, when present,
                              stays in meta */
    uint64_t header_len;   /* N, the JSON length (padding included) */
    uint64_t data_size;    /* bytes of the data buffer (= last end) */
    uint64_t align;        /* serializing: the data buffer starts at a
                              multiple of this (a power of two from 8 to
                              HFDCP_ALIGN_MAX); 0 is 8 */
    bool crc32c;           /* serializing: write HFDCP_CRC32C_KEY from the
                              entries' crc (h->meta must not have it) */
    uint64_t *crc_at;      /* serializing with crc32c, when not NULL: gets,
                              per entry, the offset in the output of its
                              8 hex digits (hfdcp__header_put_crc) */
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

/* The __metadata__ key of the shard files hfdcp writes that declares
 * each tensor's global shape: JSON text of {name: [dim, ...]} naming
 * exactly the file's tensors (docs/format.md).  PyTorch ignores it. */
#define HFDCP_GLOBAL_SHAPES_KEY "hfdcp_global_shapes"

/* The declared global shapes of h's entries, from HFDCP_GLOBAL_SHAPES_KEY
 * in h->meta: *shapes is NULL when h has no such key, else one malloc'd
 * block (free() it) of h->n_entries pointers, (*shapes)[i] the
 * h->entries[i].ndim dims of entry i.  HFDCP_ERR_FORMAT naming `file`
 * (and the tensor) when the value is not JSON text of an object naming
 * exactly the file's tensors, each with an array of ndim integers in
 * [0, 2^53]. */
int hfdcp__header_global_shapes(const hfdcp__header *h, const char *file,
                                int64_t ***shapes);

/* The __metadata__ key of the files hfdcp writes that holds each
 * tensor's (or, in a shard file, chunk's) CRC-32C: JSON text of
 * {name: "8 lowercase hex digits"} naming exactly the file's tensors, in
 * data order (docs/format.md).  Other readers ignore it. */
#define HFDCP_CRC32C_KEY "hfdcp_crc32c"

/* The CRC-32C values of h's entries, from HFDCP_CRC32C_KEY in h->meta:
 * *crcs is NULL when h has none, else malloc'd h->n_entries values,
 * (*crcs)[i] for h->entries[i].  HFDCP_ERR_FORMAT naming `file` (and the
 * tensor) when the value is not JSON text of an object naming exactly the
 * file's tensors, each with a string of 8 hex digits. */
int hfdcp__header_crc32c(const hfdcp__header *h, const char *file,
                         uint32_t **crcs);

/* Writes `crc` as the 8 hex digits at offset `at` of a serialized header
 * (an offset from hfdcp__header.crc_at): the header keeps its length, so
 * it can be filled in once the data is known. */
void hfdcp__header_put_crc(char *header, uint64_t at, uint32_t crc);

/* Serializes `h` into a complete file prefix: the 8-byte length, then
 * compact JSON starting with '{': "__metadata__" first with
 * "format":"pt" and then h->meta in order (a "format" key in h->meta
 * replaces "pt"); with h->crc32c, HFDCP_CRC32C_KEY from the entries'
 * crc in the given order (see crc_at); when h->sharded, then DCP_SHARDING_INFO (the text
 * Python's json.dumps gives for {name: {"saved_offsets": [..]}}, entries
 * in the given order) and DCP_VERSION ("1.0", or h->meta's value, which
 * is then written here instead of in its place); then the entries in the
 * given order with their begin/end as given; padded with spaces so that
 * 8 + N is a multiple of h->align (8 when 0; N is then a multiple of 8
 * too).  So serialize(parse(serialize(h))) == serialize(h) when h->align
 * is 0 (a parsed header has align 0).
 * Refused with HFDCP_ERR_ARG (never writing a file the parser would
 * refuse): invalid UTF-8, a duplicate or reserved name, a size not
 * matching dtype x shape, data not tiling [0, end) exactly, a duplicate
 * meta key, DCP_SHARDING_INFO in h->meta, an invalid h->align.  Refused
 * (HFDCP_ERR_RANGE) above HFDCP_HEADER_MAX_WRITE, padding included.  *out
 * is malloc'd, *out_len = 8 + N. */
int hfdcp__header_serialize(const hfdcp__header *h, char **out,
                            size_t *out_len);

/* The dtype order of the reference writers: larger element first, then
 * the Rust crate's enum order (descending), then name (strcmp):
 *   U64 I64 F64 C64 F32 U32 I32 BF16 F16 U16 I16 F8_E5M2FNUZ F8_E4M3FNUZ
 *   F8_E8M0 F8_E4M3 F8_E5M2 I8 U8 BOOL F6_E3M2 F6_E2M3 F4
 * (sub-byte types last).  A qsort comparator on hfdcp__entry. */
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
 * file names are HFDCP_ERR_FORMAT.  total_size may be written "4305.0"
 * (a whole number); other metadata and top-level keys are ignored. */
int hfdcp__index_parse(const char *buf, size_t len, const char *what,
                       hfdcp__index *out);
/* The same as the loaders read an index (the catalog): a missing
 * "metadata" object or "total_size" (then total_size is 0) is no error.
 * *missing (may be NULL) gets what the index lacks, as the end of a
 * message that starts with the index's name (' has no "metadata" object'
 * or ': metadata has no "total_size"', a static string), or NULL. */
int hfdcp__index_parse_lenient(const char *buf, size_t len, const char *what,
                               hfdcp__index *out, const char **missing);
void hfdcp__index_free(hfdcp__index *ix);

/* Serializes an index as the Python tooling does: exactly
 * json.dumps(index, indent=2) (ensure_ascii), weight_map in the given
 * order, no newline at the end; HFDCP_ERR_ARG for a bad file name.
 * *out is malloc'd and NUL-terminated (*out_len excludes the NUL). */
int hfdcp__index_serialize(const hfdcp__index *ix, char **out,
                           size_t *out_len);

/* ------------------------------------------------------------------------
 * keymap/keymap.c (its files share src/keymap/keymap_internal.h)
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
    int status;    /* what open would return, or for a warning what
                      `hfdcp verify --strict` reports */
    char *message; /* names the file and tensor */
    bool warning;  /* a rule the reader does not enforce (docs/format.md:
                      bookkeeping of the index that no loader reads) */
} hfdcp__problem;

/* Collective on `comm`.  Lists the checkpoint at `path` (a directory or a
 * .safetensors file), reads and checks every header (spread over the
 * ranks), checks the index against the files (its bookkeeping, which only
 * verify reports, aside: docs/format.md), renames with `km` (may be NULL;
 * a collision is HFDCP_ERR_FORMAT), merges DCP shards (a box saved by
 * several files is read from the first; holes and partial overlaps are
 * HFDCP_ERR_FORMAT naming the tensor and the boxes), and gives every rank
 * the same catalog or the same error. */
int hfdcp__catalog_open(MPI_Comm comm, const char *path,
                        const hfdcp_key_map *km, hfdcp__catalog **out);

/* Reads the whole regular file `path` (an index: at most
 * HFDCP_HEADER_MAX_READ bytes) into *out, NUL-terminated, *len bytes.
 * HFDCP_ERR_IO (open, read, not a regular file), HFDCP_ERR_FORMAT (too
 * large), HFDCP_ERR_NOMEM. */
int hfdcp__read_small_file(const char *path, char **out, size_t *len);

/* Like hfdcp__catalog_open() on one process (MPI_COMM_SELF) but does not
 * stop at the first problem: every problem found is appended to
 * *problems (caller frees with hfdcp__problems_free()), and so is every
 * warning (problem.warning: what open accepts).  Returns HFDCP_OK when
 * there are only warnings or nothing; *out (may be NULL) then receives
 * the catalog. */
int hfdcp__catalog_verify(const char *path, hfdcp__catalog **out,
                          hfdcp__problem **problems, size_t *n_problems);
void hfdcp__problems_free(hfdcp__problem *p, size_t n);

const hfdcp__tensor *hfdcp__catalog_find(const hfdcp__catalog *c,
                                         const char *name);
void hfdcp__catalog_free(hfdcp__catalog *c);

/* ------------------------------------------------------------------------
 * mpiio*.c: the only files that call MPI_File_* (mpiio.c the transfer;
 * mpiio_internal.h, theirs alone, lists them)
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

/* *p becomes the 1-D piece of `len` bytes at file offset `off` from
 * `mem` (a header, say); `len` must outlive the piece. */
void hfdcp__piece_bytes(hfdcp__piece *p, uint64_t off, void *mem,
                        const int64_t *len);

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

/* Local: the data alignment of the files a save or a consolidation
 * writes, from the hint hfdcp_data_alignment of `info` (may be
 * MPI_INFO_NULL): a power of two from 8 to HFDCP_ALIGN_MAX, else
 * HFDCP_ALIGN_DEFAULT.  HFDCP_ERR_ARG naming `who` and the value. */
int hfdcp__align_hint(MPI_Info info, const char *who, uint64_t *align);

/* Local: checks hfdcp's own hints in `info` (may be MPI_INFO_NULL), the
 * ones every MPI-IO open reads (hfdcp_aggregate, hfdcp_aggregate_buffer_size,
 * hfdcp_long_runs, hfdcp_sieve_reads, hfdcp_keep_buffer, hfdcp_exchange),
 * so that hfdcp_writer_open, hfdcp_reader_open and hfdcp_consolidate
 * refuse a bad value at once, not at the first transfer.  HFDCP_ERR_ARG
 * "<who>: '<path>': hint KEY=VALUE: expected ...". */
int hfdcp__mpiio_check_hints(MPI_Info info, const char *who, const char *path);

/* The bytes of the buffer kept between transfers (hfdcp_release_buffers;
 * mpiio_buffer.c), 0 when none is kept, and in *taken (when not NULL) how
 * many transfers took it so far.  For the benchmark's memory figures and
 * tests. */
uint64_t hfdcp__mpiio_kept_bytes(uint64_t *taken);

/* The bytes of the node-shared windows kept between aggregated transfers
 * ("Aggregation" in mpiio_agg.c; all the ranks' windows, mapped on this
 * rank), 0 when none are kept, and in *taken (when not NULL) how many
 * transfers took them so far.  For the benchmark's memory figures and
 * tests. */
uint64_t hfdcp__mpiio_kept_shared_bytes(uint64_t *taken);

/* Local.  A buffer of at least *size bytes: the one kept between
 * transfers when it is as large and `keep` allows (*size becomes its
 * size), else a new one; NULL when out of memory.  Give it back with
 * hfdcp__buffer_give(p, *size, keep), which keeps it (when `keep` allows
 * and it is at least as large as the one kept) or frees it. */
void *hfdcp__buffer_take(uint64_t *size, bool keep);
void hfdcp__buffer_give(void *p, uint64_t size, bool keep);

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

/* ------------------------------------------------------------------------
 * load_check.c: checked loads (hint hfdcp_verify_checksums)
 * ---------------------------------------------------------------------- */

/* Local: the hint hfdcp_verify_checksums of `info` (may be
 * MPI_INFO_NULL): *on for "enable", not for "disable" or no hint.
 * HFDCP_ERR_ARG "<who>: hint hfdcp_verify_checksums=V: expected enable or
 * disable" for any other value. */
int hfdcp__verify_hint(MPI_Info info, const char *who, bool *on);

/* Collective on `comm`, after the transfer of `file`'s `n` pieces of this
 * rank (their memory holds the file's bytes): checks the CRC-32C of every
 * chunk (entry) of the file that one rank's pieces or all ranks' pieces
 * together tile exactly against its hfdcp_crc32c value; nothing when the
 * file has none.  A mismatch is HFDCP_ERR_FORMAT naming the file, the
 * tensor and its byte range in the file.  Agreed status. */
int hfdcp__load_check(MPI_Comm comm, const hfdcp__file *file,
                      const hfdcp__piece *pieces, size_t n);

/* ------------------------------------------------------------------------
 * reader.c
 * ---------------------------------------------------------------------- */

/* For bindings that refuse a request themselves, before it could reach
 * hfdcp_reader_add() (the Fortran module: a non-contiguous array): fails
 * an add as hfdcp_reader_add() does.  Sets the message "request for
 * tensor '<name>': <why>", remembers it (when it is the first error of an
 * add since the last load) so that the next hfdcp_reader_load() returns
 * `status` with it on every rank, and returns `status`.  Local.  Exported
 * for libhfdcp_f. */
HFDCP_API int hfdcp__reader_add_failed(hfdcp_reader *r, int status,
                                       const char *name, const char *why);

/* Collective on `comm`: a reader of the catalog `cat`, already open on
 * the same ranks (consolidation's, opened in shard mode), with the hints
 * `info` (checked by the caller; copied).  The reader borrows `cat`: the
 * caller frees it after the reader.  Unlike a public reader, it opens
 * each file at the first load that needs it and keeps it open until
 * hfdcp__reader_close_files(), so that loads in rounds open every file
 * once.  Agreed status. */
int hfdcp__reader_open_catalog(MPI_Comm comm, hfdcp__catalog *cat,
                               MPI_Info info, hfdcp_reader **out);

/* Collective on the reader's communicator: closes the files a reader of
 * hfdcp__reader_open_catalog() keeps open (none for a public reader).
 * Every rank must call it before hfdcp_reader_free().  Agreed status. */
int hfdcp__reader_close_files(hfdcp_reader *r);

/* ------------------------------------------------------------------------
 * filemap.c, plan.c, writer*.c: the writer
 * ---------------------------------------------------------------------- */

/* A deep copy of `m` (the writer keeps its own, so the caller may change
 * or free the map after hfdcp_writer_open()). */
int hfdcp__file_map_dup(const hfdcp_file_map *m, hfdcp_file_map **out);

/* N in the names model-{i:05d}-of-{N:05d}.safetensors of a save with the
 * file map `m`: the largest index in the map, whether a saved tensor uses
 * it or not, as PyTorch's HuggingFace writer takes
 * max(fqn_to_index_mapping.values()); 1 for an empty map; 0 for NULL (no
 * map: the names follow the files actually made). */
int hfdcp__file_map_files(const hfdcp_file_map *m);

/* One chunk registered with hfdcp_writer_add(), as the planner sees it. */
typedef struct {
    const char *name;
    hfdcp_dtype dtype;
    int ndim;
    const int64_t *shape;   /* global shape (ndim) */
    const int64_t *offsets; /* the chunk's box in the tensor (ndim) */
    const int64_t *sizes;   /* (ndim) */
    int file_index;         /* the writer's file map entry for `name`:
                               >= 1; 0 when the writer has no file map;
                               -1 when its map lacks `name` */
    const void *data;       /* the user's chunk (not used by the planner) */
} hfdcp__wchunk;

/* What the plan says about one chunk of a rank. */
typedef struct {
    int32_t file;    /* index in the plan's file table */
    int32_t write;   /* 1: this rank writes the chunk; 0: another rank
                        holding the same box does (replicated tensor) */
    uint64_t offset; /* absolute file offset of the tensor's first byte */
    uint32_t tensor; /* the tensor's number in the plan (0..n_tensors) */
    uint32_t unused; /* zero */
} hfdcp__wassign;

/* A save plan.  From hfdcp__wplan_make(): every rank has the file table
 * and its own assignments; rank 0 also has the headers and the index.
 * From hfdcp__wplan_global(): everything, with every rank's assignments
 * one rank after the other in `assign`. */
typedef struct {
    size_t n_files;
    char **file_names;    /* "model-00001-of-00002.safetensors" */
    uint64_t *file_sizes; /* bytes, header included */
    size_t n_tensors;     /* tensors in the checkpoint */
    size_t n_assign;
    hfdcp__wassign *assign;
    /* Rank 0 / global plan only (NULL otherwise): */
    char **headers;       /* per file: 8-byte length + header JSON; with
                             checksums, every CRC-32C still 00000000
                             until hfdcp__wplan_put_crcs() */
    size_t *header_lens;
    uint32_t *tensor_file;   /* per tensor: its file */
    uint64_t *tensor_bytes;  /* per tensor: its data's length */
    uint64_t *crc_at;        /* with checksums, per tensor: where its
                                CRC's hex digits are in its file's header
                                (NULL without checksums) */
    hfdcp__index index;   /* weight_map sorted by name; files[i] point
                             into file_names */
    /* Global plan only: */
    int nranks;
    size_t *rank_chunks;  /* chunks of each rank, in rank order */
    uint64_t *rank_bytes; /* bytes each rank was chosen to write */
} hfdcp__wplan;

/* Packs a rank's chunks compactly (names, dtypes, shapes, boxes, file map
 * entries) and `map_files`, hfdcp__file_map_files() of the rank's file
 * map (0: none), for the planner. */
int hfdcp__wplan_pack(const hfdcp__wchunk *chunks, size_t n, int map_files,
                      hfdcp__buf *out);

/* The global plan, computed by one process from every rank's packed
 * chunks (`packed[r]`, `lens[r]` bytes): agreement of every holder on
 * dtype, shape and file map entry, every rank on the file map's largest
 * index, chunks inside their tensor, exact tiling, replicated boxes
 * written once (balanced over their holders), file assignment (file map,
 * else HF's greedy split under `max_shard_bytes` in registration order,
 * else one file), file names (model-{i:05d}-of-{N:05d}.safetensors, N
 * the map's largest index or, without a map, the number of files; a
 * single file without a map is model.safetensors) and layout
 * (each file's data buffer at a multiple of `align`, as hfdcp__header's).
 * HFDCP_ERR_PLAN / HFDCP_ERR_MISMATCH name the tensor, ranks and values.
 * No communication. */
int hfdcp__wplan_global(int nranks, const void *const *packed,
                        const size_t *lens, uint64_t max_shard_bytes,
                        uint64_t align, bool checksums, hfdcp__wplan *out);

/* Rank 0 of a plan made with checksums: writes into the headers each
 * tensor's CRC-32C, from the XOR of the parts of its runs computed by
 * the ranks that write them (xor_parts[t] for tensor t, as
 * hfdcp__crc32c_runs_part gives them). */
void hfdcp__wplan_put_crcs(hfdcp__wplan *p, const uint32_t *xor_parts);


/* Collective: packs this rank's chunks with `map_files` (as
 * hfdcp__wplan_pack), gathers them on rank 0, which computes the global
 * plan, and gives every rank its part.  Same status on every rank. */
int hfdcp__wplan_make(MPI_Comm comm, const hfdcp__wchunk *chunks, size_t n,
                      int map_files, uint64_t max_shard_bytes, uint64_t align,
                      bool checksums, hfdcp__wplan *out);

void hfdcp__wplan_free(hfdcp__wplan *p);

/* The bytes of chunk data the last hfdcp_writer_commit_async of `w`
 * copied on this rank (its snapshot); 0 before one.  Local.  For the
 * benchmark's memory figures and the tests. */
uint64_t hfdcp__writer_snapshot_bytes(const hfdcp_writer *w);

/* hfdcp__reader_add_failed() for the writer: the message is
 * "hfdcp_writer_add (rank R): tensor '<name>': <why>", and the next
 * hfdcp_writer_commit() reports it on every rank (when it is the writer's
 * first failed add and the writer has not committed).  Local.  Exported
 * for libhfdcp_f. */
HFDCP_API int hfdcp__writer_add_failed(hfdcp_writer *w, int status,
                                       const char *name, const char *why);

/* ------------------------------------------------------------------------
 * publish.c: temporary names and publication, shared by writer.c and
 * consolidate.c
 * ---------------------------------------------------------------------- */

/* Temporary files: ".hfdcp-tmp-<16 hex digits>-<final name>.tmp".  The
 * ".tmp" suffix keeps them out of every "*.safetensors" listing. */
#define HFDCP_TMP_PREFIX ".hfdcp-tmp-"

/* The temporary and final paths of one commit. */
typedef struct {
    size_t n;
    char **tmp;        /* per file of the plan */
    char **final;      /* per file of the plan */
    char *index_tmp, *index_final;
    char tag[17];
} hfdcp__paths;

/* The paths of `plan`'s files and index in the directory `dir`:
 * ".hfdcp-tmp-<tag in hex>-<name>.tmp" and the final names.  Local. */
int hfdcp__paths_make(const char *dir, const hfdcp__wplan *plan,
                      uint64_t tag, hfdcp__paths *p);
void hfdcp__paths_free(hfdcp__paths *p);

/* A random tag for temporary names (rank 0 draws it and broadcasts it). */
uint64_t hfdcp__random_tag(void);

/* mkdir -p, then checks that `path` is a directory.  Local. */
int hfdcp__make_dir(const char *path);

/* Creates `path` of `size` bytes and reserves them (fallocate, where the
 * file system can), so that a full disk fails here rather than silently
 * during MPI-IO writes; the file has its final size from here on. */
int hfdcp__reserve_space(const char *path, uint64_t size);

/* Collective: rank 0 creates and reserves `path` (hfdcp__reserve_space),
 * then every rank checks that it sees it: HFDCP_ERR_IO naming the rank
 * when the directory is not shared by every rank.  Agreed status. */
int hfdcp__create_shared(MPI_Comm comm, const char *path, uint64_t size);

/* Rank 0, once every file of `plan` is durable under its temporary name:
 * writes the index under its temporary name, removes the old index and
 * stale checkpoint files of `dir`, renames the files into place, then the
 * index, syncing the directory.  On failure removes every file of this
 * commit, the index first when it was already in place. */
int hfdcp__publish(const char *dir, const hfdcp__wplan *plan,
                   const hfdcp__paths *paths);

/* fsync of the directory `path` (EINVAL, a directory that cannot be
 * synced, is not an error).  Local. */
int hfdcp__sync_dir(const char *path);

/* Rank 0: removes the old index of `dir` first (from then on no index
 * names missing files), then its stale files: those of an earlier
 * checkpoint or an interrupted save that a loader listing the directory
 * would pick up (model files, shard files, temporary files: is_stale() in
 * publish.c), but none of this commit's temporary files (tag `tag`) and
 * none of the names in `keep` (may be NULL).  Used by hfdcp__publish and
 * by the writer's sharded save.  Local. */
int hfdcp__remove_old(const char *dir, const char *tag,
                      const hfdcp__strmap *keep);

/* ------------------------------------------------------------------------
 * consolidate.c (with catalog.c): per-rank shard files -> a checkpoint
 * ---------------------------------------------------------------------- */

/* Like hfdcp__catalog_open() (no key map) for consolidation: every file
 * must carry DCP_SHARDING_INFO (else HFDCP_ERR_FORMAT naming the first
 * file that does not), and the shards of a tensor that disagree on dtype
 * or ndim, leave a hole or overlap are HFDCP_ERR_PLAN (naming the tensor,
 * the files and the boxes) instead of HFDCP_ERR_FORMAT. */
int hfdcp__catalog_open_shards(MPI_Comm comm, const char *path,
                               hfdcp__catalog **out);

#endif /* HFDCP_INTERNAL_H */
