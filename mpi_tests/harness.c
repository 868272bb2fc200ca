/*
 * harness.c - runs a table of test cases on every rank, agrees on each
 * outcome and prints one line per case on rank 0.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <time.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static int world_rank;


int hfdcp_test_rank(void)
{
    return world_rank;
}

int hfdcp_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "[rank %d] %s:%d: ", world_rank, file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    return 1;
}

int hfdcp_test_status(const char *file, int line, const char *expr, int got,
                      int want, const char *substr)
{
    if (got != want)
        return hfdcp_test_fail(file, line, "%s returned %s, wanted %s (%s)",
                               expr, hfdcp_status_name(got),
                               hfdcp_status_name(want), hfdcp_last_error());
    if (substr && strstr(hfdcp_last_error(), substr) == NULL)
        return hfdcp_test_fail(file, line,
                               "%s: message \"%s\" lacks \"%s\"", expr,
                               hfdcp_last_error(), substr);
    return 0;
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

/* The defaults are compiled in by mpi_tests/CMakeLists.txt, so that a test
 * run by hand from any directory finds what CTest would give it. */
const char *hfdcp_test_fixtures(void)
{
    return env_or("HFDCP_FIXTURES", HFDCP_TEST_FIXTURES_DIR);
}

const char *hfdcp_test_python(void)
{
    return env_or("HFDCP_PYTHON", HFDCP_TEST_PYTHON);
}

const char *hfdcp_test_tool(void)
{
    return env_or("HFDCP_TOOL", HFDCP_TEST_TOOL);
}

const char *hfdcp_test_scripts(void)
{
    return env_or("HFDCP_TEST_SCRIPTS", HFDCP_TEST_SCRIPTS_DIR);
}

const char *hfdcp_test_singleton_tool(void)
{
#ifdef HFDCP_TEST_SANITIZE
    static char cmd[4096];
    snprintf(cmd, sizeof cmd, "env 'ASAN_OPTIONS=%s:detect_leaks=0' '%s'",
             env_or("ASAN_OPTIONS", ""), hfdcp_test_tool());
    return cmd;
#else
    return hfdcp_test_tool();
#endif
}

const char *hfdcp_test_launcher(int np)
{
    static char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s %d %s",
             env_or("HFDCP_MPIEXEC", HFDCP_TEST_MPIEXEC),
             HFDCP_TEST_NUMPROC_FLAG, np,
             env_or("HFDCP_MPIEXEC_FLAGS", HFDCP_TEST_MPIEXEC_FLAGS));
    return cmd;
}

int hfdcp_test_ranks_max(void)
{
    return atoi(HFDCP_TEST_RANKS_MAX); /* "" (no limit): 0 */
}

extern char **environ;

/* The variables by which a launcher tells a process it is one rank of a
 * job: Open MPI's (OMPI_, PMIX_, OPAL_, ORTE_) and Hydra's (PMI_, HYDI_,
 * MPI_LOCAL...). */
