/*
 * charset.c - what a Python character set matches, as code point ranges
 * for translator.c to spell in PCRE2: Python's category tables, the case
 * folding Python adds to PCRE2's, surrogates cut out.
 *
 * Facts measured once against Python 3.11 / Unicode 14 and PCRE2 10.42
 * (every code point compared): \d and \w agree; Python's \s adds
 * U+001C..U+001F and lacks U+180E, so it is an explicit list; (?i) agrees
 * except for the four equivalence classes in ICASE_EXTRA.
 */
#include <stdlib.h>

#include "keymap_internal.h"

static int rs_add(parser *p, rangeset *s, uint32_t lo, uint32_t hi)
{
    if (!grow_array((void **)&s->r, &s->cap, s->n + 1, sizeof(crange)))
        return hfdcp__km_nomem(p);
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

bool hfdcp__km_is_nonbmp_upper(uint32_t c)
{
    for (size_t i = 0; i < sizeof NONBMP_UPPER / sizeof NONBMP_UPPER[0]; i++)
        if (c >= NONBMP_UPPER[i].lo && c <= NONBMP_UPPER[i].hi)
            return true;
    return false;
}

/* A category in ASCII mode: an explicit ASCII table or its complement. */
static int add_ascii_category(parser *p, rangeset *rs, uint32_t cat)
{
    bool neg = cat == CAT_NOT_DIGIT || cat == CAT_NOT_SPACE ||
               cat == CAT_NOT_WORD;

    if (cat == CAT_DIGIT || cat == CAT_NOT_DIGIT)
        return rs_add_table(p, rs, ASCII_DIGIT, 1, neg);
    if (cat == CAT_SPACE || cat == CAT_NOT_SPACE)
        return rs_add_table(p, rs, ASCII_SPACE, 2, neg);
    return rs_add_table(p, rs, ASCII_WORD, 4, neg);
}

/* The items: literals and ranges as ranges; categories as ranges, except
 * Unicode \d \w and their negations, which stay PCRE2's (natives). */
static int add_items(parser *p, bool ascii, const setitem *items, size_t n,
                     set_ranges *s)
{
    int rc = 0;

    for (size_t i = 0; i < n && rc == 0; i++) {
        const setitem *it = &items[i];
        if (it->kind == SI_LITERAL) {
            rc = rs_add(p, &s->rs, it->lo, it->lo);
        } else if (it->kind == SI_RANGE) {
            rc = rs_add(p, &s->rs, it->lo, it->hi);
        } else if (ascii) {
            rc = add_ascii_category(p, &s->rs, it->lo);
        } else if (it->lo == CAT_SPACE || it->lo == CAT_NOT_SPACE) {
            rc = rs_add_table(p, &s->rs, PY_SPACE,
                              sizeof PY_SPACE / sizeof PY_SPACE[0],
                              it->lo == CAT_NOT_SPACE);
        } else {
            static const char *const esc[] = {"\\d", "\\D", NULL, NULL,
                                              "\\w", "\\W"};
            bool seen = false;
            for (size_t k = 0; k < s->n_natives; k++)
                seen = seen || s->natives[k] == esc[it->lo];
            if (!seen)
                s->natives[s->n_natives++] = esc[it->lo];
        }
    }
    return rc;
}

/* IGNORECASE in ASCII mode: the other case of every ASCII letter (what
 * re's IN_IGNORE does). */
static int add_ascii_cases(parser *p, rangeset *rs)
{
    size_t n0 = rs->n;
    int rc = 0;

    for (size_t i = 0; i < n0 && rc == 0; i++) {
        uint32_t lo = rs->r[i].lo, hi = rs->r[i].hi;
        uint32_t a = lo > 'A' ? lo : 'A', b = hi < 'Z' ? hi : 'Z';
        if (a <= b)
            rc = rs_add(p, rs, a + 32, b + 32);
        a = lo > 'a' ? lo : 'a', b = hi < 'z' ? hi : 'z';
        if (rc == 0 && a <= b)
            rc = rs_add(p, rs, a - 32, b - 32);
    }
    return rc;
}

/* IGNORECASE in Unicode mode: PCRE2's caseless matching does the rest,
 * plus the whole of each ICASE_EXTRA class the set touches. */
static int add_icase_extra(parser *p, rangeset *rs)
{
    int rc = 0;

    for (size_t k = 0; k < sizeof ICASE_EXTRA / sizeof ICASE_EXTRA[0]; k++) {
        bool hit = false;
        size_t n0 = rs->n;
        for (size_t m = 0; m < 4 && ICASE_EXTRA[k][m]; m++)
            for (size_t i = 0; i < n0; i++)
                hit = hit || (ICASE_EXTRA[k][m] >= rs->r[i].lo &&
                              ICASE_EXTRA[k][m] <= rs->r[i].hi);
        for (size_t m = 0; hit && m < 4 && ICASE_EXTRA[k][m] && rc == 0;
             m++)
            rc = rs_add(p, rs, ICASE_EXTRA[k][m], ICASE_EXTRA[k][m]);
    }
    return rc;
}

/* Surrogates never occur in UTF-8 keys and PCRE2 refuses them: cut out
 * (an empty set is left empty).  Leaves the set normalized. */
static int cut_surrogates(parser *p, rangeset *rs)
{
    size_t o = 0;
    int rc = 0;

    rs_normalize(rs);
    for (size_t i = 0; i < rs->n && rc == 0; i++) {
        crange *r = &rs->r[i];
        if (r->hi < 0xD800 || r->lo > 0xDFFF)
            continue;
        if (r->lo < 0xD800 && r->hi > 0xDFFF) {
            uint32_t hi = r->hi;
            r->hi = 0xD7FF;
            rc = rs_add(p, rs, 0xE000, hi);
        } else if (r->lo < 0xD800) {
            r->hi = 0xD7FF;
        } else if (r->hi > 0xDFFF) {
            r->lo = 0xE000;
        } else {
            r->lo = 1, r->hi = 0; /* empty: dropped below */
        }
    }
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < rs->n; i++)
        if (rs->r[i].lo <= rs->r[i].hi)
            rs->r[o++] = rs->r[i];
    rs->n = o;
    rs_normalize(rs);
    return 0;
}

/*
 * What Python's IN (or LITERAL / NOT_LITERAL) op over `items` matches
 * under `flags`, negation aside:
 *   - ASCII mode: categories become explicit ASCII ranges; IGNORECASE adds
 *     the other case of every ASCII letter (what re's IN_IGNORE does).
 *   - Unicode mode: \d \w and their negations are PCRE2's (identical sets,
 *     insensitive to caseless matching); \s and \S are Python's list;
 *     IGNORECASE is PCRE2's caseless matching over the literal part,
 *     plus the ICASE_EXTRA classes Python folds together.
 * Surrogates are dropped.
 */
int hfdcp__km_set_ranges(parser *p, uint32_t flags, const setitem *items,
                         size_t n, set_ranges *out)
{
    bool ascii = (flags & F_ASCII) != 0;
    bool icase = (flags & F_IGNORECASE) != 0;
    int rc;

    out->rs.r = NULL;
    out->rs.n = out->rs.cap = 0;
    out->n_natives = 0;
    rc = add_items(p, ascii, items, n, out);
    if (rc == 0 && icase && ascii)
        rc = add_ascii_cases(p, &out->rs);
    else if (rc == 0 && icase)
        rc = add_icase_extra(p, &out->rs);
    if (rc != 0)
        return rc;
    return cut_surrogates(p, &out->rs);
}
