/*
 * catalog_list.c - step 1 of the catalog (see catalog.c): which files a
 * checkpoint is made of.  The index's weight_map values when
 * model.safetensors.index.json is present (parsed as the loaders read it:
 * strict JSON, metadata optional; each file checked to exist), else every
 * *.safetensors of the directory, else the one file given; sorted by name.
 * Rank 0 lists, so the listing is packed here for the broadcast and
 * unpacked on the other ranks.
 *
 * Also the list of problems every step records into: open stops at the
 * first, verify collects them all.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog_internal.h"

#define SUFFIX ".safetensors"

/* ---- problems: stop at the first (open) or collect them all (verify) ---- */

/* Appends a problem with `message` (malloc'd, taken over; NULL: out of
 * memory). */
static int add_problem(problems *p, int status, char *message, bool warning)
{
    if (message == NULL)
        return hfdcp__nomem("a problem's message");
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        hfdcp__problem *l = realloc(p->list, cap * sizeof *l);
        if (l == NULL) {
            free(message);
            return hfdcp__nomem("the list of problems");
        }
        p->list = l;
        p->cap = cap;
    }
    p->list[p->n++] = (hfdcp__problem){status, message, warning};
    return HFDCP_OK;
}

/* Records the current message as a problem of `status` when collecting.
 * Returns HFDCP_OK when collecting (go on), `status` otherwise (stop);
 * HFDCP_ERR_NOMEM if the problem cannot be recorded. */
int hfdcp__problems_soft(problems *p, int status)
{
    if (!p->collect)
        return status;
    return add_problem(p, status, hfdcp__strdup(hfdcp_last_error()), false);
}

int hfdcp__problems_warn(problems *p, int status, const char *fmt, ...)
{
    va_list ap, again;
    char *message;
    int len;

    if (!p->collect)
        return HFDCP_OK;
    va_start(ap, fmt);
    va_copy(again, ap);
    len = vsnprintf(NULL, 0, fmt, ap);
    message = len < 0 ? NULL : malloc((size_t)len + 1);
    if (message != NULL)
        vsnprintf(message, (size_t)len + 1, fmt, again);
    va_end(again);
    va_end(ap);
    return add_problem(p, status, message, true);
}

int hfdcp__problems_status(const problems *p)
{
    for (size_t i = 0; i < p->n; i++)
        if (!p->list[i].warning)
            return p->list[i].status;
    return HFDCP_OK;
}

/* Records a problem that ends the work (nothing sensible can follow):
 * returns `status` in both modes. */
int hfdcp__problems_hard(problems *p, int status)
{
    int rc = hfdcp__problems_soft(p, status);
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

void hfdcp__listing_free(listing *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        free(ls->names[i]);
        free(ls->paths[i]);
    }
    free(ls->names);
    free(ls->paths);
    if (ls->has_index)
        hfdcp__index_free(&ls->ix);
    free(ls->index_missing);
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
    if (ls->ix.n > 1)
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
        HFDCP_CHECK(hfdcp__problems_soft(p, rc));
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
int hfdcp__catalog_list(const char *path, problems *p, listing *ls)
{
    struct stat st;
    int rc;

    memset(ls, 0, sizeof *ls);
    if ((rc = stat_path(path, "checkpoint path", &st)) != HFDCP_OK)
        return hfdcp__problems_hard(p, rc);
    if (S_ISREG(st.st_mode)) {
        const char *slash = strrchr(path, '/');
        size_t cap = 0;
        ls->is_file = true;
        rc = listing_add(ls, &cap, hfdcp__strdup(slash ? slash + 1 : path),
                         hfdcp__strdup(path));
        return rc == HFDCP_OK ? rc : hfdcp__problems_hard(p, rc);
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = hfdcp__error(HFDCP_ERR_NOT_FOUND,
                          "checkpoint path '%s' is neither a file nor a "
                          "directory",
                          path);
        return hfdcp__problems_hard(p, rc);
    }

    if ((ls->index_path = hfdcp__path_join(path, HFDCP_INDEX_NAME)) == NULL)
        return hfdcp__problems_hard(p, hfdcp__nomem("a path"));
    if (stat(ls->index_path, &st) == 0) {
        const char *missing = NULL;
        char *text = NULL;
        size_t len = 0;
        if (!S_ISREG(st.st_mode)) {
            rc = hfdcp__error(HFDCP_ERR_IO, "'%s' is not a regular file",
                              ls->index_path);
            return hfdcp__problems_hard(p, rc);
        }
        if ((rc = hfdcp__read_small_file(ls->index_path, &text, &len)) != HFDCP_OK)
            return hfdcp__problems_hard(p, rc);
        rc = hfdcp__index_parse_lenient(text, len, ls->index_path, &ls->ix,
                                        &missing);
        free(text);
        if (rc != HFDCP_OK)
            return hfdcp__problems_hard(p, rc);
        ls->has_index = true;
        if (missing != NULL &&
            (ls->index_missing = hfdcp__strdup(missing)) == NULL)
            return hfdcp__problems_hard(p, hfdcp__nomem("the index"));
        if ((rc = list_from_index(path, ls, p)) != HFDCP_OK)
            return hfdcp__problems_hard(p, rc);
        return HFDCP_OK;
    }
    if (errno != ENOENT) {
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "stat of '%s'",
                             ls->index_path);
        return hfdcp__problems_hard(p, rc);
    }
    if ((rc = list_directory(path, ls)) != HFDCP_OK)
        return hfdcp__problems_hard(p, rc);
    return HFDCP_OK;
}

void hfdcp__listing_pack(const listing *ls, hfdcp__buf *b)
{
    hfdcp__buf_put_u64(b, ls->is_file);
    hfdcp__buf_put_u64(b, ls->has_index);
    hfdcp__buf_put_str(b, ls->index_path ? ls->index_path : "");
    if (ls->has_index) {
        hfdcp__buf_put_str(b, ls->index_missing ? ls->index_missing : "");
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
bool hfdcp__catalog_get_count(hfdcp__rbuf *r, uint64_t *n)
{
    if (!hfdcp__rbuf_get_u64(r, n) || *n > (uint64_t)(r->end - r->p) / 8) {
        r->bad = true;
        return false;
    }
    return true;
}

int hfdcp__listing_unpack(const void *data, size_t len, listing *ls)
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
        hfdcp__rbuf_get_str(&r, &ls->index_missing);
        if (ls->index_missing != NULL && ls->index_missing[0] == '\0') {
            free(ls->index_missing);
            ls->index_missing = NULL;
        }
        hfdcp__rbuf_get_u64(&r, &ls->ix.total_size);
        if (hfdcp__catalog_get_count(&r, &n) && n > 0) {
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
    if (hfdcp__catalog_get_count(&r, &n) && n > 0) {
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
        hfdcp__listing_free(ls);
        return hfdcp__error(HFDCP_ERR_NOMEM,
                            "out of memory unpacking the list of files");
    }
    return HFDCP_OK;
}
