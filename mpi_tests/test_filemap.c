// ranks: 1 2
// timeout: 120
/*
 * test_filemap.c - file maps copied from a reference model:
 * hfdcp_extract_file_index() on a table of names (against
 * scripts/filemap_oracle.py, the reference's own rules in Python),
 * hfdcp_file_map_from_reference() on the SafeTensors.jl sharded fixture
 * (with and without its index, with a key map, against the index read
 * here with cJSON and against the oracle), the fallback to sorted names
 * with its warning, DCP shard files, errors; and the end-to-end check of
 * the issue: a model saved with the map of the reference lands every
 * tensor in the file index it has in the reference (and the files come
 * out byte-identical to the reference's).
 *
 * Rank 0 prepares the files of a case, then a barrier; every rank then
 * builds its map (a local call) and checks it.  Only the end-to-end case
 * makes collective calls, all before its local checks.
 */
#include <cjson/cJSON.h>
#include <sys/stat.h>

#include "harness.h"

#define N_REF 36 /* tensors of the fixture */

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

static int rank_of(MPI_Comm comm)
{
    int r;
    MPI_Comm_rank(comm, &r);
    return r;
}

static int size_of(MPI_Comm comm)
{
    int s;
    MPI_Comm_size(comm, &s);
    return s;
}

/* The fixture directory, or one of its files (static buffer). */
static const char *fixture(const char *file)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/SafeTensors.jl/sharded%s%s",
             hfdcp_test_fixtures(), file ? "/" : "", file ? file : "");
    return path;
}

static int copy_file(const char *from, const char *to)
{
    size_t len;
    unsigned char *buf = hfdcp_test_read_file(from, &len);
    int rc = buf ? hfdcp_test_write_file(to, buf, len) : -1;
    free(buf);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char *path = hfdcp__path_join(dir, name);
    int rc = path ? hfdcp_test_write_file(path, text, strlen(text)) : -1;
    free(path);
    return rc;
}

/* Copies fixture file model-0000<k>-of-00006.safetensors to dir/name. */
static int copy_shard(int k, const char *dir, const char *name)
{
    char from[64];
    char *to = hfdcp__path_join(dir, name);
    int rc;
    snprintf(from, sizeof from, "model-%05d-of-00006.safetensors", k);
    rc = to ? copy_file(fixture(from), to) : -1;
    free(to);
    return rc;
}

/* The reference's layout read independently: the fixture's index parsed
 * with cJSON, each file name read with sscanf. */
typedef struct {
    char names[N_REF][64];
    int index[N_REF];
    int n;
} ref_layout;

static int read_layout(const char *index_path, ref_layout *out)
{
    size_t len;
    unsigned char *buf = hfdcp_test_read_file(index_path, &len);
    cJSON *root, *wm, *e;
    int bad = 0;

    memset(out, 0, sizeof *out);
    if (buf == NULL)
        return hfdcp_test_fail(__FILE__, __LINE__, "cannot read %s", index_path);
    root = cJSON_ParseWithLength((const char *)buf, len);
    free(buf);
    wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    cJSON_ArrayForEach(e, wm) {
        int k = -1, of = -1, end = 0;
        if (out->n == N_REF || !cJSON_IsString(e) ||
            sscanf(e->valuestring, "model-%5d-of-%5d.safetensors%n", &k, &of,
                   &end) != 2 ||
            e->valuestring[end] != '\0') {
            bad = 1;
            break;
        }
        snprintf(out->names[out->n], sizeof out->names[0], "%s", e->string);
        out->index[out->n++] = k;
    }
    cJSON_Delete(root);
    if (bad || out->n == 0)
        return hfdcp_test_fail(__FILE__, __LINE__, "bad index %s", index_path);
    return 0;
}

static int ref_index_of(const ref_layout *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->names[i], name) == 0)
            return l->index[i];
    return -1;
}

/* Runs the oracle on rank `who`'s process: `args`, `stdin_text` -> *out. */
static int oracle(const char *dir, const char *args, const char *stdin_text,
                  char **out)
{
    char *in = hfdcp__asprintf("%s/oracle-in-%d.json", dir, hfdcp_test_rank());
    char *cmd = NULL;
    int rc = -1;

    *out = NULL;
    if (in && hfdcp_test_write_file(in, stdin_text, strlen(stdin_text)) == 0 &&
        (cmd = hfdcp__asprintf("%s %s/filemap_oracle.py %s < %s",
                               hfdcp_test_python(), hfdcp_test_scripts(), args,
                               in)) != NULL)
        rc = hfdcp_test_run(cmd, out);
    free(in);
    free(cmd);
    return rc;
}

/* `m` against the oracle's map of reference `ref` under `rules_json`,
 * with or without a fallback as expected. */
static int check_with_oracle(const char *dir, const hfdcp_file_map *m,
                             const char *ref, const char *rules_json,
                             bool fallback)
{
    char *args = hfdcp__asprintf("map '%s'", ref), *out = NULL;
    cJSON *root, *map, *e;
    int rc, n = 0, bad = 0;

    rc = oracle(dir, args, rules_json, &out);
    free(args);
    if (rc != 0 || out == NULL) {
        free(out);
        return hfdcp_test_fail(__FILE__, __LINE__, "oracle failed on %s", ref);
    }
    root = cJSON_Parse(out);
    map = cJSON_GetObjectItemCaseSensitive(root, "map");
    if (!cJSON_IsObject(map) ||
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "fallback")) !=
            fallback)
        bad = hfdcp_test_fail(__FILE__, __LINE__, "oracle says %s", out);
    cJSON_ArrayForEach(e, map) {
        int idx = -1;
        n++;
        if (bad || hfdcp_file_map_get(m, e->string, &idx) != HFDCP_OK ||
            idx != e->valueint) {
            bad = hfdcp_test_fail(__FILE__, __LINE__,
                                  "'%s': map gives %d, oracle %d", e->string,
                                  idx, e->valueint);
            break;
        }
    }
    if (!bad && (size_t)n != hfdcp_file_map_size(m))
        bad = hfdcp_test_fail(__FILE__, __LINE__, "map has %zu entries, "
                              "oracle %d", hfdcp_file_map_size(m), n);
    cJSON_Delete(root);
    free(out);
    return bad;
}

