/*
 * format.c - the safetensors header: strict JSON reading (shared with
 * index.c), parsing and checking one header, serializing one, and the
 * writer's tensor order.  The only file that knows the byte layout; with
 * index.c the only one that includes cJSON.h.
 *
 * Reading is done in three passes over the header text: a strict UTF-8
 * check, a token scan (cJSON is lax: it accepts raw control characters,
 * leading zeros, "+1", a byte-order mark, and turns "\u0000" or a bad hex
 * escape into a NUL), then cJSON builds the tree.  The scan also records
 * every number token's exact text, because cJSON keeps numbers as doubles
 * only and 2^53 + 1 or "1.0" must not pass as an integer.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "hfdcp_internal.h"

/* Largest integer a JSON number may hold here (as the Python and JS
 * readers can represent it exactly). */
#define MAX_SAFE_INT (UINT64_C(1) << 53)

/* Longest name quoted in a message. */
#define NAME_MAX_MSG 256

/* ------------------------------------------------------------------------
 * Strict UTF-8
 * ---------------------------------------------------------------------- */

bool hfdcp__utf8_valid(const char *str, size_t n, size_t *bad_at,
                       const char **why)
{
    const unsigned char *s = (const unsigned char *)str;
    const char *reason = NULL;
    size_t i = 0;

    while (i < n) {
        uint64_t w;
        if (n - i >= 8) {
            memcpy(&w, s + i, 8);
            if ((w & UINT64_C(0x8080808080808080)) == 0) {
                i += 8;
                continue;
            }
        }
        unsigned c = s[i];
        unsigned lo = 0x80, hi = 0xBF;
        size_t len;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            reason = c < 0xC0   ? "continuation byte without a lead byte"
                     : c < 0xC2 ? "overlong encoding"
                     : c < 0xF8 ? "code point above U+10FFFF"
                                : "byte 0xF8-0xFF, which never occurs in UTF-8";
            goto bad;
        }
        for (size_t k = 1; k < len; k++) {
            unsigned b;
            if (i + k >= n) {
                reason = "sequence truncated by the end of the text";
                goto bad;
            }
            b = s[i + k];
            if (k == 1 && (b < lo || b > hi) && b >= 0x80 && b <= 0xBF) {
                reason = c == 0xED   ? "UTF-16 surrogate code point"
                         : c == 0xF4 ? "code point above U+10FFFF"
                                     : "overlong encoding";
                goto bad;
            }
            if (b < 0x80 || b > 0xBF) {
                reason = "sequence missing a continuation byte";
                goto bad;
            }
        }
        i += len;
    }
    return true;
bad:
    if (bad_at)
        *bad_at = i;
    if (why)
        *why = reason;
    return false;
}

/* ------------------------------------------------------------------------
 * Strict JSON: token scan, cJSON tree, duplicate keys
 * ---------------------------------------------------------------------- */

enum { NUM_UINT, NUM_NEG, NUM_BIG, NUM_FRAC };

/* A number token that is not a plain integer literal in [0, 2^53].  The
 * others need no record: cJSON's double holds them exactly. */
struct hfdcp__json_num {
    size_t ordinal; /* among all number tokens, in document order */
    size_t pos;     /* where the token starts */
    uint32_t len;   /* token length */
    uint8_t kind;   /* NUM_NEG, NUM_BIG or NUM_FRAC */
};

typedef struct {
    const unsigned char *s;
    size_t n;
    const char *what;
    hfdcp__json_num *nums; /* the exceptional numbers */
    size_t n_nums, cap;
    size_t n_total;        /* every number token */
    /* Nesting, and with `split` the offsets of the ',' '}' and ']' at depth
     * 1 (the separators of the top-level object's members). */
    size_t depth;
    bool split, unbalanced;
    size_t *seps;
    size_t n_seps, seps_cap;
} lexer;

