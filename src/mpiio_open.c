/*
 * mpiio_open.c - the open file: hfdcp's hints (defaults merged under the
 * caller's, its own hints parsed and checked), detection of what the MPI
 * library does (Open MPI's OMPIO and its known read bug, local file
 * systems, independent long-run writes), open, close, sync, set_size,
 * byte-range I/O on a byte view, and the errors of MPI_File_* calls.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/vfs.h>
#endif

#include "mpiio_internal.h"

#define AGG_BUFFER_DEFAULT ((uint64_t)32 << 20)
#define AGG_BUFFER_MAX ((uint64_t)1 << 30)
int hfdcp__mpiio_aggregate_default = AGG_AUTO;

/* ---------------------------------------------------------------------- */
/* Errors                                                                 */
/* ---------------------------------------------------------------------- */

/* An MPI error on a file: the message names the call and the file and ends
 * with MPI_Error_string; errors of the I/O classes become HFDCP_ERR_IO. */
int hfdcp__mpiio_file_error(int mpi_rc, const char *call, const char *path)
{
    int cls = MPI_ERR_OTHER;

    hfdcp__mpi_error(mpi_rc, "%s on '%s'", call, path);
    if (MPI_Error_class(mpi_rc, &cls) != MPI_SUCCESS)
        return HFDCP_ERR_MPI;
    switch (cls) {
    case MPI_ERR_IO:
    case MPI_ERR_ACCESS:
    case MPI_ERR_NO_SPACE:
    case MPI_ERR_QUOTA:
    case MPI_ERR_READ_ONLY:
    case MPI_ERR_NO_SUCH_FILE:
    case MPI_ERR_FILE:
    case MPI_ERR_FILE_EXISTS:
    case MPI_ERR_FILE_IN_USE:
    case MPI_ERR_BAD_FILE:
        return HFDCP_ERR_IO;
    default:
        return HFDCP_ERR_MPI;
    }
}

/* ---------------------------------------------------------------------- */
/* Hints                                                                  */
/* ---------------------------------------------------------------------- */

/*
 * hfdcp's default hints, under the caller's (a caller's value for the same
 * key wins).  Kept minimal until the performance work tunes them:
 *   romio_cb_write=enable  ROMIO's default ("automatic") writes
 *       non-interleaved but non-contiguous accesses independently with
 *       data sieving, i.e. read-modify-write under fcntl locks, which is
 *       slow and fails on file systems without locks; collective buffering
 *       always aggregates them into large contiguous writes.  OMPIO ignores
 *       it.
 *   romio_cb_read=enable  with "automatic", collective reads that do not
 *       interleave (always so on one rank) take ROMIO's independent strided
 *       path, which never finished reading a 2.2 GiB request on one rank
 *       in ROMIO 3.2.1 (Open MPI 4.1's romio321; test_large at 1 rank);
 *       the two-phase path completes it.  OMPIO ignores it.
 */
static const struct {
    const char *key;
    const char *value;
} default_hints[] = {
    {"romio_cb_write", "enable"},
    {"romio_cb_read", "enable"},
};

static int copy_hint(MPI_Info from, int i, MPI_Info to, const char *path)
{
    char key[MPI_MAX_INFO_KEY + 1];
    char *value;
    int len, flag, mpi_rc;

    MPI_TRY(MPI_Info_get_nthkey(from, i, key), path);
    MPI_TRY(MPI_Info_get_valuelen(from, key, &len, &flag), path);
    if (!flag)
        return HFDCP_OK;
    if ((value = malloc((size_t)len + 1)) == NULL)
        return hfdcp__nomem("an MPI-IO hint");
    mpi_rc = MPI_Info_get(from, key, len, value, &flag);
    if (mpi_rc == MPI_SUCCESS && flag)
        mpi_rc = MPI_Info_set(to, key, value);
    free(value);
    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "copying hint '%s' for '%s'", key,
                                path);
    return HFDCP_OK;
}

