// ranks: 1 2 3 4
// timeout: 900
/*
 * test_checksums.c - the per-tensor CRC-32C (hfdcp_crc32c) catches damaged
 * data: `hfdcp verify --data` (the tool at as many ranks as the test) and
 * checked loads (hint hfdcp_verify_checksums=enable) both fail, on every
 * rank, naming the tensor, for
 *   - a flipped byte in the data of a tensor of every dtype (sub-byte F4
 *     and F6 and BOOL included),
 *   - a file cut short with a consistent header (K bytes removed at the
 *     end of the data, K spaces of header padding added: the sizes agree,
 *     the data is shifted),
 *   - two tensors of the same shape whose bytes are swapped,
 * in a direct save, a sharded save and its consolidation.  A clean
 * checkpoint passes; files without checksums pass with a note; copies
 * of one chunk in several shard files must hold the same bytes; a load
 * whose ranks read overlapping parts checks nothing (docs/api.md).
 *
 * Every file checked comes from the library's own writers, which must
 * have written hfdcp_crc32c (require_crcs).  The damage is done by rank 0
 * on a copy of the saved checkpoint.  The tool runs on rank 0 under its
 * own launcher while the others wait.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

/* Every tensor is ROWS x COLS: 12 rows split over 1 to 4 ranks, and 48
 * columns whose quarter, third and half are whole bytes of F4 and F6. */
#define ROWS 12
#define COLS 48
#define N_TENSORS (HFDCP_DTYPE_COUNT + 2)
#define SWAP_A (HFDCP_DTYPE_COUNT)     /* "swap.a", F32 */
#define SWAP_B (HFDCP_DTYPE_COUNT + 1) /* "swap.b", F32 */

enum { DIRECT, SHARDED, CONSOLIDATED };
static const char *const kind_names[] = {"direct", "sharded", "consolidated"};

static const int64_t shape[2] = {ROWS, COLS};

/* Tensor i: "t.<DTYPE>" for each dtype, then "swap.a" and "swap.b". */
static void tensor_name(int i, char *buf, size_t size)
{
    if (i < HFDCP_DTYPE_COUNT)
        snprintf(buf, size, "t.%s", hfdcp_dtype_name((hfdcp_dtype)i));
    else
        snprintf(buf, size, "swap.%c", i == SWAP_A ? 'a' : 'b');
}

static hfdcp_dtype tensor_dtype(int i)
{
    return i < HFDCP_DTYPE_COUNT ? (hfdcp_dtype)i : HFDCP_F32;
}

static uint64_t row_bytes(int i)
{
    return (uint64_t)COLS * (uint64_t)hfdcp_dtype_bits(tensor_dtype(i)) / 8;
}

/* ------------------------------------------------------------------------
 * Saves
 * ---------------------------------------------------------------------- */

/* Saves every tensor, each rank its block of rows, into `path` (for
 * CONSOLIDATED, shard files into `path` and the consolidation into
 * `path`/../cons).  Agreed. */
static int save(MPI_Comm comm, const char *path, int kind, bool no_checksums)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    hfdcp_save_options o;
    hfdcp_writer *w = NULL;
    uint8_t *bufs[N_TENSORS] = {0};
    char *cons = hfdcp__asprintf("%s/../cons", path);
    int64_t lo, len;

    hfdcp_save_options_init(&o);
    o.save_sharded = kind != DIRECT;
    o.consolidated_output_path = kind == CONSOLIDATED ? cons : NULL;
    o.no_checksums = no_checksums;
    T_OKCALL(hfdcp_writer_open(comm, path, &o, &w));
    hfdcp_test_part(ROWS, rank, P, &lo, &len);
    for (int i = 0; i < N_TENSORS; i++) {
        char name[32];
        uint64_t at = (uint64_t)lo * row_bytes(i), n = (uint64_t)len * row_bytes(i);
        int64_t off[2] = {lo, 0}, size[2] = {len, COLS};
        tensor_name(i, name, sizeof name);
        bufs[i] = malloc(n + 1);
        for (uint64_t b = 0; b < n; b++)
            bufs[i][b] = hfdcp_test_byte_at(hfdcp_test_seed_of(name), at + b);
        T_OKCALL(hfdcp_writer_add(w, name, tensor_dtype(i), 2, shape, off, size, bufs[i]));
    }
    int rc = hfdcp_writer_commit(w);
    hfdcp_writer_free(w);
    for (int i = 0; i < N_TENSORS; i++)
        free(bufs[i]);
    free(cons);
    T_CHECK(hfdcp_test_agreed_ok(comm, rc, "commit"));
    return T_OK;
}

