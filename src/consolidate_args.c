/*
 * consolidate_args.c - what hfdcp_consolidate() checks before it reads
 * anything (steps 1 and 2 of consolidate.c): its arguments, locally and
 * against rank 0's in a canonical form, and its directories.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "consolidate_internal.h"

/* ---- 1. arguments ---- */

int hfdcp__cons_check_args(const char *in, const char *out,
                           const hfdcp_consolidate_options *o)
{
    if (in == NULL || in[0] == '\0' || out == NULL || out[0] == '\0')
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_consolidate: the %s directory is %s",
                            in == NULL || in[0] == '\0' ? "input" : "output",
                            (in == NULL || in[0] == '\0' ? in : out) == NULL
                                ? "NULL"
                                : "empty");
    if (o->cast && !hfdcp__can_convert(o->cast_dtype, HFDCP_F64))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_consolidate: cast_dtype %s (%d) is not a "
                            "floating-point dtype (F64, F32, F16 or BF16)",
                            hfdcp_dtype_name(o->cast_dtype)
                                ? hfdcp_dtype_name(o->cast_dtype)
                                : "invalid",
                            (int)o->cast_dtype);
    if (o->num_threads < 0 || o->num_threads > HFDCP_CONS_MAX_THREADS)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_consolidate: num_threads %d is not in "
                            "[0, %d]",
                            o->num_threads, HFDCP_CONS_MAX_THREADS);
    if (o->buffer_bytes != 0 && o->buffer_bytes < HFDCP_CONS_MIN_BUFFER)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_consolidate: buffer_bytes %" PRIu64
                            " is below the minimum of %d bytes (0: the default, %d MiB)",
                            o->buffer_bytes, HFDCP_CONS_MIN_BUFFER, (int)(HFDCP_CONS_DEFAULT_BUFFER >> 20));
    return HFDCP_OK;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(**(const char *const *const *)a,
                  **(const char *const *const *)b);
}

/* What must match across ranks, in a canonical form: the paths, the
 * options, and the map's entries sorted by name (so that maps built in
 * another order compare equal). */
static int pack_args(const char *in, const char *out, const hfdcp_file_map *map,
                     const hfdcp_consolidate_options *o, uint64_t align,
                     hfdcp__buf *b, size_t *opts_end)
{
    size_t n = map ? hfdcp_file_map_size(map) : 0;
    const char **names = NULL, ***order = NULL;
    int *idx = NULL, rc = HFDCP_OK;

    hfdcp__buf_put_str(b, in);
    hfdcp__buf_put_str(b, out);
    hfdcp__buf_put_u64(b, o->buffer_bytes ? o->buffer_bytes : HFDCP_CONS_DEFAULT_BUFFER);
    hfdcp__buf_put_i64(b, o->cast);
    hfdcp__buf_put_i64(b, o->cast ? (int64_t)o->cast_dtype : -1);
    hfdcp__buf_put_i64(b, o->num_threads > 1 ? o->num_threads : 1);
    hfdcp__buf_put_i64(b, map != NULL);
    hfdcp__buf_put_u64(b, align);
    hfdcp__buf_put_i64(b, o->no_checksums != 0);
    *opts_end = b->len;
    hfdcp__buf_put_u64(b, n);
    if (n == 0)
        return hfdcp__buf_status(b);
    names = malloc(n * sizeof *names);
    order = malloc(n * sizeof *order);
    idx = malloc(n * sizeof *idx);
    if (names == NULL || order == NULL || idx == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory comparing the file maps");
    for (size_t i = 0; i < n; i++) {
        HFDCP_CHECK(hfdcp_file_map_entry(map, i, &names[i], &idx[i]));
        order[i] = &names[i];
    }
    qsort(order, n, sizeof *order, cmp_entry_name);
    for (size_t i = 0; i < n; i++) {
        hfdcp__buf_put_str(b, *order[i]);
        hfdcp__buf_put_i64(b, idx[order[i] - names]);
    }
    rc = hfdcp__buf_status(b);
cleanup:
    free(names);
    free(order);
    free(idx);
    return rc;
}

/* Every rank against rank 0: HFDCP_ERR_MISMATCH naming what differs.
 * Agreed status. */
int hfdcp__cons_compare_args(MPI_Comm comm, int rank, const char *in,
                             const char *out, const hfdcp_file_map *map,
                             const hfdcp_consolidate_options *o,
                             uint64_t align)
{
    hfdcp__buf mine;
    void *root = NULL;
    size_t len = 0, opts_end = 0;
    int rc;

    hfdcp__buf_init(&mine);
    rc = pack_args(in, out, map, o, align, &mine, &opts_end);
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    if (rank == 0) {
        root = mine.data;
        len = mine.len;
    }
    HFDCP_CHECK(hfdcp__bcast_bytes(comm, 0, &root, &len));
    if (rank != 0) {
        hfdcp__rbuf r;
        char *in0 = NULL, *out0 = NULL;
        hfdcp__rbuf_init(&r, root, len);
        if (!hfdcp__rbuf_get_str(&r, &in0) || !hfdcp__rbuf_get_str(&r, &out0))
            rc = hfdcp__nomem("rank 0's arguments");
        else if (strcmp(in0, in) != 0 || strcmp(out0, out) != 0)
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_consolidate: the %s directory '%s' of "
                              "rank %d differs from rank 0's '%s'",
                              strcmp(in0, in) ? "input" : "output",
                              strcmp(in0, in) ? in : out, rank,
                              strcmp(in0, in) ? in0 : out0);
        else if (len < opts_end || memcmp(root, mine.data, opts_end) != 0)
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_consolidate: the options of rank %d "
                              "(buffer_bytes, cast, cast_dtype, num_threads, "
                              "whether a file map is given, no_checksums, or "
                              "the hint hfdcp_data_alignment) differ from "
                              "rank 0's",
                              rank);
        else if (len != mine.len || memcmp(root, mine.data, len) != 0)
            rc = hfdcp__error(HFDCP_ERR_MISMATCH,
                              "hfdcp_consolidate: the file map of rank %d "
                              "differs from rank 0's",
                              rank);
        free(in0);
        free(out0);
        free(root);
    }
    rc = hfdcp__agree(comm, rc);
cleanup:
    hfdcp__buf_free(&mine);
    return rc;
}

/* ---- 2. input ---- */

int hfdcp__cons_check_dirs(const char *in, const char *out)
{
    struct stat si, so;

    if (stat(in, &si) != 0)
        return errno == ENOENT
                   ? hfdcp__error(HFDCP_ERR_NOT_FOUND,
                                  "hfdcp_consolidate: the input directory "
                                  "'%s' does not exist",
                                  in)
                   : hfdcp__os_error(HFDCP_ERR_IO, errno,
                                     "hfdcp_consolidate: stat of the input "
                                     "directory '%s'",
                                     in);
    if (!S_ISDIR(si.st_mode))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_consolidate: the input '%s' is not a "
                            "directory of shard files",
                            in);
    if (stat(out, &so) != 0)
        return errno == ENOENT ? HFDCP_OK
                               : hfdcp__os_error(HFDCP_ERR_IO, errno,
                                                 "hfdcp_consolidate: stat of "
                                                 "the output directory '%s'",
                                                 out);
    if (so.st_dev == si.st_dev && so.st_ino == si.st_ino)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_consolidate: the output directory '%s' is "
                            "the input directory '%s' (publishing the output "
                            "would remove the shard files)",
                            out, in);
    return HFDCP_OK;
}

