// ranks: 1
// timeout: 300
/*
 * test_tool.c - the hfdcp command-line tool, run as a user would (one
 * process per call through popen; the test itself runs on one rank):
 * help, inspect (text and JSON, checked against the catalog oracle),
 * verify (valid and invalid inputs, every problem reported), the exit
 * codes and messages of bad command lines and of missing or malformed
 * inputs (one rule, `hfdcp help`), and verify on mutated files, which
 * must never crash.
 */
#include <dirent.h>
#include <sys/wait.h>

#include "harness.h"

/* Runs `hfdcp ARGS` and returns its exit status (-1 if killed by a
 * signal); stdout in *out (malloc'd). */
static int tool(const char *args, char **out)
{
    char cmd[4096];
    static int scrubbed;
    if (!scrubbed) {
        hfdcp_test_scrub_launcher();
        scrubbed = 1;
    }
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", hfdcp_test_singleton_tool(), args);
    return hfdcp_test_run(cmd, out);
}

/* Runs `hfdcp ARGS` and returns its exit status; its stderr alone in
 * *err (stdout discarded): where every message of the tool must go. */
static int tool_err(const char *args, char **err)
{
    char cmd[4096];
    hfdcp_test_scrub_launcher();
    snprintf(cmd, sizeof cmd, "%s %s 2>&1 >/dev/null", hfdcp_test_singleton_tool(), args);
    return hfdcp_test_run(cmd, err);
}

/* The same with its stdout alone in *out (stderr discarded). */
static int tool_out(const char *args, char **out)
{
    char cmd[4096];
    hfdcp_test_scrub_launcher();
    snprintf(cmd, sizeof cmd, "%s %s 2>/dev/null", hfdcp_test_singleton_tool(), args);
    return hfdcp_test_run(cmd, out);
}

/* `hay` holds `a`, and `b` after it. */
static int in_order(const char *hay, const char *a, const char *b)
{
    const char *p = hay ? strstr(hay, a) : NULL;
    return p != NULL && strstr(p + strlen(a), b) != NULL;
}

static int tool_should_print_help_for_every_command(MPI_Comm comm, const char *dir)
{
    char *out = NULL;
    (void)comm;
    (void)dir;
    T_CHECK(tool("help", &out) == 0);
    T_CHECK(out && strstr(out, "inspect PATH") && strstr(out, "exit codes"));
    /* Every command the overview lists ("  NAME ..." lines after
     * "commands:") has a manual page with the same sections, named
     * "hfdcp NAME - ...". */
    char *overview = out, *line = out ? strstr(out, "commands:\n") : NULL;
    T_CHECK(line != NULL);
    int pages = 0;
    for (line = strchr(line, '\n') + 1; strncmp(line, "  ", 2) == 0 && line[2] != ' ';
         line = strchr(line, '\n') + 1) {
        char cmd[32], args[64], name[64];
        T_CHECK(sscanf(line + 2, "%31s", cmd) == 1);
        snprintf(args, sizeof args, "help %s", cmd);
        snprintf(name, sizeof name, "NAME\n    hfdcp %s - ", cmd);
        char *page = NULL;
        T_CHECKF(tool(args, &page) == 0, "%s", cmd);
        T_CHECKF(page && strncmp(page, name, strlen(name)) == 0 && strstr(page, "\nSYNOPSIS\n") &&
                     strstr(page, "\nDESCRIPTION\n") && strstr(page, "\nEXIT STATUS\n    0 "),
                 "help %s: %s", cmd, page ? page : "");
        free(page);
        pages++;
    }
    T_CHECKF(pages >= 7, "only %d commands listed", pages); /* inspect ... help */
    free(overview);
    T_CHECK(tool("help nosuch", &out) == 2);
    free(out);
    T_CHECK(tool("nosuch", &out) == 2);
    T_CHECK(out && strstr(out, "unknown command 'nosuch'"));
    free(out);
    return T_OK;
}

