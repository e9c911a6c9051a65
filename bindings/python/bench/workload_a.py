"""YCSB workload A from one Python process with `dynamo.AsyncClient`: 50% reads, 50%
read-modify-write updates (a get, then a put with its context), scrambled zipfian keys
(θ = 0.99) over `user0000000000`.. as `dynamo bench` loads them, 100-byte values,
`--concurrency` requests in flight. Prints one JSON object (ops_per_sec, errors,
latency percentiles in µs) so `benches/python_vs_rust.sh` can compare it with
`dynamo bench` in the same run.

Usage: python workload_a.py --nodes H:P,H:P [--concurrency 64] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time

import dynamo

THETA = 0.99


class ScrambledZipfian:
    """YCSB's scrambled zipfian over `n` items (as `dynamo bench` and the C workload)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.zetan = sum(1.0 / math.pow(i, THETA) for i in range(1, n + 1))
        zeta2 = sum(1.0 / math.pow(i, THETA) for i in range(1, min(2, n) + 1))
        self.alpha = 1.0 / (1.0 - THETA)
        self.eta = (1.0 - math.pow(2.0 / n, 1.0 - THETA)) / (1.0 - zeta2 / self.zetan)
        self.half = 1.0 + math.pow(0.5, THETA)
        self.rng = random.Random(seed)

    def next(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            rank = 0
        elif uz < self.half:
            rank = 1
        else:
            rank = min(self.n - 1, int(self.n * math.pow(self.eta * u - self.eta + 1.0, self.alpha)))
        h = 0xCBF29CE484222325
        for i in range(8):
            h ^= (rank >> (8 * i)) & 0xFF
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        return h % self.n


async def run(nodes: str, concurrency: int, duration: float, warmup: float, keys: int, store: str) -> dict:
    value = b"v" * 100
    latencies: list[float] = []
    errors = 0
    done = 0
    measuring = False
    stop_at = time.monotonic() + warmup + duration

    async with dynamo.AsyncClient(nodes) as client:

        async def worker(w: int) -> None:
            nonlocal errors, done
            zipf = ScrambledZipfian(keys, seed=w + 1)
            rng = random.Random(1000 + w)
            while time.monotonic() < stop_at:
                key = f"user{zipf.next():010d}"
                start = time.perf_counter()
                try:
                    got = await client.get(store, key)
                    if rng.random() >= 0.5:
                        await client.put(store, key, value, got.context)
                except dynamo.DynamoError:
                    errors += 1
                    continue
                if measuring:
                    latencies.append(time.perf_counter() - start)
                    done += 1

        async def clock() -> None:
            nonlocal measuring
            await asyncio.sleep(warmup)
            measuring = True

        began = time.monotonic()
        await asyncio.gather(clock(), *(worker(w) for w in range(concurrency)))
        elapsed = time.monotonic() - began - warmup

    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e6

    return {
        "ops": done,
        "ops_per_sec": done / elapsed if elapsed > 0 else 0.0,
        "errors": errors,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "concurrency": concurrency,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", required=True)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--store", default="default")
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.nodes, a.concurrency, a.duration, a.warmup, a.keys, a.store))))


if __name__ == "__main__":
    main()
