/*
 * catalog.c - what a checkpoint holds: its files, their parsed headers, and
 * every tensor (renamed, DCP shards merged) with the chunks it is made of.
 * This file puts the steps together; each step is a file of its own
 * (shared declarations: catalog_internal.h).
 *
 * The same three local steps serve hfdcp__catalog_open() (collective, stops
 * at the first problem, ignores warnings) and hfdcp__catalog_verify() (one
 * process, collects every problem and every warning: the index's
 * bookkeeping, which the reader does not enforce, docs/format.md):
 *   list   the files: the index's weight_map values, else every
 *          *.safetensors of the directory, else the one file given
 *          (catalog_list.c);
 *   read   each file's 8-byte prefix and header with pread, and parse it
 *          (catalog_read.c);
 *   merge  the index checks, renaming, grouping of names across files,
 *          DCP shard merging with a tiling check, sorting
 *          (catalog_merge.c).
 *
 * In an MPI job (hfdcp__catalog_open):
 *   1. the ranks check they were given the same path and key map rules;
 *   2. rank 0 lists and broadcasts the listing (with the index);
 *   3. rank r reads files r, r + P, r + 2P, ...; a failure is agreed on
 *      by the lowest-numbered failing file, so that the error reported
 *      does not depend on the number of ranks;
 *   4. the parsed headers are packed and gathered on every rank
 *      (MPI_Allgatherv in units big enough for int counts);
 *   5. every rank unpacks and merges.  The merge is deterministic, so
 *      every rank builds the same catalog or finds the same error without
 *      broadcasting a second, packed form of the catalog; the result is
 *      still agreed on (hfdcp__agree), which also covers a rank running
 *      out of memory.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_internal.h"
#include "hfdcp_testing.h"

/* ---- both: the file table, the merge into a new catalog ---- */

/* The file table for a listing: names and paths copied, headers empty. */
static int new_files(const listing *ls, hfdcp__file **out)
{
    hfdcp__file *files = calloc(ls->n + 1, sizeof *files);
    if (files == NULL)
        return hfdcp__nomem("the file table");
    *out = files;
    for (size_t f = 0; f < ls->n; f++) {
        if ((files[f].name = hfdcp__strdup(ls->names[f])) == NULL ||
            (files[f].path = hfdcp__strdup(ls->paths[f])) == NULL)
            return hfdcp__nomem("the file table");
    }
    return HFDCP_OK;
}

/* Step 3 into a new catalog *out (see hfdcp__catalog_merge()). */
static int merge_catalog(merger *m, const char *path, hfdcp__catalog **out)
{
    hfdcp__catalog *c = calloc(1, sizeof *c);
    int rc;

    if (c == NULL)
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "out of memory for the catalog of '%s'", path);
    rc = hfdcp__catalog_merge(m, path, c);
    if (rc == HFDCP_OK)
        *out = c;
    else
        hfdcp__catalog_free(c);
    return rc;
}

/* ---- verify: one process, every problem ---- */

