"""`dynamo.AsyncClient`: the same calls as coroutines, many in flight, completed by the
C library's futures; errors, cancellation and close."""

from __future__ import annotations

import asyncio
import threading

import pytest

import dynamo
from dynamo.cluster import LocalCluster


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.mark.parametrize("coordination", ["client", "server"])
def test_every_call(local_cluster: LocalCluster, key: str, coordination: str) -> None:
    async def go() -> None:
        async with dynamo.AsyncClient(local_cluster.addresses, coordination=coordination) as c:
            assert (await c.get("default", key)).siblings == []
            ctx = await c.put("default", key, "one")
            assert (await c.get("default", key)).values == [b"one"]
            await c.put("default", key, b"two", ctx, w=3)
            got = await c.get("default", key, r=3)
            assert got.values == [b"two"]
            await c.delete("default", key, got.context)
            assert (await c.get("default", key)).siblings == []
            status = await c.status()
            assert len(status["members"]) == 3
            keys = [k async for k in c.keys("default", page_size=5)]
            assert len(keys) == len(set(keys))
            page = await c.keys_page("default", page_size=3)
            assert len(page.keys) <= 3

    run(go())


def test_many_in_flight_use_no_thread_per_request(local_cluster: LocalCluster, key: str) -> None:
    async def go() -> None:
        async with dynamo.AsyncClient(local_cluster.addresses) as c:
            before = threading.active_count()
            puts = [c.put("default", f"{key}-{i}", f"v{i}") for i in range(300)]
            contexts = await asyncio.gather(*puts)
            assert len(set(contexts)) == 300
            gets = await asyncio.gather(*(c.get("default", f"{key}-{i}") for i in range(300)))
            assert [g.values for g in gets] == [[f"v{i}".encode()] for i in range(300)]
            # The library's own threads complete the futures: Python starts none.
            assert threading.active_count() == before

    run(go())


def test_errors_raise_in_the_awaiting_task(local_cluster: LocalCluster, key: str) -> None:
    async def go() -> None:
        async with dynamo.AsyncClient(local_cluster.addresses) as c:
            with pytest.raises(dynamo.UnknownStoreError, match="nope"):
                await c.get("nope", key)
            with pytest.raises(dynamo.BadContextError):
                await c.put("default", key, "v", "bogus")
            with pytest.raises(dynamo.BadRequestError):
                await c.put("default", key, b"x" * (2 << 20))
            with pytest.raises(TypeError):
                await c.put("default", 1, "v")  # type: ignore[arg-type]
            assert (await c.get("default", key)).siblings == []

    run(go())


def test_cancelled_calls_leave_the_client_usable_and_nothing_pending(
    local_cluster: LocalCluster, key: str
) -> None:
    from dynamo.aio import _PENDING

    async def go() -> None:
        async with dynamo.AsyncClient(local_cluster.addresses) as c:
            tasks = [asyncio.ensure_future(c.put("default", f"{key}-{i}", "v")) for i in range(50)]
            await asyncio.sleep(0)
            for t in tasks[::2]:
                t.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for i, o in enumerate(outcomes):
                if i % 2:
                    assert isinstance(o, str) and o, o  # a context
                else:
                    assert isinstance(o, asyncio.CancelledError)
            # Each cancelled call still completes in the library and is released.
            deadline = asyncio.get_running_loop().time() + 30
            while _PENDING and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            assert not _PENDING
            assert (await c.get("default", f"{key}-1")).values == [b"v"]
            await c.put("default", f"{key}-new", "after")
            assert (await c.get("default", f"{key}-new")).values == [b"after"]

    run(go())


def test_closed_async_client(local_cluster: LocalCluster) -> None:
    async def go() -> None:
        c = dynamo.AsyncClient(local_cluster.addresses)
        await c.put("default", "closed-k", "v")
        await c.close()
        await c.close()
        assert c.closed
        with pytest.raises(dynamo.BadRequestError, match="closed"):
            await c.get("default", "closed-k")
        with pytest.raises(dynamo.BadRequestError, match="closed"):
            await c.put("default", "closed-k", "x")

    run(go())


def test_unreachable_cluster(dead_address: str) -> None:
    async def go() -> None:
        async with dynamo.AsyncClient(dead_address, timeout=1) as c:
            with pytest.raises(dynamo.UnavailableError):
                await c.put("default", "k", "v")

    run(go())
