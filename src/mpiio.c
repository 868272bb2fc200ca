/*
 * mpiio.c - the only file that calls MPI_File_*.  Opens files with hfdcp's
 * hints merged under the caller's, and moves "pieces" (a box of a
 * row-major array in a file <-> a box of a row-major array in memory) with
 * collective reads and writes described by MPI datatypes: no staging copy.
 *
 * A transfer, on each rank:
 *   1. Normalizes every piece: sub-byte elements (4 and 6 bits) are folded
 *      into bytes along the innermost dimension (after merging the
 *      trailing dimensions whole in both arrays, so that a whole tensor
 *      with rows of 1.5 bytes still moves); trailing dimensions that are
 *      whole in both arrays are merged into one contiguous run; outer
 *      dimensions of extent 1 are dropped.  What is left is a run of R
 *      bytes repeated along k dimensions, with byte strides in the file and
 *      in memory.
 *   2. Splits every piece of more than hfdcp__mpiio_round_max bytes (1
 *      GiB) into parts that fit: groups of slices along its outermost
 *      dimension, each slice split in turn when one is too large, a single
 *      run into shorter runs.  Then sorts the parts by their first file
 *      byte and splits them into rounds whose file byte ranges [first,
 *      last] are disjoint (interval partitioning), because a file view's
 *      displacements must never decrease and a write must not touch a byte
 *      twice, and which move at most hfdcp__mpiio_round_max bytes on this
 *      rank.  Two column blocks of one tensor on one rank interleave: they
 *      go in two rounds.  The byte limit works around ROMIO 3.2.1 (Open
 *      MPI 4.1's romio321): a collective write of more than 2 GiB on one
 *      rank that mixes a small piece with a large one writes the small
 *      piece's bytes a second time in the middle of the large one.
 *   3. Agrees with every rank on the number of rounds (the maximum).  In
 *      each round every rank sets ONE file view (a struct of nested
 *      hvectors at the pieces' absolute file offsets, etype MPI_BYTE,
 *      "native") and makes ONE MPI_File_read_all / write_all of count 1 on
 *      a memory struct at the pieces' absolute addresses (MPI_BOTTOM), or
 *      of count 0 when it has nothing in that round.  (Reads are
 *      independent MPI_File_read calls on MPI libraries with a known read
 *      bug: see "A known bug" below.)
 *
 * Large counts: Open MPI 4.1 implements MPI 3.1 (no large-count calls).  No
 * count given to a datatype constructor exceeds hfdcp__mpiio_block (1 GiB):
 * a longer run or vector becomes a vector of blocks plus a remainder,
 * joined by a struct.  Strides and displacements are MPI_Aint, so nothing
 * depends on int-sized subarray dimensions.  A round may move more than
 * 2^31 bytes if hfdcp__mpiio_round_max is raised: its types are checked with
 * MPI_Type_size_x and the bytes moved with MPI_Get_elements_x.
 */
#define _GNU_SOURCE /* fallocate() */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>
#endif

#include "hfdcp_internal.h"

uint64_t hfdcp__mpiio_block = (uint64_t)1 << 30;
uint64_t hfdcp__mpiio_round_max = (uint64_t)1 << 30;

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

struct hfdcp__mfile {
    MPI_File fh;
    MPI_Comm comm; /* the caller's; must outlive the file */
    int rank;
    char *path;
    bool write;
    bool independent_reads; /* work around OMPIO's read bug (below) */
    bool independent_long;  /* long-run writes are independent (below) */
    bool last_independent;  /* the last transfer was written so */
    int last_rounds;
    int aggregate;       /* AGG_AUTO, AGG_ON or AGG_OFF (hint) */
    uint64_t agg_buffer; /* bytes per aggregation window (hint) */
    int long_runs;       /* LONG_AUTO, LONG_COLLECTIVE or LONG_INDEPENDENT */
    int sieve;           /* AGG_AUTO, AGG_ON or AGG_OFF (hint) */
    bool local;          /* reading: this rank sees a local file system */
    bool last_sieved;    /* the last transfer was read by sieving */
    bool keep_buffer;    /* take and keep the kept buffer (hint) */
    bool shared_exchange; /* aggregate through node-shared memory (agreed) */
    bool last_shared;     /* the last transfer did */
};

/* hfdcp's own hints (see "Aggregation" and "Long runs" below). */
enum { AGG_AUTO = 0, AGG_ON = 1, AGG_OFF = 2 };
enum { LONG_AUTO = 0, LONG_COLLECTIVE = 1, LONG_INDEPENDENT = 2 };
#define AGG_BUFFER_DEFAULT ((uint64_t)32 << 20)
#define AGG_BUFFER_MAX ((uint64_t)1 << 30)
int hfdcp__mpiio_aggregate_default = AGG_AUTO;
int hfdcp__mpiio_shared_fault = -1;
_Atomic uint64_t hfdcp__mpiio_sieved;

/* ---------------------------------------------------------------------- */
/* Errors                                                                 */
/* ---------------------------------------------------------------------- */

/* An MPI error on a file: the message names the call and the file and ends
 * with MPI_Error_string; errors of the I/O classes become HFDCP_ERR_IO. */
static int file_error(int mpi_rc, const char *call, const char *path)
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

/* An MPI error that is not about the file itself (datatypes, info). */
#define MPI_TRY(call, path)                                                  \
    do {                                                                     \
        int mpi_rc_ = (call);                                                \
        if (mpi_rc_ != MPI_SUCCESS)                                          \
            return hfdcp__mpi_error(mpi_rc_, "%s for '%s'", #call, (path));  \
    } while (0)

/* ---------------------------------------------------------------------- */
/* Hints                                                                  */
/* ---------------------------------------------------------------------- */

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
 * A write whose runs are long (not aggregated by hfdcp: see "Aggregation")
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

int hfdcp__mfile_open(MPI_Comm comm, const char *path, bool write,
                      MPI_Info info, hfdcp__mfile **out)
{
    hfdcp__mfile *f = NULL;
    MPI_Info merged = MPI_INFO_NULL;
    int rc = HFDCP_OK, mpi_rc, amode;

    if (path == NULL || out == NULL) {
        rc = hfdcp__error(HFDCP_ERR_ARG, "opening a file: NULL %s",
                          path == NULL ? "path" : "output pointer");
    } else if ((f = calloc(1, sizeof *f)) == NULL ||
               (f->path = hfdcp__strdup(path)) == NULL) {
        rc = hfdcp__nomem("an MPI-IO file handle");
    } else {
        f->fh = MPI_FILE_NULL;
        f->comm = comm;
        f->write = write;
        if ((mpi_rc = MPI_Comm_rank(comm, &f->rank)) != MPI_SUCCESS)
            rc = hfdcp__mpi_error(mpi_rc, "MPI_Comm_rank opening '%s'", path);
        else
            rc = merge_hints(info, path, &merged);
        if (rc == HFDCP_OK)
            rc = own_hints(merged, path, f);
    }
    /* Agree before the collective open so that no rank opens alone. */
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        goto cleanup;

    amode = write ? MPI_MODE_WRONLY | MPI_MODE_CREATE : MPI_MODE_RDONLY;
    mpi_rc = MPI_File_open(comm, path, amode, merged, &f->fh);
    if (mpi_rc != MPI_SUCCESS) {
        rc = file_error(mpi_rc, write ? "MPI_File_open (write)"
                                      : "MPI_File_open (read)", path);
        f->fh = MPI_FILE_NULL;
    }
    /* MPI_File_open is collective and fails everywhere or nowhere in the
     * implementations we know; should it succeed on some ranks only, their
     * handles are left open, since closing is collective too. */
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        goto cleanup;

    /* Open on every rank from here: every rank makes each agreement
     * below, and a failure closes the file on every rank. */
    int mpi_rcs[3] = {MPI_SUCCESS, MPI_SUCCESS, MPI_SUCCESS};
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
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
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
            rc = file_error(mpi_rc, "MPI_File_close", f->path);
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
        rc = file_error(mpi_rc, "MPI_File_sync", f->path);
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
            rc = file_error(mpi_rc, "MPI_File_set_size", f->path);
    }
    return hfdcp__agree(f->comm, rc);
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

int hfdcp__mfile_last_rounds(const hfdcp__mfile *f)
{
    return f->last_rounds;
}

bool hfdcp__mfile_collective_reads(const hfdcp__mfile *f)
{
    return !f->independent_reads;
}

bool hfdcp__mfile_last_independent(const hfdcp__mfile *f)
{
    return f->last_independent;
}

bool hfdcp__mfile_last_sieved(const hfdcp__mfile *f)
{
    return f->last_sieved;
}

bool hfdcp__mfile_last_shared(const hfdcp__mfile *f)
{
    return f->last_shared;
}

/* ---------------------------------------------------------------------- */
/* Normalized pieces                                                      */
/* ---------------------------------------------------------------------- */

/* A piece reduced to a run of `run` contiguous bytes repeated along k
 * outer dimensions (outermost first), with byte strides. */
typedef struct {
    uint64_t foff;     /* absolute file offset of the first byte */
    uint64_t fend;     /* one past the last file byte */
    char *maddr;       /* first byte in memory */
    uint64_t run;      /* bytes of the innermost contiguous run */
    uint64_t bytes;    /* total bytes */
    int k;             /* outer dimensions */
    uint64_t count0;   /* count of dimension 0 (count[0] is not used) */
    uint64_t *count;   /* k entries each, in a pool owned by the caller */
    uint64_t *fstride;
    uint64_t *mstride;
    int round;
} npiece;

/* The count of outer dimension j of q. */
static uint64_t dim_count(const npiece *q, int j)
{
    return j == 0 ? q->count0 : q->count[j];
}

#define AINT_MAX ((uint64_t)INT64_MAX)

static bool mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return hfdcp__mul_u64(a, b, out) && *out <= AINT_MAX;
}

static bool add_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return hfdcp__add_u64(a, b, out) && *out <= AINT_MAX;
}

/* Describes piece `i` for messages. */
static void describe(char *buf, size_t size, const hfdcp__piece *p, size_t i)
{
    char fbox[256], mbox[256];
    hfdcp__format_box(fbox, sizeof fbox, p->ndim, p->fstart, p->count);
    hfdcp__format_box(mbox, sizeof mbox, p->ndim, p->mstart, p->count);
    snprintf(buf, size, "piece %zu (file box %s at byte %" PRIu64
             ", memory box %s, %d-bit elements)",
             i, fbox, p->file_offset, mbox, p->bits);
}

/*
 * Normalizes piece `i` into *q, whose arrays point into `pool` (3 * ndim
 * entries).  An empty piece gets bytes == 0.
 */
