// ranks: 1
// timeout: 300
/*
 * test_keymap.c - regex key renaming (Python `re` patterns on PCRE2).
 *
 * Nothing here is collective (key maps are local objects), so the file runs
 * at one rank only.  Every renaming is compared with what Python's own
 * re.subn does, run at test time through /usr/bin/python3 and
 * mpi_tests/scripts/keymap_oracle.py (JSON in, JSON out), never with
 * expectations written down here alone.
 */
#include <pthread.h>

#include <cjson/cJSON.h>

#include "harness.h"

typedef struct {
    const char *pattern;
    const char *replacement;
} rule_t;

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Keys every rule of the table is applied to. */
static const char *const KEY_POOL[] = {
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.12.mlp.gate_proj.weight",
    "model.layers.7.self_attn.o_proj.bias",
    "model.embed_tokens.weight",
    "lm_head.weight",
    "model.norm.weight",
    "",
    "x",
    "abc",
    "aabxd",
    "ab\n",
    "a\nb\nc\n",
    "layer.LAYER.Layer.lAyEr.LAYİR.layır",
    "clé.poids.ü",
    "σύνολο.βάρος.Σ",
    "emoji😀.w😀",
    "dup.aa.bb.cc.abab",
    "0.00.10.007",
    "a]b[c{2}",
    "tab\tsep\x1csep\xc2\xa0nbsp",
    "ab ab  ab",
    "x1y22z333",
    "K.k.\xe2\x84\xaa.s.S.\xc5\xbf",
    "İstanbul.ıi.I.ﬅﬆ.ΐΐ",
};

/* The rule table: each rule alone, on every pool key. */
static const rule_t RULES[] = {
    /* HF-style renames */
    {"^model\\.layers\\.(\\d+)\\.self_attn\\.", "layers.\\1.attention."},
    {"^model\\.embed_tokens\\.", "tok_embeddings."},
    {"\\.mlp\\.(gate|up|down)_proj\\.", ".feed_forward.\\g<1>."},
    {"(?P<sep>^|\\.)weight$", "\\g<sep>w"},
    {"^(?!lm_head)(.*)$", "base.\\1"},
    /* lookbehind and lookahead */
    {"(?<=layers\\.)(\\d+)", "[\\1]"},
    {"(?<!\\d)0", "zero"},
    {"\\d+(?=\\.weight)", "N"},
    {"(?<![a-z])a(?!b)", "A"},
    /* alternation, several occurrences */
    {"a|b|c", "_"},
    {"self_attn|mlp|norm", "<\\g<0>>"},
    /* empty matches */
    {"x*", "-"},
    {"", "-"},
    {"(?i)(?#nothing)", "+"},
    {"\\b", "|"},
    {"\\B", "~"},
    {"(?m)^", ">"},
    {"$", "$END"},
    /* non-greedy quantifiers */
    {".*?\\.", "<\\g<0>>"},
    {"(.+?)(\\d*)$", "\\2\\1"},
    {"a{,2}", "B"},
    {"a{2,3}?", "A"},
    /* character classes */
    {"[^a-z0-9.]", "?"},
    {"\\w+", "W"},
    {"\\s+", "_"},
    {"[\\d.]+", "#"},
    {"[α-ω]+", "greek"},
    {"[[:alpha:]]", "posix?"},
    /* anchors */
    {"\\Aab", "AB"},
    {"c\\Z", "Z"},
    {"b$", "B"},
    /* groups and references */
    {"(?P<n>\\w)(?P=n)", "<\\g<n>>"},
    {"(\\w)\\1", "\\1"},
    {"(a)(x)?", "[\\1|\\2]"},
    {"(?:ab)+", "X"},
    {"(x)?(?(1)y|\\d)", "C"},
    {"(?>a+)b", "@"},
    {"a++b", "@@"},
    /* Unicode, flags */
    {"é|ü", "e"},
    {"\\u00e9", "\\g<0>\\g<0>"},
    {"(?i)layer", "layer"},
    {"(?i)k", "k"},
    {"(?i)i", "<\\g<0>>"},      /* I i İ ı fold together in re */
    {"(?i)[h-j]|ﬆ|ΐ", "<\\g<0>>"},
    {"(?ai)[h-k]", "<\\g<0>>"}, /* ASCII-only folding */
    {"(?a)\\w+", "w"},
    {"(?x) (\\w+) \\. (\\w+)  # swap two names", "\\2.\\1"},
    {"(?s)a.b", "ab"},
    {"😀", ":)"},
    /* replacement escapes */
    {"(\\d)", "\\1\\n\\t\\\\"},
    {"(b)", "\\101\\g<1>\\-"},
    {"\\{", "{{"},
    /* PCRE2 10.42 calls this anchored, and loses its matches with its
     * start-of-match optimizations on: worked around */
    {"(?:x|\\A){0}b", "B"},
    {"(?:|(?=x(?:(?<=a)|b))y){0}", "-"},
};

/* Ordered maps: the first rule that matches wins. */
static const rule_t MAP_HF[] = {
    {"^model\\.embed_tokens\\.", "tok_embeddings."},
    {"^model\\.layers\\.(\\d+)\\.self_attn\\.([qkvo])_proj\\.",
     "layers.\\1.attention.w\\2."},
    {"^model\\.layers\\.(\\d+)\\.mlp\\.gate_proj\\.", "layers.\\1.feed_forward.w1."},
    {"^model\\.layers\\.(\\d+)\\.", "layers.\\1."},
    {"^model\\.norm\\.", "norm."},
    {"^lm_head\\.", "output."},
};
static const rule_t MAP_PRIORITY[] = {
    {"^model\\.", "m."},
    {"model", "MODEL"},
    {"weight", "W"},
};
static const rule_t MAP_EMPTY_FIRST[] = {
    {"^", "p."},
    {"a", "never"},
};
static const rule_t MAP_NO_MATCH_FIRST[] = {
    {"^zzz", "never"},
    {"(\\d+)", "<\\1>"},
    {"\\.", "/"},
};

/* ------------------------------------------------------------------------
 * The oracle
 * ---------------------------------------------------------------------- */

