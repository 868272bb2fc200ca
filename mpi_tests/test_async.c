// ranks: 1 2 3 4
// timeout: 300
/*
 * test_async.c - hfdcp_writer_commit_async / _wait / _test.
 *
 * Each case saves the same model twice: once with hfdcp_writer_commit
 * (the reference), once asynchronously with every source buffer
 * overwritten and freed as soon as hfdcp_writer_commit_async returns.
 * The directories must hold the same files, byte for byte: the files hold
 * the values at the time of the call.  Rows, columns, 2-D blocks and
 * replicated chunks; direct saves (several files), sharded saves, sharded
 * saves consolidated by the commit; with and without a snapshot bound.
 * A fault injected into the background write or its sync must come back
 * from hfdcp_writer_wait as HFDCP_ERR_IO with the same message on every
 * rank, leaving no new checkpoint and the previous one intact, as must a
 * real full disk; misuse is HFDCP_ERR_ARG on every rank.
 */
#include <inttypes.h>
#include <sys/stat.h>

#include "harness.h"

typedef struct {
    const char *name;
    hfdcp_dtype dtype;
    int ndim;
    int64_t shape[2];
    int split;
} tspec;

#define NT 6

/* A few tens of KB per rank, so that the background work takes a while. */
static void model(tspec *ts, int P)
{
    const tspec m[NT] = {
        {"layers.0.rows", HFDCP_F32, 2, {64 * P + 3, 33}, HFDCP_TEST_ROWS},
        {"layers.0.cols", HFDCP_BF16, 2, {97, 40 * P + 1}, HFDCP_TEST_COLS},
        {"layers.1.blocks", HFDCP_I16, 2, {30 * P + 1, 20 * P + 3},
         HFDCP_TEST_BLOCKS},
        {"layers.1.cols", HFDCP_F64, 2, {17, 9 * P}, HFDCP_TEST_COLS},
        {"norm.repl", HFDCP_F32, 1, {300, 0}, HFDCP_TEST_REPL},
        {"step", HFDCP_I64, 0, {0, 0}, HFDCP_TEST_REPL},
    };
    memcpy(ts, m, sizeof m);
}

static uint64_t es_of(const tspec *t)
{
    return (uint64_t)hfdcp_dtype_bits(t->dtype) / 8;
}

static uint64_t box_bytes(const tspec *t, const int64_t *size)
{
    uint64_t n = es_of(t);
    for (int d = 0; d < t->ndim; d++)
        n *= (uint64_t)size[d];
    return n;
}

typedef enum { SYNC, ASYNC, ASYNC_FREE } how_t;

/* Saves the model into `path` with options `o`, each rank its box of
 * every tensor.  SYNC: hfdcp_writer_commit.  ASYNC:
 * hfdcp_writer_commit_async, every buffer overwritten and freed, then
 * hfdcp_writer_test and hfdcp_writer_wait.  ASYNC_FREE: the same, but
 * hfdcp_writer_free instead of the wait.  *snap: the bytes the
 * asynchronous commit copied on this rank.  Returns the first failing
 * status (commit_async, then wait). */
static int save(MPI_Comm comm, const char *path, const hfdcp_save_options *o,
                how_t how, uint64_t *snap)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    int rc, done = -1;
    tspec ts[NT];
    uint8_t *bufs[NT] = {0};
    uint64_t lens[NT] = {0};
    hfdcp_writer *w = NULL;

    model(ts, P);
    if ((rc = hfdcp_writer_open(comm, path, o, &w)) != HFDCP_OK)
        return rc;
    for (size_t i = 0; i < NT; i++) {
        int64_t off[2], size[2];
        if (!hfdcp_test_box_of(ts[i].split, ts[i].ndim, ts[i].shape, rank, P,
                               off, size))
            continue;
        lens[i] = box_bytes(&ts[i], size);
        bufs[i] = malloc(lens[i] + 1);
        hfdcp_test_fill_box(bufs[i], ts[i].name, es_of(&ts[i]), ts[i].ndim,
                            ts[i].shape, off, size);
        if (hfdcp_writer_add(w, ts[i].name, ts[i].dtype, ts[i].ndim,
                             ts[i].shape, off, size, bufs[i]) != HFDCP_OK)
            fprintf(stderr, "[rank %d] add %s: %s\n", rank, ts[i].name,
                    hfdcp_last_error());
    }
    if (how == SYNC) {
        rc = hfdcp_writer_commit(w);
    } else {
        rc = hfdcp_writer_commit_async(w);
        if (snap != NULL)
            *snap = hfdcp__writer_snapshot_bytes(w);
        for (size_t i = 0; i < NT; i++) {
            if (bufs[i] != NULL)
                memset(bufs[i], 0xA5 ^ (int)i, lens[i]);
            free(bufs[i]);
            bufs[i] = NULL;
        }
        if (rc == HFDCP_OK && hfdcp_writer_test(w, &done) != HFDCP_OK)
            fprintf(stderr, "[rank %d] hfdcp_writer_test: %s\n", rank,
                    hfdcp_last_error());
        if (rc == HFDCP_OK && done != 0 && done != 1)
            fprintf(stderr, "[rank %d] hfdcp_writer_test: done %d\n", rank,
                    done);
        if (rc == HFDCP_OK && how == ASYNC)
            rc = hfdcp_writer_wait(w);
    }
    hfdcp_writer_free(w);
    for (size_t i = 0; i < NT; i++)
        free(bufs[i]);
    return rc;
}

