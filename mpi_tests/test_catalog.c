// ranks: 1 2 3 4
// timeout: 180
/*
 * test_catalog.c - the catalog of a checkpoint (hfdcp__catalog_open,
 * hfdcp__catalog_verify): every fixture against an independent reading by
 * scripts/catalog_oracle.py; generated DCP shard directories (merged, or
 * refused for holes, overlaps, disagreement); index consistency; renaming
 * collisions; the same error on every rank when one rank's file is bad;
 * many files spread over the ranks; verify collecting every problem.
 *
 * Collective calls come first in each check and failures are counted
 * rather than returned early, so that a failing rank never leaves the
 * others waiting in a collective.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* ------------------------------------------------------------------------
 * Small helpers
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

/* Rank 0's string on every rank (malloc'd). */
static char *bcast_string(MPI_Comm comm, const char *s)
{
    void *data = NULL;
    size_t len = 0;
    if (rank_of(comm) == 0) {
        data = (void *)s;
        len = strlen(s) + 1;
    }
    if (hfdcp__bcast_bytes(comm, 0, &data, &len) != HFDCP_OK)
        return NULL;
    return rank_of(comm) == 0 ? hfdcp__strdup(s) : data;
}

/* true on every rank iff `ok` on every rank. */
static bool all(MPI_Comm comm, bool ok)
{
    int mine = ok, every;
    MPI_Allreduce(&mine, &every, 1, MPI_INT, MPI_MIN, comm);
    return every != 0;
}

static char *path2(const char *a, const char *b)
{
    return hfdcp__path_join(a, b);
}

/* ------------------------------------------------------------------------
 * Writing safetensors files by hand (independent of format.c)
 * ---------------------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[4];   /* the stored (chunk) shape */
    int64_t offsets[4]; /* saved_offsets when the file is a DCP shard */
} tspec;

static void put(hfdcp__buf *b, const char *s)
{
    hfdcp__buf_put(b, s, strlen(s));
}

static void putf(hfdcp__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void putf(hfdcp__buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    put(b, tmp);
}

static void put_dims(hfdcp__buf *b, int ndim, const int64_t *v)
{
    put(b, "[");
    for (int d = 0; d < ndim; d++)
        putf(b, "%s%" PRId64, d ? "," : "", v[d]);
    put(b, "]");
}

static uint64_t spec_bytes(const tspec *t)
{
    hfdcp_dtype dt;
    uint64_t n = 1;
    if (hfdcp_dtype_from_name(t->dtype, &dt) != HFDCP_OK)
        return 0;
    for (int d = 0; d < t->ndim; d++)
        n *= (uint64_t)t->shape[d];
    return n * (uint64_t)hfdcp_dtype_bits(dt) / 8;
}

/* Writes a safetensors file holding tensors t[0..n) in that order; a DCP
 * shard (with saved_offsets) when `sharded`.  Data bytes follow a pattern
 * seeded by `seed`.  Returns 0 on success. */
static int write_st(const char *path, const tspec *t, size_t n, bool sharded,
                    unsigned seed)
{
    hfdcp__buf h, out;
    uint64_t at = 0, len;
    int rc;

    hfdcp__buf_init(&h);
    hfdcp__buf_init(&out);
    put(&h, "{\"__metadata__\":{\"format\":\"pt\"");
    if (sharded) {
        put(&h, ",\"DCP_SHARDING_INFO\":\"{");
        for (size_t i = 0; i < n; i++) {
            putf(&h, "%s\\\"%s\\\": {\\\"saved_offsets\\\": ", i ? ", " : "",
                 t[i].name);
            put_dims(&h, t[i].ndim, t[i].offsets);
            put(&h, "}");
        }
        put(&h, "}\",\"DCP_VERSION\":\"1.0\"");
    }
    put(&h, "}");
    for (size_t i = 0; i < n; i++) {
        uint64_t bytes = spec_bytes(&t[i]);
        putf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":", t[i].name, t[i].dtype);
        put_dims(&h, t[i].ndim, t[i].shape);
        putf(&h, ",\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", at, at + bytes);
        at += bytes;
    }
    put(&h, "}");
    while (h.len % 8)
        put(&h, " ");
    len = h.len;
    hfdcp__buf_put(&out, &len, 8); /* little-endian machine */
    hfdcp__buf_put(&out, h.data, h.len);
    for (uint64_t i = 0; i < at; i++) {
        unsigned char c = (unsigned char)(i * 7 + seed);
        hfdcp__buf_put(&out, &c, 1);
    }
    rc = hfdcp__buf_status(&out) == HFDCP_OK
             ? hfdcp_test_write_file(path, out.data, out.len)
             : -1;
    hfdcp__buf_free(&h);
    hfdcp__buf_free(&out);
    return rc;
}

static int write_text(const char *path, const char *text)
{
    return hfdcp_test_write_file(path, text, strlen(text));
}

/* "<dir>/<name>" created by rank 0 (every rank gets the path). */
static char *make_subdir(MPI_Comm comm, const char *dir, const char *name)
{
    char *p = path2(dir, name);
    if (rank_of(comm) == 0 && p != NULL)
        mkdir(p, 0755);
    return p;
}

/* ------------------------------------------------------------------------
 * The catalog as text, in the oracle's canonical form
 * ---------------------------------------------------------------------- */

static void put_box(hfdcp__buf *b, int ndim, const int64_t *v)
{
    put_dims(b, ndim, v);
}

static char *catalog_text(const hfdcp__catalog *c)
{
    hfdcp__buf b;
    hfdcp__buf_init(&b);
    putf(&b, "kind %s\nindex %s\nsharded %s\n", c->is_file ? "file" : "dir",
         c->has_index ? "yes" : "no", c->sharded ? "yes" : "no");
    for (size_t f = 0; f < c->n_files; f++)
        putf(&b, "file %s %" PRIu64 " %" PRIu64 "\n", c->files[f].name,
             c->files[f].size, c->files[f].data_start);
    for (size_t i = 0; i < c->n_tensors; i++) {
        const hfdcp__tensor *t = &c->tensors[i];
        putf(&b, "tensor %s %s ", t->name, hfdcp_dtype_name(t->dtype));
        put_box(&b, t->ndim, t->shape);
        putf(&b, " %" PRIu64 "\n", t->nbytes);
        for (size_t k = 0; k < t->n_chunks; k++) {
            const hfdcp__chunk *ch = &t->chunks[k];
            putf(&b, "chunk %s ", c->files[ch->file].name);
            put_box(&b, t->ndim, ch->offsets);
            put(&b, " ");
            put_box(&b, t->ndim, ch->sizes);
            putf(&b, " %" PRIu64 "\n", ch->file_offset);
        }
    }
    putf(&b, "total_size %" PRIu64 "\n", c->total_size);
    hfdcp__buf_put(&b, "", 1);
    if (hfdcp__buf_status(&b) != HFDCP_OK) {
        hfdcp__buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

/* Runs the oracle on rank 0 over `paths` (n of them); every rank gets its
 * output. */
static char *run_oracle(MPI_Comm comm, char *const *paths, size_t n)
{
    char *out = NULL, *shared;
    if (rank_of(comm) == 0) {
        hfdcp__buf cmd;
        hfdcp__buf_init(&cmd);
        putf(&cmd, "'%s' '%s/catalog_oracle.py'", hfdcp_test_python(),
             hfdcp_test_scripts());
        for (size_t i = 0; i < n; i++)
            putf(&cmd, " '%s'", paths[i]);
        hfdcp__buf_put(&cmd, "", 1);
        if (hfdcp_test_run((char *)cmd.data, &out) != 0) {
            free(out);
            out = NULL;
        }
        hfdcp__buf_free(&cmd);
    }
    shared = bcast_string(comm, out ? out : "");
    free(out);
    return shared;
}

/* The oracle's section for `path` (malloc'd, without the "== " line). */
static char *oracle_section(const char *all_out, const char *path)
{
    char head[1200];
    const char *p, *end;
    snprintf(head, sizeof head, "== %s\n", path);
    if ((p = strstr(all_out, head)) == NULL)
        return NULL;
    p += strlen(head);
    end = strstr(p, "\n== ");
    end = end ? end + 1 : p + strlen(p);
    return hfdcp__strndup(p, (size_t)(end - p));
}

/* ------------------------------------------------------------------------
 * Checks (collective first, then local; they return 0 or 1)
 * ---------------------------------------------------------------------- */

/* Opens `path` expecting failure with `want` and a message holding every
 * substring of subs (NULL-terminated); the message must be the same on
 * every rank. */
static int expect_refusal_km(MPI_Comm comm, const char *path,
                             const hfdcp_key_map *km, int want,
                             const char *const *subs)
{
    hfdcp__catalog *c = NULL;
    int got = hfdcp__catalog_open(comm, path, km, &c);
    char msg[4096];
    snprintf(msg, sizeof msg, "%s", hfdcp_last_error());
    char *root = bcast_string(comm, msg);
    int bad = 0;

    if (got != want) {
        bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: got %s, wanted %s (%s)",
                              path, hfdcp_status_name(got),
                              hfdcp_status_name(want), msg);
    }
    for (size_t i = 0; subs && subs[i] && !bad; i++)
        if (strstr(msg, subs[i]) == NULL)
            bad = hfdcp_test_fail(__FILE__, __LINE__,
                                  "%s: message \"%s\" lacks \"%s\"", path, msg,
                                  subs[i]);
    if (!bad && (root == NULL || strcmp(root, msg) != 0))
        bad = hfdcp_test_fail(__FILE__, __LINE__,
                              "%s: message differs from rank 0's: \"%s\" vs \"%s\"",
                              path, msg, root ? root : "(null)");
    if (c != NULL)
        bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: catalog returned on failure",
                              path);
    hfdcp__catalog_free(c);
    free(root);
    return bad;
}

