/*
 * load_check.c - checked loads (hint hfdcp_verify_checksums=enable): the
 * CRC-32C of every chunk a load reads in full, compared with the file's
 * hfdcp_crc32c, right after the file's transfer (the file's bytes, before
 * any dtype conversion).
 *
 * A chunk (a file entry: a whole tensor, or one shard of it) is read "in
 * full" when
 *   - one rank's pieces tile it exactly: that rank checks it alone (in a
 *     replicated load, one of those ranks: the chunks are dealt round
 *     robin over them), or
 *   - no rank's do, but the pieces of all ranks tile it exactly (no hole,
 *     no overlap): every rank adds the runs it read and one MPI_BXOR of
 *     the parts gives the CRC (hfdcp__crc32c_runs, crc32c.c).
 * Anything else (overlapping partial reads, a part left unread) is not
 * checked: overlapping bytes would cancel in the XOR.  The second case is
 * found cheaply: an MPI_Allreduce of each chunk's element count read by
 * all ranks, and only for the chunks whose count is exactly theirs, the
 * pieces' boxes gathered on rank 0 for a tiling check.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp_internal.h"

int hfdcp__verify_hint(MPI_Info info, const char *who, bool *on)
{
    char v[MPI_MAX_INFO_VAL + 1];
    int flag = 0, mpi_rc;

    *on = false;
    if (info == MPI_INFO_NULL)
        return HFDCP_OK;
    mpi_rc = MPI_Info_get(info, "hfdcp_verify_checksums", MPI_MAX_INFO_VAL, v,
                          &flag);
    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "%s: reading the hint "
                                "hfdcp_verify_checksums", who);
    if (!flag || strcmp(v, "disable") == 0)
        return HFDCP_OK;
    if (strcmp(v, "enable") != 0)
        return hfdcp__error(HFDCP_ERR_ARG, "%s: hint hfdcp_verify_checksums=%s: "
                            "expected enable or disable", who, v);
    *on = true;
    return HFDCP_OK;
}

/* What one file's check works with (per entry arrays of n_entries). */
typedef struct {
    MPI_Comm comm;
    const hfdcp__file *file;
    const hfdcp__piece *pieces;
    size_t n_pieces, n_entries;
    size_t *entry_of;      /* per piece: its entry */
    uint64_t *numel;       /* per entry: its elements */
    uint64_t *mine, *all;  /* per entry: elements read here, by all */
    int *alone;            /* per entry: this rank's pieces tile it */
    int *n_alone, *before; /* per entry: how many ranks' pieces tile it,
                              and of those how many have a lower rank */
    int *shared;           /* per entry: all ranks' pieces tile it */
    uint32_t *part, *xor;  /* per entry: this rank's part, all ranks' */
} check;

static uint64_t box_numel(int ndim, const int64_t *sizes)
{
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (uint64_t)sizes[d];
    return n;
}

static uint64_t entry_bytes(const hfdcp__entry *e)
{
    return e->end - e->begin;
}

/* The entry of the file whose data starts at `begin` (relative to the
 * data buffer) and is not empty, or n_entries.  Entries are sorted by
 * (begin, end), the empty ones first at one offset. */
static size_t find_entry(const hfdcp__header *h, uint64_t begin)
{
    size_t lo = 0, hi = h->n_entries;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (h->entries[mid].begin < begin)
            lo = mid + 1;
        else
            hi = mid;
    }
    while (lo < h->n_entries && h->entries[lo].begin == begin &&
           h->entries[lo].end == begin)
        lo++;
    return lo < h->n_entries && h->entries[lo].begin == begin ? lo
                                                              : h->n_entries;
}

