// ranks: 2 4
// scale-ranks: 8 16
// timeout: 300
/*
 * test_ranks.c - the library's collective paths at many ranks (8 and 16,
 * oversubscribed), with small tensors: a direct save of row, column,
 * 2-D block and replicated chunks, loaded back in other decompositions
 * and read back from the file with plain stdio; a sharded save of
 * tensor-parallel blocks with data-parallel replicas, each chunk written
 * once, consolidated by the commit into the bytes of a direct save; and
 * bad saves and loads on one rank only (a dtype or shape
 * disagreement, a hole, an overlap, a chunk out of bounds, another path, a
 * failed write, an unknown tensor, an impossible conversion) refused with
 * the same status and message on every rank, no checkpoint left, and a
 * good save or load working afterwards.
 *
 * Tensors are a few KB and each case makes few commits: under MPICH, 16
 * ranks on 2 cores poll, and every collective costs tens of milliseconds.
 * Tensor bytes come from a formula of the name and the global byte index
 * (hfdcp_test_byte_at), so any box can be generated or checked anywhere.
 * Every check whose outcome could differ between ranks is agreed before
 * anyone returns, so a library that disagrees fails the case instead of
 * hanging it.
 */
#include <dirent.h>
#include <inttypes.h>

#include "harness.h"

/* ---- tensors and decompositions: at most one box per rank ---- */

enum {
    ROWS = HFDCP_TEST_ROWS,
    COLS = HFDCP_TEST_COLS,
    BLOCKS = HFDCP_TEST_BLOCKS,
    REPL = HFDCP_TEST_REPL,
    TP_BLOCKS
};

typedef struct {
    const char *name;
    hfdcp_dtype dtype;
    int ndim; /* 0, 1 or 2 */
    int64_t shape[2];
    int save, load; /* decompositions */
} tspec;

#define NT 5

/* The model at P ranks: about 6 KB at 16 ranks.  Every split gives every
 * rank a non-empty box, uneven ones included. */
static void model(tspec *ts, int P)
{
    const tspec m[NT] = {
        {"layers.0.rows", HFDCP_F32, 2, {2 * P + 1, P + 2}, ROWS, COLS},
        {"layers.0.cols", HFDCP_BF16, 2, {5, 4 * P}, COLS, BLOCKS},
        {"layers.1.blocks", HFDCP_I16, 2, {P + 3, 2 * P + 1}, BLOCKS, ROWS},
        {"norm.repl", HFDCP_F64, 1, {7, 0}, REPL, REPL},
        {"step", HFDCP_I64, 0, {0, 0}, REPL, REPL},
    };
    memcpy(ts, m, sizeof m);
}

#define NT2 2

/* Case 2's model: tensor parallel in tp_groups() 2-D blocks times data
 * parallel (each block held by P / tp ranks), and a replicated tensor.  A
 * sharded save writes each distinct chunk once, the writer spreading them
 * over the ranks, so about one shard file per distinct chunk; consolidating
 * reads each file with a collective transfer, seconds apiece under MPICH
 * at 16 ranks (44 s for 10 files), hence so few chunks. */
static void model2(tspec *ts)
{
    const tspec m[NT2] = {
        {"tp.blocks", HFDCP_BF16, 2, {7, 10}, TP_BLOCKS, REPL},
        {"norm.repl", HFDCP_F64, 1, {7, 0}, REPL, REPL},
    };
    memcpy(ts, m, sizeof m);
}

/* Tensor-parallel groups of P ranks: 4 when P is a multiple of 4 (8 ranks:
 * 4 x 2 replicas, 16: 4 x 4), else P (no replica). */
static int tp_groups(int P)
{
    return P % 4 == 0 ? 4 : P;
}

static uint64_t box_bytes(const tspec *t, const int64_t *size)
{
    uint64_t n = (uint64_t)hfdcp_dtype_bits(t->dtype) / 8;
    for (int d = 0; d < t->ndim; d++)
        n *= (uint64_t)size[d];
    return n;
}

/* Rank r's box of tensor t in decomposition `kind` over P ranks; false
 * when r holds nothing. */
static bool box_of(const tspec *t, int kind, int r, int P, int64_t *off,
                   int64_t *size)
{
    if (kind == TP_BLOCKS) {
        kind = BLOCKS;
        P = tp_groups(P);
        r %= P;
    }
    return hfdcp_test_box_of(kind, t->ndim, t->shape, r, P, off, size);
}

