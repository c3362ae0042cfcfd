#!/bin/sh
# SPDX-License-Identifier: MIT
#
# two_hosts.sh TEST_MPI STATIC_PROG HOST_LOSS_PROG - the MPI engine with its
# workers on a second host.
#
# The two hosts are this machine seen through two network namespaces, each
# with an address of its own on a veth pair between them; the second also
# has a host name of its own (a UTS namespace).  The programs run in the
# first; Open MPI reaches the second the way it reaches a real host: its
# rsh launcher runs `orted` there through an agent (this script, called as
# "agent HOST COMMAND...") instead of ssh.  So the runs below take the
# paths a cluster takes - a remote daemon, the TCP transport between
# hosts, host names in messages - but the two "hosts" share one kernel,
# one file system and one set of process ids.  Nothing is added to the
# machine's own network namespace, so other tests and other runs of this
# script (the namespaces' names carry its pid) do not see these addresses.
#
# Runs, each under a time limit, all within BUDGET seconds:
#   spawn mode as a plain program whose workers Open MPI places on the
#     other host (OMPI_MCA_orte_default_hostfile): results, a task's
#     failure naming the other host, map chunks, 64 MiB payloads both ways,
#     a call timeout, a worker killed there (its pool breaks, the other
#     pool goes on, a new pool works), kill_workers, a broken pool's live
#     workers leaving; after each, nothing of it may be left running on
#     the other host;
#   the same over a slow link (25 Mbit/s, tc's token bucket): a 16 MiB
#     result with a 2 s heartbeat timeout;
#   the same over a lossy link (1 % of the packets dropped each way,
#     nftables): results, failures, map chunks, 64 MiB payloads, a call
#     timeout, a dead worker found;
#   with ssh as the launcher (an sshd of its own in the second
#     namespace): spawn mode's results, failure, map chunks and dead
#     worker, and static mode's run;
#   static mode, `mpirun -np 3 --host HERE:1,THERE:2`: the pool on rank 0
#     with a failure naming the other host, calls there asked to stop
#     (cf_terminate_workers), a rank there falling silent and a long frame
#     to one failing half-way (the job still ends 0), and a rank killed
#     there ending the job;
#   last, the other host cut off (its link taken down while a call runs
#     there): the pool breaks within its heartbeat timeout, a new pool
#     gives up after its start_timeout, the program ends 0
#     (host_loss_prog.c).
#
# Needs root, iproute2, util-linux's unshare and coreutils' timeout (and
# nftables for the lossy link, openssh-client and openssh-server for the
# ssh launcher, whose cases say NOT RUN without them); where
# a namespace or the veth pair cannot be made it prints why and exits 77
# (skipped).  A run killed outright (SIGKILL) leaves its namespaces; the
# next run removes those of runs that are gone.
set -u

NS_PREFIX=cf2h-

if [ "${1:-}" = agent ]; then
    # Open MPI's rsh launcher: "agent HOST COMMAND..."; the command is one
    # shell line, as ssh would run it.
    shift 2
    exec ip netns exec "$CF_2H_NS_B" unshare -u sh -c "hostname $CF_2H_NAME && $*"
fi

test_mpi=$1
static_prog=$2
host_loss_prog=$3
here_dir=$(cd "$(dirname "$0")" && pwd)
self="$here_dir/$(basename "$0")"
budget=${CF_2H_BUDGET:-480} # ctest's TIMEOUT is 600
started=$(date +%s)

skip() {
    echo "two_hosts: skipped: $*"
    exit 77
}
[ "$(id -u)" = 0 ] || skip "needs root"
for c in ip unshare timeout mpirun; do
    command -v $c >/dev/null || skip "needs $c"
done