/* *out = hfdcp's defaults with every hint of `user` set over them. */
static int merge_hints(MPI_Info user, const char *path, MPI_Info *out)
{
    MPI_Info merged;
    int nkeys = 0, rc = HFDCP_OK;

    MPI_TRY(MPI_Info_create(&merged), path);
    for (size_t i = 0; i < sizeof default_hints / sizeof default_hints[0];
         i++) {
        HFDCP_MPI_CHECK(MPI_Info_set(merged, default_hints[i].key,
                                     default_hints[i].value));
    }
    if (user != MPI_INFO_NULL) {
        HFDCP_MPI_CHECK(MPI_Info_get_nkeys(user, &nkeys));
        for (int i = 0; i < nkeys; i++)
            HFDCP_CHECK(copy_hint(user, i, merged, path));
    }
    *out = merged;
    return HFDCP_OK;
cleanup:
    MPI_Info_free(&merged);
    return hfdcp__error_prefix(rc, "hints for '%s'", path);
}

/* The value of an auto/enable/disable hint `key` into *mode (AGG_*),
 * unchanged when the hint is not set. */
static int tristate_hint(MPI_Info info, const char *key, const char *path,
                         int *mode)
{
    char v[MPI_MAX_INFO_VAL + 1];
    int flag = 0;

    MPI_TRY(MPI_Info_get(info, key, MPI_MAX_INFO_VAL, v, &flag), path);
    if (!flag)
        return HFDCP_OK;
    if (strcmp(v, "auto") == 0)
        *mode = AGG_AUTO;
    else if (strcmp(v, "enable") == 0 || strcmp(v, "true") == 0)
        *mode = AGG_ON;
    else if (strcmp(v, "disable") == 0 || strcmp(v, "false") == 0)
        *mode = AGG_OFF;
    else
        return hfdcp__error(HFDCP_ERR_ARG, "'%s': hint %s=%s: expected "
                            "auto, enable or disable", path, key, v);
    return HFDCP_OK;
}

/* A hint's value as a decimal count in [min, max]: true and *out, or
 * false. */
static bool count_value(const char *v, uint64_t min, uint64_t max,
                        uint64_t *out)
{
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    if (end == v || *end != '\0' || v[0] == '-' || n < min || n > max)
        return false;
    *out = (uint64_t)n;
    return true;
}

/* hfdcp's own hints, from the merged info: hfdcp_aggregate (auto, enable,
 * disable), hfdcp_aggregate_buffer_size (bytes, 1 to 1 GiB),
 * hfdcp_long_runs (auto, collective, independent), hfdcp_sieve_reads
 * (auto, enable, disable), hfdcp_keep_buffer (enable, disable; auto is
 * enable) and hfdcp_exchange (auto, alltoallw). */
static int own_hints(MPI_Info info, const char *path, hfdcp__mfile *f)
{
    char v[MPI_MAX_INFO_VAL + 1];
    int flag = 0;

    f->aggregate = hfdcp__mpiio_aggregate_default;
    f->agg_buffer = AGG_BUFFER_DEFAULT;
    f->long_runs = LONG_AUTO;
    f->sieve = AGG_AUTO;
    f->keep_buffer = true;
    MPI_TRY(MPI_Info_get(info, "hfdcp_long_runs", MPI_MAX_INFO_VAL, v, &flag),
            path);
    if (flag) {
        if (strcmp(v, "auto") == 0)
            f->long_runs = LONG_AUTO;
        else if (strcmp(v, "collective") == 0)
            f->long_runs = LONG_COLLECTIVE;
        else if (strcmp(v, "independent") == 0)
            f->long_runs = LONG_INDEPENDENT;
        else
            return hfdcp__error(HFDCP_ERR_ARG,
                                "'%s': hint hfdcp_long_runs=%s: expected "
                                "auto, collective or independent",
                                path, v);
    }
    HFDCP_TRY(tristate_hint(info, "hfdcp_aggregate", path, &f->aggregate));
    HFDCP_TRY(tristate_hint(info, "hfdcp_sieve_reads", path, &f->sieve));
    MPI_TRY(MPI_Info_get(info, "hfdcp_exchange", MPI_MAX_INFO_VAL, v, &flag),
            path);
    f->shared_exchange = true; /* until the ranks agree at open */
    if (flag && strcmp(v, "alltoallw") == 0)
        f->shared_exchange = false;
    else if (flag && strcmp(v, "auto") != 0)
        return hfdcp__error(HFDCP_ERR_ARG, "'%s': hint hfdcp_exchange=%s: "
                            "expected auto or alltoallw", path, v);
    int keep = AGG_AUTO;
    HFDCP_TRY(tristate_hint(info, "hfdcp_keep_buffer", path, &keep));
    f->keep_buffer = keep != AGG_OFF;
    MPI_TRY(MPI_Info_get(info, "hfdcp_aggregate_buffer_size",
                         MPI_MAX_INFO_VAL, v, &flag),
            path);
    if (flag && !count_value(v, 1, AGG_BUFFER_MAX, &f->agg_buffer))
        return hfdcp__error(HFDCP_ERR_ARG,
                            "'%s': hint hfdcp_aggregate_buffer_size=%s: "
                            "expected a byte count from 1 to %" PRIu64,
                            path, v, AGG_BUFFER_MAX);
    return HFDCP_OK;
}

