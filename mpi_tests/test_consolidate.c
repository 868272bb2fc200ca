// ranks: 1 2 3 4
// timeout: 300
// romio: 2
/*
 * test_consolidate.c - hfdcp_consolidate(): per-rank shard files to a
 * standard checkpoint, compared byte for byte with a direct save
 * (hfdcp_writer_commit) of the same tensors and file map.
 *
 * The shard sets are written at every pseudo-rank count k = 1..4 whatever
 * the job's size (rank 0 writes the k shard files with the format layer,
 * as a sharded save of k ranks lays them out), and consolidated by every
 * rank of the job: save and consolidation at different rank counts.  The
 * model has a tensor of every dtype and every split: rows, columns, 2-D
 * blocks, a 3-D split along the middle dimension, replicated, scalars,
 * empty tensors.  Tiny buffers force many rounds and tensors cut across
 * rounds and ranks.
 *
 * The byte-for-byte comparisons with a direct save include the CRC-32C
 * values (hfdcp_crc32c), which must be the direct save's; they are also
 * checked against the output's bytes, across file maps, and the shards'
 * against corrupted data, by the cases at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

enum split { WHOLE, ROWS, COLS, BLOCKS, MID, REPL };

typedef struct {
    const char *name;
    hfdcp_dtype dtype;
    int ndim;
    int64_t shape[3];
    enum split split;
} tdef;

/* Every dtype (rows of whole bytes for the sub-byte ones), every split. */
static const tdef MODEL[] = {
    {"dt.BOOL", HFDCP_BOOL, 2, {4, 3}, ROWS},
    {"dt.F4", HFDCP_F4, 2, {4, 8}, ROWS},
    {"dt.F6_E2M3", HFDCP_F6_E2M3, 2, {4, 4}, ROWS},
    {"dt.F6_E3M2", HFDCP_F6_E3M2, 2, {5, 8}, ROWS},
    {"dt.U8", HFDCP_U8, 2, {3, 3}, COLS},
    {"dt.I8", HFDCP_I8, 1, {9}, ROWS},
    {"dt.F8_E5M2", HFDCP_F8_E5M2, 2, {4, 4}, BLOCKS},
    {"dt.F8_E4M3", HFDCP_F8_E4M3, 2, {8, 2}, ROWS},
    {"dt.F8_E8M0", HFDCP_F8_E8M0, 1, {5}, REPL},
    {"dt.F8_E4M3FNUZ", HFDCP_F8_E4M3FNUZ, 2, {2, 6}, COLS},
    {"dt.F8_E5M2FNUZ", HFDCP_F8_E5M2FNUZ, 1, {7}, ROWS},
    {"dt.I16", HFDCP_I16, 2, {5, 3}, ROWS},
    {"dt.U16", HFDCP_U16, 0, {0}, WHOLE},
    {"dt.F16", HFDCP_F16, 2, {6, 6}, BLOCKS},
    {"dt.BF16", HFDCP_BF16, 2, {4, 7}, COLS},
    {"dt.I32", HFDCP_I32, 1, {10}, ROWS},
    {"dt.U32", HFDCP_U32, 2, {3, 5}, REPL},
    {"dt.F32", HFDCP_F32, 2, {6, 5}, ROWS},
    {"dt.C64", HFDCP_C64, 1, {6}, ROWS},
    {"dt.F64", HFDCP_F64, 1, {3}, REPL},
    {"dt.I64", HFDCP_I64, 0, {0}, WHOLE},
    {"dt.U64", HFDCP_U64, 2, {2, 3}, COLS},
    {"mid.F32", HFDCP_F32, 3, {3, 4, 5}, MID},
    {"scalar.F32", HFDCP_F32, 0, {0}, WHOLE},
    {"empty.F32", HFDCP_F32, 2, {0, 4}, WHOLE},
    {"empty.I8", HFDCP_I8, 1, {0}, WHOLE},
    {"wide.BF16", HFDCP_BF16, 2, {3, 40}, COLS},
};
#define NT (sizeof MODEL / sizeof MODEL[0])

typedef struct {
    unsigned char *data[NT]; /* every tensor, whole */
    uint64_t bytes[NT];
} model;

static int model_make(model *m, uint64_t seed)
{
    for (size_t i = 0; i < NT; i++) {
        uint64_t s = seed * 1000 + i;
        T_OKCALL(hfdcp__tensor_bytes(MODEL[i].dtype, MODEL[i].ndim,
                                     MODEL[i].shape, "model", &m->bytes[i]));
        m->data[i] = malloc(m->bytes[i] + 1);
        T_CHECK(m->data[i] != NULL);
        for (uint64_t b = 0; b < m->bytes[i]; b++)
            m->data[i][b] = (unsigned char)(hfdcp_test_rand(&s) >> 24);
    }
    return T_OK;
}

static void model_free(model *m)
{
    for (size_t i = 0; i < NT; i++)
        free(m->data[i]);
}

/* [r*n/k, (r+1)*n/k) */
static void part(int r, int k, int64_t n, int64_t *off, int64_t *size)
{
    *off = n * r / k;
    *size = n * (r + 1) / k - *off;
}

/* The chunk of tensor t that rank r of k holds: false when none.  Every
 * box of a tensor's split is held by exactly one rank, except REPL (every
 * rank holds it whole; `writer_view` false: the shard files keep one copy,
 * in rank 0's file). */
static bool chunk_of(const tdef *t, int r, int k, bool writer_view,
                     int64_t *off, int64_t *size)
{
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        off[d] = 0;
        size[d] = t->shape[d];
        numel *= t->shape[d];
    }
    switch (t->split) {
    case WHOLE:
        return r == 0;
    case REPL:
        return writer_view || r == 0;
    case ROWS:
        part(r, k, t->shape[0], &off[0], &size[0]);
        break;
    case COLS:
        part(r, k, t->shape[1], &off[1], &size[1]);
        break;
    case MID:
        part(r, k, t->shape[1], &off[1], &size[1]);
        break;
    case BLOCKS: {
        int gr = k % 2 == 0 ? 2 : 1, gc = k / gr;
        part(r / gc, gr, t->shape[0], &off[0], &size[0]);
        part(r % gc, gc, t->shape[1], &off[1], &size[1]);
        break;
    }
    }
    for (int d = 0; d < t->ndim; d++)
        if (size[d] == 0)
            return numel == 0 && r == 0;
    return true;
}

/* Copies the box of tensor i (whole, row-major) into out. */
static void extract(const model *m, size_t i, const int64_t *off,
                    const int64_t *size, unsigned char *out)
{
    const tdef *t = &MODEL[i];
    int bits = hfdcp_dtype_bits(t->dtype);
    int64_t idx[3] = {0, 0, 0}, numel = 1;

    if (t->ndim == 0) {
        memcpy(out, m->data[i], (size_t)m->bytes[i]);
        return;
    }
    if (bits < 8) { /* rows of whole bytes, split by rows only */
        size_t row = (size_t)(t->ndim == 2 ? t->shape[1] : 1) *
                     (size_t)bits / 8;
        memcpy(out, m->data[i] + (size_t)off[0] * row, (size_t)size[0] * row);
        return;
    }
    for (int d = 0; d < t->ndim; d++)
        numel *= size[d];
    for (int64_t e = 0; e < numel; e++) {
        int64_t lin = 0, rest = e;
        for (int d = t->ndim - 1; d >= 0; d--) {
            idx[d] = rest % size[d] + off[d];
            rest /= size[d];
        }
        for (int d = 0; d < t->ndim; d++)
            lin = lin * t->shape[d] + idx[d];
        memcpy(out + e * bits / 8, m->data[i] + lin * bits / 8,
               (size_t)bits / 8);
    }
}

static int box_bytes(const tdef *t, const int64_t *size, uint64_t *out)
{
    return hfdcp__tensor_bytes(t->dtype, t->ndim, size, "box", out);
}

/* Rank 0 writes the shard files of k ranks into dir (every tensor's
 * chunks with DCP_SHARDING_INFO), as a sharded save of k ranks lays them
 * out; `skip` (a name) leaves a tensor out.  Collective (a barrier). */