static cJSON *add_map(cJSON *maps, const rule_t *rules, size_t n,
                      const char *const *keys, size_t nk)
{
    cJSON *m = cJSON_CreateObject(), *r = cJSON_AddArrayToObject(m, "rules"),
          *k = cJSON_AddArrayToObject(m, "keys");
    for (size_t i = 0; i < n; i++) {
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(rules[i].pattern));
        cJSON_AddItemToArray(pair, cJSON_CreateString(rules[i].replacement));
        cJSON_AddItemToArray(r, pair);
    }
    for (size_t i = 0; i < nk; i++)
        cJSON_AddItemToArray(k, cJSON_CreateString(keys[i]));
    cJSON_AddItemToArray(maps, m);
    return m;
}

/* Runs keymap_oracle.py on `spec`; NULL (and a message) on failure. */
static cJSON *run_oracle(const char *dir, const cJSON *spec)
{
    char in[1024], cmd[4096];
    char *json = cJSON_PrintUnformatted(spec), *out = NULL;
    cJSON *res = NULL;
    int st, rank = 0;

    /* One file per rank: every rank runs every case in the same dir. */
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    snprintf(in, sizeof in, "%s/oracle_in.%d.json", dir, rank);
    if (json == NULL || hfdcp_test_write_file(in, json, strlen(json)) != 0) {
        fprintf(stderr, "cannot write %s\n", in);
        free(json);
        return NULL;
    }
    free(json);
    snprintf(cmd, sizeof cmd,
             "PYTHONIOENCODING=utf-8 '%s' '%s/keymap_oracle.py' < '%s'",
             hfdcp_test_python(), hfdcp_test_scripts(), in);
    st = hfdcp_test_run(cmd, &out);
    if (st == 0 && out != NULL)
        res = cJSON_Parse(out);
    if (res == NULL)
        fprintf(stderr, "oracle failed (status %d): %s\n%s\n", st, cmd,
                out ? out : "");
    free(out);
    return res;
}

static const cJSON *oracle_map(const cJSON *res, int i)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(res, "maps"),
                              i);
}

/* Python's error for a map (JSON null: none). */
static const cJSON *oracle_error(const cJSON *m)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(m, "error");
    return cJSON_IsObject(e) ? e : NULL;
}

static const char *oracle_str(const cJSON *obj, const char *name)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(s) ? s->valuestring : "";
}

/* Builds a key map of `rules` (all must be accepted) and checks every key's
 * renaming, through both hfdcp_key_map_apply and hfdcp__key_map_rename,
 * against Python's results `m`. */
static int check_map_against(const rule_t *rules, size_t n,
                             const char *const *keys, size_t nk,
                             const cJSON *m)
{
    hfdcp_key_map *km = NULL;
    const cJSON *results = cJSON_GetObjectItemCaseSensitive(m, "results");
    int fail = 0;

    T_CHECKF(m != NULL && oracle_error(m) == NULL,
             "Python refuses rule '%s' -> '%s': %s", rules[0].pattern,
             rules[0].replacement,
             m && oracle_error(m) ? oracle_str(oracle_error(m), "message")
                                  : "(no answer)");
    T_CHECK(cJSON_GetArraySize(results) == (int)nk);
    T_OKCALL(hfdcp_key_map_create(&km));
    for (size_t i = 0; i < n && !fail; i++) {
        int rc = hfdcp_key_map_add(km, rules[i].pattern, rules[i].replacement);
        if (rc != HFDCP_OK)
            fail = hfdcp_test_fail(__FILE__, __LINE__,
                                   "adding '%s' -> '%s': %s: %s",
                                   rules[i].pattern, rules[i].replacement,
                                   hfdcp_status_name(rc), hfdcp_last_error());
    }
    for (size_t k = 0; k < nk && !fail; k++) {
        const char *want = cJSON_GetArrayItem(results, (int)k)->valuestring;
        char buf[512], *got = NULL;
        int rc = hfdcp__key_map_rename(km, keys[k], &got);
        if (rc != HFDCP_OK) {
            fail = hfdcp_test_fail(__FILE__, __LINE__, "renaming '%s': %s",
                                   keys[k], hfdcp_last_error());
        } else if (strcmp(got, want) != 0) {
            fail = hfdcp_test_fail(__FILE__, __LINE__,
                                   "rule '%s' -> '%s' (first of %zu), key "
                                   "'%s': Python gives '%s', hfdcp '%s'",
                                   rules[0].pattern, rules[0].replacement, n,
                                   keys[k], want, got);
        } else if ((rc = hfdcp_key_map_apply(km, keys[k], buf, sizeof buf)) !=
                       HFDCP_OK ||
                   strcmp(buf, want) != 0) {
            fail = hfdcp_test_fail(__FILE__, __LINE__,
                                   "hfdcp_key_map_apply('%s') disagrees: %s",
                                   keys[k], rc ? hfdcp_last_error() : buf);
        }
        free(got);
    }
    hfdcp_key_map_free(km);
    return fail;
}

/* ------------------------------------------------------------------------
 * Cases
 * ---------------------------------------------------------------------- */

static int keymap_should_rename_like_python_re_subn(MPI_Comm comm,
                                                    const char *dir)
{
    cJSON *spec = cJSON_CreateObject(), *maps, *res;
    int fail = 0;

    (void)comm;
    T_CHECK(COUNT(RULES) >= 25);
    maps = cJSON_AddArrayToObject(spec, "maps");
    for (size_t i = 0; i < COUNT(RULES); i++)
        add_map(maps, &RULES[i], 1, KEY_POOL, COUNT(KEY_POOL));
    res = run_oracle(dir, spec);
    cJSON_Delete(spec);
    T_CHECK(res != NULL);
    for (size_t i = 0; i < COUNT(RULES) && !fail; i++)
        fail = check_map_against(&RULES[i], 1, KEY_POOL, COUNT(KEY_POOL),
                                 oracle_map(res, (int)i));
    cJSON_Delete(res);
    if (fail)
        return fail;

    /* A few outcomes spelled out, so that a broken oracle cannot make
     * everything agree by accident. */
    {
        hfdcp_key_map *km;
        char out[128];
        T_OKCALL(hfdcp_key_map_create(&km));
        T_OKCALL(hfdcp_key_map_add(km, RULES[0].pattern, RULES[0].replacement));
        T_OKCALL(hfdcp_key_map_apply(km, "model.layers.12.self_attn.q_proj.weight",
                                     out, sizeof out));
        T_CHECKF(strcmp(out, "layers.12.attention.q_proj.weight") == 0, "%s", out);
        hfdcp_key_map_free(km);
        T_OKCALL(hfdcp_key_map_create(&km));
        T_OKCALL(hfdcp_key_map_add(km, "x*", "-"));
        T_OKCALL(hfdcp_key_map_apply(km, "abc", out, sizeof out));
        T_CHECKF(strcmp(out, "-a-b-c-") == 0, "%s", out);
        T_OKCALL(hfdcp_key_map_apply(km, "abxd", out, sizeof out));
        T_CHECKF(strcmp(out, "-a-b--d-") == 0, "%s", out);
        hfdcp_key_map_free(km);
    }
    return T_OK;
}