static int normalize(const hfdcp__piece *p, size_t i, const char *path,
                     uint64_t *pool, npiece *q)
{
    uint64_t fsh[HFDCP_MAX_NDIM], fst[HFDCP_MAX_NDIM], msh[HFDCP_MAX_NDIM],
        mst[HFDCP_MAX_NDIM], cnt[HFDCP_MAX_NDIM], fstr[HFDCP_MAX_NDIM],
        mstr[HFDCP_MAX_NDIM];
    uint64_t elem, foff = p->file_offset, moff = 0, last = 0, t;
    int nd = p->ndim, d;
    char what[640];

    memset(q, 0, sizeof *q);
    q->count = pool;
    q->fstride = pool + (nd > 0 ? nd : 0);
    q->mstride = pool + 2 * (nd > 0 ? nd : 0);
    describe(what, sizeof what, p, i);

    if (nd < 0 || nd > HFDCP_MAX_NDIM || p->mem == NULL ||
        (nd > 0 && (p->fshape == NULL || p->fstart == NULL ||
                    p->mshape == NULL || p->mstart == NULL ||
                    p->count == NULL)))
        return hfdcp__error(HFDCP_ERR_ARG, "'%s': %s: bad dims or NULL array",
                            path, what);
    if (p->bits != 4 && p->bits != 6 && p->bits != 8 && p->bits != 16 &&
        p->bits != 32 && p->bits != 64)
        return hfdcp__error(HFDCP_ERR_ARG, "'%s': %s: bad element size",
                            path, what);
    for (d = 0; d < nd; d++) {
        if (p->fshape[d] < 0 || p->fstart[d] < 0 || p->mshape[d] < 0 ||
            p->mstart[d] < 0 || p->count[d] < 0 ||
            p->count[d] > p->fshape[d] - p->fstart[d] ||
            p->count[d] > p->mshape[d] - p->mstart[d])
            return hfdcp__error(HFDCP_ERR_ARG,
                                "'%s': %s: box outside its array in dim %d",
                                path, what, d);
        fsh[d] = (uint64_t)p->fshape[d];
        fst[d] = (uint64_t)p->fstart[d];
        msh[d] = (uint64_t)p->mshape[d];
        mst[d] = (uint64_t)p->mstart[d];
        cnt[d] = (uint64_t)p->count[d];
        if (cnt[d] == 0)
            return HFDCP_OK; /* empty */
    }

    if (p->bits < 8) {
        /* First merge the trailing dimensions whole in both arrays into
         * the one before them: a [2, 3] F4 tensor read whole is one run of
         * 6 elements (3 bytes) although its rows are 1.5 bytes. */
        uint64_t b = (uint64_t)p->bits;
        while (nd > 1 && fst[nd - 1] == 0 && mst[nd - 1] == 0 &&
               cnt[nd - 1] == fsh[nd - 1] && cnt[nd - 1] == msh[nd - 1]) {
            uint64_t k = cnt[nd - 1];
            if (!mul_ok(fsh[nd - 2], k, &fsh[nd - 2]) ||
                !mul_ok(fst[nd - 2], k, &fst[nd - 2]) ||
                !mul_ok(msh[nd - 2], k, &msh[nd - 2]) ||
                !mul_ok(mst[nd - 2], k, &mst[nd - 2]) ||
                !mul_ok(cnt[nd - 2], k, &cnt[nd - 2]))
                goto overflow;
            nd--;
        }
        /* Then fold elements into bytes: along the innermost dimension
         * every extent and start must be a whole number of bytes, so that
         * every row of both arrays starts on a byte. */
        d = nd - 1;
        if (nd == 0 || (fsh[d] * b) % 8 || (fst[d] * b) % 8 ||
            (msh[d] * b) % 8 || (mst[d] * b) % 8 || (cnt[d] * b) % 8)
            return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                                "'%s': %s: a box of %d-bit elements must "
                                "start and end on whole bytes along the "
                                "innermost dimension, in the file and in "
                                "memory",
                                path, what, p->bits);
        fsh[d] = fsh[d] * b / 8;
        fst[d] = fst[d] * b / 8;
        msh[d] = msh[d] * b / 8;
        mst[d] = mst[d] * b / 8;
        cnt[d] = cnt[d] * b / 8;
        elem = 1;
    } else {
        elem = (uint64_t)p->bits / 8;
    }

    /* Byte strides, offsets of the first byte, and of the last. */
    for (d = nd - 1; d >= 0; d--) {
        if (d == nd - 1) {
            fstr[d] = elem;
            mstr[d] = elem;
        } else if (!mul_ok(fstr[d + 1], fsh[d + 1], &fstr[d]) ||
                   !mul_ok(mstr[d + 1], msh[d + 1], &mstr[d])) {
            goto overflow;
        }
        if (!mul_ok(fst[d], fstr[d], &t) || !add_ok(foff, t, &foff) ||
            !mul_ok(mst[d], mstr[d], &t) || !add_ok(moff, t, &moff) ||
            !mul_ok(cnt[d] - 1, fstr[d], &t) || !add_ok(last, t, &last))
            goto overflow;
    }

    /* Merge trailing dimensions whole in both arrays into the run, then the
     * first partial one (its elements are contiguous in both). */
    q->run = elem;
    d = nd - 1;
    while (d >= 0 && fst[d] == 0 && mst[d] == 0 && cnt[d] == fsh[d] &&
           cnt[d] == msh[d]) {
        if (!mul_ok(q->run, cnt[d], &q->run))
            goto overflow;
        d--;
    }
    if (d >= 0) {
        if (!mul_ok(q->run, cnt[d], &q->run))
            goto overflow;
        d--;
    }
    q->bytes = q->run;
    for (int j = 0; j <= d; j++) {
        if (cnt[j] == 1)
            continue;
        q->count[q->k] = cnt[j];
        q->fstride[q->k] = fstr[j];
        q->mstride[q->k] = mstr[j];
        q->k++;
        if (!mul_ok(q->bytes, cnt[j], &q->bytes))
            goto overflow;
    }
    /* `last` is the offset of the last element from the first; the piece
     * ends one element after it. */
    q->count0 = q->k > 0 ? q->count[0] : 0;
    q->foff = foff;
    if (!add_ok(last, elem, &last) || !add_ok(foff, last, &q->fend))
        goto overflow;
    q->maddr = (char *)p->mem + moff;
    return HFDCP_OK;

overflow:
    return hfdcp__error(HFDCP_ERR_RANGE,
                        "'%s': %s: byte offsets overflow 63 bits", path, what);
}

/* ---------------------------------------------------------------------- */
/* Datatypes                                                              */
/* ---------------------------------------------------------------------- */

static uint64_t block_count(void)
{
    uint64_t b = hfdcp__mpiio_block;
    if (b < 2)
        b = 2;
    if (b > (uint64_t)INT_MAX)
        b = (uint64_t)INT_MAX;
    return b;
}

static void free_type(MPI_Datatype *t)
{
    if (*t != MPI_DATATYPE_NULL && *t != MPI_BYTE)
        MPI_Type_free(t);
    *t = MPI_DATATYPE_NULL;
}

/*
 * *out = `count` copies of `inner`, `stride` bytes apart (a run of bytes
 * when inner is MPI_BYTE and stride 1).  Counts above the block size
 * become a vector of blocks (recursively) plus a remainder.  `inner` is
 * not freed.
 */
static int vector_type(uint64_t count, uint64_t stride, MPI_Datatype inner,
                       const char *path, MPI_Datatype *out)
{
    uint64_t b = block_count(), q, r, bstride, rdisp;
    MPI_Datatype blk = MPI_DATATYPE_NULL, outer = MPI_DATATYPE_NULL,
                 rem = MPI_DATATYPE_NULL;
    int rc = HFDCP_OK;

    if (count <= b) {
        if (inner == MPI_BYTE && stride == 1)
            MPI_TRY(MPI_Type_contiguous((int)count, MPI_BYTE, out), path);
        else
            MPI_TRY(MPI_Type_create_hvector((int)count, 1, (MPI_Aint)stride,
                                            inner, out),
                    path);
        return HFDCP_OK;
    }
    q = count / b;
    r = count % b;
    if (!mul_ok(b, stride, &bstride) || !mul_ok(q, bstride, &rdisp))
        return hfdcp__error(HFDCP_ERR_RANGE,
                            "'%s': a vector of %" PRIu64 " x %" PRIu64
                            " bytes overflows",
                            path, count, stride);
    HFDCP_CHECK(vector_type(b, stride, inner, path, &blk));
    HFDCP_CHECK(vector_type(q, bstride, blk, path, &outer));
    if (r == 0) {
        *out = outer;
        outer = MPI_DATATYPE_NULL;
    } else {
        int lens[2] = {1, 1};
        MPI_Aint disps[2] = {0, (MPI_Aint)rdisp};
        MPI_Datatype types[2];
        HFDCP_CHECK(vector_type(r, stride, inner, path, &rem));
        types[0] = outer;
        types[1] = rem;
        HFDCP_MPI_CHECK(MPI_Type_create_struct(2, lens, disps, types, out));
    }
cleanup:
    free_type(&blk);
    free_type(&outer);
    free_type(&rem);
    return rc;
}

/* The datatype of one piece on the file side or the memory side; its first
 * byte is at displacement 0. */
static int piece_type(const npiece *q, bool file, const char *path,
                      MPI_Datatype *out)
{
    MPI_Datatype t = MPI_DATATYPE_NULL, t2;
    int rc;

    HFDCP_TRY(vector_type(q->run, 1, MPI_BYTE, path, &t));
    for (int j = q->k - 1; j >= 0; j--) {
        rc = vector_type(dim_count(q, j),
                         file ? q->fstride[j] : q->mstride[j], t,
                         path, &t2);
        free_type(&t);
        if (rc != HFDCP_OK)
            return rc;
        t = t2;
    }
    *out = t;
    return HFDCP_OK;
}

/*
 * Builds, for the pieces `round[0..n)` (sorted, disjoint in the file), the
 * committed file type (displacements = absolute file offsets) and memory
 * type (displacements = absolute addresses, used with MPI_BOTTOM), and
 * checks their sizes against `bytes`.
 */
