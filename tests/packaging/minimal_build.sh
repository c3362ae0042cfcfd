#!/bin/sh
# SPDX-License-Identifier: MIT
# The library must configure, build and install with a C compiler and CMake
# alone.  This runs the README's three commands
#     cmake -S . -B b && cmake --build b && cmake --install b
# in a private mount namespace whose /usr lacks every file of the Debian
# packages that the Makefile's development packages (DEV_DEBS: cmocka,
# pkg-config, clang, python3, GMP, SQLite, OpenSSL, libcurl, ...) pull in
# and its build packages (BUILD_DEBS: build-essential, cmake) do not,
# hidden by overlayfs whiteouts - a machine with only the build packages -
# so a dependency that slips into the default configure fails here.  Only the library targets are built, to keep it
# short; the configure step still reads every CMakeLists.txt.
# Needs root, unshare(1), overlayfs and apt's package cache; exits 77
# (ctest: skipped) without.
# Usage: minimal_build.sh <source dir> <work dir>
set -eu
if [ "${1:-}" != --inside ]; then
  src=$1
  work=$2
  if [ "$(id -u)" -ne 0 ] || ! command -v unshare >/dev/null 2>&1 ||
     ! command -v apt-cache >/dev/null 2>&1; then
    echo "skipped: needs root, unshare and apt"
    exit 77
  fi
  unshare -m true 2>/dev/null || { echo "skipped: unshare -m not permitted"; exit 77; }
  makevar() {
    make -s --no-print-directory -C "$src" --eval "cf-print: ; @echo \$($1)" cf-print
  }
  # Every package a list needs, recursively (Depends and Pre-Depends).
  closure() {
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "$@" 2>/dev/null |
      grep -v '^[ <]' | sed 's/:.*$//' | sort -u
  }
  dev=$(makevar DEV_DEBS)
  build=$(makevar BUILD_DEBS)
  [ -n "$dev" ] && [ -n "$build" ] || { echo "no DEV_DEBS/BUILD_DEBS in $src/Makefile"; exit 1; }
  rm -rf "$work"
  mkdir -p "$work/upper" "$work/overlay-work"
  closure $build > "$work/build-packages"
  closure $dev > "$work/dev-packages"
  [ -s "$work/build-packages" ] || { echo "skipped: apt-cache knows no packages"; exit 77; }
  debs=$(comm -13 "$work/build-packages" "$work/dev-packages")
  # The installed ones' files under /usr, one per line.
  installed=""
  for pkg in $debs; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" &&
      installed="$installed $pkg"
  done
  [ -z "$installed" ] || dpkg -L $installed | grep '^/usr/' | sort -u > "$work/hide-files"
  touch "$work/hide-files"
  # A whiteout (character device 0/0) in the overlay's upper layer for
  # every regular file or symbolic link among them.  python3 makes the
  # 8,000-odd nodes in one process; the shell loop, three processes per
  # file, took minutes on a loaded machine and stays only as the fallback.
  if command -v python3 >/dev/null 2>&1; then
    hidden=$(python3 - "$work/hide-files" "$work/upper" <<'PY'
import os, stat, sys
hidden = 0
with open(sys.argv[1]) as names:
    for f in names:
        f = f.rstrip("\n")
        if not (os.path.islink(f) or os.path.isfile(f)) or os.path.isdir(f):
            continue
        w = os.path.join(sys.argv[2], f[len("/usr/"):])
        os.makedirs(os.path.dirname(w), exist_ok=True)
        if not os.path.lexists(w):
            os.mknod(w, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            hidden += 1
print(hidden)
PY
)
  else
    hidden=0
    while IFS= read -r f; do
      { [ -f "$f" ] || [ -L "$f" ]; } && [ ! -d "$f" ] || continue
      rel=${f#/usr/}
      mkdir -p "$work/upper/$(dirname "$rel")"
      [ -e "$work/upper/$rel" ] || { mknod "$work/upper/$rel" c 0 0; hidden=$((hidden + 1)); }
    done < "$work/hide-files"
  fi
  echo "hiding $hidden files of the packages that $dev" "need beyond $build"
  exec unshare -m sh "$0" --inside "$src" "$work"
fi

src=$2
work=$3
mount -t overlay overlay \
  -o "lowerdir=/usr,upperdir=$work/upper,workdir=$work/overlay-work" /usr
# Tools installed outside /usr (a Python in the home directory, ...) are
# not part of the machine this stands for.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PKG_CONFIG_PATH CMAKE_PREFIX_PATH
if command -v pkg-config >/dev/null 2>&1 || [ -e /usr/include/cmocka.h ]; then
  echo "the development packages are still visible"
  exit 1
fi
cmake -S "$src" -B "$work/b" > "$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; echo "configure failed without the development packages"; exit 1; }
grep "cfutures:" "$work/configure.log" || true
cmake --build "$work/b" --target cfutures cfutures_static cfutures-worker -j 2 > "$work/build.log" 2>&1 ||
  { tail -40 "$work/build.log"; echo "the library did not build"; exit 1; }
cmake --install "$work/b" --prefix "$work/prefix" --strip > "$work/install.log" 2>&1 ||
  { cat "$work/install.log"; echo "install failed"; exit 1; }
for f in include/cfutures.h include/cfutures_version.h share/man/man3/cf_submit.3; do
  [ -f "$work/prefix/$f" ] || { echo "$f was not installed"; exit 1; }
done
ls "$work"/prefix/lib*/libcfutures.so* "$work"/prefix/lib*/libcfutures.a >/dev/null
[ -x "$work/prefix/libexec/cfutures/cfutures-worker" ] ||
  { echo "libexec/cfutures/cfutures-worker was not installed"; exit 1; }
echo "configured, built and installed with a C compiler and CMake alone: ok"
