/*
 * format.c - the safetensors header: parsing and checking one header,
 * serializing one, and the writer's tensor order.  The only file that
 * knows the byte layout; the JSON itself is read and written by json.c.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp_internal.h"

/* Longest name quoted in a message. */
#define NAME_MAX_MSG 256

/* ------------------------------------------------------------------------
 * Reading a header
 * ---------------------------------------------------------------------- */

static const char *file_or(const char *file)
{
    return file ? file : "(header buffer)";
}

int hfdcp__header_len(const unsigned char prefix[8], uint64_t file_size,
                      const char *file, uint64_t *n)
{
    uint64_t v = 0;

    file = file_or(file);
    if (file_size < 8)
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "file '%s' is too small (%" PRIu64 " bytes) to "
                            "be a safetensors file: it must start with an "
                            "8-byte header length",
                            file, file_size);
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | prefix[i];
    if (v > HFDCP_HEADER_MAX_READ)
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "file '%s': header length %" PRIu64
                            " is above the limit of %u bytes",
                            file, v, HFDCP_HEADER_MAX_READ);
    if (v < 2)
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "file '%s': header length %" PRIu64
                            " is too small (the smallest header, \"{}\", "
                            "has 2 bytes)",
                            file, v);
    if (v > file_size - 8)
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "file '%s': header length %" PRIu64
                            " runs past the end of the file (the file has %"
                            PRIu64 " bytes, so at most %" PRIu64
                            " after the length)",
                            file, v, file_size, file_size - 8);
    *n = v;
    return HFDCP_OK;
}

/* "file 'f': tensor 'x': <message>" */
static int tensor_error(int status, const char *file, const char *name,
                        const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int tensor_error(int status, const char *file, const char *name,
                        const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return hfdcp__error(status, "file '%s': tensor '%.*s': %s", file,
                        NAME_MAX_MSG, name, msg);
}

static void format_shape(char *buf, size_t size, int ndim,
                         const int64_t *shape)
{
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%" PRId64,
                                 i ? ", " : "", shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* The fields of entry `item`: dtype, shape and data_offsets, no other. */
static int entry_fields(const hfdcp__json_node *item, const char *file,
                        const hfdcp__json_node **dtype,
                        const hfdcp__json_node **shape,
                        const hfdcp__json_node **offs)
{
    const char *name = hfdcp__json_key(item);

    if (hfdcp__json_kind(item) != HFDCP_JSON_OBJECT)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "entry is %s, not an object with dtype, shape "
                            "and data_offsets",
                            hfdcp__json_kind_name(item));
    for (const hfdcp__json_node *c = hfdcp__json_first(item); c;
         c = hfdcp__json_next(c)) {
        const char *key = hfdcp__json_key(c);
        if (strcmp(key, "dtype") == 0)
            *dtype = c;
        else if (strcmp(key, "shape") == 0)
            *shape = c;
        else if (strcmp(key, "data_offsets") == 0)
            *offs = c;
        else
            return tensor_error(HFDCP_ERR_FORMAT, file, name,
                                "unexpected field \"%.64s\" (an entry has "
                                "only dtype, shape and data_offsets)",
                                key);
    }
    if (!*dtype || !*shape || !*offs)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "missing field \"%s\"",
                            !*dtype ? "dtype" : !*shape ? "shape"
                                                        : "data_offsets");
    return HFDCP_OK;
}

/* e->ndim and e->shape from the entry's `shape`. */
static int entry_shape(const hfdcp__json *doc, const hfdcp__json_node *shape,
                       const char *file, const char *name, hfdcp__entry *e)
{
    char what[NAME_MAX_MSG + 512];
    size_t ndim;
    uint64_t v;

    if (hfdcp__json_kind(shape) != HFDCP_JSON_ARRAY)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "shape is %s, not an array of integers",
                            hfdcp__json_kind_name(shape));
    ndim = hfdcp__json_count(shape);
    if (ndim > HFDCP_MAX_NDIM)
        return tensor_error(HFDCP_ERR_UNSUPPORTED, file, name,
                            "shape has %zu dimensions, more than the %d "
                            "hfdcp supports (HFDCP_MAX_NDIM)",
                            ndim, HFDCP_MAX_NDIM);
    e->ndim = (int)ndim;
    if (ndim > 0 && (e->shape = malloc(ndim * sizeof *e->shape)) == NULL)
        return hfdcp__nomem("a tensor shape");
    ndim = 0;
    for (const hfdcp__json_node *c = hfdcp__json_first(shape); c;
         c = hfdcp__json_next(c), ndim++) {
        if (!hfdcp__json_plain_uint(doc, c, &v)) {
            snprintf(what, sizeof what,
                     "file '%s': tensor '%.*s': shape[%zu]", file,
                     NAME_MAX_MSG, name, ndim);
            HFDCP_TRY(hfdcp__json_uint(doc, c, false, what, &v));
        }
        e->shape[ndim] = (int64_t)v;
    }
    return HFDCP_OK;
}

/* e->begin and e->end from the entry's `data_offsets`. */
static int entry_offsets(const hfdcp__json *doc, const hfdcp__json_node *offs,
                         const char *file, const char *name, hfdcp__entry *e)
{
    char what[NAME_MAX_MSG + 512];
    uint64_t begin, end;

    if (hfdcp__json_kind(offs) != HFDCP_JSON_ARRAY ||
        hfdcp__json_count(offs) != 2)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "data_offsets is %s%s, not an array of two "
                            "integers [begin, end]",
                            hfdcp__json_kind_name(offs),
                            hfdcp__json_kind(offs) == HFDCP_JSON_ARRAY
                                ? " of another length" : "");
    for (int k = 0; k < 2; k++) {
        const hfdcp__json_node *c = hfdcp__json_first(offs);
        if (k)
            c = hfdcp__json_next(c);
        if (!hfdcp__json_plain_uint(doc, c, k ? &end : &begin)) {
            snprintf(what, sizeof what,
                     "file '%s': tensor '%.*s': data_offsets[%d]", file,
                     NAME_MAX_MSG, name, k);
            HFDCP_TRY(hfdcp__json_uint(doc, c, false, what,
                                       k ? &end : &begin));
        }
    }
    if (begin > end)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "data_offsets [%" PRIu64 ", %" PRIu64
                            "]: begin is after end",
                            begin, end);
    e->begin = begin;
    e->end = end;
    return HFDCP_OK;
}

