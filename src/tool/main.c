/*
 * main.c - the hfdcp command-line tool: initializes MPI and dispatches to a
 * subcommand.  inspect and demo may run under mpirun (inspect prints from
 * rank 0); verify is serial and does not start MPI.
 */
#include <stdlib.h>
#include <string.h>

#include "tool.h"

/* verify is serial and needs no MPI: it runs without mpirun and starts no
 * MPI runtime, which keeps it fast and usable anywhere. */
static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    int needs_mpi;
} commands[] = {
    {"inspect", tool_inspect, 1},
    {"verify", tool_verify, 0},
    {"demo", tool_demo, 1},
    {"bench", tool_bench, 1},
    {"consolidate", tool_consolidate, 1},
};

static int world_rank;

int tool_rank(void)
{
    return world_rank;
}

void tool_report_error(const char *cmd, int status)
{
    if (world_rank == 0)
        fprintf(stderr, "hfdcp %s: %s: %s\n", cmd, hfdcp_status_name(status),
                hfdcp_last_error());
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
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        if (argc > 2 && !tool_help(argv[2], stdout)) {
            fprintf(stderr, "hfdcp help: unknown command '%s'\n", argv[2]);
            return TOOL_EXIT_USAGE;
        }
        if (argc <= 2)
            tool_help(NULL, stdout);
        return TOOL_EXIT_OK;
    }
    /* The version of the library linked in, without MPI either. */
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        if (argc > 2) {
            fprintf(stderr, "hfdcp version: takes no arguments\n");
            return TOOL_EXIT_USAGE;
        }
        printf("hfdcp %s\n", hfdcp_version());
        return TOOL_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        if (!commands[i].needs_mpi)
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