static int round_types(npiece *const *round, size_t n, uint64_t bytes,
                       const char *path, MPI_Datatype *ftype,
                       MPI_Datatype *mtype)
{
    int *lens = NULL, rc = HFDCP_OK;
    MPI_Aint *fdisp = NULL, *mdisp = NULL;
    MPI_Datatype *ft = NULL, *mt = NULL;
    MPI_Count fsize = 0, msize = 0;
    size_t built = 0;

    *ftype = *mtype = MPI_DATATYPE_NULL;
    if (n > (size_t)INT_MAX)
        return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                            "'%s': %zu pieces in one round (at most %d)",
                            path, n, INT_MAX);
    lens = malloc(n * sizeof *lens);
    fdisp = malloc(n * sizeof *fdisp);
    mdisp = malloc(n * sizeof *mdisp);
    ft = malloc(n * sizeof *ft);
    mt = malloc(n * sizeof *mt);
    if (!lens || !fdisp || !mdisp || !ft || !mt)
        HFDCP_FAIL(HFDCP_ERR_NOMEM,
                   "out of memory describing %zu pieces of '%s'", n, path);
    for (size_t i = 0; i < n; i++) {
        ft[i] = mt[i] = MPI_DATATYPE_NULL;
        lens[i] = 1;
        fdisp[i] = (MPI_Aint)round[i]->foff;
        HFDCP_MPI_CHECK(MPI_Get_address(round[i]->maddr, &mdisp[i]));
        built = i + 1;
        HFDCP_CHECK(piece_type(round[i], true, path, &ft[i]));
        HFDCP_CHECK(piece_type(round[i], false, path, &mt[i]));
    }
    HFDCP_MPI_CHECK(MPI_Type_create_struct((int)n, lens, fdisp, ft, ftype));
    HFDCP_MPI_CHECK(MPI_Type_commit(ftype));
    HFDCP_MPI_CHECK(MPI_Type_create_struct((int)n, lens, mdisp, mt, mtype));
    HFDCP_MPI_CHECK(MPI_Type_commit(mtype));
    HFDCP_MPI_CHECK(MPI_Type_size_x(*ftype, &fsize));
    HFDCP_MPI_CHECK(MPI_Type_size_x(*mtype, &msize));
    if (fsize != (MPI_Count)bytes || msize != (MPI_Count)bytes)
        HFDCP_FAIL(HFDCP_ERR_INTERNAL,
                   "'%s': datatypes of %zu pieces hold %lld (file) and %lld "
                   "(memory) bytes, expected %" PRIu64,
                   path, n, (long long)fsize, (long long)msize, bytes);
cleanup:
    for (size_t i = 0; i < built; i++) {
        free_type(&ft[i]);
        free_type(&mt[i]);
    }
    if (rc != HFDCP_OK) {
        free_type(ftype);
        free_type(mtype);
        if (rc == HFDCP_ERR_MPI)
            hfdcp__error_prefix(rc, "describing pieces of '%s'", path);
    }
    free(lens);
    free(fdisp);
    free(mdisp);
    free(ft);
    free(mt);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Rounds                                                                 */
/* ---------------------------------------------------------------------- */

static int cmp_npiece(const void *a, const void *b)
{
    const npiece *x = *(npiece *const *)a, *y = *(npiece *const *)b;
    if (x->foff != y->foff)
        return x->foff < y->foff ? -1 : 1;
    if (x->fend != y->fend)
        return x->fend < y->fend ? -1 : 1;
    return 0;
}

static uint64_t round_max(void)
{
    return hfdcp__mpiio_round_max > 0 ? hfdcp__mpiio_round_max : 1;
}

/* A growing array of pieces. */
typedef struct {
    npiece *v;
    size_t n, cap;
} parts;

static int parts_push(parts *ps, const npiece *q)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 16;
        npiece *v = cap > SIZE_MAX / sizeof *v
                        ? NULL
                        : realloc(ps->v, cap * sizeof *v);
        if (v == NULL)
            return hfdcp__nomem("the parts of a transfer");
        ps->v = v;
        ps->cap = cap;
    }
    ps->v[ps->n++] = *q;
    return HFDCP_OK;
}

/*
 * Appends `q` to `ps`, split into parts of at most `lim` bytes: groups of
 * its outermost dimension's slices when one slice fits, else each slice
 * split in turn; a single run longer than `lim` becomes shorter runs.
 * Parts share q's dimension arrays (a part without q's outermost
 * dimension points one entry further).
 */
static int split_piece(const npiece *q, uint64_t lim, parts *ps)
{
    npiece sub = *q;

    if (q->bytes <= lim)
        return parts_push(ps, q);
    if (q->k == 0) {
        for (uint64_t off = 0; off < q->run; off += lim) {
            sub.run = q->run - off < lim ? q->run - off : lim;
            sub.bytes = sub.run;
            sub.foff = q->foff + off;
            sub.fend = sub.foff + sub.run;
            sub.maddr = q->maddr + off;
            HFDCP_TRY(parts_push(ps, &sub));
        }
        return HFDCP_OK;
    }
    /* One slice of dimension 0: its bytes, and its extent in the file. */
    uint64_t slice = q->bytes / q->count0;
    uint64_t extent = q->fend - q->foff - (q->count0 - 1) * q->fstride[0];
    if (slice <= lim) {
        uint64_t g = lim / slice;
        for (uint64_t i = 0; i < q->count0; i += g) {
            sub.count0 = q->count0 - i < g ? q->count0 - i : g;
            sub.bytes = sub.count0 * slice;
            sub.foff = q->foff + i * q->fstride[0];
            sub.fend = sub.foff + (sub.count0 - 1) * q->fstride[0] + extent;
            sub.maddr = q->maddr + i * q->mstride[0];
            HFDCP_TRY(parts_push(ps, &sub));
        }
        return HFDCP_OK;
    }
    sub.k = q->k - 1;
    sub.count = q->count + 1;
    sub.fstride = q->fstride + 1;
    sub.mstride = q->mstride + 1;
    sub.count0 = sub.k > 0 ? sub.count[0] : 0;
    sub.bytes = slice;
    for (uint64_t i = 0; i < q->count0; i++) {
        sub.foff = q->foff + i * q->fstride[0];
        sub.fend = sub.foff + extent;
        sub.maddr = q->maddr + i * q->mstride[0];
        HFDCP_TRY(split_piece(&sub, lim, ps));
    }
    return HFDCP_OK;
}

/* A min-heap of open rounds by the end of their last piece (and, in an
 * aggregation window's coverage, of sources by their next run's offset:
 * end = that offset, bytes = the run's index, round = the source). */
typedef struct {
    uint64_t end;
    uint64_t bytes;
    int round;
} heap_item;

static void heap_down(heap_item *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].end < h[m].end)
            m = l;
        if (r < n && h[r].end < h[m].end)
            m = r;
        if (m == i)
            return;
        heap_item t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heap_up(heap_item *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].end <= h[i].end)
            return;
        heap_item t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

/*
 * Assigns a round to every piece of `sorted[0..n)` (sorted by first byte,
 * each at most `lim` bytes) so that in each round the file byte ranges are
 * disjoint and the bytes total at most `lim` (greedy interval
 * partitioning: a piece joins the round that ended earliest, if it ended
 * before the piece starts; a round with no room for that piece is closed
 * for good).  Without the byte limit this takes as few rounds as there are
 * pieces over any one byte.
 */
static int assign_rounds(npiece **sorted, size_t n, uint64_t lim,
                         int *nrounds)
{
    heap_item *h = malloc((n ? n : 1) * sizeof *h);
    size_t hn = 0;
    int nr = 0;

    if (h == NULL)
        return hfdcp__nomem("the rounds of a transfer");
    for (size_t i = 0; i < n; i++) {
        npiece *q = sorted[i];
        while (hn > 0 && h[0].end <= q->foff && h[0].bytes > lim - q->bytes) {
            h[0] = h[--hn]; /* full: closed */
            heap_down(h, hn, 0);
        }
        if (hn > 0 && h[0].end <= q->foff) {
            q->round = h[0].round;
            h[0].end = q->fend;
            h[0].bytes += q->bytes;
            heap_down(h, hn, 0);
        } else {
            if (nr == INT_MAX) {
                free(h);
                return hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                                    "too many rounds (overlapping or large "
                                    "pieces)");
            }
            q->round = nr;
            h[hn].end = q->fend;
            h[hn].bytes = q->bytes;
            h[hn].round = nr++;
            heap_up(h, hn);
            hn++;
        }
    }
    free(h);
    *nrounds = nr;
    return HFDCP_OK;
}

/* ---------------------------------------------------------------------- */
/* Transfer                                                               */
/* ---------------------------------------------------------------------- */

/* One collective call (an independent one when `indep`, see "Long runs",
 * or on reads with OMPIO's bug): this rank's pieces `round[0..n)` (n may
 * be 0). */
static int do_round(hfdcp__mfile *f, bool write, bool indep,
                    npiece *const *round, size_t n)
{
    MPI_Datatype ftype = MPI_DATATYPE_NULL, mtype = MPI_DATATYPE_NULL;
    MPI_Status st;
    MPI_Count got = 0;
    uint64_t bytes = 0;
    int rc = HFDCP_OK, mpi_rc, count = n > 0 ? 1 : 0;
    const char *call = write ? (indep ? "MPI_File_write" : "MPI_File_write_all")
                       : f->independent_reads ? "MPI_File_read"
                                              : "MPI_File_read_all";

    for (size_t i = 0; i < n; i++)
        bytes += round[i]->bytes; /* each checked; the sum below */
    if (n > 0)
        rc = round_types(round, n, bytes, f->path, &ftype, &mtype);
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        goto cleanup;

    mpi_rc = MPI_File_set_view(f->fh, 0, MPI_BYTE,
                               n > 0 ? ftype : MPI_BYTE, "native",
                               MPI_INFO_NULL);
    if (mpi_rc != MPI_SUCCESS)
        rc = file_error(mpi_rc, "MPI_File_set_view", f->path);
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        goto cleanup;

    if (write && indep)
        mpi_rc = n > 0 ? MPI_File_write(f->fh, MPI_BOTTOM, count, mtype, &st)
                       : MPI_SUCCESS;
    else if (write)
        mpi_rc = MPI_File_write_all(f->fh, MPI_BOTTOM, count,
                                    n > 0 ? mtype : MPI_BYTE, &st);
    else if (!f->independent_reads)
        mpi_rc = MPI_File_read_all(f->fh, MPI_BOTTOM, count,
                                   n > 0 ? mtype : MPI_BYTE, &st);
    else if (n > 0)
        mpi_rc = MPI_File_read(f->fh, MPI_BOTTOM, count, mtype, &st);
    else
        mpi_rc = MPI_SUCCESS;
    if (mpi_rc != MPI_SUCCESS) {
        rc = file_error(mpi_rc, call, f->path);
    } else if (n > 0) {
        mpi_rc = MPI_Get_elements_x(&st, mtype, &got);
        if (mpi_rc != MPI_SUCCESS)
            rc = hfdcp__mpi_error(mpi_rc, "MPI_Get_elements_x after %s on "
                                  "'%s'", call, f->path);
        else if (got != (MPI_Count)bytes)
            rc = hfdcp__error(HFDCP_ERR_IO,
                              "%s on '%s': moved %lld of %" PRIu64
                              " bytes (%s)",
                              call, f->path, (long long)got, bytes,
                              write ? "short write"
                                    : "short read: the file ends early");
    }
    rc = hfdcp__agree(f->comm, rc);
cleanup:
    free_type(&ftype);
    free_type(&mtype);
    return rc;
}

