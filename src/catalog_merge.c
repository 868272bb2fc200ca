/*
 * catalog_merge.c - step 3 of the catalog (see catalog.c): the parsed
 * headers of every file into the tensors of one checkpoint.  The index is
 * checked against the files: every name in the file it names, and no
 * tensor in another file than the one it names, are rules; every tensor
 * of the files in the index, and total_size, are the index's bookkeeping,
 * which no loader reads: warnings, for verify only.  Names are renamed by
 * the key map (collisions refused); the entries of every file are grouped
 * by name; the DCP shards of a tensor are joined at their saved offsets (a
 * box saved by several files, a replicated tensor, is read from the first
 * of them), and must tile it exactly; chunks and tensors are sorted.
 *
 * The merge is deterministic: on every rank of an MPI job it builds the
 * same catalog or finds the same first problem.  Problems are recorded
 * (verify) or returned (open) through the list of problems.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_internal.h"

/* The status of a problem between the shards of one tensor. */
static int shard_status(const merger *m)
{
    return m->shards_only ? HFDCP_ERR_PLAN : HFDCP_ERR_FORMAT;
}

static bool readable(const merger *m, size_t file)
{
    return m->readable == NULL || m->readable[file];
}

static const hfdcp__entry *occ_entry(const merger *m, const occurrence *o)
{
    return &m->files[o->file].hdr.entries[o->entry];
}

/* Groups in order of their stored names, so that the first problem found
 * does not depend on the order of the files' entries. */
static int cmp_group(const void *a, const void *b)
{
    return strcmp(((const group *)a)->stored, ((const group *)b)->stored);
}

/* Groups every entry of every readable file by stored name. */
static int group_names(merger *m)
{
    size_t total = 0, *fill = NULL;
    int rc = HFDCP_OK;

    for (size_t f = 0; f < m->ls->n; f++)
        if (readable(m, f))
            total += m->files[f].hdr.n_entries;
    if ((m->group_of = hfdcp__strmap_new()) == NULL ||
        (m->groups = malloc((total + 1) * sizeof *m->groups)) == NULL ||
        (m->occ = malloc((total + 1) * sizeof *m->occ)) == NULL)
        return hfdcp__nomem("the tensor table");
    /* Count the occurrences of each name, then place them. */
    for (size_t f = 0; f < m->ls->n; f++) {
        if (!readable(m, f))
            continue;
        for (size_t e = 0; e < m->files[f].hdr.n_entries; e++) {
            const char *name = m->files[f].hdr.entries[e].name;
            size_t g;
            if (hfdcp__strmap_get(m->group_of, name, &g)) {
                m->groups[g].n++;
                continue;
            }
            HFDCP_TRY(hfdcp__strmap_put(m->group_of, name, m->n_groups, NULL));
            m->groups[m->n_groups].stored = name;
            m->groups[m->n_groups].n = 1;
            m->n_groups++;
        }
    }
    if ((fill = calloc(m->n_groups + 1, sizeof *fill)) == NULL)
        return hfdcp__nomem("the tensor table");
    for (size_t g = 0, at = 0; g < m->n_groups; g++) {
        m->groups[g].first = at;
        at += m->groups[g].n;
    }
    /* Placed in file order; then the groups are sorted by name and the
     * name -> group map rebuilt. */
    for (size_t f = 0; f < m->ls->n; f++) {
        if (!readable(m, f))
            continue;
        for (size_t e = 0; e < m->files[f].hdr.n_entries; e++) {
            size_t g;
            hfdcp__strmap_get(m->group_of, m->files[f].hdr.entries[e].name, &g);
            m->occ[m->groups[g].first + fill[g]++] = (occurrence){f, e};
        }
    }
    free(fill);
    qsort(m->groups, m->n_groups, sizeof *m->groups, cmp_group);
    for (size_t g = 0; g < m->n_groups; g++)
        HFDCP_TRY(hfdcp__strmap_put(m->group_of, m->groups[g].stored, g, NULL));
    return rc;
}

