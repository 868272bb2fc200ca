// ranks: 1 2 3 4
// timeout: 300
/*
 * test_lenient.c - hfdcp reads what the ecosystem reads, and `hfdcp
 * verify` stays strict.
 *
 * Copies of the SafeTensors.jl sharded fixture (the fixture itself is
 * never written) whose index carries the edits that transformers and the
 * Hub's parser accept: metadata.total_size removed or wrong, no metadata
 * object, a tensor of a file missing from weight_map.  The catalog, the
 * reader and `hfdcp inspect` accept them, and every tensor loads with the
 * bytes of the unedited fixture; `hfdcp verify` prints a warning naming
 * the index and the field or tensor and exits 0, `hfdcp verify --strict`
 * exits 1 with the message a strict reader gave.  Edits that make the
 * data ambiguous or unsafe (a tensor in two files, an index naming a file
 * that does not exist or a tensor no file holds, a file cut short) are
 * refused everywhere.
 *
 * DCP shard files written by the library's sharded save of the same
 * tensors, then edited: fields other than saved_offsets in
 * DCP_SHARDING_INFO entries are ignored; a box saved by two files (a
 * replicated tensor saved without deduplication) is read from the first
 * file in name order, by the reader and by consolidation; a box that
 * overlaps another in part is still refused.
 *
 * The tool runs on rank 0 (verify starts no MPI runtime; inspect runs as
 * a singleton, only in the one-rank run).  Collective calls come first in
 * each check, so that a failing rank never leaves the others waiting.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define FIXTURE "SafeTensors.jl/sharded"
#define INDEX HFDCP_INDEX_NAME
#define N_FILES 6

/* ------------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------- */

/* `text` with its one occurrence of `from` replaced by `to` (malloc'd), or
 * NULL when `from` is not there exactly once. */
static char *replace_once(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    if (at == NULL || strstr(at + 1, from) != NULL)
        return NULL;
    return hfdcp__asprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
}

/* Copies file `src` to `dst`; with `edit`, its header has every `from`
 * replaced by `to` (at least one) and every data byte is xor'ed with
 * `flip`.  Rank 0's work; 0 on success. */
static int copy_file(const char *src, const char *dst, bool edit, const char *from,
                     const char *to, unsigned char flip)
{
    size_t len, n_from = from ? strlen(from) : 0;
    unsigned char *b = hfdcp_test_read_file(src, &len);
    hfdcp__buf out;
    uint64_t n = 0, edits = 0;
    int rc;

    if (b == NULL)
        return hfdcp_test_fail(__FILE__, __LINE__, "cannot read %s", src);
    if (!edit) {
        rc = hfdcp_test_write_file(dst, b, len);
        free(b);
        return rc;
    }
    for (int k = 0; k < 8; k++)
        n |= (uint64_t)b[k] << (8 * k);
    hfdcp__buf_init(&out);
    hfdcp__buf_put(&out, b, 8); /* the length, set below */
    for (uint64_t i = 8; i < 8 + n; i++) {
        if (from && i + n_from <= 8 + n && memcmp(b + i, from, n_from) == 0) {
            hfdcp__buf_put(&out, to, strlen(to));
            i += n_from - 1;
            edits++;
            continue;
        }
        hfdcp__buf_put(&out, b + i, 1);
    }
    for (size_t i = 8 + n; i < len; i++) {
        unsigned char c = b[i] ^ flip;
        hfdcp__buf_put(&out, &c, 1);
    }
    n = out.len - 8 - (len - 8 - n);
    for (int k = 0; k < 8 && out.data; k++)
        ((unsigned char *)out.data)[k] = (unsigned char)(n >> (8 * k));
    rc = hfdcp__buf_status(&out) != HFDCP_OK || (from && edits == 0)
             ? hfdcp_test_fail(__FILE__, __LINE__, "%s: '%s' not found", src, from)
             : hfdcp_test_write_file(dst, out.data, out.len);
    hfdcp__buf_free(&out);
    free(b);
    return rc;
}

/* Rank 0 copies the fixture's files into `d`, with its index edited
 * (`from` -> `to`, once; NULL: unchanged).  0 on success. */
