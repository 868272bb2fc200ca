/*
 * keymap_internal.h - what the files of the key map share.  Included only
 * by the .c files of src/keymap/: the rest of the library sees the key map
 * through hfdcp.h and the keymap section of hfdcp_internal.h.  Names of
 * the functions shared here start with hfdcp__km_.
 *
 * The key map: ordered regex renaming of tensor names, Python `re`
 * patterns and replacements, matched with PCRE2 (8-bit, UTF + UCP).
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
 * Refused although Python accepts them (each message says why): \N{...};
 * non-ASCII group names; group references under IGNORECASE (re compares
 * simple lower cases, PCRE2 case-folding sets); repeats other than ?, *
 * and exact counts of a capturing body that can match empty (re and PCRE2
 * iterate differently after an empty iteration); counts above 65535 and
 * look-behinds PCRE2 cannot compile; \0 in a replacement (a NUL in a C
 * string); and three places where re 3.11 itself goes wrong (see
 * NONBMP_UPPER and check_type_prefix).  Possessive repeats follow
 * Python >= 3.11.5 (CPython gh-100061 fixed how they backtracked).
 *
 * Files, bottom up (each may use the ones above it):
 *   tokenizer.c   reading the text: UTF-8, tokens and their positions,
 *                 Python's Tokenizer helpers, errors "at position N"
 *   charset.c     what a Python character set matches, as code point
 *                 ranges (Python's tables, case folding, surrogates)
 *   translator.c  a Python pattern -> a PCRE2 pattern (re._parser)
 *   template.c    a Python replacement -> literal and group pieces
 *   keymap.c      the public hfdcp_key_map_* API: rules, PCRE2 compile
 *                 and match (re.subn), packing
 */
#ifndef HFDCP_KEYMAP_INTERNAL_H
#define HFDCP_KEYMAP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "hfdcp_internal.h"

/* Python's re constant (re._constants): group numbers stay below it. */
#define MAXGROUPS UINT64_C(1073741823)

/* Python's re flags (re._constants). */
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

/* Character sets for hfdcp__km_tk_is_in() and hfdcp__km_get_while(). */
static const char OCTDIGITS[] = "01234567";
static const char DIGITS[] = "0123456789";

/* ------------------------------------------------------------------------
 * The parser's state (translator.c; template.c reuses it for the
 * replacement: its tokenizer, its groups and its message)
 * ---------------------------------------------------------------------- */

/* A token of Python's re._parser.Tokenizer (see tokenizer.c). */
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

/* Python's source.error(msg, offset): at tell() - offset. */
#define PERR(p, offset, ...)                                                 \
    hfdcp__km_error((p), HFDCP_ERR_ARG,                                      \
                    hfdcp__km_tk_tell(&(p)->t) - (size_t)(offset),           \
                    __VA_ARGS__)

/* Makes room for `need` elements of `elem` bytes in *arr (capacity *cap,
 * doubled from 8); false when out of memory (*arr is kept). */
static inline bool grow_array(void **arr, size_t *cap, size_t need,
                              size_t elem)
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

/* ------------------------------------------------------------------------
 * tokenizer.c: reading the text.  Positions in messages count code
 * points, as Python's do.
 * ---------------------------------------------------------------------- */

/* true if s is valid UTF-8; *nchars (may be NULL) gets its length in code
 * points, *bad (may be NULL) the byte offset of the first invalid
 * sequence. */
bool hfdcp__km_utf8_check(const char *s, size_t *nchars, size_t *bad);

/* Python's Tokenizer(text): p->t reads `text` (valid UTF-8, borrowed by
 * p->src and p->t), or -1 with "bad escape (end of pattern)" when it ends
 * with a lone backslash. */
int hfdcp__km_tk_start(parser *p, const char *text);
/* Python's seek(): back to a token seen before (byte and char offset). */
void hfdcp__km_tk_seek(tokz *t, size_t at, size_t ci);
/* Python's tell(): the position of the next token. */
size_t hfdcp__km_tk_tell(const tokz *t);
/* The next token is the plain (unescaped) character ch. */
bool hfdcp__km_tk_is(const tokz *t, uint32_t ch);
/* The next token is a plain ASCII character of `set`. */
bool hfdcp__km_tk_is_in(const tokz *t, const char *set);
/* Python's get(): the next token, consumed. */
token hfdcp__km_tk_get(tokz *t);
/* Python's match(ch): consumes the next token if it is plain ch. */
bool hfdcp__km_tk_match(tokz *t, uint32_t ch);
/* The token `k` is a plain ASCII character of `set`. */
bool hfdcp__km_is_in(const token *k, const char *set);

bool hfdcp__km_is_ascii_letter(uint32_t c);
/* The name rules of Python (str.isidentifier) restricted to ASCII;
 * non-ASCII names are refused separately. */
