/*
 * util.c - small shared tools: checked arithmetic, strings, a string hash
 * map, byte buffers for MPI messages, and a broadcast of any size.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp_internal.h"

bool hfdcp__mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

bool hfdcp__add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

int hfdcp__tensor_bytes(hfdcp_dtype dtype, int ndim, const int64_t *shape,
                        const char *what, uint64_t *out)
{
    uint64_t numel = 1, bits;
    int b = hfdcp_dtype_bits(dtype);

    if (b == 0)
        return hfdcp__error(HFDCP_ERR_ARG, "%s: invalid dtype %d", what,
                            (int)dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return hfdcp__error(HFDCP_ERR_RANGE,
                                "%s: negative dimension %" PRId64, what,
                                shape[i]);
        if (!hfdcp__mul_u64(numel, (uint64_t)shape[i], &numel))
            return hfdcp__error(HFDCP_ERR_RANGE,
                                "%s: element count overflows 64 bits", what);
    }
    if (!hfdcp__mul_u64(numel, (uint64_t)b, &bits))
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "%s: size in bits overflows 64 bits", what);
    if (bits % 8 != 0)
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "%s: %" PRIu64 " elements of %s (%d bits) are not "
                            "a whole number of bytes",
                            what, numel, hfdcp_dtype_name(dtype), b);
    *out = bits / 8;
    return HFDCP_OK;
}

int hfdcp__grow(void *array, size_t *cap, size_t count, size_t elem,
                const char *what)
{
    size_t n;
    void *old, *v;

    if (count < *cap)
        return HFDCP_OK;
    /* `array` points at a typed pointer (T **): read and write it with
     * memcpy rather than through a void ** lvalue (strict aliasing). */
    memcpy(&old, array, sizeof old);
    for (n = *cap ? *cap : 64; n <= count; n *= 2)
        if (n > SIZE_MAX / 2)
            return hfdcp__nomem(what);
    if (n > SIZE_MAX / elem || (v = realloc(old, n * elem)) == NULL)
        return hfdcp__nomem(what);
    memcpy(array, &v, sizeof v);
    *cap = n;
    return HFDCP_OK;
}

char *hfdcp__strdup(const char *s)
{
    return hfdcp__strndup(s, strlen(s));
}

char *hfdcp__strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *hfdcp__asprintf(const char *fmt, ...)
{
    va_list ap, ap2;
    int n;
    char *p;

    va_start(ap, fmt);
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || (p = malloc((size_t)n + 1)) == NULL) {
        va_end(ap2);
        return NULL;
    }
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

char *hfdcp__path_join(const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    return hfdcp__asprintf("%.*s/%s", (int)dl, dir, name);
}

void hfdcp__format_box(char *buf, size_t size, int ndim,
                       const int64_t *offsets, const int64_t *sizes)
{
    size_t used = 0;
    int n;

    if (size == 0)
        return;
    buf[0] = '\0';
    n = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n >= 0; i++) {
        used += (size_t)n;
        if (used >= size)
            return;
        n = snprintf(buf + used, size - used, "%s%" PRId64 ":%" PRId64,
                     i ? ", " : "", offsets[i], offsets[i] + sizes[i]);
    }
    if (n < 0)
        return;
    used += (size_t)n;
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* ---- string map: open addressing, linear probing, FNV-1a ---- */

/* A slot keeps its key's hash: a probe compares hashes and touches the key
 * (another cache line) only when they are equal. */
typedef struct {
    uint64_t hash;
    char *key; /* owned; NULL: empty slot */
    size_t value;
} strmap_slot;

struct hfdcp__strmap {
    strmap_slot *slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    /* FNV's low bits, the ones a power-of-two table uses, mix poorly for
     * names that differ only in digits ("layers.17.mlp.w3"): finish with
     * a 64-bit avalanche (MurmurHash3's fmix64 constants). */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

hfdcp__strmap *hfdcp__strmap_new(void)
{
    return calloc(1, sizeof(hfdcp__strmap));
}

void hfdcp__strmap_free(hfdcp__strmap *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    free(m);
}

static size_t find_slot(const strmap_slot *slots, size_t cap, uint64_t hash,
                        const char *key)
{
    size_t i = (size_t)hash & (cap - 1);
    while (slots[i].key != NULL &&
           (slots[i].hash != hash || strcmp(slots[i].key, key) != 0))
        i = (i + 1) & (cap - 1);
    return i;
}

static int grow(hfdcp__strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    strmap_slot *slots = calloc(cap, sizeof *slots);

    if (slots == NULL)
        return hfdcp__nomem("a name table");
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key != NULL) {
            size_t j = (size_t)m->slots[i].hash & (cap - 1);
            while (slots[j].key != NULL) /* keys are distinct */
                j = (j + 1) & (cap - 1);
            slots[j] = m->slots[i];
        }
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return HFDCP_OK;
}

int hfdcp__strmap_put(hfdcp__strmap *m, const char *key, size_t value,
                      bool *existed)
{
    uint64_t hash = hash_str(key);
    size_t i;

    if ((m->count + 1) * 2 > m->cap)
        HFDCP_TRY(grow(m));
    i = find_slot(m->slots, m->cap, hash, key);
    if (existed)
        *existed = m->slots[i].key != NULL;
    if (m->slots[i].key == NULL) {
        if ((m->slots[i].key = hfdcp__strdup(key)) == NULL)
            return hfdcp__nomem("a name table key");
        m->slots[i].hash = hash;
        m->count++;
    }
    m->slots[i].value = value;
    return HFDCP_OK;
}

