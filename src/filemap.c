/*
 * filemap.c - the public file map: tensor name -> 1-based output file
 * index (model-0000i-of-0000N.safetensors).  Entries live in arrays in
 * insertion order, found through a hash map, so that the writer can copy
 * the map it was given.  Also: the file index a checkpoint file name
 * carries, and a map copying the file layout of a reference model (its
 * index read with index.c, else its headers with catalog.c's checks).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hfdcp_internal.h"

struct hfdcp_file_map_s {
    hfdcp__strmap *slots; /* name -> index in names/indices */
    char **names;
    int *indices;
    size_t n, cap;
    char *warning;        /* NULL, or how the map was made (from a
                             reference whose file indices were not 1..N) */
};

int hfdcp_file_map_create(hfdcp_file_map **out)
{
    hfdcp_file_map *m;

    if (out == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_file_map_create: out is NULL");
    if ((m = calloc(1, sizeof *m)) == NULL ||
        (m->slots = hfdcp__strmap_new()) == NULL) {
        free(m);
        return hfdcp__nomem("a file map");
    }
    *out = m;
    return HFDCP_OK;
}

int hfdcp_file_map_set(hfdcp_file_map *m, const char *name, int file_index)
{
    size_t slot;
    char *copy;

    if (m == NULL || name == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_file_map_set: %s is NULL",
                            m == NULL ? "the map" : "the tensor name");
    if (file_index < 1)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_file_map_set: file index %d for tensor "
                            "'%s' is not >= 1 (file indices are 1-based)",
                            file_index, name);
    if (hfdcp__strmap_get(m->slots, name, &slot)) {
        m->indices[slot] = file_index;
        return HFDCP_OK;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        char **names = realloc(m->names, cap * sizeof *names);
        if (names == NULL)
            return hfdcp__nomem("a file map");
        m->names = names;
        int *indices = realloc(m->indices, cap * sizeof *indices);
        if (indices == NULL)
            return hfdcp__nomem("a file map");
        m->indices = indices;
        m->cap = cap;
    }
    if ((copy = hfdcp__strdup(name)) == NULL)
        return hfdcp__nomem("a file map entry");
    if (hfdcp__strmap_put(m->slots, name, m->n, NULL) != HFDCP_OK) {
        free(copy);
        return HFDCP_ERR_NOMEM;
    }
    m->names[m->n] = copy;
    m->indices[m->n] = file_index;
    m->n++;
    return HFDCP_OK;
}

int hfdcp_file_map_get(const hfdcp_file_map *m, const char *name,
                       int *file_index)
{
    size_t slot;

    if (m == NULL || name == NULL || file_index == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_file_map_get: NULL argument");
    if (!hfdcp__strmap_get(m->slots, name, &slot))
        return hfdcp__error(HFDCP_ERR_NOT_FOUND,
                            "tensor '%s' is not in the file map", name);
    *file_index = m->indices[slot];
    return HFDCP_OK;
}

void hfdcp_file_map_free(hfdcp_file_map *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->names[i]);
    free(m->names);
    free(m->indices);
    free(m->warning);
    hfdcp__strmap_free(m->slots);
    free(m);
}

size_t hfdcp_file_map_size(const hfdcp_file_map *m)
{
    return m == NULL ? 0 : m->n;
}

int hfdcp_file_map_entry(const hfdcp_file_map *m, size_t i,
                         const char **name, int *file_index)
{
    if (m == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_file_map_entry: the map is NULL");
    if (i >= m->n)
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "hfdcp_file_map_entry: entry %zu of a map of "
                            "%zu entries",
                            i, m->n);
    if (name != NULL)
        *name = m->names[i];
    if (file_index != NULL)
        *file_index = m->indices[i];
    return HFDCP_OK;
}

int hfdcp__file_map_files(const hfdcp_file_map *m)
{
    int most = 1;

    if (m == NULL)
        return 0;
    for (size_t i = 0; i < m->n; i++)
        if (m->indices[i] > most)
            most = m->indices[i];
    return most;
}

const char *hfdcp_file_map_warning(const hfdcp_file_map *m)
{
    return m == NULL || m->warning == NULL ? "" : m->warning;
}

