// ranks: 1
// timeout: 300
/*
 * test_format.c - the safetensors format layer (src/format.c) and the
 * index file (src/index.c): parsing every real fixture like an independent
 * Python reader, refusing a corpus of malformed headers and indexes with
 * the right status and message, surviving random mutations, and writing
 * headers and indexes exactly as the Python tooling does.
 *
 * One rank only: nothing here is collective (the format layer is local).
 */
#include <dirent.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <time.h>

#include "harness.h"

/* Under AddressSanitizer (run with fast_unwind_on_malloc=0, as .ci/test
 * does) every allocation costs a full stack unwind: the two cases that
 * parse in bulk do fewer rounds there, still thousands. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

static void bputf(hfdcp__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void bputf(hfdcp__buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        hfdcp__buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static bool contains(const char *hay, size_t n, const char *needle)
{
    size_t l = strlen(needle);
    for (size_t i = 0; i + l <= n; i++)
        if (memcmp(hay + i, needle, l) == 0)
            return true;
    return false;
}

/* Offset of the JSON key "name" in a header text, or -1. */
static long key_pos(const char *json, size_t n, const char *name)
{
    char *k = hfdcp__asprintf("\"%s\":", name);
    long at = -1;
    size_t l = strlen(k);
    for (size_t i = 0; i + l <= n && at < 0; i++)
        if (memcmp(json + i, k, l) == 0)
            at = (long)i;
    free(k);
    return at;
}

static void put_hex(hfdcp__buf *b, const char *s)
{
    static const char hd[] = "0123456789abcdef";
    hfdcp__buf_put(b, "x:", 2);
    for (; *s; s++) {
        char two[2] = {hd[(unsigned char)*s >> 4], hd[(unsigned char)*s & 15]};
        hfdcp__buf_put(b, two, 2);
    }
}

static void put_dims(hfdcp__buf *b, int n, const int64_t *v)
{
    for (int k = 0; k < n; k++)
        bputf(b, "%s%" PRId64, k ? "," : "", v[k]);
}

/* The canonical text of format_oracle.py's "header" mode. */
static void canon(hfdcp__buf *b, const char *path, const hfdcp__header *h)
{
    bputf(b, "file %s\nheader_len %" PRIu64 "\ndata_size %" PRIu64 "\n", path,
          h->header_len, h->data_size);
    if (h->meta_null)
        bputf(b, "meta null\n");
    for (size_t i = 0; i < h->n_meta; i++) {
        bputf(b, "meta ");
        put_hex(b, h->meta[i].key);
        bputf(b, " ");
        put_hex(b, h->meta[i].value);
        bputf(b, "\n");
    }
    bputf(b, h->sharded ? "sharded yes canonical\n" : "sharded no\n");
    for (size_t i = 0; i < h->n_entries; i++) {
        const hfdcp__entry *e = &h->entries[i];
        bputf(b, "tensor ");
        put_hex(b, e->name);
        bputf(b, " %s ", hfdcp_dtype_name(e->dtype));
        put_dims(b, e->ndim, e->shape);
        bputf(b, " %" PRIu64 " %" PRIu64 " ", e->begin, e->end);
        if (e->offsets)
            put_dims(b, e->ndim, e->offsets);
        else
            bputf(b, "-");
        bputf(b, "\n");
    }
}

/* Runs the oracle with `args`; *out is its stdout (malloc'd). */
static int oracle(const char *args, char **out)
{
    char *cmd = hfdcp__asprintf("'%s' '%s/format_oracle.py' %s",
                                hfdcp_test_python(), hfdcp_test_scripts(),
                                args);
    int st;
    *out = NULL;
    if (cmd == NULL)
        return -1;
    st = hfdcp_test_run(cmd, out);
    free(cmd);
    return st;
}

/* Compares texts; reports the first differing line. */
static int same_text(const char *what, const char *want, const char *got)
{
    size_t line = 1;
    const char *w = want, *g = got;
    if (strcmp(want, got) == 0)
        return 1;
    while (*w && *w == *g) {
        if (*w == '\n')
            line++;
        w++;
        g++;
    }
    const char *wl = w, *gl = g;
    while (wl > want && wl[-1] != '\n') wl--;
    while (gl > got && gl[-1] != '\n') gl--;
    fprintf(stderr, "%s: texts differ at line %zu:\n  want: %.200s\n  got:  %.200s\n",
            what, line, wl, gl);
    return 0;
}

/* Parses a whole file held in memory.  The JSON goes to the parser in its
 * own exactly-sized allocation so that ASan sees any read past it. */
static int parse_bytes(const unsigned char *file, size_t size, const char *name,
                       hfdcp__header *h)
{
    uint64_t n;
    char *json;
    int rc;
    memset(h, 0, sizeof *h);
    if (size < 8)
        return hfdcp__header_len((const unsigned char *)"\0\0\0\0\0\0\0\0",
                                 size, name, &n);
    rc = hfdcp__header_len(file, size, name, &n);
    if (rc != HFDCP_OK)
        return rc;
    if ((json = malloc(n)) == NULL)
        return HFDCP_ERR_NOMEM;
    memcpy(json, file + 8, n);
    rc = hfdcp__header_parse(json, n, size, name, h);
    free(json);
    return rc;
}

/* JSON written with ' for " and ` for \" (keeps the tables readable). */
static char *tq(const char *s)
{
    hfdcp__buf b;
    hfdcp__buf_init(&b);
    for (; *s; s++) {
        if (*s == '\'')
            hfdcp__buf_put(&b, "\"", 1);
        else if (*s == '`')
            hfdcp__buf_put(&b, "\\\"", 2);
        else
            hfdcp__buf_put(&b, s, 1);
    }
    hfdcp__buf_put(&b, "", 1);
    return (char *)b.data;
}

/* Parses JSON text `json` as the header of a file whose data buffer has
 * `data` bytes. */
static int parse_text(const char *json, uint64_t data, hfdcp__header *h)
{
    size_t n = strlen(json);
    char *copy = malloc(n ? n : 1);
    int rc;
    memcpy(copy, json, n);
    rc = hfdcp__header_parse(copy, n, 8 + n + data, "t.safetensors", h);
    free(copy);
    return rc;
}

static bool header_is_zero(const hfdcp__header *h)
{
    return h->entries == NULL && h->n_entries == 0 && h->meta == NULL &&
           h->n_meta == 0 && !h->sharded && !h->meta_null;
}

/* Every invariant a successful parse promises, checked independently. */
static int check_consistent(const hfdcp__header *h, uint64_t file_size)
{
    uint64_t pos = 0;
    const char *why;
    T_CHECK(8 + h->header_len + h->data_size == file_size);
    for (size_t i = 0; i < h->n_entries; i++) {
        const hfdcp__entry *e = &h->entries[i];
        uint64_t bytes;
        T_CHECK(e->name != NULL);
        T_CHECK(hfdcp__utf8_valid(e->name, strlen(e->name), NULL, &why));
        T_CHECK(hfdcp_dtype_bits(e->dtype) > 0);
        T_CHECK(e->ndim >= 0 && e->ndim <= HFDCP_MAX_NDIM);
        for (int k = 0; k < e->ndim; k++)
            T_CHECK(e->shape[k] >= 0);
        T_CHECK(hfdcp__tensor_bytes(e->dtype, e->ndim, e->shape, "t", &bytes) == HFDCP_OK);
        T_CHECK(e->end - e->begin == bytes && e->begin <= e->end);
        T_CHECK(e->begin == pos);
        if (i > 0) {
            const hfdcp__entry *p = &h->entries[i - 1];
            T_CHECK(p->begin < e->begin || (p->begin == e->begin && p->end < e->end) ||
                    (p->begin == e->begin && p->end == e->end &&
                     strcmp(p->name, e->name) < 0));
        }
        if (h->sharded)
            T_CHECK(e->offsets != NULL);
        pos = e->end;
    }
    T_CHECK(pos == h->data_size);
    for (size_t i = 0; i < h->n_meta; i++) {
        T_CHECK(hfdcp__utf8_valid(h->meta[i].key, strlen(h->meta[i].key), NULL, &why));
        T_CHECK(hfdcp__utf8_valid(h->meta[i].value, strlen(h->meta[i].value), NULL, &why));
        T_CHECK(strcmp(h->meta[i].key, "DCP_SHARDING_INFO") != 0);
    }
    return T_OK;
}

static int same_entries(const hfdcp__header *a, const hfdcp__header *b)
{
    T_CHECK(a->n_entries == b->n_entries);
    T_CHECK(a->sharded == b->sharded);
    for (size_t i = 0; i < a->n_entries; i++) {
        const hfdcp__entry *x = &a->entries[i], *y = &b->entries[i];
        T_CHECKF(strcmp(x->name, y->name) == 0, "entry %zu: %s vs %s", i, x->name, y->name);
        T_CHECK(x->dtype == y->dtype && x->ndim == y->ndim);
        T_CHECK(x->begin == y->begin && x->end == y->end);
        for (int k = 0; k < x->ndim; k++) {
            T_CHECK(x->shape[k] == y->shape[k]);
            if (a->sharded)
                T_CHECK(x->offsets[k] == y->offsets[k]);
        }
    }
    return T_OK;
}

/* Collects every *.safetensors below `dir` (recursively) into *list. */
static int collect(const char *dir, char ***list, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        char *p;
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.')
            continue;
        p = hfdcp__path_join(dir, de->d_name);
        if (p == NULL || stat(p, &st) != 0) {
            free(p);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            collect(p, list, n);
            free(p);
        } else if (l > 12 && strcmp(de->d_name + l - 12, ".safetensors") == 0) {
            *list = realloc(*list, (*n + 1) * sizeof **list);
            (*list)[(*n)++] = p;
        } else {
            free(p);
        }
    }
    closedir(d);
    return 0;
}