static int copy_fixture(const char *d, const char *from, const char *to)
{
    char *fix = hfdcp__path_join(hfdcp_test_fixtures(), FIXTURE);
    char *ipath = hfdcp__path_join(fix, INDEX), *text = NULL, *edited;
    size_t len;
    int bad = mkdir(d, 0755) != 0;

    for (int i = 1; i <= N_FILES && !bad; i++) {
        char name[64], *a, *b;
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", i, N_FILES);
        a = hfdcp__path_join(fix, name);
        b = hfdcp__path_join(d, name);
        bad += copy_file(a, b, false, NULL, NULL, 0);
        free(a);
        free(b);
    }
    text = (char *)hfdcp_test_read_file(ipath, &len);
    edited = text == NULL ? NULL
             : from   ? replace_once(text, from, to)
                      : hfdcp__strdup(text);
    free(ipath);
    if (edited == NULL)
        bad += hfdcp_test_fail(__FILE__, __LINE__, "fixture index: '%s' not found once",
                               from ? from : "");
    ipath = hfdcp__path_join(d, INDEX);
    if (!bad)
        bad += hfdcp_test_write_file(ipath, edited, strlen(edited)) != 0;
    free(ipath);
    free(edited);
    free(text);
    free(fix);
    return bad;
}

/* "<dir>/<name>" on every rank. */
static char *sub(const char *dir, const char *name)
{
    return hfdcp__path_join(dir, name);
}

/* ------------------------------------------------------------------------
 * Loading every tensor
 * ---------------------------------------------------------------------- */

/* Every rank loads every tensor of `path` whole into *out: per tensor
 * its name, dtype, shape and bytes, in name order.  Collective. */
static int load_all(MPI_Comm comm, const char *path, hfdcp__buf *out)
{
    hfdcp_reader *r = NULL;
    unsigned char **data = NULL;
    size_t n = 0;
    int rc = hfdcp_reader_open(comm, path, NULL, &r);

    hfdcp__buf_init(out);
    if (rc != HFDCP_OK)
        return rc;
    n = hfdcp_reader_count(r);
    if ((data = calloc(n + 1, sizeof *data)) == NULL)
        rc = HFDCP_ERR_NOMEM;
    for (size_t i = 0; i < n && rc == HFDCP_OK; i++) {
        hfdcp_tensor_info t;
        int64_t zero[HFDCP_MAX_NDIM] = {0};
        uint64_t bytes = 0;
        if ((rc = hfdcp_reader_tensor(r, i, &t)) == HFDCP_OK &&
            (rc = hfdcp__tensor_bytes(t.dtype, t.ndim, t.shape, t.name, &bytes)) ==
                HFDCP_OK &&
            (data[i] = malloc(bytes + 1)) != NULL)
            rc = hfdcp_reader_add(r, t.name, t.dtype, t.ndim, zero, t.shape, data[i]);
    }
    rc = hfdcp_reader_load(r); /* every rank, whatever add said: agreed */
    for (size_t i = 0; i < n && rc == HFDCP_OK; i++) {
        hfdcp_tensor_info t;
        uint64_t bytes = 0;
        hfdcp_reader_tensor(r, i, &t);
        hfdcp__tensor_bytes(t.dtype, t.ndim, t.shape, t.name, &bytes);
        hfdcp__buf_put_str(out, t.name);
        hfdcp__buf_put_u64(out, (uint64_t)t.dtype);
        for (int d = 0; d < t.ndim; d++)
            hfdcp__buf_put_u64(out, (uint64_t)t.shape[d]);
        hfdcp__buf_put(out, data[i], (size_t)bytes);
    }
    for (size_t i = 0; data && i < n; i++)
        free(data[i]);
    free(data);
    hfdcp_reader_free(r);
    return rc;
}

