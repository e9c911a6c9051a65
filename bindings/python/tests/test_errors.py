"""Each C status code raises its exception class, with the library's message; and bad
input raises a clear exception without changing what is stored."""

from __future__ import annotations

import asyncio
import signal

import pytest

import dynamo
from dynamo import _native
from dynamo.cluster import LocalCluster
from dynamo.errors import check

ALL = [
    (dynamo.QuorumError, _native.lib.DYNAMO_ERR_QUORUM),
    (dynamo.UnavailableError, _native.lib.DYNAMO_ERR_UNAVAILABLE),
    (dynamo.TimeoutError, _native.lib.DYNAMO_ERR_TIMEOUT),
    (dynamo.BadRequestError, _native.lib.DYNAMO_ERR_BAD_REQUEST),
    (dynamo.UnknownStoreError, _native.lib.DYNAMO_ERR_UNKNOWN_STORE),
    (dynamo.BadContextError, _native.lib.DYNAMO_ERR_BAD_CONTEXT),
    (dynamo.TooLargeError, _native.lib.DYNAMO_ERR_TOO_LARGE),
    (dynamo.InternalError, _native.lib.DYNAMO_ERR_INTERNAL),
    (dynamo.OverloadedError, _native.lib.DYNAMO_ERR_OVERLOADED),
]


@pytest.mark.parametrize("cls,status", ALL)
def test_every_class_is_a_dynamo_error_with_its_status(cls: type, status: int) -> None:
    assert issubclass(cls, dynamo.DynamoError)
    e = cls("msg")
    assert e.status == status and e.message == "msg" and str(e) == "msg"
    assert getattr(_native.lib, e.code) == status and e.code.startswith("DYNAMO_ERR_")
    assert e.description and e.description != e.code


def test_builtin_bases() -> None:
    assert issubclass(dynamo.TimeoutError, TimeoutError)
    assert issubclass(dynamo.BadRequestError, ValueError)
    assert issubclass(dynamo.BadContextError, ValueError)


def test_internal_error_from_a_caught_panic() -> None:
    with pytest.raises(dynamo.InternalError, match="panic"):
        check(_native.lib.dynamo_debug_panic(b"boom from python"))


def test_unavailable_when_nothing_listens(dead_address: str) -> None:
    with dynamo.Client(dead_address, timeout=1) as c:
        with pytest.raises(dynamo.UnavailableError) as e:
            c.get("default", "k")
    assert dead_address in e.value.message


def test_timeout_when_a_node_never_answers(silent_server: str) -> None:
    with dynamo.Client(silent_server, timeout=0.3, coordination="server") as c:
        with pytest.raises(dynamo.TimeoutError) as e:
            c.put("default", "k", "v")
    assert "300 ms" in e.value.message

    async def go() -> None:
        async with dynamo.AsyncClient(silent_server, timeout=0.3) as ac:
            with pytest.raises(dynamo.TimeoutError):
                await ac.get("default", "k")

    asyncio.run(go())


def test_quorum_error_names_the_missing_replica(tmp_path) -> None:
    with LocalCluster(3, tmp_path / "c", engine="memory", partitions=8) as cluster:
        with cluster.client(timeout=10) as c:
            c.put("default", "k", "v", w=3)
            cluster.kill(2)
            with pytest.raises(dynamo.QuorumError) as e:
                c.get("default", "k", r=3)
            assert "R=3" in e.value.message or "r=3" in e.value.message.lower()
            with pytest.raises(dynamo.QuorumError):
                c.put("default", "k2", "v", w=3)
            # Still readable and writable at the store's quorum.
            assert c.get("default", "k").values == [b"v"]


def test_unknown_store(solo: dynamo.Node) -> None:
    with solo.client() as c:
        with pytest.raises(dynamo.UnknownStoreError, match="nope"):
            c.get("nope", "k")
        with pytest.raises(dynamo.UnknownStoreError):
            c.put("nope", "k", "v")