static bool launcher_variable(const char *e)
{
    static const char *prefixes[] = {"OMPI_", "PMIX_", "OPAL_", "ORTE_",
                                     "PMI_", "HYDI_", "HYDRA_", "MPIR_",
                                     "MPI_LOCALNRANKS", "MPI_LOCALRANKID"};
    if (strncmp(e, "OMPI_ALLOW_RUN_AS_ROOT", 22) == 0)
        return false;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(e, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

void hfdcp_test_scrub_launcher(void)
{
    for (bool again = true; again;) {
        again = false;
        for (char **e = environ; *e; e++) {
            if (!launcher_variable(*e))
                continue;
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
            unsetenv(name);
            again = true; /* environ changed under us: start over */
            break;
        }
    }
}

int hfdcp_test_comm_rank(MPI_Comm comm)
{
    int r = -1;
    MPI_Comm_rank(comm, &r);
    return r;
}

int hfdcp_test_comm_size(MPI_Comm comm)
{
    int s = 0;
    MPI_Comm_size(comm, &s);
    return s;
}

bool hfdcp_test_all_ok(MPI_Comm comm, bool ok)
{
    int mine = ok, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm);
    return all != 0;
}

bool hfdcp_test_same_message(MPI_Comm comm)
{
    char mine[1024], r0[1024];
    snprintf(mine, sizeof mine, "%s", hfdcp_last_error());
    memcpy(r0, mine, sizeof r0);
    MPI_Bcast(r0, (int)sizeof r0, MPI_CHAR, 0, comm);
    if (strcmp(mine, r0) != 0)
        fprintf(stderr, "[rank %d] message \"%s\", rank 0's \"%s\"\n",
                world_rank, mine, r0);
    return hfdcp_test_all_ok(comm, strcmp(mine, r0) == 0);
}

unsigned char *hfdcp_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

int hfdcp_test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int ok;
    if (f == NULL)
        return -1;
    ok = fwrite(data, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : -1;
}

int hfdcp_test_run(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int st;

    if (p == NULL)
        return -1;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (nb == NULL)
                break;
            buf = nb;
        }
        size_t got = fread(buf + len, 1, 4096, p);
        len += got;
        if (got == 0)
            break;
    }
    if (buf)
        buf[len] = '\0';
    st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    if (st == -1)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

uint64_t hfdcp_test_seed_of(const char *name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *s = (const unsigned char *)name; *s; s++) {
        h ^= *s;
        h *= 1099511628211ull;
    }
    return h;
}

uint8_t hfdcp_test_byte_at(uint64_t seed, uint64_t b)
{
    return (uint8_t)((((b * 0x9E3779B97F4A7C15ull) ^ seed) *
                      0xBF58476D1CE4E5B9ull) >> 56);
}

uint64_t hfdcp_test_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int remove_entry(const char *path, const struct stat *sb, int flag,
                        struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Rank 0 makes a fresh directory; every rank learns its name. */
static int make_dir(MPI_Comm comm, char *dir, size_t size, const char *name)
{
    int ok = 1;
    if (world_rank == 0) {
        snprintf(dir, size, "%s/hfdcp-%s-XXXXXX",
                 env_or("TMPDIR", "/tmp"), name);
        ok = mkdtemp(dir) != NULL;
        if (!ok)
            fprintf(stderr, "mkdtemp %s: %s\n", dir, strerror(errno));
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
    MPI_Bcast(dir, (int)size, MPI_CHAR, 0, comm);
    return ok ? 0 : -1;
}

/* A watchdog on rank 0: every WATCH_PERIOD seconds of one case, a line
 * saying which case runs and for how long.  A run that CTest's timeout
 * stops then shows whether it was slow (cases ending, each slowly: ranks
 * polling on too few cores) or hung (one case, never ending).  The thread
 * makes no MPI call. */
#define WATCH_PERIOD 30

static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    const char *name; /* the running case, or NULL */
    unsigned serial;  /* cases begun */
    bool stop;
} watch = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, false};

static void *watchdog(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&watch.lock);
    while (!watch.stop) {
        unsigned serial = watch.serial;
        struct timespec until;
        int waited = 0, rc = 0;
        while (!watch.stop && watch.serial == serial) {
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += WATCH_PERIOD;
            rc = pthread_cond_timedwait(&watch.changed, &watch.lock, &until);
            if (rc == ETIMEDOUT && watch.name != NULL &&
                watch.serial == serial) {
                waited += WATCH_PERIOD;
                fprintf(stderr, "... %s still running after %d s\n",
                        watch.name, waited);
            }
        }
    }
    pthread_mutex_unlock(&watch.lock);
    return NULL;
}

static void watch_case(const char *name)
{
    pthread_mutex_lock(&watch.lock);
    watch.name = name;
    watch.serial++;
    pthread_cond_signal(&watch.changed);
    pthread_mutex_unlock(&watch.lock);
}

