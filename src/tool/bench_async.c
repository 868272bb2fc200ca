/*
 * bench_async.c - the hfdcp-async peer of `hfdcp bench`: the asynchronous
 * commit as a trainer sees it, next to the hfdcp peer's synchronous save.
 * Each repetition runs, in an order that rotates with the repetition:
 *   hfdcp_async          open, add, commit_async, then wait at once: the
 *                        time blocked in each call, and the time to durable;
 *   hfdcp_async_step     commit_async, a simulated training step (--step-ms
 *                        of rewriting the user's buffers, or with
 *                        --step-idle of sleeping, as the CPU thread of a
 *                        trainer waiting for its GPU), then wait: the
 *                        trainer is blocked for commit_async + the rest of
 *                        the wait;
 *   hfdcp_async_bounded  the same with snapshot_max_bytes
 *                        (--snapshot-max-bytes; by default a quarter of each
 *                        rank's share): less memory, more written before
 *                        commit_async returns;
 *   memcpy_share         malloc + memcpy of the bytes this rank writes: what
 *                        the snapshot costs at the least, the reference of
 *                        the target ("the trainer waits for a memory
 *                        copy, not for the disk").
 * This rank's share is the plan's (hfdcp__wplan_make, outside the timing):
 * the bytes of the chunks it is chosen to write, a replicated box counting
 * on one holder only.  The snapshot is the library's own count.
 * With verification on, each checkpoint is read back against the bytes
 * the buffers held when commit_async returned (the step changes them, and
 * puts them back before the check), and each rank's snapshot is compared
 * with its share (unbounded) or the bound.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
/* hfdcp__writer_snapshot_bytes(): what commit_async copied. */
#include "hfdcp_internal.h"

/* One way of calling the asynchronous commit. */
typedef struct {
    const char *tag; /* measurement names: tag_commit, tag_wait, ... */
    int step;        /* the simulated training step before the wait */
    int bounded;     /* snapshot_max_bytes = the bound */
} variant;

static const variant variants[] = {
    {"hfdcp_async", 0, 0},
    {"hfdcp_async_step", 1, 0},
    {"hfdcp_async_bounded", 1, 1},
};

/* Escapes the reference copy, so that the compiler cannot drop it. */
static unsigned char *volatile copy_sink;

/* Collective: which chunks the plan gives this rank to write (writes[k]
 * for tensor k) and their bytes.  Agreed status. */
static int plan_share(const bench_ctx *c, unsigned char *writes, uint64_t *share)
{
    const bench_model *m = c->m;
    hfdcp__wchunk *ch = bench_chunks(m);
    hfdcp__wplan plan;
    int rc = ch != NULL ? HFDCP_OK : hfdcp__nomem("the bench's plan chunks");

    memset(&plan, 0, sizeof plan);
    rc = hfdcp__agree(c->comm, rc);
    if (rc == HFDCP_OK)
        rc = hfdcp__wplan_make(c->comm, ch, m->n, 0, c->shard_bytes,
                               HFDCP_ALIGN_DEFAULT, false, &plan);
    *share = 0;
    for (size_t k = 0; rc == HFDCP_OK && k < m->n; k++) {
        writes[k] = plan.assign[k].write != 0;
        *share += writes[k] ? m->t[k].bytes : 0;
    }
    hfdcp__wplan_free(&plan);
    free(ch);
    return rc;
}

static void invert(unsigned char *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        p[i] = (unsigned char)~p[i];
}

/* The simulated training step: for `seconds`, inverts the bytes of this
 * rank's chunks one tensor after the other (every buffer read and
 * written, as an optimizer step does), flipped[k] telling whether tensor
 * k is inverted; or, `idle`, sleeps.  No MPI call; ranks are not
 * synchronized. */
static void train_step(const bench_model *m, double seconds, int idle, unsigned char *flipped)
{
    double end = MPI_Wtime() + seconds, left;
    if (idle) {
        while ((left = end - MPI_Wtime()) > 0) {
            struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
            if (nanosleep(&ts, NULL) != 0 && errno != EINTR)
                break;
        }
        return;
    }
    for (size_t k = 0; m->n > 0 && seconds > 0 && MPI_Wtime() < end; k = (k + 1) % m->n) {
        invert(m->t[k].data, m->t[k].bytes);
        flipped[k] ^= 1;
    }
}

