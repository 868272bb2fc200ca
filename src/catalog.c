/*
 * catalog.c - what a checkpoint holds: its files, their parsed headers, and
 * every tensor (renamed, DCP shards merged) with the chunks it is made of.
 *
 * The same three local steps serve hfdcp__catalog_open() (collective, stops
 * at the first problem) and hfdcp__catalog_verify() (one process, collects
 * every problem):
 *   list   the files: the index's weight_map values, else every
 *          *.safetensors of the directory, else the one file given;
 *   read   each file's 8-byte prefix and header with pread, and parse it;
 *   merge  the index checks, renaming, grouping of names across files,
 *          DCP shard merging with a tiling check, sorting.
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
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hfdcp_testing.h"

#define SUFFIX ".safetensors"

/* ---- problems: stop at the first (open) or collect them all (verify) ---- */

typedef struct {
    bool collect;
    hfdcp__problem *list;
    size_t n, cap;
} problems;

/* Records the current message as a problem of `status` when collecting.
 * Returns HFDCP_OK when collecting (go on), `status` otherwise (stop);
 * HFDCP_ERR_NOMEM if the problem cannot be recorded. */
static int soft(problems *p, int status)
{
    if (!p->collect)
        return status;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        hfdcp__problem *l = realloc(p->list, cap * sizeof *l);
        if (l == NULL)
            return hfdcp__nomem("the list of problems");
        p->list = l;
        p->cap = cap;
    }
    p->list[p->n].status = status;
    if ((p->list[p->n].message = hfdcp__strdup(hfdcp_last_error())) == NULL)
        return hfdcp__nomem("a problem's message");
    p->n++;
    return HFDCP_OK;
}

/* Records a problem that ends the work (nothing sensible can follow):
 * returns `status` in both modes. */
static int hard(problems *p, int status)
{
    int rc = soft(p, status);
    return rc != HFDCP_OK ? rc : status;
}

void hfdcp__problems_free(hfdcp__problem *p, size_t n)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(p[i].message);
    free(p);
}

/* ---- step 1: list ---- */

typedef struct {
    bool is_file;
    bool has_index;
    char *index_path; /* when has_index */
    hfdcp__index ix;  /* when has_index */
    size_t n;
    char **names;     /* base names, sorted by strcmp */
    char **paths;     /* full paths */
} listing;

static void listing_free(listing *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        free(ls->names[i]);
        free(ls->paths[i]);
    }
    free(ls->names);
    free(ls->paths);
    if (ls->has_index)
        hfdcp__index_free(&ls->ix);
    free(ls->index_path);
    memset(ls, 0, sizeof *ls);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends a file (names are taken over). */
static int listing_add(listing *ls, size_t *cap, char *name, char *path)
{
    if (name == NULL || path == NULL)
        goto nomem;
    if (ls->n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        char **n = realloc(ls->names, c * sizeof *n);
        if (n == NULL)
            goto nomem;
        ls->names = n;
        char **p = realloc(ls->paths, c * sizeof *p);
        if (p == NULL)
            goto nomem;
        ls->paths = p;
        *cap = c;
    }
    ls->names[ls->n] = name;
    ls->paths[ls->n] = path;
    ls->n++;
    return HFDCP_OK;
nomem:
    free(name);
    free(path);
    return hfdcp__nomem("the list of files");
}

int hfdcp__read_small_file(const char *path, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    size_t done = 0;
    int rc = HFDCP_OK;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno, "opening '%s'", path);
    if (fstat(fd, &st) != 0) {
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "stat of '%s'", path);
        goto cleanup;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = hfdcp__error(HFDCP_ERR_IO, "'%s' is not a regular file", path);
        goto cleanup;
    }
    if ((uint64_t)st.st_size > HFDCP_HEADER_MAX_READ) {
        rc = hfdcp__error(HFDCP_ERR_FORMAT,
                          "'%s' is %" PRIu64 " bytes: too large for an index",
                          path, (uint64_t)st.st_size);
        goto cleanup;
    }
    if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
        rc = hfdcp__nomem("an index file");
        goto cleanup;
    }
    while (done < (size_t)st.st_size) {
        ssize_t got = read(fd, buf + done, (size_t)st.st_size - done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "reading '%s'", path);
            goto cleanup;
        }
        if (got == 0)
            break;
        done += (size_t)got;
    }
    buf[done] = '\0';
    *out = buf;
    *len = done;
    buf = NULL;