static int cmp_path(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ------------------------------------------------------------------------
 * Fixtures
 * ---------------------------------------------------------------------- */

static int format_should_parse_every_fixture_like_python(MPI_Comm comm, const char *dir)
{
    char **files = NULL, *got = NULL;
    size_t n = 0, valid = 0;
    hfdcp__buf want, args;
    int fail = 0;
    bool saw_null = false, saw_unpadded = false, saw_reordered = false;
    (void)comm;
    (void)dir;

    T_CHECK(collect(hfdcp_test_fixtures(), &files, &n) == 0);
    qsort(files, n, sizeof *files, cmp_path);
    hfdcp__buf_init(&want);
    hfdcp__buf_init(&args);
    bputf(&args, "header");
    for (size_t i = 0; i < n && !fail; i++) {
        size_t size;
        unsigned char *bytes;
        hfdcp__header h;
        if (strstr(files[i], "/invalid/"))
            continue;
        bytes = hfdcp_test_read_file(files[i], &size);
        if (bytes == NULL || parse_bytes(bytes, size, files[i], &h) != HFDCP_OK) {
            fprintf(stderr, "%s: %s\n", files[i], hfdcp_last_error());
            fail = 1;
        } else {
            fail = check_consistent(&h, size);
            canon(&want, files[i], &h);
            bputf(&args, " '%s'", files[i]);
            saw_null |= h.meta_null;
            saw_unpadded |= h.header_len % 8 != 0;
            /* JSON key order != data order (MLX) */
            if (h.n_entries >= 2)
                saw_reordered |= key_pos((const char *)bytes + 8, h.header_len, h.entries[0].name) >
                                 key_pos((const char *)bytes + 8, h.header_len, h.entries[1].name);
            valid++;
            hfdcp__header_free(&h);
        }
        free(bytes);
    }
    hfdcp__buf_put(&want, "", 1);
    hfdcp__buf_put(&args, "", 1);
    if (!fail) {
        int st = oracle((const char *)args.data, &got);
        if (st != 0 || got == NULL) {
            fprintf(stderr, "oracle failed (%d)\n", st);
            fail = 1;
        } else if (!same_text("fixture headers", (const char *)want.data, got)) {
            fail = 1;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
    free(got);
    hfdcp__buf_free(&want);
    hfdcp__buf_free(&args);
    T_CHECK(!fail);
    T_CHECKF(valid >= 30, "only %zu valid fixtures found", valid);
    T_CHECK(saw_null && saw_unpadded && saw_reordered);
    return T_OK;
}

static int format_should_refuse_the_invalid_fixture(MPI_Comm comm, const char *dir)
{
    char *path = hfdcp__path_join(hfdcp_test_fixtures(),
                                  "invalid/safetensors_cpp_abuse_attempt_1.safetensors");
    size_t size;
    unsigned char *bytes = hfdcp_test_read_file(path, &size);
    hfdcp__header h;
    uint64_t n = 7;
    (void)comm;
    (void)dir;
    T_CHECK(bytes != NULL && size == 88);
    T_STATUS(hfdcp__header_len(bytes, size, path, &n), HFDCP_ERR_FORMAT,
             "header length 1000 runs past the end of the file");
    T_CHECK(n == 7);
    T_STATUS(hfdcp__header_parse((const char *)bytes + 8, 1000, size, path, &h),
             HFDCP_ERR_FORMAT, "past the end of the file");
    T_CHECK(strstr(hfdcp_last_error(), "abuse_attempt_1") != NULL);
    T_CHECK(header_is_zero(&h));
    free(bytes);
    free(path);
    return T_OK;
}

/* ------------------------------------------------------------------------
 * Malformed input
 * ---------------------------------------------------------------------- */

/* A valid tensor 'a' of 4 bytes at [0, 4). */
#define A4 "'a':{'dtype':'U8','shape':[4],'data_offsets':[0,4]}"
#define SH(info) "{'__metadata__':{'DCP_SHARDING_INFO':'" info "'}," A4 "}"

static const struct {
    const char *json;  /* ' is ", ` is \" */
    uint64_t data;     /* bytes of data after the header */
    int status;
    const char *substr;
} bad_headers[] = {
    /* invalid UTF-8 */
    {"{'\xC0\xAF':1}", 0, HFDCP_ERR_FORMAT, "not valid UTF-8 at byte 2: overlong encoding"},
    {"{'\xE0\x80\xAF':1}", 0, HFDCP_ERR_FORMAT, "not valid UTF-8 at byte 2: overlong encoding"},
    {"{'\xF0\x80\x80\xAF':1}", 0, HFDCP_ERR_FORMAT, "overlong encoding"},
    {"{'\xED\xA0\x80':1}", 0, HFDCP_ERR_FORMAT, "UTF-16 surrogate code point"},
    {"{'\xF4\x90\x80\x80':1}", 0, HFDCP_ERR_FORMAT, "above U+10FFFF"},
    {"{'\xF5\x80\x80\x80':1}", 0, HFDCP_ERR_FORMAT, "above U+10FFFF"},
    {"{'\xFF':1}", 0, HFDCP_ERR_FORMAT, "0xF8-0xFF"},
    {"{'\x80':1}", 0, HFDCP_ERR_FORMAT, "continuation byte without a lead byte"},
    {"{'\xE2\x82" "a':1}", 0, HFDCP_ERR_FORMAT, "missing a continuation byte"},
    {"{'a':'\xE2\x82", 0, HFDCP_ERR_FORMAT, "truncated by the end"},
    /* not JSON, not an object */
    {"{'a':", 0, HFDCP_ERR_FORMAT, "not valid JSON: parse error at byte"},
    {"{'a' 1}", 0, HFDCP_ERR_FORMAT, "not valid JSON: parse error at byte 5"},
    {"{}{}", 0, HFDCP_ERR_FORMAT, "byte 2: data after the end of the JSON value"},
    {"{} x", 0, HFDCP_ERR_FORMAT, "byte 3: unexpected character 'x'"},
    {"[]", 0, HFDCP_ERR_FORMAT, "header is an array, not a JSON object"},
    {"'str'", 0, HFDCP_ERR_FORMAT, "header is a string, not a JSON object"},
    {"\xEF\xBB\xBF{}", 0, HFDCP_ERR_FORMAT, "unexpected byte 0xef outside a string"},
    {"{'a\tb':1}", 0, HFDCP_ERR_FORMAT, "raw control character 0x09 in a string"},
    {"{\v}", 0, HFDCP_ERR_FORMAT, "unexpected byte 0x0b"},
    {"{'a':{'dtype':'U8','shape':[04],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "leading zero"},
    {"{'a':{'dtype':'U8','shape':[4.],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "malformed number \"4.\""},
    {"{'a':{'dtype':'U8','shape':[+4],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "unexpected character '+'"},
    {"{'a':NaN}", 0, HFDCP_ERR_FORMAT, "unexpected character 'N'"},
    {"{'a\\u0000b':1}", 0, HFDCP_ERR_UNSUPPORTED, "\\u0000 (NUL)"},
    {"{'a\\udc00':1}", 0, HFDCP_ERR_FORMAT, "unpaired UTF-16 surrogate escape \\udc00"},
    {"{'a\\ud800x':1}", 0, HFDCP_ERR_FORMAT, "unpaired UTF-16 surrogate escape \\ud800"},
    {"{'a\\x':1}", 0, HFDCP_ERR_FORMAT, "invalid escape sequence \\x"},
    {"{'a\\u12g4':1}", 0, HFDCP_ERR_FORMAT, "4 hex digits"},
    {"{'a", 0, HFDCP_ERR_FORMAT, "unterminated string"},
    /* duplicate keys, at every level */
    {"{" A4 "," A4 "}", 8, HFDCP_ERR_FORMAT, "duplicate key \"a\""},
    {"{'a':{'dtype':'U8','dtype':'U8','shape':[4],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT,
     "duplicate key \"dtype\" in the object of key \"a\""},
    {"{'__metadata__':{'k':'1','k':'2'}," A4 "}", 4, HFDCP_ERR_FORMAT,
     "duplicate key \"k\" in the object of key \"__metadata__\""},
    {"{'__metadata__':{},'__metadata__':{}}", 0, HFDCP_ERR_FORMAT, "duplicate key \"__metadata__\""},
    {SH("{`a`: {`saved_offsets`: [0]}, `a`: {`saved_offsets`: [0]}}"), 4, HFDCP_ERR_FORMAT,
     "DCP_SHARDING_INFO has a duplicate key \"a\""},
    /* entries */
    {"{'a':{'dtype':'F33','shape':[4],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT,
     "tensor 'a': unknown dtype \"F33\""},
    {"{'a':{'dtype':'u8','shape':[4],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "unknown dtype \"u8\""},
    {"{'a':{'dtype':8,'shape':[4],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "dtype is a number, not a string"},
    {"{'a':{'shape':[4],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "tensor 'a': missing field \"dtype\""},
    {"{'a':{'dtype':'U8','data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "missing field \"shape\""},
    {"{'a':{'dtype':'U8','shape':[4]}}", 4, HFDCP_ERR_FORMAT, "missing field \"data_offsets\""},
    {"{'a':{'dtype':'U8','shape':[4],'data_offsets':[0,4],'x':1}}", 4, HFDCP_ERR_FORMAT,
     "tensor 'a': unexpected field \"x\""},
    {"{'a':[1,2]}", 0, HFDCP_ERR_FORMAT, "tensor 'a': entry is an array, not an object"},
    {"{'a':{'dtype':'U8','shape':4,'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "shape is a number, not an array"},
    {"{'a':{'dtype':'U8','shape':[-4],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "tensor 'a': shape[0] is negative (-4)"},
    {"{'a':{'dtype':'U8','shape':[2.5],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "shape[0] is not an integer (2.5)"},
    {"{'a':{'dtype':'U8','shape':[4.0],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "shape[0] is not an integer (4.0)"},
    {"{'a':{'dtype':'U8','shape':[1,4e0],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT, "shape[1] is not an integer (4e0)"},
    {"{'a':{'dtype':'U8','shape':[9007199254740993],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT,
     "shape[0] is above 2^53"},
    {"{'a':{'dtype':'U8','shape':[123456789012345678901234],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT,
     "above 2^53"},
    {"{'a':{'dtype':'U8','shape':['4'],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT,
     "shape[0] is a string, not a non-negative integer"},
    {"{'a':{'dtype':'U8','shape':[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
     "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],'data_offsets':[0,1]}}",
     1, HFDCP_ERR_UNSUPPORTED, "shape has 65 dimensions, more than the 64"},
    {"{'a':{'dtype':'U8','shape':[4],'data_offsets':[0,4,8]}}", 4, HFDCP_ERR_FORMAT,
     "data_offsets is an array of another length, not an array of two integers"},
    {"{'a':{'dtype':'U8','shape':[4],'data_offsets':[4]}}", 4, HFDCP_ERR_FORMAT, "not an array of two integers"},
    {"{'a':{'dtype':'U8','shape':[4],'data_offsets':'0,4'}}", 4, HFDCP_ERR_FORMAT, "data_offsets is a string"},
    {"{'a':{'dtype':'U8','shape':[0],'data_offsets':[4,0]}}", 4, HFDCP_ERR_FORMAT,
     "data_offsets [4, 0]: begin is after end"},
    {"{'a':{'dtype':'U8','shape':[4],'data_offsets':[-4,0]}}", 4, HFDCP_ERR_FORMAT, "data_offsets[0] is negative"},
    {"{'a':{'dtype':'U8','shape':[4],'data_offsets':[0,4.5]}}", 4, HFDCP_ERR_FORMAT, "data_offsets[1] is not an integer"},
    {"{'a':{'dtype':'U8','shape':[4],'data_offsets':[0,null]}}", 4, HFDCP_ERR_FORMAT, "data_offsets[1] is null"},
    /* sizes */
    {"{'a':{'dtype':'F32','shape':[9007199254740992,9007199254740992],'data_offsets':[0,4]}}", 4,
     HFDCP_ERR_FORMAT, "tensor 'a': element count overflows 64 bits"},
    {"{'a':{'dtype':'F64','shape':[4611686018427387904],'data_offsets':[0,4]}}", 4,
     HFDCP_ERR_FORMAT, "above 2^53"},
    {"{'a':{'dtype':'F64','shape':[1073741824,1073741824],'data_offsets':[0,4]}}", 4,
     HFDCP_ERR_FORMAT, "size in bits overflows 64 bits"},
    {"{'a':{'dtype':'F4','shape':[3],'data_offsets':[0,2]}}", 2, HFDCP_ERR_FORMAT,
     "3 elements of F4 (4 bits) are not a whole number of bytes"},
    {"{'a':{'dtype':'F6_E2M3','shape':[2,3],'data_offsets':[0,5]}}", 5, HFDCP_ERR_FORMAT, "not a whole number of bytes"},
    {"{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT,
     "data_offsets [0, 4] span 4 bytes, but F32 of shape [2] takes 8 bytes"},
    /* layout */
    {"{" A4 ",'b':{'dtype':'U8','shape':[4],'data_offsets':[8,12]}}", 12, HFDCP_ERR_FORMAT,
     "hole in the data buffer: bytes [4, 8) belong to no tensor (the next tensor, 'b', begins at 8)"},
    {"{'a':{'dtype':'U8','shape':[4],'data_offsets':[4,8]}}", 8, HFDCP_ERR_FORMAT, "bytes [0, 4) belong to no tensor"},
    {"{'a':{'dtype':'U8','shape':[8],'data_offsets':[0,8]},'b':{'dtype':'U8','shape':[8],'data_offsets':[4,12]}}",
     12, HFDCP_ERR_FORMAT, "tensor 'b' data [4, 12) overlaps tensor 'a' data [0, 8)"},
    {"{'a':{'dtype':'U8','shape':[8],'data_offsets':[0,8]},'z':{'dtype':'U8','shape':[0],'data_offsets':[4,4]}}",
     8, HFDCP_ERR_FORMAT, "tensor 'z' data [4, 4) overlaps tensor 'a' data [0, 8)"},
    {"{" A4 ",'b':{'dtype':'I8','shape':[4],'data_offsets':[0,4]}}", 4, HFDCP_ERR_FORMAT,
     "tensor 'b' data [0, 4) overlaps tensor 'a'"},
    {"{" A4 "}", 7, HFDCP_ERR_FORMAT, "3 trailing bytes: the tensors end at byte"},
    {"{" A4 "}", 2, HFDCP_ERR_FORMAT, "is truncated: the tensors end at byte"},
    {"{'z':{'dtype':'U8','shape':[0],'data_offsets':[0,0]}}", 1, HFDCP_ERR_FORMAT, "1 trailing bytes"},
    /* __metadata__ */
    {"{'__metadata__':5," A4 "}", 4, HFDCP_ERR_FORMAT, "__metadata__ is a number, not an object of strings"},
    {"{'__metadata__':['a']," A4 "}", 4, HFDCP_ERR_FORMAT, "__metadata__ is an array"},
    {"{'__metadata__':{'k':1}," A4 "}", 4, HFDCP_ERR_FORMAT,
     "__metadata__ value of key \"k\" is a number, not a string"},
    {"{'__metadata__':{'k':{'x':'y'}}," A4 "}", 4, HFDCP_ERR_FORMAT, "value of key \"k\" is an object"},
    {"{'__metadata__':{'k':null}," A4 "}", 4, HFDCP_ERR_FORMAT, "value of key \"k\" is null"},
    /* DCP_SHARDING_INFO */
    {SH("{"), 4, HFDCP_ERR_FORMAT, "DCP_SHARDING_INFO is not valid JSON"},
    {SH("[]"), 4, HFDCP_ERR_FORMAT, "DCP_SHARDING_INFO is an array, not a JSON object"},
    {SH("{}"), 4, HFDCP_ERR_FORMAT, "tensor 'a': missing from DCP_SHARDING_INFO"},
    {SH("{`a`: {`saved_offsets`: [0]}, `q`: {`saved_offsets`: [0]}}"), 4, HFDCP_ERR_FORMAT,
     "DCP_SHARDING_INFO names tensor 'q', which is not in the file"},
    {SH("{`a`: {`saved_offsets`: [0, 0]}}"), 4, HFDCP_ERR_FORMAT,
     "tensor 'a': DCP_SHARDING_INFO saved_offsets is of another length but the tensor has 1 dimensions"},
    {SH("{`a`: {`saved_offsets`: [-2]}}"), 4, HFDCP_ERR_FORMAT,
     "tensor 'a': DCP_SHARDING_INFO saved_offsets[0] is negative (-2)"},
    {SH("{`a`: {`saved_offsets`: [1.5]}}"), 4, HFDCP_ERR_FORMAT, "saved_offsets[0] is not an integer"},
    {SH("{`a`: {`saved_offsets`: [`0`]}}"), 4, HFDCP_ERR_FORMAT, "saved_offsets[0] is a string"},
    {SH("{`a`: [0]}"), 4, HFDCP_ERR_FORMAT, "DCP_SHARDING_INFO entry is an array, not an object"},
    {SH("{`a`: {}}"), 4, HFDCP_ERR_FORMAT, "saved_offsets is missing"},
    {SH("{`a`: {`saved_offsets`: 0}}"), 4, HFDCP_ERR_FORMAT, "saved_offsets is a number"},
};

static int format_should_refuse_malformed_headers(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    T_CHECK(sizeof bad_headers / sizeof bad_headers[0] >= 35);
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        char *json = tq(bad_headers[i].json);
        hfdcp__header h;
        int rc = parse_text(json, bad_headers[i].data, &h);
        int bad = hfdcp_test_status(__FILE__, __LINE__, json, rc,
                                    bad_headers[i].status, bad_headers[i].substr);
        if (!bad && strstr(hfdcp_last_error(), "file 't.safetensors'") == NULL)
            bad = hfdcp_test_fail(__FILE__, __LINE__, "case %zu: no file name in \"%s\"",
                                  i, hfdcp_last_error());
        if (!header_is_zero(&h))
            bad = hfdcp_test_fail(__FILE__, __LINE__, "case %zu: output not zeroed", i);
        if (rc == HFDCP_OK)
            hfdcp__header_free(&h);
        free(json);
        T_CHECKF(!bad, "malformed header case %zu", i);
    }
    return T_OK;
}

static int format_should_check_the_header_length(MPI_Comm comm, const char *dir)
{
    unsigned char p[8];
    uint64_t n = 99;
    (void)comm;
    (void)dir;
#define SETLEN(v) for (int k = 0; k < 8; k++) p[k] = (unsigned char)((uint64_t)(v) >> (8 * k))
    SETLEN(2);
    T_STATUS(hfdcp__header_len(p, 7, "f.st", &n), HFDCP_ERR_FORMAT, "file 'f.st' is too small (7 bytes)");
    SETLEN(0);
    T_STATUS(hfdcp__header_len(p, 100, "f.st", &n), HFDCP_ERR_FORMAT, "header length 0 is too small");
    SETLEN(1);
    T_STATUS(hfdcp__header_len(p, 100, "f.st", &n), HFDCP_ERR_FORMAT, "header length 1 is too small");
    SETLEN(100000001);
    T_STATUS(hfdcp__header_len(p, UINT64_C(1) << 40, "f.st", &n), HFDCP_ERR_FORMAT,
             "header length 100000001 is above the limit of 100000000 bytes");
    SETLEN(UINT64_MAX);
    T_STATUS(hfdcp__header_len(p, 100, "f.st", &n), HFDCP_ERR_FORMAT, "above the limit");
    SETLEN(93);
    T_STATUS(hfdcp__header_len(p, 100, "f.st", &n), HFDCP_ERR_FORMAT,
             "header length 93 runs past the end of the file (the file has 100 bytes");
    T_CHECK(n == 99);
    SETLEN(92);
    T_OKCALL(hfdcp__header_len(p, 100, "f.st", &n));
    T_CHECK(n == 92);
    SETLEN(100000000);
    T_OKCALL(hfdcp__header_len(p, 100000008, "f.st", &n));
    T_CHECK(n == 100000000);
#undef SETLEN
    return T_OK;
}

static int format_should_accept_real_world_variants(MPI_Comm comm, const char *dir)
{
    hfdcp__header h;
    char *j;
    (void)comm;
    (void)dir;

    /* unpadded, odd length */
    j = tq("{" A4 "}");
    T_OKCALL(parse_text(j, 4, &h));
    T_CHECK(h.n_entries == 1 && h.header_len == strlen(j) && h.header_len % 2 == 1);
    T_CHECK(h.entries[0].offsets == NULL && !h.sharded && h.n_meta == 0 && !h.meta_null);
    hfdcp__header_free(&h);
    free(j);

    /* JSON whitespace before and after, and inside */
    j = tq(" \t\r\n{ 'a' : { 'dtype' : 'U8' , 'shape' : [ 4 ] , 'data_offsets' : [ 0 , 4 ] } }\r\n\t   ");
    T_OKCALL(parse_text(j, 4, &h));
    T_CHECK(h.n_entries == 1 && h.entries[0].end == 4);
    hfdcp__header_free(&h);
    free(j);

    /* data order differs from key order; misaligned F64; field order */
    j = tq("{'b':{'shape':[1],'data_offsets':[1,9],'dtype':'F64'},'a':{'dtype':'I8','shape':[1],'data_offsets':[0,1]}}");
    T_OKCALL(parse_text(j, 9, &h));
    T_CHECK(h.n_entries == 2 && strcmp(h.entries[0].name, "a") == 0 && strcmp(h.entries[1].name, "b") == 0);
    T_CHECK(h.entries[1].dtype == HFDCP_F64 && h.entries[1].begin == 1 && h.data_size == 9);
    hfdcp__header_free(&h);
    free(j);

    /* zero-size tensors, several at one offset, one where a tensor starts */
    j = tq("{'z3':{'dtype':'I8','shape':[0],'data_offsets':[4,4]},"
           "'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]},"
           "'z2':{'dtype':'F32','shape':[0,3],'data_offsets':[4,4]},"
           "'z1':{'dtype':'F32','shape':[0],'data_offsets':[0,0]},"
           "'z0':{'dtype':'U8','shape':[5,0],'data_offsets':[0,0]}}");
    T_OKCALL(parse_text(j, 4, &h));
    {
        static const char *order[] = {"z0", "z1", "a", "z2", "z3"};
        T_CHECK(h.n_entries == 5 && h.data_size == 4);
        for (size_t i = 0; i < 5; i++)
            T_CHECKF(strcmp(h.entries[i].name, order[i]) == 0, "%zu: %s", i, h.entries[i].name);
    }
    hfdcp__header_free(&h);
    free(j);

    /* scalar; __metadata__ null; escaped names */
    j = tq("{'__metadata__':null,'s\\u00e9\\n\\ud83d\\ude00\\/':{'dtype':'F64','shape':[],'data_offsets':[0,8]}}");
    T_OKCALL(parse_text(j, 8, &h));
    T_CHECK(h.meta_null && h.n_meta == 0 && h.n_entries == 1);
    T_CHECK(strcmp(h.entries[0].name, "s\xC3\xA9\n\xF0\x9F\x98\x80/") == 0);
    T_CHECK(h.entries[0].ndim == 0 && h.entries[0].shape == NULL);
    hfdcp__header_free(&h);
    free(j);

    /* no tensors at all */
    j = tq("{}");
    T_OKCALL(parse_text(j, 0, &h));
    T_CHECK(h.n_entries == 0 && h.data_size == 0 && h.header_len == 2);
    hfdcp__header_free(&h);
    free(j);
    j = tq("{'__metadata__':{'format':'pt','k':''}}      ");
    T_OKCALL(parse_text(j, 0, &h));
    T_CHECK(h.n_meta == 2 && strcmp(h.meta[1].key, "k") == 0 && h.meta[1].value[0] == '\0');
    hfdcp__header_free(&h);
    free(j);

    /* sub-byte types in whole bytes */
    j = tq("{'f4':{'dtype':'F4','shape':[2],'data_offsets':[0,1]},"
           "'f6':{'dtype':'F6_E2M3','shape':[4],'data_offsets':[1,4]}}");
    T_OKCALL(parse_text(j, 4, &h));
    T_CHECK(h.n_entries == 2 && h.entries[1].dtype == HFDCP_F6_E2M3);
    hfdcp__header_free(&h);
    free(j);
    /* a shape entry and an offset of exactly 2^53 (only the size given) */
    j = tq("{'big':{'dtype':'U8','shape':[9007199254740992],'data_offsets':[0,9007199254740992]}}");
    T_OKCALL(parse_text(j, UINT64_C(9007199254740992), &h));
    T_CHECK(h.n_entries == 1 && h.entries[0].shape[0] == INT64_C(9007199254740992));
    hfdcp__header_free(&h);
    free(j);

    /* a sharded file; a scalar's saved_offsets is [] */
    j = tq("{'__metadata__':{'DCP_VERSION':'1.0','DCP_SHARDING_INFO':"
           "'{`s`: {`saved_offsets`: []}, `a`: {`saved_offsets`: [8]}}','format':'pt'},"
           "'a':{'dtype':'U8','shape':[4],'data_offsets':[0,4]},"
           "'s':{'dtype':'I32','shape':[],'data_offsets':[4,8]}}");
    T_OKCALL(parse_text(j, 8, &h));
    T_CHECK(h.sharded && h.n_entries == 2 && h.n_meta == 2);
    T_CHECK(strcmp(h.meta[0].key, "DCP_VERSION") == 0 && strcmp(h.meta[1].key, "format") == 0);
    T_CHECK(h.entries[0].offsets && h.entries[0].offsets[0] == 8 && h.entries[1].offsets != NULL);
    hfdcp__header_free(&h);
    free(j);

    /* -0 is zero, not negative */
    j = tq("{'a':{'dtype':'U8','shape':[-0],'data_offsets':[0,0]}}");
    T_OKCALL(parse_text(j, 0, &h));
    T_CHECK(h.entries[0].shape[0] == 0);
    hfdcp__header_free(&h);
    free(j);
    return T_OK;
}

/* Random byte flips of valid files: any status, never a crash or a leak,
 * and an HFDCP_OK result always satisfies every invariant (and writes back
 * to the same thing). */
static int mutate_and_parse(const unsigned char *orig, size_t size, uint64_t seed, int iters,
                            int *n_ok)
{
    static const char alphabet[] = "{}[]:,\"\\0123456789-.eE \t\nabcdefnrtuFIU_x";
    unsigned char *buf = malloc(size);
    uint64_t st = seed, n0 = 0;
    size_t span;
    /* Only the length, the header and a few data bytes are mutated (and
     * restored): the parser reads nothing else. */
    for (int k = 7; k >= 0; k--)
        n0 = (n0 << 8) | orig[k];
    span = 8 + n0 + 16 < size ? (size_t)(8 + n0 + 16) : size;
    memcpy(buf, orig, size);
    for (int it = 0; it < iters; it++) {
        uint64_t r = hfdcp_test_rand(&st), fsize = size, n = 0;
        unsigned char *json;
        hfdcp__header h;
        int rc, bad = 0;
        memcpy(buf, orig, span);
        switch (r % 10) {
        case 0: case 1: case 2: case 3: case 4: /* one bit */
            buf[8 + hfdcp_test_rand(&st) % (span - 8)] ^= (unsigned char)(1u << (hfdcp_test_rand(&st) % 8));
            break;
        case 5: case 6: /* one byte from a JSON-ish alphabet */
            buf[8 + hfdcp_test_rand(&st) % (span - 8)] =
                (unsigned char)alphabet[hfdcp_test_rand(&st) % (sizeof alphabet - 1)];
            break;
        case 7: /* several random bytes */
            for (int k = 0; k < 4; k++)
                buf[hfdcp_test_rand(&st) % span] = (unsigned char)hfdcp_test_rand(&st);
            break;
        case 8: /* the length prefix */
            buf[hfdcp_test_rand(&st) % 8] ^= (unsigned char)(1u << (hfdcp_test_rand(&st) % 8));
            break;
        default: /* file size off by a little */
            fsize = size + (hfdcp_test_rand(&st) % 7) - 3;
            if (fsize > size)
                fsize = size; /* the buffer must hold what the size says */
            fsize -= hfdcp_test_rand(&st) % 2;
            break;
        }
        rc = hfdcp__header_len(buf, fsize, "m", &n);
        if (rc == HFDCP_OK) {
            json = malloc(n);
            memcpy(json, buf + 8, n);
            rc = hfdcp__header_parse((const char *)json, n, fsize, "m", &h);
            free(json);
            if (rc == HFDCP_OK) {
                char *out = NULL;
                size_t out_len;
                hfdcp__header h2;
                (*n_ok)++;
                bad = check_consistent(&h, fsize);
                if (!bad && hfdcp__header_serialize(&h, &out, &out_len) != HFDCP_OK)
                    bad = hfdcp_test_fail(__FILE__, __LINE__, "reserialize: %s", hfdcp_last_error());
                if (!bad) {
                    if (hfdcp__header_parse(out + 8, out_len - 8, out_len + h.data_size, "m2", &h2) != HFDCP_OK)
                        bad = hfdcp_test_fail(__FILE__, __LINE__, "reparse: %s", hfdcp_last_error());
                    else
                        bad = same_entries(&h, &h2), hfdcp__header_free(&h2);
                }
                free(out);
                hfdcp__header_free(&h);
            } else if (!header_is_zero(&h)) {
                bad = hfdcp_test_fail(__FILE__, __LINE__, "failed parse left output");
            }
        }
        if (rc != HFDCP_OK && hfdcp_last_error()[0] == '\0')
            bad = hfdcp_test_fail(__FILE__, __LINE__, "no message");
        if (rc == HFDCP_ERR_INTERNAL)
            bad = hfdcp_test_fail(__FILE__, __LINE__, "internal: %s", hfdcp_last_error());
        if (bad) {
            fprintf(stderr, "seed %" PRIu64 " iteration %d\n", seed, it);
            free(buf);
            return 1;
        }
    }
    free(buf);
    return 0;
}

/* A sharded header with most features, as a whole file of zero data. */
static int sample_file(unsigned char **file, size_t *size)
{
    static int64_t s1[2] = {3, 5}, s2[1] = {0}, o1[2] = {6, 0}, o2[1] = {7};
    static int64_t o3[1] = {0}, s4[3] = {2, 2, 2}, o4[3] = {0, 2, 4};
    hfdcp__entry e[] = {
        {"w\xC3\xA9ight", HFDCP_F32, 2, s1, o1, 0, 60, 0},
        {"empty", HFDCP_BF16, 1, s2, o2, 60, 60, 0},
        {"s", HFDCP_I64, 0, NULL, o3, 60, 68, 0},
        {"q\"uote", HFDCP_U8, 3, s4, o4, 68, 76, 0},
    };
    hfdcp__kv meta[] = {{"k", "v"}, {"format", "pt"}};
    hfdcp__header h = {e, 4, meta, 2, false, true, 0, 0, 0, false, NULL};
    char *out;
    size_t len;
    int rc = hfdcp__header_serialize(&h, &out, &len);
    if (rc != HFDCP_OK)
        return rc;
    *file = calloc(1, len + 76);
    memcpy(*file, out, len);
    *size = len + 76;
    free(out);
    return HFDCP_OK;
}

static int format_should_survive_random_mutations(MPI_Comm comm, const char *dir)
{
    static const char *fixtures[] = {"hf_safetensors_samples/overall.safetensors",
                                     "mlx/adapters.safetensors",
                                     "burn/batch_norm2d.safetensors"};
    unsigned char *file;
    size_t size;
    int n_ok = 0, iters = SANITIZED ? 1500 : 6000;
    (void)comm;
    (void)dir;
    T_OKCALL(sample_file(&file, &size));
    T_CHECK(mutate_and_parse(file, size, 1, iters, &n_ok) == 0);
    free(file);
    for (size_t i = 0; i < 3; i++) {
        char *p = hfdcp__path_join(hfdcp_test_fixtures(), fixtures[i]);
        unsigned char *bytes = hfdcp_test_read_file(p, &size);
        free(p);
        T_CHECK(bytes != NULL);
        /* only the header and a little data matter: keep the file as is */
        T_CHECK(mutate_and_parse(bytes, size, 100 + i, iters, &n_ok) == 0);
        free(bytes);
    }
    printf("mutations: %d of %d parsed OK (all consistent)\n", n_ok, 4 * iters);
    T_CHECK(n_ok > 0);
    return T_OK;
}

/* ------------------------------------------------------------------------
 * Serialization
 * ---------------------------------------------------------------------- */

static int format_should_round_trip_serialized_headers(MPI_Comm comm, const char *dir)
{
    static int64_t s_a[2] = {2, 3}, s_b[1] = {5}, s_c[1] = {0}, s_e[1] = {7};
    hfdcp__entry e[] = {
        {"plain.weight", HFDCP_F64, 2, s_a, NULL, 0, 48, 0},
        {"quote\"d", HFDCP_F32, 1, s_b, NULL, 48, 68, 0},
        {"back\\slash", HFDCP_BF16, 1, s_c, NULL, 68, 68, 0},
        {"ctl\x01\x1f\t\n\r\b\f end", HFDCP_BF16, 1, s_b, NULL, 68, 78, 0},
        {"utf8 \xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 del\x7f", HFDCP_U8, 0, NULL, NULL, 78, 79, 0},
        {"", HFDCP_BOOL, 1, s_e, NULL, 79, 86, 0},
        {"/slash", HFDCP_F8_E4M3, 1, s_b, NULL, 86, 91, 0},
    };
    hfdcp__kv meta[] = {{"note", "a \"quoted\" \\ value\n"}, {"\xC3\xA9", "\xF0\x9F\x98\x80"}};
    hfdcp__header h = {e, 7, meta, 2, false, false, 0, 0, 0, false, NULL}, p, p2;
    char *out = NULL, *out2 = NULL, *path, *args, *got = NULL;
    size_t len, len2;
    uint64_t n = 0;
    unsigned char *file;
    hfdcp__buf want;
    (void)comm;

    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    for (int k = 7; k >= 0; k--)
        n = (n << 8) | (unsigned char)out[k];
    T_CHECK(n == len - 8 && n % 8 == 0);
    T_CHECK(out[8] == '{');
    {
        const char *pre = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"a \\\"quoted\\\" \\\\ value\\n\","
                          "\"\xC3\xA9\":\"\xF0\x9F\x98\x80\"},\"plain.weight\":{\"dtype\":\"F64\","
                          "\"shape\":[2,3],\"data_offsets\":[0,48]},\"quote\\\"d\":";
        T_CHECKF(strncmp(out + 8, pre, strlen(pre)) == 0, "%.300s", out + 8);
    }
    T_CHECK(contains(out, len, "\"ctl\\u0001\\u001f\\t\\n\\r\\b\\f end\""));
    T_CHECK(contains(out, len, "\xF0\x9F\x98\x80 del\x7f\""));
    {
        size_t end = len;
        while (end > 8 && out[end - 1] == ' ')
            end--;
        T_CHECK(out[end - 1] == '}' && len - end < 8);
    }

    T_OKCALL(hfdcp__header_parse(out + 8, n, len + 91, "rt", &p));
    T_CHECK(same_entries(&h, &p) == 0);
    T_CHECK(p.n_meta == 3 && strcmp(p.meta[0].key, "format") == 0 && strcmp(p.meta[0].value, "pt") == 0);
    for (size_t i = 0; i < 2; i++)
        T_CHECK(strcmp(p.meta[i + 1].key, meta[i].key) == 0 && strcmp(p.meta[i + 1].value, meta[i].value) == 0);
    /* a fixed point */
    T_OKCALL(hfdcp__header_serialize(&p, &out2, &len2));
    T_CHECK(len2 == len && memcmp(out, out2, len) == 0);
    free(out2);

    /* Python reads the same thing */
    path = hfdcp__path_join(dir, "rt.safetensors");
    file = calloc(1, len + 91);
    memcpy(file, out, len);
    T_CHECK(hfdcp_test_write_file(path, file, len + 91) == 0);
    hfdcp__buf_init(&want);
    canon(&want, path, &p);
    hfdcp__buf_put(&want, "", 1);
    args = hfdcp__asprintf("header '%s'", path);
    T_CHECK(oracle(args, &got) == 0 && got != NULL);
    T_CHECK(same_text("round trip", (const char *)want.data, got));
    free(args);
    free(got);
    free(path);
    free(file);
    hfdcp__buf_free(&want);

    /* a caller "format" replaces pt, in first place */
    {
        hfdcp__kv m2[] = {{"a", "1"}, {"format", "mlx"}};
        hfdcp__header h2 = {e, 1, m2, 2, false, false, 0, 0, 0, false, NULL};
        T_OKCALL(hfdcp__header_serialize(&h2, &out2, &len2));
        {
            const char *pre = "{\"__metadata__\":{\"format\":\"mlx\",\"a\":\"1\"},\"plain.weight\":";
            T_CHECK(strncmp(out2 + 8, pre, strlen(pre)) == 0);
        }
        T_OKCALL(hfdcp__header_parse(out2 + 8, len2 - 8, len2 + 48, "rt", &p2));
        T_CHECK(p2.n_meta == 2 && strcmp(p2.meta[0].value, "mlx") == 0);
        hfdcp__header_free(&p2);
        free(out2);
    }
    /* no entries at all */
    {
        hfdcp__header h3 = {NULL, 0, NULL, 0, false, false, 0, 0, 0, false, NULL};
        T_OKCALL(hfdcp__header_serialize(&h3, &out2, &len2));
        T_CHECK(len2 == 8 + 32 && memcmp(out2 + 8, "{\"__metadata__\":{\"format\":\"pt\"}}", 32) == 0);
        T_CHECK(out2[0] == 32 && out2[1] == 0);
        free(out2);
    }
    hfdcp__header_free(&p);
    free(out);
    return T_OK;
}

static int format_should_write_sharding_info_as_python_does(MPI_Comm comm, const char *dir)
{
    static int64_t s1[2] = {2, 2}, o1[2] = {4, 0};
    hfdcp__entry e[] = {
        {"a", HFDCP_F32, 2, s1, o1, 0, 16, 0},
        {"b", HFDCP_I64, 0, NULL, NULL, 16, 24, 0},
    };
    hfdcp__header h = {e, 2, NULL, 0, false, true, 0, 0, 0, false, NULL}, p;
    const char *want = "{\"__metadata__\":{\"format\":\"pt\",\"DCP_SHARDING_INFO\":"
                       "\"{\\\"a\\\": {\\\"saved_offsets\\\": [4, 0]}, \\\"b\\\": "
                       "{\\\"saved_offsets\\\": []}}\",\"DCP_VERSION\":\"1.0\"},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                       "\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[16,24]}}";
    char *out, *out2, *path, *args, *got = NULL;
    size_t len, len2;
    unsigned char *file;
    hfdcp__buf text;
    (void)comm;

    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    T_CHECKF(strncmp(out + 8, want, strlen(want)) == 0, "%.*s", (int)len - 8, out + 8);
    T_OKCALL(hfdcp__header_parse(out + 8, len - 8, len + 24, "sh", &p));
    T_CHECK(p.sharded && p.entries[0].offsets[0] == 4 && p.entries[0].offsets[1] == 0);
    T_CHECK(p.n_meta == 2 && strcmp(p.meta[1].key, "DCP_VERSION") == 0);
    /* fixed point: DCP_VERSION stays after DCP_SHARDING_INFO */
    T_OKCALL(hfdcp__header_serialize(&p, &out2, &len2));
    T_CHECK(len2 == len && memcmp(out, out2, len) == 0);
    free(out2);
    hfdcp__header_free(&p);
    free(out);

    /* names Python escapes (ensure_ascii) checked by the oracle */
    {
        static int64_t s[1] = {2}, o[1] = {6};
        hfdcp__entry e2[] = {
            {"\xC3\xA9t\xC3\xA9", HFDCP_U8, 1, s, o, 0, 2, 0},
            {"q\"b\\s/\x7f\x01\n", HFDCP_U8, 1, s, o, 2, 4, 0},
            {"\xF0\x9F\x98\x80\xE6\x97\xA5", HFDCP_U8, 1, s, o, 4, 6, 0},
        };
        hfdcp__kv m[] = {{"DCP_VERSION", "1.0"}, {"x", "y"}};
        hfdcp__header h2 = {e2, 3, m, 2, false, true, 0, 0, 0, false, NULL};
        T_OKCALL(hfdcp__header_serialize(&h2, &out, &len));
        T_CHECK(contains(out, len, "\\\\u00e9t\\\\u00e9"));
        T_CHECK(contains(out, len, "\\\\ud83d\\\\ude00\\\\u65e5"));
        T_CHECK(contains(out, len, "q\\\\\\\"b\\\\\\\\s/\\\\u007f\\\\u0001\\\\n"));
        T_OKCALL(hfdcp__header_parse(out + 8, len - 8, len + 6, "sh", &p));
        path = hfdcp__path_join(dir, "sharded.safetensors");
        file = calloc(1, len + 6);
        memcpy(file, out, len);
        T_CHECK(hfdcp_test_write_file(path, file, len + 6) == 0);
        hfdcp__buf_init(&text);
        canon(&text, path, &p);
        hfdcp__buf_put(&text, "", 1);
        args = hfdcp__asprintf("header '%s'", path);
        T_CHECK(oracle(args, &got) == 0 && got != NULL);
        T_CHECK(strstr(got, "sharded yes canonical\n") != NULL);
        T_CHECK(same_text("sharded", (const char *)text.data, got));
        hfdcp__buf_free(&text);
        hfdcp__header_free(&p);
        free(args);
        free(got);
        free(path);
        free(file);
        free(out);
    }
    return T_OK;
}

static int format_should_refuse_bad_serialize_input(MPI_Comm comm, const char *dir)
{
    static int64_t s[1] = {4}, neg[1] = {-1};
    hfdcp__entry e[2] = {{"a", HFDCP_U8, 1, s, NULL, 0, 4, 0}, {"b", HFDCP_U8, 1, s, NULL, 4, 8, 0}};
    hfdcp__kv m[2] = {{"k", "v"}, {"k", "w"}};
    hfdcp__header h = {e, 2, NULL, 0, false, false, 0, 0, 0, false, NULL};
    char *out = NULL;
    size_t len;
    (void)comm;
    (void)dir;
    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    free(out);
    e[1].name = "a";
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "two tensors are named 'a'");
    e[1].name = "__metadata__";
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "reserved name");
    e[1].name = "b\xC0";
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "not valid UTF-8");
    e[1].name = "b";
    e[1].begin = 5, e[1].end = 9;
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "hole in the data buffer");
    e[1].begin = 3, e[1].end = 7;
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "overlaps");
    e[1].begin = 4, e[1].end = 7;
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "span 3 bytes");
    e[1].end = 8;
    e[1].shape = neg;
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "outside [0, 2^53]");
    e[1].shape = s;
    e[1].dtype = (hfdcp_dtype)77;
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "invalid dtype");
    e[1].dtype = HFDCP_U8;
    h.sharded = true;
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "needs offsets");
    h.sharded = false;
    h.meta = m;
    h.n_meta = 2;
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "metadata key \"k\" given twice");
    m[1].key = "DCP_SHARDING_INFO";
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "DCP_SHARDING_INFO is written");
    /* entries given out of data order are fine (the JSON keeps the order) */
    h.meta = NULL;
    h.n_meta = 0;
    e[0].begin = 4, e[0].end = 8, e[1].begin = 0, e[1].end = 4;
    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    T_CHECK(strstr(out + 8, "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},\"b\"") != NULL);
    free(out);
    return T_OK;
}

