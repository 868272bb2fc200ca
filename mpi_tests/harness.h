/*
 * harness.h - the test harness shared by every mpi_tests/test_*.c.
 *
 * A test file lists its cases in a table and calls hfdcp_test_main().  Each
 * case runs on every rank (or only when the world has at least min_ranks
 * ranks; otherwise it is reported as skipped), gets a fresh empty
 * directory shared by all ranks, and returns 0 for pass, or T_SKIP when
 * it cannot run here (after printing why).  The ranks agree on the outcome
 * (any rank failing fails the case; otherwise any rank skipping skips it)
 * and rank 0 prints
 *   ok <case> (T s)   /   FAIL <case> (T s)   /   skip <case> (T s)
 * (a case that runs past 30 s also gets "... <case> still running after
 * N s" on stderr every 30 s, so a slow run is told from a hung one)
 * and at the end "<n> passed, <n> failed, <n> skipped".  A run in which
 * every case was skipped exits with 77, which CTest reports as skipped
 * (SKIP_RETURN_CODE); one in which any failed exits with 1.  Assertion
 * failures print the rank, file and line on stderr.
 *
 * Usage:
 *   static int format_should_parse(MPI_Comm comm, const char *dir) {
 *       T_CHECK(x == 1);
 *       T_STATUS(hfdcp_x(...), HFDCP_ERR_FORMAT, "hole");
 *       return T_OK;
 *   }
 *   static const hfdcp_test_case cases[] = {
 *       {"format_should_parse", format_should_parse, 1},
 *   };
 *   int main(int argc, char **argv) { return HFDCP_TEST_MAIN(argc, argv, cases); }
 */
#ifndef HFDCP_TEST_HARNESS_H
#define HFDCP_TEST_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp_testing.h"

typedef int (*hfdcp_test_fn)(MPI_Comm comm, const char *dir);

typedef struct {
    const char *name;
    hfdcp_test_fn fn;
    int min_ranks;
} hfdcp_test_case;

int hfdcp_test_main(int argc, char **argv, const hfdcp_test_case *cases,
                    size_t n);
#define HFDCP_TEST_MAIN(argc, argv, cases) \
    hfdcp_test_main((argc), (argv), (cases), sizeof(cases) / sizeof((cases)[0]))

#define T_OK 0
/* A case that cannot run here: counted as skipped, not passed. */
#define T_SKIP 77

int hfdcp_test_rank(void);