static int keymap_should_give_priority_to_earlier_rules(MPI_Comm comm,
                                                        const char *dir)
{
    static const struct {
        const rule_t *rules;
        size_t n;
    } maps_in[] = {
        {MAP_HF, COUNT(MAP_HF)},
        {MAP_PRIORITY, COUNT(MAP_PRIORITY)},
        {MAP_EMPTY_FIRST, COUNT(MAP_EMPTY_FIRST)},
        {MAP_NO_MATCH_FIRST, COUNT(MAP_NO_MATCH_FIRST)},
    };
    cJSON *spec = cJSON_CreateObject(), *maps, *res;
    int fail = 0;

    (void)comm;
    maps = cJSON_AddArrayToObject(spec, "maps");
    for (size_t i = 0; i < COUNT(maps_in); i++)
        add_map(maps, maps_in[i].rules, maps_in[i].n, KEY_POOL,
                COUNT(KEY_POOL));
    res = run_oracle(dir, spec);
    cJSON_Delete(spec);
    T_CHECK(res != NULL);
    for (size_t i = 0; i < COUNT(maps_in) && !fail; i++)
        fail = check_map_against(maps_in[i].rules, maps_in[i].n, KEY_POOL,
                                 COUNT(KEY_POOL), oracle_map(res, (int)i));
    cJSON_Delete(res);
    if (fail)
        return fail;
    {
        /* "model.norm.weight": rule 1 wins over rules 2 and 3. */
        hfdcp_key_map *km;
        char out[64];
        T_OKCALL(hfdcp_key_map_create(&km));
        for (size_t i = 0; i < COUNT(MAP_PRIORITY); i++)
            T_OKCALL(hfdcp_key_map_add(km, MAP_PRIORITY[i].pattern,
                                       MAP_PRIORITY[i].replacement));
        T_OKCALL(hfdcp_key_map_apply(km, "model.norm.weight", out, sizeof out));
        T_CHECKF(strcmp(out, "m.norm.weight") == 0, "%s", out);
        T_OKCALL(hfdcp_key_map_apply(km, "lm_head.weight", out, sizeof out));
        T_CHECKF(strcmp(out, "lm_head.W") == 0, "%s", out);
        hfdcp_key_map_free(km);
    }
    return T_OK;
}

/* Patterns and replacements Python refuses: refused too, with Python's
 * own message (and position) inside ours, naming the pattern. */
static int keymap_should_refuse_what_python_refuses(MPI_Comm comm,
                                                    const char *dir)
{
    static const rule_t BAD[] = {
        /* bad patterns */
        {"(a", "x"},
        {"a)", "x"},
        {"*a", "x"},
        {"a**", "x"},
        {"[a", "x"},
        {"[z-a]", "x"},
        {"[a-\\d]", "x"},
        {"a{3,2}", "x"},
        {"(?P<1x>a)", "x"},
        {"(?P<a>x)(?P<a>y)", "x"},
        {"(?P=nope)", "x"},
        {"\\q", "x"},
        {"\\x4", "x"},
        {"a\\", "x"},
        {"(a\\1)", "x"},
        {"(a)\\2", "x"},
        {"(?(2)a)", "x"},
        {"(?<=a+)b", "x"},
        {"(?<=ab|c)d", "x"},
        {"a(?i)b", "x"},
        {"(?z)", "x"},
        {"(?#unterminated", "x"},
        {"(?<x>a)", "x"},
        {"(?au)a", "x"},
        {"(?a)(?u)a", "x"},
        {"\\777", "x"},
        {"(?<=(a)\\1)", "x"},
        /* bad replacements */
        {"(a)", "\\q"},
        {"(a)", "x\\2"},
        {"(a)", "\\g<2>"},
        {"(?P<n>a)", "\\g<name>"},
        {"(a)", "\\g<1"},
        {"(a)", "\\g"},
        {"(a)", "\\g<x-y>"},
        {"(a)", "\\g<+1>"},
        {"(a)", "\\400"},
        {"(a)", "end\\"},
        {"a", "\\1"},
    };
    cJSON *spec = cJSON_CreateObject(), *maps, *res;
    static const char *const keys[] = {"a"};

    (void)comm;
    maps = cJSON_AddArrayToObject(spec, "maps");
    for (size_t i = 0; i < COUNT(BAD); i++) {
        /* A good rule first: the error must name rule 2. */
        static const rule_t good = {"zz", "y"};
        rule_t pair[2];
        pair[0] = good;
        pair[1] = BAD[i];
        add_map(maps, pair, 2, keys, 1);
    }
    res = run_oracle(dir, spec);
    cJSON_Delete(spec);
    T_CHECK(res != NULL);
    for (size_t i = 0; i < COUNT(BAD); i++) {
        const cJSON *err = oracle_error(oracle_map(res, (int)i));
        const char *py;
        hfdcp_key_map *km;
        int rc;
        char out[16];

        T_CHECKF(err != NULL, "Python accepts '%s' -> '%s'", BAD[i].pattern,
                 BAD[i].replacement);
        T_CHECKF(cJSON_GetObjectItemCaseSensitive(err, "rule")->valueint == 1,
                 "%s", BAD[i].pattern);
        py = oracle_str(err, "message");
        T_OKCALL(hfdcp_key_map_create(&km));
        T_OKCALL(hfdcp_key_map_add(km, "zz", "y"));
        rc = hfdcp_key_map_add(km, BAD[i].pattern, BAD[i].replacement);
        if (rc != HFDCP_ERR_ARG || strstr(hfdcp_last_error(), py) == NULL ||
            strstr(hfdcp_last_error(), "rule 2") == NULL ||
            strstr(hfdcp_last_error(), BAD[i].pattern) == NULL) {
            int f = hfdcp_test_fail(__FILE__, __LINE__,
                                    "'%s' -> '%s': %s \"%s\"; Python says "
                                    "\"%s\"",
                                    BAD[i].pattern, BAD[i].replacement,
                                    hfdcp_status_name(rc), hfdcp_last_error(),
                                    py);
            hfdcp_key_map_free(km);
            cJSON_Delete(res);
            return f;
        }
        /* The map keeps working with its good rule. */
        T_OKCALL(hfdcp_key_map_apply(km, "zz", out, sizeof out));
        T_CHECK(strcmp(out, "y") == 0);
        hfdcp_key_map_free(km);
    }
    cJSON_Delete(res);
    return T_OK;
}