#define EXPECT_REFUSAL(comm, path, want, ...)                                  \
    expect_refusal_km((comm), (path), NULL, (want),                            \
                      (const char *const[]){__VA_ARGS__, NULL})

/* Opens `path` and compares the catalog with the oracle's section. */
static int expect_oracle(MPI_Comm comm, const char *path, const char *section)
{
    hfdcp__catalog *c = NULL;
    int rc = hfdcp__catalog_open(comm, path, NULL, &c);
    int bad = 0;

    if (section == NULL)
        return hfdcp_test_fail(__FILE__, __LINE__, "%s: no oracle output", path);
    if (strncmp(section, "error ", 6) == 0) {
        char kind[64] = "", a[512] = "", b[512] = "", t[512] = "";
        char want[1600], file_q[600];
        hfdcp__catalog_free(c);
        sscanf(section, "error %63s %511s %511s %511s", kind, t, a, b);
        if (strcmp(kind, "not_found") == 0)
            return EXPECT_REFUSAL(comm, path, HFDCP_ERR_NOT_FOUND, path);
        if (strcmp(kind, "format") == 0) {
            snprintf(file_q, sizeof file_q, "%s'", t);
            return EXPECT_REFUSAL(comm, path, HFDCP_ERR_FORMAT, file_q);
        }
        if (strcmp(kind, "duplicate") == 0) {
            snprintf(want, sizeof want, "tensor '%s' is in more than one file: '%s' and '%s'",
                     t, a, b);
            return EXPECT_REFUSAL(comm, path, HFDCP_ERR_FORMAT, want);
        }
        return hfdcp_test_fail(__FILE__, __LINE__, "%s: oracle said %s", path,
                               section);
    }
    if (rc != HFDCP_OK)
        return hfdcp_test_fail(__FILE__, __LINE__, "%s: %s (%s)", path,
                               hfdcp_status_name(rc), hfdcp_last_error());
    char *text = catalog_text(c);
    if (text == NULL || strcmp(text, section) != 0)
        bad = hfdcp_test_fail(__FILE__, __LINE__,
                              "%s: catalog differs from the oracle:\n--- C\n%s--- oracle\n%s",
                              path, text ? text : "(null)", section);
    /* The by-name map and sorted order. */
    for (size_t i = 0; i < c->n_tensors && !bad; i++) {
        if (hfdcp__catalog_find(c, c->tensors[i].name) != &c->tensors[i])
            bad = hfdcp_test_fail(__FILE__, __LINE__, "find '%s'", c->tensors[i].name);
        if (i > 0 && strcmp(c->tensors[i - 1].name, c->tensors[i].name) >= 0)
            bad = hfdcp_test_fail(__FILE__, __LINE__, "tensors not sorted");
    }
    free(text);
    hfdcp__catalog_free(c);
    return bad;
}

/* ------------------------------------------------------------------------
 * Fixtures
 * ---------------------------------------------------------------------- */

static hfdcp__buf fixture_list; /* filled by nftw on rank 0 */

static int collect_fixture(const char *path, const struct stat *sb, int flag,
                           struct FTW *ftw)
{
    size_t len = strlen(path);
    (void)sb;
    (void)ftw;
    if (flag == FTW_D ||
        (flag == FTW_F && len > 12 && strcmp(path + len - 12, ".safetensors") == 0)) {
        put(&fixture_list, path);
        put(&fixture_list, "\n");
    }
    return 0;
}

/* Every directory and .safetensors file under the fixtures, on every rank:
 * a malloc'd array of malloc'd paths. */
static char **fixture_paths(MPI_Comm comm, size_t *n)
{
    char *all_paths, **paths = NULL;
    hfdcp__buf_init(&fixture_list);
    if (rank_of(comm) == 0)
        nftw(hfdcp_test_fixtures(), collect_fixture, 16, FTW_PHYS);
    hfdcp__buf_put(&fixture_list, "", 1);
    all_paths = bcast_string(comm, (char *)fixture_list.data);
    hfdcp__buf_free(&fixture_list);
    *n = 0;
    if (all_paths == NULL)
        return NULL;
    for (char *p = all_paths; *p; p++)
        *n += *p == '\n';
    paths = calloc(*n + 1, sizeof *paths);
    size_t i = 0;
    for (char *p = all_paths, *nl; paths && (nl = strchr(p, '\n')); p = nl + 1)
        paths[i++] = hfdcp__strndup(p, (size_t)(nl - p));
    free(all_paths);
    return paths;
}

static void free_paths(char **paths, size_t n)
{
    for (size_t i = 0; paths && i < n; i++)
        free(paths[i]);
    free(paths);
}

static int catalog_should_match_the_oracle_on_every_fixture(MPI_Comm comm, const char *dir)
{
    (void)dir;
    size_t n = 0;
    char **paths = fixture_paths(comm, &n);
    int bad = 0, files = 0, dirs = 0, errors = 0;
    T_CHECK(paths != NULL && n >= 30);
    char *out = run_oracle(comm, paths, n);
    T_CHECK(out != NULL && *out);
    for (size_t i = 0; i < n; i++) {
        char *section = oracle_section(out, paths[i]);
        bad += expect_oracle(comm, paths[i], section);
        if (section && strncmp(section, "error", 5) == 0)
            errors++;
        else if (section && strncmp(section, "kind file", 9) == 0)
            files++;
        else
            dirs++;
        free(section);
    }
    if (rank_of(comm) == 0)
        printf("  %zu fixture paths: %d files, %d directories read, %d refused\n",
               n, files, dirs, errors);
    free(out);
    free_paths(paths, n);
    /* Directories with tensors in several files, the sharded checkpoint,
     * and refusals were all seen. */
    T_CHECK(files >= 25 && dirs >= 5 && errors >= 5);
    return bad;
}