/* Every entry of `m` (and only those) is in `l` with the same index. */
static int check_layout(const hfdcp_file_map *m, const ref_layout *l)
{
    T_CHECKF(hfdcp_file_map_size(m) == (size_t)l->n, "%zu entries",
             hfdcp_file_map_size(m));
    for (size_t i = 0; i < hfdcp_file_map_size(m); i++) {
        const char *name;
        int idx;
        T_OKCALL(hfdcp_file_map_entry(m, i, &name, &idx));
        T_CHECKF(ref_index_of(l, name) == idx, "'%s' -> %d, reference %d",
                 name, idx, ref_index_of(l, name));
    }
    return T_OK;
}

static int barrier(MPI_Comm comm)
{
    return MPI_Barrier(comm) == MPI_SUCCESS ? 0 : 1;
}

/* ------------------------------------------------------------------------
 * hfdcp_extract_file_index
 * ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    int index;   /* 0: not recognised */
    bool oracle; /* compare with the reference's rules in Python */
    const char *why;
} names[] = {
    {"model-00002-of-00008.safetensors", 2, true, NULL},
    {"model.safetensors-00002-of-00008.safetensors", 2, true, NULL},
    {"shard-00001-model-00002-of-00008.safetensors", 2, true, NULL},
    {"shard-00000-model-00002-of-00008.safetensors", 2, true, NULL},
    {"model.safetensors", 1, true, NULL},
    {"/some/dir/model-00003-of-00008.safetensors", 3, true, NULL},
    {"relative/model.safetensors", 1, true, NULL},
    {"model-00008-of-00008.safetensors", 8, true, NULL},
    {"model-00001-of-00001.safetensors", 1, true, NULL},
    {"pytorch_model-00001-of-00002.safetensors", 1, true, NULL},
    /* The reference's \d+ takes any number of digits. */
    {"model-0002-of-00008.safetensors", 2, true, NULL},
    {"model-2-of-8.safetensors", 2, true, NULL},
    {"x-000000000000000000007-of-9.safetensors", 7, true, NULL},
    {"model-123456-of-999999.safetensors", 123456, true, NULL},
    /* re.search anchored at the end: only the last -I-of-N counts. */
    {"a-1-of-2-of-3.safetensors", 2, true, NULL},
    {"model-00009-of-00008.safetensors", 0, true, "above its file count"},
    {"model-00000-of-00008.safetensors", 0, true, "index is 0"},
    {"foo.safetensors", 0, true, "neither model.safetensors"},
    {"", 0, true, "neither"},
    {"dir/", 0, true, "neither"},
    {"model.safetensors.index.json", 0, true, "neither"},
    {"model-00002-of-00008.bin", 0, true, "neither"},
    {"model-00002-of-00008.safetensors.tmp", 0, true, "neither"},
    {"00002-of-00008.safetensors", 0, true, "neither"},
    {"model-00002-of-.safetensors", 0, true, "neither"},
    {"model--of-00008.safetensors", 0, true, "neither"},
    {"model-00002_of_00008.safetensors", 0, true, "neither"},
    {"model-0x2-of-00008.safetensors", 0, true, "neither"},
    {"model--2-of-00008.safetensors", 2, true, NULL},
    {"Model.safetensors", 0, true, "neither"},
    {"model.safetensors/model-00002-of-00008", 0, true, "neither"},
    {"model-00002-of-00008.SAFETENSORS", 0, true, "neither"},
    {"model-99999999999-of-99999999999.safetensors", 0, false, "too large"},
    /* Deviations (docs/format.md): ASCII digits only, no final newline. */
    {"model-\xd9\xa2-of-\xd9\xa8.safetensors", 0, false, "neither"},
    {"model-00002-of-00008.safetensors\n", 0, false, "neither"},
};
#define N_NAMES (sizeof names / sizeof names[0])

static int filemap_should_extract_file_indices(MPI_Comm comm, const char *dir)
{
    cJSON *list = cJSON_CreateArray(), *got;
    char *text, *out = NULL;
    (void)comm;

    for (size_t i = 0; i < N_NAMES; i++) {
        int idx = -7;
        if (names[i].index > 0) {
            T_OKCALL(hfdcp_extract_file_index(names[i].name, &idx));
            T_CHECKF(idx == names[i].index, "'%s' -> %d, want %d",
                     names[i].name, idx, names[i].index);
        } else {
            T_STATUS(hfdcp_extract_file_index(names[i].name, &idx),
                     HFDCP_ERR_NOT_FOUND, "is not a recognised checkpoint "
                                          "file name");
            T_CHECKF(strstr(hfdcp_last_error(), names[i].why) != NULL,
                     "'%s': %s", names[i].name, hfdcp_last_error());
            T_CHECKF(strncmp(hfdcp_last_error() + 1, names[i].name,
                             strlen(names[i].name)) == 0,
                     "message does not name '%s': %s", names[i].name,
                     hfdcp_last_error());
            T_CHECK(idx == -7); /* untouched */
        }
        if (names[i].oracle)
            cJSON_AddItemToArray(list, cJSON_CreateString(names[i].name));
    }
    T_STATUS(hfdcp_extract_file_index(NULL, &(int){0}), HFDCP_ERR_ARG,
             "file name is NULL");
    T_STATUS(hfdcp_extract_file_index("model.safetensors", NULL),
             HFDCP_ERR_ARG, "index is NULL");

    /* The same verdicts as the reference's rules in Python. */
    text = cJSON_PrintUnformatted(list);
    cJSON_Delete(list);
    T_CHECK(text != NULL);
    T_CHECK(oracle(dir, "names", text, &out) == 0 && out != NULL);
    free(text);
    got = cJSON_Parse(out);
    T_CHECKF(cJSON_IsArray(got), "oracle: %s", out);
    free(out);
    for (size_t i = 0, k = 0; i < N_NAMES; i++) {
        if (!names[i].oracle)
            continue;
        cJSON *v = cJSON_GetArrayItem(got, (int)k++);
        T_CHECKF(v != NULL && v->valueint == names[i].index,
                 "'%s': hfdcp %d, reference %d", names[i].name,
                 names[i].index, v ? v->valueint : -1);
    }
    T_CHECK(cJSON_GetArraySize(got) > 30);
    cJSON_Delete(got);
    return T_OK;
}