static void watch_stop(void)
{
    pthread_mutex_lock(&watch.lock);
    watch.stop = true;
    pthread_cond_signal(&watch.changed);
    pthread_mutex_unlock(&watch.lock);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int hfdcp_test_main(int argc, char **argv, const hfdcp_test_case *cases,
                    size_t n)
{
    pthread_t watcher;
    bool watching = false;
    int size, passed = 0, failed = 0, skipped = 0;
    const char *only = argc > 1 ? argv[1] : NULL;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* Tests check statuses; MPI errors must come back, not abort. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (world_rank == 0)
        watching = pthread_create(&watcher, NULL, watchdog, NULL) == 0;

    for (size_t i = 0; i < n; i++) {
        char dir[512];
        int local, any;

        if (only && strcmp(only, cases[i].name) != 0)
            continue;
        if (size < cases[i].min_ranks) {
            if (world_rank == 0)
                printf("skip %s (needs %d ranks)\n", cases[i].name,
                       cases[i].min_ranks);
            skipped++;
            continue;
        }
        double began = now();
        watch_case(cases[i].name);
        if (make_dir(MPI_COMM_WORLD, dir, sizeof dir, cases[i].name) != 0) {
            local = 2;
        } else {
            hfdcp__error_clear();
            int got = cases[i].fn(MPI_COMM_WORLD, dir);
            local = got == T_OK ? 0 : got == T_SKIP ? 1 : 2;
        }
        /* 2: failed on some rank; 1: skipped on some rank, failed on none */
        MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        if (world_rank == 0) {
            printf("%s %s (%.1f s)\n", any == 2 ? "FAIL" : any ? "skip" : "ok",
                   cases[i].name, now() - began);
            fflush(stdout);
            /* Keep a failed case's files for a post-mortem. */
            if (any != 2)
                nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
            else
                printf("  (files kept in %s)\n", dir);
        }
        if (any == 2)
            failed++;
        else if (any)
            skipped++;
        else
            passed++;
    }
    if (only && passed + failed + skipped == 0) {
        if (world_rank == 0)
            printf("FAIL: no case is named '%s'\n", only);
        failed++;
    }
    if (watching) {
        watch_stop();
        pthread_join(watcher, NULL);
    }
    if (world_rank == 0) {
        printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
        fflush(stdout);
    }
    MPI_Finalize();
    /* MPI_Finalize frees the buffer hfdcp keeps between transfers. */
    uint64_t kept = hfdcp__mpiio_kept_bytes(NULL) +
                    hfdcp__mpiio_kept_shared_bytes(NULL);
    if (kept != 0) {
        fprintf(stderr, "FAIL: rank %d: %llu bytes still kept by hfdcp "
                "after MPI_Finalize\n", world_rank,
                (unsigned long long)kept);
        failed++;
    }
    return failed ? 1 : passed == 0 && skipped > 0 ? T_SKIP : 0;
}

/* ---- decompositions and agreed checks (harness.h) ---- */

/* [lo, lo+len) of part r of n split in p. */
void hfdcp_test_part(int64_t n, int r, int p, int64_t *lo, int64_t *len)
{
    *lo = n * r / p;
    *len = n * (r + 1) / p - *lo;
}

/* The most square p0 x p1 grid of P ranks, p0 <= p1 (8: 2 x 4, 16: 4 x 4). */
void hfdcp_test_grid(int P, int *p0, int *p1)
{
    int a = 1;
    for (int k = 1; k * k <= P; k++)
        if (P % k == 0)
            a = k;
    *p0 = a;
    *p1 = P / a;
}


/* A collective call's status `rc` on every rank: HFDCP_OK everywhere
 * (the message of any failing rank printed).  Agreed. */
bool hfdcp_test_agreed_ok(MPI_Comm comm, int rc, const char *what)
{
    if (rc != HFDCP_OK)
        fprintf(stderr, "[rank %d] %s: %s: %s\n", hfdcp_test_comm_rank(comm), what,
                hfdcp_status_name(rc), hfdcp_last_error());
    return hfdcp_test_all_ok(comm, rc == HFDCP_OK);
}

/* A failed collective call: the minimum and the maximum of `rc` over the
 * ranks are both `want`, every rank has the same message, and it holds
 * `s1` and `s2` (either may be NULL).  Agreed: no rank returns before
 * the others. */
int hfdcp_test_agreed_failure(MPI_Comm comm, const char *what, int rc, int want,
                          const char *s1, const char *s2)
{
    int lo, hi, rank = hfdcp_test_comm_rank(comm);
    bool ok;
    char msg[1024];

    snprintf(msg, sizeof msg, "%s", hfdcp_last_error());
    MPI_Allreduce(&rc, &lo, 1, MPI_INT, MPI_MIN, comm);
    MPI_Allreduce(&rc, &hi, 1, MPI_INT, MPI_MAX, comm);
    ok = lo == want && hi == want;
    if (!ok && (rc != want || rank == 0))
        fprintf(stderr, "[rank %d] %s: statuses from %s to %s over the "
                "ranks, wanted %s; this rank %s: \"%s\"\n", rank, what,
                hfdcp_status_name(lo), hfdcp_status_name(hi),
                hfdcp_status_name(want), hfdcp_status_name(rc), msg);
    if (ok && ((s1 && strstr(msg, s1) == NULL) ||
               (s2 && strstr(msg, s2) == NULL))) {
        fprintf(stderr, "[rank %d] %s: message \"%s\" lacks \"%s\"\n", rank,
                what, msg, s1 && strstr(msg, s1) == NULL ? s1 : s2);
        ok = false;
    }
    ok = hfdcp_test_same_message(comm) && ok;
    return hfdcp_test_all_ok(comm, ok) ? T_OK : 1;
}

/* Rank 0: `path` holds nothing at all, or does not exist (so no index,
 * no model*.safetensors, no shard, no temporary file).  Agreed. */
bool hfdcp_test_nothing_in(MPI_Comm comm, const char *path)
{
    int bad = 0;
    if (hfdcp_test_comm_rank(comm) == 0) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            fprintf(stderr, "%s: '%s' left after a failed commit\n", path,
                    e->d_name);
            bad = 1;
        }
        if (d != NULL)
            closedir(d);
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, comm);
    return bad == 0;
}