cleanup:
    free(buf);
    close(fd);
    return rc;
}

/* stat() that tells a missing file (HFDCP_ERR_NOT_FOUND) from other
 * failures (HFDCP_ERR_IO); `what` describes the path for messages. */
static int stat_path(const char *path, const char *what, struct stat *st)
{
    if (stat(path, st) == 0)
        return HFDCP_OK;
    if (errno == ENOENT || errno == ENOTDIR)
        return hfdcp__error(HFDCP_ERR_NOT_FOUND, "%s '%s' does not exist",
                            what, path);
    return hfdcp__os_error(HFDCP_ERR_IO, errno, "stat of %s '%s'", what,
                           path);
}

/* The files named by the index: sorted(set(weight_map values)), each of
 * which must exist (when collecting, a missing one is left out). */
static int list_from_index(const char *dir, listing *ls, problems *p)
{
    char **files = NULL;
    size_t cap = 0;
    int rc = HFDCP_OK;

    if (ls->ix.n > 0 && (files = malloc(ls->ix.n * sizeof *files)) == NULL)
        return hfdcp__nomem("the index's file names");
    for (size_t i = 0; i < ls->ix.n; i++)
        files[i] = ls->ix.files[i];
    qsort(files, ls->ix.n, sizeof *files, cmp_str);
    for (size_t i = 0; i < ls->ix.n; i++) {
        struct stat st;
        char *path;
        if (i > 0 && strcmp(files[i], files[i - 1]) == 0)
            continue;
        if ((path = hfdcp__path_join(dir, files[i])) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory listing '%s'", dir);
        if (stat(path, &st) != 0) {
            int err = errno;
            if (err == ENOENT || err == ENOTDIR)
                rc = hfdcp__error(HFDCP_ERR_NOT_FOUND,
                                  "index '%s' names file '%s', which does "
                                  "not exist",
                                  ls->index_path, files[i]);
            else
                rc = hfdcp__os_error(HFDCP_ERR_IO, err,
                                     "index '%s' names file '%s'",
                                     ls->index_path, files[i]);
        } else if (!S_ISREG(st.st_mode)) {
            rc = hfdcp__error(HFDCP_ERR_IO,
                              "index '%s' names file '%s', which is not a "
                              "regular file",
                              ls->index_path, files[i]);
        } else {
            HFDCP_CHECK(listing_add(ls, &cap, hfdcp__strdup(files[i]), path));
            continue;
        }
        free(path);
        HFDCP_CHECK(soft(p, rc));
    }
cleanup:
    free(files);
    return rc;
}

/* Every *.safetensors regular file (symbolic links followed, as in a
 * HuggingFace cache) of `dir`, sorted by name. */
static int list_directory(const char *dir, listing *ls)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t cap = 0, sl = strlen(SUFFIX);
    int rc = HFDCP_OK;

    if (d == NULL)
        return hfdcp__os_error(HFDCP_ERR_IO, errno,
                               "listing directory '%s'", dir);
    for (;;) {
        struct stat st;
        size_t len;
        char *path;

        errno = 0;
        if ((e = readdir(d)) == NULL) {
            if (errno != 0)
                HFDCP_CHECK(hfdcp__os_error(HFDCP_ERR_IO, errno,
                                            "listing directory '%s'", dir));
            break;
        }
        len = strlen(e->d_name);
        if (len < sl || strcmp(e->d_name + len - sl, SUFFIX) != 0)
            continue;
        if ((path = hfdcp__path_join(dir, e->d_name)) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory listing '%s'", dir);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(path); /* a directory or a dangling link: not a file */
            continue;
        }
        HFDCP_CHECK(listing_add(ls, &cap, hfdcp__strdup(e->d_name), path));
    }
    if (ls->n == 0)
        HFDCP_FAIL(HFDCP_ERR_NOT_FOUND, "no %s file in directory '%s'",
                   SUFFIX, dir);
    /* Sort by name; the paths follow their names. */
    qsort(ls->names, ls->n, sizeof *ls->names, cmp_str);
    for (size_t i = 0; i < ls->n; i++) {
        free(ls->paths[i]);
        if ((ls->paths[i] = hfdcp__path_join(dir, ls->names[i])) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory listing '%s'", dir);
    }
cleanup:
    closedir(d);
    return rc;
}

/* Lists the files of the checkpoint at `path`.  A problem that leaves no
 * file list is returned (after being recorded when collecting). */
static int list_checkpoint(const char *path, problems *p, listing *ls)
{
    struct stat st;
    int rc;

    memset(ls, 0, sizeof *ls);
    if ((rc = stat_path(path, "checkpoint path", &st)) != HFDCP_OK)
        return hard(p, rc);
    if (S_ISREG(st.st_mode)) {
        const char *slash = strrchr(path, '/');
        size_t cap = 0;
        ls->is_file = true;
        rc = listing_add(ls, &cap, hfdcp__strdup(slash ? slash + 1 : path),
                         hfdcp__strdup(path));
        return rc == HFDCP_OK ? rc : hard(p, rc);
    }
    if (!S_ISDIR(st.st_mode))
        return hard(p, hfdcp__error(HFDCP_ERR_NOT_FOUND,
                                    "checkpoint path '%s' is neither a file "
                                    "nor a directory",
                                    path));

    if ((ls->index_path = hfdcp__path_join(path, HFDCP_INDEX_NAME)) == NULL)
        return hard(p, hfdcp__nomem("a path"));
    if (stat(ls->index_path, &st) == 0) {
        char *text = NULL;
        size_t len = 0;
        if (!S_ISREG(st.st_mode))
            return hard(p, hfdcp__error(HFDCP_ERR_IO,
                                        "'%s' is not a regular file",
                                        ls->index_path));
        if ((rc = hfdcp__read_small_file(ls->index_path, &text, &len)) != HFDCP_OK)
            return hard(p, rc);
        rc = hfdcp__index_parse(text, len, ls->index_path, &ls->ix);
        free(text);
        if (rc != HFDCP_OK)
            return hard(p, rc);
        ls->has_index = true;
        if ((rc = list_from_index(path, ls, p)) != HFDCP_OK)
            return hard(p, rc);
        return HFDCP_OK;
    }
    if (errno != ENOENT)
        return hard(p, hfdcp__os_error(HFDCP_ERR_IO, errno, "stat of '%s'",
                                       ls->index_path));
    if ((rc = list_directory(path, ls)) != HFDCP_OK)
        return hard(p, rc);
    return HFDCP_OK;
}

static void listing_pack(const listing *ls, hfdcp__buf *b)
{
    hfdcp__buf_put_u64(b, ls->is_file);
    hfdcp__buf_put_u64(b, ls->has_index);
    hfdcp__buf_put_str(b, ls->index_path ? ls->index_path : "");
    if (ls->has_index) {
        hfdcp__buf_put_u64(b, ls->ix.total_size);
        hfdcp__buf_put_u64(b, ls->ix.n);
        for (size_t i = 0; i < ls->ix.n; i++) {
            hfdcp__buf_put_str(b, ls->ix.names[i]);
            hfdcp__buf_put_str(b, ls->ix.files[i]);
        }
    }
    hfdcp__buf_put_u64(b, ls->n);
    for (size_t i = 0; i < ls->n; i++) {
        hfdcp__buf_put_str(b, ls->names[i]);
        hfdcp__buf_put_str(b, ls->paths[i]);
    }
}

/* A count read from a message, bounded by what the message can hold
 * (every item takes at least 8 bytes). */
static bool get_count(hfdcp__rbuf *r, uint64_t *n)
{
    if (!hfdcp__rbuf_get_u64(r, n) || *n > (uint64_t)(r->end - r->p) / 8) {
        r->bad = true;
        return false;
    }
    return true;
}

static int listing_unpack(const void *data, size_t len, listing *ls)
{
    hfdcp__rbuf r;
    uint64_t v, n;

    memset(ls, 0, sizeof *ls);
    hfdcp__rbuf_init(&r, data, len);
    hfdcp__rbuf_get_u64(&r, &v);
    ls->is_file = v != 0;
    hfdcp__rbuf_get_u64(&r, &v);
    hfdcp__rbuf_get_str(&r, &ls->index_path);
    if (v != 0 && !r.bad) {
        ls->has_index = true;
        hfdcp__rbuf_get_u64(&r, &ls->ix.total_size);
        if (get_count(&r, &n) && n > 0) {
            ls->ix.names = calloc((size_t)n, sizeof *ls->ix.names);
            ls->ix.files = calloc((size_t)n, sizeof *ls->ix.files);
            if (ls->ix.names == NULL || ls->ix.files == NULL)
                r.bad = true;
            for (uint64_t i = 0; i < n && !r.bad; i++) {
                hfdcp__rbuf_get_str(&r, &ls->ix.names[i]);
                hfdcp__rbuf_get_str(&r, &ls->ix.files[i]);
                ls->ix.n = (size_t)i + 1;
            }
        }
    }
    if (get_count(&r, &n) && n > 0) {
        ls->names = calloc((size_t)n, sizeof *ls->names);
        ls->paths = calloc((size_t)n, sizeof *ls->paths);
        if (ls->names == NULL || ls->paths == NULL)
            r.bad = true;
        for (uint64_t i = 0; i < n && !r.bad; i++) {
            hfdcp__rbuf_get_str(&r, &ls->names[i]);
            hfdcp__rbuf_get_str(&r, &ls->paths[i]);
            ls->n = (size_t)i + 1;
        }
    }
    if (r.bad || r.p != r.end) {
        listing_free(ls);
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "out of memory unpacking the list of files");
    }
    return HFDCP_OK;
}