/* h.align: 8 + N a multiple of it, N a multiple of 8, the JSON the same
 * as unaligned with only spaces after it (fewer than the alignment), and
 * the parser reads it back; a bad alignment is refused. */
static int format_should_pad_to_the_data_alignment(MPI_Comm comm, const char *dir)
{
    static int64_t s[1] = {5};
    static const uint64_t ok[] = {0, 8, 16, 4096, 65536, (uint64_t)1 << 24};
    static const uint64_t bad[] = {4, 12, 4000, (uint64_t)1 << 25};
    hfdcp__entry e[2] = {{"x", HFDCP_F32, 1, s, NULL, 0, 20, 0}, {"y", HFDCP_U8, 1, s, NULL, 20, 25, 0}};
    hfdcp__header h = {e, 2, NULL, 0, false, false, 0, 25, 0, false, NULL}, p;
    char *plain = NULL, *out = NULL;
    size_t plain_len, len;
    (void)comm;
    (void)dir;
    T_OKCALL(hfdcp__header_serialize(&h, &plain, &plain_len));
    size_t json = plain_len; /* the JSON's end, before its padding */
    while (plain[json - 1] == ' ')
        json--;
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        uint64_t a = ok[k] ? ok[k] : 8, n;
        h.align = ok[k];
        T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
        T_CHECKF(len % a == 0 && (len - 8) % 8 == 0 && len - json < a,
                 "align %" PRIu64 ": %zu bytes", a, len);
        T_CHECK(memcmp(out + 8, plain + 8, json - 8) == 0);
        for (size_t i = json; i < len; i++)
            T_CHECKF(out[i] == ' ', "align %" PRIu64 ": byte %zu", a, i);
        T_OKCALL(hfdcp__header_len((const unsigned char *)out, len + 25, "f", &n));
        T_CHECK(n == len - 8);
        T_OKCALL(hfdcp__header_parse(out + 8, n, len + 25, "f", &p));
        T_CHECK(p.n_entries == 2 && p.header_len == n &&
                strcmp(p.entries[1].name, "y") == 0 && p.entries[1].begin == 20);
        hfdcp__header_free(&p);
        free(out);
        out = NULL;
    }
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        h.align = bad[k];
        T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG,
                 "is not a power of two from 8 to 16777216");
    }
    free(plain);
    return T_OK;
}

