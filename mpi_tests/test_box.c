// ranks: 1
// timeout: 120
/*
 * test_box.c - box intersection and the tiling check (hfdcp__tiling_check):
 * exact tilings of every kind pass; holes, overlaps and boxes outside the
 * shape are caught with messages naming the tensor, the boxes and their
 * owners; a random property test checked against a brute-force count of
 * every element; and a timing of 100,000-box tilings.
 */
#include <inttypes.h>

#include "harness.h"

#define MAXD 4

/* A list of boxes owned by the test. */
typedef struct {
    int ndim;
    size_t n, cap;
    int64_t (*off)[MAXD];
    int64_t (*size)[MAXD];
    hfdcp__tile *tiles;
} boxes;

static void boxes_free(boxes *b)
{
    free(b->off);
    free(b->size);
    free(b->tiles);
    memset(b, 0, sizeof *b);
}

static int boxes_add(boxes *b, const int64_t *off, const int64_t *size)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 16;
        void *o = realloc(b->off, cap * sizeof *b->off);
        if (o == NULL)
            return -1;
        b->off = o;
        void *s = realloc(b->size, cap * sizeof *b->size);
        if (s == NULL)
            return -1;
        b->size = s;
        b->cap = cap;
    }
    for (int d = 0; d < b->ndim; d++) {
        b->off[b->n][d] = off[d];
        b->size[b->n][d] = size[d];
    }
    b->n++;
    return 0;
}

/* Builds the tile array (owner = box index) once the boxes are final. */
static int boxes_tiles(boxes *b)
{
    free(b->tiles);
    b->tiles = malloc((b->n + 1) * sizeof *b->tiles);
    if (b->tiles == NULL)
        return -1;
    for (size_t i = 0; i < b->n; i++) {
        b->tiles[i].offsets = b->off[i];
        b->tiles[i].sizes = b->size[i];
        b->tiles[i].owner = (int)i;
    }
    return 0;
}

static int check(boxes *b, const int64_t *shape)
{
    if (boxes_tiles(b) != 0)
        return HFDCP_ERR_NOMEM;
    return hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", b->ndim, shape, b->tiles,
                               b->n, "rank", NULL);
}

/* A regular grid: dimension d cut into cuts[d] nearly equal parts. */
static int make_grid(boxes *b, int ndim, const int64_t *shape,
                     const int64_t *cuts)
{
    int64_t idx[MAXD] = {0}, off[MAXD], size[MAXD];
    b->ndim = ndim;
    for (;;) {
        for (int d = 0; d < ndim; d++) {
            off[d] = shape[d] * idx[d] / cuts[d];
            size[d] = shape[d] * (idx[d] + 1) / cuts[d] - off[d];
        }
        if (boxes_add(b, off, size) != 0)
            return -1;
        int d = ndim - 1;
        while (d >= 0 && ++idx[d] == cuts[d])
            idx[d--] = 0;
        if (d < 0)
            return 0;
    }
}

static int box_should_intersect_boxes(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    int64_t ao[2] = {0, 0}, as[2] = {4, 8}, bo[2] = {2, 3}, bs[2] = {6, 2};
    int64_t oo[2], os[2];
    T_CHECK(hfdcp__box_intersect(2, ao, as, bo, bs, oo, os));
    T_CHECK(oo[0] == 2 && oo[1] == 3 && os[0] == 2 && os[1] == 2);
    /* Touching boxes do not intersect. */
    int64_t co[2] = {4, 0}, cs[2] = {1, 8};
    T_CHECK(!hfdcp__box_intersect(2, ao, as, co, cs, oo, os));
    /* A box inside another. */
    int64_t io[2] = {1, 1}, is[2] = {1, 1};
    T_CHECK(hfdcp__box_intersect(2, ao, as, io, is, oo, os));
    T_CHECK(oo[0] == 1 && oo[1] == 1 && os[0] == 1 && os[1] == 1);
    /* An empty box intersects nothing. */
    int64_t eo[2] = {1, 1}, es[2] = {0, 3};
    T_CHECK(!hfdcp__box_intersect(2, ao, as, eo, es, oo, os));
    /* Scalars: the single element. */
    T_CHECK(hfdcp__box_intersect(0, NULL, NULL, NULL, NULL, NULL, NULL));
    return T_OK;
}

