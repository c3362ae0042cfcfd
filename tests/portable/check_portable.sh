#!/bin/sh
# SPDX-License-Identifier: MIT
# The portable library (CF_PORTABLE=ON) uses no Linux-only interface: no
# object of it includes a Linux-only header (from the compiler's
# dependency files) or calls a Linux-only function (its undefined
# symbols).  A hit names the file or symbol.
# Usage: check_portable.sh <libcfutures.a> <directory of the library's objects>
set -eu
lib=$1
objdir=$2
bad=0
deps=$(find "$objdir" -name '*.o.d')
if [ -z "$deps" ]; then
    echo "no dependency files under $objdir" >&2
    exit 1
fi
headers=$(cat $deps | tr ' \\' '\n\n' |
    grep -E '/(linux/futex|sys/eventfd|sys/timerfd|sys/signalfd|sys/epoll|sys/prctl|sys/auxv|sys/random|sys/syscall|stdio_ext|sys/inotify|sys/sendfile|sys/memfd)\.h$' |
    sort -u || true)
if [ -n "$headers" ]; then
    echo "Linux-only headers included:" >&2
    echo "$headers" >&2
    bad=1
fi
symbols=$(nm -u "$lib" | awk '{ print $NF }' | sed 's/@.*//' |
    grep -E '^(syscall|eventfd|timerfd_create|timerfd_settime|memfd_create|prctl|getrandom|getauxval|secure_getenv|sched_getaffinity|__sched_cpucount|pidfd_open|pthread_setname_np|pthread_getname_np|__fpurge|sigabbrev_np|pwritev|accept4|pipe2|dup3|epoll_.*|signalfd|posix_spawn_file_actions_addclosefrom_np|madvise|mremap)$' |
    sort -u || true)
if [ -n "$symbols" ]; then
    echo "Linux-only functions called:" >&2
    echo "$symbols" >&2
    bad=1
fi
[ $bad -eq 0 ] && echo "no Linux-only headers or functions in $lib"
exit $bad
