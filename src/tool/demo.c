/*
 * demo.c - `hfdcp demo`: the main job end to end.  Generates a
 * Llama-shaped model spread over the ranks as a trainer holds it, saves it
 * with one collective commit, loads it back in another decomposition and
 * verifies every byte.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

typedef tool_split split_kind;

typedef struct {
    char name[96];
    int ndim; /* 1 or 2 */
    int64_t shape[2];
    split_kind save_split;
} demo_tensor;

typedef struct {
    demo_tensor *t;
    size_t n, cap;
} model;

static int add_tensor(model *m, const char *name, int ndim, int64_t d0,
                      int64_t d1, split_kind split)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        demo_tensor *t = realloc(m->t, cap * sizeof *t);
        if (t == NULL)
            return hfdcp__nomem("the demo model");
        m->t = t;
        m->cap = cap;
    }
    demo_tensor *t = &m->t[m->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->save_split = split;
    return HFDCP_OK;
}

static int add_tensor_cb(void *m, const char *name, int ndim, int64_t d0, int64_t d1,
                         tool_split split)
{
    return add_tensor(m, name, ndim, d0, d1, split);
}

/* The box rank `rank` of `nranks` holds for `split`. */
static void box_for(const demo_tensor *t, split_kind split, int rank, int nranks,
                    int64_t *off, int64_t *size)
{
    tool_split_box(t->ndim, t->shape, split, rank, nranks, off, size);
}

/* The value of element `i` of tensor `id`, as the bytes of one element of
 * `dtype`: pseudo-random normal numbers in (-1, 1), reproducible anywhere. */
static void element(uint64_t id, uint64_t i, hfdcp_dtype dtype, unsigned char *out)
{
    uint64_t z = id * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull + 1;
    z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
    z ^= z >> 29;
    float f = (float)((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if (dtype == HFDCP_F32) {
        memcpy(out, &bits, 4);
    } else if (dtype == HFDCP_BF16) {
        uint16_t h = (uint16_t)(bits >> 16);
        memcpy(out, &h, 2);
    } else { /* F16: sign, exponent in [2^-14, 2^-1], 10 mantissa bits */
        uint16_t h = (uint16_t)(((z >> 63) << 15) | ((1 + (z >> 40) % 14) << 10) | (z & 0x3ff));
        memcpy(out, &h, 2);
    }
}

/* Fills (or checks, when `check`) a row-major box of a 1-D or 2-D tensor.
 * Returns the number of elements that differ. */
static uint64_t fill_box(const demo_tensor *t, uint64_t id, hfdcp_dtype dtype,
                         const int64_t *off, const int64_t *size, unsigned char *buf,
                         int check)
{
    int esize = hfdcp_dtype_bits(dtype) / 8;
    int64_t rows = t->ndim == 2 ? size[0] : 1;
    int64_t cols = t->ndim == 2 ? size[1] : size[0];
    int64_t row0 = t->ndim == 2 ? off[0] : 0;
    int64_t col0 = t->ndim == 2 ? off[1] : off[0];
    int64_t width = t->ndim == 2 ? t->shape[1] : t->shape[0];
    uint64_t bad = 0;
    unsigned char e[8];

    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            unsigned char *p = buf + (size_t)(r * cols + c) * (size_t)esize;
            element(id, (uint64_t)((row0 + r) * width + col0 + c), dtype, check ? e : p);
            if (check && memcmp(e, p, (size_t)esize) != 0)
                bad++;
        }
    }
    return bad;
}

static uint64_t box_bytes(const demo_tensor *t, const int64_t *size, hfdcp_dtype dtype)
{
    uint64_t n = (uint64_t)size[0] * (t->ndim == 2 ? (uint64_t)size[1] : 1);
    return n * (uint64_t)(hfdcp_dtype_bits(dtype) / 8);
}

static double now(void)
{
    return MPI_Wtime();
}

/* Seconds of the slowest rank for a step that began at t0 on every rank. */
static double slowest(double t0)
{
    double mine = now() - t0, all;
    MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return all;
}