/* The one exit-code rule is printed by `hfdcp help`; every bad command
 * line exits 2 with the command and the reason first on stderr, then the
 * usage. */
static int tool_should_refuse_bad_command_lines_with_a_reason(MPI_Comm comm, const char *dir)
{
    static const struct {
        const char *args, *reason, *usage;
    } bad[] = {
        {"help inspect extra", "hfdcp help: unexpected argument 'extra': takes at most one "
                               "COMMAND\n", "usage: hfdcp help [COMMAND]\n"},
        {"help nosuch", "hfdcp help: unknown command 'nosuch'\n", "usage: hfdcp help"},
        {"version extra", "hfdcp version: unexpected argument 'extra': takes no arguments\n",
         "usage: hfdcp version\n"},
        {"", "hfdcp: no command given\n", "usage: hfdcp COMMAND"},
        {"nosuch", "hfdcp: unknown command 'nosuch'\n", "usage: hfdcp COMMAND"},
        {"inspect", "hfdcp inspect: missing PATH\n", "usage: hfdcp inspect PATH"},
        {"inspect a b", "hfdcp inspect: unexpected argument 'b'\n", "usage: hfdcp inspect"},
        {"inspect a --yaml", "hfdcp inspect: unknown option '--yaml'\n", "usage: hfdcp inspect"},
        {"verify", "hfdcp verify: missing PATH\n",
         "usage: hfdcp verify [--strict] [--data] PATH\n"},
        {"verify --strict", "hfdcp verify: missing PATH\n", "usage: hfdcp verify"},
        {"verify --data", "hfdcp verify: missing PATH\n", "usage: hfdcp verify"},
        {"verify --data a --all", "hfdcp verify: unknown option '--all'\n",
         "usage: hfdcp verify"},
        {"verify a b", "hfdcp verify: unexpected argument 'b'\n", "usage: hfdcp verify"},
        {"verify --strict a --strict b", "hfdcp verify: unexpected argument 'b'\n",
         "usage: hfdcp verify"},
        {"verify --all", "hfdcp verify: unknown option '--all'\n", "usage: hfdcp verify"},
        {"demo --hint novalue", "hfdcp demo: --hint 'novalue': expected KEY=VALUE",
         "usage: hfdcp demo"},
        {"demo --params 5", "hfdcp demo: --params '5': expected a parameter count",
         "usage: hfdcp demo"},
        {"demo --dtype", "hfdcp demo: --dtype needs a value: bf16, f16 or f32\n",
         "usage: hfdcp demo"},
        {"demo --frob 1", "hfdcp demo: unknown option '--frob'\n", "usage: hfdcp demo"},
    };
    char *out = NULL;
    (void)comm;
    (void)dir;
    /* The rule, in the general help. */
    T_CHECK(tool("help", &out) == 0);
    T_CHECKF(out && strstr(out, "  0  success") && strstr(out, "  1  the input is invalid") &&
                 strstr(out, "  2  bad command line") && strstr(out, "  3  any other failure"),
             "%s", out ? out : "");
    free(out);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = tool_err(bad[i].args, &out);
        T_CHECKF(st == 2, "'%s': exit %d: %s", bad[i].args, st, out ? out : "");
        T_CHECKF(out && strncmp(out, bad[i].reason, strlen(bad[i].reason)) == 0 &&
                     in_order(out, bad[i].reason, bad[i].usage),
                 "'%s' printed on stderr:\n%s", bad[i].args, out ? out : "");
        free(out);
    }
    /* Nothing on stdout for them. */
    T_CHECK(tool_out("help inspect extra", &out) == 2);
    T_CHECKF(out == NULL || out[0] == '\0', "%s", out);
    free(out);
    return T_OK;
}