static int alloc_check(check *c)
{
    size_t e = c->n_entries ? c->n_entries : 1;

    c->entry_of = malloc((c->n_pieces ? c->n_pieces : 1) * sizeof *c->entry_of);
    c->numel = calloc(e, sizeof *c->numel);
    c->mine = calloc(e, sizeof *c->mine);
    c->all = calloc(e, sizeof *c->all);
    c->alone = calloc(e, sizeof *c->alone);
    c->n_alone = calloc(e, sizeof *c->n_alone);
    c->before = calloc(e, sizeof *c->before);
    c->shared = calloc(e, sizeof *c->shared);
    c->part = calloc(e, sizeof *c->part);
    c->xor = calloc(e, sizeof *c->xor);
    if (!c->entry_of || !c->numel || !c->mine || !c->all || !c->alone ||
        !c->n_alone || !c->before || !c->shared || !c->part || !c->xor)
        return hfdcp__nomem("the checksums of a load");
    return HFDCP_OK;
}

static void free_check(check *c)
{
    free(c->entry_of);
    free(c->numel);
    free(c->mine);
    free(c->all);
    free(c->alone);
    free(c->n_alone);
    free(c->before);
    free(c->shared);
    free(c->part);
    free(c->xor);
}

/* The tiles of entry e among this rank's pieces (at most n). */
static size_t own_tiles(const check *c, size_t e, hfdcp__tile *tiles)
{
    size_t m = 0;

    for (size_t i = 0; i < c->n_pieces; i++)
        if (c->entry_of[i] == e) {
            tiles[m].offsets = c->pieces[i].fstart;
            tiles[m].sizes = c->pieces[i].count;
            tiles[m++].owner = 0;
        }
    return m;
}

/* Local: each piece's entry, the elements this rank reads of each entry,
 * and the entries its pieces tile alone. */
static int count_local(check *c, hfdcp__tile *tiles)
{
    const hfdcp__header *h = &c->file->hdr;

    for (size_t e = 0; e < c->n_entries; e++)
        c->numel[e] = box_numel(h->entries[e].ndim, h->entries[e].shape);
    for (size_t i = 0; i < c->n_pieces; i++) {
        const hfdcp__piece *p = &c->pieces[i];
        size_t e = find_entry(h, p->file_offset - c->file->data_start);
        if (e == c->n_entries)
            return hfdcp__error(HFDCP_ERR_INTERNAL, "'%s': no tensor at byte "
                                "%" PRIu64, c->file->path, p->file_offset);
        c->entry_of[i] = e;
        c->mine[e] += box_numel(p->ndim, p->count);
    }
    for (size_t e = 0; e < c->n_entries; e++) {
        const hfdcp__entry *en = &h->entries[e];
        if (c->numel[e] == 0 || c->mine[e] != c->numel[e])
            continue;
        size_t m = own_tiles(c, e, tiles);
        c->alone[e] = m == 1 || hfdcp__tiling_check(HFDCP_ERR_PLAN, en->name,
                                                    en->ndim, en->shape, tiles,
                                                    m, "piece", NULL) == HFDCP_OK;
    }
    return HFDCP_OK;
}

/* Whether entry e may be checked by all ranks together: nobody tiles it
 * alone and all ranks read exactly its element count. */
static bool candidate(const check *c, size_t e)
{
    return c->n_alone[e] == 0 && c->numel[e] > 0 && c->all[e] == c->numel[e];
}

/* Whether this rank checks entry e alone: among the ranks whose pieces
 * tile it (a replicated load), the chunks are dealt round robin, so that
 * each is checked once and the work spreads over them. */
static bool checks_alone(const check *c, size_t e)
{
    return c->alone[e] && c->before[e] == (int)(e % (size_t)c->n_alone[e]);
}

/* This rank's pieces of candidate entries, as int64 records
 * [entry, fstart[ndim], count[ndim]] into *out (malloc'd), *len values. */
static int pack_candidates(const check *c, int64_t **out, size_t *len)
{
    size_t n = 0, k = 0;

    for (size_t i = 0; i < c->n_pieces; i++)
        if (candidate(c, c->entry_of[i]))
            n += 1 + 2 * (size_t)c->pieces[i].ndim;
    *len = n;
    if ((*out = malloc((n ? n : 1) * sizeof **out)) == NULL)
        return hfdcp__nomem("the boxes of a checked load");
    for (size_t i = 0; i < c->n_pieces; i++) {
        const hfdcp__piece *p = &c->pieces[i];
        if (!candidate(c, c->entry_of[i]))
            continue;
        (*out)[k++] = (int64_t)c->entry_of[i];
        for (int d = 0; d < p->ndim; d++)
            (*out)[k++] = p->fstart[d];
        for (int d = 0; d < p->ndim; d++)
            (*out)[k++] = p->count[d];
    }
    return HFDCP_OK;
}