/* ------------------------------------------------------------------------
 * hfdcp_file_map_from_reference
 * ---------------------------------------------------------------------- */

static int filemap_should_copy_the_layout_of_an_index(MPI_Comm comm,
                                                      const char *dir)
{
    ref_layout l;
    hfdcp_file_map *m = NULL;
    const char *name;
    int idx;
    (void)comm;

    T_CHECK(read_layout(fixture(HFDCP_INDEX_NAME), &l) == 0);
    T_CHECK(l.n == N_REF);
    T_OKCALL(hfdcp_file_map_from_reference(fixture(NULL), NULL, &m));
    T_CHECK(check_layout(m, &l) == 0);
    T_CHECK(strcmp(hfdcp_file_map_warning(m), "") == 0);
    /* Entries in the index's order; all six files used. */
    T_OKCALL(hfdcp_file_map_entry(m, 0, &name, &idx));
    T_CHECK(strcmp(name, "float16_3") == 0 && idx == 1);
    T_OKCALL(hfdcp_file_map_entry(m, N_REF - 1, &name, &idx));
    T_CHECK(strcmp(name, "bfloat16_357") == 0 && idx == 6);
    T_OKCALL(hfdcp_file_map_get(m, "float32_357", &idx));
    T_CHECK(idx == 2);
    T_OKCALL(hfdcp_file_map_get(m, "bool_357", &idx));
    T_CHECK(idx == 3);
    T_STATUS(hfdcp_file_map_entry(m, N_REF, &name, &idx), HFDCP_ERR_RANGE,
             "entry 36 of a map of 36");
    T_CHECK(rank_of(comm) != 0 ||
            check_with_oracle(dir, m, fixture(NULL), "{}", false) == 0);
    hfdcp_file_map_free(m);
    return T_OK;
}

static int filemap_should_rename_with_a_key_map(MPI_Comm comm,
                                                const char *dir)
{
    static const char *rules =
        "{\"rules\": [[\"^(bool)_3(5)?$\", \"\\\\1\"], "
        "[\"^([a-z]+)(\\\\d*)_(\\\\d+)$\", \"model.\\\\1.w\\\\2.s\\\\3\"]]}";
    ref_layout l;
    hfdcp_key_map *km, *clash;
    hfdcp_file_map *m = NULL, *untouched = (hfdcp_file_map *)&l;
    int idx;

    T_CHECK(read_layout(fixture(HFDCP_INDEX_NAME), &l) == 0);
    T_OKCALL(hfdcp_key_map_create(&km));
    /* bool_3 and bool_35 (both in file 1) become one name: allowed. */
    T_OKCALL(hfdcp_key_map_add(km, "^(bool)_3(5)?$", "\\1"));
    T_OKCALL(hfdcp_key_map_add(km, "^([a-z]+)(\\d*)_(\\d+)$",
                               "model.\\1.w\\2.s\\3"));
    T_OKCALL(hfdcp_file_map_from_reference(fixture(NULL), km, &m));
    T_CHECK(hfdcp_file_map_size(m) == N_REF - 1);
    T_OKCALL(hfdcp_file_map_get(m, "bool", &idx));
    T_CHECK(idx == 1);
    T_OKCALL(hfdcp_file_map_get(m, "model.bool.w.s357", &idx));
    T_CHECK(idx == 3);
    T_OKCALL(hfdcp_file_map_get(m, "model.float.w32.s357", &idx));
    T_CHECK(idx == 2);
    T_OKCALL(hfdcp_file_map_get(m, "model.bfloat.w16.s35", &idx));
    T_CHECK(idx == 5);
    T_STATUS(hfdcp_file_map_get(m, "float32_357", &idx), HFDCP_ERR_NOT_FOUND,
             "float32_357");
    /* Every renamed name keeps the index of the name it came from. */
    for (int i = 0; i < l.n; i++) {
        char *renamed;
        T_OKCALL(hfdcp__key_map_rename(km, l.names[i], &renamed));
        T_OKCALL(hfdcp_file_map_get(m, renamed, &idx));
        T_CHECKF(idx == l.index[i], "%s -> %s: %d, reference %d", l.names[i],
                 renamed, idx, l.index[i]);
        free(renamed);
    }
    T_CHECK(rank_of(comm) != 0 ||
            check_with_oracle(dir, m, fixture(NULL), rules, false) == 0);
    hfdcp_file_map_free(m);

    /* float32_357 (file 2) renamed onto float32_35 (file 1): refused,
     * naming both. */
    T_OKCALL(hfdcp_key_map_create(&clash));
    T_OKCALL(hfdcp_key_map_add(clash, "^float32_357$", "float32_35"));
    T_STATUS(hfdcp_file_map_from_reference(fixture(NULL), clash, &untouched),
             HFDCP_ERR_ARG, "are both renamed to 'float32_35'");
    T_CHECK(strstr(hfdcp_last_error(), "'float32_35' (file "
                                       "'model-00001-of-00006.safetensors', "
                                       "index 1)") != NULL);
    T_CHECK(strstr(hfdcp_last_error(), "'float32_357' (file "
                                       "'model-00002-of-00006.safetensors', "
                                       "index 2)") != NULL);
    T_CHECK(untouched == (hfdcp_file_map *)&l);
    hfdcp_key_map_free(clash);
    hfdcp_key_map_free(km);
    return T_OK;
}