/* ---- step 2: read ---- */

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
static int read_header(hfdcp__file *f)
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

static void file_pack(size_t index, const hfdcp__file *f, hfdcp__buf *b)
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

/* Unpacks one file packed by file_pack() into files[index] (which must
 * still be empty).  false on a malformed message or out of memory. */
static bool file_unpack(hfdcp__rbuf *r, hfdcp__file *files, size_t n_files)
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
    if (!get_count(r, &n))
        return false;
    if (n > 0 && (h->meta = calloc((size_t)n, sizeof *h->meta)) == NULL)
        return false;
    for (uint64_t i = 0; i < n; i++) {
        h->n_meta = (size_t)i + 1;
        if (!hfdcp__rbuf_get_str(r, &h->meta[i].key) ||
            !hfdcp__rbuf_get_str(r, &h->meta[i].value))
            return false;
    }
    if (!get_count(r, &n))
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

/* ---- step 3: merge ---- */

/* One appearance of a stored name: entry `entry` of file `file`. */
typedef struct {
    size_t file, entry;
} occurrence;

typedef struct {
    const char *stored; /* the stored name (owned by a header) */
    size_t first, n;    /* its occurrences: occ[first .. first + n) */
} group;

typedef struct {
    const listing *ls;
    hfdcp__file *files;
    const bool *readable; /* per file; NULL: all */
    const hfdcp_key_map *km;
    problems *p;
    const char **file_names; /* ls->names, as the tiling check wants them */
    occurrence *occ;
    group *groups;
    size_t n_groups;
    hfdcp__strmap *group_of; /* stored name -> group */
    bool shards_only;        /* consolidation: DCP shard files only, and
                                shard problems are HFDCP_ERR_PLAN */
} merger;

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

