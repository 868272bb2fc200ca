/*
 * publish.c - publication of a commit's files, shared by the writer
 * (writer.c) and consolidation (consolidate.c): temporary names, shared
 * creation of files, renames, the index written last, directory sync,
 * removal of a failed commit's files.  It calls neither of them.
 *
 * names    every file of a commit is written under a temporary name,
 *          HFDCP_TMP_PREFIX "<16 hex digits of the commit's tag>-<final
 *          name>.tmp", in the target directory (hfdcp__paths_make; rank 0
 *          draws the tag, hfdcp__random_tag);
 * create   rank 0 makes the directory (hfdcp__make_dir), creates each file
 *          and reserves its blocks, then every rank checks that it sees
 *          it (hfdcp__create_shared);
 * publish  rank 0, once every file is durable under its temporary name
 *          (hfdcp__publish): write the index under a temporary name and
 *          sync it, remove the old index, then stale checkpoint files,
 *          rename the new files into place, sync the directory, rename
 *          the index, sync the directory.  At no moment does the directory
 *          hold an index naming files that are not all there.  A failure
 *          removes every file of this commit, the index first when it was
 *          already in place.  A sharded save (writer.c) renames its own
 *          files but removes old ones and syncs with hfdcp__remove_old and
 *          hfdcp__sync_dir.
 */
#define _GNU_SOURCE /* fallocate() */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hfdcp_testing.h"

/* ---- temporary names ---- */

/* The temporary and final paths of one commit (hfdcp_internal.h: shared
 * with writer.c and consolidate.c, as the functions named hfdcp__ below). */
typedef hfdcp__paths paths_t;

void hfdcp__paths_free(paths_t *p)
{
    for (size_t f = 0; f < p->n; f++) {
        if (p->tmp)
            free(p->tmp[f]);
        if (p->final)
            free(p->final[f]);
    }
    free(p->tmp);
    free(p->final);
    free(p->index_tmp);
    free(p->index_final);
    memset(p, 0, sizeof *p);
}

int hfdcp__paths_make(const char *dir, const hfdcp__wplan *plan,
                      uint64_t tag, paths_t *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->tag, sizeof p->tag, "%016" PRIx64, tag);
    p->n = plan->n_files;
    p->tmp = calloc(p->n, sizeof *p->tmp);
    p->final = calloc(p->n, sizeof *p->final);
    if (p->tmp == NULL || p->final == NULL)
        return hfdcp__nomem("file names");
    for (size_t f = 0; f < p->n; f++) {
        char *tmp = hfdcp__asprintf(HFDCP_TMP_PREFIX "%s-%s.tmp", p->tag,
                                    plan->file_names[f]);
        if (tmp == NULL)
            return hfdcp__nomem("file names");
        p->tmp[f] = hfdcp__path_join(dir, tmp);
        free(tmp);
        p->final[f] = hfdcp__path_join(dir, plan->file_names[f]);
        if (p->tmp[f] == NULL || p->final[f] == NULL)
            return hfdcp__nomem("file names");
    }
    char *itmp = hfdcp__asprintf(HFDCP_TMP_PREFIX "%s-%s.tmp", p->tag,
                                 HFDCP_INDEX_NAME);
    if (itmp == NULL)
        return hfdcp__nomem("file names");
    p->index_tmp = hfdcp__path_join(dir, itmp);
    free(itmp);
    p->index_final = hfdcp__path_join(dir, HFDCP_INDEX_NAME);
    if (p->index_tmp == NULL || p->index_final == NULL)
        return hfdcp__nomem("file names");
    return HFDCP_OK;
}

/* Rank 0's random tag for temporary names. */
uint64_t hfdcp__random_tag(void)
{
    uint64_t v = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    struct timespec ts;

    if (f != NULL) {
        if (fread(&v, sizeof v, 1, f) != 1)
            v = 0;
        fclose(f);
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    v ^= ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^
         ((uint64_t)getpid() << 16);
    return v;
}

/* mkdir -p, then check that `path` is a directory. */
int hfdcp__make_dir(const char *path)
{
    char *p = hfdcp__strdup(path);
    struct stat st;
    int rc = HFDCP_OK;

    if (p == NULL)
        return hfdcp__nomem("a path");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                                 "creating the directory '%s' for '%s'", p,
                                 path);
            goto cleanup;
        }
        *s = '/';
    }
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                             "creating the checkpoint directory '%s'", path);
        goto cleanup;
    }
    if (stat(p, &st) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                             "checking the checkpoint directory '%s'", path);
    else if (!S_ISDIR(st.st_mode))
        rc = hfdcp__error(HFDCP_ERR_IO,
                          "the checkpoint path '%s' exists and is not a "
                          "directory",
                          path);
