// ranks: 1 2 3 4
// timeout: 180
/*
 * test_plan.c - the writer's global plan, without I/O: agreement of the
 * holders of a tensor, holes, overlaps, chunks out of bounds, replicated
 * boxes written once with balanced bytes, file assignment (file map,
 * max_shard_bytes in HF's convention, a tensor missing from the map),
 * layout order and offsets, and the cost of planning 100,000 tensors.
 *
 * Most cases build the packed chunk lists of several "virtual" ranks and
 * call hfdcp__wplan_global() directly (every real rank does the same
 * computation); the *_collective cases go through hfdcp__wplan_make() on
 * the real ranks.
 */
#include <inttypes.h>

#include "harness.h"

#define MAXV 8

/* Chunk lists of up to MAXV virtual ranks. */
typedef struct {
    hfdcp__wchunk *c[MAXV];
    size_t n[MAXV], cap[MAXV];
    bool own_maps;          /* map_files as set; else vp_map_files() */
    int map_files[MAXV];    /* each rank's hfdcp__file_map_files() */
    void **mem; /* names and dims to free */
    size_t nmem, capmem;
} vplan;

static void *keep(vplan *v, void *p)
{
    if (p == NULL)
        return NULL;
    if (v->nmem == v->capmem) {
        v->capmem = v->capmem ? v->capmem * 2 : 64;
        v->mem = realloc(v->mem, v->capmem * sizeof *v->mem);
    }
    v->mem[v->nmem++] = p;
    return p;
}

/* Adds a chunk on virtual rank r.  ndim 0: the arrays may be NULL. */
static void vp_add(vplan *v, int r, const char *name, hfdcp_dtype dt, int ndim,
                   const int64_t *shape, const int64_t *off,
                   const int64_t *size, int file_index)
{
    hfdcp__wchunk *c;
    int64_t *dims = keep(v, malloc(3 * (size_t)ndim * sizeof *dims + 1));

    if (v->n[r] == v->cap[r]) {
        v->cap[r] = v->cap[r] ? v->cap[r] * 2 : 16;
        v->c[r] = realloc(v->c[r], v->cap[r] * sizeof *v->c[r]);
    }
    c = &v->c[r][v->n[r]++];
    memset(c, 0, sizeof *c);
    if (ndim > 0) {
        memcpy(dims, shape, (size_t)ndim * sizeof *dims);
        memcpy(dims + ndim, off, (size_t)ndim * sizeof *dims);
        memcpy(dims + 2 * ndim, size, (size_t)ndim * sizeof *dims);
    }
    c->name = keep(v, hfdcp__strdup(name));
    c->dtype = dt;
    c->ndim = ndim;
    c->shape = dims;
    c->offsets = dims + ndim;
    c->sizes = dims + 2 * ndim;
    c->file_index = file_index;
}

/* A whole 1-D tensor of n elements on rank r. */
static void vp_add1(vplan *v, int r, const char *name, hfdcp_dtype dt,
                    int64_t n, int file_index)
{
    int64_t zero = 0;
    vp_add(v, r, name, dt, 1, &n, &zero, &n, file_index);
}

/* Unless a case sets them: every rank's map has the largest index any
 * chunk's entry gives (1 when entries are only missing), none when no
 * chunk has an entry. */
static int vp_map_files(const vplan *v, int nranks)
{
    int most = 0;

    for (int r = 0; r < nranks; r++)
        for (size_t k = 0; k < v->n[r]; k++) {
            int i = v->c[r][k].file_index;
            if (i != 0 && (i > most || most == 0))
                most = i > 1 ? i : 1;
        }
    return most;
}

static int vp_plan(vplan *v, int nranks, uint64_t max, hfdcp__wplan *out)
{
    hfdcp__buf b[MAXV];
    const void *parts[MAXV];
    size_t lens[MAXV];
    int rc, files = vp_map_files(v, nranks);

    for (int r = 0; r < nranks; r++) {
        if (hfdcp__wplan_pack(v->c[r], v->n[r],
                              v->own_maps ? v->map_files[r] : files,
                              &b[r]) != HFDCP_OK)
            return HFDCP_ERR_NOMEM;
        parts[r] = b[r].data;
        lens[r] = b[r].len;
    }
    rc = hfdcp__wplan_global(nranks, parts, lens, max, 0, false, out);
    for (int r = 0; r < nranks; r++)
        hfdcp__buf_free(&b[r]);
    return rc;
}

static void vp_free(vplan *v)
{
    for (int r = 0; r < MAXV; r++)
        free(v->c[r]);
    for (size_t i = 0; i < v->nmem; i++)
        free(v->mem[i]);
    free(v->mem);
    memset(v, 0, sizeof *v);
}