/* The entry's data_offsets must span dtype x shape. */
static int entry_size(const hfdcp__entry *e, const char *file,
                      const char *name)
{
    char what[NAME_MAX_MSG + 512], shp[256];
    uint64_t bytes;
    int rc;

    /* The message is built only when needed (this runs per entry). */
    rc = hfdcp__tensor_bytes(e->dtype, e->ndim, e->shape, "", &bytes);
    if (rc != HFDCP_OK) {
        snprintf(what, sizeof what, "file '%s': tensor '%.*s'", file,
                 NAME_MAX_MSG, name);
        rc = hfdcp__tensor_bytes(e->dtype, e->ndim, e->shape, what, &bytes);
    }
    if (rc == HFDCP_ERR_RANGE)
        return HFDCP_ERR_FORMAT; /* overflow: a malformed file */
    if (rc != HFDCP_OK)
        return rc;
    if (e->end - e->begin != bytes) {
        format_shape(shp, sizeof shp, e->ndim, e->shape);
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "data_offsets [%" PRIu64 ", %" PRIu64
                            "] span %" PRIu64 " bytes, but %s of shape %s "
                            "takes %" PRIu64 " bytes",
                            e->begin, e->end, e->end - e->begin,
                            hfdcp_dtype_name(e->dtype), shp, bytes);
    }
    return HFDCP_OK;
}

/* dtype, shape and data_offsets of one entry into `e` (name excluded). */
static int parse_entry(const hfdcp__json *doc, const hfdcp__json_node *item,
                       const char *file, hfdcp__entry *e)
{
    const char *name = hfdcp__json_key(item), *dt;
    const hfdcp__json_node *dtype = NULL, *shape = NULL, *offs = NULL;

    HFDCP_TRY(entry_fields(item, file, &dtype, &shape, &offs));
    if (hfdcp__json_kind(dtype) != HFDCP_JSON_STRING)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "dtype is %s, not a string",
                            hfdcp__json_kind_name(dtype));
    dt = hfdcp__json_str(dtype);
    if (hfdcp_dtype_from_name(dt, &e->dtype) != HFDCP_OK)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "unknown dtype \"%.64s\"", dt);
    HFDCP_TRY(entry_shape(doc, shape, file, name, e));
    HFDCP_TRY(entry_offsets(doc, offs, file, name, e));
    return entry_size(e, file, name);
}

/* Data order: begin, then end (a zero-size tensor comes before the tensor
 * that starts where it sits), then name. */
static int cmp_data_order(const hfdcp__entry *a, const hfdcp__entry *b)
{
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int cmp_entry_data(const void *a, const void *b)
{
    return cmp_data_order(a, b);
}

static int cmp_entryp_data(const void *a, const void *b)
{
    return cmp_data_order(*(const hfdcp__entry *const *)a,
                          *(const hfdcp__entry *const *)b);
}

/* Entries `v` in data order must tile [0, *data_size) exactly.  `where`
 * starts the messages ("file 'f'"). */
static int check_layout(const hfdcp__entry *const *v, size_t n, int status,
                        const char *where, uint64_t *data_size)
{
    const hfdcp__entry *last = NULL;
    uint64_t pos = 0;

    for (size_t i = 0; i < n; i++) {
        const hfdcp__entry *e = v[i];
        if (e->begin > pos)
            return hfdcp__error(status,
                                "%s: hole in the data buffer: bytes [%" PRIu64
                                ", %" PRIu64 ") belong to no tensor (the "
                                "next tensor, '%.*s', begins at %" PRIu64 ")",
                                where, pos, e->begin, NAME_MAX_MSG, e->name,
                                e->begin);
        if (e->begin < pos)
            return hfdcp__error(status,
                                "%s: tensor '%.*s' data [%" PRIu64 ", %" PRIu64
                                ") overlaps tensor '%.*s' data [%" PRIu64
                                ", %" PRIu64 ")",
                                where, NAME_MAX_MSG, e->name, e->begin,
                                e->end, NAME_MAX_MSG, last->name, last->begin,
                                last->end);
        if (e->end > e->begin) {
            last = e;
            pos = e->end;
        }
    }
    *data_size = pos;
    return HFDCP_OK;
}

static int parse_metadata(const hfdcp__json_node *meta, const char *file,
                          hfdcp__header *h, const char **sharding)
{
    int kind = hfdcp__json_kind(meta);
    size_t n = 0;

    if (kind == HFDCP_JSON_NULL) {
        h->meta_null = true;
        return HFDCP_OK;
    }
    if (kind != HFDCP_JSON_OBJECT)
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "file '%s': __metadata__ is %s, not an object "
                            "of strings (or null)",
                            file, hfdcp__json_kind_name(meta));
    for (const hfdcp__json_node *c = hfdcp__json_first(meta); c;
         c = hfdcp__json_next(c)) {
        if (hfdcp__json_kind(c) != HFDCP_JSON_STRING)
            return hfdcp__error(HFDCP_ERR_FORMAT,
                                "file '%s': __metadata__ value of key "
                                "\"%.*s\" is %s, not a string",
                                file, NAME_MAX_MSG, hfdcp__json_key(c),
                                hfdcp__json_kind_name(c));
        n++;
    }
    if (n > 0 && (h->meta = calloc(n, sizeof *h->meta)) == NULL)
        return hfdcp__nomem("header metadata");
    for (const hfdcp__json_node *c = hfdcp__json_first(meta); c;
         c = hfdcp__json_next(c)) {
        hfdcp__kv *kv;
        if (strcmp(hfdcp__json_key(c), "DCP_SHARDING_INFO") == 0) {
            *sharding = hfdcp__json_str(c);
            continue;
        }
        kv = &h->meta[h->n_meta];
        kv->key = hfdcp__strdup(hfdcp__json_key(c));
        kv->value = hfdcp__strdup(hfdcp__json_str(c));
        h->n_meta++;
        if (kv->key == NULL || kv->value == NULL)
            return hfdcp__nomem("header metadata");
    }
    return HFDCP_OK;
}

/* In a function with `rc` and `cleanup:`. */
#define TENSOR_FAIL(...)                                                     \
    do {                                                                     \
        rc = tensor_error(__VA_ARGS__);                                      \
        goto cleanup;                                                        \
    } while (0)

/* One member `c` of DCP_SHARDING_INFO, {"saved_offsets": [..]}, into
 * e->offsets.  `what` names DCP_SHARDING_INFO.  Note: other fields are
 * ignored, as PyTorch's reader ignores them (a global shape and a key map
 * per entry have been proposed). */