static int tool_should_inspect_like_the_oracle(MPI_Comm comm, const char *dir)
{
    char args[1024], *out = NULL, *want = NULL;
    (void)comm;
    (void)dir;
    /* The JSON form parsed by Python and printed in the catalog oracle's
     * canonical form must equal the oracle's own reading. */
    static const char *paths[] = {"SafeTensors.jl/sharded", "mlx/adapters.safetensors",
                                  "burn/batch_norm2d.safetensors", "candle/voices.safetensors"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "inspect --json %s/%s", hfdcp_test_fixtures(), paths[i]);
        T_CHECKF(tool(args, &out) == 0, "%s: %s", paths[i], out ? out : "");
        char path[512];
        snprintf(path, sizeof path, "%s/inspect.json", dir);
        T_CHECK(hfdcp_test_write_file(path, out, strlen(out)) == 0);
        free(out);
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "%s -c 'import json,sys; d=json.load(open(sys.argv[1])); "
                 "print(d[\"total_size\"]); "
                 "[print(t[\"name\"], t[\"dtype\"], t[\"shape\"], t[\"file\"]) for t in d[\"tensors\"]]' %s",
                 hfdcp_test_python(), path);
        T_CHECK(hfdcp_test_run(cmd, &out) == 0 && out != NULL);
        snprintf(cmd, sizeof cmd,
                 "%s -c 'import json,sys,os,struct\n"
                 "p=sys.argv[1]\n"
                 "files=[p] if os.path.isfile(p) else sorted(os.path.join(p,f) for f in os.listdir(p) if f.endswith(\".safetensors\"))\n"
                 "ts=[]\n"
                 "for f in files:\n"
                 "  b=open(f,\"rb\").read(); n=struct.unpack(\"<Q\",b[:8])[0]; h=json.loads(b[8:8+n])\n"
                 "  ts+=[(k,v[\"dtype\"],v[\"shape\"],os.path.basename(f),v[\"data_offsets\"][1]-v[\"data_offsets\"][0]) for k,v in h.items() if k!=\"__metadata__\"]\n"
                 "ts.sort(key=lambda t: t[0].encode())\n"
                 "print(sum(t[4] for t in ts))\n"
                 "[print(t[0], t[1], t[2], t[3]) for t in ts]' %s/%s",
                 hfdcp_test_python(), hfdcp_test_fixtures(), paths[i]);
        T_CHECK(hfdcp_test_run(cmd, &want) == 0 && want != NULL);
        T_CHECKF(strcmp(out, want) == 0, "%s:\n--- tool\n%s--- python\n%s", paths[i], out, want);
        free(out);
        free(want);
    }
    /* The text form names files, tensors and the total. */
    snprintf(args, sizeof args, "inspect %s/SafeTensors.jl/sharded", hfdcp_test_fixtures());
    T_CHECK(tool(args, &out) == 0);
    T_CHECK(strstr(out, "6 files, 36 tensors, 4305 tensor bytes, with index") != NULL);
    T_CHECK(strstr(out, "float64_357  F64  [3, 5, 7]  model-0000") != NULL);
    T_CHECK(strstr(out, "total: 4305 bytes") != NULL);
    free(out);
    return T_OK;
}

/* A missing or malformed input is invalid input, exit 1, for inspect as
 * for verify (and consolidate: test_consolidate_tool.c); the message on
 * stderr, the command first. */