static int tiling_should_accept_exact_tilings(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    static const struct {
        int ndim;
        int64_t shape[MAXD], cuts[MAXD];
    } grids[] = {
        {1, {10}, {1}},             /* one chunk */
        {1, {10}, {3}},             /* 1-D uneven */
        {2, {12, 8}, {4, 1}},       /* rows */
        {2, {12, 8}, {1, 8}},       /* columns */
        {2, {12, 8}, {3, 2}},       /* 2-D blocks */
        {2, {7, 5}, {7, 5}},        /* one element each */
        {3, {6, 6, 6}, {2, 3, 2}},  /* 3-D blocks */
        {4, {2, 3, 4, 5}, {2, 1, 2, 5}},
    };
    for (size_t g = 0; g < sizeof grids / sizeof grids[0]; g++) {
        boxes b = {0};
        T_CHECK(make_grid(&b, grids[g].ndim, grids[g].shape, grids[g].cuts) == 0);
        int rc = check(&b, grids[g].shape);
        boxes_free(&b);
        T_CHECKF(rc == HFDCP_OK, "grid %zu: %s", g, hfdcp_last_error());
    }

    /* A brick wall: rows of bricks, each row shifted (no grid). */
    {
        boxes b = {.ndim = 2};
        int64_t shape[2] = {6, 10};
        for (int64_t r = 0; r < 6; r++) {
            int64_t start = 0, cut = r % 2 ? 3 : 5;
            int64_t off[2] = {r, 0}, size[2] = {1, cut};
            T_CHECK(boxes_add(&b, off, size) == 0);
            for (start = cut; start < 10; start += 4) {
                off[1] = start;
                size[1] = start + 4 <= 10 ? 4 : 10 - start;
                T_CHECK(boxes_add(&b, off, size) == 0);
            }
        }
        int rc = check(&b, shape);
        boxes_free(&b);
        T_CHECKF(rc == HFDCP_OK, "brick wall: %s", hfdcp_last_error());
    }

    /* Chunks given in a scrambled order, with zero-volume chunks (an FSDP
     * rank holding nothing) anywhere, even on top of other chunks. */
    {
        boxes b = {.ndim = 2};
        int64_t shape[2] = {4, 4};
        int64_t o[][2] = {{2, 2}, {0, 0}, {1, 1}, {2, 0}, {0, 2}, {4, 4}};
        int64_t s[][2] = {{2, 2}, {2, 2}, {0, 3}, {2, 2}, {2, 2}, {0, 0}};
        for (int i = 0; i < 6; i++)
            T_CHECK(boxes_add(&b, o[i], s[i]) == 0);
        int rc = check(&b, shape);
        boxes_free(&b);
        T_CHECKF(rc == HFDCP_OK, "scrambled: %s", hfdcp_last_error());
    }

    /* A scalar: one chunk of no dimension. */
    {
        hfdcp__tile t = {NULL, NULL, 0};
        T_OKCALL(hfdcp__tiling_check(HFDCP_ERR_PLAN, "s", 0, NULL, &t, 1, "rank", NULL));
    }

    /* Empty tensors: zero-volume chunks, or none at all. */
    {
        int64_t shape[2] = {0, 5}, off[2] = {0, 0}, size[2] = {0, 5};
        int64_t off2[2] = {0, 2}, size2[2] = {0, 3};
        hfdcp__tile t[2] = {{off, size, 0}, {off2, size2, 1}};
        T_OKCALL(hfdcp__tiling_check(HFDCP_ERR_PLAN, "e", 2, shape, t, 2, "rank", NULL));
        T_OKCALL(hfdcp__tiling_check(HFDCP_ERR_PLAN, "e", 2, shape, NULL, 0, "rank", NULL));
    }
    return T_OK;
}