/* The assignment of chunk i of virtual rank r. */
static const hfdcp__wassign *assign_of(const hfdcp__wplan *p, int r, size_t i)
{
    size_t at = 0;
    for (int k = 0; k < r; k++)
        at += p->rank_chunks[k];
    return &p->assign[at + i];
}

/* Parses file f's header as the reader would. */
static int parse_header(const hfdcp__wplan *p, size_t f, hfdcp__header *h)
{
    uint64_t n;
    int rc = hfdcp__header_len((const unsigned char *)p->headers[f],
                               p->file_sizes[f], p->file_names[f], &n);
    if (rc != HFDCP_OK)
        return rc;
    if (n + 8 != p->header_lens[f])
        return hfdcp__error(HFDCP_ERR_INTERNAL, "header length %" PRIu64
                            " but %zu bytes", n, p->header_lens[f]);
    return hfdcp__header_parse(p->headers[f] + 8, n, p->file_sizes[f],
                               p->file_names[f], h);
}

static const hfdcp__entry *find_entry(const hfdcp__header *h, const char *name)
{
    for (size_t i = 0; i < h->n_entries; i++)
        if (strcmp(h->entries[i].name, name) == 0)
            return &h->entries[i];
    return NULL;
}

static int plan_should_lay_out_by_dtype_size_then_name(MPI_Comm comm,
                                                       const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    hfdcp__header h;
    static const char *want[] = {"c", "b", "z", "a", "d", "e6", "e4"};
    static const uint64_t bytes[] = {8 * 3, 4 * 5, 4 * 1, 2 * 7, 1 * 9, 3, 4};
    (void)comm;
    (void)dir;

    /* Added in an order unrelated to the layout. */
    vp_add1(&v, 0, "b", HFDCP_F32, 5, 0);
    vp_add1(&v, 0, "a", HFDCP_BF16, 7, 0);
    vp_add1(&v, 0, "e4", HFDCP_F4, 8, 0);
    vp_add1(&v, 0, "c", HFDCP_F64, 3, 0);
    vp_add1(&v, 0, "d", HFDCP_I8, 9, 0);
    vp_add1(&v, 0, "e6", HFDCP_F6_E2M3, 4, 0);
    vp_add(&v, 0, "z", HFDCP_I32, 0, NULL, NULL, NULL, 0); /* a scalar */
    T_OKCALL(vp_plan(&v, 1, 0, &p));
    T_CHECK(p.n_files == 1);
    T_CHECK(strcmp(p.file_names[0], "model.safetensors") == 0);
    T_CHECK(p.header_lens[0] % 8 == 0 && p.headers[0][8] == '{');
    T_OKCALL(parse_header(&p, 0, &h));
    T_CHECK(h.n_entries == 7);
    uint64_t at = 0;
    for (size_t i = 0; i < 7; i++) {
        const hfdcp__entry *e = &h.entries[i]; /* sorted by begin */
        T_CHECKF(strcmp(e->name, want[i]) == 0, "entry %zu is %s", i, e->name);
        T_CHECK(e->begin == at && e->end == at + bytes[i]);
        at = e->end;
    }
    T_CHECK(p.file_sizes[0] == p.header_lens[0] + at);
    /* Every chunk's offset is its tensor's absolute data offset. */
    for (size_t i = 0; i < v.n[0]; i++) {
        const hfdcp__entry *e = find_entry(&h, v.c[0][i].name);
        T_CHECK(e != NULL);
        T_CHECK(assign_of(&p, 0, i)->offset == p.header_lens[0] + e->begin);
        T_CHECK(assign_of(&p, 0, i)->file == 0 && assign_of(&p, 0, i)->write);
    }
    /* The index: sorted names, total of tensor bytes. */
    T_CHECK(p.index.n == 7 && p.index.total_size == at);
    for (size_t i = 1; i < p.index.n; i++)
        T_CHECK(strcmp(p.index.names[i - 1], p.index.names[i]) < 0);
    T_CHECK(strcmp(p.index.files[0], "model.safetensors") == 0);
    hfdcp__header_free(&h);
    hfdcp__wplan_free(&p);
    vp_free(&v);
    return T_OK;
}

static int plan_should_refuse_dtype_disagreement(MPI_Comm comm,
                                                 const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    int64_t shape[2] = {4, 8}, o0[2] = {0, 0}, o1[2] = {2, 0}, s[2] = {2, 8};
    (void)comm;
    (void)dir;
    vp_add(&v, 0, "w", HFDCP_F32, 2, shape, o0, s, 0);
    vp_add(&v, 1, "w", HFDCP_BF16, 2, shape, o1, s, 0);
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_PLAN,
             "tensor 'w': rank 0 saves it as F32 but rank 1 as BF16");
    T_CHECK(p.n_files == 0 && p.assign == NULL);
    vp_free(&v);
    return T_OK;
}

