/*
 * main.c - the hfdcp command-line tool: initializes MPI and dispatches to a
 * subcommand.  inspect and demo may run under mpirun (inspect prints from
 * rank 0); verify is serial and does not start MPI, but verify --data
 * does (it may run under mpirun, every rank reading a share).
 */
#include <stdlib.h>
#include <string.h>

#include "tool.h"

/* verify is serial and needs no MPI: it runs without mpirun and starts no
 * MPI runtime, which keeps it fast and usable anywhere.  Its --data reads
 * the tensors, in parallel under mpirun: that option starts MPI. */
static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    int needs_mpi;
    const char *mpi_option; /* when !needs_mpi: an option that needs it */
} commands[] = {
    {"inspect", tool_inspect, 1, NULL},
    {"verify", tool_verify, 0, "--data"},
    {"demo", tool_demo, 1, NULL},
    {"bench", tool_bench, 1, NULL},
    {"consolidate", tool_consolidate, 1, NULL},
};

/* Whether argv holds `option` (NULL: never). */
static int has_option(int argc, char **argv, const char *option)
{
    for (int i = 2; option != NULL && i < argc; i++)
        if (strcmp(argv[i], option) == 0)
            return 1;
    return 0;
}

static int world_rank;
static int last_failure = HFDCP_OK; /* the status tool_report_error() saw last */

int tool_rank(void)
{
    return world_rank;
}

void tool_report_error(const char *cmd, int status)
{
    last_failure = status;
    if (world_rank == 0)
        fprintf(stderr, "hfdcp %s: %s: %s\n", cmd, hfdcp_status_name(status),
                hfdcp_last_error());
}

int tool_exit_of(int status)
{
    switch (status) {
    case HFDCP_OK:
        return TOOL_EXIT_OK;
    case HFDCP_ERR_NOT_FOUND:   /* a missing checkpoint, file or tensor */
    case HFDCP_ERR_FORMAT:      /* a malformed file or index */
    case HFDCP_ERR_PLAN:        /* shards with a hole, an overlap, ... */
    case HFDCP_ERR_UNSUPPORTED: /* a file hfdcp cannot represent */
        return TOOL_EXIT_INVALID;
    case HFDCP_ERR_ARG:         /* a value of the command line refused */
        return TOOL_EXIT_USAGE;
    default:                    /* I/O, memory, MPI, internal */
        return TOOL_EXIT_ERROR;
    }
}

int tool_fail(const char *cmd, int status)
{
    tool_report_error(cmd, status);
    return tool_exit_of(status);
}

int tool_last_failure_exit(void)
{
    return last_failure == HFDCP_OK ? TOOL_EXIT_ERROR : tool_exit_of(last_failure);
}

void tool_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (*p < 0x20)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

static int usage(FILE *out)
{
    tool_help(NULL, out);
    return TOOL_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    int rc = TOOL_EXIT_USAGE;

    /* Help needs no MPI. */
    if (argc < 2) {
        fprintf(stderr, "hfdcp: no command given\n");
        return usage(stderr);
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        if (argc > 3) {
            fprintf(stderr, "hfdcp help: unexpected argument '%s': takes at most "
                    "one COMMAND\nusage: hfdcp help [COMMAND]\n", argv[3]);
            return TOOL_EXIT_USAGE;
        }
        if (argc > 2 && !tool_help(argv[2], stdout)) {
            fprintf(stderr, "hfdcp help: unknown command '%s'\n"
                    "usage: hfdcp help [COMMAND]\n", argv[2]);
            return TOOL_EXIT_USAGE;
        }
        if (argc <= 2)
            tool_help(NULL, stdout);
        return TOOL_EXIT_OK;
    }
    /* The version of the library linked in, without MPI either. */
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        if (argc > 2) {
            fprintf(stderr, "hfdcp version: unexpected argument '%s': takes no arguments\n"
                    "usage: hfdcp version\n", argv[2]);
            return TOOL_EXIT_USAGE;
        }
        printf("hfdcp %s\n", hfdcp_version());
        return TOOL_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        if (!commands[i].needs_mpi &&
            !has_option(argc, argv, commands[i].mpi_option))
            return commands[i].fn(argc - 1, argv + 1);
        MPI_Init(&argc, &argv);
        MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        rc = commands[i].fn(argc - 1, argv + 1);
        MPI_Finalize();
        return rc;
    }
    fprintf(stderr, "hfdcp: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