static int catalog_should_give_the_sharded_twin_the_same_tensors(MPI_Comm comm, const char *dir)
{
    (void)dir;
    char *sharded = path2(hfdcp_test_fixtures(), "SafeTensors.jl/sharded");
    char *single = path2(hfdcp_test_fixtures(), "SafeTensors.jl/non_sharded/model.safetensors");
    hfdcp__catalog *a = NULL, *b = NULL;
    int ra = hfdcp__catalog_open(comm, sharded, NULL, &a);
    int rb = hfdcp__catalog_open(comm, single, NULL, &b);
    free(sharded);
    free(single);
    int bad = 0;
    if (ra != HFDCP_OK || rb != HFDCP_OK) {
        bad = hfdcp_test_fail(__FILE__, __LINE__, "open: %s", hfdcp_last_error());
    } else {
        if (!(a->has_index && a->n_files == 6 && !a->is_file && b->is_file &&
              !b->has_index && b->n_files == 1 && a->n_tensors == 36 &&
              b->n_tensors == 36 && a->total_size == 4305 && b->total_size == 4305))
            bad = hfdcp_test_fail(__FILE__, __LINE__, "catalog summaries differ");
        for (size_t i = 0; i < a->n_tensors && !bad; i++) {
            const hfdcp__tensor *x = &a->tensors[i], *y = &b->tensors[i];
            bool same = strcmp(x->name, y->name) == 0 && x->dtype == y->dtype &&
                        x->ndim == y->ndim && x->nbytes == y->nbytes &&
                        x->n_chunks == 1 && y->n_chunks == 1;
            for (int d = 0; same && d < x->ndim; d++)
                same = x->shape[d] == y->shape[d];
            if (!same)
                bad = hfdcp_test_fail(__FILE__, __LINE__, "tensor %s differs", x->name);
        }
    }
    hfdcp__catalog_free(a);
    hfdcp__catalog_free(b);
    return bad;
}

static int catalog_should_refuse_the_invalid_fixture_on_every_rank(MPI_Comm comm, const char *dir)
{
    (void)dir;
    char *file = path2(hfdcp_test_fixtures(),
                       "invalid/safetensors_cpp_abuse_attempt_1.safetensors");
    char *inv_dir = path2(hfdcp_test_fixtures(), "invalid");
    int bad = EXPECT_REFUSAL(comm, file, HFDCP_ERR_FORMAT,
                             "safetensors_cpp_abuse_attempt_1.safetensors'",
                             "header length 1000");
    bad += EXPECT_REFUSAL(comm, inv_dir, HFDCP_ERR_FORMAT,
                          "safetensors_cpp_abuse_attempt_1.safetensors'",
                          "header length 1000");
    free(file);
    free(inv_dir);
    return bad;
}

/* ------------------------------------------------------------------------
 * Generated DCP shards
 * ---------------------------------------------------------------------- */

static char *shard_name(int r, int of)
{
    return hfdcp__asprintf("shard-%05d-model-00001-of-%05d.safetensors", r + 1, of);
}

/* Writes shard r of `nfiles` with tensors spec[0..n) into dir (rank 0). */
static int write_shard(const char *dir, int r, int nfiles, const tspec *spec, size_t n)
{
    char *name = shard_name(r, nfiles), *p = path2(dir, name);
    int rc = write_st(p, spec, n, true, (unsigned)r * 31 + 1);
    free(name);
    free(p);
    return rc;
}

static int catalog_should_merge_dcp_shards(MPI_Comm comm, const char *dir)
{
    char *d = make_subdir(comm, dir, "dcp");
    int bad = 0;
    if (rank_of(comm) == 0) {
        /* rows [8,6] F32: 2 rows per file; cols [5,8] BF16: 2 columns per
         * file; blocks [6,4] I32: 2x2 blocks; uneven [7] U8 in files 2-3;
         * scalar I64 in file 0; empty [0,3] F16 in files 1 and 3 (zero
         * volume chunks); e4m3 [4,4] split 1-D into 3 rows + 1 row. */
        for (int r = 0; r < 4; r++) {
            tspec s[8];
            size_t n = 0;
            s[n++] = (tspec){"rows", "F32", 2, {2, 6}, {2 * r, 0}};
            s[n++] = (tspec){"cols", "BF16", 2, {5, 2}, {0, 2 * r}};
            s[n++] = (tspec){"blocks", "I32", 2, {3, 2}, {3 * (r / 2), 2 * (r % 2)}};
            if (r == 2)
                s[n++] = (tspec){"uneven", "U8", 1, {3}, {0}};
            if (r == 3)
                s[n++] = (tspec){"uneven", "U8", 1, {4}, {3}};
            if (r == 0)
                s[n++] = (tspec){"scalar", "I64", 0, {0}, {0}};
            if (r == 1 || r == 3)
                s[n++] = (tspec){"empty", "F16", 2, {0, 3}, {0, 0}};
            if (r == 0)
                s[n++] = (tspec){"fp8", "F8_E4M3", 2, {3, 4}, {0, 0}};
            if (r == 1)
                s[n++] = (tspec){"fp8", "F8_E4M3", 2, {1, 4}, {3, 0}};
            bad += write_shard(d, r, 4, s, n) != 0;
        }
    }
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));

    /* Against the oracle. */
    char *out = run_oracle(comm, &d, 1);
    char *section = out ? oracle_section(out, d) : NULL;
    bad += expect_oracle(comm, d, section);
    free(out);
    free(section);

    /* And explicitly. */
    hfdcp__catalog *c = NULL;
    int rc = hfdcp__catalog_open(comm, d, NULL, &c);
    free(d);
    T_OKCALL(rc);
    T_CHECK(c->sharded && !c->has_index && c->n_files == 4 && c->n_tensors == 7);
    const hfdcp__tensor *t = hfdcp__catalog_find(c, "rows");
    T_CHECK(t && t->ndim == 2 && t->shape[0] == 8 && t->shape[1] == 6 && t->n_chunks == 4);
    for (int k = 0; k < 4; k++) {
        T_CHECK(t->chunks[k].file == k && t->chunks[k].offsets[0] == 2 * k &&
                t->chunks[k].sizes[0] == 2 && t->chunks[k].sizes[1] == 6);
        /* The first tensor of each shard: data starts right after the header. */
        T_CHECK(t->chunks[k].file_offset == c->files[k].data_start);
        T_CHECK(c->files[k].data_start == 8 + c->files[k].hdr.header_len);
    }
    t = hfdcp__catalog_find(c, "cols");
    T_CHECK(t && t->shape[0] == 5 && t->shape[1] == 8 && t->dtype == HFDCP_BF16 &&
            t->nbytes == 80 && t->chunks[3].offsets[1] == 6);
    t = hfdcp__catalog_find(c, "blocks");
    T_CHECK(t && t->shape[0] == 6 && t->shape[1] == 4 && t->n_chunks == 4);
    t = hfdcp__catalog_find(c, "uneven");
    T_CHECK(t && t->shape[0] == 7 && t->n_chunks == 2 && t->chunks[0].file == 2);
    t = hfdcp__catalog_find(c, "scalar");
    T_CHECK(t && t->ndim == 0 && t->nbytes == 8 && t->n_chunks == 1);
    t = hfdcp__catalog_find(c, "empty");
    T_CHECK(t && t->shape[0] == 0 && t->shape[1] == 3 && t->nbytes == 0 && t->n_chunks == 2);
    t = hfdcp__catalog_find(c, "fp8");
    T_CHECK(t && t->shape[0] == 4 && t->nbytes == 16);
    T_CHECK(hfdcp__catalog_find(c, "nope") == NULL);
    T_CHECK(c->total_size == 8 * 6 * 4 + 5 * 8 * 2 + 6 * 4 * 4 + 7 + 8 + 0 + 16);
    hfdcp__catalog_free(c);
    return bad;
}

