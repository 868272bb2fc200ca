#!/usr/bin/env bash
# The examples (examples/c_trainer.c, examples/fortran_trainer.f90) as tests,
# built against an installed copy of hfdcp the way a user's build would.
#
#   examples_check.sh build BUILD_DIR SRC_DIR WORK
#     installs BUILD_DIR into WORK/prefix, then builds the examples twice:
#     with CMake through find_package(hfdcp) into WORK/cmake, and with the
#     MPI compiler wrappers through pkg-config (hfdcp, hfdcp-fortran) into
#     WORK/pc.  The Fortran example is built when the bindings are installed.
#   examples_check.sh run WORK LANG NP MPIEXEC [--async]
#     LANG is c or fortran.  Trains 12 steps uninterrupted on NP ranks (the
#     CMake-built binary), then again on NP ranks killed after a step
#     between two checkpoints (the pkg-config-built binary), fakes a newer
#     checkpoint left half-published (files, no index), resumes on the
#     other rank count (4 <-> 2) from the last complete one, and requires
#     the checkpoints of steps 4, 8 and 12 to be byte-identical to the
#     uninterrupted run's.  For fortran, also requires the C trainer's
#     checkpoint to be byte-identical.
#     --async: the killed and the resumed runs save with --async (the
#     uninterrupted run does not: the bytes must be the synchronous save's).
#     The kill comes with the save of step 8 pending: right after
#     hfdcp_writer_commit_async on 2 ranks (its background writes most
#     likely still running), two training steps later on 4.  That save,
#     never waited for, must have left no index, and the run resumes from
#     step 4's; no checkpoint is faked.
# Exit status 77: the Fortran example is not built (no Fortran bindings).
set -euo pipefail
mode=$1
# The MPI the build used (CTest sets these; PATH's wrappers otherwise).
mpicc=${HFDCP_MPICC:-mpicc}
mpifort=${HFDCP_MPIFORT:-mpifort}

if [ "$mode" = build ]; then
  build=$2 src=$3 work=$4
  rm -rf "$work"
  mkdir -p "$work/pc"
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  libdir=$(ls -d "$work"/prefix/lib*/ | head -n 1)
  fortran=OFF
  if [ -f "$work/prefix/include/hfdcp.mod" ]; then
    fortran=ON
    test -f "$libdir/pkgconfig/hfdcp-fortran.pc"
  fi
  # find_package(hfdcp) [COMPONENTS Fortran]
  cmake -S "$src/examples" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$work/prefix" \
    -DMPI_C_COMPILER="$mpicc" -DMPI_Fortran_COMPILER="$mpifort" \
    -DHFDCP_EXAMPLES_FORTRAN=$fortran >"$work/cmake.log" 2>&1 ||
    { cat "$work/cmake.log"; exit 1; }
  cmake --build "$work/cmake" >>"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; exit 1; }
  # pkg-config, compiled with the MPI compiler wrappers
  export PKG_CONFIG_PATH="$libdir/pkgconfig"
  "$mpicc" -std=c11 -o "$work/pc/c_trainer" "$src/examples/c_trainer.c" \
    $(pkg-config --cflags --libs hfdcp) -lm
  if [ $fortran = ON ]; then
    test -x "$work/cmake/fortran_trainer"
    (cd "$work/pc" && "$mpifort" -o fortran_trainer "$src/examples/fortran_trainer.f90" \
      $(pkg-config --cflags --libs hfdcp-fortran))
  fi
  bash "$src/mpi_tests/scripts/one_mpi_check.sh" "$work"/cmake/*_trainer "$work"/pc/*_trainer
  echo "examples built against $work/prefix: find_package and pkg-config (Fortran: $fortran)"
  exit 0
fi

[ "$mode" = run ] || { echo "usage: examples_check.sh build|run ..." >&2; exit 2; }
work=$2 lang=$3 np=$4 mpiexec=$5 async=${6:-}
[ -z "$async" ] || [ "$async" = --async ] || { echo "unknown option $async" >&2; exit 2; }
[ -x "$work/cmake/${lang}_trainer" ] || { echo "${lang}_trainer not built: skipped"; exit 77; }
libdir=$(ls -d "$work"/prefix/lib*/ | head -n 1)
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
other=$((np == 2 ? 4 : 2))
if [ -z "$async" ]; then
  kill_at=$((np == 2 ? 6 : 7))