static int tool_should_exit_1_on_a_missing_or_malformed_input(MPI_Comm comm, const char *dir)
{
    char args[1024], bad[512], *err = NULL, *out = NULL;
    (void)comm;
    snprintf(bad, sizeof bad, "%s/invalid/safetensors_cpp_abuse_attempt_1.safetensors",
             hfdcp_test_fixtures());
    /* inspect: the library's status and message, nothing on stdout. */
    snprintf(args, sizeof args, "inspect %s/nope", dir);
    T_CHECK(tool_err(args, &err) == 1);
    T_CHECKF(err && strncmp(err, "hfdcp inspect: HFDCP_ERR_NOT_FOUND: ", 36) == 0 &&
                 strstr(err, "/nope' does not exist\n"), "%s", err ? err : "");
    free(err);
    snprintf(args, sizeof args, "inspect %s", bad);
    T_CHECK(tool_out(args, &out) == 1);
    T_CHECKF(out == NULL || out[0] == '\0', "%s", out);
    free(out);
    snprintf(args, sizeof args, "inspect --json %s", bad);
    T_CHECK(tool_err(args, &err) == 1);
    T_CHECKF(err && strncmp(err, "hfdcp inspect: HFDCP_ERR_FORMAT: ", 33) == 0 &&
                 strstr(err, "past the end of the file"), "%s", err ? err : "");
    free(err);
    /* verify: the report on stdout, the verdict on stderr. */
    snprintf(args, sizeof args, "verify %s/nope", dir);
    T_CHECK(tool_out(args, &out) == 1);
    T_CHECKF(out && strncmp(out, "HFDCP_ERR_NOT_FOUND: ", 21) == 0 &&
                 strstr(out, "/nope' does not exist\n"), "%s", out ? out : "");
    free(out);
    snprintf(args, sizeof args, "verify %s/nope", dir);
    T_CHECK(tool_err(args, &err) == 1);
    T_CHECKF(err && strncmp(err, "hfdcp verify: ", 14) == 0 &&
                 strstr(err, "/nope: not valid, 1 problem (listed on stdout)\n"),
             "%s", err ? err : "");
    free(err);
    snprintf(args, sizeof args, "verify %s", bad);
    T_CHECK(tool_err(args, &err) == 1);
    T_CHECKF(err && strncmp(err, "hfdcp verify: ", 14) == 0 &&
                 strstr(err, "abuse_attempt_1.safetensors: not valid, 1 problem"),
             "%s", err ? err : "");
    free(err);
    return T_OK;
}

static int tool_should_verify_and_report_every_problem(MPI_Comm comm, const char *dir)
{
    char args[1024], *out = NULL;
    (void)comm;
    snprintf(args, sizeof args, "verify %s/SafeTensors.jl/sharded", hfdcp_test_fixtures());
    T_CHECK(tool(args, &out) == 0);
    T_CHECK(strstr(out, "valid (6 files, 36 tensors, 4305 bytes)") != NULL);
    free(out);
    snprintf(args, sizeof args, "verify %s/invalid/safetensors_cpp_abuse_attempt_1.safetensors",
             hfdcp_test_fixtures());
    T_CHECK(tool(args, &out) == 1);
    T_CHECK(strstr(out, "HFDCP_ERR_FORMAT") && strstr(out, "past the end of the file"));
    free(out);
    /* Two bad files in one directory: one line each. */
    char path[512];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    T_CHECK(hfdcp_test_write_file(path, "\x04\0\0\0\0\0\0\0{}", 10) == 0);
    snprintf(path, sizeof path, "%s/b.safetensors", dir);
    T_CHECK(hfdcp_test_write_file(path, "\x02\0\0\0\0\0\0\0[]", 10) == 0);
    snprintf(path, sizeof path, "%s/c.safetensors", dir);
    T_CHECK(hfdcp_test_write_file(path, "\x02\0\0\0\0\0\0\0{}x", 11) == 0);
    snprintf(args, sizeof args, "verify %s", dir);
    T_CHECK(tool(args, &out) == 1);
    int lines = 0; /* one per problem, and the verdict */
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    T_CHECKF(lines == 4, "%s", out);
    T_CHECK(strstr(out, "a.safetensors") && strstr(out, "b.safetensors") && strstr(out, "c.safetensors"));
    T_CHECKF(strstr(out, ": not valid, 3 problems (listed on stdout)\n"), "%s", out);
    free(out);
    return T_OK;
}