static int filemap_should_read_headers_without_an_index(MPI_Comm comm,
                                                        const char *dir)
{
    ref_layout l;
    hfdcp_file_map *m = NULL;
    hfdcp_key_map *km;
    char name[64];
    int idx;

    int bad = 0;

    T_CHECK(read_layout(fixture(HFDCP_INDEX_NAME), &l) == 0);
    for (int k = 1; k <= 6 && rank_of(comm) == 0; k++) {
        snprintf(name, sizeof name, "model-%05d-of-00006.safetensors", k);
        bad |= copy_shard(k, dir, name);
    }
    T_CHECK(barrier(comm) == 0 && bad == 0);
    T_OKCALL(hfdcp_file_map_from_reference(dir, NULL, &m));
    T_CHECK(check_layout(m, &l) == 0);
    T_CHECK(strcmp(hfdcp_file_map_warning(m), "") == 0);
    T_CHECK(rank_of(comm) != 0 ||
            check_with_oracle(dir, m, dir, "{}", false) == 0);
    hfdcp_file_map_free(m);

    T_OKCALL(hfdcp_key_map_create(&km));
    T_OKCALL(hfdcp_key_map_add(km, "^(.*)_357$", "big.\\1"));
    T_OKCALL(hfdcp_file_map_from_reference(dir, km, &m));
    T_CHECK(hfdcp_file_map_size(m) == N_REF);
    T_OKCALL(hfdcp_file_map_get(m, "big.int64", &idx));
    T_CHECK(idx == 5);
    T_OKCALL(hfdcp_file_map_get(m, "int64_35", &idx));
    T_CHECK(idx == 1);
    T_CHECK(rank_of(comm) != 0 ||
            check_with_oracle(dir, m, dir,
                              "{\"rules\": [[\"^(.*)_357$\", \"big.\\\\1\"]]}",
                              false) == 0);
    hfdcp_file_map_free(m);
    hfdcp_key_map_free(km);
    return T_OK;
}

/* A reference directory `sub` of `dir`, created by rank 0. */
static char *subdir(MPI_Comm comm, const char *dir, const char *sub)
{
    char *p = hfdcp__path_join(dir, sub);
    if (p != NULL && rank_of(comm) == 0)
        mkdir(p, 0777);
    return p;
}

static int check_fallback(const hfdcp_file_map *m, const char *n_files,
                          const char *why)
{
    const char *w = hfdcp_file_map_warning(m);
    T_CHECKF(strstr(w, "file indices of '") != NULL && strstr(w, n_files) &&
                 strstr(w, why) &&
                 strstr(w, "files numbered in sorted name order"),
             "warning: %s", w);
    return T_OK;
}

static int filemap_should_fall_back_to_sorted_names(MPI_Comm comm,
                                                    const char *dir)
{
    char *gap = subdir(comm, dir, "gap"), *odd = subdir(comm, dir, "odd"),
         *ix = subdir(comm, dir, "ix"), *dup = subdir(comm, dir, "dup"),
         *one = subdir(comm, dir, "one"), *two = subdir(comm, dir, "two"),
         *plain = subdir(comm, dir, "plain");
    hfdcp_file_map *m;
    int idx, bad = 0;

    if (rank_of(comm) == 0) {
        /* Indices 2 and 4 for 2 files. */
        bad |= copy_shard(2, gap, "model-00002-of-00005.safetensors");
        bad |= copy_shard(4, gap, "model-00004-of-00005.safetensors");
        /* Unrecognised names: sorted a < b-... < c. */
        bad |= copy_shard(3, odd, "c.safetensors");
        bad |= copy_shard(2, odd, "a.safetensors");
        bad |= copy_shard(4, odd, "b-00001-of-00003.safetensors");
        /* An index over files 1 and 3 of 3 (the files need not exist). */
        bad |= write_text(ix, HFDCP_INDEX_NAME,
                          "{\"metadata\": {\"total_size\": 0}, "
                          "\"weight_map\": {\"z\": \"model-00003-of-00003."
                          "safetensors\", \"y\": \"model-00001-of-00003."
                          "safetensors\", \"x\": \"model-00003-of-00003."
                          "safetensors\"}}");
        /* Two files carrying index 1. */
        bad |= write_text(dup, HFDCP_INDEX_NAME,
                          "{\"metadata\": {\"total_size\": 0}, "
                          "\"weight_map\": {\"p\": \"y-00001-of-00002."
                          "safetensors\", \"q\": \"x-00001-of-00002."
                          "safetensors\"}}");
        /* One file carrying index 2; one file with a plain name. */
        bad |= copy_shard(2, one, "model-00002-of-00008.safetensors");
        bad |= copy_shard(2, two, "weights.safetensors");
        bad |= copy_shard(3, plain, "model.safetensors");
    }
    T_CHECK(barrier(comm) == 0 && bad == 0);

    T_OKCALL(hfdcp_file_map_from_reference(gap, NULL, &m));
    T_CHECK(check_fallback(m, "not 1..2", "'model-00004-of-00005.safetensors' "
                           "carries index 4 but there are 2 files") == 0);
    T_CHECK(strstr(hfdcp_file_map_warning(m), gap) != NULL);
    T_CHECK(strstr(hfdcp_file_map_warning(m),
                   "'model-00002-of-00005.safetensors' -> 1, "
                   "'model-00004-of-00005.safetensors' -> 2") != NULL);
    T_CHECK(hfdcp_file_map_size(m) == 5);
    T_OKCALL(hfdcp_file_map_get(m, "float32_357", &idx));
    T_CHECK(idx == 1);
    T_OKCALL(hfdcp_file_map_get(m, "int16_357", &idx));
    T_CHECK(idx == 2);
    T_CHECK(rank_of(comm) != 0 || check_with_oracle(dir, m, gap, "{}", true) == 0);
    hfdcp_file_map_free(m);

    T_OKCALL(hfdcp_file_map_from_reference(odd, NULL, &m));
    T_CHECK(check_fallback(m, "not 1..3", "'a.safetensors' is not a "
                           "recognised checkpoint file name") == 0);
    T_OKCALL(hfdcp_file_map_get(m, "float32_357", &idx)); /* a */
    T_CHECK(idx == 1);
    T_OKCALL(hfdcp_file_map_get(m, "uint8_357", &idx)); /* b-00001-of-00003 */
    T_CHECK(idx == 2);
    T_OKCALL(hfdcp_file_map_get(m, "bool_357", &idx)); /* c */
    T_CHECK(idx == 3);
    T_CHECK(rank_of(comm) != 0 || check_with_oracle(dir, m, odd, "{}", true) == 0);
    hfdcp_file_map_free(m);

    T_OKCALL(hfdcp_file_map_from_reference(ix, NULL, &m));
    T_CHECK(check_fallback(m, "not 1..2", "carries index 3 but there are "
                           "2 files") == 0);
    T_CHECK(hfdcp_file_map_size(m) == 3);
    T_OKCALL(hfdcp_file_map_get(m, "y", &idx));
    T_CHECK(idx == 1);
    T_OKCALL(hfdcp_file_map_get(m, "x", &idx));
    T_CHECK(idx == 2);
    T_OKCALL(hfdcp_file_map_get(m, "z", &idx));
    T_CHECK(idx == 2);
    T_CHECK(rank_of(comm) != 0 || check_with_oracle(dir, m, ix, "{}", true) == 0);
    hfdcp_file_map_free(m);

    T_OKCALL(hfdcp_file_map_from_reference(dup, NULL, &m));
    T_CHECK(check_fallback(m, "not 1..2", "'x-00001-of-00002.safetensors' "
                           "and 'y-00001-of-00002.safetensors' both carry "
                           "index 1") == 0);
    T_OKCALL(hfdcp_file_map_get(m, "q", &idx)); /* x-... sorts first */
    T_CHECK(idx == 1);
    T_OKCALL(hfdcp_file_map_get(m, "p", &idx));
    T_CHECK(idx == 2);
    T_CHECK(rank_of(comm) != 0 || check_with_oracle(dir, m, dup, "{}", true) == 0);
    hfdcp_file_map_free(m);

    /* One file: index 1 whatever it carries, with a warning when that is
     * not 1 (the reference keeps 2 here, silently, and would save into
     * model-00002-of-00002 alone). */
    T_OKCALL(hfdcp_file_map_from_reference(one, NULL, &m));
    T_CHECK(check_fallback(m, "not 1..1", "carries index 2 but there is "
                           "1 file") == 0);
    T_OKCALL(hfdcp_file_map_get(m, "float32_357", &idx));
    T_CHECK(idx == 1);
    hfdcp_file_map_free(m);
    T_OKCALL(hfdcp_file_map_from_reference(two, NULL, &m));
    T_CHECK(check_fallback(m, "not 1..1", "'weights.safetensors' is not a "
                           "recognised") == 0);
    T_OKCALL(hfdcp_file_map_get(m, "float32_357", &idx));
    T_CHECK(idx == 1);
    hfdcp_file_map_free(m);
    T_OKCALL(hfdcp_file_map_from_reference(plain, NULL, &m));
    T_CHECK(strcmp(hfdcp_file_map_warning(m), "") == 0);
    T_CHECK(hfdcp_file_map_size(m) == 2);
    T_OKCALL(hfdcp_file_map_get(m, "bool_357", &idx));
    T_CHECK(idx == 1);
    T_CHECK(rank_of(comm) != 0 ||
            check_with_oracle(dir, m, plain, "{}", false) == 0);
    hfdcp_file_map_free(m);

    free(gap);
    free(odd);
    free(ix);
    free(dup);
    free(one);
    free(two);
    free(plain);
    return T_OK;
}

