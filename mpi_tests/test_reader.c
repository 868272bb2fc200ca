// ranks: 1 2 3 4
// timeout: 300
// romio: 1 2 3 4
// nosieve: 2 3 4
/*
 * test_reader.c - the public reader on real and generated checkpoints.
 *
 * Expected bytes never come from the library: fixture headers are parsed
 * here with cJSON and the tensor bytes read with stdio; generated
 * checkpoints are made from a pattern this file knows; boxes are cut out of
 * the whole tensors element by element (bit by bit for sub-byte dtypes).
 */
#include <math.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <dirent.h>

#include <cjson/cJSON.h>

#include "harness.h"

#define MAXD 8

/* ---- a safetensors file read independently ---- */

typedef struct {
    char *name;
    hfdcp_dtype dtype;
    int ndim;
    int64_t shape[MAXD];
    const unsigned char *data;
    uint64_t nbytes;
} ftensor;

typedef struct {
    unsigned char *buf;
    size_t len;
    ftensor *t;
    size_t n;
} ffile;

static void ffile_free(ffile *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->t[i].name);
    free(f->t);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

static int parse_file(const char *path, ffile *f)
{
    uint64_t hn = 0;
    cJSON *root, *it;

    memset(f, 0, sizeof *f);
    f->buf = hfdcp_test_read_file(path, &f->len);
    if (f->buf == NULL || f->len < 8)
        return hfdcp_test_fail(__FILE__, __LINE__, "reading %s", path);
    for (int i = 7; i >= 0; i--)
        hn = hn << 8 | f->buf[i];
    root = cJSON_ParseWithLength((const char *)f->buf + 8, (size_t)hn);
    if (root == NULL)
        return hfdcp_test_fail(__FILE__, __LINE__, "JSON of %s", path);
    f->t = calloc((size_t)cJSON_GetArraySize(root) + 1, sizeof *f->t);
    cJSON_ArrayForEach(it, root)
    {
        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        ftensor *t = &f->t[f->n++];
        cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        t->name = hfdcp__strdup(it->string);
        if (hfdcp_dtype_from_name(
                cJSON_GetObjectItemCaseSensitive(it, "dtype")->valuestring,
                &t->dtype) != HFDCP_OK)
            return hfdcp_test_fail(__FILE__, __LINE__, "dtype in %s", path);
        t->ndim = cJSON_GetArraySize(shape);
        for (int d = 0; d < t->ndim; d++)
            t->shape[d] = (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble;
        uint64_t b = (uint64_t)cJSON_GetArrayItem(offs, 0)->valuedouble;
        uint64_t e = (uint64_t)cJSON_GetArrayItem(offs, 1)->valuedouble;
        t->data = f->buf + 8 + hn + b;
        t->nbytes = e - b;
    }
    cJSON_Delete(root);
    return 0;
}

/* ---- boxes ---- */

static int64_t numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

static uint64_t box_bytes(int bits, int ndim, const int64_t *size)
{
    return (uint64_t)numel(ndim, size) * (uint64_t)bits / 8;
}

/* Copies the box [off, off+size) of a row-major array `src` of `shape`
 * into `dst` (contiguous), element by element, bit by bit below 8 bits. */
static void extract(const unsigned char *src, int bits, int ndim,
                     const int64_t *shape, const int64_t *off,
                     const int64_t *size, unsigned char *dst)
{
    int64_t idx[MAXD] = {0};
    uint64_t k = 0;

    if (numel(ndim, size) == 0)
        return;
    for (;;) {
        uint64_t lin = 0;
        for (int d = 0; d < ndim; d++)
            lin = lin * (uint64_t)shape[d] + (uint64_t)(off[d] + idx[d]);
        if (bits % 8 == 0) {
            memcpy(dst + k * (uint64_t)bits / 8, src + lin * (uint64_t)bits / 8,
                   (size_t)bits / 8);
        } else {
            for (int b = 0; b < bits; b++) {
                uint64_t s = lin * (uint64_t)bits + (uint64_t)b;
                uint64_t t = k * (uint64_t)bits + (uint64_t)b;
                int v = (src[s >> 3] >> (s & 7)) & 1;
                dst[t >> 3] = (unsigned char)((dst[t >> 3] & ~(1u << (t & 7))) |
                                              ((unsigned)v << (t & 7)));
            }
        }
        k++;
        int d = ndim - 1;
        while (d >= 0 && ++idx[d] == size[d])
            idx[d--] = 0;
        if (d < 0)
            return;
    }
}

static int64_t cut(int64_t len, int i, int n, int64_t align)
{
    if (i >= n)
        return len;
    return (len * i / n) / align * align;
}

static int64_t align_of(hfdcp_dtype dt)
{
    int b = hfdcp_dtype_bits(dt);
    return b == 4 ? 2 : b == 6 ? 4 : 1;
}

typedef enum {
    D_WHOLE,     /* every rank the whole tensor (identical requests) */
    D_ROWS,      /* first dim split over the ranks */
    D_COLS,      /* last dim split over the ranks */
    D_BLOCKS,    /* first and last dims split over a grid */
    D_OVERLAP,   /* overlapping row ranges */
    D_SOME,      /* rows over all ranks but the last; rank 0 adds an inner
                    box */
    D_COUNT
} decomp;

static const char *const decomp_names[D_COUNT] = {
    "whole", "rows", "columns", "blocks", "overlapping", "last-rank-idle"};

/* The boxes rank `rank` of `size` asks for: returns how many (0..2). */
static int boxes(decomp d, hfdcp_dtype dt, int ndim, const int64_t *shape,
                 int rank, int size, int64_t off[2][MAXD],
                 int64_t sz[2][MAXD])
{
    int64_t al = align_of(dt);
    int last = ndim - 1, p = size, q = 1, n = 1;

    for (int k = 0; k < ndim; k++) {
        off[0][k] = 0;
        sz[0][k] = shape[k];
    }
    if (ndim == 0)
        return 1;
    switch (d) {
    case D_WHOLE:
        break;
    case D_COLS:
        if (ndim >= 2) {
            off[0][last] = cut(shape[last], rank, size, al);
            sz[0][last] = cut(shape[last], rank + 1, size, al) - off[0][last];
            break;
        }
        /* 1-D: columns are rows */
        /* fall through */
    case D_ROWS:
        off[0][0] = cut(shape[0], rank, size, ndim == 1 ? al : 1);
        sz[0][0] = cut(shape[0], rank + 1, size, ndim == 1 ? al : 1) -
                   off[0][0];
        break;
    case D_BLOCKS:
        for (int f = 2; f * f <= size; f++)
            if (size % f == 0) {
                p = size / f;
                q = f;
            }
        if (ndim == 1) {
            p = size;
            q = 1;
        }
        off[0][0] = cut(shape[0], rank / q, p, ndim == 1 ? al : 1);
        sz[0][0] = cut(shape[0], rank / q + 1, p, ndim == 1 ? al : 1) -
                   off[0][0];
        if (ndim >= 2) {
            off[0][last] = cut(shape[last], rank % q, q, al);
            sz[0][last] = cut(shape[last], rank % q + 1, q, al) -
                          off[0][last];
        }
        break;
    case D_OVERLAP:
        off[0][0] = cut(shape[0], rank, size + 1, ndim == 1 ? al : 1);
        sz[0][0] = cut(shape[0], rank + 2, size + 1, ndim == 1 ? al : 1) -
                   off[0][0];
        break;
    case D_SOME:
        if (size > 1 && rank == size - 1)
            return 0;
        {
            int parts = size > 1 ? size - 1 : 1;
            off[0][0] = cut(shape[0], rank, parts, ndim == 1 ? al : 1);
            sz[0][0] = cut(shape[0], rank + 1, parts, ndim == 1 ? al : 1) -
                       off[0][0];
        }
        if (rank == 0) {
            for (int k = 0; k < ndim; k++) {
                int64_t a = k == last ? al : 1;
                off[1][k] = shape[k] / 3 / a * a;
                sz[1][k] = (shape[k] - shape[k] / 4) / a * a - off[1][k];
                if (sz[1][k] < 0)
                    sz[1][k] = 0;
            }
            n = 2;
        }
        break;
    default:
        break;
    }
    return n;
}

/* ---- loading and checking ---- */

/* One tensor as the test knows it: its whole bytes. */
typedef struct {
    const char *name;
    hfdcp_dtype dtype;
    int ndim;
    const int64_t *shape;
    const unsigned char *data;
} known;

static int agreed(MPI_Comm comm, int bad)
{
    int any = 0;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm);
    return any;
}