/* The box [off, off+size) of tensor t, row-major and contiguous. */
static void fill_box(uint8_t *buf, const tspec *t, const int64_t *off,
                     const int64_t *size)
{
    hfdcp_test_fill_box(buf, t->name, (uint64_t)hfdcp_dtype_bits(t->dtype) / 8,
                        t->ndim, t->shape, off, size);
}

/* ---- save and load ---- */

/* Saves the tensors, each rank its box of the save decomposition, with
 * options `o` (may be NULL).  Returns the status of open, or of commit. */
static int save(MPI_Comm comm, const char *path, const tspec *ts, size_t nt,
                const hfdcp_save_options *o)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm), rc;
    uint8_t *bufs[NT] = {0};
    hfdcp_writer *w = NULL;

    if ((rc = hfdcp_writer_open(comm, path, o, &w)) != HFDCP_OK)
        return rc;
    for (size_t i = 0; i < nt; i++) {
        const tspec *t = &ts[i];
        int64_t off[2], size[2];
        if (!box_of(t, t->save, rank, P, off, size))
            continue;
        bufs[i] = malloc(box_bytes(t, size) + 1);
        fill_box(bufs[i], t, off, size);
        if (hfdcp_writer_add(w, t->name, t->dtype, t->ndim, t->shape, off,
                             size, bufs[i]) != HFDCP_OK)
            fprintf(stderr, "[rank %d] add %s: %s\n", rank, t->name,
                    hfdcp_last_error());
    }
    rc = hfdcp_writer_commit(w);
    hfdcp_writer_free(w);
    for (size_t i = 0; i < nt; i++)
        free(bufs[i]);
    return rc;
}

typedef struct {
    const tspec *t;
    int64_t off[2], size[2];
    uint8_t *dest;
} req_t;

/* This rank's requests: every tensor's box of its load decomposition,
 * ranks reversed, and the whole of layers.1.blocks, which every rank
 * asks for (overlapping requests). */
static size_t requests(const tspec *ts, int rank, int P, req_t *q)
{
    size_t n = 0;
    for (size_t i = 0; i < NT; i++)
        if (box_of(&ts[i], ts[i].load, P - 1 - rank, P, q[n].off,
                   q[n].size))
            q[n++].t = &ts[i];
    q[n].t = &ts[2];
    box_of(&ts[2], REPL, 0, P, q[n].off, q[n].size);
    return n + 1;
}

/* The catalog describes every tensor of `ts` with its dtype and shape. */
static bool catalog_ok(const hfdcp_reader *r, const tspec *ts)
{
    bool ok = hfdcp_reader_count(r) == NT;
    for (size_t i = 0; ok && i < NT; i++) {
        hfdcp_tensor_info info;
        ok = hfdcp_reader_find(r, ts[i].name, &info) == HFDCP_OK &&
             info.dtype == ts[i].dtype && info.ndim == ts[i].ndim &&
             (ts[i].ndim == 0 ||
              memcmp(info.shape, ts[i].shape,
                     (size_t)ts[i].ndim * sizeof(int64_t)) == 0);
        if (!ok)
            fprintf(stderr, "[rank %d] %s: wrong catalog entry\n",
                    hfdcp_test_rank(), ts[i].name);
    }
    return ok;
}

/* Loads the model from `path` on every rank of comm (requests()) and
 * compares every byte with the formula's.  Agreed. */
