#!/usr/bin/env bash
# The web console at fleet scale: server time of the device list page and
# of searches with DEVICES devices in the registry (p50/p99 over REQUESTS
# requests each, on one kept-alive connection), and what a browser
# transfers on the first load of the device list. Prints a markdown table.
#
#   bash benches/console-bench.sh        # DEVICES=100000 REQUESTS=200
#
# Runs `certgate demo` (release build) on loopback ports it picks, imports
# the devices through the admin API in chunks, measures with curl (server
# time = time to first byte - time the request was sent), and stops the
# demo by its PID. Every loop is bounded.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICES=${DEVICES:-100000} REQUESTS=${REQUESTS:-200} CHUNK=${CHUNK:-5000}
(cd "$ROOT" && cargo build --release --locked)
BIN=$ROOT/target/release/certgate
W=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ADMIN=127.0.0.1:$(port)
"$BIN" demo --dir "$W/demo" --listen "127.0.0.1:0" --admin "$ADMIN" >"$W/demo.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do curl -sf "http://$ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf "http://$ADMIN/healthz" >/dev/null || { cat "$W/demo.log" >&2; exit 1; }

# DEVICES devices as `certgate devices export` writes them: a third
# approved, a third pending, the rest blocked; distinct names, addresses,
# expiries and last-seen times.
python3 - "$W" "$DEVICES" "$CHUNK" <<'PY'
import hashlib, json, sys, time
w, n, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
now = int(time.time())
for start in range(0, n, chunk):
    devices = []
    for i in range(start, min(n, start + chunk)):
        fp = hashlib.sha256(f"bench device {i}".encode()).hexdigest()
        seen = now - (i * 37) % 86400
        devices.append({
            "id": fp[:16], "fingerprint": fp,
            "status": ["approved", "pending", "blocked"][i % 3],
            "certificates": [{
                "fingerprint": fp, "subject": f"CN=agent-{i:06d},O=Fleet",
                "issuer": "CN=Fleet CA", "serial": f"{i:08X}",
                "sans": [f"DNS:agent-{i:06d}.fleet.example"],
                "not_before": now - 86400 * 30, "not_after": now + 86400 * (1 + i % 700),
                "first_seen": seen - 3600, "last_seen": seen,
                "last_peer": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                "connections": i % 1000, "state": "current",
            }],
        })
    with open(f"{w}/import-{start // chunk:04d}.json", "w") as f:
        json.dump(devices, f)
PY
started=$(date +%s.%N)
for f in "$W"/import-*.json; do
  "$BIN" devices --admin "$ADMIN" import "$f" >/dev/null
done
total=$(curl -s "http://$ADMIN/api/devices?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
audit=$(find "$W/demo" -name 'audit*.log' | head -1)
[ -n "$audit" ] && echo "audit log: $(wc -l < "$audit") lines, $(du -h "$audit" | cut -f1)"
python3 -c "import sys; print(f'imported {sys.argv[1]} devices in {float(sys.argv[2]) - float(sys.argv[3]):.1f} s'); print()" "$total" "$(date +%s.%N)" "$started"

# One curl, REQUESTS transfers of the same URL on one connection; per
# transfer: time to first byte minus the time the request went out.
measure() {
  local url=$1 args=()
  for _ in $(seq "$REQUESTS"); do args+=(-o /dev/null "$url"); done
  curl -s -w '%{time_starttransfer} %{time_pretransfer} %{size_download}\n' "${args[@]}" |
    python3 -c '
import sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
t = sorted((a - b) * 1000 for a, b, _ in rows)
p = lambda q: t[min(len(t) - 1, int(q * len(t)))]
print(f"{p(0.5):.1f} | {p(0.99):.1f} | {rows[0][2] / 1024:.1f}")'
}
base="http://$ADMIN"
fp=$(printf 'bench device 4242' | sha256sum | cut -c1-8)
echo "| page ($total devices) | p50 ms | p99 ms | page KiB |"
echo "|---|---:|---:|---:|"
for row in \
  "device list (all, last seen first, 50 per page)|/devices" \
  "pending only|/devices?status=pending" \
  "sorted by certificate expiry|/devices?sort=expiry" \
  "last page|/devices?offset=$((DEVICES - 50))" \
  "500 per page|/devices?per=500" \
  "search: common name|/devices?q=agent-042424" \
  "search: fingerprint prefix|/devices?q=$fp" \
  "search: last address|/devices?q=10.1.2." \
  "search: no match|/devices?q=nothing-matches-this" \
  "device page (details, certificates, audit trail)|/devices/$(printf 'bench device 4242' | sha256sum | cut -c1-16)" \
  "audit log (newest 100)|/audit" \
  "audit log, one action|/audit?action=approve" \
  "API: GET /api/devices?limit=50|/api/devices?limit=50"; do
  name=${row%%|*} path=${row#*|}
  echo "| $name | $(measure "$base$path") |"
done

# First load of the device list in a browser: the page, its stylesheet,
# script and icon (headers included; nothing else is requested).
size=0
for path in /devices /assets/console.css /assets/console.js /assets/icon.svg; do
  s=$(curl -s -o /dev/null -w '%{size_header} %{size_download}' "$base$path" | awk '{print $1 + $2}')
  size=$((size + s))
done
echo
python3 -c "import sys; print(f'first load of /devices (page + CSS + JS + icon, headers included): {int(sys.argv[1]) / 1024:.1f} KiB (target <= 150)')" "$size"