/* Loads every tensor of `ts` in one hfdcp_reader_load with decomposition
 * `d` and checks the bytes.  Agreed verdict. */
static int load_and_check(MPI_Comm comm, hfdcp_reader *r, const known *ts,
                          size_t n, decomp d, const char *what)
{
    int rank, size, bad = 0;
    size_t nb = 0;
    unsigned char **dest = calloc(2 * n + 1, sizeof *dest);
    int *which = calloc(2 * n + 1, sizeof *which);
    int64_t(*offs)[MAXD] = calloc(2 * n + 1, sizeof *offs);
    int64_t(*szs)[MAXD] = calloc(2 * n + 1, sizeof *szs);

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    for (size_t i = 0; i < n && !bad; i++) {
        int64_t o[2][MAXD], s[2][MAXD];
        int k = boxes(d, ts[i].dtype, ts[i].ndim, ts[i].shape, rank, size, o,
                      s);
        for (int j = 0; j < k; j++) {
            uint64_t bytes = box_bytes(hfdcp_dtype_bits(ts[i].dtype),
                                       ts[i].ndim, s[j]);
            dest[nb] = malloc(bytes + 1);
            memset(dest[nb], 0xA5, bytes + 1);
            memcpy(offs[nb], o[j], sizeof o[j]);
            memcpy(szs[nb], s[j], sizeof s[j]);
            which[nb] = (int)i;
            int rc = hfdcp_reader_add(r, ts[i].name, ts[i].dtype, ts[i].ndim,
                                      offs[nb], szs[nb], dest[nb]);
            nb++;
            if (rc != HFDCP_OK)
                bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: add %s: %s",
                                      what, ts[i].name, hfdcp_last_error());
        }
    }
    int rc = hfdcp_reader_load(r);
    if (rc != HFDCP_OK)
        bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: load (%s): %s %s",
                              what, decomp_names[d], hfdcp_status_name(rc),
                              hfdcp_last_error());
    for (size_t b = 0; b < nb && !bad; b++) {
        const known *t = &ts[which[b]];
        int bits = hfdcp_dtype_bits(t->dtype);
        uint64_t bytes = box_bytes(bits, t->ndim, szs[b]);
        unsigned char *want = malloc(bytes + 1);
        memset(want, 0xA5, bytes + 1);
        extract(t->data, bits, t->ndim, t->shape, offs[b], szs[b], want);
        if (memcmp(want, dest[b], bytes + 1) != 0) {
            char box[256];
            uint64_t k = 0;
            while (want[k] == dest[b][k])
                k++;
            hfdcp__format_box(box, sizeof box, t->ndim, offs[b], szs[b]);
            bad = hfdcp_test_fail(__FILE__, __LINE__,
                                  "%s: tensor '%s' %s box %s (%s): byte %llu "
                                  "is 0x%02x, expected 0x%02x",
                                  what, t->name, hfdcp_dtype_name(t->dtype),
                                  box, decomp_names[d], (unsigned long long)k,
                                  dest[b][k], want[k]);
        }
        free(want);
    }
    for (size_t b = 0; b < nb; b++)
        free(dest[b]);
    free(dest);
    free(which);
    free(offs);
    free(szs);
    return agreed(comm, bad);
}

static int load_all_ways(MPI_Comm comm, hfdcp_reader *r, const known *ts,
                         size_t n, const char *what)
{
    for (int d = 0; d < D_COUNT; d++)
        if (load_and_check(comm, r, ts, n, (decomp)d, what))
            return 1;
    return 0;
}

/* Checks the reader's catalog against the file read independently. */
static int check_catalog(const hfdcp_reader *r, const ffile *f,
                         const char *what)
{
    T_CHECKF(hfdcp_reader_count(r) == f->n, "%s: %zu tensors, expected %zu",
             what, hfdcp_reader_count(r), f->n);
    for (size_t i = 0; i < f->n; i++) {
        hfdcp_tensor_info info;
        T_CHECKF(hfdcp_reader_find(r, f->t[i].name, &info) == HFDCP_OK,
                 "%s: tensor '%s' not found", what, f->t[i].name);
        T_CHECKF(info.dtype == f->t[i].dtype && info.ndim == f->t[i].ndim,
                 "%s: tensor '%s'", what, f->t[i].name);
        for (int d = 0; d < info.ndim; d++)
            T_CHECK(info.shape[d] == f->t[i].shape[d]);
    }
    /* Sorted by name. */
    for (size_t i = 1; i < hfdcp_reader_count(r); i++) {
        hfdcp_tensor_info a, b;
        T_OKCALL(hfdcp_reader_tensor(r, i - 1, &a));
        T_OKCALL(hfdcp_reader_tensor(r, i, &b));
        T_CHECK(strcmp(a.name, b.name) < 0);
    }
    return 0;
}