int hfdcp__catalog_verify(const char *path, hfdcp__catalog **out,
                          hfdcp__problem **problems_out, size_t *n_problems)
{
    problems p = {.collect = true};
    listing ls;
    merger m;
    bool *ok = NULL;
    hfdcp__catalog *c = NULL;
    int rc;

    memset(&m, 0, sizeof m);
    memset(&ls, 0, sizeof ls);
    if (out)
        *out = NULL;
    *problems_out = NULL;
    *n_problems = 0;
    if (path == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "no checkpoint path");

    rc = hfdcp__catalog_list(path, &p, &ls);
    if (rc != HFDCP_OK)
        goto cleanup;
    m.ls = &ls;
    m.p = &p;
    HFDCP_CHECK(new_files(&ls, &m.files));
    if ((ok = calloc(ls.n + 1, sizeof *ok)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory verifying '%s'", path);
    for (size_t f = 0; f < ls.n; f++) {
        rc = hfdcp__file_read_header(&m.files[f]);
        ok[f] = rc == HFDCP_OK;
        if (rc != HFDCP_OK)
            HFDCP_CHECK(hfdcp__problems_soft(&p, rc));
    }
    m.readable = ok;
    rc = merge_catalog(&m, path, &c);
cleanup:
    if (rc == HFDCP_OK)
        rc = hfdcp__problems_status(&p);
    if (rc == HFDCP_OK && out) {
        *out = c;
        c = NULL;
    }
    hfdcp__catalog_free(c);
    free(ok);
    if (m.ls)
        hfdcp__merger_free(&m);
    hfdcp__listing_free(&ls);
    *problems_out = p.list;
    *n_problems = p.n;
    return rc;
}

/* ---- open: collective ---- */

/* Agreement on a failure keyed by file: every rank gets the error of the
 * lowest-numbered failing file (`key` on the ranks that failed), whatever
 * the number of ranks. */
static int agree_by_file(MPI_Comm comm, int status, uint64_t key)
{
    uint64_t mine = status == HFDCP_OK ? UINT64_MAX : key, first;
    int mpi_rc = hfdcp__allreduce_u64(&mine, &first, 1, MPI_MIN, comm);

    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__agree(comm, hfdcp__mpi_error(mpi_rc, "MPI_Allreduce"));
    if (first == UINT64_MAX)
        return HFDCP_OK;
    return hfdcp__agree(comm, status != HFDCP_OK && mine == first
                                  ? status
                                  : HFDCP_OK);
}

/* Packs what must match across ranks: the path and the key map rules. */
static int pack_args(const char *path, const hfdcp_key_map *km, hfdcp__buf *b)
{
    hfdcp_key_map *empty = NULL;
    int rc;

    hfdcp__buf_put_str(b, path);
    /* NULL and an empty key map rename nothing alike: pack an empty one. */
    if (km == NULL) {
        HFDCP_TRY(hfdcp_key_map_create(&empty));
        km = empty;
    }
    rc = hfdcp__key_map_pack(km, b);
    hfdcp_key_map_free(empty);
    HFDCP_TRY(rc);
    return hfdcp__buf_status(b);
}

/* Every rank checks it was given rank 0's path and key map rules. */
static int check_same_args(MPI_Comm comm, int rank, const char *path,
                           const hfdcp_key_map *km, bool out_given)
{
    hfdcp__buf mine;
    void *root = NULL;
    size_t len = 0;
    int rc;

    hfdcp__buf_init(&mine);
    if (path == NULL || !out_given)
        rc = hfdcp__error(HFDCP_ERR_ARG, "no checkpoint %s given",
                          path == NULL ? "path" : "output pointer");
    else
        rc = pack_args(path, km, &mine);
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    if (rank == 0) {
        root = mine.data;
        len = mine.len;
    }
    HFDCP_CHECK(hfdcp__bcast_bytes(comm, 0, &root, &len));
    if (rank != 0) {
        hfdcp__rbuf r;
        char *root_path = NULL;
        hfdcp__rbuf_init(&r, root, len);
        if (!hfdcp__rbuf_get_str(&r, &root_path))
            rc = hfdcp__nomem("rank 0's arguments");
        else if (strcmp(root_path, path) != 0)
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "checkpoint path differs across ranks: rank 0 "
                              "has '%s', rank %d has '%s'",
                              root_path, rank, path);
        else if (len != mine.len || memcmp(root, mine.data, len) != 0)
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "key map rules differ across ranks: rank %d's "
                              "are not rank 0's",
                              rank);
        free(root_path);
        free(root);
    }
    rc = hfdcp__agree(comm, rc);
cleanup:
    hfdcp__buf_free(&mine);
    return rc;
}

/* Rank 0 lists; every rank gets the listing. */
static int share_listing(MPI_Comm comm, int rank, const char *path,
                         listing *ls)
{
    problems stop = {.collect = false};
    hfdcp__buf b;
    void *data = NULL;
    size_t len = 0;
    int rc = HFDCP_OK;

    memset(ls, 0, sizeof *ls);
    hfdcp__buf_init(&b);
    if (rank == 0) {
        rc = hfdcp__catalog_list(path, &stop, ls);
        if (rc == HFDCP_OK) {
            hfdcp__listing_pack(ls, &b);
            rc = hfdcp__buf_status(&b);
        }
        data = b.data;
        len = b.len;
    }
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    HFDCP_CHECK(hfdcp__bcast_bytes(comm, 0, &data, &len));
    if (rank != 0) {
        rc = hfdcp__listing_unpack(data, len, ls);
        free(data);
    }
    rc = hfdcp__agree(comm, rc);
cleanup:
    hfdcp__buf_free(&b);
    if (rc != HFDCP_OK)
        hfdcp__listing_free(ls);
    return rc;
}