bool hfdcp__strmap_get(const hfdcp__strmap *m, const char *key, size_t *value)
{
    size_t i;

    if (m == NULL || m->cap == 0)
        return false;
    i = find_slot(m->slots, m->cap, hash_str(key), key);
    if (m->slots[i].key == NULL)
        return false;
    if (value)
        *value = m->slots[i].value;
    return true;
}

size_t hfdcp__strmap_count(const hfdcp__strmap *m)
{
    return m ? m->count : 0;
}

/* ---- byte buffers ---- */

void hfdcp__buf_init(hfdcp__buf *b)
{
    memset(b, 0, sizeof *b);
}

void hfdcp__buf_free(hfdcp__buf *b)
{
    free(b->data);
    hfdcp__buf_init(b);
}

void hfdcp__buf_put(hfdcp__buf *b, const void *p, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (b->len + n < b->len) {
        b->failed = true;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (d == NULL) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void hfdcp__buf_put_u64(hfdcp__buf *b, uint64_t v)
{
    hfdcp__buf_put(b, &v, sizeof v);
}

void hfdcp__buf_put_i64(hfdcp__buf *b, int64_t v)
{
    hfdcp__buf_put(b, &v, sizeof v);
}

void hfdcp__buf_put_str(hfdcp__buf *b, const char *s)
{
    size_t n = strlen(s);
    hfdcp__buf_put_u64(b, n);
    hfdcp__buf_put(b, s, n);
}

int hfdcp__buf_status(const hfdcp__buf *b)
{
    return b->failed ? hfdcp__nomem("a message buffer") : HFDCP_OK;
}

void hfdcp__rbuf_init(hfdcp__rbuf *r, const void *data, size_t len)
{
    r->p = data;
    r->end = r->p + len;
    r->bad = false;
}

bool hfdcp__rbuf_get(hfdcp__rbuf *r, void *out, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return false;
    }
    memcpy(out, r->p, n);
    r->p += n;
    return true;
}

bool hfdcp__rbuf_get_u64(hfdcp__rbuf *r, uint64_t *v)
{
    return hfdcp__rbuf_get(r, v, sizeof *v);
}

bool hfdcp__rbuf_get_i64(hfdcp__rbuf *r, int64_t *v)
{
    return hfdcp__rbuf_get(r, v, sizeof *v);
}

bool hfdcp__rbuf_get_str(hfdcp__rbuf *r, char **s)
{
    uint64_t n;
    if (!hfdcp__rbuf_get_u64(r, &n) || (uint64_t)(r->end - r->p) < n) {
        r->bad = true;
        return false;
    }
    if ((*s = hfdcp__strndup((const char *)r->p, (size_t)n)) == NULL) {
        r->bad = true;
        return false;
    }
    r->p += n;
    return true;
}

/* MPI counts are int: large buffers go in pieces of at most 1 GiB. */
#define BCAST_PIECE ((size_t)1 << 30)

int hfdcp__bcast_bytes(MPI_Comm comm, int root, void **data, size_t *len)
{
    int rank, mpi_rc, ok, all_ok;
    uint64_t n;
    unsigned char *p;

    if ((mpi_rc = MPI_Comm_rank(comm, &rank)) != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "MPI_Comm_rank");
    n = rank == root ? (uint64_t)*len : 0;
    if ((mpi_rc = MPI_Bcast(&n, 1, MPI_UINT64_T, root, comm)) != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "broadcasting a message length");
    p = rank == root ? *data : malloc(n ? (size_t)n : 1);
    /* Every rank learns whether every allocation worked before any data
     * moves, so that a failure cannot leave the root alone in a Bcast. */
    ok = p != NULL;
    mpi_rc = MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm);
    if (mpi_rc != MPI_SUCCESS || !all_ok) {
        if (rank != root)
            free(p);
        if (mpi_rc != MPI_SUCCESS)
            return hfdcp__mpi_error(mpi_rc, "agreeing on a broadcast");
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "out of memory receiving a %" PRIu64
                            "-byte broadcast",
                            n);
    }
    for (uint64_t done = 0; done < n;) {
        size_t piece = (size_t)(n - done) < BCAST_PIECE ? (size_t)(n - done)
                                                        : BCAST_PIECE;
        mpi_rc = MPI_Bcast(p + done, (int)piece, MPI_BYTE, root, comm);
        if (mpi_rc != MPI_SUCCESS) {
            if (rank != root)
                free(p);
            return hfdcp__mpi_error(mpi_rc,
                                    "broadcasting a %" PRIu64 "-byte message",
                                    n);
        }
        done += piece;
    }
    if (rank != root) {
        *data = p;
        *len = (size_t)n;
    }
    return HFDCP_OK;
}

/* Flipping the top bit maps 0..UINT64_MAX onto INT64_MIN..INT64_MAX in
 * order; the same flip maps back. */
#define U64_FLIP ((uint64_t)1 << 63)
#define U64_CHUNK 16

int hfdcp__allreduce_u64(const uint64_t *in, uint64_t *out, int n, MPI_Op op,
                         MPI_Comm comm)
{
    int64_t send[U64_CHUNK], recv[U64_CHUNK];

    for (int at = 0; at < n; at += U64_CHUNK) {
        int k = n - at < U64_CHUNK ? n - at : U64_CHUNK, mpi_rc;
        for (int i = 0; i < k; i++) {
            uint64_t v = in[at + i] ^ U64_FLIP;
            memcpy(&send[i], &v, sizeof v);
        }
        mpi_rc = MPI_Allreduce(send, recv, k, MPI_INT64_T, op, comm);
        if (mpi_rc != MPI_SUCCESS)
            return mpi_rc;
        for (int i = 0; i < k; i++) {
            uint64_t v;
            memcpy(&v, &recv[i], sizeof v);
            out[at + i] = v ^ U64_FLIP;
        }
    }
    return MPI_SUCCESS;
}