static known *knowns_of(const ffile *f)
{
    known *k = calloc(f->n + 1, sizeof *k);
    for (size_t i = 0; i < f->n; i++)
        k[i] = (known){f->t[i].name, f->t[i].dtype, f->t[i].ndim,
                       f->t[i].shape, f->t[i].data};
    return k;
}

/* ---- fixtures ---- */

typedef struct {
    char **paths;
    size_t n, cap;
} pathlist;

static void collect(const char *dir, pathlist *l)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *p = hfdcp__path_join(dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (strcmp(e->d_name, "invalid") != 0)
                collect(p, l);
            free(p);
        } else if (strlen(e->d_name) > 12 &&
                   strcmp(e->d_name + strlen(e->d_name) - 12,
                          ".safetensors") == 0) {
            if (l->n == l->cap) {
                l->cap = l->cap ? 2 * l->cap : 32;
                l->paths = realloc(l->paths, l->cap * sizeof *l->paths);
            }
            l->paths[l->n++] = p;
        } else {
            free(p);
        }
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int reader_should_load_every_fixture_byte_identical(MPI_Comm comm,
                                                           const char *dir)
{
    pathlist l = {0};
    (void)dir;
    collect(hfdcp_test_fixtures(), &l);
    qsort(l.paths, l.n, sizeof *l.paths, cmp_str);
    T_CHECKF(l.n >= 20, "only %zu fixture files under %s", l.n,
             hfdcp_test_fixtures());
    for (size_t i = 0; i < l.n; i++) {
        ffile f;
        hfdcp_reader *r = NULL;
        T_CHECK(agreed(comm, parse_file(l.paths[i], &f)) == 0);
        T_OKCALL(hfdcp_reader_open(comm, l.paths[i], NULL, &r));
        T_CHECK(agreed(comm, check_catalog(r, &f, l.paths[i])) == 0);
        known *k = knowns_of(&f);
        T_CHECK(load_all_ways(comm, r, k, f.n, l.paths[i]) == 0);
        free(k);
        hfdcp_reader_free(r);
        ffile_free(&f);
        free(l.paths[i]);
    }
    free(l.paths);
    return T_OK;
}

static int reader_should_load_the_sharded_checkpoint_like_its_twin(
    MPI_Comm comm, const char *dir)
{
    char *twin = hfdcp__asprintf("%s/SafeTensors.jl/non_sharded/"
                                 "model.safetensors", hfdcp_test_fixtures());
    char *sharded = hfdcp__asprintf("%s/SafeTensors.jl/sharded",
                                    hfdcp_test_fixtures());
    ffile f;
    hfdcp_reader *r = NULL;
    (void)dir;

    T_CHECK(agreed(comm, parse_file(twin, &f)) == 0);
    T_CHECK(f.n == 36);
    T_OKCALL(hfdcp_reader_open(comm, sharded, NULL, &r));
    T_CHECK(agreed(comm, check_catalog(r, &f, sharded)) == 0);
    known *k = knowns_of(&f);
    T_CHECK(load_all_ways(comm, r, k, f.n, sharded) == 0);
    free(k);
    hfdcp_reader_free(r);
    ffile_free(&f);
    free(twin);
    free(sharded);
    return T_OK;
}

/* ---- PyTorch's HuggingFace writer, not sharding ---- */

/* fixtures/pytorch_hf_unsharded holds what HuggingFaceStorageWriter with
 * an fqn_to_index_mapping and save_distributed=False writes (rebuilt byte
 * for byte by fixtures/make_pytorch_hf_unsharded.py, see the fixtures'
 * README): model-00001-of-00002 and model-00002-of-00002, each with
 * DCP_SHARDING_INFO naming its tensors at all-zero saved_offsets, and an
 * index.  The tensors' values are the script's formulas, recomputed here,
 * every one exact in its dtype. */
typedef struct {
    const char *name, *file;
    hfdcp_dtype dtype;
    int ndim;
    int64_t shape[2];
} pt_tensor;

static const pt_tensor pt_tensors[] = { /* sorted by name */
    {"lm_head.weight", "model-00002-of-00002.safetensors", HFDCP_BF16, 2, {3, 4}},
    {"model.embed_tokens.weight", "model-00001-of-00002.safetensors", HFDCP_F32, 2, {5, 4}},
    {"model.norm.weight", "model-00001-of-00002.safetensors", HFDCP_BF16, 1, {4}},
    {"model.position_ids", "model-00002-of-00002.safetensors", HFDCP_I64, 2, {2, 3}},
};
#define PT_N (sizeof pt_tensors / sizeof pt_tensors[0])

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int k = 0; k < bytes; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

/* The whole little-endian bytes of pt_tensors[t] (malloc'd). */
static unsigned char *pt_values(size_t t)
{
    const pt_tensor *pt = &pt_tensors[t];
    int64_t n = numel(pt->ndim, pt->shape);
    int size = hfdcp_dtype_bits(pt->dtype) / 8;
    unsigned char *out = malloc((size_t)(n * size));

    for (int64_t i = 0; i < n && out; i++) {
        const char *name = pt->name;
        float f = 0;
        uint32_t bits;
        if (strcmp(name, "model.position_ids") == 0) {
            put_le(out + 8 * i, (uint64_t)((i - 2) * INT64_C(1099511627779)), 8);
            continue;
        }
        if (strcmp(name, "model.embed_tokens.weight") == 0)
            f = (float)(i - 7) * 0.375f;
        else if (strcmp(name, "model.norm.weight") == 0)
            f = 1.0f + (float)i * 0.125f;
        else if (strcmp(name, "lm_head.weight") == 0)
            f = (float)(i - 6) * -0.0625f;
        memcpy(&bits, &f, sizeof bits);
        if (pt->dtype == HFDCP_BF16)
            put_le(out + 2 * i, bits >> 16, 2); /* exact: low half is 0 */
        else
            put_le(out + 4 * i, bits, 4);
    }
    return out;
}

/* `j` is the JSON string `s`. */
static bool pt_is(const cJSON *j, const char *s)
{
    return cJSON_IsString(j) && strcmp(j->valuestring, s) == 0;
}

