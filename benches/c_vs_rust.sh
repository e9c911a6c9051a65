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
source benches/common.sh

cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I include benches/c_workload.c -o "$work/c_workload" \
  -L "$release" -ldynamo -Wl,-rpath,"$release" -lpthread -lm

start_cluster "$concurrency"
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