/* Index of file `name` in the listing, or SIZE_MAX. */
static size_t find_file(const listing *ls, const char *name)
{
    size_t lo = 0, hi = ls->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ls->names[mid], name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

/* Every name of the index in the file the index names (a file that is
 * missing or could not be read is already reported). */
static int check_index_names(merger *m)
{
    const listing *ls = m->ls;
    const hfdcp__index *ix = &ls->ix;

    for (size_t i = 0; i < ix->n; i++) {
        size_t f = find_file(ls, ix->files[i]), g;
        bool held = false;
        if (f == SIZE_MAX || !readable(m, f))
            continue; /* already reported */
        if (hfdcp__strmap_get(m->group_of, ix->names[i], &g))
            for (size_t k = 0; k < m->groups[g].n && !held; k++)
                held = m->occ[m->groups[g].first + k].file == f;
        if (!held) {
            int rc = hfdcp__error(HFDCP_ERR_FORMAT,
                                  "index '%s' maps tensor '%s' to file "
                                  "'%s', which does not hold it",
                                  ls->index_path, ix->names[i],
                                  ix->files[i]);
            HFDCP_TRY(hfdcp__problems_soft(m->p, rc));
        }
    }
    return HFDCP_OK;
}

/* The index's bookkeeping, which no loader reads: a metadata.total_size
 * equal to the tensors' `bytes` (known when `all_read`).  Warnings. */
static int check_total_size(merger *m, uint64_t bytes, bool all_read)
{
    const listing *ls = m->ls;

    if (ls->index_missing != NULL)
        return hfdcp__problems_warn(m->p, HFDCP_ERR_FORMAT, "%s%s",
                                    ls->index_path, ls->index_missing);
    if (all_read && bytes != ls->ix.total_size)
        return hfdcp__problems_warn(m->p, HFDCP_ERR_FORMAT,
                                    "index '%s': metadata.total_size is "
                                    "%" PRIu64 " but the tensors of its "
                                    "files hold %" PRIu64 " bytes",
                                    ls->index_path, ls->ix.total_size,
                                    bytes);
    return HFDCP_OK;
}

/* The index against the files: every name in the file the index names,
 * no tensor of the files mapped to another file; a tensor of the files
 * missing from the index (the loaders read it with the rest of its file)
 * and total_size are warnings. */
static int check_index(merger *m)
{
    const listing *ls = m->ls;
    const hfdcp__index *ix = &ls->ix;
    hfdcp__strmap *where = hfdcp__strmap_new();
    uint64_t bytes = 0;
    bool all_read = true;
    int rc = HFDCP_OK;

    if (where == NULL)
        return hfdcp__nomem("the index table");
    for (size_t i = 0; i < ix->n; i++)
        HFDCP_CHECK(hfdcp__strmap_put(where, ix->names[i], i, NULL));
    HFDCP_CHECK(check_index_names(m));

    for (size_t f = 0; f < ls->n; f++) {
        const hfdcp__header *h = &m->files[f].hdr;
        if (!readable(m, f)) {
            all_read = false;
            continue;
        }
        if (!hfdcp__add_u64(bytes, h->data_size, &bytes)) {
            rc = hfdcp__error(HFDCP_ERR_FORMAT,
                              "the files of '%s' hold more than 2^64 bytes",
                              ls->index_path);
            HFDCP_CHECK(hfdcp__problems_hard(m->p, rc));
        }
        for (size_t e = 0; e < h->n_entries; e++) {
            const char *name = h->entries[e].name;
            size_t i;
            if (!hfdcp__strmap_get(where, name, &i)) {
                HFDCP_CHECK(hfdcp__problems_warn(
                    m->p, HFDCP_ERR_FORMAT,
                    "tensor '%s' of file '%s' is not in the index '%s'",
                    name, ls->names[f], ls->index_path));
                continue;
            }
            if (strcmp(ix->files[i], ls->names[f]) == 0)
                continue;
            rc = hfdcp__error(HFDCP_ERR_FORMAT,
                              "tensor '%s' is in file '%s' but the index "
                              "'%s' maps it to file '%s'",
                              name, ls->names[f], ls->index_path,
                              ix->files[i]);
            HFDCP_CHECK(hfdcp__problems_soft(m->p, rc));
        }
    }
    rc = check_total_size(m, bytes, all_read);
cleanup:
    hfdcp__strmap_free(where);
    return rc;
}

void hfdcp__tensor_clear(hfdcp__tensor *t)
{
    for (size_t c = 0; c < t->n_chunks; c++) {
        free(t->chunks[c].offsets);
        free(t->chunks[c].sizes);
    }
    free(t->chunks);
    free(t->shape);
    free(t->name);
    memset(t, 0, sizeof *t);
}

/* -1, 0 or 1 as a[0..n) compares with b[0..n), dimension by dimension. */
static int cmp_dims(const int64_t *a, const int64_t *b, int n)
{
    for (int d = 0; d < n; d++)
        if (a[d] != b[d])
            return a[d] < b[d] ? -1 : 1;
    return 0;
}

/* A chunk with what its comparisons need (qsort has no context): ndim,
 * and k, its place among the tensor's chunks (file order until sorted). */
typedef struct {
    hfdcp__chunk c;
    int ndim;
    size_t k;
} sortable_chunk;

/* Row-major order of the offsets, then by file. */
static int cmp_chunk(const void *a, const void *b)
{
    const sortable_chunk *x = a, *y = b;
    int c = cmp_dims(x->c.offsets, y->c.offsets, x->ndim);
    if (c != 0)
        return c;
    if (x->c.file != y->c.file)
        return x->c.file < y->c.file ? -1 : 1;
    return (x->c.file_offset > y->c.file_offset) -
           (x->c.file_offset < y->c.file_offset);
}

/* Equal boxes together (offsets, then sizes), each run in file order. */
static int cmp_box(const void *a, const void *b)
{
    const sortable_chunk *x = a, *y = b;
    int c = cmp_dims(x->c.offsets, y->c.offsets, x->ndim);
    if (c == 0)
        c = cmp_dims(x->c.sizes, y->c.sizes, x->ndim);
    return c != 0 ? c : (x->k > y->k) - (x->k < y->k);
}

/* t's chunks sorted by `cmp` into *out (malloc'd; t->n_chunks >= 1). */
static int sorted_chunks(const hfdcp__tensor *t,
                         int (*cmp)(const void *, const void *),
                         sortable_chunk **out)
{
    sortable_chunk *s = malloc(t->n_chunks * sizeof *s);

    if (s == NULL)
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "out of memory sorting the chunks of '%s'",
                            t->name);
    for (size_t i = 0; i < t->n_chunks; i++)
        s[i] = (sortable_chunk){t->chunks[i], t->ndim, i};
    qsort(s, t->n_chunks, sizeof *s, cmp);
    *out = s;
    return HFDCP_OK;
}

