/*
 * index.c - model.safetensors.index.json: strict parse and serialize.
 *
 * Accepted: a JSON object (strict JSON as json.c reads it: UTF-8, no
 * duplicate key at any depth) with
 *   "metadata":   an object with "total_size", a whole number in [0, 2^53]
 *                 (written as an integer, or as "4305.0" by tools that
 *                 went through floats); other metadata keys are ignored;
 *   "weight_map": an object mapping tensor name -> file name (strings).
 * Other top-level keys are ignored.  File names must be plain names in the
 * checkpoint directory: not empty, not "." or "..", no '/' or '\\' (so no
 * absolute path and no directory part).  The catalog reads an index as the
 * loaders do (hfdcp__index_parse_lenient): "metadata" and "total_size"
 * may be missing, since no loader reads them, and their absence becomes a
 * warning of `hfdcp verify` (an error with --strict).
 *
 * Written: exactly what Python's json.dumps(index, indent=2) gives for
 * {"metadata": {"total_size": N}, "weight_map": {...}} (ensure_ascii, keys
 * in the given order), with no newline at the end, as huggingface_hub and
 * torch's HF storage writer produce it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp_internal.h"

#define NAME_MAX_MSG 256

static void put_lit(hfdcp__buf *b, const char *s)
{
    hfdcp__buf_put(b, s, strlen(s));
}

/* Why `file` cannot be a file name of the index, or NULL if it can. */
static const char *bad_file_name(const char *file)
{
    if (file[0] == '\0')
        return "is empty";
    if (strcmp(file, ".") == 0 || strcmp(file, "..") == 0)
        return "is a directory reference (\".\" or \"..\")";
    if (file[0] == '/' || file[0] == '\\')
        return "is an absolute path";
    if (strchr(file, '/') || strchr(file, '\\'))
        return "has a directory part ('/' or '\\'); files must sit in the "
               "checkpoint directory";
    return NULL;
}

static const hfdcp__json_node *member(const hfdcp__json_node *obj,
                                      const char *key)
{
    for (const hfdcp__json_node *c = hfdcp__json_first(obj); c;
         c = hfdcp__json_next(c))
        if (strcmp(hfdcp__json_key(c), key) == 0)
            return c;
    return NULL;
}

/* The weight_map object `wm` into ix->names and ix->files. */
static int read_weight_map(const hfdcp__json_node *wm, const char *what,
                           hfdcp__index *ix)
{
    size_t n = 0;

    for (const hfdcp__json_node *c = hfdcp__json_first(wm); c;
         c = hfdcp__json_next(c)) {
        const char *why, *file = hfdcp__json_str(c);
        if (hfdcp__json_kind(c) != HFDCP_JSON_STRING)
            return hfdcp__error(HFDCP_ERR_FORMAT,
                                "%s: weight_map entry '%.*s' is not a "
                                "string (a file name)",
                                what, NAME_MAX_MSG, hfdcp__json_key(c));
        if ((why = bad_file_name(file)) != NULL)
            return hfdcp__error(HFDCP_ERR_FORMAT,
                                "%s: weight_map entry '%.*s': file name "
                                "'%.*s' %s",
                                what, NAME_MAX_MSG, hfdcp__json_key(c),
                                NAME_MAX_MSG, file, why);
        n++;
    }
    if (n > 0 && ((ix->names = calloc(n, sizeof *ix->names)) == NULL ||
                  (ix->files = calloc(n, sizeof *ix->files)) == NULL))
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "%s: out of memory for %zu entries", what, n);
    for (const hfdcp__json_node *c = hfdcp__json_first(wm); c;
         c = hfdcp__json_next(c)) {
        ix->names[ix->n] = hfdcp__strdup(hfdcp__json_key(c));
        ix->files[ix->n] = hfdcp__strdup(hfdcp__json_str(c));
        ix->n++;
        if (ix->names[ix->n - 1] == NULL || ix->files[ix->n - 1] == NULL)
            return hfdcp__error(HFDCP_ERR_NOMEM, "%s: out of memory", what);
    }
    return HFDCP_OK;
}

int hfdcp__index_parse(const char *buf, size_t len, const char *what,
                       hfdcp__index *out)
{
    const char *missing = NULL;
    int rc = hfdcp__index_parse_lenient(buf, len, what, out, &missing);

    if (rc != HFDCP_OK || missing == NULL)
        return rc;
    hfdcp__index_free(out);
    return hfdcp__error(HFDCP_ERR_FORMAT, "%s%s", what ? what : "index",
                        missing);
}

