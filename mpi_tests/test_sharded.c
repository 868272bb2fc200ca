// ranks: 1 2 3 4
// timeout: 300
/*
 * test_sharded.c - sharded saves (save_sharded = 1): one shard file per
 * rank and file index, named as the reference names them, with the
 * chunk's shape in the header and DCP_SHARDING_INFO / DCP_VERSION /
 * format in __metadata__ spelled as PyTorch DCP writes them (checked by an
 * independent Python script); every dtype (4- and 6-bit with whole-byte
 * chunks), scalars, empty tensors, rows / columns / blocks / replicated
 * chunks (written once); the reader loading the shards back at another
 * rank count and decomposition; bad plans and chunks a shard file cannot
 * hold refused identically with no file left; a failed write agreed;
 * thread_count 0, 2 and 4 giving the same files (sharded and direct);
 * stale files replaced; consolidated_output_path giving the files of a
 * direct save.
 *
 * Tensor bytes come from a formula of the name and the global byte index
 * (as in test_writer.c), so any chunk can be generated or checked
 * anywhere.
 */
#include <dirent.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define MAXD 6

/* ---- content (hfdcp_test_byte_at, as the Python scripts compute it) ---- */

/* The box [off, off+size) of a tensor, row-major and contiguous; rows of
 * sub-byte dtypes start and end on whole bytes. */
static void fill_box(uint8_t *buf, const char *name, int bits, int ndim,
                     const int64_t *shape, const int64_t *off,
                     const int64_t *size)
{
    uint64_t seed = hfdcp_test_seed_of(name), run, mem = 0;
    int64_t idx[MAXD] = {0};

    if (ndim == 0) {
        for (int k = 0; k < bits / 8; k++)
            buf[k] = hfdcp_test_byte_at(seed, (uint64_t)k);
        return;
    }
    for (int d = 0; d < ndim; d++)
        if (size[d] == 0)
            return;
    run = (uint64_t)size[ndim - 1] * (uint64_t)bits / 8;
    for (;;) {
        uint64_t lin = 0, gb;
        for (int d = 0; d < ndim - 1; d++)
            lin = lin * (uint64_t)shape[d] + (uint64_t)(off[d] + idx[d]);
        lin = lin * (uint64_t)shape[ndim - 1] + (uint64_t)off[ndim - 1];
        gb = lin * (uint64_t)bits / 8;
        for (uint64_t k = 0; k < run; k++)
            buf[mem + k] = hfdcp_test_byte_at(seed, gb + k);
        mem += run;
        int d = ndim - 2;
        while (d >= 0 && ++idx[d] == size[d])
            idx[d--] = 0;
        if (d < 0)
            break;
    }
}

static uint64_t box_bytes(hfdcp_dtype dt, int ndim, const int64_t *size)
{
    uint64_t n = (uint64_t)hfdcp_dtype_bits(dt);
    for (int d = 0; d < ndim; d++)
        n *= (uint64_t)size[d];
    return n / 8;
}

/* ---- tensors and decompositions: at most one box per rank ---- */

enum { ROWS, COLS, BLOCKS, REPL, LAST };

typedef struct {
    char name[80];
    hfdcp_dtype dtype;
    int ndim;
    int64_t shape[MAXD];
    int save, load;
} tspec;

static void spec(tspec *t, const char *name, hfdcp_dtype dt, int ndim,
                 const int64_t *shape, int save, int load)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    t->save = save;
    t->load = load;
}

static int granule(hfdcp_dtype dt)
{
    int bits = hfdcp_dtype_bits(dt);
    return bits == 4 ? 2 : bits == 6 ? 4 : 1;
}

static void part(int64_t n, int g, int r, int p, int64_t *lo, int64_t *len)
{
    int64_t u = n / g;
    *lo = u * r / p * g;
    *len = u * (r + 1) / p * g - *lo;
}

/* Rank r's box of tensor t in decomposition `kind` over P ranks; false
 * when r holds nothing. */
static bool box_of(const tspec *t, int kind, int r, int P, int64_t *off,
                   int64_t *size)
{
    int last = t->ndim - 1;

    for (int d = 0; d < t->ndim; d++) {
        off[d] = 0;
        size[d] = t->shape[d];
    }
    if (t->ndim == 0 && kind != LAST)
        kind = REPL;
    if (kind == BLOCKS && t->ndim < 2)
        kind = ROWS;
    if (kind == REPL)
        return true;
    if (kind == LAST)
        return r == P - 1;
    if (kind == ROWS || kind == COLS) {
        int d = kind == ROWS ? 0 : last;
        part(t->shape[d], d == last ? granule(t->dtype) : 1, r, P, &off[d],
             &size[d]);
        if (t->shape[d] == 0)
            return r == 0; /* an empty dimension: one empty box */
        return size[d] > 0;
    }
    /* BLOCKS: 2 x P/2 (P even), else 1 x P. */
    int p0 = P % 2 == 0 ? 2 : 1, p1 = P / p0;
    part(t->shape[0], 1, r / p1, p0, &off[0], &size[0]);
    part(t->shape[last], granule(t->dtype), r % p1, p1, &off[last],
         &size[last]);
    return true;
}

/* ---- collective helpers ---- */

/* Saves the tensors (each rank its box of the save decomposition) with
 * options `o`; *status gets the commit's status. */