/* What option `opt` expects as its value, NULL if it is no option. */
static const char *expected(const char *opt)
{
    static const struct {
        const char *opt, *expected;
    } options[] = {
        {"--out", "a directory"},
        {"--params", "a parameter count of at least 1000, like 500M or 7G"},
        {"--max-shard-bytes", "a byte count like 256M (0: one file)"},
        {"--threads", "a thread count from 0 to 1024"},
        {"--thread-count", "a thread count from 0 to 1024"},
        {"--dtype", "bf16, f16 or f32"},
        {"--hint", "KEY=VALUE, an MPI-IO hint"},
    };
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        if (strcmp(opt, options[i].opt) == 0)
            return options[i].expected;
    return NULL;
}

/* Rank 0: why `opt` (with the value `v`, NULL when missing) was refused,
 * then the usage. */
static void bad_arg(const char *opt, const char *v)
{
    const char *want = expected(opt);
    if (want == NULL)
        fprintf(stderr, "hfdcp demo: %s '%s'\n",
                opt[0] == '-' ? "unknown option" : "unexpected argument", opt);
    else if (v == NULL)
        fprintf(stderr, "hfdcp demo: %s needs a value: %s\n", opt, want);
    else
        fprintf(stderr, "hfdcp demo: %s '%s': expected %s\n", opt, v, want);
    fprintf(stderr, "usage: hfdcp demo [--out DIR] [--params P] [--dtype bf16|f16|f32]"
            " [--max-shard-bytes B] [--threads N] [--hint KEY=VALUE]...\n");
}

/* The command line. */
typedef struct {
    const char *out;
    uint64_t params, max_shard, threads;
    hfdcp_dtype dtype;
    MPI_Info info; /* --hint: for the save and the load */
} demo_args;

/* The command line into *d: 1, or 0 after the reason and the usage on
 * rank 0 (the hints freed). */
static int parse_args(int argc, char **argv, int rank, demo_args *d)
{
    d->out = "hfdcp-demo";
    d->params = 500000000;
    d->max_shard = 256000000;
    d->threads = 0;
    d->dtype = HFDCP_BF16;
    d->info = MPI_INFO_NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = v != NULL;
        if (strcmp(a, "--out") == 0) {
            d->out = v;
        } else if (strcmp(a, "--params") == 0 && ok) {
            ok = tool_parse_size(v, 1e18, &d->params) == 0 && d->params >= 1000;
        } else if (strcmp(a, "--max-shard-bytes") == 0 && ok) {
            ok = tool_parse_size(v, 1e18, &d->max_shard) == 0;
        } else if ((strcmp(a, "--threads") == 0 || strcmp(a, "--thread-count") == 0) && ok) {
            ok = tool_parse_size(v, 1e18, &d->threads) == 0 && d->threads <= 1024;
        } else if (strcmp(a, "--dtype") == 0 && ok) {
            if (strcmp(v, "bf16") == 0) d->dtype = HFDCP_BF16;
            else if (strcmp(v, "f16") == 0) d->dtype = HFDCP_F16;
            else if (strcmp(v, "f32") == 0) d->dtype = HFDCP_F32;
            else ok = 0;
        } else if (strcmp(a, "--hint") == 0 && ok) {
            ok = tool_add_hint(&d->info, v);
        } else {
            ok = 0; /* an unknown option, or a known one without a value */
        }
        if (!ok) {
            if (rank == 0)
                bad_arg(a, v);
            if (d->info != MPI_INFO_NULL)
                MPI_Info_free(&d->info);
            return 0;
        }
        i++;
    }
    return 1;
}

/* The box rank `rank` of `nranks` loads: rows, in reversed rank order. */
static void load_box(const demo_tensor *t, int rank, int nranks, int64_t *off, int64_t *size)
{
    box_for(t, SPLIT_ROWS, nranks - 1 - rank, nranks, off, size);
}

/* What the save and the load measured, for the report. */
typedef struct {
    uint64_t total_bytes; /* the whole model's */
    uint64_t load_bytes;  /* this rank's load */
    double t_save, t_load; /* seconds of the slowest rank */
} demo_stats;