static int plan_should_refuse_shape_disagreement(MPI_Comm comm,
                                                 const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    int64_t a[2] = {4, 8}, b[2] = {4, 9}, o0[2] = {0, 0}, o1[2] = {2, 0},
            s[2] = {2, 8};
    (void)comm;
    (void)dir;
    vp_add1(&v, 0, "x", HFDCP_F32, 4, 0);
    vp_add(&v, 1, "w", HFDCP_F32, 2, a, o0, s, 0);
    vp_add(&v, 2, "w", HFDCP_F32, 2, b, o1, s, 0);
    T_STATUS(vp_plan(&v, 3, 0, &p), HFDCP_ERR_PLAN,
             "tensor 'w': rank 1 gives the global shape [4, 8] but rank 2 "
             "gives [4, 9]");
    /* Different ndim. */
    vp_free(&v);
    vp_add(&v, 0, "w", HFDCP_F32, 2, a, o0, a, 0);
    vp_add1(&v, 1, "w", HFDCP_F32, 32, 0);
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_PLAN, "[4, 8] but rank 1 gives [32]");
    vp_free(&v);
    return T_OK;
}

static int plan_should_refuse_holes_overlaps_and_chunks_outside(MPI_Comm comm,
                                                                const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    int64_t shape[2] = {4, 3}, o0[2] = {0, 0}, s0[2] = {2, 3}, o1[2] = {3, 0},
            s1[2] = {1, 3}, o2[2] = {1, 0}, s2[2] = {3, 3};
    (void)comm;
    (void)dir;
    /* Rows 0-1 and 3: row 2 is missing. */
    vp_add(&v, 0, "h", HFDCP_F32, 2, shape, o0, s0, 0);
    vp_add(&v, 1, "h", HFDCP_F32, 2, shape, o1, s1, 0);
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_PLAN,
             "tensor 'h': element [2, 0] is not covered by any chunk");
    vp_free(&v);

    /* Rows 0-1 and 1-3 overlap on row 1. */
    vp_add(&v, 0, "o", HFDCP_F32, 2, shape, o0, s0, 0);
    vp_add(&v, 1, "o", HFDCP_F32, 2, shape, o2, s2, 0);
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_PLAN, "tensor 'o'");
    T_CHECKF(strstr(hfdcp_last_error(), "overlap") &&
                 strstr(hfdcp_last_error(), "rank 0") &&
                 strstr(hfdcp_last_error(), "rank 1"),
             "%s", hfdcp_last_error());
    vp_free(&v);

    /* Rows 3-5 of a 4-row tensor. */
    int64_t o3[2] = {3, 0}, s3[2] = {2, 3};
    vp_add(&v, 0, "b", HFDCP_F32, 2, shape, o0, shape, 0);
    vp_add(&v, 1, "b", HFDCP_F32, 2, shape, o3, s3, 0);
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_PLAN,
             "tensor 'b': the chunk [3:5, 0:3] of rank 1 lies outside the "
             "tensor's shape [4, 3]");
    vp_free(&v);

    /* A negative offset. */
    int64_t o4[2] = {-1, 0};
    vp_add(&v, 0, "n", HFDCP_F32, 2, shape, o4, s1, 0);
    T_STATUS(vp_plan(&v, 1, 0, &p), HFDCP_ERR_PLAN, "lies outside");
    vp_free(&v);

    /* The same box twice on one rank. */
    vp_add(&v, 0, "d", HFDCP_F32, 2, shape, o0, shape, 0);
    vp_add(&v, 0, "d", HFDCP_F32, 2, shape, o0, shape, 0);
    T_STATUS(vp_plan(&v, 1, 0, &p), HFDCP_ERR_PLAN,
             "tensor 'd': rank 0 holds the chunk [0:4, 0:3] twice");
    vp_free(&v);
    return T_OK;
}