static int save_specs(MPI_Comm comm, const char *path, const tspec *ts,
                      size_t nt, const hfdcp_save_options *o, int *status)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    uint8_t **bufs = calloc(nt + 1, sizeof *bufs);
    hfdcp_writer *w = NULL;

    T_CHECK(bufs != NULL);
    *status = hfdcp_writer_open(comm, path, o, &w);
    if (*status != HFDCP_OK) {
        free(bufs);
        return T_OK;
    }
    for (size_t i = 0; i < nt; i++) {
        const tspec *t = &ts[i];
        int64_t off[MAXD], size[MAXD];
        if (!box_of(t, t->save, rank, P, off, size))
            continue;
        bufs[i] = malloc(box_bytes(t->dtype, t->ndim, size) + 1);
        fill_box(bufs[i], t->name, hfdcp_dtype_bits(t->dtype), t->ndim,
                 t->shape, off, size);
        if (hfdcp_writer_add(w, t->name, t->dtype, t->ndim, t->shape, off,
                             size, bufs[i]) != HFDCP_OK)
            fprintf(stderr, "[rank %d] add %s: %s\n", rank, t->name,
                    hfdcp_last_error());
    }
    *status = hfdcp_writer_commit(w);
    hfdcp_writer_free(w);
    for (size_t i = 0; i < nt; i++)
        free(bufs[i]);
    free(bufs);
    return T_OK;
}

/* Loads every tensor on `comm` in its load decomposition and compares
 * every byte.  Agreed on `comm`. */
static int load_check(MPI_Comm comm, const char *path, const tspec *ts,
                      size_t nt)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    hfdcp_reader *r = NULL;
    uint8_t **dest = calloc(nt + 1, sizeof *dest);
    int64_t (*offs)[MAXD] = calloc(nt + 1, sizeof *offs);
    int64_t (*sizes)[MAXD] = calloc(nt + 1, sizeof *sizes);
    bool ok = dest != NULL && offs != NULL && sizes != NULL;

    if (hfdcp_reader_open(comm, path, NULL, &r) != HFDCP_OK) {
        fprintf(stderr, "[rank %d] reader_open %s: %s\n", rank, path,
                hfdcp_last_error());
        free(dest);
        free(offs);
        free(sizes);
        return 1;
    }
    T_CHECK(hfdcp_reader_count(r) == nt);
    for (size_t i = 0; ok && i < nt; i++) {
        const tspec *t = &ts[i];
        hfdcp_tensor_info info;
        if (hfdcp_reader_find(r, t->name, &info) != HFDCP_OK ||
            info.dtype != t->dtype || info.ndim != t->ndim ||
            (t->ndim > 0 && memcmp(info.shape, t->shape,
                                   (size_t)t->ndim * sizeof(int64_t)))) {
            fprintf(stderr, "[rank %d] %s: wrong dtype or shape read back\n",
                    rank, t->name);
            ok = false;
            break;
        }
        /* The load decomposition, by reversed rank. */
        if (!box_of(t, t->load, P - 1 - rank, P, offs[i], sizes[i]))
            continue;
        dest[i] = malloc(box_bytes(t->dtype, t->ndim, sizes[i]) + 1);
        if (hfdcp_reader_add(r, t->name, t->dtype, t->ndim, offs[i],
                             sizes[i], dest[i]) != HFDCP_OK)
            ok = false;
    }
    if (hfdcp_reader_load(r) != HFDCP_OK) {
        fprintf(stderr, "[rank %d] load: %s\n", rank, hfdcp_last_error());
        ok = false;
    }
    for (size_t i = 0; ok && i < nt; i++) {
        const tspec *t = &ts[i];
        if (dest[i] == NULL)
            continue;
        uint64_t n = box_bytes(t->dtype, t->ndim, sizes[i]);
        uint8_t *want = malloc(n + 1);
        fill_box(want, t->name, hfdcp_dtype_bits(t->dtype), t->ndim,
                 t->shape, offs[i], sizes[i]);
        if (memcmp(want, dest[i], n) != 0) {
            fprintf(stderr, "[rank %d] %s loaded wrong bytes\n", rank,
                    t->name);
            ok = false;
        }
        free(want);
    }
    hfdcp_reader_free(r);
    for (size_t i = 0; i < nt; i++)
        free(dest[i]);
    free(dest);
    free(offs);
    free(sizes);
    return hfdcp_test_all_ok(comm, ok) ? T_OK : 1;
}

/* Sorted names in a directory; -1 if it cannot be listed. */
static int list_dir(const char *path, char names[][256], int max)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL && n < max) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(names[n++], 256, "%s", e->d_name);
    }
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char tmp[256];
            memcpy(tmp, names[j], 256);
            memcpy(names[j], names[j - 1], 256);
            memcpy(names[j - 1], tmp, 256);
        }
    return n;
}

static int write_spec(const char *path, const tspec *ts, size_t nt)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "{");
    for (size_t i = 0; i < nt; i++) {
        fprintf(f, "%s\"%s\": {\"dtype\": \"%s\", \"shape\": [", i ? ", " : "",
                ts[i].name, hfdcp_dtype_name(ts[i].dtype));
        for (int d = 0; d < ts[i].ndim; d++)
            fprintf(f, "%s%" PRId64, d ? ", " : "", ts[i].shape[d]);
        fprintf(f, "]}");
    }
    fprintf(f, "}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* Rank 0 runs sharded_check.py on `path` (`mode`: "crc", "nocrc", or
 * "any": whether hfdcp_crc32c must be there); agreed. */
