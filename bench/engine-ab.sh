#!/usr/bin/env bash
# Engine speed of two commits in one session: `bench/engine-ab.sh OLD NEW [RUNS] [CPU]`.
# Builds a tiny program (bench/engine-ab/main.rs) against the engine crate of each commit
# (release, in worktrees under $TMPDIR; nothing else of the workspace is built), then runs
# both alternately on one pinned CPU over bench-five.json (open loop, 20,000 simulated s) and
# bench-closed.json (closed loop, 3,000 simulated s), and prints the median events/s of each
# and NEW / OLD. The design files are the NEW commit's, so both engines run the same models.
set -euo pipefail
cd "$(dirname "$0")/.."
old="${1:?usage: bench/engine-ab.sh OLD NEW [RUNS] [CPU]}" new="${2:?}" runs="${3:-5}" cpu="${4:-1}"
work="$(mktemp -d "${TMPDIR:-/tmp}/engine-ab.XXXXXX")"
cleanup() {
  for side in old new; do git worktree remove --force "$work/$side" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for side in old new; do
  rev="$old"; [ "$side" = new ] && rev="$new"
  git worktree add --quiet --detach "$work/$side" "$rev"
  mkdir -p "$work/$side-bin/src"
  cp bench/engine-ab/main.rs "$work/$side-bin/src/main.rs"
  cat >"$work/$side-bin/Cargo.toml" <<TOML
[package]
name = "engine-ab"
version = "0.1.0"
edition = "2021"

[dependencies]
sdsim-engine = { path = "$work/$side/engine" }

[profile.release]
debug = false

[workspace]
TOML
  cp Cargo.lock "$work/$side-bin/Cargo.lock"
  cargo build --quiet --release --manifest-path "$work/$side-bin/Cargo.toml" \
    --target-dir "$work/target-$side"
done
declare -A results
for model in "config/designs/bench-five.json 20000" "config/designs/bench-closed.json 3000"; do
  for i in $(seq "$runs"); do
    for side in old new; do
      # shellcheck disable=SC2086 # "file duration", two arguments
      line="$(taskset -c "$cpu" "$work/target-$side/release/engine-ab" $work/new/$model)"
      set -- $line
      results["$side ${model%% *}"]+="$(awk -v e="$1" -v w="$2" 'BEGIN { printf "%.0f ", e / w }')"
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "# engine A/B: old $(git rev-parse --short "$old"), new $(git rev-parse --short "$new"); $runs runs each, alternating, pinned to CPU $cpu; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| model | old events/s | new events/s | new / old | runs (old; new) |"
echo "|---|---|---|---|---|"
for model in config/designs/bench-five.json config/designs/bench-closed.json; do
  o="$(echo "${results["old $model"]}" | median)" n="$(echo "${results["new $model"]}" | median)"
  awk -v m="$(basename "$model")" -v o="$o" -v n="$n" -v ro="${results["old $model"]}" -v rn="${results["new $model"]}" \
    'BEGIN { printf "| %s | %.2f M | %.2f M | %.3f | %s; %s |\n", m, o / 1e6, n / 1e6, n / o, ro, rn }'
done