static int load_check(MPI_Comm comm, const char *path, const tspec *ts)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm), rc;
    hfdcp_reader *r = NULL;
    req_t q[NT + 1];
    size_t nq = requests(ts, rank, P, q);
    bool ok = true;

    rc = hfdcp_reader_open(comm, path, NULL, &r);
    if (!hfdcp_test_agreed_ok(comm, rc, "reader_open"))
        return 1;
    ok = catalog_ok(r, ts);
    for (size_t k = 0; k < nq; k++) {
        q[k].dest = malloc(box_bytes(q[k].t, q[k].size) + 1);
        if (hfdcp_reader_add(r, q[k].t->name, q[k].t->dtype, q[k].t->ndim,
                             q[k].off, q[k].size, q[k].dest) != HFDCP_OK)
            ok = false;
    }
    ok = hfdcp_test_agreed_ok(comm, hfdcp_reader_load(r), "reader_load") && ok;
    for (size_t k = 0; ok && k < nq; k++) {
        uint64_t n = box_bytes(q[k].t, q[k].size);
        uint8_t *want = malloc(n + 1);
        fill_box(want, q[k].t, q[k].off, q[k].size);
        if (memcmp(want, q[k].dest, n) != 0) {
            char box[256];
            hfdcp__format_box(box, sizeof box, q[k].t->ndim, q[k].off,
                              q[k].size);
            fprintf(stderr, "[rank %d] %s%s loaded wrong bytes\n", rank,
                    q[k].t->name, box);
            ok = false;
        }
        free(want);
    }
    hfdcp_reader_free(r);
    for (size_t k = 0; k < nq; k++)
        free(q[k].dest);
    return hfdcp_test_all_ok(comm, ok) ? T_OK : 1;
}

/* ---- the files, read with plain stdio ---- */

/* The integers of the JSON array after "field" in `s`: their number, or
 * -1 when there are more than max or the array does not parse. */
static int json_ints(const char *s, const char *field, uint64_t *out,
                     int max)
{
    const char *p = strstr(s, field);
    int n = 0;
    char *end;

    if (p == NULL || (p = strchr(p, '[')) == NULL)
        return -1;
    for (p++;; p = end) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ']')
            return n;
        if (n == max)
            return -1;
        out[n++] = strtoull(p, &end, 10);
        if (end == p)
            return -1;
    }
}

/* Rank 0: the safetensors file `file` holds tensor t, with its dtype and
 * shape, and its data region is the formula's, byte for byte.  The header
 * (8-byte little-endian length, then JSON) is read by hand, not by the
 * library. */
static int file_holds(const char *file, const tspec *t)
{
    size_t len;
    unsigned char *buf = hfdcp_test_read_file(file, &len);
    uint64_t hl = 0, shape[2], at[2];
    char key[128], dt[32], *hdr, *entry, *close;

    T_CHECKF(buf != NULL && len >= 8, "cannot read %s", file);
    for (int k = 7; k >= 0; k--)
        hl = hl << 8 | buf[k];
    T_CHECKF(hl <= len - 8, "%s: header length %" PRIu64, file, hl);
    T_CHECK((hdr = malloc(hl + 1)) != NULL);
    memcpy(hdr, buf + 8, hl);
    hdr[hl] = '\0';
    snprintf(key, sizeof key, "\"%s\"", t->name);
    snprintf(dt, sizeof dt, "\"%s\"", hfdcp_dtype_name(t->dtype));
    T_CHECKF((entry = strstr(hdr, key)) != NULL, "%s: no %s", file, key);
    T_CHECK((close = strchr(entry, '}')) != NULL);
    *close = '\0'; /* the tensor's own object only */
    T_CHECKF(strstr(entry, dt) != NULL, "%s: %s is not %s", file, t->name,
             dt);
    T_CHECKF(json_ints(entry, "\"shape\"", shape, 2) == t->ndim &&
                 (t->ndim < 1 || shape[0] == (uint64_t)t->shape[0]) &&
                 (t->ndim < 2 || shape[1] == (uint64_t)t->shape[1]),
             "%s: %s has the wrong shape", file, t->name);
    T_CHECKF(json_ints(entry, "\"data_offsets\"", at, 2) == 2 &&
                 at[1] - at[0] == box_bytes(t, t->shape) &&
                 at[1] <= len - 8 - hl,
             "%s: %s: data_offsets", file, t->name);
    uint8_t *want = malloc(at[1] - at[0] + 1);
    int64_t zero[2] = {0, 0};
    fill_box(want, t, zero, t->shape);
    T_CHECKF(memcmp(want, buf + 8 + hl + at[0], at[1] - at[0]) == 0,
             "%s: %s: wrong bytes in its data region", file, t->name);
    free(want);
    free(hdr);
    free(buf);
    return T_OK;
}

/* Rank 0: `path` holds exactly model.safetensors and the index naming it
 * for every tensor, and the file holds every tensor's bytes. */
