#!/usr/bin/env bash
# The 100K-connection run: one sdsim process and one sdsim-loadtest process on loopback, each
# past the per-process descriptor limit with a descriptor table per shard / generator thread.
#   loadtest/run-100k.sh [CONNECTIONS] [SHARDS]        (defaults 100000 and 7)
# Server on CPU 0, generator on CPU 1 (machines with 2+ CPUs). Writes the generator's JSON and
# plot and the server's resident memory to bench/results/<UTC stamp>-ws-100k.*.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-100000}
SHARDS=${2:-7}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/results/$STAMP-ws-100k
DATA=$(mktemp -d)
cargo build --release -q -p sdsim-server -p sdsim-loadtest
CPUS=$(python3 -c "print(','.join(['0']*$SHARDS))")
GEN_CPUS=$(python3 -c "print(','.join(['1']*$SHARDS))")
taskset -c 0 target/release/sdsim serve --set runtime.shards="$SHARDS" --set "runtime.cpus=[$CPUS]" \
    --set runtime.private_fd_tables=true --set auth.dev_open=true \
    --set websocket.max_connections_per_ip=0 --set websocket.max_connections_per_user=0 \
    --set ratelimit.enabled=false --set log.access=false --set log.level=warn \
    --set "storage.url=sqlite://$DATA/sdsim.db" >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do curl -sf localhost:8000/health >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }
RSS_IDLE=$(rss)
# Sample the server's memory while the generator holds the connections.
( peak=0; while kill -0 $SERVER 2>/dev/null; do r=$(rss || echo 0); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$DATA/peak"; sleep 1; done ) &
SAMPLER=$!
taskset -c 1 target/release/sdsim-loadtest ws ws://127.0.0.1:8000/ws --connections "$CONNS" \
    --connect-rate 5000 --connect-timeout 30s --warmup 2s --duration 30s --token 'u-{i}' \
    --sources 127.0.0.1-127.0.0.20 --channels 1000 --publish-rate 200 --send-rate 1000 \
    --cpus "$GEN_CPUS" --json "$OUT.json" --plot "$OUT.svg" --quiet | tee "$OUT.txt"
kill $SAMPLER 2>/dev/null || true
PEAK=$(cat "$DATA/peak" 2>/dev/null || echo 0)
{
    echo "server: $SHARDS shards on CPU 0, runtime.private_fd_tables=true; generator: $SHARDS threads on CPU 1"
    echo "server RSS idle ${RSS_IDLE} KiB, peak ${PEAK} KiB: $(( (PEAK - RSS_IDLE) * 1024 / CONNS )) bytes per connection"
    echo "RLIMIT_NOFILE $(ulimit -Hn); $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Linux $(uname -r)"
} | tee -a "$OUT.txt"
grep -E "WARN|ERROR" "$DATA/server.log" | grep -v stall | tail -5 || true