/* What Python accepts but cannot be translated faithfully: refused, with a
 * message saying why, never approximated. */
static int keymap_should_refuse_what_it_cannot_translate(MPI_Comm comm,
                                                         const char *dir)
{
    static const struct {
        rule_t rule;
        const char *why;
    } REFUSED[] = {
        {{"\\N{DIGIT ONE}", "x"}, "named character escapes"},
        {{"(?i)(a)\\1", "x"}, "case-insensitive group references"},
        {{"(?P<é>x)", "x"}, "non-ASCII group name"},
        {{"a{70000}", "x"}, "above 65535"},
        {{"(a|){1,3}", "x"}, "captures and can match empty"},
        {{"(?:(?=(\\w))|b)+?c", "x"}, "captures and can match empty"},
        {{"(?a:\\W)x", "x"}, "ASCII/Unicode"},
        {{"(?i)[\\U00010400x]", "x"}, "beyond U+FFFF"},
        {{"(?i)\\U00010400|x", "x"}, "beyond U+FFFF"},
        {{"(?<=x(?<=a){1,3})y", "x"}, "not supported by PCRE2"},
        {{"a", "\\0"}, "NUL character"},
    };
    cJSON *spec = cJSON_CreateObject(), *maps, *res;
    static const char *const keys[] = {"a"};

    (void)comm;
    maps = cJSON_AddArrayToObject(spec, "maps");
    for (size_t i = 0; i < COUNT(REFUSED); i++)
        add_map(maps, &REFUSED[i].rule, 1, keys, 1);
    res = run_oracle(dir, spec);
    cJSON_Delete(spec);
    T_CHECK(res != NULL);
    for (size_t i = 0; i < COUNT(REFUSED); i++) {
        hfdcp_key_map *km;
        /* Python accepts it: this is a deliberate refusal. */
        T_CHECKF(oracle_error(oracle_map(res, (int)i)) == NULL,
                 "Python refuses '%s' too", REFUSED[i].rule.pattern);
        T_OKCALL(hfdcp_key_map_create(&km));
        T_STATUS(hfdcp_key_map_add(km, REFUSED[i].rule.pattern,
                                   REFUSED[i].rule.replacement),
                 HFDCP_ERR_ARG, REFUSED[i].why);
        T_CHECKF(strstr(hfdcp_last_error(), REFUSED[i].rule.pattern) != NULL,
                 "%s", hfdcp_last_error());
        hfdcp_key_map_free(km);
    }
    cJSON_Delete(res);
    return T_OK;
}

static int keymap_should_report_out_size_too_small(MPI_Comm comm,
                                                   const char *dir)
{
    hfdcp_key_map *km;
    const char *key = "model.layers.3.self_attn.q_proj.weight";
    const char *want = "layers.3.attention.q_proj.weight";
    size_t need = strlen(want) + 1;
    char out[64];

    (void)comm;
    (void)dir;
    T_OKCALL(hfdcp_key_map_create(&km));
    T_OKCALL(hfdcp_key_map_add(km, RULES[0].pattern, RULES[0].replacement));
    memset(out, 'Z', sizeof out);
    T_STATUS(hfdcp_key_map_apply(km, key, out, need - 1), HFDCP_ERR_RANGE,
             "needs 33 bytes");
    T_CHECKF(strstr(hfdcp_last_error(), key) != NULL, "%s", hfdcp_last_error());
    T_CHECK(out[0] == 'Z' && out[need - 2] == 'Z'); /* untouched */
    T_STATUS(hfdcp_key_map_apply(km, key, NULL, 0), HFDCP_ERR_RANGE,
             "out_size is 0");
    T_OKCALL(hfdcp_key_map_apply(km, key, out, need)); /* exact fit */
    T_CHECKF(strcmp(out, want) == 0, "%s", out);
    /* An unchanged key needs its own length too. */
    T_STATUS(hfdcp_key_map_apply(km, "lm_head.weight", out, 14),
             HFDCP_ERR_RANGE, "needs 15 bytes");
    T_STATUS(hfdcp_key_map_apply(km, key, NULL, 10), HFDCP_ERR_ARG, "NULL");
    hfdcp_key_map_free(km);
    return T_OK;
}

static int keymap_should_check_its_arguments(MPI_Comm comm, const char *dir)
{
    hfdcp_key_map *km;
    char out[32], *s = NULL;

    (void)comm;
    (void)dir;
    /* NULL map: no renaming. */
    T_OKCALL(hfdcp_key_map_apply(NULL, "a.b", out, sizeof out));
    T_CHECK(strcmp(out, "a.b") == 0);
    T_OKCALL(hfdcp__key_map_rename(NULL, "c.d", &s));
    T_CHECK(s != NULL && strcmp(s, "c.d") == 0);
    free(s);
    hfdcp_key_map_free(NULL);
    /* An empty map renames nothing. */
    T_OKCALL(hfdcp_key_map_create(&km));
    T_OKCALL(hfdcp_key_map_apply(km, "e.f", out, sizeof out));
    T_CHECK(strcmp(out, "e.f") == 0);

    T_STATUS(hfdcp_key_map_create(NULL), HFDCP_ERR_ARG, "out is NULL");
    T_STATUS(hfdcp_key_map_add(NULL, "a", "b"), HFDCP_ERR_ARG, "key map");
    T_STATUS(hfdcp_key_map_add(km, NULL, "b"), HFDCP_ERR_ARG, "pattern");
    T_STATUS(hfdcp_key_map_add(km, "a", NULL), HFDCP_ERR_ARG, "replacement");
    T_STATUS(hfdcp_key_map_add(km, "a\xff", "b"), HFDCP_ERR_ARG,
             "not valid UTF-8");
    T_STATUS(hfdcp_key_map_add(km, "a", "\xc3("), HFDCP_ERR_ARG,
             "not valid UTF-8");
    T_OKCALL(hfdcp_key_map_add(km, "a", "b"));
    T_STATUS(hfdcp_key_map_apply(km, "ke\xe9y", out, sizeof out),
             HFDCP_ERR_ARG, "not valid UTF-8");
    T_STATUS(hfdcp_key_map_apply(km, NULL, out, sizeof out), HFDCP_ERR_ARG,
             "key");
    T_STATUS(hfdcp__key_map_rename(km, "a", NULL), HFDCP_ERR_ARG, "NULL");
    hfdcp_key_map_free(km);
    return T_OK;
}