static bool python_check(MPI_Comm comm, const char *dir, const char *path,
                         const tspec *ts, size_t nt, const char *mode)
{
    int bad = 0;

    if (hfdcp_test_comm_rank(comm) == 0) {
        char specp[700], cmd[2400], *out = NULL;
        snprintf(specp, sizeof specp, "%s/spec.json", dir);
        bad = write_spec(specp, ts, nt) != 0;
        snprintf(cmd, sizeof cmd, "%s %s/sharded_check.py %s %s %s 2>&1",
                 hfdcp_test_python(), hfdcp_test_scripts(), path, specp,
                 mode);
        int ex = bad ? -1 : hfdcp_test_run(cmd, &out);
        if (ex != 0 || out == NULL || strncmp(out, "ok ", 3) != 0) {
            fprintf(stderr, "sharded_check.py (exit %d): %s\n", ex,
                    out ? out : "(no output)");
            bad = 1;
        }
        free(out);
    }
    return hfdcp_test_all_ok(comm, bad == 0);
}

static bool python_ok(MPI_Comm comm, const char *dir, const char *path,
                      const tspec *ts, size_t nt)
{
    return python_check(comm, dir, path, ts, nt, "crc");
}

static hfdcp_save_options sharded_opts(uint64_t max_shard_bytes,
                                       int thread_count)
{
    hfdcp_save_options o;
    hfdcp_save_options_init(&o);
    o.save_sharded = 1;
    o.max_shard_bytes = max_shard_bytes;
    o.thread_count = thread_count;
    return o;
}

/* A model with every dtype and split, scalars and empty tensors. */
static size_t model(tspec *ts, int P)
{
    static const int kinds[] = {ROWS, COLS, BLOCKS, REPL, LAST};
    int64_t e2[2] = {3, 0}, e1[1] = {0}, c3[3] = {3, 2, 8};
    char name[64];
    size_t n = 0;

    for (int dt = 0; dt < HFDCP_DTYPE_COUNT; dt++) {
        int k = kinds[dt % 5];
        int64_t m[2] = {2 * P + 1, 8 * P};
        snprintf(name, sizeof name, "layers.%d.%s", dt,
                 hfdcp_dtype_name((hfdcp_dtype)dt));
        spec(&ts[n++], name, (hfdcp_dtype)dt, 2, m, k, kinds[(dt + 2) % 5]);
    }
    spec(&ts[n++], "cube", HFDCP_F32, 3, c3, COLS, ROWS);
    spec(&ts[n++], "step", HFDCP_I64, 0, NULL, REPL, REPL);
    spec(&ts[n++], "scale", HFDCP_BF16, 0, NULL, LAST, REPL);
    spec(&ts[n++], "empty.rows", HFDCP_F16, 2, e2, ROWS, COLS);
    spec(&ts[n++], "empty.repl", HFDCP_F32, 1, e1, REPL, REPL);
    return n;
}

/* ---- cases ---- */

/* Names, headers, metadata spelling and bytes (Python), then the reader
 * merges the shards back at every rank count from 1 to P. */
static int sharded_should_write_shard_files_as_the_reference(MPI_Comm comm,
                                                            const char *dir)
{
    int P = hfdcp_test_comm_size(comm), rank = hfdcp_test_comm_rank(comm), st = -1;
    tspec ts[HFDCP_DTYPE_COUNT + 8];
    size_t nt = model(ts, P);
    char path[600];
    hfdcp_save_options o = sharded_opts(600, 0);

    snprintf(path, sizeof path, "%s/ckpt", dir);
    T_OKCALL(save_specs(comm, path, ts, nt, &o, &st));
    T_CHECKF(hfdcp_test_all_ok(comm, st == HFDCP_OK), "commit: %s", hfdcp_last_error());
    T_CHECK(python_ok(comm, dir, path, ts, nt));
    T_CHECK(load_check(comm, path, ts, nt) == T_OK);
    /* Another rank count: the first k ranks load what P ranks saved. */
    for (int k = 1; k < P; k++) {
        MPI_Comm sub;
        MPI_Comm_split(comm, rank < k ? 0 : MPI_UNDEFINED, rank, &sub);
        int bad = 0;
        if (sub != MPI_COMM_NULL) {
            bad = load_check(sub, path, ts, nt);
            MPI_Comm_free(&sub);
        }
        T_CHECKF(hfdcp_test_all_ok(comm, bad == 0), "loading at %d ranks", k);
    }
    return T_OK;
}

/* The shard file names: the file of each tensor's index in a direct save
 * of the same plan, one per rank that writes in it; no index. */
