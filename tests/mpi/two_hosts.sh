#!/bin/sh
# SPDX-License-Identifier: MIT
#
# two_hosts.sh TEST_MPI STATIC_PROG HOST_LOSS_PROG - the MPI engine with its
# workers on a second host.
#
# The second host is this machine seen through a network namespace and a
# UTS namespace of its own (its own address and host name, reached over
# TCP through a veth pair), and Open MPI reaches it the way it reaches a
# real one: its rsh launcher runs `orted` there through an agent (this
# script, called as "agent HOST COMMAND...") instead of ssh.  So the runs
# below take the paths a cluster takes - a remote daemon, the TCP
# transport between hosts, host names in messages - but the two "hosts"
# share one kernel, one file system and one set of process ids.
#
# Runs, each under a time limit:
#   spawn mode as a plain program whose workers Open MPI places on the
#     other host (OMPI_MCA_orte_default_hostfile): results, a task's
#     failure naming the other host, big payloads both ways, a worker
#     killed there (its pool breaks, the other pool goes on, a new pool
#     works), kill_workers;
#   static mode, `mpirun -np 3 --host HERE:1,THERE:2`: the pool on rank 0,
#     a failure naming the other host, a rank killed there ending the job;
#   last, the other host cut off (its link taken down while a call runs
#     there): the pool breaks within its heartbeat timeout, a new pool
#     gives up after its start_timeout, the program ends 0
#     (host_loss_prog.c).
#
# Needs root, iproute2 and util-linux's unshare; where a namespace or the
# veth pair cannot be made it prints why and exits 77 (skipped).
set -u

if [ "${1:-}" = agent ]; then
    # Open MPI's rsh launcher: "agent HOST COMMAND..."; the command is one
    # shell line, as ssh would run it.
    shift
    host=$1
    shift
    exec ip netns exec "$CF_2H_NS" unshare -u sh -c "hostname $CF_2H_NAME && $*"
fi

test_mpi=$1
static_prog=$2
host_loss_prog=$3
skip() { echo "two_hosts: skipped: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root"
command -v ip >/dev/null && command -v unshare >/dev/null || skip "needs ip and unshare"
command -v mpirun >/dev/null || skip "needs mpirun"

# Names and addresses of this run's own, so that two runs at once do not meet.
id=$(( $$ % 250 + 1 ))
ns=cf2h$$
here=10.78.$id.1
there=10.78.$id.2
tmp=$(mktemp -d)
cleanup() {
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
    ip link del "cfa$$" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$ns" 2>/dev/null || skip "cannot make a network namespace"
ip link add "cfa$$" type veth peer name "cfb$$" 2>/dev/null || skip "cannot make a veth pair"
ip link set "cfb$$" netns "$ns" &&
    ip addr add "$here/24" dev "cfa$$" && ip link set "cfa$$" up &&
    ip netns exec "$ns" ip addr add "$there/24" dev "cfb$$" &&
    ip netns exec "$ns" ip link set "cfb$$" up &&
    ip netns exec "$ns" ip link set lo up || skip "cannot configure the veth pair"
unshare -u true 2>/dev/null || skip "cannot make a UTS namespace"

export CF_2H_NS="$ns" CF_2H_NAME=cf-remote-host
export OMPI_MCA_plm_rsh_agent="$0 agent"
export OMPI_MCA_oob_tcp_if_include="10.78.$id.0/24"
export OMPI_MCA_btl_tcp_if_include="10.78.$id.0/24"
export CF_TEST_WORKER_HOST=cf-remote-host
echo "$there slots=8" >"$tmp/hosts"

fails=0
run() { # NAME LIMIT COMMAND...: passes when COMMAND exits 0
    name=$1 limit=$2
    shift 2
    start=$(date +%s)
    timeout -k 5 "$limit" "$@" >"$tmp/out" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "two_hosts: $name: ok ($(( $(date +%s) - start )) s)"
    else
        echo "two_hosts: $name: FAILED (exit $rc)"
        tail -30 "$tmp/out"
        fails=$((fails + 1))
    fi
}

for t in test_results test_task_failure_names_worker test_map_chunks test_big_payloads \
         test_dead_worker_breaks_pool test_two_pools_at_once test_terminate_and_kill_workers \
         test_timeout test_broken_pool_workers_leave; do
    run "spawn $t" 120 env OMPI_MCA_orte_default_hostfile="$tmp/hosts" "$test_mpi" "$t"
done

hosts="$here:1,$there:2"
run "static" 60 sh -c "mpirun -np 3 --host $hosts '$static_prog' | grep -q 'workers OK'"
# A rank killed on the other host: the launcher ends the job, non-zero,
# within seconds (not 110, MPIEXEC_TIMEOUT's exit).
run "static crash ends the job" 60 sh -c \
    "MPIEXEC_TIMEOUT=30 mpirun -np 3 --host $hosts '$static_prog' crash; rc=\$?; echo exit=\$rc; test \$rc -ne 0 && test \$rc -ne 110"

# Last: it leaves the link down.
run "spawn, the other host cut off" 90 env OMPI_MCA_orte_default_hostfile="$tmp/hosts" \
    "$host_loss_prog" cf-remote-host "ip link set cfa$$ down"

[ $fails -eq 0 ] || { echo "two_hosts: $fails failed"; exit 1; }
echo "two_hosts: all passed"
