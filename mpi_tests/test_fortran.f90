! test_fortran.f90 - the Fortran module hfdcp against the C library: every
! binding is called and its results checked against values known from the C
! side (status names, dtype names, renamed keys, shapes in the file's
! header, bytes written and read back).
!
!   mpirun -n P test_fortran SCRATCH_DIR
!
! Each case agrees on pass/fail across ranks; rank 0 prints it.  Exit status
! 1 when any case fails.  Run by CTest at 1, 2 and 3 ranks.
module fortran_test_util
  use, intrinsic :: iso_c_binding
  use, intrinsic :: iso_fortran_env, only: int8, int16, int32, int64, &
       real32, real64, error_unit
  use mpi_f08
  use hfdcp
  implicit none
  integer :: rank = 0, nranks = 1, failures = 0, case_failures = 0
  character(len=:), allocatable :: scratch
  integer, target :: progress_calls = 0
contains
  subroutine expect(cond, what)
    logical, intent(in) :: cond
    character(len=*), intent(in) :: what
    if (.not. cond) then
       write (error_unit, '(a, i0, a)') "  rank ", rank, ": expected " // what
       case_failures = case_failures + 1
    end if
  end subroutine expect

  ! status st must be want, and when want is an error the message must
  ! contain `part`.
  subroutine expect_status(st, want, what, part)
    integer, intent(in) :: st, want
    character(len=*), intent(in) :: what
    character(len=*), intent(in), optional :: part
    character(len=:), allocatable :: msg
    msg = hfdcp_last_error()
    if (st /= want) then
       write (error_unit, '(a, i0, a)') "  rank ", rank, ": " // what // " returned " // &
            hfdcp_status_name(st) // " (want " // hfdcp_status_name(want) // "): " // msg
       case_failures = case_failures + 1
    else if (present(part)) then
       if (index(msg, part) == 0) then
          write (error_unit, '(a, i0, a)') "  rank ", rank, ": " // what // &
               ": message '" // msg // "' lacks '" // part // "'"
          case_failures = case_failures + 1
       end if
    end if
  end subroutine expect_status

  subroutine end_case(name)
    character(len=*), intent(in) :: name
    integer :: total
    call MPI_Allreduce(case_failures, total, 1, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD)
    if (rank == 0) then
       if (total == 0) then
          write (*, '(a)') "PASS " // name
       else
          write (*, '(a)') "FAIL " // name
       end if
    end if
    if (total /= 0) failures = failures + 1
    case_failures = 0
  end subroutine end_case

  function path(name) result(p)
    character(len=*), intent(in) :: name
    character(len=:), allocatable :: p
    p = scratch // "/" // name
  end function path

  ! The whole file as a string (to look at a safetensors header).
  function slurp(file) result(s)
    character(len=*), intent(in) :: file
    character(len=:), allocatable :: s
    integer :: u, n, ios
    open (newunit=u, file=file, access="stream", form="unformatted", &
         action="read", status="old", iostat=ios)
    if (ios /= 0) then
       s = ""
       return
    end if
    inquire (unit=u, size=n)
    allocate(character(len=n) :: s)
    read (u, iostat=ios) s
    close (u)
  end function slurp

  ! Columns [c0, c0+n) of m columns for this rank (block distribution).
  subroutine my_columns(m, c0, n)
    integer, intent(in) :: m
    integer, intent(out) :: c0, n
    c0 = (m * rank) / nranks
    n = (m * (rank + 1)) / nranks - c0
  end subroutine my_columns

  subroutine count_progress(done, total, arg) bind(C)
    integer(c_int64_t), value :: done, total
    type(c_ptr), value :: arg
    integer, pointer :: calls
    call c_f_pointer(arg, calls)
    if (done >= 0 .and. done <= total) calls = calls + 1
  end subroutine count_progress
end module fortran_test_util