/* The box [off, off+size) of the tensor `name` (elements of es bytes,
 * ndim 0 to 2, shape `shape`), row-major and contiguous, by the formula
 * of hfdcp_test_byte_at. */
void hfdcp_test_fill_box(uint8_t *buf, const char *name, uint64_t es,
                         int ndim, const int64_t *shape, const int64_t *off,
                         const int64_t *size)
{
    uint64_t seed = hfdcp_test_seed_of(name), mem = 0;

    if (ndim == 0) {
        for (uint64_t k = 0; k < es; k++)
            buf[k] = hfdcp_test_byte_at(seed, k);
        return;
    }
    int64_t rows = ndim == 2 ? size[0] : 1, r0 = ndim == 2 ? off[0] : 0;
    int64_t cols = shape[ndim - 1], c0 = off[ndim - 1];
    uint64_t run = (uint64_t)size[ndim - 1] * es;
    for (int64_t r = 0; r < rows; r++) {
        uint64_t gb = ((uint64_t)(r0 + r) * (uint64_t)cols + (uint64_t)c0) * es;
        for (uint64_t k = 0; k < run; k++)
            buf[mem + k] = hfdcp_test_byte_at(seed, gb + k);
        mem += run;
    }
}

/* Rank r's box of a tensor (ndim 0 to 2) split `kind` over P ranks. */
bool hfdcp_test_box_of(int kind, int ndim, const int64_t *shape, int r,
                       int P, int64_t *off, int64_t *size)
{
    int p0, p1, last = ndim - 1;

    for (int d = 0; d < ndim; d++) {
        off[d] = 0;
        size[d] = shape[d];
    }
    if (kind == HFDCP_TEST_REPL || ndim == 0)
        return true;
    if (kind == HFDCP_TEST_ROWS || kind == HFDCP_TEST_COLS || ndim == 1) {
        int d = kind == HFDCP_TEST_COLS ? last : 0;
        hfdcp_test_part(shape[d], r, P, &off[d], &size[d]);
        return size[d] > 0;
    }
    hfdcp_test_grid(P, &p0, &p1);
    hfdcp_test_part(shape[0], r / p1, p0, &off[0], &size[0]);
    hfdcp_test_part(shape[1], r % p1, p1, &off[1], &size[1]);
    return size[0] > 0 && size[1] > 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names of a directory's entries (no "." and ".."). */
int hfdcp_test_list_dir(const char *dir, char **names, size_t max, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    *n = 0;
    if (d == NULL)
        return 0; /* a missing directory holds nothing */
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        T_CHECK(*n < max);
        names[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, *n, sizeof *names, cmp_names);
    return T_OK;
}

void hfdcp_test_free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
}

