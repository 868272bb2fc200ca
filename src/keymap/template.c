/*
 * template.c - the replacement of a key map rule: Python's
 * re._parser.parse_template, with Python's checks and messages, turning
 * "\1", "\g<name>", "\g<2>" and the escapes into literal pieces and group
 * pieces that keymap.c assembles for each match.
 */
#include <inttypes.h>
#include <string.h>

#include "keymap_internal.h"

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

static int tpl_flush(parser *p, template_out *o)
{
    if (o->lit.len == o->lit_start)
        return 0;
    if (!grow_array((void **)&o->pieces, &o->cap, o->n + 1, sizeof(piece)))
        return hfdcp__km_nomem(p);
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
        return hfdcp__km_nomem(p);
    o->pieces[o->n].group = (size_t)index;
    o->pieces[o->n].off = o->pieces[o->n].len = 0;
    o->n++;
    return 0;
}

/* "\g<name>" or "\g<number>", after "\g". */
static int tpl_named_group(parser *p, template_out *o)
{
    const char *name;
    size_t n, nc;
    char r[96];

    if (!hfdcp__km_tk_match(&p->t, '<'))
        return PERR(p, 0, "missing <");
    if (hfdcp__km_get_until(p, '>', "group name", &name, &n, &nc) < 0)
        return -1;
    hfdcp__km_name_repr(r, sizeof r, name, n);
    if (hfdcp__km_is_ascii_identifier(name, n)) {
        const group_name *g = hfdcp__km_find_name(p, name, n);
        if (g == NULL)
            return hfdcp__km_error(p, HFDCP_ERR_ARG, (size_t)-1,
                                   "unknown group name %s", r);
        return tpl_group(p, o, g->gid, nc + 1);
    } else if (hfdcp__km_has_non_ascii(name, n)) {
        return PERR(p, nc + 1, "non-ASCII group name %s is not supported",
                    r);
    } else if (!hfdcp__km_all_ascii_digits(name, n)) {
        /* Python 3.11 also takes what int() takes ("+1", " 1"), with a
         * DeprecationWarning. */
        return PERR(p, nc + 1, "bad character in group name %s", r);
    } else {
        uint64_t index = hfdcp__km_digits_value(name, n);
        if (index >= MAXGROUPS)
            return PERR(p, nc + 1, "invalid group reference %.*s", (int)n,
                        name);
        return tpl_group(p, o, index, nc + 1);
    }
}

/* "\0" and up to two more octal digits. */
static int tpl_zero(parser *p, template_out *o)
{
    char d[4];
    size_t got = hfdcp__km_get_while(&p->t, 2, OCTDIGITS, d);
    uint32_t v = 0;

    for (size_t i = 0; i < got; i++)
        v = v * 8 + (uint32_t)(d[i] - '0');
    v &= 0xFF;
    if (v == 0)
        return PERR(p, got + 2,
                    "\\0 would put a NUL character in the key, "
                    "which a C string cannot hold");
    utf8_put(&o->lit, v);
    return 0;
}

/* "\1" to "\9": an octal escape of three digits, else a group reference
 * of one or two. */
static int tpl_number(parser *p, uint32_t c, template_out *o)
{
    char d[4] = {(char)c, 0, 0, 0};

    if (hfdcp__km_tk_is_in(&p->t, DIGITS)) {
        d[1] = (char)hfdcp__km_tk_get(&p->t).c;
        if (c <= '7' && d[1] <= '7' &&
            hfdcp__km_tk_is_in(&p->t, OCTDIGITS)) {
            uint32_t v;
            d[2] = (char)hfdcp__km_tk_get(&p->t).c;
            v = (uint32_t)(d[0] - '0') * 64 + (uint32_t)(d[1] - '0') * 8 +
                (uint32_t)(d[2] - '0');
            if (v > 0377)
                return PERR(p, 4,
                            "octal escape value \\%s outside of "
                            "range 0-0o377",
                            d);
            utf8_put(&o->lit, v);
            return 0;
        }
    }
    return tpl_group(p, o, hfdcp__km_digits_value(d, strlen(d)), strlen(d));
}

/* The escape "\c" of the replacement. */
static int tpl_escape(parser *p, uint32_t c, template_out *o)
{
    static const char lits[] = "abfnrtv\\";
    static const unsigned char codes[] = {7, 8, 12, 10, 13, 9, 11, '\\'};
    const char *hit;

    if (c == 'g')
        return tpl_named_group(p, o);
    if (c == '0')
        return tpl_zero(p, o);
    if (c >= '1' && c <= '9')
        return tpl_number(p, c, o);
    hit = c < 0x80 && c != 0 ? strchr(lits, (int)c) : NULL;
    if (hit != NULL) {
        utf8_put(&o->lit, codes[hit - lits]);
    } else if (hfdcp__km_is_ascii_letter(c)) {
        return PERR(p, 2, "bad escape \\%c", (char)c);
    } else {
        /* Python keeps an unknown escape as it is. */
        utf8_put(&o->lit, '\\');
        utf8_put(&o->lit, c);
    }
    return 0;
}

int hfdcp__km_parse_template(parser *p, const char *repl, template_out *o)
{
    if (hfdcp__km_tk_start(p, repl) < 0)
        return -1;
    for (;;) {
        token k = hfdcp__km_tk_get(&p->t);

        if (k.end)
            break;
        if (!k.esc)
            utf8_put(&o->lit, k.c);
        else if (tpl_escape(p, k.c, o) < 0)
            return -1;
    }
    if (tpl_flush(p, o) < 0)
        return -1;
    if (o->lit.failed)
        return hfdcp__km_nomem(p);
    return 0;
}
