"""Shared fixtures: a three-node cluster of node processes for the module (the
package's own `dynamo.testing.local_cluster` fixture, so it is tested too), embedded
single-node stores, and helpers."""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import dynamo
from dynamo.testing import local_cluster  # noqa: F401  (registers the fixture)


@pytest.fixture
def key() -> str:
    """A key no other test uses."""
    return f"k-{uuid.uuid4().hex}"


def single_node_config(data_dir: Path, **store: Any) -> dict[str, Any]:
    """A one-node config (port 0) with store "s" (memory engine, N=R=W=1) and `store`'s
    settings on top."""
    st = {"name": "s", "engine": "memory", "n": 1, "r": 1, "w": 1}
    st.update(store)
    return {
        "node": {"name": "solo", "listen": "127.0.0.1:0", "data_dir": str(data_dir)},
        "cluster": {"partitions": 8, "members": [{"name": "solo", "address": "127.0.0.1:0"}]},
        "stores": [st],
    }


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[dynamo.Node]:
    """An embedded one-node cluster with store "s" (memory, N=R=W=1)."""
    with dynamo.Node(single_node_config(tmp_path / "data")) as node:
        yield node


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP address that accepts connections and never answers (for timeouts)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        s.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = s.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{s.getsockname()[1]}"
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        s.close()


@pytest.fixture
def dead_address() -> str:
    """A TCP address nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"
