#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds consumer.cpp with one C++ compiler against the static library and
# runs it; its output must be expected.txt.  Both consumer.cpp and
# strict.cpp (the header under -Wold-style-cast and
# -Wzero-as-null-pointer-constant) must compile warning-free with every
# C++ standard the header supports.
# Usage: check_cxx.sh <c++ compiler> <this dir> <libcfutures.a> <work dir> <include dir>...
set -eu
cxx=$1
here=$2
lib=$3
work=$4
shift 4
for dir in "$@"; do
  set -- "$@" "-I$dir"
  shift
done
mkdir -p "$work"
exe="$work/consumer_$(basename "$cxx" | tr -c 'A-Za-z0-9\n' _)"
for std in c++11 c++14 c++20; do
  "$cxx" -std=$std -Wall -Wextra -Werror -pedantic "$@" -fsyntax-only "$here/consumer.cpp"
done
for std in c++11 c++14 c++17 c++20; do
  "$cxx" -std=$std -Wall -Wextra -Werror -pedantic -Wold-style-cast \
      -Wzero-as-null-pointer-constant "$@" -fsyntax-only "$here/strict.cpp"
done
"$cxx" -std=c++17 -Wall -Wextra -Werror -pedantic "$@" \
    "$here/consumer.cpp" -o "$exe" "$lib" -lpthread -lm
"$exe" > "$exe.out"
diff -u "$here/expected.txt" "$exe.out"
echo "$cxx: ok"