static int tool_should_never_crash_on_mutated_files(MPI_Comm comm, const char *dir)
{
    size_t len;
    char src[512], path[512], args[1024], *out = NULL;
    uint64_t seed = 42;
    (void)comm;
    snprintf(src, sizeof src, "%s/SafeTensors.jl/sharded/model-00005-of-00006.safetensors",
             hfdcp_test_fixtures());
    unsigned char *orig = hfdcp_test_read_file(src, &len);
    T_CHECK(orig != NULL && len > 64);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    int invalid = 0;
    for (int i = 0; i < 60; i++) {
        unsigned char *b = malloc(len);
        memcpy(b, orig, len);
        size_t n = len;
        int flips = 1 + (int)(hfdcp_test_rand(&seed) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)(hfdcp_test_rand(&seed) % (i % 2 ? 600 : len));
            b[at] = (unsigned char)hfdcp_test_rand(&seed);
        }
        if (i % 5 == 0)
            n = (size_t)(hfdcp_test_rand(&seed) % len); /* truncated */
        T_CHECK(hfdcp_test_write_file(path, b, n) == 0);
        free(b);
        snprintf(args, sizeof args, "verify %s", path);
        int st = tool(args, &out);
        /* 0 (still valid) or 1 (problems): never a crash (-1) or usage. */
        T_CHECKF(st == 0 || st == 1, "mutation %d: exit %d: %s", i, st, out ? out : "");
        if (st == 1)
            invalid++;
        free(out);
    }
    T_CHECK(invalid > 10);
    free(orig);
    return T_OK;
}

/* hfdcp demo (one rank, a small model) with --hint: the hints reach the
 * save (every file's data aligned to 4096) and the run verifies; a hint
 * not of the form KEY=VALUE is a usage error. */
static int tool_should_pass_hints_to_the_demo(MPI_Comm comm, const char *dir)
{
    char args[2048], path[1024], *out = NULL;
    (void)comm;
    snprintf(args, sizeof args, "demo --params 200k --max-shard-bytes 100k --out %s/d "
             "--hint hfdcp_data_alignment=4096 --hint cb_buffer_size=1048576", dir);
    T_CHECKF(tool(args, &out) == 0, "%s", out ? out : "");
    T_CHECKF(out && strstr(out, "verified: every byte of every tensor matches"), "%s",
             out ? out : "");
    free(out);
    int files = 0;
    snprintf(path, sizeof path, "%s/d", dir);
    DIR *d = opendir(path);
    T_CHECK(d != NULL);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char name[1400];
        size_t len, nl = strlen(e->d_name);
        unsigned char *buf;
        uint64_t n = 0;
        if (nl < 12 || strcmp(e->d_name + nl - 12, ".safetensors") != 0)
            continue;
        snprintf(name, sizeof name, "%s/%s", path, e->d_name);
        buf = hfdcp_test_read_file(name, &len);
        for (int k = 0; buf != NULL && len >= 8 && k < 8; k++)
            n |= (uint64_t)buf[k] << (8 * k);
        free(buf);
        if (buf == NULL || len < 8 || (8 + n) % 4096 != 0) {
            closedir(d);
            return hfdcp_test_fail(__FILE__, __LINE__, "%s: data at %llu", name,
                                   (unsigned long long)(8 + n));
        }
        files++;
    }
    closedir(d);
    T_CHECKF(files >= 2, "%d files", files);
    snprintf(args, sizeof args, "demo --params 200k --out %s/e --hint novalue", dir);
    T_CHECK(tool(args, &out) == 2);
    T_CHECK(out && strstr(out, "hfdcp demo: --hint 'novalue': expected KEY=VALUE"));
    free(out);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"tool_should_print_help_for_every_command", tool_should_print_help_for_every_command, 1},
    {"tool_should_refuse_bad_command_lines_with_a_reason",
     tool_should_refuse_bad_command_lines_with_a_reason, 1},
    {"tool_should_inspect_like_the_oracle", tool_should_inspect_like_the_oracle, 1},
    {"tool_should_exit_1_on_a_missing_or_malformed_input",
     tool_should_exit_1_on_a_missing_or_malformed_input, 1},
    {"tool_should_verify_and_report_every_problem", tool_should_verify_and_report_every_problem, 1},
    {"tool_should_never_crash_on_mutated_files", tool_should_never_crash_on_mutated_files, 1},
    {"tool_should_pass_hints_to_the_demo", tool_should_pass_hints_to_the_demo, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
