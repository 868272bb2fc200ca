// ranks: 1 2 3 4
// timeout: 60
/*
 * test_status.c - status names, dtypes, the thread-local message, and
 * agreement of a status across ranks.
 */
#include <errno.h>

#include "harness.h"

static int status_should_name_every_code(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    T_CHECK(strcmp(hfdcp_status_name(HFDCP_OK), "HFDCP_OK") == 0);
    T_CHECK(strcmp(hfdcp_status_name(HFDCP_ERR_FORMAT), "HFDCP_ERR_FORMAT") == 0);
    T_CHECK(strcmp(hfdcp_status_name(12345), "HFDCP_ERR_UNKNOWN") == 0);
    T_CHECK(strcmp(hfdcp_status_string(HFDCP_ERR_PLAN),
                   "inconsistent save or load plan") == 0);
    /* Codes are distinct and stable. */
    T_CHECK(HFDCP_ERR_ARG == -1 && HFDCP_ERR_INTERNAL == -11);
    return T_OK;
}

static int dtype_should_convert_names_both_ways(MPI_Comm comm, const char *dir)
{
    static const struct { const char *name; int bits; } want[] = {
        {"BOOL", 8}, {"F4", 4}, {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
        {"I8", 8}, {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8},
        {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16}, {"U16", 16},
        {"F16", 16}, {"BF16", 16}, {"I32", 32}, {"U32", 32}, {"F32", 32},
        {"C64", 64}, {"F64", 64}, {"I64", 64}, {"U64", 64},
    };
    (void)comm;
    (void)dir;
    T_CHECK(HFDCP_DTYPE_COUNT == 22);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        hfdcp_dtype d;
        T_OKCALL(hfdcp_dtype_from_name(want[i].name, &d));
        T_CHECKF(strcmp(hfdcp_dtype_name(d), want[i].name) == 0, "%s", want[i].name);
        T_CHECKF(hfdcp_dtype_bits(d) == want[i].bits, "%s", want[i].name);
    }
    hfdcp_dtype d = HFDCP_U8;
    T_STATUS(hfdcp_dtype_from_name("f32", &d), HFDCP_ERR_FORMAT, "unknown dtype \"f32\"");
    T_STATUS(hfdcp_dtype_from_name("", &d), HFDCP_ERR_FORMAT, "unknown dtype");
    T_STATUS(hfdcp_dtype_from_name("F32 ", &d), HFDCP_ERR_FORMAT, "unknown dtype");
    T_CHECK(d == HFDCP_U8);
    T_CHECK(hfdcp_dtype_bits((hfdcp_dtype)99) == 0);
    T_CHECK(hfdcp_dtype_name((hfdcp_dtype)-1) == NULL);
    return T_OK;
}

static int agree_should_give_first_failing_rank_everywhere(MPI_Comm comm, const char *dir)
{
    int rank, size;
    (void)dir;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);

    hfdcp__error_clear();
    T_OKCALL(hfdcp__agree(comm, HFDCP_OK));

    /* The last rank fails with IO, and (when there are 3+ ranks) rank 1
     * fails with FORMAT: rank 1 is first, so FORMAT wins everywhere. */
    int local = HFDCP_OK;
    if (rank == size - 1)
        local = hfdcp__error(HFDCP_ERR_IO, "disk said no on file f");
    if (size >= 3 && rank == 1)
        local = hfdcp__error(HFDCP_ERR_FORMAT, "bad header in file g");
    int got = hfdcp__agree(comm, local);
    if (size >= 3) {
        T_CHECK(got == HFDCP_ERR_FORMAT);
        T_CHECKF(strcmp(hfdcp_last_error(), "rank 1: bad header in file g") == 0,
                 "%s", hfdcp_last_error());
    } else {
        char want[64];
        snprintf(want, sizeof want, "rank %d: disk said no on file f", size - 1);
        T_CHECK(got == HFDCP_ERR_IO);
        T_CHECKF(strcmp(hfdcp_last_error(), want) == 0, "%s", hfdcp_last_error());
    }
    return T_OK;
}

static int error_helpers_should_compose_messages(MPI_Comm comm, const char *dir)
{
    (void)comm;
    (void)dir;
    T_CHECK(hfdcp__os_error(HFDCP_ERR_IO, ENOSPC, "writing '%s'", "a.bin") == HFDCP_ERR_IO);
    T_CHECKF(strcmp(hfdcp_last_error(), "writing 'a.bin': No space left on device") == 0,
             "%s", hfdcp_last_error());
    T_CHECK(hfdcp__error_prefix(HFDCP_ERR_IO, "file %d", 3) == HFDCP_ERR_IO);
    T_CHECK(strncmp(hfdcp_last_error(), "file 3: writing", 15) == 0);
    T_CHECK(hfdcp__mpi_error(MPI_ERR_COUNT, "MPI_Send") == HFDCP_ERR_MPI);
    T_CHECK(strncmp(hfdcp_last_error(), "MPI_Send: ", 10) == 0);
    return T_OK;
}