bool hfdcp_test_same_dirs(MPI_Comm comm, const char *a, const char *b)
{
    int rank, bad = 0;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        char *na[64], *nb[64];
        size_t n1, n2;
        bad = hfdcp_test_list_dir(a, na, 64, &n1) ||
              hfdcp_test_list_dir(b, nb, 64, &n2);
        if (!bad && n1 != n2)
            bad = hfdcp_test_fail(__FILE__, __LINE__, "%zu files in %s, %zu "
                                  "in %s", n1, a, n2, b);
        for (size_t i = 0; !bad && i < n1; i++) {
            char pa[1024], pb[1024];
            size_t la, lb;
            unsigned char *da, *db;
            if (strcmp(na[i], nb[i]) != 0) {
                bad = hfdcp_test_fail(__FILE__, __LINE__, "file %s vs %s",
                                      na[i], nb[i]);
                break;
            }
            snprintf(pa, sizeof pa, "%s/%s", a, na[i]);
            snprintf(pb, sizeof pb, "%s/%s", b, nb[i]);
            da = hfdcp_test_read_file(pa, &la);
            db = hfdcp_test_read_file(pb, &lb);
            if (da == NULL || db == NULL || la != lb || memcmp(da, db, la))
                bad = hfdcp_test_fail(__FILE__, __LINE__,
                                      "%s differs from %s (%zu vs %zu bytes)",
                                      pa, pb, la, lb);
            free(da);
            free(db);
        }
        if (!bad && n1 == 0)
            bad = hfdcp_test_fail(__FILE__, __LINE__, "no file in %s", a);
        hfdcp_test_free_names(na, n1);
        hfdcp_test_free_names(nb, n2);
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, comm);
    return bad == 0;
}

bool hfdcp_test_mount_tmpfs(MPI_Comm comm, const char *mnt, const char *who)
{
    char cmd[1400];
    int mounted = 0;

    if (hfdcp_test_comm_rank(comm) == 0) {
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && mount -t tmpfs -o "
                 "size=256k tmpfs '%s' 2>/dev/null", mnt, mnt);
        mounted = system(cmd) == 0;
        if (!mounted)
            printf("  skip %s: cannot mount a tmpfs here\n", who);
    }
    MPI_Bcast(&mounted, 1, MPI_INT, 0, comm);
    return mounted != 0;
}

void hfdcp_test_umount(MPI_Comm comm, const char *mnt)
{
    char cmd[1400];

    MPI_Barrier(comm);
    if (hfdcp_test_comm_rank(comm) == 0) {
        snprintf(cmd, sizeof cmd, "umount '%s'", mnt);
        if (system(cmd) != 0)
            fprintf(stderr, "could not unmount %s\n", mnt);
    }
    MPI_Barrier(comm);
}
