#!/usr/bin/env bash
# The test command. Installs the system tools the tests drive (curl and
# openssl as real clients, systemd-socket-activate for socket activation),
# then checks formatting and lints and runs the whole suite once, in the dev
# profile, with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in curl:curl openssl:openssl systemd-socket-activate:systemd; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --all-targets "$@"