static int tiling_should_report_overlaps(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    int64_t shape[2] = {6, 8};
    int64_t o0[2] = {0, 0}, s0[2] = {4, 8}, o1[2] = {2, 0}, s1[2] = {4, 8};
    hfdcp__tile t[2] = {{o0, s0, 0}, {o1, s1, 1}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, t, 2, "rank", NULL),
             HFDCP_ERR_PLAN,
             "tensor 'w': chunks [0:4, 0:8] (rank 0) and [2:6, 0:8] (rank 1) "
             "overlap on [2:4, 0:8]");

    /* Owners named by file; the status is the caller's. */
    const char *names[] = {"a.safetensors", "b.safetensors"};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_FORMAT, "layer.w", 2, shape, t, 2, "file", names),
             HFDCP_ERR_FORMAT,
             "tensor 'layer.w': chunks [0:4, 0:8] (file 'a.safetensors') and "
             "[2:6, 0:8] (file 'b.safetensors') overlap");

    /* The same chunk twice (a replicated chunk saved by two ranks). */
    hfdcp__tile twice[3] = {{o0, s0, 5}, {o1, s1, 6}, {o0, s0, 7}};
    int64_t s2[2] = {2, 8};
    twice[1].sizes = s2;
    int64_t o2[2] = {4, 0};
    twice[1].offsets = o2;
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, twice, 3, "rank", NULL),
             HFDCP_ERR_PLAN,
             "chunks [0:4, 0:8] (rank 5) and [0:4, 0:8] (rank 7) overlap on [0:4, 0:8]");

    /* Two scalars. */
    hfdcp__tile sc[2] = {{NULL, NULL, 0}, {NULL, NULL, 3}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "s", 0, NULL, sc, 2, "rank", NULL),
             HFDCP_ERR_PLAN, "tensor 's': chunks [] (rank 0) and [] (rank 3) overlap");

    /* 3-D: three chunks tile a 2x2x2 cube; a fourth overlaps two of them. */
    int64_t shape3[3] = {2, 2, 2};
    int64_t a_o[3] = {0, 0, 0}, a_s[3] = {2, 2, 1};
    int64_t b_o[3] = {0, 0, 1}, b_s[3] = {2, 1, 1};
    int64_t c_o[3] = {0, 1, 1}, c_s[3] = {2, 1, 1};
    int64_t d_o[3] = {1, 0, 0}, d_s[3] = {1, 1, 2};
    hfdcp__tile t3[4] = {{a_o, a_s, 0}, {b_o, b_s, 1}, {c_o, c_s, 2}, {d_o, d_s, 3}};
    T_OKCALL(hfdcp__tiling_check(HFDCP_ERR_PLAN, "c", 3, shape3, t3, 3, "rank", NULL));
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "c", 3, shape3, t3, 4, "rank", NULL),
             HFDCP_ERR_PLAN, "(rank 3) overlap on [1:2, 0:1, ");
    return T_OK;
}