int hfdcp__mpiio_check_hints(MPI_Info info, const char *who, const char *path)
{
    hfdcp__mfile scratch;
    int rc;

    if (info == MPI_INFO_NULL)
        return HFDCP_OK;
    memset(&scratch, 0, sizeof scratch);
    if ((rc = own_hints(info, path, &scratch)) != HFDCP_OK)
        hfdcp__error_prefix(rc, "%s", who);
    return rc;
}

int hfdcp__align_hint(MPI_Info info, const char *who, uint64_t *align)
{
    char v[MPI_MAX_INFO_VAL + 1];
    int flag = 0, mpi_rc;

    *align = HFDCP_ALIGN_DEFAULT;
    if (info == MPI_INFO_NULL)
        return HFDCP_OK;
    mpi_rc = MPI_Info_get(info, "hfdcp_data_alignment", MPI_MAX_INFO_VAL, v,
                          &flag);
    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "%s: reading the hint "
                                "hfdcp_data_alignment", who);
    uint64_t a = 0;
    if (!flag)
        return HFDCP_OK;
    if (!count_value(v, 0, UINT64_MAX, &a) || !hfdcp__align_ok(a))
        return hfdcp__error(HFDCP_ERR_ARG, "%s: hint hfdcp_data_alignment=%s: "
                            "expected a power of two from 8 to %" PRIu64,
                            who, v, HFDCP_ALIGN_MAX);
    *align = a;
    return HFDCP_OK;
}

int hfdcp__mfile_get_hint(hfdcp__mfile *f, const char *key, char *value,
                          size_t size, bool *found)
{
    MPI_Info info = MPI_INFO_NULL;
    int rc = HFDCP_OK, len = 0, flag = 0;
    char *buf = NULL;

    *found = false;
    HFDCP_MPI_CHECK(MPI_File_get_info(f->fh, &info));
    HFDCP_MPI_CHECK(MPI_Info_get_valuelen(info, key, &len, &flag));
    if (flag) {
        if ((buf = malloc((size_t)len + 1)) == NULL)
            HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory reading hint '%s'",
                       key);
        HFDCP_MPI_CHECK(MPI_Info_get(info, key, len, buf, &flag));
        buf[len] = '\0';
        if (flag && size > 0)
            snprintf(value, size, "%s", buf);
        *found = flag != 0;
    }
cleanup:
    free(buf);
    if (info != MPI_INFO_NULL)
        MPI_Info_free(&info);
    if (rc != HFDCP_OK)
        hfdcp__error_prefix(rc, "hint '%s' of '%s'", key, f->path);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* A known bug                                                            */
/* ---------------------------------------------------------------------- */

/*
 * Open MPI 4.1.0 to 4.1.4: OMPIO's read data sieving returns wrong bytes
 * when the requests an aggregator serves contain one another
 * (open-mpi/ompi#10546, fixed in 4.1.5), e.g. one rank reading a whole
 * tensor while others read slices of it: resharding.  Our test
 * mpiio_should_read_random_overlapping_boxes catches it at 3 ranks.  The
 * workaround, --mca fbtl_posix_read_datasieving 0, is read-only once MPI is
 * initialized.  So when this library version runs OMPIO with read data
 * sieving on, reads use independent MPI_File_read calls over the same file
 * views: one rank's pieces in a round are sorted and disjoint, so its own
 * requests never contain one another.  Writes are unaffected.
 *
 * Detection uses standard calls only: the library version string, and the
 * MPI_T control variables "fbtl_posix_read_datasieving" and "io" (absent
 * variables count as their Open MPI defaults: data sieving on, OMPIO
 * selected).
 */

