"""`dynamo.Engine`: the local engines through the C API."""

from __future__ import annotations

from pathlib import Path

import pytest

import dynamo

SPECS = ["rocksdb", "sqlite", "memory", "buffered:rocksdb", "buffered:sqlite"]
DURABLE = {"rocksdb", "sqlite", "buffered:rocksdb", "buffered:sqlite"}


@pytest.fixture(params=SPECS)
def engine(request: pytest.FixtureRequest, tmp_path: Path):
    with dynamo.Engine.open(request.param, tmp_path / "e") as e:
        yield e


def test_keyspaces_get_put_delete(engine: dynamo.Engine) -> None:
    engine.ensure_keyspace("items")
    engine.ensure_keyspace("other")
    engine.ensure_keyspace("items")  # idempotent
    assert {"items", "other"} <= set(engine.keyspaces())
    assert engine.get("items", "a") is None
    engine.put("items", "a", b"1")
    engine.put("items", b"\x00bin", b"")
    assert engine.get("items", "a") == b"1"
    assert engine.get("items", b"\x00bin") == b""
    assert engine.get("other", "a") is None
    engine.delete("items", "a")
    engine.delete("items", "never-there")
    assert engine.get("items", "a") is None
    with pytest.raises(dynamo.BadRequestError):
        engine.get("missing_keyspace", "a")
    with pytest.raises(dynamo.BadRequestError):
        engine.ensure_keyspace("bad name!")
    with pytest.raises(TypeError):
        engine.put("items", 1, b"x")  # type: ignore[arg-type]


def test_batches_are_all_or_nothing(engine: dynamo.Engine) -> None:
    engine.ensure_keyspace("ks")
    engine.put("ks", "gone", "x")
    with engine.batch() as b:
        b.put("ks", "a", "1").put("ks", "b", "2").delete("ks", "gone")
        assert len(b) == 3
    assert engine.get("ks", "a") == b"1" and engine.get("ks", "gone") is None
    # A block that raises writes nothing.
    with pytest.raises(RuntimeError):
        with engine.batch() as b:
            b.put("ks", "c", "3")
            raise RuntimeError("abandon")
    assert engine.get("ks", "c") is None
    # A batch naming a missing keyspace is refused whole.
    b = dynamo.Batch()
    b.put("ks", "d", "4")
    b.put("nope", "e", "5")
    with pytest.raises(dynamo.BadRequestError):
        engine.write(b)
    assert engine.get("ks", "d") is None
    b.clear()
    assert len(b) == 0
    b.free()
    b.free()
    with pytest.raises(TypeError):
        engine.write("not a batch")  # type: ignore[arg-type]


def test_scans_in_both_directions_with_bounds(engine: dynamo.Engine) -> None:
    engine.ensure_keyspace("ks")
    keys = [f"k{i:04d}".encode() for i in range(1000)]
    with engine.batch() as b:
        for k in keys:
            b.put("ks", k, k + b"!")
    pairs = list(engine.scan("ks"))
    assert [k for k, _ in pairs] == keys  # across the library's 256-pair chunks
    assert all(v == k + b"!" for k, v in pairs)
    assert [k for k, _ in engine.scan("ks", reverse=True)] == keys[::-1]
    assert [k for k, _ in engine.scan("ks", "k0010", "k0013")] == keys[10:13]
    assert [k for k, _ in engine.scan("ks", "k0010", "k0013", start_inclusive=False, end_inclusive=True)] == keys[11:14]
    assert [k for k, _ in engine.scan("ks", end="k0002")] == keys[:2]
    assert [k for k, _ in engine.scan("ks", "k0998", reverse=True)] == [keys[999], keys[998]]
    it = engine.scan("ks")
    assert next(it)[0] == keys[0]
    it.close()  # abandoning an iterator frees it
    engine.delete_range("ks", "k0100", "k0900")
    assert len(list(engine.scan("ks"))) == 200
    engine.delete_range("ks")
    assert list(engine.scan("ks")) == []


def test_sync_size_close_and_reopen(tmp_path: Path) -> None:
    for spec in SPECS:
        path = tmp_path / spec.replace(":", "_")
        e = dynamo.Engine.open(spec, path)
        e.ensure_keyspace("ks")
        e.put("ks", "k", b"v" * 1000)
        e.sync()
        assert e.approximate_size() >= 0
        e.close()
        e.close()
        assert e.closed
        with pytest.raises(dynamo.BadRequestError, match="closed"):
            e.get("ks", "k")
        with dynamo.Engine.open(spec, path) as again:
            if spec in DURABLE:
                assert again.get("ks", "k") == b"v" * 1000
    with pytest.raises(dynamo.BadRequestError):
        dynamo.Engine.open("no-such-engine", tmp_path / "x")
    with pytest.raises(TypeError):
        dynamo.Engine.open("memory", 5)  # type: ignore[arg-type]


def test_an_abandoned_scan_frees_its_iterator(tmp_path: Path) -> None:
    path = tmp_path / "r"
    e = dynamo.Engine.open("rocksdb", path)
    e.ensure_keyspace("ks")
    e.put("ks", "a", "1")
    pairs = e.scan("ks")  # never iterated
    with e.scan("ks") as other:
        assert next(other) == (b"a", b"1")
    del pairs
    e.close()
    # RocksDB locks its directory: reopening works only if no iterator kept it open.
    with dynamo.Engine.open("rocksdb", path) as again:
        assert again.get("ks", "a") == b"1"
