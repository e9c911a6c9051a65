#!/usr/bin/env bash
# Issue 19's side-by-side figures, each pair measured in one run on one machine:
#   - synced writes: one node with durability sync, 1 writer vs 32 writers;
#   - overload: workload A on three nodes, 64 vs 1024 in flight;
#   - one node's GETs at 50 connections against Redis (if installed);
#   - one node pinned to one core against two (taskset);
#   - with OLD_DYNAMO set, workloads A and C against an older build's binary.
# Usage: benches/under_load.sh [path/to/dynamo] [seconds]   (default: target/release/dynamo, 10)
set -euo pipefail
DYNAMO=${1:-target/release/dynamo}
SECS=${2:-10}
row() { grep -E "client-driven  all|CPU per operation" ; }
echo "== synced writes (N=R=W=1, durability sync, workload w)"
for c in 1 32; do
  echo "-- $c writer(s)"
  "$DYNAMO" bench --spawn 1 --durability sync --workload w --concurrency "$c" --duration "$SECS" --keys 10000 2>/dev/null | row
done
echo "== overload (3 nodes, workload A)"
for c in 64 1024; do
  echo "-- $c in flight"
  "$DYNAMO" bench --spawn 3 --workload a --concurrency "$c" --duration "$SECS" 2>/dev/null | row
done
# The rest needs what may be missing; each section says so and is skipped.
echo "== one node's GETs at 50 connections vs Redis (N=R=W=1, 100-byte values, 100k keys)"
echo "-- libdynamo"
"$DYNAMO" bench --spawn 1 --workload c --concurrency 50 --value-size 100 --keys 100000 --duration "$SECS" 2>/dev/null | row
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  port=$((20000 + RANDOM % 20000))
  redis-server --port "$port" --save '' --appendonly no --daemonize no >/dev/null 2>&1 &
  redis=$!
  trap 'kill $redis 2>/dev/null || true' EXIT
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "-- redis"
  redis-benchmark -p "$port" -c 50 -d 100 -r 100000 -n $((SECS * 50000)) -t set -q >/dev/null
  redis-benchmark -p "$port" -c 50 -d 100 -r 100000 -n $((SECS * 50000)) -t get -q | tr '\r' '\n' | grep "requests per second" | tail -1
  kill "$redis"; wait "$redis" 2>/dev/null || true
  trap - EXIT
else
  echo "-- redis: not installed (apt-get install redis-server redis-tools); skipped"
fi
echo "== cores: one node, workload C, 2 cores vs pinned to 1 (the bench client shares them)"
if command -v taskset >/dev/null; then
  echo "-- pinned to core 0"
  taskset -c 0 "$DYNAMO" bench --spawn 1 --workload c --concurrency 64 --keys 10000 --duration "$SECS" 2>/dev/null | row
  echo "-- cores 0-1"
  taskset -c 0,1 "$DYNAMO" bench --spawn 1 --workload c --concurrency 64 --keys 10000 --duration "$SECS" 2>/dev/null | row
else
  echo "-- taskset: not installed; skipped"
fi
# Efficiency against an older build: OLD_DYNAMO=path/to/its/dynamo (build the commit
# before issue 19, 73f1734, in a second worktree with its own CARGO_TARGET_DIR: a shared
# one gets this checkout's artifacts overwritten). Builds that old print no CPU line, so
# both builds are measured the same way here: the node processes' CPU time from /proc
# over most of the measured run.
node_cpu_per_op() { # binary workload
  local bin=$1 w=$2 out err pids c0 c1 t0 t1 ops
  out=$(mktemp); err=$(mktemp)
  "$bin" bench --spawn 3 --workload "$w" --concurrency 64 --duration "$SECS" >"$out" 2>"$err" &
  local bench=$!
  until grep -aq "running workload" "$err" || ! kill -0 "$bench" 2>/dev/null; do sleep 0.1; done
  sleep 0.3
  pids=$(pgrep -P "$bench" | tr '\n' ' ')
  ticks() { local s=0 p v; for p in $pids; do v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0); s=$((s + v)); done; echo "$s"; }
  c0=$(ticks); t0=$(date +%s.%N)
  sleep "$(awk -v s="$SECS" 'BEGIN { print s * 0.9 }')"
  c1=$(ticks); t1=$(date +%s.%N)
  wait "$bench" || true
  ops=$(grep -a "client-driven  all" "$out" | awk '{print $3}')
  awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v t0="$t0" -v t1="$t1" -v ops="${ops:-0}" -v secs="$SECS" 'BEGIN {
    rate = ops / secs
    if (rate > 0) printf "%.0f ops/s; node CPU %.0f us per operation\n", rate, c / hz / (t1 - t0) * 1e6 / rate
    else print "no operations measured" }'
  rm -f "$out" "$err"
}
if [ -n "${OLD_DYNAMO:-}" ]; then
  for w in a c; do
    for bin in "$OLD_DYNAMO" "$DYNAMO"; do
      echo "== efficiency: workload $w, 3 nodes, 64 in flight: $bin"
      node_cpu_per_op "$bin" "$w"
    done
  done
fi