static int write_shards(MPI_Comm comm, const char *dir, const model *m, int k)
{
    int rank, rc = T_OK;
    MPI_Comm_rank(comm, &rank);
    for (int r = 0; rank == 0 && r < k && rc == T_OK; r++) {
        hfdcp__entry ent[NT];
        hfdcp__header h;
        int64_t box[NT][6];
        size_t n = 0;
        uint64_t at = 0;
        char *hdr = NULL, path[1024];
        size_t hlen = 0;
        unsigned char *file;

        memset(&h, 0, sizeof h);
        for (size_t i = 0; i < NT; i++) {
            const tdef *t = &MODEL[i];
            if (!chunk_of(t, r, k, false, box[i], box[i] + 3))
                continue;
            memset(&ent[n], 0, sizeof ent[n]);
            ent[n].name = (char *)t->name;
            ent[n].dtype = t->dtype;
            ent[n].ndim = t->ndim;
            ent[n].shape = box[i] + 3;
            ent[n].offsets = box[i];
            n++;
        }
        if (n == 0)
            continue;
        qsort(ent, n, sizeof *ent, hfdcp__entry_layout_cmp);
        for (size_t e = 0; e < n; e++) {
            uint64_t b;
            for (size_t i = 0; i < NT; i++)
                if (strcmp(MODEL[i].name, ent[e].name) == 0)
                    T_OKCALL(box_bytes(&MODEL[i], ent[e].shape, &b));
            ent[e].begin = at;
            ent[e].end = at += b;
        }
        h.entries = ent;
        h.n_entries = n;
        h.sharded = true;
        h.data_size = at;
        T_OKCALL(hfdcp__header_serialize(&h, &hdr, &hlen));
        file = malloc(hlen + at + 1);
        T_CHECK(file != NULL);
        memcpy(file, hdr, hlen);
        for (size_t e = 0; e < n; e++)
            for (size_t i = 0; i < NT; i++)
                if (strcmp(MODEL[i].name, ent[e].name) == 0)
                    extract(m, i, ent[e].offsets, ent[e].shape,
                            file + hlen + ent[e].begin);
        snprintf(path, sizeof path,
                 "%s/shard-%05d-model-00001-of-00001.safetensors", dir, r + 1);
        rc = hfdcp_test_write_file(path, file, hlen + at);
        free(hdr);
        free(file);
    }
    MPI_Barrier(comm);
    return rc;
}

/* A direct save by every rank of comm, each adding its chunks of a split
 * among all of them.  `data` (may be NULL: the model) gives whole tensors
 * to save instead, in `dtypes`. */
static int direct_save(MPI_Comm comm, const char *dir, const model *m,
                       const hfdcp_file_map *map, const hfdcp_dtype *dtypes,
                       unsigned char *const *data)
{
    int rank, size;
    hfdcp_save_options so;
    hfdcp_writer *w = NULL;
    unsigned char *chunks[NT] = {0};
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    hfdcp_save_options_init(&so);
    so.file_map = map;
    T_OKCALL(hfdcp_writer_open(comm, dir, &so, &w));
    for (size_t i = 0; i < NT; i++) {
        const tdef *t = &MODEL[i];
        int64_t off[3], sz[3];
        uint64_t b;
        if (data != NULL) {
            if (rank == 0)
                T_OKCALL(hfdcp_writer_add(w, t->name, dtypes[i], t->ndim,
                                          t->shape, (int64_t[3]){0, 0, 0},
                                          t->shape, data[i]));
            continue;
        }
        if (!chunk_of(t, rank, size, true, off, sz))
            continue;
        T_OKCALL(box_bytes(t, sz, &b));
        chunks[i] = malloc(b + 1);
        T_CHECK(chunks[i] != NULL);
        extract(m, i, off, sz, chunks[i]);
        T_OKCALL(hfdcp_writer_add(w, t->name, t->dtype, t->ndim, t->shape,
                                  off, sz, chunks[i]));
    }
    T_OKCALL(hfdcp_writer_commit(w));
    hfdcp_writer_free(w);
    for (size_t i = 0; i < NT; i++)
        free(chunks[i]);
    return T_OK;
}

/* Nothing that looks like a checkpoint in dir (rank 0 looks). */
static int no_output(MPI_Comm comm, const char *dir)
{
    int rank, bad = 0;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        char *n[64];
        size_t count;
        bad = hfdcp_test_list_dir(dir, n, 64, &count);
        for (size_t i = 0; !bad && i < count; i++)
            if (strstr(n[i], ".safetensors") || strstr(n[i], ".hfdcp-tmp"))
                bad = hfdcp_test_fail(__FILE__, __LINE__,
                                      "'%s' left in %s", n[i], dir);
        hfdcp_test_free_names(n, count);
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, comm);
    return bad;
}

/* Rank 0 creates dir; the others wait for it. */
static int shared_dir(MPI_Comm comm, const char *dir)
{
    int rank, rc = 0;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0 && mkdir(dir, 0777) != 0 && errno != EEXIST)
        rc = 1;
    MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
    return rc;
}

static void path_in(char *out, size_t size, const char *dir, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

/* A map: tensors spread over files 1, 2 and 4 (a gap, as a reference
 * model's layout can have). */
static int make_map(hfdcp_file_map **map)
{
    static const int idx[] = {1, 2, 4};
    T_OKCALL(hfdcp_file_map_create(map));
    for (size_t i = 0; i < NT; i++)
        T_OKCALL(hfdcp_file_map_set(*map, MODEL[i].name, idx[i % 3]));
    T_OKCALL(hfdcp_file_map_set(*map, "not.in.the.model", 3));
    return T_OK;
}

/* ---- byte identity ---- */

static int check_identity(MPI_Comm comm, const char *dir, bool with_map)
{
    /* 0: one round; 64 and 200: many, tensors cut across ranks and
     * rounds. */
    const uint64_t buffers[2] = {with_map ? 200 : 0, 64};
    hfdcp_file_map *map = NULL;
    model m;
    char direct[512];

    if (with_map)
        T_CHECK(make_map(&map) == T_OK);
    T_CHECK(model_make(&m, 7) == T_OK);
    path_in(direct, sizeof direct, dir, "direct");
    T_CHECK(direct_save(comm, direct, &m, map, NULL, NULL) == T_OK);
    for (int k = 1; k <= 4; k++) {
        char shards[512], out[512];
        snprintf(shards, sizeof shards, "%s/shards-%d", dir, k);
        T_CHECK(shared_dir(comm, shards) == 0);
        T_CHECK(write_shards(comm, shards, &m, k) == T_OK);
        for (size_t b = 0; b < 2; b++) {
            hfdcp_consolidate_options o;
            hfdcp_consolidate_options_init(&o);
            o.buffer_bytes = buffers[b];
            snprintf(out, sizeof out, "%s/out-%d-%zu", dir, k, b);
            T_OKCALL(hfdcp_consolidate(comm, shards, out, map, &o));
            T_CHECKF(hfdcp_test_same_dirs(comm, out, direct),
                     "k=%d buffer=%zu", k, (size_t)buffers[b]);
        }
    }
    model_free(&m);
    hfdcp_file_map_free(map);
    return T_OK;
}

static int consolidate_should_match_a_direct_save(MPI_Comm comm,
                                                  const char *dir)
{
    return check_identity(comm, dir, false);
}

static int consolidate_should_match_a_direct_save_with_a_map(MPI_Comm comm,
                                                             const char *dir)
{
    return check_identity(comm, dir, true);
}

/* ---- file names ---- */

static int by_name(const void *a, const void *b)
{
    return strcmp(MODEL[*(const size_t *)a].name,
                  MODEL[*(const size_t *)b].name);
}

/* Rank 0: the directory `dir` holds exactly the files want[0..n) (in
 * byte order) and an index whose text is json.dumps(indent=2) of every
 * tensor of the model, tensor i in want[file_of[i]]. */
static int check_names(const char *dir, const model *m,
                       const char *const *want, int n, const int *file_of)
{
    char *names[8], p[600];
    size_t order[NT], len, count = 0;
    uint64_t total = 0;
    hfdcp__buf b;
    unsigned char *got;
    int bad;

    bad = hfdcp_test_list_dir(dir, names, 8, &count);
    for (size_t i = 0; !bad && i <= (size_t)n; i++)
        if (count != (size_t)n + 1 ||
            strcmp(names[i], i < (size_t)n ? want[i] : HFDCP_INDEX_NAME))
            bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: %zu files, '%s'",
                                  dir, count, i < count ? names[i] : "");
    hfdcp_test_free_names(names, count);
    T_CHECK(!bad);
    for (size_t i = 0; i < NT; i++) {
        order[i] = i;
        total += m->bytes[i];
    }
    qsort(order, NT, sizeof *order, by_name);
    hfdcp__buf_init(&b);
    snprintf(p, sizeof p, "{\n  \"metadata\": {\n    \"total_size\": %"
             PRIu64 "\n  },\n  \"weight_map\": {", total);
    hfdcp__buf_put(&b, p, strlen(p));
    for (size_t k = 0; k < NT; k++) {
        snprintf(p, sizeof p, "%s\n    \"%s\": \"%s\"", k ? "," : "",
                 MODEL[order[k]].name, want[file_of[order[k]]]);
        hfdcp__buf_put(&b, p, strlen(p));
    }
    hfdcp__buf_put(&b, "\n  }\n}", 6);
    path_in(p, sizeof p, dir, HFDCP_INDEX_NAME);
    got = hfdcp_test_read_file(p, &len);
    if (got == NULL || len != b.len || memcmp(got, b.data, len) != 0)
        bad = hfdcp_test_fail(__FILE__, __LINE__, "%s:\n%.*s\nwant:\n%.*s",
                              p, got ? (int)len : 0,
                              got ? (const char *)got : "", (int)b.len,
                              (const char *)b.data);
    free(got);
    hfdcp__buf_free(&b);
    return bad;
}