static int catalog_should_refuse_holes_overlaps_and_disagreeing_shards(MPI_Comm comm,
                                                                       const char *dir)
{
    char *hole = make_subdir(comm, dir, "hole");
    char *overlap = make_subdir(comm, dir, "overlap");
    char *dtype = make_subdir(comm, dir, "dtype");
    char *ndim = make_subdir(comm, dir, "ndim");
    char *offside = make_subdir(comm, dir, "offside");
    int bad = 0;
    if (rank_of(comm) == 0) {
        /* w [6,8]: rows 0-2 and 4-6; rows 2-4 missing. */
        tspec h0[] = {{"w", "F32", 2, {2, 8}, {0, 0}}, {"ok", "F32", 1, {2}, {0}}};
        tspec h1[] = {{"w", "F32", 2, {2, 8}, {4, 0}}, {"ok", "F32", 1, {2}, {2}}};
        bad += write_shard(hole, 0, 2, h0, 2) + write_shard(hole, 1, 2, h1, 2);
        tspec o0[] = {{"w", "F32", 2, {4, 8}, {0, 0}}};
        tspec o1[] = {{"w", "F32", 2, {4, 8}, {2, 0}}};
        bad += write_shard(overlap, 0, 2, o0, 1) + write_shard(overlap, 1, 2, o1, 1);
        tspec d0[] = {{"w", "F32", 2, {2, 8}, {0, 0}}};
        tspec d1[] = {{"w", "BF16", 2, {2, 8}, {2, 0}}};
        bad += write_shard(dtype, 0, 2, d0, 1) + write_shard(dtype, 1, 2, d1, 1);
        tspec n0[] = {{"w", "F32", 2, {2, 8}, {0, 0}}};
        tspec n1[] = {{"w", "F32", 3, {2, 8, 1}, {2, 0, 0}}};
        bad += write_shard(ndim, 0, 2, n0, 1) + write_shard(ndim, 1, 2, n1, 1);
        /* A lone chunk that does not start at 0. */
        tspec f0[] = {{"w", "F32", 2, {2, 8}, {2, 0}}};
        bad += write_shard(offside, 0, 1, f0, 1);
    }
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));
    bad += EXPECT_REFUSAL(comm, hole, HFDCP_ERR_FORMAT,
                          "tensor 'w': element [2, 0] is not covered by any chunk "
                          "(chunks cover 32 of 48 elements)");
    bad += EXPECT_REFUSAL(comm, overlap, HFDCP_ERR_FORMAT,
                          "tensor 'w': chunks [0:4, 0:8] (file "
                          "'shard-00001-model-00001-of-00002.safetensors') and "
                          "[2:6, 0:8] (file 'shard-00002-model-00001-of-00002.safetensors') "
                          "overlap on [2:4, 0:8]");
    bad += EXPECT_REFUSAL(comm, dtype, HFDCP_ERR_FORMAT,
                          "tensor 'w': its chunks disagree on the dtype: F32 in file "
                          "'shard-00001-model-00001-of-00002.safetensors', BF16 in file "
                          "'shard-00002-model-00001-of-00002.safetensors'");
    bad += EXPECT_REFUSAL(comm, ndim, HFDCP_ERR_FORMAT,
                          "tensor 'w': its chunks disagree on the number of dimensions: "
                          "2 in file 'shard-00001-model-00001-of-00002.safetensors', 3 in");
    bad += EXPECT_REFUSAL(comm, offside, HFDCP_ERR_FORMAT,
                          "tensor 'w': element [0, 0] is not covered by any chunk "
                          "(chunks cover 16 of 32 elements)");
    free(hole);
    free(overlap);
    free(dtype);
    free(ndim);
    free(offside);
    return bad;
}

/* A box saved by several shard files (a replicated tensor DCP did not
 * deduplicate) is read from the first file; empty boxes all stay; a box
 * that overlaps another in part is still refused, replicas or not. */
static int catalog_should_read_a_box_saved_by_several_files_from_the_first(MPI_Comm comm,
                                                                          const char *dir)
{
    char *rep = make_subdir(comm, dir, "replicas");
    char *part = make_subdir(comm, dir, "partial");
    int bad = 0;
    if (rank_of(comm) == 0) {
        /* 'norm' whole in every file; 'rows' split over files 0 and 1,
         * file 2 repeating file 1's rows; 'empty' in files 0 and 2; the
         * scalar 'step' in files 1 and 2. */
        tspec r0[] = {{"norm", "F32", 1, {6}, {0}}, {"rows", "BF16", 2, {2, 3}, {0, 0}},
                      {"empty", "F16", 2, {0, 3}, {0, 0}}};
        tspec r1[] = {{"norm", "F32", 1, {6}, {0}}, {"rows", "BF16", 2, {2, 3}, {2, 0}},
                      {"step", "I64", 0, {0}, {0}}};
        tspec r2[] = {{"rows", "BF16", 2, {2, 3}, {2, 0}}, {"step", "I64", 0, {0}, {0}},
                      {"norm", "F32", 1, {6}, {0}}, {"empty", "F16", 2, {0, 3}, {0, 0}}};
        bad += write_shard(rep, 0, 3, r0, 3) + write_shard(rep, 1, 3, r1, 3) +
               write_shard(rep, 2, 3, r2, 4);
        /* w [6,8]: rows 0-4 in files 0 and 1, rows 2-6 in file 2. */
        tspec p0[] = {{"w", "F32", 2, {4, 8}, {0, 0}}};
        tspec p2[] = {{"w", "F32", 2, {4, 8}, {2, 0}}};
        bad += write_shard(part, 0, 3, p0, 1) + write_shard(part, 1, 3, p0, 1) +
               write_shard(part, 2, 3, p2, 1);
    }
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));

    /* Against the oracle, which reads one copy too. */
    char *out = run_oracle(comm, &rep, 1);
    char *section = out ? oracle_section(out, rep) : NULL;
    bad += expect_oracle(comm, rep, section);
    free(out);
    free(section);

    hfdcp__catalog *c = NULL;
    int rc = hfdcp__catalog_open(comm, rep, NULL, &c);
    T_OKCALL(rc);
    const hfdcp__tensor *t = hfdcp__catalog_find(c, "norm");
    T_CHECK(t && t->shape[0] == 6 && t->n_chunks == 1 && t->chunks[0].file == 0);
    T_CHECK(t->chunks[0].file_offset == c->files[0].data_start); /* file 0 holds it first */
    t = hfdcp__catalog_find(c, "rows");
    T_CHECK(t && t->shape[0] == 4 && t->shape[1] == 3 && t->n_chunks == 2);
    T_CHECK(t->chunks[0].file == 0 && t->chunks[1].file == 1 && t->chunks[1].offsets[0] == 2);
    t = hfdcp__catalog_find(c, "empty");
    T_CHECK(t && t->n_chunks == 2 && t->chunks[0].file == 0 && t->chunks[1].file == 2);
    t = hfdcp__catalog_find(c, "step");
    T_CHECK(t && t->ndim == 0 && t->n_chunks == 1 && t->chunks[0].file == 1);
    T_CHECK(c->n_tensors == 4 && c->total_size == 24 + 24 + 0 + 8);
    hfdcp__catalog_free(c);

    bad += EXPECT_REFUSAL(comm, part, HFDCP_ERR_FORMAT,
                          "tensor 'w': chunks [0:4, 0:8] (file "
                          "'shard-00001-model-00001-of-00003.safetensors') and "
                          "[2:6, 0:8] (file 'shard-00003-model-00001-of-00003.safetensors') "
                          "overlap on [2:4, 0:8]");
    free(rep);
    free(part);
    return bad;
}