cleanup:
    free(p);
    return rc;
}

/* ---- shared creation of files ---- */

/* Rank 0 creates the file and reserves its blocks before any data moves,
 * so that a full disk (or a quota, or a file size limit) is an error here
 * and not a silent short write later.  Note: Open MPI 4.1's OMPIO does not
 * return the error of a failed pwritev from MPI_File_write_all (it only
 * prints it), so without this a full disk could go unnoticed until the
 * index is written.  File systems without fallocate() (EOPNOTSUPP) are
 * written without a reservation; glibc's posix_fallocate() is not used
 * because it falls back to writing zeros, doubling the I/O. */
int hfdcp__reserve_space(const char *path, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    int rc = HFDCP_OK;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno, "creating '%s'", path);
#if defined(__linux__)
    if (size > 0 && size <= (uint64_t)INT64_MAX &&
        fallocate(fd, 0, 0, (off_t)size) != 0 && errno != EOPNOTSUPP &&
        errno != ENOSYS && errno != EINVAL)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                             "reserving %" PRIu64 " bytes for '%s'", size, path);
#endif
    /* Where fallocate cannot reserve, at least the size is the file's. */
    if (rc == HFDCP_OK && size <= (uint64_t)INT64_MAX &&
        ftruncate(fd, (off_t)size) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                             "setting the size of '%s' to %" PRIu64 " bytes",
                             path, size);
    if (close(fd) != 0 && rc == HFDCP_OK)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "closing '%s'", path);
    return rc;
}

/* Collective: rank 0 creates `path` and reserves `size` bytes; then every
 * other rank checks that it sees the file.  A directory that is not shared
 * by every rank (node-local storage on a cluster) is an error naming the
 * rank here: left to MPI_File_open, it hangs in OMPIO (its shared file
 * pointer component waits in a barrier) and fails without a reason in
 * ROMIO.  Agreed status. */
int hfdcp__create_shared(MPI_Comm comm, const char *path, uint64_t size)
{
    struct stat st;
    int rank, rc = HFDCP_OK;

    MPI_Comm_rank(comm, &rank);
    if (rank == 0)
        rc = hfdcp__reserve_space(path, size);
    HFDCP_TRY(hfdcp__agree(comm, rc));
    if (rank != 0 && stat(path, &st) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                             "rank %d cannot see '%s', which rank 0 has just "
                             "created: the directory must be on a file "
                             "system shared by every rank",
                             rank, path);
    return hfdcp__agree(comm, rc);
}

/* ---- publication (rank 0) ---- */

int hfdcp__publish_fault = 0;

int hfdcp__sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY), rc = HFDCP_OK;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno,
                               "opening the directory '%s' to sync it", path);
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "syncing the directory '%s'",
                             path);
    close(fd);
    return rc;
}

/* Writes `len` bytes to a new file and makes them durable. */
static int write_durable(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    int rc = HFDCP_OK;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno, "creating '%s'", path);
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "writing '%s'", path);
            break;
        }
        data += n;
        len -= (size_t)n;
    }
    if (rc == HFDCP_OK && fsync(fd) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "syncing '%s'", path);
    if (close(fd) != 0 && rc == HFDCP_OK)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "closing '%s'", path);
    return rc;
}

/* Files of an earlier checkpoint (or an interrupted save) that a loader
 * listing the directory would pick up.  The new files' names are not
 * stale: renaming replaces them atomically. */
static bool is_stale(const char *name, const char *own_tmp_prefix,
                     const hfdcp__strmap *new_names)
{
    static const char *const patterns[] = {
        "model.safetensors",
        "model-*-of-*.safetensors",
        "model.safetensors-*-of-*.safetensors",
        "shard-*.safetensors",
        HFDCP_TMP_PREFIX "*",
    };

    if (strncmp(name, own_tmp_prefix, strlen(own_tmp_prefix)) == 0 ||
        (new_names != NULL && hfdcp__strmap_get(new_names, name, NULL)))
        return false;
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++)
        if (fnmatch(patterns[i], name, FNM_PERIOD) == 0)
            return true;
    return false;
}

/* The names of stale files in the directory: none of this commit's
 * temporary files (tag `tag`), none of the names in `keep` (may be
 * NULL). */