static int plan_should_write_replicated_boxes_once_balancing_bytes(
    MPI_Comm comm, const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    (void)comm;
    (void)dir;
    /* Four tensors replicated on four ranks: one each. */
    for (int r = 0; r < 4; r++) {
        vp_add1(&v, r, "r400", HFDCP_F32, 100, 0);
        vp_add1(&v, r, "r300", HFDCP_F32, 75, 0);
        vp_add1(&v, r, "r200", HFDCP_F32, 50, 0);
        vp_add1(&v, r, "r100", HFDCP_F32, 25, 0);
    }
    T_OKCALL(vp_plan(&v, 4, 0, &p));
    for (size_t i = 0; i < 4; i++) {
        int writers = 0;
        for (int r = 0; r < 4; r++)
            writers += assign_of(&p, r, i)->write;
        T_CHECKF(writers == 1, "tensor %zu written %d times", i, writers);
    }
    uint64_t got[4], want[4] = {400, 300, 200, 100};
    for (int r = 0; r < 4; r++)
        got[r] = p.rank_bytes[r];
    for (int r = 0; r < 4; r++) {
        bool found = false;
        for (int k = 0; k < 4; k++)
            found = found || got[k] == want[r];
        T_CHECKF(found, "no rank writes %" PRIu64 " bytes", want[r]);
    }
    hfdcp__wplan_free(&p);
    vp_free(&v);

    /* Rank 0 writes a 4000-byte tensor of its own; the replicated ones go
     * to rank 1 (data parallel copy) then balance. */
    vp_add1(&v, 0, "own", HFDCP_F32, 1000, 0);
    for (int r = 0; r < 2; r++) {
        vp_add1(&v, r, "rep_a", HFDCP_F32, 500, 0);
        vp_add1(&v, r, "rep_b", HFDCP_F32, 400, 0);
        vp_add1(&v, r, "rep_c", HFDCP_F32, 100, 0);
    }
    T_OKCALL(vp_plan(&v, 2, 0, &p));
    T_CHECK(p.rank_bytes[0] == 4000 && p.rank_bytes[1] == 4000);
    for (size_t i = 1; i < 4; i++)
        T_CHECK(!assign_of(&p, 0, i)->write && assign_of(&p, 1, i - 1)->write);
    /* Holders of the same box agree on where it goes. */
    T_CHECK(assign_of(&p, 0, 1)->offset == assign_of(&p, 1, 0)->offset);
    hfdcp__wplan_free(&p);
    vp_free(&v);

    /* Many equal replicated tensors spread evenly over 3 ranks. */
    for (int t = 0; t < 30; t++) {
        char name[32];
        snprintf(name, sizeof name, "norm.%d", t);
        for (int r = 0; r < 3; r++)
            vp_add1(&v, r, name, HFDCP_BF16, 64, 0);
    }
    T_OKCALL(vp_plan(&v, 3, 0, &p));
    for (int r = 0; r < 3; r++)
        T_CHECKF(p.rank_bytes[r] == 10 * 128, "rank %d writes %" PRIu64, r,
                 p.rank_bytes[r]);
    hfdcp__wplan_free(&p);
    vp_free(&v);
    return T_OK;
}

static int plan_should_handle_scalars_and_empty_tensors(MPI_Comm comm,
                                                        const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    hfdcp__header h;
    int64_t shape[2] = {0, 5}, o0[2] = {0, 0}, s0[2] = {0, 2}, o1[2] = {0, 2},
            s1[2] = {0, 3};
    (void)comm;
    (void)dir;
    for (int r = 0; r < 3; r++)
        vp_add(&v, r, "step", HFDCP_I64, 0, NULL, NULL, NULL, 0);
    vp_add(&v, 0, "empty", HFDCP_F32, 2, shape, o0, s0, 0);
    vp_add(&v, 2, "empty", HFDCP_F32, 2, shape, o1, s1, 0);
    T_OKCALL(vp_plan(&v, 3, 0, &p));
    T_CHECK(assign_of(&p, 0, 0)->write + assign_of(&p, 1, 0)->write +
                assign_of(&p, 2, 0)->write == 1);
    T_OKCALL(parse_header(&p, 0, &h));
    T_CHECK(h.n_entries == 2 && h.data_size == 8);
    T_CHECK(strcmp(h.entries[0].name, "step") == 0 && h.entries[0].ndim == 0);
    T_CHECK(strcmp(h.entries[1].name, "empty") == 0 &&
            h.entries[1].begin == h.entries[1].end);
    hfdcp__header_free(&h);
    hfdcp__wplan_free(&p);
    vp_free(&v);

    /* Nothing at all: one file with no tensors. */
    T_OKCALL(vp_plan(&v, 2, 0, &p));
    T_CHECK(p.n_files == 1 && p.index.n == 0 && p.index.total_size == 0);
    T_OKCALL(parse_header(&p, 0, &h));
    T_CHECK(h.n_entries == 0 && p.file_sizes[0] == p.header_lens[0]);
    hfdcp__header_free(&h);
    hfdcp__wplan_free(&p);
    return T_OK;
}

