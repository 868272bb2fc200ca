/*
 * translator.c - a Python `re` pattern -> an equivalent PCRE2 pattern: a
 * port of Python 3.11's re._parser (groups, classes, repeats, flags,
 * escapes, look-arounds, conditionals, widths), with Python's checks and
 * messages, emitting everything spelled out (see keymap_internal.h); the
 * nesting limit.  What cannot be translated faithfully is refused.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keymap_internal.h"

/* Python's re constant (_sre): repeat counts stay below it. */
#define MAXREPEAT UINT64_C(4294967295)
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
 * level at -O2 (up to 0.85 KiB at -O0, 1.6 KiB under AddressSanitizer):
 * 95 KiB in all at 100 levels (100 KiB at -O0, 180 KiB under ASan), within
 * even musl's 128 KiB default thread stack, where 200 levels would take
 * 155-180 KiB (345 KiB under ASan).  Key renaming patterns nest a few
 * levels: 100 refuses nothing real.  Nothing else recurses: character
 * sets and replacement templates are read in loops. */
#define MAX_NESTING 100
/* The recursion (parse_sub, parse_seq, parse_group, parse_lookaround,
 * parse_conditional) is merged by the compiler into one frame per level.
 * The helpers it calls for one item are kept out of that frame, so that
 * their locals do not cost stack at every level (most under ASan). */
#define NOINLINE __attribute__((noinline))

/* ---- the output: the PCRE2 pattern, and where each byte came from ---- */

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

/* ---- the group table: numbers, names, widths ---- */