/* The writer's names (plan.c): with a map, model-0000i-of-0000N, N the
 * largest index in the map, also 1 or unused by the model; without one,
 * model.safetensors.  An index in every case. */
static int consolidate_should_name_files_as_the_writer_does(MPI_Comm comm,
                                                            const char *dir)
{
    static const char *one[] = {"model-00001-of-00001.safetensors"};
    static const char *of3[] = {"model-00001-of-00003.safetensors",
                                "model-00002-of-00003.safetensors"};
    static const char *plain[] = {"model.safetensors"};
    int P, rank, file_of[NT], zero[NT] = {0};
    hfdcp_file_map *map = NULL;
    char shards[512], out[512];
    model m;

    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &rank);
    T_CHECK(model_make(&m, 11) == T_OK);
    path_in(shards, sizeof shards, dir, "shards");
    T_CHECK(shared_dir(comm, shards) == 0);
    T_CHECK(write_shards(comm, shards, &m, P) == T_OK);

    T_OKCALL(hfdcp_file_map_create(&map));
    for (size_t i = 0; i < NT; i++)
        T_OKCALL(hfdcp_file_map_set(map, MODEL[i].name, 1));
    path_in(out, sizeof out, dir, "all1");
    T_OKCALL(hfdcp_consolidate(comm, shards, out, map, NULL));
    if (rank == 0)
        T_OKCALL(check_names(out, &m, one, 1, zero));

    /* Largest index 3, used: 1 and 2.  No file 3. */
    for (size_t i = 0; i < NT; i++) {
        file_of[i] = (int)(i % 2);
        T_OKCALL(hfdcp_file_map_set(map, MODEL[i].name, file_of[i] + 1));
    }
    T_OKCALL(hfdcp_file_map_set(map, "not.in.the.model", 3));
    path_in(out, sizeof out, dir, "of3");
    T_OKCALL(hfdcp_consolidate(comm, shards, out, map, NULL));
    if (rank == 0)
        T_OKCALL(check_names(out, &m, of3, 2, file_of));
    hfdcp_file_map_free(map);

    path_in(out, sizeof out, dir, "nomap");
    T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, NULL));
    if (rank == 0)
        T_OKCALL(check_names(out, &m, plain, 1, zero));
    model_free(&m);
    return T_OK;
}

/* A sharded save by the ranks of `comm` (hfdcp_writer_commit with
 * save_sharded), each adding its chunks of a split among them. */
static int sharded_save(MPI_Comm comm, const char *dir, const model *m)
{
    int rank, size;
    hfdcp_save_options so;
    hfdcp_writer *w = NULL;
    unsigned char *chunks[NT] = {0};
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    hfdcp_save_options_init(&so);
    so.save_sharded = 1;
    T_OKCALL(hfdcp_writer_open(comm, dir, &so, &w));
    for (size_t i = 0; i < NT; i++) {
        const tdef *t = &MODEL[i];
        int64_t off[3], sz[3];
        uint64_t b;
        if (!chunk_of(t, rank, size, true, off, sz))
            continue;
        T_OKCALL(box_bytes(t, sz, &b));
        chunks[i] = malloc(b + 1);
        T_CHECK(chunks[i] != NULL);
        extract(m, i, off, sz, chunks[i]);
        T_OKCALL(hfdcp_writer_add(w, t->name, t->dtype, t->ndim, t->shape,
                                  off, sz, chunks[i]));
    }
    T_OKCALL(hfdcp_writer_commit(w));
    hfdcp_writer_free(w);
    for (size_t i = 0; i < NT; i++)
        free(chunks[i]);
    return T_OK;
}

/* Save and consolidation at different rank counts: a sharded save by the
 * first k ranks consolidated by all, and a sharded save by all
 * consolidated by the first k. */
static int consolidate_should_match_a_direct_save_after_a_sharded_save(
    MPI_Comm comm, const char *dir)
{
    int rank, size;
    hfdcp_file_map *map = NULL;
    model m;
    char direct[512], all[512];

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    T_CHECK(make_map(&map) == T_OK);
    T_CHECK(model_make(&m, 13) == T_OK);
    path_in(direct, sizeof direct, dir, "direct");
    path_in(all, sizeof all, dir, "sharded-all");
    T_CHECK(direct_save(comm, direct, &m, map, NULL, NULL) == T_OK);
    T_CHECK(sharded_save(comm, all, &m) == T_OK);
    for (int k = 1; k <= size; k++) {
        char shards[512], out[512];
        MPI_Comm sub;
        hfdcp_consolidate_options o;
        int bad = 0;
        hfdcp_consolidate_options_init(&o);
        o.buffer_bytes = k % 2 ? 64 : 0;
        MPI_Comm_split(comm, rank < k ? 0 : MPI_UNDEFINED, rank, &sub);
        /* Saved by k ranks, consolidated by all. */
        snprintf(shards, sizeof shards, "%s/sharded-%d", dir, k);
        if (sub != MPI_COMM_NULL)
            bad = sharded_save(sub, shards, &m);
        MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
        T_CHECKF(!bad, "sharded save by %d ranks", k);
        snprintf(out, sizeof out, "%s/out-%d", dir, k);
        T_OKCALL(hfdcp_consolidate(comm, shards, out, map, &o));
        T_CHECKF(hfdcp_test_same_dirs(comm, out, direct), "saved by %d", k);
        /* Saved by all, consolidated by k. */
        snprintf(out, sizeof out, "%s/out-all-%d", dir, k);
        if (sub != MPI_COMM_NULL) {
            if (hfdcp_consolidate(sub, all, out, map, &o) != HFDCP_OK)
                bad = hfdcp_test_fail(__FILE__, __LINE__, "%s",
                                      hfdcp_last_error());
            MPI_Comm_free(&sub);
        }
        MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
        T_CHECKF(!bad, "consolidated by %d ranks", k);
        T_CHECKF(hfdcp_test_same_dirs(comm, out, direct), "consolidated by %d", k);
    }
    model_free(&m);
    hfdcp_file_map_free(map);
    return T_OK;
}

static int check_crcs(MPI_Comm comm, const char *dir, bool want,
                      size_t tensors, uint32_t *crcs);

/* A checkpoint without tensors: one empty shard file in, one empty
 * model.safetensors and an empty index out, as a direct save writes. */