/* A DCP shard file holding rows [row, row + 1) of the F32 tensor `name`
 * of shape [2, 3]. */
static int write_dcp_shard(const char *dir, const char *file,
                           const char *name, int64_t row)
{
    int64_t shape[2] = {1, 3}, off[2] = {row, 0};
    hfdcp__entry e = {(char *)name, HFDCP_F32, 2, shape, off, 0, 12, 0};
    hfdcp__header h = {&e, 1, NULL, 0, false, true, 0, 0, 0, false, NULL};
    float data[3] = {(float)row, 1.5f, -2.0f};
    char *hdr = NULL, *path = hfdcp__path_join(dir, file);
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = -1;

    if (path != NULL && hfdcp__header_serialize(&h, &hdr, &len) == HFDCP_OK &&
        (buf = malloc(len + sizeof data)) != NULL) {
        memcpy(buf, hdr, len);
        memcpy(buf + len, data, sizeof data);
        rc = hfdcp_test_write_file(path, buf, len + sizeof data);
    }
    free(buf);
    free(hdr);
    free(path);
    return rc;
}

static int filemap_should_group_dcp_shard_files(MPI_Comm comm,
                                                const char *dir)
{
    char *dcp = subdir(comm, dir, "dcp"), *split = subdir(comm, dir, "split"),
         *ix = subdir(comm, dir, "ix");
    hfdcp_file_map *m = NULL, *untouched = (hfdcp_file_map *)dir;
    int idx, bad = 0;

    if (rank_of(comm) == 0) {
        /* "w" in two rank files of output file 1, "v" in output file 2. */
        bad |= write_dcp_shard(dcp, "shard-00001-model-00001-of-00002."
                                    "safetensors", "w", 0);
        bad |= write_dcp_shard(dcp, "shard-00002-model-00001-of-00002."
                                    "safetensors", "w", 1);
        bad |= write_dcp_shard(dcp, "shard-00001-model-00002-of-00002."
                                    "safetensors", "v", 0);
        bad |= write_dcp_shard(dcp, "shard-00002-model-00002-of-00002."
                                    "safetensors", "v", 1);
        /* "w" split over two output files. */
        bad |= write_dcp_shard(split, "shard-00001-model-00001-of-00002."
                                      "safetensors", "w", 0);
        bad |= write_dcp_shard(split, "shard-00002-model-00002-of-00002."
                                      "safetensors", "w", 1);
        /* An index naming shard files. */
        bad |= write_text(ix, HFDCP_INDEX_NAME,
                          "{\"metadata\": {\"total_size\": 0}, "
                          "\"weight_map\": {"
                          "\"a\": \"shard-00001-model-00001-of-00002."
                          "safetensors\", "
                          "\"b\": \"shard-00002-model-00001-of-00002."
                          "safetensors\", "
                          "\"c\": \"shard-00001-model-00002-of-00002."
                          "safetensors\"}}");
    }
    T_CHECK(barrier(comm) == 0 && bad == 0);

    /* Four files, two output files: 1..2, no fallback (the reference
     * would count four files and renumber them). */
    T_OKCALL(hfdcp_file_map_from_reference(dcp, NULL, &m));
    T_CHECKF(strcmp(hfdcp_file_map_warning(m), "") == 0, "%s",
             hfdcp_file_map_warning(m));
    T_CHECK(hfdcp_file_map_size(m) == 2);
    T_OKCALL(hfdcp_file_map_get(m, "w", &idx));
    T_CHECK(idx == 1);
    T_OKCALL(hfdcp_file_map_get(m, "v", &idx));
    T_CHECK(idx == 2);
    hfdcp_file_map_free(m);

    T_OKCALL(hfdcp_file_map_from_reference(ix, NULL, &m));
    T_CHECK(strcmp(hfdcp_file_map_warning(m), "") == 0);
    T_OKCALL(hfdcp_file_map_get(m, "a", &idx));
    T_CHECK(idx == 1);
    T_OKCALL(hfdcp_file_map_get(m, "b", &idx));
    T_CHECK(idx == 1);
    T_OKCALL(hfdcp_file_map_get(m, "c", &idx));
    T_CHECK(idx == 2);
    hfdcp_file_map_free(m);

    T_STATUS(hfdcp_file_map_from_reference(split, NULL, &untouched),
             HFDCP_ERR_FORMAT, "tensor 'w' is in file "
                               "'shard-00001-model-00001-of-00002."
                               "safetensors' (index 1) and in file "
                               "'shard-00002-model-00002-of-00002."
                               "safetensors' (index 2)");
    T_CHECK(untouched == (hfdcp_file_map *)dir);
    free(dcp);
    free(split);
    free(ix);
    return T_OK;
}