def test_bad_context_changes_nothing(solo: dynamo.Node) -> None:
    with solo.client() as c:
        c.put("s", "k", "v")
        with pytest.raises(dynamo.BadContextError):
            c.put("s", "k", "x", "not a context")
        other = c.put("s", "other", "o")
        with pytest.raises(dynamo.BadContextError):
            c.put("s", "k", "x", other)  # a context of another key
        with pytest.raises(dynamo.BadContextError):
            c.delete("s", "k", "%%%")
        assert c.get("s", "k").values == [b"v"]


def test_too_large_when_siblings_outgrow_the_record(tmp_path) -> None:
    from conftest import single_node_config

    config = single_node_config(tmp_path / "d", max_value_size=1000)
    with dynamo.Node(config) as node, node.client() as c:
        for _ in range(4):
            c.put("s", "k", b"x" * 1000)  # blind: 4 siblings, the record limit is 4x
        with pytest.raises(dynamo.TooLargeError, match="context"):
            c.put("s", "k", b"y" * 1000)
        got = c.get("s", "k")
        assert len(got.values) == 4 and b"y" * 1000 not in got.values
        # Writing back with the context resolves them.
        c.put("s", "k", b"z", got.context)
        assert c.get("s", "k").values == [b"z"]


def test_oversize_and_empty_input_is_refused_and_changes_nothing(solo: dynamo.Node) -> None:
    with solo.client() as c:
        c.put("s", "k", "v")
        with pytest.raises(dynamo.BadRequestError, match="value"):
            c.put("s", "k", b"x" * (2 << 20))
        with pytest.raises(dynamo.BadRequestError, match="key"):
            c.put("s", b"k" * 100_000, "v")
        with pytest.raises(dynamo.BadRequestError, match="key"):
            c.get("s", b"")
        for bad in (0, 256, -1):
            with pytest.raises(dynamo.BadRequestError, match="from 1 to 255"):
                c.put("s", "k", "x", w=bad)
        with pytest.raises(dynamo.BadRequestError):
            c.get("s", "k", r=2)  # more than N=1
        assert c.get("s", "k").values == [b"v"]


def test_wrong_types_raise_type_error_and_change_nothing(solo: dynamo.Node) -> None:
    with solo.client() as c:
        c.put("s", "k", "v")
        for call in (
            lambda: c.put("s", 5, "v"),
            lambda: c.put("s", "k", 5),
            lambda: c.put("s", "k", None),
            lambda: c.put(b"s", "k", "v"),
            lambda: c.put("s", "k", "v", 12),
            lambda: c.get("s", ["k"]),
            lambda: c.get("s", "k", r="1"),
            lambda: c.put("s", "k", "v", w=True),
            lambda: c.delete("s", 1.5),
        ):
            with pytest.raises(TypeError):
                call()
        with pytest.raises(ValueError, match="NUL"):
            c.put("s\0x", "k", "v")
        assert c.get("s", "k").values == [b"v"]


def test_closed_client_raises_and_changes_nothing(solo: dynamo.Node) -> None:
    c = solo.client()
    c.put("s", "k", "v")
    c.close()
    for call in (
        lambda: c.get("s", "k"),
        lambda: c.put("s", "k", "x"),
        lambda: c.delete("s", "k"),
        lambda: c.status(),
        lambda: list(c.keys("s")),
    ):
        with pytest.raises(dynamo.BadRequestError, match="closed"):
            call()
    with pytest.raises(dynamo.BadRequestError, match="closed"):
        with c:
            pass
    with solo.client() as again:
        assert again.get("s", "k").values == [b"v"]


def test_sigstopped_owner_gives_a_clear_error_not_a_hang(tmp_path) -> None:
    with LocalCluster(3, tmp_path / "c", engine="memory", partitions=8) as cluster:
        with cluster.client(timeout=10) as setup:
            setup.put("default", "k", "v", w=3)
            assert setup.get("default", "k", r=3).values == [b"v"]
        cluster.kill(0, signal.SIGSTOP)
        try:
            # A short timeout for the call that must fail; the same client then still
            # reads at the store's R from the two live owners.
            with cluster.client(timeout=2) as c:
                with pytest.raises((dynamo.QuorumError, dynamo.TimeoutError)):
                    c.get("default", "k", r=3)
                assert c.get("default", "k").values == [b"v"]
        finally:
            cluster.kill(0, signal.SIGCONT)