static int catalog_should_refuse_a_tensor_in_two_plain_files(MPI_Comm comm, const char *dir)
{
    char *d = make_subdir(comm, dir, "dup");
    char *mixed = make_subdir(comm, dir, "mixed");
    int bad = 0;
    if (rank_of(comm) == 0) {
        tspec a[] = {{"a", "F32", 1, {4}, {0}}, {"shared.w", "F16", 2, {2, 2}, {0}}};
        tspec b[] = {{"b", "F32", 1, {4}, {0}}, {"shared.w", "F16", 2, {2, 2}, {0}}};
        char *pa = path2(d, "a.safetensors"), *pb = path2(d, "b.safetensors");
        bad += write_st(pa, a, 2, false, 1) + write_st(pb, b, 2, false, 2);
        free(pa);
        free(pb);
        /* A shard file and a plain file with the same name. */
        tspec s[] = {{"w", "F32", 1, {2}, {0}}};
        tspec p[] = {{"w", "F32", 1, {2}, {0}}};
        char *ps = path2(mixed, "a-shard.safetensors"), *pp = path2(mixed, "b-plain.safetensors");
        bad += write_st(ps, s, 1, true, 1) + write_st(pp, p, 1, false, 2);
        free(ps);
        free(pp);
    }
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));
    bad += EXPECT_REFUSAL(comm, d, HFDCP_ERR_FORMAT,
                          "tensor 'shared.w' is in more than one file: 'a.safetensors' and 'b.safetensors'");
    bad += EXPECT_REFUSAL(comm, mixed, HFDCP_ERR_FORMAT,
                          "tensor 'w' is in more than one file: 'a-shard.safetensors' and "
                          "'b-plain.safetensors'");
    free(d);
    free(mixed);
    return bad;
}

/* ------------------------------------------------------------------------
 * The index
 * ---------------------------------------------------------------------- */

/* A sharded (HF style) checkpoint: model-0000k-of-00002 holding x_k, y_k. */
static int write_hf_pair(const char *d, const char *index_json)
{
    tspec f1[] = {{"x1", "F32", 2, {2, 3}, {0}}, {"y1", "I8", 1, {5}, {0}}};
    tspec f2[] = {{"x2", "F64", 1, {3}, {0}}, {"y2", "BOOL", 1, {4}, {0}}};
    char *p1 = path2(d, "model-00001-of-00002.safetensors");
    char *p2 = path2(d, "model-00002-of-00002.safetensors");
    char *pi = path2(d, "model.safetensors.index.json");
    int bad = write_st(p1, f1, 2, false, 5) + write_st(p2, f2, 2, false, 6);
    if (index_json)
        bad += write_text(pi, index_json);
    free(p1);
    free(p2);
    free(pi);
    return bad;
}

#define M1 "\"model-00001-of-00002.safetensors\""
#define M2 "\"model-00002-of-00002.safetensors\""
/* 24 + 5 + 24 + 4 bytes */
#define GOOD_INDEX                                                             \
    "{\"metadata\": {\"total_size\": 57}, \"weight_map\": {\"x1\": " M1        \
    ", \"y1\": " M1 ", \"x2\": " M2 ", \"y2\": " M2 "}}"

/* The index's rules are refused; its bookkeeping (a tensor of a file not
 * in weight_map, total_size, metadata), which no loader reads, is not:
 * the catalog has the files' tensors. */
static int catalog_should_check_the_index_against_the_files(MPI_Comm comm, const char *dir)
{
    static const struct {
        const char *name, *index;
        int status;
        const char *sub1, *sub2;
    } cases[] = {
        {"good", GOOD_INDEX, HFDCP_OK, NULL, NULL},
        {"no_total_size",
         "{\"metadata\": {}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1 ", \"x2\": " M2
         ", \"y2\": " M2 "}}",
         HFDCP_OK, NULL, NULL},
        {"no_metadata",
         "{\"weight_map\": {\"x1\": " M1 ", \"y1\": " M1 ", \"x2\": " M2 ", \"y2\": " M2 "}}",
         HFDCP_OK, NULL, NULL},
        {"metadata_null",
         "{\"metadata\": null, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1 ", \"x2\": " M2
         ", \"y2\": " M2 "}}",
         HFDCP_ERR_FORMAT, "model.safetensors.index.json: \"metadata\" is not an object", NULL},
        {"total_size_string",
         "{\"metadata\": {\"total_size\": \"57\"}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1
         ", \"x2\": " M2 ", \"y2\": " M2 "}}",
         HFDCP_ERR_FORMAT, "metadata.total_size is a string", NULL},
        {"missing_file",
         "{\"metadata\": {\"total_size\": 57}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1
         ", \"x2\": " M2 ", \"y2\": \"model-00003-of-00003.safetensors\"}}",
         HFDCP_ERR_NOT_FOUND, "names file 'model-00003-of-00003.safetensors', which does not exist",
         "model.safetensors.index.json"},
        {"name_not_in_file",
         "{\"metadata\": {\"total_size\": 57}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1
         ", \"x2\": " M2 ", \"y2\": " M2 ", \"z9\": " M2 "}}",
         HFDCP_ERR_FORMAT, "maps tensor 'z9' to file 'model-00002-of-00002.safetensors', which "
         "does not hold it", NULL},
        /* y2 is read with the rest of its file, as the loaders read it. */
        {"tensor_not_in_index",
         "{\"metadata\": {\"total_size\": 57}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1
         ", \"x2\": " M2 "}}",
         HFDCP_OK, NULL, NULL},
        {"wrong_file",
         "{\"metadata\": {\"total_size\": 57}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M2
         ", \"x2\": " M2 ", \"y2\": " M2 "}}",
         HFDCP_ERR_FORMAT, "maps tensor 'y1' to file 'model-00002-of-00002.safetensors', which "
         "does not hold it", NULL},
        {"total_size",
         "{\"metadata\": {\"total_size\": 999}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1
         ", \"x2\": " M2 ", \"y2\": " M2 "}}",
         HFDCP_OK, NULL, NULL},
        {"dotdot",
         "{\"metadata\": {\"total_size\": 57}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1
         ", \"x2\": \"../model-00002-of-00002.safetensors\", \"y2\": " M2 "}}",
         HFDCP_ERR_FORMAT, "../model-00002-of-00002.safetensors", NULL},
        {"slash",
         "{\"metadata\": {\"total_size\": 57}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1
         ", \"x2\": \"sub/model-00002-of-00002.safetensors\", \"y2\": " M2 "}}",
         HFDCP_ERR_FORMAT, "sub/model-00002-of-00002.safetensors", NULL},
        {"absolute",
         "{\"metadata\": {\"total_size\": 57}, \"weight_map\": {\"x1\": " M1 ", \"y1\": " M1
         ", \"x2\": \"/tmp/model-00002-of-00002.safetensors\", \"y2\": " M2 "}}",
         HFDCP_ERR_FORMAT, "/tmp/model-00002-of-00002.safetensors", NULL},
        {"not_json", "{\"metadata\": {\"total_size\": 57}, \"weight_map\": {",
         HFDCP_ERR_FORMAT, "model.safetensors.index.json", NULL},
    };
    int bad = 0;
    char *paths[sizeof cases / sizeof cases[0]];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        paths[i] = make_subdir(comm, dir, cases[i].name);
        if (rank_of(comm) == 0)
            bad += write_hf_pair(paths[i], cases[i].index);
    }
    /* With an index, other .safetensors files are ignored, even broken. */
    if (rank_of(comm) == 0) {
        char *junk = path2(paths[0], "junk.safetensors");
        bad += write_text(junk, "not a safetensors file");
        free(junk);
    }
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].status == HFDCP_OK) {
            hfdcp__catalog *c = NULL;
            int rc = hfdcp__catalog_open(comm, paths[i], NULL, &c);
            if (rc != HFDCP_OK)
                bad += hfdcp_test_fail(__FILE__, __LINE__, "%s: %s", cases[i].name,
                                       hfdcp_last_error());
            else if (!(c->has_index && c->n_files == 2 && c->n_tensors == 4 &&
                       c->total_size == 57 &&
                       strcmp(c->files[1].name, "model-00002-of-00002.safetensors") == 0 &&
                       hfdcp__catalog_find(c, "y2")->chunks[0].file == 1))
                bad += hfdcp_test_fail(__FILE__, __LINE__, "%s: wrong catalog", cases[i].name);
            hfdcp__catalog_free(c);
        } else if (cases[i].sub2) {
            bad += EXPECT_REFUSAL(comm, paths[i], cases[i].status, cases[i].sub1, cases[i].sub2);
        } else {
            bad += EXPECT_REFUSAL(comm, paths[i], cases[i].status, cases[i].sub1);
        }
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        free(paths[i]);
    return bad;
}

