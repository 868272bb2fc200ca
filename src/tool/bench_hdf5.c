/*
 * bench_hdf5.c - the parallel HDF5 peer of `hfdcp bench`: one dataset per
 * tensor (contiguous layout, allocated early, never filled), every rank
 * writing and reading its box with a hyperslab selection and a collective
 * transfer (H5Pset_dxpl_mpio(H5FD_MPIO_COLLECTIVE)), collective metadata.
 * Durable = H5Fflush (MPI_File_sync), H5Fclose, then fsync by rank 0 of
 * the metadata written at close.
 *
 * Built only when CMake finds parallel HDF5 (HFDCP_BENCH_HDF5); libhfdcp
 * never links HDF5.  An HDF5 call that fails aborts the job (MPI_Abort):
 * a failed collective HDF5 call cannot be agreed on safely.
 */
#include "bench.h"

#ifndef HFDCP_BENCH_HDF5

const char *bench_hdf5_status(void)
{
    return "parallel HDF5 peer: not built (no parallel HDF5 found, or "
           "-DHFDCP_BENCH_HDF5=OFF; Debian: libhdf5-openmpi-dev)";
}

int bench_hdf5(const bench_ctx *c, int *available)
{
    bench_unavailable(c, "hdf5", "not built");
    *available = 0;
    return TOOL_EXIT_OK;
}

#else

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

const char *bench_hdf5_status(void)
{
    return "parallel HDF5 peer: built (HDF5 " H5_VERSION
           ", collective hyperslab writes/reads, one dataset per tensor)";
}

static void h5_fail(const bench_ctx *c, const char *call, const char *path)
{
    fprintf(stderr, "hfdcp bench: rank %d: HDF5 call failed: %s (file '%s')\n", c->rank, call,
            path);
    MPI_Abort(c->comm, TOOL_EXIT_ERROR);
}

#define H5CHK(expr)                                                           \
    do {                                                                      \
        if ((expr) < 0)                                                       \
            h5_fail(c, #expr, path);                                          \
    } while (0)

static hid_t file_type(const bench_model *m)
{
    /* bf16 has no HDF5 type: its 16-bit patterns are stored as U16. */
    return m->dtype == HFDCP_F32 ? H5T_IEEE_F32LE : H5T_STD_U16LE;
}

static hid_t fapl_make(const bench_ctx *c, const char *path)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5CHK(fapl);
    H5CHK(H5Pset_fapl_mpio(fapl, c->comm, c->info));
    H5CHK(H5Pset_all_coll_metadata_ops(fapl, 1));
    H5CHK(H5Pset_coll_metadata_write(fapl, 1));
    return fapl;
}

/* One transfer of box off/size of dataset `d` from/to `buf`. */
static void transfer(const bench_ctx *c, const char *path, hid_t d, hid_t dxpl, int ndim,
                     const int64_t *off, const int64_t *size, void *buf, int write)
{
    const bench_model *m = c->m;
    hid_t fs = H5Dget_space(d), ms;
    hsize_t start[2], count[2];
    int empty = 0;
    H5CHK(fs);
    for (int i = 0; i < ndim; i++) {
        start[i] = (hsize_t)off[i];
        count[i] = (hsize_t)size[i];
        empty |= size[i] == 0;
    }
    if (empty) {
        H5CHK(H5Sselect_none(fs));
        H5CHK(ms = H5Scopy(fs));
        H5CHK(H5Sselect_none(ms));
    } else {
        H5CHK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL));
        H5CHK(ms = H5Screate_simple(ndim, count, NULL));
    }
    if (write)
        H5CHK(H5Dwrite(d, file_type(m), ms, fs, dxpl, buf));
    else
        H5CHK(H5Dread(d, file_type(m), ms, fs, dxpl, buf));
    H5Sclose(ms);
    H5Sclose(fs);
}

/* Write: create `path`, one dataset per tensor (each rank its write box),
 * flush (sync), close, fsync by rank 0; recorded as hdf5_write. */
