#!/bin/sh
# netns_rsh.sh - Open MPI's rsh agent for multihost.sh (plm_rsh_agent): it
# plays ssh to a simulated host by entering that host's network namespace.
#
# Called by mpirun as `netns_rsh.sh [OPTIONS] HOST COMMAND...`, like ssh:
# the COMMAND words are joined and run by a shell, as sshd would.  HOST is
# looked up in HFDCP_MH_HOSTS ("10.77.0.1=NAMESPACE_A 10.77.0.2=NAMESPACE_B",
# set by multihost.sh and inherited from mpirun).
while [ $# -gt 0 ]; do
    case "$1" in
    -*) shift ;; # ssh options Open MPI may add (-x): meaningless here
    *) break ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "netns_rsh.sh: usage: netns_rsh.sh HOST COMMAND..." >&2
    exit 255
fi
host=$1
shift
ns=
for pair in $HFDCP_MH_HOSTS; do
    if [ "${pair%%=*}" = "$host" ]; then
        ns=${pair#*=}
    fi
done
if [ -z "$ns" ]; then
    echo "netns_rsh.sh: unknown host '$host' (HFDCP_MH_HOSTS='$HFDCP_MH_HOSTS')" >&2
    exit 255
fi
# HFDCP_MH_PRIVATE="HOST=DIR": that host sees its own empty tmpfs at DIR
# (node-local storage), not the directory the other host writes to.
priv=
for pair in ${HFDCP_MH_PRIVATE:-}; do
    if [ "${pair%%=*}" = "$host" ]; then
        priv=${pair#*=}
    fi
done
if [ -n "$priv" ]; then
    exec ip netns exec "$ns" /bin/sh -c "mount -t tmpfs none '$priv' && $*"
fi
exec ip netns exec "$ns" /bin/sh -c "$*"