/* The chunks as they were before train_step(). */
static void restore(const bench_model *m, unsigned char *flipped)
{
    for (size_t k = 0; k < m->n; k++)
        if (flipped[k]) {
            invert(m->t[k].data, m->t[k].bytes);
            flipped[k] = 0;
        }
}

/* The reference: malloc of this rank's share and memcpy of its chunks
 * into it, measured as memcpy_share (no bytes: no GB/s). */
static int memcpy_share(const bench_ctx *c, const unsigned char *writes, uint64_t share)
{
    const bench_model *m = c->m;
    unsigned char *copy;
    uint64_t at = 0;
    bench_timer t;
    bench_result r;
    int err;

    bench_start(c, &t);
    copy = malloc(share ? share : 1);
    for (size_t k = 0; copy != NULL && k < m->n; k++)
        if (writes[k]) {
            memcpy(copy + at, m->t[k].data, m->t[k].bytes);
            at += m->t[k].bytes;
        }
    copy_sink = copy;
    bench_stop(c, &t, 0, &r);
    err = copy == NULL;
    free(copy);
    copy_sink = NULL;
    MPI_Allreduce(MPI_IN_PLACE, &err, 1, MPI_INT, MPI_MAX, c->comm);
    if (err) {
        if (c->rank == 0)
            fprintf(stderr, "hfdcp bench: memcpy_share: out of memory\n");
        return TOOL_EXIT_ERROR;
    }
    bench_record(c, "memcpy_share", &r);
    return TOOL_EXIT_OK;
}

/* What one asynchronous save measured: seconds on the slowest rank of
 * commit_async's return (from open, after a barrier), of the wait (with
 * free), of the two together (what the trainer is blocked for), and from
 * open to the end of free; the peak RSS growth over all of it; this
 * rank's snapshot bytes. */
typedef struct {
    bench_result commit, wait, blocked, total;
    uint64_t snapshot;
} async_times;

/* One asynchronous save of the model into `dir`: open, add, commit_async,
 * the step (`step` seconds, 0: none), wait, free.  The same status on
 * every rank. */
static int async_save(const bench_ctx *c, const char *dir, double step, uint64_t bound,
                      unsigned char *flipped, async_times *out)
{
    const bench_model *m = c->m;
    hfdcp_save_options so;
    hfdcp_writer *w = NULL;
    bench_timer t;
    double t1, t2, mine[3], all[3];

    hfdcp_save_options_init(&so);
    so.max_shard_bytes = c->shard_bytes;
    so.info = c->info;
    so.snapshot_max_bytes = bound;
    out->snapshot = 0;
    bench_settle(c);
    bench_start(c, &t);
    int rc = bench_writer_open(c, dir, &so, &w);
    if (rc == HFDCP_OK)
        rc = hfdcp_writer_commit_async(w);
    t1 = MPI_Wtime();
    if (rc == HFDCP_OK) {
        out->snapshot = hfdcp__writer_snapshot_bytes(w);
        train_step(m, step, c->step_idle, flipped);
    }
    t2 = MPI_Wtime();
    if (rc == HFDCP_OK)
        rc = hfdcp_writer_wait(w);
    hfdcp_writer_free(w);
    mine[0] = t1 - t.t0;
    mine[1] = MPI_Wtime() - t2;
    mine[2] = mine[0] + mine[1];
    bench_stop(c, &t, m->total, &out->total);
    MPI_Allreduce(mine, all, 3, MPI_DOUBLE, MPI_MAX, c->comm);
    out->commit = out->wait = out->blocked = out->total;
    out->commit.seconds = all[0];
    out->wait.seconds = all[1];
    out->blocked.seconds = all[2];
    out->commit.bytes = out->wait.bytes = out->blocked.bytes = 0;
    return rc;
}

/* Records tag_snapshot: no time; bytes, the sum over the ranks; memory,
 * the largest rank's snapshot and rank 0's. */
static void record_snapshot(const bench_ctx *c, const char *tag, uint64_t snapshot)
{
    char what[64];
    bench_result r;
    int64_t mine = (int64_t)snapshot, r0 = mine;

    memset(&r, 0, sizeof r);
    r.bytes = bench_sum(c, snapshot);
    MPI_Allreduce(&mine, &r.mem_max, 1, MPI_INT64_T, MPI_MAX, c->comm);
    MPI_Bcast(&r0, 1, MPI_INT64_T, 0, c->comm);
    r.mem_rank0 = r0;
    snprintf(what, sizeof what, "%s_snapshot", tag);
    bench_record(c, what, &r);
}

