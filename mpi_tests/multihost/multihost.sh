#!/usr/bin/env bash
# multihost.sh - a save and a resharded load across two simulated hosts.
#
#   bash multihost.sh MULTIHOST_CHECK HFDCP_TOOL
#
# Two network namespaces ("hosts" 10.77.0.1 and 10.77.0.2) joined by a veth
# pair.  mpirun runs in the first; Open MPI's rsh agent (netns_rsh.sh)
# starts the daemon of the second host inside the second namespace, as ssh
# would on a real cluster.  Open MPI's TCP traffic (out-of-band and the
# tcp BTL) is restricted to the veth subnet, so ranks on different hosts
# can only talk over it.  Both hosts write to one directory (the same file
# system, as a cluster's shared file system).  Runs:
#   1. multihost_check save at 4 ranks, 2 per host (OMPIO);
#   2. hfdcp verify of the files written;
#   3. multihost_check shard at 4 ranks, 2 per host: the same tensors as
#      per-rank shard files, consolidated with the first checkpoint's file
#      layout; the consolidated files must equal the first checkpoint's;
#   4. multihost_check load at 3 ranks mapped by node (2 + 1), another
#      decomposition, every byte checked, under ROMIO;
#   5. the same load at 2 ranks (1 + 1) straight from the shard files,
#      its column reads sieved (no shared windows across hosts);
#   6. hfdcp demo at 4 ranks, 2 per host (save, reload in another
#      decomposition, every byte checked);
#   7. a save into a directory the second host does not share (its own
#      tmpfs there): refused on every rank with a clear message, no hang.
# Each run prints every rank's network namespace; the script checks that
# each rank ran on the host it was mapped to.
#
# Exit status: 0 passed; 1 failed; 77 skipped (the reason printed): not
# root, no iproute2, namespaces or veth pairs cannot be made, no Open MPI.
# Namespaces and files are removed on exit, also on failure or a signal.
set -u

check=${1:?usage: multihost.sh MULTIHOST_CHECK HFDCP_TOOL [MPIEXEC]}
tool=${2:?usage: multihost.sh MULTIHOST_CHECK HFDCP_TOOL [MPIEXEC]}
mpirun=${3:-mpirun} # the launcher of the MPI the programs were built with
here=$(cd "$(dirname "$0")" && pwd)
agent=$here/netns_rsh.sh
per_run_timeout=90 # five runs stay under the CTest TIMEOUT (480)

skip() {
    echo "SKIP: multihost: $*"
    exit 77
}
fail() {
    echo "FAIL: multihost: $*"
    exit 1
}

[ "$(uname -s)" = Linux ] || skip "network namespaces need Linux"
[ "$(id -u)" = 0 ] || skip "needs root to create network namespaces (ip netns add)"
command -v ip >/dev/null 2>&1 || skip "no 'ip' command (apt-get install iproute2)"
command -v "$mpirun" >/dev/null 2>&1 || skip "no $mpirun"
"$mpirun" --version 2>&1 | grep -Eqi "open ?mpi|openrte" ||
  skip "needs Open MPI's launcher (it enters the namespaces through plm_rsh_agent); $mpirun is not"
[ -x "$check" ] || fail "no program $check"
[ -x "$tool" ] || fail "no program $tool"

