#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, JOBS at a time
# (default 2), and prints a table: runs, coverage, corpus, crashes.
# Stable Rust: cargo-fuzz needs nightly flags, RUSTC_BOOTSTRAP=1 allows them.
#   cargo install cargo-fuzz --locked
#   bash fuzz/run.sh            # 10 minutes per target
#   SECONDS_EACH=60 bash fuzz/run.sh
set -euo pipefail
cd "$(dirname "$0")"
each=${SECONDS_EACH:-600}
jobs=${JOBS:-2}
export RUSTC_BOOTSTRAP=1
targets=(config client_hello header_rewrite registry_record request_framing)
cargo fuzz build -O >/dev/null
mkdir -p logs
run() {
  local t=$1
  # -rss_limit_mb keeps a leak from eating the machine; the run stops by itself.
  cargo fuzz run -O "$t" -- -max_total_time="$each" -rss_limit_mb=2048 -print_final_stats=1 \
    >"logs/$t.log" 2>&1 || echo "CRASH" >>"logs/$t.log"
}
running=0
for t in "${targets[@]}"; do
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
printf '| target | seconds | runs | execs/s | coverage (cov) | features (ft) | corpus | peak RSS MB | result |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n'
for t in "${targets[@]}"; do
  log="logs/$t.log"
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo '?')
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || echo '?')
  corp=$(echo "$last" | grep -o 'corp: [0-9]*' | grep -o '[0-9]*' || echo '?')
  if grep -q CRASH "$log"; then res="CRASH (fuzz/artifacts/$t)"; else res="no crash"; fi
  echo "| $t | $each | $runs | $eps | $cov | $ft | $corp | $rss | $res |"
done