static int consolidate_should_handle_an_empty_checkpoint(MPI_Comm comm,
                                                         const char *dir)
{
    char shards[512], direct[512], out[512];
    hfdcp_save_options so;
    hfdcp_consolidate_options o;
    hfdcp_writer *w;
    hfdcp_reader *rd;
    uint32_t crcs[NT];

    path_in(shards, sizeof shards, dir, "shards");
    path_in(direct, sizeof direct, dir, "direct");
    path_in(out, sizeof out, dir, "out");
    hfdcp_save_options_init(&so);
    hfdcp_consolidate_options_init(&o);
    T_OKCALL(hfdcp_writer_open(comm, direct, &so, &w));
    T_OKCALL(hfdcp_writer_commit(w));
    hfdcp_writer_free(w);
    so.save_sharded = 1;
    T_OKCALL(hfdcp_writer_open(comm, shards, &so, &w));
    T_OKCALL(hfdcp_writer_commit(w));
    hfdcp_writer_free(w);
    T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, &o));
    T_CHECK(hfdcp_test_same_dirs(comm, out, direct));
    /* Again, into another directory: an empty hfdcp_crc32c. */
    path_in(out, sizeof out, dir, "out-crc");
    T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, &o));
    T_CHECK(check_crcs(comm, out, true, 0, crcs) == 0);
    T_OKCALL(hfdcp_reader_open(comm, out, NULL, &rd));
    T_CHECK(hfdcp_reader_count(rd) == 0);
    hfdcp_reader_free(rd);
    return T_OK;
}

/* Cast: floating-point tensors to BF16 (compared with the reader's own
 * conversion of the shards), every other dtype copied unchanged. */
static int consolidate_should_cast_floats_only(MPI_Comm comm,
                                               const char *dir)
{
    static const uint64_t buffers[] = {0, 64, 100};
    model m;
    hfdcp_reader *rd;
    unsigned char *conv[NT] = {0};
    hfdcp_dtype dt[NT];
    char shards[512], direct[512], out[512];

    T_CHECK(model_make(&m, 11) == T_OK);
    path_in(shards, sizeof shards, dir, "shards");
    path_in(direct, sizeof direct, dir, "direct");
    T_CHECK(shared_dir(comm, shards) == 0);
    T_CHECK(write_shards(comm, shards, &m, 3) == T_OK);
    T_OKCALL(hfdcp_reader_open(comm, shards, NULL, &rd));
    for (size_t i = 0; i < NT; i++) {
        const tdef *t = &MODEL[i];
        bool fl = hfdcp__can_convert(t->dtype, HFDCP_F64);
        uint64_t b;
        dt[i] = fl ? HFDCP_BF16 : t->dtype;
        T_OKCALL(hfdcp__tensor_bytes(dt[i], t->ndim, t->shape, "x", &b));
        conv[i] = malloc(b + 1);
        T_CHECK(conv[i] != NULL);
        T_OKCALL(hfdcp_reader_add(rd, t->name, dt[i], t->ndim,
                                  (int64_t[3]){0, 0, 0}, t->shape, conv[i]));
    }
    T_OKCALL(hfdcp_reader_load(rd));
    hfdcp_reader_free(rd);
    /* Untouched dtypes: the reader gave back the model's bytes. */
    for (size_t i = 0; i < NT; i++)
        if (dt[i] == MODEL[i].dtype && MODEL[i].dtype != HFDCP_BF16)
            T_CHECKF(memcmp(conv[i], m.data[i], (size_t)m.bytes[i]) == 0,
                     "%s", MODEL[i].name);
    T_CHECK(direct_save(comm, direct, &m, NULL, dt, conv) == T_OK);
    for (size_t b = 0; b < 3; b++) {
        hfdcp_consolidate_options o;
        hfdcp_consolidate_options_init(&o);
        o.cast = 1;
        o.cast_dtype = HFDCP_BF16;
        o.buffer_bytes = buffers[b];
        o.num_threads = (int)b + 1;
        snprintf(out, sizeof out, "%s/out-%zu", dir, b);
        T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, &o));
        T_CHECKF(hfdcp_test_same_dirs(comm, out, direct), "buffer %zu",
                 (size_t)buffers[b]);
    }
    for (size_t i = 0; i < NT; i++)
        free(conv[i]);
    model_free(&m);
    return T_OK;
}

/* A larger F32 -> F16 cast: enough elements per round for the threads to
 * run; every num_threads gives the same bytes as the reader's conversion. */
static int consolidate_should_convert_with_threads(MPI_Comm comm,
                                                   const char *dir)
{
    enum { ROWS_ = 256, COLS_ = 1000 };
    int rank, size;
    int64_t shape[2] = {ROWS_, COLS_}, off[2], sz[2];
    float *chunk;
    uint16_t *want;
    char shards[512], out[512], file[600];
    hfdcp_reader *rd;

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    path_in(shards, sizeof shards, dir, "shards");
    /* Shards of one tensor, rows split over the job: written by rank 0
     * with the format layer as write_shards() does, one file per rank. */
    part(rank, size, ROWS_, &off[0], &sz[0]);
    off[1] = 0;
    sz[1] = COLS_;
    chunk = malloc((size_t)(sz[0] * COLS_) * sizeof *chunk + 1);
    T_CHECK(chunk != NULL);
    for (int64_t i = 0; i < sz[0] * COLS_; i++)
        chunk[i] = (float)((off[0] * COLS_ + i) % 1000003) * 1.0001f - 7.5f;
    T_CHECK(shared_dir(comm, shards) == 0);
    MPI_Barrier(comm);
    {
        hfdcp__entry e;
        hfdcp__header h;
        char *hdr = NULL;
        size_t hlen = 0;
        unsigned char *buf;
        uint64_t bytes = (uint64_t)(sz[0] * COLS_) * 4;
        memset(&e, 0, sizeof e);
        memset(&h, 0, sizeof h);
        e.name = "big";
        e.dtype = HFDCP_F32;
        e.ndim = 2;
        e.shape = sz;
        e.offsets = off;
        e.end = bytes;
        h.entries = &e;
        h.n_entries = 1;
        h.sharded = true;
        h.data_size = bytes;
        T_OKCALL(hfdcp__header_serialize(&h, &hdr, &hlen));
        buf = malloc(hlen + bytes + 1);
        T_CHECK(buf != NULL);
        memcpy(buf, hdr, hlen);
        memcpy(buf + hlen, chunk, (size_t)bytes);
        snprintf(file, sizeof file,
                 "%s/shard-%05d-model-00001-of-00001.safetensors", shards,
                 rank + 1);
        T_CHECK(hfdcp_test_write_file(file, buf, hlen + bytes) == 0);
        free(hdr);
        free(buf);
    }
    MPI_Barrier(comm);
    want = malloc((size_t)ROWS_ * COLS_ * 2);
    T_CHECK(want != NULL);
    T_OKCALL(hfdcp_reader_open(comm, shards, NULL, &rd));
    T_OKCALL(hfdcp_reader_add(rd, "big", HFDCP_F16, 2, (int64_t[2]){0, 0},
                              shape, want));
    T_OKCALL(hfdcp_reader_load(rd));
    hfdcp_reader_free(rd);
    for (int threads = 1; threads <= 4; threads += 3) {
        hfdcp_consolidate_options o;
        uint16_t *got = malloc((size_t)ROWS_ * COLS_ * 2);
        hfdcp_tensor_info info;
        T_CHECK(got != NULL);
        hfdcp_consolidate_options_init(&o);
        o.cast = 1;
        o.cast_dtype = HFDCP_F16;
        o.num_threads = threads;
        o.buffer_bytes = 600000; /* rounds of 100000 elements */
        snprintf(out, sizeof out, "%s/out-%d", dir, threads);
        T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, &o));
        T_OKCALL(hfdcp_reader_open(comm, out, NULL, &rd));
        T_OKCALL(hfdcp_reader_find(rd, "big", &info));
        T_CHECK(info.dtype == HFDCP_F16);
        T_OKCALL(hfdcp_reader_add(rd, "big", HFDCP_F16, 2,
                                  (int64_t[2]){0, 0}, shape, got));
        T_OKCALL(hfdcp_reader_load(rd));
        hfdcp_reader_free(rd);
        T_CHECKF(memcmp(got, want, (size_t)ROWS_ * COLS_ * 2) == 0,
                 "threads %d", threads);
        free(got);
    }
    free(want);
    free(chunk);
    return T_OK;
}

/* ---- progress ---- */

typedef struct {
    uint64_t calls, last, total;
    int monotone;
} progress_log;

static void log_progress(uint64_t done, uint64_t total, void *arg)
{
    progress_log *p = arg;
    if (done < p->last || done > total)
        p->monotone = 0;
    p->calls++;
    p->last = done;
    p->total = total;
}