uint64_t hfdcp__catalog_gather_max = INT_MAX;

/*
 * Gathers every rank's bytes on every rank.  MPI counts are int: the
 * buffers travel in units of `unit` bytes (1 unless the total exceeds
 * INT_MAX), each rank's padded to whole units.  On return rank r's
 * lens[r] bytes start at (*storage)[offsets[r]].
 */
static int allgather_bytes(MPI_Comm comm, int rank, int size,
                           const hfdcp__buf *mine,
                           unsigned char **storage, size_t *offsets,
                           uint64_t *lens)
{
    uint64_t my_len = mine->len, unit = 1, total;
    int *counts = NULL, *displs = NULL, mpi_rc, ok, all_ok;
    unsigned char *send = NULL, *recv = NULL;
    MPI_Datatype type = MPI_DATATYPE_NULL;
    int rc = HFDCP_OK;

    *storage = NULL;
    mpi_rc = MPI_Allgather(&my_len, 1, MPI_UINT64_T, lens, 1, MPI_UINT64_T,
                           comm);
    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__agree(comm, hfdcp__mpi_error(mpi_rc, "MPI_Allgather "
                                                           "of header sizes"));
    for (;;) {
        bool fits = true;
        total = 0;
        for (int r = 0; r < size && fits; r++) {
            total += lens[r] / unit + (lens[r] % unit != 0);
            fits = total <= hfdcp__catalog_gather_max;
        }
        if (fits || unit > INT_MAX / 2)
            break;
        unit *= 2;
    }
    if (total > INT_MAX) /* the same on every rank */
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "the headers are too large to gather (%" PRIu64
                            " units of %" PRIu64 " bytes)",
                            total, unit);
    counts = malloc((size_t)size * sizeof *counts);
    displs = malloc((size_t)size * sizeof *displs);
    send = calloc(1, (size_t)((my_len / unit + 1) * unit));
    recv = malloc((size_t)(total * unit) + 1);
    ok = counts && displs && send && recv;
    HFDCP_MPI_CHECK(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm));
    if (!all_ok) {
        rc = hfdcp__agree(comm, ok ? HFDCP_OK
                                   : hfdcp__nomem("the gathered headers"));
        if (rc == HFDCP_OK)
            rc = hfdcp__error(HFDCP_ERR_NOMEM,
                              "out of memory gathering the headers");
        goto cleanup;
    }
    if (my_len > 0)
        memcpy(send, mine->data, (size_t)my_len);
    for (int r = 0, at = 0; r < size; r++) {
        counts[r] = (int)(lens[r] / unit + (lens[r] % unit != 0));
        displs[r] = at;
        offsets[r] = (size_t)at * (size_t)unit;
        at += counts[r];
    }
    HFDCP_MPI_CHECK(MPI_Type_contiguous((int)unit, MPI_BYTE, &type));
    HFDCP_MPI_CHECK(MPI_Type_commit(&type));
    HFDCP_MPI_CHECK(MPI_Allgatherv(send, counts[rank], type, recv, counts,
                                   displs, type, comm));
    *storage = recv;
    recv = NULL;
cleanup:
    if (type != MPI_DATATYPE_NULL)
        MPI_Type_free(&type);
    free(counts);
    free(displs);
    free(send);
    free(recv);
    return rc;
}

/* Rank `rank` of `size` reads files rank, rank + size, ... and packs their
 * headers into `mine`.  Agreed status. */
static int read_share(MPI_Comm comm, int rank, int size, const listing *ls,
                      hfdcp__file *files, hfdcp__buf *mine)
{
    uint64_t fail_key = ls->n;
    int rc = HFDCP_OK;

    for (size_t f = (size_t)rank; f < ls->n; f += (size_t)size) {
        if ((rc = hfdcp__file_read_header(&files[f])) != HFDCP_OK) {
            fail_key = f;
            break;
        }
        hfdcp__file_pack(f, &files[f], mine);
        hfdcp__header_free(&files[f].hdr); /* it comes back unpacked */
    }
    if (rc == HFDCP_OK)
        rc = hfdcp__buf_status(mine);
    return agree_by_file(comm, rc, fail_key);
}

/* Unpacks every rank's headers (rank r's lens[r] bytes at all +
 * offsets[r]) into files; each file must come exactly once.  Local. */
