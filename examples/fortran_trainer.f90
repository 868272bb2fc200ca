! fortran_trainer.f90 - examples/c_trainer.c in Fortran 2008 with the hfdcp
! module: the same 3-layer MLP, the same tensor-parallel x data-parallel
! decomposition, the same exact arithmetic, and byte-identical checkpoints.
!
!   mpirun -n P fortran_trainer DIR [--steps=N] [--every=K] [--tp=T]
!                                   [--kill-at=S] [--resume] [--async]
!
! Column-major note: a layer's weight is held as w(in, rows), the rows this
! rank owns of the PyTorch-style [out, in] tensor.  Added with
! global_shape=[in, out] and offsets=[0, row0] (Fortran order), it is saved
! as the file's tensor [out, in] with this rank's rows [row0, row0+rows): the
! memory of w(in, rows) is exactly the row-major [rows, in] block.
!
! --async saves with hfdcp_writer_commit_async: the next steps train, and
! change the arrays the save was given, while hfdcp writes its own copy in
! the background; hfdcp_writer_wait, before the next save and at the end,
! publishes it (a run killed in between resumes from the save before).
! See c_trainer.c for the model, the data and why the results do not depend
! on the number of ranks.
program fortran_trainer
  use, intrinsic :: iso_fortran_env, only: int64, real32, real64, error_unit
  use mpi_f08
  use hfdcp
  implicit none

  integer, parameter :: NLAYER = 3, BATCH = 8
  integer, parameter :: DIMS(0:NLAYER) = [8, 16, 16, 4]

  type :: layer
     real(real32), allocatable :: w(:, :)   ! (in, rows)
     real(real32), allocatable :: b(:)      ! (rows)
     integer :: rows = 0, row0 = 0
  end type layer

  type(layer), target :: lay(NLAYER)
  type(MPI_Comm) :: tp_comm, dp_comm
  type(hfdcp_writer) :: in_flight          ! --async: the save not yet published
  logical :: pending = .false.             ! whether in_flight holds one
  integer :: tp, tp_rank, dp, dp_rank, world_rank, nranks
  integer :: steps, every, kill_at, first, step, i, l, j
  logical :: do_resume, do_async, bad, done
  character(len=4096) :: arg, dir
  real(real64) :: loss

  call MPI_Init()
  call MPI_Comm_rank(MPI_COMM_WORLD, world_rank)
  call MPI_Comm_size(MPI_COMM_WORLD, nranks)
  steps = 12
  every = 4
  kill_at = 0
  do_resume = .false.
  do_async = .false.
  tp = max(1, nranks / 2)
  dir = ""
  bad = .false.
  do i = 1, command_argument_count()
     call get_command_argument(i, arg)
     if (index(arg, "--steps=") == 1) then
        read (arg(9:), *) steps
     else if (index(arg, "--every=") == 1) then
        read (arg(9:), *) every
     else if (index(arg, "--tp=") == 1) then
        read (arg(6:), *) tp
     else if (index(arg, "--kill-at=") == 1) then
        read (arg(11:), *) kill_at
     else if (arg == "--resume") then
        do_resume = .true.
     else if (arg == "--async") then
        do_async = .true.
     else if (arg(1:1) /= "-" .and. len_trim(dir) == 0) then
        dir = arg
     else
        bad = .true.
     end if
  end do
  if (.not. bad) bad = len_trim(dir) == 0 .or. tp < 1 .or. every < 1
  if (.not. bad) bad = mod(nranks, tp) /= 0 .or. mod(4, tp) /= 0
  if (.not. bad) bad = mod(BATCH, nranks / tp) /= 0
  if (bad) then
     if (world_rank == 0) write (error_unit, '(a)') &
          "usage: fortran_trainer DIR [--steps=N] [--every=K] [--tp=T] " // &
          "[--kill-at=S] [--resume] [--async]", &
          "T must divide the rank count and 4; the rank count / T must divide 8"
     call MPI_Finalize()
     error stop 2
  end if
  dp = nranks / tp
  tp_rank = mod(world_rank, tp)
  dp_rank = world_rank / tp
  call MPI_Comm_split(MPI_COMM_WORLD, dp_rank, tp_rank, tp_comm)
  call MPI_Comm_split(MPI_COMM_WORLD, tp_rank, dp_rank, dp_comm)

  ! The same initial weights as c_trainer (0-based row and column numbers).
  do l = 1, NLAYER
     lay(l)%rows = DIMS(l) / tp
     lay(l)%row0 = tp_rank * lay(l)%rows
     allocate(lay(l)%w(DIMS(l - 1), lay(l)%rows), lay(l)%b(lay(l)%rows))
     lay(l)%b = 0
     do i = 1, lay(l)%rows
        do j = 1, DIMS(l - 1)
           lay(l)%w(j, i) = real(mod((lay(l)%row0 + i - 1) * 7 + (j - 1) * 3 &
                + l * 5, 13) - 6, real32) / 64.0_real32
        end do
     end do
  end do

  if (world_rank == 0) write (*, '(a, a, a, i0, a, i0, a, i0)') &
       "fortran_trainer: hfdcp ", hfdcp_version(), ", ", nranks, &
       " ranks: tp ", tp, " x dp ", dp
  first = 1
  if (do_resume) then
     first = resume_from(steps - mod(steps, every)) + 1
     if (world_rank == 0) write (*, '(a, i0)') "fortran_trainer: resuming at step ", first
  end if
  do step = first, steps
     ! With a save pending, this changes the arrays it was given while its
     ! files are being written: safe, hfdcp writes its own copy.
     loss = train_step(step)
     if (world_rank == 0) write (*, '(a, i0, a, f0.6)') "fortran_trainer: step ", &
          step, " loss ", loss
     if (mod(step, every) == 0 .or. step == steps) then
        if (pending) call finish_save()   ! the previous save, published
        call save(step)
     end if
     if (step == kill_at) then
        ! Rank 0 alone aborts, once it has said so (see c_trainer.c); a
        ! pending save is left unpublished, as a crash would leave it.
        call MPI_Barrier(MPI_COMM_WORLD)
        if (world_rank == 0) then
           if (pending) then
              call check(hfdcp_writer_test(in_flight, done), "hfdcp_writer_test")
              write (*, '(a, i0, a, a)') "fortran_trainer: killed after step ", step, &
                   " with a save pending (rank 0: ", merge("written)", "writing)", done)
           else
              write (*, '(a, i0)') "fortran_trainer: killed after step ", step
           end if
           flush (6)
           call MPI_Abort(MPI_COMM_WORLD, 3)
        end if
        call MPI_Barrier(MPI_COMM_WORLD)
     end if
  end do
  if (pending) call finish_save()
  call MPI_Comm_free(tp_comm)
  call MPI_Comm_free(dp_comm)
  call MPI_Finalize()