/* A read past the end of the file is an error, caught before the read:
 * the status of a collective read does not reliably count a short read
 * (OMPIO reports the bytes asked for). */
static int check_size(hfdcp__mfile *f, npiece *const *sorted, size_t m)
{
    MPI_Offset size = 0;
    uint64_t end = 0;
    int mpi_rc = MPI_File_get_size(f->fh, &size);

    if (mpi_rc != MPI_SUCCESS)
        return file_error(mpi_rc, "MPI_File_get_size", f->path);
    for (size_t i = 0; i < m; i++)
        if (sorted[i]->fend > end)
            end = sorted[i]->fend;
    if (end > (uint64_t)size)
        return hfdcp__error(HFDCP_ERR_IO,
                            "short read: '%s' has %lld bytes, a read needs "
                            "bytes up to %" PRIu64 " (truncated file?)",
                            f->path, (long long)size, end);
    return HFDCP_OK;
}

/* ---------------------------------------------------------------------- */
/* The kept buffer                                                        */
/* ---------------------------------------------------------------------- */

/*
 * The window of an aggregated or sieved transfer (32 MiB by default) is
 * kept when the transfer ends, and the next one takes it: touching fresh
 * memory costs a page fault per page, once per file of every save and
 * load, and on a VM that hands freed memory back to its host, as the
 * development VM does, each fault goes through the host
 * (docs/benchmarks.md, "The machine").  One buffer is kept per process,
 * the largest given back; it is freed by hfdcp_release_buffers() or at
 * MPI_Finalize (the delete callback of an attribute on MPI_COMM_SELF,
 * which MPI_Finalize runs first).  Hint hfdcp_keep_buffer=disable: the
 * transfer neither takes nor keeps it.  Consolidation stages its output
 * through it too (hfdcp__buffer_take / give).  A mutex guards it for
 * callers in several threads (MPI_THREAD_MULTIPLE).
 */

static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static void *kept;        /* the kept buffer, or NULL */
static uint64_t kept_size;
static uint64_t kept_taken; /* times a transfer took it */
static int kept_keyval = MPI_KEYVAL_INVALID;
/* The kept shared windows (see "Aggregation"): a segment mapped here and
 * in the other ranks of the group that made it, `id` its maker's (rank
 * 0's pid and serial number), `nranks` the group's size and `rank` this
 * rank's place in it. */
static struct {
    char *base;
    uint64_t size;
    uint64_t id[2];
    int nranks, rank;
} kept_shm;
static uint64_t kept_shm_taken; /* times a transfer took it */

static int kept_delete(MPI_Comm comm, int keyval, void *value, void *extra)
{
    (void)comm;
    (void)keyval;
    (void)value;
    (void)extra;
    hfdcp_release_buffers();
    return MPI_SUCCESS;
}

void hfdcp_release_buffers(void)
{
    pthread_mutex_lock(&kept_lock);
    free(kept);
    kept = NULL;
    kept_size = 0;
#ifdef __linux__
    if (kept_shm.base != NULL)
        (void)munmap(kept_shm.base, (size_t)kept_shm.size);
#endif
    memset(&kept_shm, 0, sizeof kept_shm);
    pthread_mutex_unlock(&kept_lock);
}

uint64_t hfdcp__mpiio_kept_shared_bytes(uint64_t *taken)
{
    pthread_mutex_lock(&kept_lock);
    uint64_t n = kept_shm.size;
    if (taken != NULL)
        *taken = kept_shm_taken;
    pthread_mutex_unlock(&kept_lock);
    return n;
}

/* Whether the kept buffers are freed at MPI_Finalize (an attribute of
 * MPI_COMM_SELF whose deletion frees them), registering that once; the
 * caller holds kept_lock.  Nothing is kept when it cannot be. */
static bool kept_registered(void)
{
    if (kept_keyval == MPI_KEYVAL_INVALID &&
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, kept_delete,
                               &kept_keyval, NULL) == MPI_SUCCESS &&
        MPI_Comm_set_attr(MPI_COMM_SELF, kept_keyval, NULL) != MPI_SUCCESS) {
        MPI_Comm_free_keyval(&kept_keyval);
        kept_keyval = MPI_KEYVAL_INVALID;
    }
    return kept_keyval != MPI_KEYVAL_INVALID;
}

uint64_t hfdcp__mpiio_kept_bytes(uint64_t *taken)
{
    pthread_mutex_lock(&kept_lock);
    uint64_t n = kept_size;
    if (taken != NULL)
        *taken = kept_taken;
    pthread_mutex_unlock(&kept_lock);
    return n;
}

/* A buffer of at least *size bytes: the kept one when it is as large and
 * `keep` allows (*size becomes its size), else a new one (NULL when out of
 * memory). */
void *hfdcp__buffer_take(uint64_t *size, bool keep)
{
    void *p = NULL;

    if (keep) {
        pthread_mutex_lock(&kept_lock);
        if (kept != NULL && kept_size >= *size) {
            p = kept;
            *size = kept_size;
            kept = NULL;
            kept_size = 0;
            kept_taken++;
        }
        pthread_mutex_unlock(&kept_lock);
    }
    return p != NULL ? p : malloc(*size);
}

/* Ends the use of `p` (of `size` bytes, as hfdcp__buffer_take left
 * it): kept when `keep` allows and it is at least as large as the one
 * kept, else freed. */
void hfdcp__buffer_give(void *p, uint64_t size, bool keep)
{
    if (p == NULL)
        return;
    if (keep) {
        pthread_mutex_lock(&kept_lock);
        if (kept_registered() && size >= kept_size) {
            void *old = kept;
            kept = p;
            kept_size = size;
            p = old;
        }
        pthread_mutex_unlock(&kept_lock);
    }
    free(p);
}

/* ---------------------------------------------------------------------- */
/* Aggregation: hfdcp's own two-phase transfer                            */
/* ---------------------------------------------------------------------- */

/*
 * A transfer made of many short runs (a column-split tensor: one short run
 * per row, the ranks' runs interleaved) is slow through a collective call
 * when the MPI-IO component does not aggregate it: OMPIO in Open MPI 4.1
 * picks its "individual" fcoll component whenever a file is open on two
 * ranks or fewer, and then every rank writes each of its runs with its own
 * pwritev (125,000 calls per rank for 128 MB of 1 KB runs), the ranks
 * contending for the file's lock; reads go through data sieving.  So
 * hfdcp aggregates such transfers itself:
 *
 *   - the file range the transfer touches on any rank is cut into one
 *     contiguous domain per rank (its bounds aligned to
 *     min(1 MiB, window)), and each domain into windows of the buffer size
 *     (hint hfdcp_aggregate_buffer_size, default 32 MiB), smaller when
 *     the runs are so short that a window would hold more than 65,536 of
 *     them on average (but not under 256 KiB);
 *   - in round r every rank is the aggregator of window r of its domain:
 *     the ranks exchange the lists of their runs in each window
 *     (MPI_Alltoall + MPI_Alltoallv), then the data itself with ONE
 *     MPI_Alltoallw whose datatypes are built from the runs (hindexed on
 *     the user's memory, at absolute addresses, and on the aggregator's
 *     buffer), so the user's bytes are not staged anywhere else; an
 *     aggregator's own runs are copied between its memory and its window
 *     directly, not sent to itself; with every rank on one node the
 *     windows are shared and every run is copied so, with no
 *     MPI_Alltoallw (shared_windows, below; hint hfdcp_exchange);
 *   - each aggregator then writes (or, before the exchange, reads) the
 *     runs' union in its window, a few long contiguous ranges, with
 *     independent MPI_File_write_at / read_at calls: the aggregation, the
 *     collective part, is done, and a collective call would let the
 *     component aggregate the windows again (OMPIO's vulcan on three
 *     ranks or more: a second exchange, and its own 32 MiB buffers).
 *
 * Used when the hint hfdcp_aggregate is "enable", or "auto" (the default)
 * with more than one rank and runs of less than 8 KiB on average over
 * all ranks (measured with hfdcp bench --alt-hint hfdcp_aggregate=disable,
 * docs/benchmarks.md: aggregation is faster on runs of 64 bytes to 2 KB,
 * slower on runs of 12.8 and 128 KB, where the component's path does few,
 * long requests and the exchange is pure cost).  "disable" keeps the
 * MPI-IO component's own collective path.
 */

#define AGG_ALIGN ((uint64_t)1 << 20)
#define AGG_RUN_THRESHOLD ((uint64_t)8 << 10)
#define AGG_RUNS_PER_ROUND ((uint64_t)65536)
#define AGG_BUFFER_MIN ((uint64_t)256 << 10)

/* The runs one rank moves to or from each aggregator in one round. */
typedef struct {
    uint64_t *meta; /* pairs (file offset, length), grouped by aggregator */
    char **mem;     /* first memory byte of each run */
    size_t n, meta_cap, mem_cap;
} runlist;

static int runlist_push(runlist *l, uint64_t off, uint64_t len, char *mem)
{
    const char *what = "the runs of an aggregated transfer";

    HFDCP_TRY(hfdcp__grow(&l->meta, &l->meta_cap, 2 * l->n + 1,
                          sizeof *l->meta, what));
    HFDCP_TRY(hfdcp__grow(&l->mem, &l->mem_cap, l->n, sizeof *l->mem,
                          what));
    l->meta[2 * l->n] = off;
    l->meta[2 * l->n + 1] = len;
    l->mem[l->n] = mem;
    l->n++;
    return HFDCP_OK;
}

/* What is done with each run of a part met in a window: its file offset,
 * length and first memory byte. */
typedef int (*run_fn)(void *ctx, uint64_t off, uint64_t len, char *mem);

static int push_run(void *ctx, uint64_t off, uint64_t len, char *mem)
{
    return runlist_push(ctx, off, len, mem);
}

/*
 * Calls fn on each run of q's slice at outer dimension j (first file byte
 * `foff`, first memory byte `mem`) that meets [w0, w1), cut to it, in
 * file order.  `ext` holds the file extent of one slice of each dimension
 * (ext[k] = run).
 */
