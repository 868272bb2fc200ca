// ranks: 1
// timeout: 300
/*
 * test_consolidate_tool.c - `hfdcp consolidate`, run as a user would
 * (mpirun at 2 ranks, started through popen from this one-rank test):
 * shards of the SafeTensors.jl model consolidated with --map-from the
 * fixture's sharded copy of the same model must give the bytes of a direct
 * save with that map (and the fixture's own files), with plain progress
 * lines (the output is a pipe, not a terminal), and the byte count of the
 * summary with --progress none (those with --no-checksums, as the fixture
 * and the direct save carry no CRC-32C; by default every output file
 * records its tensors'); a missing or malformed input gives exit 1
 * and the library's message, a bad command line exit 2 and the reason.
 */
#include <sys/stat.h>

#include "harness.h"

/* Runs `hfdcp consolidate ARGS` on NP ranks (hfdcp_test_launcher) (NP 0: the tool alone);
 * returns its exit status, stdout and stderr in *out. */
static int consolidate(int np, const char *args, char **out)
{
    static int scrubbed;
    char cmd[8192];
    if (!scrubbed) {
        hfdcp_test_scrub_launcher();
        scrubbed = 1;
    }
    if (np > 0)
        snprintf(cmd, sizeof cmd, "%s %s consolidate %s 2>&1",
                 hfdcp_test_launcher(np), hfdcp_test_tool(), args);
    else
        snprintf(cmd, sizeof cmd, "%s consolidate %s 2>&1", hfdcp_test_singleton_tool(),
                 args);
    return hfdcp_test_run(cmd, out);
}

/* Two shard files of every tensor of `model` (a directory or file): rows
 * [0, n/2) in shard 1, the rest in shard 2; a tensor of fewer than 2 rows
 * whole in shard 1. */