contains

  ! Activations and errors: multiples of 2^-8 within [-16, 16].
  pure function qa(v) result(q)
    real(real64), intent(in) :: v
    real(real64) :: q
    q = min(16.0_real64, max(-16.0_real64, floor(v * 256.0_real64 + 0.5_real64, int64) / 256.0_real64))
  end function qa

  ! Weights: multiples of 2^-12 within [-4, 4].
  pure function qw(v) result(q)
    real(real64), intent(in) :: v
    real(real64) :: q
    q = min(4.0_real64, max(-4.0_real64, floor(v * 4096.0_real64 + 0.5_real64, int64) / 4096.0_real64))
  end function qw

  subroutine sample(s, x, y)
    integer(int64), intent(in) :: s
    real(real64), intent(out) :: x(:), y(:)
    integer :: jj, k
    real(real64) :: v
    do jj = 0, DIMS(0) - 1
       x(jj + 1) = real(mod(s * 37 + jj * 11 + 5, 17_int64) - 8, real64) * 0.25_real64
    end do
    do k = 0, DIMS(NLAYER) - 1
       v = 0
       do jj = 0, DIMS(0) - 1
          v = v + real(mod(k * 5 + jj * 3, 7) - 3, real64) * x(jj + 1)
       end do
       y(k + 1) = qa(v * 0.125_real64)
    end do
  end subroutine sample

  subroutine check(st, what)
    integer, intent(in) :: st
    character(len=*), intent(in) :: what
    if (st /= HFDCP_OK) then
       write (error_unit, '(a)') "fortran_trainer: " // what // " failed: " // &
            hfdcp_status_name(st) // ": " // hfdcp_last_error()
       call MPI_Abort(MPI_COMM_WORLD, 1)
    end if
  end subroutine check

  ! One SGD step; returns the squared error summed over the global batch.
  ! Arrays are (feature, sample): act(:, s) is one sample's activations.
  function train_step(stp) result(total)
    integer, intent(in) :: stp
    real(real64) :: total
    integer :: nb, s, ll, ii, jj, k, nin, rows, r0, r
    real(real64) :: x(8), y(4, BATCH), z, g
    real(real64) :: act(16, BATCH, 0:NLAYER), delta(16, BATCH), prev(16, BATCH)
    real(real64) :: part(16, BATCH), gw(16, 16), gb(16), all(16 * BATCH * 4)

    nb = BATCH / dp
    act = 0
    part = 0
    gw = 0
    gb = 0
    do s = 1, nb
       call sample(int(stp - 1, int64) * BATCH + dp_rank * nb + s - 1, x, y(:, s))
       act(1:DIMS(0), s, 0) = x
    end do
    ! Forward: each rank computes its output features, then all-gathers.
    do ll = 1, NLAYER
       nin = DIMS(ll - 1)
       rows = lay(ll)%rows
       do s = 1, nb
          do ii = 1, rows
             z = lay(ll)%b(ii)
             do jj = 1, nin
                z = z + real(lay(ll)%w(jj, ii), real64) * act(jj, s, ll - 1)
             end do
             if (ll < NLAYER) then
                part(ii, s) = qa(max(z, 0.0_real64))
             else
                part(ii, s) = qa(z)
             end if
          end do
       end do
       call MPI_Allgather(part(1:rows, 1:nb), rows * nb, MPI_DOUBLE_PRECISION, &
            all, rows * nb, MPI_DOUBLE_PRECISION, tp_comm)
       do r = 0, tp - 1
          do s = 1, nb
             do ii = 1, rows
                act(r * rows + ii, s, ll) = all((r * nb + s - 1) * rows + ii)
             end do
          end do
       end do
    end do
    ! Output error.
    total = 0
    do s = 1, nb
       do k = 1, DIMS(NLAYER)
          delta(k, s) = qa(act(k, s, NLAYER) - y(k, s))
          total = total + delta(k, s) * delta(k, s)
       end do
    end do
    call MPI_Allreduce(MPI_IN_PLACE, total, 1, MPI_DOUBLE_PRECISION, MPI_SUM, dp_comm)
    ! Backward, last layer first.
    do ll = NLAYER, 1, -1
       nin = DIMS(ll - 1)
       rows = lay(ll)%rows
       r0 = lay(ll)%row0
       do ii = 1, rows
          gb(ii) = 0
          do s = 1, nb
             gb(ii) = gb(ii) + delta(r0 + ii, s)
          end do
          do jj = 1, nin
             g = 0
             do s = 1, nb
                g = g + delta(r0 + ii, s) * act(jj, s, ll - 1)
             end do
             gw(jj, ii) = g
          end do
       end do
       call MPI_Allreduce(MPI_IN_PLACE, gw, 16 * 16, MPI_DOUBLE_PRECISION, MPI_SUM, dp_comm)
       call MPI_Allreduce(MPI_IN_PLACE, gb, 16, MPI_DOUBLE_PRECISION, MPI_SUM, dp_comm)
       if (ll > 1) then
          do s = 1, nb
             do jj = 1, nin
                z = 0
                do ii = 1, rows
                   z = z + real(lay(ll)%w(jj, ii), real64) * delta(r0 + ii, s)
                end do
                part(jj, s) = z
             end do
          end do
          call MPI_Allreduce(MPI_IN_PLACE, part, 16 * BATCH, MPI_DOUBLE_PRECISION, &
               MPI_SUM, tp_comm)
          do s = 1, nb
             do jj = 1, nin
                if (act(jj, s, ll - 1) > 0) then
                   prev(jj, s) = qa(part(jj, s))
                else
                   prev(jj, s) = 0
                end if
             end do
          end do
       end if
       do ii = 1, rows
          lay(ll)%b(ii) = real(qw(lay(ll)%b(ii) - gb(ii) / 64.0_real64), real32)
          do jj = 1, nin
             lay(ll)%w(jj, ii) = real(qw(lay(ll)%w(jj, ii) - gw(jj, ii) / 64.0_real64), real32)
          end do
       end do
       if (ll > 1) delta(1:nin, 1:nb) = prev(1:nin, 1:nb)
    end do
  end function train_step

  function step_dir(stp) result(path)
    integer, intent(in) :: stp
    character(len=:), allocatable :: path
    character(len=16) :: buf
    write (buf, '(a, i6.6)') "step-", stp
    path = trim(dir) // "/" // trim(buf)
  end function step_dir

  function tensor_name(ll, what) result(name)
    integer, intent(in) :: ll
    character(len=*), intent(in) :: what
    character(len=:), allocatable :: name
    character(len=8) :: buf
    write (buf, '(i0)') ll
    name = "mlp.fc" // trim(buf) // "." // what
  end function tensor_name

  ! Saves DIR/step-<stp>.  With --async, returns as soon as hfdcp holds a
  ! copy of the arrays (training may then change them), the writer kept in
  ! in_flight: the checkpoint exists only once finish_save has waited for it.
  subroutine save(stp)
    integer, intent(in) :: stp
    type(hfdcp_save_options) :: opts
    type(hfdcp_writer) :: w
    integer(int64), target, save :: step64
    integer :: ll

    step64 = stp
    opts%max_shard_bytes = 1024   ! a few files and an index, as big models
    call check(hfdcp_writer_open(MPI_COMM_WORLD, step_dir(stp), w, opts), "hfdcp_writer_open")
    do ll = 1, NLAYER
       call check(hfdcp_writer_add(w, tensor_name(ll, "weight"), lay(ll)%w, &
            global_shape=[int(DIMS(ll - 1), int64), int(DIMS(ll), int64)], &
            offsets=[0_int64, int(lay(ll)%row0, int64)]), "hfdcp_writer_add")
       call check(hfdcp_writer_add(w, tensor_name(ll, "bias"), lay(ll)%b, &
            global_shape=[int(DIMS(ll), int64)], &
            offsets=[int(lay(ll)%row0, int64)]), "hfdcp_writer_add")
    end do
    call check(hfdcp_writer_add(w, "trainer.step", step64, global_shape=[integer(int64) ::]), &
         "hfdcp_writer_add")
    if (do_async) then
       call check(hfdcp_writer_commit_async(w), "hfdcp_writer_commit_async")
       in_flight = w
       pending = .true.
    else
       call check(hfdcp_writer_commit(w), "hfdcp_writer_commit")
       call hfdcp_writer_free(w)
    end if
  end subroutine save

  ! Waits for the asynchronous save, which publishes it, and checks its
  ! outcome as a commit's: on failure every rank has the same status, and
  ! the message names the file and the rank that failed.
  subroutine finish_save()
    call check(hfdcp_writer_wait(in_flight), "hfdcp_writer_wait")
    call hfdcp_writer_free(in_flight)
    pending = .false.
  end subroutine finish_save

  ! Loads the newest complete checkpoint at or below last; returns its step
  ! (0: none).
  function resume_from(last) result(found)
    integer, intent(in) :: last
    integer :: found
    type(hfdcp_reader) :: r
    integer(int64), target, save :: step64
    integer :: stp, ll
    logical :: complete

    found = 0
    complete = .false.
    do stp = last, 1, -every
       ! Complete when model.safetensors.index.json (written last) exists;
       ! rank 0 looks so that every rank decides the same.
       if (world_rank == 0) inquire (file=step_dir(stp) // "/model.safetensors.index.json", &
            exist=complete)
       call MPI_Bcast(complete, 1, MPI_LOGICAL, 0, MPI_COMM_WORLD)
       if (.not. complete) cycle
       call check(hfdcp_reader_open(MPI_COMM_WORLD, step_dir(stp), r), "hfdcp_reader_open")
       do ll = 1, NLAYER
          call check(hfdcp_reader_add(r, tensor_name(ll, "weight"), lay(ll)%w, &
               offsets=[0_int64, int(lay(ll)%row0, int64)]), "hfdcp_reader_add")
          call check(hfdcp_reader_add(r, tensor_name(ll, "bias"), lay(ll)%b, &
               offsets=[int(lay(ll)%row0, int64)]), "hfdcp_reader_add")
       end do
       step64 = -1
       call check(hfdcp_reader_add(r, "trainer.step", step64), "hfdcp_reader_add")
       call check(hfdcp_reader_load(r), "hfdcp_reader_load")
       call hfdcp_reader_free(r)
       if (step64 /= stp) then
          write (error_unit, '(a, i0)') "fortran_trainer: " // step_dir(stp) // &
               " holds step ", step64
          call MPI_Abort(MPI_COMM_WORLD, 1)
       end if
       found = stp
       return
    end do
  end function resume_from

end program fortran_trainer