/* `path` loads, on every rank, exactly what `want` holds.  Collective. */
static int expect_load(MPI_Comm comm, const char *path, const hfdcp__buf *want)
{
    hfdcp__buf got;
    int rc = load_all(comm, path, &got);
    bool ok = rc == HFDCP_OK && got.len == want->len &&
              memcmp(got.data, want->data, got.len) == 0;
    if (!ok)
        fprintf(stderr, "[rank %d] %s: %s (%s), %zu bytes loaded, %zu wanted\n",
                hfdcp_test_rank(), path, rc == HFDCP_OK ? "other tensors" : "refused",
                hfdcp_last_error(), got.len, want->len);
    hfdcp__buf_free(&got);
    return hfdcp_test_all_ok(comm, ok) ? T_OK : 1;
}

/* The unedited fixture's tensors into *want (agreed). */
static int load_fixture(MPI_Comm comm, hfdcp__buf *want)
{
    char *fix = hfdcp__path_join(hfdcp_test_fixtures(), FIXTURE);
    int rc = load_all(comm, fix, want);
    free(fix);
    return hfdcp_test_agreed_ok(comm, rc, "loading the fixture") && want->len > 4305 ? T_OK : 1;
}

/* ------------------------------------------------------------------------
 * The tool, on rank 0
 * ---------------------------------------------------------------------- */

/* Runs `hfdcp ARGS` alone; its exit status, stdout and stderr in *out. */
static int tool(const char *args, char **out)
{
    char cmd[4096];
    hfdcp_test_scrub_launcher();
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", hfdcp_test_singleton_tool(), args);
    return hfdcp_test_run(cmd, out);
}

/* `hfdcp ARGS PATH` exits `want` and prints s1 and s2 (either may be
 * NULL).  0 on success. */
static int expect_tool(const char *args, const char *path, int want, const char *s1,
                       const char *s2)
{
    char *cmd = hfdcp__asprintf("%s '%s'", args, path), *out = NULL;
    int st = tool(cmd, &out), bad = 0;
    if (st != want || (s1 && (!out || !strstr(out, s1))) || (s2 && (!out || !strstr(out, s2))))
        bad = hfdcp_test_fail(__FILE__, __LINE__, "hfdcp %s: exit %d (wanted %d), wanted "
                              "\"%s\" and \"%s\" in:\n%s", cmd, st, want, s1 ? s1 : "",
                              s2 ? s2 : "", out ? out : "");
    free(out);
    free(cmd);
    return bad;
}

/* ------------------------------------------------------------------------
 * The index: what the loaders accept, what is refused
 * ---------------------------------------------------------------------- */

#define TOTAL "\"total_size\": 4305"
#define META "\"metadata\": {\n    " TOTAL "\n  },\n  "
#define ENTRY(t, i) "\"" t "\": \"model-0000" #i "-of-00006.safetensors\",\n    "

static const struct {
    const char *name, *from, *to;
    const char *warning; /* what verify says: index, then field or tensor */
} accepted[] = {
    {"no_total_size", "{\n    " TOTAL "\n  }", "{}",
     INDEX ": metadata has no \"total_size\""},
    {"stale_total_size", TOTAL, "\"total_size\": 7017",
     INDEX "': metadata.total_size is 7017 but the tensors of its files hold 4305 bytes"},
    {"no_metadata", META, "", INDEX " has no \"metadata\" object"},
    {"tensor_not_in_index", ENTRY("int16_35", 1), "",
     "tensor 'int16_35' of file 'model-00001-of-00006.safetensors' is not in the index '"},
};

/* The four edits: accepted by the catalog and the reader with every
 * tensor's bytes; verify warns (one warning, the catalog built), and so
 * does the tool; --strict refuses. */