static int plan_should_follow_the_file_map(MPI_Comm comm, const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    (void)comm;
    (void)dir;
    vp_add1(&v, 0, "a", HFDCP_F32, 4, 2);
    vp_add1(&v, 0, "b", HFDCP_F32, 4, 1);
    vp_add1(&v, 1, "c", HFDCP_F32, 4, 2);
    T_OKCALL(vp_plan(&v, 2, 0, &p));
    T_CHECK(p.n_files == 2);
    T_CHECK(strcmp(p.file_names[0], "model-00001-of-00002.safetensors") == 0);
    T_CHECK(strcmp(p.file_names[1], "model-00002-of-00002.safetensors") == 0);
    T_CHECK(assign_of(&p, 0, 0)->file == 1 && assign_of(&p, 0, 1)->file == 0 &&
            assign_of(&p, 1, 0)->file == 1);
    /* a and c share file 2: a first (same dtype, name order). */
    T_CHECK(assign_of(&p, 1, 0)->offset == assign_of(&p, 0, 0)->offset + 16);
    hfdcp__wplan_free(&p);
    vp_free(&v);

    /* Indices with a gap: N is the largest index; no file 2. */
    vp_add1(&v, 0, "a", HFDCP_F32, 4, 1);
    vp_add1(&v, 0, "b", HFDCP_F32, 4, 3);
    T_OKCALL(vp_plan(&v, 1, 0, &p));
    T_CHECK(p.n_files == 2);
    T_CHECK(strcmp(p.file_names[0], "model-00001-of-00003.safetensors") == 0);
    T_CHECK(strcmp(p.file_names[1], "model-00003-of-00003.safetensors") == 0);
    T_CHECK(strcmp(p.index.files[1], "model-00003-of-00003.safetensors") == 0);
    hfdcp__wplan_free(&p);
    vp_free(&v);

    /* A tensor missing from the map. */
    vp_add1(&v, 0, "a", HFDCP_F32, 4, 1);
    vp_add1(&v, 1, "lost", HFDCP_F32, 4, -1);
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_PLAN,
             "tensor 'lost' (saved by rank 1) is not in the file map");
    vp_free(&v);

    /* Holders whose maps disagree. */
    vp_add1(&v, 0, "a", HFDCP_F32, 4, 1);
    vp_add1(&v, 1, "a", HFDCP_F32, 4, 2);
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_MISMATCH,
             "tensor 'a': the file map of rank 0 puts it in file 1 but the "
             "one of rank 1 puts it in file 2");
    vp_free(&v);
    vp_add1(&v, 0, "a", HFDCP_F32, 4, 1);
    vp_add1(&v, 1, "a", HFDCP_F32, 4, -1);
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_MISMATCH, "one of rank 1 lacks it");
    vp_free(&v);
    return T_OK;
}

/* Names as PyTorch's HuggingFace writer gives them with
 * fqn_to_index_mapping: N is the largest index in the map, even one no
 * saved tensor uses, and even 1. */
static int plan_should_name_files_by_the_largest_index_in_the_map(
    MPI_Comm comm, const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    (void)comm;
    (void)dir;

    /* Every index 1: model-00001-of-00001, not model.safetensors. */
    vp_add1(&v, 0, "a", HFDCP_F32, 4, 1);
    vp_add1(&v, 1, "b", HFDCP_F32, 4, 1);
    T_OKCALL(vp_plan(&v, 2, 0, &p));
    T_CHECK(p.n_files == 1);
    T_CHECK(strcmp(p.file_names[0], "model-00001-of-00001.safetensors") == 0);
    T_CHECK(p.index.n == 2 &&
            strcmp(p.index.files[0], "model-00001-of-00001.safetensors") == 0 &&
            strcmp(p.index.files[1], "model-00001-of-00001.safetensors") == 0);
    hfdcp__wplan_free(&p);

    /* The same with max_shard_bytes: a map wins over the split. */
    T_OKCALL(vp_plan(&v, 2, 1, &p));
    T_CHECK(p.n_files == 1 &&
            strcmp(p.file_names[0], "model-00001-of-00001.safetensors") == 0);
    hfdcp__wplan_free(&p);
    vp_free(&v);

    /* The map's largest index is 3, the tensors use 1 and 2: no file 3. */
    vp_add1(&v, 0, "a", HFDCP_F32, 4, 2);
    vp_add1(&v, 1, "b", HFDCP_F32, 4, 1);
    v.own_maps = true;
    v.map_files[0] = v.map_files[1] = 3;
    T_OKCALL(vp_plan(&v, 2, 0, &p));
    T_CHECK(p.n_files == 2);
    T_CHECK(strcmp(p.file_names[0], "model-00001-of-00003.safetensors") == 0);
    T_CHECK(strcmp(p.file_names[1], "model-00002-of-00003.safetensors") == 0);
    T_CHECK(strcmp(p.index.names[0], "a") == 0 &&
            strcmp(p.index.files[0], "model-00002-of-00003.safetensors") == 0);
    T_CHECK(strcmp(p.index.names[1], "b") == 0 &&
            strcmp(p.index.files[1], "model-00001-of-00003.safetensors") == 0);
    hfdcp__wplan_free(&p);
    vp_free(&v);

    /* A map and no tensor: one empty file, named as file 1 of the map's. */
    v.own_maps = true;
    v.map_files[0] = 2;
    T_OKCALL(vp_plan(&v, 1, 0, &p));
    T_CHECK(p.n_files == 1 &&
            strcmp(p.file_names[0], "model-00001-of-00002.safetensors") == 0);
    hfdcp__wplan_free(&p);
    vp_free(&v);

    /* No map: one file is model.safetensors, also after a split into one
     * file; a split into N files is numbered 1..N of N. */
    vp_add1(&v, 0, "a", HFDCP_U8, 4, 0);
    vp_add1(&v, 0, "b", HFDCP_U8, 4, 0);
    T_OKCALL(vp_plan(&v, 1, 0, &p));
    T_CHECK(p.n_files == 1 &&
            strcmp(p.file_names[0], "model.safetensors") == 0);
    hfdcp__wplan_free(&p);
    T_OKCALL(vp_plan(&v, 1, 8, &p));
    T_CHECK(p.n_files == 1 &&
            strcmp(p.file_names[0], "model.safetensors") == 0);
    hfdcp__wplan_free(&p);
    T_OKCALL(vp_plan(&v, 1, 4, &p));
    T_CHECK(p.n_files == 2 &&
            strcmp(p.file_names[0], "model-00001-of-00002.safetensors") == 0 &&
            strcmp(p.file_names[1], "model-00002-of-00002.safetensors") == 0);
    hfdcp__wplan_free(&p);
    vp_free(&v);
    return T_OK;
}