static int sharding_entry(const hfdcp__json *doc, const hfdcp__json_node *c,
                          const char *file, const char *what,
                          hfdcp__entry *e)
{
    const hfdcp__json_node *so = NULL;
    size_t k = 0;

    if (hfdcp__json_kind(c) != HFDCP_JSON_OBJECT)
        return tensor_error(HFDCP_ERR_FORMAT, file, e->name,
                            "DCP_SHARDING_INFO entry is %s, not an "
                            "object with saved_offsets",
                            hfdcp__json_kind_name(c));
    for (const hfdcp__json_node *f = hfdcp__json_first(c); f;
         f = hfdcp__json_next(f))
        if (strcmp(hfdcp__json_key(f), "saved_offsets") == 0)
            so = f;
    if (so == NULL || hfdcp__json_kind(so) != HFDCP_JSON_ARRAY ||
        hfdcp__json_count(so) != (size_t)e->ndim)
        return tensor_error(HFDCP_ERR_FORMAT, file, e->name,
                            "DCP_SHARDING_INFO saved_offsets is %s "
                            "but the tensor has %d dimensions: it "
                            "must be an array of %d integers",
                            so == NULL ? "missing"
                            : hfdcp__json_kind(so) == HFDCP_JSON_ARRAY
                                ? "of another length"
                                : hfdcp__json_kind_name(so),
                            e->ndim, e->ndim);
    free(e->offsets);
    e->offsets = malloc((size_t)(e->ndim ? e->ndim : 1) *
                        sizeof *e->offsets);
    if (e->offsets == NULL)
        return hfdcp__error(HFDCP_ERR_NOMEM, "out of memory reading %s",
                            what);
    for (const hfdcp__json_node *x = hfdcp__json_first(so); x;
         x = hfdcp__json_next(x), k++) {
        char w2[NAME_MAX_MSG + 512];
        uint64_t v;
        snprintf(w2, sizeof w2,
                 "file '%s': tensor '%.*s': DCP_SHARDING_INFO "
                 "saved_offsets[%zu]",
                 file, NAME_MAX_MSG, e->name, k);
        HFDCP_TRY(hfdcp__json_uint(doc, x, false, w2, &v));
        e->offsets[k] = (int64_t)v;
    }
    return HFDCP_OK;
}

/* A __metadata__ value that is JSON text of an object keyed by the file's
 * tensor names (`what` names it): parses it into *doc and calls
 * fn(doc, member, i, arg) for each member, i its entry in h.  A name that
 * is not in the file is HFDCP_ERR_FORMAT; seen[i] marks the names given
 * (twice is HFDCP_ERR_FORMAT); with `every`, naming another number of
 * tensors than the file has is too, before any member is read.  The
 * caller frees *doc, also on failure. */
typedef int (*member_fn)(const hfdcp__json *doc, const hfdcp__json_node *c,
                         size_t i, void *arg);