bool hfdcp__km_is_ascii_identifier(const char *s, size_t n);
bool hfdcp__km_has_non_ascii(const char *s, size_t n);
bool hfdcp__km_all_ascii_digits(const char *s, size_t n);
/* Decimal value of n ASCII digits, saturated well above any limit. */
uint64_t hfdcp__km_digits_value(const char *s, size_t n);

/* Reads up to n plain tokens from `set`; their text goes to buf (n + 1
 * bytes, NUL-terminated).  Returns how many. */
size_t hfdcp__km_get_while(tokz *t, size_t n, const char *set, char *buf);
/* Python's Tokenizer.getuntil(term, name): the raw text before `term`
 * (consumed) in *name (borrowed from p->src) / *n bytes / *nchars code
 * points; `what` names it in messages. */
int hfdcp__km_get_until(parser *p, uint32_t term, const char *what,
                        const char **name, size_t *n, size_t *nchars);

/* Records a Python-style error "msg at position N" (pos = (size_t)-1: no
 * position) in p->status and p->msg, unless one is recorded already;
 * returns -1 so that parse functions can `return PERR(...)`. */
int hfdcp__km_error(parser *p, int status, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Records HFDCP_ERR_NOMEM ("out of memory") the same way; returns -1. */
int hfdcp__km_nomem(parser *p);
/* A Python repr() of a short name, for messages (truncated to fit in
 * `size` bytes, NUL-terminated). */
void hfdcp__km_name_repr(char *buf, size_t size, const char *s, size_t n);

/* ------------------------------------------------------------------------
 * charset.c: character sets
 * ---------------------------------------------------------------------- */

typedef struct {
    uint32_t lo, hi;
} crange;

typedef struct {
    crange *r;
    size_t n, cap;
} rangeset;

enum { CAT_DIGIT, CAT_NOT_DIGIT, CAT_SPACE, CAT_NOT_SPACE, CAT_WORD,
       CAT_NOT_WORD };

/* One item of a Python character set. */
typedef enum { SI_LITERAL, SI_RANGE, SI_CATEGORY } si_kind;
typedef struct {
    si_kind kind;
    uint32_t lo, hi; /* LITERAL: lo; RANGE: lo..hi; CATEGORY: lo = CAT_* */
} setitem;

/* What a set matches, for translator.c to spell in PCRE2. */
typedef struct {
    rangeset rs;            /* sorted, merged, no surrogates */
    const char *natives[6]; /* PCRE2's own \d \D \w \W, each at most once */
    size_t n_natives;
} set_ranges;

/* What Python's IN (or LITERAL) op over `items` under `flags` matches,
 * as explained in charset.c.  *out is set even on failure (-1 after
 * hfdcp__km_nomem); the caller frees out->rs.r. */
int hfdcp__km_set_ranges(parser *p, uint32_t flags, const setitem *items,
                         size_t n, set_ranges *out);

/* An upper- or title-case code point beyond the BMP (see NONBMP_UPPER). */
bool hfdcp__km_is_nonbmp_upper(uint32_t c);

/* ------------------------------------------------------------------------
 * translator.c: the pattern
 * ---------------------------------------------------------------------- */

void hfdcp__km_parser_init(parser *p);
void hfdcp__km_parser_free(parser *p);

/* re._parser.parse, then the checks of re's compiler that we defer.
 * `pattern` is valid UTF-8 and stays alive as long as `p`.  On success
 * (0) p->out holds the PCRE2 pattern (not NUL-terminated) and p->omap the
 * source position of each of its bytes; on failure (-1) p->status and
 * p->msg say why. */
int hfdcp__km_translate(parser *p, const char *pattern);

/* The group called name (n bytes), or NULL. */
const group_name *hfdcp__km_find_name(const parser *p, const char *name,
                                      size_t n);

/* ------------------------------------------------------------------------
 * template.c: the replacement
 * ---------------------------------------------------------------------- */

#define PIECE_LITERAL SIZE_MAX

typedef struct {
    size_t group; /* a group number, or PIECE_LITERAL */
    size_t off, len; /* PIECE_LITERAL: bytes lit[off, off + len) */
} piece;

typedef struct {
    hfdcp__buf lit;
    piece *pieces;
    size_t n, cap;
    size_t lit_start; /* start of the literal run not yet in a piece */
} template_out;

/* re._parser.parse_template(repl) against the groups of the pattern that
 * `p` translated; appends to `o` (zeroed, o->lit initialized by the
 * caller, who frees o->pieces and o->lit).  `repl` is valid UTF-8 and
 * stays alive as long as `p`.  0, or -1 with p->status and p->msg. */
int hfdcp__km_parse_template(parser *p, const char *repl, template_out *o);

#endif