static int direct_files_hold(const char *path, const tspec *ts)
{
    char p[700], key[160];
    size_t len;
    char *ix;
    int n = 0;
    DIR *d = opendir(path);
    struct dirent *e;

    T_CHECKF(d != NULL, "cannot list %s", path);
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    T_CHECKF(n == 2, "%s holds %d files, expected 2", path, n);
    snprintf(p, sizeof p, "%s/%s", path, HFDCP_INDEX_NAME);
    T_CHECKF((ix = (char *)hfdcp_test_read_file(p, &len)) != NULL,
             "no %s", p);
    for (size_t i = 0; i < NT; i++) {
        snprintf(key, sizeof key, "\"%s\"", ts[i].name);
        const char *at = strstr(ix, key);
        const char *v = at ? strchr(at + strlen(key), '"') : NULL;
        T_CHECKF(v != NULL && strncmp(v, "\"model.safetensors\"", 19) == 0,
                 "%s: %s is not indexed in model.safetensors", p, key);
    }
    free(ix);
    snprintf(p, sizeof p, "%s/model.safetensors", path);
    for (size_t i = 0; i < NT; i++)
        T_OKCALL(file_holds(p, &ts[i]));
    return T_OK;
}

/* Rank 0: the files of directories a and b are the same, byte for byte
 * (n files each). */
static int same_files(const char *a, const char *b, const char *const *files,
                      int n)
{
    for (int f = 0; f < n; f++) {
        char pa[700], pb[700];
        unsigned char *x, *y;
        size_t lx, ly;
        snprintf(pa, sizeof pa, "%s/%s", a, files[f]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[f]);
        T_CHECKF((x = hfdcp_test_read_file(pa, &lx)) != NULL, "no %s", pa);
        T_CHECKF((y = hfdcp_test_read_file(pb, &ly)) != NULL, "no %s", pb);
        T_CHECKF(lx == ly && memcmp(x, y, lx) == 0,
                 "%s differs from %s (%zu vs %zu bytes)", pb, pa, ly, lx);
        free(x);
        free(y);
    }
    return T_OK;
}

/* The entries of a safetensors file's header, counted by hand. */
static int count_entries(const char *file)
{
    size_t len;
    unsigned char *buf = hfdcp_test_read_file(file, &len);
    uint64_t hl = 0;
    int n = 0;

    if (buf == NULL || len < 8)
        return -1;
    for (int k = 7; k >= 0; k--)
        hl = hl << 8 | buf[k];
    if (hl > len - 8) {
        free(buf);
        return -1;
    }
    buf[8 + hl] = '\0'; /* hfdcp_test_read_file leaves room for it */
    for (const char *p = (const char *)buf + 8;
         (p = strstr(p, "\"data_offsets\"")) != NULL; p++)
        n++;
    free(buf);
    return n;
}

/* Rank 0: the shard directory holds shard-RRRRR-model-00001-of-00001
 * files only (no index), which hold `chunks` entries in all: each
 * distinct chunk once, however many ranks hold it. */
static int shard_files_ok(const char *path, int P, int chunks)
{
    int n = 0, entries = 0;
    DIR *d = opendir(path);
    struct dirent *e;

    T_CHECKF(d != NULL, "cannot list %s", path);
    while ((e = readdir(d)) != NULL) {
        int r, k;
        char tail[32], p[700];
        if (e->d_name[0] == '.')
            continue;
        n++;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (sscanf(e->d_name, "shard-%5d-model-00001-of-00001.%31s", &r,
                   tail) != 2 || strcmp(tail, "safetensors") != 0 ||
            r < 1 || r > P || (k = count_entries(p)) < 1) {
            closedir(d);
            return hfdcp_test_fail(__FILE__, __LINE__, "%s: unexpected '%s'",
                                   path, e->d_name);
        }
        entries += k;
    }
    closedir(d);
    T_CHECKF(n >= 1 && entries == chunks,
             "%s: %d shard files hold %d chunks, expected %d", path, n,
             entries, chunks);
    return T_OK;
}

/* The distinct chunks of the tensors' save decompositions at P ranks. */
static int distinct_chunks(const tspec *ts, size_t nt, int P)
{
    int n = 0;
    for (size_t i = 0; i < nt; i++) {
        int64_t off[2], size[2];
        int k = ts[i].save == TP_BLOCKS ? tp_groups(P)
                : ts[i].save == REPL    ? 1
                                        : P;
        for (int r = 0; r < k; r++)
            n += box_of(&ts[i], ts[i].save, r, P, off, size);
    }
    return n;
}

