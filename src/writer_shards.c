/*
 * writer_shards.c - the sharded save (save_sharded): each rank writes the
 * chunks it was chosen to write into its own DCP shard files, then the
 * shards are published and, with consolidated_output_path, consolidated.
 *
 * make     per plan file in which this rank writes, one shard file
 *          "shard-<rank+1>-model-<i>-of-<n>.safetensors": its entries in
 *          layout order and its header, made before anything is written
 *          (a chunk a shard file cannot hold is refused there);
 * write    POSIX writes straight from the chunks' memory and fsync, under
 *          temporary names, up to thread_count files at once (the calling
 *          thread and helper threads, which make no MPI call); each
 *          chunk's CRC-32C is taken from the bytes as they are written and
 *          filled into the header, written last (unless no_checksums);
 * publish  rank 0 removes the old index and stale files, then every rank
 *          renames its own files and syncs the directory.  A failure
 *          removes every file of this commit, temporary or renamed;
 * consolidate  hfdcp_consolidate() of the published shards into
 *          consolidated_output_path, under the file map that lays them
 *          out as a direct save of the same plan would.
 *
 * It uses writer_direct.c's shared parts (writer_internal.h), never
 * writer.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "writer_internal.h"

/* ---- shard files and their headers ---- */

/* One entry of a shard file and the chunk it comes from.  The entry comes
 * first, so that hfdcp__entry_layout_cmp sorts these. */
typedef struct {
    hfdcp__entry e;
    size_t chunk;
    const void *data; /* what is written: the chunk's memory, or a copy */
} shard_entry_t;

/* Layout order, then registration order (qsort is not stable). */
static int shard_entry_cmp(const void *a, const void *b)
{
    const shard_entry_t *x = a, *y = b;
    int c = hfdcp__entry_layout_cmp(&x->e, &y->e);

    if (c != 0)
        return c;
    return (x->chunk > y->chunk) - (x->chunk < y->chunk);
}

/* One shard file of this rank. */
typedef struct hfdcp__shard {
    char *tmp, *final;      /* paths */
    char *header;           /* 8-byte length + JSON; with checksums, its
                               CRC-32C values are filled in as the data
                               is written */
    size_t header_len;
    shard_entry_t *entries; /* in layout order */
    size_t n_entries;
    uint64_t *crc_at;       /* with checksums, per entry: where its CRC's
                               hex digits are in `header`; else NULL */
} shard_t;

void hfdcp__shards_free(hfdcp__shards *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->files[i].tmp);
        free(s->files[i].final);
        free(s->files[i].header);
        free(s->files[i].entries);
        free(s->files[i].crc_at);
    }
    free(s->files);
    memset(s, 0, sizeof *s);
}

/* The file index and the largest index of a file of the plan:
 * "model-00002-of-00005.safetensors" gives 2 and 5, "model.safetensors" 1
 * and 1 (plan.c names files so).  So shard file names carry the N of the
 * plan's names: the file map's largest index, else the number of files. */
static int plan_file_index(const char *name, int *idx, int *max)
{
    int n = 0;

    if (strcmp(name, "model.safetensors") == 0) {
        *idx = *max = 1;
        return HFDCP_OK;
    }
    if (sscanf(name, "model-%d-of-%d.safetensors%n", idx, max, &n) == 2 &&
        name[n] == '\0' && *idx >= 1 && *idx <= *max)
        return HFDCP_OK;
    return hfdcp__error(HFDCP_ERR_INTERNAL,
                        "the plan's file name '%s' carries no file index",
                        name);
}

static bool zero_elements(int ndim, const int64_t *shape)
{
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0)
            return true;
    return false;
}

/* The entries of shard file `sh` of plan file f: this rank's chunks there
 * that the plan chose it to write, in hfdcp__entry_layout_cmp order
 * (sh->entries has room for all of the file's chunks).  A chunk's entry
 * has the chunk's shape and its offsets in the tensor
 * (DCP_SHARDING_INFO); a chunk of a tensor with no elements is described
 * as the whole tensor at offset 0 (the same zero bytes), so that its
 * global shape can be read back from the shards. */