/* Chunks in row-major order of their offsets, then by file. */
static int sort_chunks(hfdcp__tensor *t)
{
    sortable_chunk *s;

    if (t->n_chunks < 2)
        return HFDCP_OK;
    HFDCP_TRY(sorted_chunks(t, cmp_chunk, &s));
    for (size_t i = 0; i < t->n_chunks; i++)
        t->chunks[i] = s[i].c;
    free(s);
    return HFDCP_OK;
}

/* true when the box of chunk c holds no element. */
static bool empty_box(const hfdcp__chunk *c, int ndim)
{
    for (int d = 0; d < ndim; d++)
        if (c->sizes[d] == 0)
            return true;
    return false;
}

/* Note: DCP saves a replicated tensor once per rank unless its planner
 * deduplicates it, and PyTorch's reader reads one of the copies.  Drops
 * every chunk whose box (offsets and sizes) is that of a chunk of an
 * earlier file, so that the first copy in file order is read whatever the
 * number of ranks; the others keep their order.  Empty boxes overlap
 * nothing and stay; a box that overlaps another only in part is left to
 * the tiling check. */
static int drop_replicas(hfdcp__tensor *t)
{
    sortable_chunk *s;
    bool *drop;
    size_t kept = 0;

    if (t->n_chunks < 2)
        return HFDCP_OK;
    if ((drop = calloc(t->n_chunks, sizeof *drop)) == NULL)
        return hfdcp__error(HFDCP_ERR_NOMEM, "out of memory for tensor '%s'",
                            t->name);
    if (sorted_chunks(t, cmp_box, &s) != HFDCP_OK) {
        free(drop);
        return HFDCP_ERR_NOMEM;
    }
    for (size_t i = 1; i < t->n_chunks; i++)
        drop[s[i].k] = !empty_box(&s[i].c, t->ndim) &&
                       cmp_dims(s[i - 1].c.offsets, s[i].c.offsets,
                                t->ndim) == 0 &&
                       cmp_dims(s[i - 1].c.sizes, s[i].c.sizes, t->ndim) == 0;
    for (size_t k = 0; k < t->n_chunks; k++) {
        if (!drop[k]) {
            t->chunks[kept++] = t->chunks[k];
            continue;
        }
        free(t->chunks[k].offsets);
        free(t->chunks[k].sizes);
    }
    t->n_chunks = kept;
    free(s);
    free(drop);
    return HFDCP_OK;
}

