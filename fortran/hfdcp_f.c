/*
 * hfdcp_f.c - the C half of the Fortran bindings (module hfdcp, hfdcp.f90).
 *
 * Only what Fortran cannot do portably through ISO_C_BINDING lives here:
 * turning Fortran MPI handles (the MPI_VAL of type(MPI_Comm)/type(MPI_Info),
 * or an integer communicator) into C handles with MPI_Comm_f2c and
 * MPI_Info_f2c, and filling the option structs, whose MPI_Info and
 * function-pointer fields have no interoperable Fortran counterpart.  The
 * module calls these functions, never the user.
 */
#include <stddef.h>
#include <stdint.h>

#include <mpi.h>

#include "hfdcp.h"

int hfdcp_f__reader_open(MPI_Fint comm, const char *path,
                         const hfdcp_key_map *km, MPI_Fint info,
                         hfdcp_reader **out);
int hfdcp_f__writer_open(MPI_Fint comm, const char *path,
                         const hfdcp_file_map *map, uint64_t max_shard_bytes,
                         int save_sharded, const char *consolidated_output_path,
                         int thread_count, int num_threads_consolidation,
                         MPI_Fint info, uint64_t snapshot_max_bytes,
                         int no_checksums, hfdcp_writer **out);
int hfdcp_f__consolidate(MPI_Fint comm, const char *input_dir,
                         const char *output_dir, const hfdcp_file_map *map,
                         uint64_t buffer_bytes, int cast, int cast_dtype,
                         int num_threads, MPI_Fint info, int no_checksums,
                         void (*progress)(uint64_t, uint64_t, void *),
                         void *progress_arg);

int hfdcp_f__reader_open(MPI_Fint comm, const char *path,
                         const hfdcp_key_map *km, MPI_Fint info,
                         hfdcp_reader **out)
{
    hfdcp_load_options o;
    hfdcp_load_options_init(&o);
    o.key_map = km;
    o.info = MPI_Info_f2c(info);
    return hfdcp_reader_open(MPI_Comm_f2c(comm), path, &o, out);
}

int hfdcp_f__writer_open(MPI_Fint comm, const char *path,
                         const hfdcp_file_map *map, uint64_t max_shard_bytes,
                         int save_sharded, const char *consolidated_output_path,
                         int thread_count, int num_threads_consolidation,
                         MPI_Fint info, uint64_t snapshot_max_bytes,
                         int no_checksums, hfdcp_writer **out)
{
    hfdcp_save_options o;
    hfdcp_save_options_init(&o);
    o.file_map = map;
    o.max_shard_bytes = max_shard_bytes;
    o.save_sharded = save_sharded;
    o.consolidated_output_path = consolidated_output_path;
    o.thread_count = thread_count;
    o.num_threads_consolidation = num_threads_consolidation;
    o.info = MPI_Info_f2c(info);
    o.snapshot_max_bytes = snapshot_max_bytes;
    o.no_checksums = no_checksums;
    return hfdcp_writer_open(MPI_Comm_f2c(comm), path, &o, out);
}

int hfdcp_f__consolidate(MPI_Fint comm, const char *input_dir,
                         const char *output_dir, const hfdcp_file_map *map,
                         uint64_t buffer_bytes, int cast, int cast_dtype,
                         int num_threads, MPI_Fint info, int no_checksums,
                         void (*progress)(uint64_t, uint64_t, void *),
                         void *progress_arg)
{
    hfdcp_consolidate_options o;
    hfdcp_consolidate_options_init(&o);
    o.buffer_bytes = buffer_bytes;
    o.cast = cast;
    if (cast)
        o.cast_dtype = (hfdcp_dtype)cast_dtype;
    o.num_threads = num_threads;
    o.info = MPI_Info_f2c(info);
    o.no_checksums = no_checksums;
    o.progress = progress;
    o.progress_arg = progress_arg;
    return hfdcp_consolidate(MPI_Comm_f2c(comm), input_dir, output_dir, map,
                             &o);
}