static int lex_error(const lexer *lx, int status, size_t pos,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int lex_error(const lexer *lx, int status, size_t pos,
                     const char *fmt, ...)
{
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return hfdcp__error(status, "%s is not valid JSON at byte %zu: %s",
                        lx->what, pos, reason);
}

static bool is_digit(unsigned c)
{
    return c >= '0' && c <= '9';
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned c = p[k], d;
        if (is_digit(c))
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* Scans the string starting at the quote s[*i]; leaves *i past its end. */
static int lex_string(lexer *lx, size_t *i)
{
    const unsigned char *s = lx->s;
    size_t start = *i, p = *i + 1;

    for (;;) {
        unsigned c, cp, lo;
        if (p >= lx->n)
            return lex_error(lx, HFDCP_ERR_FORMAT, start,
                             "unterminated string");
        c = s[p];
        if (c == '"')
            break;
        if (c >= 0x20 && c != '\\') {
            p++;
            continue;
        }
        if (c < 0x20)
            return lex_error(lx, HFDCP_ERR_FORMAT, p,
                             "raw control character 0x%02x in a string "
                             "(it must be escaped)",
                             c);
        if (p + 1 >= lx->n)
            return lex_error(lx, HFDCP_ERR_FORMAT, start,
                             "unterminated string");
        c = s[p + 1];
        if (strchr("\"\\/bfnrt", (int)c) != NULL && c != '\0') {
            p += 2;
            continue;
        }
        if (c != 'u')
            return lex_error(lx, HFDCP_ERR_FORMAT, p,
                             "invalid escape sequence \\%c", c);
        if (lx->n - p < 6 || hex4(s + p + 2, &cp) != 0)
            return lex_error(lx, HFDCP_ERR_FORMAT, p,
                             "\\u must be followed by 4 hex digits");
        if (cp == 0)
            return lex_error(lx, HFDCP_ERR_UNSUPPORTED, p,
                             "\\u0000 (NUL) in a string, which hfdcp "
                             "cannot hold in a C string");
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return lex_error(lx, HFDCP_ERR_FORMAT, p,
                             "unpaired UTF-16 surrogate escape \\u%04x", cp);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (lx->n - p < 12 || s[p + 6] != '\\' || s[p + 7] != 'u' ||
                hex4(s + p + 8, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                return lex_error(lx, HFDCP_ERR_FORMAT, p,
                                 "unpaired UTF-16 surrogate escape \\u%04x",
                                 cp);
            p += 12;
        } else {
            p += 6;
        }
    }
    *i = p + 1;
    return HFDCP_OK;
}

static int push_num(lexer *lx, hfdcp__json_num num)
{
    num.ordinal = lx->n_total++;
    if (num.kind == NUM_UINT)
        return HFDCP_OK;
    HFDCP_TRY(hfdcp__grow(&lx->nums, &lx->cap, lx->n_nums, sizeof *lx->nums,
                          "JSON number records"));
    lx->nums[lx->n_nums++] = num;
    return HFDCP_OK;
}

/* Scans the number starting at s[*i].  The token is the longest run of
 * [0-9+-.eE], as cJSON takes it, checked against the JSON grammar. */
static int lex_number(lexer *lx, size_t *i)
{
    const unsigned char *s = lx->s;
    size_t start = *i, end = *i, p = *i, int_start, int_end;
    bool neg = false, frac = false;
    hfdcp__json_num num;

    while (end < lx->n && (is_digit(s[end]) || s[end] == '+' ||
                           s[end] == '-' || s[end] == '.' || s[end] == 'e' ||
                           s[end] == 'E'))
        end++;
    if (s[p] == '-') {
        neg = true;
        p++;
    }
    int_start = p;
    if (p >= end || !is_digit(s[p]))
        goto malformed;
    if (s[p] == '0') {
        p++;
        if (p < end && is_digit(s[p]))
            return lex_error(lx, HFDCP_ERR_FORMAT, start,
                             "number \"%.*s\" has a leading zero",
                             (int)(end - start < 40 ? end - start : 40),
                             (const char *)s + start);
    } else {
        while (p < end && is_digit(s[p]))
            p++;
    }
    int_end = p;
    if (p < end && s[p] == '.') {
        p++;
        if (p >= end || !is_digit(s[p]))
            goto malformed;
        while (p < end && is_digit(s[p]))
            p++;
        frac = true;
    }
    if (p < end && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < end && (s[p] == '+' || s[p] == '-'))
            p++;
        if (p >= end || !is_digit(s[p]))
            goto malformed;
        while (p < end && is_digit(s[p]))
            p++;
        frac = true;
    }
    if (p != end)
        goto malformed;

    memset(&num, 0, sizeof num);
    num.pos = start;
    num.len = (uint32_t)(end - start > UINT32_MAX ? UINT32_MAX : end - start);
    if (frac) {
        num.kind = NUM_FRAC;
    } else if (neg) {
        num.kind = NUM_NEG;
        if (int_end - int_start == 1 && s[int_start] == '0')
            num.kind = NUM_UINT; /* -0 */
    } else if (int_end - int_start > 16) {
        num.kind = NUM_BIG; /* 17+ digits, no leading zero: >= 10^16 */
    } else {
        uint64_t v = 0;
        for (size_t k = int_start; k < int_end; k++)
            v = v * 10 + (uint64_t)(s[k] - '0');
        num.kind = v > MAX_SAFE_INT ? NUM_BIG : NUM_UINT;
    }
    *i = end;
    return push_num(lx, num);

malformed:
    return lex_error(lx, HFDCP_ERR_FORMAT, start, "malformed number \"%.*s\"",
                     (int)(end - start < 40 ? end - start : 40),
                     (const char *)s + start);
}

static int push_sep(lexer *lx, size_t pos)
{
    HFDCP_TRY(hfdcp__grow(&lx->seps, &lx->seps_cap, lx->n_seps,
                          sizeof *lx->seps, "JSON separator offsets"));
    lx->seps[lx->n_seps++] = pos;
    return HFDCP_OK;
}

/* Checks every token; the grammar is left to cJSON. */
static int lex(lexer *lx)
{
    const unsigned char *s = lx->s;
    size_t i = 0;

    while (i < lx->n) {
        unsigned c = s[i];
        switch (c) {
        case ' ': case '\t': case '\n': case '\r': case ':':
            i++;
            break;
        case '{': case '[':
            lx->depth++;
            i++;
            break;
        case '}': case ']': case ',':
            if (lx->depth == 1 && lx->split)
                HFDCP_TRY(push_sep(lx, i));
            if (c != ',') {
                if (lx->depth == 0)
                    lx->unbalanced = true;
                else
                    lx->depth--;
            }
            i++;
            break;
        case '"':
            HFDCP_TRY(lex_string(lx, &i));
            break;
        case '-': case '0': case '1': case '2': case '3': case '4':
        case '5': case '6': case '7': case '8': case '9':
            HFDCP_TRY(lex_number(lx, &i));
            break;
        case 't': case 'f': case 'n': {
            const char *word = c == 't' ? "true" : c == 'f' ? "false" : "null";
            size_t wl = strlen(word);
            if (lx->n - i < wl || memcmp(s + i, word, wl) != 0)
                return lex_error(lx, HFDCP_ERR_FORMAT, i,
                                 "unexpected character '%c'", c);
            i += wl;
            break;
        }
        default:
            if (c >= 0x21 && c < 0x7F)
                return lex_error(lx, HFDCP_ERR_FORMAT, i,
                                 "unexpected character '%c'", c);
            return lex_error(lx, HFDCP_ERR_FORMAT, i,
                             "unexpected byte 0x%02x outside a string", c);
        }
    }
    return HFDCP_OK;
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Returns a key that occurs twice in keys[0..n) (sorts `keys`), or NULL. */
static const char *find_duplicate(const char **keys, size_t n)
{
    if (n <= 16) {
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                if (strcmp(keys[i], keys[j]) == 0)
                    return keys[i];
        return NULL;
    }
    qsort(keys, n, sizeof *keys, cmp_strp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0)
            return keys[i];
    return NULL;
}

static int check_keys(const cJSON *obj, const char *what)
{
    const char *small[16], **keys = small, *dup;
    size_t n = 0;

    for (const cJSON *c = obj->child; c; c = c->next)
        n++;
    if (n < 2)
        return HFDCP_OK;
    if (n > 16 && (keys = malloc(n * sizeof *keys)) == NULL)
        return hfdcp__nomem("a JSON key list");
    n = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        keys[n++] = c->string;
    dup = find_duplicate(keys, n);
    if (dup) {
        if (obj->string)
            hfdcp__error(HFDCP_ERR_FORMAT,
                         "%s has a duplicate key \"%.*s\" in the object of "
                         "key \"%.*s\"",
                         what, NAME_MAX_MSG, dup, NAME_MAX_MSG, obj->string);
        else
            hfdcp__error(HFDCP_ERR_FORMAT, "%s has a duplicate key \"%.*s\"",
                         what, NAME_MAX_MSG, dup);
    }
    if (keys != small)
        free(keys);
    return dup ? HFDCP_ERR_FORMAT : HFDCP_OK;
}

/* Checks keys at every depth and numbers each number node in document
 * order.  Note: the ordinal is kept in the node's `valueint` (unused by
 * us otherwise; cJSON's own value there is a saturated copy of the
 * double).  Depth is bounded by cJSON's nesting limit. */
static int walk(cJSON *node, const char *what, size_t *next, size_t n_nums)
{
    if (cJSON_IsNumber(node)) {
        if (*next >= n_nums || *next > (size_t)INT32_MAX)
            return hfdcp__error(HFDCP_ERR_INTERNAL,
                                "%s: number tokens and JSON tree disagree",
                                what);
        node->valueint = (int)(*next)++;
        return HFDCP_OK;
    }
    if (cJSON_IsObject(node))
        HFDCP_TRY(check_keys(node, what));
    if (cJSON_IsObject(node) || cJSON_IsArray(node))
        for (cJSON *c = node->child; c; c = c->next)
            HFDCP_TRY(walk(c, what, next, n_nums));
    return HFDCP_OK;
}

static bool is_json_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Strict UTF-8, then the token scan. */
static int scan(lexer *lx)
{
    const char *why = NULL;
    size_t bad_at = 0;
    if (!hfdcp__utf8_valid((const char *)lx->s, lx->n, &bad_at, &why))
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "%s is not valid UTF-8 at byte %zu: %s", lx->what,
                            bad_at, why);
    return lex(lx);
}

/* The message for a text cJSON refused, `end` being where it stopped. */
static int syntax_error(const char *text, size_t len, const char *what,
                        const char *end)
{
    size_t pos = end && end >= text && end <= text + len
                     ? (size_t)(end - text) : 0;
    char near[32];
    size_t k = 0;
    for (; k + 1 < sizeof near && pos + k < len; k++) {
        unsigned char c = (unsigned char)text[pos + k];
        near[k] = c >= 0x20 && c < 0x7F ? (char)c : '?';
    }
    near[k] = '\0';
    return hfdcp__error(HFDCP_ERR_FORMAT,
                        "%s is not valid JSON: parse error at byte %zu (near "
                        "\"%s\")",
                        what, pos, near);
}

/* cJSON tree of a scanned text, with nothing after the value; numbers
 * get the ordinals first_num, first_num + 1, ... up to n_nums. */
static int build_tree(const char *text, size_t len, const char *what,
                      size_t first_num, size_t n_nums, cJSON **out)
{
    const char *end = NULL;
    size_t next = first_num;
    cJSON *root;
    int rc = HFDCP_OK;

    *out = NULL;
    if (len == 0)
        return hfdcp__error(HFDCP_ERR_FORMAT, "%s is empty, not JSON", what);
    root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (root == NULL)
        return syntax_error(text, len, what, end);
    for (size_t p = (size_t)(end - text); p < len; p++)
        if (!is_json_space((unsigned char)text[p]))
            HFDCP_FAIL(HFDCP_ERR_FORMAT,
                       "%s is not valid JSON at byte %zu: data after the "
                       "end of the JSON value",
                       what, p);
    HFDCP_CHECK(walk(root, what, &next, n_nums));
    if (next != n_nums)
        HFDCP_FAIL(HFDCP_ERR_INTERNAL,
                   "%s: %zu number tokens but %zu numbers in the tree", what,
                   n_nums - first_num, next - first_num);
    *out = root;
    return HFDCP_OK;

cleanup:
    cJSON_Delete(root);
    return rc;
}

int hfdcp__json_parse(const char *text, size_t len, const char *what,
                      hfdcp__json *out)
{
    lexer lx;
    cJSON *root = NULL;
    int rc = HFDCP_OK;

    memset(out, 0, sizeof *out);
    memset(&lx, 0, sizeof lx);
    lx.s = (const unsigned char *)text;
    lx.n = len;
    lx.what = what;
    HFDCP_CHECK(scan(&lx));
    HFDCP_CHECK(build_tree(text, len, what, 0, lx.n_total, &root));
    out->root = root;
    out->text = text;
    out->nums = lx.nums;
    out->n_nums = lx.n_nums;
    return HFDCP_OK;

cleanup:
    free(lx.nums);
    return rc;
}

void hfdcp__json_free(hfdcp__json *doc)
{
    if (doc == NULL)
        return;
    cJSON_Delete(doc->root);
    free(doc->nums);
    memset(doc, 0, sizeof *doc);
}

static const char *json_type(const cJSON *j)
{
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "missing";
}

/* The record of the number with this ordinal, or NULL for a plain one. */
static const hfdcp__json_num *exceptional(const hfdcp__json *doc,
                                          size_t ordinal)
{
    size_t lo = 0, hi = doc->n_nums;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (doc->nums[mid].ordinal == ordinal)
            return &doc->nums[mid];
        if (doc->nums[mid].ordinal < ordinal)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The fast path of hfdcp__json_uint(): true for a plain integer. */
static bool plain_uint(const hfdcp__json *doc, const cJSON *item,
                       uint64_t *out)
{
    double d;
    if (!cJSON_IsNumber(item) || item->valueint < 0 ||
        exceptional(doc, (size_t)item->valueint) != NULL)
        return false;
    d = item->valuedouble;
    if (!(d >= 0 && d <= (double)MAX_SAFE_INT))
        return false;
    *out = (uint64_t)d;
    return (double)*out == d;
}

int hfdcp__json_uint(const hfdcp__json *doc, const cJSON *item,
                     bool allow_float_form, const char *what, uint64_t *out)
{
    const hfdcp__json_num *num;
    const char *tok;
    int tl;

    if (!cJSON_IsNumber(item))
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "%s is %s, not a non-negative integer", what,
                            json_type(item));
    if (plain_uint(doc, item, out))
        return HFDCP_OK;
    num = item->valueint < 0 ? NULL
                             : exceptional(doc, (size_t)item->valueint);
    if (num == NULL)
        return hfdcp__error(HFDCP_ERR_INTERNAL, "%s: lost number record",
                            what);
    tok = doc->text + num->pos;
    tl = num->len < 40 ? (int)num->len : 40;
    switch (num->kind) {
    case NUM_NEG:
        return hfdcp__error(HFDCP_ERR_FORMAT, "%s is negative (%.*s)", what,
                            tl, tok);
    case NUM_BIG:
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "%s is above 2^53 = 9007199254740992 (%.*s)",
                            what, tl, tok);
    default:
        if (allow_float_form) {
            double d = item->valuedouble;
            if (d >= 0 && d < (double)MAX_SAFE_INT &&
                d == (double)(uint64_t)d) {
                *out = (uint64_t)d;
                return HFDCP_OK;
            }
        }
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "%s is not an integer (%.*s)", what, tl, tok);
    }
}