static int tiling_should_report_holes(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    int64_t shape[2] = {6, 8};
    int64_t o0[2] = {0, 0}, s0[2] = {5, 8};
    int64_t o1[2] = {5, 0}, s1[2] = {1, 3};
    int64_t o2[2] = {5, 4}, s2[2] = {1, 4};
    hfdcp__tile t[3] = {{o0, s0, 0}, {o1, s1, 1}, {o2, s2, 2}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, t, 3, "rank", NULL),
             HFDCP_ERR_PLAN,
             "tensor 'w': element [5, 3] is not covered by any chunk "
             "(chunks cover 47 of 48 elements)");

    /* A missing block of rows. */
    int64_t s_rows[2] = {4, 8};
    hfdcp__tile rows[1] = {{o0, s_rows, 0}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, rows, 1, "rank", NULL),
             HFDCP_ERR_PLAN, "element [4, 0] is not covered by any chunk (chunks cover 32 of 48");

    /* No chunk at all, of a matrix and of a scalar. */
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, NULL, 0, "rank", NULL),
             HFDCP_ERR_PLAN, "element [0, 0] is not covered by any chunk (chunks cover 0 of 48");
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "s", 0, NULL, NULL, 0, "rank", NULL),
             HFDCP_ERR_PLAN,
             "tensor 's': element [] is not covered by any chunk (chunks cover 0 of 1 elements)");

    /* Only zero-volume chunks for a non-empty tensor. */
    int64_t sz0[2] = {0, 8};
    hfdcp__tile z[1] = {{o0, sz0, 4}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, z, 1, "rank", NULL),
             HFDCP_ERR_PLAN, "chunks cover 0 of 48 elements");

    /* A hole in the middle of a 3-D block split. */
    boxes b = {0};
    int64_t shape3[3] = {4, 6, 8}, cuts[3] = {2, 3, 4};
    T_CHECK(make_grid(&b, 3, shape3, cuts) == 0);
    /* Box (1, 1, 2) starts at [2, 2, 4]: drop it. */
    size_t drop = 1 * 12 + 1 * 4 + 2;
    T_CHECK(b.off[drop][0] == 2 && b.off[drop][1] == 2 && b.off[drop][2] == 4);
    memmove(&b.off[drop], &b.off[drop + 1], (b.n - drop - 1) * sizeof b.off[0]);
    memmove(&b.size[drop], &b.size[drop + 1], (b.n - drop - 1) * sizeof b.size[0]);
    b.n--;
    int rc = check(&b, shape3);
    boxes_free(&b);
    T_STATUS(rc, HFDCP_ERR_PLAN,
             "tensor 'w': element [2, 2, 4] is not covered by any chunk "
             "(chunks cover 184 of 192 elements)");
    return T_OK;
}

static int tiling_should_report_chunks_outside_the_shape(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    int64_t shape[2] = {6, 8};
    int64_t o0[2] = {0, 0}, s0[2] = {6, 8};
    int64_t o1[2] = {4, 0}, s1[2] = {4, 8};
    hfdcp__tile t[2] = {{o0, s0, 0}, {o1, s1, 1}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, &t[1], 1, "rank", NULL),
             HFDCP_ERR_PLAN,
             "tensor 'w': chunk [4:8, 0:8] (rank 1) lies outside the tensor's shape [6, 8]");

    int64_t neg_o[2] = {-1, 0}, neg_s[2] = {2, -3};
    hfdcp__tile n1[1] = {{neg_o, s1, 2}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, n1, 1, "rank", NULL),
             HFDCP_ERR_PLAN, "chunk [-1:3, 0:8] (rank 2) has a negative offset or size");
    hfdcp__tile n2[1] = {{o0, neg_s, 3}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, n2, 1, "rank", NULL),
             HFDCP_ERR_PLAN, "chunk [0:2, 0:+-3] (rank 3) has a negative offset or size");

    /* offset + size beyond int64: reported, not overflowed. */
    int64_t big_o[2] = {INT64_MAX, 0}, big_s[2] = {INT64_MAX, 8};
    hfdcp__tile big[1] = {{big_o, big_s, 4}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, big, 1, "rank", NULL),
             HFDCP_ERR_PLAN, "lies outside the tensor's shape [6, 8]");

    /* An empty chunk placed past the end is outside too. */
    int64_t e_o[2] = {7, 0}, e_s[2] = {0, 8};
    hfdcp__tile e[2] = {{o0, s0, 0}, {e_o, e_s, 9}};
    T_STATUS(hfdcp__tiling_check(HFDCP_ERR_PLAN, "w", 2, shape, e, 2, "rank", NULL),
             HFDCP_ERR_PLAN, "chunk [7:7, 0:8] (rank 9) lies outside");
    return T_OK;
}

/* ---- random property test ---- */

/* Cuts the box [off, off+size) at random into pieces (guillotine cuts:
 * irregular, not a grid). */