static int util_should_map_strings_and_pack_messages(MPI_Comm comm, const char *dir)
{
    (void)dir;
    hfdcp__strmap *m = hfdcp__strmap_new();
    char key[32];
    bool existed;
    size_t v;
    T_CHECK(m != NULL);
    for (size_t i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "layer.%zu.weight", i);
        T_OKCALL(hfdcp__strmap_put(m, key, i * 3, &existed));
        T_CHECK(!existed);
    }
    T_OKCALL(hfdcp__strmap_put(m, "layer.7.weight", 1, &existed));
    T_CHECK(existed && hfdcp__strmap_count(m) == 5000);
    T_CHECK(hfdcp__strmap_get(m, "layer.7.weight", &v) && v == 1);
    T_CHECK(hfdcp__strmap_get(m, "layer.4999.weight", &v) && v == 4999 * 3);
    T_CHECK(!hfdcp__strmap_get(m, "layer.5000.weight", &v));
    hfdcp__strmap_free(m);

    hfdcp__buf b;
    hfdcp__buf_init(&b);
    hfdcp__buf_put_str(&b, "hello");
    hfdcp__buf_put_i64(&b, -5);
    T_OKCALL(hfdcp__buf_status(&b));
    int rank;
    MPI_Comm_rank(comm, &rank);
    void *data = b.data;
    size_t len = b.len;
    T_OKCALL(hfdcp__bcast_bytes(comm, 0, &data, &len));
    hfdcp__rbuf r;
    char *s = NULL;
    int64_t x = 0;
    hfdcp__rbuf_init(&r, data, len);
    T_CHECK(hfdcp__rbuf_get_str(&r, &s) && strcmp(s, "hello") == 0);
    T_CHECK(hfdcp__rbuf_get_i64(&r, &x) && x == -5);
    T_CHECK(!hfdcp__rbuf_get_i64(&r, &x) && r.bad);
    free(s);
    if (rank != 0)
        free(data);
    hfdcp__buf_free(&b);

    uint64_t bytes;
    int64_t shape[2] = {3, 5};
    T_OKCALL(hfdcp__tensor_bytes(HFDCP_BF16, 2, shape, "t", &bytes));
    T_CHECK(bytes == 30);
    T_STATUS(hfdcp__tensor_bytes(HFDCP_F4, 2, shape, "tensor 'q'", &bytes),
             HFDCP_ERR_FORMAT, "tensor 'q'");
    int64_t huge[3] = {INT64_MAX, 4, 2};
    T_STATUS(hfdcp__tensor_bytes(HFDCP_F32, 3, huge, "t", &bytes), HFDCP_ERR_RANGE,
             "overflows");
    T_OKCALL(hfdcp__tensor_bytes(HFDCP_F64, 0, NULL, "scalar", &bytes));
    T_CHECK(bytes == 8);

    char box[64];
    int64_t off[2] = {2, 0}, sz[2] = {3, 4};
    hfdcp__format_box(box, sizeof box, 2, off, sz);
    T_CHECKF(strcmp(box, "[2:5, 0:4]") == 0, "%s", box);
    return T_OK;
}

/* hfdcp__allreduce_u64: the unsigned MIN and MAX the library agrees with
 * (the first failing file, the extent of a transfer), at values where a
 * signed comparison differs: 0 against UINT64_MAX and 2^63, 2^63 - 1
 * against 2^63.  MPICH 4.0.2's own MPI_UINT64_T reductions fail this. */
static int util_should_reduce_unsigned_extremes(MPI_Comm comm, const char *dir)
{
    enum { N = 20 }; /* more than one chunk of the helper */
    const uint64_t top = (uint64_t)1 << 63;
    const uint64_t pool[] = {0, 1, top - 1, top, top + 1, UINT64_MAX - 1, UINT64_MAX};
    const size_t npool = sizeof pool / sizeof pool[0];
    uint64_t mine[N], lo[N], hi[N], want_lo[N], want_hi[N];
    int rank, size;
    (void)dir;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    for (int i = 0; i < N; i++) {
        mine[i] = pool[((size_t)i * 3 + (size_t)rank * 5) % npool];
        want_lo[i] = UINT64_MAX;
        want_hi[i] = 0;
        for (int r = 0; r < size; r++) {
            uint64_t v = pool[((size_t)i * 3 + (size_t)r * 5) % npool];
            want_lo[i] = v < want_lo[i] ? v : want_lo[i];
            want_hi[i] = v > want_hi[i] ? v : want_hi[i];
        }
    }
    T_CHECK(hfdcp__allreduce_u64(mine, lo, N, MPI_MIN, comm) == MPI_SUCCESS);
    T_CHECK(hfdcp__allreduce_u64(mine, hi, N, MPI_MAX, comm) == MPI_SUCCESS);
    for (int i = 0; i < N; i++)
        T_CHECKF(lo[i] == want_lo[i] && hi[i] == want_hi[i],
                 "value %d: min %llu max %llu, wanted %llu and %llu", i,
                 (unsigned long long)lo[i], (unsigned long long)hi[i],
                 (unsigned long long)want_lo[i], (unsigned long long)want_hi[i]);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"status_should_name_every_code", status_should_name_every_code, 1},
    {"dtype_should_convert_names_both_ways", dtype_should_convert_names_both_ways, 1},
    {"agree_should_give_first_failing_rank_everywhere", agree_should_give_first_failing_rank_everywhere, 1},
    {"error_helpers_should_compose_messages", error_helpers_should_compose_messages, 1},
    {"util_should_map_strings_and_pack_messages", util_should_map_strings_and_pack_messages, 1},
    {"util_should_reduce_unsigned_extremes", util_should_reduce_unsigned_extremes, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