/* Generates this rank's chunks into saved[], as a trainer would hold them,
 * and counts the whole model's bytes in s->total_bytes. */
static int generate(const model *m, hfdcp_dtype dtype, int rank, int nranks,
                    unsigned char **saved, demo_stats *s)
{
    int rc = HFDCP_OK;
    for (size_t k = 0; rc == HFDCP_OK && k < m->n; k++) {
        int64_t off[2], size[2];
        const demo_tensor *t = &m->t[k];
        box_for(t, t->save_split, rank, nranks, off, size);
        int64_t full[2] = {t->shape[0], t->shape[1]};
        s->total_bytes += box_bytes(t, full, dtype);
        uint64_t nb = box_bytes(t, size, dtype);
        if ((saved[k] = malloc(nb ? nb : 1)) == NULL)
            rc = hfdcp__nomem("a demo chunk");
        else
            fill_box(t, k, dtype, off, size, saved[k], 0);
    }
    return rc;
}

/* Save: every rank hands its chunks over to *w, one collective commit;
 * the time in s->t_save. */
static int save(const model *m, const demo_args *d, int rank, int nranks,
                unsigned char **saved, hfdcp_writer **w, demo_stats *s)
{
    hfdcp_save_options so;
    hfdcp_save_options_init(&so);
    so.max_shard_bytes = d->max_shard;
    so.thread_count = (int)d->threads;
    so.info = d->info;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = now();
    int rc = hfdcp_writer_open(MPI_COMM_WORLD, d->out, &so, w);
    if (rc != HFDCP_OK)
        return rc;
    for (size_t k = 0; k < m->n; k++) {
        int64_t off[2], size[2];
        box_for(&m->t[k], m->t[k].save_split, rank, nranks, off, size);
        rc = hfdcp_writer_add(*w, m->t[k].name, d->dtype, m->t[k].ndim, m->t[k].shape, off,
                              size, saved[k]);
        if (rc != HFDCP_OK)
            break; /* the commit reports it on every rank */
    }
    rc = hfdcp_writer_commit(*w);
    if (rc != HFDCP_OK)
        return rc;
    s->t_save = slowest(t0);
    return HFDCP_OK;
}

/* Load back through *r into loaded[], in another decomposition (load_box);
 * this rank's bytes in s->load_bytes, the time in s->t_load. */
static int load(const model *m, const demo_args *d, int rank, int nranks,
                unsigned char **loaded, hfdcp_reader **r, demo_stats *s)
{
    hfdcp_load_options lo;
    hfdcp_load_options_init(&lo);
    lo.info = d->info;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = now();
    int rc = hfdcp_reader_open(MPI_COMM_WORLD, d->out, &lo, r);
    if (rc != HFDCP_OK)
        return rc;
    for (size_t k = 0; rc == HFDCP_OK && k < m->n; k++) {
        int64_t off[2], size[2];
        load_box(&m->t[k], rank, nranks, off, size);
        uint64_t nb = box_bytes(&m->t[k], size, d->dtype);
        s->load_bytes += nb;
        if ((loaded[k] = malloc(nb ? nb : 1)) == NULL) {
            rc = hfdcp__nomem("a demo load buffer");
            break;
        }
        rc = hfdcp_reader_add(*r, m->t[k].name, d->dtype, m->t[k].ndim, off, size, loaded[k]);
    }
    rc = hfdcp_reader_load(*r);
    if (rc != HFDCP_OK)
        return rc;
    s->t_load = slowest(t0);
    return HFDCP_OK;
}

/* The elements of this rank's load that differ from the generator. */
static uint64_t count_bad(const model *m, hfdcp_dtype dtype, int rank, int nranks,
                          unsigned char **loaded)
{
    uint64_t bad = 0;
    for (size_t k = 0; k < m->n; k++) {
        int64_t off[2], size[2];
        load_box(&m->t[k], rank, nranks, off, size);
        bad += fill_box(&m->t[k], k, dtype, off, size, loaded[k], 1);
    }
    return bad;
}

