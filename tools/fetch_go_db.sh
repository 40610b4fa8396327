#!/usr/bin/env bash
# Fetch GO annotations for perturbdiff.priors into the cache, for a machine where read_go() cannot download
# them itself (run it where there is internet, then copy DEST_DIR over).
#
# usage: tools/fetch_go_db.sh gaf [DEST_DIR]   the GO Consortium's human GAF, goa_human.gaf.gz (10-20 MB): what
#                                              read_go() fetches by default; needs curl or wget (Linux, macOS, WSL)
#        tools/fetch_go_db.sh [DEST_DIR]       Bioconductor's org.Hs.eg.db SQLite file (human gene -> GO annotations,
#                                              with the alias table that resolves old symbols such as TARS -> TARS1)
#                                              from Debian's package r-bioc-org.hs.eg.db, without installing R
# DEST_DIR defaults to $PERTURBDIFF_CACHE/go or ~/.cache/perturbdiff/go, where read_go() looks.
# results: DEST_DIR/goa_human.gaf.gz or DEST_DIR/org.Hs.eg.sqlite (about 344 MB), each with a .sha256 beside it.
# The SQLite route needs apt-get and dpkg-deb (Debian/Ubuntu); no root unless the package lists must be refreshed.
# Point perturbdiff elsewhere with PERTURBDIFF_GO_DB=/path/to/org.Hs.eg.sqlite, or pass any file to read_go(path).
# Without this script: download https://current.geneontology.org/annotations/goa_human.gaf.gz with a browser and
# save it as DEST_DIR/goa_human.gaf.gz (any OS); read_go() verifies and parses it on first use.
set -euo pipefail

GAF_URL=https://current.geneontology.org/annotations/goa_human.gaf.gz
default_dest="${PERTURBDIFF_CACHE:-$HOME/.cache/perturbdiff}/go"

sha256_of() { if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi; }

if [ "${1:-}" = gaf ]; then
  dest="${2:-$default_dest}"
  url="${FETCH_GO_GAF_URL:-$GAF_URL}"   # FETCH_GO_GAF_URL: a mirror of the same file (e.g. a dated release)
  out="$dest/goa_human.gaf.gz"
  if [ -s "$out" ] && [ "${FORCE:-0}" != 1 ]; then echo "already present: $out (FORCE=1 to fetch again)"; exit 0; fi
  mkdir -p "$dest"
  part="$out.part-$$"
  trap 'rm -f "$part"' EXIT
  if command -v curl >/dev/null; then get=(curl -fL --retry 3 -o "$part" "$url")
  elif command -v wget >/dev/null; then get=(wget -O "$part" "$url")
  else echo "error: neither curl nor wget found. Download $url with a browser and save it as $out" >&2; exit 1; fi
  "${get[@]}" || { echo "error: could not download $url (offline?). On a machine with internet, download it and" \
    "save it as $out here (or run this script there and copy $dest over)." >&2; exit 1; }
  # verify before it enters the cache: the gzip stream is complete and the file is a GAF
  gzip -t "$part" || { echo "error: $url arrived damaged or cut short (gzip -t failed); nothing was written. Run again." >&2; exit 1; }
  head=$(gzip -cd "$part" 2>/dev/null | head -c 12 || true)
  [ "$head" = '!gaf-version' ] || { echo "error: $url is not a GAF file (it starts with '$head'); nothing was written." >&2; exit 1; }
  mv "$part" "$out"   # atomic on one file system: never a half-written file
  sha256_of "$out" > "$out.sha256"
  echo "wrote $out ($(du -h "$out" | cut -f1), sha256 $(cat "$out.sha256"))"
  exit 0
fi

dest="${1:-$default_dest}"
pkg=r-bioc-org.hs.eg.db
member=usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite
out="$dest/org.Hs.eg.sqlite"

if [ -s "$out" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "already present: $out (FORCE=1 to fetch again)"; exit 0
fi
for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found. On a non-Debian system use the GO Consortium's GAF" \
    "instead: '$0 gaf', or download $GAF_URL and save it as $dest/goa_human.gaf.gz" >&2; exit 1; }
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
sha256_of "$out" > "$out.sha256"
echo "wrote $out ($(du -h "$out" | cut -f1), from $deb, sha256 $(cat "$out.sha256"))"