int hfdcp__file_map_dup(const hfdcp_file_map *m, hfdcp_file_map **out)
{
    hfdcp_file_map *copy = NULL;
    int rc;

    *out = NULL;
    if (m == NULL)
        return HFDCP_OK;
    HFDCP_TRY(hfdcp_file_map_create(&copy));
    for (size_t i = 0; i < m->n; i++) {
        if ((rc = hfdcp_file_map_set(copy, m->names[i], m->indices[i])) !=
            HFDCP_OK) {
            hfdcp_file_map_free(copy);
            return rc;
        }
    }
    if (m->warning != NULL &&
        (copy->warning = hfdcp__strdup(m->warning)) == NULL) {
        hfdcp_file_map_free(copy);
        return hfdcp__nomem("a file map's warning");
    }
    *out = copy;
    return HFDCP_OK;
}

/* ---- the file index a file name carries ---- */

#define SUFFIX ".safetensors"

/* Reads the run of ASCII digits ending just before base[*end] backwards;
 * moves *end to its start.  *value saturates at INT_MAX + 1 (leading
 * zeros are allowed, so a long run may still be small).  false when there
 * is no digit. */
static bool digits_before(const char *base, size_t *end, long long *value)
{
    size_t e = *end, s = e;
    long long v = 0;

    while (s > 0 && base[s - 1] >= '0' && base[s - 1] <= '9')
        s--;
    if (s == e)
        return false;
    for (size_t i = s; i < e; i++) {
        v = v * 10 + (base[i] - '0');
        if (v > (long long)INT_MAX)
            v = (long long)INT_MAX + 1;
    }
    *end = s;
    *value = v;
    return true;
}

/* The file index of base name `base`, as the reference's
 * _extract_file_index reads it: "model.safetensors" is 1; else the name
 * must end in -I-of-N.safetensors (re.search(r"-(\d+)-of-(\d+)\.safetensors$")),
 * I and N decimal with any number of digits, 1 <= I <= N.  Returns NULL
 * and *index, or why the name is not recognised.
 * Note: unlike Python's regex, digits are ASCII only, a final newline is
 * not skipped by the `$`, and I must fit in an int (docs/format.md). */
static const char *parse_file_index(const char *base, int *index)
{
    size_t len = strlen(base), sl = strlen(SUFFIX), p;
    long long idx, total;

    if (strcmp(base, "model" SUFFIX) == 0) {
        *index = 1;
        return NULL;
    }
    if (len < sl || strcmp(base + len - sl, SUFFIX) != 0)
        goto unrecognised;
    p = len - sl;
    if (!digits_before(base, &p, &total) || p < 4 ||
        memcmp(base + p - 4, "-of-", 4) != 0)
        goto unrecognised;
    p -= 4;
    if (!digits_before(base, &p, &idx) || p == 0 || base[p - 1] != '-')
        goto unrecognised;
    if (idx == 0)
        return "its index is 0 (file indices start at 1)";
    if (idx > total)
        return "its index is above its file count";
    if (idx > INT_MAX)
        return "its index is too large";
    *index = (int)idx;
    return NULL;
unrecognised:
    return "it is neither model.safetensors nor a name ending in "
           "-IIIII-of-NNNNN.safetensors";
}

int hfdcp_extract_file_index(const char *filename, int *index)
{
    const char *base, *why;
    int idx = 0;

    if (filename == NULL || index == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_extract_file_index: %s is NULL",
                            filename == NULL ? "the file name" : "index");
    base = strrchr(filename, '/');
    base = base ? base + 1 : filename;
    if ((why = parse_file_index(base, &idx)) != NULL)
        return hfdcp__error(HFDCP_ERR_NOT_FOUND,
                            "'%s' is not a recognised checkpoint file name: "
                            "%s",
                            filename, why);
    *index = idx;
    return HFDCP_OK;
}

/* ---- a map from a reference model ---- */

/* One (stored tensor name, file) pair of the reference: one per tensor
 * with an index, one per chunk for DCP shard files. */
typedef struct {
    const char *stored;
    size_t file; /* in ref.files */
} ref_pair;

typedef struct {
    const char *name;
    size_t logical; /* in ref.logical */
} ref_file;

/* A logical file: one file, or the per-rank shard files of one output
 * file ("shard-<digits>-" + a name carrying the same index).  `key` is
 * the name without that prefix. */
typedef struct {
    const char *key;
    const char *why; /* NULL when the name carries a file index */
    int index;       /* the index it carries, then the one given */
} ref_logical;

