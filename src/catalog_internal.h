/*
 * catalog_internal.h - private to the catalog: include it ONLY from
 * src/catalog*.c.  The rest of the library and the tests see the catalog
 * through the "catalog.c" section of hfdcp_internal.h, never through this
 * file.  It holds what the catalog's files share among themselves: the
 * list of problems, the listing, the merger, and the functions each step
 * offers catalog.c.
 *
 * The catalog's files, in the order of the steps (each uses only the ones
 * listed before it; none calls back up):
 *   catalog_list.c   the list of problems; step 1, list the files (the
 *                    index's weight_map, a directory, one file), and the
 *                    listing packed and unpacked
 *   catalog_read.c   step 2, read each file's prefix and header with pread
 *                    and parse it; a parsed file packed and unpacked
 *   catalog_merge.c  step 3, merge: index checks, renaming, grouping, DCP
 *                    shard merging with the tiling check, sorting
 *   catalog.c        the steps put together: hfdcp__catalog_open()
 *                    (collective, every step agreed on) and
 *                    hfdcp__catalog_verify() (one process); find, free
 */
#ifndef HFDCP_CATALOG_INTERNAL_H
#define HFDCP_CATALOG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hfdcp_internal.h"

/* ---------------------------------------------------------------------- */
/* Problems: stop at the first (open) or collect them all (verify)        */
/* (catalog_list.c)                                                       */
/* ---------------------------------------------------------------------- */

typedef struct {
    bool collect;
    hfdcp__problem *list;
    size_t n, cap;
} problems;

/* Records the current message as a problem of `status` when collecting.
 * Returns HFDCP_OK when collecting (go on), `status` otherwise (stop);
 * HFDCP_ERR_NOMEM if the problem cannot be recorded. */
int hfdcp__problems_soft(problems *p, int status);

/* Records a problem that ends the work (nothing sensible can follow):
 * returns `status` in both modes. */
int hfdcp__problems_hard(problems *p, int status);

/* Records a warning: a rule of docs/format.md that the reader does not
 * enforce (the index's bookkeeping), which verify reports and
 * `verify --strict` reports as a problem of `status`.  The message is
 * formatted only when collecting, so that open leaves hfdcp_last_error()
 * alone.  Returns HFDCP_OK, or HFDCP_ERR_NOMEM. */
int hfdcp__problems_warn(problems *p, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The status of the first problem that is not a warning, or HFDCP_OK. */
int hfdcp__problems_status(const problems *p);

/* ---------------------------------------------------------------------- */
/* Step 1: list (catalog_list.c)                                          */
/* ---------------------------------------------------------------------- */

typedef struct {
    bool is_file;
    bool has_index;
    char *index_path; /* when has_index */
    hfdcp__index ix;  /* when has_index */
    char *index_missing; /* what the index lacks (its metadata or
                            total_size, hfdcp__index_parse_lenient()), or
                            NULL */
    size_t n;
    char **names;     /* base names, sorted by strcmp */
    char **paths;     /* full paths */
} listing;

/* Lists the files of the checkpoint at `path` into *ls.  A problem that
 * leaves no file list is returned (after being recorded when collecting);
 * when collecting, a file of the index that is missing is recorded and
 * left out. */
int hfdcp__catalog_list(const char *path, problems *p, listing *ls);

/* Frees what *ls holds and zeroes it. */
void hfdcp__listing_free(listing *ls);

/* Packs *ls for rank 0 to broadcast (errors are the buffer's status). */
void hfdcp__listing_pack(const listing *ls, hfdcp__buf *b);

/* Unpacks a listing packed by hfdcp__listing_pack() into *ls.
 * HFDCP_ERR_NOMEM (out of memory or a malformed message). */
int hfdcp__listing_unpack(const void *data, size_t len, listing *ls);

/* A count read from a message, bounded by what the message can hold
 * (every item takes at least 8 bytes); false (and r->bad) otherwise. */
bool hfdcp__catalog_get_count(hfdcp__rbuf *r, uint64_t *n);

/* ---------------------------------------------------------------------- */
/* Step 2: read (catalog_read.c)                                          */
/* ---------------------------------------------------------------------- */

/* Reads and parses the header of the file at f->path into f (whose name
 * and path the caller sets). */
int hfdcp__file_read_header(hfdcp__file *f);

/* Packs the parsed file f, number `index` of the listing, into b. */
void hfdcp__file_pack(size_t index, const hfdcp__file *f, hfdcp__buf *b);

/* Unpacks one file packed by hfdcp__file_pack() into files[index] (which
 * must still be empty).  false on a malformed message or out of memory. */
bool hfdcp__file_unpack(hfdcp__rbuf *r, hfdcp__file *files, size_t n_files);

/* ---------------------------------------------------------------------- */
/* Step 3: merge (catalog_merge.c)                                        */
/* ---------------------------------------------------------------------- */

/* One appearance of a stored name: entry `entry` of file `file`. */
typedef struct {
    size_t file, entry;
} occurrence;

typedef struct {
    const char *stored; /* the stored name (owned by a header) */
    size_t first, n;    /* its occurrences: occ[first .. first + n) */
} group;

/* The merge's input (set by the caller) and its working tables. */
typedef struct {
    const listing *ls;
    hfdcp__file *files;
    const bool *readable; /* per file; NULL: all */
    const hfdcp_key_map *km;
    problems *p;
    const char **file_names; /* ls->names, as the tiling check wants them */
    occurrence *occ;
    group *groups;
    size_t n_groups;
    hfdcp__strmap *group_of; /* stored name -> group */
    bool shards_only;        /* consolidation: DCP shard files only, and
                                shard problems are HFDCP_ERR_PLAN */
    int64_t ***global_shapes; /* per file: its shard header's declared
                                 shapes (hfdcp__header_global_shapes()),
                                 NULL without them */
} merger;

/* Renames, groups and checks into `c`, a zeroed catalog, for the
 * checkpoint at `path`; on success c takes over m->files.  On failure c
 * holds what was made so far, for the caller's hfdcp__catalog_free(). */
int hfdcp__catalog_merge(merger *m, const char *path, hfdcp__catalog *c);

/* Frees m->files and the working tables (m->ls must be set). */
void hfdcp__merger_free(merger *m);

/* Frees what tensor t holds and zeroes it. */
void hfdcp__tensor_clear(hfdcp__tensor *t);

#endif /* HFDCP_CATALOG_INTERNAL_H */