/* Rank 0: after case 2's saves, the shard files are as named, holding
 * each chunk once; the consolidated checkpoint is the direct save's,
 * byte for byte, and holds each tensor's bytes. */
static int consolidated_ok(const char *direct, const char *shards,
                           const char *out, const tspec *ts, int P)
{
    static const char *const files[] = {"model.safetensors",
                                        HFDCP_INDEX_NAME};
    char p[700];

    T_OKCALL(shard_files_ok(shards, P, distinct_chunks(ts, NT2, P)));
    T_OKCALL(same_files(direct, out, files, 2));
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    for (size_t i = 0; i < NT2; i++)
        T_OKCALL(file_holds(p, &ts[i]));
    return T_OK;
}

/* ---- case 1 and 2: round trips ---- */

/* A direct save of row, column, block and replicated chunks: the file's
 * bytes read with stdio, then every rank loads in other decompositions. */
static int ranks_should_round_trip_rows_columns_blocks_and_replicas(
    MPI_Comm comm, const char *dir)
{
    tspec ts[NT];
    char path[600];

    model(ts, hfdcp_test_comm_size(comm));
    snprintf(path, sizeof path, "%s/ckpt", dir);
    T_CHECK(hfdcp_test_agreed_ok(comm, save(comm, path, ts, NT, NULL), "save"));
    T_CHECK(hfdcp_test_all_ok(comm, hfdcp_test_comm_rank(comm) != 0 ||
                             direct_files_hold(path, ts) == T_OK));
    T_CHECK(load_check(comm, path, ts) == T_OK);
    return T_OK;
}

/* A sharded save at P ranks (tensor-parallel blocks x data parallel,
 * and a replicated tensor), consolidated by the commit
 * (consolidated_output_path) into the files of a direct save of the same
 * chunks, byte for byte. */
static int ranks_should_consolidate_a_sharded_save_into_the_direct_files(
    MPI_Comm comm, const char *dir)
{
    tspec ts[NT2];
    char direct[600], shards[600], out[600];
    hfdcp_save_options o;
    int P = hfdcp_test_comm_size(comm);

    model2(ts);
    snprintf(direct, sizeof direct, "%s/direct", dir);
    snprintf(shards, sizeof shards, "%s/shards", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    hfdcp_save_options_init(&o);
    o.no_checksums = 1; /* both sides: the bytes compared are the same */
    T_CHECK(hfdcp_test_agreed_ok(comm, save(comm, direct, ts, NT2, &o), "direct save"));
    o.save_sharded = 1;
    o.consolidated_output_path = out;
    T_CHECK(hfdcp_test_agreed_ok(comm, save(comm, shards, ts, NT2, &o),
                      "sharded save"));
    T_CHECK(hfdcp_test_all_ok(comm, hfdcp_test_comm_rank(comm) != 0 ||
                             consolidated_ok(direct, shards, out, ts, P) ==
                                 T_OK));
    return T_OK;
}

/* ---- case 3: bad saves on one rank ---- */

/* Adds this rank's chunks of "w", a tensor of F32 by rows (one rank of
 * P, its last, or a middle one, doing something wrong). */
typedef void (*setup_fn)(hfdcp_writer *w, int rank, int P,
                         const float *data);

/* Rows [at, at+n) of "w", global shape [nrows, ncols]. */
static void w_rows(hfdcp_writer *w, int64_t nrows, int64_t ncols, int64_t at,
                   int64_t n, hfdcp_dtype dt, const float *data)
{
    int64_t shape[2] = {nrows, ncols}, off[2] = {at, 0}, size[2] = {n, ncols};
    hfdcp_writer_add(w, "w", dt, 2, shape, off, size, data);
}

/* The good plan: rank r holds rows [2r, 2r+2) of [2P, 4]. */
static void good_w(hfdcp_writer *w, int rank, int P, const float *data)
{
    w_rows(w, 2 * P, 4, 2 * rank, 2, HFDCP_F32, data);
}

static void bad_dtype(hfdcp_writer *w, int rank, int P, const float *data)
{
    w_rows(w, 2 * P, 4, 2 * rank, 2, rank == P - 1 ? HFDCP_F16 : HFDCP_F32,
           data);
}

static void bad_shape(hfdcp_writer *w, int rank, int P, const float *data)
{
    w_rows(w, 2 * P, rank == P - 1 ? 5 : 4, 2 * rank, 2, HFDCP_F32, data);
}

/* Rank P/2 adds no chunk of "w": its rows [2(P/2), 2(P/2)+2) are
 * nobody's. */
static void hole(hfdcp_writer *w, int rank, int P, const float *data)
{
    if (rank != P / 2)
        good_w(w, rank, P, data);
}

/* The last rank holds rows [2P-3, 2P): row 2P-3 is rank P-2's too. */
static void overlap(hfdcp_writer *w, int rank, int P, const float *data)
{
    if (rank == P - 1)
        w_rows(w, 2 * P, 4, 2 * P - 3, 3, HFDCP_F32, data);
    else
        good_w(w, rank, P, data);
}

/* The last rank's chunk, rows [2P-1, 2P+1), ends past the tensor. */
static void out_of_bounds(hfdcp_writer *w, int rank, int P,
                          const float *data)
{
    if (rank == P - 1)
        w_rows(w, 2 * P, 4, 2 * P - 1, 2, HFDCP_F32, data);
    else
        good_w(w, rank, P, data);
}

/* A commit of "good" (F32 [P, 3], one row per rank) and of the chunks of
 * "w" that `setup` adds.  Returns the status of open, or of commit. */
static int commit_plan(MPI_Comm comm, const char *path, setup_fn setup,
                       const hfdcp_save_options *o)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm), rc;
    int64_t gs[2] = {P, 3}, go[2] = {rank, 0}, gz[2] = {1, 3};
    hfdcp_writer *w = NULL;
    float data[64];

    for (int i = 0; i < 64; i++)
        data[i] = (float)(i + 64 * rank);
    if ((rc = hfdcp_writer_open(comm, path, o, &w)) != HFDCP_OK)
        return rc;
    hfdcp_writer_add(w, "good", HFDCP_F32, 2, gs, go, gz, data);
    setup(w, rank, P, data);
    rc = hfdcp_writer_commit(w);
    hfdcp_writer_free(w);
    return rc;
}