/* The index against the files: every name in the file the index names,
 * every tensor of the files in the index (and mapped to its own file),
 * total_size equal to the tensors' bytes. */
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

    for (size_t i = 0; i < ix->n; i++) {
        size_t f = find_file(ls, ix->files[i]), g;
        bool held = false;
        if (f == SIZE_MAX || !readable(m, f))
            continue; /* already reported */
        if (hfdcp__strmap_get(m->group_of, ix->names[i], &g))
            for (size_t k = 0; k < m->groups[g].n && !held; k++)
                held = m->occ[m->groups[g].first + k].file == f;
        if (!held) {
            rc = hfdcp__error(HFDCP_ERR_FORMAT,
                              "index '%s' maps tensor '%s' to file '%s', "
                              "which does not hold it",
                              ls->index_path, ix->names[i], ix->files[i]);
            HFDCP_CHECK(soft(m->p, rc));
        }
    }

    for (size_t f = 0; f < ls->n; f++) {
        const hfdcp__header *h = &m->files[f].hdr;
        if (!readable(m, f)) {
            all_read = false;
            continue;
        }
        if (!hfdcp__add_u64(bytes, h->data_size, &bytes))
            HFDCP_CHECK(hard(m->p, hfdcp__error(HFDCP_ERR_FORMAT,
                                                "the files of '%s' hold more "
                                                "than 2^64 bytes",
                                                ls->index_path)));
        for (size_t e = 0; e < h->n_entries; e++) {
            const char *name = h->entries[e].name;
            size_t i;
            if (!hfdcp__strmap_get(where, name, &i))
                rc = hfdcp__error(HFDCP_ERR_FORMAT,
                                  "tensor '%s' of file '%s' is not in the "
                                  "index '%s'",
                                  name, ls->names[f], ls->index_path);
            else if (strcmp(ix->files[i], ls->names[f]) != 0)
                rc = hfdcp__error(HFDCP_ERR_FORMAT,
                                  "tensor '%s' is in file '%s' but the index "
                                  "'%s' maps it to file '%s'",
                                  name, ls->names[f], ls->index_path,
                                  ix->files[i]);
            else
                continue;
            HFDCP_CHECK(soft(m->p, rc));
        }
    }
    if (all_read && bytes != ix->total_size) {
        rc = hfdcp__error(HFDCP_ERR_FORMAT,
                          "index '%s': metadata.total_size is %" PRIu64
                          " but the tensors of its files hold %" PRIu64
                          " bytes",
                          ls->index_path, ix->total_size, bytes);
        HFDCP_CHECK(soft(m->p, rc));
    }
    rc = HFDCP_OK;