/* The file's __metadata__ is PyTorch's: DCP_VERSION "1.0", format "pt" and
 * DCP_SHARDING_INFO naming exactly pt_tensors[] of that file, each with
 * logical_fqn its own name and saved_offsets ndim zeros. */
static int pt_check_metadata(const char *dir, const char *file)
{
    char *path = hfdcp__path_join(dir, file);
    size_t len = 0, in_file = 0;
    unsigned char *buf = hfdcp_test_read_file(path, &len);
    uint64_t hn = 0;
    int bad = 0;
    cJSON *root = NULL, *info = NULL, *meta, *it;

    free(path);
    T_CHECKF(buf != NULL && len >= 8, "reading %s", file);
    for (int i = 7; i >= 0; i--)
        hn = hn << 8 | buf[i];
    if (hn % 8 == 0 && hn <= len - 8)
        root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hn);
    meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    it = cJSON_GetObjectItemCaseSensitive(meta, "DCP_SHARDING_INFO");
    if (cJSON_IsString(it))
        info = cJSON_Parse(it->valuestring);
    if (root == NULL || info == NULL || cJSON_GetArraySize(meta) != 3 ||
        !pt_is(cJSON_GetObjectItemCaseSensitive(meta, "DCP_VERSION"), "1.0") ||
        !pt_is(cJSON_GetObjectItemCaseSensitive(meta, "format"), "pt"))
        bad = hfdcp_test_fail(__FILE__, __LINE__,
                              "%s: header or __metadata__ is not PyTorch's", file);
    for (size_t t = 0; t < PT_N && !bad; t++) {
        if (strcmp(pt_tensors[t].file, file) != 0)
            continue;
        in_file++;
        cJSON *e = cJSON_GetObjectItemCaseSensitive(info, pt_tensors[t].name);
        cJSON *so = cJSON_GetObjectItemCaseSensitive(e, "saved_offsets");
        bool zeros = cJSON_IsArray(so) && cJSON_GetArraySize(so) == pt_tensors[t].ndim;
        for (int d = 0; zeros && d < pt_tensors[t].ndim; d++)
            zeros = cJSON_IsNumber(cJSON_GetArrayItem(so, d)) &&
                    cJSON_GetArrayItem(so, d)->valuedouble == 0;
        if (!zeros ||
            !pt_is(cJSON_GetObjectItemCaseSensitive(e, "logical_fqn"), pt_tensors[t].name))
            bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: DCP_SHARDING_INFO of '%s'", file,
                                  pt_tensors[t].name);
    }
    if (!bad && (in_file != 2 || cJSON_GetArraySize(info) != (int)in_file ||
                 cJSON_GetArraySize(root) != (int)in_file + 1))
        bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: %d tensors, %d in DCP_SHARDING_INFO", file,
                              cJSON_GetArraySize(root) - 1, cJSON_GetArraySize(info));
    cJSON_Delete(info);
    cJSON_Delete(root);
    free(buf);
    return bad;
}

static int reader_should_load_pytorch_hf_checkpoints_saved_unsharded(MPI_Comm comm,
                                                                     const char *dir)
{
    char *path = hfdcp__path_join(hfdcp_test_fixtures(), "pytorch_hf_unsharded");
    hfdcp_reader *r = NULL;
    known k[PT_N];
    unsigned char *vals[PT_N];
    int bad = 0;
    (void)dir;

    /* The fixture is the layout this case is about. */
    T_CHECK(agreed(comm, pt_check_metadata(path, "model-00001-of-00002.safetensors") +
                             pt_check_metadata(path, "model-00002-of-00002.safetensors")) == 0);

    T_OKCALL(hfdcp_reader_open(comm, path, NULL, &r));
    T_CHECKF(hfdcp_reader_count(r) == PT_N, "%zu tensors", hfdcp_reader_count(r));
    for (size_t t = 0; t < PT_N; t++) {
        hfdcp_tensor_info info;
        T_OKCALL(hfdcp_reader_tensor(r, t, &info));
        T_CHECKF(strcmp(info.name, pt_tensors[t].name) == 0 && info.dtype == pt_tensors[t].dtype &&
                     info.ndim == pt_tensors[t].ndim,
                 "tensor %zu is '%s' %s ndim %d", t, info.name, hfdcp_dtype_name(info.dtype),
                 info.ndim);
        for (int d = 0; d < info.ndim; d++)
            T_CHECK(info.shape[d] == pt_tensors[t].shape[d]);
        vals[t] = pt_values(t);
        k[t] = (known){pt_tensors[t].name, pt_tensors[t].dtype, pt_tensors[t].ndim,
                       pt_tensors[t].shape, vals[t]};
    }
    /* A few values spelled out, so that the formulas cannot drift together:
     * embed_tokens[0][0] = -2.625f, norm[3] = 1.375 (bf16 0x3FB0),
     * position_ids[0][0] = -2 * 1099511627779. */
    T_CHECK(memcmp(vals[1], "\x00\x00\x28\xc0", 4) == 0);
    T_CHECK(memcmp(vals[2] + 6, "\xb0\x3f", 2) == 0);
    T_CHECK(memcmp(vals[3], "\xfa\xff\xff\xff\xff\xfd\xff\xff", 8) == 0);

    /* Whole, by rows, columns, blocks, overlapping and with a rank idle. */
    bad = load_all_ways(comm, r, k, PT_N, path);
    for (size_t t = 0; t < PT_N; t++)
        free(vals[t]);
    hfdcp_reader_free(r);
    T_CHECK(bad == 0);

    /* `hfdcp verify`, also --strict (the index's total_size is the tensors'
     * bytes, as PyTorch counts them), accepts it. */
    if (hfdcp_test_comm_rank(comm) == 0) {
        for (int strict = 0; strict < 2 && !bad; strict++) {
            char *cmd = hfdcp__asprintf("%s verify %s'%s' 2>&1", hfdcp_test_singleton_tool(),
                                        strict ? "--strict " : "", path),
                 *out = NULL;
            hfdcp_test_scrub_launcher();
            int st = hfdcp_test_run(cmd, &out);
            if (st != 0)
                bad = hfdcp_test_fail(__FILE__, __LINE__, "%s: exit %d:\n%s", cmd, st,
                                      out ? out : "");
            free(out);
            free(cmd);
        }
    }
    free(path);
    T_CHECK(agreed(comm, bad) == 0);
    return T_OK;
}

/* ---- generated DCP-sharded checkpoints ---- */