# Leftovers of an earlier run that was killed (SIGKILL skips the trap):
# only our own names, only when their script is gone.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^hfdcp-mh-[0-9]+-[ab]$'); do
    pid=${ns#hfdcp-mh-}
    pid=${pid%-*}
    kill -0 "$pid" 2>/dev/null || ip netns del "$ns" 2>/dev/null
done

ns_a=hfdcp-mh-$$-a
ns_b=hfdcp-mh-$$-b
veth_a=hfmh$$a # at most 15 characters
veth_b=hfmh$$b
host_a=10.77.0.1
host_b=10.77.0.2
work=
made_a=0
made_b=0
cleanup() {
    [ "$made_a" = 1 ] && ip netns del "$ns_a" 2>/dev/null # the veth pair goes with it
    [ "$made_b" = 1 ] && ip netns del "$ns_b" 2>/dev/null
    [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

err=$(ip netns add "$ns_a" 2>&1) || skip "cannot create a network namespace: $err"
made_a=1
err=$(ip netns add "$ns_b" 2>&1) || skip "cannot create a network namespace: $err"
made_b=1
err=$(ip link add "$veth_a" netns "$ns_a" type veth peer name "$veth_b" netns "$ns_b" 2>&1) ||
    skip "cannot create a veth pair between namespaces: $err"
set -e
ip -n "$ns_a" addr add "$host_a/24" dev "$veth_a"
ip -n "$ns_b" addr add "$host_b/24" dev "$veth_b"
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set "$veth_a" up
ip -n "$ns_b" link set "$veth_b" up
set +e

# The namespace each host's processes must report.
inode_a=$(ip netns exec "$ns_a" readlink /proc/self/ns/net)
inode_b=$(ip netns exec "$ns_b" readlink /proc/self/ns/net)
[ -n "$inode_a" ] && [ -n "$inode_b" ] && [ "$inode_a" != "$inode_b" ] ||
    fail "cannot tell the namespaces apart ('$inode_a', '$inode_b')"
echo "multihost: host $host_a = namespace $ns_a $inode_a"
echo "multihost: host $host_b = namespace $ns_b $inode_b"

work=$(mktemp -d "${TMPDIR:-/tmp}/hfdcp-multihost.XXXXXX") || fail "mktemp"
chmod 755 "$work"
printf '%s slots=2\n%s slots=2\n' "$host_a" "$host_b" >"$work/hostfile"
export HFDCP_MH_HOSTS="$host_a=$ns_a $host_b=$ns_b"

# run NAME EXPECTED_HOSTS MPIRUN_ARGS... : runs mpirun inside the first
# host, prints its output, and checks that rank r ran on the host named by
# the r-th letter of EXPECTED_HOSTS (a or b).
run() {
    local name=$1 expect=$2
    shift 2
    local out=$work/$name.out
    echo "multihost: == $name: mpirun $*"
    timeout -k 10 "$per_run_timeout" ip netns exec "$ns_a" \
        "$mpirun" --hostfile "$work/hostfile" \
        --mca plm_rsh_agent "$agent" \
        --mca oob_tcp_if_include 10.77.0.0/24 \
        --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 \
        "$@" >"$out" 2>&1
    local rc=$?
    sed 's/^/    /' "$out"
    [ "$rc" = 124 ] && fail "$name: timed out after ${per_run_timeout}s"
    [ "$rc" = 0 ] || fail "$name: mpirun exited with $rc"
    for ((r = 0; r < ${#expect}; r++)); do
        local want=$inode_a
        [ "${expect:r:1}" = b ] && want=$inode_b
        grep -qxF "rank $r netns $want" "$out" ||
            fail "$name: rank $r did not run in the namespace of host ${expect:r:1} ($want)"
    done
    grep -q "^rank ${#expect} " "$out" && fail "$name: more ranks than expected"
    return 0
}

# A one-line stand-in for the namespace report of `hfdcp demo`, which does
# not print it: each rank prints its own, then the demo runs.
cat >"$work/demo.sh" <<EOF
#!/bin/sh
echo "rank \$OMPI_COMM_WORLD_RANK netns \$(readlink /proc/self/ns/net)"
exec "$tool" demo --params 1M --max-shard-bytes 500k --out "$work/demo"
EOF
chmod 755 "$work/demo.sh"

run save aabb -np 4 --map-by slot "$check" save "$work/ckpt"
grep -q "^save ok" "$work/save.out" || fail "save: no 'save ok' line"
echo "multihost: == verify: hfdcp verify $work/ckpt"
"$tool" verify "$work/ckpt" | sed 's/^/    /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "hfdcp verify found problems in the saved checkpoint"
nfiles=$(ls "$work/ckpt"/model-*-of-*.safetensors 2>/dev/null | wc -l)
[ "$nfiles" -ge 2 ] || fail "expected several files, found $nfiles"

run shard aabb -np 4 --map-by slot "$check" shard "$work/shards" "$work/consolidated" "$work/ckpt"
grep -q "^shard ok" "$work/shard.out" || fail "shard: no 'shard ok' line"
nshards=$(ls "$work/shards"/shard-*.safetensors 2>/dev/null | wc -l)
[ "$nshards" -ge 4 ] || fail "expected a shard file per rank, found $nshards"
for f in "$work/ckpt"/*; do
    cmp -s "$f" "$work/consolidated/${f##*/}" ||
        fail "consolidated ${f##*/} differs from the direct save's"
done
[ "$(ls "$work/consolidated" | wc -l)" = "$(ls "$work/ckpt" | wc -l)" ] ||
    fail "the consolidated checkpoint has other files than the direct save"
echo "multihost: consolidated files equal the direct save's ($nfiles files + index)"

run load aba -np 3 --map-by node --mca io romio321 "$check" load "$work/ckpt"
grep -q "^load ok" "$work/load.out" || fail "load: no 'load ok' line"

run load_shards ab -np 2 --map-by node "$check" load "$work/shards"
grep -q "^load ok" "$work/load_shards.out" || fail "load_shards: no 'load ok' line"
# Columns on two ranks, one per host, from files on a local file system:
# the aggregation's windows cannot be shared across hosts, so
# hfdcp_sieve_reads=auto sieves (on one host the same read is aggregated
# through shared windows: test_mpiio).
grep -q "^load ok: .*, [1-9][0-9]* sieved transfers" "$work/load_shards.out" ||
    fail "load_shards: the column reads across hosts were not sieved"

run demo aabb -np 4 --map-by slot "$work/demo.sh"
grep -q "^verified: every byte" "$work/demo.out" || fail "demo: no 'verified' line"

# 7. A directory that host b does not share (its own tmpfs there): the save
#    must fail on every rank with a message naming the problem, not hang
#    (OMPIO waits forever in MPI_File_open on such a directory).
mkdir -p "$work/private"
echo "multihost: == unshared: save into a directory host $host_b does not share"
HFDCP_MH_PRIVATE="$host_b=$work/private" timeout -k 10 "$per_run_timeout" \
    ip netns exec "$ns_a" \
    "$mpirun" --hostfile "$work/hostfile" --mca plm_rsh_agent "$agent" \
    --mca oob_tcp_if_include 10.77.0.0/24 \
    --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 \
    -x HFDCP_MH_PRIVATE -np 4 --map-by slot "$check" save "$work/private/ckpt" \
    >"$work/unshared.out" 2>&1
rc=$?
sed 's/^/    /' "$work/unshared.out"
[ "$rc" = 124 ] && fail "unshared: the save hung (timed out after ${per_run_timeout}s)"
[ "$rc" = 0 ] && fail "unshared: the save succeeded on a directory host b does not see"
grep -q "must be on a file system shared by every rank" "$work/unshared.out" ||
    fail "unshared: no message saying the directory is not shared"
ls "$work/private/ckpt"/*.safetensors >/dev/null 2>&1 &&
    fail "unshared: files left in the directory after the failed save"

echo "multihost: passed (save at 4 ranks on 2 hosts, $nfiles files; sharded save and" \
    "consolidation at 4 ranks; loads at 3 ranks under ROMIO and at 2 ranks from the shards;" \
    "demo at 4 ranks; an unshared directory refused)"
exit 0