/* hfdcp__key_map_pack lets ranks compare their maps. */
static int keymap_should_pack_its_rules(MPI_Comm comm, const char *dir)
{
    hfdcp_key_map *a, *b, *c;
    hfdcp__buf ba, bb, bc, bn;
    hfdcp__rbuf r;
    uint64_t n = 99;
    char *s1 = NULL, *s2 = NULL;

    (void)comm;
    (void)dir;
    T_OKCALL(hfdcp_key_map_create(&a));
    T_OKCALL(hfdcp_key_map_create(&b));
    T_OKCALL(hfdcp_key_map_create(&c));
    for (size_t i = 0; i < COUNT(MAP_HF); i++) {
        T_OKCALL(hfdcp_key_map_add(a, MAP_HF[i].pattern, MAP_HF[i].replacement));
        T_OKCALL(hfdcp_key_map_add(b, MAP_HF[i].pattern, MAP_HF[i].replacement));
        /* c differs in one replacement only. */
        T_OKCALL(hfdcp_key_map_add(c, MAP_HF[i].pattern,
                                   i == 3 ? "layers.\\1.." : MAP_HF[i].replacement));
    }
    hfdcp__buf_init(&ba);
    hfdcp__buf_init(&bb);
    hfdcp__buf_init(&bc);
    hfdcp__buf_init(&bn);
    T_OKCALL(hfdcp__key_map_pack(a, &ba));
    T_OKCALL(hfdcp__key_map_pack(b, &bb));
    T_OKCALL(hfdcp__key_map_pack(c, &bc));
    T_OKCALL(hfdcp__key_map_pack(NULL, &bn));
    T_CHECK(ba.len == bb.len && memcmp(ba.data, bb.data, ba.len) == 0);
    T_CHECK(ba.len != bc.len || memcmp(ba.data, bc.data, ba.len) != 0);
    hfdcp__rbuf_init(&r, bn.data, bn.len);
    T_CHECK(hfdcp__rbuf_get_u64(&r, &n) && n == 0 && r.p == r.end);
    hfdcp__rbuf_init(&r, ba.data, ba.len);
    T_CHECK(hfdcp__rbuf_get_u64(&r, &n) && n == COUNT(MAP_HF));
    T_CHECK(hfdcp__rbuf_get_str(&r, &s1) && hfdcp__rbuf_get_str(&r, &s2));
    T_CHECK(strcmp(s1, MAP_HF[0].pattern) == 0 &&
            strcmp(s2, MAP_HF[0].replacement) == 0);
    free(s1);
    free(s2);
    hfdcp__buf_free(&ba);
    hfdcp__buf_free(&bb);
    hfdcp__buf_free(&bc);
    hfdcp__buf_free(&bn);
    hfdcp_key_map_free(a);
    hfdcp_key_map_free(b);
    hfdcp_key_map_free(c);
    return T_OK;
}

/* ---- several threads applying one const map ---- */

typedef struct {
    const hfdcp_key_map *km;
    char **want;
    int bad;
} thread_arg;

static void *rename_many(void *p)
{
    thread_arg *a = p;
    for (int round = 0; round < 50; round++) {
        for (size_t k = 0; k < COUNT(KEY_POOL); k++) {
            char out[256];
            if (hfdcp_key_map_apply(a->km, KEY_POOL[k], out, sizeof out) !=
                    HFDCP_OK ||
                strcmp(out, a->want[k]) != 0)
                a->bad++;
        }
    }
    return NULL;
}

static int keymap_should_apply_from_several_threads(MPI_Comm comm,
                                                    const char *dir)
{
    hfdcp_key_map *km;
    char *want[COUNT(KEY_POOL)] = {NULL};
    pthread_t th[4];
    thread_arg args[4];
    int bad = 0;

    (void)comm;
    (void)dir;
    T_OKCALL(hfdcp_key_map_create(&km));
    for (size_t i = 0; i < COUNT(MAP_HF); i++)
        T_OKCALL(hfdcp_key_map_add(km, MAP_HF[i].pattern, MAP_HF[i].replacement));
    T_OKCALL(hfdcp_key_map_add(km, "(\\w)\\1", "<\\1>"));
    for (size_t k = 0; k < COUNT(KEY_POOL); k++)
        T_OKCALL(hfdcp__key_map_rename(km, KEY_POOL[k], &want[k]));
    for (int t = 0; t < 4; t++) {
        args[t].km = km;
        args[t].want = want;
        args[t].bad = 0;
        T_CHECK(pthread_create(&th[t], NULL, rename_many, &args[t]) == 0);
    }
    for (int t = 0; t < 4; t++) {
        T_CHECK(pthread_join(th[t], NULL) == 0);
        bad += args[t].bad;
    }
    for (size_t k = 0; k < COUNT(KEY_POOL); k++)
        free(want[k]);
    hfdcp_key_map_free(km);
    T_CHECKF(bad == 0, "%d wrong renames across threads", bad);
    return T_OK;
}

/* ---- random patterns against Python ---- */

#define N_RANDOM 400

typedef struct {
    char buf[512];
    size_t len;
    int groups;
    uint64_t *rng;
} gen;

static void gput(gen *g, const char *s)
{
    size_t n = strlen(s);
    if (g->len + n < sizeof g->buf) {
        memcpy(g->buf + g->len, s, n + 1);
        g->len += n;
    }
}

static const char *pick(gen *g, const char *const *a, size_t n)
{
    return a[hfdcp_test_rand(g->rng) % n];
}

static void gen_alt(gen *g, int depth);

/* Atoms that Python's 3.11 re and hfdcp both handle; possessive repeats
 * only of single characters (Python 3.11.2's possessive repeat of larger
 * bodies is buggy, CPython gh-100061). */