/* Checks that the occurrences of group g may form one tensor: in one file,
 * or all in DCP shards agreeing on dtype and ndim.  *sharded tells which. */
static int check_group(const merger *m, const group *g, bool *sharded)
{
    const occurrence *occ = &m->occ[g->first];
    const hfdcp__entry *e0 = occ_entry(m, &occ[0]);
    const char *const *names = m->file_names;

    *sharded = true;
    for (size_t k = 0; k < g->n; k++)
        *sharded = *sharded && m->files[occ[k].file].hdr.sharded;
    if (g->n > 1 && !*sharded) {
        /* Outside DCP shards a name must be in one file only.  Name the
         * first file that is not a shard and the first other file, in file
         * order (occurrences are in file order). */
        size_t a = 0, b;
        while (m->files[occ[a].file].hdr.sharded)
            a++;
        b = a == 0 ? 1 : 0;
        return hfdcp__error(HFDCP_ERR_FORMAT,
                            "tensor '%s' is in more than one file: '%s' and "
                            "'%s'",
                            g->stored, names[occ[a < b ? a : b].file],
                            names[occ[a < b ? b : a].file]);
    }
    for (size_t k = 1; k < g->n; k++) {
        const hfdcp__entry *e = occ_entry(m, &occ[k]);
        if (e->dtype != e0->dtype)
            return hfdcp__error(shard_status(m),
                                "tensor '%s': its chunks disagree on the "
                                "dtype: %s in file '%s', %s in file '%s'",
                                g->stored, hfdcp_dtype_name(e0->dtype),
                                names[occ[0].file], hfdcp_dtype_name(e->dtype),
                                names[occ[k].file]);
        if (e->ndim != e0->ndim)
            return hfdcp__error(shard_status(m),
                                "tensor '%s': its chunks disagree on the "
                                "number of dimensions: %d in file '%s', %d in "
                                "file '%s'",
                                g->stored, e0->ndim, names[occ[0].file],
                                e->ndim, names[occ[k].file]);
    }
    return HFDCP_OK;
}

