"""The binding's per-call cost: blocking gets answered by an embedded node from memory
(store N=R=W=1, memory engine, one key), timed from Python; `benches/c_get_loop.c`
times the same loop from C. Prints one JSON object (median and mean µs per get).

Usage: python call_overhead.py [--calls 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import dynamo


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        config = {
            "node": {"name": "solo", "listen": "127.0.0.1:0", "data_dir": d},
            "cluster": {"partitions": 8, "members": [{"name": "solo", "address": "127.0.0.1:0"}]},
            "stores": [{"name": "s", "engine": "memory", "n": 1, "r": 1, "w": 1}],
        }
        with dynamo.Node(config) as node, node.client() as c:
            c.put("s", "key", b"v" * 100)
            for _ in range(1000):
                c.get("s", "key")
            per_call = []
            for _ in range(a.rounds):
                start = time.perf_counter()
                for _ in range(a.calls):
                    c.get("s", "key")
                per_call.append((time.perf_counter() - start) / a.calls * 1e6)
    print(json.dumps({"median_us": statistics.median(per_call), "rounds_us": per_call}))


if __name__ == "__main__":
    main()
