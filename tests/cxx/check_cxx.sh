#!/bin/sh
# Builds consumer.cpp with one C++ compiler against the static library and
# runs it; its output must be expected.txt.
# Usage: check_cxx.sh <c++ compiler> <this dir> <include dir> <libcfutures.a> <work dir>
set -eu
cxx=$1
here=$2
include=$3
lib=$4
work=$5
mkdir -p "$work"
exe="$work/consumer_$(basename "$cxx" | tr -c 'A-Za-z0-9\n' _)"
"$cxx" -std=c++17 -Wall -Wextra -Werror -pedantic -I"$include" \
    "$here/consumer.cpp" -o "$exe" "$lib" -lpthread -lm
"$exe" > "$exe.out"
diff -u "$here/expected.txt" "$exe.out"
echo "$cxx: ok"
