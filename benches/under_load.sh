#!/usr/bin/env bash
# Issue 19's side-by-side figures, each pair measured in one run on one machine:
#   - synced writes: one node with durability sync, 1 writer vs 32 writers;
#   - overload: workload A on three nodes, 64 vs 1024 in flight.
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