static hfdcp_save_options opts_of(int mode, const char *consolidated)
{
    hfdcp_save_options o;
    hfdcp_save_options_init(&o);
    o.max_shard_bytes = 24000; /* several files */
    o.save_sharded = mode != 0;
    o.consolidated_output_path = consolidated;
    return o;
}

static const char *const MODES[] = {"direct", "sharded", "consolidated"};

/* Saves `mode` synchronously into dir/sync-<mode> and asynchronously into
 * dir/async-<mode>-<tag> with the bound `bound`; same files.  Agreed. */
static int same_as_sync(MPI_Comm comm, const char *dir, int mode,
                        uint64_t bound, how_t how, const char *tag)
{
    char ref[600], path[600], rcons[600], cons[600];
    hfdcp_save_options o;
    struct stat st;
    uint64_t snap = 0;
    int have;

    snprintf(ref, sizeof ref, "%s/sync-%s", dir, MODES[mode]);
    snprintf(rcons, sizeof rcons, "%s/sync-%s-out", dir, MODES[mode]);
    snprintf(path, sizeof path, "%s/async-%s-%s", dir, MODES[mode], tag);
    snprintf(cons, sizeof cons, "%s/async-%s-%s-out", dir, MODES[mode], tag);
    have = hfdcp_test_comm_rank(comm) == 0 && stat(ref, &st) == 0;
    MPI_Bcast(&have, 1, MPI_INT, 0, comm);
    if (!have) {
        o = opts_of(mode, mode == 2 ? rcons : NULL);
        T_CHECK(hfdcp_test_agreed_ok(comm, save(comm, ref, &o, SYNC, NULL),
                                     "sync save"));
    }
    o = opts_of(mode, mode == 2 ? cons : NULL);
    o.snapshot_max_bytes = bound;
    T_CHECK(hfdcp_test_agreed_ok(comm, save(comm, path, &o, how, &snap),
                                 "async save"));
    T_CHECKF(hfdcp_test_all_ok(comm, bound == 0 || snap <= bound),
             "%s: the snapshot took %" PRIu64 " bytes, bound %" PRIu64,
             path, snap, bound);
    T_CHECKF(hfdcp_test_same_dirs(comm, ref, path), "%s", path);
    if (mode == 2)
        T_CHECKF(hfdcp_test_same_dirs(comm, rcons, cons), "%s", cons);
    return T_OK;
}

static int async_should_save_the_values_at_the_time_of_the_call(
    MPI_Comm comm, const char *dir)
{
    for (int mode = 0; mode < 3; mode++)
        T_OKCALL(same_as_sync(comm, dir, mode, 0, ASYNC, "whole"));
    return T_OK;
}

/* With a bound, the chunks beyond it are written before commit_async
 * returns, the others copied: at most `bound` bytes, same files.  A bound
 * of 1 byte copies nothing. */
static int async_should_copy_at_most_the_bound(MPI_Comm comm, const char *dir)
{
    for (int mode = 0; mode < 2; mode++) {
        T_OKCALL(same_as_sync(comm, dir, mode, 1, ASYNC, "b1"));
        T_OKCALL(same_as_sync(comm, dir, mode, 9000, ASYNC, "b9000"));
    }
    return T_OK;
}

static int async_should_be_waited_for_by_free(MPI_Comm comm, const char *dir)
{
    for (int mode = 0; mode < 2; mode++)
        T_OKCALL(same_as_sync(comm, dir, mode, 0, ASYNC_FREE, "free"));
    return T_OK;
}

/* A fault in the background work of the last rank, on its first file:
 * `step` 1 the write, 2 the sync.  Into an empty directory: nothing left;
 * over an earlier checkpoint: that one intact. */