/* A failed commit: agreed as hfdcp_test_agreed_failure() says, and nothing left in
 * `path`.  Agreed. */
static int refused(MPI_Comm comm, const char *path, const char *what, int rc,
                   int want, const char *s1, const char *s2)
{
    int bad = hfdcp_test_agreed_failure(comm, what, rc, want, s1, s2);
    if (!hfdcp_test_nothing_in(comm, path))
        bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: files left in %s",
                              what, path);
    return hfdcp_test_all_ok(comm, bad == 0) ? T_OK : 1;
}

/* After the failures, the model saves into the same directory: its file
 * holds every tensor's bytes (read by rank 0 with stdio; a collective
 * load costs seconds under MPICH at 16 ranks, and case 1 does it). */
static int good_afterwards(MPI_Comm comm, const char *path)
{
    tspec ts[NT];

    model(ts, hfdcp_test_comm_size(comm));
    T_CHECK(hfdcp_test_agreed_ok(comm, save(comm, path, ts, NT, NULL), "good save"));
    T_CHECK(hfdcp_test_all_ok(comm, hfdcp_test_comm_rank(comm) != 0 ||
                             direct_files_hold(path, ts) == T_OK));
    return T_OK;
}

/* Only the last rank gives "w" another dtype, then another shape. */
static int ranks_should_agree_on_a_dtype_or_shape_disagreement(
    MPI_Comm comm, const char *dir)
{
    int P = hfdcp_test_comm_size(comm), rc;
    char path[600], want[160];

    snprintf(path, sizeof path, "%s/ckpt", dir);
    snprintf(want, sizeof want,
             "tensor 'w': rank 0 saves it as F32 but rank %d as F16", P - 1);
    rc = commit_plan(comm, path, bad_dtype, NULL);
    T_CHECK(refused(comm, path, "dtype", rc, HFDCP_ERR_PLAN, want, NULL) ==
            T_OK);
    snprintf(want, sizeof want,
             "tensor 'w': rank 0 gives the global shape [%d, 4] but rank %d "
             "gives [%d, 5]",
             2 * P, P - 1, 2 * P);
    rc = commit_plan(comm, path, bad_shape, NULL);
    T_CHECK(refused(comm, path, "shape", rc, HFDCP_ERR_PLAN, want, NULL) ==
            T_OK);
    return good_afterwards(comm, path);
}

