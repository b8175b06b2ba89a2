#!/usr/bin/env bash
# The benchmark suite: builds release binaries, then runs each benchmark against its peer on
# this machine, pinned, and writes the tables to bench/results/<date>-<name>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# target/release/sdsim (the server every benchmark starts), the bench-* drivers, the peer-*
# servers and the load generator; run this first when running one benchmark by hand.
cargo build --release -p sdsim-server -p sdsim-bench -p sdsim-loadtest
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
echo "== start: exec of sdsim serve to its first 200 on /health (embedded default, fresh data each run)"
python3 bench/start_to_health.py target/release/sdsim 7 | tee "bench/results/$stamp-start.md"
echo "== mesh (sdsim mesh vs std::sync::mpsc, CPUs 0,1)"
target/release/bench-mesh --runs 3 | tee "bench/results/$stamp-mesh.md"
echo "== HTTP keep-alive (sdsim vs axum, server CPU 0, load CPU 1)"
target/release/bench-http --runs 3 --out "bench/results/$stamp-http.md" "$@"
echo "== the internal hop: GET /api/projects/{id} in one process vs across a gRPC hop, for sdsim, its peer (axum + tonic) and the bare limit (servers CPU 0, load CPU 1)"
target/release/bench-hop --runs 3 --server-cpu 0 --client-cpu 1 --out "bench/results/$stamp-hop.json" | tee "bench/results/$stamp-hop.md"
echo "== failover: a project instance of the loopback cluster frozen (SIGSTOP) 10 times, then killed (SIGKILL) and restarted 10 times, under journeys through HAProxy"
cargo test --release -p sdsim-server --test cluster -- --ignored failover_times_over_repeated --test-threads 1 --nocapture | grep -E "^(freeze|kill|restart|failover)" | tee "bench/results/$stamp-failover.md"
echo "== mesh pools over a load ramp: one gateway's connections to each project instance"
cargo test --release -p sdsim-server --test cluster -- --ignored pool_sizes_over_a_load_ramp --nocapture | tee "bench/results/$stamp-pool-ramp.md"
echo "== simulation engine (sdsim vs Ciw, CPU 1)"
python3 -c 'import ciw' 2>/dev/null || python3 -m pip install --quiet "ciw==3.*"
target/release/bench-sim --runs 3 | tee "bench/results/$stamp-sim.md"
echo "== WebSocket: idle connections, fan-out to 10,000 subscribers on one channel and on 1,000 channels (sdsim vs axum + tokio-tungstenite, server CPU 0, clients CPU 1)"
for scenario in idle fanout fanout-many; do
  target/release/bench-ws --scenario "$scenario" --runs 3 | tee "bench/results/$stamp-ws-$scenario.md"
done
echo "== Redis bridge: events from instance A to WebSocket subscribers on instance B through redis-server, against sdsim of 3cf8dbf50 (one PUBLISH per round trip; pass its binary as SDSIM_BRIDGE_BASELINE) and bare pipelined PUBLISH/PSUBSCRIBE programs (servers CPU 0, load CPU 1)"
target/release/bench-bridge --runs 3 ${SDSIM_BRIDGE_BASELINE:+--baseline "$SDSIM_BRIDGE_BASELINE"} --out "bench/results/$stamp-bridge.md"
echo "== gRPC ValidateToken, one token (cache hits) and 100,000 distinct tokens (cache misses), sdsim vs tonic + jsonwebtoken vs a bare h2 responder (the floor), server CPU 0, load CPU 1; verification cost per token on CPU 1"
target/release/bench-auth --runs 3 --out "bench/results/$stamp-auth.md"
echo "== load generator: sdsim-loadtest vs wrk 4.1.0 on sdsim GET /health (server CPU 0, generators CPU 1)"
# wrk is a Debian package (4.1.0: closed loop only, no --rate); root installs it directly, as
# test.sh does (there is no sudo on the test machines), anyone else through sudo.
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v wrk >/dev/null; then
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
    { sudo_if_needed apt-get update -qq &&
      sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
fi
target/release/bench-wrk --runs 3 --out "bench/results/$stamp-wrk.md"