static void gen_item(gen *g, int depth)
{
    static const char *const lits[] = {
        "a", "b", "x", "1", "\\.", "-", "é", "İ", "ı", "K", "k", "s", "σ",
        "Σ", "ς", "😀", "\\n", "\\x41", "\\u00e9", " ", "{", "]", "\\101"};
    static const char *const sets[] = {
        "[ab]", "[^a]", "[a-c]", "[\\d.]", "[\\s\\S]", "[^\\s]", "[\\w-]",
        "[]a]", "[İ]", "[i-k]", "[A-Z]", "[σ-ω]", "\\d", "\\w", "\\s",
        "\\D", "\\W", "\\S", "."};
    static const char *const anchors[] = {"^", "$", "\\A", "\\Z", "\\b",
                                          "\\B"};
    static const char *const quants[] = {"*", "+", "?", "{2}", "{1,3}",
                                         "{,2}", "{2,}", "{0}"};
    static const char *const suffix[] = {"", "", "?", "+"};
    uint64_t c = hfdcp_test_rand(g->rng) % 100;
    bool simple = true;

    if (depth > 2 || c < 40) {
        gput(g, pick(g, lits, COUNT(lits)));
    } else if (c < 58) {
        gput(g, pick(g, sets, COUNT(sets)));
    } else if (c < 66) {
        gput(g, pick(g, anchors, COUNT(anchors)));
        return;
    } else if (c < 72 && g->groups > 0) {
        char ref[16];
        snprintf(ref, sizeof ref, "\\%d",
                 (int)(hfdcp_test_rand(g->rng) % (uint64_t)g->groups) + 1);
        gput(g, ref);
        simple = false;
    } else if (c < 78) {
        static const char *const look[] = {"(?=", "(?!", "(?<=", "(?<!"};
        const char *l = pick(g, look, COUNT(look));
        gput(g, l);
        if (l[2] == '<')
            gput(g, hfdcp_test_rand(g->rng) % 2 ? "a" : "\\d[ab]");
        else
            gen_alt(g, depth + 1);
        gput(g, ")");
        simple = false;
    } else if (c < 84) {
        static const char *const fl[] = {"(?i:", "(?s:", "(?m:", "(?-i:",
                                         "(?:", "(?>"};
        gput(g, pick(g, fl, COUNT(fl)));
        gen_alt(g, depth + 1);
        gput(g, ")");
        simple = false;
    } else {
        bool named = hfdcp_test_rand(g->rng) % 3 == 0;
        char name[24];
        int id = ++g->groups;
        snprintf(name, sizeof name, named ? "(?P<g%d>" : "(", id);
        gput(g, name);
        gen_alt(g, depth + 1);
        gput(g, ")");
        simple = false;
    }
    if (hfdcp_test_rand(g->rng) % 100 < 30) {
        gput(g, pick(g, quants, COUNT(quants)));
        gput(g, pick(g, suffix, simple ? 4 : 3));
    }
}

static void gen_alt(gen *g, int depth)
{
    int alts = hfdcp_test_rand(g->rng) % 4 == 0 ? 2 : 1;
    for (int a = 0; a < alts; a++) {
        int n = 1 + (int)(hfdcp_test_rand(g->rng) % 3);
        if (a)
            gput(g, "|");
        for (int i = 0; i < n; i++)
            gen_item(g, depth);
    }
}

static void gen_replacement(gen *g, char *out, size_t size)
{
    static const char *const lits[] = {"-", "X", "é", ".", "\\n", "\\\\",
                                       "\\g<0>", "[", "\\101"};
    size_t o = 0;
    int n = (int)(hfdcp_test_rand(g->rng) % 4);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        char piece[16];
        if (g->groups > 0 && hfdcp_test_rand(g->rng) % 2)
            snprintf(piece, sizeof piece,
                     hfdcp_test_rand(g->rng) % 2 ? "\\%d" : "\\g<%d>",
                     (int)(hfdcp_test_rand(g->rng) % (uint64_t)g->groups) + 1);
        else
            snprintf(piece, sizeof piece, "%s",
                     lits[hfdcp_test_rand(g->rng) % COUNT(lits)]);
        o += (size_t)snprintf(out + o, size - o, "%s", piece);
        if (o >= size)
            break;
    }
}

static int keymap_should_agree_with_python_on_random_patterns(MPI_Comm comm,
                                                              const char *dir)
{
    static const char *const kch[] = {"a", "b", "x", "1", "_", ".", "-",
                                      "é", "İ", "ı", "I", "i", "K", "k", "s",
                                      "σ", "Σ", "ς", " ", "\n", "😀", "A"};
    static char patterns[N_RANDOM][512], repls[N_RANDOM][64],
        keys[N_RANDOM][6][64];
    const char *keyp[N_RANDOM][6];
    rule_t rules[N_RANDOM];
    uint64_t rng = 20240531;
    cJSON *spec = cJSON_CreateObject(), *maps, *res;
    int compared = 0, refused = 0;

    (void)comm;
    maps = cJSON_AddArrayToObject(spec, "maps");
    for (int i = 0; i < N_RANDOM; i++) {
        gen g = {.len = 0, .groups = 0, .rng = &rng};
        g.buf[0] = '\0';
        gen_alt(&g, 0);
        snprintf(patterns[i], sizeof patterns[i], "%s", g.buf);
        gen_replacement(&g, repls[i], sizeof repls[i]);
        rules[i].pattern = patterns[i];
        rules[i].replacement = repls[i];
        for (int k = 0; k < 6; k++) {
            size_t o = 0;
            int n = (int)(hfdcp_test_rand(&rng) % 8);
            keys[i][k][0] = '\0';
            for (int c = 0; c < n; c++)
                o += (size_t)snprintf(keys[i][k] + o, sizeof keys[i][k] - o,
                                      "%s",
                                      kch[hfdcp_test_rand(&rng) % COUNT(kch)]);
            keyp[i][k] = keys[i][k];
        }
        add_map(maps, &rules[i], 1, keyp[i], 6);
    }
    res = run_oracle(dir, spec);
    cJSON_Delete(spec);
    T_CHECK(res != NULL);
    for (int i = 0; i < N_RANDOM; i++) {
        const cJSON *m = oracle_map(res, i);
        hfdcp_key_map *km;
        int rc;

        T_OKCALL(hfdcp_key_map_create(&km));
        rc = hfdcp_key_map_add(km, rules[i].pattern, rules[i].replacement);
        hfdcp_key_map_free(km);
        if (oracle_error(m) != NULL) {
            /* Python refuses: so must we. */
            T_CHECKF(rc == HFDCP_ERR_ARG, "Python refuses '%s' -> '%s' (%s), "
                     "hfdcp accepts", rules[i].pattern, rules[i].replacement,
                     oracle_str(oracle_error(m), "message"));
            continue;
        }
        if (rc != HFDCP_OK) {
            /* A deliberate refusal only. */
            T_CHECKF(rc == HFDCP_ERR_ARG &&
                         strstr(hfdcp_last_error(), "supported") != NULL,
                     "'%s': %s", rules[i].pattern, hfdcp_last_error());
            refused++;
            continue;
        }
        if (check_map_against(&rules[i], 1, keyp[i], 6, m)) {
            cJSON_Delete(res);
            return 1;
        }
        compared++;
    }
    cJSON_Delete(res);
    /* The generator must mostly produce patterns both sides accept. */
    T_CHECKF(compared > N_RANDOM / 2, "only %d of %d compared (%d refused)",
             compared, N_RANDOM, refused);
    return T_OK;
}