/* One rank's chunk missing; one rank's chunk overlapping another's. */
static int ranks_should_agree_on_a_hole_or_an_overlap(MPI_Comm comm,
                                                      const char *dir)
{
    int P = hfdcp_test_comm_size(comm), rc;
    char path[600], want[200];

    snprintf(path, sizeof path, "%s/ckpt", dir);
    snprintf(want, sizeof want,
             "tensor 'w': element [%d, 0] is not covered by any chunk",
             2 * (P / 2));
    rc = commit_plan(comm, path, hole, NULL);
    T_CHECK(refused(comm, path, "hole", rc, HFDCP_ERR_PLAN, want, NULL) ==
            T_OK);
    snprintf(want, sizeof want,
             "tensor 'w': chunks [%d:%d, 0:4] (rank %d) and [%d:%d, 0:4] "
             "(rank %d) overlap on [%d:%d, 0:4]",
             2 * P - 4, 2 * P - 2, P - 2, 2 * P - 3, 2 * P, P - 1, 2 * P - 3,
             2 * P - 2);
    rc = commit_plan(comm, path, overlap, NULL);
    T_CHECK(refused(comm, path, "overlap", rc, HFDCP_ERR_PLAN, want, NULL) ==
            T_OK);
    return good_afterwards(comm, path);
}

/* The last rank alone: adds a chunk out of bounds (add fails there, the
 * commit everywhere); opens another directory; fails writing its shard
 * file (test fault) in the middle of a sharded commit. */
static int ranks_should_agree_when_one_rank_fails_locally(MPI_Comm comm,
                                                          const char *dir)
{
    int P = hfdcp_test_comm_size(comm), rank = hfdcp_test_comm_rank(comm), rc;
    char path[600], other[600], want[1600], file[120];
    hfdcp_save_options o;

    snprintf(path, sizeof path, "%s/ckpt", dir);
    snprintf(other, sizeof other, "%s/other", dir);
    snprintf(want, sizeof want, "rank %d: hfdcp_writer_add (rank %d): "
             "tensor 'w'", P - 1, P - 1);
    snprintf(file, sizeof file, "the box (offset %d, size 2 in dimension 0) "
             "is not inside the global shape (%d)", 2 * P - 1, 2 * P);
    rc = commit_plan(comm, path, out_of_bounds, NULL);
    T_CHECK(refused(comm, path, "out of bounds", rc, HFDCP_ERR_ARG, want,
                    file) == T_OK);

    snprintf(want, sizeof want, "rank %d: hfdcp_writer_open: the path '%s' "
             "differs from rank 0's '%s'", P - 1, other, path);
    rc = commit_plan(comm, rank == P - 1 ? other : path, good_w, NULL);
    T_CHECK(refused(comm, path, "path", rc, HFDCP_ERR_MISMATCH, want, NULL) ==
            T_OK);
    T_CHECK(hfdcp_test_nothing_in(comm, other));

    hfdcp_save_options_init(&o);
    o.save_sharded = 1;
    snprintf(want, sizeof want, "on rank %d (test fault)", P - 1);
    snprintf(file, sizeof file,
             "shard-%05d-model-00001-of-00001.safetensors.tmp'", P);
    if (rank == P - 1)
        hfdcp__writer_fault_file = 0;
    rc = commit_plan(comm, path, good_w, &o);
    hfdcp__writer_fault_file = -1;
    T_CHECK(refused(comm, path, "shard write", rc, HFDCP_ERR_IO, want,
                    file) == T_OK);
    return good_afterwards(comm, path);
}

/* ---- case 4: bad loads on one rank ---- */

/* Every rank asks for its rows of t into `buf`; the last rank also for
 * tensor `name` as `dtype`, which its hfdcp_reader_add must refuse with
 * `want`.  The load that follows, as if the caller had ignored that
 * status, must fail with `want` on every rank, naming the tensor and the
 * rank, `why` in the message. */