/* A global tensor and how it was cut into shards: chunk c is box
 * [off[c], off[c]+size[c]) saved in shard file[c] (0-based). */
typedef struct {
    char name[32];
    hfdcp_dtype dtype;
    int ndim;
    int64_t shape[MAXD];
    int nchunks;
    int64_t off[8][MAXD], size[8][MAXD];
    int file[8];
    unsigned char *data; /* whole tensor */
} gtensor;

#define NSHARDS 4

/* Splits `g` into a grid of p x q chunks over the first and last dims
 * (innermost cuts aligned for sub-byte dtypes), dealt to the shards
 * starting at `first`. */
static void grid_chunks(gtensor *g, int p, int q, int first)
{
    int last = g->ndim - 1;
    int64_t al = align_of(g->dtype);
    g->nchunks = 0;
    for (int i = 0; i < p; i++)
        for (int j = 0; j < q; j++) {
            int c = g->nchunks++;
            for (int d = 0; d < g->ndim; d++) {
                g->off[c][d] = 0;
                g->size[c][d] = g->shape[d];
            }
            g->off[c][0] = cut(g->shape[0], i, p, 1);
            g->size[c][0] = cut(g->shape[0], i + 1, p, 1) - g->off[c][0];
            if (last > 0) {
                g->off[c][last] = cut(g->shape[last], j, q, al);
                g->size[c][last] =
                    cut(g->shape[last], j + 1, q, al) - g->off[c][last];
            }
            g->file[c] = (first + c) % NSHARDS;
        }
}

static void fill_pattern(gtensor *g, uint64_t seed)
{
    uint64_t bytes = box_bytes(hfdcp_dtype_bits(g->dtype), g->ndim, g->shape);
    g->data = malloc(bytes + 1);
    for (uint64_t i = 0; i < bytes; i++)
        g->data[i] = (unsigned char)(hfdcp_test_rand(&seed) >> 40);
}

/* Writes the shard files of `gs` (rank 0, POSIX I/O, headers from
 * hfdcp__header_serialize). */
static int write_shards(MPI_Comm comm, const char *dir, gtensor *gs, size_t n)
{
    int rank, bad = 0;
    MPI_Comm_rank(comm, &rank);
    for (int s = 0; s < NSHARDS && rank == 0 && !bad; s++) {
        hfdcp__entry e[256];
        unsigned char *chunk[256];
        size_t ne = 0;
        uint64_t pos = 0;
        for (size_t i = 0; i < n; i++)
            for (int c = 0; c < gs[i].nchunks; c++) {
                if (gs[i].file[c] != s)
                    continue;
                int bits = hfdcp_dtype_bits(gs[i].dtype);
                uint64_t bytes = box_bytes(bits, gs[i].ndim, gs[i].size[c]);
                chunk[ne] = malloc(bytes + 1);
                extract(gs[i].data, bits, gs[i].ndim, gs[i].shape,
                        gs[i].off[c], gs[i].size[c], chunk[ne]);
                e[ne] = (hfdcp__entry){gs[i].name, gs[i].dtype, gs[i].ndim,
                                       gs[i].size[c], gs[i].off[c], pos,
                                       pos + bytes, 0};
                pos += bytes;
                ne++;
            }
        hfdcp__header h = {.entries = e, .n_entries = ne, .sharded = true};
        char *prefix = NULL;
        size_t plen = 0;
        int rc = hfdcp__header_serialize(&h, &prefix, &plen);
        char name[128];
        snprintf(name, sizeof name,
                 "%s/shard-%05d-model-00001-of-00001.safetensors", dir, s + 1);
        FILE *fp = fopen(name, "wb");
        if (rc != HFDCP_OK || fp == NULL) {
            bad = hfdcp_test_fail(__FILE__, __LINE__, "shard %d: %s", s,
                                  hfdcp_last_error());
        } else {
            fwrite(prefix, 1, plen, fp);
            for (size_t k = 0; k < ne; k++)
                fwrite(chunk[k], 1, (size_t)(e[k].end - e[k].begin), fp);
            bad = fclose(fp) != 0;
        }
        for (size_t k = 0; k < ne; k++)
            free(chunk[k]);
        free(prefix);
    }
    return agreed(comm, bad);
}

/* The generated checkpoint: rows, columns, blocks, a 3-D box grid, a
 * scalar, an empty tensor, and every dtype. */
static size_t make_tensors(gtensor *gs)
{
    size_t n = 0;
    gtensor *g;

    g = &gs[n++];
    *g = (gtensor){.name = "rows", .dtype = HFDCP_F32, .ndim = 2,
                   .shape = {10, 6}};
    grid_chunks(g, 4, 1, 0);
    g = &gs[n++];
    *g = (gtensor){.name = "cols", .dtype = HFDCP_I16, .ndim = 2,
                   .shape = {5, 12}};
    grid_chunks(g, 1, 4, 1);
    g = &gs[n++];
    *g = (gtensor){.name = "blocks", .dtype = HFDCP_F64, .ndim = 2,
                   .shape = {6, 9}};
    grid_chunks(g, 2, 2, 2);
    g = &gs[n++];
    *g = (gtensor){.name = "cube", .dtype = HFDCP_U8, .ndim = 3,
                   .shape = {4, 6, 5}};
    grid_chunks(g, 2, 2, 3);
    g = &gs[n++];
    *g = (gtensor){.name = "scalar", .dtype = HFDCP_I64, .ndim = 0,
                   .nchunks = 1, .file = {2}};
    g = &gs[n++];
    *g = (gtensor){.name = "empty", .dtype = HFDCP_F32, .ndim = 2,
                   .shape = {0, 7}, .nchunks = 1, .size = {{0, 7}},
                   .file = {1}};
    g = &gs[n++];
    *g = (gtensor){.name = "vector", .dtype = HFDCP_BF16, .ndim = 1,
                   .shape = {13}};
    grid_chunks(g, 3, 1, 0);
    for (int d = 0; d < HFDCP_DTYPE_COUNT; d++) {
        g = &gs[n++];
        *g = (gtensor){.dtype = (hfdcp_dtype)d, .ndim = 2, .shape = {4, 8}};
        snprintf(g->name, sizeof g->name, "dt.%s",
                 hfdcp_dtype_name((hfdcp_dtype)d));
        grid_chunks(g, 2, 2, d);
    }
    for (size_t i = 0; i < n; i++)
        fill_pattern(&gs[i], 1000 + i);
    return n;
}