/* Rank 0: prints the save, the load (`all_load` bytes over every rank),
 * the format check of `out` and the verdict on `all_bad` differing
 * elements; returns the exit code. */
static int report(const char *out, size_t n, const demo_stats *s, uint64_t all_load,
                  uint64_t all_bad)
{
    hfdcp__catalog *c = NULL;
    hfdcp__problem *problems = NULL;
    size_t np = 0;
    int vrc = hfdcp__catalog_verify(out, &c, &problems, &np);
    printf("saved:  %zu tensors in %zu file%s, %" PRIu64 " bytes, %.2f s, %.2f GB/s\n",
           n, c ? c->n_files : 0, c && c->n_files == 1 ? "" : "s", s->total_bytes,
           s->t_save, (double)s->total_bytes / s->t_save / 1e9);
    printf("loaded: %" PRIu64 " bytes as row blocks in reversed rank order, %.2f s, "
           "%.2f GB/s\n", all_load, s->t_load, (double)all_load / s->t_load / 1e9);
    printf("format check: %s\n", vrc == HFDCP_OK && np == 0 ? "valid" : "PROBLEMS");
    for (size_t i = 0; i < np; i++)
        printf("  %s\n", problems[i].message);
    if (all_bad == 0 && vrc == HFDCP_OK && np == 0)
        printf("verified: every byte of every tensor matches (checkpoint in %s)\n", out);
    else
        printf("MISMATCH: %" PRIu64 " elements differ\n", all_bad);
    fflush(stdout);
    int code = (all_bad == 0 && vrc == HFDCP_OK && np == 0) ? TOOL_EXIT_OK : TOOL_EXIT_INVALID;
    hfdcp__problems_free(problems, np);
    hfdcp__catalog_free(c);
    return code;
}

int tool_demo(int argc, char **argv)
{
    demo_args d;
    demo_stats s = {0};
    int rank, nranks, rc = HFDCP_OK, code = TOOL_EXIT_ERROR;
    model m = {0};
    unsigned char **saved = NULL, **loaded = NULL;
    hfdcp_writer *w = NULL;
    hfdcp_reader *r = NULL;

    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (!parse_args(argc, argv, rank, &d))
        return TOOL_EXIT_USAGE;

    rc = tool_llama_model((double)d.params, LLAMA_MIX, add_tensor_cb, &m);
    saved = calloc(m.n, sizeof *saved);
    loaded = calloc(m.n, sizeof *loaded);
    if (rc == HFDCP_OK && (saved == NULL || loaded == NULL))
        rc = hfdcp__nomem("the demo's buffers");
    if (rc == HFDCP_OK)
        rc = generate(&m, d.dtype, rank, nranks, saved, &s);
    rc = hfdcp__agree(MPI_COMM_WORLD, rc);
    if (rc != HFDCP_OK)
        goto cleanup;
    if (rank == 0)
        printf("hfdcp demo: %zu tensors, %.3f GB (%s), %d rank%s, saving to %s\n",
               m.n, (double)s.total_bytes / 1e9, hfdcp_dtype_name(d.dtype), nranks,
               nranks == 1 ? "" : "s", d.out);

    HFDCP_CHECK(save(&m, &d, rank, nranks, saved, &w, &s));
    HFDCP_CHECK(load(&m, &d, rank, nranks, loaded, &r, &s));

    /* Verify every byte against the generator. */
    uint64_t bad = count_bad(&m, d.dtype, rank, nranks, loaded), all_bad = 0, all_load = 0;
    MPI_Allreduce(&bad, &all_bad, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&s.load_bytes, &all_load, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        code = report(d.out, m.n, &s, all_load, all_bad);
    MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);

cleanup:
    if (rc != HFDCP_OK)
        code = tool_fail("demo", rc);
    hfdcp_reader_free(r);
    hfdcp_writer_free(w);
    for (size_t k = 0; k < m.n; k++) {
        if (saved)
            free(saved[k]);
        if (loaded)
            free(loaded[k]);
    }
    free(saved);
    free(loaded);
    free(m.t);
    if (d.info != MPI_INFO_NULL)
        MPI_Info_free(&d.info);
    return code;
}
