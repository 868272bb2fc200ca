/*
 * version.c - hfdcp_version(): the version of the library actually linked,
 * built from the macros of the header it was compiled with.
 */
#include "hfdcp_internal.h"

#define HFDCP_STR_(x) #x
#define HFDCP_STR(x) HFDCP_STR_(x)

const char *hfdcp_version(void)
{
    return HFDCP_STR(HFDCP_VERSION_MAJOR) "." HFDCP_STR(
        HFDCP_VERSION_MINOR) "." HFDCP_STR(HFDCP_VERSION_PATCH);
}