/* "[4, 3]" */
static void format_dims(char *buf, size_t size, int ndim, const int64_t *d)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%" PRId64,
                                 i ? ", " : "", d[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* The global shape the shard files of group g declare (hfdcp_global_shapes)
 * into *decl, NULL when none does; every file that declares it must give
 * the same. */
static int declared_shape(const merger *m, const group *g, int ndim,
                          const int64_t **decl)
{
    const occurrence *occ = &m->occ[g->first];
    size_t first = 0;

    *decl = NULL;
    for (size_t k = 0; m->global_shapes && k < g->n; k++) {
        int64_t **gs = m->global_shapes[occ[k].file];
        const int64_t *d = gs ? gs[occ[k].entry] : NULL;
        char a[256], b[256];
        if (d == NULL)
            continue;
        if (*decl == NULL) {
            *decl = d;
            first = k;
            continue;
        }
        if (ndim == 0 || memcmp(d, *decl, (size_t)ndim * sizeof *d) == 0)
            continue;
        format_dims(a, sizeof a, ndim, *decl);
        format_dims(b, sizeof b, ndim, d);
        return hfdcp__error(shard_status(m),
                            "tensor '%s': its shard files declare different "
                            "global shapes (" HFDCP_GLOBAL_SHAPES_KEY "): %s "
                            "in file '%s', %s in file '%s'",
                            g->stored, a, m->file_names[occ[first].file], b,
                            m->file_names[occ[k].file]);
    }
    return HFDCP_OK;
}

/* The chunks of t from group g (offsets from DCP_SHARDING_INFO, else
 * zeros), and t's global shape: the max over chunks of offset + size, and
 * over the shape its shard files declare, *decl (NULL if none).  Note:
 * with a declared shape, chunks that do not reach its end leave a hole
 * that the tiling check reports (the shard files of the last rank are
 * missing, say); a chunk past it is refused after that check
 * (check_declared), so that overlaps are named as without one. */
static int fill_chunks(const merger *m, const group *g, hfdcp__tensor *t,
                       const int64_t **decl)
{
    const occurrence *occ = &m->occ[g->first];

    HFDCP_TRY(declared_shape(m, g, t->ndim, decl));

    if ((t->chunks = calloc(g->n, sizeof *t->chunks)) == NULL ||
        (t->ndim > 0 &&
         (t->shape = calloc((size_t)t->ndim, sizeof *t->shape)) == NULL))
        return hfdcp__error(HFDCP_ERR_NOMEM, "out of memory for tensor '%s'",
                            g->stored);
    for (size_t k = 0; k < g->n; k++) {
        const hfdcp__entry *e = occ_entry(m, &occ[k]);
        hfdcp__chunk *c = &t->chunks[k];
        t->n_chunks = k + 1;
        c->file = (int)occ[k].file;
        c->file_offset = m->files[occ[k].file].data_start + e->begin;
        if (t->ndim == 0)
            continue;
        if ((c->offsets = calloc((size_t)t->ndim, sizeof *c->offsets)) ==
                NULL ||
            (c->sizes = malloc((size_t)t->ndim * sizeof *c->sizes)) == NULL)
            return hfdcp__error(HFDCP_ERR_NOMEM,
                                "out of memory for tensor '%s'", g->stored);
        for (int d = 0; d < t->ndim; d++) {
            int64_t end;
            c->sizes[d] = e->shape[d];
            if (e->offsets)
                c->offsets[d] = e->offsets[d];
            if (c->offsets[d] < 0 ||
                __builtin_add_overflow(c->offsets[d], c->sizes[d], &end))
                return hfdcp__error(HFDCP_ERR_FORMAT,
                                    "tensor '%s' in file '%s': saved offset "
                                    "%" PRId64 " of dimension %d is out of "
                                    "range",
                                    g->stored, m->file_names[occ[k].file],
                                    c->offsets[d], d);
            if (end > t->shape[d])
                t->shape[d] = end;
        }
    }
    for (int d = 0; *decl != NULL && d < t->ndim; d++)
        if ((*decl)[d] > t->shape[d])
            t->shape[d] = (*decl)[d];
    return HFDCP_OK;
}

/* No chunk of t may reach past the declared shape `decl` (NULL: none). */
static int check_declared(const merger *m, const group *g,
                          const hfdcp__tensor *t, const int64_t *decl)
{
    for (size_t k = 0; decl != NULL && k < t->n_chunks; k++) {
        const hfdcp__chunk *c = &t->chunks[k];
        for (int d = 0; d < t->ndim; d++) {
            char box[256], shape[256];
            if (c->offsets[d] + c->sizes[d] <= decl[d])
                continue;
            hfdcp__format_box(box, sizeof box, t->ndim, c->offsets,
                              c->sizes);
            format_dims(shape, sizeof shape, t->ndim, decl);
            return hfdcp__error(shard_status(m),
                                "tensor '%s': the chunk %s in file '%s' "
                                "lies outside the declared global shape %s "
                                "(" HFDCP_GLOBAL_SHAPES_KEY ")",
                                g->stored, box, m->file_names[c->file],
                                shape);
        }
    }
    return HFDCP_OK;
}

/* DCP shards must tile the tensor exactly. */
static int check_tiling(const merger *m, const group *g,
                        const hfdcp__tensor *t)
{
    hfdcp__tile *tiles = malloc(t->n_chunks * sizeof *tiles + 1);
    int rc;

    if (tiles == NULL)
        return hfdcp__error(HFDCP_ERR_NOMEM, "out of memory for tensor '%s'",
                            g->stored);
    for (size_t k = 0; k < t->n_chunks; k++)
        tiles[k] = (hfdcp__tile){t->chunks[k].offsets, t->chunks[k].sizes,
                                 t->chunks[k].file};
    rc = hfdcp__tiling_check(shard_status(m), g->stored, t->ndim, t->shape,
                             tiles, t->n_chunks, "file", m->file_names);
    free(tiles);
    return rc;
}

/* Builds tensor `t` (named `name`, taken over) from group g.  A problem is
 * recorded (verify: HFDCP_OK is returned and *made is false) or returned
 * (open). */
static int build_tensor(merger *m, const group *g, char *name,
                        hfdcp__tensor *t, bool *made)
{
    const hfdcp__entry *e0 = occ_entry(m, &m->occ[g->first]);
    const int64_t *decl = NULL;
    char what[600];
    bool sharded;
    int rc;

    *made = false;
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = e0->dtype;
    t->ndim = e0->ndim;
    snprintf(what, sizeof what, "tensor '%s'", g->stored);
    if ((rc = check_group(m, g, &sharded)) == HFDCP_OK &&
        (rc = fill_chunks(m, g, t, &decl)) == HFDCP_OK &&
        (!sharded || ((rc = drop_replicas(t)) == HFDCP_OK &&
                      (rc = check_tiling(m, g, t)) == HFDCP_OK &&
                      (rc = check_declared(m, g, t, decl)) == HFDCP_OK)) &&
        (rc = hfdcp__tensor_bytes(t->dtype, t->ndim, t->shape, what,
                                  &t->nbytes)) == HFDCP_OK &&
        (rc = sort_chunks(t)) == HFDCP_OK) {
        *made = true;
        return HFDCP_OK;
    }
    hfdcp__tensor_clear(t);
    return hfdcp__problems_soft(m->p, rc);
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const hfdcp__tensor *)a)->name,
                  ((const hfdcp__tensor *)b)->name);
}