static int clip_runs(const npiece *q, int j, const uint64_t *ext,
                     uint64_t foff, char *mem, uint64_t w0, uint64_t w1,
                     run_fn fn, void *ctx)
{
    if (j == q->k) {
        uint64_t a = foff > w0 ? foff : w0;
        uint64_t b = foff + q->run < w1 ? foff + q->run : w1;
        if (a >= b)
            return HFDCP_OK;
        return fn(ctx, a, b - a, mem + (a - foff));
    }
    uint64_t n = dim_count(q, j), fs = q->fstride[j], e = ext[j + 1];
    uint64_t lo = 0, hi;
    if (foff + e <= w0)
        lo = (w0 - foff - e) / fs + 1; /* first slice ending after w0 */
    if (foff >= w1)
        return HFDCP_OK;
    hi = (w1 - 1 - foff) / fs + 1; /* slices starting before w1 */
    if (hi > n)
        hi = n;
    for (uint64_t i = lo; i < hi; i++)
        HFDCP_TRY(clip_runs(q, j + 1, ext, foff + i * fs,
                            mem + i * q->mstride[j], w0, w1, fn, ctx));
    return HFDCP_OK;
}

static int part_runs(const npiece *q, uint64_t w0, uint64_t w1, run_fn fn,
                     void *ctx)
{
    uint64_t ext[HFDCP_MAX_NDIM + 1];

    if (q->fend <= w0 || q->foff >= w1)
        return HFDCP_OK;
    ext[q->k] = q->run;
    for (int j = q->k - 1; j >= 0; j--)
        ext[j] = (dim_count(q, j) - 1) * q->fstride[j] + ext[j + 1];
    return clip_runs(q, 0, ext, q->foff, q->maddr, w0, w1, fn, ctx);
}

/* Runs (offset, length) by offset. */
static int cmp_run(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* An hindexed datatype of `n` runs: lengths meta[2i+1], displacements
 * meta[2i] - base (or the address of mem[i] when mem is given). */
static int runs_type(const uint64_t *meta, char *const *mem, size_t n,
                     uint64_t base, int *lens, MPI_Aint *disp,
                     MPI_Datatype *out)
{
    int rc = HFDCP_OK;

    for (size_t i = 0; i < n; i++) {
        lens[i] = (int)meta[2 * i + 1];
        if (mem == NULL)
            disp[i] = (MPI_Aint)(meta[2 * i] - base);
        else
            HFDCP_MPI_CHECK(MPI_Get_address(mem[i], &disp[i]));
    }
    HFDCP_MPI_CHECK(MPI_Type_create_hindexed((int)n, lens, disp, MPI_BYTE,
                                             out));
    HFDCP_MPI_CHECK(MPI_Type_commit(out));
cleanup:
    return rc;
}

/* The state of one aggregated transfer. */
typedef struct {
    hfdcp__mfile *f;
    bool write;
    int nranks, rank;
    uint64_t base, dsize, buf_size; /* domains: base + a * dsize */
    uint64_t buf_cap;               /* buf's size, buf_size or more */
    int rounds;
    char *buf;                      /* this rank's window */
    runlist mine;                   /* this rank's runs, by aggregator */
    int *scount, *rcount, *sdisp, *rdisp, *ones_s, *ones_r, *zeros;
    uint64_t *rmeta;                /* runs received, by source */
    size_t rmeta_cap;               /* in uint64_t */
    MPI_Datatype *stype, *rtype;
    int *lens;
    MPI_Aint *disp;
    size_t lens_cap, disp_cap;
    npiece *segs;
    npiece **segp;
    size_t segs_cap, segp_cap;
    heap_item *heap; /* coverage: one entry per source */
    size_t heap_cap;
    char *shm;         /* node-shared windows (rank a's at a * buf_size), */
    uint64_t shm_size; /* or NULL: the exchange is MPI_Alltoallw */
    uint64_t shm_id[2]; /* its maker's pid and serial (kept_shm) */
} aggr;

/* Window r of aggregator a: [*w0, *w1), empty when *w0 >= *w1. */
static void window(const aggr *g, int a, int r, uint64_t lo, uint64_t hi,
                   uint64_t *w0, uint64_t *w1)
{
    uint64_t d0 = g->base + (uint64_t)a * g->dsize, d1 = d0 + g->dsize;
    uint64_t s = d0 + (uint64_t)r * g->buf_size, e = s + g->buf_size;
    if (e > d1)
        e = d1;
    if (s < lo)
        s = lo;
    if (e > hi)
        e = hi;
    *w0 = s;
    *w1 = e > s ? e : s;
}

/* Room for the lengths and displacements of `n` runs. */
static int grow_scratch(aggr *g, size_t n)
{
    const char *what = "the datatypes of an aggregated transfer";

    if (n == 0)
        return HFDCP_OK;
    HFDCP_TRY(hfdcp__grow(&g->lens, &g->lens_cap, n - 1, sizeof *g->lens,
                          what));
    return hfdcp__grow(&g->disp, &g->disp_cap, n - 1, sizeof *g->disp, what);
}

/* The union of the received runs in window [w0, w1): pieces on g->buf for
 * do_round, sorted and disjoint.  Each source's runs come in file order
 * unless its parts interleave (two column blocks of one tensor on one
 * rank), and such a source's list is sorted first; the sources are then
 * merged through a heap by their next offset, not sorted together. */
static int coverage(aggr *g, size_t nr, uint64_t w0, size_t *nseg)
{
    const char *what = "the ranges of an aggregated transfer";
    size_t n = 0, nh = 0;

    *nseg = 0;
    if (nr == 0)
        return HFDCP_OK;
    HFDCP_TRY(hfdcp__grow(&g->segs, &g->segs_cap, nr - 1, sizeof *g->segs,
                          what));
    HFDCP_TRY(hfdcp__grow(&g->segp, &g->segp_cap, nr - 1, sizeof *g->segp,
                          what));
    HFDCP_TRY(hfdcp__grow(&g->heap, &g->heap_cap, (size_t)g->nranks - 1,
                          sizeof *g->heap, what));
    for (int a = 0; a < g->nranks; a++) {
        size_t r0 = (size_t)g->rdisp[a] / 2, rn = (size_t)g->rcount[a] / 2;
        uint64_t *m = g->rmeta + 2 * r0;
        if (rn == 0)
            continue;
        for (size_t i = 1; i < rn; i++)
            if (m[2 * i] < m[2 * i - 2]) {
                qsort(m, rn, 2 * sizeof *m, cmp_run);
                break;
            }
        /* end: the source's next offset; bytes: its next run's index */
        g->heap[nh] = (heap_item){m[0], r0, a};
        heap_up(g->heap, nh++);
    }
    while (nh > 0) {
        heap_item *h = &g->heap[0];
        size_t i = (size_t)h->bytes;
        size_t last = (size_t)(g->rdisp[h->round] + g->rcount[h->round]) / 2;
        uint64_t off = g->rmeta[2 * i], end = off + g->rmeta[2 * i + 1];
        if (i + 1 < last) {
            h->bytes = i + 1;
            h->end = g->rmeta[2 * i + 2];
        } else {
            *h = g->heap[--nh];
        }
        heap_down(g->heap, nh, 0);
        if (n > 0 && off <= g->segs[n - 1].fend) {
            if (end > g->segs[n - 1].fend)
                g->segs[n - 1].fend = end;
            continue;
        }
        memset(&g->segs[n], 0, sizeof g->segs[n]);
        g->segs[n].foff = off;
        g->segs[n].fend = end;
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        npiece *s = &g->segs[i];
        s->run = s->bytes = s->fend - s->foff;
        s->maddr = g->buf + (s->foff - w0);
        g->segp[i] = s;
    }
    *nseg = n;
    return HFDCP_OK;
}

/* Local: writes or reads `len` bytes (at most one window) at file offset
 * `off` from or into `buf`, with an independent MPI_File_write_at /
 * read_at; the file view must be bytes. */
static int range_io(hfdcp__mfile *f, bool write, uint64_t off, char *buf,
                    uint64_t len)
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
        return file_error(mpi_rc, call, f->path);
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
static int byte_view(hfdcp__mfile *f)
{
    int rc = HFDCP_OK,
        mpi_rc = MPI_File_set_view(f->fh, 0, MPI_BYTE, MPI_BYTE, "native",
                                   MPI_INFO_NULL);
    if (mpi_rc != MPI_SUCCESS)
        rc = file_error(mpi_rc, "MPI_File_set_view", f->path);
    return hfdcp__agree(f->comm, rc);
}

/* Collective: hfdcp__agree between full memory fences, so that the stores
 * one rank made into the shared windows before it are seen by every rank
 * after it (the MPI call synchronizes the ranks, the fences order the
 * stores around it). */
static int shared_agree(MPI_Comm comm, int rc)
{
    atomic_thread_fence(memory_order_seq_cst);
    rc = hfdcp__agree(comm, rc);
    atomic_thread_fence(memory_order_seq_cst);
    return rc;
}

/* The aggregator's I/O of one round: each covered range of its window
 * (contiguous on both sides: the collective part, the exchange, is
 * done).  Collective only in its agreement, which is fenced: after a
 * read, the other ranks copy their runs out of a shared window. */
static int agg_io(aggr *g, size_t nseg)
{
    int rc = HFDCP_OK;

    for (size_t i = 0; i < nseg && rc == HFDCP_OK; i++)
        rc = range_io(g->f, g->write, g->segp[i]->foff, g->segp[i]->maddr,
                      g->segp[i]->bytes);
    return shared_agree(g->f->comm, rc);
}

/* Local: this rank's runs in aggregator a's window, which starts at file
 * offset w0 and at `buf` in memory, copied between its memory and the
 * window (into the window before a write, out of it after a read).  For
 * its own window, rather than sending them to itself through
 * MPI_Alltoallw, which would build datatypes for them and pack and unpack
 * them; for every window when they are shared. */
static void copy_runs(aggr *g, int a, char *buf, uint64_t w0)
{
    size_t s0 = (size_t)g->sdisp[a] / 2;
    size_t sn = (size_t)g->scount[a] / 2;

    for (size_t i = s0; i < s0 + sn; i++) {
        char *win = buf + (g->mine.meta[2 * i] - w0);
        size_t len = (size_t)g->mine.meta[2 * i + 1];
        if (g->write)
            memcpy(win, g->mine.mem[i], len);
        else
            memcpy(g->mine.mem[i], win, len);
    }
}

/* Local: this rank's runs of round r copied into (write) or out of (read)
 * every aggregator's shared window. */
static void shared_copy(aggr *g, int r, uint64_t lo, uint64_t hi)
{
    for (int a = 0; a < g->nranks; a++) {
        uint64_t w0, w1;
        window(g, a, r, lo, hi, &w0, &w1);
        if (w0 < w1)
            copy_runs(g, a, g->shm + (uint64_t)a * g->buf_size, w0);
    }
}

/* Local: the datatypes of a round's MPI_Alltoallw: this rank's runs in
 * its memory, for each other aggregator; each other source's runs in this
 * rank's window, which starts at file offset my0 (its own runs are
 * copied directly: copy_runs); MPI_BYTE with a count of 0 where there is
 * nothing. */
static int exchange_types(aggr *g, size_t nr, uint64_t my0)
{
    int rc = grow_scratch(g, g->mine.n > nr ? g->mine.n : nr);

    for (int a = 0; a < g->nranks && rc == HFDCP_OK; a++) {
        size_t s0 = (size_t)g->sdisp[a] / 2, sn = (size_t)g->scount[a] / 2;
        size_t r0 = (size_t)g->rdisp[a] / 2, rn = (size_t)g->rcount[a] / 2;
        if (a == g->rank)
            sn = rn = 0;
        g->ones_s[a] = sn > 0;
        g->ones_r[a] = rn > 0;
        if (sn > 0)
            rc = runs_type(g->mine.meta + 2 * s0, g->mine.mem + s0, sn, 0,
                           g->lens, g->disp, &g->stype[a]);
        if (rc == HFDCP_OK && rn > 0)
            rc = runs_type(g->rmeta + 2 * r0, NULL, rn, my0, g->lens,
                           g->disp, &g->rtype[a]);
    }
    for (int a = 0; a < g->nranks; a++) {
        if (g->stype[a] == MPI_DATATYPE_NULL)
            g->stype[a] = MPI_BYTE;
        if (g->rtype[a] == MPI_DATATYPE_NULL)
            g->rtype[a] = MPI_BYTE;
    }
    return rc;
}

/* Collective: the data of round r between the ranks' memory and the
 * aggregators' windows, into them before a write, out of them after a
 * read: copied straight through the shared windows, or MPI_Alltoallw
 * (this rank's own window copied directly).  Agreed status. */
static int exchange(aggr *g, int r, uint64_t lo, uint64_t hi, uint64_t my0)
{
    MPI_Comm comm = g->f->comm;
    int rc = HFDCP_OK, mpi_rc;

    if (g->shm != NULL) {
        shared_copy(g, r, lo, hi);
        return shared_agree(comm, HFDCP_OK);
    }
    copy_runs(g, g->rank, g->buf, my0);
    if (g->write)
        mpi_rc = MPI_Alltoallw(MPI_BOTTOM, g->ones_s, g->zeros, g->stype,
                               g->buf, g->ones_r, g->zeros, g->rtype, comm);
    else
        mpi_rc = MPI_Alltoallw(g->buf, g->ones_r, g->zeros, g->rtype,
                               MPI_BOTTOM, g->ones_s, g->zeros, g->stype,
                               comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "MPI_Alltoallw");
    return hfdcp__agree(comm, rc);
}

/* One round: runs, exchange of their lists, then read-exchange or
 * exchange-write.  Collective; agreed status. */
static int aggr_round(aggr *g, npiece *const *sorted, size_t m, int r,
                      uint64_t lo, uint64_t hi)
{
    MPI_Comm comm = g->f->comm;
    uint64_t my0, my1;
    size_t nr = 0, nseg = 0;
    int rc = HFDCP_OK, mpi_rc, P = g->nranks;

    for (int a = 0; a < P; a++)
        g->stype[a] = g->rtype[a] = MPI_DATATYPE_NULL;
    g->mine.n = 0;
    for (int a = 0; a < P && rc == HFDCP_OK; a++) {
        uint64_t w0, w1;
        size_t before = g->mine.n;
        window(g, a, r, lo, hi, &w0, &w1);
        for (size_t i = 0; i < m && w0 < w1 && rc == HFDCP_OK; i++)
            rc = part_runs(sorted[i], w0, w1, push_run, &g->mine);
        g->sdisp[a] = (int)(2 * before);
        g->scount[a] = (int)(g->mine.n - before);
        if (g->mine.n > (size_t)INT_MAX / 2)
            rc = hfdcp__error(HFDCP_ERR_UNSUPPORTED,
                              "'%s': too many runs in one aggregation round",
                              g->f->path);
    }
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        return rc;

    /* The lists of runs: counts, then (offset, length) pairs. */
    mpi_rc = MPI_Alltoall(g->scount, 1, MPI_INT, g->rcount, 1, MPI_INT,
                          comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "MPI_Alltoall");
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        goto cleanup;
    for (int a = 0; a < P; a++) {
        g->rdisp[a] = (int)(2 * nr);
        nr += (size_t)g->rcount[a];
        g->scount[a] *= 2;
        g->rcount[a] *= 2;
    }
    if (nr > 0)
        rc = hfdcp__grow(&g->rmeta, &g->rmeta_cap, 2 * nr - 1,
                         sizeof *g->rmeta,
                         "the runs of an aggregated transfer");
    if (rc == HFDCP_OK &&
        (mpi_rc = MPI_Alltoallv(g->mine.meta, g->scount, g->sdisp,
                                MPI_UINT64_T, g->rmeta, g->rcount, g->rdisp,
                                MPI_UINT64_T, comm)) != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "MPI_Alltoallv");
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        goto cleanup;
    window(g, g->rank, r, lo, hi, &my0, &my1);

    /* The datatypes of MPI_Alltoallw; none through shared windows. */
    if (g->shm == NULL)
        rc = exchange_types(g, nr, my0);
    if (rc == HFDCP_OK)
        rc = coverage(g, nr, my0, &nseg);
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK)
        goto cleanup;

    /* A window is read (agg_io's agreement) before any rank copies runs
     * out of it; the next round's exchange of run lists waits for every
     * rank before any window is read or written again. */
    if (g->write) {
        if ((rc = exchange(g, r, lo, hi, my0)) == HFDCP_OK)
            rc = agg_io(g, nseg); /* agreed */
    } else {
        if ((rc = agg_io(g, nseg)) == HFDCP_OK)
            rc = exchange(g, r, lo, hi, my0); /* agreed */
    }
cleanup:
    for (int a = 0; a < P; a++) {
        free_type(&g->stype[a]);
        free_type(&g->rtype[a]);
    }
    if (rc == HFDCP_ERR_MPI)
        hfdcp__error_prefix(rc, "aggregated %s of '%s'",
                            g->write ? "write" : "read", g->f->path);
    return rc;
}

