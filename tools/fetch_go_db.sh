#!/usr/bin/env bash
# Fetch Bioconductor's org.Hs.eg.db SQLite file (human gene -> GO annotations, with the alias table
# that resolves old symbols such as TARS -> TARS1) from Debian's package r-bioc-org.hs.eg.db,
# without installing R. perturbdiff.priors reads it with plain sqlite3.
#
# usage: tools/fetch_go_db.sh [DEST_DIR]     (default: $PERTURBDIFF_CACHE/go or ~/.cache/perturbdiff/go)
# result: DEST_DIR/org.Hs.eg.sqlite (about 344 MB) and DEST_DIR/org.Hs.eg.sqlite.sha256
# needs: apt-get and dpkg-deb (Debian/Ubuntu); no root unless the package lists must be refreshed.
# Point perturbdiff elsewhere with PERTURBDIFF_GO_DB=/path/to/org.Hs.eg.sqlite.
set -euo pipefail

dest="${1:-${PERTURBDIFF_CACHE:-$HOME/.cache/perturbdiff}/go}"
pkg=r-bioc-org.hs.eg.db
member=usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite
out="$dest/org.Hs.eg.sqlite"

if [ -s "$out" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "already present: $out (FORCE=1 to fetch again)"; exit 0
fi
for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found. On a non-Debian system download the" \
    "org.Hs.eg.db source tarball from Bioconductor and copy inst/extdata/org.Hs.eg.sqlite to $out" >&2; exit 1; }
done

mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download "$pkg" >/dev/null 2>&1; then
  echo "apt-get download failed; refreshing the package lists (apt-get update) and retrying" >&2
  apt-get update -q >/dev/null
  apt-get download "$pkg"
fi
deb=$(ls "$pkg"_*.deb)
dpkg-deb -x "$deb" extracted
[ -s "extracted/$member" ] || { echo "error: $deb does not contain $member" >&2; exit 1; }
# sanity check: the tables perturbdiff reads exist
if command -v sqlite3 >/dev/null; then
  n=$(sqlite3 "extracted/$member" "select count(*) from go_bp; select count(*) from alias;" | tr '\n' ' ')
  echo "go_bp rows, alias rows: $n"
fi
cp "extracted/$member" "$out.part"
mv "$out.part" "$out"   # atomic on one file system: never a half-written database
sha256sum "$out" | cut -d' ' -f1 > "$out.sha256"
echo "wrote $out ($(du -h "$out" | cut -f1), from $deb, sha256 $(cat "$out.sha256"))"