static int consolidate_should_report_progress_on_rank0(MPI_Comm comm,
                                                       const char *dir)
{
    model m;
    int rank, size;
    char shards[512], out[512];
    hfdcp_consolidate_options o;
    progress_log log = {0, 0, 0, 1};
    uint64_t total = 0;

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    T_CHECK(model_make(&m, 3) == T_OK);
    for (size_t i = 0; i < NT; i++)
        total += m.bytes[i];
    path_in(shards, sizeof shards, dir, "shards");
    path_in(out, sizeof out, dir, "out");
    T_CHECK(shared_dir(comm, shards) == 0);
    T_CHECK(write_shards(comm, shards, &m, 2) == T_OK);
    hfdcp_consolidate_options_init(&o);
    o.buffer_bytes = 64;
    o.progress = log_progress;
    o.progress_arg = &log;
    T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, &o));
    if (rank == 0) {
        /* 64-byte slices: at least total / (64 * size) rounds. */
        T_CHECKF(log.calls >= total / (64 * (uint64_t)size), "%llu calls",
                 (unsigned long long)log.calls);
        T_CHECK(log.monotone);
        T_CHECK(log.last == total && log.total == total);
    } else {
        T_CHECK(log.calls == 0);
    }
    model_free(&m);
    return T_OK;
}

/* Rank 0's kept buffer: some bytes, the same as *kept when that is not 0,
 * taken `want_taken` times so far; *kept becomes its size.  Agreed. */
static int kept_check(MPI_Comm comm, uint64_t want_taken, uint64_t *kept)
{
    int rank, bad = 0, any = 0;
    uint64_t taken = 0, now = hfdcp__mpiio_kept_bytes(&taken);

    MPI_Comm_rank(comm, &rank);
    if (rank == 0 && (now == 0 || (*kept != 0 && now != *kept) ||
                      taken != want_taken))
        bad = hfdcp_test_fail(__FILE__, __LINE__,
                              "kept %llu bytes (before: %llu), taken %llu "
                              "times, expected %llu",
                              (unsigned long long)now,
                              (unsigned long long)*kept,
                              (unsigned long long)taken,
                              (unsigned long long)want_taken);
    *kept = now;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm);
    return any;
}

/* The output staging buffer is taken from the buffer kept between
 * transfers when that is large enough, and kept afterwards when it is at
 * most 32 MiB.  This model is smaller than one slice: rank 0 stages it
 * all, the other ranks nothing.  Reads and writes are not aggregated
 * (hfdcp_aggregate=disable), so that no window is kept but this one. */
static int consolidate_should_stage_through_the_kept_buffer(MPI_Comm comm,
                                                           const char *dir)
{
    model m;
    char shards[512], out[512], direct[512];
    hfdcp_consolidate_options o;
    uint64_t taken0 = 0, kept = 0;

    T_CHECK(model_make(&m, 4) == T_OK);
    path_in(shards, sizeof shards, dir, "shards");
    path_in(out, sizeof out, dir, "out");
    path_in(direct, sizeof direct, dir, "direct");
    T_CHECK(direct_save(comm, direct, &m, NULL, NULL, NULL) == T_OK);
    T_CHECK(shared_dir(comm, shards) == 0);
    T_CHECK(write_shards(comm, shards, &m, 2) == T_OK);
    hfdcp_consolidate_options_init(&o);
    MPI_Info_create(&o.info);
    MPI_Info_set(o.info, "hfdcp_aggregate", "disable");

    /* Nothing kept: a new buffer, kept afterwards. */
    hfdcp_release_buffers();
    (void)hfdcp__mpiio_kept_bytes(&taken0);
    T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, &o));
    T_CHECK(kept_check(comm, taken0, &kept) == 0);
    T_CHECK(hfdcp_test_same_dirs(comm, out, direct));
    /* Again: the kept buffer is taken, and kept whole. */
    T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, &o));
    T_CHECK(kept_check(comm, taken0 + 1, &kept) == 0);
    T_CHECK(hfdcp_test_same_dirs(comm, out, direct));
    MPI_Info_free(&o.info);
    hfdcp_release_buffers();
    model_free(&m);
    return T_OK;
}

/* ---- refusals: status, message, and nothing written ---- */

/* Writes one shard file of hand-made entries (sharded or not). */
static int write_file_of(const char *path, hfdcp__entry *ent, size_t n,
                         bool sharded)
{
    hfdcp__header h;
    char *hdr = NULL;
    size_t hlen = 0;
    uint64_t at = 0;
    unsigned char *buf;
    int rc;

    for (size_t e = 0; e < n; e++) {
        uint64_t b;
        T_OKCALL(hfdcp__tensor_bytes(ent[e].dtype, ent[e].ndim, ent[e].shape,
                                     "x", &b));
        ent[e].begin = at;
        ent[e].end = at += b;
    }
    memset(&h, 0, sizeof h);
    h.entries = ent;
    h.n_entries = n;
    h.sharded = sharded;
    h.data_size = at;
    T_OKCALL(hfdcp__header_serialize(&h, &hdr, &hlen));
    buf = calloc(1, hlen + at + 1);
    T_CHECK(buf != NULL);
    memcpy(buf, hdr, hlen);
    rc = hfdcp_test_write_file(path, buf, hlen + at);
    free(buf);
    free(hdr);
    return rc;
}

/* Consolidates `shards` into dir/out expecting `want` and `substr`, and
 * checks that nothing was left in dir/out. */
static int refused(MPI_Comm comm, const char *dir, const char *shards,
                   const hfdcp_file_map *map, int want, const char *substr)
{
    char out[512];
    path_in(out, sizeof out, dir, "out");
    T_STATUS(hfdcp_consolidate(comm, shards, out, map, NULL), want, substr);
    T_CHECK(no_output(comm, out) == 0);
    return T_OK;
}

static int consolidate_should_refuse_an_incomplete_shard_set(MPI_Comm comm,
                                                             const char *dir)
{
    model m;
    int rank;
    char shards[512], victim[600];

    MPI_Comm_rank(comm, &rank);
    T_CHECK(model_make(&m, 5) == T_OK);
    path_in(shards, sizeof shards, dir, "shards");
    T_CHECK(shared_dir(comm, shards) == 0);
    T_CHECK(write_shards(comm, shards, &m, 3) == T_OK);
    snprintf(victim, sizeof victim,
             "%s/shard-00002-model-00001-of-00001.safetensors", shards);
    if (rank == 0)
        T_CHECK(unlink(victim) == 0);
    MPI_Barrier(comm);
    /* dt.BF16 [4, 7] split by columns over 3 ranks: columns 2..3 are gone
     * (the first tensor in name order with a hole is dt.BF16). */
    T_CHECK(refused(comm, dir, shards, NULL, HFDCP_ERR_PLAN,
                    "tensor 'dt.BF16': element [0, 2] is not covered by any "
                    "chunk") == T_OK);
    model_free(&m);
    return T_OK;
}

static int consolidate_should_refuse_overlapping_shards(MPI_Comm comm,
                                                        const char *dir)
{
    int rank;
    char shards[512], p1[600], p2[600];
    int64_t s1[2] = {3, 4}, o1[2] = {0, 0}, s2[2] = {3, 4}, o2[2] = {2, 0};
    hfdcp__entry a = {.name = "w", .dtype = HFDCP_F32, .ndim = 2,
                      .shape = s1, .offsets = o1};
    hfdcp__entry b = {.name = "w", .dtype = HFDCP_F32, .ndim = 2,
                      .shape = s2, .offsets = o2};

    MPI_Comm_rank(comm, &rank);
    path_in(shards, sizeof shards, dir, "shards");
    snprintf(p1, sizeof p1, "%s/shard-00001-model-00001-of-00001.safetensors",
             shards);
    snprintf(p2, sizeof p2, "%s/shard-00002-model-00001-of-00001.safetensors",
             shards);
    if (rank == 0) {
        T_CHECK(mkdir(shards, 0777) == 0);
        T_CHECK(write_file_of(p1, &a, 1, true) == 0);
        T_CHECK(write_file_of(p2, &b, 1, true) == 0);
    }
    MPI_Barrier(comm);
    T_CHECK(refused(comm, dir, shards, NULL, HFDCP_ERR_PLAN,
                    "tensor 'w': chunks [0:3, 0:4]") == T_OK);
    T_CHECK(strstr(hfdcp_last_error(), "overlap on [2:3, 0:4]") != NULL);
    return T_OK;
}