static int sharded_should_name_files_by_rank_and_file_index(MPI_Comm comm,
                                                           const char *dir)
{
    int P = hfdcp_test_comm_size(comm), st = -1;
    tspec ts[4];
    char path[600], names[32][256], want[64];
    int64_t m[2] = {2 * P, 6};
    hfdcp_save_options o = sharded_opts(0, 2);
    hfdcp_file_map *fm;

    spec(&ts[0], "a", HFDCP_F32, 2, m, ROWS, COLS);
    spec(&ts[1], "b", HFDCP_F32, 2, m, REPL, ROWS);
    spec(&ts[2], "c", HFDCP_F32, 2, m, LAST, COLS);
    spec(&ts[3], "d", HFDCP_F32, 2, m, COLS, REPL);
    T_OKCALL(hfdcp_file_map_create(&fm));
    for (int i = 0; i < 4; i++)
        T_OKCALL(hfdcp_file_map_set(fm, ts[i].name, i + 1));
    o.file_map = fm;
    snprintf(path, sizeof path, "%s/ckpt", dir);
    T_OKCALL(save_specs(comm, path, ts, 4, &o, &st));
    hfdcp_file_map_free(fm);
    T_CHECKF(hfdcp_test_all_ok(comm, st == HFDCP_OK), "commit: %s", hfdcp_last_error());
    if (hfdcp_test_comm_rank(comm) == 0) {
        int n = list_dir(path, names, 32), of2 = 0;
        /* a and d: one file per rank; b (replicated): once; c: the last
         * rank's. */
        T_CHECKF(n == 2 * P + 2, "%d files", n);
        for (int r = 1; r <= P; r++)
            for (int f = 1; f <= 4; f++) {
                bool found = false;
                if (f == 2 || (f == 3 && r != P))
                    continue;
                snprintf(want, sizeof want,
                         "shard-%05d-model-%05d-of-00004.safetensors", r, f);
                for (int k = 0; k < n; k++)
                    found = found || strcmp(names[k], want) == 0;
                T_CHECKF(found, "no %s", want);
            }
        for (int k = 0; k < n; k++)
            of2 += strncmp(names[k], "shard-", 6) == 0 &&
                   strcmp(names[k] + 11,
                          "-model-00002-of-00004.safetensors") == 0;
        T_CHECK(of2 == 1);
    }
    T_CHECK(python_ok(comm, dir, path, ts, 4));
    T_CHECK(load_check(comm, path, ts, 4) == T_OK);
    return T_OK;
}

/* One bad plan: the status and message on every rank, nothing written. */
typedef void (*setup_fn)(hfdcp_writer *w, int rank, int P, float *data);

static int refuse(MPI_Comm comm, const char *path, setup_fn setup, int want,
                  const char *substr)
{
    hfdcp_save_options o = sharded_opts(0, 0);
    hfdcp_writer *w;
    float data[256];
    char names[4][256];

    for (int i = 0; i < 256; i++)
        data[i] = (float)i;
    T_OKCALL(hfdcp_writer_open(comm, path, &o, &w));
    setup(w, hfdcp_test_comm_rank(comm), hfdcp_test_comm_size(comm), data);
    T_STATUS(hfdcp_writer_commit(w), want, substr);
    T_CHECKF(hfdcp_test_same_message(comm), "messages differ: %s", hfdcp_last_error());
    hfdcp_writer_free(w);
    T_CHECKF(list_dir(path, names, 4) < 0, "%s was created", path);
    return T_OK;
}

static void rows(hfdcp_writer *w, int rank, int64_t nrows, int64_t at,
                 hfdcp_dtype dt, float *data)
{
    int64_t shape[2] = {nrows, 4}, off[2] = {at, 0}, size[2] = {2, 4};
    (void)rank;
    hfdcp_writer_add(w, "w", dt, 2, shape, off, size, data);
}

static void hole(hfdcp_writer *w, int rank, int P, float *data)
{
    rows(w, rank, 2 * P + 1, 2 * rank, HFDCP_F32, data);
}

static void overlap(hfdcp_writer *w, int rank, int P, float *data)
{
    int64_t shape[2] = {2 * P, 4}, off[2] = {1, 0}, size[2] = {1, 4};
    rows(w, rank, 2 * P, 2 * rank, HFDCP_F32, data);
    if (rank == P - 1) /* row 1 again */
        hfdcp_writer_add(w, "w", HFDCP_F32, 2, shape, off, size, data);
}

static void dtype_disagrees(hfdcp_writer *w, int rank, int P, float *data)
{
    if (P == 1) { /* one rank: two chunks */
        rows(w, rank, 4, 0, HFDCP_F32, data);
        rows(w, rank, 4, 2, HFDCP_F16, data);
        return;
    }
    rows(w, rank, 2 * P, 2 * rank, rank == P - 1 ? HFDCP_F16 : HFDCP_F32,
         data);
}

/* The last rank holds its rows as two chunks of "w". */
static void two_chunks(hfdcp_writer *w, int rank, int P, float *data)
{
    int64_t shape[2] = {2 * P, 4}, o0[2] = {2 * rank, 0},
            o1[2] = {2 * rank + 1, 0}, s[2] = {1, 4};
    if (rank < P - 1) {
        rows(w, rank, 2 * P, 2 * rank, HFDCP_F32, data);
        return;
    }
    hfdcp_writer_add(w, "w", HFDCP_F32, 2, shape, o0, s, data);
    hfdcp_writer_add(w, "w", HFDCP_F32, 2, shape, o1, s, data + 4);
}

static int sharded_should_refuse_bad_plans_identically_leaving_no_files(
    MPI_Comm comm, const char *dir)
{
    int P = hfdcp_test_comm_size(comm);
    char path[600], want[128];

    snprintf(path, sizeof path, "%s/hole", dir);
    T_OKCALL(refuse(comm, path, hole, HFDCP_ERR_PLAN,
                    "is not covered by any chunk"));
    snprintf(path, sizeof path, "%s/overlap", dir);
    T_OKCALL(refuse(comm, path, overlap, HFDCP_ERR_PLAN, "overlap"));
    snprintf(path, sizeof path, "%s/dtype", dir);
    T_OKCALL(refuse(comm, path, dtype_disagrees, HFDCP_ERR_PLAN,
                    "tensor 'w': rank 0 saves it as F32 but rank"));
    snprintf(path, sizeof path, "%s/two", dir);
    snprintf(want, sizeof want,
             "tensor 'w': rank %d would write two chunks of it, [%d:%d, 0:4] "
             "and [%d:%d, 0:4]",
             P - 1, 2 * P - 2, 2 * P - 1, 2 * P - 1, 2 * P);
    T_OKCALL(refuse(comm, path, two_chunks, HFDCP_ERR_UNSUPPORTED, want));
    T_CHECK(strstr(hfdcp_last_error(), "one chunk per tensor") != NULL);
    return T_OK;
}

