#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the built tree into a temporary prefix and builds a consumer
# with pkg-config and with find_package(cfutures), and of cfutures-mpi when
# the tree built the MPI engine; each must print 144.  A process pool with
# a worker_library must find the cfutures-worker of that prefix.
# Then checks the installed man pages, and builds the installed examples
# with their own Makefile and checks their output.
# Usage: check_install.sh <build-dir> <this-dir>
set -eu
build=$1
here=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(dirname "$(find "$tmp/prefix" -name cfutures.pc | head -n1)")
libdir=$(dirname "$libdir")

export PKG_CONFIG_PATH="$libdir/pkgconfig"
# The installed header's version and the .pc file's are the same.
header=$(sed -n 's/^#define CF_VERSION_STRING "\(.*\)"$/\1/p' \
         "$(pkg-config --variable=includedir cfutures)/cfutures_version.h")
[ -n "$header" ] && [ "$header" = "$(pkg-config --modversion cfutures)" ] ||
  { echo "cfutures_version.h says '$header', cfutures.pc $(pkg-config --modversion cfutures)"; exit 1; }
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags cfutures) \
   "$here/consumer.c" -o "$tmp/pc_shared" $(pkg-config --libs cfutures)
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/pc_shared")
[ "$out" = 144 ] || { echo "pkg-config shared consumer printed '$out'"; exit 1; }
cc -std=c11 $(pkg-config --cflags cfutures) "$here/consumer.c" -o "$tmp/pc_static" \
   "$libdir/libcfutures.a" $(pkg-config --libs-only-other --static cfutures) -lpthread -lm
out=$("$tmp/pc_static")
[ "$out" = 144 ] || { echo "pkg-config static consumer printed '$out'"; exit 1; }

# A process pool whose tasks are in a shared object (worker_library) runs
# them in the cfutures-worker installed with the library: the one beside
# the library in this prefix, not the configured prefix's (where none may
# be installed), since the tree was installed with --prefix elsewhere.
cc -std=c11 -Wall -Wextra -Werror -fPIC -shared $(pkg-config --cflags cfutures) \
   "$here/plugin_tasks.c" -o "$tmp/libplugin_tasks.so" $(pkg-config --libs cfutures)
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags cfutures) \
   "$here/consumer_plugin.c" -o "$tmp/pc_plugin" "$tmp/libplugin_tasks.so" \
   $(pkg-config --libs cfutures)
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/pc_plugin" "$tmp/libplugin_tasks.so")
case "$out" in
  "144 $tmp/prefix/"*/cfutures/cfutures-worker) ;;
  *) echo "worker_library consumer printed '$out' (want 144 and the worker under $tmp/prefix)"
     exit 1 ;;
esac

# The MPI engine, when this tree built it: its pkg-config file and its
# CMake package must each give a program that builds, loads and runs.
with_mpi=OFF
mpi=""
if [ -f "$libdir/pkgconfig/cfutures-mpi.pc" ]; then
  with_mpi=ON
  mpi=" and cfutures-mpi"
  cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags cfutures-mpi) \
     "$here/consumer_mpi.c" -o "$tmp/pc_mpi" $(pkg-config --libs cfutures-mpi)
  out=$(LD_LIBRARY_PATH="$libdir" "$tmp/pc_mpi")
  [ "$out" = 144 ] || { echo "pkg-config cfutures-mpi consumer printed '$out'"; exit 1; }
fi

cmake -S "$here" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
      -DWITH_MPI=$with_mpi >/dev/null
cmake --build "$tmp/consumer" >/dev/null
exes="consumer_shared consumer_static"
[ "$with_mpi" = ON ] && exes="$exes consumer_mpi"
for exe in $exes; do
  out=$(LD_LIBRARY_PATH="$libdir" "$tmp/consumer/$exe")
  [ "$out" = 144 ] || { echo "find_package $exe printed '$out'"; exit 1; }
done
# cfutures-mpi from a project that enables C++ alone (when a C++ compiler
# is there).
if [ "$with_mpi" = ON ] && command -v c++ >/dev/null 2>&1; then
  cmake -S "$here/cxx_mpi" -B "$tmp/cxx_mpi" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
  cmake --build "$tmp/cxx_mpi" >/dev/null
  out=$(LD_LIBRARY_PATH="$libdir" "$tmp/cxx_mpi/consumer_mpi_cxx")
  [ "$out" = 144 ] || { echo "C++-only find_package consumer printed '$out'"; exit 1; }
fi
# The reference pages are installed: `man cf_submit` finds its page, and
# a function of a group finds the group's page.
mandir="$tmp/prefix/share/man"
for page in cfutures cf_submit cf_submit_with CF_ARGS; do
  [ -f "$mandir/man3/$page.3" ] || { echo "man page $page not installed"; exit 1; }
done
if command -v man >/dev/null 2>&1; then
  MANPATH="$mandir" man -w cf_submit_with | grep -q "man3/cf_submit_with.3" ||
    { echo "man -w cf_submit_with does not find the installed page"; exit 1; }
  MANPATH="$mandir" MANWIDTH=80 man cf_submit_with 2>/dev/null | grep -q "cf_submit_with" ||
    { echo "man cf_submit_with does not show the page"; exit 1; }
fi
# The installed examples build with their Makefile (pkg-config finds the
# library), warning-free, and print what their Python originals print.
cp -R "$tmp/prefix/share/doc/cfutures/examples" "$tmp/examples"
make -s -C "$tmp/examples" CFLAGS="-O1 -Wall -Wextra -Werror" >/dev/null
[ -x "$tmp/examples/reference_card" ] || { echo "the installed examples did not build"; exit 1; }
checker="$build/examples/check_output"
expected="$here/../../examples/expected"
checked=0
if [ -x "$checker" ]; then
  for exe in "$tmp"/examples/*; do
    name=$(basename "$exe")
    [ -x "$exe" ] && [ -f "$expected/$name.txt" ] || continue
    (cd "$tmp/examples" && "$checker" "$expected/$name.txt" "$exe" >"$tmp/check.out" 2>&1) ||
      { cat "$tmp/check.out"; echo "installed example $name: wrong output"; exit 1; }
    checked=$((checked + 1))
  done
fi
echo "install, pkg-config and find_package consumers of cfutures$mpi, man pages," \
     "installed examples ($checked checked): ok"
