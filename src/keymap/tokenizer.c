/*
 * tokenizer.c - reading a Python pattern or replacement: Python's
 * re._parser.Tokenizer.  A token is one character, or a backslash and the
 * character after it; its position counts code points, as Python's
 * messages do.  Also the Tokenizer's helpers (getwhile, getuntil), the
 * character and name tests, and the errors "... at position N".
 *
 * The callers check beforehand that the text is valid UTF-8 (with
 * hfdcp__km_utf8_check).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "keymap_internal.h"

/* ------------------------------------------------------------------------
 * UTF-8
 * ---------------------------------------------------------------------- */

/* The library's UTF-8 decoder (utf8.c) in the tokenizer's terms: decodes
 * the code point at s[*i] and advances *i; -1 for invalid UTF-8
 * (truncated, overlong, surrogate, above U+10FFFF), as Python's strict
 * decoder and PCRE2's check both see it. */
static int32_t utf8_decode(const unsigned char *s, size_t len, size_t *i)
{
    uint32_t c = 0;
    size_t k = hfdcp__utf8_next(s + *i, len - *i, &c); /* utf8.c */

    if (k == 0)
        return -1;
    *i += k;
    return (int32_t)c;
}

/* true if s is valid UTF-8; *nchars (may be NULL) gets its length in code
 * points, *bad the byte offset of the first invalid sequence. */
bool hfdcp__km_utf8_check(const char *s, size_t *nchars, size_t *bad)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t len = strlen(s), i = 0, n = 0;

    while (i < len) {
        if (utf8_decode(u, len, &i) < 0) {
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

/* ------------------------------------------------------------------------
 * Tokens
 * ---------------------------------------------------------------------- */

void hfdcp__km_tk_seek(tokz *t, size_t at, size_t ci)
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
    k->c = (uint32_t)utf8_decode(t->s, t->len, &i);
    if (k->c == '\\' && i < t->len) {
        k->esc = true;
        k->c = (uint32_t)utf8_decode(t->s, t->len, &i);
        ci++;
    }
    k->after = i;
    k->after_ci = ci + 1;
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

/* Python's Tokenizer(text) for the parser `p`. */
int hfdcp__km_tk_start(parser *p, const char *text)
{
    tokz *t = &p->t;
    size_t nchars = 0;

    p->src = text;
    hfdcp__km_utf8_check(text, &nchars, NULL);
    if (ends_with_lone_backslash(text))
        return hfdcp__km_error(p, HFDCP_ERR_ARG, nchars - 1,
                               "bad escape (end of pattern)");
    t->s = (const unsigned char *)text;
    t->len = strlen(text);
    hfdcp__km_tk_seek(t, 0, 0);
    return 0;
}

/* Python's tell(): the position of the next token. */
size_t hfdcp__km_tk_tell(const tokz *t)
{
    return t->cur.at_ci;
}

/* The next token is the plain (unescaped) character ch. */
bool hfdcp__km_tk_is(const tokz *t, uint32_t ch)
{
    return !t->cur.end && !t->cur.esc && t->cur.c == ch;
}

bool hfdcp__km_tk_is_in(const tokz *t, const char *set)
{
    return !t->cur.end && !t->cur.esc && t->cur.c < 0x80 && t->cur.c != 0 &&
           strchr(set, (int)t->cur.c) != NULL;
}

token hfdcp__km_tk_get(tokz *t)
{
    token k = t->cur;
    if (!k.end)
        hfdcp__km_tk_seek(t, k.after, k.after_ci);
    return k;
}

bool hfdcp__km_tk_match(tokz *t, uint32_t ch)
{
    if (!hfdcp__km_tk_is(t, ch))
        return false;
    hfdcp__km_tk_get(t);
    return true;
}

bool hfdcp__km_is_in(const token *k, const char *set)
{
    return !k->end && !k->esc && k->c < 0x80 && k->c != 0 &&
           strchr(set, (int)k->c) != NULL;
}

/* Reads up to n plain tokens from `set`; their text goes to buf. */
size_t hfdcp__km_get_while(tokz *t, size_t n, const char *set, char *buf)
{
    size_t k = 0;
    while (k < n && hfdcp__km_tk_is_in(t, set))
        buf[k++] = (char)hfdcp__km_tk_get(t).c;
    buf[k] = '\0';
    return k;
}

/* Python's Tokenizer.getuntil(term, name): the raw text before `term`
 * (consumed) in *name / *n bytes / *nchars code points. */
int hfdcp__km_get_until(parser *p, uint32_t term, const char *what,
                        const char **name, size_t *n, size_t *nchars)
{
    size_t start = p->t.cur.at, start_ci = p->t.cur.at_ci;

    for (;;) {
        token k = hfdcp__km_tk_get(&p->t);
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

/* ------------------------------------------------------------------------
 * Characters and names
 * ---------------------------------------------------------------------- */

bool hfdcp__km_is_ascii_letter(uint32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The name rules of Python (str.isidentifier) restricted to ASCII;
 * non-ASCII names are refused separately. */
bool hfdcp__km_is_ascii_identifier(const char *s, size_t n)
{
    if (n == 0 ||
        !(hfdcp__km_is_ascii_letter((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(hfdcp__km_is_ascii_letter(c) || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

bool hfdcp__km_has_non_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

bool hfdcp__km_all_ascii_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Decimal value of n ASCII digits, saturated well above any limit. */
uint64_t hfdcp__km_digits_value(const char *s, size_t n)
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
 * Errors
 * ---------------------------------------------------------------------- */

/* Records a Python-style error "msg at position N" (pos = (size_t)-1: no
 * position); returns -1 so that parse functions can `return PERR(...)`. */
int hfdcp__km_error(parser *p, int status, size_t pos, const char *fmt, ...)
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

int hfdcp__km_nomem(parser *p)
{
    if (p->status == HFDCP_OK) {
        snprintf(p->msg, sizeof p->msg, "out of memory");
        p->status = HFDCP_ERR_NOMEM;
    }
    return -1;
}

/* A Python repr() of a short name, for messages. */
void hfdcp__km_name_repr(char *buf, size_t size, const char *s, size_t n)
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
