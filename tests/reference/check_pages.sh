#!/bin/sh
# SPDX-License-Identifier: MIT
# Every public function has a man page: each cf_ function the shared
# library exports and each function or macro the header declares must have
# docs/man/man3/<name>.3, a page or a ".so" link to an existing page.  The
# names are found here independently of tools/gen_reference.py.  With groff
# installed, every page must also format without a warning (line-breaking
# notes, which depend on the width, aside).
# Usage: check_pages.sh <library.so> <header> <man dir> <fewest names>
# (fewest names: fewer public names found means the extraction broke).
set -eu
lib=$1
header=$2
man=$3
fewest=$4
names=$( {
  nm -D --defined-only "$lib" | awk '$2 == "T" && $3 ~ /^cf_/ { print $3 }'
  sed -n 's/^[a-z_ ]*[ *]\(cf_[a-z0-9_]*\)(.*/\1/p' "$header"
  sed -n 's/^#define \(CF_[A-Z_]*\)(.*/\1/p' "$header"
} | grep -vi '^cf__' | sort -u )
missing=0
count=0
for n in $names; do
  count=$((count + 1))
  page="$man/man3/$n.3"
  if [ ! -f "$page" ]; then
    echo "no man page for $n ($page)"
    missing=$((missing + 1))
    continue
  fi
  target=$(sed -n 's/^\.so //p' "$page")
  if [ -n "$target" ] && [ ! -f "$man/$target" ]; then
    echo "$page points at $target, which does not exist"
    missing=$((missing + 1))
  fi
done
[ "$count" -ge "$fewest" ] || { echo "found only $count public names: the extraction is broken"; exit 1; }
if command -v groff >/dev/null 2>&1; then
  for page in "$man"/man3/*.3; do
    out=$(cd "$man" && groff -man -ww -Wbreak -z "man3/$(basename "$page")" 2>&1) || true
    [ -z "$out" ] || { echo "$out"; missing=$((missing + 1)); }
  done
fi
[ "$missing" -eq 0 ] || exit 1
echo "$count public names, each with a page"