static int lenient_should_read_index_edits_the_loaders_accept(MPI_Comm comm, const char *dir)
{
    hfdcp__buf want;
    int bad = 0, rank = hfdcp_test_comm_rank(comm);
    T_CHECK(load_fixture(comm, &want) == T_OK);
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        char *d = sub(dir, accepted[i].name), strict[1200], warn[1200];
        hfdcp__catalog *c = NULL;
        hfdcp__problem *p = NULL;
        size_t n = 0;
        if (rank == 0)
            bad += copy_fixture(d, accepted[i].from, accepted[i].to);
        MPI_Barrier(comm);
        if (!hfdcp_test_all_ok(comm, bad == 0)) {
            free(d);
            break;
        }
        bad += expect_load(comm, d, &want);
        int rc = hfdcp__catalog_verify(d, &c, &p, &n);
        if (rc != HFDCP_OK || n != 1 || !p[0].warning || p[0].status != HFDCP_ERR_FORMAT ||
            !strstr(p[0].message, accepted[i].warning) || c == NULL || c->n_tensors != 36 ||
            c->total_size != 4305)
            bad += hfdcp_test_fail(__FILE__, __LINE__, "%s: verify %s, %zu problems: %s",
                                   accepted[i].name, hfdcp_status_name(rc), n,
                                   n ? p[0].message : "");
        /* The tool prints the library's message: a warning, or with
         * --strict the problem a strict reader reported. */
        snprintf(warn, sizeof warn, "warning: %s\n", n ? p[0].message : "?");
        snprintf(strict, sizeof strict, "HFDCP_ERR_FORMAT: %s\n", n ? p[0].message : "?");
        hfdcp__problems_free(p, n);
        hfdcp__catalog_free(c);
        if (rank == 0) {
            bad += expect_tool("verify", d, 0, warn,
                               ": valid (6 files, 36 tensors, 4305 bytes), 1 warning "
                               "(not valid with --strict)\n");
            bad += expect_tool("verify --strict", d, 1, strict,
                               ": not valid, 1 problem (listed on stdout)\n");
            if (hfdcp_test_comm_size(comm) == 1)
                bad += expect_tool("inspect", d, 0,
                                   "6 files, 36 tensors, 4305 tensor bytes, with index",
                                   "int16_35  I16  [3, 5]  model-00001-of-00006.safetensors");
        }
        free(d);
        if (!hfdcp_test_all_ok(comm, bad == 0))
            break;
    }
    hfdcp__buf_free(&want);
    return bad;
}

static const struct {
    const char *name, *from, *to;
    int status;
    const char *message, *verify; /* open's message; in verify's report */
} refused[] = {
    {"tensor_no_file_holds", ENTRY("float16_3", 1), ENTRY("float16_3", 1) ENTRY("ghost", 1),
     HFDCP_ERR_FORMAT, "maps tensor 'ghost' to file 'model-00001-of-00006.safetensors', which "
     "does not hold it", NULL},
    {"missing_file", ENTRY("float16_3", 1), ENTRY("float16_3", 1) ENTRY("ghost", 9),
     HFDCP_ERR_NOT_FOUND, "names file 'model-00009-of-00006.safetensors', which does not exist",
     NULL},
    /* model-00007 is a copy of model-00001: every tensor of it in two
     * files, float16_3 mapped to the copy. */
    {"two_files", ENTRY("float16_3", 1), ENTRY("float16_3", 7), HFDCP_ERR_FORMAT,
     "tensor 'float16_3' is in file 'model-00001-of-00006.safetensors' but the index",
     "is in more than one file: 'model-00001-of-00006.safetensors' and "
     "'model-00007-of-00006.safetensors'"},
    /* model-00003 one byte short: its last tensor's data past the end. */
    {"cut_short", NULL, NULL, HFDCP_ERR_FORMAT, "model-00003-of-00006.safetensors'", NULL},
};

/* Rank 0 makes the unsafe copy `i` in `d`.  0 on success. */
static int make_refused(size_t i, const char *d)
{
    int bad = copy_fixture(d, refused[i].from, refused[i].to);
    char *a = sub(d, "model-00001-of-00006.safetensors");
    char *b = sub(d, strcmp(refused[i].name, "two_files") == 0
                         ? "model-00007-of-00006.safetensors"
                         : "model-00003-of-00006.safetensors");
    struct stat st;
    if (!bad && strcmp(refused[i].name, "two_files") == 0)
        bad += copy_file(a, b, false, NULL, NULL, 0);
    if (!bad && strcmp(refused[i].name, "cut_short") == 0)
        bad += stat(b, &st) != 0 || truncate(b, st.st_size - 1) != 0;
    free(a);
    free(b);
    return bad;
}

/* Ambiguous or unsafe data: refused by the reader (the same status and
 * message on every rank), by verify (exit 1 without --strict) and by
 * inspect. */
