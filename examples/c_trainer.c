/*
 * c_trainer.c - a small data-parallel + tensor-parallel training loop that
 * checkpoints with hfdcp, can be killed, and resumes on another number of
 * ranks.  examples/fortran_trainer.f90 is the same program in Fortran; both
 * write byte-identical checkpoints.
 *
 *   mpirun -n P c_trainer DIR [--steps=N] [--every=K] [--tp=T]
 *                             [--kill-at=S] [--resume] [--async]
 *
 * The model is a 3-layer MLP, 8 -> 16 -> 16 -> 4, ReLU between layers,
 * trained with plain SGD on a synthetic regression task (inputs and targets
 * are functions of the sample number).  The P ranks form P/T data-parallel
 * replicas of T tensor-parallel ranks (MPI_Comm_split): each layer's weight
 * [out, in] and bias [out] are split by rows (output features) over the TP
 * group and replicated over the DP groups; the global batch of 8 samples is
 * split over the DP groups and gradients are summed over them.
 *
 * Every K steps the ranks save DIR/step-<step>: each TP rank adds its rows
 * of every tensor, every DP replica adds the same boxes (hfdcp writes
 * replicated chunks once), plus the scalar "trainer.step".  --kill-at=S
 * stops the run with MPI_Abort (exit status 3) after step S, as a crash
 * would; --resume starts from the newest complete checkpoint (the one with
 * an index), with any P and T: each rank reads just its own rows.
 *
 * --async saves with hfdcp_writer_commit_async: it returns once hfdcp has
 * its own copy of this rank's weights, and the next steps train (and
 * change those same weights in place) while a helper thread writes the
 * files.  The save is published, its index written, only by
 * hfdcp_writer_wait, which the trainer calls before the next save and at
 * the end: a run killed in between leaves that checkpoint without an
 * index, and --resume takes the one before it.  The checkpoints are the
 * same bytes as without --async.
 *
 * Determinism whatever P and T: every value is a multiple of a power of two
 * small enough that every sum of products is exact in double precision
 * (activations and errors: multiples of 2^-8 within [-16, 16]; weights:
 * multiples of 2^-12 within [-4, 4], exact in float32; the learning rate is
 * 2^-6).  Exact sums do not depend on their order, so the MPI reductions,
 * whatever the decomposition, give the same bits, and the weights after N
 * steps are the same for any P, T, and any kill and resume.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "hfdcp.h"

#define NLAYER 3
#define BATCH 8
static const int DIMS[NLAYER + 1] = {8, 16, 16, 4};

#define CHECK(call)                                                           \
    do {                                                                      \
        int rc_ = (call);                                                     \
        if (rc_ != HFDCP_OK) {                                                \
            fprintf(stderr, "c_trainer: %s failed: %s: %s\n", #call,          \
                    hfdcp_status_name(rc_), hfdcp_last_error());              \
            MPI_Abort(MPI_COMM_WORLD, 1);                                     \
        }                                                                     \
    } while (0)

typedef struct {
    int tp, tp_rank, dp, dp_rank, world_rank;
    MPI_Comm tp_comm, dp_comm;
    int rows[NLAYER], row0[NLAYER]; /* this rank's output features */
    float *w[NLAYER];               /* [rows][in], row-major */
    float *b[NLAYER];               /* [rows] */
} model;

/* Activations and errors: multiples of 2^-8 within [-16, 16]. */
static double qa(double v)
{
    v = floor(v * 256.0 + 0.5) / 256.0;
    return v < -16.0 ? -16.0 : v > 16.0 ? 16.0 : v;
}

/* Weights: multiples of 2^-12 within [-4, 4]. */
static double qw(double v)
{
    v = floor(v * 4096.0 + 0.5) / 4096.0;
    return v < -4.0 ? -4.0 : v > 4.0 ? 4.0 : v;
}

/* Sample s: input x[8] and target y[4]. */
static void sample(int64_t s, double *x, double *y)
{
    for (int j = 0; j < DIMS[0]; j++)
        x[j] = (double)((s * 37 + j * 11 + 5) % 17 - 8) * 0.25;
    for (int k = 0; k < DIMS[NLAYER]; k++) {
        double v = 0.0;
        for (int j = 0; j < DIMS[0]; j++)
            v += (double)((k * 5 + j * 3) % 7 - 3) * x[j];
        y[k] = qa(v * 0.125);
    }
}

