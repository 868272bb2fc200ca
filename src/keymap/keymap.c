/*
 * keymap.c - the public key map (hfdcp_key_map_*): ordered rules, each a
 * Python `re` pattern translated to PCRE2 (translator.c) and compiled
 * here, and a replacement (template.c); renaming a key as re.subn does
 * with the first rule that matches; packing the rules for comparison
 * across ranks.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "keymap_internal.h"

/* A rule: the pattern compiled, the replacement in pieces. */
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
            return hfdcp__km_nomem(p);
        if (p->out.len == 0)
            pos = 0;
        else
            pos = map[eo < p->out.len ? eo : p->out.len - 1];
        return hfdcp__km_error(p, HFDCP_ERR_ARG, pos,
                               "not supported by PCRE2: %s",
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

/* The arguments of hfdcp_key_map_add(): not NULL, valid UTF-8.  qpat
 * (QUOTE_MAX + 3 bytes) gets the pattern quoted for messages. */
static int check_add_args(const hfdcp_key_map *km, const char *pattern,
                          const char *replacement, char *qpat, size_t qsize)
{
    size_t bad, no;

    if (km == NULL || pattern == NULL || replacement == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_key_map_add: %s is NULL",
                            km == NULL ? "the key map"
                            : pattern == NULL ? "the pattern"
                                              : "the replacement");
    no = km->n + 1;
    if (!hfdcp__km_utf8_check(pattern, NULL, &bad))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "key map rule %zu: pattern is not valid UTF-8 "
                            "(byte %zu)",
                            no, bad);
    quoted(qpat, qsize, pattern);
    if (!hfdcp__km_utf8_check(replacement, NULL, &bad))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "key map rule %zu: replacement for pattern %s "
                            "is not valid UTF-8 (byte %zu)",
                            no, qpat, bad);
    return HFDCP_OK;
}

int hfdcp_key_map_add(hfdcp_key_map *km, const char *pattern,
                      const char *replacement)
{
    parser p;
    template_out tpl;
    rule r;
    size_t no;
    int rc;
    char qpat[QUOTE_MAX + 3], qrep[QUOTE_MAX + 3];

    rc = check_add_args(km, pattern, replacement, qpat, sizeof qpat);
    if (rc != HFDCP_OK)
        return rc;
    no = km->n + 1;
    memset(&r, 0, sizeof r);
    memset(&tpl, 0, sizeof tpl);
    hfdcp__buf_init(&tpl.lit);
    hfdcp__km_parser_init(&p);
    if (hfdcp__km_translate(&p, pattern) < 0 ||
        compile_pcre2(&p, &r.code) < 0) {
        rc = p.status == HFDCP_ERR_NOMEM
                 ? hfdcp__nomem("a key map pattern")
                 : hfdcp__error(p.status, "key map rule %zu: pattern %s: %s",
                                no, qpat, p.msg);
        goto cleanup;
    }
    if ((rc = check_compiled(&p, &r, no, qpat)) != HFDCP_OK)
        goto cleanup;
    if (hfdcp__km_parse_template(&p, replacement, &tpl) < 0) {
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
    hfdcp__km_parser_free(&p);
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
    if (km != NULL && km->n > 0 && !hfdcp__km_utf8_check(key, NULL, &bad))
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