/* Reads control variable `name` (not bound to an object): a malloc'd,
 * zero-padded copy of its value, or NULL when it does not exist or cannot
 * be read.  *type_size is the size of one of its elements. */
static unsigned char *read_cvar(const char *name, int *type_size)
{
    int idx, count = 0, verb, bind, scope, nl = 0, dl = 0;
    MPI_Datatype dt;
    MPI_T_enum en;
    MPI_T_cvar_handle h;
    unsigned char *buf = NULL;

    if (MPI_T_cvar_get_index(name, &idx) != MPI_SUCCESS ||
        MPI_T_cvar_get_info(idx, NULL, &nl, &verb, &dt, &en, NULL, &dl,
                            &bind, &scope) != MPI_SUCCESS ||
        bind != MPI_T_BIND_NO_OBJECT ||
        MPI_Type_size(dt, type_size) != MPI_SUCCESS || *type_size <= 0 ||
        MPI_T_cvar_handle_alloc(idx, NULL, &h, &count) != MPI_SUCCESS)
        return NULL;
    if (count >= 0 && count < (1 << 20))
        buf = calloc((size_t)count * (size_t)*type_size + 1, 1);
    if (buf != NULL && MPI_T_cvar_read(h, buf) != MPI_SUCCESS) {
        free(buf);
        buf = NULL;
    }
    MPI_T_cvar_handle_free(&h);
    return buf;
}

/* What the detection finds: OMPIO serves MPI-IO, and it has the bug. */
enum { DETECT_OMPIO = 1, DETECT_READ_BUG = 2 };

/* Open MPI 4.1.0 to 4.1.4 (the releases with the bug). */
static bool buggy_release(bool *open_mpi)
{
    char version[MPI_MAX_LIBRARY_VERSION_STRING + 1] = "";
    int len = 0, major = -1, minor = -1, patch = -1;

    *open_mpi = MPI_Get_library_version(version, &len) == MPI_SUCCESS &&
                sscanf(version, "Open MPI v%d.%d.%d", &major, &minor,
                       &patch) == 3;
    return *open_mpi && major == 4 && minor == 1 && patch <= 4;
}

static int detect_ompio(void)
{
    unsigned char *v;
    int provided, level, ts = 0;
    bool ompio = true, sieving = true, open_mpi, buggy;

    buggy = buggy_release(&open_mpi);
    if (!open_mpi)
        return 0;
    /* The process's own level: Open MPI 4.1 lowers the process thread
     * level to the one MPI_T_init_thread asks for. */
    if (MPI_Query_thread(&level) != MPI_SUCCESS ||
        MPI_T_init_thread(level, &provided) != MPI_SUCCESS)
        return buggy ? DETECT_OMPIO | DETECT_READ_BUG : DETECT_OMPIO;
    if ((v = read_cvar("fbtl_posix_read_datasieving", &ts)) != NULL) {
        bool on = false;
        for (int i = 0; i < ts; i++)
            on = on || v[i] != 0;
        sieving = on;
        free(v);
    }
    if ((v = read_cvar("io", &ts)) != NULL) {
        const char *io = (const char *)v;
        bool named = strstr(io, "ompio") != NULL;
        if (io[0] != '\0')
            ompio = io[0] == '^' ? !named : named;
        free(v);
    }
    MPI_T_finalize();
    return (ompio ? DETECT_OMPIO : 0) |
           (ompio && sieving && buggy ? DETECT_READ_BUG : 0);
}

/* The detection, once per process: MPI_T_init_thread + MPI_T_finalize are
 * too costly in Open MPI 4.1 to repeat at every open.  Two threads racing
 * here both detect, and find the same answer. */