static void shard_entries(const hfdcp__wjob *job, size_t f, shard_t *sh)
{
    const hfdcp__wbuckets *b = &job->by_file;
    size_t n = 0;

    for (size_t k = b->first[f]; k < b->first[f + 1]; k++) {
        size_t i = b->by_file[k];
        const hfdcp__wchunk *c = &job->chunks[i];
        shard_entry_t *x = &sh->entries[n];

        if (!job->plan->assign[i].write)
            continue;
        x->chunk = i;
        x->data = c->data;
        x->e.name = (char *)c->name;
        x->e.dtype = c->dtype;
        x->e.ndim = c->ndim;
        if (zero_elements(c->ndim, c->shape)) {
            x->e.shape = (int64_t *)c->shape;
            x->e.offsets = (int64_t *)hfdcp__zeros;
        } else {
            x->e.shape = (int64_t *)c->sizes;
            x->e.offsets = (int64_t *)c->offsets;
        }
        n++;
    }
    sh->n_entries = n;
    qsort(sh->entries, n, sizeof *sh->entries, shard_entry_cmp);
}

/* Lays out the sorted entries of `sh` one after the other from data
 * offset 0 into ent[] (the header's entries) and *data_size: the empty
 * chunks of an empty tensor become one entry, two chunks of one tensor
 * are refused. */
static int shard_layout(const hfdcp__wjob *job, shard_t *sh,
                        hfdcp__entry *ent, uint64_t *data_size)
{
    size_t n = sh->n_entries;
    uint64_t at = 0;

    for (size_t k = 0; k < n; k++) {
        shard_entry_t *x = &sh->entries[k];
        uint64_t bytes;

        if (k > 0 && strcmp(x->e.name, sh->entries[k - 1].e.name) == 0 &&
            zero_elements(x->e.ndim, job->chunks[x->chunk].shape)) {
            /* Two empty chunks of an empty tensor: one whole-tensor entry
             * says it all. */
            memmove(x, x + 1, (n - k - 1) * sizeof *x);
            n--;
            k--;
            continue;
        }
        if (k > 0 && strcmp(x->e.name, sh->entries[k - 1].e.name) == 0) {
            const hfdcp__wchunk *c0 = &job->chunks[sh->entries[k - 1].chunk],
                                *c1 = &job->chunks[x->chunk];
            char b0[256], b1[256];
            hfdcp__format_box(b0, sizeof b0, c0->ndim, c0->offsets,
                              c0->sizes);
            hfdcp__format_box(b1, sizeof b1, c1->ndim, c1->offsets,
                              c1->sizes);
            return hfdcp__error(
                HFDCP_ERR_UNSUPPORTED,
                "tensor '%s': rank %d would write two chunks of it, %s and "
                "%s, to one shard file; a shard file holds one chunk per "
                "tensor (save_sharded: give each rank one box per tensor)",
                x->e.name, job->rank, b0, b1);
        }
        HFDCP_TRY(hfdcp__tensor_bytes(x->e.dtype, x->e.ndim, x->e.shape,
                                      x->e.name, &bytes));
        x->e.begin = at;
        x->e.end = at + bytes;
        at += bytes;
        ent[k] = x->e;
    }
    sh->n_entries = n;
    *data_size = at;
    return HFDCP_OK;
}

/* The value of HFDCP_GLOBAL_SHAPES_KEY for the `n` entries ent[] of `sh`
 * (in that order, DCP_SHARDING_INFO's): the compact JSON text of
 * {name: [dim, ...]} with each tensor's global shape, NUL-terminated in
 * *b.  A reader can then tell a missing last shard from a smaller
 * tensor. */