static int format_should_refuse_headers_above_the_write_limit(MPI_Comm comm, const char *dir)
{
    static int64_t s[1] = {0};
    size_t base, L;
    char *name, *out = NULL;
    size_t len;
    hfdcp__entry e = {"x", HFDCP_U8, 1, s, NULL, 0, 0, 0};
    hfdcp__header h = {&e, 1, NULL, 0, false, false, 0, 0, 0, false, NULL};
    (void)comm;
    (void)dir;
    /* JSON length without padding = base + strlen(name) */
    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    base = len - 8;
    while (out[8 + base - 1] == ' ')
        base--;
    base -= 1;
    free(out);
    L = HFDCP_HEADER_MAX_WRITE - base; /* exactly the limit, no padding */
    name = malloc(L + 2);
    memset(name, 'n', L + 1);
    name[L] = '\0';
    e.name = name;
    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    T_CHECK(len == 8 + HFDCP_HEADER_MAX_WRITE);
    free(out);
    name[L] = 'n';
    name[L + 1] = '\0';
    T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_RANGE,
             "the header would take 25000008 bytes, above the limit of 25000000");
    free(name);
    /* and stops early for a huge plan */
    {
        size_t n = 400000;
        hfdcp__entry *many = calloc(n, sizeof *many);
        char (*names)[72] = malloc(n * sizeof *names);
        for (size_t i = 0; i < n; i++) {
            snprintf(names[i], sizeof names[i], "a.rather.long.tensor.name.to.fill.the.header.quickly.%zu", i);
            many[i] = (hfdcp__entry){names[i], HFDCP_U8, 1, s, NULL, 0, 0, 0};
        }
        hfdcp__header hm = {many, n, NULL, 0, false, false, 0, 0, 0, false, NULL};
        T_STATUS(hfdcp__header_serialize(&hm, &out, &len), HFDCP_ERR_RANGE, "at least");
        free(many);
        free(names);
    }
    return T_OK;
}