static int bad_load(MPI_Comm comm, hfdcp_reader *r, const tspec *t,
                    const char *name, hfdcp_dtype dtype, int want,
                    const char *why, uint8_t *buf)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm), rc = HFDCP_OK;
    int64_t off[2], size[2];
    char s1[160];
    bool ok;

    box_of(t, ROWS, rank, P, off, size);
    ok = hfdcp_reader_add(r, t->name, t->dtype, 2, off, size, buf) ==
         HFDCP_OK;
    if (rank == P - 1)
        rc = hfdcp_reader_add(r, name, dtype, 2, off, size, buf);
    if (rc != want && rank == P - 1) {
        fprintf(stderr, "[rank %d] reader_add %s as %s: %s (%s)\n", rank,
                name, hfdcp_dtype_name(dtype), hfdcp_status_name(rc),
                hfdcp_last_error());
        ok = false;
    }
    rc = hfdcp_reader_load(r);
    snprintf(s1, sizeof s1, "rank %d: request for tensor '%s'", P - 1, name);
    ok = hfdcp_test_agreed_failure(comm, name, rc, want, s1, why) == T_OK && ok;
    return hfdcp_test_all_ok(comm, ok) ? T_OK : 1;
}

/* The last rank alone asks for a tensor that does not exist, then for a
 * conversion that does not exist (I32 from F32); then a good load on the
 * same reader. */
static int ranks_should_agree_when_one_rank_loads_badly(MPI_Comm comm,
                                                        const char *dir)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    tspec ts[NT];
    char path[600];
    hfdcp_reader *r = NULL;
    int64_t off[2], size[2];
    uint8_t *buf, *want;
    bool ok;

    model(ts, P);
    snprintf(path, sizeof path, "%s/ckpt", dir);
    T_CHECK(hfdcp_test_agreed_ok(comm, save(comm, path, ts, NT, NULL), "save"));
    T_CHECK(hfdcp_test_agreed_ok(comm, hfdcp_reader_open(comm, path, NULL, &r),
                      "reader_open"));
    box_of(&ts[0], ROWS, rank, P, off, size);
    buf = malloc(box_bytes(&ts[0], size) + 1);
    want = malloc(box_bytes(&ts[0], size) + 1);
    T_CHECK(hfdcp_test_all_ok(comm, buf != NULL && want != NULL));
    ok = bad_load(comm, r, &ts[0], "no.such.tensor", HFDCP_F32,
                  HFDCP_ERR_NOT_FOUND, "no such tensor", buf) == T_OK;
    ok = bad_load(comm, r, &ts[0], ts[0].name, HFDCP_I32,
                  HFDCP_ERR_UNSUPPORTED, "cannot convert F32 to I32",
                  buf) == T_OK && ok;
    /* The failed requests were dropped: this load works. */
    memset(buf, 0, box_bytes(&ts[0], size));
    ok = hfdcp_reader_add(r, ts[0].name, ts[0].dtype, 2, off, size, buf) ==
             HFDCP_OK && ok;
    ok = hfdcp_test_agreed_ok(comm, hfdcp_reader_load(r), "good load") && ok;
    fill_box(want, &ts[0], off, size);
    if (memcmp(want, buf, box_bytes(&ts[0], size)) != 0) {
        hfdcp_test_fail(__FILE__, __LINE__, "wrong bytes after the failed "
                        "loads");
        ok = false;
    }
    hfdcp_reader_free(r);
    free(buf);
    free(want);
    T_CHECK(hfdcp_test_all_ok(comm, ok));
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"ranks_should_round_trip_rows_columns_blocks_and_replicas",
     ranks_should_round_trip_rows_columns_blocks_and_replicas, 1},
    {"ranks_should_consolidate_a_sharded_save_into_the_direct_files",
     ranks_should_consolidate_a_sharded_save_into_the_direct_files, 1},
    {"ranks_should_agree_on_a_dtype_or_shape_disagreement",
     ranks_should_agree_on_a_dtype_or_shape_disagreement, 2},
    {"ranks_should_agree_on_a_hole_or_an_overlap",
     ranks_should_agree_on_a_hole_or_an_overlap, 2},
    {"ranks_should_agree_when_one_rank_fails_locally",
     ranks_should_agree_when_one_rank_fails_locally, 2},
    {"ranks_should_agree_when_one_rank_loads_badly",
     ranks_should_agree_when_one_rank_loads_badly, 2},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