/* The names depend on the map's largest index: every rank's map must have
 * the same, whatever tensors the rank saves. */
static int plan_should_refuse_maps_of_different_sizes(MPI_Comm comm,
                                                      const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    (void)comm;
    (void)dir;

    vp_add1(&v, 0, "a", HFDCP_F32, 4, 1);
    vp_add1(&v, 1, "b", HFDCP_F32, 4, 1);
    v.own_maps = true;
    v.map_files[0] = 3;
    v.map_files[1] = 2;
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_MISMATCH,
             "the largest index in the file map of rank 0 is 3 but in the "
             "one of rank 1 it is 2");
    v.map_files[1] = 0;
    T_STATUS(vp_plan(&v, 2, 0, &p), HFDCP_ERR_MISMATCH,
             "rank 0 has a file map but rank 1 has none");
    /* A rank that saves nothing still counts. */
    v.map_files[1] = 3;
    v.map_files[2] = 0;
    T_STATUS(vp_plan(&v, 3, 0, &p), HFDCP_ERR_MISMATCH,
             "rank 0 has a file map but rank 2 has none");
    vp_free(&v);
    return T_OK;
}

static int plan_should_split_by_size_as_huggingface_does(MPI_Comm comm,
                                                         const char *dir)
{
    vplan v = {0};
    hfdcp__wplan p;
    (void)comm;
    (void)dir;
    /* Registration order: rank 0's a, big, c; then rank 1's new d, e.
     * HF: big (2000 > 1000) gets a file at once: file 1; a + c = 800,
     * d would make 1200: a, c close as file 2; d + e = 1000 fit: file 3. */
    vp_add1(&v, 0, "a", HFDCP_U8, 400, 0);
    vp_add1(&v, 0, "big", HFDCP_U8, 2000, 0);
    vp_add1(&v, 0, "c", HFDCP_U8, 400, 0);
    vp_add1(&v, 1, "c", HFDCP_U8, 400, 0);
    vp_add1(&v, 1, "d", HFDCP_U8, 400, 0);
    vp_add1(&v, 1, "e", HFDCP_U8, 600, 0);
    T_OKCALL(vp_plan(&v, 2, 1000, &p));
    T_CHECK(p.n_files == 3);
    T_CHECK(strcmp(p.file_names[2], "model-00003-of-00003.safetensors") == 0);
    T_CHECK(assign_of(&p, 0, 1)->file == 0);                                 /* big */
    T_CHECK(assign_of(&p, 0, 0)->file == 1 && assign_of(&p, 0, 2)->file == 1); /* a c */
    T_CHECK(assign_of(&p, 1, 1)->file == 2 && assign_of(&p, 1, 2)->file == 2); /* d e */
    T_CHECK(p.file_sizes[1] == p.header_lens[1] + 800);
    T_CHECK(p.file_sizes[2] == p.header_lens[2] + 1000);
    hfdcp__wplan_free(&p);

    /* No limit: one file. */
    T_OKCALL(vp_plan(&v, 2, 0, &p));
    T_CHECK(p.n_files == 1 && strcmp(p.file_names[0], "model.safetensors") == 0);
    hfdcp__wplan_free(&p);
    vp_free(&v);
    return T_OK;
}

/* The SafeTensors.jl sharded fixture was split by huggingface_hub with
 * max_shard_size=1000: registering its tensors in weight_map order and
 * planning with the same limit must give the same files. */