typedef struct {
    const char *path;
    ref_pair *pairs;
    size_t n_pairs, cap_pairs;
    ref_file *files;
    size_t n_files, cap_files;
    ref_logical *logical;
    size_t n_logical, cap_logical;
    hfdcp__strmap *file_slot;    /* file name -> index in files */
    hfdcp__strmap *logical_slot; /* logical key -> index in logical */
} ref;

static void ref_free(ref *r)
{
    free(r->pairs);
    free(r->files);
    free(r->logical);
    hfdcp__strmap_free(r->file_slot);
    hfdcp__strmap_free(r->logical_slot);
}

/* The logical file of file `name`: its key and index (or why it has
 * none). */
static ref_logical logical_file(const char *name)
{
    ref_logical lg = {.key = name};
    size_t q = 6;
    int inner;

    lg.why = parse_file_index(name, &lg.index);
    if (lg.why != NULL || strncmp(name, "shard-", 6) != 0)
        return lg;
    while (name[q] >= '0' && name[q] <= '9')
        q++;
    if (q > 6 && name[q] == '-' &&
        parse_file_index(name + q + 1, &inner) == NULL && inner == lg.index)
        lg.key = name + q + 1;
    return lg;
}

/* Records that tensor `stored` is (partly) in file `file`; both strings
 * must outlive `r`. */
static int ref_add(ref *r, const char *stored, const char *file)
{
    size_t f, l;

    if (!hfdcp__strmap_get(r->file_slot, file, &f)) {
        ref_logical lg = logical_file(file);
        if (!hfdcp__strmap_get(r->logical_slot, lg.key, &l)) {
            HFDCP_TRY(hfdcp__grow(&r->logical, &r->cap_logical, r->n_logical,
                                  sizeof *r->logical, "the reference's files"));
            l = r->n_logical++;
            r->logical[l] = lg;
            HFDCP_TRY(hfdcp__strmap_put(r->logical_slot, lg.key, l, NULL));
        }
        HFDCP_TRY(hfdcp__grow(&r->files, &r->cap_files, r->n_files,
                              sizeof *r->files, "the reference's files"));
        f = r->n_files++;
        r->files[f] = (ref_file){file, l};
        HFDCP_TRY(hfdcp__strmap_put(r->file_slot, file, f, NULL));
    }
    HFDCP_TRY(hfdcp__grow(&r->pairs, &r->cap_pairs, r->n_pairs,
                          sizeof *r->pairs, "the reference's tensors"));
    r->pairs[r->n_pairs++] = (ref_pair){stored, f};
    return HFDCP_OK;
}

static int cmp_logical_key(const void *a, const void *b)
{
    return strcmp((*(ref_logical *const *)a)->key,
                  (*(ref_logical *const *)b)->key);
}

/* Why the indices the logical files `sorted[0..n)` (in key order, so that
 * the reason given does not depend on the order of discovery) carry are
 * not exactly 1..n, written into `why`; or false if they are. */
static bool indices_not_dense(ref_logical *const *sorted, size_t n,
                              char *why, size_t size)
{
    size_t *holder;
    bool bad = false;

    for (size_t k = 0; k < n; k++)
        if (sorted[k]->why != NULL) {
            snprintf(why, size, "'%.512s' is not a recognised checkpoint "
                     "file name: %s", sorted[k]->key, sorted[k]->why);
            return true;
        }
    /* holder[i] = 1 + the position of the file carrying index i. */
    if ((holder = calloc(n + 1, sizeof *holder)) == NULL) {
        snprintf(why, size, "out of memory checking them");
        return true;
    }
    for (size_t k = 0; k < n && !bad; k++) {
        size_t i = (size_t)sorted[k]->index;
        if (i > n) {
            snprintf(why, size, "'%.512s' carries index %zu but there %s "
                     "%zu file%s", sorted[k]->key, i, n == 1 ? "is" : "are",
                     n, n == 1 ? "" : "s");
            bad = true;
        } else if (holder[i] != 0) {
            snprintf(why, size, "'%.256s' and '%.256s' both carry index %zu",
                     sorted[holder[i] - 1]->key, sorted[k]->key, i);
            bad = true;
        } else {
            holder[i] = k + 1;
        }
    }
    free(holder);
    return bad;
}