static int random_split(boxes *b, uint64_t *rng, const int64_t *off,
                        const int64_t *size, int depth)
{
    int d = (int)(hfdcp_test_rand(rng) % (uint64_t)b->ndim);
    if (depth == 0 || size[d] < 2 || hfdcp_test_rand(rng) % 5 == 0)
        return boxes_add(b, off, size);
    int64_t cut = 1 + (int64_t)(hfdcp_test_rand(rng) % (uint64_t)(size[d] - 1));
    int64_t o2[MAXD], s1[MAXD], s2[MAXD];
    for (int i = 0; i < b->ndim; i++) {
        o2[i] = off[i];
        s1[i] = s2[i] = size[i];
    }
    s1[d] = cut;
    o2[d] = off[d] + cut;
    s2[d] = size[d] - cut;
    if (random_split(b, rng, off, s1, depth - 1) != 0)
        return -1;
    return random_split(b, rng, o2, s2, depth - 1);
}

/* How many boxes cover each element (dense, row-major). */
static int *coverage(const boxes *b, const int64_t *shape, int64_t *numel)
{
    int64_t n = 1;
    for (int d = 0; d < b->ndim; d++)
        n *= shape[d];
    int *c = calloc((size_t)n + 1, sizeof *c);
    if (c == NULL)
        return NULL;
    for (size_t i = 0; i < b->n; i++) {
        int64_t idx[MAXD], vol = 1;
        for (int d = 0; d < b->ndim; d++)
            vol *= b->size[i][d];
        for (int64_t k = 0; k < vol; k++) {
            int64_t r = k, lin = 0;
            for (int d = b->ndim - 1; d >= 0; d--) {
                idx[d] = b->off[i][d] + r % b->size[i][d];
                r /= b->size[i][d];
            }
            for (int d = 0; d < b->ndim; d++)
                lin = lin * shape[d] + idx[d];
            c[lin]++;
        }
    }
    *numel = n;
    return c;
}

/* Parses "(rank N)" occurrences of the message. */
static int owners_in_message(int *out, int max)
{
    const char *p = hfdcp_last_error();
    int n = 0;
    while (n < max && (p = strstr(p, "(rank ")) != NULL) {
        out[n++] = atoi(p + 6);
        p += 6;
    }
    return n;
}

/* Checks the outcome of the tiling check against a brute-force count:
 * OK iff every element is covered once; an overlap names two boxes that
 * share an element; a hole names an element no box covers. */
static int check_against_brute_force(boxes *b, const int64_t *shape, int seed)
{
    int64_t numel = 0, covered = 0;
    int *c = coverage(b, shape, &numel);
    int multiple = 0, holes = 0;
    T_CHECK(c != NULL);
    for (int64_t i = 0; i < numel; i++) {
        multiple += c[i] > 1;
        holes += c[i] == 0;
    }
    for (size_t i = 0; i < b->n; i++) {
        int64_t v = 1;
        for (int d = 0; d < b->ndim; d++)
            v *= b->size[i][d];
        covered += v;
    }
    int rc = check(b, shape);
    const char *msg = hfdcp_last_error();
    if (multiple == 0 && holes == 0) {
        free(c);
        T_CHECKF(rc == HFDCP_OK, "seed %d: %s", seed, msg);
        return T_OK;
    }
    T_CHECKF(rc == HFDCP_ERR_PLAN, "seed %d: got %s for %d overlaps, %d holes",
             seed, hfdcp_status_name(rc), multiple, holes);
    if (multiple) {
        int who[2];
        int64_t oo[MAXD], os[MAXD];
        T_CHECKF(strstr(msg, "overlap on") != NULL, "seed %d: %s", seed, msg);
        T_CHECKF(owners_in_message(who, 2) == 2, "seed %d: %s", seed, msg);
        T_CHECKF(hfdcp__box_intersect(b->ndim, b->off[who[0]], b->size[who[0]],
                                      b->off[who[1]], b->size[who[1]], oo, os),
                 "seed %d: named boxes do not overlap: %s", seed, msg);
    } else {
        /* "element [i, j, ...] is not covered ... (chunks cover X of Y elements)" */
        const char *p = strstr(msg, "element [");
        int64_t at[MAXD], lin = 0;
        T_CHECKF(p != NULL, "seed %d: %s", seed, msg);
        p += 9;
        for (int d = 0; d < b->ndim; d++) {
            char *end;
            at[d] = strtoll(p, &end, 10);
            p = end + (d + 1 < b->ndim ? 2 : 0);
            T_CHECK(at[d] >= 0 && at[d] < shape[d]);
            lin = lin * shape[d] + at[d];
        }
        T_CHECKF(c[lin] == 0, "seed %d: element reported is covered: %s", seed, msg);
        char want[96];
        snprintf(want, sizeof want, "(chunks cover %" PRId64 " of %" PRId64 " elements)",
                 covered, numel);
        T_CHECKF(strstr(msg, want) != NULL, "seed %d: %s lacks %s", seed, msg, want);
    }
    free(c);
    return T_OK;
}

