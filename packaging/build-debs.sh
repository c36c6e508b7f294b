#!/usr/bin/env bash
# Builds the Debian packages with cargo-deb (docs/packaging.md):
#   packaging/build-debs.sh [--profile release|dev] [--version VERSION] [--out DIR] [--fast]
# Default: release binaries, the workspace's version with Debian revision 1 (0.1.0-1), into
# target/debian: oca-appliance_<version>_amd64.deb and oca-control-plane_<version>_amd64.deb
# (release: with their -dbgsym .ddeb, the debug symbols the release profile keeps).
# `--profile dev` packages the debug binaries a test run has built (hwtests/tests/packages.rs),
# stripped; `--version` sets the whole Debian version (an upgrade test's N+1); `--fast`
# compresses less. Needs cargo-deb 3.8 (`cargo install cargo-deb --version 3.8.0 --locked`)
# and dpkg-dev (dpkg-shlibdeps for the dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PROFILE=release
VERSION=
OUT=
FAST=
while [ $# -gt 0 ]; do
  case $1 in
    --profile) PROFILE=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --out) OUT=$(realpath -m "$2"); shift 2 ;;
    --fast) FAST=--fast; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-debs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v cargo-deb >/dev/null \
  || { echo "build-debs.sh: cargo-deb not found (cargo install cargo-deb --version 3.8.0 --locked)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
OUT=${OUT:-$TARGET/debian}
case $PROFILE in
  release)
    DIR=$TARGET/release
    # The commit, for the services' *_build_info metric (as images/build.sh does).
    OCA_REVISION=$(git -C "$REPO" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown) \
      cargo build --release --locked -q -p oca-daemon -p fill-agent -p hwtests -p control-plane -p oca-gen-docs \
        --bin oca-daemon --bin fill-agent --bin oca-qualify --bin control-plane --bin ocactl --bin oca-gen-docs
    # The release profile keeps debug info (Cargo.toml): it goes to the -dbgsym packages.
    DEBUG=(--dbgsym)
    ;;
  dev)
    DIR=$TARGET/debug
    # The units `cargo test --workspace` builds (test_support::cargo_bins says why): no rebuild
    # inside a test run.
    cargo build --locked -q --workspace --tests
    # The generator is a plain binary of a crate without tests, which that build leaves out:
    # built here (its dependencies are the ones just built, so this is a link).
    cargo build --locked -q -p oca-gen-docs --bin oca-gen-docs
    # Stripped: the packages' layout and scripts are what a test looks at, not debug info.
    DEBUG=(--strip --no-dbgsym)
    ;;
  *) echo "build-debs.sh: --profile is release or dev, not $PROFILE" >&2; exit 2 ;;
esac

# Man pages and completions, generated from the binaries' clap definitions (ocactl's from its
# --help), where the packages' assets take them: target/oca-docs (packaging/*/Cargo.toml; not
# under target/<profile>, where cargo-deb would take them for build products and not compress
# the man pages).
DOCS=$REPO/target/oca-docs
rm -rf "$DOCS"
# Reproducible man page dates and archive times: the last commit's time.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
"$DIR/oca-gen-docs" --out "$DOCS" --ocactl "$DIR/ocactl"

# cargo-deb writes no md5sums control file, which `dpkg --verify` and debsums check installed
# files against: each package is unpacked, given one (every file but the conffiles, whose sums
# dpkg keeps itself, as dh_md5sums does) and packed again with dpkg-deb, which also compresses
# it (cargo-deb's own compression is the fast one, since it is redone here).
add_md5sums() { # DEB
  local d
  d=$(mktemp -d)
  dpkg-deb -R "$1" "$d"
  (
    cd "$d"
    touch DEBIAN/conffiles
    find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort \
      | grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) | xargs -d '\n' md5sum > DEBIAN/md5sums
    [ -s DEBIAN/conffiles ] || rm DEBIAN/conffiles
  )
  chmod 644 "$d/DEBIAN/md5sums"
  dpkg-deb --root-owner-group -Zxz "-z$LEVEL" --build "$d" "$1" >/dev/null
  rm -rf "$d"
}
LEVEL=6
if [ -n "$FAST" ]; then LEVEL=1; fi

mkdir -p "$OUT"
for package in oca-appliance oca-control-plane; do
  args=(deb -p "$package" --no-build --locked --profile "$PROFILE" -o "$OUT" --fast "${DEBUG[@]}")
  if [ -n "$VERSION" ]; then args+=(--deb-version "$VERSION"); fi
  # With the dev profile cargo-deb warns that it is meant for release builds (these are a
  # test's): its warnings are silenced there.
  if [ "$PROFILE" = dev ]; then args+=(--quiet); fi
  deb=$(cargo "${args[@]}" | grep '\.deb$' | tail -1)
  add_md5sums "$deb"
  echo "$deb"
done