/* thread_count 0, 2 and 4 write the same files, in both modes. */
static int sharded_should_write_the_same_files_at_any_thread_count(
    MPI_Comm comm, const char *dir)
{
    int P = hfdcp_test_comm_size(comm), st = -1;
    tspec ts[HFDCP_DTYPE_COUNT + 8];
    size_t nt = model(ts, P);
    static const int counts[] = {0, 2, 4};
    char path[600], ref[600];

    for (int sharded = 0; sharded < 2; sharded++)
        for (int k = 0; k < 3; k++) {
            hfdcp_save_options o = sharded_opts(1500, counts[k]);
            o.save_sharded = sharded;
            snprintf(path, sizeof path, "%s/%s%d", dir,
                     sharded ? "sharded" : "direct", counts[k]);
            T_OKCALL(save_specs(comm, path, ts, nt, &o, &st));
            T_CHECKF(hfdcp_test_all_ok(comm, st == HFDCP_OK), "commit: %s",
                     hfdcp_last_error());
            if (k == 0)
                continue;
            snprintf(ref, sizeof ref, "%s/%s0", dir,
                     sharded ? "sharded" : "direct");
            T_CHECK(hfdcp_test_same_dirs(comm, ref, path));
        }
    snprintf(path, sizeof path, "%s/sharded4", dir);
    T_CHECK(load_check(comm, path, ts, nt) == T_OK);
    return T_OK;
}

/* A write failing on the last rank only (the test fault, then a file
 * size limit on every rank): the same error everywhere, no file left. */
static int sharded_should_agree_on_a_failed_write(MPI_Comm comm,
                                                  const char *dir)
{
    int P = hfdcp_test_comm_size(comm), rank = hfdcp_test_comm_rank(comm), st = -1;
    tspec ts[3];
    char path[600], names[8][256], want[64];
    int64_t m[2] = {2 * P, 8};
    hfdcp_save_options o = sharded_opts(1, 2);

    spec(&ts[0], "x", HFDCP_F32, 2, m, ROWS, COLS);
    spec(&ts[1], "y", HFDCP_F32, 2, m, COLS, ROWS);
    spec(&ts[2], "z", HFDCP_F32, 2, m, BLOCKS, ROWS);
    snprintf(path, sizeof path, "%s/ckpt", dir);
    if (rank == P - 1)
        hfdcp__writer_fault_file = 1;
    T_OKCALL(save_specs(comm, path, ts, 3, &o, &st));
    hfdcp__writer_fault_file = -1;
    T_CHECKF(hfdcp_test_all_ok(comm, st == HFDCP_ERR_IO), "status %s: %s",
             hfdcp_status_name(st), hfdcp_last_error());
    snprintf(want, sizeof want, "on rank %d (test fault)", P - 1);
    T_CHECKF(strstr(hfdcp_last_error(), want) != NULL &&
                 strstr(hfdcp_last_error(), "model-00002-of-00003") != NULL,
             "message: %s", hfdcp_last_error());
    T_CHECK(hfdcp_test_same_message(comm));
    T_CHECKF(list_dir(path, names, 8) == 0, "%s holds %s", path, names[0]);
    T_OKCALL(save_specs(comm, path, ts, 3, &o, &st));
    T_CHECK(hfdcp_test_all_ok(comm, st == HFDCP_OK));
    T_CHECK(load_check(comm, path, ts, 3) == T_OK);
    return T_OK;
}

/* A sharded save replaces an earlier direct save, earlier shards, an old
 * index and leftovers, and keeps the user's files; a direct save then
 * replaces the shards. */
static int sharded_should_replace_stale_files(MPI_Comm comm, const char *dir)
{
    int P = hfdcp_test_comm_size(comm), st = -1;
    tspec ts[2];
    char path[600], p[800], names[32][256], want[64];
    int64_t m[2] = {2 * P, 5};
    hfdcp_save_options o = sharded_opts(0, 0);

    spec(&ts[0], "a", HFDCP_I32, 2, m, ROWS, COLS);
    spec(&ts[1], "b", HFDCP_I32, 2, m, ROWS, COLS);
    snprintf(path, sizeof path, "%s/ckpt", dir);
    o.save_sharded = 0;
    o.max_shard_bytes = 1;
    T_OKCALL(save_specs(comm, path, ts, 2, &o, &st));
    T_CHECK(hfdcp_test_all_ok(comm, st == HFDCP_OK));
    if (hfdcp_test_comm_rank(comm) == 0) {
        static const char *junk[] = {
            "shard-00009-model-00001-of-00002.safetensors",
            ".hfdcp-tmp-0123456789abcdef-x.tmp",
            "notes.txt",
        };
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof p, "%s/%s", path, junk[i]);
            T_CHECK(hfdcp_test_write_file(p, "junk", 4) == 0);
        }
    }
    MPI_Barrier(comm);
    o = sharded_opts(0, 0);
    T_OKCALL(save_specs(comm, path, ts, 2, &o, &st));
    T_CHECK(hfdcp_test_all_ok(comm, st == HFDCP_OK));
    if (hfdcp_test_comm_rank(comm) == 0) {
        T_CHECK(list_dir(path, names, 32) == P + 1);
        T_CHECK(strcmp(names[0], "notes.txt") == 0);
        for (int r = 0; r < P; r++) {
            snprintf(want, sizeof want,
                     "shard-%05d-model-00001-of-00001.safetensors", r + 1);
            T_CHECKF(strcmp(names[r + 1], want) == 0, "%s", names[r + 1]);
        }
    }
    T_CHECK(load_check(comm, path, ts, 2) == T_OK);
    o.save_sharded = 0;
    T_OKCALL(save_specs(comm, path, ts, 2, &o, &st));
    T_CHECK(hfdcp_test_all_ok(comm, st == HFDCP_OK));
    if (hfdcp_test_comm_rank(comm) == 0) {
        T_CHECK(list_dir(path, names, 32) == 3);
        T_CHECK(strcmp(names[0], "model.safetensors") == 0 &&
                strcmp(names[1], HFDCP_INDEX_NAME) == 0);
    }
    T_CHECK(load_check(comm, path, ts, 2) == T_OK);
    return T_OK;
}