static int write_shards(MPI_Comm comm, const char *model, const char *dir)
{
    hfdcp_reader *rd;
    size_t n;
    unsigned char **data;
    hfdcp__entry *ent[2];
    int64_t (*box)[2][2 * HFDCP_MAX_NDIM];
    size_t count[2] = {0, 0};

    T_OKCALL(hfdcp_reader_open(comm, model, NULL, &rd));
    n = hfdcp_reader_count(rd);
    data = calloc(n, sizeof *data);
    ent[0] = calloc(n, sizeof *ent[0]);
    ent[1] = calloc(n, sizeof *ent[1]);
    box = calloc(n, sizeof *box);
    T_CHECK(data && ent[0] && ent[1] && box);
    for (size_t i = 0; i < n; i++) {
        hfdcp_tensor_info t;
        uint64_t bytes;
        int64_t zero[HFDCP_MAX_NDIM] = {0};
        T_OKCALL(hfdcp_reader_tensor(rd, i, &t));
        T_OKCALL(hfdcp__tensor_bytes(t.dtype, t.ndim, t.shape, "t", &bytes));
        data[i] = malloc(bytes + 1);
        T_CHECK(data[i] != NULL);
        T_OKCALL(hfdcp_reader_add(rd, t.name, t.dtype, t.ndim, zero, t.shape,
                                  data[i]));
    }
    T_OKCALL(hfdcp_reader_load(rd));
    for (size_t i = 0; i < n; i++) {
        hfdcp_tensor_info t;
        int64_t rows;
        T_OKCALL(hfdcp_reader_tensor(rd, i, &t));
        rows = t.ndim > 0 ? t.shape[0] : 1;
        for (int s = 0; s < 2; s++) {
            int64_t *off = box[i][s], *sz = box[i][s] + HFDCP_MAX_NDIM;
            hfdcp__entry *e;
            if (rows < 2 && s == 1)
                continue;
            for (int d = 0; d < t.ndim; d++) {
                off[d] = 0;
                sz[d] = t.shape[d];
            }
            if (rows >= 2) {
                off[0] = s == 0 ? 0 : rows / 2;
                sz[0] = s == 0 ? rows / 2 : rows - rows / 2;
            }
            e = &ent[s][count[s]++];
            e->name = (char *)t.name;
            e->dtype = t.dtype;
            e->ndim = t.ndim;
            e->shape = sz;
            e->offsets = off;
        }
    }
    if (hfdcp_test_rank() == 0) {
        for (int s = 0; s < 2; s++) {
            hfdcp__header h;
            char *hdr = NULL, path[1024];
            size_t hlen = 0;
            uint64_t at = 0;
            unsigned char *file;
            qsort(ent[s], count[s], sizeof *ent[s], hfdcp__entry_layout_cmp);
            for (size_t k = 0; k < count[s]; k++) {
                uint64_t b;
                T_OKCALL(hfdcp__tensor_bytes(ent[s][k].dtype, ent[s][k].ndim,
                                             ent[s][k].shape, "t", &b));
                ent[s][k].begin = at;
                ent[s][k].end = at += b;
            }
            memset(&h, 0, sizeof h);
            h.entries = ent[s];
            h.n_entries = count[s];
            h.sharded = true;
            h.data_size = at;
            T_OKCALL(hfdcp__header_serialize(&h, &hdr, &hlen));
            file = malloc(hlen + at + 1);
            T_CHECK(file != NULL);
            memcpy(file, hdr, hlen);
            for (size_t k = 0; k < count[s]; k++) {
                hfdcp_tensor_info t;
                uint64_t row;
                size_t i = 0;
                /* the tensor's whole data, rows [off, off + size) */
                while (strcmp(ent[s][k].name,
                              (hfdcp_reader_tensor(rd, i, &t), t.name)) != 0)
                    i++;
                row = t.ndim > 0 && t.shape[0] > 0
                          ? (ent[s][k].end - ent[s][k].begin) /
                                (uint64_t)ent[s][k].shape[0]
                          : 0;
                memcpy(file + hlen + ent[s][k].begin,
                       data[i] + (t.ndim > 0 ? (uint64_t)ent[s][k].offsets[0] *
                                                   row
                                             : 0),
                       (size_t)(ent[s][k].end - ent[s][k].begin));
            }
            snprintf(path, sizeof path,
                     "%s/shard-%05d-model-00001-of-00001.safetensors", dir,
                     s + 1);
            T_CHECK(hfdcp_test_write_file(path, file, hlen + at) == 0);
            free(hdr);
            free(file);
        }
    }
    MPI_Barrier(comm);
    hfdcp_reader_free(rd);
    for (size_t i = 0; i < n; i++)
        free(data[i]);
    free(data);
    free(ent[0]);
    free(ent[1]);
    free(box);
    return T_OK;
}

/* Direct save of `model` laid out by `map`. */
static int direct_save(MPI_Comm comm, const char *model, const char *dir,
                       const hfdcp_file_map *map)
{
    hfdcp_reader *rd;
    hfdcp_writer *w;
    hfdcp_save_options so;
    size_t n;
    unsigned char **data;

    T_OKCALL(hfdcp_reader_open(comm, model, NULL, &rd));
    n = hfdcp_reader_count(rd);
    data = calloc(n, sizeof *data);
    T_CHECK(data != NULL);
    hfdcp_save_options_init(&so);
    so.file_map = map;
    /* Compared with the fixture, which Python wrote: no CRC-32C. */
    so.no_checksums = 1;
    T_OKCALL(hfdcp_writer_open(comm, dir, &so, &w));
    for (size_t i = 0; i < n; i++) {
        hfdcp_tensor_info t;
        uint64_t bytes;
        int64_t zero[HFDCP_MAX_NDIM] = {0};
        T_OKCALL(hfdcp_reader_tensor(rd, i, &t));
        T_OKCALL(hfdcp__tensor_bytes(t.dtype, t.ndim, t.shape, "t", &bytes));
        data[i] = malloc(bytes + 1);
        T_CHECK(data[i] != NULL);
        T_OKCALL(hfdcp_reader_add(rd, t.name, t.dtype, t.ndim, zero, t.shape,
                                  data[i]));
        T_OKCALL(hfdcp_writer_add(w, t.name, t.dtype, t.ndim, t.shape, zero,
                                  t.shape, data[i]));
    }
    T_OKCALL(hfdcp_reader_load(rd));
    T_OKCALL(hfdcp_writer_commit(w));
    hfdcp_writer_free(w);
    hfdcp_reader_free(rd);
    for (size_t i = 0; i < n; i++)
        free(data[i]);
    free(data);
    return T_OK;
}

