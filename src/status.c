/*
 * status.c - status names, the thread-local error message, and agreement
 * of a status across the ranks of a communicator.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hfdcp_internal.h"

/* Long enough for a message naming a path, a tensor and an MPI error. */
#define HFDCP_MSG_MAX 4096

static _Thread_local char last_error[HFDCP_MSG_MAX];

const char *hfdcp_status_name(int status)
{
    switch (status) {
#define HFDCP_X_NAME(sym, val, desc) \
    case sym: return #sym;
        HFDCP_STATUS_MAP(HFDCP_X_NAME)
#undef HFDCP_X_NAME
    }
    return "HFDCP_ERR_UNKNOWN";
}

const char *hfdcp_status_string(int status)
{
    switch (status) {
#define HFDCP_X_DESC(sym, val, desc) \
    case sym: return desc;
        HFDCP_STATUS_MAP(HFDCP_X_DESC)
#undef HFDCP_X_DESC
    }
    return "unknown status";
}

const char *hfdcp_last_error(void)
{
    return last_error;
}

void hfdcp__error_clear(void)
{
    last_error[0] = '\0';
}

static void set_message(const char *fmt, va_list ap)
{
    vsnprintf(last_error, sizeof last_error, fmt, ap);
}

int hfdcp__error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    return status;
}

/* Appends ": suffix" to the current message, truncating if needed. */
static void append_suffix(const char *suffix)
{
    size_t len = strlen(last_error);
    if (len + 3 < sizeof last_error)
        snprintf(last_error + len, sizeof last_error - len, ": %s", suffix);
}

int hfdcp__mpi_error(int mpi_rc, const char *fmt, ...)
{
    char mpi_msg[MPI_MAX_ERROR_STRING + 1];
    int mpi_len = 0;
    va_list ap;

    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    if (MPI_Error_string(mpi_rc, mpi_msg, &mpi_len) != MPI_SUCCESS)
        snprintf(mpi_msg, sizeof mpi_msg, "MPI error code %d", mpi_rc);
    else
        mpi_msg[mpi_len] = '\0';
    append_suffix(mpi_msg);
    return HFDCP_ERR_MPI;
}

int hfdcp__os_error(int status, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    append_suffix(strerror(errnum));
    return status;
}

int hfdcp__error_prefix(int status, const char *fmt, ...)
{
    char prefix[HFDCP_MSG_MAX];
    char old[HFDCP_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    snprintf(last_error, sizeof last_error, "%s: %s", prefix, old);
    return status;
}

int hfdcp__nomem(const char *what)
{
    return hfdcp__error(HFDCP_ERR_NOMEM, "out of memory allocating %s", what);
}

int hfdcp__comm_dup(MPI_Comm comm, const char *who, MPI_Comm *out)
{
    int mpi_rc;

    *out = MPI_COMM_NULL;
    if ((mpi_rc = MPI_Comm_dup(comm, out)) != MPI_SUCCESS) {
        *out = MPI_COMM_NULL;
        return hfdcp__mpi_error(mpi_rc, "%s: MPI_Comm_dup", who);
    }
    if ((mpi_rc = MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN)) !=
        MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "%s: MPI_Comm_set_errhandler", who);
    return HFDCP_OK;
}

/*
 * Agreement: one MPI_Allreduce finds the lowest failing rank (or size when
 * none failed); that rank then broadcasts its status and message.  Two
 * collectives that every rank always makes, so nobody is left waiting.
 */
int hfdcp__agree(MPI_Comm comm, int local_status)
{
    int rank, size, first, mine, mpi_rc;
    struct {
        int status;
        char msg[HFDCP_MSG_MAX];
    } report;

    if ((mpi_rc = MPI_Comm_rank(comm, &rank)) != MPI_SUCCESS ||
        (mpi_rc = MPI_Comm_size(comm, &size)) != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "agreeing on a status");

    mine = local_status == HFDCP_OK ? size : rank;
    mpi_rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "rank %d: agreeing on a status", rank);
    if (first == size)
        return HFDCP_OK;

    if (rank == first) {
        report.status = local_status;
        snprintf(report.msg, sizeof report.msg, "rank %d: %s", rank,
                 last_error[0] ? last_error : hfdcp_status_string(local_status));
    }
    mpi_rc = MPI_Bcast(&report, (int)sizeof report, MPI_BYTE, first, comm);
    if (mpi_rc != MPI_SUCCESS)
        return hfdcp__mpi_error(mpi_rc, "rank %d: broadcasting rank %d's error",
                                rank, first);
    memcpy(last_error, report.msg, sizeof last_error);
    last_error[sizeof last_error - 1] = '\0';
    return report.status;
}
