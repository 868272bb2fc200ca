/*
 * consolidate_times.c - the phase timers of a consolidation: where its
 * time goes (catalog, checks, reads, writes, syncs, publication), each
 * rank's own wall-clock seconds, printed to stderr at the end when the
 * environment variable HFDCP_CONSOLIDATE_TIMES is set (to anything but
 * "0").  Local: no MPI call but MPI_Wtime, so a rank whose environment
 * differs only prints or not.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consolidate_internal.h"

static const char *const names[HFDCP__CT_COUNT] = {
    "args", "catalog", "checks", "plan", "prepare", "create",
    "requests", "reads", "crc_in", "convert", "crc_out", "writes",
    "syncs", "verify", "publish",
};

void hfdcp__ctimes_init(hfdcp__ctimes *ct)
{
    const char *e = getenv("HFDCP_CONSOLIDATE_TIMES");

    memset(ct, 0, sizeof *ct);
    ct->on = e != NULL && *e != '\0' && strcmp(e, "0") != 0;
    ct->start = MPI_Wtime();
}

double hfdcp__ctimes_add(hfdcp__ctimes *ct, int phase, double since)
{
    double now = MPI_Wtime();

    ct->sec[phase] += now - since;
    return now;
}

void hfdcp__ctimes_print(const hfdcp__ctimes *ct, int rank, uint64_t bytes)
{
    double total = MPI_Wtime() - ct->start;
    char line[1024];
    int n;

    if (!ct->on)
        return;
    /* One write, so that the ranks' lines do not interleave. */
    n = snprintf(line, sizeof line,
                 "hfdcp consolidate times rank %d: total %.3f s", rank,
                 total);
    for (int i = 0; i < HFDCP__CT_COUNT && n > 0 && (size_t)n < sizeof line;
         i++)
        n += snprintf(line + n, sizeof line - (size_t)n, " %s %.3f",
                      names[i], ct->sec[i]);
    if (n > 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, " (%.1f MB/s)\n",
                 total > 0 ? (double)bytes / total / 1e6 : 0.0);
    fputs(line, stderr);
}