static void hdf5_write(const bench_ctx *c, const char *path, hid_t fapl, hid_t dxpl,
                       hid_t dcpl)
{
    const bench_model *m = c->m;
    bench_timer t;
    bench_result r;

    bench_settle(c);
    bench_start(c, &t);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5CHK(f);
    for (size_t k = 0; k < m->n; k++) {
        const bench_tensor *x = &m->t[k];
        hsize_t dims[2] = {(hsize_t)x->shape[0], (hsize_t)x->shape[1]};
        hid_t s = H5Screate_simple(x->ndim, dims, NULL), d;
        H5CHK(s);
        H5CHK(d = H5Dcreate2(f, x->name, file_type(m), s, H5P_DEFAULT, dcpl, H5P_DEFAULT));
        transfer(c, path, d, dxpl, x->ndim, x->woff, x->wsize, x->data + x->wbegin, 1);
        H5Dclose(d);
        H5Sclose(s);
    }
    H5CHK(H5Fflush(f, H5F_SCOPE_GLOBAL));
    H5CHK(H5Fclose(f));
    if (c->rank == 0) {
        int fd = open(path, O_RDONLY);
        if (fd < 0 || fsync(fd) != 0)
            h5_fail(c, "fsync", path);
        close(fd);
    }
    bench_stop(c, &t, m->total, &r);
    bench_record(c, "hdf5_write", &r);
}

/* Cold read (the caller evicts first) of every rank's saved box of `path`
 * into the arena; recorded as hdf5_read_cold. */
static void hdf5_read(const bench_ctx *c, const char *path, hid_t fapl, hid_t dxpl)
{
    const bench_model *m = c->m;
    bench_timer t;
    bench_result r;
    hid_t f;

    bench_start(c, &t);
    H5CHK(f = H5Fopen(path, H5F_ACC_RDONLY, fapl));
    uint64_t pos = 0;
    for (size_t k = 0; k < m->n; k++) {
        const bench_tensor *x = &m->t[k];
        hid_t d = H5Dopen2(f, x->name, H5P_DEFAULT);
        H5CHK(d);
        transfer(c, path, d, dxpl, x->ndim, x->off, x->size, m->arena + pos, 0);
        pos += x->bytes;
        H5Dclose(d);
    }
    H5CHK(H5Fclose(f));
    bench_stop(c, &t, m->total, &r);
    bench_record(c, "hdf5_read_cold", &r);
}

/* Compares what hdf5_read() left in the arena with the chunks:
 * TOOL_EXIT_OK, or TOOL_EXIT_INVALID on every rank when a byte differs. */
static int hdf5_check(const bench_ctx *c)
{
    const bench_model *m = c->m;
    uint64_t bad = 0, all, pos = 0;

    if (bench_fault(c, "hdf5_read_cold") && c->rank == c->nranks - 1 &&
        m->held > 0)
        m->arena[m->held / 2] ^= 0x5a;
    for (size_t k = 0; k < m->n; k++) {
        const bench_tensor *x = &m->t[k];
        for (uint64_t i = 0; i < x->bytes; i++)
            bad += m->arena[pos + i] != x->data[i];
        pos += x->bytes;
    }
    all = bench_sum(c, bad);
    if (all) {
        bench_mismatch(c, "hdf5_read_cold", all);
        return TOOL_EXIT_INVALID;
    }
    if (c->rank == 0) {
        printf("  verified hdf5_read_cold\n");
        fflush(stdout);
    }
    return TOOL_EXIT_OK;
}

int bench_hdf5(const bench_ctx *c, int *available)
{
    char dir[4200], path[4300];
    int code = TOOL_EXIT_OK;

    (void)available;
    snprintf(dir, sizeof dir, "%s/hdf5", c->dir);
    snprintf(path, sizeof path, "%s/model.h5", dir);
    if (bench_mkdir(c, dir) != 0)
        return TOOL_EXIT_ERROR;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = fapl_make(c, path), dxpl = H5Pcreate(H5P_DATASET_XFER),
          dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5CHK(dxpl);
    H5CHK(dcpl);
    H5CHK(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
    H5CHK(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
    H5CHK(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY));

    hdf5_write(c, path, fapl, dxpl, dcpl);
    bench_evict(c, dir);
    hdf5_read(c, path, fapl, dxpl);
    H5Pclose(fapl);
    H5Pclose(dxpl);
    H5Pclose(dcpl);

    if (c->verify)
        code = hdf5_check(c);
    bench_rmtree(c, dir);
    return code;
}

#endif