/* ---- deeply nested groups ---- */

/* hfdcp's nesting limit (MAX_NESTING in src/keymap/translator.c). */
#define NEST_LIMIT 100
#define NEST_MESSAGE "groups nested more than 100 deep are not supported"

typedef struct {
    const char *head;         /* before the groups */
    const char *const *opens; /* the groups, outermost first, cycled */
    size_t n_opens;
    const char *mid;          /* inside the innermost group */
} nest_kind;

static const char *const OPEN_GROUP[] = {"("};
static const char *const OPEN_MIXED[] = {"(",    "(?:", "(?>",
                                         "(?i:", "(?=", "(?<="};
static const char *const OPEN_COND[] = {"(?(1)"};
static const char *const OPEN_LOOKBEHIND[] = {"(?<!"};
static const nest_kind NESTS[] = {
    {"", OPEN_GROUP, 1, "a"},
    {"", OPEN_MIXED, COUNT(OPEN_MIXED), "a"},
    {"(a)?", OPEN_COND, 1, "b"},
    {"", OPEN_LOOKBEHIND, 1, "a"},
};

/* `depth` groups of kind `k` (malloc'd); *at (may be NULL) gets where the
 * group one deeper than NEST_LIMIT opens (all ASCII: bytes = chars). */
static char *nested_pattern(const nest_kind *k, size_t depth, size_t *at)
{
    size_t len = strlen(k->head) + strlen(k->mid) + depth + 1, o;
    char *s;

    for (size_t i = 0; i < depth; i++)
        len += strlen(k->opens[i % k->n_opens]);
    if ((s = malloc(len)) == NULL)
        return NULL;
    o = (size_t)sprintf(s, "%s", k->head);
    for (size_t i = 0; i < depth; i++) {
        if (i == NEST_LIMIT && at != NULL)
            *at = o;
        o += (size_t)sprintf(s + o, "%s", k->opens[i % k->n_opens]);
    }
    o += (size_t)sprintf(s + o, "%s", k->mid);
    memset(s + o, ')', depth);
    s[o + depth] = '\0';
    return s;
}

/* Nesting up to the limit: accepted, renaming as re.subn does. */
static int keymap_should_accept_groups_nested_up_to_its_limit(MPI_Comm comm,
                                                              const char *dir)
{
    static const size_t depths[] = {50, NEST_LIMIT - 1, NEST_LIMIT};
    static const char *const keys[] = {"bab.A.ab.x", "a", "",
                                       "model.layers.0.weight"};
    enum { N = COUNT(NESTS) * COUNT(depths) };
    char *pats[N], repl[32], out[64];
    rule_t rules[N];
    cJSON *spec = cJSON_CreateObject(), *maps, *res;
    hfdcp_key_map *km;
    int fail = 0;

    (void)comm;
    maps = cJSON_AddArrayToObject(spec, "maps");
    for (size_t i = 0; i < N; i++) {
        pats[i] = nested_pattern(&NESTS[i / COUNT(depths)],
                                 depths[i % COUNT(depths)], NULL);
        T_CHECK(pats[i] != NULL);
        rules[i].pattern = pats[i];
        rules[i].replacement = "<\\g<0>>";
        add_map(maps, &rules[i], 1, keys, COUNT(keys));
    }
    res = run_oracle(dir, spec);
    cJSON_Delete(spec);
    T_CHECK(res != NULL);
    for (size_t i = 0; i < N && !fail; i++)
        fail = check_map_against(&rules[i], 1, keys, COUNT(keys),
                                 oracle_map(res, (int)i));
    cJSON_Delete(res);
    if (fail)
        return fail;
    /* Spelled out: the innermost of 100 groups is group 100. */
    snprintf(repl, sizeof repl, "<\\1|\\g<%d>>", NEST_LIMIT);
    T_OKCALL(hfdcp_key_map_create(&km));
    T_OKCALL(hfdcp_key_map_add(km, pats[COUNT(depths) - 1], repl));
    T_OKCALL(hfdcp_key_map_apply(km, "bab", out, sizeof out));
    T_CHECKF(strcmp(out, "b<a|a>b") == 0, "%s", out);
    /* Side by side, nests do not add up: each kind twice in a row. */
    for (size_t k = 0; k < COUNT(NESTS); k++) {
        const char *p = pats[k * COUNT(depths) + COUNT(depths) - 1];
        char *two = malloc(2 * strlen(p) + 1);
        T_CHECK(two != NULL);
        sprintf(two, "%s%s", p, p);
        T_OKCALL(hfdcp_key_map_add(km, two, "x"));
        free(two);
    }
    hfdcp_key_map_free(km);
    for (size_t i = 0; i < N; i++)
        free(pats[i]);
    return T_OK;
}

/* hfdcp_key_map_add(pattern) refused as nested too deep: the message
 * names rule 2, the pattern (its start at least), the limit and where. */