static int fault_case(MPI_Comm comm, const char *dir, int mode, int step)
{
    int P = hfdcp_test_comm_size(comm), rank = hfdcp_test_comm_rank(comm);
    char path[600], what[64], old[600];
    hfdcp_save_options o = opts_of(mode, NULL);
    int rc;

    snprintf(what, sizeof what, "rank %d", P - 1);
    snprintf(path, sizeof path, "%s/fault-%s-%d", dir, MODES[mode], step);
    snprintf(old, sizeof old, "%s/fault-old-%s", dir, MODES[mode]);
    for (int over = 0; over < 2; over++) {
        if (over) {
            T_CHECK(hfdcp_test_agreed_ok(comm, save(comm, path, &o, SYNC,
                                                    NULL), "first save"));
            T_CHECK(hfdcp_test_agreed_ok(comm, save(comm, old, &o, SYNC,
                                                    NULL), "copy"));
        }
        if (rank == P - 1) {
            hfdcp__async_fault_file = 0;
            hfdcp__async_fault_step = step;
        }
        rc = save(comm, path, &o, ASYNC, NULL);
        hfdcp__async_fault_file = -1;
        hfdcp__async_fault_step = 0;
        T_OKCALL(hfdcp_test_agreed_failure(comm, "wait", rc, HFDCP_ERR_IO,
                                           what, "test fault"));
        if (over)
            T_CHECK(hfdcp_test_same_dirs(comm, old, path));
        else
            T_CHECK(hfdcp_test_nothing_in(comm, path));
    }
    return T_OK;
}

static int async_should_report_a_failed_background_write(MPI_Comm comm,
                                                         const char *dir)
{
    for (int mode = 0; mode < 2; mode++)
        T_OKCALL(fault_case(comm, dir, mode, 1));
    return T_OK;
}

static int async_should_report_a_failed_background_sync(MPI_Comm comm,
                                                        const char *dir)
{
    for (int mode = 0; mode < 2; mode++)
        T_OKCALL(fault_case(comm, dir, mode, 2));
    return T_OK;
}

/* One F32 tensor of 512 KiB per rank, rows split, saved asynchronously
 * into `path`: the first failing status of commit_async and wait. */
static int save_big(MPI_Comm comm, const char *path, int sharded)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    int64_t shape[2] = {256 * P, 512}, off[2] = {256 * rank, 0};
    int64_t size[2] = {256, 512};
    float *data = calloc(256 * 512, sizeof *data);
    hfdcp_save_options o = opts_of(sharded, NULL);
    hfdcp_writer *w = NULL;
    int rc;

    o.max_shard_bytes = 0;
    if ((rc = hfdcp_writer_open(comm, path, &o, &w)) == HFDCP_OK &&
        (rc = hfdcp_writer_add(w, "big", HFDCP_F32, 2, shape, off, size,
                               data)) == HFDCP_OK &&
        (rc = hfdcp_writer_commit_async(w)) == HFDCP_OK)
        rc = hfdcp_writer_wait(w);
    hfdcp_writer_free(w);
    free(data);
    return rc;
}

/* A real full disk: a 256 KiB tmpfs mounted in the test directory (needs
 * root; skipped with a printed reason where mount is not allowed).  A
 * direct save reserves its files' blocks when commit_async creates them,
 * so commit_async fails; a sharded save's shard files are written by the
 * helper thread, so wait fails.  Either way: HFDCP_ERR_IO with the OS's
 * words, the same message on every rank, nothing left. */
static int async_should_fail_cleanly_on_a_full_disk(MPI_Comm comm,
                                                    const char *dir)
{
    char mnt[600], path[700];
    int rc = T_OK;

    snprintf(mnt, sizeof mnt, "%s/mnt", dir);
    if (!hfdcp_test_mount_tmpfs(comm, mnt,
                                "async_should_fail_cleanly_on_a_full_disk"))
        return T_SKIP;
    for (int mode = 0; mode < 2 && rc == T_OK; mode++) {
        snprintf(path, sizeof path, "%s/ckpt-%s", mnt, MODES[mode]);
        rc = hfdcp_test_agreed_failure(comm, MODES[mode],
                                       save_big(comm, path, mode),
                                       HFDCP_ERR_IO, "No space left", NULL);
        if (rc == T_OK && !hfdcp_test_nothing_in(comm, path))
            rc = 1;
    }
    hfdcp_test_umount(comm, mnt);
    return rc;
}

/* One tensor of 4 floats, rows split. */
static int open_small(MPI_Comm comm, const char *path, float *data,
                      hfdcp_writer **w)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    int64_t shape = 4 * P, off = 4 * rank, size = 4;

    for (int k = 0; k < 4; k++)
        data[k] = (float)(off + k);
    T_OKCALL(hfdcp_writer_open(comm, path, NULL, w));
    T_OKCALL(hfdcp_writer_add(*w, "x", HFDCP_F32, 1, &shape, &off, &size,
                              data));
    return T_OK;
}

