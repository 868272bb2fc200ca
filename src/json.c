/*
 * json.c - strict JSON reading and writing for the safetensors header
 * (format.c) and the index (index.c).  The only file that includes
 * cJSON.h: elsewhere a tree is read through the hfdcp__json_* accessors.
 *
 * Reading is done in three passes over the text: a strict UTF-8 check, a
 * token scan (cJSON is lax: it accepts raw control characters, leading
 * zeros, "+1", a byte-order mark, and turns "\u0000" or a bad hex escape
 * into a NUL), then cJSON builds the tree.  The scan also records every
 * number token's exact text, because cJSON keeps numbers as doubles only
 * and 2^53 + 1 or "1.0" must not pass as an integer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "hfdcp_internal.h"

/* Longest name quoted in a message. */
#define NAME_MAX_MSG 256

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
        num.kind = v > HFDCP_JSON_MAX_INT ? NUM_BIG : NUM_UINT;
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

const char *hfdcp__json_find_dup(const char **keys, size_t n)
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
    dup = hfdcp__json_find_dup(keys, n);
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

/* A lexer over the `len` bytes of `text`, its messages naming `what`. */
static void lexer_init(lexer *lx, const char *text, size_t len,
                       const char *what)
{
    memset(lx, 0, sizeof *lx);
    lx->s = (const unsigned char *)text;
    lx->n = len;
    lx->what = what;
}