/* Local: the shared windows kept for the next transfer (with the hint
 * hfdcp_keep_buffer, and when they can be freed at MPI_Finalize), in
 * place of the ones kept before, or unmapped. */
static void shared_give(aggr *g)
{
#ifdef __linux__
    char *old = g->shm;
    uint64_t old_size = g->shm_size;

    if (g->f->keep_buffer) {
        pthread_mutex_lock(&kept_lock);
        if (kept_registered()) {
            old = kept_shm.base;
            old_size = kept_shm.size;
            kept_shm.base = g->shm;
            kept_shm.size = g->shm_size;
            memcpy(kept_shm.id, g->shm_id, sizeof kept_shm.id);
            kept_shm.nranks = g->nranks;
            kept_shm.rank = g->rank;
        }
        pthread_mutex_unlock(&kept_lock);
    }
    if (old != NULL)
        (void)munmap(old, (size_t)old_size);
#else
    (void)g;
#endif
}

/*
 * Collective: node-shared memory for the windows of every rank (all on
 * one node, f->shared_exchange), rank a's at g->shm + a * g->buf_size.
 * The segment kept by the last transfer is taken when every rank holds
 * the same one (the same maker, group size and place in it) and it is
 * large enough.  Otherwise rank 0 creates a POSIX shared memory object
 * and reserves its pages (fallocate: a full /dev/shm is a refusal here,
 * not a SIGBUS at the first store), every rank maps it, then rank 0
 * unlinks its name: the mappings hold it until aggr_free unmaps it or
 * keeps it.  When any rank cannot have it, g->shm stays NULL on every
 * rank and the exchange is MPI_Alltoallw: not an error.  Agreed status
 * (an error only when MPI fails).
 */
static int shared_windows(aggr *g)
{
#ifdef __linux__
    static atomic_uint serial;
    MPI_Comm comm = g->f->comm;
    uint64_t total = (uint64_t)g->nranks * g->buf_size;
    struct {
        uint64_t id[2]; /* rank 0's kept segment, then the new one */
        int ok;
        char name[60];
    } shared;
    int fd = -1, mine = 0, all = 0, mpi_rc, rc = HFDCP_OK;
    bool created = false;
    void *p = MAP_FAILED;

    memset(&shared, 0, sizeof shared);
    pthread_mutex_lock(&kept_lock);
    if (g->rank == 0 && kept_shm.base != NULL)
        memcpy(shared.id, kept_shm.id, sizeof shared.id);
    pthread_mutex_unlock(&kept_lock);
    mpi_rc = MPI_Bcast(shared.id, 2, MPI_UINT64_T, 0, comm);
    /* taken at once, so that no other thread takes it meanwhile; given
     * back when some rank has no match */
    if (mpi_rc == MPI_SUCCESS && g->f->keep_buffer) {
        pthread_mutex_lock(&kept_lock);
        if (kept_shm.base != NULL && kept_shm.id[0] == shared.id[0] &&
            kept_shm.id[1] == shared.id[1] && kept_shm.nranks == g->nranks &&
            kept_shm.rank == g->rank && kept_shm.size >= total) {
            g->shm = kept_shm.base;
            g->shm_size = kept_shm.size;
            memcpy(g->shm_id, kept_shm.id, sizeof g->shm_id);
            memset(&kept_shm, 0, sizeof kept_shm);
        }
        pthread_mutex_unlock(&kept_lock);
    }
    mine = g->shm != NULL;
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm);
    if (mpi_rc == MPI_SUCCESS && all) {
        pthread_mutex_lock(&kept_lock);
        kept_shm_taken++;
        pthread_mutex_unlock(&kept_lock);
        return hfdcp__agree(comm, HFDCP_OK);
    }
    if (g->shm != NULL) {
        shared_give(g);
        g->shm = NULL;
    }

    if (mpi_rc == MPI_SUCCESS && g->rank == 0 &&
        total <= (uint64_t)INT64_MAX / 2) {
        shared.id[0] = (uint64_t)getpid();
        shared.id[1] = atomic_fetch_add(&serial, 1u);
        snprintf(shared.name, sizeof shared.name, "/hfdcp-%" PRIu64 "-%" PRIu64,
                 shared.id[0], shared.id[1]);
        fd = shm_open(shared.name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                      0600);
        created = fd >= 0;
        shared.ok = created && ftruncate(fd, (off_t)total) == 0 &&
                    fallocate(fd, 0, 0, (off_t)total) == 0;
    }
    mine = 0;
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = MPI_Bcast(&shared, (int)sizeof shared, MPI_BYTE, 0, comm);
    if (mpi_rc == MPI_SUCCESS && shared.ok) {
        if (g->rank != 0)
            fd = shm_open(shared.name, O_RDWR | O_CLOEXEC, 0);
        if (fd >= 0 && g->rank != hfdcp__mpiio_shared_fault)
            p = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED,
                     fd, 0);
        mine = p != MAP_FAILED;
    }
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm);
    if (fd >= 0)
        (void)close(fd);
    if (created)
        (void)shm_unlink(shared.name); /* every rank has opened it */
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "sharing the windows of '%s'",
                              g->f->path);
    if ((rc = hfdcp__agree(comm, rc)) != HFDCP_OK || !all) {
        if (p != MAP_FAILED)
            (void)munmap(p, (size_t)total);
        return rc;
    }
    g->shm = p;
    g->shm_size = total;
    memcpy(g->shm_id, shared.id, sizeof g->shm_id);
    return HFDCP_OK;