static int reader_should_reshard_generated_dcp_checkpoints(MPI_Comm comm,
                                                           const char *dir)
{
    gtensor gs[64];
    known k[64];
    size_t n = make_tensors(gs);
    hfdcp_reader *r = NULL;
    hfdcp_tensor_info info;

    T_CHECK(write_shards(comm, dir, gs, n) == 0);
    T_OKCALL(hfdcp_reader_open(comm, dir, NULL, &r));
    T_CHECKF(hfdcp_reader_count(r) == n, "%zu tensors", hfdcp_reader_count(r));
    for (size_t i = 0; i < n; i++) {
        T_OKCALL(hfdcp_reader_find(r, gs[i].name, &info));
        T_CHECK(info.dtype == gs[i].dtype && info.ndim == gs[i].ndim);
        for (int d = 0; d < info.ndim; d++)
            T_CHECK(info.shape[d] == gs[i].shape[d]);
        k[i] = (known){gs[i].name, gs[i].dtype, gs[i].ndim, gs[i].shape,
                       gs[i].data};
    }
    T_CHECK(load_all_ways(comm, r, k, n, "generated DCP checkpoint") == 0);
    /* Hints reach the files: the same with a tiny collective buffer. */
    hfdcp_reader_free(r);
    hfdcp_load_options o;
    hfdcp_load_options_init(&o);
    MPI_Info_create(&o.info);
    MPI_Info_set(o.info, "cb_buffer_size", "500");
    T_OKCALL(hfdcp_reader_open(comm, dir, &o, &r));
    MPI_Info_free(&o.info); /* the reader keeps its own copy */
    T_CHECK(load_and_check(comm, r, k, n, D_BLOCKS, "cb_buffer_size=500") ==
            0);
    T_CHECK(load_and_check(comm, r, k, n, D_SOME, "cb_buffer_size=500") ==
            0);
    hfdcp_reader_free(r);
    for (size_t i = 0; i < n; i++)
        free(gs[i].data);
    return T_OK;
}

/* Sub-byte tensors whose rows are not whole bytes: whole tensors and
 * boxes of whole rows that start and end on bytes load; other boxes are
 * refused when requested, naming the tensor and the box. */
static int reader_should_load_sub_byte_tensors_with_odd_rows(MPI_Comm comm,
                                                             const char *dir)
{
    gtensor gs[3] = {
        {.name = "f4_2x3", .dtype = HFDCP_F4, .ndim = 2, .shape = {2, 3}},
        {.name = "f4_4x3", .dtype = HFDCP_F4, .ndim = 2, .shape = {4, 3}},
        {.name = "f6_4x2x3", .dtype = HFDCP_F6_E3M2, .ndim = 3,
         .shape = {4, 2, 3}},
    };
    known k[3];
    int rank, size;
    char *path = hfdcp__path_join(dir, "odd.safetensors");

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    for (int i = 0; i < 3; i++) {
        fill_pattern(&gs[i], 77 + (uint64_t)i);
        k[i] = (known){gs[i].name, gs[i].dtype, gs[i].ndim, gs[i].shape,
                       gs[i].data};
    }
    if (rank == 0) {
        hfdcp__entry e[3];
        uint64_t pos = 0;
        for (int i = 0; i < 3; i++) {
            uint64_t b = box_bytes(hfdcp_dtype_bits(gs[i].dtype), gs[i].ndim,
                                   gs[i].shape);
            e[i] = (hfdcp__entry){gs[i].name, gs[i].dtype, gs[i].ndim,
                                  gs[i].shape, NULL, pos, pos + b, 0};
            pos += b;
        }
        hfdcp__header h = {.entries = e, .n_entries = 3};
        char *prefix = NULL;
        size_t plen = 0;
        T_OKCALL(hfdcp__header_serialize(&h, &prefix, &plen));
        FILE *fp = fopen(path, "wb");
        T_CHECK(fp != NULL);
        fwrite(prefix, 1, plen, fp);
        for (int i = 0; i < 3; i++)
            fwrite(gs[i].data, 1, (size_t)(e[i].end - e[i].begin), fp);
        T_CHECK(fclose(fp) == 0);
        free(prefix);
    }
    MPI_Barrier(comm);
    hfdcp_reader *r = NULL;
    T_OKCALL(hfdcp_reader_open(comm, path, NULL, &r));
    T_CHECK(load_and_check(comm, r, k, 3, D_WHOLE, "odd rows") == 0);

    /* Pairs of rows of the 4-row tensors: rank r reads pair r % 2. */
    int64_t off[3] = {2 * (rank % 2), 0, 0}, sz4[2] = {2, 3},
            sz6[3] = {2, 2, 3};
    unsigned char a[16] = {0}, b[16] = {0}, wa[16] = {0}, wb[16] = {0};
    T_OKCALL(hfdcp_reader_add(r, "f4_4x3", HFDCP_F4, 2, off, sz4, a));
    T_OKCALL(hfdcp_reader_add(r, "f6_4x2x3", HFDCP_F6_E3M2, 3, off, sz6, b));
    T_OKCALL(hfdcp_reader_load(r));
    extract(gs[1].data, 4, 2, gs[1].shape, off, sz4, wa);
    extract(gs[2].data, 6, 3, gs[2].shape, off, sz6, wb);
    T_CHECK(memcmp(a, wa, 3) == 0 && a[3] == 0);
    T_CHECK(memcmp(b, wb, 9) == 0 && b[9] == 0);

    /* One row (1.5 bytes) or one starting mid-byte: refused. */
    int64_t row1[2] = {1, 0}, one[2] = {1, 3}, pair[2] = {2, 3};
    T_STATUS(hfdcp_reader_add(r, "f4_4x3", HFDCP_F4, 2, row1, one, a),
             HFDCP_ERR_UNSUPPORTED, "'f4_4x3' box [1:2, 0:3]");
    T_STATUS(hfdcp_reader_add(r, "f4_4x3", HFDCP_F4, 2, row1, pair, a),
             HFDCP_ERR_UNSUPPORTED, "whole bytes");
    T_STATUS(hfdcp_reader_load(r), HFDCP_ERR_UNSUPPORTED, "[1:2, 0:3]");
    hfdcp_reader_free(r);
    for (int i = 0; i < 3; i++)
        free(gs[i].data);
    free(path);
    return T_OK;
}

/* ---- dtype conversion ---- */

