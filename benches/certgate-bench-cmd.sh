#!/usr/bin/env bash
# The harness's EXTRA_CMD: writes a certgate config from the BENCH_*
# variables and runs certgate in the foreground with one worker thread (the
# peers run one worker each). Access log off, as nginx's and HAProxy's are in
# the harness; diagnostics at warn.
set -euo pipefail
: "${CERTGATE_BIN:?}" "${BENCH_LISTEN:?}" "${BENCH_BACKEND:?}" "${BENCH_SERVER_CERT:?}"
: "${BENCH_SERVER_KEY:?}" "${BENCH_CLIENT_CA:?}" "${BENCH_WORKDIR:?}"
cfg=$BENCH_WORKDIR/certgate-bench.toml
cat > "$cfg" <<TOML
[log]
level = "warn"
access = "off"

[[listener]]
name = "bench"
listen = "$BENCH_LISTEN"
upstream = "backend"
max_connections = 20000

[listener.tls]
versions = ["1.2"]
[[listener.tls.certificate]]
cert = "$BENCH_SERVER_CERT"
key = "$BENCH_SERVER_KEY"

[listener.client_auth]
mode = "required"
ca = ["$BENCH_CLIENT_CA"]
# The peers let only CN=device-a through; certgate refuses others in the
# handshake (not_allowed) rather than with a 403.
allow_cn = ["device-a"]

[[upstream]]
name = "backend"
servers = ["$BENCH_BACKEND"]
pool_max_idle = 1024
TOML
exec "$CERTGATE_BIN" run --config "$cfg" --threads "${CERTGATE_THREADS:-1}"