#else
    (void)g;
    return HFDCP_OK;
#endif
}

static void aggr_free(aggr *g)
{
    if (g->shm != NULL)
        shared_give(g);
    else
        hfdcp__buffer_give(g->buf, g->buf_cap, g->f->keep_buffer);
    free(g->mine.meta);
    free(g->mine.mem);
    free(g->scount);
    free(g->rcount);
    free(g->sdisp);
    free(g->rdisp);
    free(g->ones_s);
    free(g->ones_r);
    free(g->zeros);
    free(g->rmeta);
    free(g->stype);
    free(g->rtype);
    free(g->lens);
    free(g->disp);
    free(g->segs);
    free(g->segp);
    free(g->heap);
}

/* ---------------------------------------------------------------------- */
/* Sieving reads                                                          */
/* ---------------------------------------------------------------------- */

/*
 * A read of short runs (one that would be aggregated, above) whose runs
 * fill at least half of the file spans they lie in on every rank -- a
 * column-split tensor read on two ranks, a 2 x 2 block grid on four, rows
 * read by half columns -- is cheaper read by sieving: each rank reads the
 * spans of its own runs, a window at a time, with independent
 * MPI_File_read_at calls into one buffer (hint
 * hfdcp_aggregate_buffer_size), and copies its runs out of it.  No bytes
 * cross between ranks.  Each rank reads at most twice the bytes it needs,
 * but on a local file system the ranks that read the same blocks share
 * them through the page cache, so the disk reads the file once, as the
 * aggregation does, while the aggregation's exchange (a copy of every
 * byte through MPI_Alltoallw, which Open MPI 4.1 cannot overlap with the
 * I/O) is not paid.  On a network or parallel file system every rank's
 * bytes would cross the network, so there the reads stay aggregated.  A
 * span is the extent of this rank's parts, parts less than SIEVE_GAP
 * apart sharing one.
 *
 * With shared windows (every rank on one node) the aggregation is the
 * cheaper: its exchange is one copy of each run out of the windows, as
 * sieving copies its runs out of its buffer, and each byte of the file is
 * read once in all, where sieving reads up to SIEVE_SPAN_MAX times the
 * bytes on every rank (columns and blocks side by side, hfdcp bench
 * --alt-hint hfdcp_sieve_reads=enable: warm loads on a tmpfs faster
 * aggregated, cold loads the same within the noise; docs/design.md,
 * "Sieving reads").  So sieving is for ranks on several nodes reading
 * node-local copies of the files, or where the shared windows could not
 * be had.
 *
 * Hint hfdcp_sieve_reads: "auto" (the default) sieves such reads when every
 * rank sees a local file system (as in "Long runs"), reads at most
 * SIEVE_SPAN_MAX times its bytes, and the windows are not shared; "enable"
 * sieves every read that would be aggregated; "disable" never sieves.  The
 * ranks agree ("disable" wins).
 */

#define SIEVE_GAP ((uint64_t)64 << 10)
#define SIEVE_SPAN_MAX 2

/* The span starting with part i of `sorted[0..m)` (by file offset): its
 * parts are [i, return value), its bytes [sorted[i]->foff, *end). */
static size_t span(npiece *const *sorted, size_t m, size_t i, uint64_t *end)
{
    size_t j = i + 1;

    *end = sorted[i]->fend;
    for (; j < m && sorted[j]->foff <= *end + SIEVE_GAP; j++)
        if (sorted[j]->fend > *end)
            *end = sorted[j]->fend;
    return j;
}

/* The bytes this rank's sieving read of `sorted[0..m)` covers. */
static uint64_t sieve_span(npiece *const *sorted, size_t m)
{
    uint64_t total = 0, end;

    for (size_t i = 0, j; i < m; i = j) {
        j = span(sorted, m, i, &end);
        total += end - sorted[i]->foff;
    }
    return total;
}

/* The first and last byte of the runs met in a window. */
typedef struct {
    uint64_t lo, hi;
} bounds;

static int bound_run(void *ctx, uint64_t off, uint64_t len, char *mem)
{
    bounds *b = ctx;
    (void)mem;
    if (off < b->lo)
        b->lo = off;
    if (off + len > b->hi)
        b->hi = off + len;
    return HFDCP_OK;
}

/* A window's bytes, file offset `base` at `buf`. */
typedef struct {
    const char *buf;
    uint64_t base;
} sieved;

static int copy_run(void *ctx, uint64_t off, uint64_t len, char *mem)
{
    const sieved *w = ctx;
    memcpy(mem, w->buf + (off - w->base), len);
    return HFDCP_OK;
}

/* Reads window [w0, w1), met by parts sorted[k0..k1) at most, into buf
 * and copies its runs out. */
static int sieve_window(hfdcp__mfile *f, npiece *const *sorted, size_t k0,
                        size_t k1, uint64_t w0, uint64_t w1, char *buf)
{
    bounds b = {UINT64_MAX, 0};
    int rc = HFDCP_OK;

    for (size_t k = k0; k < k1 && sorted[k]->foff < w1; k++)
        HFDCP_TRY(part_runs(sorted[k], w0, w1, bound_run, &b));
    if (b.lo >= b.hi)
        return HFDCP_OK;
    HFDCP_TRY(range_io(f, false, b.lo, buf, b.hi - b.lo));
    sieved sv = {buf, b.lo};
    for (size_t k = k0; k < k1 && sorted[k]->foff < w1 && rc == HFDCP_OK;
         k++)
        rc = part_runs(sorted[k], w0, w1, copy_run, &sv);
    return rc;
}

/*
 * Goes through the windows of this rank's spans in file order, numbering
 * them from 0, and reads those numbered [from, to) (none when buf is
 * NULL).  *count: the number of windows.
 */
static int sieve_pass(hfdcp__mfile *f, npiece *const *sorted, size_t m,
                      uint64_t buf_size, char *buf, uint64_t from,
                      uint64_t to, uint64_t *count)
{
    uint64_t idx = 0, end;

    for (size_t i = 0, j; i < m; i = j) {
        j = span(sorted, m, i, &end);
        size_t k0 = i;
        for (uint64_t w0 = sorted[i]->foff; w0 < end; w0 += buf_size) {
            uint64_t w1 = end - w0 > buf_size ? w0 + buf_size : end;
            /* parts before k0 end before this window, and the next */
            while (k0 < j && sorted[k0]->fend <= w0)
                k0++;
            if (buf != NULL && idx >= from && idx < to)
                HFDCP_TRY(sieve_window(f, sorted, k0, j, w0, w1, buf));
            idx++;
        }
    }
    *count = idx;
    return HFDCP_OK;
}

/*
 * Reads this rank's parts `sorted[0..m)` (by file offset) by sieving,
 * through a buffer of `buf_size` bytes.  Rank r of P starts r/P of the
 * way through its windows and wraps around: on a cold file the ranks that
 * share blocks then fetch different ones at first, side by side, and each
 * finds the rest in the page cache, read there by another.  The file view
 * must be bytes.  Collective only in its agreement.
 */
static int sieve_read(hfdcp__mfile *f, npiece *const *sorted, size_t m,
                      uint64_t buf_size)
{
    char *buf = NULL;
    uint64_t n = 0, first, cap = buf_size;
    int rc, P = 1;

    MPI_Comm_size(f->comm, &P);
    rc = sieve_pass(f, sorted, m, buf_size, NULL, 0, 0, &n);
    if (n > 0 && (buf = hfdcp__buffer_take(&cap, f->keep_buffer)) == NULL)
        rc = hfdcp__nomem("the buffer of a sieving read");
    first = n / (uint64_t)P * (uint64_t)f->rank +
            n % (uint64_t)P * (uint64_t)f->rank / (uint64_t)P;
    if (rc == HFDCP_OK && n > 0)
        rc = sieve_pass(f, sorted, m, buf_size, buf, first, n, &n);
    if (rc == HFDCP_OK && first > 0)
        rc = sieve_pass(f, sorted, m, buf_size, buf, 0, first, &n);
    hfdcp__buffer_give(buf, cap, f->keep_buffer);
    if (rc == HFDCP_ERR_MPI)
        hfdcp__error_prefix(rc, "sieving read of '%s'", f->path);
    return hfdcp__agree(f->comm, rc);
}

/* Collective: reads `sorted[0..m)` by sieving through windows of
 * `buf_size` bytes.  Agreed status. */
static int sieve_all(hfdcp__mfile *f, npiece *const *sorted, size_t m,
                     uint64_t buf_size)
{
    int rc = byte_view(f);
    if (rc == HFDCP_OK)
        rc = sieve_read(f, sorted, m, buf_size); /* agreed */
    f->last_sieved = rc == HFDCP_OK;
    if (rc == HFDCP_OK)
        hfdcp__mpiio_sieved++;
    return rc;
}

/*
 * Collective.  Decides whether this transfer (every rank's parts
 * `sorted[0..m)`) is aggregated (or sieved); when it is, moves it and
 * sets *done.  Agreed status.
 */