# kill_all_in NS: every process in network namespace NS.
kill_all_in() {
    for p in $(ip netns pids "$1" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
}

# Namespaces of earlier runs that were killed outright.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NS_PREFIX[0-9]*-[ab]\$"); do
    pid=${ns#"$NS_PREFIX"}
    pid=${pid%-*}
    kill -0 "$pid" 2>/dev/null && continue
    kill_all_in "$ns"
    ip netns del "$ns" 2>/dev/null
done

ns_a=$NS_PREFIX$$-a
ns_b=$NS_PREFIX$$-b
here=10.78.0.1
there=10.78.0.2
tmp=$(mktemp -d)
case_pid=
made_run_sshd=
cleanup() {
    [ -n "$case_pid" ] && kill "$case_pid" 2>/dev/null
    for ns in "$ns_b" "$ns_a"; do
        kill_all_in "$ns"
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$tmp"
    if [ -n "$made_run_sshd" ]; then rmdir /run/sshd 2>/dev/null; fi
}
trap cleanup EXIT
trap 'echo "two_hosts: stopped by a signal"; exit 1' INT TERM HUP

ip netns add "$ns_a" 2>/dev/null && ip netns add "$ns_b" 2>/dev/null ||
    skip "cannot make a network namespace"
# The pair is made inside the first namespace and one end moved to the
# second, so neither end ever shows in the machine's own namespace.
ip netns exec "$ns_a" ip link add cf2h0 type veth peer name cf2h1 2>/dev/null ||
    skip "cannot make a veth pair"
ip netns exec "$ns_a" ip link set cf2h1 netns "$ns_b" &&
    ip netns exec "$ns_a" ip addr add "$here/24" dev cf2h0 &&
    ip netns exec "$ns_a" ip link set cf2h0 up &&
    ip netns exec "$ns_a" ip link set lo up &&
    ip netns exec "$ns_b" ip addr add "$there/24" dev cf2h1 &&
    ip netns exec "$ns_b" ip link set cf2h1 up &&
    ip netns exec "$ns_b" ip link set lo up || skip "cannot configure the veth pair"
ip netns exec "$ns_b" unshare -u true 2>/dev/null || skip "cannot make a UTS namespace"

export CF_2H_NS_B="$ns_b" CF_2H_NAME=cf-remote-host
export OMPI_MCA_plm_rsh_agent="sh $self agent"
export OMPI_MCA_oob_tcp_if_include=10.78.0.0/24
export OMPI_MCA_btl_tcp_if_include=10.78.0.0/24
# Open MPI's session directories (and PMIx's shared memory in them) under
# $tmp, which cleanup removes: the daemons on the other host end by kill
# -9 and cannot remove theirs, and under /tmp each run left about 8 MB
# behind.  An MCA parameter rather than TMPDIR, because the launcher hands
# it to the remote daemon on its command line, through ssh as well.
export OMPI_MCA_orte_tmpdir_base="$tmp"
export CF_TEST_WORKER_HOST=cf-remote-host
echo "$there slots=8" >"$tmp/hosts"

fails=0
fail() {
    echo "two_hosts: $*"
    fails=$((fails + 1))
}

# run NAME LIMIT COMMAND...: COMMAND in the first namespace, under
# min(LIMIT, what is left of the budget); its output in $tmp/out, its
# status in $rc.  A signal to this script stops the wait at once (the
# trap ends the case through cleanup).
run() {
    name=$1 limit=$2
    shift 2
    left=$((budget - ($(date +%s) - started)))
    not_run=
    if [ $left -lt 20 ]; then
        fail "$name: not run, the budget of $budget s is spent"
        rc=125 not_run=yes
        return
    fi
    [ $limit -gt $left ] && limit=$left
    t0=$(date +%s)
    timeout -k 5 "$limit" ip netns exec "$ns_a" "$@" >"$tmp/out" 2>&1 &
    case_pid=$!
    wait $case_pid
    rc=$?
    case_pid=
    took=$(($(date +%s) - t0))
}
report() { # NAME OK: prints the outcome of the last run()
    if [ -n "$not_run" ]; then
        return
    elif [ "$2" = yes ]; then
        echo "two_hosts: $1: ok ($took s)"
    else
        fail "$1: FAILED (exit $rc, $took s)"
        tail -30 "$tmp/out"
    fi
}
# Nothing of the last run may stay on the other host: its daemon and
# workers end soon after the program does (at most 15 s here).
left_on_b() { # the processes in the second namespace, but its sshd
    ip netns pids "$ns_b" 2>/dev/null | grep -vx "${sshd_pid:-none}"
}
gone_from_b() {
    i=0
    while [ -n "$(left_on_b)" ]; do
        i=$((i + 1))
        if [ $i -gt 75 ]; then
            fail "$1: processes left on the other host: $(left_on_b | tr '\n' ' ')"
            for p in $(left_on_b); do kill -9 "$p" 2>/dev/null; done
            return
        fi
        sleep 0.2
    done
}

# spawn_cases LABEL TEST...: each test_mpi case in spawn mode, as a plain
# program whose workers Open MPI places on the other host, then nothing
# of it may be left there.
spawn_cases() {
    label=$1
    shift
    for t in "$@"; do
        run "$label$t" 120 env OMPI_MCA_orte_default_hostfile="$tmp/hosts" "$test_mpi" "$t"
        [ $rc -eq 0 ] && ok=yes || ok=no
        report "$label$t" $ok
        gone_from_b "$label$t"
    done
}

# static_ok LABEL: static_prog on 3 ranks, two of them on the other host
# (results, a failure naming it, a chunked map), must end 0 saying so.
hosts="$here:1,$there:2"
static_ok() {
    run "$1" 60 mpirun -np 3 --host "$hosts" "$static_prog"
    [ $rc -eq 0 ] && grep -q "static_prog: 2 workers OK" "$tmp/out" && ok=yes || ok=no
    report "$1" $ok
    gone_from_b "$1"
}

spawn_cases "spawn " test_results test_task_failure_names_worker test_map_chunks \
    test_big_payloads test_timeout test_dead_worker_breaks_pool test_two_pools_at_once \
    test_terminate_and_kill_workers test_broken_pool_workers_leave

# A slow link: 25 Mbit/s each way (tc's token bucket filter on both
# ends).  A 16 MiB result takes about 5.4 s to cross; the pool, whose
# heartbeat timeout is 2 s, must stay whole (each part that comes proves
# the worker alive; with 16 MiB parts it broke).
if ip netns exec "$ns_a" tc qdisc add dev cf2h0 root tbf rate 25mbit burst 64kb latency 100ms \
       2>/dev/null &&
    ip netns exec "$ns_b" tc qdisc add dev cf2h1 root tbf rate 25mbit burst 64kb latency 100ms \
       2>/dev/null; then
    spawn_cases "spawn, 25 Mbit/s link: " test_slow_big_result_keeps_pool
    # The link must have been slow: 16 MiB take 5.4 s at 25 Mbit/s.
    secs=$(sed -n 's/.*16 MiB result in \([0-9]*\)\..*/\1/p' "$tmp/out")
    if [ -n "$secs" ]; then
        echo "two_hosts: 16 MiB result over the slow link in $secs s"
        [ "$secs" -ge 3 ] || fail "slow link: 16 MiB crossed in $secs s, the link was not slowed"
    fi
    ip netns exec "$ns_a" tc qdisc del dev cf2h0 root
    ip netns exec "$ns_b" tc qdisc del dev cf2h1 root
else
    ip netns exec "$ns_a" tc qdisc del dev cf2h0 root 2>/dev/null
    echo "two_hosts: slow link: NOT RUN (tc cannot add a token bucket filter here)"
fi

# A lossy link: 1 % of the packets dropped at random each way (nftables
# in the first namespace; segmentation offload is turned off on the pair
# meanwhile, so that a packet nftables sees is one packet on the wire, not
# a burst of up to 64 KiB).  TCP resends them; results, failures, big
# payloads and timeouts must come as on a clean link, and a dead worker
# must still be found.  (Not a new pool right after a broken one: there,
# with 3 % of the packets nftables saw dropped, Open MPI's TCP transport
# once took the new job's connection for an old one's and the pool did
# not start - CF_EBROKEN, no hang - 1 run in 31.)
ip netns exec "$ns_a" ip link set dev cf2h0 gso_max_segs 1 2>/dev/null &&
    ip netns exec "$ns_b" ip link set dev cf2h1 gso_max_segs 1 2>/dev/null &&
    segs=yes || segs=
if [ -n "$segs" ] && command -v nft >/dev/null && ip netns exec "$ns_a" nft -f - 2>/dev/null <<EOF; then
table inet cf2h {
  chain out { type filter hook output priority 0; oifname "cf2h0" numgen random mod 100 < 1 drop; }
  chain in { type filter hook input priority 0; iifname "cf2h0" numgen random mod 100 < 1 drop; }
}
EOF
    spawn_cases "spawn, 1 % loss: " test_results test_task_failure_names_worker test_map_chunks \
        test_big_payloads test_timeout test_dead_worker_found
    ip netns exec "$ns_a" nft delete table inet cf2h
    ip netns exec "$ns_a" ip link set dev cf2h0 gso_max_segs 65535
    ip netns exec "$ns_b" ip link set dev cf2h1 gso_max_segs 65535
else
    echo "two_hosts: lossy link: NOT RUN (needs nft from nftables, nf_tables in the kernel" \
        "and gso_max_segs from ip)"
fi

# ssh as the launcher, as on a cluster: an sshd of this run's own (its
# own keys and configuration, in $tmp) listens in the second namespace,
# and Open MPI's rsh launcher runs `ssh` instead of the agent above.
# ssh gives the remote command a fresh environment, and Open MPI passes
# on only its own variables: the sanitizers' settings and the tests' time
# scale reach the other host through the sshd's SetEnv.
sshd_pid=
if command -v ssh >/dev/null && command -v ssh-keygen >/dev/null && [ -x /usr/sbin/sshd ]; then
    mkdir -p "$tmp/ssh"
    [ -d /run/sshd ] || { mkdir -p /run/sshd && made_run_sshd=yes; }
    ssh-keygen -q -t ed25519 -N "" -f "$tmp/ssh/host" &&
        ssh-keygen -q -t ed25519 -N "" -f "$tmp/ssh/user" &&
        cp "$tmp/ssh/user.pub" "$tmp/ssh/authorized_keys"
    # One SetEnv line: sshd takes only the first of several.
    setenv=
    for v in ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS CF_TEST_TIMEOUT_SCALE; do
        eval "val=\${$v-}"
        [ -n "$val" ] && setenv="$setenv $v=$val"
    done
    [ -n "$setenv" ] && echo "SetEnv$setenv" >"$tmp/ssh/setenv" || : >"$tmp/ssh/setenv"
    cat - "$tmp/ssh/setenv" >"$tmp/ssh/sshd_config" <<EOF
ListenAddress $there
HostKey $tmp/ssh/host
PermitRootLogin prohibit-password
AuthorizedKeysFile $tmp/ssh/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PidFile $tmp/ssh/sshd.pid
EOF
    cat >"$tmp/ssh/config" <<EOF
Host *
  User root
  IdentityFile $tmp/ssh/user
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
  ConnectTimeout 10
EOF
    ip netns exec "$ns_b" unshare -u sh -c \
        "hostname $CF_2H_NAME && exec /usr/sbin/sshd -D -e -f $tmp/ssh/sshd_config" \
        >"$tmp/ssh/log" 2>&1 &
    sshd_bg=$!
    # Up to about 10 s for a first login, each attempt bounded.
    i=0
    while [ $i -lt 20 ]; do
        if timeout 5 ip netns exec "$ns_a" ssh -F "$tmp/ssh/config" "$there" true 2>/dev/null; then
            sshd_pid=$(cat "$tmp/ssh/sshd.pid" 2>/dev/null)
            [ -n "$sshd_pid" ] || sshd_pid=none-read
            break
        fi
        i=$((i + 1))
        sleep 0.5
    done
    if [ -z "$sshd_pid" ] || [ "$sshd_pid" = none-read ]; then
        kill "$sshd_bg" 2>/dev/null
        wait "$sshd_bg" 2>/dev/null
        kill_all_in "$ns_b"
        echo "two_hosts: the sshd did not let the launcher in; its log:"
        tail -5 "$tmp/ssh/log"
        sshd_pid=
    fi
fi
if [ -n "$sshd_pid" ]; then
    agent=$OMPI_MCA_plm_rsh_agent
    export OMPI_MCA_plm_rsh_agent="ssh -F $tmp/ssh/config"
    spawn_cases "spawn over ssh: " test_results test_task_failure_names_worker \
        test_map_chunks test_dead_worker_breaks_pool
    static_ok "static over ssh"
    export OMPI_MCA_plm_rsh_agent="$agent"
    [ "$(grep -c "Accepted publickey" "$tmp/ssh/log")" -ge 5 ] ||
        fail "ssh: the launcher did not log in for each run: $(grep -c Accepted "$tmp/ssh/log")"
    kill "$sshd_pid" 2>/dev/null
    sshd_pid=
    gone_from_b "sshd"
else
    echo "two_hosts: ssh launcher: NOT RUN (needs ssh, ssh-keygen and /usr/sbin/sshd," \
        "from openssh-client and openssh-server, and an sshd that starts)"
fi

static_ok "static"
# static_case MODE NP HOSTS PATTERN: static_prog MODE (see its header) on
# NP ranks over HOSTS must end 0, well before the launcher's limit, having
# printed PATTERN.
static_case() {
    run "static $1" 60 env MPIEXEC_TIMEOUT=30 mpirun -np "$2" --host "$3" "$static_prog" "$1"
    [ $rc -eq 0 ] && grep -q "$4" "$tmp/out" && ok=yes || ok=no
    report "static $1" $ok
    gone_from_b "static $1"
}
# Calls running there asked to stop; a rank there falling silent (the
# pool breaks, every rank still leaves); a long frame to a rank there
# failing half-way (it still hears EXIT).
static_case terminate 3 "$hosts" "terminate after .* workers OK"
static_case mute 3 "$hosts" "mute, workers OK"
static_case partfail 2 "$here:1,$there:1" "partfail, workers OK"
# A rank killed on the other host: the launcher ends the job, non-zero,
# within seconds (not 110, MPIEXEC_TIMEOUT's exit), after the pool was up.
run "static crash ends the job" 60 env MPIEXEC_TIMEOUT=30 mpirun -np 3 --host "$hosts" \
    "$static_prog" crash
[ $rc -ne 0 ] && [ $rc -ne 110 ] && [ $rc -ne 124 ] && grep -q "pool up, a rank dies now" "$tmp/out" &&
    ok=yes || ok=no
report "static crash ends the job" $ok
gone_from_b "static crash"

# Last: it leaves the link down.
run "spawn, the other host cut off" 90 env OMPI_MCA_orte_default_hostfile="$tmp/hosts" \
    "$host_loss_prog" cf-remote-host "ip link set cf2h0 down"
[ $rc -eq 0 ] && grep -q "host loss OK" "$tmp/out" && ok=yes || ok=no
report "spawn, the other host cut off" $ok

# The end cleans up after itself: no process left in either namespace
# once killed (within 5 s), neither namespace left (their veth pair goes
# with them).
for ns in "$ns_b" "$ns_a"; do
    kill_all_in "$ns"
    n=0
    while [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && [ $n -lt 50 ]; do
        sleep 0.1 # no event for the end of another namespace's processes
        n=$((n + 1))
    done
    if [ -n "$(ip netns pids "$ns" 2>/dev/null)" ]; then
        echo "two_hosts: processes left in $ns after 5 s: FAILED"
        fails=$((fails + 1))
    fi
done
cleanup
trap - EXIT
for ns in "$ns_a" "$ns_b"; do
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns"; then
        echo "two_hosts: namespace $ns left behind: FAILED"
        fails=$((fails + 1))
    fi
done

[ $fails -eq 0 ] || {
    echo "two_hosts: $fails failed"
    exit 1
}
echo "two_hosts: all passed"