static int consolidate_should_refuse_mixed_dtypes(MPI_Comm comm,
                                                  const char *dir)
{
    int rank;
    char shards[512], p1[600], p2[600];
    int64_t s[1] = {4}, o1[1] = {0}, o2[1] = {4};
    hfdcp__entry a = {.name = "v", .dtype = HFDCP_F32, .ndim = 1,
                      .shape = s, .offsets = o1};
    hfdcp__entry b = {.name = "v", .dtype = HFDCP_F16, .ndim = 1,
                      .shape = s, .offsets = o2};

    MPI_Comm_rank(comm, &rank);
    path_in(shards, sizeof shards, dir, "shards");
    snprintf(p1, sizeof p1, "%s/shard-00001-model-00001-of-00001.safetensors",
             shards);
    snprintf(p2, sizeof p2, "%s/shard-00002-model-00001-of-00001.safetensors",
             shards);
    if (rank == 0) {
        T_CHECK(mkdir(shards, 0777) == 0);
        T_CHECK(write_file_of(p1, &a, 1, true) == 0);
        T_CHECK(write_file_of(p2, &b, 1, true) == 0);
    }
    MPI_Barrier(comm);
    T_CHECK(refused(comm, dir, shards, NULL, HFDCP_ERR_PLAN,
                    "tensor 'v': its chunks disagree on the dtype: F32 in "
                    "file 'shard-00001-model-00001-of-00001.safetensors', F16 "
                    "in file 'shard-00002") == T_OK);
    return T_OK;
}

static int consolidate_should_refuse_files_without_sharding_info(
    MPI_Comm comm, const char *dir)
{
    model m;
    int rank;
    char shards[512], plain[600];
    int64_t s[1] = {2}, o[1] = {0};
    hfdcp__entry e = {.name = "extra", .dtype = HFDCP_I32, .ndim = 1,
                      .shape = s, .offsets = o};

    MPI_Comm_rank(comm, &rank);
    T_CHECK(model_make(&m, 9) == T_OK);
    path_in(shards, sizeof shards, dir, "shards");
    T_CHECK(shared_dir(comm, shards) == 0);
    T_CHECK(write_shards(comm, shards, &m, 2) == T_OK);
    snprintf(plain, sizeof plain,
             "%s/shard-00003-model-00001-of-00001.safetensors", shards);
    if (rank == 0)
        T_CHECK(write_file_of(plain, &e, 1, false) == 0);
    MPI_Barrier(comm);
    T_CHECK(refused(comm, dir, shards, NULL, HFDCP_ERR_FORMAT,
                    "shard-00003-model-00001-of-00001.safetensors' has no "
                    "DCP_SHARDING_INFO") == T_OK);
    /* A plain checkpoint (a direct save) is refused the same way. */
    {
        char direct[512];
        path_in(direct, sizeof direct, dir, "direct");
        T_CHECK(direct_save(comm, direct, &m, NULL, NULL, NULL) == T_OK);
        T_CHECK(refused(comm, dir, direct, NULL, HFDCP_ERR_FORMAT,
                        "model.safetensors' has no DCP_SHARDING_INFO") ==
                T_OK);
    }
    model_free(&m);
    return T_OK;
}

static int consolidate_should_refuse_bad_arguments(MPI_Comm comm,
                                                   const char *dir)
{
    model m;
    int rank, size;
    char shards[512], out[512];
    hfdcp_file_map *map;
    hfdcp_consolidate_options o;

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    T_CHECK(model_make(&m, 1) == T_OK);
    path_in(shards, sizeof shards, dir, "shards");
    path_in(out, sizeof out, dir, "out");
    T_CHECK(shared_dir(comm, shards) == 0);
    T_CHECK(write_shards(comm, shards, &m, 2) == T_OK);

    /* A map that lacks a tensor, as the writer refuses it. */
    T_OKCALL(hfdcp_file_map_create(&map));
    T_OKCALL(hfdcp_file_map_set(map, "dt.F32", 1));
    T_CHECK(refused(comm, dir, shards, map, HFDCP_ERR_PLAN,
                    "tensor 'dt.BF16' of the shard files in") == T_OK);
    T_CHECK(strstr(hfdcp_last_error(), "is not in the file map") != NULL);
    hfdcp_file_map_free(map);

    /* The input directory as the output. */
    T_STATUS(hfdcp_consolidate(comm, shards, shards, NULL, NULL),
             HFDCP_ERR_ARG, "is the input directory");
    /* A missing input. */
    T_STATUS(hfdcp_consolidate(comm, out, shards, NULL, NULL),
             HFDCP_ERR_NOT_FOUND, "does not exist");
    /* Bad options. */
    hfdcp_consolidate_options_init(&o);
    o.cast = 1;
    o.cast_dtype = HFDCP_I32;
    T_STATUS(hfdcp_consolidate(comm, shards, out, NULL, &o), HFDCP_ERR_ARG,
             "cast_dtype I32");
    hfdcp_consolidate_options_init(&o);
    o.buffer_bytes = 10;
    T_STATUS(hfdcp_consolidate(comm, shards, out, NULL, &o), HFDCP_ERR_ARG,
             "buffer_bytes 10");
    hfdcp_consolidate_options_init(&o);
    o.num_threads = -1;
    T_STATUS(hfdcp_consolidate(comm, shards, out, NULL, &o), HFDCP_ERR_ARG,
             "num_threads -1");
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "hfdcp_data_alignment", "1000");
    hfdcp_consolidate_options_init(&o);
    o.info = info;
    T_STATUS(hfdcp_consolidate(comm, shards, out, NULL, &o), HFDCP_ERR_ARG,
             "hint hfdcp_data_alignment=1000: expected a power of two");
    if (size > 1) { /* the last rank aligns the data to 4 KiB, the others to 8 */
        MPI_Info_set(info, "hfdcp_data_alignment", rank == size - 1 ? "4096" : "8");
        T_STATUS(hfdcp_consolidate(comm, shards, out, NULL, &o),
                 HFDCP_ERR_MISMATCH, "or the hint hfdcp_data_alignment) differ");
    }
    MPI_Info_free(&info);
    /* One rank with other options, another with another map. */
    if (size > 1) {
        hfdcp_consolidate_options_init(&o);
        o.buffer_bytes = rank == size - 1 ? 4096 : 0;
        T_STATUS(hfdcp_consolidate(comm, shards, out, NULL, &o),
                 HFDCP_ERR_MISMATCH, "options of rank");
        T_CHECK(make_map(&map) == T_OK);
        if (rank == 1)
            T_OKCALL(hfdcp_file_map_set(map, "dt.F32", 3));
        T_STATUS(hfdcp_consolidate(comm, shards, out, map, NULL),
                 HFDCP_ERR_MISMATCH, "file map of rank 1");
        hfdcp_file_map_free(map);
    }
    T_CHECK(no_output(comm, out) == 0);
    /* The map's order does not matter; NULL options are the defaults. */
    T_CHECK(make_map(&map) == T_OK);
    if (rank == 0) {
        hfdcp_file_map *rev;
        const char *name;
        int idx;
        T_OKCALL(hfdcp_file_map_create(&rev));
        for (size_t i = hfdcp_file_map_size(map); i-- > 0;) {
            T_OKCALL(hfdcp_file_map_entry(map, i, &name, &idx));
            T_OKCALL(hfdcp_file_map_set(rev, name, idx));
        }
        hfdcp_file_map_free(map);
        map = rev;
    }
    T_OKCALL(hfdcp_consolidate(comm, shards, out, map, NULL));
    hfdcp_file_map_free(map);
    model_free(&m);
    return T_OK;
}

/* ---- CRC-32C ---- */

/* Rank 0: every *.safetensors file of `dir` carries hfdcp_crc32c (`want`)
 * with each tensor's CRC-32C of its bytes in the file, computed here in
 * one pass over them, for `tensors` tensors of the model in all, or
 * (!want) carries none; crcs[i] gets model tensor i's value
 * (broadcast).  Agreed. */