static int unpack_all(int size, const unsigned char *all,
                      const size_t *offsets, const uint64_t *lens,
                      const listing *ls, hfdcp__file *files)
{
    for (int r = 0; r < size; r++) {
        hfdcp__rbuf rb;
        hfdcp__rbuf_init(&rb, all + offsets[r], (size_t)lens[r]);
        while (rb.p < rb.end)
            if (!hfdcp__file_unpack(&rb, files, ls->n))
                return hfdcp__error(HFDCP_ERR_NOMEM,
                                    "out of memory (or a corrupt message) "
                                    "unpacking rank %d's headers",
                                    r);
    }
    for (size_t f = 0; f < ls->n; f++)
        if (files[f].hdr.header_len == 0)
            return hfdcp__error(HFDCP_ERR_INTERNAL,
                                "the header of '%s' was not received",
                                ls->names[f]);
    return HFDCP_OK;
}

static int open_catalog(MPI_Comm comm, const char *path,
                        const hfdcp_key_map *km, bool shards_only,
                        hfdcp__catalog **out)
{
    problems stop = {.collect = false};
    listing ls;
    merger m;
    hfdcp__buf mine;
    hfdcp__catalog *c = NULL;
    unsigned char *all = NULL;
    size_t *offsets = NULL;
    uint64_t *lens = NULL;
    int rank, size, mpi_rc, rc;

    memset(&ls, 0, sizeof ls);
    memset(&m, 0, sizeof m);
    hfdcp__buf_init(&mine);
    if ((mpi_rc = MPI_Comm_rank(comm, &rank)) != MPI_SUCCESS ||
        (mpi_rc = MPI_Comm_size(comm, &size)) != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "opening a checkpoint");
    HFDCP_TRY(check_same_args(comm, rank, path, km, out != NULL));
    HFDCP_TRY(share_listing(comm, rank, path, &ls));
    m.ls = &ls;
    m.p = &stop;
    m.km = km;
    m.shards_only = shards_only;

    rc = new_files(&ls, &m.files);
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    HFDCP_CHECK(read_share(comm, rank, size, &ls, m.files, &mine));

    /* Every rank gets every header. */
    offsets = malloc((size_t)size * sizeof *offsets);
    lens = malloc((size_t)size * sizeof *lens);
    rc = offsets && lens ? HFDCP_OK : hfdcp__nomem("the gathered headers");
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    HFDCP_CHECK(allgather_bytes(comm, rank, size, &mine, &all, offsets, lens));
    hfdcp__buf_free(&mine);
    rc = unpack_all(size, all, offsets, lens, &ls, m.files);
    HFDCP_CHECK(hfdcp__agree(comm, rc));

    /* The same merge on every rank. */
    rc = hfdcp__agree(comm, merge_catalog(&m, path, &c));
    if (rc == HFDCP_OK) {
        *out = c;
        c = NULL;
    }
cleanup:
    hfdcp__catalog_free(c);
    free(all);
    free(offsets);
    free(lens);
    hfdcp__buf_free(&mine);
    if (m.ls)
        hfdcp__merger_free(&m);
    hfdcp__listing_free(&ls);
    return rc;
}

int hfdcp__catalog_open(MPI_Comm comm, const char *path,
                        const hfdcp_key_map *km, hfdcp__catalog **out)
{
    return open_catalog(comm, path, km, false, out);
}

int hfdcp__catalog_open_shards(MPI_Comm comm, const char *path,
                               hfdcp__catalog **out)
{
    return open_catalog(comm, path, NULL, true, out);
}

const hfdcp__tensor *hfdcp__catalog_find(const hfdcp__catalog *c,
                                         const char *name)
{
    size_t i;
    if (c == NULL || name == NULL || !hfdcp__strmap_get(c->by_name, name, &i))
        return NULL;
    return &c->tensors[i];
}

void hfdcp__catalog_free(hfdcp__catalog *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_files; i++) {
        free(c->files[i].name);
        free(c->files[i].path);
        hfdcp__header_free(&c->files[i].hdr);
    }
    free(c->files);
    for (size_t i = 0; i < c->n_tensors; i++)
        hfdcp__tensor_clear(&c->tensors[i]);
    free(c->tensors);
    hfdcp__strmap_free(c->by_name);
    free(c->path);
    free(c);
}
