/*
 * mpiio_buffer.c - the memory kept between calls: one buffer (the window
 * of an aggregated or sieved transfer, consolidation's staging) and one
 * node-shared segment (the aggregation's shared windows, mpiio_agg.c),
 * taken by a transfer and given back when it ends, freed by
 * hfdcp_release_buffers() or at MPI_Finalize.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "mpiio_internal.h"

/*
 * The window of an aggregated or sieved transfer (32 MiB by default) is
 * kept when the transfer ends, and the next one takes it: touching fresh
 * memory costs a page fault per page, once per file of every save and
 * load, and on a VM that hands freed memory back to its host, as the
 * development VM does, each fault goes through the host
 * (docs/benchmarks.md, "The machine").  One buffer is kept per process,
 * the largest given back; it is freed by hfdcp_release_buffers() or at
 * MPI_Finalize (the delete callback of an attribute on MPI_COMM_SELF,
 * which MPI_Finalize runs first).  Hint hfdcp_keep_buffer=disable: the
 * transfer neither takes nor keeps it.  Consolidation stages its output
 * through it too (hfdcp__buffer_take / give).  A mutex guards it for
 * callers in several threads (MPI_THREAD_MULTIPLE).
 */

static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static void *kept;        /* the kept buffer, or NULL */
static uint64_t kept_size;
static uint64_t kept_taken; /* times a transfer took it */
static int kept_keyval = MPI_KEYVAL_INVALID;
/* The kept shared windows (see "Aggregation" in mpiio_agg.c): a segment
 * (mpiio_shm), base NULL when none is kept. */
static mpiio_shm kept_shm;
static uint64_t kept_shm_taken; /* times a transfer took it */

static int kept_delete(MPI_Comm comm, int keyval, void *value, void *extra)
{
    (void)comm;
    (void)keyval;
    (void)value;
    (void)extra;
    hfdcp_release_buffers();
    return MPI_SUCCESS;
}

void hfdcp_release_buffers(void)
{
    pthread_mutex_lock(&kept_lock);
    free(kept);
    kept = NULL;
    kept_size = 0;
#ifdef __linux__
    if (kept_shm.base != NULL)
        (void)munmap(kept_shm.base, (size_t)kept_shm.size);
#endif
    memset(&kept_shm, 0, sizeof kept_shm);
    pthread_mutex_unlock(&kept_lock);
}

uint64_t hfdcp__mpiio_kept_shared_bytes(uint64_t *taken)
{
    pthread_mutex_lock(&kept_lock);
    uint64_t n = kept_shm.size;
    if (taken != NULL)
        *taken = kept_shm_taken;
    pthread_mutex_unlock(&kept_lock);
    return n;
}

/* Whether the kept buffers are freed at MPI_Finalize (an attribute of
 * MPI_COMM_SELF whose deletion frees them), registering that once; the
 * caller holds kept_lock.  Nothing is kept when it cannot be. */
static bool kept_registered(void)
{
    if (kept_keyval == MPI_KEYVAL_INVALID &&
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, kept_delete,
                               &kept_keyval, NULL) == MPI_SUCCESS &&
        MPI_Comm_set_attr(MPI_COMM_SELF, kept_keyval, NULL) != MPI_SUCCESS) {
        MPI_Comm_free_keyval(&kept_keyval);
        kept_keyval = MPI_KEYVAL_INVALID;
    }
    return kept_keyval != MPI_KEYVAL_INVALID;
}

uint64_t hfdcp__mpiio_kept_bytes(uint64_t *taken)
{
    pthread_mutex_lock(&kept_lock);
    uint64_t n = kept_size;
    if (taken != NULL)
        *taken = kept_taken;
    pthread_mutex_unlock(&kept_lock);
    return n;
}

/* A buffer of at least *size bytes: the kept one when it is as large and
 * `keep` allows (*size becomes its size), else a new one (NULL when out of
 * memory). */
void *hfdcp__buffer_take(uint64_t *size, bool keep)
{
    void *p = NULL;

    if (keep) {
        pthread_mutex_lock(&kept_lock);
        if (kept != NULL && kept_size >= *size) {
            p = kept;
            *size = kept_size;
            kept = NULL;
            kept_size = 0;
            kept_taken++;
        }
        pthread_mutex_unlock(&kept_lock);
    }
    return p != NULL ? p : malloc(*size);
}

/* Ends the use of `p` (of `size` bytes, as hfdcp__buffer_take left
 * it): kept when `keep` allows and it is at least as large as the one
 * kept, else freed. */
void hfdcp__buffer_give(void *p, uint64_t size, bool keep)
{
    if (p == NULL)
        return;
    if (keep) {
        pthread_mutex_lock(&kept_lock);
        if (kept_registered() && size >= kept_size) {
            void *old = kept;
            kept = p;
            kept_size = size;
            p = old;
        }
        pthread_mutex_unlock(&kept_lock);
    }
    free(p);
}

/* ---------------------------------------------------------------------- */
/* The kept shared segment                                                */
/* ---------------------------------------------------------------------- */

void hfdcp__mpiio_kept_shm_id(uint64_t id[2])
{
    pthread_mutex_lock(&kept_lock);
    if (kept_shm.base != NULL)
        memcpy(id, kept_shm.id, sizeof kept_shm.id);
    pthread_mutex_unlock(&kept_lock);
}

void hfdcp__mpiio_kept_shm_take(const uint64_t id[2], int nranks, int rank,
                                uint64_t size, mpiio_shm *out)
{
    pthread_mutex_lock(&kept_lock);
    if (kept_shm.base != NULL && kept_shm.id[0] == id[0] &&
        kept_shm.id[1] == id[1] && kept_shm.nranks == nranks &&
        kept_shm.rank == rank && kept_shm.size >= size) {
        *out = kept_shm;
        memset(&kept_shm, 0, sizeof kept_shm);
    }
    pthread_mutex_unlock(&kept_lock);
}

void hfdcp__mpiio_kept_shm_count(void)
{
    pthread_mutex_lock(&kept_lock);
    kept_shm_taken++;
    pthread_mutex_unlock(&kept_lock);
}

/* The shared windows kept for the next transfer (with the hint
 * hfdcp_keep_buffer, and when they can be freed at MPI_Finalize), in
 * place of the ones kept before, or unmapped. */
void hfdcp__mpiio_kept_shm_give(const mpiio_shm *s, bool keep)
{
#ifdef __linux__
    char *old = s->base;
    uint64_t old_size = s->size;

    if (keep) {
        pthread_mutex_lock(&kept_lock);
        if (kept_registered()) {
            old = kept_shm.base;
            old_size = kept_shm.size;
            kept_shm = *s;
        }
        pthread_mutex_unlock(&kept_lock);
    }
    if (old != NULL)
        (void)munmap(old, (size_t)old_size);
#else
    (void)s;
    (void)keep;
#endif
}