static int same_file(const char *a, const char *b)
{
    size_t la, lb;
    unsigned char *da = hfdcp_test_read_file(a, &la);
    unsigned char *db = hfdcp_test_read_file(b, &lb);
    int same = da && db && la == lb && memcmp(da, db, la) == 0;
    free(da);
    free(db);
    return same;
}

/* `a` has the data of `b` after a header padded to a multiple of `align`
 * (8 + N), and the same JSON before the padding. */
static int same_but_aligned(const char *a, const char *b, uint64_t align)
{
    size_t la, lb;
    unsigned char *da = hfdcp_test_read_file(a, &la);
    unsigned char *db = hfdcp_test_read_file(b, &lb);
    uint64_t na = 0, nb = 0, ja, jb;
    int ok = da && db && la >= 8 && lb >= 8;
    for (int i = 0; ok && i < 8; i++) {
        na |= (uint64_t)da[i] << (8 * i);
        nb |= (uint64_t)db[i] << (8 * i);
    }
    ok = ok && 8 + na <= la && 8 + nb <= lb && (8 + na) % align == 0 &&
         la - na == lb - nb &&
         memcmp(da + 8 + na, db + 8 + nb, la - 8 - na) == 0;
    for (ja = na; ok && ja > 0 && da[8 + ja - 1] == ' '; ja--)
        ;
    for (jb = nb; ok && jb > 0 && db[8 + jb - 1] == ' '; jb--)
        ;
    ok = ok && ja == jb && memcmp(da + 8, db + 8, ja) == 0 && na - ja < align;
    free(da);
    free(db);
    return ok;
}

/* The summary's byte count as the tool prints it: powers of 1000, "%.0f B"
 * below 1000, else "%.2f kB" (MB, GB, ...). */
static void human_bytes(char *buf, size_t size, uint64_t n)
{
    static const char *units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000.0 && u < 5) {
        v /= 1000.0;
        u++;
    }
    snprintf(buf, size, u ? "%.2f %s" : "%.0f %s", v, units[u]);
}

/* --hint: the data aligned to 4 KiB, the rest of each file the same as
 * the reference's.  --progress none: no progress, but the summary counts
 * the bytes written all the same (the tensor bytes of the output), and
 * --buffer-mb 0 is the default, as buffer_bytes 0. */
static int consolidate_aligned_and_quiet(MPI_Comm comm, const char *dir, const char *shards,
                                         const char *ref)
{
    char args[4096], a[1200], b[1200], want[1400], bytes[32];
    char *text = NULL;
    hfdcp__catalog *cat = NULL;

    snprintf(args, sizeof args, "%s %s/aligned --map-from %s --progress none "
             "--buffer-mb 0 --hint hfdcp_data_alignment=4096 "
             "--hint cb_buffer_size=1048576 --no-checksums", shards, dir, ref);
    T_CHECKF(consolidate(2, args, &text) == 0, "%s", text ? text : "");
    snprintf(a, sizeof a, "%s/aligned", dir);
    T_OKCALL(hfdcp__catalog_open(comm, a, NULL, &cat));
    T_CHECK(cat->total_size == 4305); /* the fixture model's */
    human_bytes(bytes, sizeof bytes, cat->total_size);
    hfdcp__catalog_free(cat);
    snprintf(want, sizeof want, "%s/aligned: consolidated %s of tensors from %s in ", dir,
             bytes, shards);
    T_CHECKF(text && strstr(text, want) && strstr(text, "consolidated 0 B") == NULL &&
                 strstr(text, "%") == NULL,
             "want '%s':\n%s", want, text ? text : "");
    free(text);
    for (int i = 1; i <= 6; i++) {
        snprintf(a, sizeof a, "%s/aligned/model-%05d-of-00006.safetensors", dir, i);
        snprintf(b, sizeof b, "%s/model-%05d-of-00006.safetensors", ref, i);
        T_CHECKF(same_but_aligned(a, b, 4096), "%s vs %s", a, b);
    }
    return T_OK;
}

