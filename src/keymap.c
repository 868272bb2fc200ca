/*
 * keymap.c - ordered regex renaming of tensor names: Python `re` patterns
 * and replacements, matched with PCRE2 (8-bit, UTF + UCP).
 *
 * Python's regex dialect and PCRE2's differ in many small ways: \Z, {,n},
 * \v, $ before a final newline, (?m)^ after a final newline, what \s and
 * (?i) match, \B on an empty string, octal versus back-reference digits,
 * and so on.  So a pattern is never handed to PCRE2 as written.  A port of
 * Python 3.11's re._parser reads it, with Python's checks and error
 * messages, and emits an equivalent PCRE2 pattern in which everything is
 * spelled out: every literal as \x{...}, every group non-capturing unless
 * Python's is capturing (so group numbers agree), ^ $ \b \B . \s and
 * case-insensitivity as explicit assertions, classes and scoped (?i:...).
 * No PCRE2 option or newline convention then changes the meaning.  What
 * cannot be translated faithfully is refused with HFDCP_ERR_ARG, never
 * approximated.
 *
 * The replacement is parsed as re._parser.parse_template does, and our
 * own pcre2_match loop reproduces re.subn, empty matches included (Python
 * 3.7+: an empty match may follow a non-empty one; after an empty match
 * the next one must not be empty at the same place).
 *
 * Facts measured once against Python 3.11 / Unicode 14 and PCRE2 10.42
 * (every code point compared): \d and \w agree; Python's \s adds
 * U+001C..U+001F and lacks U+180E, so it is emitted as an explicit list;
 * (?i) agrees except for the four equivalence classes in ICASE_EXTRA.
 *
 * Refused although Python accepts them (each message says why): \N{...};
 * non-ASCII group names; group references under IGNORECASE (re compares
 * simple lower cases, PCRE2 case-folding sets); repeats other than ?, *
 * and exact counts of a capturing body that can match empty (re and PCRE2
 * iterate differently after an empty iteration); counts above 65535 and
 * look-behinds PCRE2 cannot compile; \0 in a replacement (a NUL in a C
 * string); and three places where re 3.11 itself goes wrong (see
 * NONBMP_UPPER and check_type_prefix).  Possessive repeats follow
 * Python >= 3.11.5 (CPython gh-100061 fixed how they backtracked).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "hfdcp_internal.h"

/* Python's re constants (re._constants, _sre). */
#define MAXREPEAT UINT64_C(4294967295)
#define MAXGROUPS UINT64_C(1073741823)
/* PCRE2's own limits: larger counts are refused rather than mangled. */
#define PCRE2_MAX_REPEAT 65535u
#define PCRE2_MAX_GROUPS 65535u
/* Widths saturate here (any value above MAXREPEAT behaves the same). */
#define WIDTH_SAT (UINT64_C(1) << 40)
/* How deep groups may nest: "(", "(?:", "(?P<n>", "(?>", "(?flags:",
 * look-arounds and "(?(id)" all count.  The parser recurses once per
 * level (parse_seq -> parse_group -> parse_sub -> parse_seq, or through
 * parse_lookaround or parse_conditional): 20000 "(" used to overflow an
 * 8 MiB stack, a few thousand a smaller one.  So the limit is checked
 * before recursing.
 * Python 3.11 has no limit of its own: re._parser recurses too and fails
 * with RecursionError ("maximum recursion depth exceeded") from about 495
 * levels, under the default recursion limit of 1000.  PCRE2 10.42 refuses
 * parentheses nested more than 250 deep (its PARENS_NEST_LIMIT).  Measured
 * (x86-64, gcc 12), hfdcp_key_map_add needs some 32 KiB plus 0.65 KiB per
 * level at -O2 (up to 0.85 KiB at -O0, 2-3 KiB under AddressSanitizer):
 * 95 KiB in all at 100 levels (115 KiB at -O0, 350 KiB under ASan), within
 * even musl's 128 KiB default thread stack, where 200 levels would take
 * 160-220 KiB (610 KiB under ASan).  Key renaming patterns nest a few
 * levels: 100 refuses nothing real.  Nothing else recurses: character
 * sets and replacement templates are read in loops. */
#define MAX_NESTING 100

enum {
    F_TEMPLATE = 1,
    F_IGNORECASE = 2,
    F_LOCALE = 4,
    F_MULTILINE = 8,
    F_DOTALL = 16,
    F_UNICODE = 32,
    F_VERBOSE = 64,
    F_ASCII = 256,
    F_TYPE = F_ASCII | F_LOCALE | F_UNICODE
};

/* ------------------------------------------------------------------------
 * UTF-8
 * ---------------------------------------------------------------------- */

/* Decodes the code point at s[*i] and advances *i; -1 for invalid UTF-8
 * (truncated, overlong, surrogate, above U+10FFFF), as Python's strict
 * decoder and PCRE2's check both see it. */
static int32_t utf8_next(const unsigned char *s, size_t len, size_t *i)
{
    size_t k = *i;
    uint32_t c = s[k], min;
    size_t n;

    if (c < 0x80) {
        *i = k + 1;
        return (int32_t)c;
    }
    if ((c & 0xE0) == 0xC0) {
        n = 1, c &= 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 2, c &= 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 3, c &= 0x07, min = 0x10000;
    } else {
        return -1;
    }
    if (len - k - 1 < n)
        return -1;
    for (size_t j = 1; j <= n; j++) {
        if ((s[k + j] & 0xC0) != 0x80)
            return -1;
        c = (c << 6) | (s[k + j] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return -1;
    *i = k + 1 + n;
    return (int32_t)c;
}

/* true if s is valid UTF-8; *nchars (may be NULL) gets its length in code
 * points, *bad the byte offset of the first invalid sequence. */
static bool utf8_check(const char *s, size_t *nchars, size_t *bad)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t len = strlen(s), i = 0, n = 0;

    while (i < len) {
        if (utf8_next(u, len, &i) < 0) {
            if (bad)
                *bad = i;
            return false;
        }
        n++;
    }
    if (nchars)
        *nchars = n;
    return true;
}

static void utf8_put(hfdcp__buf *b, uint32_t c)
{
    unsigned char o[4];
    size_t n;

    if (c < 0x80) {
        o[0] = (unsigned char)c, n = 1;
    } else if (c < 0x800) {
        o[0] = (unsigned char)(0xC0 | c >> 6);
        o[1] = (unsigned char)(0x80 | (c & 0x3F)), n = 2;
    } else if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | c >> 12);
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F)), n = 3;
    } else {
        o[0] = (unsigned char)(0xF0 | c >> 18);
        o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
        o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[3] = (unsigned char)(0x80 | (c & 0x3F)), n = 4;
    }
    hfdcp__buf_put(b, o, n);
}

/* ------------------------------------------------------------------------
 * Tokenizer: Python's re._parser.Tokenizer.  A token is one character, or
 * a backslash and the character after it.  Positions in messages count
 * code points, as Python's do.  The callers check beforehand that the
 * text is valid UTF-8 and does not end with a lone backslash.
 * ---------------------------------------------------------------------- */

typedef struct {
    bool end;        /* no token: end of the text */
    bool esc;        /* a backslash and the character `c` after it */
    uint32_t c;
    size_t at, at_ci;       /* byte and character offset of the token */
    size_t after, after_ci; /* just past it */
} token;

typedef struct {
    const unsigned char *s;
    size_t len;
    token cur; /* Python's Tokenizer.next */
} tokz;

static void tk_seek(tokz *t, size_t at, size_t ci)
{
    token *k = &t->cur;
    size_t i = at;

    k->at = at;
    k->at_ci = ci;
    k->esc = false;
    k->c = 0;
    k->end = at >= t->len;
    if (k->end) {
        k->after = at;
        k->after_ci = ci;
        return;
    }
    k->c = (uint32_t)utf8_next(t->s, t->len, &i);
    if (k->c == '\\' && i < t->len) {
        k->esc = true;
        k->c = (uint32_t)utf8_next(t->s, t->len, &i);
        ci++;
    }
    k->after = i;
    k->after_ci = ci + 1;
}

static void tk_init(tokz *t, const char *s)
{
    t->s = (const unsigned char *)s;
    t->len = strlen(s);
    tk_seek(t, 0, 0);
}

/* Python's tell(): the position of the next token. */
static size_t tk_tell(const tokz *t)
{
    return t->cur.at_ci;
}

/* The next token is the plain (unescaped) character ch. */
static bool tk_is(const tokz *t, uint32_t ch)
{
    return !t->cur.end && !t->cur.esc && t->cur.c == ch;
}

static bool tk_is_in(const tokz *t, const char *set)
{
    return !t->cur.end && !t->cur.esc && t->cur.c < 0x80 && t->cur.c != 0 &&
           strchr(set, (int)t->cur.c) != NULL;
}

static token tk_get(tokz *t)
{
    token k = t->cur;
    if (!k.end)
        tk_seek(t, k.after, k.after_ci);
    return k;
}

static bool tk_match(tokz *t, uint32_t ch)
{
    if (!tk_is(t, ch))
        return false;
    tk_get(t);
    return true;
}

static bool is_in(const token *k, const char *set)
{
    return !k->end && !k->esc && k->c < 0x80 && k->c != 0 &&
           strchr(set, (int)k->c) != NULL;
}