/* ------------------------------------------------------------------------
 * Writing JSON text
 * ---------------------------------------------------------------------- */

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

static const char hexdig[] = "0123456789abcdef";

static void put_u_escape(hfdcp__buf *b, unsigned cp)
{
    char e[6] = {'\\', 'u', hexdig[(cp >> 12) & 15], hexdig[(cp >> 8) & 15],
                 hexdig[(cp >> 4) & 15], hexdig[cp & 15]};
    hfdcp__buf_put(b, e, 6);
}

/* Decodes one code point of valid UTF-8 at s; returns its length. */
static size_t utf8_decode(const unsigned char *s, unsigned *cp)
{
    if (s[0] < 0xE0) {
        *cp = ((unsigned)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        return 2;
    }
    if (s[0] < 0xF0) {
        *cp = ((unsigned)(s[0] & 0x0F) << 12) | ((unsigned)(s[1] & 0x3F) << 6) |
              (s[2] & 0x3F);
        return 3;
    }
    *cp = ((unsigned)(s[0] & 0x07) << 18) | ((unsigned)(s[1] & 0x3F) << 12) |
          ((unsigned)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

void hfdcp__json_put_string(hfdcp__buf *b, const char *str, bool ascii)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0;

    hfdcp__buf_put(b, "\"", 1);
    for (;;) {
        unsigned c = s[run];
        const char *esc = NULL;
        /* Bytes copied as they are: printable ASCII but '"' and '\\', and
         * (without `ascii`) DEL and every UTF-8 byte. */
        if (c != '\0' && c != '"' && c != '\\' && c >= 0x20 &&
            (!ascii || c < 0x7F)) {
            run++;
            continue;
        }
        hfdcp__buf_put(b, s, run);
        s += run;
        run = 0;
        if (c == '\0')
            break;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default: break;
        }
        if (esc) {
            hfdcp__buf_put(b, esc, 2);
            s++;
        } else if (c < 0x80) { /* other control characters, DEL */
            put_u_escape(b, c);
            s++;
        } else { /* ascii: non-ASCII as \uXXXX, pairs above U+FFFF */
            unsigned cp;
            s += utf8_decode(s, &cp);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                put_u_escape(b, 0xD800 | (cp >> 10));
                put_u_escape(b, 0xDC00 | (cp & 0x3FF));
            } else {
                put_u_escape(b, cp);
            }
        }
    }
    hfdcp__buf_put(b, "\"", 1);
}

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