/* Every file of the checkpoint `dir` carries hfdcp_crc32c (`want`) or
 * none; the values themselves are test_consolidate's. */
static int crcs_in(MPI_Comm comm, const char *dir, bool want)
{
    hfdcp__catalog *cat = NULL;

    T_OKCALL(hfdcp__catalog_open(comm, dir, NULL, &cat));
    for (size_t f = 0; f < cat->n_files; f++) {
        uint32_t *v = NULL;
        T_OKCALL(hfdcp__header_crc32c(&cat->files[f].hdr, cat->files[f].path,
                                      &v));
        T_CHECKF((v != NULL) == want, "%s: hfdcp_crc32c %s",
                 cat->files[f].path, want ? "missing" : "present");
        free(v);
    }
    T_CHECK(cat->n_files > 0);
    hfdcp__catalog_free(cat);
    return T_OK;
}

static int consolidate_tool_should_copy_a_reference_layout(MPI_Comm comm,
                                                           const char *dir)
{
    char model[1024], ref[1024], shards[1024], out[1024], direct[1024];
    char args[4096], a[1200], b[1200];
    char *text = NULL;
    hfdcp_file_map *map;

    snprintf(model, sizeof model,
             "%s/SafeTensors.jl/non_sharded/model.safetensors",
             hfdcp_test_fixtures());
    snprintf(ref, sizeof ref, "%s/SafeTensors.jl/sharded",
             hfdcp_test_fixtures());
    snprintf(shards, sizeof shards, "%s/shards", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(direct, sizeof direct, "%s/direct", dir);
    T_CHECK(mkdir(shards, 0777) == 0);
    T_CHECK(write_shards(comm, model, shards) == T_OK);
    T_OKCALL(hfdcp_file_map_from_reference(ref, NULL, &map));
    T_CHECK(direct_save(comm, model, direct, map) == T_OK);
    hfdcp_file_map_free(map);

    snprintf(args, sizeof args, "%s %s --map-from %s --buffer-mb 1 "
             "--no-checksums", shards, out, ref);
    T_CHECKF(consolidate(2, args, &text) == 0, "%s", text ? text : "");
    /* Plain lines: not a terminal.  The last says 100%. */
    T_CHECKF(text && strstr(text, "hfdcp consolidate: 100%") &&
                 strstr(text, " left\n") && strchr(text, '\r') == NULL &&
                 strstr(text, "kB of tensors from"),
             "%s", text ? text : "");
    free(text);
    for (int i = 1; i <= 6; i++) {
        snprintf(a, sizeof a, "%s/model-%05d-of-00006.safetensors", out, i);
        snprintf(b, sizeof b, "%s/model-%05d-of-00006.safetensors", direct, i);
        T_CHECKF(same_file(a, b), "%s", a);
        /* The fixture's file (written by Python's safetensors) too. */
        snprintf(b, sizeof b, "%s/model-%05d-of-00006.safetensors", ref, i);
        T_CHECKF(same_file(a, b), "%s vs %s", a, b);
    }
    snprintf(a, sizeof a, "%s/%s", out, HFDCP_INDEX_NAME);
    snprintf(b, sizeof b, "%s/%s", direct, HFDCP_INDEX_NAME);
    T_CHECK(same_file(a, b));

    T_CHECK(consolidate_aligned_and_quiet(comm, dir, shards, ref) == T_OK);
    T_CHECK(crcs_in(comm, out, false) == T_OK);

    /* The bar, forced (a rank's stderr is a pipe under mpirun), and a cast:
     * every floating-point tensor becomes F32, the others stay. */
    snprintf(args, sizeof args, "%s %s/cast --dtype F32 --progress bar",
             shards, dir);
    T_CHECKF(consolidate(2, args, &text) == 0, "%s", text ? text : "");
    T_CHECKF(text && strstr(text, "\r[###") && strstr(text, "] 100%  "),
             "%s", text ? text : "");
    free(text);
    {
        hfdcp_reader *rd;
        hfdcp_tensor_info t;
        size_t floats = 0, others = 0;
        snprintf(a, sizeof a, "%s/cast", dir);
        T_OKCALL(hfdcp_reader_open(comm, a, NULL, &rd));
        for (size_t i = 0; i < hfdcp_reader_count(rd); i++) {
            T_OKCALL(hfdcp_reader_tensor(rd, i, &t));
            if (t.dtype == HFDCP_F32)
                floats++;
            else
                others++;
            T_CHECKF(t.dtype != HFDCP_F64 && t.dtype != HFDCP_F16 &&
                         t.dtype != HFDCP_BF16,
                     "%s", t.name);
        }
        hfdcp_reader_free(rd);
        T_CHECK(floats > 0 && others > 0);
    }
    T_CHECK(crcs_in(comm, a, true) == T_OK);
    return T_OK;
}

/* A missing or malformed input: exit 1, the library's message once. */
static int consolidate_tool_should_report_invalid_input(MPI_Comm comm,
                                                        const char *dir)
{
    char args[2048];
    char *text = NULL;
    (void)comm;

    /* A missing input: invalid input, exit 1 (as inspect and verify), and
     * the library's message, on rank 0 only. */
    snprintf(args, sizeof args, "%s/nothing %s/out", dir, dir);
    T_CHECK(consolidate(2, args, &text) == 1);
    T_CHECKF(text && strstr(text, "hfdcp consolidate: HFDCP_ERR_NOT_FOUND: ") &&
                 strstr(text, "does not exist") &&
                 strstr(strstr(text, "does not exist") + 1,
                        "HFDCP_ERR_NOT_FOUND") == NULL,
             "%s", text ? text : "");
    free(text);
    /* A malformed shard file: exit 1 too, the message once. */
    {
        char bad[1200], path[1400];
        snprintf(bad, sizeof bad, "%s/bad", dir);
        T_CHECK(mkdir(bad, 0777) == 0);
        snprintf(path, sizeof path, "%s/shard-00001-model-00001-of-00001.safetensors", bad);
        T_CHECK(hfdcp_test_write_file(path, "\x02\0\0\0\0\0\0\0[]", 10) == 0);
        snprintf(args, sizeof args, "%s %s/out", bad, dir);
        T_CHECK(consolidate(2, args, &text) == 1);
        T_CHECKF(text && strstr(text, "hfdcp consolidate: HFDCP_ERR_FORMAT: ") &&
                     strstr(text, "shard-00001-model-00001-of-00001.safetensors") &&
                     strstr(strstr(text, "HFDCP_ERR_FORMAT") + 1, "HFDCP_ERR_FORMAT") == NULL,
                 "%s", text ? text : "");
        free(text);
    }
    return T_OK;
}

/* Bad command lines: exit 2, the reason naming the option and the value
 * first, then the usage; a value the library refuses (a hint) exits 2 too. */
static int consolidate_tool_should_refuse_bad_command_lines(MPI_Comm comm, const char *dir)
{
    char args[2048];
    char *text = NULL;
    (void)comm;

    T_CHECK(consolidate(0, "onlyone", &text) == 2);
    T_CHECKF(text && strstr(text, "hfdcp consolidate: missing OUT\nusage: hfdcp "
                                  "consolidate IN OUT"), "%s", text ? text : "");
    free(text);
    static const struct {
        const char *arg, *reason;
    } bad[] = {
        {"--dtype i8", "--dtype 'i8': expected bf16, f16, f32 or f64, the dtypes a cast "
                       "accepts (it converts the floating-point tensors; integer, BOOL "
                       "and FP8 tensors are copied unchanged)\n"},
        {"--dtype i32", "--dtype 'i32': expected bf16, f16, f32 or f64"},
        {"--dtype", "--dtype needs a value: bf16, f16, f32 or f64"},
        {"--buffer-mb -1", "--buffer-mb '-1': expected MiB from 0 (the default, 32 MiB) "
                           "to 1073741824\n"},
        {"--buffer-mb 1073741825", "--buffer-mb '1073741825': expected MiB from 0"},
        {"--buffer-mb 1M", "--buffer-mb '1M': expected MiB from 0"},
        {"--threads 2000", "--threads '2000': expected a thread count from 0 to 1024\n"},
        {"--progress sometimes", "--progress 'sometimes': expected auto, bar, lines or "
                                 "none\n"},
        {"--hint novalue", "--hint 'novalue': expected KEY=VALUE, an MPI-IO hint\n"},
        {"--hint", "--hint needs a value: KEY=VALUE, an MPI-IO hint\n"},
        {"--map-from", "--map-from needs a value: a reference model's directory\n"},
        {"extra", "unexpected argument 'extra'"},
        {"--bogus", "unknown option '--bogus'\n"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char want[512];
        snprintf(args, sizeof args, "%s %s/out %s", dir, dir, bad[i].arg);
        T_CHECKF(consolidate(0, args, &text) == 2, "%s", bad[i].arg);
        snprintf(want, sizeof want, "hfdcp consolidate: %s", bad[i].reason);
        T_CHECKF(text && strstr(text, want) &&
                     strstr(strstr(text, want), "\nusage: hfdcp consolidate IN OUT"),
                 "%s:\n%s", bad[i].arg, text ? text : "");
        free(text);
    }
    /* Under mpirun, rank 0 alone prints: the reason once, every rank
     * exiting 2. */
    snprintf(args, sizeof args, "%s %s/out --dtype i8", dir, dir);
    T_CHECK(consolidate(2, args, &text) == 2);
    T_CHECKF(text && strstr(text, "hfdcp consolidate: --dtype 'i8': ") &&
                 strstr(strstr(text, "--dtype 'i8'") + 1, "--dtype 'i8'") == NULL &&
                 strstr(strstr(text, "usage: hfdcp") + 1, "usage: hfdcp") == NULL,
             "%s", text ? text : "");
    free(text);
    /* A bad value of hfdcp's own hint: the library refuses it, a bad
     * command line too (HFDCP_ERR_ARG: exit 2), its message once. */
    snprintf(args, sizeof args, "%s %s/out --hint hfdcp_data_alignment=3",
             dir, dir);
    T_CHECK(consolidate(2, args, &text) == 2);
    T_CHECKF(text && strstr(text, "hfdcp consolidate: HFDCP_ERR_ARG: ") &&
                 strstr(text, "hfdcp_consolidate: hint hfdcp_data_alignment=3: "
                              "expected a power of two from 8 to 16777216") &&
                 strstr(strstr(text, "HFDCP_ERR_ARG") + 1, "HFDCP_ERR_ARG") == NULL,
             "%s", text ? text : "");
    free(text);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"consolidate_tool_should_copy_a_reference_layout",
     consolidate_tool_should_copy_a_reference_layout, 1},
    {"consolidate_tool_should_report_invalid_input",
     consolidate_tool_should_report_invalid_input, 1},
    {"consolidate_tool_should_refuse_bad_command_lines",
     consolidate_tool_should_refuse_bad_command_lines, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