static int detected(void)
{
    static atomic_int known = -1;
    int v = atomic_load(&known);

    if (v < 0) {
        v = detect_ompio();
        atomic_store(&known, v);
    }
    return v;
}

static bool ompio_read_bug(void)
{
    bool open_mpi;
    return buggy_release(&open_mpi) && (detected() & DETECT_READ_BUG) != 0;
}

/* ---------------------------------------------------------------------- */
/* Long runs                                                              */
/* ---------------------------------------------------------------------- */

/*
 * A write whose runs are long (not aggregated by hfdcp: see "Aggregation"
 * in mpiio_agg.c)
 * goes through one collective call per round, and the MPI-IO component
 * decides how to carry it out.  On three ranks or more Open MPI 4.1's
 * OMPIO picks its "vulcan" component for a local file system, which
 * gathers every rank's runs to a few aggregators, each writing 32 MiB at a
 * time: for runs of megabytes that is one more copy of the whole
 * checkpoint and fewer ranks writing (measured slower, 4 ranks, 1 GB split
 * by rows, than OMPIO's own "individual" component, which lets each rank
 * write its runs itself; on two ranks or fewer OMPIO picks "individual"
 * anyway; hfdcp bench --alt-hint hfdcp_long_runs=collective compares the
 * independent writes below with the collective path, docs/benchmarks.md).
 * No hint selects the component.  So with the hint hfdcp_long_runs=auto
 * (the default) such writes are independent (MPI_File_write over the same
 * file view, each rank its own runs) when OMPIO serves MPI-IO on three
 * ranks or more and the file lies on a local file system (ext2/3/4, XFS,
 * btrfs, tmpfs, ZFS, F2FS).  Elsewhere -- ROMIO
 * (its two-phase path aligns to the file system), parallel and network
 * file systems (Lustre, GPFS, NFS, whose collective components align to
 * stripes and locks), other MPI libraries -- they stay collective.
 * "collective" and "independent" force either way.  Reads are not
 * concerned: OMPIO reads long runs rank by rank already.
 */

/* Whether `path` lies on a local file system (Linux statfs magic
 * numbers). */
static bool local_fs(const char *path)
{
#ifdef __linux__
    static const unsigned long local[] = {
        0xEF53UL,     /* ext2, ext3, ext4 */
        0x58465342UL, /* XFS */
        0x9123683EUL, /* btrfs */
        0x01021994UL, /* tmpfs */
        0x2FC12FC1UL, /* ZFS */
        0xF2F52010UL, /* F2FS */
    };
    struct statfs st;

    if (statfs(path, &st) != 0)
        return false;
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++)
        if ((unsigned long)st.f_type == local[i])
            return true;
#else
    (void)path;
#endif
    return false;
}

/* This rank's view of whether long-run writes to `path` (open) are
 * independent; the ranks then agree (all must say so). */
static int independent_long_writes(MPI_Comm comm, const char *path, int mode)
{
    int size = 1;

    if (mode != LONG_AUTO)
        return mode == LONG_INDEPENDENT;
    if (MPI_Comm_size(comm, &size) != MPI_SUCCESS || size < 3)
        return 0;
    return (detected() & DETECT_OMPIO) != 0 && local_fs(path);
}

/* Collective: whether every rank of `comm` is on this node (*out, the
 * same on every rank).  An MPI status. */
static int one_node(MPI_Comm comm, int *out)
{
    MPI_Comm node = MPI_COMM_NULL;
    int size = 0, node_size = 0, mpi_rc;

    *out = 0;
    mpi_rc = MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL,
                                 &node);
    if (mpi_rc != MPI_SUCCESS)
        return mpi_rc;
    if ((mpi_rc = MPI_Comm_size(comm, &size)) == MPI_SUCCESS)
        mpi_rc = MPI_Comm_size(node, &node_size);
    MPI_Comm_free(&node);
    *out = mpi_rc == MPI_SUCCESS && size == node_size;
    return mpi_rc;
}

/* ---------------------------------------------------------------------- */
/* Open, close, sync, set_size                                            */
/* ---------------------------------------------------------------------- */