/* Reports a failed check; returns 1. */
int hfdcp_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define T_CHECK(cond)                                                        \
    do {                                                                     \
        if (!(cond))                                                         \
            return hfdcp_test_fail(__FILE__, __LINE__, "check failed: %s",   \
                                   #cond);                                   \
    } while (0)

#define T_CHECKF(cond, ...)                                                  \
    do {                                                                     \
        if (!(cond)) return hfdcp_test_fail(__FILE__, __LINE__, __VA_ARGS__);\
    } while (0)

/* Checks that `expr` returns `want` and, when `substr` is not NULL, that
 * hfdcp_last_error() contains `substr`. */
int hfdcp_test_status(const char *file, int line, const char *expr, int got,
                      int want, const char *substr);
#define T_STATUS(expr, want, substr)                                         \
    do {                                                                     \
        if (hfdcp_test_status(__FILE__, __LINE__, #expr, (expr), (want),     \
                              (substr)))                                     \
            return 1;                                                        \
    } while (0)
#define T_OKCALL(expr) T_STATUS(expr, HFDCP_OK, NULL)

/* Paths compiled in by mpi_tests/CMakeLists.txt; the variables HFDCP_FIXTURES,
 * HFDCP_PYTHON, HFDCP_TOOL and HFDCP_TEST_SCRIPTS override them. */
const char *hfdcp_test_fixtures(void); /* mpi_tests/fixtures */
const char *hfdcp_test_python(void);   /* /usr/bin/python3 */
const char *hfdcp_test_tool(void);     /* the hfdcp executable */
const char *hfdcp_test_scripts(void);  /* mpi_tests/scripts */

/* The tool started alone, as a singleton MPI process (no launcher): its
 * path, or in sanitizer builds "env ASAN_OPTIONS=<the current ones>:
 * detect_leaks=0 <path>".  LeakSanitizer's tracer crashes in an Open MPI
 * 4.1 singleton ("Tracer caught signal 11" while it suspends the threads,
 * whether the check runs at exit or before MPI_Finalize: `hfdcp bench
 * --size 0` exits 134 five times out of five, under mpiexec -n 1 never),
 * so singleton runs are checked by ASan and UBSan, and the tool's leaks
 * by its launched runs.  A static buffer. */
const char *hfdcp_test_singleton_tool(void);

/* The command that starts an `np`-rank job of the MPI the tests were built
 * with, to be followed by the program and its arguments: its launcher,
 * number-of-processes flag and flags (Open MPI's --oversubscribe), as
 * CMake found them (HFDCP_MPIEXEC and HFDCP_MPIEXEC_FLAGS override).
 * A static buffer. */
const char *hfdcp_test_launcher(int np);

/* The largest rank count of this build's ordinary test runs
 * (HFDCP_TEST_RANKS_MAX in CMake), or 0 for no limit: a case that would
 * start a larger job of its own skips itself above it. */
int hfdcp_test_ranks_max(void);

/* Removes the launcher's variables from this process's environment, so
 * that a program started from a test (a singleton, or a job of its own
 * launcher) does not try to join the test's job. */
void hfdcp_test_scrub_launcher(void);

/* Collective helpers of the test cases.  hfdcp_test_all_ok: true on every
 * rank iff `ok` on every rank.  hfdcp_test_same_message: true on every
 * rank iff every rank's hfdcp_last_error() is rank 0's (a differing one
 * is printed). */
int hfdcp_test_comm_rank(MPI_Comm comm);
int hfdcp_test_comm_size(MPI_Comm comm);
bool hfdcp_test_all_ok(MPI_Comm comm, bool ok);
bool hfdcp_test_same_message(MPI_Comm comm);

/* Whole-file helpers.  read returns a malloc'd buffer (NULL on error). */
unsigned char *hfdcp_test_read_file(const char *path, size_t *len);
int hfdcp_test_write_file(const char *path, const void *data, size_t len);

/* Runs a shell command (on the calling rank only), capturing stdout into
 * a malloc'd string (may be NULL).  Returns the exit status, or -1. */
int hfdcp_test_run(const char *cmd, char **out);

/* Tensor contents as a formula, so that any box can be generated or
 * checked anywhere: byte b (global byte index in the row-major tensor) of
 * the tensor named `name` is hfdcp_test_byte_at(hfdcp_test_seed_of(name), b). */
uint64_t hfdcp_test_seed_of(const char *name);
uint8_t hfdcp_test_byte_at(uint64_t seed, uint64_t b);

/* Decompositions of a tensor of ndim 0 to 2 over P ranks: rows, columns,
 * the most square grid of 2-D blocks, or replicated (every rank the whole
 * tensor).  hfdcp_test_part: [lo, lo+len) of part r of n split in p;
 * hfdcp_test_grid: the most square p0 x p1 grid of P ranks, p0 <= p1;
 * hfdcp_test_box_of: rank r's box (false when it holds nothing);
 * hfdcp_test_fill_box: the box's bytes by the formula above. */
enum { HFDCP_TEST_ROWS, HFDCP_TEST_COLS, HFDCP_TEST_BLOCKS, HFDCP_TEST_REPL };
void hfdcp_test_part(int64_t n, int r, int p, int64_t *lo, int64_t *len);
void hfdcp_test_grid(int P, int *p0, int *p1);
bool hfdcp_test_box_of(int kind, int ndim, const int64_t *shape, int r,
                       int P, int64_t *off, int64_t *size);
void hfdcp_test_fill_box(uint8_t *buf, const char *name, uint64_t es,
                         int ndim, const int64_t *shape, const int64_t *off,
                         const int64_t *size);

/* Agreed outcomes of collective calls (no rank returns before the
 * others).  hfdcp_test_agreed_ok: `rc` is HFDCP_OK on every rank (a
 * failing rank's message printed with `what`).  hfdcp_test_agreed_failure:
 * `rc` is `want` on every rank, with the same message everywhere, holding
 * s1 and s2 (either may be NULL); T_OK or 1.  hfdcp_test_nothing_in:
 * rank 0 finds `path` empty or absent (no index, no model or shard file,
 * no temporary file); anything left is printed. */
bool hfdcp_test_agreed_ok(MPI_Comm comm, int rc, const char *what);
int hfdcp_test_agreed_failure(MPI_Comm comm, const char *what, int rc,
                              int want, const char *s1, const char *s2);
bool hfdcp_test_nothing_in(MPI_Comm comm, const char *path);

/* Collective: the directories a and b hold the same file names with the
 * same bytes, and at least one file (rank 0 compares; differences
 * printed).  Agreed. */
bool hfdcp_test_same_dirs(MPI_Comm comm, const char *a, const char *b);

/* The sorted names (malloc'd) of the entries of `dir`, no "." and "..":
 * *n of them, at most `max` (more fail the calling test); a missing
 * directory holds none.  T_OK or 1. */
int hfdcp_test_list_dir(const char *dir, char **names, size_t max, size_t *n);
void hfdcp_test_free_names(char **names, size_t n);

/* A full disk: rank 0 mounts a 256 KiB tmpfs at `mnt` (needs root); false
 * on every rank when it cannot, after printing "skip <who>: ..." (the
 * case then returns T_SKIP).  hfdcp_test_umount: rank 0 unmounts it,
 * every rank waiting.  Collective. */
bool hfdcp_test_mount_tmpfs(MPI_Comm comm, const char *mnt, const char *who);
void hfdcp_test_umount(MPI_Comm comm, const char *mnt);

/* Deterministic pseudo-random numbers (splitmix64). */
uint64_t hfdcp_test_rand(uint64_t *state);

#endif