/* Gives the logical files `sorted[0..n)` the indices 1..n and returns the
 * warning saying so (malloc'd; NULL when out of memory). */
static char *renumber(const char *path, ref_logical *const *sorted,
                      size_t n, const char *why)
{
    hfdcp__buf b;
    char text[1400];
    const size_t shown = 8;

    hfdcp__buf_init(&b);
    snprintf(text, sizeof text,
             "file indices of '%.512s' are not 1..%zu (%s): files numbered "
             "in sorted name order:",
             path, n, why);
    hfdcp__buf_put(&b, text, strlen(text));
    for (size_t k = 0; k < n; k++) {
        sorted[k]->index = (int)(k + 1);
        if (k < shown) {
            snprintf(text, sizeof text, "%s '%.512s' -> %zu", k ? "," : "",
                     sorted[k]->key, k + 1);
            hfdcp__buf_put(&b, text, strlen(text));
        }
    }
    if (n > shown) {
        snprintf(text, sizeof text, ", ... (%zu files)", n);
        hfdcp__buf_put(&b, text, strlen(text));
    }
    hfdcp__buf_put(&b, "", 1);
    if (hfdcp__buf_status(&b) != HFDCP_OK) {
        hfdcp__buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* Numbers the logical files: the indices they carry when those are 1..N,
 * else 1..N in sorted name order with m's warning saying so. */
static int number_files(ref *r, hfdcp_file_map *m)
{
    ref_logical **sorted = malloc((r->n_logical + 1) * sizeof *sorted);
    char why[1200];
    int rc = HFDCP_OK;

    if (sorted == NULL)
        return hfdcp__nomem("the reference's files");
    for (size_t l = 0; l < r->n_logical; l++)
        sorted[l] = &r->logical[l];
    qsort(sorted, r->n_logical, sizeof *sorted, cmp_logical_key);
    if (indices_not_dense(sorted, r->n_logical, why, sizeof why) &&
        (m->warning = renumber(r->path, sorted, r->n_logical, why)) == NULL)
        rc = hfdcp__nomem("the reference's files");
    free(sorted);
    return rc;
}

/* Renames every pair's tensor and maps it to its file's index.  A name
 * reached with two different indices is refused. */
static int fill_map(const ref *r, const hfdcp_key_map *km, hfdcp_file_map *m)
{
    hfdcp__strmap *first = hfdcp__strmap_new(); /* new name -> first pair */
    char *name = NULL;
    const char *named = NULL; /* the stored name `name` was made from */
    int rc = HFDCP_OK;

    if (first == NULL)
        return hfdcp__nomem("the reference's tensor names");
    for (size_t p = 0; p < r->n_pairs; p++) {
        const ref_pair *pr = &r->pairs[p], *q;
        const char *file = r->files[pr->file].name, *qfile;
        int idx = r->logical[r->files[pr->file].logical].index, qidx;
        size_t k;

        if (named == NULL || strcmp(named, pr->stored) != 0) {
            free(name);
            name = NULL;
            HFDCP_CHECK(hfdcp__key_map_rename(km, pr->stored, &name));
            named = pr->stored;
        }
        if (!hfdcp__strmap_get(first, name, &k)) {
            HFDCP_CHECK(hfdcp__strmap_put(first, name, p, NULL));
            HFDCP_CHECK(hfdcp_file_map_set(m, name, idx));
            continue;
        }
        q = &r->pairs[k];
        qfile = r->files[q->file].name;
        qidx = r->logical[r->files[q->file].logical].index;
        if (qidx == idx)
            continue;
        if (strcmp(q->stored, pr->stored) == 0)
            HFDCP_FAIL(HFDCP_ERR_FORMAT,
                       "reference '%s': tensor '%s' is in file '%s' (index "
                       "%d) and in file '%s' (index %d); a tensor can have "
                       "only one file index",
                       r->path, pr->stored, qfile, qidx, file, idx);
        HFDCP_FAIL(HFDCP_ERR_ARG,
                   "reference '%s': tensors '%s' (file '%s', index %d) and "
                   "'%s' (file '%s', index %d) are both renamed to '%s', "
                   "which can have only one file index",
                   r->path, q->stored, qfile, qidx, pr->stored, file, idx,
                   name);
    }
cleanup:
    free(name);
    hfdcp__strmap_free(first);
    return rc;
}

/* Reads and parses the index file at `path` as the loaders do (no
 * "metadata" or "total_size" needed: the map reads weight_map only). */
static int read_index(const char *path, hfdcp__index *ix)
{
    char *text = NULL;
    size_t len = 0;
    int rc = hfdcp__read_small_file(path, &text, &len);

    if (rc == HFDCP_OK)
        rc = hfdcp__index_parse_lenient(text, len, path, ix, NULL);
    free(text);
    return rc;
}

/* The (tensor, file) pairs from the headers of the *.safetensors files of
 * directory `dir` (the catalog's checks included: a malformed file, or a
 * name in two files other than DCP shards, is refused). */
static int pairs_from_files(ref *r, const char *dir, hfdcp__catalog **cat)
{
    hfdcp__problem *problems = NULL;
    size_t n_problems = 0;
    int rc = hfdcp__catalog_verify(dir, cat, &problems, &n_problems);

    if (rc != HFDCP_OK) {
        /* The catalog's message is that of its last problem; report the
         * first. */
        if (n_problems > 0)
            rc = hfdcp__error(problems[0].status, "%s", problems[0].message);
        hfdcp__problems_free(problems, n_problems);
        return rc;
    }
    hfdcp__problems_free(problems, n_problems);
    for (size_t t = 0; t < (*cat)->n_tensors; t++) {
        const hfdcp__tensor *ten = &(*cat)->tensors[t];
        for (size_t c = 0; c < ten->n_chunks; c++)
            HFDCP_TRY(ref_add(r, ten->name,
                              (*cat)->files[ten->chunks[c].file].name));
    }
    return HFDCP_OK;
}

int hfdcp_file_map_from_reference(const char *reference_model_path,
                                  const hfdcp_key_map *km,
                                  hfdcp_file_map **out)
{
    const char *path = reference_model_path;
    ref r;
    hfdcp__index ix;
    hfdcp__catalog *cat = NULL;
    hfdcp_file_map *m = NULL;
    char *index_path = NULL;
    struct stat st;
    int rc = HFDCP_OK;

    memset(&r, 0, sizeof r);
    memset(&ix, 0, sizeof ix);
    if (path == NULL || out == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_file_map_from_reference: %s is NULL",
                            path == NULL ? "the reference model path"
                                         : "out");
    if (stat(path, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return hfdcp__error(HFDCP_ERR_NOT_FOUND,
                                "reference model '%s' does not exist", path);
        return hfdcp__os_error(HFDCP_ERR_IO, errno,
                               "stat of reference model '%s'", path);
    }
    if (!S_ISDIR(st.st_mode))
        return hfdcp__error(HFDCP_ERR_NOT_FOUND,
                            "reference model '%s' is not a directory", path);
    r.path = path;
    if ((r.file_slot = hfdcp__strmap_new()) == NULL ||
        (r.logical_slot = hfdcp__strmap_new()) == NULL ||
        (index_path = hfdcp__path_join(path, HFDCP_INDEX_NAME)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory reading reference '%s'",
                   path);

    if (stat(index_path, &st) == 0) {
        HFDCP_CHECK(read_index(index_path, &ix));
        for (size_t i = 0; i < ix.n; i++)
            HFDCP_CHECK(ref_add(&r, ix.names[i], ix.files[i]));
        if (ix.n == 0)
            HFDCP_FAIL(HFDCP_ERR_NOT_FOUND,
                       "reference index '%s' maps no tensor", index_path);
    } else if (errno == ENOENT) {
        HFDCP_CHECK(pairs_from_files(&r, path, &cat));
        if (r.n_pairs == 0)
            HFDCP_FAIL(HFDCP_ERR_NOT_FOUND,
                       "the files of reference '%s' hold no tensor", path);
    } else {
        HFDCP_CHECK(hfdcp__os_error(HFDCP_ERR_IO, errno, "stat of '%s'",
                                    index_path));
    }

    HFDCP_CHECK(hfdcp_file_map_create(&m));
    HFDCP_CHECK(number_files(&r, m));
    HFDCP_CHECK(fill_map(&r, km, m));
    *out = m;
    m = NULL;
cleanup:
    hfdcp_file_map_free(m);
    hfdcp__catalog_free(cat);
    hfdcp__index_free(&ix);
    free(index_path);
    ref_free(&r);
    return rc;
}