static int filemap_should_refuse_bad_references(MPI_Comm comm,
                                                const char *dir)
{
    char *empty = subdir(comm, dir, "empty"), *badix = subdir(comm, dir, "badix"),
         *badval = subdir(comm, dir, "badval"), *nomap = subdir(comm, dir, "nomap"),
         *badhdr = subdir(comm, dir, "badhdr"), *ixdir = subdir(comm, dir, "ixdir"),
         *dupl = subdir(comm, dir, "dupl"), *none = subdir(comm, dir, "none");
    char *missing = hfdcp__path_join(dir, "missing"),
         *file = hfdcp__path_join(dir, "file.safetensors"),
         *ixsub = hfdcp__path_join(ixdir, HFDCP_INDEX_NAME);
    hfdcp_file_map *m = (hfdcp_file_map *)dir;
    int bad = 0;

    if (rank_of(comm) == 0) {
        char *p;
        bad |= write_text(badix, HFDCP_INDEX_NAME, "{\"metadata\": ");
        bad |= write_text(badval, HFDCP_INDEX_NAME,
                          "{\"metadata\": {\"total_size\": 0}, "
                          "\"weight_map\": {\"a\": 3}}");
        bad |= write_text(nomap, HFDCP_INDEX_NAME,
                          "{\"metadata\": {\"total_size\": 0}, "
                          "\"weight_map\": {}}");
        /* N = 16 with 2 bytes after the prefix; then a valid file with no
         * tensor (N = 8: "{}" and 6 spaces). */
        p = hfdcp__path_join(badhdr, "model.safetensors");
        bad |= !p || hfdcp_test_write_file(p, "\x10\0\0\0\0\0\0\0{}", 10);
        free(p);
        p = hfdcp__path_join(none, "model.safetensors");
        bad |= !p || hfdcp_test_write_file(p, "\x08\0\0\0\0\0\0\0{}      ",
                                           16);
        free(p);
        bad |= mkdir(ixsub, 0777);
        bad |= copy_shard(2, dupl, "model-00001-of-00002.safetensors");
        bad |= copy_shard(2, dupl, "model-00002-of-00002.safetensors");
        bad |= copy_shard(2, dir, "file.safetensors");
    }
    T_CHECK(barrier(comm) == 0 && bad == 0);

    T_STATUS(hfdcp_file_map_from_reference(missing, NULL, &m),
             HFDCP_ERR_NOT_FOUND, "does not exist");
    T_CHECK(strstr(hfdcp_last_error(), missing) != NULL);
    T_STATUS(hfdcp_file_map_from_reference(file, NULL, &m),
             HFDCP_ERR_NOT_FOUND, "is not a directory");
    T_STATUS(hfdcp_file_map_from_reference(empty, NULL, &m),
             HFDCP_ERR_NOT_FOUND, "no .safetensors file");
    T_STATUS(hfdcp_file_map_from_reference(badix, NULL, &m),
             HFDCP_ERR_FORMAT, HFDCP_INDEX_NAME);
    T_STATUS(hfdcp_file_map_from_reference(badval, NULL, &m),
             HFDCP_ERR_FORMAT, "weight_map entry 'a' is not a string");
    T_STATUS(hfdcp_file_map_from_reference(nomap, NULL, &m),
             HFDCP_ERR_NOT_FOUND, "maps no tensor");
    T_STATUS(hfdcp_file_map_from_reference(badhdr, NULL, &m),
             HFDCP_ERR_FORMAT, "model.safetensors");
    T_STATUS(hfdcp_file_map_from_reference(none, NULL, &m),
             HFDCP_ERR_NOT_FOUND, "hold no tensor");
    T_STATUS(hfdcp_file_map_from_reference(ixdir, NULL, &m), HFDCP_ERR_IO,
             "not a regular file");
    /* Without an index, one tensor name in two plain files. */
    T_STATUS(hfdcp_file_map_from_reference(dupl, NULL, &m), HFDCP_ERR_FORMAT,
             "tensor 'float32_357' is in more than one file");
    T_STATUS(hfdcp_file_map_from_reference(NULL, NULL, &m), HFDCP_ERR_ARG,
             "path is NULL");
    T_STATUS(hfdcp_file_map_from_reference(fixture(NULL), NULL, NULL),
             HFDCP_ERR_ARG, "out is NULL");
    T_CHECK(m == (hfdcp_file_map *)dir);

    /* The accessors on a NULL or empty map. */
    T_CHECK(hfdcp_file_map_size(NULL) == 0);
    T_CHECK(strcmp(hfdcp_file_map_warning(NULL), "") == 0);
    T_STATUS(hfdcp_file_map_entry(NULL, 0, NULL, NULL), HFDCP_ERR_ARG,
             "NULL");
    T_OKCALL(hfdcp_file_map_create(&m));
    T_CHECK(hfdcp_file_map_size(m) == 0 &&
            strcmp(hfdcp_file_map_warning(m), "") == 0);
    T_STATUS(hfdcp_file_map_entry(m, 0, NULL, NULL), HFDCP_ERR_RANGE,
             "entry 0 of a map of 0 entries");
    T_OKCALL(hfdcp_file_map_set(m, "a", 2));
    T_OKCALL(hfdcp_file_map_set(m, "b", 1));
    T_OKCALL(hfdcp_file_map_set(m, "a", 3)); /* replaces, keeps its place */
    {
        const char *name = NULL;
        int idx = 0;
        T_CHECK(hfdcp_file_map_size(m) == 2);
        T_OKCALL(hfdcp_file_map_entry(m, 0, &name, &idx));
        T_CHECK(strcmp(name, "a") == 0 && idx == 3);
        T_OKCALL(hfdcp_file_map_entry(m, 1, NULL, &idx));
        T_CHECK(idx == 1);
    }
    hfdcp_file_map_free(m);

    free(empty);
    free(badix);
    free(badval);
    free(nomap);
    free(badhdr);
    free(ixdir);
    free(dupl);
    free(none);
    free(missing);
    free(file);
    free(ixsub);
    return T_OK;
}