static int check_crcs(MPI_Comm comm, const char *dir, bool want,
                      size_t tensors, uint32_t *crcs)
{
    int bad = 0;
    char *names[64];
    size_t count = 0, seen = 0;

    if (hfdcp_test_comm_rank(comm) == 0 &&
        hfdcp_test_list_dir(dir, names, 64, &count) != 0)
        bad = hfdcp_test_fail(__FILE__, __LINE__, "cannot list %s", dir);
    for (size_t f = 0; !bad && f < count; f++) {
        char path[1024];
        size_t len = 0;
        unsigned char *b;
        uint64_t n = 0;
        hfdcp__header h;
        uint32_t *v = NULL;
        if (strstr(names[f], ".safetensors") == NULL ||
            strstr(names[f], ".json") != NULL)
            continue;
        path_in(path, sizeof path, dir, names[f]);
        b = hfdcp_test_read_file(path, &len);
        for (int k = 7; b != NULL && len >= 8 && k >= 0; k--)
            n = n << 8 | b[k];
        if (b == NULL || len < 8 + n ||
            hfdcp__header_parse((char *)b + 8, n, len, path, &h) != HFDCP_OK ||
            hfdcp__header_crc32c(&h, path, &v) != HFDCP_OK) {
            free(b);
            bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: %s", path,
                                  hfdcp_last_error());
            break;
        }
        if ((v != NULL) != want)
            bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: hfdcp_crc32c %s",
                                  path, want ? "missing" : "present");
        for (size_t e = 0; v != NULL && !bad && e < h.n_entries; e++) {
            const hfdcp__entry *x = &h.entries[e];
            uint32_t c = hfdcp__crc32c(0, b + 8 + n + x->begin,
                                       (size_t)(x->end - x->begin));
            if (c != v[e])
                bad = hfdcp_test_fail(__FILE__, __LINE__,
                                      "%s: %s records %08x, its bytes give "
                                      "%08x", path, x->name, v[e], c);
            for (size_t i = 0; i < NT; i++)
                if (strcmp(MODEL[i].name, x->name) == 0) {
                    crcs[i] = c;
                    seen++;
                }
        }
        free(v);
        hfdcp__header_free(&h);
        free(b);
    }
    if (hfdcp_test_comm_rank(comm) == 0 && !bad && want && seen != tensors)
        bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: %zu tensors with a "
                              "CRC, wanted %zu", dir, seen, tensors);
    hfdcp_test_free_names(names, count);
    MPI_Bcast(&bad, 1, MPI_INT, 0, comm);
    MPI_Bcast(crcs, (int)NT, MPI_UINT32_T, 0, comm);
    return bad;
}

/* A sharded save by the job (its shard files carry their chunks' CRCs,
 * checked as they are read) consolidated without a map in many rounds,
 * with a map, by fewer ranks, with a cast; and shard files without CRCs
 * (k = 3, another split) with the map.  Every output records each tensor's CRC-32C of
 * its bytes; the same tensors give the same values whatever the file map
 * or the split; no_checksums writes none. */
static int consolidate_should_write_each_tensors_crc32c(MPI_Comm comm,
                                                        const char *dir)
{
    hfdcp_file_map *map = NULL;
    hfdcp_consolidate_options o;
    uint32_t plain[NT], mapped[NT], cast[NT], other[NT], none[NT];
    char shards[512], bare[512], out[512];
    model m;

    T_CHECK(make_map(&map) == T_OK);
    T_CHECK(model_make(&m, 17) == T_OK);
    path_in(shards, sizeof shards, dir, "shards");
    path_in(bare, sizeof bare, dir, "bare");
    T_CHECK(sharded_save(comm, shards, &m) == T_OK);
    T_CHECK(shared_dir(comm, bare) == 0);
    T_CHECK(write_shards(comm, bare, &m, 3) == T_OK);

    hfdcp_consolidate_options_init(&o);
    o.buffer_bytes = 64;
    path_in(out, sizeof out, dir, "plain");
    T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, &o));
    T_CHECK(check_crcs(comm, out, true, NT, plain) == 0);
    o.buffer_bytes = 200;
    path_in(out, sizeof out, dir, "mapped");
    T_OKCALL(hfdcp_consolidate(comm, shards, out, map, &o));
    T_CHECK(check_crcs(comm, out, true, NT, mapped) == 0);
    path_in(out, sizeof out, dir, "bare-out");
    T_OKCALL(hfdcp_consolidate(comm, bare, out, map, &o));
    T_CHECK(check_crcs(comm, out, true, NT, other) == 0);
    for (size_t i = 0; i < NT; i++)
        T_CHECKF(plain[i] == mapped[i] && plain[i] == other[i],
                 "%s: %08x without a map, %08x with one, %08x from "
                 "another split", MODEL[i].name, plain[i], mapped[i],
                 other[i]);

    /* The same shards consolidated by fewer ranks: other slices and
     * rounds, the same checks passed and the same values. */
    for (int k = 1; k < hfdcp_test_comm_size(comm); k++) {
        int rank = hfdcp_test_comm_rank(comm), bad = 0;
        MPI_Comm sub;
        MPI_Comm_split(comm, rank < k ? 0 : MPI_UNDEFINED, rank, &sub);
        snprintf(out, sizeof out, "%s/by-%d", dir, k);
        if (sub != MPI_COMM_NULL) {
            if (hfdcp_consolidate(sub, shards, out, NULL, &o) != HFDCP_OK)
                bad = hfdcp_test_fail(__FILE__, __LINE__, "%s",
                                      hfdcp_last_error());
            MPI_Comm_free(&sub);
        }
        MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
        T_CHECKF(!bad, "consolidated by %d ranks", k);
        T_CHECK(check_crcs(comm, out, true, NT, other) == 0);
        for (size_t i = 0; i < NT; i++)
            T_CHECKF(other[i] == plain[i], "%s by %d ranks", MODEL[i].name,
                     k);
    }

    o.cast = 1;
    o.cast_dtype = HFDCP_BF16;
    o.num_threads = 2;
    path_in(out, sizeof out, dir, "cast");
    T_OKCALL(hfdcp_consolidate(comm, shards, out, NULL, &o));
    T_CHECK(check_crcs(comm, out, true, NT, cast) == 0);
    for (size_t i = 0; i < NT; i++)
        if (!hfdcp__can_convert(MODEL[i].dtype, HFDCP_F64) ||
            MODEL[i].dtype == HFDCP_BF16)
            T_CHECKF(cast[i] == plain[i], "%s", MODEL[i].name);

    o.cast = 0;
    o.no_checksums = 1;
    path_in(out, sizeof out, dir, "none");
    T_OKCALL(hfdcp_consolidate(comm, shards, out, map, &o));
    T_CHECK(check_crcs(comm, out, false, 0, none) == 0);
    hfdcp_file_map_free(map);
    model_free(&m);
    return T_OK;
}

/* Rank 0 rewrites the file at `path`: `edit` flips a data byte of tensor
 * `name` (at its middle) or, with `header`, breaks the first hex digit of
 * its hfdcp_crc32c value.  Collective (a broadcast of the outcome). */
static int corrupt(MPI_Comm comm, const char *path, const char *name,
                   bool header)
{
    int bad = 0;

    if (hfdcp_test_comm_rank(comm) == 0) {
        size_t len = 0;
        unsigned char *b = hfdcp_test_read_file(path, &len);
        uint64_t n = 0;
        hfdcp__header h;
        char key[128];
        bad = 1;
        for (int k = 7; b != NULL && len >= 8 && k >= 0; k--)
            n = n << 8 | b[k];
        snprintf(key, sizeof key, "\\\"%s\\\":\\\"", name);
        if (b != NULL && header) {
            char *at = strstr((char *)b + 8, key);
            if (at != NULL && at < (char *)b + 8 + n) {
                at[strlen(key)] = 'x';
                bad = 0;
            }
        } else if (b != NULL &&
                   hfdcp__header_parse((char *)b + 8, n, len, path, &h) ==
                       HFDCP_OK) {
            for (size_t e = 0; e < h.n_entries; e++)
                if (strcmp(h.entries[e].name, name) == 0) {
                    b[8 + n + (h.entries[e].begin + h.entries[e].end) / 2] ^=
                        0x40;
                    bad = 0;
                }
            hfdcp__header_free(&h);
        }
        if (!bad)
            bad = hfdcp_test_write_file(path, b, len);
        free(b);
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, comm);
    return bad;
}

/* One byte flipped in the last rank's chunk of dt.F32 (rows): every rank
 * fails with HFDCP_ERR_FORMAT and one message naming the tensor, the
 * chunk's box and the shard file, and nothing is published; with
 * no_checksums nothing is checked.  A malformed hfdcp_crc32c value is
 * refused before anything is written. */