static int lenient_should_still_refuse_ambiguous_or_unsafe_data(MPI_Comm comm, const char *dir)
{
    int bad = 0, rank = hfdcp_test_comm_rank(comm);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char *d = sub(dir, refused[i].name);
        hfdcp_reader *r = NULL;
        if (rank == 0)
            bad += make_refused(i, d);
        MPI_Barrier(comm);
        if (!hfdcp_test_all_ok(comm, bad == 0)) {
            free(d);
            return 1;
        }
        int rc = hfdcp_reader_open(comm, d, NULL, &r);
        bad += hfdcp_test_agreed_failure(comm, refused[i].name, rc, refused[i].status,
                                         refused[i].message, NULL);
        if (r != NULL)
            hfdcp_reader_free(r);
        if (rank == 0) {
            const char *v = refused[i].verify ? refused[i].verify : refused[i].message;
            bad += expect_tool("verify", d, 1, v, ": not valid, ");
            if (hfdcp_test_comm_size(comm) == 1)
                bad += expect_tool("inspect", d, 1, hfdcp_status_name(refused[i].status),
                                   refused[i].message);
        }
        free(d);
        if (!hfdcp_test_all_ok(comm, bad == 0))
            break;
    }
    return bad;
}

/* ------------------------------------------------------------------------
 * DCP shard files
 * ---------------------------------------------------------------------- */

/* The first row rank 0 saves in save_shards(), at P ranks. */
static int64_t rank0_row(int P)
{
    int64_t lo, len;
    hfdcp_test_part(3, P - 1, P, &lo, &len);
    return lo;
}

/* The fixture's tensors (all of 3 rows) saved sharded into `d`: rank r of
 * P the rows hfdcp_test_part gives part P-1-r, so that rank 0, whose file
 * is SHARD1, always holds some.  Collective; agreed. */
static int save_shards(MPI_Comm comm, const char *d)
{
    char *fix = hfdcp__path_join(hfdcp_test_fixtures(), FIXTURE);
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    hfdcp_reader *r = NULL;
    hfdcp_writer *w = NULL;
    hfdcp_save_options o;
    unsigned char **data = NULL;
    size_t n = 0;
    int rc = hfdcp_reader_open(comm, fix, NULL, &r);

    free(fix);
    if (!hfdcp_test_agreed_ok(comm, rc, "opening the fixture"))
        return 1;
    n = hfdcp_reader_count(r);
    hfdcp_save_options_init(&o);
    o.save_sharded = 1;
    /* The cases change the copies' data on purpose (a replica with other
     * bytes), which the chunks' CRCs would refuse (test_consolidate
     * checks that). */
    o.no_checksums = 1;
    rc = hfdcp_writer_open(comm, d, &o, &w);
    if (rc == HFDCP_OK && (data = calloc(n + 1, sizeof *data)) == NULL)
        rc = HFDCP_ERR_NOMEM;
    for (size_t i = 0; i < n && rc == HFDCP_OK; i++) {
        hfdcp_tensor_info t;
        int64_t off[HFDCP_MAX_NDIM] = {0}, size[HFDCP_MAX_NDIM];
        uint64_t bytes = 0;
        hfdcp_reader_tensor(r, i, &t);
        memcpy(size, t.shape, (size_t)t.ndim * sizeof *size);
        hfdcp_test_part(t.shape[0], P - 1 - rank, P, &off[0], &size[0]);
        hfdcp__tensor_bytes(t.dtype, t.ndim, size, t.name, &bytes);
        if (size[0] == 0 || (data[i] = malloc(bytes + 1)) == NULL)
            continue;
        rc = hfdcp_reader_add(r, t.name, t.dtype, t.ndim, off, size, data[i]);
        if (rc == HFDCP_OK)
            rc = hfdcp_writer_add(w, t.name, t.dtype, t.ndim, t.shape, off, size, data[i]);
    }
    if (hfdcp_test_agreed_ok(comm, rc, "adding the shards") &&
        hfdcp_test_agreed_ok(comm, hfdcp_reader_load(r), "loading the shards"))
        rc = hfdcp_writer_commit(w);
    hfdcp_writer_free(w);
    hfdcp_reader_free(r);
    for (size_t i = 0; data && i < n; i++)
        free(data[i]);
    free(data);
    return hfdcp_test_agreed_ok(comm, rc, "saving the shards") ? T_OK : 1;
}