static int tiling_should_agree_with_brute_force_on_random_splits(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    int counts[4] = {0};
    for (int seed = 1; seed <= 1500; seed++) {
        uint64_t rng = (uint64_t)seed * 7919;
        boxes b = {0};
        int64_t shape[MAXD], zero[MAXD] = {0};
        b.ndim = 1 + (int)(hfdcp_test_rand(&rng) % MAXD);
        for (int d = 0; d < b.ndim; d++)
            shape[d] = 1 + (int64_t)(hfdcp_test_rand(&rng) % (b.ndim <= 2 ? 12 : 6));
        if (seed % 2) {
            int64_t cuts[MAXD];
            for (int d = 0; d < b.ndim; d++)
                cuts[d] = 1 + (int64_t)(hfdcp_test_rand(&rng) % (uint64_t)shape[d]);
            T_CHECK(make_grid(&b, b.ndim, shape, cuts) == 0);
        } else {
            T_CHECK(random_split(&b, &rng, zero, shape, 8) == 0);
        }
        int kind = (int)(hfdcp_test_rand(&rng) % 4);
        size_t victim = (size_t)(hfdcp_test_rand(&rng) % b.n);
        int d = (int)(hfdcp_test_rand(&rng) % (uint64_t)b.ndim);
        if (kind == 1 && b.n > 1) {
            /* Remove one box. */
            memmove(&b.off[victim], &b.off[victim + 1], (b.n - victim - 1) * sizeof b.off[0]);
            memmove(&b.size[victim], &b.size[victim + 1], (b.n - victim - 1) * sizeof b.size[0]);
            b.n--;
        } else if (kind == 2) {
            /* Enlarge one box inside the shape (down or up). */
            if (b.off[victim][d] > 0) {
                b.off[victim][d]--;
                b.size[victim][d]++;
            } else if (b.off[victim][d] + b.size[victim][d] < shape[d]) {
                b.size[victim][d]++;
            }
        } else if (kind == 3) {
            /* Shrink one box. */
            if (b.size[victim][d] > 0)
                b.size[victim][d]--;
        }
        counts[kind]++;
        int rc = check_against_brute_force(&b, shape, seed);
        boxes_free(&b);
        if (rc != T_OK)
            return rc;
    }
    T_CHECK(counts[0] > 100 && counts[1] > 100 && counts[2] > 100 && counts[3] > 100);
    return T_OK;
}

/* ---- scale ---- */

static int time_one(const char *what, boxes *b, const int64_t *shape, int want)
{
    double t0 = MPI_Wtime();
    int rc = check(b, shape);
    double t1 = MPI_Wtime();
    printf("  %-44s %7zu boxes: %.3f s\n", what, b->n, t1 - t0);
    fflush(stdout);
    T_CHECKF(rc == want, "%s: %s", what, hfdcp_last_error());
    return T_OK;
}