static int plan_should_split_the_fixture_as_huggingface_hub_did(MPI_Comm comm,
                                                                const char *dir)
{
    char path[1024];
    vplan v = {0};
    hfdcp__wplan p;
    hfdcp__index ix;
    size_t len;
    unsigned char *buf;
    (void)comm;
    (void)dir;

    snprintf(path, sizeof path, "%s/SafeTensors.jl/sharded/%s",
             hfdcp_test_fixtures(), HFDCP_INDEX_NAME);
    T_CHECK((buf = hfdcp_test_read_file(path, &len)) != NULL);
    T_OKCALL(hfdcp__index_parse((const char *)buf, len, path, &ix));
    free(buf);
    T_CHECK(ix.n == 36);
    for (size_t i = 0; i < ix.n; i++) {
        hfdcp__header h;
        uint64_t n;
        snprintf(path, sizeof path, "%s/SafeTensors.jl/sharded/%s",
                 hfdcp_test_fixtures(), ix.files[i]);
        T_CHECK((buf = hfdcp_test_read_file(path, &len)) != NULL);
        T_OKCALL(hfdcp__header_len(buf, len, path, &n));
        T_OKCALL(hfdcp__header_parse((const char *)buf + 8, n, len, path, &h));
        const hfdcp__entry *e = find_entry(&h, ix.names[i]);
        T_CHECK(e != NULL);
        int64_t zero[3] = {0, 0, 0};
        vp_add(&v, 0, e->name, e->dtype, e->ndim, e->shape, zero, e->shape, 0);
        hfdcp__header_free(&h);
        free(buf);
    }
    T_OKCALL(vp_plan(&v, 1, 1000, &p));
    T_CHECK(p.n_files == 6);
    for (size_t i = 0; i < ix.n; i++) {
        const char *got = p.file_names[assign_of(&p, 0, i)->file];
        T_CHECKF(strcmp(got, ix.files[i]) == 0, "%s: %s, HF says %s",
                 ix.names[i], got, ix.files[i]);
    }
    T_CHECK(p.index.total_size == ix.total_size);
    hfdcp__wplan_free(&p);
    hfdcp__index_free(&ix);
    vp_free(&v);
    return T_OK;
}

static int plan_should_refuse_malformed_chunk_lists(MPI_Comm comm,
                                                    const char *dir)
{
    hfdcp__wplan p;
    unsigned char junk[64];
    const void *parts[1] = {junk};
    size_t lens[1] = {sizeof junk};
    uint64_t huge = 1000000;
    (void)comm;
    (void)dir;
    memset(junk, 0xff, sizeof junk);
    memcpy(junk, &huge, sizeof huge);
    T_STATUS(hfdcp__wplan_global(1, parts, lens, 0, 0, false, &p), HFDCP_ERR_INTERNAL,
             "rank 0 are malformed");
    huge = 1;
    memcpy(junk, &huge, sizeof huge);
    T_STATUS(hfdcp__wplan_global(1, parts, lens, 0, 0, false, &p), HFDCP_ERR_INTERNAL,
             "malformed");
    return T_OK;
}

/* ---- collective ---- */

static int plan_should_give_every_rank_its_part_collective(MPI_Comm comm,
                                                           const char *dir)
{
    int rank, size;
    hfdcp__wchunk c[3];
    int64_t shape[2], off[2], sz[2], zero = 0, n = 10;
    hfdcp__wplan p;
    (void)dir;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);

    /* "rows": one row block per rank; "norm": replicated; "own.<r>":
     * each rank's own. */
    char own[32];
    snprintf(own, sizeof own, "own.%d", rank);
    shape[0] = size * 2;
    shape[1] = 3;
    off[0] = rank * 2;
    off[1] = 0;
    sz[0] = 2;
    sz[1] = 3;
    memset(c, 0, sizeof c);
    c[0] = (hfdcp__wchunk){"rows", HFDCP_F32, 2, shape, off, sz, 0, NULL};
    c[1] = (hfdcp__wchunk){"norm", HFDCP_BF16, 1, &n, &zero, &n, 0, NULL};
    c[2] = (hfdcp__wchunk){own, HFDCP_U8, 1, &n, &zero, &n, 0, NULL};
    T_OKCALL(hfdcp__wplan_make(comm, c, 3, 0, 0, 0, false, &p));
    T_CHECK(p.n_assign == 3 && p.n_files == 1);
    T_CHECK(strcmp(p.file_names[0], "model.safetensors") == 0);
    T_CHECK((rank == 0) == (p.headers != NULL));
    /* Everyone agrees on the file size and on norm's offset; norm is
     * written by exactly one rank; the row blocks are written by their
     * holders. */
    uint64_t mine[2] = {p.file_sizes[0], p.assign[1].offset}, r0[2];
    memcpy(r0, mine, sizeof r0);
    MPI_Bcast(r0, 2, MPI_UINT64_T, 0, comm);
    T_CHECK(memcmp(mine, r0, sizeof r0) == 0);
    int w = p.assign[1].write, writers;
    MPI_Allreduce(&w, &writers, 1, MPI_INT, MPI_SUM, comm);
    T_CHECK(writers == 1);
    T_CHECK(p.assign[0].write && p.assign[2].write);
    if (rank == 0) {
        hfdcp__header h;
        T_OKCALL(parse_header(&p, 0, &h));
        T_CHECK(h.n_entries == (size_t)size + 2);
        T_CHECK(p.index.n == (size_t)size + 2);
        hfdcp__header_free(&h);
    }
    hfdcp__wplan_free(&p);

    /* The last rank disagrees on the dtype: the same error everywhere. */
    if (rank == size - 1)
        c[0].dtype = HFDCP_F16;
    T_STATUS(hfdcp__wplan_make(comm, c, 3, 0, 0, 0, false, &p), size > 1 ? HFDCP_ERR_PLAN
                                                             : HFDCP_OK,
             size > 1 ? "tensor 'rows': rank 0 saves it as F32 but rank" : NULL);
    if (size == 1)
        hfdcp__wplan_free(&p);
    else
        T_CHECK(p.assign == NULL && p.n_files == 0);
    return T_OK;
}

