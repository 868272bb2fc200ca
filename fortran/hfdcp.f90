! hfdcp.f90 - Fortran 2008 bindings of hfdcp (module hfdcp).
!
! The whole public C API of include/hfdcp.h, for Fortran programs built with
! an MPI that has the mpi_f08 module.  Link with -lhfdcp_f -lhfdcp (or
! pkg-config hfdcp-fortran, or the CMake target hfdcp::hfdcp_f).
!
! Conventions (docs/guide.md, "From Fortran", says the same with examples):
!   - Every fallible procedure is an integer function returning the C status
!     (HFDCP_OK = 0, or a negative HFDCP_ERR_*); hfdcp_last_error() gives
!     the detailed message.  Collective/local and what must match across
!     ranks are as for the C function of the same name (docs/api.md).
!   - Communicators are type(MPI_Comm) or integer handles (generic
!     interfaces); MPI_Info hints are type(MPI_Info) fields of the options.
!   - Character arguments are passed trimmed (trailing blanks are not part
!     of a name) with a NUL appended; results come back as
!     character(len=:), allocatable.
!   - Positions in lists (hfdcp_reader_tensor, hfdcp_file_map_entry) are
!     1-based.  Offsets inside a tensor are 0-based element counts, as in C.
!   - Column-major translation: a Fortran array a(n, m) is the row-major
!     tensor of shape [m, n], as PyTorch sees the file.  Every shape, offset
!     and size given to or returned by this module is in Fortran order and
!     is reversed on the way to and from C: a chunk a(n, 0:mloc-1) holding
!     columns c0..c0+mloc-1 of a global g(n, m) is added with
!     global_shape=[n, m], offsets=[0, c0] and becomes the rows
!     [c0, c0+mloc) of the file's tensor [m, n].
!   - Arrays of any rank (assumed rank) of kinds real32 (F32), real64 (F64),
!     int8 (I8), int16 (I16), int32 (I32), int64 (I64), complex(real32)
!     (C64) and logical(c_bool) (BOOL, one byte) are passed to C without a
!     copy.  A non-contiguous array (a section such as a(1:n:2, :)) is
!     refused with HFDCP_ERR_ARG rather than copied.  Default logical is
!     four bytes and is not a safetensors type: use logical(c_bool).
!     The optional dtype argument stores or reads the bytes under another
!     dtype of the same width (int16 storage as BF16, int8 as U8, ...).
!   - hfdcp_writer_add and hfdcp_reader_add keep the array's address until
!     commit/load returns: the actual argument must be a variable with the
!     TARGET attribute or an allocatable/pointer array, never an expression
!     or a temporary, and must not be moved or deallocated before then.
!   - Errors found by this module itself (non-contiguous array, shape
!     argument of the wrong length) are reported like the library's: the
!     add returns HFDCP_ERR_ARG, hfdcp_last_error() explains, and the next
!     commit or load fails on every rank with that message.  The other
!     messages of this module (a list position out of range) are kept per
!     process, not per thread.
module hfdcp
  use, intrinsic :: iso_c_binding
  use, intrinsic :: iso_fortran_env, only: int8, int16, int32, int64, &
       real32, real64
  use mpi_f08, only: MPI_Comm, MPI_Info, MPI_INFO_NULL
  implicit none
  private

  ! ---- 1. Status codes (values of include/hfdcp.h) ----
  integer, parameter, public :: HFDCP_OK = 0
  integer, parameter, public :: HFDCP_ERR_ARG = -1
  integer, parameter, public :: HFDCP_ERR_NOMEM = -2
  integer, parameter, public :: HFDCP_ERR_IO = -3
  integer, parameter, public :: HFDCP_ERR_FORMAT = -4
  integer, parameter, public :: HFDCP_ERR_PLAN = -5
  integer, parameter, public :: HFDCP_ERR_NOT_FOUND = -6
  integer, parameter, public :: HFDCP_ERR_MPI = -7
  integer, parameter, public :: HFDCP_ERR_MISMATCH = -8
  integer, parameter, public :: HFDCP_ERR_UNSUPPORTED = -9
  integer, parameter, public :: HFDCP_ERR_RANGE = -10
  integer, parameter, public :: HFDCP_ERR_INTERNAL = -11

  ! ---- 2. Dtypes (the enum hfdcp_dtype) ----
  integer, parameter, public :: HFDCP_BOOL = 0, HFDCP_F4 = 1, &
       HFDCP_F6_E2M3 = 2, HFDCP_F6_E3M2 = 3, HFDCP_U8 = 4, HFDCP_I8 = 5, &
       HFDCP_F8_E5M2 = 6, HFDCP_F8_E4M3 = 7, HFDCP_F8_E8M0 = 8, &
       HFDCP_F8_E4M3FNUZ = 9, HFDCP_F8_E5M2FNUZ = 10, HFDCP_I16 = 11, &
       HFDCP_U16 = 12, HFDCP_F16 = 13, HFDCP_BF16 = 14, HFDCP_I32 = 15, &
       HFDCP_U32 = 16, HFDCP_F32 = 17, HFDCP_C64 = 18, HFDCP_F64 = 19, &
       HFDCP_I64 = 20, HFDCP_U64 = 21, HFDCP_DTYPE_COUNT = 22
  integer, parameter, public :: HFDCP_MAX_NDIM = 64

  ! ---- 8. Version of these bindings (compare with hfdcp_version()) ----
  integer, parameter, public :: HFDCP_VERSION_MAJOR = 0
  integer, parameter, public :: HFDCP_VERSION_MINOR = 2
  integer, parameter, public :: HFDCP_VERSION_PATCH = 0

  ! ---- Handles: opaque; a default-initialised handle is "none" ----
  type, public :: hfdcp_key_map
     type(c_ptr) :: p = c_null_ptr
  end type hfdcp_key_map
  type, public :: hfdcp_file_map
     type(c_ptr) :: p = c_null_ptr
  end type hfdcp_file_map
  type, public :: hfdcp_reader
     type(c_ptr) :: p = c_null_ptr
  end type hfdcp_reader
  type, public :: hfdcp_writer
     type(c_ptr) :: p = c_null_ptr
  end type hfdcp_writer

  ! A tensor of a checkpoint; shape is in Fortran order (reversed).
  type, public :: hfdcp_tensor_info
     character(len=:), allocatable :: name
     integer :: dtype = -1
     integer :: ndim = 0
     integer(int64), allocatable :: shape(:)
  end type hfdcp_tensor_info

  ! Options: the fields of the C structs, with the same defaults.
  type, public :: hfdcp_load_options
     type(hfdcp_key_map) :: key_map              ! none: names as stored
     type(MPI_Info) :: info = MPI_INFO_NULL
  end type hfdcp_load_options

  type, public :: hfdcp_save_options
     type(hfdcp_file_map) :: file_map            ! none: by max_shard_bytes
     integer(int64) :: max_shard_bytes = 0       ! 0: no limit
     logical :: save_sharded = .false.
     character(len=:), allocatable :: consolidated_output_path ! unallocated: none
     integer :: thread_count = 0
     integer :: num_threads_consolidation = 0
     type(MPI_Info) :: info = MPI_INFO_NULL
     integer(int64) :: snapshot_max_bytes = 0    ! 0: no bound (commit_async)
     logical :: checksums = .true.               ! .false.: no_checksums
  end type hfdcp_save_options

  ! progress: c_funloc of a bind(C) subroutine with the interface
  ! hfdcp_progress_fn below; called on rank 0 only.
  type, public :: hfdcp_consolidate_options
     integer(int64) :: buffer_bytes = 0          ! 0: 32 MiB
     logical :: cast = .false.
     integer :: cast_dtype = HFDCP_BF16
     integer :: num_threads = 0
     type(MPI_Info) :: info = MPI_INFO_NULL
     logical :: no_checksums = .false.           ! .true.: no CRC-32C checked or written
     type(c_funptr) :: progress = c_null_funptr
     type(c_ptr) :: progress_arg = c_null_ptr
  end type hfdcp_consolidate_options

  abstract interface
     subroutine hfdcp_progress_fn(done, total, arg) bind(C)
       import :: c_int64_t, c_ptr
       integer(c_int64_t), value :: done, total
       type(c_ptr), value :: arg
     end subroutine hfdcp_progress_fn
  end interface
  public :: hfdcp_progress_fn

  public :: hfdcp_status_name, hfdcp_status_string, hfdcp_last_error
  public :: hfdcp_dtype_bits, hfdcp_dtype_name, hfdcp_dtype_from_name
  public :: hfdcp_key_map_create, hfdcp_key_map_add, hfdcp_key_map_apply, &
       hfdcp_key_map_free
  public :: hfdcp_reader_open, hfdcp_reader_count, hfdcp_reader_tensor, &
       hfdcp_reader_find, hfdcp_reader_add, hfdcp_reader_load, &
       hfdcp_reader_free
  public :: hfdcp_file_map_create, hfdcp_file_map_set, hfdcp_file_map_get, &
       hfdcp_file_map_free, hfdcp_file_map_size, hfdcp_file_map_entry, &
       hfdcp_file_map_warning, hfdcp_extract_file_index, &
       hfdcp_file_map_from_reference
  public :: hfdcp_writer_open, hfdcp_writer_add, hfdcp_writer_commit, &
       hfdcp_writer_commit_async, hfdcp_writer_wait, hfdcp_writer_test, &
       hfdcp_writer_free
  public :: hfdcp_consolidate, hfdcp_release_buffers, hfdcp_version

  interface hfdcp_reader_open
     module procedure reader_open_f08, reader_open_int
  end interface hfdcp_reader_open
  interface hfdcp_writer_open
     module procedure writer_open_f08, writer_open_int
  end interface hfdcp_writer_open
  interface hfdcp_consolidate
     module procedure consolidate_f08, consolidate_int
  end interface hfdcp_consolidate
  interface hfdcp_reader_tensor
     module procedure reader_tensor_i8, reader_tensor_i4
  end interface hfdcp_reader_tensor
  interface hfdcp_file_map_entry
     module procedure file_map_entry_i8, file_map_entry_i4
  end interface hfdcp_file_map_entry
  interface hfdcp_writer_add
     module procedure writer_add_r4, writer_add_r8, writer_add_i1, &
          writer_add_i2, writer_add_i4, writer_add_i8, writer_add_c4, &
          writer_add_l1
  end interface hfdcp_writer_add
  interface hfdcp_reader_add
     module procedure reader_add_r4, reader_add_r8, reader_add_i1, &
          reader_add_i2, reader_add_i4, reader_add_i8, reader_add_c4, &
          reader_add_l1
  end interface hfdcp_reader_add

  ! The C structure hfdcp_tensor_info.
  type, bind(C) :: c_tensor_info
     type(c_ptr) :: name
     integer(c_int) :: dtype
     integer(c_int) :: ndim
     type(c_ptr) :: shape
  end type c_tensor_info

  ! The C library and the shim (hfdcp_f.c).
  interface
     function c_strlen(s) bind(C, name="strlen") result(n)
       import :: c_ptr, c_size_t
       type(c_ptr), value :: s
       integer(c_size_t) :: n
     end function c_strlen
     function c_status_name(st) bind(C, name="hfdcp_status_name") result(p)
       import :: c_int, c_ptr
       integer(c_int), value :: st
       type(c_ptr) :: p
     end function c_status_name
     function c_status_string(st) bind(C, name="hfdcp_status_string") result(p)
       import :: c_int, c_ptr
       integer(c_int), value :: st
       type(c_ptr) :: p
     end function c_status_string
     function c_last_error() bind(C, name="hfdcp_last_error") result(p)
       import :: c_ptr
       type(c_ptr) :: p
     end function c_last_error
     function c_dtype_bits(d) bind(C, name="hfdcp_dtype_bits") result(b)
       import :: c_int
       integer(c_int), value :: d
       integer(c_int) :: b
     end function c_dtype_bits
     function c_dtype_name(d) bind(C, name="hfdcp_dtype_name") result(p)
       import :: c_int, c_ptr
       integer(c_int), value :: d
       type(c_ptr) :: p
     end function c_dtype_name
     function c_dtype_from_name(name, d) bind(C, name="hfdcp_dtype_from_name") result(st)
       import :: c_int, c_char
       character(kind=c_char), intent(in) :: name(*)
       integer(c_int), intent(out) :: d
       integer(c_int) :: st
     end function c_dtype_from_name
     function c_key_map_create(out) bind(C, name="hfdcp_key_map_create") result(st)
       import :: c_int, c_ptr
       type(c_ptr), intent(out) :: out
       integer(c_int) :: st
     end function c_key_map_create
     function c_key_map_add(km, pat, rep) bind(C, name="hfdcp_key_map_add") result(st)
       import :: c_int, c_ptr, c_char
       type(c_ptr), value :: km
       character(kind=c_char), intent(in) :: pat(*), rep(*)
       integer(c_int) :: st
     end function c_key_map_add
     function c_key_map_apply(km, key, out, n) bind(C, name="hfdcp_key_map_apply") result(st)
       import :: c_int, c_ptr, c_char, c_size_t
       type(c_ptr), value :: km
       character(kind=c_char), intent(in) :: key(*)
       character(kind=c_char), intent(out) :: out(*)
       integer(c_size_t), value :: n
       integer(c_int) :: st
     end function c_key_map_apply
     subroutine c_key_map_free(km) bind(C, name="hfdcp_key_map_free")
       import :: c_ptr
       type(c_ptr), value :: km
     end subroutine c_key_map_free
     function c_reader_open(comm, path, km, info, out) bind(C, name="hfdcp_f__reader_open") result(st)
       import :: c_int, c_ptr, c_char
       integer(c_int), value :: comm, info
       character(kind=c_char), intent(in) :: path(*)
       type(c_ptr), value :: km
       type(c_ptr), intent(out) :: out
       integer(c_int) :: st
     end function c_reader_open
     function c_reader_count(r) bind(C, name="hfdcp_reader_count") result(n)
       import :: c_ptr, c_size_t
       type(c_ptr), value :: r
       integer(c_size_t) :: n
     end function c_reader_count
     function c_reader_tensor(r, i, info) bind(C, name="hfdcp_reader_tensor") result(st)
       import :: c_ptr, c_size_t, c_int, c_tensor_info
       type(c_ptr), value :: r
       integer(c_size_t), value :: i
       type(c_tensor_info), intent(out) :: info
       integer(c_int) :: st
     end function c_reader_tensor
     function c_reader_find(r, name, info) bind(C, name="hfdcp_reader_find") result(st)
       import :: c_ptr, c_char, c_int, c_tensor_info
       type(c_ptr), value :: r
       character(kind=c_char), intent(in) :: name(*)
       type(c_tensor_info), intent(out) :: info
       integer(c_int) :: st
     end function c_reader_find
     function c_reader_add(r, name, dtype, ndim, off, sz, dest) bind(C, name="hfdcp_reader_add") result(st)
       import :: c_ptr, c_char, c_int, c_int64_t
       type(c_ptr), value :: r
       character(kind=c_char), intent(in) :: name(*)
       integer(c_int), value :: dtype, ndim
       integer(c_int64_t), intent(in) :: off(*), sz(*)
       type(c_ptr), value :: dest
       integer(c_int) :: st
     end function c_reader_add
     ! Fails an add refused by this module (libhfdcp's internal entry point
     ! for bindings): sets the message, and the next load reports it.
     function c_reader_add_failed(r, status, name, why) &
          bind(C, name="hfdcp__reader_add_failed") result(st)
       import :: c_ptr, c_char, c_int
       type(c_ptr), value :: r
       integer(c_int), value :: status
       character(kind=c_char), intent(in) :: name(*), why(*)
       integer(c_int) :: st
     end function c_reader_add_failed
     function c_reader_load(r) bind(C, name="hfdcp_reader_load") result(st)
       import :: c_ptr, c_int
       type(c_ptr), value :: r
       integer(c_int) :: st
     end function c_reader_load
     subroutine c_reader_free(r) bind(C, name="hfdcp_reader_free")
       import :: c_ptr
       type(c_ptr), value :: r
     end subroutine c_reader_free
     function c_file_map_create(out) bind(C, name="hfdcp_file_map_create") result(st)
       import :: c_int, c_ptr
       type(c_ptr), intent(out) :: out
       integer(c_int) :: st
     end function c_file_map_create
     function c_file_map_set(m, name, idx) bind(C, name="hfdcp_file_map_set") result(st)
       import :: c_int, c_ptr, c_char
       type(c_ptr), value :: m
       character(kind=c_char), intent(in) :: name(*)
       integer(c_int), value :: idx
       integer(c_int) :: st
     end function c_file_map_set
     function c_file_map_get(m, name, idx) bind(C, name="hfdcp_file_map_get") result(st)
       import :: c_int, c_ptr, c_char
       type(c_ptr), value :: m
       character(kind=c_char), intent(in) :: name(*)
       integer(c_int), intent(out) :: idx
       integer(c_int) :: st
     end function c_file_map_get
     subroutine c_file_map_free(m) bind(C, name="hfdcp_file_map_free")
       import :: c_ptr
       type(c_ptr), value :: m
     end subroutine c_file_map_free
     function c_file_map_size(m) bind(C, name="hfdcp_file_map_size") result(n)
       import :: c_ptr, c_size_t
       type(c_ptr), value :: m
       integer(c_size_t) :: n
     end function c_file_map_size
     function c_file_map_entry(m, i, name, idx) bind(C, name="hfdcp_file_map_entry") result(st)
       import :: c_int, c_ptr, c_size_t
       type(c_ptr), value :: m
       integer(c_size_t), value :: i
       type(c_ptr), intent(out) :: name
       integer(c_int), intent(out) :: idx
       integer(c_int) :: st
     end function c_file_map_entry
     function c_file_map_warning(m) bind(C, name="hfdcp_file_map_warning") result(p)
       import :: c_ptr
       type(c_ptr), value :: m
       type(c_ptr) :: p
     end function c_file_map_warning
     function c_extract_file_index(fname, idx) bind(C, name="hfdcp_extract_file_index") result(st)
       import :: c_int, c_char
       character(kind=c_char), intent(in) :: fname(*)
       integer(c_int), intent(out) :: idx
       integer(c_int) :: st
     end function c_extract_file_index
     function c_file_map_from_reference(path, km, out) bind(C, name="hfdcp_file_map_from_reference") result(st)
       import :: c_int, c_ptr, c_char
       character(kind=c_char), intent(in) :: path(*)
       type(c_ptr), value :: km
       type(c_ptr), intent(out) :: out
       integer(c_int) :: st
     end function c_file_map_from_reference
     function c_writer_open(comm, path, map, max_shard, sharded, cpath, threads, cthreads, info, &
          snap, no_crc, out) &
          bind(C, name="hfdcp_f__writer_open") result(st)
       import :: c_int, c_ptr, c_char, c_int64_t
       integer(c_int), value :: comm
       character(kind=c_char), intent(in) :: path(*)
       type(c_ptr), value :: map
       integer(c_int64_t), value :: max_shard
       integer(c_int), value :: sharded
       type(c_ptr), value :: cpath
       integer(c_int), value :: threads, cthreads, info
       integer(c_int64_t), value :: snap
       integer(c_int), value :: no_crc
       type(c_ptr), intent(out) :: out
       integer(c_int) :: st
     end function c_writer_open
     function c_writer_add(w, name, dtype, ndim, gshape, off, sz, data) bind(C, name="hfdcp_writer_add") result(st)
       import :: c_ptr, c_char, c_int, c_int64_t
       type(c_ptr), value :: w
       character(kind=c_char), intent(in) :: name(*)
       integer(c_int), value :: dtype, ndim
       integer(c_int64_t), intent(in) :: gshape(*), off(*), sz(*)
       type(c_ptr), value :: data
       integer(c_int) :: st
     end function c_writer_add
     ! The same for the writer: the next commit reports it.
     function c_writer_add_failed(w, status, name, why) &
          bind(C, name="hfdcp__writer_add_failed") result(st)
       import :: c_ptr, c_char, c_int
       type(c_ptr), value :: w
       integer(c_int), value :: status
       character(kind=c_char), intent(in) :: name(*), why(*)
       integer(c_int) :: st
     end function c_writer_add_failed
     function c_writer_commit(w) bind(C, name="hfdcp_writer_commit") result(st)
       import :: c_ptr, c_int
       type(c_ptr), value :: w
       integer(c_int) :: st
     end function c_writer_commit
     function c_writer_commit_async(w) bind(C, name="hfdcp_writer_commit_async") result(st)
       import :: c_ptr, c_int
       type(c_ptr), value :: w
       integer(c_int) :: st
     end function c_writer_commit_async
     function c_writer_wait(w) bind(C, name="hfdcp_writer_wait") result(st)
       import :: c_ptr, c_int
       type(c_ptr), value :: w
       integer(c_int) :: st
     end function c_writer_wait
     function c_writer_test(w, done) bind(C, name="hfdcp_writer_test") result(st)
       import :: c_ptr, c_int
       type(c_ptr), value :: w
       integer(c_int), intent(out) :: done
       integer(c_int) :: st
     end function c_writer_test
     subroutine c_writer_free(w) bind(C, name="hfdcp_writer_free")
       import :: c_ptr
       type(c_ptr), value :: w
     end subroutine c_writer_free
     function c_consolidate(comm, idir, odir, map, buf, cast, cdtype, nthreads, info, nosums, &
          progress, arg) &
          bind(C, name="hfdcp_f__consolidate") result(st)
       import :: c_int, c_ptr, c_char, c_int64_t, c_funptr
       integer(c_int), value :: comm
       character(kind=c_char), intent(in) :: idir(*), odir(*)
       type(c_ptr), value :: map
       integer(c_int64_t), value :: buf
       integer(c_int), value :: cast, cdtype, nthreads, info, nosums
       type(c_funptr), value :: progress
       type(c_ptr), value :: arg
       integer(c_int) :: st
     end function c_consolidate
     function c_version() bind(C, name="hfdcp_version") result(p)
       import :: c_ptr
       type(c_ptr) :: p
     end function c_version
     ! 7. Memory: frees the buffer kept between saves and loads.
     subroutine hfdcp_release_buffers() bind(C, name="hfdcp_release_buffers")
     end subroutine hfdcp_release_buffers
  end interface

  ! The message of the last error found by this module itself.
  logical, save :: f_error_set = .false.
  character(len=:), allocatable, save :: f_error_msg