static int list_stale(const char *dir, const char *tag,
                      const hfdcp__strmap *keep, char ***out, size_t *out_n)
{
    char own[64];
    DIR *d = NULL;
    struct dirent *e;
    char **list = NULL;
    size_t n = 0, cap = 0;
    int rc = HFDCP_OK;

    snprintf(own, sizeof own, HFDCP_TMP_PREFIX "%s-", tag);
    if ((d = opendir(dir)) == NULL) {
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "listing '%s'", dir);
        goto cleanup;
    }
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (!is_stale(e->d_name, own, keep))
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 16;
            char **l = realloc(list, c * sizeof *l);
            if (l == NULL)
                HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory listing '%s'",
                           dir);
            list = l;
            cap = c;
        }
        if ((list[n] = hfdcp__strdup(e->d_name)) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory listing '%s'", dir);
        n++;
        errno = 0;
    }
    if (errno != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "listing '%s'", dir);
cleanup:
    if (d != NULL)
        closedir(d);
    if (rc != HFDCP_OK) {
        for (size_t i = 0; i < n; i++)
            free(list[i]);
        free(list);
        return rc;
    }
    *out = list;
    *out_n = n;
    return HFDCP_OK;
}

static int remove_file(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        return hfdcp__os_error(HFDCP_ERR_IO, errno, "removing '%s'", path);
    return HFDCP_OK;
}

/* Rank 0: removes the old index of `dir` first (from then on no index
 * names missing files), then its stale files (list_stale). */
int hfdcp__remove_old(const char *dir, const char *tag,
                      const hfdcp__strmap *keep)
{
    char **stale = NULL, *index = NULL;
    size_t n_stale = 0;
    int rc = HFDCP_OK;

    HFDCP_CHECK(list_stale(dir, tag, keep, &stale, &n_stale));
    if ((index = hfdcp__path_join(dir, HFDCP_INDEX_NAME)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory naming a file");
    HFDCP_CHECK(remove_file(index));
    for (size_t i = 0; i < n_stale; i++) {
        char *p = hfdcp__path_join(dir, stale[i]);
        if (p == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory naming a file");
        rc = remove_file(p);
        free(p);
        HFDCP_CHECK(rc);
    }
cleanup:
    for (size_t i = 0; i < n_stale; i++)
        free(stale[i]);
    free(stale);
    free(index);
    return rc;
}

/* Rank 0: the new files are durable under temporary names; put them in
 * place.  On failure, every file of this commit is removed. */
int hfdcp__publish(const char *dir, const hfdcp__wplan *plan,
                   const paths_t *paths)
{
    char *json = NULL;
    size_t json_len = 0, renamed = 0;
    hfdcp__strmap *keep = hfdcp__strmap_new();
    int rc = HFDCP_OK;
    bool placed = false; /* the index renamed into place */

    /* Everything that can fail without touching the old checkpoint. */
    if (keep == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory listing '%s'", dir);
    for (size_t f = 0; f < plan->n_files; f++)
        HFDCP_CHECK(hfdcp__strmap_put(keep, plan->file_names[f], f, NULL));
    HFDCP_CHECK(hfdcp__index_serialize(&plan->index, &json, &json_len));
    HFDCP_CHECK(write_durable(paths->index_tmp, json, json_len));

    HFDCP_CHECK(hfdcp__remove_old(dir, paths->tag, keep));
    for (; renamed < plan->n_files; renamed++) {
        if (hfdcp__publish_fault == 1 && renamed == plan->n_files - 1)
            errno = EIO;
        else if (rename(paths->tmp[renamed], paths->final[renamed]) == 0)
            continue;
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "renaming '%s' to '%s'",
                             paths->tmp[renamed], paths->final[renamed]);
        goto cleanup;
    }
    HFDCP_CHECK(hfdcp__sync_dir(dir));
    if (rename(paths->index_tmp, paths->index_final) != 0) {
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "renaming '%s' to '%s'",
                             paths->index_tmp, paths->index_final);
        goto cleanup;
    }
    placed = true;
    rc = hfdcp__publish_fault == 2
             ? hfdcp__os_error(HFDCP_ERR_IO, EIO, "syncing the directory "
                               "'%s' (test fault)", dir)
             : hfdcp__sync_dir(dir);
cleanup:
    if (rc != HFDCP_OK) {
        /* the index first: it must never name files that are gone */
        if (placed)
            unlink(paths->index_final);
        for (size_t f = 0; f < renamed; f++)
            unlink(paths->final[f]);
        unlink(paths->index_tmp);
    }
    hfdcp__strmap_free(keep);
    free(json);
    return rc;
}