static int tiling_should_check_100000_boxes(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    static const struct {
        const char *what;
        int ndim;
        int64_t shape[MAXD], cuts[MAXD];
    } grids[] = {
        {"rows", 1, {1000000}, {100000}},
        {"rows of a matrix", 2, {100000, 64}, {100000, 1}},
        {"columns of a matrix", 2, {64, 100000}, {1, 100000}},
        {"2-D blocks", 2, {40000, 25000}, {400, 250}},
        {"3-D blocks", 3, {400, 500, 500}, {40, 50, 50}},
    };
    for (size_t g = 0; g < sizeof grids / sizeof grids[0]; g++) {
        boxes b = {0};
        T_CHECK(make_grid(&b, grids[g].ndim, grids[g].shape, grids[g].cuts) == 0);
        T_CHECK(b.n == 100000);
        int rc = time_one(grids[g].what, &b, grids[g].shape, HFDCP_OK);
        if (rc == T_OK) {
            /* The error paths at the same scale: drop a box in the middle,
             * then duplicate one. */
            size_t mid = b.n / 2 + 17;
            int64_t keep_o[MAXD], keep_s[MAXD];
            memcpy(keep_o, b.off[mid], sizeof keep_o);
            memcpy(keep_s, b.size[mid], sizeof keep_s);
            b.size[mid][0] = 0;
            char what[96];
            snprintf(what, sizeof what, "%s with a hole", grids[g].what);
            rc = time_one(what, &b, grids[g].shape, HFDCP_ERR_PLAN);
            memcpy(b.size[mid], keep_s, sizeof keep_s);
            if (rc == T_OK) {
                T_CHECK(boxes_add(&b, keep_o, keep_s) == 0);
                snprintf(what, sizeof what, "%s with an overlap", grids[g].what);
                rc = time_one(what, &b, grids[g].shape, HFDCP_ERR_PLAN);
            }
        }
        boxes_free(&b);
        if (rc != T_OK)
            return rc;
    }

    /* A brick wall of 100,000 bricks: every row shifted by half a brick. */
    boxes b = {.ndim = 2};
    int64_t shape[2] = {1000, 10000};
    for (int64_t r = 0; r < 1000; r++) {
        int64_t start = 0, w = 100;
        int64_t off[2] = {r, 0}, size[2] = {1, r % 2 ? w / 2 : w};
        T_CHECK(boxes_add(&b, off, size) == 0);
        for (start = size[1]; start < shape[1]; start += w) {
            off[1] = start;
            size[1] = start + w <= shape[1] ? w : shape[1] - start;
            T_CHECK(boxes_add(&b, off, size) == 0);
        }
    }
    int rc = time_one("brick wall", &b, shape, HFDCP_OK);
    boxes_free(&b);
    if (rc != T_OK)
        return rc;

    /* 100 columns, each cut into 1,000 pieces at its own random rows: no
     * two columns share a row boundary (sweeping the rows first would see
     * 100 chunks in each of ~100,000 slabs). */
    boxes st = {.ndim = 2};
    int64_t st_shape[2] = {1000000, 100 * 8};
    uint64_t rng = 42;
    for (int64_t c = 0; c < 100; c++) {
        int64_t row = 0;
        for (int64_t k = 0; k < 1000; k++) {
            int64_t h = k == 999 ? st_shape[0] - row
                                 : 1 + (int64_t)(hfdcp_test_rand(&rng) % 1000);
            int64_t off[2] = {row, c * 8}, size[2] = {h, 8};
            T_CHECK(boxes_add(&st, off, size) == 0);
            row += h;
        }
        T_CHECK(row == st_shape[0]);
    }
    rc = time_one("staggered columns", &st, st_shape, HFDCP_OK);
    boxes_free(&st);
    return rc;
}

static const hfdcp_test_case cases[] = {
    {"box_should_intersect_boxes", box_should_intersect_boxes, 1},
    {"tiling_should_accept_exact_tilings", tiling_should_accept_exact_tilings, 1},
    {"tiling_should_report_overlaps", tiling_should_report_overlaps, 1},
    {"tiling_should_report_holes", tiling_should_report_holes, 1},
    {"tiling_should_report_chunks_outside_the_shape", tiling_should_report_chunks_outside_the_shape, 1},
    {"tiling_should_agree_with_brute_force_on_random_splits",
     tiling_should_agree_with_brute_force_on_random_splits, 1},
    {"tiling_should_check_100000_boxes", tiling_should_check_100000_boxes, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