/* 100,000 tensors, each split by rows over the ranks: rank 0 plans them
 * all.  The time is reported, not asserted. */
static int plan_should_plan_100000_tensors_quickly_collective(MPI_Comm comm,
                                                              const char *dir)
{
    enum { T = 100000 };
    int rank, size;
    hfdcp__wchunk *c = malloc(T * sizeof *c);
    char *names = malloc((size_t)T * 32);
    int64_t *dims = malloc((size_t)T * 6 * sizeof *dims);
    hfdcp__wplan p;
    double t0, t1;
    (void)dir;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    T_CHECK(c && names && dims);
    for (int t = 0; t < T; t++) {
        int64_t *d = dims + 6 * (size_t)t;
        char *nm = names + 32 * (size_t)t;
        snprintf(nm, 32, "model.layers.%d.mlp.w%d", t / 8, t % 8);
        d[0] = 4 * size;
        d[1] = 16;
        d[2] = 4 * rank;
        d[3] = 0;
        d[4] = 4;
        d[5] = 16;
        c[t] = (hfdcp__wchunk){nm, HFDCP_BF16, 2, d, d + 2, d + 4, 0, NULL};
    }
    MPI_Barrier(comm);
    t0 = MPI_Wtime();
    T_OKCALL(hfdcp__wplan_make(comm, c, T, 0, (uint64_t)50 << 20, 0, false, &p));
    t1 = MPI_Wtime();
    T_CHECK(p.n_assign == T);
    for (int t = 0; t < T; t++)
        T_CHECK(p.assign[t].write == 1);
    if (rank == 0) {
        T_CHECK(p.index.n == T);
        printf("  plan: %d tensors x %d ranks (%d chunks) planned in %.3f s "
               "(%zu files)\n",
               T, size, T * size, t1 - t0, p.n_files);
    }
    hfdcp__wplan_free(&p);
    free(c);
    free(names);
    free(dims);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"plan_should_lay_out_by_dtype_size_then_name",
     plan_should_lay_out_by_dtype_size_then_name, 1},
    {"plan_should_refuse_dtype_disagreement",
     plan_should_refuse_dtype_disagreement, 1},
    {"plan_should_refuse_shape_disagreement",
     plan_should_refuse_shape_disagreement, 1},
    {"plan_should_refuse_holes_overlaps_and_chunks_outside",
     plan_should_refuse_holes_overlaps_and_chunks_outside, 1},
    {"plan_should_write_replicated_boxes_once_balancing_bytes",
     plan_should_write_replicated_boxes_once_balancing_bytes, 1},
    {"plan_should_handle_scalars_and_empty_tensors",
     plan_should_handle_scalars_and_empty_tensors, 1},
    {"plan_should_follow_the_file_map", plan_should_follow_the_file_map, 1},
    {"plan_should_name_files_by_the_largest_index_in_the_map",
     plan_should_name_files_by_the_largest_index_in_the_map, 1},
    {"plan_should_refuse_maps_of_different_sizes",
     plan_should_refuse_maps_of_different_sizes, 1},
    {"plan_should_split_by_size_as_huggingface_does",
     plan_should_split_by_size_as_huggingface_does, 1},
    {"plan_should_split_the_fixture_as_huggingface_hub_did",
     plan_should_split_the_fixture_as_huggingface_hub_did, 1},
    {"plan_should_refuse_malformed_chunk_lists",
     plan_should_refuse_malformed_chunk_lists, 1},
    {"plan_should_give_every_rank_its_part_collective",
     plan_should_give_every_rank_its_part_collective, 1},
    {"plan_should_plan_100000_tensors_quickly_collective",
     plan_should_plan_100000_tensors_quickly_collective, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
