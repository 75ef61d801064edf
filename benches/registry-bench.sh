#!/usr/bin/env bash
# The shared registry (PostgreSQL) against the embedded one (redb), on the
# same machine in one run:
#  1. handshake CPU per connection of a returning, approved device
#     (openssl s_time -new, TLS 1.2, client certificate; certgate pinned to
#     core 0, the client to core 1): the handshake reads the same snapshot
#     with either backend, so the ratio should be about 1;
#  2. a reconnect storm of STORM_DEVICES first-seen devices (benches/storm.rs,
#     approval = "auto"): how many the registry recorded, how many updates
#     were dropped (default queue size), and how long until all were stored.
# Prints markdown tables.
#
#   bash benches/registry-bench.sh        # ROUNDS=3 DURATION=10 STORM_DEVICES=10000
#
# Needs PostgreSQL (Debian's postgresql package), openssl and taskset; runs
# as root (PostgreSQL runs as the postgres user). Loopback only; every step
# is bounded in time; only processes this script started are stopped, by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} STORM_DEVICES=${STORM_DEVICES:-10000}
PGBIN=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort | tail -1)")
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --locked && cargo bench --locked --bench storm --no-run) >&2
BIN=$ROOT/target/release/certgate
ulimit -n "$(ulimit -Hn)"

W=$(mktemp -d /tmp/certgate-registry-bench.XXXXXX)
PGDIR=$(mktemp -d /tmp/certgate-registry-bench-pg.XXXXXX)
chown postgres: "$PGDIR"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR" -m immediate -w stop >/dev/null 2>&1) || true
  rm -rf "$W" "$PGDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A PKI: one CA for the server and the devices, one device for s_time.
cd "$W"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout ca.key -out ca.pem -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
for n in server device; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$n" -keyout $n.key -out $n.csr 2>/dev/null
done
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > device.ext
for n in server device; do
  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile $n.ext -out $n.pem 2>/dev/null
done

PGPORT=$(free_port)
(cd / && runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR" -A trust -U certgate --no-sync >/dev/null)
(cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/log" -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1" -w start >/dev/null)
URL="postgres://certgate@127.0.0.1:$PGPORT/postgres"
psql_() { psql -X -A -t -q -d "$URL" -c "$1"; }

backend_port=$(free_port)
# The backend: nginx when installed (a storm of 10,000 needs one that takes
# 10,000 connections at once), else a small Python server (fine for the
# handshake rows; a storm then fails on the backend, not the registry).
if command -v nginx >/dev/null 2>&1; then
  mkdir -p "$W/nginx"
  cat > "$W/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $W/nginx/pid;
error_log $W/nginx/error.log warn;
worker_rlimit_nofile 30000;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $W/nginx/b; proxy_temp_path $W/nginx/p;
  fastcgi_temp_path $W/nginx/f; uwsgi_temp_path $W/nginx/u; scgi_temp_path $W/nginx/s;
  server { listen 127.0.0.1:$backend_port backlog=4096; location / { return 200 "ok"; } }
}
NGINX
  taskset -c 1 nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" &
  pids+=($!)
else
  python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 4096  # the default 5 refuses a storm
    daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$backend_port" &
  pids+=($!)
fi

# config NAME BACKEND-LINES: a gateway on a free port, approval auto.
config() {
  local name=$1 lines=$2 port admin
  port=$(free_port); admin=$(free_port)
  mkdir -p "$W/$name"
  cat > "$W/$name/certgate.toml" <<TOML
[registry]
path = "$W/$name/devices.redb"
approval = "auto"
$lines

[admin]
listen = "127.0.0.1:$admin"

[log]
access = "off"

[[listener]]
name = "agents"
listen = "127.0.0.1:$port"
upstream = "core"
[listener.tls]
[[listener.tls.certificate]]
cert = "$W/server.pem"
key = "$W/server.key"
[listener.client_auth]
mode = "required"
ca = ["$W/ca.pem"]

[[upstream]]
name = "core"
servers = ["127.0.0.1:$backend_port"]
TOML
  echo "$port $admin"
}
start() { # NAME -> pid
  # Its stdout is a file: inherited, the caller's $(...) would wait for it.
  taskset -c 0 "$BIN" run --config "$W/$1/certgate.toml" --threads 1 >"$W/$1/out" 2>"$W/$1/log" &
  local pid=$!
  for _ in $(seq 100); do grep -q "listening" "$W/$1/log" 2>/dev/null && break; sleep 0.1; done
  echo $pid
}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
read -r REDB_PORT REDB_ADMIN < <(config redb "")
read -r PG_PORT PG_ADMIN < <(config postgres "backend = \"postgres\"
url = \"$URL\"
instance = \"bench\"")
declare -A PORT=([redb]=$REDB_PORT [postgres]=$PG_PORT) ADMIN=([redb]=$REDB_ADMIN [postgres]=$PG_ADMIN) PID
for b in redb postgres; do PID[$b]=$(start $b); pids+=(${PID[$b]}); done
HZ=$(getconf CLK_TCK)