const group_name *hfdcp__km_find_name(const parser *p, const char *name,
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

/* Python's source.checkgroupname(name, offset); non-ASCII names (valid
 * Python identifiers or not) are refused: PCRE2 aside, checking Unicode
 * identifiers would need Python's tables. */
static int check_group_name(parser *p, const char *name, size_t n,
                            size_t nchars, size_t offset)
{
    char r[96];

    hfdcp__km_name_repr(r, sizeof r, name, n);
    if (hfdcp__km_has_non_ascii(name, n))
        return PERR(p, nchars + offset,
                    "non-ASCII group name %s is not supported", r);
    if (!hfdcp__km_is_ascii_identifier(name, n))
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
        return hfdcp__km_nomem(p);
    {
        size_t cap = p->gcap; /* gclosed follows gwidth's capacity */
        bool *nc = realloc(p->gclosed, cap * sizeof(bool));
        if (nc == NULL)
            return hfdcp__km_nomem(p);
        p->gclosed = nc;
    }
    p->ngroups = g;
    p->gclosed[g] = false;
    p->gwidth[g].lo = p->gwidth[g].hi = 0;
    if (name != NULL) {
        const group_name *old = hfdcp__km_find_name(p, name, n);
        char r[96];
        if (old != NULL) {
            hfdcp__km_name_repr(r, sizeof r, name, n);
            return PERR(p, nchars + 1,
                        "redefinition of group name %s as group %zu; was "
                        "group %zu",
                        r, g, old->gid);
        }
        if (!grow_array((void **)&p->names, &p->cap_names, p->n_names + 1,
                        sizeof(group_name)))
            return hfdcp__km_nomem(p);
        if ((p->names[p->n_names].name = hfdcp__strndup(name, n)) == NULL)
            return hfdcp__km_nomem(p);
        p->names[p->n_names++].gid = g;
    }
    *gid = g;
    return 0;
}

/* ---- character sets, spelled in PCRE2 (what they match: charset.c) ---- */

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
 * (or LITERAL / NOT_LITERAL) op over `items` under `flags` (what it
 * matches: hfdcp__km_set_ranges).  Unicode IGNORECASE is PCRE2's caseless
 * matching, scoped to the atom.  An empty set matches nothing (negated:
 * any character).
 */
static int emit_set(parser *p, uint32_t flags, bool negate,
                    const setitem *items, size_t n)
{
    set_ranges s;
    const rangeset *rs = &s.rs;
    bool ascii = (flags & F_ASCII) != 0;
    bool icase = (flags & F_IGNORECASE) != 0;
    int rc = hfdcp__km_set_ranges(p, flags, items, n, &s);

    if (rc != 0)
        goto done;
    if (rs->n == 0 && s.n_natives == 0) {
        emit(p, negate ? "(?s:.)" : "(?:(?!))");
        goto done;
    }
    if (!negate && s.n_natives == 0 && rs->n == 1 &&
        rs->r[0].lo == rs->r[0].hi && !(icase && !ascii)) {
        emit_cp(p, rs->r[0].lo);
        goto done;
    }
    emit(p, icase && !ascii ? "(?i:[" : "[");
    if (negate)
        emit(p, "^");
    for (size_t i = 0; i < rs->n; i++) {
        emit_cp(p, rs->r[i].lo);
        if (rs->r[i].hi != rs->r[i].lo) {
            emit(p, "-");
            emit_cp(p, rs->r[i].hi);
        }
    }
    for (size_t k = 0; k < s.n_natives; k++)
        emit(p, s.natives[k]);
    emit(p, icase && !ascii ? "])" : "]");
done:
    free(s.rs.r);
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

static const char HEXDIGITS[] = "0123456789abcdefABCDEF";

/* The one-character escapes: ESCAPES, and (outside sets first)
 * CATEGORIES.  false if `c` is none of them. */
static bool escape_table(uint32_t c, bool in_class, escitem *out)
{
    static const char ats[] = "AZbB";
    static const uint32_t at_codes[] = {AT_BEGIN_STRING, AT_END_STRING,
                                        AT_BOUNDARY, AT_NON_BOUNDARY};
    static const char cats[] = "dDsSwW";
    static const uint32_t cat_codes[] = {CAT_DIGIT, CAT_NOT_DIGIT,
                                         CAT_SPACE, CAT_NOT_SPACE,
                                         CAT_WORD, CAT_NOT_WORD};
    static const char lits[] = "abfnrtv\\";
    static const uint32_t lit_codes[] = {7, 8, 12, 10, 13, 9, 11, '\\'};

    if (!in_class)
        for (size_t i = 0; i < 4; i++)
            if (c == (uint32_t)ats[i]) {
                out->kind = E_AT, out->v = at_codes[i];
                return true;
            }
    for (size_t i = 0; i < 6; i++)
        if (c == (uint32_t)cats[i]) {
            out->kind = E_CATEGORY, out->v = cat_codes[i];
            return true;
        }
    for (size_t i = 0; i < 8; i++)
        if (c == (uint32_t)lits[i]) {
            out->kind = E_LITERAL, out->v = lit_codes[i];
            return true;
        }
    return false;
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

/* \xhh, \uhhhh, \Uhhhhhhhh. */
static int escape_hex(parser *p, uint32_t c, escitem *out)
{
    char digits[12] = {0};
    size_t want = c == 'x' ? 2 : c == 'u' ? 4 : 8;
    size_t got = hfdcp__km_get_while(&p->t, want, HEXDIGITS, digits);
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

/* \0, and in a set \1 to \7: up to two more octal digits. */
static int escape_octal(parser *p, uint32_t c, escitem *out)
{
    char digits[12] = {0};
    size_t got = hfdcp__km_get_while(&p->t, 2, OCTDIGITS, digits);
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

/* \1 to \9 outside a set: an octal escape *or* a decimal group reference
 * (sigh, says re). */
static int escape_number(parser *p, uint32_t c, escitem *out)
{
    char digits[12] = {0};
    size_t len, gid;

    digits[0] = (char)c, digits[1] = '\0';
    if (hfdcp__km_tk_is_in(&p->t, DIGITS)) {
        digits[1] = (char)hfdcp__km_tk_get(&p->t).c, digits[2] = '\0';
        if (digits[0] <= '7' && digits[1] <= '7' &&
            hfdcp__km_tk_is_in(&p->t, OCTDIGITS)) {
            uint32_t v;
            digits[2] = (char)hfdcp__km_tk_get(&p->t).c, digits[3] = '\0';
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
    len = strlen(digits);
    gid = (size_t)hfdcp__km_digits_value(digits, len);
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

/* The escape `tok` (re's _escape, or _class_escape when in_class); reads
 * the digits that follow it. */
static int parse_escape(parser *p, const token *tok, bool in_class,
                        escitem *out)
{
    uint32_t c = tok->c;

    if (escape_table(c, in_class, out))
        return 0;
    out->kind = E_LITERAL;
    if (c == 'x' || c == 'u' || c == 'U')
        return escape_hex(p, c, out);
    if (c == 'N')
        return PERR(p, 2, "named character escapes \\N{...} are not "
                          "supported");
    if (c == '0' || (in_class && c >= '1' && c <= '7'))
        return escape_octal(p, c, out);
    if (c >= '1' && c <= '9') {
        if (in_class)
            return PERR(p, 2, "bad escape \\%c", (char)c);
        return escape_number(p, c, out);
    }
    if (hfdcp__km_is_ascii_letter(c))
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

/* ---- inline flags ---- */

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
    return hfdcp__km_is_in(k, FLAG_CHARS);
}

/* The message for `ch` where a flag or `expected` should be. */
static const char *bad_flag(const token *ch, const char *expected)
{
    return !ch->esc && hfdcp__km_is_ascii_letter(ch->c) ? "unknown flag"
                                                        : expected;
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
    if (!hfdcp__km_is_in(&ch, "-")) {
        for (;;) {
            uint32_t f = flag_value(ch.c);
            if (ch.c == 'L')
                return PERR(p, 0, "bad inline flags: cannot use 'L' flag "
                                  "with a str pattern");
            *add |= f;
            if ((f & F_TYPE) && (*add & F_TYPE) != f)
                return PERR(p, 0, "bad inline flags: flags 'a', 'u' and 'L' "
                                  "are incompatible");
            ch = hfdcp__km_tk_get(&p->t);
            if (ch.end)
                return PERR(p, 0, "missing -, : or )");
            if (hfdcp__km_is_in(&ch, ")-:"))
                break;
            if (!is_flag_token(&ch))
                return PERR(p, ch.after_ci - ch.at_ci, "%s",
                            bad_flag(&ch, "missing -, : or )"));
        }
    }
    if (hfdcp__km_is_in(&ch, ")")) {
        if (*add & F_TEMPLATE)
            return PERR(p, 0, "the template flag 't' is not supported");
        p->flags |= *add;
        *global = true;
        return 0;
    }
    if (*add & F_TEMPLATE)
        return PERR(p, 1, "bad inline flags: cannot turn on global flag");
    if (hfdcp__km_is_in(&ch, "-")) {
        ch = hfdcp__km_tk_get(&p->t);
        if (ch.end)
            return PERR(p, 0, "missing flag");
        if (!is_flag_token(&ch))
            return PERR(p, ch.after_ci - ch.at_ci,
                        "%s", bad_flag(&ch, "missing flag"));
        for (;;) {
            uint32_t f = flag_value(ch.c);
            if (f & F_TYPE)
                return PERR(p, 0, "bad inline flags: cannot turn off flags "
                                  "'a', 'u' and 'L'");
            *del |= f;
            ch = hfdcp__km_tk_get(&p->t);
            if (ch.end)
                return PERR(p, 0, "missing :");
            if (hfdcp__km_is_in(&ch, ":"))
                break;
            if (!is_flag_token(&ch))
                return PERR(p, ch.after_ci - ch.at_ci,
                            "%s", bad_flag(&ch, "missing :"));
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

/* ---- repeats ---- */

/* The digits of a count, in buf (size bytes, NUL-terminated); too many
 * saturate to a number far too large.  Returns how many were kept. */
static size_t get_count(tokz *t, char *buf, size_t size)
{
    size_t n = 0;

    while (hfdcp__km_tk_is_in(t, DIGITS)) {
        char d = (char)hfdcp__km_tk_get(t).c;
        if (n < size - 1)
            buf[n++] = d;
        else
            buf[size - 2] = '9'; /* saturate: far too large */
    }
    buf[n] = '\0';
    return n;
}

/* "{m,n}" after "{" (whose end is at `here`): *literal_brace when it is
 * no count, which leaves the tokenizer where it was. */
static int parse_brace(parser *p, size_t here, uint64_t *min, uint64_t *max,
                       bool *literal_brace)
{
    size_t here_byte = p->t.cur.at;
    char lo[32], hi[32];
    size_t nlo, nhi;

    if (hfdcp__km_tk_is(&p->t, '}')) {
        *literal_brace = true;
        return 0;
    }
    *min = 0, *max = MAXREPEAT;
    nlo = get_count(&p->t, lo, sizeof lo);
    if (hfdcp__km_tk_match(&p->t, ',')) {
        nhi = get_count(&p->t, hi, sizeof hi);
    } else {
        memcpy(hi, lo, nlo + 1);
        nhi = nlo;
    }
    if (!hfdcp__km_tk_match(&p->t, '}')) {
        *literal_brace = true;
        hfdcp__km_tk_seek(&p->t, here_byte, here);
        return 0;
    }
    if (nlo) {
        *min = hfdcp__km_digits_value(lo, nlo);
        if (*min >= MAXREPEAT)
            return PERR(p, 0, "the repetition number is too large");
    }
    if (nhi) {
        *max = hfdcp__km_digits_value(hi, nhi);
        if (*max >= MAXREPEAT)
            return PERR(p, 0, "the repetition number is too large");
        if (*max < *min)
            return PERR(p, hfdcp__km_tk_tell(&p->t) - here,
                        "min repeat greater than max repeat");
    }
    return 0;
}

/* The PCRE2 quantifier, then a lazy "?" or possessive "+" if any. */
static void emit_quantifier(parser *p, uint64_t min, uint64_t max)
{
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
    if (hfdcp__km_tk_match(&p->t, '?'))
        emit(p, "?");
    else if (hfdcp__km_tk_match(&p->t, '+'))
        emit(p, "+");
}

/* A repeat `this_tok` ("?", "*", "+" or "{") of the last item, whose kind
 * and width it updates; *literal_brace: a "{" that is no repeat. */
static NOINLINE int parse_repeat(parser *p, const token *this_tok,
                                 int *last_kind, width *lastw,
                                 bool last_captures, bool *literal_brace)
{
    size_t here = hfdcp__km_tk_tell(&p->t), span;
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
        if (parse_brace(p, here, &min, &max, literal_brace) < 0)
            return -1;
        if (*literal_brace)
            return 0;
    }
    span = hfdcp__km_tk_tell(&p->t) - here + this_len;
    if (*last_kind == IT_NONE || *last_kind == IT_AT)
        return PERR(p, span, "nothing to repeat");
    if (*last_kind == IT_REPEAT)
        return PERR(p, span, "multiple repeat");
    /* Empty iterations: re stops after an optional iteration that matched
     * empty but always tries one optional iteration after the forced ones
     * (even empty); PCRE2 stops after any empty iteration of *, + and
     * {n,}, and unrolls {m,n} into copies that go on.  Where they part,
     * the spans agree but captures can differ, so a body that can match
     * empty and captures is only accepted under ?, * and exact counts. */
    if (lastw->lo == 0 && last_captures && max > min && max >= 2 &&
        !(min == 0 && max == MAXREPEAT))
        return PERR(p, span,
                    "repeating a group that captures and can match empty "
                    "is only supported with ?, * or an exact count (re and "
                    "PCRE2 capture differently on empty iterations)");
    if (min > PCRE2_MAX_REPEAT || (max != MAXREPEAT && max > PCRE2_MAX_REPEAT))
        return PERR(p, span,
                    "repetition counts above %u are not supported (PCRE2 "
                    "limit)",
                    PCRE2_MAX_REPEAT);
    emit_quantifier(p, min, max);
    lastw->lo = sat_mul(lastw->lo, min);
    lastw->hi = sat_mul(lastw->hi, max);
    *last_kind = IT_REPEAT;
    return 0;
}

/* ---- character sets: "[...]" ---- */

/* The items of a set being read. */
typedef struct {
    setitem *v;
    size_t n, cap;
} setitems;

static int push_item(parser *p, setitems *s, setitem it)
{
    if (!grow_array((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v))
        return hfdcp__km_nomem(p);
    s->v[s->n++] = it;
    return 0;
}

/* A set item from the token `k`: an escape (re's _class_escape) or a
 * literal. */
static int class_code(parser *p, const token *k, setitem *code)
{
    if (k->esc) {
        escitem e;
        if (parse_escape(p, k, true, &e) < 0)
            return -1;
        code->kind = e.kind == E_CATEGORY ? SI_CATEGORY : SI_LITERAL;
        code->lo = code->hi = e.v;
    } else {
        code->kind = SI_LITERAL;
        code->lo = code->hi = k->c;
    }
    return 0;
}

/* "a-b": makes *code1 (read from this_tok) the range up to `that`. */
static int class_range(parser *p, uint32_t flags, const token *this_tok,
                       const token *that, setitem *code1)
{
    setitem code2;

    if (class_code(p, that, &code2) < 0)
        return -1;
    if (code1->kind != SI_LITERAL || code2.kind != SI_LITERAL ||
        code2.lo < code1->lo) {
        char a[16], b[16];
        token_text(p, this_tok, a, sizeof a);
        token_text(p, that, b, sizeof b);
        return PERR(p,
                    (this_tok->after_ci - this_tok->at_ci) + 1 +
                        (that->after_ci - that->at_ci),
                    "bad character range %s-%s", a, b);
    }
    if ((flags & F_IGNORECASE) && (flags & F_ASCII) && code2.lo > 0xFFFF)
        /* re then checks the Unicode upper case of the ASCII-lowered
         * character against the range: not ASCII-only. */
        return PERR(p, 0, "a range beyond U+FFFF in a case-insensitive "
                          "ASCII-mode set is not supported");
    code1->kind = SI_RANGE;
    code1->hi = code2.lo;
    return 0;
}

/* The items of a set, up to its "]" (consumed); the "[" is at `here`. */
static int class_items(parser *p, uint32_t flags, size_t here,
                       setitems *s)
{
    for (;;) {
        token this_tok = hfdcp__km_tk_get(&p->t), that;
        setitem code1;
        if (this_tok.end)
            return PERR(p, hfdcp__km_tk_tell(&p->t) - here,
                        "unterminated character set");
        if (!this_tok.esc && this_tok.c == ']' && s->n > 0)
            return 0;
        if (class_code(p, &this_tok, &code1) < 0)
            return -1;
        if (hfdcp__km_tk_match(&p->t, '-')) {
            that = hfdcp__km_tk_get(&p->t);
            if (that.end)
                return PERR(p, hfdcp__km_tk_tell(&p->t) - here,
                            "unterminated character set");
            if (!that.esc && that.c == ']') {
                setitem dash = {SI_LITERAL, '-', '-'};
                if (push_item(p, s, code1) < 0)
                    return -1;
                return push_item(p, s, dash);
            }
            if (class_range(p, flags, &this_tok, &that, &code1) < 0)
                return -1;
        }
        if (push_item(p, s, code1) < 0)
            return -1;
    }
}

/* re's _uniq: drops repeated items, keeping the first. */
static size_t class_uniq(setitem *items, size_t n)
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
    return u;
}

/* A character set "[...]": re._parser._parse's "[" branch.  Emits the set
 * and tells whether Python reduces it to one literal (*single). */
static int parse_class(parser *p, uint32_t flags, bool *single,
                       uint32_t *single_cp, bool *negated)
{
    size_t here = hfdcp__km_tk_tell(&p->t) - 1;
    setitems s = {NULL, 0, 0};
    bool negate = hfdcp__km_tk_match(&p->t, '^');
    int rc = -1;

    if (class_items(p, flags, here, &s) < 0)
        goto done;
    s.n = class_uniq(s.v, s.n);
    for (size_t i = 0; i < s.n; i++)
        if (s.v[i].kind == SI_CATEGORY && check_type_prefix(p, flags) < 0)
            goto done;
    *single = s.n == 1 && s.v[0].kind == SI_LITERAL;
    *single_cp = s.v[0].lo;
    *negated = negate;
    if (!*single && unicode_icase(flags)) {
        for (size_t i = 0; i < s.n; i++)
            if (s.v[i].kind == SI_LITERAL &&
                hfdcp__km_is_nonbmp_upper(s.v[i].lo)) {
                PERR(p, hfdcp__km_tk_tell(&p->t) - here,
                     "upper-case characters beyond U+FFFF in a "
                     "case-insensitive character set are not supported "
                     "(Python's re never matches them)");
                goto done;
            }
    }
    if (emit_set(p, flags, negate, s.v, s.n) < 0)
        goto done;
    rc = 0;
done:
    free(s.v);
    return rc;
}

/* ---- anchors, group references, groups ---- */

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

    if (hfdcp__km_get_until(p, ')', "group name", &name, &n, &nc) < 0 ||
        check_group_name(p, name, n, nc, 1) < 0)
        return -1;
    g = hfdcp__km_find_name(p, name, n);
    hfdcp__km_name_repr(r, sizeof r, name, n);
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
        return hfdcp__km_error(p, HFDCP_ERR_ARG, start,
                               "groups nested more than %d deep are not "
                               "supported (hfdcp's nesting limit; Python's "
                               "re fails with RecursionError from about "
                               "495)",
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
        ch = hfdcp__km_tk_get(&p->t);
        if (ch.end)
            return PERR(p, 0, "unexpected end of pattern");
        if (!hfdcp__km_is_in(&ch, "=!")) {
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
    if (!hfdcp__km_tk_match(&p->t, ')'))
        return PERR(p, hfdcp__km_tk_tell(&p->t) - start,
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

/* The condition of "(?(id/name)...", after "(?(": a group number, which
 * may name a group defined later (checked at the end), or a name. */
static NOINLINE int parse_cond_ref(parser *p, size_t *cond)
{
    const char *cn;
    size_t cn_n, cn_ci;
    uint64_t v;
    char r[96];

    if (hfdcp__km_get_until(p, ')', "group name", &cn, &cn_n, &cn_ci) < 0)
        return -1;
    hfdcp__km_name_repr(r, sizeof r, cn, cn_n);
    if (hfdcp__km_is_ascii_identifier(cn, cn_n) ||
        hfdcp__km_has_non_ascii(cn, cn_n)) {
        const group_name *g;
        if (check_group_name(p, cn, cn_n, cn_ci, 1) < 0)
            return -1;
        if ((g = hfdcp__km_find_name(p, cn, cn_n)) == NULL)
            return PERR(p, cn_ci + 1, "unknown group name %s", r);
        *cond = g->gid;
        return 0;
    }
    /* Python 3.11 also takes what int() takes ("+1", " 1", "1_0"), with a
     * DeprecationWarning. */
    if (!hfdcp__km_all_ascii_digits(cn, cn_n))
        return PERR(p, cn_ci + 1, "bad character in group name %s", r);
    v = hfdcp__km_digits_value(cn, cn_n);
    if (v == 0)
        return PERR(p, cn_ci + 1, "bad group number");
    if (v >= MAXGROUPS)
        return PERR(p, cn_ci + 1, "invalid group reference %.*s",
                    (int)cn_n, cn);
    *cond = (size_t)v;
    if (!grow_array((void **)&p->condrefs, &p->cap_condrefs,
                    p->n_condrefs + 1, sizeof(cond_ref)))
        return hfdcp__km_nomem(p);
    p->condrefs[p->n_condrefs].gid = *cond;
    p->condrefs[p->n_condrefs++].pos = hfdcp__km_tk_tell(&p->t) - cn_ci - 1;
    return 0;
}

/* "(?(id/name)yes|no)", after "(?(". */
static int parse_conditional(parser *p, size_t start, bool verbose,
                             int nested, uint32_t flags, width *w)
{
    size_t cond = 0;
    width wy = {0, 0}, wn = {0, 0};
    bool ry, rn, has_no = false;

    if (parse_cond_ref(p, &cond) < 0 || check_lookbehind_group(p, cond) < 0)
        return -1;
    emitf(p, "(?(%zu)", cond);
    if (nest_enter(p, start) < 0 ||
        parse_seq(p, verbose, nested + 1, false, flags, &wy, &ry) < 0)
        return -1;
    if (hfdcp__km_tk_match(&p->t, '|')) {
        emit(p, "|");
        has_no = true;
        if (parse_seq(p, verbose, nested + 1, false, flags, &wn, &rn) < 0)
            return -1;
        if (hfdcp__km_tk_is(&p->t, '|'))
            return PERR(p, 0,
                        "conditional backref with more than two branches");
    }
    p->depth--;
    if (!hfdcp__km_tk_match(&p->t, ')'))
        return PERR(p, hfdcp__km_tk_tell(&p->t) - start,
                    "missing ), unterminated subpattern");
    emit(p, ")");
    w->lo = has_no ? (wy.lo < wn.lo ? wy.lo : wn.lo) : 0;
    w->hi = has_no && wn.hi > wy.hi ? wn.hi : wy.hi;
    return 0;
}

/* What a "(" opens. */
typedef struct {
    bool capture, atomic, has_flags;
    const char *name; /* "(?P<name>": borrowed from p->src */
    size_t name_n, name_ci;
    uint32_t add, del; /* "(?flags-flags:" */
} group_head;

/* "(?P" then "<name>" (the name goes to *g) or "=name)" (a reference,
 * parsed: returns 1). */
static int parse_p_extension(parser *p, uint32_t flags, width *w,
                             group_head *g)
{
    token ch;
    char txt[16];

    if (hfdcp__km_tk_match(&p->t, '=')) {
        return parse_named_ref(p, flags, w) < 0 ? -1 : 1;
    } else if (!hfdcp__km_tk_match(&p->t, '<')) {
        ch = hfdcp__km_tk_get(&p->t);
        if (ch.end)
            return PERR(p, 0, "unexpected end of pattern");
        token_text(p, &ch, txt, sizeof txt);
        return PERR(p, (ch.after_ci - ch.at_ci) + 2,
                    "unknown extension ?P%s", txt);
    }
    if (hfdcp__km_get_until(p, '>', "group name", &g->name, &g->name_n,
                            &g->name_ci) < 0 ||
        check_group_name(p, g->name, g->name_n, g->name_ci, 1) < 0)
        return -1;
    return 0;
}

/* "(?#...)": skipped, up to its ")". */
static int skip_comment(parser *p, size_t start)
{
    for (;;) {
        token ch;
        if (p->t.cur.end)
            return PERR(p, hfdcp__km_tk_tell(&p->t) - start,
                        "missing ), unterminated comment");
        ch = hfdcp__km_tk_get(&p->t);
        if (hfdcp__km_is_in(&ch, ")"))
            return 0;
    }
}

/* "(?flags)" (global: updates *verbose and *flags; returns 1) or
 * "(?flags-flags:" (the flags go to *g).  at_start: nothing before it
 * in the pattern. */
static NOINLINE int parse_flag_group(parser *p, const token *ch,
                                     size_t start, bool at_start,
                                     bool *verbose, uint32_t *flags,
                                     group_head *g)
{
    bool global;

    if (parse_flags(p, *ch, &global, &g->add, &g->del) < 0)
        return -1;
    if (global) {
        if (!at_start)
            return PERR(p, hfdcp__km_tk_tell(&p->t) - start,
                        "global flags not at the start of the "
                        "expression");
        *verbose = (p->flags & F_VERBOSE) != 0;
        *flags = p->flags;
        return 1;
    }
    g->capture = false;
    g->has_flags = true;
    return 0;
}

/* After "(?" and `ch`, the extensions other than look-arounds,
 * conditionals and flags: describes the group in *g (returns 0), or
 * parses a whole item (returns 1; *kind IT_NONE: a comment). */
static NOINLINE int parse_extension(parser *p, const token *ch,
                                    size_t start, uint32_t flags, int *kind,
                                    width *w, group_head *g)
{
    char txt[16];

    if (hfdcp__km_is_in(ch, "P"))
        return parse_p_extension(p, flags, w, g);
    if (hfdcp__km_is_in(ch, ":")) {
        g->capture = false;
        return 0;
    }
    if (hfdcp__km_is_in(ch, "#")) {
        if (skip_comment(p, start) < 0)
            return -1;
        *kind = IT_NONE;
        return 1;
    }
    if (hfdcp__km_is_in(ch, ">")) {
        g->capture = false;
        g->atomic = true;
        return 0;
    }
    token_text(p, ch, txt, sizeof txt);
    return PERR(p, (ch->after_ci - ch->at_ci) + 1, "unknown extension ?%s",
                txt);
}

/* The "(" branch of re._parser._parse.  *kind, *w and *risky describe the
 * item appended (kind IT_NONE: nothing appended: a comment, or global
 * flags, which update *verbose and *flags). */
static int parse_group(parser *p, bool *verbose, int nested, bool first,
                       size_t n_items, uint32_t *flags, int *kind, width *w,
                       bool *risky)
{
    size_t start = hfdcp__km_tk_tell(&p->t) - 1, gid = 0;
    group_head g = {true, false, false, NULL, 0, 0, 0, 0};
    bool inner_risky;

    *kind = IT_OTHER;
    w->lo = w->hi = 0;
    *risky = false;
    if (hfdcp__km_tk_match(&p->t, '?')) {
        token ch = hfdcp__km_tk_get(&p->t);
        int rc;
        if (ch.end)
            return PERR(p, 0, "unexpected end of pattern");
        if (hfdcp__km_is_in(&ch, "=!<"))
            return parse_lookaround(p, ch, start, *verbose, nested, *flags);
        if (hfdcp__km_is_in(&ch, "("))
            return parse_conditional(p, start, *verbose, nested, *flags, w);
        if (is_flag_token(&ch) || hfdcp__km_is_in(&ch, "-")) {
            rc = parse_flag_group(p, &ch, start, first && n_items == 0,
                                  verbose, flags, &g);
            if (rc > 0)
                *kind = IT_NONE;
        } else {
            rc = parse_extension(p, &ch, start, *flags, kind, w, &g);
        }
        if (rc != 0)
            return rc < 0 ? -1 : 0;
    }
    if (g.capture && open_group(p, g.name, g.name_n, g.name_ci, &gid) < 0)
        return -1;
    emit(p, g.capture ? "(" : g.atomic ? "(?>" : "(?:");
    if (nest_enter(p, start) < 0 ||
        parse_sub(p,
                  (*verbose || (g.add & F_VERBOSE)) && !(g.del & F_VERBOSE),
                  nested + 1, combine_flags(*flags, g.add, g.del), w,
                  &inner_risky) < 0)
        return -1;
    p->depth--;
    if (!hfdcp__km_tk_match(&p->t, ')'))
        return PERR(p, hfdcp__km_tk_tell(&p->t) - start,
                    "missing ), unterminated subpattern");
    emit(p, ")");
    if (g.capture) {
        p->gwidth[gid] = *w;
        p->gclosed[gid] = true;
    }
    /* Python unpacks (?:...) into its parent: a lone literal inside counts
     * as the parent's (see parse_sub). */
    *risky = !g.capture && !g.atomic && !g.has_flags && inner_risky;
    return 0;
}

/* ---- sequences and alternatives ---- */

/* In verbose mode: true when this_tok is white space or starts a comment
 * (skipped to the end of its line): no item. */
static NOINLINE bool skip_verbose(parser *p, const token *this_tok)
{
    if (hfdcp__km_is_in(this_tok, WHITESPACE))
        return true;
    if (!hfdcp__km_is_in(this_tok, "#"))
        return false;
    for (;;) {
        token k = hfdcp__km_tk_get(&p->t);
        if (k.end || hfdcp__km_is_in(&k, "\n"))
            return true;
    }
}

/* An escape outside a set, as an item of parse_seq. */
static int escape_item(parser *p, const token *this_tok, uint32_t flags,
                       int *kind, width *nw, bool *risky)
{
    escitem e;

    if (parse_escape(p, this_tok, false, &e) < 0)
        return -1;
    if (e.kind == E_AT) {
        emit_at(p, flags, e.v);
        *kind = IT_AT;
        nw->lo = nw->hi = 0;
    } else if (e.kind == E_CATEGORY) {
        setitem it = {SI_CATEGORY, e.v, e.v};
        if (check_type_prefix(p, flags) < 0 ||
            emit_set(p, flags, false, &it, 1) < 0)
            return -1;
    } else if (e.kind == E_LITERAL) {
        if (emit_literal(p, flags, e.v, false) < 0)
            return -1;
        *risky = unicode_icase(flags) && hfdcp__km_is_nonbmp_upper(e.v);
    } else {
        if (flags & F_IGNORECASE)
            return PERR(p, this_tok->after_ci - this_tok->at_ci,
                        "case-insensitive group references are not "
                        "supported");
        emitf(p, "\\g{%" PRIu32 "}", e.v);
        *nw = p->gwidth[e.v];
    }
    return 0;
}

/* An item of parse_seq other than a repeat or a group: an escape, a
 * literal, a set, ".", "^" or "$". */
static NOINLINE int parse_atom(parser *p, const token *this_tok, uint32_t flags,
                               int *kind, width *nw, bool *risky)
{
    if (this_tok->esc)
        return escape_item(p, this_tok, flags, kind, nw, risky);
    if (!hfdcp__km_is_in(this_tok, SPECIAL_CHARS)) {
        if (emit_literal(p, flags, this_tok->c, false) < 0)
            return -1;
        *risky = unicode_icase(flags) &&
                 hfdcp__km_is_nonbmp_upper(this_tok->c);
    } else if (this_tok->c == '[') {
        bool single, negated;
        uint32_t cp;
        if (parse_class(p, flags, &single, &cp, &negated) < 0)
            return -1;
        *risky = single && !negated && unicode_icase(flags) &&
                 hfdcp__km_is_nonbmp_upper(cp);
    } else if (this_tok->c == '.') {
        emit(p, flags & F_DOTALL ? "(?s:.)" : "[^\\n]");
    } else if (this_tok->c == '^' || this_tok->c == '$') {
        emit_at(p, flags, this_tok->c == '^' ? AT_BEGIN : AT_END);
        *kind = IT_AT;
        nw->lo = nw->hi = 0;
    } else {
        return PERR(p, 0, "internal: unexpected character");
    }
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

        if (p->t.cur.end || hfdcp__km_tk_is(&p->t, '|') ||
            hfdcp__km_tk_is(&p->t, ')'))
            break;
        p->item_pos = hfdcp__km_tk_tell(&p->t);
        this_tok = hfdcp__km_tk_get(&p->t);
        if (verbose && skip_verbose(p, &this_tok))
            continue;
        if (hfdcp__km_is_in(&this_tok, REPEAT_CHARS)) {
            bool literal_brace;
            if (parse_repeat(p, &this_tok, &last_kind, &lastw, last_captures,
                             &literal_brace) < 0)
                return -1;
            if (!literal_brace)
                continue; /* the last item became a repeat */
            if (emit_literal(p, flags, '{', false) < 0)
                return -1;
        } else if (hfdcp__km_is_in(&this_tok, "(")) {
            if (parse_group(p, &verbose, nested, first, n_items, &flags,
                            &kind, &nw, &item_risky) < 0)
                return -1;
            if (kind == IT_NONE)
                continue; /* a comment or global flags: no item */
        } else if (parse_atom(p, &this_tok, flags, &kind, &nw,
                              &item_risky) < 0) {
            return -1;
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
    size_t start = hfdcp__km_tk_tell(&p->t), n = 0;
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
        p->item_pos = hfdcp__km_tk_tell(&p->t);
        if (!hfdcp__km_tk_match(&p->t, '|'))
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
        return hfdcp__km_error(p, HFDCP_ERR_ARG, start,
                               "a case-insensitive alternative made of an "
                               "upper-case character beyond U+FFFF is not "
                               "supported (Python's re never matches it)");
    *w = cap_width(acc);
    *risky = false;
    return 0;
}

/* ---- the whole pattern ---- */

void hfdcp__km_parser_init(parser *p)
{
    memset(p, 0, sizeof *p);
    hfdcp__buf_init(&p->out);
    hfdcp__buf_init(&p->omap);
    p->status = HFDCP_OK;
}

void hfdcp__km_parser_free(parser *p)
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
int hfdcp__km_translate(parser *p, const char *pattern)
{
    width w;
    bool risky;

    if (hfdcp__km_tk_start(p, pattern) < 0 ||
        parse_sub(p, false, 0, 0, &w, &risky) < 0)
        return -1;
    if ((p->flags & F_ASCII) && (p->flags & F_UNICODE))
        return hfdcp__km_error(p, HFDCP_ERR_ARG, (size_t)-1,
                               "ASCII and UNICODE flags are incompatible");
    if (!p->t.cur.end)
        return PERR(p, 0, "unbalanced parenthesis");
    for (size_t i = 0; i < p->n_condrefs; i++)
        if (p->condrefs[i].gid > p->ngroups)
            return hfdcp__km_error(p, HFDCP_ERR_ARG, p->condrefs[i].pos,
                                   "invalid group reference %zu",
                                   p->condrefs[i].gid);
    if (p->has_deferred)
        return hfdcp__km_error(p, HFDCP_ERR_ARG, (size_t)-1, "%s",
                               p->deferred);
    if (p->out.failed || p->omap.failed)
        return hfdcp__km_nomem(p);
    return 0;
}