/* dtype, shape and data_offsets of one entry into `e` (name excluded). */
static int parse_entry(const hfdcp__json *doc, const cJSON *item,
                       const char *file, hfdcp__entry *e)
{
    const char *name = item->string;
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    char what[NAME_MAX_MSG + 512], shp[256];
    uint64_t begin, end, bytes, v;
    size_t ndim = 0;
    int rc;

    if (!cJSON_IsObject(item))
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "entry is %s, not an object with dtype, shape "
                            "and data_offsets",
                            json_type(item));
    for (const cJSON *c = item->child; c; c = c->next) {
        if (strcmp(c->string, "dtype") == 0)
            dtype = c;
        else if (strcmp(c->string, "shape") == 0)
            shape = c;
        else if (strcmp(c->string, "data_offsets") == 0)
            offs = c;
        else
            return tensor_error(HFDCP_ERR_FORMAT, file, name,
                                "unexpected field \"%.64s\" (an entry has "
                                "only dtype, shape and data_offsets)",
                                c->string);
    }
    if (!dtype || !shape || !offs)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "missing field \"%s\"",
                            !dtype ? "dtype" : !shape ? "shape"
                                                      : "data_offsets");
    if (!cJSON_IsString(dtype))
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "dtype is %s, not a string", json_type(dtype));
    if (hfdcp_dtype_from_name(dtype->valuestring, &e->dtype) != HFDCP_OK)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "unknown dtype \"%.64s\"", dtype->valuestring);

    if (!cJSON_IsArray(shape))
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "shape is %s, not an array of integers",
                            json_type(shape));
    for (const cJSON *c = shape->child; c; c = c->next)
        ndim++;
    if (ndim > HFDCP_MAX_NDIM)
        return tensor_error(HFDCP_ERR_UNSUPPORTED, file, name,
                            "shape has %zu dimensions, more than the %d "
                            "hfdcp supports (HFDCP_MAX_NDIM)",
                            ndim, HFDCP_MAX_NDIM);
    e->ndim = (int)ndim;
    if (ndim > 0 && (e->shape = malloc(ndim * sizeof *e->shape)) == NULL)
        return hfdcp__nomem("a tensor shape");
    ndim = 0;
    for (const cJSON *c = shape->child; c; c = c->next, ndim++) {
        if (!plain_uint(doc, c, &v)) {
            snprintf(what, sizeof what,
                     "file '%s': tensor '%.*s': shape[%zu]", file,
                     NAME_MAX_MSG, name, ndim);
            HFDCP_TRY(hfdcp__json_uint(doc, c, false, what, &v));
        }
        e->shape[ndim] = (int64_t)v;
    }

    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "data_offsets is %s%s, not an array of two "
                            "integers [begin, end]",
                            json_type(offs),
                            cJSON_IsArray(offs) ? " of another length" : "");
    for (int k = 0; k < 2; k++) {
        const cJSON *c = k ? offs->child->next : offs->child;
        if (!plain_uint(doc, c, k ? &end : &begin)) {
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
    if (end - begin != bytes) {
        format_shape(shp, sizeof shp, e->ndim, e->shape);
        return tensor_error(HFDCP_ERR_FORMAT, file, name,
                            "data_offsets [%" PRIu64 ", %" PRIu64
                            "] span %" PRIu64 " bytes, but %s of shape %s "
                            "takes %" PRIu64 " bytes",
                            begin, end, end - begin,
                            hfdcp_dtype_name(e->dtype), shp, bytes);
    }
    return HFDCP_OK;
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

static int parse_metadata(const cJSON *meta, const char *file,
                          hfdcp__header *h, const char **sharding)
{
    size_t n = 0;

    if (cJSON_IsNull(meta)) {
        h->meta_null = true;
        return HFDCP_OK;
    }
    if (!cJSON_IsObject(meta))
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "file '%s': __metadata__ is %s, not an object "
                            "of strings (or null)",
                            file, json_type(meta));
    for (const cJSON *c = meta->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return hfdcp__error(HFDCP_ERR_FORMAT,
                                "file '%s': __metadata__ value of key "
                                "\"%.*s\" is %s, not a string",
                                file, NAME_MAX_MSG, c->string, json_type(c));
        n++;
    }
    if (n > 0 && (h->meta = calloc(n, sizeof *h->meta)) == NULL)
        return hfdcp__nomem("header metadata");
    for (const cJSON *c = meta->child; c; c = c->next) {
        hfdcp__kv *kv;
        if (strcmp(c->string, "DCP_SHARDING_INFO") == 0) {
            *sharding = c->valuestring;
            continue;
        }
        kv = &h->meta[h->n_meta];
        kv->key = hfdcp__strdup(c->string);
        kv->value = hfdcp__strdup(c->valuestring);
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

/* DCP_SHARDING_INFO: JSON text of {name: {"saved_offsets": [..]}} naming
 * exactly the file's tensors. */
static int parse_sharding(const char *text, const char *file,
                          hfdcp__header *h)
{
    char what[NAME_MAX_MSG + 512];
    hfdcp__json doc;
    hfdcp__strmap *by_name = NULL;
    bool *seen = NULL;
    int rc = HFDCP_OK;

    snprintf(what, sizeof what,
             "file '%s': __metadata__ DCP_SHARDING_INFO", file);
    HFDCP_TRY(hfdcp__json_parse(text, strlen(text), what, &doc));
    if (!cJSON_IsObject(doc.root))
        HFDCP_FAIL(HFDCP_ERR_FORMAT, "%s is %s, not a JSON object", what,
                   json_type(doc.root));
    if ((by_name = hfdcp__strmap_new()) == NULL ||
        (seen = calloc(h->n_entries + 1, sizeof *seen)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory reading %s", what);
    for (size_t i = 0; i < h->n_entries; i++)
        HFDCP_CHECK(hfdcp__strmap_put(by_name, h->entries[i].name, i, NULL));

    for (const cJSON *c = doc.root->child; c; c = c->next) {
        const cJSON *so = NULL;
        hfdcp__entry *e;
        size_t i, k = 0;
        if (!hfdcp__strmap_get(by_name, c->string, &i))
            HFDCP_FAIL(HFDCP_ERR_FORMAT,
                       "%s names tensor '%.*s', which is not in the file",
                       what, NAME_MAX_MSG, c->string);
        e = &h->entries[i];
        seen[i] = true;
        if (!cJSON_IsObject(c))
            TENSOR_FAIL(HFDCP_ERR_FORMAT, file, e->name,
                                    "DCP_SHARDING_INFO entry is %s, not an "
                                    "object with saved_offsets",
                                    json_type(c));
        for (const cJSON *f = c->child; f; f = f->next) {
            if (strcmp(f->string, "saved_offsets") != 0)
                TENSOR_FAIL(HFDCP_ERR_FORMAT, file, e->name,
                                        "DCP_SHARDING_INFO entry has an "
                                        "unexpected field \"%.64s\"",
                                        f->string);
            so = f;
        }
        if (so == NULL || !cJSON_IsArray(so) ||
            cJSON_GetArraySize(so) != e->ndim)
            TENSOR_FAIL(HFDCP_ERR_FORMAT, file, e->name,
                                    "DCP_SHARDING_INFO saved_offsets is %s "
                                    "but the tensor has %d dimensions: it "
                                    "must be an array of %d integers",
                                    so == NULL        ? "missing"
                                    : cJSON_IsArray(so) ? "of another length"
                                                        : json_type(so),
                                    e->ndim, e->ndim);
        free(e->offsets);
        e->offsets = malloc((size_t)(e->ndim ? e->ndim : 1) *
                            sizeof *e->offsets);
        if (e->offsets == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory reading %s", what);
        for (const cJSON *x = so->child; x; x = x->next, k++) {
            char w2[NAME_MAX_MSG + 512];
            uint64_t v;
            snprintf(w2, sizeof w2,
                     "file '%s': tensor '%.*s': DCP_SHARDING_INFO "
                     "saved_offsets[%zu]",
                     file, NAME_MAX_MSG, e->name, k);
            HFDCP_CHECK(hfdcp__json_uint(&doc, x, false, w2, &v));
            e->offsets[k] = (int64_t)v;
        }
    }
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
    hfdcp__strmap_free(by_name);
    free(seen);
    return rc;
}

/* The message for a header the member-by-member path could not take:
 * the whole text goes through cJSON to say what is wrong where. */
static int whole_text_error(const char *text, size_t len, const char *what)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    int rc;

    if (root == NULL)
        return syntax_error(text, len, what, end);
    rc = hfdcp__error(HFDCP_ERR_INTERNAL,
                      "%s: could not split the JSON object into members",
                      what);
    for (size_t p = (size_t)(end - text); p < len; p++)
        if (!is_json_space((unsigned char)text[p])) {
            rc = hfdcp__error(HFDCP_ERR_FORMAT,
                              "%s is not valid JSON at byte %zu: data after "
                              "the end of the JSON value",
                              what, p);
            break;
        }
    if (rc == HFDCP_ERR_INTERNAL && !cJSON_IsObject(root))
        rc = hfdcp__error(HFDCP_ERR_FORMAT, "%s is %s, not a JSON object",
                          what, json_type(root));
    cJSON_Delete(root);
    return rc;
}

/* True when the scanned text is '{' members '}' with separators ',' at
 * depth 1 and nothing but whitespace after: then each member can be read
 * on its own. */
static bool splittable(const lexer *lx, size_t start)
{
    if (start >= lx->n || lx->s[start] != '{' || lx->unbalanced ||
        lx->depth != 0 || lx->n_seps == 0 ||
        lx->s[lx->seps[lx->n_seps - 1]] != '}')
        return false;
    for (size_t k = 0; k + 1 < lx->n_seps; k++)
        if (lx->s[lx->seps[k]] != ',')
            return false;
    for (size_t p = lx->seps[lx->n_seps - 1] + 1; p < lx->n; p++)
        if (!is_json_space(lx->s[p]))
            return false;
    return true;
}

/*
 * The header is read one top-level member at a time: the token scan gives
 * the offsets of the top-level separators, each member's text is wrapped
 * in braces and given to cJSON, used and freed before the next.  A whole
 * tree of 100,000 entries is over a million small allocations; this way
 * the same few are reused.
 */
int hfdcp__header_parse(const char *json, uint64_t n, uint64_t file_size,
                        const char *file, hfdcp__header *out)
{
    char what[1024];
    lexer lx;
    hfdcp__header h;
    hfdcp__json view;
    hfdcp__buf wrap;
    cJSON *root = NULL;
    char *sharding = NULL;
    const char **names = NULL, *dup;
    const hfdcp__entry **order = NULL;
    bool have_meta = false;
    size_t start = 0, num_i = 0;
    int rc = HFDCP_OK;

    memset(out, 0, sizeof *out);
    memset(&h, 0, sizeof h);
    memset(&lx, 0, sizeof lx);
    hfdcp__buf_init(&wrap);
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
    lx.s = (const unsigned char *)json;
    lx.n = (size_t)n;
    lx.what = what;
    lx.split = true;
    HFDCP_CHECK(scan(&lx));
    while (start < lx.n && is_json_space(lx.s[start]))
        start++;
    if (!splittable(&lx, start))
        HFDCP_CHECK(whole_text_error(json, (size_t)n, what));
    view.root = NULL;
    view.nums = lx.nums;
    view.n_nums = lx.n_nums;
    view.text = json;
    if ((h.entries = calloc(lx.n_seps, sizeof *h.entries)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "file '%s': out of memory for %zu "
                   "tensor entries", file, lx.n_seps);

    for (size_t k = 0; k < lx.n_seps; k++) {
        size_t a = k ? lx.seps[k - 1] + 1 : start + 1, b = lx.seps[k];
        size_t next = num_i, p = a;
        const char *end = NULL;
        const cJSON *member;

        while (p < b && is_json_space(lx.s[p]))
            p++;
        if (p == b && lx.n_seps == 1)
            break; /* {} */
        wrap.len = 0;
        hfdcp__buf_put(&wrap, "{", 1);
        hfdcp__buf_put(&wrap, json + a, b - a);
        hfdcp__buf_put(&wrap, "}", 1);
        HFDCP_CHECK(hfdcp__buf_status(&wrap));
        root = cJSON_ParseWithLengthOpts((const char *)wrap.data, wrap.len,
                                         &end, 0);
        if (root == NULL || end != (const char *)wrap.data + wrap.len ||
            root->child == NULL || root->child->next != NULL)
            HFDCP_CHECK(whole_text_error(json, (size_t)n, what));
        HFDCP_CHECK(walk(root, what, &next, lx.n_total));
        num_i = next;

        member = root->child;
        if (strcmp(member->string, "__metadata__") == 0) {
            const char *sh = NULL;
            if (have_meta)
                HFDCP_FAIL(HFDCP_ERR_FORMAT,
                           "%s has a duplicate key \"__metadata__\"", what);
            have_meta = true;
            HFDCP_CHECK(parse_metadata(member, file, &h, &sh));
            if (sh && (sharding = hfdcp__strdup(sh)) == NULL)
                HFDCP_FAIL(HFDCP_ERR_NOMEM, "file '%s': out of memory", file);
        } else {
            hfdcp__entry *e = &h.entries[h.n_entries++];
            if ((e->name = hfdcp__strdup(member->string)) == NULL)
                HFDCP_FAIL(HFDCP_ERR_NOMEM, "file '%s': out of memory", file);
            HFDCP_CHECK(parse_entry(&view, member, file, e));
        }
        cJSON_Delete(root);
        root = NULL;
    }

    if (h.n_entries > 0 &&
        ((names = malloc(h.n_entries * sizeof *names)) == NULL ||
         (order = malloc(h.n_entries * sizeof *order)) == NULL))
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "file '%s': out of memory", file);
    for (size_t i = 0; i < h.n_entries; i++)
        names[i] = h.entries[i].name;
    if ((dup = find_duplicate(names, h.n_entries)) != NULL)
        HFDCP_FAIL(HFDCP_ERR_FORMAT, "%s has a duplicate key \"%.*s\"", what,
                   NAME_MAX_MSG, dup);

    qsort(h.entries, h.n_entries, sizeof *h.entries, cmp_entry_data);
    for (size_t i = 0; i < h.n_entries; i++)
        order[i] = &h.entries[i];
    snprintf(what, sizeof what, "file '%s'", file);
    HFDCP_CHECK(check_layout(order, h.n_entries, HFDCP_ERR_FORMAT, what,
                             &h.data_size));
    if (8 + n + h.data_size < file_size)
        HFDCP_FAIL(HFDCP_ERR_FORMAT,
                   "file '%s': %" PRIu64 " trailing bytes: the tensors end "
                   "at byte %" PRIu64 " but the file has %" PRIu64 " bytes",
                   file, file_size - (8 + n + h.data_size),
                   8 + n + h.data_size, file_size);
    if (8 + n + h.data_size > file_size)
        HFDCP_FAIL(HFDCP_ERR_FORMAT,
                   "file '%s' is truncated: the tensors end at byte %" PRIu64
                   " but the file has only %" PRIu64 " bytes (%" PRIu64
                   " bytes missing)",
                   file, 8 + n + h.data_size, file_size,
                   8 + n + h.data_size - file_size);
    if (num_i != lx.n_total)
        HFDCP_FAIL(HFDCP_ERR_INTERNAL, "%s: %zu number tokens but %zu "
                   "numbers in the members", what, lx.n_total, num_i);
    if (sharding)
        HFDCP_CHECK(parse_sharding(sharding, file, &h));

    *out = h;
    memset(&h, 0, sizeof h);

cleanup:
    cJSON_Delete(root);
    free(names);
    free(order);
    free(sharding);
    free(lx.nums);
    free(lx.seps);
    hfdcp__buf_free(&wrap);
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
        if (e->shape[k] < 0 || (uint64_t)e->shape[k] > MAX_SAFE_INT)
            return hfdcp__error(HFDCP_ERR_ARG,
                                "%s: shape[%d] = %" PRId64
                                " is outside [0, 2^53]",
                                what, k, e->shape[k]);
    if (e->begin > e->end || e->end > MAX_SAFE_INT)
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
        if (e->offsets[k] < 0 || (uint64_t)e->offsets[k] > MAX_SAFE_INT)
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
            if (e->shape[k] < 0 || (uint64_t)e->shape[k] > MAX_SAFE_INT)
                bad = "a shape entry is outside [0, 2^53]";
        if (!bad && (e->begin > e->end || e->end > MAX_SAFE_INT))
            bad = "data_offsets are not ordered within [0, 2^53]";
        if (!bad && hfdcp__tensor_bytes(e->dtype, e->ndim, e->shape, "",
                                        &bytes) != HFDCP_OK)
            bad = "bad size";
        if (!bad && e->end - e->begin != bytes)
            bad = "data_offsets do not span the tensor's size";
        if (!bad && h->sharded && e->ndim > 0 && e->offsets == NULL)
            bad = "a sharded header needs offsets";
        for (int k = 0; !bad && h->sharded && k < e->ndim; k++)
            if (e->offsets[k] < 0 || (uint64_t)e->offsets[k] > MAX_SAFE_INT)
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
    if ((dup = find_duplicate(names, h->n_entries)) != NULL)
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
    if ((dup = find_duplicate(keys, h->n_meta)) != NULL)
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

int hfdcp__header_serialize(const hfdcp__header *h, char **out,
                            size_t *out_len)
{
    const char *format = "pt", *version = "1.0";
    hfdcp__buf b, sh;
    uint64_t n;
    int rc = HFDCP_OK;

    hfdcp__buf_init(&b);
    hfdcp__buf_init(&sh);
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
    for (size_t i = 0; i < h->n_meta; i++) {
        if (strcmp(h->meta[i].key, "format") == 0)
            format = h->meta[i].value;
        else if (h->sharded && strcmp(h->meta[i].key, "DCP_VERSION") == 0)
            version = h->meta[i].value;
    }

    /* One allocation of about the right size: growing by doubling would
     * copy and touch twice the memory. */
    {
        size_t est = 256;
        for (size_t i = 0; i < h->n_meta; i++)
            est += strlen(h->meta[i].key) + strlen(h->meta[i].value) + 8;
        for (size_t i = 0; i < h->n_entries; i++)
            est += (strlen(h->entries[i].name) + 70 +
                    12 * (size_t)h->entries[i].ndim) * (h->sharded ? 2 : 1);
        if (est > (size_t)HFDCP_HEADER_MAX_WRITE + 4096)
            est = (size_t)HFDCP_HEADER_MAX_WRITE + 4096;
        est += (size_t)align;
        if ((b.data = malloc(est)) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, WHERE_W ": out of memory for %zu "
                       "bytes", est);
        b.cap = est;
    }
    hfdcp__buf_put(&b, "\0\0\0\0\0\0\0\0", 8);
    put_lit(&b, "{\"__metadata__\":{\"format\":");
    hfdcp__json_put_string(&b, format, false);
    for (size_t i = 0; i < h->n_meta; i++) {
        const hfdcp__kv *kv = &h->meta[i];
        if (strcmp(kv->key, "format") == 0 ||
            (h->sharded && strcmp(kv->key, "DCP_VERSION") == 0))
            continue;
        put_lit(&b, ",");
        hfdcp__json_put_string(&b, kv->key, false);
        put_lit(&b, ":");
        hfdcp__json_put_string(&b, kv->value, false);
    }
    if (h->sharded) {
        put_sharding_text(&sh, h);
        hfdcp__buf_put(&sh, "", 1); /* NUL */
        HFDCP_CHECK(hfdcp__buf_status(&sh));
        put_lit(&b, ",\"DCP_SHARDING_INFO\":");
        hfdcp__json_put_string(&b, (const char *)sh.data, false);
        put_lit(&b, ",\"DCP_VERSION\":");
        hfdcp__json_put_string(&b, version, false);
    }
    put_lit(&b, "}");
    for (size_t i = 0; i < h->n_entries; i++) {
        const hfdcp__entry *e = &h->entries[i];
        if (b.len - 8 > HFDCP_HEADER_MAX_WRITE)
            HFDCP_CHECK(too_large(b.len - 8, true));
        put_lit(&b, ",");
        hfdcp__json_put_string(&b, e->name, false);
        put_lit(&b, ":{\"dtype\":\"");
        put_lit(&b, hfdcp_dtype_name(e->dtype));
        put_lit(&b, "\",\"shape\":[");
        for (int k = 0; k < e->ndim; k++) {
            if (k > 0)
                put_lit(&b, ",");
            put_u64(&b, (uint64_t)e->shape[k]);
        }
        put_lit(&b, "],\"data_offsets\":[");
        put_u64(&b, e->begin);
        put_lit(&b, ",");
        put_u64(&b, e->end);
        put_lit(&b, "]}");
    }
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
    hfdcp__buf_free(&sh);
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
