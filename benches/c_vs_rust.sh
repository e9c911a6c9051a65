#!/usr/bin/env bash
# The C boundary's cost: YCSB workload A against one local three-node cluster, driven
# alternately by `dynamo bench` (the Rust client) and by benches/c_workload.c (the C
# API's futures and callbacks), at the same concurrency, ROUNDS times each; prints each
# run and the ratio of the medians. Usage: benches/c_vs_rust.sh [CONCURRENCY] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
concurrency=${1:-64}
seconds=${2:-10}
rounds=${3:-3}
cargo build --release -p dynamo -p dynamo-ffi >&2
release=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d)
cluster_pid=
cleanup() {
  [ -n "$cluster_pid" ] && kill -INT "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I include benches/c_workload.c -o "$work/c_workload" \
  -L "$release" -ldynamo -Wl,-rpath,"$release" -lpthread -lm

base=$((20000 + RANDOM % 20000))
"$release/dynamo" cluster up --nodes 3 --dir "$work/cluster" --base-port "$base" >"$work/cluster.log" 2>&1 &
cluster_pid=$!
nodes="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
for _ in $(seq 100); do
  "$release/dynamo" status --nodes "127.0.0.1:$base" >/dev/null 2>&1 && break
  sleep 0.2
done
"$release/dynamo" bench --nodes "$nodes" --duration 1 --warmup 0 --concurrency "$concurrency" >/dev/null
rust=()
c=()
for i in $(seq "$rounds"); do
  r=$("$release/dynamo" bench --nodes "$nodes" --no-load --duration "$seconds" \
      --concurrency "$concurrency" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["total"]["ops_per_sec"])')
  x=$("$work/c_workload" --concurrency "$concurrency" --duration "$seconds" ${nodes//,/ } \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["ops_per_sec"])')
  echo "round $i: dynamo bench ${r} ops/s, C futures ${x} ops/s" >&2
  rust+=("$r")
  c+=("$x")
done
python3 - "${rust[*]}" "${c[*]}" "$concurrency" <<'PY'
import statistics, sys
rust = [float(x) for x in sys.argv[1].split()]
c = [float(x) for x in sys.argv[2].split()]
mr, mc = statistics.median(rust), statistics.median(c)
print(f"workload A, 3 nodes, concurrency {sys.argv[3]}: dynamo bench median {mr:.0f} ops/s, "
      f"C future API median {mc:.0f} ops/s, C/Rust = {mc / mr:.2f}")
PY