static void init_model(model *m)
{
    for (int l = 0; l < NLAYER; l++) {
        int in = DIMS[l];
        m->rows[l] = DIMS[l + 1] / m->tp;
        m->row0[l] = m->tp_rank * m->rows[l];
        m->w[l] = malloc((size_t)m->rows[l] * (size_t)in * sizeof(float));
        m->b[l] = calloc((size_t)m->rows[l], sizeof(float));
        if (m->w[l] == NULL || m->b[l] == NULL)
            MPI_Abort(MPI_COMM_WORLD, 1);
        for (int i = 0; i < m->rows[l]; i++)
            for (int j = 0; j < in; j++) {
                int gi = m->row0[l] + i;
                m->w[l][i * in + j] =
                    (float)((gi * 7 + j * 3 + (l + 1) * 5) % 13 - 6) / 64.0f;
            }
    }
}

/* Gathers every TP rank's columns [nb][rows] into full [nb][rows*tp]. */
static void gather_features(const model *m, int nb, int rows,
                            const double *part, double *full)
{
    int n = nb * rows;
    double *all = malloc((size_t)n * (size_t)m->tp * sizeof *all);
    if (all == NULL)
        MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Allgather(part, n, MPI_DOUBLE, all, n, MPI_DOUBLE, m->tp_comm);
    for (int r = 0; r < m->tp; r++)
        for (int s = 0; s < nb; s++)
            for (int i = 0; i < rows; i++)
                full[s * rows * m->tp + r * rows + i] = all[(r * nb + s) * rows + i];
    free(all);
}

/* One SGD step on the samples of this DP replica; returns the squared
 * error summed over the global batch. */
static double train_step(model *m, int step)
{
    int nb = BATCH / m->dp;
    double x[BATCH][8], y[BATCH][4];
    double act[NLAYER + 1][BATCH][16], delta[BATCH][16], prev[BATCH][16];
    double part[BATCH * 16], gw[16 * 16], gb[16], loss = 0.0;

    for (int s = 0; s < nb; s++) {
        sample((int64_t)(step - 1) * BATCH + m->dp_rank * nb + s, x[s], y[s]);
        for (int j = 0; j < DIMS[0]; j++)
            act[0][s][j] = x[s][j];
    }
    /* Forward: each rank computes its output features, then all-gathers. */
    for (int l = 0; l < NLAYER; l++) {
        int in = DIMS[l], rows = m->rows[l];
        double full[BATCH * 16];
        for (int s = 0; s < nb; s++)
            for (int i = 0; i < rows; i++) {
                double z = m->b[l][i];
                for (int j = 0; j < in; j++)
                    z += (double)m->w[l][i * in + j] * act[l][s][j];
                part[s * rows + i] = l < NLAYER - 1 ? qa(z > 0.0 ? z : 0.0) : qa(z);
            }
        gather_features(m, nb, rows, part, full);
        for (int s = 0; s < nb; s++)
            for (int i = 0; i < DIMS[l + 1]; i++)
                act[l + 1][s][i] = full[s * DIMS[l + 1] + i];
    }
    /* Output error (every rank has the whole output). */
    for (int s = 0; s < nb; s++)
        for (int k = 0; k < DIMS[NLAYER]; k++) {
            delta[s][k] = qa(act[NLAYER][s][k] - y[s][k]);
            loss += delta[s][k] * delta[s][k];
        }
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, m->dp_comm);
    /* Backward, last layer first. */
    for (int l = NLAYER - 1; l >= 0; l--) {
        int in = DIMS[l], rows = m->rows[l], r0 = m->row0[l];
        /* Gradients of this rank's rows, summed over the DP replicas. */
        for (int i = 0; i < rows; i++) {
            gb[i] = 0.0;
            for (int s = 0; s < nb; s++)
                gb[i] += delta[s][r0 + i];
            for (int j = 0; j < in; j++) {
                double g = 0.0;
                for (int s = 0; s < nb; s++)
                    g += delta[s][r0 + i] * act[l][s][j];
                gw[i * in + j] = g;
            }
        }
        MPI_Allreduce(MPI_IN_PLACE, gw, rows * in, MPI_DOUBLE, MPI_SUM, m->dp_comm);
        MPI_Allreduce(MPI_IN_PLACE, gb, rows, MPI_DOUBLE, MPI_SUM, m->dp_comm);
        /* The error of the layer below, with the weights before update:
         * partial sums over this rank's rows, summed over the TP group. */
        if (l > 0) {
            for (int s = 0; s < nb; s++)
                for (int j = 0; j < in; j++) {
                    double v = 0.0;
                    for (int i = 0; i < rows; i++)
                        v += (double)m->w[l][i * in + j] * delta[s][r0 + i];
                    part[s * in + j] = v;
                }
            MPI_Allreduce(MPI_IN_PLACE, part, nb * in, MPI_DOUBLE, MPI_SUM, m->tp_comm);
            for (int s = 0; s < nb; s++)
                for (int j = 0; j < in; j++)
                    prev[s][j] = act[l][s][j] > 0.0 ? qa(part[s * in + j]) : 0.0;
        }
        for (int i = 0; i < rows; i++) {
            m->b[l][i] = (float)qw(m->b[l][i] - gb[i] / 64.0);
            for (int j = 0; j < in; j++)
                m->w[l][i * in + j] = (float)qw(m->w[l][i * in + j] - gw[i * in + j] / 64.0);
        }
        if (l > 0)
            for (int s = 0; s < nb; s++)
                for (int j = 0; j < in; j++)
                    delta[s][j] = prev[s][j];
    }
    return loss;
}

