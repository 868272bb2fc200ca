/*
 * utf8.c - the library's one UTF-8 decoder, and the strict check of a
 * whole text built on it.  Strict as Python's "strict" decoder, the Rust
 * crate's str and PCRE2's UTF check: Unicode's well-formed byte
 * sequences only (Table 3-7), so no overlong form, no surrogate, nothing
 * above U+10FFFF.
 */
#include <string.h>

#include "hfdcp_internal.h"

/* The decoder; on failure *why (may be NULL) says why.  The bytes are
 * read in order and none after the first that does not fit.  Inline: the
 * check of a whole text calls it once per non-ASCII character. */
static inline size_t decode(const unsigned char *s, size_t len,
                            uint32_t *cp, const char **why)
{
    unsigned c, lo = 0x80, hi = 0xBF;
    uint32_t v;
    size_t n;
    const char *reason;

    if (len == 0) {
        reason = "sequence truncated by the end of the text";
        goto bad;
    }
    c = s[0];
    if (c < 0x80) {
        if (cp)
            *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        v = c & 0x0F;
        lo = c == 0xE0 ? 0xA0 : 0x80; /* below: overlong */
        hi = c == 0xED ? 0x9F : 0xBF; /* above: a surrogate */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        v = c & 0x07;
        lo = c == 0xF0 ? 0x90 : 0x80; /* below: overlong */
        hi = c == 0xF4 ? 0x8F : 0xBF; /* above: above U+10FFFF */
    } else {
        reason = c < 0xC0   ? "continuation byte without a lead byte"
                 : c < 0xC2 ? "overlong encoding"
                 : c < 0xF8 ? "code point above U+10FFFF"
                            : "byte 0xF8-0xFF, which never occurs in UTF-8";
        goto bad;
    }
    for (size_t k = 1; k < n; k++) {
        unsigned b;
        if (k >= len) {
            reason = "sequence truncated by the end of the text";
            goto bad;
        }
        b = s[k];
        if (b < 0x80 || b > 0xBF) {
            reason = "sequence missing a continuation byte";
            goto bad;
        }
        if (k == 1 && (b < lo || b > hi)) {
            reason = c == 0xED   ? "UTF-16 surrogate code point"
                     : c == 0xF4 ? "code point above U+10FFFF"
                                 : "overlong encoding";
            goto bad;
        }
        v = (v << 6) | (b & 0x3F);
    }
    if (cp)
        *cp = v;
    return n;
bad:
    if (why)
        *why = reason;
    return 0;
}

size_t hfdcp__utf8_next(const unsigned char *s, size_t len, uint32_t *cp)
{
    return decode(s, len, cp, NULL);
}

bool hfdcp__utf8_valid(const char *str, size_t n, size_t *bad_at,
                       const char **why)
{
    const unsigned char *s = (const unsigned char *)str;
    const char *reason = NULL;
    size_t i = 0;

    while (i < n) {
        uint64_t w;
        size_t k;
        if (n - i >= 8) { /* eight ASCII bytes at a time */
            memcpy(&w, s + i, 8);
            if ((w & UINT64_C(0x8080808080808080)) == 0) {
                i += 8;
                continue;
            }
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        k = decode(s + i, n - i, NULL, &reason);
        if (k == 0) {
            if (bad_at)
                *bad_at = i;
            if (why)
                *why = reason;
            return false;
        }
        i += k;
    }
    return true;
}
