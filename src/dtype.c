/*
 * dtype.c - the 22 element types of the safetensors format: bits and names.
 */
#include <string.h>

#include "hfdcp_internal.h"

static const struct {
    const char *name;
    int bits;
} dtypes[HFDCP_DTYPE_COUNT] = {
#define HFDCP_X_ROW(sym, name, bits) {name, bits},
    HFDCP_DTYPE_MAP(HFDCP_X_ROW)
#undef HFDCP_X_ROW
};

static bool valid(hfdcp_dtype d)
{
    return (int)d >= 0 && (int)d < HFDCP_DTYPE_COUNT;
}

int hfdcp_dtype_bits(hfdcp_dtype dtype)
{
    return valid(dtype) ? dtypes[dtype].bits : 0;
}

const char *hfdcp_dtype_name(hfdcp_dtype dtype)
{
    return valid(dtype) ? dtypes[dtype].name : NULL;
}

int hfdcp_dtype_from_name(const char *name, hfdcp_dtype *out)
{
    if (name == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "dtype name is NULL");
    for (int i = 0; i < HFDCP_DTYPE_COUNT; i++) {
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (hfdcp_dtype)i;
            return HFDCP_OK;
        }
    }
    return hfdcp__error(HFDCP_ERR_FORMAT, "unknown dtype \"%.64s\"", name);
}