int hfdcp__index_parse_lenient(const char *buf, size_t len, const char *what,
                               hfdcp__index *out, const char **missing)
{
    hfdcp__json doc = {0};
    hfdcp__index ix;
    const hfdcp__json_node *meta, *total, *wm;
    char w[512];
    int rc = HFDCP_OK;

    memset(out, 0, sizeof *out);
    memset(&ix, 0, sizeof ix);
    if (what == NULL)
        what = "index";
    if (buf == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "%s: no text", what);
    snprintf(w, sizeof w, "%s", what);
    HFDCP_CHECK(hfdcp__json_parse(buf, len, w, &doc));
    if (hfdcp__json_kind(doc.root) != HFDCP_JSON_OBJECT)
        HFDCP_FAIL(HFDCP_ERR_FORMAT, "%s is not a JSON object", what);

    meta = member(doc.root, "metadata");
    if (meta != NULL && hfdcp__json_kind(meta) != HFDCP_JSON_OBJECT)
        HFDCP_FAIL(HFDCP_ERR_FORMAT, "%s: \"metadata\" is not an object",
                   what);
    total = meta != NULL ? member(meta, "total_size") : NULL;
    if (total != NULL) {
        snprintf(w, sizeof w, "%s: metadata.total_size", what);
        HFDCP_CHECK(hfdcp__json_uint(&doc, total, true, w, &ix.total_size));
    }

    wm = member(doc.root, "weight_map");
    if (wm == NULL)
        HFDCP_FAIL(HFDCP_ERR_FORMAT, "%s has no \"weight_map\" object", what);
    if (hfdcp__json_kind(wm) != HFDCP_JSON_OBJECT)
        HFDCP_FAIL(HFDCP_ERR_FORMAT, "%s: \"weight_map\" is not an object",
                   what);
    HFDCP_CHECK(read_weight_map(wm, what, &ix));
    *out = ix;
    memset(&ix, 0, sizeof ix);
    if (missing != NULL)
        *missing = meta == NULL    ? " has no \"metadata\" object"
                   : total == NULL ? ": metadata has no \"total_size\""
                                   : NULL;

cleanup:
    hfdcp__index_free(&ix);
    hfdcp__json_free(&doc);
    return rc;
}

void hfdcp__index_free(hfdcp__index *ix)
{
    if (ix == NULL)
        return;
    for (size_t i = 0; i < ix->n; i++) {
        free(ix->names ? ix->names[i] : NULL);
        free(ix->files ? ix->files[i] : NULL);
    }
    free(ix->names);
    free(ix->files);
    memset(ix, 0, sizeof *ix);
}

int hfdcp__index_serialize(const hfdcp__index *ix, char **out,
                           size_t *out_len)
{
    char num[32];
    hfdcp__buf b;
    int rc = HFDCP_OK;

    if (ix == NULL || out == NULL || out_len == NULL ||
        (ix->n > 0 && (ix->names == NULL || ix->files == NULL)))
        return hfdcp__error(HFDCP_ERR_ARG, "serializing an index: NULL "
                                           "argument");
    for (size_t i = 0; i < ix->n; i++) {
        const char *why = NULL;
        if (ix->names[i] == NULL || ix->files[i] == NULL)
            return hfdcp__error(HFDCP_ERR_ARG,
                                "serializing an index: entry %zu is NULL", i);
        if (!hfdcp__utf8_valid(ix->names[i], strlen(ix->names[i]), NULL,
                               &why) ||
            !hfdcp__utf8_valid(ix->files[i], strlen(ix->files[i]), NULL,
                               &why))
            return hfdcp__error(HFDCP_ERR_ARG,
                                "serializing an index: entry '%.*s' is not "
                                "valid UTF-8: %s",
                                NAME_MAX_MSG, ix->names[i], why);
        if ((why = bad_file_name(ix->files[i])) != NULL)
            return hfdcp__error(HFDCP_ERR_ARG,
                                "serializing an index: tensor '%.*s': file "
                                "name '%.*s' %s",
                                NAME_MAX_MSG, ix->names[i], NAME_MAX_MSG,
                                ix->files[i], why);
    }

    hfdcp__buf_init(&b);
    snprintf(num, sizeof num, "%" PRIu64, ix->total_size);
    put_lit(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
    put_lit(&b, num);
    put_lit(&b, "\n  },\n  \"weight_map\": {");
    for (size_t i = 0; i < ix->n; i++) {
        put_lit(&b, i ? ",\n    " : "\n    ");
        hfdcp__json_put_string(&b, ix->names[i], true);
        put_lit(&b, ": ");
        hfdcp__json_put_string(&b, ix->files[i], true);
    }
    if (ix->n > 0)
        put_lit(&b, "\n  }\n}");
    else
        put_lit(&b, "}\n}");
    hfdcp__buf_put(&b, "", 1); /* NUL, not counted */
    HFDCP_CHECK(hfdcp__buf_status(&b));
    *out = (char *)b.data;
    *out_len = b.len - 1;
    hfdcp__buf_init(&b);

cleanup:
    hfdcp__buf_free(&b);
    return rc;
}