/* Rank 0: c->shared[e] for every candidate entry whose boxes, the
 * records `recs` of all ranks (`len` values), tile it exactly. */
static int tile_gathered(check *c, const int64_t *recs, size_t len)
{
    const hfdcp__header *h = &c->file->hdr;
    size_t n = 0, *first = NULL, *count = NULL;
    hfdcp__tile *tiles = NULL;
    int rc = HFDCP_OK;

    for (size_t k = 0; k < len; n++)
        k += 1 + 2 * (size_t)h->entries[recs[k]].ndim;
    first = calloc(c->n_entries + 1, sizeof *first);
    count = calloc(c->n_entries + 1, sizeof *count);
    tiles = malloc((n ? n : 1) * sizeof *tiles);
    if (first == NULL || count == NULL || tiles == NULL) {
        rc = hfdcp__nomem("the boxes of a checked load");
        goto out;
    }
    for (size_t k = 0; k < len; k += 1 + 2 * (size_t)h->entries[recs[k]].ndim)
        count[recs[k]]++;
    for (size_t e = 0; e < c->n_entries; e++)
        first[e + 1] = first[e] + count[e];
    memset(count, 0, (c->n_entries + 1) * sizeof *count);
    for (size_t k = 0; k < len; k += 1 + 2 * (size_t)h->entries[recs[k]].ndim) {
        size_t e = (size_t)recs[k], nd = (size_t)h->entries[e].ndim;
        hfdcp__tile *t = &tiles[first[e] + count[e]++];
        t->offsets = &recs[k + 1];
        t->sizes = &recs[k + 1 + nd];
        t->owner = 0;
    }
    for (size_t e = 0; e < c->n_entries; e++) {
        const hfdcp__entry *en = &h->entries[e];
        c->shared[e] = candidate(c, e) &&
                       hfdcp__tiling_check(HFDCP_ERR_PLAN, en->name, en->ndim,
                                           en->shape, tiles + first[e],
                                           count[e], "rank", NULL) == HFDCP_OK;
    }
out:
    free(first);
    free(count);
    free(tiles);
    return rc;
}

/* Collective: the candidate entries' boxes gathered on rank 0, which
 * decides c->shared and broadcasts it. */
static int find_shared(check *c)
{
    int64_t *mine = NULL, *recs = NULL;
    int rank, size, n, *lens = NULL, *displs = NULL, rc = HFDCP_OK, mpi_rc;
    size_t len = 0, total = 0;

    MPI_Comm_rank(c->comm, &rank);
    MPI_Comm_size(c->comm, &size);
    rc = pack_candidates(c, &mine, &len);
    if (rc == HFDCP_OK && len > INT_MAX)
        rc = hfdcp__error(HFDCP_ERR_UNSUPPORTED, "'%s': too many pieces to "
                          "check", c->file->path);
    if (rc == HFDCP_OK && rank == 0 &&
        ((lens = calloc((size_t)size, sizeof *lens)) == NULL ||
         (displs = calloc((size_t)size, sizeof *displs)) == NULL))
        rc = hfdcp__nomem("the boxes of a checked load");
    if ((rc = hfdcp__agree(c->comm, rc)) != HFDCP_OK)
        goto out;
    n = (int)len;
    mpi_rc = MPI_Gather(&n, 1, MPI_INT, lens, 1, MPI_INT, 0, c->comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "'%s': gathering a checked load's "
                              "boxes", c->file->path);
    for (int r = 0; rank == 0 && r < size; r++) {
        displs[r] = (int)total;
        total += (size_t)lens[r];
    }
    if (rc == HFDCP_OK && rank == 0 &&
        (total > INT_MAX || (recs = malloc((total ? total : 1) * sizeof *recs)) == NULL))
        rc = hfdcp__nomem("the boxes of a checked load");
    if ((rc = hfdcp__agree(c->comm, rc)) != HFDCP_OK)
        goto out;
    mpi_rc = MPI_Gatherv(mine, n, MPI_INT64_T, recs, lens, displs,
                         MPI_INT64_T, 0, c->comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "'%s': gathering a checked load's "
                              "boxes", c->file->path);
    if (rc == HFDCP_OK && rank == 0)
        rc = tile_gathered(c, recs, total);
    if ((rc = hfdcp__agree(c->comm, rc)) != HFDCP_OK)
        goto out;
    mpi_rc = MPI_Bcast(c->shared, (int)c->n_entries, MPI_INT, 0, c->comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "'%s': broadcasting the chunks a "
                              "checked load checks", c->file->path);
    rc = hfdcp__agree(c->comm, rc);
out:
    free(mine);
    free(recs);
    free(lens);
    free(displs);
    return rc;
}