/* ------------------------------------------------------------------------
 * Files (rank 0)
 * ---------------------------------------------------------------------- */

/* A safetensors file in memory, its header parsed. */
typedef struct {
    unsigned char *b;
    size_t len;
    uint64_t n; /* header JSON bytes */
    hfdcp__header h;
} sfile;

static int sfile_read(const char *path, sfile *f)
{
    memset(f, 0, sizeof *f);
    f->b = hfdcp_test_read_file(path, &f->len);
    T_CHECKF(f->b != NULL && f->len >= 8, "cannot read %s", path);
    T_OKCALL(hfdcp__header_len(f->b, f->len, path, &f->n));
    T_OKCALL(hfdcp__header_parse((const char *)f->b + 8, f->n, f->len, path, &f->h));
    return T_OK;
}

static void sfile_free(sfile *f)
{
    hfdcp__header_free(&f->h);
    free(f->b);
}

static unsigned char *entry_data(sfile *f, size_t e)
{
    return f->b + 8 + f->n + f->h.entries[e].begin;
}

/* The .safetensors files of `dir`, sorted; *n of them. */
static int list_files(const char *dir, char **names, size_t max, size_t *n)
{
    char *all[64];
    size_t k = 0, m = 0;
    T_CHECK(hfdcp_test_list_dir(dir, all, 64, &m) == 0);
    for (size_t i = 0; i < m; i++) {
        size_t l = strlen(all[i]);
        if (l > 12 && strcmp(all[i] + l - 12, ".safetensors") == 0 && k < max)
            names[k++] = hfdcp__path_join(dir, all[i]);
    }
    hfdcp_test_free_names(all, m);
    *n = k;
    return T_OK;
}

/* Every .safetensors file of `dir` carries hfdcp_crc32c, as every
 * writer of hfdcp writes it. */
static int require_crcs(const char *dir)
{
    char *names[64];
    size_t n = 0;
    int bad = 0;
    T_CHECK(list_files(dir, names, 64, &n) == T_OK && n > 0);
    for (size_t i = 0; i < n; i++) {
        sfile f;
        uint32_t *crcs = NULL;
        bad += sfile_read(names[i], &f);
        if (bad == 0 && (hfdcp__header_crc32c(&f.h, names[i], &crcs) != HFDCP_OK ||
                         crcs == NULL))
            bad += hfdcp_test_fail(__FILE__, __LINE__, "%s: no " HFDCP_CRC32C_KEY, names[i]);
        free(crcs);
        sfile_free(&f);
        free(names[i]);
    }
    return bad ? 1 : T_OK;
}

static int copy_dir(const char *src, const char *dst)
{
    char *names[64];
    size_t n = 0, len;
    T_CHECK(mkdir(dst, 0755) == 0);
    T_CHECK(hfdcp_test_list_dir(src, names, 64, &n) == 0);
    for (size_t i = 0; i < n; i++) {
        char *a = hfdcp__path_join(src, names[i]), *b = hfdcp__path_join(dst, names[i]);
        unsigned char *data = hfdcp_test_read_file(a, &len);
        T_CHECKF(data != NULL && hfdcp_test_write_file(b, data, len) == 0, "%s", a);
        free(data);
        free(a);
        free(b);
    }
    hfdcp_test_free_names(names, n);
    return T_OK;
}

/* The damages, each on every .safetensors file of a directory. */
enum { FLIP, TRUNCATE, SWAP };
static const char *const damage_names[] = {"flip", "truncate", "swap"};

/* FLIP: one bit of the middle byte of every chunk of every "t.*"
 * tensor. */
static void flip(sfile *f)
{
    for (size_t e = 0; e < f->h.n_entries; e++) {
        const hfdcp__entry *en = &f->h.entries[e];
        if (strncmp(en->name, "t.", 2) == 0 && en->end > en->begin)
            entry_data(f, e)[(en->end - en->begin) / 2] ^= 1;
    }
}