/* F16 bits of a value exactly representable in F16 (frexp-based). */
static uint16_t f16_exact(double v)
{
    int e;
    uint16_t sign = signbit(v) ? 0x8000 : 0;
    double f = frexp(fabs(v), &e); /* v = f * 2^e, f in [0.5, 1) */
    if (v == 0)
        return sign;
    if (e - 1 < -14) /* subnormal: v / 2^-24 */
        return (uint16_t)(sign | (uint16_t)(fabs(v) * 0x1p24));
    return (uint16_t)(sign | (uint16_t)((e - 1 + 15) << 10) |
                      (uint16_t)((f * 2 - 1) * 1024));
}

static int reader_should_convert_dtypes(MPI_Comm comm, const char *dir)
{
    /* Values exact in every format: k / 4, and a few small ones. */
    enum { R = 6, C = 10 };
    int rank, size;
    float f32[R * C];
    double f64[R * C];
    uint16_t f16[R * C], bf16[R * C];
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    for (int i = 0; i < R * C; i++) {
        double v = (i - 30) / 4.0;
        if (i == 0)
            v = 0x1p-20; /* F16 subnormal */
        if (i == 1)
            v = -0.0;
        f64[i] = v;
        f32[i] = (float)v;
        f16[i] = f16_exact(v);
        uint32_t b;
        memcpy(&b, &f32[i], 4);
        bf16[i] = (uint16_t)(b >> 16);
    }
    gtensor gs[4] = {
        {.name = "f32", .dtype = HFDCP_F32, .ndim = 2, .shape = {R, C}},
        {.name = "f64", .dtype = HFDCP_F64, .ndim = 2, .shape = {R, C}},
        {.name = "f16", .dtype = HFDCP_F16, .ndim = 2, .shape = {R, C}},
        {.name = "bf16", .dtype = HFDCP_BF16, .ndim = 2, .shape = {R, C}},
    };
    const void *vals[4] = {f32, f64, f16, bf16};
    for (int i = 0; i < 4; i++) {
        grid_chunks(&gs[i], 2, 2, i);
        size_t bytes = (size_t)R * C * (size_t)hfdcp_dtype_bits(gs[i].dtype) / 8;
        gs[i].data = malloc(bytes);
        memcpy(gs[i].data, vals[i], bytes);
    }
    T_CHECK(write_shards(comm, dir, gs, 4) == 0);

    hfdcp_reader *r = NULL;
    T_OKCALL(hfdcp_reader_open(comm, dir, NULL, &r));
    /* Every stored dtype to every other, on a box crossing the chunks:
     * rows [1, 5), columns split over the ranks. */
    for (int from = 0; from < 4; from++) {
        int64_t off[2] = {1, C * rank / size};
        int64_t sz[2] = {4, C * (rank + 1) / size - C * rank / size};
        unsigned char got[4][R * C * 8];
        unsigned char want[4][R * C * 8];
        for (int to = 0; to < 4; to++) {
            memset(got[to], 0xA5, sizeof got[to]);
            T_OKCALL(hfdcp_reader_add(r, gs[from].name, gs[to].dtype, 2, off,
                                      sz, got[to]));
            extract(gs[to].data, hfdcp_dtype_bits(gs[to].dtype), 2,
                    gs[to].shape, off, sz, want[to]);
        }
        T_OKCALL(hfdcp_reader_load(r));
        for (int to = 0; to < 4; to++) {
            size_t bytes = (size_t)numel(2, sz) *
                           (size_t)hfdcp_dtype_bits(gs[to].dtype) / 8;
            T_CHECKF(memcmp(got[to], want[to], bytes) == 0 &&
                         got[to][bytes] == 0xA5,
                     "%s as %s", gs[from].name, gs[to].name);
        }
    }
    /* Rounding: F64 values that are not F32 values. */
    hfdcp_reader_free(r);
    for (int i = 0; i < R * C; i++) {
        f64[i] = 0.1 * (i - 30) + 1e-9;
        f32[i] = (float)f64[i];
    }
    memcpy(gs[1].data, f64, sizeof f64);
    T_CHECK(write_shards(comm, dir, gs, 4) == 0);
    T_OKCALL(hfdcp_reader_open(comm, dir, NULL, &r));
    float got32[R * C];
    int64_t o0[2] = {0, 0}, whole[2] = {R, C};
    T_OKCALL(hfdcp_reader_add(r, "f64", HFDCP_F32, 2, o0, whole, got32));
    T_OKCALL(hfdcp_reader_load(r));
    T_CHECK(memcmp(got32, f32, sizeof f32) == 0);
    hfdcp_reader_free(r);
    for (int i = 0; i < 4; i++)
        free(gs[i].data);
    return T_OK;
}

/* ---- errors ---- */

/* Every rank has the same status and message. */
static int same_everywhere(MPI_Comm comm, int status)
{
    char msg[4096];
    int st = status, bad = 0;
    snprintf(msg, sizeof msg, "%s", hfdcp_last_error());
    MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, 0, comm);
    MPI_Bcast(&st, 1, MPI_INT, 0, comm);
    if (st != status || strcmp(msg, hfdcp_last_error()) != 0)
        bad = hfdcp_test_fail(__FILE__, __LINE__,
                              "rank 0 got %s \"%s\", this rank %s \"%s\"",
                              hfdcp_status_name(st), msg,
                              hfdcp_status_name(status), hfdcp_last_error());
    return agreed(comm, bad);
}