contains

  ! ---- helpers ----

  ! A Fortran string as a NUL-terminated C string (trailing blanks dropped).
  pure function cstr(s) result(c)
    character(len=*), intent(in) :: s
    character(kind=c_char, len=len_trim(s) + 1) :: c
    c = trim(s) // c_null_char
  end function cstr

  ! A copy of the C string at p ("" for a NULL pointer).
  function fstr(p) result(s)
    type(c_ptr), intent(in) :: p
    character(len=:), allocatable :: s
    character(kind=c_char), pointer :: chars(:)
    integer(c_size_t) :: n, i
    if (.not. c_associated(p)) then
       s = ""
       return
    end if
    n = c_strlen(p)
    allocate(character(len=n) :: s)
    if (n == 0) return
    call c_f_pointer(p, chars, [n])
    do i = 1, n
       s(i:i) = chars(i)
    end do
  end function fstr

  ! Records a failure found in Fortran and returns its status.
  function fail(status, msg) result(st)
    integer, intent(in) :: status
    character(len=*), intent(in) :: msg
    integer :: st
    f_error_set = .true.
    f_error_msg = msg
    st = status
  end function fail

  ! Every call into C forgets the module's own last message.
  subroutine c_call()
    f_error_set = .false.
  end subroutine c_call

  function itoa(i) result(s)
    integer(int64), intent(in) :: i
    character(len=:), allocatable :: s
    character(len=24) :: buf
    write (buf, '(I0)') i
    s = trim(buf)
  end function itoa

  ! The reverse of a Fortran-order vector (C order).
  pure function rev(v) result(r)
    integer(int64), intent(in) :: v(:)
    integer(int64) :: r(size(v))
    integer :: i
    do i = 1, size(v)
       r(i) = v(size(v) - i + 1)
    end do
  end function rev

  function comm_f08(comm) result(c)
    type(MPI_Comm), intent(in) :: comm
    integer(c_int) :: c
    c = int(comm%MPI_VAL, c_int)
  end function comm_f08

  ! ---- 1. status codes ----

  function hfdcp_status_name(status) result(s)
    integer, intent(in) :: status
    character(len=:), allocatable :: s
    s = fstr(c_status_name(int(status, c_int)))
  end function hfdcp_status_name

  function hfdcp_status_string(status) result(s)
    integer, intent(in) :: status
    character(len=:), allocatable :: s
    s = fstr(c_status_string(int(status, c_int)))
  end function hfdcp_status_string

  function hfdcp_last_error() result(s)
    character(len=:), allocatable :: s
    if (f_error_set) then
       s = f_error_msg
    else
       s = fstr(c_last_error())
    end if
  end function hfdcp_last_error

  ! ---- 2. dtypes ----

  function hfdcp_dtype_bits(dtype) result(bits)
    integer, intent(in) :: dtype
    integer :: bits
    bits = int(c_dtype_bits(int(dtype, c_int)))
  end function hfdcp_dtype_bits

  function hfdcp_dtype_name(dtype) result(s)
    integer, intent(in) :: dtype
    character(len=:), allocatable :: s
    s = fstr(c_dtype_name(int(dtype, c_int)))
  end function hfdcp_dtype_name

  function hfdcp_dtype_from_name(name, dtype) result(st)
    character(len=*), intent(in) :: name
    integer, intent(out) :: dtype
    integer :: st
    integer(c_int) :: d
    call c_call()
    d = -1
    st = int(c_dtype_from_name(cstr(name), d))
    dtype = int(d)
  end function hfdcp_dtype_from_name

  ! ---- 3. key maps ----

  function hfdcp_key_map_create(km) result(st)
    type(hfdcp_key_map), intent(out) :: km
    integer :: st
    call c_call()
    st = int(c_key_map_create(km%p))
  end function hfdcp_key_map_create

  function hfdcp_key_map_add(km, pattern, replacement) result(st)
    type(hfdcp_key_map), intent(in) :: km
    character(len=*), intent(in) :: pattern, replacement
    integer :: st
    call c_call()
    st = int(c_key_map_add(km%p, cstr(pattern), cstr(replacement)))
  end function hfdcp_key_map_add

  ! out is allocated to the renamed key, whatever its length.
  function hfdcp_key_map_apply(km, key, out) result(st)
    type(hfdcp_key_map), intent(in) :: km
    character(len=*), intent(in) :: key
    character(len=:), allocatable, intent(out) :: out
    integer :: st
    character(kind=c_char), allocatable :: buf(:)
    integer(c_size_t) :: n
    integer :: i, k
    n = int(2 * len_trim(key) + 64, c_size_t)
    do
       call c_call()
       allocate(buf(n))
       st = int(c_key_map_apply(km%p, cstr(key), buf, n))
       if (st /= HFDCP_ERR_RANGE .or. n > 2_c_size_t**40) exit
       deallocate(buf)
       n = 4 * n
    end do
    if (st /= HFDCP_OK) return
    k = 0
    do i = 1, size(buf)
       if (buf(i) == c_null_char) exit
       k = i
    end do
    allocate(character(len=k) :: out)
    do i = 1, k
       out(i:i) = buf(i)
    end do
  end function hfdcp_key_map_apply

  subroutine hfdcp_key_map_free(km)
    type(hfdcp_key_map), intent(inout) :: km
    call c_key_map_free(km%p)
    km%p = c_null_ptr
  end subroutine hfdcp_key_map_free

  ! ---- 4. reader ----

  function reader_open_int(comm, path, reader, opts) result(st)
    integer, intent(in) :: comm
    character(len=*), intent(in) :: path
    type(hfdcp_reader), intent(out) :: reader
    type(hfdcp_load_options), intent(in), optional :: opts
    integer :: st
    type(c_ptr) :: km
    integer(c_int) :: info
    km = c_null_ptr
    info = int(MPI_INFO_NULL%MPI_VAL, c_int)
    if (present(opts)) then
       km = opts%key_map%p
       info = int(opts%info%MPI_VAL, c_int)
    end if
    call c_call()
    st = int(c_reader_open(int(comm, c_int), cstr(path), km, info, reader%p))
  end function reader_open_int

  function reader_open_f08(comm, path, reader, opts) result(st)
    type(MPI_Comm), intent(in) :: comm
    character(len=*), intent(in) :: path
    type(hfdcp_reader), intent(out) :: reader
    type(hfdcp_load_options), intent(in), optional :: opts
    integer :: st
    st = reader_open_int(int(comm_f08(comm)), path, reader, opts)
  end function reader_open_f08

  function hfdcp_reader_count(reader) result(n)
    type(hfdcp_reader), intent(in) :: reader
    integer(int64) :: n
    n = int(c_reader_count(reader%p), int64)
  end function hfdcp_reader_count

  subroutine info_from_c(ci, info)
    type(c_tensor_info), intent(in) :: ci
    type(hfdcp_tensor_info), intent(out) :: info
    integer(c_int64_t), pointer :: shp(:)
    info%name = fstr(ci%name)
    info%dtype = int(ci%dtype)
    info%ndim = int(ci%ndim)
    allocate(info%shape(info%ndim))
    if (info%ndim > 0) then
       call c_f_pointer(ci%shape, shp, [info%ndim])
       info%shape = rev(int(shp, int64))
    end if
  end subroutine info_from_c

  ! Tensor i, 1 <= i <= hfdcp_reader_count(reader), sorted by name; i is
  ! a default or an int64 integer.
  function reader_tensor_i4(reader, i, info) result(st)
    type(hfdcp_reader), intent(in) :: reader
    integer(int32), intent(in) :: i
    type(hfdcp_tensor_info), intent(out) :: info
    integer :: st
    st = reader_tensor_i8(reader, int(i, int64), info)
  end function reader_tensor_i4

  function reader_tensor_i8(reader, i, info) result(st)
    type(hfdcp_reader), intent(in) :: reader
    integer(int64), intent(in) :: i
    type(hfdcp_tensor_info), intent(out) :: info
    integer :: st
    type(c_tensor_info) :: ci
    if (i < 1) then
       st = fail(HFDCP_ERR_RANGE, "hfdcp_reader_tensor: index " // itoa(i) &
            // " (Fortran indices start at 1)")
       return
    end if
    call c_call()
    st = int(c_reader_tensor(reader%p, int(i - 1, c_size_t), ci))
    if (st == HFDCP_OK) call info_from_c(ci, info)
  end function reader_tensor_i8

  function hfdcp_reader_find(reader, name, info) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    type(hfdcp_tensor_info), intent(out) :: info
    integer :: st
    type(c_tensor_info) :: ci
    call c_call()
    st = int(c_reader_find(reader%p, cstr(name), ci))
    if (st == HFDCP_OK) call info_from_c(ci, info)
  end function hfdcp_reader_find

  ! Shared by every reader_add_*: checks, reverses and calls C.  A request
  ! refused here is failed in C (hfdcp__reader_add_failed) with the reason,
  ! so that the next load fails on every rank with that same message.
  function reader_add_any(reader, name, kind_dtype, rnk, shp, contiguous, &
       dest, offsets, dtype) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    integer, intent(in) :: kind_dtype, rnk
    integer(int64), intent(in) :: shp(:)
    logical, intent(in) :: contiguous
    type(c_ptr), intent(in) :: dest
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st, d
    integer(c_int64_t) :: off(max(rnk, 1)), sz(max(rnk, 1))
    character(len=:), allocatable :: why
    d = kind_dtype
    if (present(dtype)) d = dtype
    why = check_array(rnk, contiguous, kind_dtype, d, offsets, "offsets")
    if (len(why) > 0) then
       call c_call()
       st = int(c_reader_add_failed(reader%p, int(HFDCP_ERR_ARG, c_int), cstr(name), &
            cstr(why)))
       return
    end if
    off = 0
    sz = 0
    if (rnk > 0) then
       sz(1:rnk) = rev(shp)
       if (present(offsets)) off(1:rnk) = rev(offsets)
    end if
    call c_call()
    st = int(c_reader_add(reader%p, cstr(name), int(d, c_int), int(rnk, c_int), &
         off, sz, dest))
  end function reader_add_any

  ! "" or why an array argument cannot be used.
  function check_array(rnk, contiguous, kind_dtype, d, vec, vec_name) result(why)
    integer, intent(in) :: rnk, kind_dtype, d
    logical, intent(in) :: contiguous
    integer(int64), intent(in), optional :: vec(:)
    character(len=*), intent(in) :: vec_name
    character(len=:), allocatable :: why
    why = ""
    if (.not. contiguous) then
       why = "the Fortran array is not contiguous (hfdcp does not copy: " &
            // "pass a contiguous array)"
    else if (rnk > HFDCP_MAX_NDIM) then
       why = "the Fortran array has more than HFDCP_MAX_NDIM dimensions"
    else if (c_dtype_bits(int(d, c_int)) /= c_dtype_bits(int(kind_dtype, c_int))) then
       why = "dtype " // hfdcp_dtype_name(d) // " is not as wide as the " &
            // "Fortran array's kind (" // hfdcp_dtype_name(kind_dtype) // ")"
    else if (present(vec)) then
       if (size(vec) /= rnk) why = vec_name // " has " &
            // itoa(int(size(vec), int64)) // " entries for an array of rank " &
            // itoa(int(rnk, int64))
    end if
  end function check_array

  function reader_add_r4(reader, name, dest, offsets, dtype) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    real(real32), dimension(..), target, intent(inout) :: dest
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(dest)) p = c_loc(dest)
    st = reader_add_any(reader, name, HFDCP_F32, rank(dest), &
         shape(dest, kind=int64), is_contiguous(dest), p, offsets, dtype)
  end function reader_add_r4

  function reader_add_r8(reader, name, dest, offsets, dtype) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    real(real64), dimension(..), target, intent(inout) :: dest
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(dest)) p = c_loc(dest)
    st = reader_add_any(reader, name, HFDCP_F64, rank(dest), &
         shape(dest, kind=int64), is_contiguous(dest), p, offsets, dtype)
  end function reader_add_r8

  function reader_add_i1(reader, name, dest, offsets, dtype) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    integer(int8), dimension(..), target, intent(inout) :: dest
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(dest)) p = c_loc(dest)
    st = reader_add_any(reader, name, HFDCP_I8, rank(dest), &
         shape(dest, kind=int64), is_contiguous(dest), p, offsets, dtype)
  end function reader_add_i1

  function reader_add_i2(reader, name, dest, offsets, dtype) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    integer(int16), dimension(..), target, intent(inout) :: dest
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(dest)) p = c_loc(dest)
    st = reader_add_any(reader, name, HFDCP_I16, rank(dest), &
         shape(dest, kind=int64), is_contiguous(dest), p, offsets, dtype)
  end function reader_add_i2

  function reader_add_i4(reader, name, dest, offsets, dtype) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    integer(int32), dimension(..), target, intent(inout) :: dest
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(dest)) p = c_loc(dest)
    st = reader_add_any(reader, name, HFDCP_I32, rank(dest), &
         shape(dest, kind=int64), is_contiguous(dest), p, offsets, dtype)
  end function reader_add_i4

  function reader_add_i8(reader, name, dest, offsets, dtype) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    integer(int64), dimension(..), target, intent(inout) :: dest
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(dest)) p = c_loc(dest)
    st = reader_add_any(reader, name, HFDCP_I64, rank(dest), &
         shape(dest, kind=int64), is_contiguous(dest), p, offsets, dtype)
  end function reader_add_i8

  function reader_add_c4(reader, name, dest, offsets, dtype) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    complex(real32), dimension(..), target, intent(inout) :: dest
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(dest)) p = c_loc(dest)
    st = reader_add_any(reader, name, HFDCP_C64, rank(dest), &
         shape(dest, kind=int64), is_contiguous(dest), p, offsets, dtype)
  end function reader_add_c4

  function reader_add_l1(reader, name, dest, offsets, dtype) result(st)
    type(hfdcp_reader), intent(in) :: reader
    character(len=*), intent(in) :: name
    logical(c_bool), dimension(..), target, intent(inout) :: dest
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(dest)) p = c_loc(dest)
    st = reader_add_any(reader, name, HFDCP_BOOL, rank(dest), &
         shape(dest, kind=int64), is_contiguous(dest), p, offsets, dtype)
  end function reader_add_l1

  function hfdcp_reader_load(reader) result(st)
    type(hfdcp_reader), intent(in) :: reader
    integer :: st
    call c_call()
    st = int(c_reader_load(reader%p))
  end function hfdcp_reader_load

  subroutine hfdcp_reader_free(reader)
    type(hfdcp_reader), intent(inout) :: reader
    call c_reader_free(reader%p)
    reader%p = c_null_ptr
  end subroutine hfdcp_reader_free

  ! ---- 5. file maps ----

  function hfdcp_file_map_create(map) result(st)
    type(hfdcp_file_map), intent(out) :: map
    integer :: st
    call c_call()
    st = int(c_file_map_create(map%p))
  end function hfdcp_file_map_create

  function hfdcp_file_map_set(map, name, file_index) result(st)
    type(hfdcp_file_map), intent(in) :: map
    character(len=*), intent(in) :: name
    integer, intent(in) :: file_index
    integer :: st
    call c_call()
    st = int(c_file_map_set(map%p, cstr(name), int(file_index, c_int)))
  end function hfdcp_file_map_set

  function hfdcp_file_map_get(map, name, file_index) result(st)
    type(hfdcp_file_map), intent(in) :: map
    character(len=*), intent(in) :: name
    integer, intent(out) :: file_index
    integer :: st
    integer(c_int) :: idx
    call c_call()
    idx = 0
    st = int(c_file_map_get(map%p, cstr(name), idx))
    file_index = int(idx)
  end function hfdcp_file_map_get

  subroutine hfdcp_file_map_free(map)
    type(hfdcp_file_map), intent(inout) :: map
    call c_file_map_free(map%p)
    map%p = c_null_ptr
  end subroutine hfdcp_file_map_free

  function hfdcp_file_map_size(map) result(n)
    type(hfdcp_file_map), intent(in) :: map
    integer(int64) :: n
    n = int(c_file_map_size(map%p), int64)
  end function hfdcp_file_map_size

  ! Entry i, 1 <= i <= hfdcp_file_map_size(map), in the order first set.
  function file_map_entry_i4(map, i, name, file_index) result(st)
    type(hfdcp_file_map), intent(in) :: map
    integer(int32), intent(in) :: i
    character(len=:), allocatable, intent(out) :: name
    integer, intent(out) :: file_index
    integer :: st
    st = file_map_entry_i8(map, int(i, int64), name, file_index)
  end function file_map_entry_i4

  function file_map_entry_i8(map, i, name, file_index) result(st)
    type(hfdcp_file_map), intent(in) :: map
    integer(int64), intent(in) :: i
    character(len=:), allocatable, intent(out) :: name
    integer, intent(out) :: file_index
    integer :: st
    type(c_ptr) :: p
    integer(c_int) :: idx
    if (i < 1) then
       st = fail(HFDCP_ERR_RANGE, "hfdcp_file_map_entry: index " // itoa(i) &
            // " (Fortran indices start at 1)")
       return
    end if
    call c_call()
    idx = 0
    p = c_null_ptr
    st = int(c_file_map_entry(map%p, int(i - 1, c_size_t), p, idx))
    name = fstr(p)
    file_index = int(idx)
  end function file_map_entry_i8

  function hfdcp_file_map_warning(map) result(s)
    type(hfdcp_file_map), intent(in) :: map
    character(len=:), allocatable :: s
    s = fstr(c_file_map_warning(map%p))
  end function hfdcp_file_map_warning

  function hfdcp_extract_file_index(filename, file_index) result(st)
    character(len=*), intent(in) :: filename
    integer, intent(out) :: file_index
    integer :: st
    integer(c_int) :: idx
    call c_call()
    idx = 0
    st = int(c_extract_file_index(cstr(filename), idx))
    file_index = int(idx)
  end function hfdcp_extract_file_index

  function hfdcp_file_map_from_reference(reference_model_path, map, key_map) result(st)
    character(len=*), intent(in) :: reference_model_path
    type(hfdcp_file_map), intent(out) :: map
    type(hfdcp_key_map), intent(in), optional :: key_map
    integer :: st
    type(c_ptr) :: km
    km = c_null_ptr
    if (present(key_map)) km = key_map%p
    call c_call()
    st = int(c_file_map_from_reference(cstr(reference_model_path), km, map%p))
  end function hfdcp_file_map_from_reference

  ! ---- 5. writer ----

  function writer_open_int(comm, path, writer, opts) result(st)
    integer, intent(in) :: comm
    character(len=*), intent(in) :: path
    type(hfdcp_writer), intent(out) :: writer
    type(hfdcp_save_options), intent(in), optional :: opts
    integer :: st
    type(hfdcp_save_options) :: o
    character(kind=c_char, len=:), allocatable, target :: cpath
    type(c_ptr) :: cp
    if (present(opts)) o = opts
    cp = c_null_ptr
    if (allocated(o%consolidated_output_path)) then
       cpath = cstr(o%consolidated_output_path)
       cp = c_loc(cpath)
    end if
    call c_call()
    st = int(c_writer_open(int(comm, c_int), cstr(path), o%file_map%p, &
         int(o%max_shard_bytes, c_int64_t), merge(1_c_int, 0_c_int, o%save_sharded), &
         cp, int(o%thread_count, c_int), int(o%num_threads_consolidation, c_int), &
         int(o%info%MPI_VAL, c_int), int(o%snapshot_max_bytes, c_int64_t), &
         merge(0_c_int, 1_c_int, o%checksums), writer%p))
  end function writer_open_int

  function writer_open_f08(comm, path, writer, opts) result(st)
    type(MPI_Comm), intent(in) :: comm
    character(len=*), intent(in) :: path
    type(hfdcp_writer), intent(out) :: writer
    type(hfdcp_save_options), intent(in), optional :: opts
    integer :: st
    st = writer_open_int(int(comm_f08(comm)), path, writer, opts)
  end function writer_open_f08

  ! Shared by every writer_add_*.  global_shape and offsets are in Fortran
  ! order; offsets default to zeros.  A chunk refused here is failed in C
  ! (hfdcp__writer_add_failed), so that the next commit fails on every rank
  ! with that same message.
  function writer_add_any(writer, name, kind_dtype, rnk, shp, contiguous, &
       data, global_shape, offsets, dtype) result(st)
    type(hfdcp_writer), intent(in) :: writer
    character(len=*), intent(in) :: name
    integer, intent(in) :: kind_dtype, rnk
    integer(int64), intent(in) :: shp(:)
    logical, intent(in) :: contiguous
    type(c_ptr), intent(in) :: data
    integer(int64), intent(in) :: global_shape(:)
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st, d
    integer(c_int64_t) :: gs(max(rnk, 1)), off(max(rnk, 1)), sz(max(rnk, 1))
    character(len=:), allocatable :: why
    d = kind_dtype
    if (present(dtype)) d = dtype
    why = check_array(rnk, contiguous, kind_dtype, d, offsets, "offsets")
    if (len(why) == 0 .and. size(global_shape) /= rnk) &
         why = "global_shape has " // itoa(int(size(global_shape), int64)) &
         // " entries for an array of rank " // itoa(int(rnk, int64))
    gs = 0
    off = 0
    sz = 0
    if (len(why) > 0) then
       call c_call()
       st = int(c_writer_add_failed(writer%p, int(HFDCP_ERR_ARG, c_int), cstr(name), &
            cstr(why)))
       return
    end if
    if (rnk > 0) then
       gs(1:rnk) = rev(global_shape)
       sz(1:rnk) = rev(shp)
       if (present(offsets)) off(1:rnk) = rev(offsets)
    end if
    call c_call()
    st = int(c_writer_add(writer%p, cstr(name), int(d, c_int), int(rnk, c_int), &
         gs, off, sz, data))
  end function writer_add_any

  function writer_add_r4(writer, name, data, global_shape, offsets, dtype) result(st)
    type(hfdcp_writer), intent(in) :: writer
    character(len=*), intent(in) :: name
    real(real32), dimension(..), target, intent(in) :: data
    integer(int64), intent(in) :: global_shape(:)
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(data)) p = c_loc(data)
    st = writer_add_any(writer, name, HFDCP_F32, rank(data), &
         shape(data, kind=int64), is_contiguous(data), p, global_shape, offsets, dtype)
  end function writer_add_r4

  function writer_add_r8(writer, name, data, global_shape, offsets, dtype) result(st)
    type(hfdcp_writer), intent(in) :: writer
    character(len=*), intent(in) :: name
    real(real64), dimension(..), target, intent(in) :: data
    integer(int64), intent(in) :: global_shape(:)
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(data)) p = c_loc(data)
    st = writer_add_any(writer, name, HFDCP_F64, rank(data), &
         shape(data, kind=int64), is_contiguous(data), p, global_shape, offsets, dtype)
  end function writer_add_r8

  function writer_add_i1(writer, name, data, global_shape, offsets, dtype) result(st)
    type(hfdcp_writer), intent(in) :: writer
    character(len=*), intent(in) :: name
    integer(int8), dimension(..), target, intent(in) :: data
    integer(int64), intent(in) :: global_shape(:)
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(data)) p = c_loc(data)
    st = writer_add_any(writer, name, HFDCP_I8, rank(data), &
         shape(data, kind=int64), is_contiguous(data), p, global_shape, offsets, dtype)
  end function writer_add_i1

  function writer_add_i2(writer, name, data, global_shape, offsets, dtype) result(st)
    type(hfdcp_writer), intent(in) :: writer
    character(len=*), intent(in) :: name
    integer(int16), dimension(..), target, intent(in) :: data
    integer(int64), intent(in) :: global_shape(:)
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(data)) p = c_loc(data)
    st = writer_add_any(writer, name, HFDCP_I16, rank(data), &
         shape(data, kind=int64), is_contiguous(data), p, global_shape, offsets, dtype)
  end function writer_add_i2

  function writer_add_i4(writer, name, data, global_shape, offsets, dtype) result(st)
    type(hfdcp_writer), intent(in) :: writer
    character(len=*), intent(in) :: name
    integer(int32), dimension(..), target, intent(in) :: data
    integer(int64), intent(in) :: global_shape(:)
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(data)) p = c_loc(data)
    st = writer_add_any(writer, name, HFDCP_I32, rank(data), &
         shape(data, kind=int64), is_contiguous(data), p, global_shape, offsets, dtype)
  end function writer_add_i4

  function writer_add_i8(writer, name, data, global_shape, offsets, dtype) result(st)
    type(hfdcp_writer), intent(in) :: writer
    character(len=*), intent(in) :: name
    integer(int64), dimension(..), target, intent(in) :: data
    integer(int64), intent(in) :: global_shape(:)
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(data)) p = c_loc(data)
    st = writer_add_any(writer, name, HFDCP_I64, rank(data), &
         shape(data, kind=int64), is_contiguous(data), p, global_shape, offsets, dtype)
  end function writer_add_i8

  function writer_add_c4(writer, name, data, global_shape, offsets, dtype) result(st)
    type(hfdcp_writer), intent(in) :: writer
    character(len=*), intent(in) :: name
    complex(real32), dimension(..), target, intent(in) :: data
    integer(int64), intent(in) :: global_shape(:)
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(data)) p = c_loc(data)
    st = writer_add_any(writer, name, HFDCP_C64, rank(data), &
         shape(data, kind=int64), is_contiguous(data), p, global_shape, offsets, dtype)
  end function writer_add_c4

  function writer_add_l1(writer, name, data, global_shape, offsets, dtype) result(st)
    type(hfdcp_writer), intent(in) :: writer
    character(len=*), intent(in) :: name
    logical(c_bool), dimension(..), target, intent(in) :: data
    integer(int64), intent(in) :: global_shape(:)
    integer(int64), intent(in), optional :: offsets(:)
    integer, intent(in), optional :: dtype
    integer :: st
    type(c_ptr) :: p
    p = c_null_ptr
    if (is_contiguous(data)) p = c_loc(data)
    st = writer_add_any(writer, name, HFDCP_BOOL, rank(data), &
         shape(data, kind=int64), is_contiguous(data), p, global_shape, offsets, dtype)
  end function writer_add_l1

  function hfdcp_writer_commit(writer) result(st)
    type(hfdcp_writer), intent(in) :: writer
    integer :: st
    call c_call()
    st = int(c_writer_commit(writer%p))
  end function hfdcp_writer_commit

  ! Collective: returns once this rank's chunks are copied (or written);
  ! the arrays given to hfdcp_writer_add may then change.
  function hfdcp_writer_commit_async(writer) result(st)
    type(hfdcp_writer), intent(in) :: writer
    integer :: st
    call c_call()
    st = int(c_writer_commit_async(writer%p))
  end function hfdcp_writer_commit_async

  ! Collective: the final status of the asynchronous commit.
  function hfdcp_writer_wait(writer) result(st)
    type(hfdcp_writer), intent(in) :: writer
    integer :: st
    call c_call()
    st = int(c_writer_wait(writer%p))
  end function hfdcp_writer_wait

  ! Local: done is .true. once this rank's background work has ended.
  function hfdcp_writer_test(writer, done) result(st)
    type(hfdcp_writer), intent(in) :: writer
    logical, intent(out) :: done
    integer :: st
    integer(c_int) :: d
    call c_call()
    d = 0
    st = int(c_writer_test(writer%p, d))
    done = d /= 0
  end function hfdcp_writer_test

  subroutine hfdcp_writer_free(writer)
    type(hfdcp_writer), intent(inout) :: writer
    call c_writer_free(writer%p)
    writer%p = c_null_ptr
  end subroutine hfdcp_writer_free

  ! ---- 6. consolidation ----

  function consolidate_int(comm, input_dir, output_dir, map, opts) result(st)
    integer, intent(in) :: comm
    character(len=*), intent(in) :: input_dir, output_dir
    type(hfdcp_file_map), intent(in), optional :: map
    type(hfdcp_consolidate_options), intent(in), optional :: opts
    integer :: st
    type(hfdcp_consolidate_options) :: o
    type(c_ptr) :: m
    m = c_null_ptr
    if (present(map)) m = map%p
    if (present(opts)) o = opts
    call c_call()
    st = int(c_consolidate(int(comm, c_int), cstr(input_dir), cstr(output_dir), m, &
         int(o%buffer_bytes, c_int64_t), merge(1_c_int, 0_c_int, o%cast), &
         int(o%cast_dtype, c_int), int(o%num_threads, c_int), &
         int(o%info%MPI_VAL, c_int), merge(1_c_int, 0_c_int, o%no_checksums), &
         o%progress, o%progress_arg))
  end function consolidate_int

  function consolidate_f08(comm, input_dir, output_dir, map, opts) result(st)
    type(MPI_Comm), intent(in) :: comm
    character(len=*), intent(in) :: input_dir, output_dir
    type(hfdcp_file_map), intent(in), optional :: map
    type(hfdcp_consolidate_options), intent(in), optional :: opts
    integer :: st
    st = consolidate_int(int(comm_f08(comm)), input_dir, output_dir, map, opts)
  end function consolidate_f08

  ! ---- 8. version (7. hfdcp_release_buffers is a bind(C) interface above) ----

  function hfdcp_version() result(s)
    character(len=:), allocatable :: s
    s = fstr(c_version())
  end function hfdcp_version

end module hfdcp