/* ------------------------------------------------------------------------
 * End to end: save with the layout of the reference
 * ---------------------------------------------------------------------- */

typedef struct {
    hfdcp_tensor_info info;
    uint64_t bytes;
    unsigned char *data; /* the whole tensor, from the reference */
    unsigned char *back; /* the whole tensor, read back from the save */
} e2e_tensor;

/* Loads every tensor of `path` whole into t[i].data or t[i].back
 * (collective).  The names and order of `t` come from the first call. */
static int load_all(MPI_Comm comm, const char *path, e2e_tensor *t, size_t n,
                    bool back)
{
    hfdcp_reader *r;
    int64_t zeros[HFDCP_MAX_NDIM] = {0};
    int rc;

    if ((rc = hfdcp_reader_open(comm, path, NULL, &r)) != HFDCP_OK)
        return rc;
    for (size_t i = 0; i < n && rc == HFDCP_OK; i++)
        rc = hfdcp_reader_add(r, t[i].info.name, t[i].info.dtype,
                              t[i].info.ndim, zeros, t[i].info.shape,
                              back ? t[i].back : t[i].data);
    if (rc == HFDCP_OK)
        rc = hfdcp_reader_load(r);
    else
        hfdcp_reader_load(r); /* reports the add's error on every rank */
    hfdcp_reader_free(r);
    return rc;
}

static int filemap_should_save_with_the_layout_of_a_reference(MPI_Comm comm,
                                                              const char *dir)
{
    const int rank = rank_of(comm), P = size_of(comm);
    hfdcp_file_map *m = NULL;
    hfdcp_reader *ref;
    hfdcp_writer *w;
    hfdcp_save_options so;
    e2e_tensor t[N_REF];
    ref_layout want, got;
    char *out = hfdcp__path_join(dir, "saved"), *ix;
    size_t n;
    int add_rc = HFDCP_OK;

    memset(t, 0, sizeof t);
    T_OKCALL(hfdcp_file_map_from_reference(fixture(NULL), NULL, &m));

    /* Names, dtypes and shapes of the reference, and its data. */
    T_OKCALL(hfdcp_reader_open(comm, fixture(NULL), NULL, &ref));
    n = hfdcp_reader_count(ref);
    T_CHECK(n == N_REF);
    for (size_t i = 0; i < n; i++) {
        T_OKCALL(hfdcp_reader_tensor(ref, i, &t[i].info));
        T_OKCALL(hfdcp__tensor_bytes(t[i].info.dtype, t[i].info.ndim,
                                     t[i].info.shape, "t", &t[i].bytes));
        T_CHECK(t[i].info.ndim >= 1 && t[i].bytes > 0);
        T_CHECK((t[i].data = malloc(t[i].bytes)) != NULL);
        T_CHECK((t[i].back = calloc(1, t[i].bytes)) != NULL);
    }
    T_OKCALL(load_all(comm, fixture(NULL), t, n, false));

    /* Each rank saves its block of rows of every tensor. */
    hfdcp_save_options_init(&so);
    so.file_map = m;
    /* The fixture has no CRC-32C (Python wrote it): compared byte for
     * byte, the save writes none either. */
    so.no_checksums = 1;
    T_OKCALL(hfdcp_writer_open(comm, out, &so, &w));
    hfdcp_file_map_free(m); /* the writer keeps its own copy */
    for (size_t i = 0; i < n; i++) {
        const hfdcp_tensor_info *ti = &t[i].info;
        int64_t rows = ti->shape[0], lo = rows * rank / P,
                hi = rows * (rank + 1) / P, off[3] = {lo, 0, 0}, size[3];
        uint64_t row_bytes = t[i].bytes / (uint64_t)rows;
        if (hi == lo)
            continue;
        for (int d = 0; d < ti->ndim; d++)
            size[d] = d == 0 ? hi - lo : ti->shape[d];
        /* An error here is reported again by commit on every rank: go on
         * to the commit rather than leave the other ranks waiting. */
        if (add_rc == HFDCP_OK)
            add_rc = hfdcp_writer_add(w, ti->name, ti->dtype, ti->ndim,
                                      ti->shape, off, size,
                                      t[i].data + (uint64_t)lo * row_bytes);
    }
    T_OKCALL(hfdcp_writer_commit(w));
    T_OKCALL(add_rc);
    hfdcp_writer_free(w);
    T_OKCALL(load_all(comm, out, t, n, true));
    hfdcp_reader_free(ref);

    /* Local checks, after every collective call. */
    for (size_t i = 0; i < n; i++) {
        T_CHECKF(memcmp(t[i].data, t[i].back, t[i].bytes) == 0, "%s",
                 t[i].info.name);
        free(t[i].data);
        free(t[i].back);
    }
    /* Every tensor in the file index it has in the reference, read from
     * both indices with cJSON. */
    T_CHECK(read_layout(fixture(HFDCP_INDEX_NAME), &want) == 0);
    T_CHECK((ix = hfdcp__path_join(out, HFDCP_INDEX_NAME)) != NULL);
    T_CHECK(read_layout(ix, &got) == 0);
    free(ix);
    T_CHECK(got.n == N_REF);
    for (int i = 0; i < got.n; i++)
        T_CHECKF(got.index[i] == ref_index_of(&want, got.names[i]),
                 "%s: file %d, reference %d", got.names[i], got.index[i],
                 ref_index_of(&want, got.names[i]));
    /* The fixture was written by Python's safetensors with the same
     * layout rules: the six files are byte-identical. */
    for (int k = 1; k <= 6; k++) {
        char name[64], *path;
        unsigned char *a, *b;
        size_t la, lb;
        snprintf(name, sizeof name, "model-%05d-of-00006.safetensors", k);
        T_CHECK((path = hfdcp__path_join(out, name)) != NULL);
        a = hfdcp_test_read_file(path, &la);
        b = hfdcp_test_read_file(fixture(name), &lb);
        free(path);
        T_CHECKF(a && b && la == lb && memcmp(a, b, la) == 0,
                 "%s differs from the reference's", name);
        free(a);
        free(b);
    }
    free(out);
    return T_OK;
}