/* Adds every contiguous run of piece p (read into memory) to r, at its
 * byte offset in the chunk.  Trailing dimensions covered whole in both
 * arrays merge into one run, as the MPI-IO layer merges them; sub-byte
 * runs start and end on whole bytes (hfdcp_reader_add checks that). */
static void add_piece_runs(const hfdcp__piece *p, hfdcp__crc32c_runs *r)
{
    int64_t idx[HFDCP_MAX_NDIM] = {0};
    uint64_t fstride[HFDCP_MAX_NDIM], mstride[HFDCP_MAX_NDIM], run;
    uint64_t bits = (uint64_t)p->bits, fs = 1, ms = 1;
    int d = p->ndim - 1;

    if (p->ndim == 0) {
        hfdcp__crc32c_runs_add(r, 0, p->mem, (size_t)(bits / 8));
        return;
    }
    for (int k = p->ndim - 1; k >= 0; k--) {
        fstride[k] = fs;
        mstride[k] = ms;
        fs *= (uint64_t)p->fshape[k];
        ms *= (uint64_t)p->mshape[k];
    }
    run = (uint64_t)p->count[d];
    while (d > 0 && p->count[d] == p->fshape[d] && p->count[d] == p->mshape[d])
        run *= (uint64_t)p->count[--d];
    for (;;) {
        uint64_t fo = 0, mo = 0;
        for (int k = 0; k < p->ndim; k++) {
            int64_t i = k < d ? idx[k] : 0;
            fo += (uint64_t)(p->fstart[k] + i) * fstride[k];
            mo += (uint64_t)(p->mstart[k] + i) * mstride[k];
        }
        hfdcp__crc32c_runs_add(r, fo * bits / 8,
                               (const unsigned char *)p->mem + mo * bits / 8,
                               (size_t)(run * bits / 8));
        int k = d - 1;
        while (k >= 0 && ++idx[k] == p->count[k])
            idx[k--] = 0;
        if (k < 0)
            return;
    }
}

/* The message of a mismatch of entry e: its CRC-32C is `got`, the file
 * says `want`. */
static int mismatch(const check *c, size_t e, uint32_t got, uint32_t want)
{
    const hfdcp__entry *en = &c->file->hdr.entries[e];
    uint64_t at = c->file->data_start + en->begin;

    return hfdcp__error(HFDCP_ERR_FORMAT,
                        "'%s': tensor '%s', bytes [%" PRIu64 ", %" PRIu64
                        ") of the file: CRC-32C %08" PRIx32 ", but "
                        HFDCP_CRC32C_KEY " says %08" PRIx32
                        " (the data is damaged)",
                        c->file->path, en->name, at, at + entry_bytes(en), got,
                        want);
}

/* Collective: this rank's parts of the entries checked, the XOR of the
 * shared ones, and the first mismatch.  Agreed status. */
