/*
 * filemap.c - the public file map: tensor name -> 1-based output file
 * index (model-0000i-of-0000N.safetensors).  Entries live in arrays in
 * insertion order, found through a hash map, so that the writer can copy
 * the map it was given.
 */
#include <stdlib.h>

#include "hfdcp_internal.h"

struct hfdcp_file_map_s {
    hfdcp__strmap *slots; /* name -> index in names/indices */
    char **names;
    int *indices;
    size_t n, cap;
};

int hfdcp_file_map_create(hfdcp_file_map **out)
{
    hfdcp_file_map *m;

    if (out == NULL)
        return hfdcp__error(HFDCP_ERR_ARG, "hfdcp_file_map_create: out is NULL");
    if ((m = calloc(1, sizeof *m)) == NULL ||
        (m->slots = hfdcp__strmap_new()) == NULL) {
        free(m);
        return hfdcp__nomem("a file map");
    }
    *out = m;
    return HFDCP_OK;
}

int hfdcp_file_map_set(hfdcp_file_map *m, const char *name, int file_index)
{
    size_t slot;
    char *copy;

    if (m == NULL || name == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_file_map_set: %s is NULL",
                            m == NULL ? "the map" : "the tensor name");
    if (file_index < 1)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_file_map_set: file index %d for tensor "
                            "'%s' is not >= 1 (file indices are 1-based)",
                            file_index, name);
    if (hfdcp__strmap_get(m->slots, name, &slot)) {
        m->indices[slot] = file_index;
        return HFDCP_OK;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        char **names = realloc(m->names, cap * sizeof *names);
        if (names == NULL)
            return hfdcp__nomem("a file map");
        m->names = names;
        int *indices = realloc(m->indices, cap * sizeof *indices);
        if (indices == NULL)
            return hfdcp__nomem("a file map");
        m->indices = indices;
        m->cap = cap;
    }
    if ((copy = hfdcp__strdup(name)) == NULL)
        return hfdcp__nomem("a file map entry");
    if (hfdcp__strmap_put(m->slots, name, m->n, NULL) != HFDCP_OK) {
        free(copy);
        return HFDCP_ERR_NOMEM;
    }
    m->names[m->n] = copy;
    m->indices[m->n] = file_index;
    m->n++;
    return HFDCP_OK;
}

int hfdcp_file_map_get(const hfdcp_file_map *m, const char *name,
                       int *file_index)
{
    size_t slot;

    if (m == NULL || name == NULL || file_index == NULL)
        return hfdcp__error(HFDCP_ERR_ARG,
                            "hfdcp_file_map_get: NULL argument");
    if (!hfdcp__strmap_get(m->slots, name, &slot))
        return hfdcp__error(HFDCP_ERR_NOT_FOUND,
                            "tensor '%s' is not in the file map", name);
    *file_index = m->indices[slot];
    return HFDCP_OK;
}

void hfdcp_file_map_free(hfdcp_file_map *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->names[i]);
    free(m->names);
    free(m->indices);
    hfdcp__strmap_free(m->slots);
    free(m);
}

int hfdcp__file_map_dup(const hfdcp_file_map *m, hfdcp_file_map **out)
{
    hfdcp_file_map *copy = NULL;
    int rc;

    *out = NULL;
    if (m == NULL)
        return HFDCP_OK;
    HFDCP_TRY(hfdcp_file_map_create(&copy));
    for (size_t i = 0; i < m->n; i++) {
        if ((rc = hfdcp_file_map_set(copy, m->names[i], m->indices[i])) !=
            HFDCP_OK) {
            hfdcp_file_map_free(copy);
            return rc;
        }
    }
    *out = copy;
    return HFDCP_OK;
}
