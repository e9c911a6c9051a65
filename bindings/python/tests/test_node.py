"""`dynamo.Node`: an embedded node started from TOML text, a file or a dict."""

from __future__ import annotations

from pathlib import Path

import pytest

import dynamo
from conftest import single_node_config
from dynamo import _toml


def test_start_from_dict_text_and_file(tmp_path: Path) -> None:
    config = single_node_config(tmp_path / "a")
    with dynamo.Node(config) as node:
        host, port = node.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert node.running
        status = node.status()
        assert status["node"] == "solo" and status["unhealthy"] is None
        with node.client() as c:
            c.put("s", "k", "from dict")
            assert c.get("s", "k").values == [b"from dict"]
    assert not node.running

    text = _toml.dumps(single_node_config(tmp_path / "b"))
    with dynamo.Node(text) as node, node.client() as c:
        c.put("s", "k", "from text")
        assert c.get("s", "k").values == [b"from text"]

    path = tmp_path / "node.toml"
    path.write_text(_toml.dumps(single_node_config(tmp_path / "c", engine="rocksdb")))
    with dynamo.Node(path) as node, node.client() as c:
        c.put("s", "k", "durable")
    # Restarted on the same data (the path given as a str), the value is still there.
    with dynamo.Node(str(path)) as node, node.client() as c:
        assert c.get("s", "k").values == [b"durable"]


def test_two_embedded_nodes_form_a_cluster(tmp_path: Path) -> None:
    import socket

    ports = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    members = [{"name": f"n{i}", "address": f"127.0.0.1:{p}"} for i, p in enumerate(ports)]
    nodes = []
    try:
        for m in members:
            nodes.append(
                dynamo.Node(
                    {
                        "node": {"name": m["name"], "listen": m["address"], "data_dir": str(tmp_path / m["name"])},
                        "cluster": {"partitions": 8, "members": members},
                        "stores": [{"name": "s", "engine": "memory", "n": 2, "r": 1, "w": 2}],
                    }
                )
            )
        with dynamo.Client([n.address for n in nodes]) as c:
            c.put("s", "k", "v")
            nodes[0].stop()
            assert c.get("s", "k").values == [b"v"]
    finally:
        for n in nodes:
            n.stop()


def test_bad_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(dynamo.BadRequestError):
        dynamo.Node("this is not toml = = =")
    with pytest.raises(dynamo.BadRequestError):
        dynamo.Node({"node": {"name": "x", "listen": "127.0.0.1:0", "data_dir": str(tmp_path)}, "stores": [{"name": "s", "n": 0}]})
    with pytest.raises(TypeError):
        dynamo.Node(42)  # type: ignore[arg-type]
    with pytest.raises((dynamo.BadRequestError, dynamo.UnavailableError)):
        dynamo.Node(tmp_path / "missing.toml")


def test_a_taken_port_is_refused(tmp_path: Path) -> None:
    with dynamo.Node(single_node_config(tmp_path / "a")) as first:
        config = single_node_config(tmp_path / "b")
        config["node"]["listen"] = first.address
        with pytest.raises(dynamo.UnavailableError):
            dynamo.Node(config)


def test_stop_twice_and_use_after_stop(tmp_path: Path) -> None:
    node = dynamo.Node(single_node_config(tmp_path / "a"))
    node.stop()
    node.stop()
    with pytest.raises(dynamo.BadRequestError, match="closed"):
        node.status()
    with pytest.raises(dynamo.BadRequestError, match="closed"):
        node.client()