/* ------------------------------------------------------------------------
 * Renaming
 * ---------------------------------------------------------------------- */

static int catalog_should_rename_and_refuse_collisions(MPI_Comm comm, const char *dir)
{
    char *d = make_subdir(comm, dir, "rename");
    char *dcp = make_subdir(comm, dir, "rename_dcp");
    int bad = 0;
    if (rank_of(comm) == 0) {
        tspec a[] = {{"model.layers.0.w", "F32", 1, {4}, {0}},
                     {"model.layers.1.w", "F32", 1, {4}, {0}}};
        tspec b[] = {{"lm_head.weight", "F16", 2, {2, 2}, {0}},
                     {"layers.1.w", "F32", 1, {4}, {0}}};
        char *pa = path2(d, "a.safetensors"), *pb = path2(d, "b.safetensors");
        bad += write_st(pa, a, 2, false, 1) + write_st(pb, b, 2, false, 2);
        free(pa);
        free(pb);
        /* Renaming applies to DCP shards before they are merged. */
        tspec s0[] = {{"module.w", "F32", 2, {2, 2}, {0, 0}}};
        tspec s1[] = {{"module.w", "F32", 2, {2, 2}, {2, 0}}};
        bad += write_shard(dcp, 0, 2, s0, 1) + write_shard(dcp, 1, 2, s1, 1);
    }
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));

    hfdcp_key_map *strip = NULL, *head = NULL;
    T_OKCALL(hfdcp_key_map_create(&strip));
    T_OKCALL(hfdcp_key_map_add(strip, "^model\\.", ""));
    T_OKCALL(hfdcp_key_map_create(&head));
    T_OKCALL(hfdcp_key_map_add(head, "^lm_head\\.(\\w+)$", "output.\\1"));
    T_OKCALL(hfdcp_key_map_add(head, "^module\\.", ""));

    /* "model.layers.1.w" -> "layers.1.w", which b.safetensors holds. */
    bad += expect_refusal_km(comm, d, strip, HFDCP_ERR_FORMAT,
                             (const char *const[]){
                                 "tensors 'layers.1.w' (file 'b.safetensors') and "
                                 "'model.layers.1.w' (file 'a.safetensors') are both "
                                 "renamed to 'layers.1.w'",
                                 NULL});

    hfdcp__catalog *c = NULL;
    int rc = hfdcp__catalog_open(comm, d, head, &c);
    if (rc != HFDCP_OK) {
        bad += hfdcp_test_fail(__FILE__, __LINE__, "%s", hfdcp_last_error());
    } else {
        const hfdcp__tensor *t = hfdcp__catalog_find(c, "output.weight");
        if (!(c->n_tensors == 4 && t && t->dtype == HFDCP_F16 &&
              hfdcp__catalog_find(c, "lm_head.weight") == NULL &&
              strcmp(c->tensors[0].name, "layers.1.w") == 0 &&
              strcmp(c->tensors[3].name, "output.weight") == 0))
            bad += hfdcp_test_fail(__FILE__, __LINE__, "renamed catalog is wrong");
        /* The file keeps the stored name. */
        bool stored = false;
        for (size_t e = 0; e < c->files[1].hdr.n_entries; e++)
            stored = stored || strcmp(c->files[1].hdr.entries[e].name, "lm_head.weight") == 0;
        if (!stored)
            bad += hfdcp_test_fail(__FILE__, __LINE__, "stored name lost");
    }
    hfdcp__catalog_free(c);
    c = NULL;
    rc = hfdcp__catalog_open(comm, dcp, head, &c);
    if (rc != HFDCP_OK)
        bad += hfdcp_test_fail(__FILE__, __LINE__, "%s", hfdcp_last_error());
    else if (!(c->n_tensors == 1 && strcmp(c->tensors[0].name, "w") == 0 &&
               c->tensors[0].shape[0] == 4 && c->tensors[0].n_chunks == 2))
        bad += hfdcp_test_fail(__FILE__, __LINE__, "renamed shards are wrong");
    hfdcp__catalog_free(c);
    hfdcp_key_map_free(strip);
    hfdcp_key_map_free(head);
    free(d);
    free(dcp);
    return bad;
}

/* ------------------------------------------------------------------------
 * Spread reading and failures on one rank
 * ---------------------------------------------------------------------- */

static char *numbered(int i, int n)
{
    return hfdcp__asprintf("model-%05d-of-%05d.safetensors", i + 1, n);
}

/* Writes n plain files; those whose index is in `corrupt` (-1 ended) get a
 * data buffer one byte short. */
static int write_numbered(const char *d, int n, const int *corrupt)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char *name = numbered(i, n), *p = path2(d, name);
        char t0[32], t1[32], t2[32];
        snprintf(t0, sizeof t0, "layer.%d.weight", i);
        snprintf(t1, sizeof t1, "layer.%d.bias", i);
        snprintf(t2, sizeof t2, "layer.%d.scale", i);
        tspec s[] = {{t0, "BF16", 2, {i % 5 + 1, 3}, {0}},
                     {t1, "F32", 1, {i % 7 + 1}, {0}},
                     {t2, "F64", 0, {0}, {0}}};
        bad += write_st(p, s, 3, false, (unsigned)i);
        for (const int *c = corrupt; c && *c >= 0; c++)
            if (*c == i)
                bad += truncate(p, 24) != 0;
        free(name);
        free(p);
    }
    return bad;
}

static int catalog_should_read_40_files_spread_over_the_ranks(MPI_Comm comm, const char *dir)
{
    char *d = make_subdir(comm, dir, "forty");
    int bad = 0;
    if (rank_of(comm) == 0)
        bad = write_numbered(d, 40, NULL);
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));
    char *out = run_oracle(comm, &d, 1);
    char *section = out ? oracle_section(out, d) : NULL;
    bad += expect_oracle(comm, d, section);
    free(out);
    free(section);

    hfdcp__catalog *c = NULL;
    int rc = hfdcp__catalog_open(comm, d, NULL, &c);
    free(d);
    T_OKCALL(rc);
    T_CHECK(c->n_files == 40 && c->n_tensors == 120);
    /* Every rank holds every file's header. */
    for (size_t f = 0; f < 40; f++)
        T_CHECK(c->files[f].hdr.n_entries == 3 && c->files[f].hdr.header_len > 0 &&
                c->files[f].data_start == 8 + c->files[f].hdr.header_len);
    const hfdcp__tensor *t = hfdcp__catalog_find(c, "layer.37.weight");
    T_CHECK(t && t->shape[0] == 37 % 5 + 1 && t->chunks[0].file == 37);

    /* Again with the headers gathered in units of many bytes (as they
     * would be beyond 2 GiB): the same catalog. */
    char *before = catalog_text(c), *after = NULL;
    hfdcp__catalog *c2 = NULL;
    uint64_t saved = hfdcp__catalog_gather_max;
    hfdcp__catalog_gather_max = 7;
    rc = hfdcp__catalog_open(comm, c->path, NULL, &c2);
    hfdcp__catalog_gather_max = saved;
    if (rc == HFDCP_OK)
        after = catalog_text(c2);
    T_OKCALL(rc);
    T_CHECK(before && after && strcmp(before, after) == 0);
    free(before);
    free(after);
    hfdcp__catalog_free(c2);
    hfdcp__catalog_free(c);
    return bad;
}

