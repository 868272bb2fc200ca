#!/usr/bin/env bash
# one_mpi_check.sh FILE...: every FILE (an executable or a shared library)
# loads the libraries of one MPI implementation at most.  A program that
# loads Open MPI's libmpi and MPICH's libmpich has two MPI_Init and two
# MPI_COMM_WORLD: it cannot work, and it happens when a dependency (HDF5,
# a compiler wrapper, CMake's MPI) was found for the wrong MPI.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: one_mpi_check.sh FILE..." >&2; exit 2; }
bad=0
for f in "$@"; do
  libs=$(ldd "$f" 2>/dev/null | awk '{print $1}') || { echo "FAIL: ldd $f"; bad=1; continue; }
  families=""
  grep -Eq '^lib(mpi|open-pal|open-rte|mpi_mpifh|mpi_usempif08)\.so' <<<"$libs" && families+=" Open-MPI"
  grep -Eq '^lib(mpich|mpichfort|mpl)\.so' <<<"$libs" && families+=" MPICH"
  if [ "$(wc -w <<<"$families")" -gt 1 ]; then
    echo "FAIL: $f loads two MPI implementations:$families"
    ldd "$f" | grep -E 'libmpi|libmpich|libopen-pal|libopen-rte' | sed 's/^/  /'
    bad=1
  fi
done
[ $bad = 0 ] && echo "one MPI implementation in each of $# files"
exit $bad