cleanup:
    hfdcp__strmap_free(where);
    return rc;
}

static void tensor_clear(hfdcp__tensor *t)
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

/* A chunk with the ndim its comparison needs (qsort has no context). */
typedef struct {
    hfdcp__chunk c;
    int ndim;
} sortable_chunk;

static int cmp_chunk(const void *a, const void *b)
{
    const sortable_chunk *x = a, *y = b;
    for (int d = 0; d < x->ndim; d++)
        if (x->c.offsets[d] != y->c.offsets[d])
            return x->c.offsets[d] < y->c.offsets[d] ? -1 : 1;
    if (x->c.file != y->c.file)
        return x->c.file < y->c.file ? -1 : 1;
    return (x->c.file_offset > y->c.file_offset) -
           (x->c.file_offset < y->c.file_offset);
}

/* Chunks in row-major order of their offsets, then by file. */
static int sort_chunks(hfdcp__tensor *t)
{
    sortable_chunk *s;

    if (t->n_chunks < 2)
        return HFDCP_OK;
    if ((s = malloc(t->n_chunks * sizeof *s)) == NULL)
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "out of memory sorting the chunks of '%s'",
                            t->name);
    for (size_t i = 0; i < t->n_chunks; i++)
        s[i] = (sortable_chunk){t->chunks[i], t->ndim};
    qsort(s, t->n_chunks, sizeof *s, cmp_chunk);
    for (size_t i = 0; i < t->n_chunks; i++)
        t->chunks[i] = s[i].c;
    free(s);
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