static int catalog_should_give_one_rank_read_failure_to_every_rank(MPI_Comm comm,
                                                                   const char *dir)
{
    char *one = make_subdir(comm, dir, "one");
    char *two = make_subdir(comm, dir, "two");
    int bad = 0;
    if (rank_of(comm) == 0) {
        /* File 1 is read by rank 1 alone (with 2+ ranks). */
        bad += write_numbered(one, 4, (const int[]){1, -1});
        /* Files 1 and 3 are bad: file 1's error is reported, whichever
         * ranks read them. */
        bad += write_numbered(two, 4, (const int[]){3, 1, -1});
    }
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));
    char rank_says[32];
    snprintf(rank_says, sizeof rank_says, "rank %d: ", 1 % size_of(comm));
    bad += EXPECT_REFUSAL(comm, one, HFDCP_ERR_FORMAT, "model-00002-of-00004.safetensors'",
                          rank_says, "header length");
    bad += EXPECT_REFUSAL(comm, two, HFDCP_ERR_FORMAT, "model-00002-of-00004.safetensors'",
                          rank_says);
    free(one);
    free(two);
    return bad;
}

/* ------------------------------------------------------------------------
 * Arguments, missing paths
 * ---------------------------------------------------------------------- */

static int catalog_should_refuse_different_paths_or_key_maps(MPI_Comm comm, const char *dir)
{
    (void)dir;
    int rank = rank_of(comm), last = size_of(comm) - 1;
    char *good = path2(hfdcp_test_fixtures(), "burn/boolean.safetensors");
    char *other = path2(hfdcp_test_fixtures(), "burn/integer.safetensors");
    char want[1200];
    snprintf(want, sizeof want,
             "checkpoint path differs across ranks: rank 0 has '%s', rank %d has '%s'",
             good, last, other);
    int bad = expect_refusal_km(comm, rank == last ? other : good, NULL,
                                HFDCP_ERR_MISMATCH, (const char *const[]){want, NULL});

    hfdcp_key_map *km = NULL, *empty = NULL;
    T_OKCALL(hfdcp_key_map_create(&km));
    T_OKCALL(hfdcp_key_map_add(km, rank == last ? "^a" : "^b", "c"));
    snprintf(want, sizeof want, "rank %d: key map rules differ across ranks", last);
    bad += expect_refusal_km(comm, good, km, HFDCP_ERR_MISMATCH,
                             (const char *const[]){want, NULL});

    /* No key map on rank 0, an empty one elsewhere: the same rules. */
    T_OKCALL(hfdcp_key_map_create(&empty));
    hfdcp__catalog *c = NULL;
    int rc = hfdcp__catalog_open(comm, good, rank == 0 ? NULL : empty, &c);
    if (rc != HFDCP_OK || c->n_tensors != 1)
        bad += hfdcp_test_fail(__FILE__, __LINE__, "%s", hfdcp_last_error());
    hfdcp__catalog_free(c);
    hfdcp_key_map_free(km);
    hfdcp_key_map_free(empty);
    free(good);
    free(other);
    return bad;
}

static int catalog_should_report_missing_paths(MPI_Comm comm, const char *dir)
{
    char *missing = path2(dir, "no-such-checkpoint");
    char *empty = make_subdir(comm, dir, "empty");
    char *other = make_subdir(comm, dir, "other");
    int bad = 0;
    if (rank_of(comm) == 0) {
        char *sub = path2(other, "looks.safetensors"), *readme = path2(other, "README.md");
        bad += mkdir(sub, 0755) != 0;
        bad += write_text(readme, "hello");
        free(sub);
        free(readme);
    }
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));
    bad += EXPECT_REFUSAL(comm, missing, HFDCP_ERR_NOT_FOUND, missing, "does not exist");
    bad += EXPECT_REFUSAL(comm, empty, HFDCP_ERR_NOT_FOUND, "no .safetensors file in directory", empty);
    bad += EXPECT_REFUSAL(comm, other, HFDCP_ERR_NOT_FOUND, "no .safetensors file in directory", other);
    free(missing);
    free(empty);
    free(other);
    return bad;
}

/* ------------------------------------------------------------------------
 * Verify
 * ---------------------------------------------------------------------- */

/* Finds `sub` in one of the problems of `status` that is a warning or not
 * as `warning` says; returns 0 if found. */
static int has_problem_w(const hfdcp__problem *p, size_t n, int status, bool warning,
                         const char *sub)
{
    for (size_t i = 0; i < n; i++)
        if (p[i].status == status && p[i].warning == warning && strstr(p[i].message, sub))
            return 0;
    fprintf(stderr, "[rank %d] no %s %s \"%s\" among %zu:\n", hfdcp_test_rank(),
            warning ? "warning" : "problem", hfdcp_status_name(status), sub, n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "  %s%s: %s\n", p[i].warning ? "warning " : "",
                hfdcp_status_name(p[i].status), p[i].message);
    return 1;
}

#define has_problem(p, n, status, sub) has_problem_w((p), (n), (status), false, (sub))
#define has_warning(p, n, sub) has_problem_w((p), (n), HFDCP_ERR_FORMAT, true, (sub))