/* With verification on: this rank's snapshot is its share (unbounded),
 * or at most the bound and the share.  --inject-fault tag_snapshot makes
 * the last rank's check fail. */
static int check_snapshot(const bench_ctx *c, const variant *v, uint64_t snapshot,
                          uint64_t share, uint64_t bound)
{
    char label[64];
    int bad;

    if (!c->verify)
        return TOOL_EXIT_OK;
    snprintf(label, sizeof label, "%s_snapshot", v->tag);
    bad = v->bounded ? snapshot > bound || snapshot > share : snapshot != share;
    int spoiled = bench_fault(c, label) && c->rank == c->nranks - 1;
    if (bad || spoiled)
        fprintf(stderr,
                "hfdcp bench: rank %d: %s: %" PRIu64 " bytes copied; the rank's share %" PRIu64
                ", the bound %" PRIu64 " (0: none)%s\n",
                c->rank, label, snapshot, share, v->bounded ? bound : 0,
                bad ? "" : " (--inject-fault)");
    bad |= spoiled;
    return bench_verdict(c, label, (uint64_t)bad);
}

/* One variant: the save, its records, and with verification on its
 * checks; its files removed. */
static int run_variant(const bench_ctx *c, const variant *v, uint64_t share, uint64_t bound,
                       unsigned char *flipped)
{
    char dir[4200], what[64];
    async_times a;
    int code, x;

    snprintf(dir, sizeof dir, "%s/%s", c->dir, v->tag);
    int rc = async_save(c, dir, v->step ? c->step_seconds : 0, v->bounded ? bound : 0,
                        flipped, &a);
    restore(c->m, flipped);
    if (rc != HFDCP_OK) {
        tool_report_error("bench", rc);
        bench_rmtree(c, dir);
        return TOOL_EXIT_ERROR;
    }
    snprintf(what, sizeof what, "%s_commit", v->tag);
    bench_record(c, what, &a.commit);
    snprintf(what, sizeof what, "%s_wait", v->tag);
    bench_record(c, what, &a.wait);
    /* Waited for at once, the blocked time is the time to durable. */
    snprintf(what, sizeof what, "%s_%s", v->tag, v->step ? "blocked" : "save");
    bench_record(c, what, v->step ? &a.blocked : &a.total);
    if (!v->step || v->bounded)
        record_snapshot(c, v->tag, a.snapshot);
    code = bench_check_saved(c, dir, v->tag, !v->step);
    if (code != TOOL_EXIT_ERROR && (x = check_snapshot(c, v, a.snapshot, share, bound)) != 0)
        code = x;
    bench_rmtree(c, dir);
    return code;
}

int bench_async(const bench_ctx *c)
{
    const bench_model *m = c->m;
    unsigned char *writes = calloc(m->n + 1, 1), *flipped = calloc(m->n + 1, 1);
    uint64_t share = 0, bound;
    int code = TOOL_EXIT_OK;
    int rc = writes != NULL && flipped != NULL ? HFDCP_OK : hfdcp__nomem("the async peer");

    rc = hfdcp__agree(c->comm, rc);
    if (rc == HFDCP_OK)
        rc = plan_share(c, writes, &share);
    if (rc != HFDCP_OK) {
        tool_report_error("bench", rc);
        free(writes);
        free(flipped);
        return TOOL_EXIT_ERROR;
    }
    /* A quarter of the share, never 0 (which would mean no bound). */
    bound = c->snapshot_bound != BENCH_BOUND_QUARTER ? c->snapshot_bound
            : share / 4 > 0                          ? share / 4
                                                     : 1;
    /* In turn, the first one rotating with the repetition (in order with
     * verification), so that none always runs first. */
    for (int i = 0; i < 4 && code != TOOL_EXIT_ERROR; i++) {
        int j = c->verify ? i : (i + c->rep) % 4, v;
        if (j == 3 && bound == 0)
            continue;
        v = j == 0 ? memcpy_share(c, writes, share)
                   : run_variant(c, &variants[j - 1], share, bound, flipped);
        if (v != TOOL_EXIT_OK && code != TOOL_EXIT_ERROR)
            code = v;
    }
    free(writes);
    free(flipped);
    return code;
}
