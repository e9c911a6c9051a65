"""`dynamo.Client` against a real three-node cluster: every call, siblings, tombstones,
contexts, R/W overrides, both coordination modes, threads, key listing."""

from __future__ import annotations

import threading

import pytest

import dynamo
from dynamo.cluster import LocalCluster


@pytest.fixture(params=["client", "server"])
def client(request: pytest.FixtureRequest, local_cluster: LocalCluster):
    with dynamo.Client(local_cluster.addresses, coordination=request.param) as c:
        yield c


def test_put_get_roundtrip_with_str_and_bytes(client: dynamo.Client, key: str) -> None:
    assert client.get("default", key).siblings == []
    assert not client.get("default", key).found
    ctx = client.put("default", key, "héllo")
    assert isinstance(ctx, str) and ctx
    got = client.get("default", key.encode())
    assert got.values == ["héllo".encode()]
    assert got.value == "héllo".encode()
    assert got.siblings == [dynamo.Sibling("héllo".encode(), False)]
    assert got.found
    # Binary keys and values, bytearray and memoryview included.
    bkey = bytes([0, 255, 1]) + key.encode()
    client.put("default", bytearray(bkey), memoryview(b"\x00\xff"))
    assert client.get("default", bkey).values == [b"\x00\xff"]


def test_context_supersedes_and_blind_writes_make_siblings(client: dynamo.Client, key: str) -> None:
    client.put("default", key, "a")
    client.put("default", key, "b")  # no context: concurrent with "a"
    got = client.get("default", key)
    assert sorted(got.values) == [b"a", b"b"]
    with pytest.raises(ValueError, match="2 sibling values"):
        _ = got.value
    ctx = client.put("default", key, "merged", got.context)
    assert client.get("default", key).values == [b"merged"]
    # The context a put returns covers that write.
    client.put("default", key, "next", ctx)
    assert client.get("default", key).values == [b"next"]


def test_delete_with_context_removes_and_without_makes_a_tombstone_sibling(
    client: dynamo.Client, key: str
) -> None:
    client.put("default", key, "v")
    got = client.get("default", key)
    ctx = client.delete("default", key, got.context)
    assert isinstance(ctx, str)
    assert client.get("default", key).siblings == []
    client.put("default", key, "again", ctx)
    client.delete("default", key)  # blind: concurrent with "again"
    got = client.get("default", key)
    assert sorted(got.siblings, key=lambda s: s.deleted) == [
        dynamo.Sibling(b"again", False),
        dynamo.Sibling(None, True),
    ]
    assert got.values == [b"again"]


def test_r_and_w_overrides(client: dynamo.Client, key: str) -> None:
    client.put("default", key, "v", None, 3)  # positional, as put(store, key, value, context, w)
    assert client.get("default", key, 3).values == [b"v"]
    client.put("default", key, "v", client.get("default", key).context, w=3)
    assert client.get("default", key, r=3).values == [b"v"]
    assert client.get("default", key, r=1).values == [b"v"]
    client.delete("default", key, client.get("default", key).context, w=1)


def test_status_reports_members_and_stores(client: dynamo.Client, local_cluster: LocalCluster) -> None:
    status = client.status()
    assert {m["name"] for m in status["members"]} == {"node-1", "node-2", "node-3"}
    assert [s["name"] for s in status["stores"]] == ["default"]
    one = client.status(local_cluster.addresses[1])
    assert one["node"] == "node-2"


def test_one_client_shared_by_threads(local_cluster: LocalCluster, key: str) -> None:
    errors: list[BaseException] = []
    with dynamo.Client(local_cluster.addresses) as c:

        def work(t: int) -> None:
            try:
                for i in range(30):
                    k = f"{key}-{t}-{i}"
                    c.put("default", k, f"{t}:{i}")
                    assert c.get("default", k).values == [f"{t}:{i}".encode()]
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_keys_lists_every_key_in_pages(local_cluster: LocalCluster, tmp_path) -> None:
    with LocalCluster(3, tmp_path / "c", engine="memory", partitions=16) as cluster:
        with cluster.client() as c:
            written = {f"key-{i}".encode() for i in range(250)}
            for k in written:
                c.put("default", k, b"v")
            page = c.keys_page("default", page_size=7)
            assert 0 < len(page.keys) <= 7 and page.next is not None and page.unanswered == []
            listed = list(c.keys("default", page_size=10))
            assert len(listed) == len(set(listed)) == 250
            assert set(listed) == written
            with pytest.raises(dynamo.BadRequestError, match="cursor"):
                c.keys_page("default", "not-a-cursor")
            with pytest.raises(dynamo.UnknownStoreError):
                list(c.keys("nope"))


def test_options_are_checked() -> None:
    with pytest.raises(dynamo.BadRequestError, match="coordination"):
        dynamo.Client("127.0.0.1:1", coordination="p2p")
    with pytest.raises(TypeError, match="timeout"):
        dynamo.Client("127.0.0.1:1", timeout="3")  # type: ignore[arg-type]
    with pytest.raises(dynamo.BadRequestError, match="no nodes"):
        dynamo.Client([])
    with pytest.raises(TypeError):
        dynamo.Client(7)  # type: ignore[arg-type]
    c = dynamo.Client("127.0.0.1:1, 127.0.0.1:2", timeout=0.5, retries=1, ring_refresh=1)
    c.close()
    c.close()  # twice is fine
    assert c.closed


def test_keys_with_more_members_than_n_and_a_dead_owner(tmp_path) -> None:
    # Four members, N=3: each partition's keys come from its three owners only, and an
    # owner that is down is named while the others still list every key.
    with LocalCluster(4, tmp_path / "c", engine="memory", partitions=16, n=3, w=3) as cluster:
        with cluster.client(timeout=10) as c:
            written = {f"key-{i}".encode() for i in range(120)}
            for k in written:
                c.put("default", k, b"v")
            assert set(c.keys("default", page_size=9)) == written
            cluster.kill(3)
            pages = []
            cursor = None
            while True:
                page = c.keys_page("default", cursor, page_size=50)
                pages.append(page)
                if page.next is None:
                    break
                cursor = page.next
            listed = [k for p in pages for k in p.keys]
            assert len(listed) == len(set(listed)) and set(listed) == written
            assert {n for p in pages for n in p.unanswered} == {"node-4"}