static int format_should_order_entries_for_alignment(MPI_Comm comm, const char *dir)
{
    static const char *want[] = {
        "U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
        "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E8M0", "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL",
        "F6_E3M2", "F6_E2M3", "F4"};
    hfdcp__entry e[HFDCP_DTYPE_COUNT + 2];
    size_t n = 0;
    (void)comm;
    (void)dir;
    for (int d = 0; d < HFDCP_DTYPE_COUNT; d++)
        e[n++] = (hfdcp__entry){"m", (hfdcp_dtype)d, 0, NULL, NULL, 0, 0, 0};
    e[n++] = (hfdcp__entry){"z", HFDCP_F32, 0, NULL, NULL, 0, 0, 0};
    e[n++] = (hfdcp__entry){"a", HFDCP_F32, 0, NULL, NULL, 0, 0, 0};
    qsort(e, n, sizeof e[0], hfdcp__entry_layout_cmp);
    T_CHECK(strcmp(e[4].name, "a") == 0 && strcmp(e[5].name, "m") == 0 && strcmp(e[6].name, "z") == 0);
    for (size_t i = 0, k = 0; i < n; i++) {
        if (e[i].dtype == HFDCP_F32 && strcmp(e[i].name, "m") != 0)
            continue;
        T_CHECKF(strcmp(hfdcp_dtype_name(e[i].dtype), want[k]) == 0, "%zu: %s, wanted %s", k,
                 hfdcp_dtype_name(e[i].dtype), want[k]);
        k++;
    }
    return T_OK;
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int format_should_handle_100000_entries_quickly(MPI_Comm comm, const char *dir)
{
    size_t n = SANITIZED ? 10000 : 100000;
    hfdcp__entry *e = calloc(n, sizeof *e);
    char (*names)[48] = malloc(n * sizeof *names);
    int64_t (*shapes)[2] = malloc(n * sizeof *shapes);
    uint64_t pos = 0;
    hfdcp__header h = {e, n, NULL, 0, false, false, 0, 0, 0, false, NULL}, p;
    char *out;
    size_t len;
    double t0, t1, t2, c0, c1, c2;
    (void)comm;
    (void)dir;
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%zu.mlp.up_proj.weight", i);
        shapes[i][0] = (int64_t)(i % 4096 + 1);
        shapes[i][1] = 11008;
        e[i] = (hfdcp__entry){names[i], i % 2 ? HFDCP_BF16 : HFDCP_F32, 2, shapes[i], NULL, pos, 0, 0};
        pos += (uint64_t)shapes[i][0] * 11008 * (i % 2 ? 2 : 4);
        e[i].end = pos;
    }
    /* Timings are printed, not asserted: wall time on a shared machine
     * says little, process CPU time is the cost of the code. */
    t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    t1 = clock_s(CLOCK_MONOTONIC), c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    T_OKCALL(hfdcp__header_parse(out + 8, len - 8, len + pos, "big", &p));
    t2 = clock_s(CLOCK_MONOTONIC), c2 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    printf("%zu entries: header %zu bytes; serialize %.1f ms (cpu %.1f), "
           "parse %.1f ms (cpu %.1f)\n",
           n, len, 1e3 * (t1 - t0), 1e3 * (c1 - c0), 1e3 * (t2 - t1), 1e3 * (c2 - c1));
    T_CHECK(same_entries(&h, &p) == 0);
    hfdcp__header_free(&p);
    free(out);
    free(e);
    free(names);
    free(shapes);
    return T_OK;
}