static int catalog_verify_should_collect_every_problem(MPI_Comm comm, const char *dir)
{
    char *ix = make_subdir(comm, dir, "verify_index");
    char *dcp = make_subdir(comm, dir, "verify_dcp");
    int bad = 0;
    if (rank_of(comm) == 0) {
        /* Index: a missing file, a name not in its file, a tensor not in
         * the index, a wrong total_size, and one file's header broken. */
        bad += write_hf_pair(
            ix, "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {\"x1\": " M1
                ", \"z\": " M1 ", \"x2\": " M2 ", \"y2\": " M2
                ", \"w\": \"model-00003-of-00003.safetensors\"}}");
        tspec broken[] = {{"q", "F32", 1, {2}, {0}}};
        char *p = path2(ix, "model-00002-of-00002.safetensors");
        bad += write_st(p, broken, 1, false, 1);
        bad += truncate(p, 20) != 0;
        free(p);
        /* Shards: a hole in 'a', an overlap in 'b', a dtype disagreement in
         * 'c', and 'd' in two plain files. */
        tspec s0[] = {{"a", "F32", 1, {2}, {0}}, {"b", "F32", 1, {3}, {0}},
                      {"c", "F32", 1, {2}, {0}}};
        tspec s1[] = {{"a", "F32", 1, {2}, {3}}, {"b", "F32", 1, {3}, {2}},
                      {"c", "I32", 1, {2}, {2}}};
        bad += write_shard(dcp, 0, 2, s0, 3) + write_shard(dcp, 1, 2, s1, 3);
        tspec d0[] = {{"d", "U8", 1, {2}, {0}}};
        char *p1 = path2(dcp, "plain-1.safetensors"), *p2 = path2(dcp, "plain-2.safetensors");
        bad += write_st(p1, d0, 1, false, 1) + write_st(p2, d0, 1, false, 2);
        free(p1);
        free(p2);
    }
    MPI_Barrier(comm);
    T_CHECK(all(comm, bad == 0));

    /* verify is local: every rank runs it. */
    hfdcp__problem *p = NULL;
    hfdcp__catalog *c = (hfdcp__catalog *)1;
    size_t n = 0;
    int rc = hfdcp__catalog_verify(ix, &c, &p, &n);
    T_CHECK(c == NULL);
    T_CHECKF(rc == HFDCP_ERR_NOT_FOUND && n == 4, "rc %s, %zu problems", hfdcp_status_name(rc), n);
    bad += has_problem(p, n, HFDCP_ERR_NOT_FOUND, "names file 'model-00003-of-00003.safetensors'");
    bad += has_problem(p, n, HFDCP_ERR_FORMAT, "model-00002-of-00002.safetensors'");
    bad += has_problem(p, n, HFDCP_ERR_FORMAT, "maps tensor 'z' to file 'model-00001-of-00002.safetensors'");
    bad += has_warning(p, n, "tensor 'y1' of file 'model-00001-of-00002.safetensors' is not in the index");
    hfdcp__problems_free(p, n);

    rc = hfdcp__catalog_verify(dcp, &c, &p, &n);
    T_CHECK(c == NULL);
    T_CHECKF(rc == HFDCP_ERR_FORMAT && n == 4, "rc %s, %zu problems", hfdcp_status_name(rc), n);
    bad += has_problem(p, n, HFDCP_ERR_FORMAT, "tensor 'a': element [2] is not covered");
    bad += has_problem(p, n, HFDCP_ERR_FORMAT, "tensor 'b': chunks [0:3]");
    bad += has_problem(p, n, HFDCP_ERR_FORMAT, "tensor 'c': its chunks disagree on the dtype");
    bad += has_problem(p, n, HFDCP_ERR_FORMAT,
                       "tensor 'd' is in more than one file: 'plain-1.safetensors' and 'plain-2.safetensors'");
    hfdcp__problems_free(p, n);

    /* Missing path; a valid checkpoint. */
    char *missing = path2(dir, "nothing-here");
    rc = hfdcp__catalog_verify(missing, &c, &p, &n);
    T_CHECK(rc == HFDCP_ERR_NOT_FOUND && n == 1 && c == NULL && strstr(p[0].message, missing));
    hfdcp__problems_free(p, n);
    free(missing);
    char *good = path2(hfdcp_test_fixtures(), "SafeTensors.jl/sharded");
    rc = hfdcp__catalog_verify(good, &c, &p, &n);
    free(good);
    T_CHECKF(rc == HFDCP_OK && n == 0 && c != NULL, "%s", hfdcp_last_error());
    T_CHECK(c->n_tensors == 36 && c->has_index && c->total_size == 4305);
    hfdcp__catalog_free(c);
    hfdcp__problems_free(p, n);
    free(ix);
    free(dcp);
    return bad;
}

/* The index's bookkeeping, which no loader reads: warnings of verify (the
 * status --strict reports), the catalog built all the same; open sets no
 * message for them. */
static int catalog_verify_should_warn_about_the_index_bookkeeping(MPI_Comm comm,
                                                                  const char *dir)
{
    static const struct {
        const char *name, *index, *w1, *w2;
    } cases[] = {
        {"stale", "{\"metadata\": {\"total_size\": 4305}, \"weight_map\": {\"x1\": " M1
                  ", \"y1\": " M1 ", \"x2\": " M2 "}}",
         "tensor 'y2' of file 'model-00002-of-00002.safetensors' is not in the index '",
         "model.safetensors.index.json': metadata.total_size is 4305 but the tensors of its "
         "files hold 57 bytes"},
        {"no_total_size", "{\"metadata\": {\"format\": \"pt\"}, \"weight_map\": {\"x1\": " M1
                          ", \"y1\": " M1 ", \"x2\": " M2 ", \"y2\": " M2 "}}",
         "model.safetensors.index.json: metadata has no \"total_size\"", NULL},
        {"no_metadata", "{\"weight_map\": {\"x1\": " M1 ", \"y1\": " M1 ", \"x2\": " M2
                        ", \"y2\": " M2 "}}",
         "model.safetensors.index.json has no \"metadata\" object", NULL},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *d = make_subdir(comm, dir, cases[i].name);
        hfdcp__problem *p = NULL;
        hfdcp__catalog *c = NULL;
        size_t n = 0;
        if (rank_of(comm) == 0)
            bad += write_hf_pair(d, cases[i].index);
        MPI_Barrier(comm);
        T_CHECK(all(comm, bad == 0));
        int rc = hfdcp__catalog_verify(d, &c, &p, &n);
        T_CHECKF(rc == HFDCP_OK && c != NULL && n == (cases[i].w2 ? 2u : 1u),
                 "%s: rc %s, %zu problems", cases[i].name, hfdcp_status_name(rc), n);
        T_CHECK(c->n_tensors == 4 && c->total_size == 57 && hfdcp__catalog_find(c, "y2"));
        bad += has_warning(p, n, cases[i].w1);
        if (cases[i].w2)
            bad += has_warning(p, n, cases[i].w2);
        hfdcp__problems_free(p, n);
        hfdcp__catalog_free(c);
        c = NULL;
        hfdcp__error(HFDCP_OK, "before the open");
        rc = hfdcp__catalog_open(comm, d, NULL, &c);
        T_CHECKF(rc == HFDCP_OK && c->n_tensors == 4, "%s: %s", cases[i].name,
                 hfdcp_last_error());
        T_CHECKF(strcmp(hfdcp_last_error(), "before the open") == 0, "%s", hfdcp_last_error());
        hfdcp__catalog_free(c);
        free(d);
    }
    return bad;
}

static const hfdcp_test_case cases[] = {
    {"catalog_should_match_the_oracle_on_every_fixture",
     catalog_should_match_the_oracle_on_every_fixture, 1},
    {"catalog_should_give_the_sharded_twin_the_same_tensors",
     catalog_should_give_the_sharded_twin_the_same_tensors, 1},
    {"catalog_should_refuse_the_invalid_fixture_on_every_rank",
     catalog_should_refuse_the_invalid_fixture_on_every_rank, 1},
    {"catalog_should_merge_dcp_shards", catalog_should_merge_dcp_shards, 1},
    {"catalog_should_refuse_holes_overlaps_and_disagreeing_shards",
     catalog_should_refuse_holes_overlaps_and_disagreeing_shards, 1},
    {"catalog_should_refuse_a_tensor_in_two_plain_files",
     catalog_should_refuse_a_tensor_in_two_plain_files, 1},
    {"catalog_should_check_the_index_against_the_files",
     catalog_should_check_the_index_against_the_files, 1},
    {"catalog_should_rename_and_refuse_collisions", catalog_should_rename_and_refuse_collisions, 1},
    {"catalog_should_read_40_files_spread_over_the_ranks",
     catalog_should_read_40_files_spread_over_the_ranks, 1},
    {"catalog_should_give_one_rank_read_failure_to_every_rank",
     catalog_should_give_one_rank_read_failure_to_every_rank, 1},
    {"catalog_should_refuse_different_paths_or_key_maps",
     catalog_should_refuse_different_paths_or_key_maps, 2},
    {"catalog_should_report_missing_paths", catalog_should_report_missing_paths, 1},
    {"catalog_verify_should_collect_every_problem", catalog_verify_should_collect_every_problem, 1},
    {"catalog_verify_should_warn_about_the_index_bookkeeping",
     catalog_verify_should_warn_about_the_index_bookkeeping, 1},
    {"catalog_should_read_a_box_saved_by_several_files_from_the_first",
     catalog_should_read_a_box_saved_by_several_files_from_the_first, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
