/*
 * consolidate.c - `hfdcp consolidate IN OUT`: per-rank shard files into a
 * standard checkpoint with hfdcp_consolidate(), with progress on rank 0:
 * a bar redrawn in place when stderr is a terminal, plain lines (every
 * 10% or every 5 seconds) otherwise.
 *
 * Note: under Open MPI's mpirun a rank's stderr is always a pipe (and its
 * stdout always a pseudo-terminal, even when mpirun's output goes to a
 * file), so a rank cannot tell whether the user sees a terminal:
 * --progress bar forces the bar (mpirun passes the \r through).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

#define LINE_SECONDS 5.0

typedef struct {
    FILE *out;
    bool quiet;        /* --progress none: count, draw nothing */
    bool bar;          /* redraw one line with \r */
    double start, last;
    int last_decile;   /* lines mode: the last 10% step printed */
    uint64_t done, total;
} progress_state;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "1.23 GB", powers of 1000 as the rates. */
static void human(char *buf, size_t size, double bytes)
{
    static const char *units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    int u = 0;
    while (bytes >= 1000.0 && u < 5) {
        bytes /= 1000.0;
        u++;
    }
    snprintf(buf, size, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
}

/* "1:02:03" or "2:03"; "?" when unknown. */
static void clock_text(char *buf, size_t size, double seconds)
{
    long s;
    if (!(seconds >= 0.0) || seconds > 1e8) {
        snprintf(buf, size, "?");
        return;
    }
    s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

static void draw(progress_state *p, double t, bool final)
{
    char done[32], total[32], rate[32], left[32];
    double elapsed = t - p->start;
    double r = elapsed > 0.0 ? (double)p->done / elapsed : 0.0;
    double frac = p->total ? (double)p->done / (double)p->total : 1.0;

    human(done, sizeof done, (double)p->done);
    human(total, sizeof total, (double)p->total);
    human(rate, sizeof rate, r);
    clock_text(left, sizeof left,
               r > 0.0 ? (double)(p->total - p->done) / r : -1.0);
    if (p->bar) {
        char bar[31];
        int fill = (int)(frac * 30.0);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(p->out, "\r[%s] %3d%%  %s / %s  %s/s  %s left   ", bar,
                (int)(frac * 100.0), done, total, rate, final ? "0:00" : left);
        if (final)
            fputc('\n', p->out);
    } else {
        fprintf(p->out,
                "hfdcp consolidate: %3d%%  %s of %s  %s/s  %s left\n",
                (int)(frac * 100.0), done, total, rate, final ? "0:00" : left);
    }
    fflush(p->out);
}

static void on_progress(uint64_t done, uint64_t total, void *arg)
{
    progress_state *p = arg;
    double t = now();
    int decile;

    p->done = done;
    p->total = total;
    if (p->quiet)
        return;
    if (p->bar) {
        if (t - p->last >= 0.1 || done == total) { /* at most 10 per second */
            draw(p, t, false);
            p->last = t;
        }
        return;
    }
    decile = total ? (int)(done * 10 / total) : 10;
    if (decile > p->last_decile || t - p->last >= LINE_SECONDS) {
        draw(p, t, false);
        p->last_decile = decile;
        p->last = t;
    }
}

static int usage(void)
{
    if (tool_rank() == 0)
        fprintf(stderr,
                "usage: hfdcp consolidate IN OUT [--map-from REFERENCE_DIR] "
                "[--dtype bf16|f16|f32|f64]\n"
                "                         [--buffer-mb N] [--threads N] "
                "[--progress auto|bar|lines|none]\n"
                "                         [--hint KEY=VALUE]... [--no-checksums]\n"
                "(see hfdcp help consolidate)\n");
    return TOOL_EXIT_USAGE;
}

/* Prints "hfdcp consolidate: REASON" (printf-like) then usage(), freeing
 * the hints given so far. */
static int usage_free(MPI_Info info, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_free(MPI_Info info, const char *fmt, ...)
{
    va_list ap;
    if (info != MPI_INFO_NULL)
        MPI_Info_free(&info);
    if (tool_rank() == 0) {
        fputs("hfdcp consolidate: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    return usage();
}

/* usage_free() for OPT's value `val` (NULL: missing), which must be
 * `expected`. */
static int bad_value(MPI_Info info, const char *opt, const char *val, const char *expected)
{
    if (val == NULL)
        return usage_free(info, "%s needs a value: %s", opt, expected);
    return usage_free(info, "%s '%s': expected %s", opt, val, expected);
}

#define DTYPES_EXPECTED                                                              \
    "bf16, f16, f32 or f64, the dtypes a cast accepts (it converts the "             \
    "floating-point tensors; integer, BOOL and FP8 tensors are copied unchanged)"
#define BUFFER_MB_MAX (1L << 30)
#define BUFFER_MB_EXPECTED "MiB from 0 (the default, 32 MiB) to 1073741824"

static bool parse_count(const char *s, long min, long max, long *out)
{
    char *end;
    long v;
    if (s == NULL || *s == '\0')
        return false;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_dtype(const char *s, hfdcp_dtype *out)
{
    static const struct {
        const char *name;
        hfdcp_dtype dtype;
    } names[] = {{"bf16", HFDCP_BF16},
                 {"f16", HFDCP_F16},
                 {"f32", HFDCP_F32},
                 {"f64", HFDCP_F64}};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].dtype;
            return true;
        }
    return false;
}

/* Every rank reads the reference (a few small files); the ranks agree on
 * the outcome so that none goes on alone. */
static int map_from(const char *ref, hfdcp_file_map **map)
{
    int rc = hfdcp_file_map_from_reference(ref, NULL, map), worst = rc;

    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rc == HFDCP_OK && worst != HFDCP_OK) {
        hfdcp_file_map_free(*map);
        *map = NULL;
        return hfdcp__error(worst, "another rank could not read the "
                                   "reference '%s'", ref);
    }
    return rc;
}

/* The command line into *o (hints in o->info), IN, OUT, REFERENCE_DIR
 * and the progress mode: TOOL_EXIT_OK, or TOOL_EXIT_USAGE after the
 * reason and the usage (o->info freed). */
static int parse_args(int argc, char **argv, hfdcp_consolidate_options *o, const char **in,
                      const char **out, const char **ref, const char **mode)
{
    long v;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--map-from") == 0) {
            if (val == NULL)
                return bad_value(o->info, a, val, "a reference model's directory");
            *ref = val;
        } else if (strcmp(a, "--progress") == 0) {
            if (val == NULL || (strcmp(val, "auto") && strcmp(val, "bar") &&
                                strcmp(val, "lines") && strcmp(val, "none")))
                return bad_value(o->info, a, val, "auto, bar, lines or none");
            *mode = val;
        } else if (strcmp(a, "--dtype") == 0) {
            if (!parse_dtype(val, &o->cast_dtype))
                return bad_value(o->info, a, val, DTYPES_EXPECTED);
            o->cast = 1;
        } else if (strcmp(a, "--buffer-mb") == 0) {
            /* 0: the library's default, as buffer_bytes 0. */
            if (!parse_count(val, 0, BUFFER_MB_MAX, &v))
                return bad_value(o->info, a, val, BUFFER_MB_EXPECTED);
            o->buffer_bytes = (uint64_t)v << 20;
        } else if (strcmp(a, "--threads") == 0) {
            if (!parse_count(val, 0, 1024, &v))
                return bad_value(o->info, a, val, "a thread count from 0 to 1024");
            o->num_threads = (int)v;
        } else if (strcmp(a, "--no-checksums") == 0) {
            o->no_checksums = 1;
            continue; /* takes no value */
        } else if (strcmp(a, "--hint") == 0) {
            if (!tool_add_hint(&o->info, val))
                return bad_value(o->info, a, val, "KEY=VALUE, an MPI-IO hint");
        } else if (a[0] == '-' && a[1] != '\0') {
            return usage_free(o->info, "unknown option '%s'", a);
        } else {
            if (*in != NULL && *out != NULL)
                return usage_free(o->info, "unexpected argument '%s' (IN and OUT "
                                  "are '%s' and '%s')", a, *in, *out);
            *(*in == NULL ? in : out) = a;
            continue;
        }
        i++;
    }
    if (*in == NULL || *out == NULL)
        return usage_free(o->info, "missing %s", *in == NULL ? "IN and OUT" : "OUT");
    return TOOL_EXIT_OK;
}

/* Rank 0's summary line: the output's tensor bytes (counted by the
 * progress callback, installed whatever the mode) and the rate. */
static void summary(progress_state *p, const char *mode, const char *in,
                    const char *out)
{
    double t = now(), s = t - p->start;
    char bytes[32], rate[32];

    if (strcmp(mode, "none") != 0 && (p->bar || p->last_decile < 10))
        draw(p, t, true);
    human(bytes, sizeof bytes, (double)p->total);
    human(rate, sizeof rate, s > 0.0 ? (double)p->total / s : 0.0);
    printf("%s: consolidated %s of tensors from %s in %.2f s (%s/s)\n", out, bytes, in, s,
           rate);
}

int tool_consolidate(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *ref = NULL, *mode = "auto";
    hfdcp_consolidate_options o;
    hfdcp_file_map *map = NULL;
    progress_state p;
    int rc;

    hfdcp_consolidate_options_init(&o);
    if ((rc = parse_args(argc, argv, &o, &in, &out, &ref, &mode)) != TOOL_EXIT_OK)
        return rc;
    if (ref != NULL) {
        if ((rc = map_from(ref, &map)) != HFDCP_OK) {
            if (o.info != MPI_INFO_NULL)
                MPI_Info_free(&o.info);
            return tool_fail("consolidate", rc);
        }
        if (tool_rank() == 0 && hfdcp_file_map_warning(map)[0] != '\0')
            fprintf(stderr, "hfdcp consolidate: warning: %s\n",
                    hfdcp_file_map_warning(map));
    }
    memset(&p, 0, sizeof p);
    p.out = stderr;
    p.quiet = strcmp(mode, "none") == 0;
    p.bar = strcmp(mode, "bar") == 0 ||
            (strcmp(mode, "auto") == 0 && isatty(fileno(stderr)));
    p.last_decile = -1;
    p.start = p.last = now();
    if (tool_rank() == 0) { /* counts the bytes, even when quiet */
        o.progress = on_progress;
        o.progress_arg = &p;
    }
    rc = hfdcp_consolidate(MPI_COMM_WORLD, in, out, map, &o);
    hfdcp_file_map_free(map);
    if (o.info != MPI_INFO_NULL)
        MPI_Info_free(&o.info);
    if (rc != HFDCP_OK) {
        if (tool_rank() == 0 && !p.quiet && p.bar && p.done > 0)
            fputc('\n', stderr);
        return tool_fail("consolidate", rc);
    }
    if (tool_rank() == 0)
        summary(&p, mode, in, out);
    return TOOL_EXIT_OK;
}