/* ------------------------------------------------------------------------
 * Index
 * ---------------------------------------------------------------------- */

static int index_should_round_trip_the_fixture_index(MPI_Comm comm, const char *dir)
{
    char *path = hfdcp__path_join(hfdcp_test_fixtures(), "SafeTensors.jl/sharded/" HFDCP_INDEX_NAME);
    char *args, *got = NULL, *out = NULL;
    size_t size, len;
    unsigned char *bytes = hfdcp_test_read_file(path, &size);
    hfdcp__index ix;
    hfdcp__buf want;
    (void)comm;
    (void)dir;
    T_CHECK(bytes != NULL);
    T_OKCALL(hfdcp__index_parse((const char *)bytes, size, path, &ix));
    T_CHECK(ix.total_size == 4305 && ix.n == 36);
    T_CHECK(strcmp(ix.names[0], "float16_3") == 0);
    T_CHECK(strcmp(ix.files[0], "model-00001-of-00006.safetensors") == 0);
    T_CHECK(strcmp(ix.files[35], "model-00006-of-00006.safetensors") == 0);
    /* what Python reads */
    hfdcp__buf_init(&want);
    bputf(&want, "total_size %" PRIu64 "\n", ix.total_size);
    for (size_t i = 0; i < ix.n; i++) {
        bputf(&want, "w ");
        put_hex(&want, ix.names[i]);
        bputf(&want, " ");
        put_hex(&want, ix.files[i]);
        bputf(&want, "\n");
    }
    bputf(&want, "redump same\n");
    hfdcp__buf_put(&want, "", 1);
    args = hfdcp__asprintf("index '%s'", path);
    T_CHECK(oracle(args, &got) == 0 && got != NULL);
    T_CHECK(same_text("fixture index", (const char *)want.data, got));
    /* and what we write is the file, byte for byte */
    T_OKCALL(hfdcp__index_serialize(&ix, &out, &len));
    T_CHECKF(len == size && memcmp(out, bytes, size) == 0, "%zu vs %zu bytes", len, size);
    T_CHECK(out[len] == '\0');
    hfdcp__buf_free(&want);
    hfdcp__index_free(&ix);
    free(out);
    free(args);
    free(got);
    free(bytes);
    free(path);
    return T_OK;
}

