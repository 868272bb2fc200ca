/*
 * help.c - the text of `hfdcp help` and `hfdcp help CMD`.
 */
#include <string.h>

#include "tool.h"

static const char overview[] =
    "usage: hfdcp COMMAND [ARGS]   (run under mpirun/srun for more ranks)\n"
    "\n"
    "commands:\n"
    "  inspect PATH [--json]   list the files and tensors of a checkpoint\n"
    "  verify PATH             check a file or checkpoint against every rule\n"
    "  demo [OPTIONS]          save, reload and verify a generated model\n"
    "  help [COMMAND]          this text, or a command's manual\n"
    "\n"
    "exit codes: 0 success, 1 invalid input or mismatch found,\n"
    "            2 bad command line, 3 an hfdcp call failed\n";

static const struct {
    const char *cmd;
    const char *text;
} pages[] = {
    {"inspect",
     "NAME\n"
     "    hfdcp inspect - list the files and tensors of a checkpoint\n"
     "\n"
     "SYNOPSIS\n"
     "    [mpirun -np N] hfdcp inspect PATH [--json]\n"
     "\n"
     "DESCRIPTION\n"
     "    PATH is a checkpoint directory (with or without\n"
     "    model.safetensors.index.json, or per-rank DCP shard files) or one\n"
     "    .safetensors file.  Every header is read and checked as by\n"
     "    hfdcp_reader_open().  Prints the files (name, bytes, tensors) and\n"
     "    the tensors (name, dtype, global shape, file), then the total\n"
     "    tensor bytes.  A tensor stored in several DCP shards lists its\n"
     "    chunks (file, offsets, shape).\n"
     "\n"
     "    --json  print one JSON object instead:\n"
     "            {\"total_size\": N, \"tensors\": [{\"name\": ..., \"dtype\": ...,\n"
     "             \"shape\": [...], \"file\": ...}, ...]}; a tensor in several\n"
     "            chunks has \"file\": null and \"chunks\": [{\"file\": ...,\n"
     "            \"offsets\": [...], \"shape\": [...]}, ...].\n"
     "\n"
     "EXIT STATUS\n"
     "    0 listed; 2 bad command line; 3 the checkpoint could not be read\n"
     "    (the reason on stderr).\n"},
    {"verify",
     "NAME\n"
     "    hfdcp verify - check a safetensors file or checkpoint\n"
     "\n"
     "SYNOPSIS\n"
     "    hfdcp verify PATH\n"
     "\n"
     "DESCRIPTION\n"
     "    Checks every rule of docs/format.md: each file's header (length,\n"
     "    UTF-8, JSON, duplicate keys, dtypes, shapes, offsets, no hole, no\n"
     "    overlap, exact file size, __metadata__), the index against the\n"
     "    files, and DCP shard coverage.  Prints one line per problem found,\n"
     "    or \"PATH: valid (...)\".  Never crashes on any input.  Serial:\n"
     "    run it without mpirun (it starts no MPI runtime).\n"
     "\n"
     "EXIT STATUS\n"
     "    0 valid; 1 problems found (one line each on stdout);\n"
     "    2 bad command line.\n"},
    {"demo",
     "NAME\n"
     "    hfdcp demo - save, reload and verify a generated Llama-shaped model\n"
     "\n"
     "SYNOPSIS\n"
     "    mpirun -np N hfdcp demo [--out DIR] [--params P] [--dtype T]\n"
     "                            [--max-shard-bytes B]\n"
     "\n"
     "DESCRIPTION\n"
     "    Generates a Llama-shaped model of about P parameters in memory\n"
     "    (default 500000000, about 1 GB in bf16), spread over the ranks as\n"
     "    a trainer would hold it: embedding and lm_head split by rows,\n"
     "    attention weights split by columns, MLP weights in 2-D blocks,\n"
     "    norms replicated.  Saves it with one hfdcp_writer_commit() into\n"
     "    DIR, prints tensors, files, bytes, seconds and GB/s, loads it back\n"
     "    on the same ranks with another decomposition, verifies every\n"
     "    byte, checks the files against the format rules, and says so.\n"
     "    The checkpoint stays in DIR.\n"
     "\n"
     "OPTIONS\n"
     "    --out DIR             where to save (default ./hfdcp-demo)\n"
     "    --params P            model size in parameters (suffixes k, M, G)\n"
     "    --dtype T             bf16 (default), f16 or f32\n"
     "    --max-shard-bytes B   split the files at B bytes (default 256M;\n"
     "                          suffixes k, M, G are powers of 1000;\n"
     "                          0: one file)\n"
     "\n"
     "EXIT STATUS\n"
     "    0 saved and verified; 1 a byte differed; 2 bad command line;\n"
     "    3 an hfdcp call failed (the reason on stderr).\n"},
};

int tool_help(const char *cmd, FILE *out)
{
    if (cmd == NULL) {
        fputs(overview, out);
        return 1;
    }
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        if (strcmp(cmd, pages[i].cmd) == 0) {
            fputs(pages[i].text, out);
            return 1;
        }
    }
    return 0;
}