#define SHARD1 "shard-00001-model-00001-of-00001.safetensors"
#define SO "{\\\"saved_offsets\\\": "

/* Rank 0 copies every file of `from` into `to` (made), editing the
 * headers of all of them (`edit_all`) or of the copy of SHARD1 named
 * `extra` (`from_text` -> `to_text`, data xor'ed with `flip`), which
 * then sits beside the original. */
static int copy_shards(const char *from, const char *to, bool edit_all, const char *extra,
                       const char *from_text, const char *to_text, unsigned char flip)
{
    char *names[64];
    size_t n = 0;
    int bad = mkdir(to, 0755) != 0 || hfdcp_test_list_dir(from, names, 64, &n) != T_OK;
    for (size_t i = 0; i < n && !bad; i++) {
        char *a = sub(from, names[i]), *b = sub(to, names[i]);
        bad += copy_file(a, b, edit_all, from_text, to_text, 0);
        if (extra && strcmp(names[i], SHARD1) == 0) {
            free(b);
            b = sub(to, extra);
            bad += copy_file(a, b, true, from_text, to_text, flip);
        }
        free(a);
        free(b);
    }
    hfdcp_test_free_names(names, n);
    return bad;
}

/* Consolidates `in` into `out` and loads it: `want`'s bytes.  Collective. */
static int expect_consolidated(MPI_Comm comm, const char *in, const char *out,
                               const hfdcp__buf *want)
{
    int rc = hfdcp_consolidate(comm, in, out, NULL, NULL);
    if (!hfdcp_test_agreed_ok(comm, rc, in))
        return 1;
    return expect_load(comm, out, want);
}

/* Extra fields in every DCP_SHARDING_INFO entry, as PyTorch may add (a
 * global shape, a key map): ignored by the reader and by consolidation. */
static int lenient_should_ignore_other_fields_of_dcp_entries(MPI_Comm comm, const char *dir)
{
    char *shards = sub(dir, "shards"), *extra = sub(dir, "extra"), *out = sub(dir, "out");
    hfdcp__buf want;
    int bad = 0;
    T_CHECK(load_fixture(comm, &want) == T_OK);
    bad += save_shards(comm, shards);
    if (bad == 0 && hfdcp_test_comm_rank(comm) == 0)
        bad += copy_shards(shards, extra, true, NULL, SO,
                           "{\\\"fqn\\\": \\\"model.x\\\", \\\"global_shape\\\": [3, 5, 7], "
                           "\\\"key_map\\\": {\\\"a\\\": [1, {}]}, \\\"saved_offsets\\\": ",
                           0);
    MPI_Barrier(comm);
    if (hfdcp_test_all_ok(comm, bad == 0)) {
        bad += expect_load(comm, extra, &want);
        bad += expect_consolidated(comm, extra, out, &want);
    }
    hfdcp__buf_free(&want);
    free(shards);
    free(extra);
    free(out);
    return bad;
}

/* A copy of shard 1 beside it, its data bytes changed: read from the
 * first file in name order.  After the original ("zz-"), the original's
 * bytes are read; before it ("aa-"), the copy's, as from a directory in
 * which the copy replaced the original.  Reader and consolidation alike. */