/* SWAP: the bytes of swap.a and swap.b, where a file holds both. */
static void swap(sfile *f)
{
    size_t a = SIZE_MAX, b = SIZE_MAX;
    for (size_t e = 0; e < f->h.n_entries; e++) {
        if (strcmp(f->h.entries[e].name, "swap.a") == 0)
            a = e;
        if (strcmp(f->h.entries[e].name, "swap.b") == 0)
            b = e;
    }
    if (a == SIZE_MAX || b == SIZE_MAX)
        return;
    uint64_t len = f->h.entries[a].end - f->h.entries[a].begin;
    for (uint64_t k = 0; k < len; k++) {
        unsigned char t = entry_data(f, a)[k];
        entry_data(f, a)[k] = entry_data(f, b)[k];
        entry_data(f, b)[k] = t;
    }
}

/* TRUNCATE: the last K bytes of the data removed and K spaces added
 * after the header, as padding would be, the 8-byte length kept: the
 * sizes agree (the structure is valid), the data is shifted by K.  The
 * first tensor of the data is damaged: its name into `first`. */
#define K 8
static int truncate_file(const char *path, sfile *f, char *first, size_t size)
{
    uint64_t data = f->len - 8 - f->n, n = f->n;
    FILE *fp = fopen(path, "wb");
    unsigned char prefix[8];

    for (size_t e = 0; e < f->h.n_entries && first[0] == '\0'; e++)
        if (f->h.entries[e].end > f->h.entries[e].begin)
            snprintf(first, size, "%s", f->h.entries[e].name);
    for (int k = 0; k < 8; k++)
        prefix[k] = (unsigned char)(n >> (8 * k));
    T_CHECK(fp != NULL && data >= K);
    T_CHECK(fwrite(prefix, 1, 8, fp) == 8 && fwrite(f->b + 8, 1, f->n, fp) == f->n);
    T_CHECK(fwrite("        ", 1, K, fp) == K);
    T_CHECK(fwrite(f->b + 8 + f->n, 1, data - K, fp) == data - K);
    T_CHECK(fclose(fp) == 0);
    return T_OK;
}

/* Applies `damage` to the files of `dir` (TRUNCATE: to its first file
 * only, `first` getting the first tensor of its data). */
static int damage_dir(const char *dir, int damage, char *first, size_t size)
{
    char *names[64];
    size_t n = 0;
    int bad = 0;

    first[0] = '\0';
    T_CHECK(list_files(dir, names, 64, &n) == T_OK && n > 0);
    for (size_t i = 0; i < n; i++) {
        sfile f;
        bad += sfile_read(names[i], &f);
        if (bad == 0 && damage == TRUNCATE && i == 0)
            bad += truncate_file(names[i], &f, first, size);
        else if (bad == 0 && damage != TRUNCATE) {
            (damage == FLIP ? flip : swap)(&f);
            bad += hfdcp_test_write_file(names[i], f.b, f.len) != 0;
        }
        sfile_free(&f);
        free(names[i]);
    }
    return bad ? 1 : T_OK;
}

/* ------------------------------------------------------------------------
 * Checkpoints to check
 * ---------------------------------------------------------------------- */

/* Collective: saves the model as `kind` under `dir`/<kind> (shard files
 * in ckpt, the consolidation in cons) and gives the checkpoint to check
 * in `path`: with `damage` >= 0, a copy damaged so (TRUNCATE: `first`
 * the tensor first damaged).  Agreed. */
static int prepare(MPI_Comm comm, const char *dir, int kind, int damage, char *path,
                   size_t size, char *first, size_t first_size)
{
    char base[512], src[600];
    int ok = T_OK;

    snprintf(base, sizeof base, "%s/%s", dir, kind_names[kind]);
    snprintf(src, sizeof src, "%s/%s", base, kind == CONSOLIDATED ? "cons" : "ckpt");
    snprintf(path, size, "%s-%s", src, damage >= 0 ? damage_names[damage] : "clean");
    int exists = access(src, F_OK) == 0;
    MPI_Bcast(&exists, 1, MPI_INT, 0, comm);
    if (!exists) {
        char ckpt[600];
        snprintf(ckpt, sizeof ckpt, "%s/ckpt", base);
        T_CHECK(save(comm, ckpt, kind, false) == T_OK);
    }
    first[0] = '\0';
    if (hfdcp_test_comm_rank(comm) == 0) {
        ok = require_crcs(src) == T_OK && copy_dir(src, path) == T_OK &&
             (damage < 0 || damage_dir(path, damage, first, first_size) == T_OK) ? T_OK : 1;
    }
    MPI_Bcast(first, (int)first_size, MPI_CHAR, 0, comm);
    T_CHECK(hfdcp_test_all_ok(comm, ok == T_OK));
    return T_OK;
}

