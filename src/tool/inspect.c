/*
 * inspect.c - `hfdcp inspect` (list a checkpoint) and `hfdcp verify`
 * (check one against every rule, reporting every problem found, and as
 * warnings the index's bookkeeping that the reader does not enforce,
 * problems too with --strict; with --data, the tensors' bytes too:
 * verify_data.c).
 */
#include <inttypes.h>
#include <string.h>

#include "tool.h"

static void print_dims(FILE *out, int ndim, const int64_t *dims)
{
    fputc('[', out);
    for (int i = 0; i < ndim; i++)
        fprintf(out, "%s%" PRId64, i ? ", " : "", dims[i]);
    fputc(']', out);
}

static void print_text(FILE *out, const hfdcp__catalog *c)
{
    fprintf(out, "%s: %zu file%s, %zu tensor%s, %" PRIu64 " tensor bytes%s%s\n",
            c->path, c->n_files, c->n_files == 1 ? "" : "s", c->n_tensors,
            c->n_tensors == 1 ? "" : "s", c->total_size,
            c->has_index ? ", with index" : "",
            c->sharded ? ", DCP shards" : "");
    fprintf(out, "files:\n");
    for (size_t i = 0; i < c->n_files; i++)
        fprintf(out, "  %s  %" PRIu64 " bytes  %zu tensors\n", c->files[i].name,
                c->files[i].size, c->files[i].hdr.n_entries);
    fprintf(out, "tensors:\n");
    for (size_t i = 0; i < c->n_tensors; i++) {
        const hfdcp__tensor *t = &c->tensors[i];
        fprintf(out, "  %s  %s  ", t->name, hfdcp_dtype_name(t->dtype));
        print_dims(out, t->ndim, t->shape);
        if (t->n_chunks == 1) {
            fprintf(out, "  %s\n", c->files[t->chunks[0].file].name);
            continue;
        }
        fprintf(out, "  %zu chunks:\n", t->n_chunks);
        for (size_t k = 0; k < t->n_chunks; k++) {
            const hfdcp__chunk *ch = &t->chunks[k];
            fprintf(out, "      %s  offsets ", c->files[ch->file].name);
            print_dims(out, t->ndim, ch->offsets);
            fprintf(out, "  shape ");
            print_dims(out, t->ndim, ch->sizes);
            fputc('\n', out);
        }
    }
    fprintf(out, "total: %" PRIu64 " bytes\n", c->total_size);
}

static void print_json(FILE *out, const hfdcp__catalog *c)
{
    fprintf(out, "{\"total_size\": %" PRIu64 ", \"tensors\": [", c->total_size);
    for (size_t i = 0; i < c->n_tensors; i++) {
        const hfdcp__tensor *t = &c->tensors[i];
        fprintf(out, "%s\n  {\"name\": ", i ? "," : "");
        tool_json_string(out, t->name);
        fprintf(out, ", \"dtype\": \"%s\", \"shape\": ", hfdcp_dtype_name(t->dtype));
        print_dims(out, t->ndim, t->shape);
        fprintf(out, ", \"file\": ");
        if (t->n_chunks == 1) {
            tool_json_string(out, c->files[t->chunks[0].file].name);
            fputc('}', out);
            continue;
        }
        fprintf(out, "null, \"chunks\": [");
        for (size_t k = 0; k < t->n_chunks; k++) {
            const hfdcp__chunk *ch = &t->chunks[k];
            fprintf(out, "%s{\"file\": ", k ? ", " : "");
            tool_json_string(out, c->files[ch->file].name);
            fprintf(out, ", \"offsets\": ");
            print_dims(out, t->ndim, ch->offsets);
            fprintf(out, ", \"shape\": ");
            print_dims(out, t->ndim, ch->sizes);
            fputc('}', out);
        }
        fprintf(out, "]}");
    }
    fprintf(out, "%s]}\n", c->n_tensors ? "\n" : "");
}

