#!/usr/bin/env bash
# The test command. Installs the system tools the tests drive (curl, Python and
# openssl as real clients, systemd-socket-activate for socket activation,
# promtool and a Prometheus server from the prometheus package, unshare,
# nsenter and mount for the full-disk registry test, prlimit for the
# 10,000-connection test; cargo-deb, adduser, systemd-analyze, setpriv, ip
# and runuser for the package test, which installs the .deb as root;
# Debian's Chromium and chromedriver for the console's browser tests, and
# axe-core from npm to check their pages' accessibility; HAProxy as the L4
# balancer in front of a PROXY-protocol listener and of three gateways;
# PostgreSQL, whose initdb and pg_ctl the scale-out tests run in a temporary
# directory as the postgres user, and psql to check its tables),
# then checks formatting, lints, the API docs and known advisories, and runs
# the whole suite once, in the dev profile, with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in curl:curl openssl:openssl python3:python3 java:openjdk-17-jdk-headless systemd-socket-activate:systemd promtool:prometheus prometheus:prometheus unshare:util-linux nsenter:util-linux prlimit:util-linux mount:mount systemd-analyze:systemd setpriv:util-linux runuser:util-linux ip:iproute2 adduser:adduser dpkg-deb:dpkg chromium:chromium chromedriver:chromium-driver haproxy:haproxy; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
# The server binaries are not on PATH: /usr/lib/postgresql/<major>/bin.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -q
  # Packages such as prometheus would start their daemon on install; tests
  # start their own, on loopback. policy-rc.d is Debian's way to say no.
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    $sudo sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    policy_added=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
  if [ -n "$policy_added" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
# 3.8: later versions may refuse to package the dev-profile build the
# package test uses (3.8 warns that this will become an error).
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --version '~3.8' --locked
fi

# axe-core (npm), the accessibility checker the console's browser test runs
# in the page; pinned, kept in target/ beside the build.
axe=target/axe/node_modules/axe-core/axe.min.js
if [ ! -f "$axe" ]; then
  command -v npm >/dev/null 2>&1 || { echo "npm is needed to install axe-core (Node 20 provides it)" >&2; exit 1; }
  npm install --prefix target/axe --no-audit --no-fund --loglevel=error axe-core@4.14.1
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked
# Known advisories against the locked dependencies, offline, when the shared
# snapshot is beside the checkout (CI has it).
if [ -f ../shared/audit-lock.py ] && [ -d ../shared/advisory-db ]; then
  python3 ../shared/audit-lock.py Cargo.lock ../shared/advisory-db
fi
cargo nextest run --locked --all-targets "$@"