/* Local: a new handle for `path` in *fp (set even on failure, when the
 * handle may be half made: the caller frees it) and the hints it opens
 * with in *merged (hfdcp's defaults under `info`), its own hints read. */
static int new_handle(MPI_Comm comm, const char *path, bool write,
                      MPI_Info info, hfdcp__mfile **fp, MPI_Info *merged)
{
    hfdcp__mfile *f = NULL;
    int rc = HFDCP_OK, mpi_rc;

    if ((f = calloc(1, sizeof *f)) == NULL ||
        (f->path = hfdcp__strdup(path)) == NULL) {
        rc = hfdcp__nomem("an MPI-IO file handle");
    } else {
        f->fh = MPI_FILE_NULL;
        f->comm = comm;
        f->write = write;
        if ((mpi_rc = MPI_Comm_rank(comm, &f->rank)) != MPI_SUCCESS)
            rc = hfdcp__mpi_error(mpi_rc, "MPI_Comm_rank opening '%s'", path);
        else
            rc = merge_hints(info, path, merged);
        if (rc == HFDCP_OK)
            rc = own_hints(*merged, path, f);
    }
    *fp = f;
    return rc;
}

/* Collective on f->comm, f open on every rank: how every rank reads
 * (OMPIO's bug) or writes (long runs), and whether the aggregation's
 * windows are node-shared.  Not agreed: every rank makes each agreement
 * below, and the caller agrees on the status. */
static int agree_how(hfdcp__mfile *f, const char *path, bool write)
{
    MPI_Comm comm = f->comm;
    int rc = HFDCP_OK, mpi_rcs[3] = {MPI_SUCCESS, MPI_SUCCESS, MPI_SUCCESS};

    if (!write) { /* every rank must read the same way */
        int mine = ompio_read_bug(), any = 0;
        mpi_rcs[0] = MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm);
        f->independent_reads = any != 0;
        f->local = local_fs(path);
    } else {
        int mine = independent_long_writes(comm, path, f->long_runs), all = 0;
        mpi_rcs[0] = MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm);
        f->independent_long = all != 0;
    }
    {
        int mine = 0, all = 0;
        mpi_rcs[1] = one_node(comm, &mine);
        mine = mine && f->shared_exchange && mpi_rcs[1] == MPI_SUCCESS;
        mpi_rcs[2] = MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm);
        f->shared_exchange = all != 0;
    }
    for (int i = 0; i < 3 && rc == HFDCP_OK; i++)
        if (mpi_rcs[i] != MPI_SUCCESS)
            rc = hfdcp__mpi_error(mpi_rcs[i], "agreeing on how to %s '%s'",
                                  write ? "write" : "read", path);
    return rc;
}

int hfdcp__mfile_open(MPI_Comm comm, const char *path, bool write,
                      MPI_Info info, hfdcp__mfile **out)
{
    hfdcp__mfile *f = NULL;
    MPI_Info merged = MPI_INFO_NULL;
    int rc, mpi_rc, amode;

    if (path == NULL || out == NULL)
        rc = hfdcp__error(HFDCP_ERR_ARG, "opening a file: NULL %s",
                          path == NULL ? "path" : "output pointer");
    else
        rc = new_handle(comm, path, write, info, &f, &merged);
    /* Agree before the collective open so that no rank opens alone. */
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        goto cleanup;

    amode = write ? MPI_MODE_WRONLY | MPI_MODE_CREATE : MPI_MODE_RDONLY;
    mpi_rc = MPI_File_open(comm, path, amode, merged, &f->fh);
    if (mpi_rc != MPI_SUCCESS) {
        rc = hfdcp__mpiio_file_error(mpi_rc,
                                     write ? "MPI_File_open (write)"
                                           : "MPI_File_open (read)",
                                     path);
        f->fh = MPI_FILE_NULL;
    }
    /* MPI_File_open is collective and fails everywhere or nowhere in the
     * implementations we know; should it succeed on some ranks only, their
     * handles are left open, since closing is collective too. */
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        goto cleanup;

    /* Open on every rank from here: every rank makes each agreement
     * of agree_how, and a failure closes the file on every rank. */
    if ((rc = hfdcp__agree(comm, agree_how(f, path, write))) != HFDCP_OK)
        MPI_File_close(&f->fh);

cleanup:
    if (merged != MPI_INFO_NULL)
        MPI_Info_free(&merged);
    if (rc != HFDCP_OK) {
        if (f != NULL)
            free(f->path);
        free(f);
        return rc;
    }
    *out = f;
    return HFDCP_OK;
}

