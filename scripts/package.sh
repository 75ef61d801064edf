#!/usr/bin/env bash
# Builds the Debian package, target/debian/certgate_<version>-1_<arch>.deb:
# the binary, the man page and shell completions generated from it, the
# units, the example config and docs (Cargo.toml [package.metadata.deb]).
# Installs cargo-deb first if it is missing.
#   bash scripts/package.sh                          # release build, as shipped
#   bash scripts/package.sh --profile dev --no-build # package the test suite's build
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?--profile needs a profile name}"; shift 2 ;;
    --no-build) build=""; shift ;;
    *) echo "usage: $0 [--profile NAME] [--no-build]" >&2; exit 2 ;;
  esac
done

if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --version '~3.8' --locked
fi
if [ -n "$build" ]; then
  cargo build --locked --profile "$profile" --bin certgate
fi
case "$profile" in
  dev | test) dir=debug ;;
  bench) dir=release ;;
  *) dir="$profile" ;;
esac
bin="target/$dir/certgate"
if [ ! -x "$bin" ]; then
  echo "$bin is missing: build it first (cargo build --profile $profile), or drop --no-build" >&2
  exit 1
fi

# Generated from the clap definitions of this very binary, so they cannot
# drift from the options it has.
assets=target/package-assets
mkdir -p "$assets"
rm -rf "$assets/man" && "$bin" man --dir "$assets/man" && gzip -9nf "$assets"/man/*.1
"$bin" completions bash > "$assets/certgate.bash"
"$bin" completions zsh > "$assets/_certgate"
"$bin" completions fish > "$assets/certgate.fish"

# Release: the binary stripped, its debug symbols (line tables, for
# backtraces) in the Debian way, a separate certgate-dbgsym .ddeb beside
# the .deb. Other profiles (the test suite's): fast, unstripped.
opts=(--dbgsym --compress-debug-symbols=zlib)
[ "$profile" = release ] || opts=(--fast)
cargo deb --no-build --locked --profile "$profile" "${opts[@]}"