/* The file names the tiling check wants; with shards_only, every file
 * must be a DCP shard file. */
static int check_files(merger *m)
{
    const listing *ls = m->ls;

    for (size_t f = 0; f < ls->n; f++) {
        m->file_names[f] = ls->names[f];
        if (m->shards_only && !m->files[f].hdr.sharded)
            return hfdcp__error(HFDCP_ERR_FORMAT,
                                "file '%s' has no DCP_SHARDING_INFO in its "
                                "__metadata__: it is not a per-rank shard "
                                "file, and consolidation reads only those",
                                ls->paths[f]);
    }
    return HFDCP_OK;
}

/* The declared global shapes of every readable shard file (already
 * checked when its header was parsed). */
static int read_global_shapes(merger *m)
{
    size_t n = m->ls->n;

    if ((m->global_shapes = calloc(n + 1, sizeof *m->global_shapes)) ==
        NULL)
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "out of memory for the global shapes");
    for (size_t f = 0; f < n; f++)
        if (readable(m, f) && m->files[f].hdr.sharded)
            HFDCP_TRY(hfdcp__header_global_shapes(
                &m->files[f].hdr, m->ls->paths[f], &m->global_shapes[f]));
    return HFDCP_OK;
}

/* The new name of group g into *name (malloc'd): the key map's, else the
 * stored name. */
static int rename_group(const merger *m, const group *g, char **name)
{
    if (m->km != NULL)
        return hfdcp__key_map_rename(m->km, g->stored, name);
    if ((*name = hfdcp__strdup(g->stored)) == NULL)
        return hfdcp__error(HFDCP_ERR_NOMEM, "out of memory renaming '%s'",
                            g->stored);
    return HFDCP_OK;
}

/* Builds a tensor of c->tensors from every group, under its new name
 * (`renamed`: new name -> group).  Two groups renamed alike are a problem,
 * and so is a group that cannot form a tensor: recorded (verify) or
 * returned (open). */