static int index_should_write_what_python_writes(MPI_Comm comm, const char *dir)
{
    char *names[] = {"\xC3\xA9t\xC3\xA9", "q\"b\\s/", "tab\t\x01\x7f", "\xF0\x9F\x98\x80", "plain"};
    char *files[] = {"model-00001-of-00002.safetensors", "f\xC3\xA9.safetensors", "a b",
                     "model-00002-of-00002.safetensors", "x"};
    hfdcp__index ix = {UINT64_C(9007199254740992), 5, names, files}, back;
    char *out, *path, *args, *got = NULL, *mine;
    size_t len;
    /* Every rank runs this case alone: each in a directory of its own, or
     * one rank's second file replaces another's first before its oracle
     * reads it. */
    mine = hfdcp__asprintf("%s/rank%d", dir, hfdcp_test_rank());
    T_CHECK(mine != NULL && mkdir(mine, 0700) == 0);
    (void)comm;
    T_OKCALL(hfdcp__index_serialize(&ix, &out, &len));
    T_CHECK(strlen(out) == len);
    T_CHECK(strstr(out, "    \"\\u00e9t\\u00e9\": \"model-00001-of-00002.safetensors\",\n") != NULL);
    T_CHECK(strstr(out, "\"\\ud83d\\ude00\"") != NULL && strstr(out, "\"tab\\t\\u0001\\u007f\"") != NULL);
    path = hfdcp__path_join(mine, HFDCP_INDEX_NAME);
    free(mine);
    T_CHECK(hfdcp_test_write_file(path, out, len) == 0);
    args = hfdcp__asprintf("index '%s'", path);
    T_CHECK(oracle(args, &got) == 0 && got != NULL);
    T_CHECKF(strstr(got, "redump same\n") != NULL, "%s", got);
    T_CHECK(strstr(got, "total_size 9007199254740992\n") != NULL);
    T_OKCALL(hfdcp__index_parse(out, len, path, &back));
    T_CHECK(back.n == 5 && back.total_size == ix.total_size);
    for (size_t i = 0; i < 5; i++)
        T_CHECK(strcmp(back.names[i], names[i]) == 0 && strcmp(back.files[i], files[i]) == 0);
    hfdcp__index_free(&back);
    free(out);
    free(got);
    free(args);

    /* empty weight_map */
    ix.n = 0;
    ix.total_size = 0;
    T_OKCALL(hfdcp__index_serialize(&ix, &out, &len));
    T_CHECKF(strcmp(out, "{\n  \"metadata\": {\n    \"total_size\": 0\n  },\n  \"weight_map\": {}\n}") == 0,
             "%s", out);
    T_CHECK(hfdcp_test_write_file(path, out, len) == 0);
    args = hfdcp__asprintf("index '%s'", path);
    T_CHECK(oracle(args, &got) == 0 && got != NULL && strstr(got, "redump same\n") != NULL);
    free(out);
    free(got);
    free(args);
    free(path);

    /* bad names are refused on the way out too */
    files[2] = "../x";
    ix.n = 5;
    T_STATUS(hfdcp__index_serialize(&ix, &out, &len), HFDCP_ERR_ARG, "has a directory part");
    return T_OK;
}