static int consolidate_should_refuse_a_corrupted_chunk(MPI_Comm comm,
                                                       const char *dir)
{
    int P = hfdcp_test_comm_size(comm), rc;
    const tdef *t = NULL;
    int64_t off[3], sz[3];
    hfdcp_consolidate_options o;
    char shards[512], out[512], file[700], box[128], want[256];
    model m;

    for (size_t i = 0; i < NT; i++)
        if (strcmp(MODEL[i].name, "dt.F32") == 0)
            t = &MODEL[i];
    T_CHECK(t != NULL && chunk_of(t, P - 1, P, true, off, sz));
    hfdcp__format_box(box, sizeof box, t->ndim, off, sz);
    T_CHECK(model_make(&m, 19) == T_OK);
    path_in(shards, sizeof shards, dir, "shards");
    snprintf(file, sizeof file,
             "%s/shard-%05d-model-00001-of-00001.safetensors", shards, P);
    snprintf(want, sizeof want, "tensor 'dt.F32': the chunk %s in shard "
             "file '%s'", box, file);
    T_CHECK(sharded_save(comm, shards, &m) == T_OK);
    T_CHECK(corrupt(comm, file, "dt.F32", false) == 0);

    hfdcp_consolidate_options_init(&o);
    o.buffer_bytes = 64;
    path_in(out, sizeof out, dir, "out");
    rc = hfdcp_consolidate(comm, shards, out, NULL, &o);
    T_CHECK(hfdcp_test_agreed_failure(comm, "flipped byte", rc,
                                      HFDCP_ERR_FORMAT, want,
                                      "CRC-32C") == T_OK);
    T_CHECK(hfdcp_test_nothing_in(comm, out));
    o.no_checksums = 1;
    rc = hfdcp_consolidate(comm, shards, out, NULL, &o);
    T_CHECK(hfdcp_test_agreed_ok(comm, rc, "no_checksums"));

    o.no_checksums = 0;
    T_CHECK(corrupt(comm, file, "dt.I16", true) == 0);
    path_in(out, sizeof out, dir, "out-bad-value");
    rc = hfdcp_consolidate(comm, shards, out, NULL, &o);
    T_CHECK(hfdcp_test_agreed_failure(comm, "malformed value", rc,
                                      HFDCP_ERR_FORMAT, file,
                                      "hfdcp_crc32c") == T_OK);
    T_CHECK(hfdcp_test_nothing_in(comm, out));
    model_free(&m);
    return T_OK;
}

/* Rank 0 rewrites the shard file at `path` without its hfdcp_crc32c (as
 * an older hfdcp or another writer leaves it), data unchanged.
 * Collective (a broadcast of the outcome). */
static int strip_crcs(MPI_Comm comm, const char *path)
{
    int bad = 0;

    if (hfdcp_test_comm_rank(comm) == 0) {
        size_t len = 0, hlen = 0, m = 0;
        unsigned char *b = hfdcp_test_read_file(path, &len), *file = NULL;
        uint64_t n = 0;
        char *hdr = NULL;
        hfdcp__header h;
        bad = 1;
        for (int k = 7; b != NULL && len >= 8 && k >= 0; k--)
            n = n << 8 | b[k];
        if (b != NULL &&
            hfdcp__header_parse((char *)b + 8, n, len, path, &h) == HFDCP_OK) {
            for (size_t i = 0; i < h.n_meta; i++) {
                if (strcmp(h.meta[i].key, "hfdcp_crc32c") != 0) {
                    h.meta[m++] = h.meta[i];
                    continue;
                }
                free(h.meta[i].key);
                free(h.meta[i].value);
            }
            h.n_meta = m;
            if (hfdcp__header_serialize(&h, &hdr, &hlen) == HFDCP_OK &&
                (file = malloc(hlen + len - 8 - n)) != NULL) {
                memcpy(file, hdr, hlen);
                memcpy(file + hlen, b + 8 + n, len - 8 - n);
                bad = hfdcp_test_write_file(path, file, hlen + len - 8 - n);
            }
            hfdcp__header_free(&h);
        }
        free(hdr);
        free(file);
        free(b);
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, comm);
    return bad;
}

/* Shards of which one (rank 1's) carries no CRCs: a byte flipped in it
 * is not seen (its tensor's output value is that of the bytes written),
 * a byte flipped in another one still is. */
static int consolidate_should_check_only_the_shards_that_carry_crcs(
    MPI_Comm comm, const char *dir)
{
    int P = hfdcp_test_comm_size(comm), rc;
    char shards[512], out[512], plain[700], other[700];
    uint32_t crcs[NT];
    model m;

    if (P < 2)
        return T_OK;
    T_CHECK(model_make(&m, 23) == T_OK);
    path_in(shards, sizeof shards, dir, "shards");
    snprintf(plain, sizeof plain,
             "%s/shard-00001-model-00001-of-00001.safetensors", shards);
    snprintf(other, sizeof other,
             "%s/shard-%05d-model-00001-of-00001.safetensors", shards, P);
    T_CHECK(sharded_save(comm, shards, &m) == T_OK);
    T_CHECK(strip_crcs(comm, plain) == 0);
    T_CHECK(corrupt(comm, plain, "dt.F32", false) == 0);
    path_in(out, sizeof out, dir, "out");
    rc = hfdcp_consolidate(comm, shards, out, NULL, NULL);
    T_CHECK(hfdcp_test_agreed_ok(comm, rc, "a flipped byte in a file "
                                           "without CRCs"));
    T_CHECK(check_crcs(comm, out, true, NT, crcs) == 0);

    T_CHECK(corrupt(comm, other, "dt.F32", false) == 0);
    path_in(out, sizeof out, dir, "out2");
    rc = hfdcp_consolidate(comm, shards, out, NULL, NULL);
    T_CHECK(hfdcp_test_agreed_failure(comm, "a flipped byte in a file with "
                                      "CRCs", rc, HFDCP_ERR_FORMAT,
                                      "tensor 'dt.F32': the chunk ",
                                      other) == T_OK);
    T_CHECK(hfdcp_test_nothing_in(comm, out));
    model_free(&m);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"consolidate_should_match_a_direct_save",
     consolidate_should_match_a_direct_save, 1},
    {"consolidate_should_match_a_direct_save_with_a_map",
     consolidate_should_match_a_direct_save_with_a_map, 1},
    {"consolidate_should_name_files_as_the_writer_does",
     consolidate_should_name_files_as_the_writer_does, 1},
    {"consolidate_should_match_a_direct_save_after_a_sharded_save",
     consolidate_should_match_a_direct_save_after_a_sharded_save, 1},
    {"consolidate_should_handle_an_empty_checkpoint",
     consolidate_should_handle_an_empty_checkpoint, 1},
    {"consolidate_should_cast_floats_only",
     consolidate_should_cast_floats_only, 1},
    {"consolidate_should_convert_with_threads",
     consolidate_should_convert_with_threads, 1},
    {"consolidate_should_stage_through_the_kept_buffer",
     consolidate_should_stage_through_the_kept_buffer, 1},
    {"consolidate_should_report_progress_on_rank0",
     consolidate_should_report_progress_on_rank0, 1},
    {"consolidate_should_refuse_an_incomplete_shard_set",
     consolidate_should_refuse_an_incomplete_shard_set, 1},
    {"consolidate_should_refuse_overlapping_shards",
     consolidate_should_refuse_overlapping_shards, 1},
    {"consolidate_should_refuse_mixed_dtypes",
     consolidate_should_refuse_mixed_dtypes, 1},
    {"consolidate_should_refuse_files_without_sharding_info",
     consolidate_should_refuse_files_without_sharding_info, 1},
    {"consolidate_should_refuse_bad_arguments",
     consolidate_should_refuse_bad_arguments, 1},
    {"consolidate_should_write_each_tensors_crc32c",
     consolidate_should_write_each_tensors_crc32c, 1},
    {"consolidate_should_refuse_a_corrupted_chunk",
     consolidate_should_refuse_a_corrupted_chunk, 1},
    {"consolidate_should_check_only_the_shards_that_carry_crcs",
     consolidate_should_check_only_the_shards_that_carry_crcs, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