/* No tensor at all: one empty shard file, read back as an empty
 * checkpoint. */
static int sharded_should_save_an_empty_checkpoint(MPI_Comm comm,
                                                   const char *dir)
{
    int st = -1;
    char path[600], names[4][256];
    hfdcp_save_options o = sharded_opts(0, 0);
    hfdcp_reader *r;

    snprintf(path, sizeof path, "%s/ckpt", dir);
    T_OKCALL(save_specs(comm, path, NULL, 0, &o, &st));
    T_CHECK(hfdcp_test_all_ok(comm, st == HFDCP_OK));
    T_CHECK(list_dir(path, names, 4) == 1 &&
            strcmp(names[0], "shard-00001-model-00001-of-00001.safetensors") ==
                0);
    T_OKCALL(hfdcp_reader_open(comm, path, NULL, &r));
    T_CHECK(hfdcp_reader_count(r) == 0);
    hfdcp_reader_free(r);
    return T_OK;
}

/* consolidated_output_path: the sharded save, then consolidation into a
 * directory whose files are those of a direct save of the same tensors,
 * byte for byte, with a split by size, with one file, and with a file map
 * whose largest index no tensor uses (the shards and the consolidated
 * files are named after it, as a direct save's). */
static int sharded_should_consolidate_into_a_direct_save(MPI_Comm comm,
                                                         const char *dir)
{
    int P = hfdcp_test_comm_size(comm), st = -1;
    tspec ts[HFDCP_DTYPE_COUNT + 8];
    size_t nt = model(ts, P);
    char shards[600], out[600], direct[600];
    hfdcp_file_map *fm;

    T_OKCALL(hfdcp_file_map_create(&fm));
    for (size_t i = 0; i < nt; i++)
        T_OKCALL(hfdcp_file_map_set(fm, ts[i].name, 1 + (int)(i % 2)));
    T_OKCALL(hfdcp_file_map_set(fm, "nobody.saves.this", 3));
    for (int mode = 0; mode < 3; mode++) {
        hfdcp_save_options o = sharded_opts(mode == 1 ? 500 : 0, 2);
        snprintf(shards, sizeof shards, "%s/shards%d", dir, mode);
        snprintf(out, sizeof out, "%s/out%d", dir, mode);
        snprintf(direct, sizeof direct, "%s/direct%d", dir, mode);
        o.file_map = mode == 2 ? fm : NULL;
        o.consolidated_output_path = out;
        o.num_threads_consolidation = 2;
        T_OKCALL(save_specs(comm, shards, ts, nt, &o, &st));
        T_CHECKF(hfdcp_test_all_ok(comm, st == HFDCP_OK), "commit: %s",
                 hfdcp_last_error());
        T_CHECK(python_check(comm, dir, shards, ts, nt, "crc"));
        o.save_sharded = 0;
        o.consolidated_output_path = NULL;
        o.num_threads_consolidation = 0;
        T_OKCALL(save_specs(comm, direct, ts, nt, &o, &st));
        T_CHECK(hfdcp_test_all_ok(comm, st == HFDCP_OK));
        T_CHECK(hfdcp_test_same_dirs(comm, direct, out));
        T_CHECK(load_check(comm, out, ts, nt) == T_OK);
    }
    hfdcp_file_map_free(fm);
    if (hfdcp_test_comm_rank(comm) == 0) {
        char names[64][256];
        int n = list_dir(out, names, 64), of3 = 0;
        T_CHECK(n == 3);
        T_CHECK(strcmp(names[0], "model-00001-of-00003.safetensors") == 0 &&
                strcmp(names[1], "model-00002-of-00003.safetensors") == 0 &&
                strcmp(names[2], HFDCP_INDEX_NAME) == 0);
        n = list_dir(shards, names, 64);
        for (int k = 0; k < n; k++)
            of3 += strstr(names[k], "-of-00003.safetensors") != NULL;
        T_CHECKF(n > 0 && of3 == n, "%d of %d shard files are -of-00003",
                 of3, n);
    }
    return T_OK;
}

/* The first `s` in b[0..n), or NULL. */
static unsigned char *find_text(unsigned char *b, size_t n, const char *s)
{
    size_t k = strlen(s);
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (memcmp(b + i, s, k) == 0)
            return b + i;
    return NULL;
}

/* Rank 0 blanks `key` (exact text, same length) in the header of the file
 * at `path`: the JSON stays valid, the header length unchanged. */