static void step_dir(char *buf, size_t n, const char *dir, int step)
{
    snprintf(buf, n, "%s/step-%06d", dir, step);
}

static void tensor_name(char *buf, size_t n, int l, const char *what)
{
    snprintf(buf, n, "mlp.fc%d.%s", l + 1, what);
}

/* Saves DIR/step-<step>.  Without `async`, returns once the checkpoint is
 * published, and NULL.  With `async`, returns the writer as soon as hfdcp
 * holds a copy of the weights (training may then change them); the
 * checkpoint exists only once finish_save() has waited for it. */
static hfdcp_writer *save(const model *m, const char *dir, int step, int async)
{
    char path[4096], name[64];
    hfdcp_save_options o;
    hfdcp_writer *w = NULL;
    int64_t step64 = step;

    step_dir(path, sizeof path, dir, step);
    hfdcp_save_options_init(&o);
    o.max_shard_bytes = 1024; /* a few files and an index, as big models */
    CHECK(hfdcp_writer_open(MPI_COMM_WORLD, path, &o, &w));
    for (int l = 0; l < NLAYER; l++) {
        int64_t shape[2] = {DIMS[l + 1], DIMS[l]};
        int64_t off[2] = {m->row0[l], 0}, size[2] = {m->rows[l], DIMS[l]};
        tensor_name(name, sizeof name, l, "weight");
        CHECK(hfdcp_writer_add(w, name, HFDCP_F32, 2, shape, off, size, m->w[l]));
        tensor_name(name, sizeof name, l, "bias");
        CHECK(hfdcp_writer_add(w, name, HFDCP_F32, 1, shape, off, size, m->b[l]));
    }
    CHECK(hfdcp_writer_add(w, "trainer.step", HFDCP_I64, 0, NULL, NULL, NULL, &step64));
    if (async) {
        /* Every buffer added, step64 included, is copied by now: they may
         * change or go away. */
        CHECK(hfdcp_writer_commit_async(w));
        return w;
    }
    CHECK(hfdcp_writer_commit(w));
    hfdcp_writer_free(w);
    return NULL;
}

/* Waits for an asynchronous save, which publishes it, and checks its
 * outcome as a commit's: on failure every rank has the same status, and
 * the message names the file and the rank that failed. */
static void finish_save(hfdcp_writer *w)
{
    CHECK(hfdcp_writer_wait(w));
    hfdcp_writer_free(w);
}

/* Whether the checkpoint directory `path` is complete: hfdcp writes
 * model.safetensors.index.json last, after every file is in place.  Rank 0
 * looks and tells the others, so that all take the same decision. */
static int complete(const char *path)
{
    char index[4200];
    int rank, found = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
        FILE *f;
        snprintf(index, sizeof index, "%s/model.safetensors.index.json", path);
        if ((f = fopen(index, "rb")) != NULL) {
            found = 1;
            fclose(f);
        }
    }
    MPI_Bcast(&found, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return found;
}

/* Loads the newest complete checkpoint of dir at or below `last`; returns
 * its step (0: none, start from scratch). */