static int reader_should_fail_on_every_rank_when_one_asks_badly(
    MPI_Comm comm, const char *dir)
{
    char *path = hfdcp__asprintf("%s/SafeTensors.jl/non_sharded/"
                                 "model.safetensors", hfdcp_test_fixtures());
    hfdcp_reader *r = NULL;
    hfdcp_tensor_info info;
    int rank, size;
    float buf[64];
    (void)dir;

    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    T_OKCALL(hfdcp_reader_open(comm, path, NULL, &r));
    T_OKCALL(hfdcp_reader_find(r, "float32_35", &info));
    int64_t off[3] = {0, 0, 0}, sz[3] = {3, 5, 1}, big[2] = {3, 6},
            neg[2] = {3, -1}, shifted[2] = {1, 0};
    struct {
        const char *name;
        hfdcp_dtype dtype;
        int ndim;
        const int64_t *off, *size;
        int status;
        const char *substr;
    } bad[] = {
        {"no_such_tensor", HFDCP_F32, 2, off, sz, HFDCP_ERR_NOT_FOUND,
         "'no_such_tensor'"},
        {"float32_35", HFDCP_F32, 3, off, sz, HFDCP_ERR_ARG,
         "has 3 dimensions, the tensor has 2"},
        {"float32_35", HFDCP_F32, 2, off, big, HFDCP_ERR_ARG,
         "box [0:3, 0:6] is out of bounds"},
        {"float32_35", HFDCP_F32, 2, shifted, sz, HFDCP_ERR_ARG,
         "box [1:4, 0:5] is out of bounds"},
        {"float32_35", HFDCP_F32, 2, off, neg, HFDCP_ERR_ARG,
         "out of bounds"},
        {"float32_35", HFDCP_I32, 2, off, sz, HFDCP_ERR_UNSUPPORTED,
         "cannot convert F32 to I32"},
        {"int32_35", HFDCP_F32, 2, off, sz, HFDCP_ERR_UNSUPPORTED,
         "cannot convert I32 to F32"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* Everybody asks for something valid; the last rank also for the
         * impossible, and ignores the status of add. */
        T_OKCALL(hfdcp_reader_add(r, "float32_35", HFDCP_F32, 2, off, sz,
                                  buf));
        if (rank == size - 1)
            T_STATUS(hfdcp_reader_add(r, bad[i].name, bad[i].dtype,
                                      bad[i].ndim, bad[i].off, bad[i].size,
                                      buf),
                     bad[i].status, bad[i].substr);
        int rc = hfdcp_reader_load(r);
        T_CHECKF(rc == bad[i].status, "case %zu: %s (%s)", i,
                 hfdcp_status_name(rc), hfdcp_last_error());
        T_CHECKF(strstr(hfdcp_last_error(), bad[i].substr) != NULL,
                 "case %zu: %s", i, hfdcp_last_error());
        char want[32];
        snprintf(want, sizeof want, "rank %d: ", size - 1);
        T_CHECKF(strncmp(hfdcp_last_error(), want, strlen(want)) == 0,
                 "case %zu: %s", i, hfdcp_last_error());
        T_CHECK(same_everywhere(comm, rc) == 0);
    }
    /* The requests were dropped: the next load works. */
    float whole[15];
    T_OKCALL(hfdcp_reader_add(r, "float32_35", HFDCP_F32, 2, off, sz, whole));
    T_OKCALL(hfdcp_reader_load(r));
    T_OKCALL(hfdcp_reader_load(r)); /* nothing requested: fine */
    hfdcp_reader_free(r);
    free(path);
    return T_OK;
}

static int reader_should_describe_tensors_and_refuse_bad_calls(
    MPI_Comm comm, const char *dir)
{
    char *path = hfdcp__asprintf("%s/burn/multi_layer.safetensors",
                                 hfdcp_test_fixtures());
    char *missing = hfdcp__path_join(dir, "nothing-here");
    hfdcp_reader *r = NULL;
    hfdcp_tensor_info info;

    T_STATUS(hfdcp_reader_open(comm, missing, NULL, &r), HFDCP_ERR_NOT_FOUND,
             "nothing-here");
    T_CHECK(r == NULL);
    T_CHECK(same_everywhere(comm, HFDCP_ERR_NOT_FOUND) == 0);
    T_OKCALL(hfdcp_reader_open(comm, path, NULL, &r));
    size_t n = hfdcp_reader_count(r);
    T_CHECK(n == 9);
    T_STATUS(hfdcp_reader_tensor(r, n, &info), HFDCP_ERR_RANGE, "9 tensors");
    T_STATUS(hfdcp_reader_find(r, "nope", &info), HFDCP_ERR_NOT_FOUND,
             "'nope'");
    /* A scalar: ndim 0, NULL arrays. */
    int scalars = 0;
    for (size_t i = 0; i < n; i++) {
        T_OKCALL(hfdcp_reader_tensor(r, i, &info));
        if (info.ndim == 0) {
            int64_t v = -1;
            T_OKCALL(hfdcp_reader_add(r, info.name, info.dtype, 0, NULL, NULL,
                                      &v));
            T_OKCALL(hfdcp_reader_load(r));
            T_CHECK(v >= 0);
            scalars++;
        }
    }
    T_CHECK(scalars == 1);
    hfdcp_reader_free(r);
    hfdcp_reader_free(NULL);
    hfdcp_load_options_init(NULL);

    /* Renaming with a key map. */
    hfdcp_key_map *km = NULL;
    hfdcp_load_options o;
    T_OKCALL(hfdcp_key_map_create(&km));
    T_OKCALL(hfdcp_key_map_add(km, "^(.*)\\.weight$", "\\1.w"));
    hfdcp_load_options_init(&o);
    o.key_map = km;
    ffile f;
    T_CHECK(agreed(comm, parse_file(path, &f)) == 0);
    T_OKCALL(hfdcp_reader_open(comm, path, &o, &r));
    known *k = knowns_of(&f);
    char **names = calloc(f.n, sizeof *names);
    for (size_t i = 0; i < f.n; i++) {
        size_t len = strlen(f.t[i].name);
        if (len > 7 && strcmp(f.t[i].name + len - 7, ".weight") == 0)
            names[i] = hfdcp__asprintf("%.*s.w", (int)(len - 7),
                                       f.t[i].name);
        else
            names[i] = hfdcp__strdup(f.t[i].name);
        k[i].name = names[i];
    }
    T_CHECK(load_and_check(comm, r, k, f.n, D_BLOCKS, "renamed") == 0);
    for (size_t i = 0; i < f.n; i++)
        free(names[i]);
    free(names);
    free(k);
    ffile_free(&f);
    hfdcp_reader_free(r);
    hfdcp_key_map_free(km);
    free(path);
    free(missing);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"reader_should_describe_tensors_and_refuse_bad_calls", reader_should_describe_tensors_and_refuse_bad_calls, 1},
    {"reader_should_load_every_fixture_byte_identical", reader_should_load_every_fixture_byte_identical, 1},
    {"reader_should_load_the_sharded_checkpoint_like_its_twin", reader_should_load_the_sharded_checkpoint_like_its_twin, 1},
    {"reader_should_load_pytorch_hf_checkpoints_saved_unsharded", reader_should_load_pytorch_hf_checkpoints_saved_unsharded, 1},
    {"reader_should_reshard_generated_dcp_checkpoints", reader_should_reshard_generated_dcp_checkpoints, 1},
    {"reader_should_load_sub_byte_tensors_with_odd_rows", reader_should_load_sub_byte_tensors_with_odd_rows, 1},
    {"reader_should_convert_dtypes", reader_should_convert_dtypes, 1},
    {"reader_should_fail_on_every_rank_when_one_asks_badly", reader_should_fail_on_every_rank_when_one_asks_badly, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