/* ------------------------------------------------------------------------
 * The tool and checked loads
 * ---------------------------------------------------------------------- */

/* Rank 0: `hfdcp verify --data PATH` on `np` ranks; its exit status,
 * stdout and stderr in *out. */
static int verify_data(int np, const char *path, char **out)
{
    char cmd[4096];
    hfdcp_test_scrub_launcher();
    snprintf(cmd, sizeof cmd, "%s %s verify --data '%s' 2>&1", hfdcp_test_launcher(np),
             hfdcp_test_tool(), path);
    return hfdcp_test_run(cmd, out);
}

/* How many times `needle` occurs in `hay`. */
static int occurrences(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Each rank's box of a tensor in a load: the whole tensor, its block of
 * rows or of columns, or its block of rows and the next rank's first row
 * (OVERLAP: the ranks' boxes overlap). */
enum { WHOLE, BY_ROWS, BY_COLS, OVERLAP };
static const char *const how_names[] = {"whole", "by rows", "by columns", "overlapping"};

static void load_box(int how, int r, int P, int64_t *off, int64_t *size)
{
    off[0] = off[1] = 0;
    size[0] = ROWS;
    size[1] = COLS;
    if (how == BY_ROWS || how == OVERLAP)
        hfdcp_test_part(ROWS, r, P, &off[0], &size[0]);
    if (how == BY_COLS)
        hfdcp_test_part(COLS, r, P, &off[1], &size[1]);
    if (how == OVERLAP && off[0] + size[0] < ROWS)
        size[0]++;
}

/* Collective: loads tensors [i0, i1) of `r` as `how` says (F32 tensors
 * converted to F64, so that the check is seen to run on the file's
 * bytes); the load's status. */
static int load(MPI_Comm comm, hfdcp_reader *r, int i0, int i1, int how)
{
    int rank = hfdcp_test_comm_rank(comm), P = hfdcp_test_comm_size(comm);
    void *bufs[N_TENSORS] = {0};

    for (int i = i0; i < i1; i++) {
        char name[32];
        int64_t off[2], size[2];
        hfdcp_dtype dt = tensor_dtype(i) == HFDCP_F32 ? HFDCP_F64 : tensor_dtype(i);
        tensor_name(i, name, sizeof name);
        load_box(how, rank, P, off, size);
        bufs[i] = malloc((size_t)(size[0] * size[1]) * 8 + 1);
        hfdcp_reader_add(r, name, dt, 2, off, size, bufs[i]);
    }
    int rc = hfdcp_reader_load(r);
    for (int i = i0; i < i1; i++)
        free(bufs[i]);
    return rc;
}

/* Collective: a reader of `path` with hfdcp_verify_checksums=`value`. */
static int open_checked(MPI_Comm comm, const char *path, const char *value,
                        hfdcp_reader **r)
{
    hfdcp_load_options o;
    int rc;
    hfdcp_load_options_init(&o);
    MPI_Info_create(&o.info);
    MPI_Info_set(o.info, "hfdcp_verify_checksums", value);
    rc = hfdcp_reader_open(comm, path, &o, r);
    MPI_Info_free(&o.info);
    return rc;
}

/* Rank 0: the tool's verdict on a damaged checkpoint: exit 1, "data not
 * valid", every name of `names` in a problem line, each problem once. */
static int tool_catches(int np, const char *path, const char *const *names, size_t n)
{
    char *out = NULL, want[64];
    int st = verify_data(np, path, &out);

    T_CHECKF(st == 1 && out && strstr(out, "data not valid"), "%s at %d ranks: exit %d:\n%s",
             path, np, st, out ? out : "");
    for (size_t i = 0; i < n; i++) {
        snprintf(want, sizeof want, "HFDCP_ERR_FORMAT: '%s/", path);
        T_CHECKF(strstr(out, want) != NULL, "%s: no problem line:\n%s", path, out);
        snprintf(want, sizeof want, "tensor '%s', bytes [", names[i]);
        T_CHECKF(occurrences(out, want) >= 1, "%s: %s not named:\n%s", path, names[i], out);
    }
    T_CHECKF(occurrences(out, "hfdcp verify:") == 1, "%s: printed twice:\n%s", path, out);
    free(out);
    return T_OK;
}

/* Collective: a checked load of tensors [i0, i1), as `how`, fails with
 * HFDCP_ERR_FORMAT on every rank, the same message naming tensor `name`
 * and a byte range. */
static int load_catches(MPI_Comm comm, hfdcp_reader *r, int i0, int i1, int how,
                        const char *name)
{
    char what[128], want[64];
    snprintf(what, sizeof what, "checked load %s of %s", how_names[how], name);
    snprintf(want, sizeof want, "tensor '%s', bytes [", name);
    return hfdcp_test_agreed_failure(comm, what, load(comm, r, i0, i1, how),
                                     HFDCP_ERR_FORMAT, want, "CRC-32C");
}

/* ---- cases ---- */

static int checksums_should_pass_clean_checkpoints(MPI_Comm comm, const char *dir)
{
    int P = hfdcp_test_comm_size(comm);
    char path[700], first[64];

    for (int kind = DIRECT; kind <= CONSOLIDATED; kind++) {
        hfdcp_reader *r = NULL;
        int ok = T_OK;
        T_CHECK(prepare(comm, dir, kind, -1, path, sizeof path, first, sizeof first) == T_OK);
        if (hfdcp_test_comm_rank(comm) == 0) {
            char *out = NULL;
            int st = verify_data(P, path, &out);
            ok = st == 0 && out && strstr(out, "data valid") &&
                 !strstr(out, "without checksums") && !strstr(out, " 0 bytes checked") ? T_OK
                 : hfdcp_test_fail(__FILE__, __LINE__, "%s: exit %d:\n%s", path, st,
                                   out ? out : "");
            free(out);
        }
        T_CHECK(hfdcp_test_all_ok(comm, ok == T_OK));
        T_OKCALL(open_checked(comm, path, "enable", &r));
        for (int how = WHOLE; how <= OVERLAP; how++)
            T_CHECKF(hfdcp_test_agreed_ok(comm, load(comm, r, 0, N_TENSORS, how), how_names[how]),
                     "%s", path);
        hfdcp_reader_free(r);
    }
    return T_OK;
}

static int checksums_should_catch_a_flipped_byte_of_every_dtype(MPI_Comm comm,
                                                                 const char *dir)
{
    int P = hfdcp_test_comm_size(comm);
    char path[700], first[64], names[HFDCP_DTYPE_COUNT][32];
    const char *list[HFDCP_DTYPE_COUNT];

    for (int i = 0; i < HFDCP_DTYPE_COUNT; i++) {
        tensor_name(i, names[i], sizeof names[i]);
        list[i] = names[i];
    }
    for (int kind = DIRECT; kind <= CONSOLIDATED; kind++) {
        hfdcp_reader *r = NULL;
        int ok = T_OK;
        T_CHECK(prepare(comm, dir, kind, FLIP, path, sizeof path, first, sizeof first) == T_OK);
        if (hfdcp_test_comm_rank(comm) == 0)
            ok = tool_catches(P, path, list, HFDCP_DTYPE_COUNT);
        T_CHECK(hfdcp_test_all_ok(comm, ok == T_OK));
        T_OKCALL(open_checked(comm, path, "enable", &r));
        for (int i = 0; i < HFDCP_DTYPE_COUNT; i++)
            for (int how = WHOLE; how <= BY_COLS; how++)
                T_CHECKF(load_catches(comm, r, i, i + 1, how, names[i]) == T_OK, "%s", path);
        hfdcp_reader_free(r);
    }
    return T_OK;
}

static int checksums_should_catch_a_file_cut_short(MPI_Comm comm, const char *dir)
{
    int P = hfdcp_test_comm_size(comm);
    char path[700], first[64];

    for (int kind = DIRECT; kind <= CONSOLIDATED; kind++) {
        hfdcp_reader *r = NULL;
        int ok = T_OK;
        T_CHECK(prepare(comm, dir, kind, TRUNCATE, path, sizeof path, first, sizeof first) ==
                T_OK);
        const char *list[1] = {first};
        if (hfdcp_test_comm_rank(comm) == 0)
            ok = tool_catches(P, path, list, 1);
        T_CHECK(hfdcp_test_all_ok(comm, ok == T_OK));
        T_OKCALL(open_checked(comm, path, "enable", &r));
        for (int how = WHOLE; how <= BY_COLS; how++)
            T_CHECKF(load_catches(comm, r, 0, N_TENSORS, how, first) == T_OK, "%s", path);
        hfdcp_reader_free(r);
    }
    return T_OK;
}

static int checksums_should_catch_swapped_tensors(MPI_Comm comm, const char *dir)
{
    int P = hfdcp_test_comm_size(comm);
    char path[700], first[64];
    const char *list[2] = {"swap.a", "swap.b"};

    for (int kind = DIRECT; kind <= CONSOLIDATED; kind++) {
        hfdcp_reader *r = NULL;
        int ok = T_OK;
        T_CHECK(prepare(comm, dir, kind, SWAP, path, sizeof path, first, sizeof first) == T_OK);
        if (hfdcp_test_comm_rank(comm) == 0)
            ok = tool_catches(P, path, list, 2);
        T_CHECK(hfdcp_test_all_ok(comm, ok == T_OK));
        T_OKCALL(open_checked(comm, path, "enable", &r));
        for (int how = WHOLE; how <= BY_COLS; how++) {
            T_CHECK(load_catches(comm, r, SWAP_A, SWAP_A + 1, how, "swap.a") == T_OK);
            T_CHECK(load_catches(comm, r, SWAP_B, SWAP_B + 1, how, "swap.b") == T_OK);
        }
        hfdcp_reader_free(r);
    }
    return T_OK;
}

/* Files written with no_checksums (as by other writers): the tool reads
 * them and says they have none; a checked load checks nothing. */
static int checksums_should_pass_files_without_checksums(MPI_Comm comm, const char *dir)
{
    int P = hfdcp_test_comm_size(comm), ok = T_OK;
    char path[600];
    hfdcp_reader *r = NULL;

    snprintf(path, sizeof path, "%s/plain", dir);
    T_CHECK(save(comm, path, DIRECT, true) == T_OK);
    if (hfdcp_test_comm_rank(comm) == 0) {
        char *out = NULL, want[700];
        int st = verify_data(P, path, &out);
        snprintf(want, sizeof want, "note: '%s/model.safetensors': no checksums "
                 "(" HFDCP_CRC32C_KEY "): its data was read, not checked\n", path);
        ok = st == 0 && out && strstr(out, want) && strstr(out, "data valid") &&
             strstr(out, " 0 bytes checked, 1 file without checksums\n") ? T_OK
             : hfdcp_test_fail(__FILE__, __LINE__, "exit %d:\n%s", st, out ? out : "");
        free(out);
    }
    T_CHECK(hfdcp_test_all_ok(comm, ok == T_OK));
    T_OKCALL(open_checked(comm, path, "enable", &r));
    T_CHECK(hfdcp_test_agreed_ok(comm, load(comm, r, 0, N_TENSORS, BY_COLS), "load"));
    hfdcp_reader_free(r);
    return T_OK;
}

/* Rank 0: a shard file holding tensor "w" (F32, 4 x 4) whole, with its
 * CRC-32C, data bytes from `seed`. */
static int write_shard(const char *path, uint8_t seed)
{
    int64_t shp[2] = {4, 4}, offs[2] = {0, 0};
    unsigned char data[64];
    hfdcp__entry e = {.name = "w", .dtype = HFDCP_F32, .ndim = 2, .shape = shp,
                      .offsets = offs, .begin = 0, .end = sizeof data};
    hfdcp__header h = {.entries = &e, .n_entries = 1, .sharded = true, .crc32c = true};
    char *out = NULL;
    size_t len = 0;

    for (size_t k = 0; k < sizeof data; k++)
        data[k] = (unsigned char)(seed + k);
    e.crc = hfdcp__crc32c(0, data, sizeof data);
    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    FILE *fp = fopen(path, "wb");
    T_CHECK(fp && fwrite(out, 1, len, fp) == len && fwrite(data, 1, 64, fp) == 64);
    T_CHECK(fclose(fp) == 0);
    free(out);
    return T_OK;
}

/* Rank 0: two shard files each holding the same box of "w" whole (a
 * replicated tensor saved by two ranks), each with a right checksum:
 * `hfdcp verify --data` passes when their bytes agree, and names both
 * files when they differ. */
static int replicas(const char *dir, int np)
{
    static const char *const files[] = {"shard-00001-model-00001-of-00001.safetensors",
                                        "shard-00002-model-00001-of-00001.safetensors"};
    char path[600], a[700], b[700], *out = NULL, want[2000];
    int st;

    snprintf(path, sizeof path, "%s/replicas", dir);
    T_CHECK(mkdir(path, 0755) == 0);
    snprintf(a, sizeof a, "%s/%s", path, files[0]);
    snprintf(b, sizeof b, "%s/%s", path, files[1]);
    T_CHECK(write_shard(a, 7) == T_OK && write_shard(b, 7) == T_OK);
    st = verify_data(np, path, &out);
    T_CHECKF(st == 0 && out && strstr(out, "data valid"), "exit %d:\n%s", st, out);
    free(out);
    T_CHECK(write_shard(b, 8) == T_OK);
    st = verify_data(np, path, &out);
    snprintf(want, sizeof want, "HFDCP_ERR_FORMAT: tensor 'w' box [0:4, 0:4]: its copies in "
             "'%s' (bytes [", a);
    T_CHECKF(st == 1 && out && strstr(out, want) && strstr(out, b) &&
                 occurrences(out, "HFDCP_ERR_FORMAT") == 1 &&
                 strstr(out, "data not valid, 1 problem "),
             "exit %d:\n%s", st, out);
    free(out);
    return T_OK;
}

static int checksums_should_catch_replicas_that_differ(MPI_Comm comm, const char *dir)
{
    int ok = hfdcp_test_comm_rank(comm) == 0 ? replicas(dir, hfdcp_test_comm_size(comm)) : T_OK;
    T_CHECK(hfdcp_test_all_ok(comm, ok == T_OK));
    return T_OK;
}

/* Rank 0: a file cut short (its header not fixed) is a problem of the
 * structure, reported as without --data, and no data is read. */
static int structure_first(const char *dir, int np)
{
    char path[600], file[700], *out = NULL;
    unsigned char *b;
    size_t len;
    int st;

    snprintf(path, sizeof path, "%s/cut", dir);
    snprintf(file, sizeof file, "%s/model.safetensors", path);
    T_CHECK(mkdir(path, 0755) == 0 && write_shard(file, 1) == T_OK);
    T_CHECK((b = hfdcp_test_read_file(file, &len)) != NULL);
    T_CHECK(hfdcp_test_write_file(file, b, len - 1) == 0);
    free(b);
    st = verify_data(np, path, &out);
    T_CHECKF(st == 1 && out && strstr(out, "is truncated") && strstr(out, ": not valid, 1 problem") &&
                 !strstr(out, ": data "),
             "exit %d:\n%s", st, out ? out : "");
    free(out);
    return T_OK;
}

static int checksums_should_check_the_structure_first(MPI_Comm comm, const char *dir)
{
    int ok = hfdcp_test_comm_rank(comm) == 0 ? structure_first(dir, hfdcp_test_comm_size(comm))
                                             : T_OK;
    T_CHECK(hfdcp_test_all_ok(comm, ok == T_OK));
    return T_OK;
}

/* Rank 0: model.safetensors in `path` holding "w" (F32, 4 x 4) with the
 * metadata value `crcs` for hfdcp_crc32c. */
static int write_with_crcs(const char *path, const char *crcs)
{
    int64_t shp[2] = {4, 4};
    unsigned char data[64] = {0};
    hfdcp__entry e = {.name = "w", .dtype = HFDCP_F32, .ndim = 2, .shape = shp,
                      .begin = 0, .end = sizeof data};
    hfdcp__kv kv = {.key = HFDCP_CRC32C_KEY, .value = (char *)crcs};
    hfdcp__header h = {.entries = &e, .n_entries = 1, .meta = &kv, .n_meta = 1};
    char file[700], *out = NULL;
    size_t len = 0;

    snprintf(file, sizeof file, "%s/model.safetensors", path);
    T_CHECK(mkdir(path, 0755) == 0);
    T_OKCALL(hfdcp__header_serialize(&h, &out, &len));
    FILE *fp = fopen(file, "wb");
    T_CHECK(fp && fwrite(out, 1, len, fp) == len && fwrite(data, 1, 64, fp) == 64);
    T_CHECK(fclose(fp) == 0);
    free(out);
    return T_OK;
}

/* A malformed hfdcp_crc32c value is not a rule of the structure (no
 * reader but ours uses it): verify passes it, verify --data and a checked
 * load refuse it, naming the file and the key. */
static int checksums_should_refuse_malformed_checksums(MPI_Comm comm, const char *dir)
{
    char path[600], *out = NULL;
    int ok = T_OK, P = hfdcp_test_comm_size(comm);
    hfdcp_reader *r = NULL;
    float w[16];

    snprintf(path, sizeof path, "%s/badcrc", dir);
    if (hfdcp_test_comm_rank(comm) == 0) {
        ok = write_with_crcs(path, "{\"w\":\"12345\"}");
        int st = ok == T_OK ? verify_data(P, path, &out) : -1;
        if (ok == T_OK && !(st == 1 && out && strstr(out, ": valid (1 file") &&
                            strstr(out, "HFDCP_ERR_FORMAT: ") &&
                            strstr(out, HFDCP_CRC32C_KEY) && strstr(out, "data not valid")))
            ok = hfdcp_test_fail(__FILE__, __LINE__, "exit %d:\n%s", st, out ? out : "");
        free(out);
    }
    T_CHECK(hfdcp_test_all_ok(comm, ok == T_OK));
    T_OKCALL(open_checked(comm, path, "enable", &r));
    hfdcp_reader_add(r, "w", HFDCP_F32, 2, (int64_t[]){0, 0}, (int64_t[]){4, 4}, w);
    T_CHECK(hfdcp_test_agreed_failure(comm, "load", hfdcp_reader_load(r), HFDCP_ERR_FORMAT,
                                      HFDCP_CRC32C_KEY, "model.safetensors") == T_OK);
    hfdcp_reader_free(r);
    return T_OK;
}

/* The documented limit: when the ranks' boxes of a tensor overlap in
 * part, neither a rank nor all together read it exactly once, and the
 * load checks nothing of it (overlapping bytes would cancel in the
 * XOR), even when the data is damaged. */
static int checksums_should_not_check_overlapping_partial_reads(MPI_Comm comm,
                                                                 const char *dir)
{
    char path[700], first[64];
    hfdcp_reader *r = NULL;

    T_CHECK(prepare(comm, dir, DIRECT, FLIP, path, sizeof path, first, sizeof first) == T_OK);
    T_OKCALL(open_checked(comm, path, "enable", &r));
    T_CHECK(hfdcp_test_agreed_ok(comm, load(comm, r, 0, N_TENSORS, OVERLAP), "load"));
    T_CHECK(load_catches(comm, r, HFDCP_BOOL, HFDCP_BOOL + 1, WHOLE, "t.BOOL") == T_OK);
    hfdcp_reader_free(r);
    return T_OK;
}

/* The hint's values: enable, disable; anything else is refused at open,
 * on every rank. */
static int checksums_should_refuse_a_bad_hint_value(MPI_Comm comm, const char *dir)
{
    char path[700], first[64];
    hfdcp_reader *r = NULL;

    T_CHECK(prepare(comm, dir, DIRECT, FLIP, path, sizeof path, first, sizeof first) == T_OK);
    T_OKCALL(open_checked(comm, path, "disable", &r));
    T_CHECK(hfdcp_test_agreed_ok(comm, load(comm, r, 0, N_TENSORS, WHOLE), "unchecked load"));
    hfdcp_reader_free(r);
    r = NULL;
    T_CHECK(hfdcp_test_agreed_failure(comm, "open", open_checked(comm, path, "yes", &r),
                                      HFDCP_ERR_ARG, "hint hfdcp_verify_checksums=yes: "
                                      "expected enable or disable", NULL) == T_OK);
    T_CHECK(r == NULL);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"checksums_should_pass_clean_checkpoints", checksums_should_pass_clean_checkpoints, 1},
    {"checksums_should_catch_a_flipped_byte_of_every_dtype",
     checksums_should_catch_a_flipped_byte_of_every_dtype, 1},
    {"checksums_should_catch_a_file_cut_short", checksums_should_catch_a_file_cut_short, 1},
    {"checksums_should_catch_swapped_tensors", checksums_should_catch_swapped_tensors, 1},
    {"checksums_should_pass_files_without_checksums",
     checksums_should_pass_files_without_checksums, 1},
    {"checksums_should_catch_replicas_that_differ",
     checksums_should_catch_replicas_that_differ, 1},
    {"checksums_should_check_the_structure_first", checksums_should_check_the_structure_first,
     1},
    {"checksums_should_refuse_malformed_checksums", checksums_should_refuse_malformed_checksums,
     1},
    {"checksums_should_not_check_overlapping_partial_reads",
     checksums_should_not_check_overlapping_partial_reads, 2},
    {"checksums_should_refuse_a_bad_hint_value", checksums_should_refuse_a_bad_hint_value, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