static int blank_in_header(const char *path, const char *key)
{
    size_t len = 0;
    unsigned char *b = hfdcp_test_read_file(path, &len);
    unsigned char *at;
    int rc = 1;

    if (b == NULL || len < 8)
        goto done;
    at = find_text(b, len, key);
    if (at == NULL)
        goto done;
    memset(at, ' ', strlen(key));
    rc = hfdcp_test_write_file(path, b, len);
done:
    free(b);
    return rc;
}

/* Rows split over P ranks, the last rank's shard file deleted: with the
 * declared global shape (hfdcp_global_shapes) the hole is found; with the
 * key blanked out of the remaining headers, as files of an older layout,
 * the smaller tensor loads as before. */
static int sharded_should_detect_a_missing_last_shard(MPI_Comm comm,
                                                      const char *dir)
{
    int P = hfdcp_test_comm_size(comm), rank = hfdcp_test_comm_rank(comm), st = -1;
    tspec ts[1];
    int64_t m[2] = {2 * P, 3}, lo, len;
    char path[600], file[700], want[128], comma[130], hole[128];
    hfdcp_save_options o = sharded_opts(1 << 20, 0);
    hfdcp_reader *r = NULL;
    hfdcp_tensor_info info;
    int bad = 0, rc;

    if (P < 2)
        return T_OK;
    spec(&ts[0], "w", HFDCP_F32, 2, m, ROWS, ROWS);
    snprintf(path, sizeof path, "%s/ckpt", dir);
    T_OKCALL(save_specs(comm, path, ts, 1, &o, &st));
    T_CHECKF(hfdcp_test_all_ok(comm, st == HFDCP_OK), "commit: %s", hfdcp_last_error());
    hfdcp_test_part(m[0], P - 1, P, &lo, &len);
    snprintf(want, sizeof want, "\"hfdcp_global_shapes\":\"{\\\"w\\\":[%d,3]}\"",
             2 * P);
    snprintf(comma, sizeof comma, ",%s", want);
    snprintf(hole, sizeof hole, "element [%d, 0] is not covered", (int)lo);
    if (rank == 0) {
        size_t n = 0;
        unsigned char *b;
        snprintf(file, sizeof file, "%s/shard-00001-model-00001-of-00001.safetensors",
                 path);
        b = hfdcp_test_read_file(file, &n);
        bad += b == NULL || n < 8 || find_text(b + 8, n - 8, want) == NULL;
        if (bad)
            fprintf(stderr, "no %s in %s\n", want, file);
        free(b);
        snprintf(file, sizeof file, "%s/shard-%05d-model-00001-of-00001.safetensors",
                 path, P);
        bad += unlink(file) != 0;
    }
    MPI_Barrier(comm);
    T_CHECK(hfdcp_test_all_ok(comm, bad == 0));
    rc = hfdcp_reader_open(comm, path, NULL, &r);
    T_CHECK(hfdcp_test_agreed_failure(comm, "reader", rc, HFDCP_ERR_FORMAT,
                                      "tensor 'w': ", hole) == T_OK);
    T_CHECK(r == NULL);
    /* Without the key: as today, the tensor ends where the chunks do. */
    if (rank == 0)
        for (int k = 1; k < P; k++) {
            snprintf(file, sizeof file,
                     "%s/shard-%05d-model-00001-of-00001.safetensors", path, k);
            bad += blank_in_header(file, comma) != 0;
        }
    MPI_Barrier(comm);
    T_CHECK(hfdcp_test_all_ok(comm, bad == 0));
    rc = hfdcp_reader_open(comm, path, NULL, &r);
    T_CHECK(hfdcp_test_agreed_ok(comm, rc, "reader without the key"));
    T_OKCALL(hfdcp_reader_find(r, "w", &info));
    T_CHECKF(info.ndim == 2 && info.shape[0] == lo && info.shape[1] == 3,
             "shape [%" PRId64 ", %" PRId64 "], want [%" PRId64 ", 3]",
             info.shape[0], info.shape[1], lo);
    hfdcp_reader_free(r);
    return T_OK;
}

/* Like save_specs, with hfdcp_writer_commit_async: each rank's chunk
 * buffers are overwritten as soon as it returns, so the files (written
 * from the snapshot) and their CRCs must be of the bytes at the commit. */
static int save_specs_async(MPI_Comm comm, const char *path,
                            const tspec *ts, size_t nt,
                            const hfdcp_save_options *o, int *status)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    uint8_t **bufs = calloc(nt + 1, sizeof *bufs);
    uint64_t *lens = calloc(nt + 1, sizeof *lens);
    hfdcp_writer *w = NULL;

    T_CHECK(bufs != NULL && lens != NULL);
    T_OKCALL(hfdcp_writer_open(comm, path, o, &w));
    for (size_t i = 0; i < nt; i++) {
        const tspec *t = &ts[i];
        int64_t off[MAXD], size[MAXD];
        if (!box_of(t, t->save, rank, P, off, size))
            continue;
        lens[i] = box_bytes(t->dtype, t->ndim, size);
        bufs[i] = malloc(lens[i] + 1);
        fill_box(bufs[i], t->name, hfdcp_dtype_bits(t->dtype), t->ndim,
                 t->shape, off, size);
        T_OKCALL(hfdcp_writer_add(w, t->name, t->dtype, t->ndim, t->shape,
                                  off, size, bufs[i]));
    }
    *status = hfdcp_writer_commit_async(w);
    for (size_t i = 0; i < nt; i++)
        if (bufs[i] != NULL)
            memset(bufs[i], 0xA5, lens[i]);
    if (*status == HFDCP_OK)
        *status = hfdcp_writer_wait(w);
    hfdcp_writer_free(w);
    for (size_t i = 0; i < nt; i++)
        free(bufs[i]);
    free(bufs);
    free(lens);
    return T_OK;
}