/* Rank 0 saves the whole tensors a and b (4 x F32) to `path` with the
 * file map `m` (NULL: none); the other ranks add nothing. */
static int save_two(MPI_Comm comm, const char *path, const hfdcp_file_map *m)
{
    static const float v[4] = {1, 2, 3, 4};
    int64_t shape[1] = {4}, zero[1] = {0};
    hfdcp_save_options so;
    hfdcp_writer *w;

    hfdcp_save_options_init(&so);
    so.file_map = m;
    T_OKCALL(hfdcp_writer_open(comm, path, &so, &w));
    if (rank_of(comm) == 0) {
        T_OKCALL(hfdcp_writer_add(w, "a", HFDCP_F32, 1, shape, zero, shape,
                                  v));
        T_OKCALL(hfdcp_writer_add(w, "b", HFDCP_F32, 1, shape, zero, shape,
                                  v));
    }
    T_OKCALL(hfdcp_writer_commit(w));
    hfdcp_writer_free(w);
    return T_OK;
}

/* A reference of one file, model.safetensors without an index (as
 * save_pretrained writes it): the file is index 1, as the reference
 * module's _extract_file_index reads it, and a save with that map is
 * named as PyTorch's HuggingFace writer names a save with the same
 * fqn_to_index_mapping: model-00001-of-00001.safetensors and an index. */
static int filemap_should_save_a_one_file_reference_as_file_1_of_1(
    MPI_Comm comm, const char *dir)
{
    static const char want_ix[] =
        "{\n  \"metadata\": {\n    \"total_size\": 32\n  },\n"
        "  \"weight_map\": {\n"
        "    \"a\": \"model-00001-of-00001.safetensors\",\n"
        "    \"b\": \"model-00001-of-00001.safetensors\"\n  }\n}";
    char *ref = hfdcp__path_join(dir, "ref");
    char *out = hfdcp__path_join(dir, "out");
    char *listed[8], p[1024];
    hfdcp_file_map *m = NULL;
    size_t n = 0, len = 0;
    unsigned char *ix = NULL;
    int idx = 0, bad = 0;

    T_CHECK(ref != NULL && out != NULL);
    T_CHECK(save_two(comm, ref, NULL) == T_OK);
    snprintf(p, sizeof p, "%s/%s", ref, HFDCP_INDEX_NAME);
    if (rank_of(comm) == 0)
        bad = remove(p) != 0;
    T_CHECK(barrier(comm) == 0 && bad == 0);
    T_OKCALL(hfdcp_file_map_from_reference(ref, NULL, &m));
    T_CHECK(hfdcp_file_map_size(m) == 2);
    T_OKCALL(hfdcp_file_map_get(m, "b", &idx));
    T_CHECK(idx == 1 && strcmp(hfdcp_file_map_warning(m), "") == 0);
    T_CHECK(save_two(comm, out, m) == T_OK);
    hfdcp_file_map_free(m);
    if (rank_of(comm) == 0) {
        T_CHECK(hfdcp_test_list_dir(out, listed, 8, &n) == T_OK);
        bad = n != 2 ||
              strcmp(listed[0], "model-00001-of-00001.safetensors") != 0 ||
              strcmp(listed[1], HFDCP_INDEX_NAME) != 0;
        hfdcp_test_free_names(listed, n);
        T_CHECKF(!bad, "%zu files in %s", n, out);
        snprintf(p, sizeof p, "%s/%s", out, HFDCP_INDEX_NAME);
        T_CHECK((ix = hfdcp_test_read_file(p, &len)) != NULL);
        bad = len != strlen(want_ix) || memcmp(ix, want_ix, len) != 0;
        free(ix);
        T_CHECKF(!bad, "the index of %s", out);
    }
    free(ref);
    free(out);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"filemap_should_extract_file_indices",
     filemap_should_extract_file_indices, 1},
    {"filemap_should_copy_the_layout_of_an_index",
     filemap_should_copy_the_layout_of_an_index, 1},
    {"filemap_should_save_a_one_file_reference_as_file_1_of_1",
     filemap_should_save_a_one_file_reference_as_file_1_of_1, 1},
    {"filemap_should_rename_with_a_key_map",
     filemap_should_rename_with_a_key_map, 1},
    {"filemap_should_read_headers_without_an_index",
     filemap_should_read_headers_without_an_index, 1},
    {"filemap_should_fall_back_to_sorted_names",
     filemap_should_fall_back_to_sorted_names, 1},
    {"filemap_should_group_dcp_shard_files",
     filemap_should_group_dcp_shard_files, 1},
    {"filemap_should_refuse_bad_references",
     filemap_should_refuse_bad_references, 1},
    {"filemap_should_save_with_the_layout_of_a_reference",
     filemap_should_save_with_the_layout_of_a_reference, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
