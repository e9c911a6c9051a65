# Shared by the comparison benchmarks (sourced, from the repository root): builds the
# release binary and library, makes a scratch directory `$work` removed on exit, and
# `start_cluster CONCURRENCY` starts a three-node cluster (RocksDB) in it, sets `$nodes`,
# waits until it answers and warms it up with one short `dynamo bench` (which loads the
# 10,000 records the workloads read). The cluster is stopped on exit.
cargo build --release -p dynamo -p dynamo-ffi >&2
release=${CARGO_TARGET_DIR:-$PWD/target}/release
work=$(mktemp -d)
cluster_pid=
stop_cluster() {
  if [ -n "$cluster_pid" ]; then
    kill -INT "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null || true
    cluster_pid=
  fi
}
cleanup() {
  stop_cluster
  rm -rf "$work"
}
trap cleanup EXIT

start_cluster() {
  local base=$((20000 + RANDOM % 20000))
  "$release/dynamo" cluster up --nodes 3 --dir "$work/cluster" --base-port "$base" \
    >"$work/cluster.log" 2>&1 &
  cluster_pid=$!
  nodes="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
  local ready=
  for _ in $(seq 100); do
    if "$release/dynamo" status --nodes "127.0.0.1:$base" >/dev/null 2>&1; then
      ready=1
      break
    fi
    sleep 0.2
  done
  if [ -z "$ready" ]; then
    echo "the cluster did not answer within 20 s; its log:" >&2
    cat "$work/cluster.log" >&2
    return 1
  fi
  "$release/dynamo" bench --nodes "$nodes" --duration 1 --warmup 0 --concurrency "$1" >/dev/null
}
