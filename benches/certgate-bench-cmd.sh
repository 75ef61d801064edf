#!/usr/bin/env bash
# The harness's EXTRA_CMD: writes a certgate config from the BENCH_*
# variables and runs certgate in the foreground with one worker thread (the
# peers run one worker each). Access log off, as nginx's and HAProxy's are in
# the harness; diagnostics at warn.
#
# CERTGATE_DUAL=1 adds the other key type's server certificate from the
# harness PKI (ECDSA beside RSA, or RSA beside ECDSA), to measure what
# choosing per ClientHello costs. BENCH_MAX_CONNECTIONS (20000) and
# BENCH_IDLE_TIMEOUT (unset: the default) are for benches/held-bench.sh.
set -euo pipefail
: "${CERTGATE_BIN:?}" "${BENCH_LISTEN:?}" "${BENCH_BACKEND:?}" "${BENCH_SERVER_CERT:?}"
: "${BENCH_SERVER_KEY:?}" "${BENCH_CLIENT_CA:?}" "${BENCH_WORKDIR:?}"
cfg=$BENCH_WORKDIR/certgate-bench.toml
second=""
if [ "${CERTGATE_DUAL:-0}" = 1 ]; then
  : "${BENCH_PKI:?}"
  case $BENCH_SERVER_CERT in
    *server-rsa.pem) other=server ;;
    *) other=server-rsa ;;
  esac
  second="[[listener.tls.certificate]]
cert = \"$BENCH_PKI/$other.pem\"
key = \"$BENCH_PKI/$other.key\""
fi
cat > "$cfg" <<TOML
[log]
level = "warn"
access = "off"

[[listener]]
name = "bench"
listen = "$BENCH_LISTEN"
upstream = "backend"
max_connections = ${BENCH_MAX_CONNECTIONS:-20000}
${BENCH_IDLE_TIMEOUT:+idle_timeout = \"$BENCH_IDLE_TIMEOUT\"}

[listener.tls]
versions = ["1.2"]
[[listener.tls.certificate]]
cert = "$BENCH_SERVER_CERT"
key = "$BENCH_SERVER_KEY"
$second

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