static int global_shapes_text(const hfdcp__wjob *job, const shard_t *sh,
                              const hfdcp__entry *ent, hfdcp__buf *b)
{
    hfdcp__buf_put(b, "{", 1);
    for (size_t k = 0; k < sh->n_entries; k++) {
        const hfdcp__wchunk *c = &job->chunks[sh->entries[k].chunk];
        if (k > 0)
            hfdcp__buf_put(b, ",", 1);
        hfdcp__json_put_string(b, ent[k].name, false);
        hfdcp__buf_put(b, ":[", 2);
        for (int d = 0; d < c->ndim; d++) {
            char num[32];
            int len = snprintf(num, sizeof num, "%s%" PRId64,
                               d > 0 ? "," : "", c->shape[d]);
            hfdcp__buf_put(b, num, (size_t)len);
        }
        hfdcp__buf_put(b, "]", 1);
    }
    hfdcp__buf_put(b, "}", 2); /* with the NUL */
    return hfdcp__buf_status(b);
}

/* Shard file `sh` of plan file f in the directory `dir`: its entries, its
 * names (the temporary one carrying `tag`) and its header. */
static int make_shard(const hfdcp__wjob *job, const char *dir,
                      uint64_t align, size_t f, const char *tag, shard_t *sh)
{
    size_t nc = job->by_file.first[f + 1] - job->by_file.first[f];
    int idx, max, rc = HFDCP_OK;
    hfdcp__header h;
    hfdcp__entry *ent = NULL;
    hfdcp__kv kv = {(char *)HFDCP_GLOBAL_SHAPES_KEY, NULL};
    hfdcp__buf shapes;
    char *name = NULL, *tmp = NULL;

    hfdcp__buf_init(&shapes);
    HFDCP_TRY(plan_file_index(job->plan->file_names[f], &idx, &max));
    if ((sh->entries = calloc(nc + 1, sizeof *sh->entries)) == NULL ||
        (ent = malloc((nc + 1) * sizeof *ent)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory for the shard files");
    shard_entries(job, f, sh);
    memset(&h, 0, sizeof h);
    HFDCP_CHECK(shard_layout(job, sh, ent, &h.data_size));
    h.entries = ent;
    h.n_entries = sh->n_entries;
    h.sharded = true;
    h.align = align;
    if (job->checksums) {
        if ((sh->crc_at = malloc((sh->n_entries + 1) *
                                 sizeof *sh->crc_at)) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory for the shard files");
        h.crc32c = true;
        h.crc_at = sh->crc_at;
    }
    HFDCP_CHECK(global_shapes_text(job, sh, ent, &shapes));
    kv.value = (char *)shapes.data;
    h.meta = &kv;
    h.n_meta = 1;
    if ((name = hfdcp__asprintf("shard-%05d-model-%05d-of-%05d.safetensors",
                                job->rank + 1, idx, max)) == NULL ||
        (tmp = hfdcp__asprintf(HFDCP_TMP_PREFIX "%s-%s.tmp", tag,
                               name)) == NULL ||
        (sh->final = hfdcp__path_join(dir, name)) == NULL ||
        (sh->tmp = hfdcp__path_join(dir, tmp)) == NULL)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory naming the shard files");
    rc = hfdcp__header_serialize(&h, &sh->header, &sh->header_len);
    if (rc != HFDCP_OK)
        hfdcp__error_prefix(rc, "shard file '%s' of rank %d", name,
                            job->rank);
cleanup:
    hfdcp__buf_free(&shapes);
    free(ent);
    free(name);
    free(tmp);
    return rc;
}

int hfdcp__shards_make(const hfdcp__wjob *job, const char *dir,
                       uint64_t align, const char *tag, hfdcp__shards *s)
{
    const hfdcp__wplan *plan = job->plan;
    const hfdcp__wbuckets *b = &job->by_file;
    bool empty_checkpoint = job->rank == 0 && plan->headers != NULL &&
                            plan->index.n == 0;

    memset(s, 0, sizeof *s);
    if ((s->files = calloc(plan->n_files, sizeof *s->files)) == NULL)
        return hfdcp__nomem("the shard files");
    for (size_t f = 0; f < plan->n_files; f++) {
        bool writes = empty_checkpoint && f == 0;
        for (size_t k = b->first[f]; !writes && k < b->first[f + 1]; k++)
            writes = plan->assign[b->by_file[k]].write != 0;
        if (!writes)
            continue;
        s->n++;
        HFDCP_TRY(make_shard(job, dir, align, f, tag, &s->files[s->n - 1]));
    }
    return HFDCP_OK;
}

/* ---- writing them: POSIX calls, helper threads ---- */

/* Pieces of a chunk written at once: its CRC-32C is computed on each
 * piece just before the piece is written, while the piece is in the
 * cache, rather than in a second pass over the chunk. */
#define CRC_PIECE ((uint64_t)1 << 20)

/* Writes entry k of `sh` at `at` of the open file `fd` and, with
 * checksums, its CRC-32C into sh's header: the CRC of the bytes given to
 * pwrite (the chunk's memory, or the asynchronous commit's copy of it). */
static int write_entry(const hfdcp__wjob *job, shard_t *sh, size_t k,
                       int fd, uint64_t at)
{
    const shard_entry_t *x = &sh->entries[k];
    const unsigned char *p = x->data;
    uint64_t n = x->e.end - x->e.begin;
    uint32_t crc = 0;

    if (sh->crc_at == NULL)
        return n > 0 ? hfdcp__pwrite_all(fd, p, n, at, sh->tmp, job->rank)
                     : HFDCP_OK;
    for (uint64_t done = 0; done < n;) {
        uint64_t len = n - done < CRC_PIECE ? n - done : CRC_PIECE;
        crc = hfdcp__crc32c(crc, p + done, (size_t)len);
        HFDCP_TRY(hfdcp__pwrite_all(fd, p + done, len, at + done, sh->tmp,
                                    job->rank));
        done += len;
    }
    hfdcp__header_put_crc(sh->header, sh->crc_at[k], crc);
    return HFDCP_OK;
}

/* One shard file, by one thread: create, write every chunk straight from
 * its memory (or the copy of it), then the header (which holds their
 * CRCs), fsync, close.  `fault` (test hook): fail as if a data write (1)
 * or fsync (2) had returned EIO. */
static int write_shard(const hfdcp__wjob *job, shard_t *sh, int fault)
{
    int fd = open(sh->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    int rc = HFDCP_OK, rank = job->rank;
    uint64_t at = sh->header_len;

    if (fd < 0)
        return hfdcp__os_error(HFDCP_ERR_IO, errno,
                               "creating '%s' on rank %d", sh->tmp, rank);
    for (size_t k = 0; rc == HFDCP_OK && k < sh->n_entries; k++) {
        uint64_t n = sh->entries[k].e.end - sh->entries[k].e.begin;
        if (n > 0 && fault == 1)
            rc = hfdcp__os_error(HFDCP_ERR_IO, EIO,
                                 "writing '%s' on rank %d (test fault)",
                                 sh->tmp, rank);
        else
            rc = write_entry(job, sh, k, fd, at);
        at += n;
    }
    if (rc == HFDCP_OK)
        rc = hfdcp__pwrite_all(fd, sh->header, sh->header_len, 0, sh->tmp,
                               rank);
    if (rc == HFDCP_OK && fault == 2 && !job->no_sync)
        rc = hfdcp__os_error(HFDCP_ERR_IO, EIO,
                             "syncing '%s' on rank %d (test fault)", sh->tmp,
                             rank);
    if (rc == HFDCP_OK && !job->no_sync && fsync(fd) != 0)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "syncing '%s' on rank %d",
                             sh->tmp, rank);
    if (close(fd) != 0 && rc == HFDCP_OK)
        rc = hfdcp__os_error(HFDCP_ERR_IO, errno, "closing '%s' on rank %d",
                             sh->tmp, rank);
    return rc;
}

/* Up to thread_count shard files at once: the calling thread and helper
 * threads take the next file in turn. */
typedef struct {
    const hfdcp__wjob *job;
    const hfdcp__shards *s;
    hfdcp__outcome *outcomes;
    pthread_mutex_t mu;
    size_t next;
} shard_pool_t;

static void *shard_worker(void *arg)
{
    shard_pool_t *pool = arg;

    for (;;) {
        size_t i;
        pthread_mutex_lock(&pool->mu);
        i = pool->next++;
        pthread_mutex_unlock(&pool->mu);
        if (i >= pool->s->n)
            break;
        hfdcp__outcome_set(&pool->outcomes[i],
                           write_shard(pool->job, &pool->s->files[i],
                                       (int64_t)i == pool->job->fault_file
                                           ? pool->job->fault_step
                                           : 0));
    }
    return NULL;
}

int hfdcp__shards_write(const hfdcp__wjob *job, const hfdcp__shards *s)
{
    shard_pool_t pool;
    pthread_t *threads = NULL;
    int want = job->thread_count, started = 0;

    if ((size_t)want > s->n)
        want = (int)s->n;
    memset(&pool, 0, sizeof pool);
    pool.job = job;
    pool.s = s;
    if ((pool.outcomes = calloc(s->n + 1, sizeof *pool.outcomes)) == NULL)
        return hfdcp__nomem("the shard writers");
    pthread_mutex_init(&pool.mu, NULL);
    if (want > 1 && (threads = malloc((size_t)want * sizeof *threads)) != NULL)
        for (int i = 0; i < want - 1; i++) {
            if (pthread_create(&threads[i], NULL, shard_worker, &pool) != 0)
                break; /* fewer threads: the same files, less overlap */
            started++;
        }
    shard_worker(&pool);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    pthread_mutex_destroy(&pool.mu);
    int rc = hfdcp__outcome_collect(pool.outcomes, s->n);
    free(pool.outcomes);
    return rc;
}

int hfdcp__shards_sync(const hfdcp__wjob *job, const hfdcp__shards *s)
{
    for (size_t i = 0; i < s->n; i++)
        HFDCP_TRY(hfdcp__flush_file(s->files[i].tmp, job->rank, false));
    return HFDCP_OK;
}

void hfdcp__shards_range(const hfdcp__shards *s, size_t a, size_t b,
                         hfdcp__shards *view)
{
    view->files = s->files + a;
    view->n = b - a;
    view->renamed = 0;
}

uint64_t hfdcp__shards_data_bytes(const hfdcp__shards *s, size_t i)
{
    const shard_t *sh = &s->files[i];
    uint64_t n = 0;

    for (size_t k = 0; k < sh->n_entries; k++)
        n += sh->entries[k].e.end - sh->entries[k].e.begin;
    return n;
}

void hfdcp__shards_copy_data(hfdcp__shards *s, size_t i, unsigned char *to)
{
    shard_t *sh = &s->files[i];

    for (size_t k = 0; k < sh->n_entries; k++) {
        shard_entry_t *x = &sh->entries[k];
        uint64_t n = x->e.end - x->e.begin;
        if (n == 0)
            continue;
        memcpy(to, x->data, n);
        x->data = to;
        to += n;
    }
}

/* ---- publishing them (a direct save's: publish.c) ---- */

/* On failure each rank keeps the count of the files it renamed, for
 * hfdcp__shards_remove. */
int hfdcp__shards_publish(const hfdcp_writer *w, hfdcp__shards *s,
                          const char *tag)
{
    int rc = w->rank == 0 ? hfdcp__remove_old(w->path, tag, NULL)
                          : HFDCP_OK;

    HFDCP_TRY(hfdcp__agree(w->comm, rc));
    while (rc == HFDCP_OK && s->renamed < s->n) {
        const shard_t *sh = &s->files[s->renamed];
        if (rename(sh->tmp, sh->final) != 0)
            rc = hfdcp__os_error(HFDCP_ERR_IO, errno,
                                 "renaming '%s' to '%s' on rank %d", sh->tmp,
                                 sh->final, w->rank);
        else
            s->renamed++;
    }
    if (rc == HFDCP_OK && s->n > 0)
        rc = hfdcp__sync_dir(w->path);
    return hfdcp__agree(w->comm, rc);
}

void hfdcp__shards_remove(const hfdcp__shards *s)
{
    for (size_t i = 0; i < s->n; i++)
        unlink(i < s->renamed ? s->files[i].final : s->files[i].tmp);
}

/* ---- consolidating them ---- */

/* Collective: for a plan made without a file map, the map under which
 * hfdcp_consolidate() writes the same files: from rank 0's index (tensor
 * -> the index its file name carries), broadcast, when max_shard_bytes
 * split the tensors into files numbered 1..N (so that the map's largest
 * index is N); *out = NULL when the plan has the single file
 * model.safetensors, which is what no map gives (every rank has the file
 * table, so every rank takes the same branch).  Agreed status. */
static int plan_file_map(const hfdcp_writer *w, const hfdcp__wplan *plan,
                         hfdcp_file_map **out)
{
    hfdcp__buf b;
    hfdcp__rbuf r;
    void *data = NULL;
    size_t len = 0;
    hfdcp_file_map *m = NULL;
    uint64_t n = 0;
    int rc = HFDCP_OK;

    *out = NULL;
    if (plan->n_files == 1 &&
        strcmp(plan->file_names[0], "model.safetensors") == 0)
        return HFDCP_OK;
    hfdcp__buf_init(&b);
    if (w->rank == 0) {
        hfdcp__buf_put_u64(&b, plan->index.n);
        for (size_t i = 0; rc == HFDCP_OK && i < plan->index.n; i++) {
            int idx, max;
            rc = plan_file_index(plan->index.files[i], &idx, &max);
            hfdcp__buf_put_str(&b, plan->index.names[i]);
            hfdcp__buf_put_u64(&b, (uint64_t)idx);
        }
        if (rc == HFDCP_OK)
            rc = hfdcp__buf_status(&b);
        data = b.data;
        len = b.len;
    }
    HFDCP_CHECK(hfdcp__agree(w->comm, rc));
    HFDCP_CHECK(hfdcp__agree(w->comm,
                             hfdcp__bcast_bytes(w->comm, 0, &data, &len)));
    rc = hfdcp_file_map_create(&m);
    hfdcp__rbuf_init(&r, data, len);
    if (rc == HFDCP_OK && !hfdcp__rbuf_get_u64(&r, &n))
        rc = hfdcp__error(HFDCP_ERR_INTERNAL, "malformed file map message");
    for (uint64_t i = 0; rc == HFDCP_OK && i < n; i++) {
        char *name = NULL;
        uint64_t idx = 0;
        if (!hfdcp__rbuf_get_str(&r, &name) || !hfdcp__rbuf_get_u64(&r, &idx))
            rc = hfdcp__error(HFDCP_ERR_INTERNAL,
                              "malformed file map message");
        else
            rc = hfdcp_file_map_set(m, name, (int)idx);
        free(name);
    }
    rc = hfdcp__agree(w->comm, rc);
cleanup:
    if (w->rank != 0)
        free(data);
    hfdcp__buf_free(&b);
    if (rc != HFDCP_OK)
        hfdcp_file_map_free(m);
    else
        *out = m;
    return rc;
}

int hfdcp__consolidate_shards(const hfdcp_writer *w,
                              const hfdcp__wplan *plan)
{
    hfdcp_consolidate_options co;
    hfdcp_file_map *map = NULL;
    int rc;

    /* Note: the writer's own map, not one rebuilt from the plan, whose
     * files may not reach the map's largest index, which names them. */
    if (w->file_map == NULL)
        HFDCP_TRY(plan_file_map(w, plan, &map));
    hfdcp_consolidate_options_init(&co);
    co.num_threads = w->consolidation_threads;
    co.info = w->info;
    co.no_checksums = !w->checksums;
    rc = hfdcp_consolidate(w->comm, w->path, w->consolidated,
                           w->file_map != NULL ? w->file_map : map, &co);
    hfdcp_file_map_free(map);
    if (rc != HFDCP_OK)
        hfdcp__error_prefix(rc,
                            "hfdcp_writer_commit: the shard files are saved "
                            "in '%s' but consolidating them into '%s' failed",
                            w->path, w->consolidated);
    return rc;
}