#define IXW(wm) "{'metadata':{'total_size':4},'weight_map':{" wm "}}"
static const struct {
    const char *json;
    int status;
    const char *substr;
} bad_indexes[] = {
    {"{'metadata':{'total_size':4},'weight_map':{'a':'f'}", HFDCP_ERR_FORMAT, "is not valid JSON: parse error"},
    {"", HFDCP_ERR_FORMAT, "is empty"},
    {"['metadata']", HFDCP_ERR_FORMAT, "is not a JSON object"},
    {"{'weight_map':{}}", HFDCP_ERR_FORMAT, "has no \"metadata\" object"},
    {"{'metadata':[],'weight_map':{}}", HFDCP_ERR_FORMAT, "\"metadata\" is not an object"},
    {"{'metadata':{},'weight_map':{}}", HFDCP_ERR_FORMAT, "metadata has no \"total_size\""},
    {"{'metadata':{'total_size':'4'},'weight_map':{}}", HFDCP_ERR_FORMAT, "metadata.total_size is a string"},
    {"{'metadata':{'total_size':-4},'weight_map':{}}", HFDCP_ERR_FORMAT, "metadata.total_size is negative (-4)"},
    {"{'metadata':{'total_size':4.5},'weight_map':{}}", HFDCP_ERR_FORMAT, "metadata.total_size is not an integer (4.5)"},
    {"{'metadata':{'total_size':9007199254740993},'weight_map':{}}", HFDCP_ERR_FORMAT, "above 2^53"},
    {"{'metadata':{'total_size':4,'total_size':4},'weight_map':{}}", HFDCP_ERR_FORMAT, "duplicate key \"total_size\""},
    {"{'metadata':{'total_size':4}}", HFDCP_ERR_FORMAT, "has no \"weight_map\" object"},
    {"{'metadata':{'total_size':4},'weight_map':[]}", HFDCP_ERR_FORMAT, "\"weight_map\" is not an object"},
    {IXW("'a':'f','a':'g'"), HFDCP_ERR_FORMAT, "duplicate key \"a\" in the object of key \"weight_map\""},
    {IXW("'a':1"), HFDCP_ERR_FORMAT, "weight_map entry 'a' is not a string"},
    {IXW("'a':''"), HFDCP_ERR_FORMAT, "weight_map entry 'a': file name '' is empty"},
    {IXW("'a':'..'"), HFDCP_ERR_FORMAT, "file name '..' is a directory reference"},
    {IXW("'a':'.'"), HFDCP_ERR_FORMAT, "is a directory reference"},
    {IXW("'a':'/etc/passwd'"), HFDCP_ERR_FORMAT, "file name '/etc/passwd' is an absolute path"},
    {IXW("'a':'../x.safetensors'"), HFDCP_ERR_FORMAT, "has a directory part"},
    {IXW("'a':'sub/x.safetensors'"), HFDCP_ERR_FORMAT, "has a directory part"},
    {IXW("'a':'sub\\\\x.safetensors'"), HFDCP_ERR_FORMAT, "has a directory part"},
    {IXW("'a':'\\\\x.safetensors'"), HFDCP_ERR_FORMAT, "is an absolute path"},
    {IXW("'a':'\xC3'"), HFDCP_ERR_FORMAT, "not valid UTF-8"},
    {IXW("'a':'x\\u0000'"), HFDCP_ERR_UNSUPPORTED, "NUL"},
    {"{'metadata':{'total_size':4},'weight_map':{'a':'f'}} x", HFDCP_ERR_FORMAT, "unexpected character 'x'"},
};

static int index_should_refuse_malformed_indexes(MPI_Comm comm, const char *dir)
{
    hfdcp__index ix;
    char *j;
    (void)comm;
    (void)dir;
    for (size_t i = 0; i < sizeof bad_indexes / sizeof bad_indexes[0]; i++) {
        size_t n;
        char *copy;
        int rc, bad;
        j = tq(bad_indexes[i].json);
        n = strlen(j);
        copy = malloc(n ? n : 1);
        memcpy(copy, j, n);
        rc = hfdcp__index_parse(copy, n, "ix.json", &ix);
        bad = hfdcp_test_status(__FILE__, __LINE__, j, rc, bad_indexes[i].status, bad_indexes[i].substr);
        if (!bad && strncmp(hfdcp_last_error(), "ix.json", 7) != 0)
            bad = hfdcp_test_fail(__FILE__, __LINE__, "no file name: %s", hfdcp_last_error());
        if (ix.n != 0 || ix.names != NULL)
            bad = hfdcp_test_fail(__FILE__, __LINE__, "output not zeroed");
        if (rc == HFDCP_OK)
            hfdcp__index_free(&ix);
        free(copy);
        free(j);
        T_CHECKF(!bad, "index case %zu", i);
    }
    /* accepted: other keys, a whole total_size written as a float */
    j = tq("{'metadata':{'total_size':4.0e3,'total_parameters':7},'extra':1,'weight_map':{'a':'f.safetensors'}}");
    T_OKCALL(hfdcp__index_parse(j, strlen(j), "ix.json", &ix));
    T_CHECK(ix.total_size == 4000 && ix.n == 1);
    hfdcp__index_free(&ix);
    free(j);
    return T_OK;
}

/* hfdcp_crc32c: written from the entries' crc, at the offsets crc_at
 * gives, patched in place, parsed back; names that need escaping twice. */
static int format_should_write_and_read_crc32c(MPI_Comm comm, const char *dir)
{
    int64_t shape[1] = {2};
    hfdcp__entry e[3] = {
        {"a\"b\\c", HFDCP_F32, 1, shape, NULL, 0, 8, 0x0123abcdu},
        {"\xc3\xa9t\xc3\xa9/x", HFDCP_F32, 1, shape, NULL, 8, 16, 0u},
        {"w", HFDCP_F32, 1, shape, NULL, 16, 24, 0xffffffffu},
    };
    uint64_t at[3];
    hfdcp__header h = {0}, back;
    char *out;
    size_t len;
    uint32_t *crcs;
    (void)comm;
    (void)dir;
    h.entries = e;
    h.n_entries = 3;
    h.data_size = 24;
    h.crc32c = true;
    h.crc_at = at;
    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    T_CHECK(memcmp(out + at[0], "0123abcd", 8) == 0);
    T_CHECK(memcmp(out + at[1], "00000000", 8) == 0);
    hfdcp__header_put_crc(out, at[1], 0xdeadbeefu);
    T_CHECK(strstr(out + 8, "\"hfdcp_crc32c\":\"{\\\"a\\\\\\\"b\\\\\\\\c\\\":\\\"0123abcd\\\",") != NULL);
    T_OKCALL(hfdcp__header_parse(out + 8, len - 8, len + 24, "c.safetensors", &back));
    T_OKCALL(hfdcp__header_crc32c(&back, "c.safetensors", &crcs));
    T_CHECK(crcs != NULL);
    for (size_t i = 0; i < 3; i++) {
        uint32_t want = i == 1 ? 0xdeadbeefu : e[i].crc;
        size_t k = 0;
        while (strcmp(back.entries[k].name, e[i].name) != 0)
            k++;
        T_CHECKF(crcs[k] == want, "entry %zu: %08x", i, crcs[k]);
    }
    free(crcs);
    hfdcp__header_free(&back);
    free(out);
    /* A file without the key has none; a malformed one is refused. */
    h.crc32c = false;
    {
        static const struct { const char *value, *substr; } bad[] = {
            {"{\"a\\\"b\\\\c\":\"0123abc\",\"\xc3\xa9t\xc3\xa9/x\":\"00000000\",\"w\":\"00000000\"}", "not a string of 8 hex digits"},
            {"{\"a\\\"b\\\\c\":\"0123abcg\",\"\xc3\xa9t\xc3\xa9/x\":\"00000000\",\"w\":\"00000000\"}", "not a string of 8 hex digits"},
            {"{\"a\\\"b\\\\c\":1,\"\xc3\xa9t\xc3\xa9/x\":\"00000000\",\"w\":\"00000000\"}", "not a string of 8 hex digits"},
            {"{\"w\":\"00000000\"}", "names 1 tensors but the file has 3"},
            {"[]", "is an array"},
        };
        for (size_t i = 0; i <= sizeof bad / sizeof bad[0]; i++) {
            hfdcp__kv kv = {HFDCP_CRC32C_KEY, NULL};
            if (i < sizeof bad / sizeof bad[0]) {
                kv.value = (char *)bad[i].value;
                h.meta = &kv;
                h.n_meta = 1;
            } else {
                h.meta = NULL;
                h.n_meta = 0;
            }
            T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
            T_OKCALL(hfdcp__header_parse(out + 8, len - 8, len + 24, "c.safetensors", &back));
            if (i < sizeof bad / sizeof bad[0]) {
                T_STATUS(hfdcp__header_crc32c(&back, "c.safetensors", &crcs), HFDCP_ERR_FORMAT, bad[i].substr);
                T_CHECK(strstr(hfdcp_last_error(), "c.safetensors") != NULL);
            } else {
                T_OKCALL(hfdcp__header_crc32c(&back, "c.safetensors", &crcs));
            }
            T_CHECK(crcs == NULL);
            hfdcp__header_free(&back);
            free(out);
        }
    }
    /* The key is reserved when the entries' crc are written. */
    {
        hfdcp__kv kv = {HFDCP_CRC32C_KEY, "{}"};
        h.meta = &kv;
        h.n_meta = 1;
        h.crc32c = true;
        T_STATUS(hfdcp__header_serialize(&h, &out, &len), HFDCP_ERR_ARG, "written from the entries' crc");
    }
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"format_should_parse_every_fixture_like_python", format_should_parse_every_fixture_like_python, 1},
    {"format_should_refuse_the_invalid_fixture", format_should_refuse_the_invalid_fixture, 1},
    {"format_should_check_the_header_length", format_should_check_the_header_length, 1},
    {"format_should_refuse_malformed_headers", format_should_refuse_malformed_headers, 1},
    {"format_should_accept_real_world_variants", format_should_accept_real_world_variants, 1},
    {"format_should_survive_random_mutations", format_should_survive_random_mutations, 1},
    {"format_should_round_trip_serialized_headers", format_should_round_trip_serialized_headers, 1},
    {"format_should_write_sharding_info_as_python_does", format_should_write_sharding_info_as_python_does, 1},
    {"format_should_refuse_bad_serialize_input", format_should_refuse_bad_serialize_input, 1},
    {"format_should_pad_to_the_data_alignment", format_should_pad_to_the_data_alignment, 1},
    {"format_should_write_and_read_crc32c", format_should_write_and_read_crc32c, 1},
    {"format_should_refuse_headers_above_the_write_limit", format_should_refuse_headers_above_the_write_limit, 1},
    {"format_should_order_entries_for_alignment", format_should_order_entries_for_alignment, 1},
    {"format_should_handle_100000_entries_quickly", format_should_handle_100000_entries_quickly, 1},
    {"index_should_round_trip_the_fixture_index", index_should_round_trip_the_fixture_index, 1},
    {"index_should_write_what_python_writes", index_should_write_what_python_writes, 1},
    {"index_should_refuse_malformed_indexes", index_should_refuse_malformed_indexes, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
