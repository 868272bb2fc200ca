// ranks: 1
// timeout: 60
/*
 * test_version.c - one version everywhere: the HFDCP_VERSION_* macros of
 * the header, hfdcp_version() of the linked library, the project version
 * CMake read from the header (passed in as HFDCP_PROJECT_VERSION), the
 * generated pkg-config and CMake package files, and `hfdcp --version`.
 */
#include "harness.h"

#ifndef HFDCP_PROJECT_VERSION
#error "mpi_tests/CMakeLists.txt passes HFDCP_PROJECT_VERSION"
#endif

static int version_should_agree_with_the_macros(MPI_Comm comm, const char *dir)
{
    char want[64];
    (void)comm;
    (void)dir;
    snprintf(want, sizeof want, "%d.%d.%d", HFDCP_VERSION_MAJOR,
             HFDCP_VERSION_MINOR, HFDCP_VERSION_PATCH);
    T_CHECK(hfdcp_version() != NULL);
    T_CHECKF(strcmp(hfdcp_version(), want) == 0, "hfdcp_version() \"%s\", macros \"%s\"",
             hfdcp_version(), want);
    T_CHECKF(strcmp(HFDCP_PROJECT_VERSION, want) == 0, "CMake \"%s\", macros \"%s\"",
             HFDCP_PROJECT_VERSION, want);
    T_CHECK(HFDCP_VERSION_NUMBER == HFDCP_VERSION_MAJOR * 10000 +
                                        HFDCP_VERSION_MINOR * 100 + HFDCP_VERSION_PATCH);
    T_CHECK(HFDCP_VERSION_MINOR < 100 && HFDCP_VERSION_PATCH < 100);
    /* The same pointer every call: a static string, never freed. */
    T_CHECK(hfdcp_version() == hfdcp_version());
    return T_OK;
}

/* Returns 1 if the file at `path` contains `needle`. */
static int file_contains(const char *path, const char *needle)
{
    size_t len = 0;
    unsigned char *b = hfdcp_test_read_file(path, &len);
    if (b == NULL)
        return 0;
    char *s = malloc(len + 1);
    int found = 0;
    if (s) {
        memcpy(s, b, len);
        s[len] = '\0';
        found = strstr(s, needle) != NULL;
    }
    free(s);
    free(b);
    return found;
}

static int version_should_reach_the_package_files(MPI_Comm comm, const char *dir)
{
    char path[4096], needle[128];
    (void)comm;
    (void)dir;
    snprintf(path, sizeof path, "%s/hfdcp.pc", HFDCP_BUILD_DIR);
    snprintf(needle, sizeof needle, "\nVersion: %s\n", hfdcp_version());
    T_CHECKF(file_contains(path, needle), "%s lacks \"Version: %s\"", path, hfdcp_version());
    snprintf(path, sizeof path, "%s/hfdcpConfigVersion.cmake", HFDCP_BUILD_DIR);
    snprintf(needle, sizeof needle, "set(PACKAGE_VERSION \"%s\")", hfdcp_version());
    T_CHECKF(file_contains(path, needle), "%s lacks %s", path, needle);
    return T_OK;
}

static int version_should_be_printed_by_the_tool(MPI_Comm comm, const char *dir)
{
    char cmd[4096], want[64];
    char *out = NULL;
    (void)comm;
    (void)dir;
    snprintf(want, sizeof want, "hfdcp %s\n", hfdcp_version());
    static const char *spellings[] = {"--version", "version"};
    for (size_t i = 0; i < 2; i++) {
        /* Handled before MPI_Init: no launcher is involved. */
        snprintf(cmd, sizeof cmd, "%s %s 2>&1", hfdcp_test_singleton_tool(), spellings[i]);
        T_CHECKF(hfdcp_test_run(cmd, &out) == 0, "%s", spellings[i]);
        T_CHECKF(out && strcmp(out, want) == 0, "%s printed \"%s\"", spellings[i],
                 out ? out : "");
        free(out);
        out = NULL;
    }
    snprintf(cmd, sizeof cmd, "%s version extra 2>&1", hfdcp_test_singleton_tool());
    T_CHECK(hfdcp_test_run(cmd, &out) == 2);
    T_CHECKF(out && strstr(out, "takes no arguments"), "%s", out ? out : "");
    free(out);
    return T_OK;
}

static const hfdcp_test_case cases[] = {
    {"version_should_agree_with_the_macros", version_should_agree_with_the_macros, 1},
    {"version_should_reach_the_package_files", version_should_reach_the_package_files, 1},
    {"version_should_be_printed_by_the_tool", version_should_be_printed_by_the_tool, 1},
};

int main(int argc, char **argv)
{
    return HFDCP_TEST_MAIN(argc, argv, cases);
}
