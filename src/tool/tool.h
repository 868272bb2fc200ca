/*
 * tool.h - shared by the files of the hfdcp command-line tool (src/tool/).
 */
#ifndef HFDCP_TOOL_H
#define HFDCP_TOOL_H

#include <stdio.h>

#include "hfdcp_internal.h"

/* Exit codes of every subcommand: one rule, documented in `hfdcp help`
 * and docs/guide.md ("Command-line tool: help and exit codes").  Every
 * message goes to stderr, "hfdcp CMD: ..." first, from rank 0 only. */
enum {
    TOOL_EXIT_OK = 0,      /* success; for verify: the checkpoint is valid */
    TOOL_EXIT_INVALID = 1, /* the input is invalid: verify found problems;
                              inspect/consolidate refused a missing,
                              malformed or inconsistent checkpoint;
                              demo/bench read back bytes that differ */
    TOOL_EXIT_USAGE = 2,   /* bad command line: an unknown command or
                              option, a bad value (the tool's reason and
                              usage), or a value hfdcp refused
                              (HFDCP_ERR_ARG, e.g. a hint) */
    TOOL_EXIT_ERROR = 3    /* any other failure: I/O, memory, MPI, ... */
};

/* Each subcommand: argv[0] is the subcommand's name.  Called after
 * MPI_Init; returns an exit code (the same on every rank). */
int tool_inspect(int argc, char **argv);
int tool_verify(int argc, char **argv);
int tool_demo(int argc, char **argv);
int tool_bench(int argc, char **argv);
int tool_consolidate(int argc, char **argv);

/* `hfdcp verify --data PATH` once the structure is valid (verify_data.c):
 * collective on MPI_COMM_WORLD; reads and checks every tensor's bytes,
 * reports on rank 0; the exit code, the same on every rank. */
int tool_verify_data(const char *path);

/* Generated models (model.c), shared by demo and bench. */

/* How a tensor is spread over the ranks. */
typedef enum { SPLIT_ROWS, SPLIT_COLS, SPLIT_BLOCKS, SPLIT_REPLICATED } tool_split;

/* Receives one tensor of a generated model: 1-D (d0) or 2-D (d0 x d1). */
typedef int (*tool_add_tensor_fn)(void *ctx, const char *name, int ndim, int64_t d0,
                                  int64_t d1, tool_split split);

/* How a Llama-shaped model is split: the mix of every split (attention
 * and down_proj by columns, gate/up in 2-D blocks), or Megatron-LM's
 * tensor parallelism (q, k, v, gate and up by rows: column-parallel
 * layers split their output dimension, the weight's first; o and down by
 * columns). */
typedef enum { LLAMA_MIX, LLAMA_MEGATRON } tool_llama_split;

/* A Llama-shaped model of about `params` parameters (hidden size,
 * vocabulary and layer count in Llama's proportions, intermediate = 2.75 x
 * hidden), split as `how` says; embedding and lm_head by rows, norms
 * replicated. */
int tool_llama_model(double params, tool_llama_split how, tool_add_tensor_fn add, void *ctx);

/* A count with an optional suffix k, M, G or T (powers of 1000) into *out:
 * 0, or -1 when `s` is not such a number or is above `max`. */
int tool_parse_size(const char *s, double max, uint64_t *out);

/* Sets the hint of `arg`, "KEY=VALUE", in *info (created when it is
 * MPI_INFO_NULL): 1, or 0 when `arg` is not of that form. */
int tool_add_hint(MPI_Info *info, const char *arg);

/* Part `k` of `n` of [0, len): the first len % n parts are one longer. */
void tool_split_range(int64_t len, int n, int k, int64_t *off, int64_t *size);

/* The box rank `rank` of `nranks` holds of a 1-D or 2-D tensor split by
 * `split` (1-D tensors are split by rows unless replicated; blocks: a
 * rows x cols grid, rows the largest divisor of nranks <= its root). */
void tool_split_box(int ndim, const int64_t *shape, tool_split split, int rank, int nranks,
                    int64_t *off, int64_t *size);

/* Prints `hfdcp help CMD` text for `cmd` to `out`; false if unknown. */
int tool_help(const char *cmd, FILE *out);

/* Writes `s` as a JSON string literal (quotes and escapes included). */
void tool_json_string(FILE *out, const char *s);

/* Prints "hfdcp CMD: <status name>: <message>" on stderr (rank 0 only)
 * and remembers `status` for tool_last_failure_exit(). */
void tool_report_error(const char *cmd, int status);

/* The exit code of a failed hfdcp call's status, by the rule above:
 * HFDCP_ERR_NOT_FOUND, _FORMAT, _PLAN, _UNSUPPORTED: TOOL_EXIT_INVALID;
 * HFDCP_ERR_ARG: TOOL_EXIT_USAGE; any other: TOOL_EXIT_ERROR. */
int tool_exit_of(int status);

/* tool_report_error(), then tool_exit_of(status). */
int tool_fail(const char *cmd, int status);

/* tool_exit_of() of the status tool_report_error() saw last, or
 * TOOL_EXIT_ERROR when it saw none. */
int tool_last_failure_exit(void);

int tool_rank(void);

#endif