static int compare(check *c, const uint32_t *crcs, bool any_shared)
{
    hfdcp__crc32c_runs *runs = calloc(c->n_entries ? c->n_entries : 1,
                                      sizeof *runs);
    int rc = HFDCP_OK, mpi_rc;

    if (runs == NULL)
        return hfdcp__agree(c->comm, hfdcp__nomem("the checksums of a load"));
    for (size_t i = 0; i < c->n_pieces; i++) {
        size_t e = c->entry_of[i];
        if (checks_alone(c, e) || c->shared[e])
            add_piece_runs(&c->pieces[i], &runs[e]);
    }
    for (size_t e = 0; e < c->n_entries; e++)
        c->part[e] = hfdcp__crc32c_runs_part(&runs[e],
                                             entry_bytes(&c->file->hdr.entries[e]));
    free(runs);
    if (any_shared) {
        mpi_rc = MPI_Allreduce(c->part, c->xor, (int)c->n_entries,
                               MPI_UINT32_T, MPI_BXOR, c->comm);
        if (mpi_rc != MPI_SUCCESS)
            return hfdcp__agree(c->comm, hfdcp__mpi_error(mpi_rc, "'%s': "
                                "reducing the checksums", c->file->path));
    }
    for (size_t e = 0; e < c->n_entries && rc == HFDCP_OK; e++) {
        uint64_t len = entry_bytes(&c->file->hdr.entries[e]);
        uint32_t got = hfdcp__crc32c_finish(c->shared[e] ? c->xor[e]
                                                         : c->part[e], len);
        if ((checks_alone(c, e) || c->shared[e]) && got != crcs[e])
            rc = mismatch(c, e, got, crcs[e]);
    }
    return hfdcp__agree(c->comm, rc);
}

/* Collective: which entries are checked alone and together. */
static int plan_check(check *c, hfdcp__tile *tiles, bool *any_shared)
{
    int rc = count_local(c, tiles), mpi_rc, rank = 0;

    *any_shared = false;
    if ((rc = hfdcp__agree(c->comm, rc)) != HFDCP_OK)
        return rc;
    /* A sum: no unsigned comparison (hfdcp__allreduce_u64's reason). */
    mpi_rc = MPI_Allreduce(c->mine, c->all, (int)c->n_entries, MPI_UINT64_T,
                           MPI_SUM, c->comm);
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = MPI_Allreduce(c->alone, c->n_alone, (int)c->n_entries,
                               MPI_INT, MPI_SUM, c->comm);
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = MPI_Comm_rank(c->comm, &rank);
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = MPI_Exscan(c->alone, c->before, (int)c->n_entries, MPI_INT,
                            MPI_SUM, c->comm);
    if (rank == 0) /* MPI_Exscan leaves rank 0's result undefined */
        memset(c->before, 0, c->n_entries * sizeof *c->before);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "'%s': agreeing on the chunks to check",
                              c->file->path);
    if ((rc = hfdcp__agree(c->comm, rc)) != HFDCP_OK)
        return rc;
    for (size_t e = 0; e < c->n_entries; e++)
        *any_shared = *any_shared || candidate(c, e);
    if (!*any_shared)
        return HFDCP_OK;
    return find_shared(c);
}

int hfdcp__load_check(MPI_Comm comm, const hfdcp__file *file,
                      const hfdcp__piece *pieces, size_t n)
{
    check c = {.comm = comm, .file = file, .pieces = pieces, .n_pieces = n,
               .n_entries = file->hdr.n_entries};
    uint32_t *crcs = NULL;
    hfdcp__tile *tiles = NULL;
    bool any_shared = false;
    int rc = hfdcp__header_crc32c(&file->hdr, file->path, &crcs);

    if (rc == HFDCP_OK && crcs != NULL && c.n_entries > INT_MAX)
        rc = hfdcp__error(HFDCP_ERR_UNSUPPORTED, "'%s': %zu tensors to check",
                          file->path, c.n_entries);
    if (rc == HFDCP_OK && crcs != NULL) {
        rc = alloc_check(&c);
        if (rc == HFDCP_OK && (tiles = malloc((n ? n : 1) * sizeof *tiles)) == NULL)
            rc = hfdcp__nomem("the checksums of a load");
    }
    /* The header is the same on every rank: so is crcs == NULL. */
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK || crcs == NULL)
        goto out;
    if ((rc = plan_check(&c, tiles, &any_shared)) == HFDCP_OK)
        rc = compare(&c, crcs, any_shared);
out:
    free(tiles);
    free(crcs);
    free_check(&c);
    return rc;
}