echo
echo "### Handshake CPU per connection, returning approved device (openssl s_time -new, TLS 1.2, ${DURATION}s, certgate on core 0)"
echo
echo "| round | backend | connections | certgate CPU µs/conn |"
echo "|---:|---|---:|---:|"
declare -A PER
for r in $(seq "$ROUNDS"); do
  for b in redb postgres; do
    # First contact records the device (approved, auto); then measure.
    timeout 10 openssl s_time -connect "127.0.0.1:${PORT[$b]}" -new -tls1_2 -cert "$W/device.pem" -key "$W/device.key" -CAfile "$W/ca.pem" -time 1 >/dev/null 2>&1 || true
    t0=$(ticks "${PID[$b]}")
    out=$(taskset -c 1 timeout $((DURATION + 10)) openssl s_time -connect "127.0.0.1:${PORT[$b]}" -new -tls1_2 -cert "$W/device.pem" -key "$W/device.key" -CAfile "$W/ca.pem" -time "$DURATION" 2>/dev/null || true)
    t1=$(ticks "${PID[$b]}")
    n=$(echo "$out" | sed -n 's/^\([0-9]*\) connections in .*/\1/p' | head -1)
    [ -n "$n" ] && [ "$n" -gt 0 ] || { echo "s_time against $b failed: $out" >&2; exit 1; }
    us=$(( (t1 - t0) * 1000000 / HZ / n ))
    PER[$b]="${PER[$b]:-} $us"
    echo "| $r | $b | $n | $us |"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mr=$(echo "${PER[redb]}" | median); mp=$(echo "${PER[postgres]}" | median)
echo
echo "Median: redb $mr µs, postgres $mp µs per connection; ratio postgres/redb $(awk -v a="$mp" -v b="$mr" 'BEGIN {printf "%.3f", a/b}') (target ≤ 1.02)."

echo
echo "### Reconnect storm: $STORM_DEVICES first-seen devices at once (the same devices against each), approval = \"auto\", default update queue"
echo
scrape() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}' | head -1; }
stored() { # backend -> devices in its store
  if [ "$1" = postgres ]; then psql_ "SELECT count(*) FROM certgate_devices WHERE NOT deleted"
  else curl -s "http://127.0.0.1:${ADMIN[redb]}/api/devices?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; fi
}
declare -A BEFORE
for b in redb postgres; do BEFORE[$b]=$(stored $b); done
STORM_TARGETS="redb=127.0.0.1:${PORT[redb]},postgres=127.0.0.1:${PORT[postgres]}" STORM_CLIENT_CA="$W/ca.pem" \
  STORM_CLIENT_CA_KEY="$W/ca.key" STORM_SERVER_CA="$W/ca.pem" STORM_DEVICES=$STORM_DEVICES STORM_DEADLINE=120 \
  taskset -c 1 timeout -k 5 900 cargo bench --locked --manifest-path "$ROOT/Cargo.toml" --bench storm 2>/dev/null | grep '^|'
echo
echo "| backend | devices admitted (in memory) | updates dropped | in the store after the storm | seconds until stored |"
echo "|---|---:|---:|---:|---:|"
for b in redb postgres; do
  admitted=$(scrape "${ADMIN[$b]}" 'certgate_devices{status="approved"}')
  admitted=$(( ${admitted%.*} - BEFORE[$b] ))
  t0=$(date +%s.%N)
  end=$(( $(date +%s) + 60 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ $(( $(stored $b) - BEFORE[$b] )) -ge "$admitted" ] && break
    sleep 0.2
  done
  t1=$(date +%s.%N)
  echo "| $b | $admitted | $(scrape "${ADMIN[$b]}" certgate_registry_updates_dropped_total) | $(( $(stored $b) - BEFORE[$b] )) | $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b-a}') |"
done
echo
echo "(Stored is checked after the storm ends; redb flushes every 200 ms, PostgreSQL in the same writer, each flush one transaction.)"