static int aggregate(hfdcp__mfile *f, bool write, npiece *const *sorted,
                     size_t m, bool *done, uint64_t *avg_run)
{
    uint64_t loc[4] = {0, 0, UINT64_MAX, 0}, glob[4];
    uint64_t lmax[6], gmax[6];
    aggr g;
    int rc = HFDCP_OK, mpi_rc, mode = f->aggregate;

    *done = false;
    *avg_run = 0;
    memset(&g, 0, sizeof g);
    g.f = f;
    g.write = write;
    MPI_Comm_size(f->comm, &g.nranks);
    g.rank = f->rank;
    for (size_t i = 0; i < m; i++) {
        loc[0] += sorted[i]->bytes;
        loc[1] += sorted[i]->bytes / sorted[i]->run;
        if (sorted[i]->foff < loc[2])
            loc[2] = sorted[i]->foff;
        if (sorted[i]->fend > loc[3])
            loc[3] = sorted[i]->fend;
    }
    if (g.nranks < 2 && mode != AGG_ON) {
        *avg_run = loc[1] ? loc[0] / loc[1] : 0;
        return HFDCP_OK;
    }
    /* sums of bytes and runs; min of first byte (as max of its
     * complement) and max of last */
    lmax[0] = UINT64_MAX - loc[2];
    lmax[1] = loc[3];
    lmax[2] = (uint64_t)mode;  /* ranks that disagree: "disable" wins */
    lmax[3] = f->agg_buffer;   /* and the largest buffer */
    lmax[4] = (uint64_t)f->sieve; /* "disable" wins, then "enable" */
    /* ranks that may not sieve in "auto" (the spans walked only when
     * that can matter) */
    lmax[5] = !write && f->sieve == AGG_AUTO &&
              !(f->local && sieve_span(sorted, m) <= SIEVE_SPAN_MAX * loc[0]);
    mpi_rc = MPI_Allreduce(loc, glob, 2, MPI_UINT64_T, MPI_SUM, f->comm);
    if (mpi_rc == MPI_SUCCESS)
        mpi_rc = hfdcp__allreduce_u64(lmax, gmax, 6, MPI_MAX, f->comm);
    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__agree(f->comm, hfdcp__mpi_error(
                                         mpi_rc, "planning the aggregated "
                                         "transfer of '%s'", f->path));
    uint64_t lo = UINT64_MAX - gmax[0], hi = gmax[1];
    mode = (int)gmax[2];
    *avg_run = glob[1] ? glob[0] / glob[1] : 0;
    if (mode == AGG_OFF || glob[1] == 0 || hi <= lo)
        return HFDCP_OK; /* nothing anywhere: the plain path joins */
    if (mode == AGG_AUTO && glob[0] / glob[1] >= AGG_RUN_THRESHOLD)
        return HFDCP_OK;
    /* Sieving ("Sieving reads"): with "enable" now; with "auto" when the
     * ranks may sieve and the windows turn out not to be shared, below. */
    int sieve = write ? AGG_OFF
                : gmax[4] == AGG_ON ? AGG_ON
                : gmax[4] == AGG_AUTO && !gmax[5] ? AGG_AUTO
                                                  : AGG_OFF;
    if (sieve == AGG_ON) {
        *done = true;
        return sieve_all(f, sorted, m, gmax[3]); /* agreed */
    }

    /* Domains and rounds, the same on every rank.  The window holds at
     * most AGG_RUNS_PER_ROUND runs of the average length: the run lists
     * and the datatypes built from them cost some 180 bytes per run. */
    uint64_t avg = glob[0] / glob[1], buf = gmax[3];
    if (avg < buf / AGG_RUNS_PER_ROUND) {
        buf = avg * AGG_RUNS_PER_ROUND;
        if (buf < AGG_BUFFER_MIN)
            buf = AGG_BUFFER_MIN < gmax[3] ? AGG_BUFFER_MIN : gmax[3];
    }
    uint64_t P = (uint64_t)g.nranks;
    /* Shared windows (shared_windows): each is a P-th of the buffer, so
     * that the node holds one buffer in all, and a rank's resident set,
     * which counts every window it stores into, holds one buffer too.
     * Without them (MPI_Alltoallw) each rank's window is the buffer. */
    g.buf_size = (buf + P - 1) / P;
    if (f->shared_exchange && (rc = shared_windows(&g)) != HFDCP_OK)
        return rc; /* agreed */
    if (sieve == AGG_AUTO && g.shm == NULL) {
        aggr_free(&g);
        *done = true;
        return sieve_all(f, sorted, m, gmax[3]); /* agreed */
    }
    if (g.shm == NULL)
        g.buf_size = buf;
    buf = g.buf_size;
    uint64_t align = buf < AGG_ALIGN ? buf : AGG_ALIGN;
    g.base = lo - lo % align;
    g.dsize = (hi - g.base + P - 1) / P;
    g.dsize = (g.dsize + align - 1) / align * align;
    uint64_t rounds = (g.dsize + g.buf_size - 1) / g.buf_size;
    if (rounds > (uint64_t)INT_MAX) {
        aggr_free(&g);
        return hfdcp__agree(f->comm, hfdcp__error(
            HFDCP_ERR_UNSUPPORTED, "'%s': %" PRIu64 " aggregation rounds "
            "(raise hfdcp_aggregate_buffer_size)", f->path, rounds));
    }
    g.rounds = (int)rounds;

    size_t np = (size_t)g.nranks;
    if (g.shm != NULL) {
        g.buf = g.shm + (uint64_t)g.rank * g.buf_size;
        g.buf_cap = g.buf_size;
    } else {
        g.buf_cap = g.buf_size;
        g.buf = hfdcp__buffer_take(&g.buf_cap, f->keep_buffer);
    }
    g.scount = calloc(np, sizeof *g.scount);
    g.rcount = calloc(np, sizeof *g.rcount);
    g.sdisp = calloc(np, sizeof *g.sdisp);
    g.rdisp = calloc(np, sizeof *g.rdisp);
    g.ones_s = calloc(np, sizeof *g.ones_s);
    g.ones_r = calloc(np, sizeof *g.ones_r);
    g.zeros = calloc(np, sizeof *g.zeros);
    g.stype = calloc(np, sizeof *g.stype);
    g.rtype = calloc(np, sizeof *g.rtype);
    if (!g.buf || !g.scount || !g.rcount || !g.sdisp || !g.rdisp ||
        !g.ones_s || !g.ones_r || !g.zeros || !g.stype || !g.rtype)
        rc = hfdcp__nomem("the buffer of an aggregated transfer");
    if ((rc = hfdcp__agree(f->comm, rc)) == HFDCP_OK)
        rc = byte_view(f); /* the aggregators' explicit offsets */
    if (rc == HFDCP_OK) {
        *done = true;
        f->last_rounds = g.rounds;
        f->last_shared = g.shm != NULL;
        for (int r = 0; r < g.rounds && rc == HFDCP_OK; r++)
            rc = aggr_round(&g, sorted, m, r, lo, hi);
    }
    aggr_free(&g);
    return rc;
}

int hfdcp__mfile_transfer(hfdcp__mfile *f, bool write,
                          const hfdcp__piece *pieces, size_t n)
{
    npiece *np = NULL, **sorted = NULL, **byround = NULL;
    parts ps = {NULL, 0, 0};
    uint64_t *pool = NULL, total = 0, lim = round_max();
    size_t pool_len = 0, m = 0, *start = NULL;
    int rc = HFDCP_OK, nrounds = 0, all_rounds = 0, mpi_rc;
    bool indep = false;

    if (f == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "transfer on a NULL file");
    f->last_rounds = 0;
    f->last_independent = false;
    f->last_sieved = false;
    f->last_shared = false;
    if (n > 0 && pieces == NULL)
        HFDCP_FAIL(HFDCP_ERR_ARG, "'%s': %zu pieces but a NULL array",
                   f->path, n);
    if (write && !f->write)
        HFDCP_FAIL(HFDCP_ERR_ARG, "'%s' was opened for reading, not writing",
                   f->path);
    for (size_t i = 0; i < n; i++)
        pool_len += 3 * (size_t)(pieces[i].ndim > 0 ? pieces[i].ndim : 0);
    np = malloc((n ? n : 1) * sizeof *np);
    pool = malloc((pool_len ? pool_len : 1) * sizeof *pool);
    if (!np || !pool)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory describing %zu pieces of "
                   "'%s'", n, f->path);
    pool_len = 0;
    for (size_t i = 0; i < n; i++) {
        HFDCP_CHECK(normalize(&pieces[i], i, f->path, pool + pool_len,
                              &np[i]));
        pool_len += 3 * (size_t)(pieces[i].ndim > 0 ? pieces[i].ndim : 0);
        if (np[i].bytes == 0)
            continue;
        if (!add_ok(total, np[i].bytes, &total))
            HFDCP_FAIL(HFDCP_ERR_RANGE, "'%s': pieces total above 2^63 bytes",
                       f->path);
        HFDCP_CHECK(split_piece(&np[i], lim, &ps));
    }
    m = ps.n;
    sorted = malloc((m ? m : 1) * sizeof *sorted);
    byround = malloc((m ? m : 1) * sizeof *byround);
    if (!sorted || !byround)
        HFDCP_FAIL(HFDCP_ERR_NOMEM, "out of memory describing %zu parts of "
                   "'%s'", m, f->path);
    for (size_t i = 0; i < m; i++)
        sorted[i] = &ps.v[i];
    qsort(sorted, m, sizeof *sorted, cmp_npiece);
    if (!write && m > 0)
        HFDCP_CHECK(check_size(f, sorted, m));

cleanup:
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        goto out;
    {
        bool done = false;
        uint64_t avg_run = 0;
        rc = aggregate(f, write, sorted, m, &done, &avg_run); /* agreed */
        if (rc != HFDCP_OK || done)
            goto out;
        /* the same on every rank: avg_run is global from two ranks */
        indep = write && f->independent_long && avg_run >= AGG_RUN_THRESHOLD;
    }
    /* The component's rounds, only now that the transfer is not
     * aggregated; a failure is agreed after the rounds are. */
    rc = assign_rounds(sorted, m, lim, &nrounds);
    mpi_rc = MPI_Allreduce(&nrounds, &all_rounds, 1, MPI_INT, MPI_MAX,
                           f->comm);
    if (mpi_rc != MPI_SUCCESS)
        rc = hfdcp__mpi_error(mpi_rc, "agreeing on the rounds of a transfer "
                              "on '%s'", f->path);
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        goto out;

    /* Bucket the sorted pieces by round, keeping their order. */
    if ((start = calloc((size_t)nrounds + 1, sizeof *start)) == NULL)
        rc = hfdcp__nomem("the rounds of a transfer");
    if ((rc = hfdcp__agree(f->comm, rc)) != HFDCP_OK)
        goto out;
    for (size_t i = 0; i < m; i++)
        start[sorted[i]->round + 1]++;
    for (int r = 0; r < nrounds; r++)
        start[r + 1] += start[r];
    {
        size_t *fill = start; /* reused as write cursors, then restored */
        for (size_t i = 0; i < m; i++)
            byround[fill[sorted[i]->round]++] = sorted[i];
        for (int r = nrounds; r > 0; r--)
            fill[r] = fill[r - 1];
        fill[0] = 0;
    }

    f->last_rounds = all_rounds;
    f->last_independent = indep;
    for (int r = 0; r < all_rounds && rc == HFDCP_OK; r++) {
        size_t lo = r < nrounds ? start[r] : 0;
        size_t hi = r < nrounds ? start[r + 1] : 0;
        rc = do_round(f, write, indep, byround + lo, hi - lo);
    }

out:
    free(start);
    free(np);
    free(ps.v);
    free(sorted);
    free(byround);
    free(pool);
    return rc;
}