static int check_nesting_refused(const char *pattern, size_t at)
{
    hfdcp_key_map *km;
    const char *msg;
    char head[48], pos[48];
    char out[8];

    snprintf(head, sizeof head, "pattern '%.32s", pattern);
    snprintf(pos, sizeof pos, "at position %zu", at);
    T_OKCALL(hfdcp_key_map_create(&km));
    T_OKCALL(hfdcp_key_map_add(km, "zz", "y"));
    T_STATUS(hfdcp_key_map_add(km, pattern, "x"), HFDCP_ERR_ARG,
             NEST_MESSAGE);
    msg = hfdcp_last_error();
    T_CHECKF(strstr(msg, "rule 2") != NULL && strstr(msg, head) != NULL &&
                 strstr(msg, pos) != NULL,
             "%.300s", msg);
    /* The map keeps working with its good rule. */
    T_OKCALL(hfdcp_key_map_apply(km, "zz", out, sizeof out));
    T_CHECK(strcmp(out, "y") == 0);
    hfdcp_key_map_free(km);
    return T_OK;
}

/* Deeper nesting is refused before the parser's recursion can exhaust the
 * stack (100000 "(" crashed it with SIGSEGV).  Python's re accepts 101
 * levels (a deliberate refusal) and fails itself from about 495 levels
 * with RecursionError. */
static int keymap_should_refuse_groups_nested_beyond_its_limit(
    MPI_Comm comm, const char *dir)
{
    /* 100000 first: without the limit, it crashes (8 MiB stack). */
    static const size_t depths[] = {100000, 5000, NEST_LIMIT + 1};
    enum { N = COUNT(NESTS) * COUNT(depths) };
    static const char *const keys[] = {"a"};
    char *pats[N];
    size_t at[N];
    rule_t rules[N];
    cJSON *spec = cJSON_CreateObject(), *maps, *res;

    (void)comm;
    maps = cJSON_AddArrayToObject(spec, "maps");
    for (size_t i = 0; i < N; i++) {
        pats[i] = nested_pattern(&NESTS[i / COUNT(depths)],
                                 depths[i % COUNT(depths)], &at[i]);
        T_CHECK(pats[i] != NULL);
        rules[i].pattern = pats[i];
        rules[i].replacement = "x";
        add_map(maps, &rules[i], 1, keys, COUNT(keys));
    }
    res = run_oracle(dir, spec);
    cJSON_Delete(spec);
    T_CHECK(res != NULL);
    for (size_t i = 0; i < N; i++) {
        const cJSON *err = oracle_error(oracle_map(res, (int)i));
        size_t depth = depths[i % COUNT(depths)];
        if (depth == NEST_LIMIT + 1)
            T_CHECKF(err == NULL, "Python refuses %.40s...: %s", pats[i],
                     oracle_str(err, "message"));
        else
            T_CHECKF(err != NULL &&
                         strcmp(oracle_str(err, "type"), "RecursionError") ==
                             0,
                     "Python at depth %zu: %s", depth,
                     err ? oracle_str(err, "type") : "accepted");
        if (check_nesting_refused(pats[i], at[i]))
            return 1;
    }
    cJSON_Delete(res);
    for (size_t i = 0; i < N; i++)
        free(pats[i]);
    return T_OK;
}

/* The deepest pattern accepted, and a far too deep one, on a 512 KiB
 * thread stack (the limit leaves room to spare, even under ASan). */
typedef struct {
    int deepest_rc, too_deep_rc;
    char msg[256];
} nest_thread_arg;

static void *add_nested(void *p)
{
    nest_thread_arg *a = p;
    char *deepest = nested_pattern(&NESTS[1], NEST_LIMIT, NULL);
    char *too_deep = nested_pattern(&NESTS[0], 100000, NULL);
    hfdcp_key_map *km = NULL;

    a->deepest_rc = a->too_deep_rc = -1;
    if (deepest != NULL && too_deep != NULL &&
        hfdcp_key_map_create(&km) == HFDCP_OK) {
        a->deepest_rc = hfdcp_key_map_add(km, deepest, "<\\g<0>>");
        a->too_deep_rc = hfdcp_key_map_add(km, too_deep, "x");
        snprintf(a->msg, sizeof a->msg, "%s", hfdcp_last_error());
    }
    hfdcp_key_map_free(km);
    free(deepest);
    free(too_deep);
    return NULL;
}

static int keymap_should_nest_within_a_small_thread_stack(MPI_Comm comm,
                                                          const char *dir)
{
    pthread_attr_t attr;
    pthread_t th;
    nest_thread_arg a = {0, 0, ""};

    (void)comm;
    (void)dir;
    T_CHECK(pthread_attr_init(&attr) == 0);
    T_CHECK(pthread_attr_setstacksize(&attr, 512 * 1024) == 0);
    T_CHECK(pthread_create(&th, &attr, add_nested, &a) == 0);
    T_CHECK(pthread_join(th, NULL) == 0);
    pthread_attr_destroy(&attr);
    T_CHECKF(a.deepest_rc == HFDCP_OK, "depth %d: %d", NEST_LIMIT,
             a.deepest_rc);
    T_CHECKF(a.too_deep_rc == HFDCP_ERR_ARG &&
                 strstr(a.msg, NEST_MESSAGE) != NULL,
             "depth 100000: %d %s", a.too_deep_rc, a.msg);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"keymap_should_rename_like_python_re_subn",
     keymap_should_rename_like_python_re_subn, 1},
    {"keymap_should_give_priority_to_earlier_rules",
     keymap_should_give_priority_to_earlier_rules, 1},
    {"keymap_should_refuse_what_python_refuses",
     keymap_should_refuse_what_python_refuses, 1},
    {"keymap_should_refuse_what_it_cannot_translate",
     keymap_should_refuse_what_it_cannot_translate, 1},
    {"keymap_should_report_out_size_too_small",
     keymap_should_report_out_size_too_small, 1},
    {"keymap_should_check_its_arguments", keymap_should_check_its_arguments, 1},
    {"keymap_should_pack_its_rules", keymap_should_pack_its_rules, 1},
    {"keymap_should_apply_from_several_threads",
     keymap_should_apply_from_several_threads, 1},
    {"keymap_should_agree_with_python_on_random_patterns",
     keymap_should_agree_with_python_on_random_patterns, 1},
    {"keymap_should_accept_groups_nested_up_to_its_limit",
     keymap_should_accept_groups_nested_up_to_its_limit, 1},
    {"keymap_should_refuse_groups_nested_beyond_its_limit",
     keymap_should_refuse_groups_nested_beyond_its_limit, 1},
    {"keymap_should_nest_within_a_small_thread_stack",
     keymap_should_nest_within_a_small_thread_stack, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
