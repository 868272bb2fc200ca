/*
 * tool.h - shared by the files of the hfdcp command-line tool (src/tool/).
 */
#ifndef HFDCP_TOOL_H
#define HFDCP_TOOL_H

#include <stdio.h>

#include "hfdcp_internal.h"

/* Exit codes of every subcommand (documented in `hfdcp help`). */
enum {
    TOOL_EXIT_OK = 0,      /* success; for verify: the checkpoint is valid */
    TOOL_EXIT_INVALID = 1, /* verify found problems; demo found a mismatch */
    TOOL_EXIT_USAGE = 2,   /* bad command line */
    TOOL_EXIT_ERROR = 3    /* an hfdcp call failed (message on stderr) */
};

/* Each subcommand: argv[0] is the subcommand's name.  Called after
 * MPI_Init; returns an exit code (the same on every rank). */
int tool_inspect(int argc, char **argv);
int tool_verify(int argc, char **argv);
int tool_demo(int argc, char **argv);
int tool_bench(int argc, char **argv);
int tool_consolidate(int argc, char **argv);

/* Prints `hfdcp help CMD` text for `cmd` to `out`; false if unknown. */
int tool_help(const char *cmd, FILE *out);

/* Writes `s` as a JSON string literal (quotes and escapes included). */
void tool_json_string(FILE *out, const char *s);

/* Prints "hfdcp CMD: <status name>: <message>" on stderr (rank 0 only). */
void tool_report_error(const char *cmd, int status);

int tool_rank(void);

#endif
