"""The tools, as functions and as `python -m dynamo` commands: cluster, load, export,
check; and the `local_cluster` fixture itself."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import dynamo
from dynamo import tools
from dynamo.cluster import LocalCluster, pid_alive


def cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dynamo", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


RECORDS = [
    {"key": "plain", "value": "one"},
    {"key": "sibs", "siblings": [{"value": "x"}, {"value_base64": "/wA="}]},
    {"key_base64": "AP8=", "value": "binary key"},
    {"key": "tomb", "siblings": [{"value": "alive"}, {"deleted": True}]},
    {"key": "dup", "value": "first"},
    {"key": "unicode-ключ", "value": "значение"},
]


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def by_key(lines: str) -> dict[bytes, dict]:
    out = {}
    for line in lines.splitlines():
        rec = json.loads(line)
        key = tools.decode_bytes(rec, "key", "test")
        assert key is not None
        out[key] = rec
    return out


def sibling_values(rec: dict) -> list[bytes | None]:
    values = []
    for s in rec["siblings"]:
        values.append(None if s.get("deleted") else tools.decode_bytes(s, "value", "test"))
    return sorted(values, key=lambda v: (v is None, v or b""))


def test_fixture_gives_a_running_three_node_cluster(local_cluster: LocalCluster) -> None:
    assert len(local_cluster.addresses) == 3
    assert all(n.running for n in local_cluster.nodes)
    with local_cluster.client() as c:
        c.put("default", "fixture-key", "v")
        assert c.get("default", "fixture-key").values == [b"v"]


def test_load_export_roundtrip(tmp_path: Path) -> None:
    with LocalCluster(3, tmp_path / "c", engine="memory", partitions=16) as cluster:
        report = tools.load(cluster.addresses, "default", io.StringIO(jsonl(RECORDS)))
        assert (report.keys, report.writes, report.errors) == (6, 8, [])
        out = io.StringIO()
        ex = tools.export(cluster.addresses, "default", out)
        assert ex.keys == 6 and ex.unanswered == []
        got = by_key(out.getvalue())
        assert set(got) == {b"plain", b"sibs", b"\x00\xff", b"tomb", "unicode-ключ".encode(), b"dup"}
        assert got[b"plain"]["siblings"] == [{"value": "one"}]
        assert "key_base64" in got[b"\x00\xff"] and "key" not in got[b"\x00\xff"]
        assert sibling_values(got[b"sibs"]) == [b"x", b"\xff\x00"]
        assert {"value_base64": "/wA="} in got[b"sibs"]["siblings"]
        assert sibling_values(got[b"tomb"]) == [b"alive", None]
        assert got["unicode-ключ".encode()]["siblings"] == [{"value": "значение"}]
        assert all(isinstance(r["context"], str) and r["context"] for r in got.values())

        # Loading again supersedes what is there instead of adding siblings, and lines
        # for the same key apply in file order: the last one wins.
        again_lines = [{"key": "plain", "value": "two"}] + [{"key": "dup", "value": f"v{i}"} for i in range(20)]
        tools.load(cluster.addresses, "default", io.StringIO(jsonl(again_lines)))
        with cluster.client() as c:
            assert c.get("default", "plain").values == [b"two"]
            assert c.get("default", "dup").values == [b"v19"]
        out = io.StringIO()
        tools.export(cluster.addresses, "default", out)
        got = by_key(out.getvalue())

        # The export loads into another cluster as the same data.
        with LocalCluster(3, tmp_path / "d", engine="memory", partitions=8) as other:
            tools.load(other.addresses, "default", io.StringIO(out.getvalue()), blind=True)
            again = io.StringIO()
            tools.export(other.addresses, "default", again)
            assert {k: sibling_values(r) for k, r in by_key(again.getvalue()).items()} == {
                k: sibling_values(r) for k, r in got.items()
            }


def test_load_refuses_malformed_lines_and_writes_nothing_of_them(tmp_path: Path) -> None:
    with LocalCluster(1, tmp_path / "c", engine="memory", partitions=8) as cluster:
        bad = [
            "not json",
            json.dumps({"value": "no key"}),
            json.dumps({"key": "k", "value_base64": "***"}),
            json.dumps({"key": "k", "siblings": "x"}),
            json.dumps({"key": "k"}),
            json.dumps(["a list"]),
            json.dumps({"key": "k", "siblings": [{"value": "v", "deleted": "false"}]}),
        ]
        for line in bad:
            with pytest.raises(ValueError, match="line 1"):
                tools.load(cluster.addresses, "default", [line])
        # The CLI validates a file before writing any of it.
        path = tmp_path / "in.jsonl"
        path.write_text(jsonl([{"key": "first", "value": "v"}]) + "oops\n")
        done = cli("load", "--nodes", ",".join(cluster.addresses), str(path))
        assert done.returncode == 2 and "line 2" in done.stderr
        with cluster.client() as c:
            assert c.get("default", "first").siblings == []
            assert c.get("default", "k").siblings == []


def test_export_selected_keys_and_skips_deleted(tmp_path: Path) -> None:
    with LocalCluster(1, tmp_path / "c", engine="memory", partitions=8) as cluster:
        with cluster.client() as c:
            c.put("default", "a", "1")
            c.put("default", "b", "2")
            ctx = c.put("default", "gone", "3")
            c.delete("default", "gone", ctx)
        out = io.StringIO()
        report = tools.export(cluster.addresses, "default", out)
        assert set(by_key(out.getvalue())) == {b"a", b"b"} and report.skipped == 1
        out = io.StringIO()
        tools.export(cluster.addresses, "default", out, keys=[b"b"])
        assert set(by_key(out.getvalue())) == {b"b"}


def test_check_reports_siblings_and_replicas_that_disagree(tmp_path: Path) -> None:
    with LocalCluster(3, tmp_path / "c", engine="rocksdb", partitions=8) as cluster:
        with cluster.client() as c:
            for i in range(20):
                c.put("default", f"fine-{i}", "v", w=3)
            c.put("default", "twins", "a")
            c.put("default", "twins", "b")
            cluster.kill(2)  # node-3 misses the next write (W=2 of N=3)
            c.put("default", "missed", "v")
        cluster.restart(2)
        report = tools.check(cluster.addresses, "default")
        assert report.keys == 22 and not report.ok
        problems = {p.key: p for p in report.problems}
        assert set(problems) == {b"twins", b"missed"}
        assert problems[b"twins"].siblings == 2
        assert problems[b"missed"].stale_replicas == ["node-3"]
        # The check's R=N read repaired the stale replica (the client finishes its
        # repairs before it closes), so a listed-keys check of it is clean.
        second = tools.check(cluster.addresses, "default", keys=[b"missed", b"fine-1"])
        assert second.keys == 2 and second.ok, second.problems


def test_cli_cluster_load_export_check(tmp_path: Path) -> None:
    directory = tmp_path / "cl"
    up = cli("cluster", "up", "--dir", str(directory), "--nodes", "3", "--engine", "memory", "--detach")
    assert up.returncode == 0, up.stderr
    manifest = json.loads((directory / "cluster.json").read_text())
    pids = [n["pid"] for n in manifest["nodes"]]
    try:
        nodes = ",".join(n["address"] for n in manifest["nodes"])
        assert f"nodes: {nodes}" in up.stdout
        done = cli("load", "--nodes", nodes, "-", stdin=jsonl(RECORDS))
        assert done.returncode == 0, done.stderr
        exported = cli("export", "--nodes", nodes)
        assert exported.returncode == 0, exported.stderr
        assert len(by_key(exported.stdout)) == 6
        out = tmp_path / "out.jsonl"
        assert cli("export", "--nodes", nodes, "-o", str(out)).returncode == 0
        assert by_key(out.read_text()).keys() == by_key(exported.stdout).keys()
        checked = cli("check", "--nodes", nodes, "--json")
        assert checked.returncode == 1  # "sibs" and "tomb" have siblings
        report = json.loads(checked.stdout)
        assert report["keys"] == 6 and report["with_siblings"] == 2 and report["unanswered"] == []
        keys_file = tmp_path / "keys.txt"
        keys_file.write_bytes(b"plain\r\n")  # CRLF line ends are fine
        clean = cli("check", "--nodes", nodes, "--keys", str(keys_file))
        assert clean.returncode == 0 and "checked 1 key(s): 0 with siblings" in clean.stdout
        bad = cli("check", "--nodes", nodes, "--store", "nope")
        assert bad.returncode == 1 and "UnknownStoreError" in bad.stderr
    finally:
        down = cli("cluster", "down", "--dir", str(directory))
        assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids)


def test_cli_cluster_in_the_foreground_stops_on_sigterm(tmp_path: Path) -> None:
    # `cluster` alone means `cluster up`; without --dir it uses a scratch directory.
    p = subprocess.Popen(
        [sys.executable, "-m", "dynamo", "cluster", "--nodes", "2", "--engine", "memory"],
        stdout=subprocess.PIPE,
        text=True,
    )
    directory = None
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith("directory: "):
                directory = Path(line.split(": ", 1)[1].strip())
            if line.startswith("Ctrl-C"):
                break
        assert directory is not None
        manifest = json.loads((directory / "cluster.json").read_text())
        with dynamo.Client([n["address"] for n in manifest["nodes"]]) as c:
            c.put("default", "k", "v")
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not any(pid_alive(n["pid"]) for n in manifest["nodes"])
    assert not directory.exists()  # the scratch directory went with the cluster


def test_cluster_sizes_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1 to 100"):
        LocalCluster(0, tmp_path)
    with pytest.raises(ValueError, match="65535"):
        LocalCluster(3, tmp_path, base_port=65534)
    done = cli("cluster", "down", "--dir", str(tmp_path / "none"))
    assert done.returncode == 2 and "cluster.json" in done.stderr
    done = cli("cluster", "down")
    assert done.returncode == 2 and "--dir" in done.stderr


def test_cli_plot_writes_a_chart(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    out = tmp_path / "bench.png"
    done = cli("plot", str(data / "bench.json"), str(data / "bench_engines.json"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    bad = cli("plot", str(data / "bench.json"), "-o", str(tmp_path / "x.gif"))
    assert bad.returncode == 2 and ".png" in bad.stderr


def test_concurrency_below_one_is_refused_before_anything_runs(dead_address: str) -> None:
    # Refused before connecting: a concurrency of 0 must not "finish" having done nothing.
    for call in (
        lambda: tools.load(dead_address, "default", ['{"key": "k", "value": "v"}'], concurrency=0),
        lambda: tools.export(dead_address, "default", io.StringIO(), concurrency=0),
        lambda: tools.check(dead_address, "default", concurrency=-1),
    ):
        with pytest.raises(ValueError, match="at least 1"):
            call()
    with pytest.raises(TypeError):
        tools.check(dead_address, "default", concurrency="8")
    done = cli("export", "--nodes", dead_address, "--concurrency", "0")
    assert done.returncode == 2 and "at least 1" in done.stderr