static int async_should_refuse_misuse_on_every_rank(MPI_Comm comm,
                                                    const char *dir)
{
    char path[600];
    float data[4];
    hfdcp_writer *w = NULL;
    int done = 0;

    snprintf(path, sizeof path, "%s/misuse", dir);
    T_OKCALL(open_small(comm, path, data, &w));
    T_OKCALL(hfdcp_test_agreed_failure(comm, "wait first",
                                       hfdcp_writer_wait(w), HFDCP_ERR_ARG,
                                       "hfdcp_writer_wait", "no asynchronous"));
    T_STATUS(hfdcp_writer_test(w, &done), HFDCP_ERR_ARG, "no asynchronous");
    T_CHECK(hfdcp_test_agreed_ok(comm, hfdcp_writer_commit_async(w),
                                 "commit_async"));
    T_OKCALL(hfdcp_test_agreed_failure(comm, "commit after",
                                       hfdcp_writer_commit(w), HFDCP_ERR_ARG,
                                       "already committed", NULL));
    T_OKCALL(hfdcp_test_agreed_failure(comm, "async twice",
                                       hfdcp_writer_commit_async(w),
                                       HFDCP_ERR_ARG, "already committed",
                                       NULL));
    T_CHECK(hfdcp_test_agreed_ok(comm, hfdcp_writer_wait(w), "wait"));
    T_OKCALL(hfdcp_writer_test(w, &done));
    T_CHECK(done == 1);
    T_OKCALL(hfdcp_test_agreed_failure(comm, "wait twice",
                                       hfdcp_writer_wait(w), HFDCP_ERR_ARG,
                                       "hfdcp_writer_wait", "waited for"));
    hfdcp_writer_free(w);

    T_OKCALL(open_small(comm, path, data, &w));
    T_CHECK(hfdcp_test_agreed_ok(comm, hfdcp_writer_commit(w), "commit"));
    T_OKCALL(hfdcp_test_agreed_failure(comm, "async after commit",
                                       hfdcp_writer_commit_async(w),
                                       HFDCP_ERR_ARG, "already committed",
                                       NULL));
    T_OKCALL(hfdcp_test_agreed_failure(comm, "wait after commit",
                                       hfdcp_writer_wait(w), HFDCP_ERR_ARG,
                                       "no asynchronous", NULL));
    hfdcp_writer_free(w);
    T_STATUS(hfdcp_writer_wait(NULL), HFDCP_ERR_ARG, "NULL");
    T_STATUS(hfdcp_writer_test(NULL, &done), HFDCP_ERR_ARG, "NULL");
    T_STATUS(hfdcp_writer_commit_async(NULL), HFDCP_ERR_ARG, "NULL");
    return T_OK;
}

/* A plan error comes from commit_async itself, on every rank, with
 * nothing written. */
static int async_should_return_plan_errors_at_once(MPI_Comm comm,
                                                   const char *dir)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    char path[600];
    float data[4] = {0};
    int64_t shape = 4 * P + 1, off = 4 * rank, size = 4; /* a hole */
    hfdcp_writer *w = NULL;

    snprintf(path, sizeof path, "%s/plan", dir);
    T_OKCALL(hfdcp_writer_open(comm, path, NULL, &w));
    T_OKCALL(hfdcp_writer_add(w, "x", HFDCP_F32, 1, &shape, &off, &size,
                              data));
    T_OKCALL(hfdcp_test_agreed_failure(comm, "commit_async",
                                       hfdcp_writer_commit_async(w),
                                       HFDCP_ERR_PLAN, "'x'", NULL));
    T_OKCALL(hfdcp_test_agreed_failure(comm, "wait after a failed plan",
                                       hfdcp_writer_wait(w), HFDCP_ERR_ARG,
                                       "no asynchronous", NULL));
    hfdcp_writer_free(w);
    T_CHECK(hfdcp_test_nothing_in(comm, path));
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"async_should_save_the_values_at_the_time_of_the_call",
     async_should_save_the_values_at_the_time_of_the_call, 1},
    {"async_should_copy_at_most_the_bound", async_should_copy_at_most_the_bound,
     1},
    {"async_should_be_waited_for_by_free", async_should_be_waited_for_by_free,
     1},
    {"async_should_report_a_failed_background_write",
     async_should_report_a_failed_background_write, 1},
    {"async_should_report_a_failed_background_sync",
     async_should_report_a_failed_background_sync, 1},
    {"async_should_fail_cleanly_on_a_full_disk",
     async_should_fail_cleanly_on_a_full_disk, 1},
    {"async_should_refuse_misuse_on_every_rank",
     async_should_refuse_misuse_on_every_rank, 1},
    {"async_should_return_plan_errors_at_once",
     async_should_return_plan_errors_at_once, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
