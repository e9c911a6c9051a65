"""`LocalCluster`: a cluster of node processes on 127.0.0.1 for development, tests and
experiments. Each node is a Python process running libdynamo's embedded node
(`python -m dynamo node --config FILE`), so nothing but this package is needed.

Layout of its directory: `DIR/<node>/node.toml`, `DIR/<node>/data/`,
`DIR/<node>/node.log`, and `DIR/cluster.json` (nodes, addresses, pids) which
`python -m dynamo cluster down --dir DIR` uses to stop a detached cluster.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _toml
from .client import Client

MAX_NODES = 100
"""The most nodes a local cluster may have."""


_LOWEST_PORT = 20000


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class PortLease:
    """A port reserved for one node: free to bind when taken, and held by an advisory
    lock on `<tmp>/libdynamo-ports/<port>.lock` (shared with the Rust `LocalCluster`)
    until `release()`. Ports come from below the OS's ephemeral range: a port the OS
    hands out for `bind(0)` may go to another socket while its node restarts."""

    def __init__(self, port: int, lock: Any) -> None:
        self.port = port
        self._lock = lock

    def release(self) -> None:
        """Lets other clusters take the port."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def lease_ports(count: int) -> list[PortLease]:
    """Reserves `count` distinct ports on 127.0.0.1 that nothing listens on (see
    `PortLease`). Falls back to ports the OS picks when the range below the ephemeral
    ports is too small."""
    import fcntl
    import random

    high = _ephemeral_low()
    if high < _LOWEST_PORT + 1000:
        held = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
        try:
            for s in held:
                s.bind(("127.0.0.1", 0))
            return [PortLease(s.getsockname()[1], None) for s in held]
        finally:
            for s in held:
                s.close()
    lock_dir = Path(tempfile.gettempdir()) / "libdynamo-ports"
    lock_dir.mkdir(parents=True, exist_ok=True)
    span = high - _LOWEST_PORT
    start = random.randrange(span)
    leases: list[PortLease] = []
    for step in range(span):
        if len(leases) == count:
            break
        port = _LOWEST_PORT + (start + step) % span
        lock = open(lock_dir / f"{port}.lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", port))
        except OSError:
            lock.close()
            continue
        leases.append(PortLease(port, lock))
    if len(leases) < count:
        for lease in leases:
            lease.release()
        raise OSError(f"only {len(leases)} of {count} free ports between {_LOWEST_PORT} and {high} on 127.0.0.1")
    return leases


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class NodeProcess:
    """One node of a `LocalCluster`: its name, address, files and process."""

    name: str
    address: str
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether its process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class LocalCluster:
    """`nodes` node processes on 127.0.0.1 (free ports from below the OS's ephemeral
    range, held until `stop()`, unless `base_port` is given), with one store `store` (engine `engine`, N = min(3, nodes), R and W a
    majority of N, unless given) and data under `directory` (a new temporary
    directory when None, removed by `stop(remove=True)`). `start()` returns once every
    node accepts connections. Use it as a context manager to always stop the nodes.
    """

    def __init__(
        self,
        nodes: int = 3,
        directory: str | os.PathLike[str] | None = None,
        *,
        engine: str = "rocksdb",
        store: str = "default",
        n: int | None = None,
        r: int | None = None,
        w: int | None = None,
        partitions: int = 64,
        base_port: int | None = None,
        python: str | None = None,
    ) -> None:
        if isinstance(nodes, bool) or not isinstance(nodes, int):
            raise TypeError("nodes must be an int")
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"a local cluster has 1 to {MAX_NODES} nodes, not {nodes}")
        if base_port is not None and not 1 <= base_port <= 65536 - nodes:
            raise ValueError(f"base_port {base_port} with {nodes} nodes needs ports past 65535")
        self.size = nodes
        self._temporary = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="dynamo-cluster-")).resolve()
        self.engine = engine
        self.store = store
        self.n = n if n is not None else min(3, nodes)
        self.r = r if r is not None else self.n // 2 + 1
        self.w = w if w is not None else self.n // 2 + 1
        self.partitions = partitions
        self.base_port = base_port
        self.python = python or sys.executable
        self.nodes: list[NodeProcess] = []
        self._ports: list[PortLease] = []

    @property
    def addresses(self) -> list[str]:
        """Every node's `host:port`."""
        return [n.address for n in self.nodes]

    def _configs(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        members = []
        self._release_ports()
        if not self.base_port:
            self._ports = lease_ports(self.size)
        for i in range(1, self.size + 1):
            port = self.base_port + i - 1 if self.base_port else self._ports[i - 1].port
            members.append({"name": f"node-{i}", "address": f"127.0.0.1:{port}"})
        self.nodes = []
        for m in members:
            node_dir = self.directory / m["name"]
            node_dir.mkdir(parents=True, exist_ok=True)
            config: dict[str, Any] = {
                "node": {"name": m["name"], "listen": m["address"], "data_dir": str(node_dir / "data")},
                "cluster": {"partitions": self.partitions, "members": members},
                "stores": [
                    {"name": self.store, "engine": self.engine, "n": self.n, "r": self.r, "w": self.w}
                ],
            }
            path = node_dir / "node.toml"
            path.write_text(_toml.dumps(config))
            self.nodes.append(NodeProcess(m["name"], m["address"], path, node_dir / "node.log"))

    def _spawn(self, node: NodeProcess) -> None:
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(
                [self.python, "-m", "dynamo", "node", "--config", str(node.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self, node: NodeProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process is not None and node.process.poll() is not None:
                raise RuntimeError(
                    f"{node.name} exited with status {node.process.returncode} while starting; "
                    f"its log ({node.log_path}) ends:\n{node.log_tail()}"
                )
            if _accepts(node.address):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"{node.name} did not accept connections on {node.address} within {timeout:.0f} s; "
            f"its log ({node.log_path}) ends:\n{node.log_tail()}"
        )

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Writes the configs, starts every node and waits until each accepts
        connections (stopping them all if one fails). Returns the cluster."""
        self._configs()
        try:
            for node in self.nodes:
                self._spawn(node)
            for node in self.nodes:
                self._wait_ready(node, timeout)
        except BaseException:
            self.stop()
            raise
        self.write_manifest()
        return self

    def write_manifest(self) -> None:
        """Writes `DIR/cluster.json`: the nodes, their addresses, pids and logs."""
        manifest = {
            "store": self.store,
            "nodes": [
                {
                    "name": n.name,
                    "address": n.address,
                    "pid": n.process.pid if n.running and n.process else None,
                    "config": str(n.config_path),
                    "log": str(n.log_path),
                }
                for n in self.nodes
            ],
        }
        (self.directory / "cluster.json").write_text(json.dumps(manifest, indent=2) + "\n")

    def node(self, which: int | str) -> NodeProcess:
        """A node by index (from 0) or name."""
        if isinstance(which, int):
            return self.nodes[which]
        for n in self.nodes:
            if n.name == which:
                return n
        raise KeyError(f"no node named {which!r}: the cluster has {', '.join(self.nodes_names())}")

    def nodes_names(self) -> list[str]:
        """Every node's name."""
        return [n.name for n in self.nodes]

    def kill(self, which: int | str, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` (default SIGKILL) to a node and, unless it is SIGSTOP, reaps it."""
        node = self.node(which)
        if node.process is None or node.process.poll() is not None:
            return
        node.process.send_signal(sig)
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            node.process.wait()
        self.write_manifest()

    def restart(self, which: int | str, timeout: float = 60.0) -> None:
        """Starts a stopped or killed node again, with its data, and waits until it
        accepts connections."""
        node = self.node(which)
        if node.running:
            raise RuntimeError(f"{node.name} is still running")
        self._spawn(node)
        self._wait_ready(node, timeout)
        self.write_manifest()

    def client(self, **options: Any) -> Client:
        """A `Client` for the cluster (options as for `Client`)."""
        return Client(self.addresses, **options)

    def stop(self, timeout: float = 15.0, remove: bool = False) -> None:
        """Stops every node (SIGTERM, then SIGKILL after `timeout`). With `remove`, and
        a directory the cluster created itself, deletes its data."""
        for node in self.nodes:
            p = node.process
            if p is not None and p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            p = node.process
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.nodes and self.directory.exists():
            self.write_manifest()
        self._release_ports()
        if remove and self._temporary:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)

    def _release_ports(self) -> None:
        for lease in self._ports:
            lease.release()
        self._ports = []

    def __enter__(self) -> LocalCluster:
        if not self.nodes:
            self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop(remove=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie, exited but not yet
    reaped by its parent, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def stop_manifest(directory: str | os.PathLike[str], timeout: float = 15.0) -> list[str]:
    """Stops the nodes a detached cluster in `directory` recorded in its cluster.json
    (SIGTERM, SIGKILL after `timeout`). Returns the names of the nodes it stopped."""
    path = Path(directory) / "cluster.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: is a cluster running in {directory}?") from None
    stopped = []
    pids = []
    for n in manifest.get("nodes", []):
        pid = n.get("pid")
        if not isinstance(pid, int):
            continue
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
            pids.append((n["name"], pid))
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    for name, pid in pids:
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stopped.append(name)
    for n in manifest.get("nodes", []):
        n["pid"] = None
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return stopped