int tool_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0, rc;
    hfdcp__catalog *c = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (argv[i][0] == '-' || path != NULL) {
            if (tool_rank() == 0)
                fprintf(stderr, "hfdcp inspect: %s '%s'\n"
                        "usage: hfdcp inspect PATH [--json]\n",
                        argv[i][0] == '-' ? "unknown option" : "unexpected argument",
                        argv[i]);
            return TOOL_EXIT_USAGE;
        } else {
            path = argv[i];
        }
    }
    if (path == NULL) {
        if (tool_rank() == 0)
            fprintf(stderr, "hfdcp inspect: missing PATH\n"
                    "usage: hfdcp inspect PATH [--json]\n");
        return TOOL_EXIT_USAGE;
    }
    /* A missing or malformed checkpoint: 1, as for verify. */
    rc = hfdcp__catalog_open(MPI_COMM_WORLD, path, NULL, &c);
    if (rc != HFDCP_OK)
        return tool_fail("inspect", rc);
    if (tool_rank() == 0) {
        if (json)
            print_json(stdout, c);
        else
            print_text(stdout, c);
        fflush(stdout);
    }
    hfdcp__catalog_free(c);
    return TOOL_EXIT_OK;
}

#define VERIFY_USAGE "usage: hfdcp verify [--strict] [--data] PATH\n"

/* The report of `hfdcp verify` on `path`: one line per problem on stdout
 * ("HFDCP_ERR_...: message"), and per warning ("warning: message"; with
 * --strict, a problem like the others), then the verdict: "PATH: valid
 * (...)" on stdout, or "not valid" on stderr.  Returns the exit code. */
static int verify_report(const char *path, int rc, const hfdcp__catalog *c,
                         const hfdcp__problem *problems, size_t n,
                         bool strict)
{
    size_t bad = 0;

    for (size_t i = 0; i < n; i++)
        bad += strict || !problems[i].warning;
    if (rc != HFDCP_OK && bad == 0)
        return tool_fail("verify", rc); /* nothing checked: no memory */
    for (size_t i = 0; i < n; i++) {
        if (strict || !problems[i].warning)
            printf("%s: ", hfdcp_status_name(problems[i].status));
        else
            printf("warning: ");
        printf("%s\n", problems[i].message);
    }
    if (bad == 0) {
        printf("%s: valid (%zu file%s, %zu tensor%s, %" PRIu64 " bytes)", path,
               c->n_files, c->n_files == 1 ? "" : "s", c->n_tensors,
               c->n_tensors == 1 ? "" : "s", c->total_size);
        if (n > 0)
            printf(", %zu warning%s (not valid with --strict)", n,
                   n == 1 ? "" : "s");
        printf("\n");
        return TOOL_EXIT_OK;
    }
    /* Every problem is a reason the input is invalid (an unreadable file
     * or a missing PATH among them). */
    fflush(stdout);
    fprintf(stderr, "hfdcp verify: %s: not valid, %zu problem%s (listed on stdout)\n",
            path, bad, bad == 1 ? "" : "s");
    return TOOL_EXIT_INVALID;
}

/* The structural check of `hfdcp verify` (one process): the exit code. */
static int verify_structure(const char *path, bool strict)
{
    hfdcp__catalog *c = NULL;
    hfdcp__problem *problems = NULL;
    size_t n = 0;
    int rc, code;

    rc = hfdcp__catalog_verify(path, &c, &problems, &n);
    code = verify_report(path, rc, c, problems, n, strict);
    fflush(stdout);
    hfdcp__problems_free(problems, n);
    hfdcp__catalog_free(c);
    return code;
}

/* Parses verify's command line: PATH into *path, the options; false (and
 * the reason and usage on stderr, rank 0) when it is bad. */
static bool verify_args(int argc, char **argv, const char **path, bool *strict,
                        bool *data)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--strict") == 0) {
            *strict = true;
        } else if (strcmp(argv[i], "--data") == 0) {
            *data = true;
        } else if (argv[i][0] == '-' || *path != NULL) {
            if (tool_rank() == 0)
                fprintf(stderr, "hfdcp verify: %s '%s'\n" VERIFY_USAGE,
                        argv[i][0] == '-' ? "unknown option" : "unexpected argument",
                        argv[i]);
            return false;
        } else {
            *path = argv[i];
        }
    }
    if (*path == NULL && tool_rank() == 0)
        fprintf(stderr, "hfdcp verify: missing PATH\n" VERIFY_USAGE);
    return *path != NULL;
}

int tool_verify(int argc, char **argv)
{
    const char *path = NULL;
    bool strict = false, data = false;
    int code = TOOL_EXIT_OK;

    if (!verify_args(argc, argv, &path, &strict, &data))
        return TOOL_EXIT_USAGE;
    if (!data)
        return verify_structure(path, strict);
    /* --data, under MPI: rank 0 checks the structure, then, when it is
     * valid, every rank reads its share of the data. */
    if (tool_rank() == 0)
        code = verify_structure(path, strict);
    MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return code != TOOL_EXIT_OK ? code : tool_verify_data(path);
}