static int each_tensor_member(const char *text, const char *what,
                              const char *shape_hint, const hfdcp__header *h,
                              bool every, hfdcp__json *doc, bool *seen,
                              member_fn fn, void *arg)
{
    hfdcp__strmap *by_name = NULL;
    int rc = HFDCP_OK;

    HFDCP_TRY(hfdcp__json_parse(text, strlen(text), what, doc));
    if (hfdcp__json_kind(doc->root) != HFDCP_JSON_OBJECT)
        HFDCP_FAIL(HFDCP_ERR_FORMAT, "%s is %s, not %s", what,
                   hfdcp__json_kind_name(doc->root), shape_hint);
    if (every && hfdcp__json_count(doc->root) != h->n_entries)
        HFDCP_FAIL(HFDCP_ERR_FORMAT,
                   "%s names %zu tensors but the file has %zu: it must name "
                   "each of them once",
                   what, hfdcp__json_count(doc->root), h->n_entries);
    if ((by_name = hfdcp__strmap_new()) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory reading %s", what);
    for (size_t i = 0; i < h->n_entries; i++)
        HFDCP_CHECK(hfdcp__strmap_put(by_name, h->entries[i].name, i, NULL));
    for (const hfdcp__json_node *c = hfdcp__json_first(doc->root); c;
         c = hfdcp__json_next(c)) {
        size_t i;
        if (!hfdcp__strmap_get(by_name, hfdcp__json_key(c), &i))
            HFDCP_FAIL(HFDCP_ERR_FORMAT,
                       "%s names tensor '%.*s', which is not in the file",
                       what, NAME_MAX_MSG, hfdcp__json_key(c));
        if (seen[i])
            HFDCP_FAIL(HFDCP_ERR_FORMAT, "%s names tensor '%.*s' twice",
                       what, NAME_MAX_MSG, hfdcp__json_key(c));
        seen[i] = true;
        HFDCP_CHECK(fn(doc, c, i, arg));
    }
cleanup:
    hfdcp__strmap_free(by_name);
    return rc;
}

typedef struct {
    const char *file, *what;
    hfdcp__header *h;
} sharding_arg;

static int sharding_member(const hfdcp__json *doc, const hfdcp__json_node *c,
                           size_t i, void *arg)
{
    sharding_arg *a = arg;
    return sharding_entry(doc, c, a->file, a->what, &a->h->entries[i]);
}

/* DCP_SHARDING_INFO: JSON text of {name: {"saved_offsets": [..]}} naming
 * exactly the file's tensors. */
static int parse_sharding(const char *text, const char *file,
                          hfdcp__header *h)
{
    char what[NAME_MAX_MSG + 512];
    hfdcp__json doc = {0};
    bool *seen = calloc(h->n_entries + 1, sizeof *seen);
    sharding_arg arg = {file, what, h};
    int rc = HFDCP_OK;

    snprintf(what, sizeof what,
             "file '%s': __metadata__ DCP_SHARDING_INFO", file);
    if (seen == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory reading %s", what);
    HFDCP_CHECK(each_tensor_member(text, what, "a JSON object", h, false,
                                   &doc, seen, sharding_member, &arg));
    for (size_t i = 0; i < h->n_entries; i++)
        if (!seen[i])
            TENSOR_FAIL(HFDCP_ERR_FORMAT, file,
                                    h->entries[i].name,
                                    "missing from DCP_SHARDING_INFO (every "
                                    "tensor of a sharded file needs its "
                                    "saved_offsets)");
    h->sharded = true;

cleanup:
    hfdcp__json_free(&doc);
    free(seen);
    return rc;
}
/* Entry i of hfdcp_global_shapes: the array `c` of h->entries[i].ndim
 * dims into dims[0..ndim). */
static int global_shape_entry(const hfdcp__json *doc,
                              const hfdcp__json_node *c, const char *file,
                              const hfdcp__entry *e, int64_t *dims)
{
    size_t k = 0;

    if (hfdcp__json_kind(c) != HFDCP_JSON_ARRAY ||
        hfdcp__json_count(c) != (size_t)e->ndim)
        return tensor_error(HFDCP_ERR_FORMAT, file, e->name,
                            "__metadata__ " HFDCP_GLOBAL_SHAPES_KEY
                            " gives %s, but the tensor has %d dimensions: "
                            "it must be an array of %d integers",
                            hfdcp__json_kind(c) == HFDCP_JSON_ARRAY
                                ? "an array of another length"
                                : hfdcp__json_kind_name(c),
                            e->ndim, e->ndim);
    for (const hfdcp__json_node *x = hfdcp__json_first(c); x;
         x = hfdcp__json_next(x), k++) {
        char w[NAME_MAX_MSG + 512];
        uint64_t v;
        snprintf(w, sizeof w,
                 "file '%s': tensor '%.*s': __metadata__ "
                 HFDCP_GLOBAL_SHAPES_KEY "[%zu]",
                 file, NAME_MAX_MSG, e->name, k);
        HFDCP_TRY(hfdcp__json_uint(doc, x, false, w, &v));
        dims[k] = (int64_t)v;
    }
    return HFDCP_OK;
}

typedef struct {
    const char *file;
    const hfdcp__header *h;
    int64_t **out;
    int64_t *dims; /* the next entry's dims */
} shapes_arg;

static int shape_member(const hfdcp__json *doc, const hfdcp__json_node *c,
                        size_t i, void *arg)
{
    shapes_arg *a = arg;

    a->out[i] = a->dims;
    a->dims += a->h->entries[i].ndim;
    return global_shape_entry(doc, c, a->file, &a->h->entries[i], a->out[i]);
}

int hfdcp__header_global_shapes(const hfdcp__header *h, const char *file,
                                int64_t ***shapes)
{
    char what[NAME_MAX_MSG + 512];
    const char *text = NULL;
    hfdcp__json doc = {0};
    shapes_arg arg = {file_or(file), h, NULL, NULL};
    bool *seen = NULL;
    size_t n_dims = 0, head;
    int rc = HFDCP_OK;

    *shapes = NULL;
    for (size_t i = 0; i < h->n_meta; i++)
        if (strcmp(h->meta[i].key, HFDCP_GLOBAL_SHAPES_KEY) == 0)
            text = h->meta[i].value;
    if (text == NULL)
        return HFDCP_OK;
    snprintf(what, sizeof what,
             "file '%s': __metadata__ " HFDCP_GLOBAL_SHAPES_KEY, arg.file);
    /* One block: the pointers, then the dims (aligned for int64_t). */
    for (size_t i = 0; i < h->n_entries; i++)
        n_dims += (size_t)h->entries[i].ndim;
    head = (h->n_entries + 1) * sizeof *arg.out;
    head = (head + sizeof(int64_t) - 1) / sizeof(int64_t) * sizeof(int64_t);
    if ((arg.out = calloc(1, head + (n_dims + 1) * sizeof *arg.dims)) == NULL ||
        (seen = calloc(h->n_entries + 1, sizeof *seen)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory reading %s", what);
    arg.dims = (int64_t *)(void *)((char *)arg.out + head);
    HFDCP_CHECK(each_tensor_member(
        text, what, "JSON text of an object {name: [dim, ...]}", h, true,
        &doc, seen, shape_member, &arg));
    *shapes = arg.out;
    arg.out = NULL;

cleanup:
    hfdcp__json_free(&doc);
    free(arg.out);
    free(seen);
    return rc;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Entry i of hfdcp_crc32c: a string of 8 hex digits. */
static int crc_member(const hfdcp__json *doc, const hfdcp__json_node *c,
                      size_t i, void *arg)
{
    const hfdcp__header *h = ((const void **)arg)[0];
    const char *file = ((const void **)arg)[1];
    uint32_t *crcs = ((void **)arg)[2];
    const char *s = hfdcp__json_str(c);
    uint32_t v = 0;
    size_t k = 0;

    (void)doc;
    for (; s != NULL && k < 8; k++) {
        int d = hex_digit(s[k]);
        if (d < 0)
            break;
        v = v << 4 | (uint32_t)d;
    }
    if (s == NULL || k != 8 || s[8] != '\0')
        return tensor_error(HFDCP_ERR_FORMAT, file, h->entries[i].name,
                            "__metadata__ " HFDCP_CRC32C_KEY " gives %s, "
                            "not a string of 8 hex digits",
                            s == NULL ? hfdcp__json_kind_name(c)
                                      : "another string");
    crcs[i] = v;
    return HFDCP_OK;
}

int hfdcp__header_crc32c(const hfdcp__header *h, const char *file,
                         uint32_t **crcs)
{
    char what[NAME_MAX_MSG + 512];
    const char *text = NULL;
    hfdcp__json doc = {0};
    uint32_t *out = NULL;
    bool *seen = NULL;
    int rc = HFDCP_OK;

    *crcs = NULL;
    file = file_or(file);
    for (size_t i = 0; i < h->n_meta; i++)
        if (strcmp(h->meta[i].key, HFDCP_CRC32C_KEY) == 0)
            text = h->meta[i].value;
    if (text == NULL)
        return HFDCP_OK;
    snprintf(what, sizeof what, "file '%s': __metadata__ " HFDCP_CRC32C_KEY,
             file);
    if ((out = calloc(h->n_entries + 1, sizeof *out)) == NULL ||
        (seen = calloc(h->n_entries + 1, sizeof *seen)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory reading %s", what);
    {
        const void *arg[3] = {h, file, out};
        HFDCP_CHECK(each_tensor_member(
            text, what, "JSON text of an object {name: \"8 hex digits\"}",
            h, true, &doc, seen, crc_member, (void *)arg));
    }
    *crcs = out;
    out = NULL;

cleanup:
    hfdcp__json_free(&doc);
    free(out);
    free(seen);
    return rc;
}

/* The members of a header into `h` (entries allocated for every member);
 * *sharding gets a copy of DCP_SHARDING_INFO's text, if any. */
static int read_members(hfdcp__json_members *m, const char *file,
                        const char *what, hfdcp__header *h, char **sharding)
{
    const hfdcp__json_node *member;
    bool have_meta = false;

    for (;;) {
        const char *key;
        HFDCP_TRY(hfdcp__json_members_next(m, &member));
        if (member == NULL)
            return HFDCP_OK;
        key = hfdcp__json_key(member);
        if (strcmp(key, "__metadata__") == 0) {
            const char *sh = NULL;
            if (have_meta)
                return hfdcp__error(HFDCP_ERR_FORMAT,
                                    "%s has a duplicate key "
                                    "\"__metadata__\"",
                                    what);
            have_meta = true;
            HFDCP_TRY(parse_metadata(member, file, h, &sh));
            if (sh && (*sharding = hfdcp__strdup(sh)) == NULL)
                return hfdcp__error(HFDCP_ERR_NOMEM,
                                    "file '%s': out of memory", file);
        } else {
            hfdcp__entry *e = &h->entries[h->n_entries++];
            if ((e->name = hfdcp__strdup(key)) == NULL)
                return hfdcp__error(HFDCP_ERR_NOMEM,
                                    "file '%s': out of memory", file);
            HFDCP_TRY(parse_entry(&m->doc, member, file, e));
        }
    }
}

/* Unique names, the data tiling [0, data_size), and 8 + n + data_size the
 * file's size; sorts the entries into the data order.  `what` is
 * "file 'f': header", `where` "file 'f'". */
static int check_data(hfdcp__header *h, uint64_t n, uint64_t file_size,
                      const char *file, const char *what, const char *where)
{
    const char **names = NULL, *dup;
    const hfdcp__entry **order = NULL;
    uint64_t end;
    int rc = HFDCP_OK;

    if (h->n_entries > 0 &&
        ((names = malloc(h->n_entries * sizeof *names)) == NULL ||
         (order = malloc(h->n_entries * sizeof *order)) == NULL))
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "file '%s': out of memory", file);
    for (size_t i = 0; i < h->n_entries; i++)
        names[i] = h->entries[i].name;
    if ((dup = hfdcp__json_find_dup(names, h->n_entries)) != NULL)
        HFDCP_FAIL(HFDCP_ERR_FORMAT, "%s has a duplicate key \"%.*s\"", what,
                   NAME_MAX_MSG, dup);

    qsort(h->entries, h->n_entries, sizeof *h->entries, cmp_entry_data);
    for (size_t i = 0; i < h->n_entries; i++)
        order[i] = &h->entries[i];
    HFDCP_CHECK(check_layout(order, h->n_entries, HFDCP_ERR_FORMAT, where,
                             &h->data_size));
    end = 8 + n + h->data_size;
    if (end < file_size)
        HFDCP_FAIL(HFDCP_ERR_FORMAT,
                   "file '%s': %" PRIu64 " trailing bytes: the tensors end "
                   "at byte %" PRIu64 " but the file has %" PRIu64 " bytes",
                   file, file_size - end, end, file_size);
    if (end > file_size)
        HFDCP_FAIL(HFDCP_ERR_FORMAT,
                   "file '%s' is truncated: the tensors end at byte %" PRIu64
                   " but the file has only %" PRIu64 " bytes (%" PRIu64
                   " bytes missing)",
                   file, end, file_size, end - file_size);

cleanup:
    free(names);
    free(order);
    return rc;
}

/*
 * The header is read one top-level member at a time (json.c's
 * hfdcp__json_members): each member is parsed on its own, used and freed
 * before the next.  A whole tree of 100,000 entries is over a million
 * small allocations; this way the same few are reused.
 */
int hfdcp__header_parse(const char *json, uint64_t n, uint64_t file_size,
                        const char *file, hfdcp__header *out)
{
    char what[1024], where[1024];
    hfdcp__header h;
    hfdcp__json_members m;
    char *sharding = NULL;
    int rc = HFDCP_OK;

    memset(out, 0, sizeof *out);
    memset(&h, 0, sizeof h);
    memset(&m, 0, sizeof m);
    file = file_or(file);
    if (json == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "file '%s': no header text", file);
    if (file_size < 8 || n > file_size - 8)
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "file '%s': header length %" PRIu64
                            " runs past the end of the file (%" PRIu64
                            " bytes)",
                            file, n, file_size);
    if (n > HFDCP_HEADER_MAX_READ || n < 2)
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "file '%s': header length %" PRIu64 " is %s",
                            file, n,
                            n < 2 ? "too small" : "above the limit");
    h.header_len = n;

    snprintf(what, sizeof what, "file '%s': header", file);
    snprintf(where, sizeof where, "file '%s'", file);
    HFDCP_CHECK(hfdcp__json_members_open(json, (size_t)n, what, &m));
    if ((h.entries = calloc(m.n_seps, sizeof *h.entries)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "file '%s': out of memory for %zu "
                   "tensor entries", file, m.n_seps);
    HFDCP_CHECK(read_members(&m, file, what, &h, &sharding));
    HFDCP_CHECK(check_data(&h, n, file_size, file, what, where));
    HFDCP_CHECK(hfdcp__json_members_done(&m, where));
    if (sharding)
        HFDCP_CHECK(parse_sharding(sharding, file, &h));
    {
        int64_t **gs; /* checked here; catalog_merge.c reads it again */
        HFDCP_CHECK(hfdcp__header_global_shapes(&h, file, &gs));
        free(gs);
    }

    *out = h;
    memset(&h, 0, sizeof h);

cleanup:
    hfdcp__json_members_close(&m);
    free(sharding);
    hfdcp__header_free(&h);
    return rc;
}

void hfdcp__header_free(hfdcp__header *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->n_entries; i++) {
        free(h->entries[i].name);
        free(h->entries[i].shape);
        free(h->entries[i].offsets);
    }
    free(h->entries);
    for (size_t i = 0; i < h->n_meta; i++) {
        free(h->meta[i].key);
        free(h->meta[i].value);
    }
    free(h->meta);
    memset(h, 0, sizeof *h);
}

/* ------------------------------------------------------------------------
 * Writing a header
 * ---------------------------------------------------------------------- */

#define WHERE_W "serializing a header"

static void put_lit(hfdcp__buf *b, const char *s)
{
    hfdcp__buf_put(b, s, strlen(s));
}

static void put_u64(hfdcp__buf *b, uint64_t v)
{
    char tmp[24];
    size_t k = sizeof tmp;
    do {
        tmp[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    hfdcp__buf_put(b, tmp + k, sizeof tmp - k);
}

static int check_text_arg(const char *s, const char *kind, size_t i)
{
    const char *why = NULL;
    if (s == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, WHERE_W ": %s %zu is NULL", kind,
                            i);
    if (!hfdcp__utf8_valid(s, strlen(s), NULL, &why))
        return hfdcp__error(HFDCP_ERR_ARG,
                            WHERE_W ": %s %zu (\"%.*s\") is not valid UTF-8: "
                            "%s",
                            kind, i, NAME_MAX_MSG, s, why);
    return HFDCP_OK;
}

/* The detailed message for an entry hfdcp__header_serialize() refuses. */
static int entry_arg_error(const char *what, const hfdcp__entry *e,
                           bool sharded)
{
    uint64_t bytes;
    if (strcmp(e->name, "__metadata__") == 0)
        return hfdcp__error(HFDCP_ERR_ARG, "%s: reserved name", what);
    if (hfdcp_dtype_bits(e->dtype) == 0)
        return hfdcp__error(HFDCP_ERR_ARG, "%s: invalid dtype %d", what,
                            (int)e->dtype);
    if (e->ndim < 0 || e->ndim > HFDCP_MAX_NDIM ||
        (e->ndim > 0 && e->shape == NULL))
        return hfdcp__error(HFDCP_ERR_ARG, "%s: invalid ndim %d or shape",
                            what, e->ndim);
    for (int k = 0; k < e->ndim; k++)
        if (e->shape[k] < 0 || (uint64_t)e->shape[k] > HFDCP_JSON_MAX_INT)
            return hfdcp__error(HFDCP_ERR_ARG,
                                "%s: shape[%d] = %" PRId64
                                " is outside [0, 2^53]",
                                what, k, e->shape[k]);
    if (e->begin > e->end || e->end > HFDCP_JSON_MAX_INT)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: data_offsets [%" PRIu64 ", %" PRIu64
                            "] are not ordered within [0, 2^53]",
                            what, e->begin, e->end);
    if (hfdcp__tensor_bytes(e->dtype, e->ndim, e->shape, what, &bytes) !=
        HFDCP_OK)
        return HFDCP_ERR_ARG;
    if (e->end - e->begin != bytes)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: data_offsets span %" PRIu64
                            " bytes but the tensor takes %" PRIu64,
                            what, e->end - e->begin, bytes);
    if (sharded && e->ndim > 0 && e->offsets == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "%s: a sharded header needs offsets", what);
    for (int k = 0; sharded && k < e->ndim; k++)
        if (e->offsets[k] < 0 || (uint64_t)e->offsets[k] > HFDCP_JSON_MAX_INT)
            return hfdcp__error(HFDCP_ERR_ARG,
                                "%s: offsets[%d] = %" PRId64
                                " is outside [0, 2^53]",
                                what, k, e->offsets[k]);
    return hfdcp__error(HFDCP_ERR_INTERNAL, "%s: refused", what);
}

/* The caller's entries must describe a file we would read back: every
 * value in range, sizes matching dtype x shape, unique names, data tiling
 * [0, end) exactly. */
static int check_entries_for_write(const hfdcp__header *h)
{
    const hfdcp__entry **order = NULL;
    const char **names = NULL, *dup;
    char what[NAME_MAX_MSG + 64];
    uint64_t data_size;
    bool sorted = true;
    int rc = HFDCP_OK;

    if (h->n_entries > 0 && h->entries == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, WHERE_W ": entries is NULL");
    for (size_t i = 0; i < h->n_entries; i++) {
        const hfdcp__entry *e = &h->entries[i];
        uint64_t bytes = 0;
        const char *bad = NULL;
        HFDCP_TRY(check_text_arg(e->name, "tensor name", i));
        /* Checked without a message first (this runs per entry). */
        if (strcmp(e->name, "__metadata__") == 0)
            bad = "reserved name";
        else if (hfdcp_dtype_bits(e->dtype) == 0)
            bad = "invalid dtype";
        else if (e->ndim < 0 || e->ndim > HFDCP_MAX_NDIM ||
                 (e->ndim > 0 && e->shape == NULL))
            bad = "invalid ndim or shape";
        for (int k = 0; !bad && k < e->ndim; k++)
            if (e->shape[k] < 0 || (uint64_t)e->shape[k] > HFDCP_JSON_MAX_INT)
                bad = "a shape entry is outside [0, 2^53]";
        if (!bad && (e->begin > e->end || e->end > HFDCP_JSON_MAX_INT))
            bad = "data_offsets are not ordered within [0, 2^53]";
        if (!bad && hfdcp__tensor_bytes(e->dtype, e->ndim, e->shape, "",
                                        &bytes) != HFDCP_OK)
            bad = "bad size";
        if (!bad && e->end - e->begin != bytes)
            bad = "data_offsets do not span the tensor's size";
        if (!bad && h->sharded && e->ndim > 0 && e->offsets == NULL)
            bad = "a sharded header needs offsets";
        for (int k = 0; !bad && h->sharded && k < e->ndim; k++)
            if (e->offsets[k] < 0 || (uint64_t)e->offsets[k] > HFDCP_JSON_MAX_INT)
                bad = "an offset is outside [0, 2^53]";
        if (bad) {
            snprintf(what, sizeof what, WHERE_W ": tensor '%.*s'",
                     NAME_MAX_MSG, e->name);
            return entry_arg_error(what, e, h->sharded);
        }
        if (i > 0 && cmp_data_order(&h->entries[i - 1], e) > 0)
            sorted = false;
    }
    if (h->n_entries == 0)
        return HFDCP_OK;

    if ((names = malloc(h->n_entries * sizeof *names)) == NULL ||
        (order = malloc(h->n_entries * sizeof *order)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, WHERE_W ": out of memory");
    for (size_t i = 0; i < h->n_entries; i++) {
        names[i] = h->entries[i].name;
        order[i] = &h->entries[i];
    }
    if ((dup = hfdcp__json_find_dup(names, h->n_entries)) != NULL)
        HFDCP_FAIL(HFDCP_ERR_ARG, WHERE_W ": two tensors are named '%.*s'",
                   NAME_MAX_MSG, dup);
    if (!sorted)
        qsort(order, h->n_entries, sizeof *order, cmp_entryp_data);
    rc = check_layout(order, h->n_entries, HFDCP_ERR_ARG, WHERE_W,
                      &data_size);

cleanup:
    free(names);
    free(order);
    return rc;
}

static int check_meta_for_write(const hfdcp__header *h)
{
    const char *small[16], **keys = small, *dup;
    int rc = HFDCP_OK;

    if (h->n_meta > 0 && h->meta == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, WHERE_W ": meta is NULL");
    for (size_t i = 0; i < h->n_meta; i++) {
        HFDCP_TRY(check_text_arg(h->meta[i].key, "metadata key", i));
        HFDCP_TRY(check_text_arg(h->meta[i].value, "metadata value", i));
        if (h->crc32c && strcmp(h->meta[i].key, HFDCP_CRC32C_KEY) == 0)
            return hfdcp__error(HFDCP_ERR_ARG,
                                WHERE_W ": " HFDCP_CRC32C_KEY " is written "
                                "from the entries' crc (set `crc32c`), not "
                                "given as metadata");
        if (strcmp(h->meta[i].key, "DCP_SHARDING_INFO") == 0)
            return hfdcp__error(HFDCP_ERR_ARG,
                                WHERE_W ": DCP_SHARDING_INFO is written from "
                                "the entries' offsets (set `sharded`), not "
                                "given as metadata");
    }
    if (h->n_meta > 16 && (keys = malloc(h->n_meta * sizeof *keys)) == NULL)
        return hfdcp__nomem("a metadata key list");
    for (size_t i = 0; i < h->n_meta; i++)
        keys[i] = h->meta[i].key;
    if ((dup = hfdcp__json_find_dup(keys, h->n_meta)) != NULL)
        rc = hfdcp__error(HFDCP_ERR_ARG,
                          WHERE_W ": metadata key \"%.*s\" given twice",
                          NAME_MAX_MSG, dup);
    if (keys != small)
        free(keys);
    return rc;
}

/* The text Python's json.dumps gives for {name: {"saved_offsets": [..]}}
 * (separators ", " and ": ", ensure_ascii), entries in the given order. */
static void put_sharding_text(hfdcp__buf *b, const hfdcp__header *h)
{
    put_lit(b, "{");
    for (size_t i = 0; i < h->n_entries; i++) {
        const hfdcp__entry *e = &h->entries[i];
        if (i > 0)
            put_lit(b, ", ");
        hfdcp__json_put_string(b, e->name, true);
        put_lit(b, ": {\"saved_offsets\": [");
        for (int k = 0; k < e->ndim; k++) {
            if (k > 0)
                put_lit(b, ", ");
            put_u64(b, (uint64_t)e->offsets[k]);
        }
        put_lit(b, "]}");
    }
    put_lit(b, "}");
}

void hfdcp__header_put_crc(char *header, uint64_t at, uint32_t crc)
{
    static const char hex[] = "0123456789abcdef";

    for (int k = 0; k < 8; k++)
        header[at + (uint64_t)k] = hex[(crc >> (28 - 4 * k)) & 15];
}

/* A JSON string's text as it appears inside another JSON string: `s`
 * escaped twice, without the outer quotes. */
static void put_inner_string(hfdcp__buf *b, hfdcp__buf *tmp, const char *s)
{
    size_t at = b->len;

    tmp->len = 0;
    hfdcp__json_put_string(tmp, s, false);
    hfdcp__buf_put(tmp, "", 1); /* NUL */
    if (hfdcp__buf_status(tmp) != HFDCP_OK) {
        b->failed = true;
        return;
    }
    hfdcp__json_put_string(b, (const char *)tmp->data, false);
    if (hfdcp__buf_status(b) != HFDCP_OK)
        return;
    /* Drop the outer quotes. */
    memmove(b->data + at, b->data + at + 1, b->len - at - 2);
    b->len -= 2;
}

/* ,"hfdcp_crc32c":"{\"name\":\"0123abcd\",...}" from the entries'
 * crc, recording where each one's digits are in h->crc_at. */
static int put_crc_member(hfdcp__buf *b, const hfdcp__header *h)
{
    hfdcp__buf tmp;

    hfdcp__buf_init(&tmp);
    put_lit(b, ",\"" HFDCP_CRC32C_KEY "\":\"{");
    for (size_t i = 0; i < h->n_entries; i++) {
        if (i > 0)
            put_lit(b, ",");
        put_inner_string(b, &tmp, h->entries[i].name);
        put_lit(b, ":\\\"");
        if (h->crc_at != NULL)
            h->crc_at[i] = b->len;
        put_lit(b, "00000000\\\"");
        if (hfdcp__buf_status(b) == HFDCP_OK)
            hfdcp__header_put_crc((char *)b->data, b->len - 10,
                                  h->entries[i].crc);
    }
    put_lit(b, "}\"");
    hfdcp__buf_free(&tmp);
    return hfdcp__buf_status(b);
}

/* `partial`: stopped before the end, n is a lower bound. */
static int too_large(uint64_t n, bool partial)
{
    return hfdcp__error(HFDCP_ERR_RANGE,
                        WHERE_W ": the header would take %s%" PRIu64
                        " bytes, above the limit of %u (the Hub's metadata "
                        "parser stops there)",
                        partial ? "at least " : "", n,
                        HFDCP_HEADER_MAX_WRITE);
}

/* A size the serialized header will most likely fit in (padding
 * included): one allocation of about the right size, as growing by
 * doubling would copy and touch twice the memory. */
static size_t size_estimate(const hfdcp__header *h, uint64_t align)
{
    size_t est = 256;
    for (size_t i = 0; i < h->n_meta; i++)
        est += strlen(h->meta[i].key) + strlen(h->meta[i].value) + 8;
    for (size_t i = 0; i < h->n_entries; i++)
        est += (strlen(h->entries[i].name) + 70 +
                12 * (size_t)h->entries[i].ndim) * (h->sharded ? 2 : 1) +
               (h->crc32c ? strlen(h->entries[i].name) + 24 : 0);
    if (est > (size_t)HFDCP_HEADER_MAX_WRITE + 4096)
        est = (size_t)HFDCP_HEADER_MAX_WRITE + 4096;
    return est + (size_t)align;
}

/* The "__metadata__" member: "format" first, then h->meta, then with
 * h->sharded DCP_SHARDING_INFO and DCP_VERSION. */
static int put_metadata(hfdcp__buf *b, const hfdcp__header *h)
{
    const char *format = "pt", *version = "1.0";
    hfdcp__buf sh;
    int rc = HFDCP_OK;

    hfdcp__buf_init(&sh);
    for (size_t i = 0; i < h->n_meta; i++) {
        if (strcmp(h->meta[i].key, "format") == 0)
            format = h->meta[i].value;
        else if (h->sharded && strcmp(h->meta[i].key, "DCP_VERSION") == 0)
            version = h->meta[i].value;
    }
    put_lit(b, "{\"__metadata__\":{\"format\":");
    hfdcp__json_put_string(b, format, false);
    for (size_t i = 0; i < h->n_meta; i++) {
        const hfdcp__kv *kv = &h->meta[i];
        if (strcmp(kv->key, "format") == 0 ||
            (h->sharded && strcmp(kv->key, "DCP_VERSION") == 0))
            continue;
        put_lit(b, ",");
        hfdcp__json_put_string(b, kv->key, false);
        put_lit(b, ":");
        hfdcp__json_put_string(b, kv->value, false);
    }
    if (h->crc32c)
        HFDCP_CHECK(put_crc_member(b, h));
    if (h->sharded) {
        put_sharding_text(&sh, h);
        hfdcp__buf_put(&sh, "", 1); /* NUL */
        HFDCP_CHECK(hfdcp__buf_status(&sh));
        put_lit(b, ",\"DCP_SHARDING_INFO\":");
        hfdcp__json_put_string(b, (const char *)sh.data, false);
        put_lit(b, ",\"DCP_VERSION\":");
        hfdcp__json_put_string(b, version, false);
    }
    put_lit(b, "}");

cleanup:
    hfdcp__buf_free(&sh);
    return rc;
}

/* The entries' members, in the given order (b holds the 8-byte length
 * first). */
static int put_entries(hfdcp__buf *b, const hfdcp__header *h)
{
    for (size_t i = 0; i < h->n_entries; i++) {
        const hfdcp__entry *e = &h->entries[i];
        if (b->len - 8 > HFDCP_HEADER_MAX_WRITE)
            return too_large(b->len - 8, true);
        put_lit(b, ",");
        hfdcp__json_put_string(b, e->name, false);
        put_lit(b, ":{\"dtype\":\"");
        put_lit(b, hfdcp_dtype_name(e->dtype));
        put_lit(b, "\",\"shape\":[");
        for (int k = 0; k < e->ndim; k++) {
            if (k > 0)
                put_lit(b, ",");
            put_u64(b, (uint64_t)e->shape[k]);
        }
        put_lit(b, "],\"data_offsets\":[");
        put_u64(b, e->begin);
        put_lit(b, ",");
        put_u64(b, e->end);
        put_lit(b, "]}");
    }
    return HFDCP_OK;
}

int hfdcp__header_serialize(const hfdcp__header *h, char **out,
                            size_t *out_len)
{
    hfdcp__buf b;
    uint64_t n;
    size_t est;
    int rc = HFDCP_OK;

    hfdcp__buf_init(&b);
    if (h == NULL || out == NULL || out_len == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, WHERE_W ": NULL argument");
    uint64_t align = h->align ? h->align : HFDCP_ALIGN_DEFAULT;
    if (!hfdcp__align_ok(align))
        return hfdcp__error(HFDCP_ERR_ARG,
                            WHERE_W ": data alignment %" PRIu64 " is not a "
                            "power of two from 8 to %" PRIu64,
                            align, HFDCP_ALIGN_MAX);
    HFDCP_TRY(check_meta_for_write(h));
    HFDCP_TRY(check_entries_for_write(h));

    est = size_estimate(h, align);
    if ((b.data = malloc(est)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, WHERE_W ": out of memory for %zu "
                   "bytes", est);
    b.cap = est;
    hfdcp__buf_put(&b, "\0\0\0\0\0\0\0\0", 8);
    HFDCP_CHECK(put_metadata(&b, h));
    HFDCP_CHECK(put_entries(&b, h));
    put_lit(&b, "}");
    /* Spaces up to the alignment: 8 + N a multiple of it, so N is a
     * multiple of 8 as the reference writers make it. */
    while (b.len % align != 0) {
        static const char spaces[] = "                                ";
        size_t k = (size_t)(align - b.len % align);
        hfdcp__buf_put(&b, spaces, k < sizeof spaces - 1 ? k : sizeof spaces - 1);
        if (hfdcp__buf_status(&b) != HFDCP_OK)
            break;
    }
    HFDCP_CHECK(hfdcp__buf_status(&b));
    n = b.len - 8;
    if (n > HFDCP_HEADER_MAX_WRITE)
        HFDCP_CHECK(too_large(n, false));
    for (int i = 0; i < 8; i++)
        b.data[i] = (unsigned char)(n >> (8 * i));
    *out = (char *)b.data;
    *out_len = b.len;
    hfdcp__buf_init(&b); /* ownership passed to the caller */

cleanup:
    hfdcp__buf_free(&b);
    return rc;
}

/* Writer order, for natural alignment: larger elements first; among equal
 * sizes the Rust crate's Dtype enum order, descending (hfdcp's enum has
 * the crate's order, with F8_E4M3FNUZ and F8_E5M2FNUZ after F8_E8M0), then
 * the name (bytewise).  This gives
 *   U64 I64 F64 C64 | F32 U32 I32 | BF16 F16 U16 I16 |
 *   F8_E5M2FNUZ F8_E4M3FNUZ F8_E8M0 F8_E4M3 F8_E5M2 I8 U8 BOOL |
 *   F6_E3M2 F6_E2M3 | F4
 * Note: the crate puts F4 and F6 between BOOL and U8 (pure enum order);
 * sub-byte types go last here so that no byte-sized element follows them
 * at an odd bit position.  Invalid dtypes sort after everything. */
static int layout_rank(hfdcp_dtype d)
{
    int bits = hfdcp_dtype_bits(d);
    return bits ? bits * 64 + (int)d : -1;
}

int hfdcp__entry_layout_cmp(const void *a, const void *b)
{
    const hfdcp__entry *x = a, *y = b;
    int rx = layout_rank(x->dtype), ry = layout_rank(y->dtype);
    if (rx != ry)
        return rx > ry ? -1 : 1;
    return strcmp(x->name, y->name);
}

