/*
 * catalog_read.c - step 2 of the catalog (see catalog.c): one file's
 * header.  Its 8-byte prefix and then its header are read with pread (the
 * length checked against the file's size first), and the header is parsed
 * with every rule of docs/format.md (format.c).  In an MPI job each rank
 * reads its share of the files, so a parsed file is packed here to be
 * gathered and unpacked on every rank.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog_internal.h"

/* Reads exactly n bytes at `offset`. */
static int pread_full(int fd, void *buf, size_t n, uint64_t offset,
                      const char *path)
{
    size_t done = 0;
    while (done < n) {
        size_t want = n - done > 0x40000000 ? 0x40000000 : n - done;
        ssize_t got = pread(fd, (char *)buf + done, want,
                            (off_t)(offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return hfdcp__os_error(HFDCP_ERR_IO, errno,
                                   "reading file '%s' at byte %" PRIu64,
                                   path, offset + done);
        if (got == 0)
            return hfdcp__error(HFDCP_ERR_IO,
                                "file '%s' ended at byte %" PRIu64
                                " while reading its header (did it change?)",
                                path, offset + done);
        done += (size_t)got;
    }
    return HFDCP_OK;
}

/* Reads and parses the header of the file at `path` into f (whose name
 * and path the caller sets). */
int hfdcp__file_read_header(hfdcp__file *f)
{
    unsigned char prefix[8] = {0};
    struct stat st;
    char *json = NULL;
    uint64_t n = 0;
    int fd, rc;

    if ((fd = open(f->path, O_RDONLY | O_CLOEXEC)) < 0)
        return hfdcp__os_error(errno == ENOENT ? HFDCP_ERR_NOT_FOUND
                                               : HFDCP_ERR_IO,
                               errno, "opening file '%s'", f->path);
    if (fstat(fd, &st) != 0)
        HFDCP_CHECK(hfdcp__os_error(HFDCP_ERR_IO, errno, "stat of file '%s'",
                                    f->path));
    f->size = (uint64_t)st.st_size;
    if (f->size >= 8)
        HFDCP_CHECK(pread_full(fd, prefix, 8, 0, f->path));
    HFDCP_CHECK(hfdcp__header_len(prefix, f->size, f->path, &n));
    if ((json = malloc((size_t)n + 1)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM,
                   "out of memory for the %" PRIu64 "-byte header of '%s'", n,
                   f->path);
    HFDCP_CHECK(pread_full(fd, json, (size_t)n, 8, f->path));
    HFDCP_CHECK(hfdcp__header_parse(json, n, f->size, f->path, &f->hdr));
    f->data_start = 8 + n;
cleanup:
    free(json);
    close(fd);
    return rc;
}

void hfdcp__file_pack(size_t index, const hfdcp__file *f, hfdcp__buf *b)
{
    const hfdcp__header *h = &f->hdr;

    hfdcp__buf_put_u64(b, index);
    hfdcp__buf_put_u64(b, f->size);
    hfdcp__buf_put_u64(b, f->data_start);
    hfdcp__buf_put_u64(b, h->header_len);
    hfdcp__buf_put_u64(b, h->data_size);
    hfdcp__buf_put_u64(b, (h->meta_null ? 1u : 0u) | (h->sharded ? 2u : 0u));
    hfdcp__buf_put_u64(b, h->n_meta);
    for (size_t i = 0; i < h->n_meta; i++) {
        hfdcp__buf_put_str(b, h->meta[i].key);
        hfdcp__buf_put_str(b, h->meta[i].value);
    }
    hfdcp__buf_put_u64(b, h->n_entries);
    for (size_t i = 0; i < h->n_entries; i++) {
        const hfdcp__entry *e = &h->entries[i];
        hfdcp__buf_put_str(b, e->name);
        hfdcp__buf_put_u64(b, (uint64_t)e->dtype);
        hfdcp__buf_put_u64(b, (uint64_t)e->ndim);
        hfdcp__buf_put_u64(b, e->offsets != NULL);
        for (int d = 0; d < e->ndim; d++)
            hfdcp__buf_put_i64(b, e->shape[d]);
        for (int d = 0; e->offsets && d < e->ndim; d++)
            hfdcp__buf_put_i64(b, e->offsets[d]);
        hfdcp__buf_put_u64(b, e->begin);
        hfdcp__buf_put_u64(b, e->end);
    }
}

/* Unpacks one file packed by hfdcp__file_pack() into files[index] (which
 * must still be empty).  false on a malformed message or out of memory. */
bool hfdcp__file_unpack(hfdcp__rbuf *r, hfdcp__file *files, size_t n_files)
{
    uint64_t index, flags, n, v;
    hfdcp__header *h;
    hfdcp__file *f;

    if (!hfdcp__rbuf_get_u64(r, &index) || index >= n_files ||
        files[index].hdr.header_len != 0)
        return false;
    f = &files[index];
    h = &f->hdr;
    hfdcp__rbuf_get_u64(r, &f->size);
    hfdcp__rbuf_get_u64(r, &f->data_start);
    hfdcp__rbuf_get_u64(r, &h->header_len);
    hfdcp__rbuf_get_u64(r, &h->data_size);
    hfdcp__rbuf_get_u64(r, &flags);
    h->meta_null = (flags & 1) != 0;
    h->sharded = (flags & 2) != 0;
    if (!hfdcp__catalog_get_count(r, &n))
        return false;
    if (n > 0 && (h->meta = calloc((size_t)n, sizeof *h->meta)) == NULL)
        return false;
    for (uint64_t i = 0; i < n; i++) {
        h->n_meta = (size_t)i + 1;
        if (!hfdcp__rbuf_get_str(r, &h->meta[i].key) ||
            !hfdcp__rbuf_get_str(r, &h->meta[i].value))
            return false;
    }
    if (!hfdcp__catalog_get_count(r, &n))
        return false;
    if (n > 0 && (h->entries = calloc((size_t)n, sizeof *h->entries)) == NULL)
        return false;
    for (uint64_t i = 0; i < n; i++) {
        hfdcp__entry *e = &h->entries[i];
        uint64_t has_offsets;
        h->n_entries = (size_t)i + 1;
        if (!hfdcp__rbuf_get_str(r, &e->name) || !hfdcp__rbuf_get_u64(r, &v))
            return false;
        e->dtype = (hfdcp_dtype)v;
        if (v >= HFDCP_DTYPE_COUNT || !hfdcp__rbuf_get_u64(r, &v) ||
            v > HFDCP_MAX_NDIM || !hfdcp__rbuf_get_u64(r, &has_offsets))
            return false;
        e->ndim = (int)v;
        if (e->ndim > 0) {
            if ((e->shape = malloc((size_t)e->ndim * sizeof *e->shape)) ==
                NULL)
                return false;
            for (int d = 0; d < e->ndim; d++)
                hfdcp__rbuf_get_i64(r, &e->shape[d]);
        }
        if (has_offsets) {
            e->offsets = malloc((size_t)(e->ndim ? e->ndim : 1) *
                                sizeof *e->offsets);
            if (e->offsets == NULL)
                return false;
            for (int d = 0; d < e->ndim; d++)
                hfdcp__rbuf_get_i64(r, &e->offsets[d]);
        }
        hfdcp__rbuf_get_u64(r, &e->begin);
        hfdcp__rbuf_get_u64(r, &e->end);
    }
    return !r->bad;
}