static int lenient_should_read_a_box_saved_twice_from_the_first_file(MPI_Comm comm,
                                                                    const char *dir)
{
    char *shards = sub(dir, "shards"), *after = sub(dir, "after"), *before = sub(dir, "before");
    char *changed = sub(dir, "changed"), *out1 = sub(dir, "out1"), *out2 = sub(dir, "out2");
    hfdcp__buf want, want_changed;
    int bad = 0;
    T_CHECK(load_fixture(comm, &want) == T_OK);
    bad += save_shards(comm, shards);
    if (bad == 0 && hfdcp_test_comm_rank(comm) == 0) {
        bad += copy_shards(shards, after, false, "zz-replica.safetensors", NULL, NULL, 0x5A);
        bad += copy_shards(shards, before, false, "aa-replica.safetensors", NULL, NULL, 0x5A);
        bad += copy_shards(shards, changed, false, SHARD1, NULL, NULL, 0x5A);
    }
    MPI_Barrier(comm);
    if (!hfdcp_test_all_ok(comm, bad == 0) ||
        !hfdcp_test_agreed_ok(comm, load_all(comm, changed, &want_changed), changed))
        bad = 1;
    if (bad == 0) {
        bool differ = want_changed.len == want.len &&
                      memcmp(want_changed.data, want.data, want.len) != 0;
        bad += !hfdcp_test_all_ok(comm, differ);
        bad += expect_load(comm, after, &want);
        bad += expect_load(comm, before, &want_changed);
        bad += expect_consolidated(comm, after, out1, &want);
        bad += expect_consolidated(comm, before, out2, &want_changed);
        hfdcp__buf_free(&want_changed);
    }
    hfdcp__buf_free(&want);
    free(shards);
    free(after);
    free(before);
    free(changed);
    free(out1);
    free(out2);
    return bad;
}

/* The copy of shard 1 with one box moved by a column: it overlaps the
 * original in part, refused by the reader (HFDCP_ERR_FORMAT) and by
 * consolidation (HFDCP_ERR_PLAN), naming the tensor and both files. */
static int lenient_should_refuse_a_box_overlapping_another_in_part(MPI_Comm comm,
                                                                  const char *dir)
{
    char *shards = sub(dir, "shards"), *part = sub(dir, "partial"), *out = sub(dir, "out");
    int64_t row = rank0_row(hfdcp_test_comm_size(comm));
    char from[128], to[128], box[64], moved[128], over[64];
    hfdcp_reader *r = NULL;
    int bad = save_shards(comm, shards);
    snprintf(from, sizeof from, "\\\"float32_35\\\": " SO "[%d, 0]}", (int)row);
    snprintf(to, sizeof to, "\\\"float32_35\\\": " SO "[%d, 1]}", (int)row);
    snprintf(box, sizeof box, "chunks [%d:3, 0:5] (file '" SHARD1 "') and ", (int)row);
    snprintf(moved, sizeof moved, "[%d:3, 1:6] (file 'zz-replica.safetensors') overlap on",
             (int)row);
    snprintf(over, sizeof over, "overlap on [%d:3, 1:5]", (int)row);
    if (bad == 0 && hfdcp_test_comm_rank(comm) == 0)
        bad += copy_shards(shards, part, false, "zz-replica.safetensors", from, to, 0);
    MPI_Barrier(comm);
    if (hfdcp_test_all_ok(comm, bad == 0)) {
        int rc = hfdcp_reader_open(comm, part, NULL, &r);
        bad += hfdcp_test_agreed_failure(comm, "reader", rc, HFDCP_ERR_FORMAT,
                                         "tensor 'float32_35': ", box);
        if (r != NULL)
            hfdcp_reader_free(r);
        rc = hfdcp_consolidate(comm, part, out, NULL, NULL);
        bad += hfdcp_test_agreed_failure(comm, "consolidate", rc, HFDCP_ERR_PLAN, moved, over);
    }
    free(shards);
    free(part);
    free(out);
    return bad;
}

static const hfdcp_test_case cases[] = {
    {"lenient_should_read_index_edits_the_loaders_accept",
     lenient_should_read_index_edits_the_loaders_accept, 1},
    {"lenient_should_still_refuse_ambiguous_or_unsafe_data",
     lenient_should_still_refuse_ambiguous_or_unsafe_data, 1},
    {"lenient_should_ignore_other_fields_of_dcp_entries",
     lenient_should_ignore_other_fields_of_dcp_entries, 1},
    {"lenient_should_read_a_box_saved_twice_from_the_first_file",
     lenient_should_read_a_box_saved_twice_from_the_first_file, 1},
    {"lenient_should_refuse_a_box_overlapping_another_in_part",
     lenient_should_refuse_a_box_overlapping_another_in_part, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