/* The chunks of t from group g (offsets from DCP_SHARDING_INFO, else
 * zeros), and t's global shape: the max over chunks of offset + size. */
static int fill_chunks(const merger *m, const group *g, hfdcp__tensor *t)
{
    const occurrence *occ = &m->occ[g->first];

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
        (rc = fill_chunks(m, g, t)) == HFDCP_OK &&
        (!sharded || (rc = check_tiling(m, g, t)) == HFDCP_OK) &&
        (rc = hfdcp__tensor_bytes(t->dtype, t->ndim, t->shape, what,
                                  &t->nbytes)) == HFDCP_OK &&
        (rc = sort_chunks(t)) == HFDCP_OK) {
        *made = true;
        return HFDCP_OK;
    }
    tensor_clear(t);
    return soft(m->p, rc);
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const hfdcp__tensor *)a)->name,
                  ((const hfdcp__tensor *)b)->name);
}

/* Renames, groups and checks; on success *out takes over m->files. */
static int merge(merger *m, const char *path, hfdcp__catalog **out)
{
    const listing *ls = m->ls;
    hfdcp__catalog *c = calloc(1, sizeof *c);
    hfdcp__strmap *renamed = NULL; /* new name -> group */
    int rc = HFDCP_OK;

    if (c == NULL || (renamed = hfdcp__strmap_new()) == NULL ||
        (c->by_name = hfdcp__strmap_new()) == NULL ||
        (c->path = hfdcp__strdup(path)) == NULL ||
        (m->file_names = malloc((ls->n + 1) * sizeof *m->file_names)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory for the catalog of '%s'",
                   path);
    for (size_t f = 0; f < ls->n; f++) {
        m->file_names[f] = ls->names[f];
        if (m->shards_only && !m->files[f].hdr.sharded)
            HFDCP_FAIL(HFDCP_ERR_FORMAT,
                       "file '%s' has no DCP_SHARDING_INFO in its "
                       "__metadata__: it is not a per-rank shard file, and "
                       "consolidation reads only those",
                       ls->paths[f]);
    }
    HFDCP_CHECK(group_names(m));
    if (ls->has_index)
        HFDCP_CHECK(check_index(m));
    if ((c->tensors = calloc(m->n_groups + 1, sizeof *c->tensors)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory for the catalog of '%s'",
                   path);

    for (size_t g = 0; g < m->n_groups; g++) {
        const group *gr = &m->groups[g];
        char *name = NULL;
        size_t other;
        bool made;

        if (m->km != NULL)
            HFDCP_CHECK(hfdcp__key_map_rename(m->km, gr->stored, &name));
        else if ((name = hfdcp__strdup(gr->stored)) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory renaming '%s'",
                       gr->stored);
        if (hfdcp__strmap_get(renamed, name, &other)) {
            const group *og = &m->groups[other];
            rc = hfdcp__error(HFDCP_ERR_FORMAT,
                              "tensors '%s' (file '%s') and '%s' (file '%s') "
                              "are both renamed to '%s'",
                              og->stored, ls->names[m->occ[og->first].file],
                              gr->stored, ls->names[m->occ[gr->first].file],
                              name);
            free(name);
            HFDCP_CHECK(soft(m->p, rc));
            continue;
        }
        rc = hfdcp__strmap_put(renamed, name, g, NULL);
        if (rc != HFDCP_OK) {
            free(name);
            goto cleanup;
        }
        HFDCP_CHECK(build_tensor(m, gr, name, &c->tensors[c->n_tensors],
                                 &made));
        if (made)
            c->n_tensors++;
    }
    if (m->p->n > 0) {
        rc = m->p->list[0].status;
        goto cleanup;
    }

    qsort(c->tensors, c->n_tensors, sizeof *c->tensors, cmp_tensor);
    for (size_t i = 0; i < c->n_tensors; i++) {
        HFDCP_CHECK(hfdcp__strmap_put(c->by_name, c->tensors[i].name, i, NULL));
        if (!hfdcp__add_u64(c->total_size, c->tensors[i].nbytes,
                            &c->total_size))
            HFDCP_FAIL(HFDCP_ERR_FORMAT,
                       "the tensors of '%s' hold more than 2^64 bytes", path);
    }
    for (size_t f = 0; f < ls->n; f++)
        c->sharded = c->sharded || m->files[f].hdr.sharded;
    c->is_file = ls->is_file;
    c->has_index = ls->has_index;
    c->n_files = ls->n;
    c->files = m->files;
    m->files = NULL;
    *out = c;
    c = NULL;
cleanup:
    hfdcp__strmap_free(renamed);
    hfdcp__catalog_free(c);
    return rc;
}

static void merger_free(merger *m)
{
    if (m->files) {
        for (size_t f = 0; f < m->ls->n; f++) {
            free(m->files[f].name);
            free(m->files[f].path);
            hfdcp__header_free(&m->files[f].hdr);
        }
        free(m->files);
    }
    free(m->file_names);
    free(m->occ);
    free(m->groups);
    hfdcp__strmap_free(m->group_of);
    memset(m, 0, sizeof *m);
}

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

    rc = list_checkpoint(path, &p, &ls);
    if (rc != HFDCP_OK)
        goto cleanup;
    m.ls = &ls;
    m.p = &p;
    HFDCP_CHECK(new_files(&ls, &m.files));
    if ((ok = calloc(ls.n + 1, sizeof *ok)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory verifying '%s'", path);
    for (size_t f = 0; f < ls.n; f++) {
        rc = read_header(&m.files[f]);
        ok[f] = rc == HFDCP_OK;
        if (rc != HFDCP_OK)
            HFDCP_CHECK(soft(&p, rc));
    }
    m.readable = ok;
    rc = merge(&m, path, &c);
cleanup:
    if (rc == HFDCP_OK && p.n > 0)
        rc = p.list[0].status;
    if (rc == HFDCP_OK && out) {
        *out = c;
        c = NULL;
    }
    hfdcp__catalog_free(c);
    free(ok);
    if (m.ls)
        merger_free(&m);
    listing_free(&ls);
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
        rc = list_checkpoint(path, &stop, ls);
        if (rc == HFDCP_OK) {
            listing_pack(ls, &b);
            rc = hfdcp__buf_status(&b);
        }
        data = b.data;
        len = b.len;
    }
    HFDCP_CHECK(hfdcp__agree(comm, rc));
    HFDCP_CHECK(hfdcp__bcast_bytes(comm, 0, &data, &len));
    if (rank != 0) {
        rc = listing_unpack(data, len, ls);
        free(data);
    }
    rc = hfdcp__agree(comm, rc);
cleanup:
    hfdcp__buf_free(&b);
    if (rc != HFDCP_OK)
        listing_free(ls);
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
        if ((rc = read_header(&files[f])) != HFDCP_OK) {
            fail_key = f;
            break;
        }
        file_pack(f, &files[f], mine);
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
            if (!file_unpack(&rb, files, ls->n))
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
    rc = hfdcp__agree(comm, merge(&m, path, &c));
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
        merger_free(&m);
    listing_free(&ls);
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
        tensor_clear(&c->tensors[i]);
    free(c->tensors);
    hfdcp__strmap_free(c->by_name);
    free(c->path);
    free(c);
}