static bool is_ascii_letter(uint32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_hex(uint32_t c, uint32_t *v)
{
    if (c >= '0' && c <= '9')
        *v = c - '0';
    else if (c >= 'a' && c <= 'f')
        *v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
        *v = c - 'A' + 10;
    else
        return false;
    return true;
}

/* true when the text ends with an unescaped backslash, which Python's
 * tokenizer refuses as "bad escape (end of pattern)". */
static bool ends_with_lone_backslash(const char *s)
{
    size_t n = strlen(s), k = 0;
    while (k < n && s[n - 1 - k] == '\\')
        k++;
    return k % 2 == 1;
}

/* The name rules of Python (str.isidentifier) restricted to ASCII;
 * non-ASCII names are refused separately. */
static bool is_ascii_identifier(const char *s, size_t n)
{
    if (n == 0 || !(is_ascii_letter((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(is_ascii_letter(c) || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

static bool has_non_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

static bool all_ascii_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Decimal value of n ASCII digits, saturated well above any limit. */
static uint64_t digits_value(const char *s, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > UINT64_C(1) << 50)
            v = UINT64_C(1) << 50;
    }
    return v;
}

/* ------------------------------------------------------------------------
 * The pattern translator
 * ---------------------------------------------------------------------- */

typedef struct {
    uint64_t lo, hi;
} width;

typedef struct {
    char *name;
    size_t gid;
} group_name;

typedef struct {
    size_t gid, pos;
} cond_ref;

typedef struct {
    tokz t;
    const char *src;
    uint32_t flags;           /* Python's state.flags (global flags) */
    size_t ngroups;           /* capturing groups opened so far */
    width *gwidth;            /* [gid] (index 0 unused) */
    bool *gclosed;            /* [gid]: group closed, width known */
    size_t gcap;
    group_name *names;
    size_t n_names, cap_names;
    size_t lookbehind_groups; /* 0: not in a lookbehind (Python's None) */
    int depth;                /* groups open (see MAX_NESTING) */
    cond_ref *condrefs;       /* (?(N)...) references, checked at the end */
    size_t n_condrefs, cap_condrefs;
    hfdcp__buf out;           /* the PCRE2 pattern (ASCII) */
    hfdcp__buf omap;          /* one size_t per output byte: source position */
    size_t item_pos;          /* source position of what is being emitted */
    bool seen_item;           /* some item was parsed (see type_prefix) */
    bool has_deferred;        /* a compile-time error of Python's (found */
    char deferred[128];       /*   while parsing, reported after it) */
    int status;
    char msg[768];
} parser;

/* Records a Python-style error "msg at position N" (pos = (size_t)-1: no
 * position); returns -1 so that parse functions can `return perr(...)`. */
static int perr_pos(parser *p, int status, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int perr_pos(parser *p, int status, size_t pos, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    if (p->status != HFDCP_OK)
        return -1;
    va_start(ap, fmt);
    vsnprintf(p->msg, sizeof p->msg, fmt, ap);
    va_end(ap);
    n = strlen(p->msg);
    if (pos != (size_t)-1 && n < sizeof p->msg)
        snprintf(p->msg + n, sizeof p->msg - n, " at position %zu", pos);
    p->status = status;
    return -1;
}

/* Python's source.error(msg, offset): at tell() - offset. */
#define PERR(p, offset, ...)                                                 \
    perr_pos((p), HFDCP_ERR_ARG, tk_tell(&(p)->t) - (size_t)(offset),        \
             __VA_ARGS__)

static int pnomem(parser *p)
{
    if (p->status == HFDCP_OK) {
        snprintf(p->msg, sizeof p->msg, "out of memory");
        p->status = HFDCP_ERR_NOMEM;
    }
    return -1;
}

static bool grow_array(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t nc;
    void *na;

    if (need <= *cap)
        return true;
    nc = *cap ? *cap * 2 : 8;
    while (nc < need)
        nc *= 2;
    na = realloc(*arr, nc * elem);
    if (na == NULL)
        return false;
    *arr = na;
    *cap = nc;
    return true;
}

static void emit(parser *p, const char *s)
{
    size_t n = strlen(s);
    hfdcp__buf_put(&p->out, s, n);
    for (size_t i = 0; i < n; i++)
        hfdcp__buf_put(&p->omap, &p->item_pos, sizeof p->item_pos);
}

/* For short items only (a code point, a count, a group number). */
static void emitf(parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void emitf(parser *p, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    emit(p, tmp);
}

/* ---- widths: re._parser.SubPattern.getwidth() ---- */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a + b > WIDTH_SAT ? WIDTH_SAT : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    if (a == 0 || b == 0)
        return 0;
    return a > WIDTH_SAT / b ? WIDTH_SAT : a * b;
}

/* The cap getwidth() applies to every subpattern. */
static width cap_width(width w)
{
    width r;
    r.lo = w.lo < MAXREPEAT - 1 ? w.lo : MAXREPEAT - 1;
    r.hi = w.hi < MAXREPEAT ? w.hi : MAXREPEAT;
    return r;
}

/* ---- groups ---- */

static const group_name *find_name(const parser *p, const char *name,
                                   size_t n)
{
    for (size_t i = 0; i < p->n_names; i++)
        if (strlen(p->names[i].name) == n &&
            memcmp(p->names[i].name, name, n) == 0)
            return &p->names[i];
    return NULL;
}

/* Python's state.checkgroup(gid). */
static bool group_closed(const parser *p, size_t gid)
{
    return gid >= 1 && gid <= p->ngroups && p->gclosed[gid];
}

/* Python's state.checklookbehindgroup(gid, source). */
static int check_lookbehind_group(parser *p, size_t gid)
{
    if (p->lookbehind_groups != 0) {
        if (!group_closed(p, gid))
            return PERR(p, 0, "cannot refer to an open group");
        if (gid >= p->lookbehind_groups)
            return PERR(p, 0, "cannot refer to group defined in the same "
                              "lookbehind subpattern");
    }
    return 0;
}

/* A Python repr() of a short name, for messages. */
static void name_repr(char *buf, size_t size, const char *s, size_t n)
{
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    size_t o = 0;

    if (size < 4)
        return;
    buf[o++] = q;
    for (size_t i = 0; i < n && o + 3 < size; i++) {
        if (s[i] == '\\' || s[i] == q)
            buf[o++] = '\\';
        buf[o++] = s[i];
    }
    buf[o++] = q;
    buf[o] = '\0';
}

/* Python's source.checkgroupname(name, offset); non-ASCII names (valid
 * Python identifiers or not) are refused: PCRE2 aside, checking Unicode
 * identifiers would need Python's tables. */
static int check_group_name(parser *p, const char *name, size_t n,
                            size_t nchars, size_t offset)
{
    char r[96];

    name_repr(r, sizeof r, name, n);
    if (has_non_ascii(name, n))
        return PERR(p, nchars + offset,
                    "non-ASCII group name %s is not supported", r);
    if (!is_ascii_identifier(name, n))
        return PERR(p, nchars + offset, "bad character in group name %s", r);
    return 0;
}

static int open_group(parser *p, const char *name, size_t n, size_t nchars,
                      size_t *gid)
{
    size_t g = p->ngroups + 1;

    if (g > PCRE2_MAX_GROUPS)
        return PERR(p, nchars + 1, "too many groups (PCRE2 allows %u)",
                    PCRE2_MAX_GROUPS);
    if (!grow_array((void **)&p->gwidth, &p->gcap, g + 1, sizeof(width)))
        return pnomem(p);
    {
        size_t cap = p->gcap; /* gclosed follows gwidth's capacity */
        bool *nc = realloc(p->gclosed, cap * sizeof(bool));
        if (nc == NULL)
            return pnomem(p);
        p->gclosed = nc;
    }
    p->ngroups = g;
    p->gclosed[g] = false;
    p->gwidth[g].lo = p->gwidth[g].hi = 0;
    if (name != NULL) {
        const group_name *old = find_name(p, name, n);
        char r[96];
        if (old != NULL) {
            name_repr(r, sizeof r, name, n);
            return PERR(p, nchars + 1,
                        "redefinition of group name %s as group %zu; was "
                        "group %zu",
                        r, g, old->gid);
        }
        if (!grow_array((void **)&p->names, &p->cap_names, p->n_names + 1,
                        sizeof(group_name)))
            return pnomem(p);
        if ((p->names[p->n_names].name = hfdcp__strndup(name, n)) == NULL)
            return pnomem(p);
        p->names[p->n_names++].gid = g;
    }
    *gid = g;
    return 0;
}

/* ---- character sets ---- */

typedef struct {
    uint32_t lo, hi;
} crange;

typedef struct {
    crange *r;
    size_t n, cap;
} rangeset;

static int rs_add(parser *p, rangeset *s, uint32_t lo, uint32_t hi)
{
    if (!grow_array((void **)&s->r, &s->cap, s->n + 1, sizeof(crange)))
        return pnomem(p);
    s->r[s->n].lo = lo;
    s->r[s->n].hi = hi;
    s->n++;
    return 0;
}

static int crange_cmp(const void *a, const void *b)
{
    const crange *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorts and merges overlapping or adjacent ranges. */
static void rs_normalize(rangeset *s)
{
    size_t o = 0;

    if (s->n == 0)
        return;
    qsort(s->r, s->n, sizeof(crange), crange_cmp);
    for (size_t i = 1; i < s->n; i++) {
        if (s->r[i].lo <= s->r[o].hi + 1) {
            if (s->r[i].hi > s->r[o].hi)
                s->r[o].hi = s->r[i].hi;
        } else {
            s->r[++o] = s->r[i];
        }
    }
    s->n = o + 1;
}

static int rs_add_table(parser *p, rangeset *s, const crange *t, size_t n,
                        bool complement)
{
    uint32_t next = 0;

    for (size_t i = 0; i < n; i++) {
        if (!complement) {
            if (rs_add(p, s, t[i].lo, t[i].hi) < 0)
                return -1;
        } else {
            if (t[i].lo > next && rs_add(p, s, next, t[i].lo - 1) < 0)
                return -1;
            next = t[i].hi + 1;
        }
    }
    if (complement && next <= 0x10FFFF && rs_add(p, s, next, 0x10FFFF) < 0)
        return -1;
    return 0;
}

/* Python's str-pattern \s (Py_UNICODE_ISSPACE), sorted. */
static const crange PY_SPACE[] = {
    {0x09, 0x0D}, {0x1C, 0x20}, {0x85, 0x85}, {0xA0, 0xA0},
    {0x1680, 0x1680}, {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F},
    {0x205F, 0x205F}, {0x3000, 0x3000},
};
/* Python's ASCII-mode classes. */
static const crange ASCII_DIGIT[] = {{0x30, 0x39}};
static const crange ASCII_WORD[] = {
    {0x30, 0x39}, {0x41, 0x5A}, {0x5F, 0x5F}, {0x61, 0x7A}};
static const crange ASCII_SPACE[] = {{0x09, 0x0D}, {0x20, 0x20}};

/* Code points that Python's (?i) matches with each other (re._casefix and
 * simple lower-casing) but PCRE2 10.42's caseless matching does not. */
static const uint32_t ICASE_EXTRA[][4] = {
    {0x49, 0x69, 0x130, 0x131}, /* I i, I with dot, dotless i */
    {0x390, 0x1FD3, 0, 0},      /* iota with dialytika and tonos / oxia */
    {0x3B0, 0x1FE3, 0, 0},      /* upsilon with dialytika and tonos / oxia */
    {0xFB05, 0xFB06, 0, 0},     /* ligatures long s t, s t */
};

/* Upper- and title-case code points beyond the BMP (lower() differs), in
 * Unicode 14.  Python's re matches these wrongly under IGNORECASE inside a
 * character set (its charset code compares lower(ch) with the unlowered
 * literal), so such sets are refused rather than imitated. */
static const crange NONBMP_UPPER[] = {
    {0x10400, 0x10427}, {0x104B0, 0x104D3}, {0x10570, 0x1057A},
    {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595},
    {0x10C80, 0x10CB2}, {0x118A0, 0x118BF}, {0x16E40, 0x16E5F},
    {0x1E900, 0x1E921},
};

static bool is_nonbmp_upper(uint32_t c)
{
    for (size_t i = 0; i < sizeof NONBMP_UPPER / sizeof NONBMP_UPPER[0]; i++)
        if (c >= NONBMP_UPPER[i].lo && c <= NONBMP_UPPER[i].hi)
            return true;
    return false;
}

enum { CAT_DIGIT, CAT_NOT_DIGIT, CAT_SPACE, CAT_NOT_SPACE, CAT_WORD,
       CAT_NOT_WORD };

/* One item of a Python character set. */
typedef enum { SI_LITERAL, SI_RANGE, SI_CATEGORY } si_kind;
typedef struct {
    si_kind kind;
    uint32_t lo, hi; /* LITERAL: lo; RANGE: lo..hi; CATEGORY: lo = CAT_* */
} setitem;

static bool unicode_icase(uint32_t flags)
{
    return (flags & F_IGNORECASE) && !(flags & F_ASCII);
}

/* re's search skips ahead to a character of the pattern's first set
 * (re._compiler._get_charset_prefix), but builds that set with the
 * pattern's global flags: a leading (?a:\W) in a Unicode pattern then
 * skips non-ASCII letters.  Refused, rather than imitated. */
static int check_type_prefix(parser *p, uint32_t flags)
{
    if (!p->seen_item && ((flags ^ p->flags) & F_ASCII))
        return PERR(p, 0, "\\d \\w \\s (or their negations) at the start of "
                          "the pattern in a group whose ASCII/Unicode flag "
                          "differs from the pattern's are not supported "
                          "(re mis-searches them)");
    return 0;
}

static void emit_cp(parser *p, uint32_t c)
{
    emitf(p, "\\x{%" PRIX32 "}", c);
}

/*
 * Emits one PCRE2 atom matching exactly one character, like Python's IN
 * (or LITERAL / NOT_LITERAL) op over `items` under `flags`:
 *   - ASCII mode: categories become explicit ASCII ranges; IGNORECASE adds
 *     the other case of every ASCII letter (what re's IN_IGNORE does).
 *   - Unicode mode: \d \w and their negations are PCRE2's (identical sets,
 *     insensitive to caseless matching); \s and \S are Python's list;
 *     IGNORECASE is PCRE2's caseless matching over the literal part,
 *     plus the ICASE_EXTRA classes Python folds together.
 * Surrogates never occur in UTF-8 keys and PCRE2 refuses them: they are
 * dropped, and an empty set matches nothing (negated: any character).
 */
static int emit_set(parser *p, uint32_t flags, bool negate,
                    const setitem *items, size_t n)
{
    rangeset rs = {NULL, 0, 0};
    bool ascii = (flags & F_ASCII) != 0;
    bool icase = (flags & F_IGNORECASE) != 0;
    const char *natives[6] = {NULL};
    size_t n_natives = 0;
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        const setitem *it = &items[i];
        if (it->kind == SI_LITERAL) {
            rc = rs_add(p, &rs, it->lo, it->lo);
        } else if (it->kind == SI_RANGE) {
            rc = rs_add(p, &rs, it->lo, it->hi);
        } else if (ascii) {
            bool neg = it->lo == CAT_NOT_DIGIT || it->lo == CAT_NOT_SPACE ||
                       it->lo == CAT_NOT_WORD;
            if (it->lo == CAT_DIGIT || it->lo == CAT_NOT_DIGIT)
                rc = rs_add_table(p, &rs, ASCII_DIGIT, 1, neg);
            else if (it->lo == CAT_SPACE || it->lo == CAT_NOT_SPACE)
                rc = rs_add_table(p, &rs, ASCII_SPACE, 2, neg);
            else
                rc = rs_add_table(p, &rs, ASCII_WORD, 4, neg);
        } else if (it->lo == CAT_SPACE || it->lo == CAT_NOT_SPACE) {
            rc = rs_add_table(p, &rs, PY_SPACE,
                              sizeof PY_SPACE / sizeof PY_SPACE[0],
                              it->lo == CAT_NOT_SPACE);
        } else {
            static const char *const esc[] = {"\\d", "\\D", NULL, NULL,
                                              "\\w", "\\W"};
            bool seen = false;
            for (size_t k = 0; k < n_natives; k++)
                seen = seen || natives[k] == esc[it->lo];
            if (!seen)
                natives[n_natives++] = esc[it->lo];
        }
    }
    if (rc != 0)
        goto done;
    if (icase && ascii) {
        size_t n0 = rs.n;
        for (size_t i = 0; i < n0 && rc == 0; i++) {
            uint32_t lo = rs.r[i].lo, hi = rs.r[i].hi;
            uint32_t a = lo > 'A' ? lo : 'A', b = hi < 'Z' ? hi : 'Z';
            if (a <= b)
                rc = rs_add(p, &rs, a + 32, b + 32);
            a = lo > 'a' ? lo : 'a', b = hi < 'z' ? hi : 'z';
            if (rc == 0 && a <= b)
                rc = rs_add(p, &rs, a - 32, b - 32);
        }
    } else if (icase) {
        for (size_t k = 0; k < sizeof ICASE_EXTRA / sizeof ICASE_EXTRA[0];
             k++) {
            bool hit = false;
            size_t n0 = rs.n;
            for (size_t m = 0; m < 4 && ICASE_EXTRA[k][m]; m++)
                for (size_t i = 0; i < n0; i++)
                    hit = hit || (ICASE_EXTRA[k][m] >= rs.r[i].lo &&
                                  ICASE_EXTRA[k][m] <= rs.r[i].hi);
            for (size_t m = 0; hit && m < 4 && ICASE_EXTRA[k][m] && rc == 0;
                 m++)
                rc = rs_add(p, &rs, ICASE_EXTRA[k][m], ICASE_EXTRA[k][m]);
        }
    }
    if (rc != 0)
        goto done;
    rs_normalize(&rs);
    /* Cut the surrogates out. */
    for (size_t i = 0; i < rs.n && rc == 0; i++) {
        crange *r = &rs.r[i];
        if (r->hi < 0xD800 || r->lo > 0xDFFF)
            continue;
        if (r->lo < 0xD800 && r->hi > 0xDFFF) {
            uint32_t hi = r->hi;
            r->hi = 0xD7FF;
            rc = rs_add(p, &rs, 0xE000, hi);
        } else if (r->lo < 0xD800) {
            r->hi = 0xD7FF;
        } else if (r->hi > 0xDFFF) {
            r->lo = 0xE000;
        } else {
            r->lo = 1, r->hi = 0; /* empty: dropped below */
        }
    }
    if (rc != 0)
        goto done;
    {
        size_t o = 0;
        for (size_t i = 0; i < rs.n; i++)
            if (rs.r[i].lo <= rs.r[i].hi)
                rs.r[o++] = rs.r[i];
        rs.n = o;
        rs_normalize(&rs);
    }
    if (rs.n == 0 && n_natives == 0) {
        emit(p, negate ? "(?s:.)" : "(?:(?!))");
        goto done;
    }
    if (!negate && n_natives == 0 && rs.n == 1 && rs.r[0].lo == rs.r[0].hi &&
        !(icase && !ascii)) {
        emit_cp(p, rs.r[0].lo);
        goto done;
    }
    emit(p, icase && !ascii ? "(?i:[" : "[");
    if (negate)
        emit(p, "^");
    for (size_t i = 0; i < rs.n; i++) {
        emit_cp(p, rs.r[i].lo);
        if (rs.r[i].hi != rs.r[i].lo) {
            emit(p, "-");
            emit_cp(p, rs.r[i].hi);
        }
    }
    for (size_t k = 0; k < n_natives; k++)
        emit(p, natives[k]);
    emit(p, icase && !ascii ? "])" : "]");
done:
    free(rs.r);
    return rc;
}

static int emit_literal(parser *p, uint32_t flags, uint32_t c, bool negate)
{
    setitem it = {SI_LITERAL, c, c};
    return emit_set(p, flags, negate, &it, 1);
}

/* ---- escapes: re._parser._escape and _class_escape ---- */

typedef enum { E_LITERAL, E_CATEGORY, E_AT, E_GROUPREF } e_kind;
enum { AT_BEGIN_STRING, AT_END_STRING, AT_BOUNDARY, AT_NON_BOUNDARY,
       AT_BEGIN, AT_END };

typedef struct {
    e_kind kind;
    uint32_t v;
} escitem;

/* Reads up to n plain tokens from `set`; their text goes to buf. */
static size_t get_while(tokz *t, size_t n, const char *set, char *buf)
{
    size_t k = 0;
    while (k < n && tk_is_in(t, set))
        buf[k++] = (char)tk_get(t).c;
    buf[k] = '\0';
    return k;
}

static const char HEXDIGITS[] = "0123456789abcdefABCDEF";
static const char OCTDIGITS[] = "01234567";
static const char DIGITS[] = "0123456789";

static int parse_escape(parser *p, const token *tok, bool in_class,
                        escitem *out)
{
    uint32_t c = tok->c;
    char digits[12] = {0};

    /* ESCAPES, and (outside sets first) CATEGORIES. */
    if (!in_class) {
        static const char ats[] = "AZbB";
        static const uint32_t at_codes[] = {AT_BEGIN_STRING, AT_END_STRING,
                                            AT_BOUNDARY, AT_NON_BOUNDARY};
        for (size_t i = 0; i < 4; i++)
            if (c == (uint32_t)ats[i]) {
                out->kind = E_AT, out->v = at_codes[i];
                return 0;
            }
    }
    {
        static const char cats[] = "dDsSwW";
        static const uint32_t cat_codes[] = {CAT_DIGIT, CAT_NOT_DIGIT,
                                             CAT_SPACE, CAT_NOT_SPACE,
                                             CAT_WORD, CAT_NOT_WORD};
        static const char lits[] = "abfnrtv\\";
        static const uint32_t lit_codes[] = {7, 8, 12, 10, 13, 9, 11, '\\'};
        for (size_t i = 0; i < 6; i++)
            if (c == (uint32_t)cats[i]) {
                out->kind = E_CATEGORY, out->v = cat_codes[i];
                return 0;
            }
        for (size_t i = 0; i < 8; i++)
            if (c == (uint32_t)lits[i]) {
                out->kind = E_LITERAL, out->v = lit_codes[i];
                return 0;
            }
    }
    out->kind = E_LITERAL;
    if (c == 'x' || c == 'u' || c == 'U') {
        size_t want = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        size_t got = get_while(&p->t, want, HEXDIGITS, digits);
        uint64_t v = 0;
        for (size_t i = 0; i < got; i++) {
            uint32_t d = 0;
            is_hex((unsigned char)digits[i], &d);
            v = v * 16 + d;
        }
        if (got != want)
            return PERR(p, got + 2, "incomplete escape \\%c%s", (char)c,
                        digits);
        if (v > 0x10FFFF)
            return PERR(p, got + 2, "bad escape \\%c%s", (char)c, digits);
        out->v = (uint32_t)v;
        return 0;
    }
    if (c == 'N')
        return PERR(p, 2, "named character escapes \\N{...} are not "
                          "supported");
    if (c == '0' || (in_class && c >= '1' && c <= '7')) {
        size_t got = get_while(&p->t, 2, OCTDIGITS, digits);
        uint32_t v = c - '0';
        for (size_t i = 0; i < got; i++)
            v = v * 8 + (uint32_t)(digits[i] - '0');
        if (v > 0377)
            return PERR(p, got + 2,
                        "octal escape value \\%c%s outside of range 0-0o377",
                        (char)c, digits);
        out->v = v;
        return 0;
    }
    if (c >= '1' && c <= '9') {
        if (in_class)
            return PERR(p, 2, "bad escape \\%c", (char)c);
        /* Octal escape *or* decimal group reference (sigh, says re). */
        digits[0] = (char)c, digits[1] = '\0';
        if (tk_is_in(&p->t, DIGITS)) {
            digits[1] = (char)tk_get(&p->t).c, digits[2] = '\0';
            if (digits[0] <= '7' && digits[1] <= '7' &&
                tk_is_in(&p->t, OCTDIGITS)) {
                uint32_t v;
                digits[2] = (char)tk_get(&p->t).c, digits[3] = '\0';
                v = (uint32_t)(digits[0] - '0') * 64 +
                    (uint32_t)(digits[1] - '0') * 8 +
                    (uint32_t)(digits[2] - '0');
                if (v > 0377)
                    return PERR(p, 4,
                                "octal escape value \\%s outside of range "
                                "0-0o377",
                                digits);
                out->v = v;
                return 0;
            }
        }
        {
            size_t len = strlen(digits);
            size_t gid = (size_t)digits_value(digits, len);
            if (gid <= p->ngroups) {
                if (!group_closed(p, gid))
                    return PERR(p, len + 1, "cannot refer to an open group");
                if (check_lookbehind_group(p, gid) < 0)
                    return -1;
                out->kind = E_GROUPREF, out->v = (uint32_t)gid;
                return 0;
            }
            return PERR(p, len, "invalid group reference %zu", gid);
        }
    }
    if (is_ascii_letter(c))
        return PERR(p, 2, "bad escape \\%c", (char)c);
    out->v = c;
    return 0;
}

/* ---- the recursive descent: re._parser._parse_sub and _parse ---- */

static int parse_sub(parser *p, bool verbose, int nested, uint32_t flags,
                     width *w, bool *risky);
static int parse_seq(parser *p, bool verbose, int nested, bool first,
                     uint32_t flags, width *w, bool *risky);

static const char SPECIAL_CHARS[] = ".\\[{()*+?^$|";
static const char REPEAT_CHARS[] = "*+?{";
static const char WHITESPACE[] = " \t\n\r\v\f";
static const char FLAG_CHARS[] = "iLmsxatu";

enum { IT_NONE, IT_AT, IT_REPEAT, IT_OTHER };

static uint32_t flag_value(uint32_t c)
{
    switch (c) {
    case 'i': return F_IGNORECASE;
    case 'L': return F_LOCALE;
    case 'm': return F_MULTILINE;
    case 's': return F_DOTALL;
    case 'x': return F_VERBOSE;
    case 'a': return F_ASCII;
    case 't': return F_TEMPLATE;
    case 'u': return F_UNICODE;
    }
    return 0;
}

static bool is_flag_token(const token *k)
{
    return is_in(k, FLAG_CHARS);
}

/* The text of a token, for messages ("?P" + char). */
static void token_text(const parser *p, const token *k, char *buf,
                       size_t size)
{
    size_t n = k->after - k->at;
    if (n >= size)
        n = size - 1;
    memcpy(buf, p->src + k->at, n);
    buf[n] = '\0';
}

/* re._parser._parse_flags: `ch` is the first flag character (or '-').
 * Sets *global when the group is "(?flags)". */
static int parse_flags(parser *p, token ch, bool *global, uint32_t *add,
                       uint32_t *del)
{
    *add = *del = 0;
    *global = false;
    if (!is_in(&ch, "-")) {
        for (;;) {
            uint32_t f = flag_value(ch.c);
            if (ch.c == 'L')
                return PERR(p, 0, "bad inline flags: cannot use 'L' flag "
                                  "with a str pattern");
            *add |= f;
            if ((f & F_TYPE) && (*add & F_TYPE) != f)
                return PERR(p, 0, "bad inline flags: flags 'a', 'u' and 'L' "
                                  "are incompatible");
            ch = tk_get(&p->t);
            if (ch.end)
                return PERR(p, 0, "missing -, : or )");
            if (is_in(&ch, ")-:"))
                break;
            if (!is_flag_token(&ch))
                return PERR(p, ch.after_ci - ch.at_ci,
                            !ch.esc && is_ascii_letter(ch.c)
                                ? "unknown flag"
                                : "missing -, : or )");
        }
    }
    if (is_in(&ch, ")")) {
        if (*add & F_TEMPLATE)
            return PERR(p, 0, "the template flag 't' is not supported");
        p->flags |= *add;
        *global = true;
        return 0;
    }
    if (*add & F_TEMPLATE)
        return PERR(p, 1, "bad inline flags: cannot turn on global flag");
    if (is_in(&ch, "-")) {
        ch = tk_get(&p->t);
        if (ch.end)
            return PERR(p, 0, "missing flag");
        if (!is_flag_token(&ch))
            return PERR(p, ch.after_ci - ch.at_ci,
                        !ch.esc && is_ascii_letter(ch.c) ? "unknown flag"
                                                         : "missing flag");
        for (;;) {
            uint32_t f = flag_value(ch.c);
            if (f & F_TYPE)
                return PERR(p, 0, "bad inline flags: cannot turn off flags "
                                  "'a', 'u' and 'L'");
            *del |= f;
            ch = tk_get(&p->t);
            if (ch.end)
                return PERR(p, 0, "missing :");
            if (is_in(&ch, ":"))
                break;
            if (!is_flag_token(&ch))
                return PERR(p, ch.after_ci - ch.at_ci,
                            !ch.esc && is_ascii_letter(ch.c) ? "unknown flag"
                                                             : "missing :");
        }
    }
    if (*del & F_TEMPLATE)
        return PERR(p, 1, "bad inline flags: cannot turn off global flag");
    if (*add & *del)
        return PERR(p, 1, "bad inline flags: flag turned on and off");
    return 0;
}

static uint32_t combine_flags(uint32_t flags, uint32_t add, uint32_t del)
{
    if (add & F_TYPE)
        flags &= ~(uint32_t)F_TYPE;
    return (flags | add) & ~del;
}

/* Python's Tokenizer.getuntil(term, name): the raw text before `term`
 * (consumed) in *name / *n bytes / *nchars code points. */
static int get_until(parser *p, uint32_t term, const char *what,
                     const char **name, size_t *n, size_t *nchars)
{
    size_t start = p->t.cur.at, start_ci = p->t.cur.at_ci;

    for (;;) {
        token k = tk_get(&p->t);
        size_t len_ci = k.at_ci - start_ci;
        if (k.end) {
            if (len_ci == 0)
                return PERR(p, 0, "missing %s", what);
            return PERR(p, len_ci, "missing %c, unterminated name",
                        (char)term);
        }
        if (!k.esc && k.c == term) {
            if (len_ci == 0)
                return PERR(p, 1, "missing %s", what);
            *name = p->src + start;
            *n = k.at - start;
            *nchars = len_ci;
            return 0;
        }
    }
}

static int parse_repeat(parser *p, const token *this_tok, int *last_kind,
                        width *lastw, bool last_captures, bool *literal_brace)
{
    size_t here = tk_tell(&p->t);
    size_t here_byte = p->t.cur.at;
    uint64_t min, max;
    size_t this_len = this_tok->after_ci - this_tok->at_ci;

    *literal_brace = false;
    if (this_tok->c == '?') {
        min = 0, max = 1;
    } else if (this_tok->c == '*') {
        min = 0, max = MAXREPEAT;
    } else if (this_tok->c == '+') {
        min = 1, max = MAXREPEAT;
    } else {
        char lo[32], hi[32];
        size_t nlo = 0, nhi = 0;
        if (tk_is(&p->t, '}')) {
            *literal_brace = true;
            return 0;
        }
        min = 0, max = MAXREPEAT;
        while (tk_is_in(&p->t, DIGITS)) {
            char d = (char)tk_get(&p->t).c;
            if (nlo < sizeof lo - 1)
                lo[nlo++] = d;
            else
                lo[sizeof lo - 2] = '9'; /* saturate: far too large */
        }
        lo[nlo] = '\0';
        if (tk_match(&p->t, ',')) {
            while (tk_is_in(&p->t, DIGITS)) {
                char d = (char)tk_get(&p->t).c;
                if (nhi < sizeof hi - 1)
                    hi[nhi++] = d;
                else
                    hi[sizeof hi - 2] = '9';
            }
            hi[nhi] = '\0';
        } else {
            memcpy(hi, lo, nlo + 1);
            nhi = nlo;
        }
        if (!tk_match(&p->t, '}')) {
            *literal_brace = true;
            tk_seek(&p->t, here_byte, here);
            return 0;
        }
        if (nlo) {
            min = digits_value(lo, nlo);
            if (min >= MAXREPEAT)
                return PERR(p, 0, "the repetition number is too large");
        }
        if (nhi) {
            max = digits_value(hi, nhi);
            if (max >= MAXREPEAT)
                return PERR(p, 0, "the repetition number is too large");
            if (max < min)
                return PERR(p, tk_tell(&p->t) - here,
                            "min repeat greater than max repeat");
        }
    }
    if (*last_kind == IT_NONE || *last_kind == IT_AT)
        return PERR(p, tk_tell(&p->t) - here + this_len, "nothing to repeat");
    if (*last_kind == IT_REPEAT)
        return PERR(p, tk_tell(&p->t) - here + this_len, "multiple repeat");
    /* Empty iterations: re stops after an optional iteration that matched
     * empty but always tries one optional iteration after the forced ones
     * (even empty); PCRE2 stops after any empty iteration of *, + and
     * {n,}, and unrolls {m,n} into copies that go on.  Where they part,
     * the spans agree but captures can differ, so a body that can match
     * empty and captures is only accepted under ?, * and exact counts. */
    if (lastw->lo == 0 && last_captures && max > min && max >= 2 &&
        !(min == 0 && max == MAXREPEAT))
        return PERR(p, tk_tell(&p->t) - here + this_len,
                    "repeating a group that captures and can match empty "
                    "is only supported with ?, * or an exact count (re and "
                    "PCRE2 capture differently on empty iterations)");
    if (min > PCRE2_MAX_REPEAT || (max != MAXREPEAT && max > PCRE2_MAX_REPEAT))
        return PERR(p, tk_tell(&p->t) - here + this_len,
                    "repetition counts above %u are not supported (PCRE2 "
                    "limit)",
                    PCRE2_MAX_REPEAT);
    if (min == 0 && max == 1)
        emit(p, "?");
    else if (min == 0 && max == MAXREPEAT)
        emit(p, "*");
    else if (min == 1 && max == MAXREPEAT)
        emit(p, "+");
    else if (max == MAXREPEAT)
        emitf(p, "{%" PRIu64 ",}", min);
    else if (min == max)
        emitf(p, "{%" PRIu64 "}", min);
    else
        emitf(p, "{%" PRIu64 ",%" PRIu64 "}", min, max);
    if (tk_match(&p->t, '?'))
        emit(p, "?");
    else if (tk_match(&p->t, '+'))
        emit(p, "+");
    lastw->lo = sat_mul(lastw->lo, min);
    lastw->hi = sat_mul(lastw->hi, max);
    *last_kind = IT_REPEAT;
    return 0;
}

/* A character set "[...]": re._parser._parse's "[" branch.  Emits the set
 * and tells whether Python reduces it to one literal (*single). */
static int parse_class(parser *p, uint32_t flags, bool *single,
                       uint32_t *single_cp, bool *negated)
{
    size_t here = tk_tell(&p->t) - 1;
    setitem *items = NULL;
    size_t n = 0, cap = 0;
    bool negate;
    int rc = -1;

    negate = tk_match(&p->t, '^');
    for (;;) {
        token this_tok = tk_get(&p->t), that;
        setitem code1, code2;
        if (this_tok.end) {
            PERR(p, tk_tell(&p->t) - here, "unterminated character set");
            goto done;
        }
        if (!this_tok.esc && this_tok.c == ']' && n > 0)
            break;
        if (this_tok.esc) {
            escitem e;
            if (parse_escape(p, &this_tok, true, &e) < 0)
                goto done;
            code1.kind = e.kind == E_CATEGORY ? SI_CATEGORY : SI_LITERAL;
            code1.lo = code1.hi = e.v;
        } else {
            code1.kind = SI_LITERAL;
            code1.lo = code1.hi = this_tok.c;
        }
        if (tk_match(&p->t, '-')) {
            that = tk_get(&p->t);
            if (that.end) {
                PERR(p, tk_tell(&p->t) - here, "unterminated character set");
                goto done;
            }
            if (!that.esc && that.c == ']') {
                if (!grow_array((void **)&items, &cap, n + 2, sizeof *items)) {
                    pnomem(p);
                    goto done;
                }
                items[n++] = code1;
                items[n].kind = SI_LITERAL;
                items[n++].lo = '-';
                break;
            }
            if (that.esc) {
                escitem e;
                if (parse_escape(p, &that, true, &e) < 0)
                    goto done;
                code2.kind = e.kind == E_CATEGORY ? SI_CATEGORY : SI_LITERAL;
                code2.lo = code2.hi = e.v;
            } else {
                code2.kind = SI_LITERAL;
                code2.lo = code2.hi = that.c;
            }
            if (code1.kind != SI_LITERAL || code2.kind != SI_LITERAL ||
                code2.lo < code1.lo) {
                char a[16], b[16];
                token_text(p, &this_tok, a, sizeof a);
                token_text(p, &that, b, sizeof b);
                PERR(p,
                     (this_tok.after_ci - this_tok.at_ci) + 1 +
                         (that.after_ci - that.at_ci),
                     "bad character range %s-%s", a, b);
                goto done;
            }
            if ((flags & F_IGNORECASE) && (flags & F_ASCII) &&
                code2.lo > 0xFFFF) {
                /* re then checks the Unicode upper case of the ASCII-
                 * lowered character against the range: not ASCII-only. */
                PERR(p, 0, "a range beyond U+FFFF in a case-insensitive "
                           "ASCII-mode set is not supported");
                goto done;
            }
            code1.kind = SI_RANGE;
            code1.hi = code2.lo;
        }
        if (!grow_array((void **)&items, &cap, n + 1, sizeof *items)) {
            pnomem(p);
            goto done;
        }
        items[n++] = code1;
    }
    /* _uniq, then Python's single-literal reduction. */
    {
        size_t u = 0;
        for (size_t i = 0; i < n; i++) {
            bool dup = false;
            for (size_t j = 0; j < u && !dup; j++)
                dup = items[j].kind == items[i].kind &&
                      items[j].lo == items[i].lo &&
                      (items[i].kind != SI_RANGE || items[j].hi == items[i].hi);
            if (!dup)
                items[u++] = items[i];
        }
        n = u;
    }
    for (size_t i = 0; i < n; i++)
        if (items[i].kind == SI_CATEGORY && check_type_prefix(p, flags) < 0)
            goto done;
    *single = n == 1 && items[0].kind == SI_LITERAL;
    *single_cp = items[0].lo;
    *negated = negate;
    if (!*single && unicode_icase(flags)) {
        for (size_t i = 0; i < n; i++)
            if (items[i].kind == SI_LITERAL && is_nonbmp_upper(items[i].lo)) {
                PERR(p, tk_tell(&p->t) - here,
                     "upper-case characters beyond U+FFFF in a "
                     "case-insensitive character set are not supported "
                     "(Python's re never matches them)");
                goto done;
            }
    }
    if (emit_set(p, flags, negate, items, n) < 0)
        goto done;
    rc = 0;
done:
    free(items);
    return rc;
}

/* Emits an AT code (anchor or boundary) as explicit PCRE2. */
#define ASCII_W "[0-9A-Z_a-z]"
static void emit_at(parser *p, uint32_t flags, uint32_t at)
{
    bool ascii = (flags & F_ASCII) != 0;

    switch (at) {
    case AT_BEGIN_STRING:
        emit(p, "\\A");
        break;
    case AT_END_STRING:
        emit(p, "\\z");
        break;
    case AT_BEGIN:
        emit(p, flags & F_MULTILINE ? "(?:\\A|(?<=\\n))" : "\\A");
        break;
    case AT_END:
        emit(p, flags & F_MULTILINE ? "(?=\\n|\\z)" : "(?=\\n?\\z)");
        break;
    case AT_BOUNDARY:
        /* Python's \b never matches in an empty string; neither does
         * PCRE2's, nor the lookaround form. */
        emit(p, !ascii ? "\\b"
                       : "(?:(?<=" ASCII_W ")(?!" ASCII_W ")|(?<!" ASCII_W
                         ")(?=" ASCII_W "))");
        break;
    case AT_NON_BOUNDARY:
        /* Python 3.11's \B never matches in an empty string; PCRE2's
         * does. */
        emit(p, !ascii ? "(?:\\B(?!\\A\\z))"
                       : "(?:(?!\\A\\z)(?:(?<=" ASCII_W ")(?=" ASCII_W
                         ")|(?<!" ASCII_W ")(?!" ASCII_W ")))");
        break;
    }
}
#undef ASCII_W

/* "(?P=name)": a named group reference. */
static int parse_named_ref(parser *p, uint32_t flags, width *w)
{
    const group_name *g;
    const char *name;
    size_t n, nc;
    char r[96];

    if (get_until(p, ')', "group name", &name, &n, &nc) < 0 ||
        check_group_name(p, name, n, nc, 1) < 0)
        return -1;
    g = find_name(p, name, n);
    name_repr(r, sizeof r, name, n);
    if (g == NULL)
        return PERR(p, nc + 1, "unknown group name %s", r);
    if (!group_closed(p, g->gid))
        return PERR(p, nc + 1, "cannot refer to an open group");
    if (check_lookbehind_group(p, g->gid) < 0)
        return -1;
    if (flags & F_IGNORECASE)
        return PERR(p, nc + 1,
                    "case-insensitive group references are not supported");
    emitf(p, "\\g{%zu}", g->gid);
    *w = p->gwidth[g->gid];
    return 0;
}

/* Before parsing the body of the group whose "(" is at `start`: refuses
 * one more level than MAX_NESTING, before the recursion could exhaust the
 * stack.  The caller decrements p->depth after the body. */
static int nest_enter(parser *p, size_t start)
{
    if (p->depth >= MAX_NESTING)
        return perr_pos(p, HFDCP_ERR_ARG, start,
                        "groups nested more than %d deep are not supported "
                        "(hfdcp's nesting limit; Python's re fails with "
                        "RecursionError from about 495)",
                        MAX_NESTING);
    p->depth++;
    return 0;
}

/* "(?=" "(?!" "(?<=" "(?<!": `ch` is the token after "?". */
static int parse_lookaround(parser *p, token ch, size_t start, bool verbose,
                            int nested, uint32_t flags)
{
    bool behind = false, negative, inner_risky;
    size_t saved = p->lookbehind_groups;
    width inner;
    char txt[16];

    if (ch.c == '<') {
        ch = tk_get(&p->t);
        if (ch.end)
            return PERR(p, 0, "unexpected end of pattern");
        if (!is_in(&ch, "=!")) {
            token_text(p, &ch, txt, sizeof txt);
            return PERR(p, (ch.after_ci - ch.at_ci) + 2,
                        "unknown extension ?<%s", txt);
        }
        behind = true;
        if (p->lookbehind_groups == 0)
            p->lookbehind_groups = p->ngroups + 1;
    }
    negative = ch.c == '!';
    emit(p, behind ? (negative ? "(?<!" : "(?<=")
                   : (negative ? "(?!" : "(?="));
    if (nest_enter(p, start) < 0 ||
        parse_sub(p, verbose, nested + 1, flags, &inner, &inner_risky) < 0)
        return -1;
    p->depth--;
    if (behind)
        p->lookbehind_groups = saved;
    if (!tk_match(&p->t, ')'))
        return PERR(p, tk_tell(&p->t) - start,
                    "missing ), unterminated subpattern");
    emit(p, ")");
    /* Checked by re's compiler, after parsing: deferred. */
    if (behind && inner.lo != inner.hi && !p->has_deferred) {
        p->has_deferred = true;
        snprintf(p->deferred, sizeof p->deferred,
                 "look-behind requires fixed-width pattern");
    }
    return 0;
}

/* "(?(id/name)yes|no)", after "(?(". */
static int parse_conditional(parser *p, size_t start, bool verbose,
                             int nested, uint32_t flags, width *w)
{
    const char *cn;
    size_t cn_n, cn_ci, cond;
    width wy = {0, 0}, wn = {0, 0};
    bool ry, rn, has_no = false;
    char r[96];

    if (get_until(p, ')', "group name", &cn, &cn_n, &cn_ci) < 0)
        return -1;
    name_repr(r, sizeof r, cn, cn_n);
    if (is_ascii_identifier(cn, cn_n) || has_non_ascii(cn, cn_n)) {
        const group_name *g;
        if (check_group_name(p, cn, cn_n, cn_ci, 1) < 0)
            return -1;
        if ((g = find_name(p, cn, cn_n)) == NULL)
            return PERR(p, cn_ci + 1, "unknown group name %s", r);
        cond = g->gid;
    } else {
        uint64_t v;
        /* Python 3.11 also takes what int() takes ("+1", " 1", "1_0"),
         * with a DeprecationWarning. */
        if (!all_ascii_digits(cn, cn_n))
            return PERR(p, cn_ci + 1, "bad character in group name %s", r);
        v = digits_value(cn, cn_n);
        if (v == 0)
            return PERR(p, cn_ci + 1, "bad group number");
        if (v >= MAXGROUPS)
            return PERR(p, cn_ci + 1, "invalid group reference %.*s",
                        (int)cn_n, cn);
        cond = (size_t)v;
        /* It may name a group defined later: checked at the end. */
        if (!grow_array((void **)&p->condrefs, &p->cap_condrefs,
                        p->n_condrefs + 1, sizeof(cond_ref)))
            return pnomem(p);
        p->condrefs[p->n_condrefs].gid = cond;
        p->condrefs[p->n_condrefs++].pos = tk_tell(&p->t) - cn_ci - 1;
    }
    if (check_lookbehind_group(p, cond) < 0)
        return -1;
    emitf(p, "(?(%zu)", cond);
    if (nest_enter(p, start) < 0 ||
        parse_seq(p, verbose, nested + 1, false, flags, &wy, &ry) < 0)
        return -1;
    if (tk_match(&p->t, '|')) {
        emit(p, "|");
        has_no = true;
        if (parse_seq(p, verbose, nested + 1, false, flags, &wn, &rn) < 0)
            return -1;
        if (tk_is(&p->t, '|'))
            return PERR(p, 0,
                        "conditional backref with more than two branches");
    }
    p->depth--;
    if (!tk_match(&p->t, ')'))
        return PERR(p, tk_tell(&p->t) - start,
                    "missing ), unterminated subpattern");
    emit(p, ")");
    w->lo = has_no ? (wy.lo < wn.lo ? wy.lo : wn.lo) : 0;
    w->hi = has_no && wn.hi > wy.hi ? wn.hi : wy.hi;
    return 0;
}

/* The "(" branch of re._parser._parse.  *kind, *w and *risky describe the
 * item appended (kind IT_NONE: nothing appended: a comment, or global
 * flags, which update *verbose and *flags). */
static int parse_group(parser *p, bool *verbose, int nested, bool first,
                       size_t n_items, uint32_t *flags, int *kind, width *w,
                       bool *risky)
{
    size_t start = tk_tell(&p->t) - 1;
    bool capture = true, atomic = false, has_flags = false, inner_risky;
    const char *name = NULL;
    size_t name_n = 0, name_ci = 0, gid = 0;
    uint32_t add = 0, del = 0;
    token ch;
    char txt[16];

    *kind = IT_OTHER;
    w->lo = w->hi = 0;
    *risky = false;
    if (tk_match(&p->t, '?')) {
        ch = tk_get(&p->t);
        if (ch.end)
            return PERR(p, 0, "unexpected end of pattern");
        if (is_in(&ch, "P")) {
            if (tk_match(&p->t, '=')) {
                return parse_named_ref(p, *flags, w);
            } else if (!tk_match(&p->t, '<')) {
                ch = tk_get(&p->t);
                if (ch.end)
                    return PERR(p, 0, "unexpected end of pattern");
                token_text(p, &ch, txt, sizeof txt);
                return PERR(p, (ch.after_ci - ch.at_ci) + 2,
                            "unknown extension ?P%s", txt);
            }
            if (get_until(p, '>', "group name", &name, &name_n, &name_ci) <
                    0 ||
                check_group_name(p, name, name_n, name_ci, 1) < 0)
                return -1;
        } else if (is_in(&ch, ":")) {
            capture = false;
        } else if (is_in(&ch, "#")) {
            for (;;) {
                if (p->t.cur.end)
                    return PERR(p, tk_tell(&p->t) - start,
                                "missing ), unterminated comment");
                ch = tk_get(&p->t);
                if (is_in(&ch, ")"))
                    break;
            }
            *kind = IT_NONE;
            return 0;
        } else if (is_in(&ch, "=!<")) {
            return parse_lookaround(p, ch, start, *verbose, nested, *flags);
        } else if (is_in(&ch, "(")) {
            return parse_conditional(p, start, *verbose, nested, *flags, w);
        } else if (is_in(&ch, ">")) {
            capture = false;
            atomic = true;
        } else if (is_flag_token(&ch) || is_in(&ch, "-")) {
            bool global;
            if (parse_flags(p, ch, &global, &add, &del) < 0)
                return -1;
            if (global) {
                if (!first || n_items > 0)
                    return PERR(p, tk_tell(&p->t) - start,
                                "global flags not at the start of the "
                                "expression");
                *verbose = (p->flags & F_VERBOSE) != 0;
                *flags = p->flags;
                *kind = IT_NONE;
                return 0;
            }
            capture = false;
            has_flags = true;
        } else {
            token_text(p, &ch, txt, sizeof txt);
            return PERR(p, (ch.after_ci - ch.at_ci) + 1,
                        "unknown extension ?%s", txt);
        }
    }
    if (capture && open_group(p, name, name_n, name_ci, &gid) < 0)
        return -1;
    emit(p, capture ? "(" : atomic ? "(?>" : "(?:");
    if (nest_enter(p, start) < 0 ||
        parse_sub(p, (*verbose || (add & F_VERBOSE)) && !(del & F_VERBOSE),
                  nested + 1, combine_flags(*flags, add, del), w,
                  &inner_risky) < 0)
        return -1;
    p->depth--;
    if (!tk_match(&p->t, ')'))
        return PERR(p, tk_tell(&p->t) - start,
                    "missing ), unterminated subpattern");
    emit(p, ")");
    if (capture) {
        p->gwidth[gid] = *w;
        p->gclosed[gid] = true;
    }
    /* Python unpacks (?:...) into its parent: a lone literal inside counts
     * as the parent's (see parse_sub). */
    *risky = !capture && !atomic && !has_flags && inner_risky;
    return 0;
}

/* re._parser._parse: a sequence of items up to "|", ")" or the end.
 * *risky: a direct item is an upper-case literal beyond U+FFFF under
 * Unicode IGNORECASE (see parse_sub). */
static int parse_seq(parser *p, bool verbose, int nested, bool first,
                     uint32_t flags, width *w, bool *risky)
{
    int last_kind = IT_NONE;
    width sum = {0, 0}, lastw = {0, 0};
    size_t n_items = 0;
    bool last_captures = false;

    *risky = false;
    for (;;) {
        token this_tok;
        int kind = IT_OTHER;
        width nw = {1, 1};
        bool item_risky = false;
        size_t groups_before = p->ngroups;

        if (p->t.cur.end || tk_is(&p->t, '|') || tk_is(&p->t, ')'))
            break;
        p->item_pos = tk_tell(&p->t);
        this_tok = tk_get(&p->t);
        if (verbose && is_in(&this_tok, WHITESPACE))
            continue;
        if (verbose && is_in(&this_tok, "#")) {
            for (;;) {
                token k = tk_get(&p->t);
                if (k.end || is_in(&k, "\n"))
                    break;
            }
            continue;
        }
        if (this_tok.esc) {
            escitem e;
            if (parse_escape(p, &this_tok, false, &e) < 0)
                return -1;
            if (e.kind == E_AT) {
                emit_at(p, flags, e.v);
                kind = IT_AT;
                nw.lo = nw.hi = 0;
            } else if (e.kind == E_CATEGORY) {
                setitem it = {SI_CATEGORY, e.v, e.v};
                if (check_type_prefix(p, flags) < 0 ||
                    emit_set(p, flags, false, &it, 1) < 0)
                    return -1;
            } else if (e.kind == E_LITERAL) {
                if (emit_literal(p, flags, e.v, false) < 0)
                    return -1;
                item_risky = unicode_icase(flags) && is_nonbmp_upper(e.v);
            } else {
                if (flags & F_IGNORECASE)
                    return PERR(p, this_tok.after_ci - this_tok.at_ci,
                                "case-insensitive group references are not "
                                "supported");
                emitf(p, "\\g{%" PRIu32 "}", e.v);
                nw = p->gwidth[e.v];
            }
        } else if (!is_in(&this_tok, SPECIAL_CHARS)) {
            if (emit_literal(p, flags, this_tok.c, false) < 0)
                return -1;
            item_risky = unicode_icase(flags) && is_nonbmp_upper(this_tok.c);
        } else if (this_tok.c == '[') {
            bool single, negated;
            uint32_t cp;
            if (parse_class(p, flags, &single, &cp, &negated) < 0)
                return -1;
            item_risky = single && !negated && unicode_icase(flags) &&
                         is_nonbmp_upper(cp);
        } else if (is_in(&this_tok, REPEAT_CHARS)) {
            bool literal_brace;
            if (parse_repeat(p, &this_tok, &last_kind, &lastw, last_captures,
                             &literal_brace) < 0)
                return -1;
            if (!literal_brace)
                continue; /* the last item became a repeat */
            if (emit_literal(p, flags, '{', false) < 0)
                return -1;
        } else if (this_tok.c == '.') {
            emit(p, flags & F_DOTALL ? "(?s:.)" : "[^\\n]");
        } else if (this_tok.c == '(') {
            if (parse_group(p, &verbose, nested, first, n_items, &flags,
                            &kind, &nw, &item_risky) < 0)
                return -1;
            if (kind == IT_NONE)
                continue; /* a comment or global flags: no item */
        } else if (this_tok.c == '^' || this_tok.c == '$') {
            emit_at(p, flags, this_tok.c == '^' ? AT_BEGIN : AT_END);
            kind = IT_AT;
            nw.lo = nw.hi = 0;
        } else {
            return PERR(p, 0, "internal: unexpected character");
        }
        sum.lo = sat_add(sum.lo, lastw.lo);
        sum.hi = sat_add(sum.hi, lastw.hi);
        lastw = nw;
        last_kind = kind;
        last_captures = p->ngroups != groups_before;
        n_items++;
        p->seen_item = true;
        *risky = *risky || item_risky;
    }
    sum.lo = sat_add(sum.lo, lastw.lo);
    sum.hi = sat_add(sum.hi, lastw.hi);
    *w = cap_width(sum);
    return 0;
}

/* re._parser._parse_sub: alternatives separated by "|".
 * Note: Python turns an alternation whose branches are (after factoring
 * out a common prefix) single literals or sets into one character set,
 * and under IGNORECASE its set code never matches an upper-case literal
 * beyond U+FFFF.  Alternations with such a literal as a direct item are
 * refused (conservatively: even where Python would not convert). */
static int parse_sub(parser *p, bool verbose, int nested, uint32_t flags,
                     width *w, bool *risky)
{
    size_t start = tk_tell(&p->t), n = 0;
    width acc = {MAXREPEAT - 1, 0}, wi = {0, 0};
    bool any_risky = false, ri = false;

    for (;;) {
        /* At the top level the scope's flags are the global flags, which
         * "(?flags)" at the start may just have set. */
        uint32_t f = nested == 0 ? p->flags : flags;
        if (parse_seq(p, verbose, nested + 1, nested == 0 && n == 0, f, &wi,
                      &ri) < 0)
            return -1;
        n++;
        any_risky = any_risky || ri;
        acc.lo = wi.lo < acc.lo ? wi.lo : acc.lo;
        acc.hi = wi.hi > acc.hi ? wi.hi : acc.hi;
        p->item_pos = tk_tell(&p->t);
        if (!tk_match(&p->t, '|'))
            break;
        emit(p, "|");
        if (nested == 0)
            verbose = (p->flags & F_VERBOSE) != 0;
    }
    if (n == 1) {
        *w = wi;
        *risky = ri;
        return 0;
    }
    if (any_risky)
        return perr_pos(p, HFDCP_ERR_ARG, start,
                        "a case-insensitive alternative made of an "
                        "upper-case character beyond U+FFFF is not "
                        "supported (Python's re never matches it)");
    *w = cap_width(acc);
    *risky = false;
    return 0;
}

static void parser_init(parser *p)
{
    memset(p, 0, sizeof *p);
    hfdcp__buf_init(&p->out);
    hfdcp__buf_init(&p->omap);
    p->status = HFDCP_OK;
}

static void parser_free(parser *p)
{
    for (size_t i = 0; i < p->n_names; i++)
        free(p->names[i].name);
    free(p->names);
    free(p->gwidth);
    free(p->gclosed);
    free(p->condrefs);
    hfdcp__buf_free(&p->out);
    hfdcp__buf_free(&p->omap);
}

/* re._parser.parse, then the checks of re's compiler that we defer.  On
 * success p->out holds the PCRE2 pattern (not NUL-terminated). */
static int translate(parser *p, const char *pattern)
{
    width w;
    bool risky;
    size_t nchars = 0;

    p->src = pattern;
    utf8_check(pattern, &nchars, NULL);
    if (ends_with_lone_backslash(pattern))
        return perr_pos(p, HFDCP_ERR_ARG, nchars - 1,
                        "bad escape (end of pattern)");
    tk_init(&p->t, pattern);
    if (parse_sub(p, false, 0, 0, &w, &risky) < 0)
        return -1;
    if ((p->flags & F_ASCII) && (p->flags & F_UNICODE))
        return perr_pos(p, HFDCP_ERR_ARG, (size_t)-1,
                        "ASCII and UNICODE flags are incompatible");
    if (!p->t.cur.end)
        return PERR(p, 0, "unbalanced parenthesis");
    for (size_t i = 0; i < p->n_condrefs; i++)
        if (p->condrefs[i].gid > p->ngroups)
            return perr_pos(p, HFDCP_ERR_ARG, p->condrefs[i].pos,
                            "invalid group reference %zu",
                            p->condrefs[i].gid);
    if (p->has_deferred)
        return perr_pos(p, HFDCP_ERR_ARG, (size_t)-1, "%s", p->deferred);
    if (p->out.failed || p->omap.failed)
        return pnomem(p);
    return 0;
}

/* ------------------------------------------------------------------------
 * Replacement templates: re._parser.parse_template
 * ---------------------------------------------------------------------- */

#define PIECE_LITERAL SIZE_MAX

typedef struct {
    size_t group; /* a group number, or PIECE_LITERAL */
    size_t off, len; /* PIECE_LITERAL: bytes lit[off, off + len) */
} piece;

typedef struct {
    char *pattern;
    char *replacement;
    pcre2_code *code;
    bool anchored; /* PCRE2 matches it only at the start offset */
    size_t ngroups;
    piece *pieces;
    size_t n_pieces;
    unsigned char *lit;
} rule;

struct hfdcp_key_map_s {
    rule *rules;
    size_t n, cap;
};

typedef struct {
    hfdcp__buf lit;
    piece *pieces;
    size_t n, cap;
    size_t lit_start; /* start of the literal run not yet in a piece */
} template_out;

static int tpl_flush(parser *p, template_out *o)
{
    if (o->lit.len == o->lit_start)
        return 0;
    if (!grow_array((void **)&o->pieces, &o->cap, o->n + 1, sizeof(piece)))
        return pnomem(p);
    o->pieces[o->n].group = PIECE_LITERAL;
    o->pieces[o->n].off = o->lit_start;
    o->pieces[o->n].len = o->lit.len - o->lit_start;
    o->n++;
    o->lit_start = o->lit.len;
    return 0;
}

/* Python's addgroup(index, pos). */
static int tpl_group(parser *p, template_out *o, uint64_t index, size_t pos)
{
    if (index > p->ngroups)
        return PERR(p, pos, "invalid group reference %" PRIu64, index);
    if (tpl_flush(p, o) < 0)
        return -1;
    if (!grow_array((void **)&o->pieces, &o->cap, o->n + 1, sizeof(piece)))
        return pnomem(p);
    o->pieces[o->n].group = (size_t)index;
    o->pieces[o->n].off = o->pieces[o->n].len = 0;
    o->n++;
    return 0;
}

static int parse_template(parser *p, const char *repl, template_out *o)
{
    size_t nchars = 0;

    p->src = repl;
    utf8_check(repl, &nchars, NULL);
    if (ends_with_lone_backslash(repl))
        return perr_pos(p, HFDCP_ERR_ARG, nchars - 1,
                        "bad escape (end of pattern)");
    tk_init(&p->t, repl);
    for (;;) {
        token k = tk_get(&p->t);
        uint32_t c = k.c;

        if (k.end)
            break;
        if (!k.esc) {
            utf8_put(&o->lit, c);
        } else if (c == 'g') {
            const char *name;
            size_t n, nc;
            char r[96];
            if (!tk_match(&p->t, '<'))
                return PERR(p, 0, "missing <");
            if (get_until(p, '>', "group name", &name, &n, &nc) < 0)
                return -1;
            name_repr(r, sizeof r, name, n);
            if (is_ascii_identifier(name, n)) {
                const group_name *g = find_name(p, name, n);
                if (g == NULL)
                    return perr_pos(p, HFDCP_ERR_ARG, (size_t)-1,
                                    "unknown group name %s", r);
                if (tpl_group(p, o, g->gid, nc + 1) < 0)
                    return -1;
            } else if (has_non_ascii(name, n)) {
                return PERR(p, nc + 1,
                            "non-ASCII group name %s is not supported", r);
            } else if (!all_ascii_digits(name, n)) {
                /* Python 3.11 also takes what int() takes ("+1", " 1"),
                 * with a DeprecationWarning. */
                return PERR(p, nc + 1, "bad character in group name %s", r);
            } else {
                uint64_t index = digits_value(name, n);
                if (index >= MAXGROUPS)
                    return PERR(p, nc + 1, "invalid group reference %.*s",
                                (int)n, name);
                if (tpl_group(p, o, index, nc + 1) < 0)
                    return -1;
            }
        } else if (c == '0') {
            char d[4];
            size_t got = get_while(&p->t, 2, OCTDIGITS, d);
            uint32_t v = 0;
            for (size_t i = 0; i < got; i++)
                v = v * 8 + (uint32_t)(d[i] - '0');
            v &= 0xFF;
            if (v == 0)
                return PERR(p, got + 2,
                            "\\0 would put a NUL character in the key, "
                            "which a C string cannot hold");
            utf8_put(&o->lit, v);
        } else if (c >= '1' && c <= '9') {
            char d[4] = {(char)c, 0, 0, 0};
            bool octal = false;
            if (tk_is_in(&p->t, DIGITS)) {
                d[1] = (char)tk_get(&p->t).c;
                if (c <= '7' && d[1] <= '7' && tk_is_in(&p->t, OCTDIGITS)) {
                    uint32_t v;
                    d[2] = (char)tk_get(&p->t).c;
                    octal = true;
                    v = (uint32_t)(d[0] - '0') * 64 +
                        (uint32_t)(d[1] - '0') * 8 + (uint32_t)(d[2] - '0');
                    if (v > 0377)
                        return PERR(p, 4,
                                    "octal escape value \\%s outside of "
                                    "range 0-0o377",
                                    d);
                    utf8_put(&o->lit, v);
                }
            }
            if (!octal && tpl_group(p, o, digits_value(d, strlen(d)),
                                    strlen(d)) < 0)
                return -1;
        } else {
            static const char lits[] = "abfnrtv\\";
            static const unsigned char codes[] = {7, 8, 12, 10, 13, 9, 11,
                                                  '\\'};
            const char *hit = c < 0x80 && c != 0 ? strchr(lits, (int)c) : NULL;
            if (hit != NULL) {
                utf8_put(&o->lit, codes[hit - lits]);
            } else if (is_ascii_letter(c)) {
                return PERR(p, 2, "bad escape \\%c", (char)c);
            } else {
                /* Python keeps an unknown escape as it is. */
                utf8_put(&o->lit, '\\');
                utf8_put(&o->lit, c);
            }
        }
    }
    if (tpl_flush(p, o) < 0)
        return -1;
    if (o->lit.failed)
        return pnomem(p);
    return 0;
}

/* ------------------------------------------------------------------------
 * The public key map
 * ---------------------------------------------------------------------- */

static void rule_free(rule *r)
{
    free(r->pattern);
    free(r->replacement);
    pcre2_code_free(r->code);
    free(r->pieces);
    free(r->lit);
}

int hfdcp_key_map_create(hfdcp_key_map **out)
{
    hfdcp_key_map *km;

    if (out == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_key_map_create: out is NULL");
    if ((km = calloc(1, sizeof *km)) == NULL)
        return hfdcp__nomem("a key map");
    *out = km;
    return HFDCP_OK;
}

void hfdcp_key_map_free(hfdcp_key_map *km)
{
    if (km == NULL)
        return;
    for (size_t i = 0; i < km->n; i++)
        rule_free(&km->rules[i]);
    free(km->rules);
    free(km);
}

/* Compiles the translated pattern; a PCRE2 error is reported at the
 * position in the Python pattern that produced the offending output. */
static int compile_pcre2(parser *p, pcre2_code **out)
{
    int err;
    PCRE2_SIZE eo;
    pcre2_code *code;

    /* Note: PCRE2 10.42's start-of-match optimizations lose matches of
     * some patterns, e.g. (?:|(?=x(?:(?<=a)|b))y){0} fails on "ab".  Keys
     * are short: correctness first. */
    code = pcre2_compile(p->out.len ? (PCRE2_SPTR)p->out.data
                                    : (PCRE2_SPTR) "",
                         p->out.len,
                         PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C |
                             PCRE2_NO_START_OPTIMIZE |
                             PCRE2_NO_DOTSTAR_ANCHOR,
                         &err, &eo, NULL);
    if (code == NULL) {
        PCRE2_UCHAR emsg[256];
        const size_t *map = (const size_t *)p->omap.data;
        size_t pos;
        if (pcre2_get_error_message(err, emsg, sizeof emsg) < 0)
            snprintf((char *)emsg, sizeof emsg, "error %d", err);
        if (err == PCRE2_ERROR_NOMEMORY)
            return pnomem(p);
        if (p->out.len == 0)
            pos = 0;
        else
            pos = map[eo < p->out.len ? eo : p->out.len - 1];
        return perr_pos(p, HFDCP_ERR_ARG, pos, "not supported by PCRE2: %s",
                        (const char *)emsg);
    }
    *out = code;
    return 0;
}

/* For messages: `s` in quotes, in full up to QUOTE_MAX bytes; a longer
 * one by its first bytes (whole characters), "..." and its length, so
 * that what a message says after it is not cut off by the size limit of
 * hfdcp_last_error() (a pattern may be 100000 "(" long). */
#define QUOTE_MAX 1000
#define QUOTE_HEAD 64
static const char *quoted(char *buf, size_t size, const char *s)
{
    size_t len = strlen(s), n = QUOTE_HEAD;

    if (len <= QUOTE_MAX) {
        snprintf(buf, size, "'%s'", s);
        return buf;
    }
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    snprintf(buf, size, "'%.*s...' (%zu bytes)", (int)n, s, len);
    return buf;
}

/* What re's compiler would report: PCRE2 must see Python's groups. */
static int check_compiled(const parser *p, rule *r, size_t no,
                          const char *qpat)
{
    uint32_t count = 0, opts = 0;

    if (pcre2_pattern_info(r->code, PCRE2_INFO_CAPTURECOUNT, &count) != 0 ||
        pcre2_pattern_info(r->code, PCRE2_INFO_ALLOPTIONS, &opts) != 0 ||
        count != p->ngroups)
        return hfdcp__error(HFDCP_ERR_INTERNAL,
                            "key map rule %zu: pattern %s: PCRE2 sees "
                            "%" PRIu32 " groups, Python %zu",
                            no, qpat, count, p->ngroups);
    /* Note: PCRE2 10.42 also calls some patterns anchored that are not,
     * e.g. (?:x|\A){0}; rule_search() then tries every start. */
    r->anchored = (opts & PCRE2_ANCHORED) != 0;
    r->ngroups = p->ngroups;
    return HFDCP_OK;
}

int hfdcp_key_map_add(hfdcp_key_map *km, const char *pattern,
                      const char *replacement)
{
    parser p;
    template_out tpl;
    rule r;
    size_t bad, no;
    int rc = HFDCP_OK;
    char qpat[QUOTE_MAX + 3], qrep[QUOTE_MAX + 3];

    if (km == NULL || pattern == NULL || replacement == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_key_map_add: %s is NULL",
                            km == NULL ? "the key map"
                            : pattern == NULL ? "the pattern"
                                              : "the replacement");
    no = km->n + 1;
    if (!utf8_check(pattern, NULL, &bad))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "key map rule %zu: pattern is not valid UTF-8 "
                            "(byte %zu)",
                            no, bad);
    quoted(qpat, sizeof qpat, pattern);
    if (!utf8_check(replacement, NULL, &bad))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "key map rule %zu: replacement for pattern %s "
                            "is not valid UTF-8 (byte %zu)",
                            no, qpat, bad);

    memset(&r, 0, sizeof r);
    memset(&tpl, 0, sizeof tpl);
    hfdcp__buf_init(&tpl.lit);
    parser_init(&p);
    if (translate(&p, pattern) < 0 || compile_pcre2(&p, &r.code) < 0) {
        rc = p.status == HFDCP_ERR_NOMEM
                 ? hfdcp__nomem("a key map pattern")
                 : hfdcp__error(p.status, "key map rule %zu: pattern %s: %s",
                                no, qpat, p.msg);
        goto cleanup;
    }
    if ((rc = check_compiled(&p, &r, no, qpat)) != HFDCP_OK)
        goto cleanup;
    if (parse_template(&p, replacement, &tpl) < 0) {
        rc = p.status == HFDCP_ERR_NOMEM
                 ? hfdcp__nomem("a key map replacement")
                 : hfdcp__error(p.status,
                                "key map rule %zu: replacement %s for "
                                "pattern %s: %s",
                                no, quoted(qrep, sizeof qrep, replacement),
                                qpat, p.msg);
        goto cleanup;
    }
    if (!grow_array((void **)&km->rules, &km->cap, km->n + 1, sizeof(rule)) ||
        (r.pattern = hfdcp__strdup(pattern)) == NULL ||
        (r.replacement = hfdcp__strdup(replacement)) == NULL) {
        rc = hfdcp__nomem("a key map rule");
        goto cleanup;
    }
    r.pieces = tpl.pieces;
    r.n_pieces = tpl.n;
    r.lit = tpl.lit.data;
    tpl.pieces = NULL;
    tpl.lit.data = NULL;
    km->rules[km->n++] = r;
    memset(&r, 0, sizeof r);
cleanup:
    rule_free(&r);
    free(tpl.pieces);
    hfdcp__buf_free(&tpl.lit);
    parser_free(&p);
    return rc;
}

/* The first match at or after `start` (re's search), with the options
 * `opts`; PCRE2_NOTEMPTY_ATSTART applies at `start` only. */
static int rule_search(const rule *r, const char *key, size_t klen,
                       size_t start, uint32_t opts, pcre2_match_data *md)
{
    size_t q = start;

    if (!r->anchored)
        return pcre2_match(r->code, (PCRE2_SPTR)key, klen, start, opts, md,
                           NULL);
    for (;;) {
        int mrc = pcre2_match(r->code, (PCRE2_SPTR)key, klen, q, opts, md,
                              NULL);
        if (mrc != PCRE2_ERROR_NOMATCH || q >= klen)
            return mrc;
        do
            q++;
        while (q < klen && ((unsigned char)key[q] & 0xC0) == 0x80);
        opts &= ~(uint32_t)PCRE2_NOTEMPTY_ATSTART;
    }
}

/* re.subn(rule, key): appends the result to `out` (emptied first) and sets
 * *count to the number of replacements. */
static int rule_subn(const rule *r, size_t no, const char *key, size_t klen,
                     hfdcp__buf *out, size_t *count)
{
    pcre2_match_data *md;
    size_t pos = 0, last = 0, n = 0;
    uint32_t opts = PCRE2_NO_UTF_CHECK;
    int rc = HFDCP_OK;

    out->len = 0;
    if ((md = pcre2_match_data_create_from_pattern(r->code, NULL)) == NULL)
        return hfdcp__nomem("PCRE2 match data");
    for (;;) {
        PCRE2_SIZE *ov;
        size_t b, e;
        int mrc = rule_search(r, key, klen, pos, opts, md);
        if (mrc == PCRE2_ERROR_NOMATCH)
            break;
        if (mrc <= 0) {
            PCRE2_UCHAR emsg[256];
            if (pcre2_get_error_message(mrc, emsg, sizeof emsg) < 0)
                snprintf((char *)emsg, sizeof emsg, "error %d", mrc);
            rc = hfdcp__error(mrc == PCRE2_ERROR_NOMEMORY
                                  ? HFDCP_ERR_NOMEM
                                  : HFDCP_ERR_UNSUPPORTED,
                              "key map rule %zu: matching key '%s' with "
                              "pattern '%s': PCRE2: %s",
                              no, key, r->pattern, (const char *)emsg);
            goto cleanup;
        }
        ov = pcre2_get_ovector_pointer(md);
        b = ov[0];
        e = ov[1];
        hfdcp__buf_put(out, key + last, b - last);
        for (size_t i = 0; i < r->n_pieces; i++) {
            const piece *pc = &r->pieces[i];
            size_t g = pc->group;
            if (g == PIECE_LITERAL)
                hfdcp__buf_put(out, r->lit + pc->off, pc->len);
            else if (g < (size_t)mrc && ov[2 * g] != PCRE2_UNSET)
                hfdcp__buf_put(out, key + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
            /* else an unmatched group: empty, as Python 3.5+ */
        }
        n++;
        last = e;
        pos = e;
        /* After an empty match the next may not be empty at the same
         * place (re's must_advance); after a non-empty one it may. */
        opts = PCRE2_NO_UTF_CHECK | (e == b ? PCRE2_NOTEMPTY_ATSTART : 0);
    }
    hfdcp__buf_put(out, key + last, klen - last);
    *count = n;
    rc = hfdcp__buf_status(out);
cleanup:
    pcre2_match_data_free(md);
    return rc;
}

int hfdcp__key_map_rename(const hfdcp_key_map *km, const char *key,
                          char **out)
{
    hfdcp__buf b;
    size_t klen, bad, count = 0;
    int rc = HFDCP_OK;

    if (key == NULL || out == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "renaming a key: %s is NULL",
                            key == NULL ? "the key" : "out");
    klen = strlen(key);
    hfdcp__buf_init(&b);
    if (km != NULL && km->n > 0 && !utf8_check(key, NULL, &bad))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "renaming key '%s': not valid UTF-8 (byte %zu)",
                            key, bad);
    for (size_t i = 0; km != NULL && i < km->n; i++) {
        HFDCP_CHECK(rule_subn(&km->rules[i], i + 1, key, klen, &b, &count));
        if (count > 0)
            break;
    }
    if (count == 0) {
        b.len = 0;
        hfdcp__buf_put(&b, key, klen);
    }
    hfdcp__buf_put(&b, "", 1);
    HFDCP_CHECK(hfdcp__buf_status(&b));
    *out = (char *)b.data;
    b.data = NULL;
cleanup:
    hfdcp__buf_free(&b);
    return rc;
}

int hfdcp_key_map_apply(const hfdcp_key_map *km, const char *key, char *out,
                        size_t out_size)
{
    char *res = NULL;
    size_t need;
    int rc;

    if (out == NULL && out_size > 0)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_key_map_apply: out is NULL");
    if ((rc = hfdcp__key_map_rename(km, key, &res)) != HFDCP_OK)
        return rc;
    need = strlen(res) + 1;
    if (need > out_size) {
        rc = hfdcp__error(HFDCP_ERR_RANGE,
                          "renaming key '%s': the new key '%s' needs %zu "
                          "bytes, out_size is %zu",
                          key, res, need, out_size);
    } else {
        memcpy(out, res, need);
    }
    free(res);
    return rc;
}

int hfdcp__key_map_pack(const hfdcp_key_map *km, hfdcp__buf *b)
{
    size_t n = km ? km->n : 0;

    hfdcp__buf_put_u64(b, n);
    for (size_t i = 0; i < n; i++) {
        hfdcp__buf_put_str(b, km->rules[i].pattern);
        hfdcp__buf_put_str(b, km->rules[i].replacement);
    }
    return hfdcp__buf_status(b);
}