int hfdcp__json_parse(const char *text, size_t len, const char *what,
                      hfdcp__json *out)
{
    lexer lx;
    cJSON *root = NULL;
    int rc = HFDCP_OK;

    memset(out, 0, sizeof *out);
    lexer_init(&lx, text, len, what);
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

/* ------------------------------------------------------------------------
 * Reading a tree
 * ---------------------------------------------------------------------- */

/* As cJSON_IsObject() and the others see it (one call, not six). */
int hfdcp__json_kind(const hfdcp__json_node *node)
{
    if (node == NULL)
        return HFDCP_JSON_MISSING;
    switch (node->type & 0xFF) {
    case cJSON_Object: return HFDCP_JSON_OBJECT;
    case cJSON_Array: return HFDCP_JSON_ARRAY;
    case cJSON_String: return HFDCP_JSON_STRING;
    case cJSON_Number: return HFDCP_JSON_NUMBER;
    case cJSON_False: case cJSON_True: return HFDCP_JSON_BOOL;
    case cJSON_NULL: return HFDCP_JSON_NULL;
    default: return HFDCP_JSON_MISSING;
    }
}

const char *hfdcp__json_kind_name(const hfdcp__json_node *node)
{
    static const char *const names[] = {
        [HFDCP_JSON_MISSING] = "missing", [HFDCP_JSON_NULL] = "null",
        [HFDCP_JSON_BOOL] = "a boolean",  [HFDCP_JSON_NUMBER] = "a number",
        [HFDCP_JSON_STRING] = "a string", [HFDCP_JSON_ARRAY] = "an array",
        [HFDCP_JSON_OBJECT] = "an object"};
    return names[hfdcp__json_kind(node)];
}

const hfdcp__json_node *hfdcp__json_first(const hfdcp__json_node *node)
{
    return node->child;
}

const hfdcp__json_node *hfdcp__json_next(const hfdcp__json_node *node)
{
    return node->next;
}

size_t hfdcp__json_count(const hfdcp__json_node *node)
{
    size_t n = 0;
    for (const cJSON *c = node->child; c; c = c->next)
        n++;
    return n;
}

const char *hfdcp__json_key(const hfdcp__json_node *node)
{
    return node->string;
}

const char *hfdcp__json_str(const hfdcp__json_node *node)
{
    return (node->type & 0xFF) == cJSON_String ? node->valuestring : NULL;
}

/* ------------------------------------------------------------------------
 * Numbers
 * ---------------------------------------------------------------------- */

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

bool hfdcp__json_plain_uint(const hfdcp__json *doc,
                            const hfdcp__json_node *item, uint64_t *out)
{
    double d;
    if (!cJSON_IsNumber(item) || item->valueint < 0 ||
        exceptional(doc, (size_t)item->valueint) != NULL)
        return false;
    d = item->valuedouble;
    if (!(d >= 0 && d <= (double)HFDCP_JSON_MAX_INT))
        return false;
    *out = (uint64_t)d;
    return (double)*out == d;
}

int hfdcp__json_uint(const hfdcp__json *doc, const hfdcp__json_node *item,
                     bool allow_float_form, const char *what, uint64_t *out)
{
    const hfdcp__json_num *num;
    const char *tok;
    int tl;

    if (!cJSON_IsNumber(item))
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "%s is %s, not a non-negative integer", what,
                            hfdcp__json_kind_name(item));
    if (hfdcp__json_plain_uint(doc, item, out))
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
            if (d >= 0 && d < (double)HFDCP_JSON_MAX_INT &&
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
 * A top-level object, one member at a time
 * ---------------------------------------------------------------------- */

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
                          what, hfdcp__json_kind_name(root));
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

/* On failure `m` is left closed (zeroed). */
int hfdcp__json_members_open(const char *text, size_t len, const char *what,
                             hfdcp__json_members *m)
{
    lexer lx;
    size_t start = 0;
    int rc = HFDCP_OK;

    memset(m, 0, sizeof *m);
    lexer_init(&lx, text, len, what);
    lx.split = true;
    HFDCP_CHECK(scan(&lx));
    while (start < lx.n && is_json_space(lx.s[start]))
        start++;
    if (!splittable(&lx, start))
        HFDCP_CHECK(whole_text_error(text, len, what));
    m->doc.nums = lx.nums;
    m->doc.n_nums = lx.n_nums;
    m->doc.text = text;
    m->n_seps = lx.n_seps;
    m->len = len;
    m->what = what;
    m->seps = lx.seps;
    m->n_total = lx.n_total;
    m->start = start;
    return HFDCP_OK;

cleanup:
    free(lx.nums);
    free(lx.seps);
    return rc;
}

int hfdcp__json_members_next(hfdcp__json_members *m,
                             const hfdcp__json_node **member)
{
    const char *text = m->doc.text, *end = NULL;
    size_t a, b, p, next = m->num_i;

    *member = NULL;
    cJSON_Delete(m->root);
    m->root = NULL;
    if (m->k >= m->n_seps)
        return HFDCP_OK;
    a = m->k ? m->seps[m->k - 1] + 1 : m->start + 1;
    b = m->seps[m->k];
    m->k++;
    p = a;
    while (p < b && is_json_space((unsigned char)text[p]))
        p++;
    if (p == b && m->n_seps == 1)
        return HFDCP_OK; /* {} */
    m->wrap.len = 0;
    hfdcp__buf_put(&m->wrap, "{", 1);
    hfdcp__buf_put(&m->wrap, text + a, b - a);
    hfdcp__buf_put(&m->wrap, "}", 1);
    HFDCP_TRY(hfdcp__buf_status(&m->wrap));
    m->root = cJSON_ParseWithLengthOpts((const char *)m->wrap.data,
                                        m->wrap.len, &end, 0);
    if (m->root == NULL || end != (const char *)m->wrap.data + m->wrap.len ||
        m->root->child == NULL || m->root->child->next != NULL)
        return whole_text_error(text, m->len, m->what);
    HFDCP_TRY(walk(m->root, m->what, &next, m->n_total));
    m->num_i = next;
    *member = m->root->child;
    return HFDCP_OK;
}

int hfdcp__json_members_done(const hfdcp__json_members *m, const char *what)
{
    if (m->num_i != m->n_total)
        return hfdcp__error(HFDCP_ERR_INTERNAL,
                            "%s: %zu number tokens but %zu numbers in the "
                            "members",
                            what, m->n_total, m->num_i);
    return HFDCP_OK;
}

void hfdcp__json_members_close(hfdcp__json_members *m)
{
    if (m == NULL)
        return;
    cJSON_Delete(m->root);
    free(m->doc.nums);
    free(m->seps);
    hfdcp__buf_free(&m->wrap);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------
 * Writing JSON text
 * ---------------------------------------------------------------------- */

static const char hexdig[] = "0123456789abcdef";

static void put_u_escape(hfdcp__buf *b, unsigned cp)
{
    char e[6] = {'\\', 'u', hexdig[(cp >> 12) & 15], hexdig[(cp >> 8) & 15],
                 hexdig[(cp >> 4) & 15], hexdig[cp & 15]};
    hfdcp__buf_put(b, e, 6);
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
            uint32_t cp;
            /* 4: the decoder never reads past the NUL. */
            size_t k = hfdcp__utf8_next(s, 4, &cp);
            if (k == 0) { /* not UTF-8 (callers check first): the byte */
                cp = c;
                k = 1;
            }
            s += k;
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