program test_fortran
  use fortran_test_util
  implicit none
  character(len=4096) :: arg

  call MPI_Init()
  call MPI_Comm_rank(MPI_COMM_WORLD, rank)
  call MPI_Comm_size(MPI_COMM_WORLD, nranks)
  call get_command_argument(1, arg)
  if (len_trim(arg) == 0) then
     if (rank == 0) write (error_unit, '(a)') "usage: test_fortran SCRATCH_DIR"
     call MPI_Abort(MPI_COMM_WORLD, 2)
  end if
  write (arg, '(a, a, i0)') trim(arg), "/np", nranks
  scratch = trim(arg)
  if (rank == 0) call execute_command_line("rm -rf '" // scratch // "' && mkdir -p '" &
       // scratch // "'")
  call MPI_Barrier(MPI_COMM_WORLD)

  call fortran_should_name_statuses_and_dtypes_as_c()
  call fortran_should_rename_keys()
  call fortran_should_save_column_major_as_reversed_shape()
  call fortran_should_refuse_non_contiguous_arrays_on_every_rank()
  call fortran_should_report_the_refusal_itself_at_commit()
  call fortran_should_report_the_refusal_itself_at_load()
  call fortran_should_map_files()
  call fortran_should_save_sharded_and_consolidate()
  call fortran_should_commit_asynchronously()

  call MPI_Finalize()
  if (failures /= 0) stop 1

contains

  subroutine fortran_should_name_statuses_and_dtypes_as_c()
    integer :: d, st, i
    character(len=12), parameter :: names(0:21) = [character(len=12) :: &
         "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", &
         "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", &
         "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
    integer, parameter :: consts(0:21) = [HFDCP_BOOL, HFDCP_F4, HFDCP_F6_E2M3, &
         HFDCP_F6_E3M2, HFDCP_U8, HFDCP_I8, HFDCP_F8_E5M2, HFDCP_F8_E4M3, &
         HFDCP_F8_E8M0, HFDCP_F8_E4M3FNUZ, HFDCP_F8_E5M2FNUZ, HFDCP_I16, &
         HFDCP_U16, HFDCP_F16, HFDCP_BF16, HFDCP_I32, HFDCP_U32, HFDCP_F32, &
         HFDCP_C64, HFDCP_F64, HFDCP_I64, HFDCP_U64]
    integer, parameter :: statuses(12) = [HFDCP_OK, HFDCP_ERR_ARG, &
         HFDCP_ERR_NOMEM, HFDCP_ERR_IO, HFDCP_ERR_FORMAT, HFDCP_ERR_PLAN, &
         HFDCP_ERR_NOT_FOUND, HFDCP_ERR_MPI, HFDCP_ERR_MISMATCH, &
         HFDCP_ERR_UNSUPPORTED, HFDCP_ERR_RANGE, HFDCP_ERR_INTERNAL]
    character(len=21), parameter :: snames(12) = [character(len=21) :: &
         "HFDCP_OK", "HFDCP_ERR_ARG", "HFDCP_ERR_NOMEM", "HFDCP_ERR_IO", &
         "HFDCP_ERR_FORMAT", "HFDCP_ERR_PLAN", "HFDCP_ERR_NOT_FOUND", &
         "HFDCP_ERR_MPI", "HFDCP_ERR_MISMATCH", "HFDCP_ERR_UNSUPPORTED", &
         "HFDCP_ERR_RANGE", "HFDCP_ERR_INTERNAL"]
    character(len=16) :: v

    do i = 1, 12
       call expect(hfdcp_status_name(statuses(i)) == trim(snames(i)), &
            "status constant of " // trim(snames(i)))
    end do
    call expect(hfdcp_status_name(5) == "HFDCP_ERR_UNKNOWN", "HFDCP_ERR_UNKNOWN for 5")
    call expect(hfdcp_status_string(HFDCP_ERR_IO) == "I/O error", "status string of IO")
    do i = 0, 21
       call expect(consts(i) == i, "dtype constant " // trim(names(i)))
       call expect(hfdcp_dtype_name(consts(i)) == trim(names(i)), "dtype name " // trim(names(i)))
       st = hfdcp_dtype_from_name(trim(names(i)), d)
       call expect_status(st, HFDCP_OK, "hfdcp_dtype_from_name(" // trim(names(i)) // ")")
       call expect(d == consts(i), "dtype from name " // trim(names(i)))
    end do
    call expect(hfdcp_dtype_bits(HFDCP_BF16) == 16, "BF16: 16 bits")
    call expect(hfdcp_dtype_bits(HFDCP_F6_E2M3) == 6, "F6_E2M3: 6 bits")
    call expect(hfdcp_dtype_bits(HFDCP_DTYPE_COUNT) == 0, "HFDCP_DTYPE_COUNT: 0 bits")
    call expect(hfdcp_dtype_name(HFDCP_DTYPE_COUNT) == "", "no name for HFDCP_DTYPE_COUNT")
    st = hfdcp_dtype_from_name("i64", d)
    call expect_status(st, HFDCP_ERR_FORMAT, "hfdcp_dtype_from_name(i64)")
    write (v, '(i0, ".", i0, ".", i0)') HFDCP_VERSION_MAJOR, HFDCP_VERSION_MINOR, &
         HFDCP_VERSION_PATCH
    call expect(hfdcp_version() == trim(v), "hfdcp_version() " // hfdcp_version() // &
         " == the module's " // trim(v))
    call hfdcp_release_buffers()
    call end_case("fortran_should_name_statuses_and_dtypes_as_c")
  end subroutine fortran_should_name_statuses_and_dtypes_as_c

  subroutine fortran_should_rename_keys()
    type(hfdcp_key_map) :: km, none
    character(len=:), allocatable :: out
    character(len=300) :: long
    integer :: st
    call expect_status(hfdcp_key_map_create(km), HFDCP_OK, "hfdcp_key_map_create")
    call expect_status(hfdcp_key_map_add(km, "^model\.(.*)$", "\1"), HFDCP_OK, "add")
    call expect_status(hfdcp_key_map_add(km, "x", "\g<1>y"), HFDCP_ERR_ARG, &
         "add with a bad group reference")
    call expect(len(hfdcp_last_error()) > 0, "a message for the bad rule")
    call expect_status(hfdcp_key_map_add(km, "(", "y"), HFDCP_ERR_ARG, "add of '('", "(")
    st = hfdcp_key_map_apply(km, "model.layers.0.weight", out)
    call expect_status(st, HFDCP_OK, "apply")
    if (st == HFDCP_OK) call expect(out == "layers.0.weight", "renamed key, got '" // out // "'")
    ! A result longer than the first buffer the binding tries.
    call expect_status(hfdcp_key_map_add(km, "^a", repeat("b", 400)), HFDCP_OK, "add long")
    long = repeat("a", 300)
    st = hfdcp_key_map_apply(km, long, out)
    call expect_status(st, HFDCP_OK, "apply long")
    if (st == HFDCP_OK) call expect(out == repeat("b", 400) // repeat("a", 299), "long result")
    ! No map: names unchanged.
    st = hfdcp_key_map_apply(none, "model.x", out)
    call expect_status(st, HFDCP_OK, "apply without a map")
    if (st == HFDCP_OK) call expect(out == "model.x", "unchanged key")
    call hfdcp_key_map_free(km)
    call hfdcp_key_map_free(km)   ! freeing twice is freeing NULL
    call end_case("fortran_should_rename_keys")
  end subroutine fortran_should_rename_keys

  ! g(5, 6) split by columns over the ranks is the file's [6, 5] tensor;
  ! every kind round-trips; sub-boxes read back in Fortran order.
  subroutine fortran_should_save_column_major_as_reversed_shape()
    real(real32), allocatable, target :: g(:, :)
    real(real32), target :: h(3, 2)
    real(real64), target :: cube(2, 3, 4), cube_back(2, 3, 4)
    integer(int8), target :: i1(7), i1_back(7)
    integer(int16), target :: bf(3), bf_back(3)
    integer(int32), target :: i4(2, 2), i4_back(2, 2)
    integer(int64), target :: scalar, scalar_back
    logical(c_bool), target :: flags(4), flags_back(4)
    complex(real32), target :: z(2), z_back(2)
    type(hfdcp_writer) :: w
    type(hfdcp_reader) :: r
    type(hfdcp_tensor_info) :: info
    type(hfdcp_load_options) :: lopts
    type(hfdcp_key_map) :: km
    character(len=:), allocatable :: header
    integer :: c0, n, i, j, k
    integer(int64) :: t

    call my_columns(6, c0, n)
    allocate(g(5, 0:n - 1))
    do j = 0, n - 1
       do i = 1, 5
          g(i, j) = real(10 * i + c0 + j, real32)
       end do
    end do
    cube = reshape([(real(k, real64) / 4, k = 1, 24)], shape(cube))
    i1 = int([-3, -2, -1, 0, 1, 2, 127], int8)
    bf = int([16256, -16512, 0], int16)   ! BF16 bits of 1.0, -2.0, 0.0
    i4 = reshape([1, 2, 3, 4], [2, 2])
    scalar = 123456789012_int64
    flags = [.true., .false., .false., .true.]
    z = [(1.0, 2.0), (-3.0, 0.5)]

    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD, path("cm"), w), HFDCP_OK, "writer_open")
    call expect_status(hfdcp_writer_add(w, "g", g, global_shape=[5_int64, 6_int64], &
         offsets=[0_int64, int(c0, int64)]), HFDCP_OK, "add g")
    ! Replicated: every rank adds the same whole tensors.
    call expect_status(hfdcp_writer_add(w, "cube", cube, [2_int64, 3_int64, 4_int64]), &
         HFDCP_OK, "add cube")
    call expect_status(hfdcp_writer_add(w, "i1", i1, [7_int64]), HFDCP_OK, "add i1")
    call expect_status(hfdcp_writer_add(w, "bf", bf, [3_int64], dtype=HFDCP_BF16), &
         HFDCP_OK, "add bf")
    call expect_status(hfdcp_writer_add(w, "i4", i4, [2_int64, 2_int64]), HFDCP_OK, "add i4")
    call expect_status(hfdcp_writer_add(w, "scalar", scalar, [integer(int64) ::]), &
         HFDCP_OK, "add scalar")
    call expect_status(hfdcp_writer_add(w, "flags", flags, [4_int64]), HFDCP_OK, "add flags")
    call expect_status(hfdcp_writer_add(w, "z", z, [2_int64]), HFDCP_OK, "add z")
    call expect_status(hfdcp_writer_commit(w), HFDCP_OK, "commit")
    call hfdcp_writer_free(w)
    call expect(.not. c_associated(w%p), "a freed writer is null")

    ! On disk, in C order: [6, 5], [4, 3, 2], dtypes by kind.
    header = slurp(path("cm/model.safetensors"))
    call expect(index(header, '"g":{"dtype":"F32","shape":[6,5]') > 0, "g as [6,5] F32 in the header")
    call expect(index(header, '"cube":{"dtype":"F64","shape":[4,3,2]') > 0, "cube as [4,3,2] F64")
    call expect(index(header, '"bf":{"dtype":"BF16"') > 0, "bf as BF16")
    call expect(index(header, '"flags":{"dtype":"BOOL"') > 0, "flags as BOOL")
    call expect(index(header, '"z":{"dtype":"C64"') > 0, "z as C64")
    call expect(index(header, '"scalar":{"dtype":"I64","shape":[]') > 0, "scalar as I64 []")
    call expect(index(header, '"i1":{"dtype":"I8"') > 0 .and. &
         index(header, '"i4":{"dtype":"I32","shape":[2,2]') > 0, "i1 as I8, i4 as I32")

    ! The integer-handle variant of open, and a key map in the options.
    call expect_status(hfdcp_key_map_create(km), HFDCP_OK, "key map")
    call expect_status(hfdcp_key_map_add(km, "^g$", "renamed.g"), HFDCP_OK, "rule")
    lopts%key_map = km
    call expect_status(hfdcp_reader_open(MPI_COMM_WORLD%MPI_VAL, path("cm"), r, lopts), &
         HFDCP_OK, "reader_open (integer communicator)")
    call expect(hfdcp_reader_count(r) == 8_int64, "8 tensors")
    call expect_status(hfdcp_reader_find(r, "renamed.g", info), HFDCP_OK, "find renamed.g")
    call expect(info%name == "renamed.g" .and. info%dtype == HFDCP_F32 .and. info%ndim == 2, &
         "info of renamed.g")
    if (allocated(info%shape)) call expect(all(info%shape == [5_int64, 6_int64]), &
         "shape in Fortran order [5, 6]")
    call expect_status(hfdcp_reader_find(r, "g", info), HFDCP_ERR_NOT_FOUND, "find g", "g")
    ! Sorted by name, 1-based: bf, cube, flags, i1, i4, renamed.g, scalar, z.
    call expect_status(hfdcp_reader_tensor(r, 2, info), HFDCP_OK, "tensor 2")
    call expect(info%name == "cube", "tensor 2 is cube, got " // info%name)
    if (allocated(info%shape)) call expect(all(info%shape == [2_int64, 3_int64, 4_int64]), &
         "cube's Fortran shape")
    call expect_status(hfdcp_reader_tensor(r, 0_int64, info), HFDCP_ERR_RANGE, "tensor 0", &
         "start at 1")
    call expect_status(hfdcp_reader_tensor(r, 9_int64, info), HFDCP_ERR_RANGE, "tensor 9")
    ! h = g(2:4, 3:4) (1-based), i.e. offsets [1, 2] in Fortran order.
    h = -1
    cube_back = 0
    i1_back = 0
    bf_back = 0
    i4_back = 0
    scalar_back = 0
    flags_back = .false.
    z_back = 0
    call expect_status(hfdcp_reader_add(r, "renamed.g", h, offsets=[1_int64, 2_int64]), &
         HFDCP_OK, "add h")
    call expect_status(hfdcp_reader_add(r, "cube", cube_back), HFDCP_OK, "add cube")
    call expect_status(hfdcp_reader_add(r, "i1", i1_back), HFDCP_OK, "add i1")
    call expect_status(hfdcp_reader_add(r, "bf", bf_back, dtype=HFDCP_BF16), HFDCP_OK, "add bf")
    call expect_status(hfdcp_reader_add(r, "i4", i4_back), HFDCP_OK, "add i4")
    call expect_status(hfdcp_reader_add(r, "scalar", scalar_back), HFDCP_OK, "add scalar")
    call expect_status(hfdcp_reader_add(r, "flags", flags_back), HFDCP_OK, "add flags")
    call expect_status(hfdcp_reader_add(r, "z", z_back), HFDCP_OK, "add z")
    call expect_status(hfdcp_reader_load(r), HFDCP_OK, "load")
    do j = 1, 2
       do i = 1, 3
          call expect(h(i, j) == real(10 * (i + 1) + (j + 1), real32), "h(i, j) = g(i+1, j+2)")
       end do
    end do
    call expect(all(cube_back == cube), "cube read back")
    call expect(all(i1_back == i1) .and. all(bf_back == bf) .and. all(i4_back == i4), &
         "integers read back")
    call expect(scalar_back == scalar, "scalar read back")
    call expect(logical(all(flags_back .eqv. flags)), "flags read back")
    call expect(all(z_back == z), "complex read back")
    ! Conversion by the C reader: F32 into real64.
    block
      real(real64), target :: gd(5, 6)
      gd = 0
      call expect_status(hfdcp_reader_add(r, "renamed.g", gd, dtype=HFDCP_F64), HFDCP_OK, &
           "add gd")
      call expect_status(hfdcp_reader_load(r), HFDCP_OK, "load gd")
      do t = 1, 6
         call expect(all(gd(:, t) == [(real(10 * i + t - 1, real64), i = 1, 5)]), "gd column")
      end do
    end block
    call hfdcp_reader_free(r)
    call hfdcp_key_map_free(km)
    call end_case("fortran_should_save_column_major_as_reversed_shape")
  end subroutine fortran_should_save_column_major_as_reversed_shape

  ! A non-contiguous section is refused, and the next commit or load fails
  ! on every rank though only the last rank passed it.
  subroutine fortran_should_refuse_non_contiguous_arrays_on_every_rank()
    real(real32), target :: a(4, 6), b(6)
    integer(int32), target :: k(3)
    type(hfdcp_writer) :: w
    type(hfdcp_reader) :: r
    integer :: st
    logical :: last
    last = rank == nranks - 1
    a = 1
    b = 2
    k = 3
    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD, path("nc"), w), HFDCP_OK, "open")
    if (last) then
       st = hfdcp_writer_add(w, "a", a(1:4:2, :), [2_int64, 6_int64])
       call expect_status(st, HFDCP_ERR_ARG, "add of a(1:4:2, :)", "not contiguous")
       st = hfdcp_writer_add(w, "b", b, [6_int64, 1_int64])
       call expect_status(st, HFDCP_ERR_ARG, "add with a 2-entry global_shape", &
            "global_shape has 2 entries")
       st = hfdcp_writer_add(w, "k", k, [3_int64], dtype=HFDCP_F16)
       call expect_status(st, HFDCP_ERR_ARG, "I32 storage as F16", "not as wide")
    end if
    call expect_status(hfdcp_writer_add(w, "b", b, [6_int64], offsets=[0_int64]), &
         HFDCP_OK, "add b")
    st = hfdcp_writer_commit(w)
    call expect_status(st, HFDCP_ERR_ARG, "commit after a refused add", "not contiguous")
    call hfdcp_writer_free(w)

    call expect_status(hfdcp_reader_open(MPI_COMM_WORLD, path("cm"), r), HFDCP_OK, "reader_open")
    if (last) then
       st = hfdcp_reader_add(r, "g", a(1:4:2, :))
       call expect_status(st, HFDCP_ERR_ARG, "reader add of a(1:4:2, :)", "not contiguous")
       st = hfdcp_reader_add(r, "g", a, offsets=[0_int64])
       call expect_status(st, HFDCP_ERR_ARG, "reader add with 1 offset", "offsets has 1")
    end if
    st = hfdcp_reader_load(r)
    call expect_status(st, HFDCP_ERR_ARG, "load after a refused add", "not contiguous")
    call hfdcp_reader_free(r)
    call hfdcp_reader_free(r)
    call end_case("fortran_should_refuse_non_contiguous_arrays_on_every_rank")
  end subroutine fortran_should_refuse_non_contiguous_arrays_on_every_rank

  ! The message of the next collective after a refused add: the add's own
  ! message, prefixed with "rank R: " by the agreement, on every rank; not
  ! a made-up one about the call the module passed to C to remember it.
  subroutine expect_refusal_reported(st, what, add_msg)
    integer, intent(in) :: st
    character(len=*), intent(in) :: what, add_msg
    character(len=:), allocatable :: msg, prefix
    character(len=24) :: buf
    msg = hfdcp_last_error()
    write (buf, '(a, i0, a)') "rank ", nranks - 1, ": "
    prefix = trim(buf) // " "
    call expect_status(st, HFDCP_ERR_ARG, what, "tensor 'x': the Fortran array is not contiguous")
    call expect(index(msg, prefix) == 1, what // ": '" // msg // "' starts with '" // prefix // "'")
    call expect(index(msg, "ndim") == 0 .and. index(msg, "dimensions") == 0, &
         what // ": '" // msg // "' says nothing of dimensions")
    if (rank == nranks - 1) call expect(msg == prefix // add_msg, &
         what // ": '" // msg // "' is the add's '" // add_msg // "' prefixed")
  end subroutine expect_refusal_reported

  ! A non-contiguous section refused by hfdcp_writer_add on the last rank:
  ! the commit fails on every rank with that refusal; a new writer works.
  subroutine fortran_should_report_the_refusal_itself_at_commit()
    real(real32), target :: a(4, 6)
    type(hfdcp_writer) :: w
    character(len=:), allocatable :: add_msg
    integer :: st
    a = 1
    add_msg = ""
    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD, path("nc2"), w), HFDCP_OK, "open")
    if (rank == nranks - 1) then
       st = hfdcp_writer_add(w, "x", a(1:4:2, :), [2_int64, 6_int64])
       add_msg = hfdcp_last_error()
       call expect_status(st, HFDCP_ERR_ARG, "add of a(1:4:2, :)", &
            "tensor 'x': the Fortran array is not contiguous (hfdcp does not copy")
       call expect(index(add_msg, "ndim") == 0 .and. index(add_msg, "[") == 0, &
            "the add's message '" // add_msg // "' is the refusal alone")
    end if
    call expect_status(hfdcp_writer_add(w, "y", a, [4_int64, 6_int64]), HFDCP_OK, "add y")
    call expect_refusal_reported(hfdcp_writer_commit(w), "commit after the refused add", add_msg)
    call hfdcp_writer_free(w)
    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD, path("nc2"), w), HFDCP_OK, "open again")
    call expect_status(hfdcp_writer_add(w, "x", a, [4_int64, 6_int64]), HFDCP_OK, "add a")
    call expect_status(hfdcp_writer_commit(w), HFDCP_OK, "commit of a new writer")
    call hfdcp_writer_free(w)
    call end_case("fortran_should_report_the_refusal_itself_at_commit")
  end subroutine fortran_should_report_the_refusal_itself_at_commit

  ! The same for hfdcp_reader_add and the load (of the checkpoint the
  ! writer case above wrote); the next load of the same reader works.
  subroutine fortran_should_report_the_refusal_itself_at_load()
    real(real32), target :: a(4, 6), back(4, 6)
    type(hfdcp_reader) :: r
    character(len=:), allocatable :: add_msg
    integer :: st
    a = 5
    back = 0
    add_msg = ""
    call expect_status(hfdcp_reader_open(MPI_COMM_WORLD, path("nc2"), r), HFDCP_OK, "open")
    if (rank == nranks - 1) then
       st = hfdcp_reader_add(r, "x", a(1:4:2, :))
       add_msg = hfdcp_last_error()
       call expect_status(st, HFDCP_ERR_ARG, "reader add of a(1:4:2, :)", &
            "tensor 'x': the Fortran array is not contiguous (hfdcp does not copy")
       call expect(index(add_msg, "dimensions") == 0 .and. index(add_msg, "[") == 0, &
            "the add's message '" // add_msg // "' is the refusal alone")
    end if
    call expect_status(hfdcp_reader_add(r, "x", back), HFDCP_OK, "add back")
    call expect_refusal_reported(hfdcp_reader_load(r), "load after the refused add", add_msg)
    call expect(all(back == 0), "nothing read by the failed load")
    call expect_status(hfdcp_reader_add(r, "x", back), HFDCP_OK, "add back again")
    call expect_status(hfdcp_reader_load(r), HFDCP_OK, "the next load")
    call expect(all(back == 1), "x read back")
    call hfdcp_reader_free(r)
    call end_case("fortran_should_report_the_refusal_itself_at_load")
  end subroutine fortran_should_report_the_refusal_itself_at_load

  ! File maps: set/get/entries, file indices of names, a map copied from a
  ! reference checkpoint reproduces its files exactly.
  subroutine fortran_should_map_files()
    type(hfdcp_file_map) :: m, ref
    type(hfdcp_writer) :: w
    type(hfdcp_save_options) :: opts
    real(real32), target :: t1(8, 4), t2(16), t3(4, 4)
    character(len=:), allocatable :: name
    integer :: idx, st, f
    character(len=40) :: fname
    logical :: exists

    call expect_status(hfdcp_file_map_create(m), HFDCP_OK, "create")
    call expect_status(hfdcp_file_map_set(m, "a", 2), HFDCP_OK, "set a")
    call expect_status(hfdcp_file_map_set(m, "b", 0), HFDCP_ERR_ARG, "set b 0")
    call expect_status(hfdcp_file_map_get(m, "a", idx), HFDCP_OK, "get a")
    call expect(idx == 2, "a in file 2")
    call expect_status(hfdcp_file_map_get(m, "zz", idx), HFDCP_ERR_NOT_FOUND, "get zz")
    call expect(hfdcp_file_map_size(m) == 1_int64, "one entry")
    st = hfdcp_file_map_entry(m, 1_int64, name, idx)
    call expect_status(st, HFDCP_OK, "entry 1")
    if (st == HFDCP_OK) call expect(name == "a" .and. idx == 2, "entry 1 is (a, 2)")
    call expect_status(hfdcp_file_map_entry(m, 0_int64, name, idx), HFDCP_ERR_RANGE, "entry 0")
    call expect_status(hfdcp_file_map_entry(m, 2, name, idx), HFDCP_ERR_RANGE, "entry 2")
    call expect(hfdcp_file_map_warning(m) == "", "no warning")
    call hfdcp_file_map_free(m)
    call expect_status(hfdcp_extract_file_index("dir/model-00002-of-00008.safetensors", idx), &
         HFDCP_OK, "extract")
    call expect(idx == 2, "index 2")
    call expect_status(hfdcp_extract_file_index("weights.bin", idx), HFDCP_ERR_NOT_FOUND, &
         "extract from weights.bin")

    ! Three tensors over files of at most 100 bytes (one each), then the same with the
    ! reference's map: the same files, byte for byte.
    t1 = 1
    t2 = 2
    t3 = 3
    opts%max_shard_bytes = 100
    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD, path("fm1"), w, opts), HFDCP_OK, "open")
    call expect_status(hfdcp_writer_add(w, "t1", t1, [8_int64, 4_int64]), HFDCP_OK, "t1")
    call expect_status(hfdcp_writer_add(w, "t2", t2, [16_int64]), HFDCP_OK, "t2")
    call expect_status(hfdcp_writer_add(w, "t3", t3, [4_int64, 4_int64]), HFDCP_OK, "t3")
    call expect_status(hfdcp_writer_commit(w), HFDCP_OK, "commit")
    call hfdcp_writer_free(w)
    call expect_status(hfdcp_file_map_from_reference(path("fm1"), ref), HFDCP_OK, &
         "from_reference")
    call expect(hfdcp_file_map_size(ref) == 3_int64, "3 tensors in the reference map")
    call expect_status(hfdcp_file_map_get(ref, "t1", idx), HFDCP_OK, "t1's file")
    call expect(idx == 1, "t1 in file 1")
    call expect_status(hfdcp_file_map_get(ref, "t3", idx), HFDCP_OK, "t3's file")
    call expect(idx == 3, "t3 in file 3")
    opts%max_shard_bytes = 0
    opts%file_map = ref
    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD, path("fm2"), w, opts), HFDCP_OK, "open")
    call expect_status(hfdcp_writer_add(w, "t1", t1, [8_int64, 4_int64]), HFDCP_OK, "t1")
    call expect_status(hfdcp_writer_add(w, "t2", t2, [16_int64]), HFDCP_OK, "t2")
    call expect_status(hfdcp_writer_add(w, "t3", t3, [4_int64, 4_int64]), HFDCP_OK, "t3")
    call expect_status(hfdcp_writer_commit(w), HFDCP_OK, "commit with the map")
    call hfdcp_writer_free(w)
    call hfdcp_file_map_free(ref)
    do f = 1, 3
       write (fname, '(a, i5.5, a)') "model-", f, "-of-00003.safetensors"
       inquire (file=path("fm2/" // trim(fname)), exist=exists)
       call expect(exists, trim(fname) // " written with the map")
       call expect(slurp(path("fm1/" // trim(fname))) == slurp(path("fm2/" // trim(fname))), &
            trim(fname) // " identical")
    end do
    call end_case("fortran_should_map_files")
  end subroutine fortran_should_map_files

  ! A sharded save (one shard file per rank) consolidated by
  ! hfdcp_consolidate gives the bytes of a direct save.
  subroutine fortran_should_save_sharded_and_consolidate()
    real(real32), allocatable, target :: g(:, :)
    type(hfdcp_writer) :: w
    type(hfdcp_save_options) :: opts
    type(hfdcp_consolidate_options) :: copts
    integer :: c0, n, i, j, st

    call my_columns(6, c0, n)
    allocate(g(3, n))
    do j = 1, n
       do i = 1, 3
          g(i, j) = real(100 * i + c0 + j, real32)
       end do
    end do
    ! Direct.
    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD, path("direct"), w), HFDCP_OK, "open")
    call expect_status(hfdcp_writer_add(w, "g", g, [3_int64, 6_int64], [0_int64, int(c0, int64)]), &
         HFDCP_OK, "add")
    call expect_status(hfdcp_writer_commit(w), HFDCP_OK, "commit direct")
    call hfdcp_writer_free(w)
    ! Sharded, then consolidated with a progress callback.
    opts%save_sharded = .true.
    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD, path("shards"), w, opts), HFDCP_OK, &
         "open sharded")
    call expect_status(hfdcp_writer_add(w, "g", g, [3_int64, 6_int64], [0_int64, int(c0, int64)]), &
         HFDCP_OK, "add")
    st = hfdcp_writer_commit(w)
    call expect_status(st, HFDCP_OK, "commit sharded")
    call hfdcp_writer_free(w)
    copts%buffer_bytes = 64   ! the minimum: several rounds
    copts%progress = c_funloc(count_progress)
    copts%progress_arg = c_loc(progress_calls)
    progress_calls = 0
    st = hfdcp_consolidate(MPI_COMM_WORLD, path("shards"), path("merged"), opts=copts)
    call expect_status(st, HFDCP_OK, "hfdcp_consolidate")
    if (rank == 0) then
       call expect(progress_calls > 0, "progress called on rank 0")
    else
       call expect(progress_calls == 0, "progress not called off rank 0")
    end if
    call expect(len(slurp(path("direct/model.safetensors"))) > 0, "direct file")
    call expect(slurp(path("direct/model.safetensors")) == slurp(path("merged/model.safetensors")), &
         "consolidated bytes == direct bytes")
    ! no_checksums: no hfdcp_crc32c (the default writes it).
    copts%no_checksums = .true.
    st = hfdcp_consolidate(MPI_COMM_WORLD, path("shards"), path("nosums"), opts=copts)
    call expect_status(st, HFDCP_OK, "hfdcp_consolidate with no_checksums")
    call expect(index(slurp(path("merged/model.safetensors")), "hfdcp_crc32c") > 0, &
         "CRC-32C recorded by default")
    call expect(index(slurp(path("nosums/model.safetensors")), "hfdcp_crc32c") == 0, &
         "no CRC-32C with no_checksums")
    ! Cast to F64, laid out by a file map, with the integer-handle variant.
    block
      type(hfdcp_consolidate_options) :: cast
      type(hfdcp_file_map) :: m
      type(hfdcp_reader) :: r
      type(hfdcp_tensor_info) :: info
      real(real64), target :: gd(3, 6)
      integer :: jj
      cast%cast = .true.
      cast%cast_dtype = HFDCP_F64
      call expect_status(hfdcp_file_map_create(m), HFDCP_OK, "map")
      call expect_status(hfdcp_file_map_set(m, "g", 1), HFDCP_OK, "map g")
      call expect_status(hfdcp_consolidate(MPI_COMM_WORLD%MPI_VAL, path("shards"), &
           path("merged64"), m, cast), HFDCP_OK, "consolidate with cast and map")
      call hfdcp_file_map_free(m)
      call expect_status(hfdcp_reader_open(MPI_COMM_WORLD, path("merged64"), r), HFDCP_OK, &
           "open merged64")
      call expect_status(hfdcp_reader_find(r, "g", info), HFDCP_OK, "find g")
      call expect(info%dtype == HFDCP_F64, "g cast to F64")
      gd = 0
      call expect_status(hfdcp_reader_add(r, "g", gd), HFDCP_OK, "add gd")
      call expect_status(hfdcp_reader_load(r), HFDCP_OK, "load gd")
      call hfdcp_reader_free(r)
      do jj = 1, 6
         call expect(all(gd(:, jj) == [(real(100 * i + jj, real64), i = 1, 3)]), "gd column")
      end do
    end block
    ! The writer's own consolidation, with the integer-handle variant.
    opts%consolidated_output_path = path("merged2")
    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD%MPI_VAL, path("shards2"), w, opts), &
         HFDCP_OK, "open sharded + consolidated")
    call expect_status(hfdcp_writer_add(w, "g", g, [3_int64, 6_int64], [0_int64, int(c0, int64)]), &
         HFDCP_OK, "add")
    call expect_status(hfdcp_writer_commit(w), HFDCP_OK, "commit sharded + consolidated")
    call hfdcp_writer_free(w)
    call expect(slurp(path("direct/model.safetensors")) == slurp(path("merged2/model.safetensors")), &
         "writer-consolidated bytes == direct bytes")
    call end_case("fortran_should_save_sharded_and_consolidate")
  end subroutine fortran_should_save_sharded_and_consolidate

  ! hfdcp_writer_commit_async: the array changed right after it returns,
  ! the file holds the values at the call (the bytes of the synchronous
  ! save of fortran_should_save_sharded_and_consolidate); the wait is
  ! collective, test is local, a second wait is refused.
  subroutine fortran_should_commit_asynchronously()
    real(real32), allocatable, target :: g(:, :)
    type(hfdcp_writer) :: w
    type(hfdcp_save_options) :: opts
    integer :: c0, n, i, j
    logical :: done

    call my_columns(6, c0, n)
    allocate(g(3, n))
    do j = 1, n
       do i = 1, 3
          g(i, j) = real(100 * i + c0 + j, real32)
       end do
    end do
    opts%snapshot_max_bytes = 0
    call expect_status(hfdcp_writer_open(MPI_COMM_WORLD, path("async"), w, opts), HFDCP_OK, &
         "open")
    call expect_status(hfdcp_writer_add(w, "g", g, [3_int64, 6_int64], [0_int64, int(c0, int64)]), &
         HFDCP_OK, "add")
    call expect_status(hfdcp_writer_test(w, done), HFDCP_ERR_ARG, "test before", &
         "no asynchronous")
    call expect_status(hfdcp_writer_commit_async(w), HFDCP_OK, "commit_async")
    g = -1.0
    deallocate(g)
    call expect_status(hfdcp_writer_test(w, done), HFDCP_OK, "test")
    call expect_status(hfdcp_writer_wait(w), HFDCP_OK, "wait")
    call expect_status(hfdcp_writer_test(w, done), HFDCP_OK, "test after")
    call expect(done, "done after the wait")
    call expect_status(hfdcp_writer_wait(w), HFDCP_ERR_ARG, "second wait", "waited for")
    call hfdcp_writer_free(w)
    call expect(slurp(path("direct/model.safetensors")) == slurp(path("async/model.safetensors")), &
         "asynchronous bytes == direct bytes")
    call end_case("fortran_should_commit_asynchronously")
  end subroutine fortran_should_commit_asynchronously

end program test_fortran
