#!/usr/bin/env bash
# The Python binding's cost, in one run on one machine:
# 1. YCSB workload A against one local three-node cluster, driven alternately by
#    `dynamo bench` (the Rust client) and by one Python process with dynamo.AsyncClient
#    (bindings/python/bench/workload_a.py), at the same concurrency, ROUNDS times each;
#    prints each run and the ratio of the medians.
# 2. The per-call overhead: blocking gets answered by an embedded node from memory,
#    timed from Python (call_overhead.py) and from C (benches/c_get_loop.c).
# Usage: benches/python_vs_rust.sh [CONCURRENCY] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
concurrency=${1:-64}
seconds=${2:-10}
rounds=${3:-3}
source benches/common.sh

python3 -m venv "$work/venv"
DYNAMO_LIBRARY="$release/libdynamo.so" "$work/venv/bin/pip" install --quiet \
  --disable-pip-version-check ./bindings/python >&2
py="$work/venv/bin/python"
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I include benches/c_get_loop.c -o "$work/c_get_loop" \
  -L "$release" -ldynamo -Wl,-rpath,"$release"

start_cluster "$concurrency"
rust=()
python=()
for i in $(seq "$rounds"); do
  r=$("$release/dynamo" bench --nodes "$nodes" --no-load --duration "$seconds" \
      --concurrency "$concurrency" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["total"]["ops_per_sec"])')
  x=$("$py" bindings/python/bench/workload_a.py --nodes "$nodes" --concurrency "$concurrency" \
      --duration "$seconds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ops_per_sec"])')
  echo "round $i: dynamo bench ${r} ops/s, Python AsyncClient ${x} ops/s" >&2
  rust+=("$r")
  python+=("$x")
done
stop_cluster
py_call=$("$py" bindings/python/bench/call_overhead.py)
c_call=$("$work/c_get_loop")
python3 - "${rust[*]}" "${python[*]}" "$concurrency" "$py_call" "$c_call" <<'PY'
import json, statistics, sys
rust = [float(x) for x in sys.argv[1].split()]
py = [float(x) for x in sys.argv[2].split()]
mr, mp = statistics.median(rust), statistics.median(py)
print(f"workload A, 3 nodes, concurrency {sys.argv[3]}: dynamo bench median {mr:.0f} ops/s, "
      f"Python AsyncClient median {mp:.0f} ops/s, Python/Rust = {mp / mr:.2f}")
pc, cc = json.loads(sys.argv[4])["median_us"], json.loads(sys.argv[5])["median_us"]
print(f"blocking get from an embedded in-memory node: Python {pc:.1f} us, C {cc:.1f} us, "
      f"binding overhead {pc - cc:.1f} us per call")
PY