else
  kill_at=$((np == 2 ? 8 : 10))
fi
run=$work/run-$lang-np$np${async:+-async}
rm -rf "$run"
mkdir -p "$run"
fail() { echo "FAIL: $*"; exit 1; }
# HFDCP_MPIEXEC_FLAGS: the launcher's flags (e.g. Open MPI's --oversubscribe)
mpirun_() { "$mpiexec" -n "$1" ${HFDCP_MPIEXEC_FLAGS:-} "${@:2}"; }

# 1. Uninterrupted.
mpirun_ "$np" "$work/cmake/${lang}_trainer" "$run/ref" >"$run/ref.log" 2>&1 ||
  { cat "$run/ref.log"; fail "uninterrupted run"; }
# 2. Killed after step kill_at: step 4 published, step 8 not.
# MPI_Abort's code (3) is the launcher's exit status under Open MPI and
# Hydra alike; the trainer's "killed after step" line is not evidence:
# Hydra may drop a rank's last output when the job aborts.
status=0
mpirun_ "$np" "$work/pc/${lang}_trainer" "$run/ckpt" --kill-at=$kill_at $async >"$run/kill.log" 2>&1 || status=$?
[ "$status" = 3 ] || { cat "$run/kill.log"; fail "the killed run exited with status $status, not MPI_Abort's 3"; }
[ -f "$run/ckpt/step-000004/model.safetensors.index.json" ] || fail "no checkpoint of step 4"
if [ -z "$async" ]; then
  [ ! -e "$run/ckpt/step-000008" ] || fail "a checkpoint of step 8 before the kill"
  # A save killed while publishing: some files renamed into place, no
  # index yet.  The restart must skip it.
  first=$(cd "$run/ckpt/step-000004" && ls -- *.safetensors | head -n 1)
  mkdir "$run/ckpt/step-000008"
  cp "$run/ckpt/step-000004/$first" "$run/ckpt/step-000008/"
else
  # The save of step 8 was started (its directory exists) but, never
  # waited for, has no index nor any file a loader would take for a
  # checkpoint's.  The restart must skip it.
  [ -d "$run/ckpt/step-000008" ] || { cat "$run/kill.log"; fail "no pending save of step 8 at the kill"; }
  ! ls -A "$run/ckpt/step-000008" | grep -E '\.safetensors$|\.index\.json$' ||
    fail "an unpublished save left files under a checkpoint's names"
fi
# 3. Resumed on the other rank count.
mpirun_ "$other" "$work/cmake/${lang}_trainer" "$run/ckpt" --resume $async >"$run/resume.log" 2>&1 ||
  { cat "$run/resume.log"; fail "resumed run"; }
grep -q "resuming at step 5" "$run/resume.log" || { cat "$run/resume.log"; fail "did not resume at step 5"; }
# 4. Same bytes as the uninterrupted run.
same_dir() { # DIR_A DIR_B
  [ "$(cd "$1" && ls -A)" = "$(cd "$2" && ls -A)" ] || fail "$1 and $2 hold different files"
  [ -n "$(ls "$1")" ] || fail "$1 is empty"
  for f in "$1"/*; do cmp "$f" "$2/$(basename "$f")" || fail "$f differs"; done
}
for step in 000004 000008 000012; do
  same_dir "$run/ref/step-$step" "$run/ckpt/step-$step"
done
# Training changed the weights (so equal checkpoints mean something).
! cmp -s <(cat "$run"/ref/step-000004/*) <(cat "$run"/ref/step-000012/*) || fail "weights did not change"
if [ "$lang" = fortran ] && [ -z "$async" ]; then
  mpirun_ "$np" "$work/cmake/c_trainer" "$run/c" >"$run/c.log" 2>&1 || { cat "$run/c.log"; fail "c_trainer"; }
  same_dir "$run/c/step-000012" "$run/ref/step-000012"
fi
rm -rf "$run"
echo "examples: ${lang}_trainer${async:+ $async} $np ranks, killed after step $kill_at, resumed on $other ranks: same checkpoint bytes"