static int build_tensors(merger *m, hfdcp__strmap *renamed, hfdcp__catalog *c)
{
    const listing *ls = m->ls;
    int rc;

    for (size_t g = 0; g < m->n_groups; g++) {
        const group *gr = &m->groups[g];
        char *name = NULL;
        size_t other;
        bool made;

        HFDCP_TRY(rename_group(m, gr, &name));
        if (hfdcp__strmap_get(renamed, name, &other)) {
            const group *og = &m->groups[other];
            rc = hfdcp__error(HFDCP_ERR_FORMAT,
                              "tensors '%s' (file '%s') and '%s' (file '%s') "
                              "are both renamed to '%s'",
                              og->stored, ls->names[m->occ[og->first].file],
                              gr->stored, ls->names[m->occ[gr->first].file],
                              name);
            free(name);
            HFDCP_TRY(hfdcp__problems_soft(m->p, rc));
            continue;
        }
        if ((rc = hfdcp__strmap_put(renamed, name, g, NULL)) != HFDCP_OK) {
            free(name);
            return rc;
        }
        HFDCP_TRY(build_tensor(m, gr, name, &c->tensors[c->n_tensors],
                               &made));
        if (made)
            c->n_tensors++;
    }
    return HFDCP_OK;
}

/* Sorts c's tensors by name, indexes them and adds up their bytes; then c
 * takes over m->files. */
static int finish_catalog(merger *m, const char *path, hfdcp__catalog *c)
{
    const listing *ls = m->ls;

    qsort(c->tensors, c->n_tensors, sizeof *c->tensors, cmp_tensor);
    for (size_t i = 0; i < c->n_tensors; i++) {
        HFDCP_TRY(hfdcp__strmap_put(c->by_name, c->tensors[i].name, i, NULL));
        if (!hfdcp__add_u64(c->total_size, c->tensors[i].nbytes,
                            &c->total_size))
            return hfdcp__error(HFDCP_ERR_FORMAT,
                                "the tensors of '%s' hold more than 2^64 "
                                "bytes",
                                path);
    }
    for (size_t f = 0; f < ls->n; f++)
        c->sharded = c->sharded || m->files[f].hdr.sharded;
    c->is_file = ls->is_file;
    c->has_index = ls->has_index;
    c->n_files = ls->n;
    c->files = m->files;
    m->files = NULL;
    return HFDCP_OK;
}

/* Renames, groups and checks into c; on success c takes over m->files. */
int hfdcp__catalog_merge(merger *m, const char *path, hfdcp__catalog *c)
{
    const listing *ls = m->ls;
    hfdcp__strmap *renamed = NULL; /* new name -> group */
    int rc = HFDCP_OK;

    if ((renamed = hfdcp__strmap_new()) == NULL ||
        (c->by_name = hfdcp__strmap_new()) == NULL ||
        (c->path = hfdcp__strdup(path)) == NULL ||
        (m->file_names = malloc((ls->n + 1) * sizeof *m->file_names)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory for the catalog of '%s'",
                   path);
    HFDCP_CHECK(check_files(m));
    HFDCP_CHECK(read_global_shapes(m));
    HFDCP_CHECK(group_names(m));
    if (ls->has_index)
        HFDCP_CHECK(check_index(m));
    if ((c->tensors = calloc(m->n_groups + 1, sizeof *c->tensors)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory for the catalog of '%s'",
                   path);
    HFDCP_CHECK(build_tensors(m, renamed, c));
    rc = hfdcp__problems_status(m->p); /* verify: the first problem */
    if (rc == HFDCP_OK)
        rc = finish_catalog(m, path, c);
cleanup:
    hfdcp__strmap_free(renamed);
    return rc;
}

/* Frees the file table (when not taken over) and the working tables. */
void hfdcp__merger_free(merger *m)
{
    if (m->files) {
        for (size_t f = 0; f < m->ls->n; f++) {
            free(m->files[f].name);
            free(m->files[f].path);
            hfdcp__header_free(&m->files[f].hdr);
        }
        free(m->files);
    }
    for (size_t f = 0; m->global_shapes && f < m->ls->n; f++)
        free(m->global_shapes[f]);
    free(m->global_shapes);
    free(m->file_names);
    free(m->occ);
    free(m->groups);
    hfdcp__strmap_free(m->group_of);
    memset(m, 0, sizeof *m);
}