int hfdcp__mfile_close(hfdcp__mfile *f)
{
    MPI_Comm comm;
    int rc = HFDCP_OK, mpi_rc;

    if (f == NULL)
        return HFDCP_OK;
    comm = f->comm;
    if (f->fh != MPI_FILE_NULL) {
        mpi_rc = MPI_File_close(&f->fh);
        if (mpi_rc != MPI_SUCCESS)
            rc = hfdcp__mpiio_file_error(mpi_rc, "MPI_File_close", f->path);
    }
    free(f->path);
    free(f);
    return hfdcp__agree(comm, rc);
}

int hfdcp__mfile_sync(hfdcp__mfile *f)
{
    int mpi_rc = MPI_File_sync(f->fh);
    int rc = HFDCP_OK;

    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpiio_file_error(mpi_rc, "MPI_File_sync", f->path);
    return hfdcp__agree(f->comm, rc);
}

int hfdcp__mfile_set_size(hfdcp__mfile *f, uint64_t size)
{
    int rc = HFDCP_OK, mpi_rc;

    /* Every rank passes the same size or MPI says it is erroneous: a
     * size out of range is refused on every rank alike. */
    if (size > (uint64_t)INT64_MAX) {
        rc = hfdcp__error(HFDCP_ERR_RANGE,
                          "setting the size of '%s' to %" PRIu64
                          " bytes: too large",
                          f->path, size);
    } else {
        mpi_rc = MPI_File_set_size(f->fh, (MPI_Offset)size);
        if (mpi_rc != MPI_SUCCESS)
            rc = hfdcp__mpiio_file_error(mpi_rc, "MPI_File_set_size",
                                         f->path);
    }
    return hfdcp__agree(f->comm, rc);
}

bool hfdcp__mfile_collective_reads(const hfdcp__mfile *f)
{
    return !f->independent_reads;
}

/* ---------------------------------------------------------------------- */
/* Byte ranges                                                            */
/* ---------------------------------------------------------------------- */

/* Local: writes or reads `len` bytes (at most one window) at file offset
 * `off` from or into `buf`, with an independent MPI_File_write_at /
 * read_at; the file view must be bytes. */
int hfdcp__mpiio_range_io(hfdcp__mfile *f, bool write, uint64_t off,
                          char *buf, uint64_t len)
{
    const char *call = write ? "MPI_File_write_at" : "MPI_File_read_at";
    MPI_Status st;
    int got = 0, mpi_rc;

    if (write)
        mpi_rc = MPI_File_write_at(f->fh, (MPI_Offset)off, buf, (int)len,
                                   MPI_BYTE, &st);
    else
        mpi_rc = MPI_File_read_at(f->fh, (MPI_Offset)off, buf, (int)len,
                                  MPI_BYTE, &st);
    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__mpiio_file_error(mpi_rc, call, f->path);
    if (MPI_Get_count(&st, MPI_BYTE, &got) != MPI_SUCCESS ||
        (uint64_t)got != len)
        return hfdcp__error(HFDCP_ERR_IO,
                            "%s on '%s': moved %d of %" PRIu64
                            " bytes at offset %" PRIu64 " (%s)",
                            call, f->path, got, len, off,
                            write ? "short write"
                                  : "short read: the file ends early");
    return HFDCP_OK;
}

/* Collective: sets the byte view the explicit-offset I/O of the
 * aggregation and the sieve needs.  Agreed status. */
int hfdcp__mpiio_byte_view(hfdcp__mfile *f)
{
    int rc = HFDCP_OK,
        mpi_rc = MPI_File_set_view(f->fh, 0, MPI_BYTE, MPI_BYTE, "native",
                                   MPI_INFO_NULL);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpiio_file_error(mpi_rc, "MPI_File_set_view", f->path);
    return hfdcp__agree(f->comm, rc);
}