/* Rank 0: every model file of `dir` records in hfdcp_crc32c the CRC-32C
 * of each tensor's bytes in the file.  Agreed. */
static bool output_crcs_ok(MPI_Comm comm, const char *dir)
{
    char names[16][256], path[600];
    int n = hfdcp_test_comm_rank(comm) == 0 ? list_dir(dir, names, 16) : 0;
    bool ok = n >= 0;

    for (int f = 0; ok && f < n; f++) {
        size_t len = 0;
        unsigned char *b;
        uint64_t hn = 0;
        hfdcp__header h;
        uint32_t *v = NULL;
        if (strstr(names[f], ".json") != NULL)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, names[f]);
        b = hfdcp_test_read_file(path, &len);
        for (int k = 7; b != NULL && len >= 8 && k >= 0; k--)
            hn = hn << 8 | b[k];
        ok = b != NULL && len >= 8 + hn &&
             hfdcp__header_parse((char *)b + 8, hn, len, path, &h) ==
                 HFDCP_OK;
        if (ok && (hfdcp__header_crc32c(&h, path, &v) != HFDCP_OK ||
                   v == NULL))
            ok = false;
        for (size_t e = 0; ok && e < h.n_entries; e++) {
            const hfdcp__entry *x = &h.entries[e];
            ok = v[e] == hfdcp__crc32c(0, b + 8 + hn + x->begin,
                                       (size_t)(x->end - x->begin));
            if (!ok)
                fprintf(stderr, "%s: %s: wrong CRC-32C %08x\n", path,
                        x->name, v[e]);
        }
        if (b != NULL && len >= 8 + hn && v == NULL)
            fprintf(stderr, "%s: no hfdcp_crc32c\n", path);
        free(v);
        if (b != NULL && len >= 8 + hn)
            hfdcp__header_free(&h);
        free(b);
    }
    return hfdcp_test_all_ok(comm, ok);
}

/* Every shard file's hfdcp_crc32c names its chunks in header order with
 * the CRC-32C of each chunk's bytes in the file (sharded_check.py
 * computes them from the files): a synchronous commit, an asynchronous one
 * whose snapshot bound leaves some files written before it returns and
 * some from the copy, and with no_checksums no key at all.  The
 * consolidation that follows checks every chunk's (4- and 6-bit column
 * splits, replicated, empty) and writes the tensors'. */
static int sharded_should_write_each_chunks_crc32c(MPI_Comm comm,
                                                   const char *dir)
{
    int P = hfdcp_test_comm_size(comm), st = -1;
    tspec ts[HFDCP_DTYPE_COUNT + 8];
    size_t nt = model(ts, P);
    char path[600], out[600];
    hfdcp_save_options o = sharded_opts(600, 2);

    snprintf(path, sizeof path, "%s/sync", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    o.consolidated_output_path = out;
    T_OKCALL(save_specs(comm, path, ts, nt, &o, &st));
    T_CHECKF(hfdcp_test_all_ok(comm, st == HFDCP_OK), "commit: %s",
             hfdcp_last_error());
    T_CHECK(python_check(comm, dir, path, ts, nt, "crc"));
    T_CHECK(output_crcs_ok(comm, out));
    T_CHECK(load_check(comm, out, ts, nt) == T_OK);
    o.consolidated_output_path = NULL;

    snprintf(path, sizeof path, "%s/async", dir);
    o.snapshot_max_bytes = 1000;
    T_OKCALL(save_specs_async(comm, path, ts, nt, &o, &st));
    T_CHECKF(hfdcp_test_all_ok(comm, st == HFDCP_OK), "async commit: %s",
             hfdcp_last_error());
    T_CHECK(python_check(comm, dir, path, ts, nt, "crc"));
    T_CHECK(load_check(comm, path, ts, nt) == T_OK);

    snprintf(path, sizeof path, "%s/none", dir);
    o.snapshot_max_bytes = 0;
    o.no_checksums = 1;
    T_OKCALL(save_specs(comm, path, ts, nt, &o, &st));
    T_CHECKF(hfdcp_test_all_ok(comm, st == HFDCP_OK), "commit: %s",
             hfdcp_last_error());
    T_CHECK(python_check(comm, dir, path, ts, nt, "nocrc"));
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"sharded_should_write_shard_files_as_the_reference",
     sharded_should_write_shard_files_as_the_reference, 1},
    {"sharded_should_name_files_by_rank_and_file_index",
     sharded_should_name_files_by_rank_and_file_index, 1},
    {"sharded_should_refuse_bad_plans_identically_leaving_no_files",
     sharded_should_refuse_bad_plans_identically_leaving_no_files, 1},
    {"sharded_should_write_the_same_files_at_any_thread_count",
     sharded_should_write_the_same_files_at_any_thread_count, 1},
    {"sharded_should_agree_on_a_failed_write",
     sharded_should_agree_on_a_failed_write, 1},
    {"sharded_should_replace_stale_files", sharded_should_replace_stale_files,
     1},
    {"sharded_should_save_an_empty_checkpoint",
     sharded_should_save_an_empty_checkpoint, 1},
    {"sharded_should_detect_a_missing_last_shard",
     sharded_should_detect_a_missing_last_shard, 1},
    {"sharded_should_consolidate_into_a_direct_save",
     sharded_should_consolidate_into_a_direct_save, 1},
    {"sharded_should_write_each_chunks_crc32c",
     sharded_should_write_each_chunks_crc32c, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
