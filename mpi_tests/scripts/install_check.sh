#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, then builds and runs a
# small user program against it twice: through find_package(hfdcp) and
# through pkg-config with mpicc.  Usage: install_check.sh BUILD_DIR SRC_DIR
set -euo pipefail
mpicc=${HFDCP_MPICC:-mpicc} # the build's MPI (CTest sets it)
build=$1
src=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hfdcp-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -f "$tmp/prefix/include/hfdcp.h"
test -x "$tmp/prefix/bin/hfdcp"
libdir=$(ls -d "$tmp"/prefix/lib*/ | head -n 1)
test -f "$libdir/pkgconfig/hfdcp.pc"

# find_package(hfdcp)
cmake -S "$src/mpi_tests/consumer" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DMPI_C_COMPILER="$mpicc" >/dev/null
cmake --build "$tmp/cmake-build" >/dev/null
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/cmake-build/consumer")
[ "$out" = "HFDCP_ERR_FORMAT 16" ] || { echo "find_package consumer printed '$out'"; exit 1; }

# pkg-config, compiled with the MPI compiler wrapper
export PKG_CONFIG_PATH="$libdir/pkgconfig"
"$mpicc" -o "$tmp/pc-consumer" "$src/mpi_tests/consumer/consumer.c" $(pkg-config --cflags --libs hfdcp)
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/pc-consumer")
[ "$out" = "HFDCP_ERR_FORMAT 16" ] || { echo "pkg-config consumer printed '$out'"; exit 1; }
# Static linking needs the private dependencies.
"$mpicc" -o "$tmp/pc-static" "$src/mpi_tests/consumer/consumer.c" $(pkg-config --static --cflags hfdcp) \
  "$libdir/libhfdcp.a" $(pkg-config --static --libs-only-l hfdcp | sed 's/-lhfdcp//')
out=$("$tmp/pc-static")
[ "$out" = "HFDCP_ERR_FORMAT 16" ] || { echo "static consumer printed '$out'"; exit 1; }
bash "$src/mpi_tests/scripts/one_mpi_check.sh" "$tmp/cmake-build/consumer" "$tmp/pc-consumer" \
  "$tmp/pc-static" "$tmp/prefix/bin/hfdcp" "$libdir"/libhfdcp*.so
echo "install check: find_package, pkg-config (shared and static) consumers OK"