static int resume(model *m, const char *dir, int last, int every)
{
    char path[4096], name[64];
    for (int step = last - last % every; step > 0; step -= every) {
        hfdcp_reader *r = NULL;
        int64_t step64 = -1;
        step_dir(path, sizeof path, dir, step);
        if (!complete(path))
            continue;
        CHECK(hfdcp_reader_open(MPI_COMM_WORLD, path, NULL, &r));
        for (int l = 0; l < NLAYER; l++) {
            int64_t off[2] = {m->row0[l], 0}, size[2] = {m->rows[l], DIMS[l]};
            tensor_name(name, sizeof name, l, "weight");
            CHECK(hfdcp_reader_add(r, name, HFDCP_F32, 2, off, size, m->w[l]));
            tensor_name(name, sizeof name, l, "bias");
            CHECK(hfdcp_reader_add(r, name, HFDCP_F32, 1, off, size, m->b[l]));
        }
        CHECK(hfdcp_reader_add(r, "trainer.step", HFDCP_I64, 0, NULL, NULL, &step64));
        CHECK(hfdcp_reader_load(r));
        hfdcp_reader_free(r);
        if (step64 != step) {
            fprintf(stderr, "c_trainer: %s holds step %lld\n", path, (long long)step64);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        return step;
    }
    return 0;
}

int main(int argc, char **argv)
{
    model m;
    int size, steps = 12, every = 4, kill_at = 0, do_resume = 0, first = 1;
    int async = 0;
    hfdcp_writer *pending = NULL; /* --async: the save not yet published */
    const char *dir = NULL;

    MPI_Init(&argc, &argv);
    memset(&m, 0, sizeof m);
    MPI_Comm_rank(MPI_COMM_WORLD, &m.world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    m.tp = size >= 2 ? size / 2 : 1;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--steps=", 8) == 0)
            steps = atoi(argv[i] + 8);
        else if (strncmp(argv[i], "--every=", 8) == 0)
            every = atoi(argv[i] + 8);
        else if (strncmp(argv[i], "--tp=", 5) == 0)
            m.tp = atoi(argv[i] + 5);
        else if (strncmp(argv[i], "--kill-at=", 10) == 0)
            kill_at = atoi(argv[i] + 10);
        else if (strcmp(argv[i], "--resume") == 0)
            do_resume = 1;
        else if (strcmp(argv[i], "--async") == 0)
            async = 1;
        else if (argv[i][0] != '-' && dir == NULL)
            dir = argv[i];
        else
            dir = NULL, i = argc; /* usage */
    }
    if (dir == NULL || m.tp < 1 || size % m.tp != 0 || 16 % m.tp != 0 ||
        4 % m.tp != 0 || BATCH % (size / m.tp) != 0 || every < 1) {
        if (m.world_rank == 0)
            fprintf(stderr, "usage: c_trainer DIR [--steps=N] [--every=K] "
                            "[--tp=T] [--kill-at=S] [--resume] [--async]\n"
                            "T must divide the rank count and 4; the rank "
                            "count / T must divide 8\n");
        MPI_Finalize();
        return 2;
    }
    m.dp = size / m.tp;
    m.tp_rank = m.world_rank % m.tp;
    m.dp_rank = m.world_rank / m.tp;
    MPI_Comm_split(MPI_COMM_WORLD, m.dp_rank, m.tp_rank, &m.tp_comm);
    MPI_Comm_split(MPI_COMM_WORLD, m.tp_rank, m.dp_rank, &m.dp_comm);
    init_model(&m);
    if (m.world_rank == 0)
        printf("c_trainer: hfdcp %s, %d ranks: tp %d x dp %d\n", hfdcp_version(),
               size, m.tp, m.dp);
    if (do_resume) {
        first = resume(&m, dir, steps, every) + 1;
        if (m.world_rank == 0)
            printf("c_trainer: resuming at step %d\n", first);
    }
    for (int step = first; step <= steps; step++) {
        /* With a save pending, this updates the weights it was given while
         * its files are being written: safe, hfdcp writes its copy. */
        double loss = train_step(&m, step);
        if (m.world_rank == 0)
            printf("c_trainer: step %d loss %.6f\n", step, loss);
        if (step % every == 0 || step == steps) {
            if (pending != NULL)
                finish_save(pending); /* the previous save, published */
            pending = save(&m, dir, step, async);
        }
        if (step == kill_at) {
            /* Rank 0 alone aborts, once it has said so: a rank aborting
             * first could have the launcher kill rank 0 before its line
             * is out (MPICH's Hydra does).  A pending save is left
             * unpublished, as a crash would leave it. */
            MPI_Barrier(MPI_COMM_WORLD);
            if (m.world_rank == 0) {
                int done = 0; /* rank 0's part of the pending save */
                if (pending != NULL)
                    CHECK(hfdcp_writer_test(pending, &done));
                printf("c_trainer: killed after step %d%s\n", step,
                       pending == NULL ? ""
                       : done ? " with a save pending (rank 0: written)"
                              : " with a save pending (rank 0: writing)");
                fflush(stdout);
                MPI_Abort(MPI_COMM_WORLD, 3);
            }
            MPI_Barrier(MPI_COMM_WORLD); /* never returns */
        }
    }
    if (pending != NULL)
        finish_save(pending);
    for (int l = 0; l < NLAYER; l++) {
        free(m.w[l]);
        free(m.b[l]);
    }
    MPI_Comm_free(&m.tp_comm);
    MPI_Comm_free(&m.dp_comm);
    MPI_Finalize();
    return 0;
}
