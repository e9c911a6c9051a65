"""`python -m dynamo <command>`: node, cluster, load, export, check, plot."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence


def _nodes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nodes", required=True, help="comma-separated host:port of any nodes of the cluster"
    )
    parser.add_argument("--store", default="default", help="the store (default: %(default)s)")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def cmd_node(args: argparse.Namespace) -> int:
    from .node import Node

    signal.signal(signal.SIGTERM, _interrupt)
    node = Node(Path(args.config))
    print(f"listening on {node.address}", flush=True)
    try:
        _wait_for_signal()
    finally:
        node.stop()
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from .cluster import LocalCluster, stop_manifest

    if args.action == "down":
        if not args.dir:
            raise ValueError("cluster down needs --dir: the directory of the cluster to stop")
        stopped = stop_manifest(args.dir)
        print(f"stopped {len(stopped)} node(s): {', '.join(stopped) or 'none was running'}")
        return 0
    # A SIGTERM while the nodes start interrupts the start, which stops those started.
    signal.signal(signal.SIGTERM, _interrupt)
    cluster = LocalCluster(
        args.nodes,
        args.dir,
        engine=args.engine,
        base_port=args.base_port,
        partitions=args.partitions,
    )
    detached = False
    try:
        cluster.start()
        print(f"directory: {cluster.directory}")
        for n in cluster.nodes:
            print(f"{n.name}  {n.address}  log {n.log_path}")
        print(f"nodes: {','.join(cluster.addresses)}")
        if args.detach:
            print(f"detached; stop with: python -m dynamo cluster down --dir {cluster.directory}")
            detached = True
            return 0
        print("Ctrl-C stops the cluster", flush=True)
        _wait_for_signal()
    finally:
        if not detached:
            # A cluster in a directory of its own making is scratch: removed with it.
            cluster.stop(remove=args.dir is None)
    return 0


def _open_in(path: str) -> object:
    return sys.stdin if path == "-" else open(path, encoding="utf-8")


def cmd_load(args: argparse.Namespace) -> int:
    from . import tools

    if args.file != "-":
        # A file is validated whole first, so a malformed line writes nothing.
        with open(args.file, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    tools.parse_record(line, f"{args.file}: line {number}")
    stream = _open_in(args.file)
    try:
        report = tools.load(
            args.nodes,
            args.store,
            stream,  # type: ignore[arg-type]
            concurrency=args.concurrency,
            blind=args.blind,
            stop_on_error=not args.keep_going,
        )
    finally:
        if stream is not sys.stdin:
            stream.close()  # type: ignore[attr-defined]
    print(json.dumps({"keys": report.keys, "writes": report.writes, "errors": report.errors}), file=sys.stderr if args.file == "-" else sys.stdout)
    return 1 if report.errors else 0


def _validate_keys_file(path: str) -> None:
    """Reads a keys file through once, so a malformed line fails before any work."""
    from . import tools

    with open(path, encoding="utf-8") as f:
        for _ in tools.read_keys(f):
            pass


def cmd_export(args: argparse.Namespace) -> int:
    from . import tools

    if args.keys:
        _validate_keys_file(args.keys)
    keys_file = open(args.keys, encoding="utf-8") if args.keys else None
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        keys = tools.read_keys(keys_file) if keys_file else None
        report = tools.export(args.nodes, args.store, out, keys=keys, concurrency=args.concurrency)
    finally:
        if out is not sys.stdout:
            out.close()
        if keys_file:
            keys_file.close()
    print(f"exported {report.keys} key(s) ({report.skipped} deleted skipped)", file=sys.stderr)
    if report.unanswered:
        print(
            f"warning: {', '.join(report.unanswered)} did not answer the key listing: keys "
            "only they hold are missing",
            file=sys.stderr,
        )
    if report.unconfirmed:
        shown = ", ".join(k.decode("utf-8", "backslashreplace") for k in report.unconfirmed[:10])
        print(
            f"warning: {len(report.unconfirmed)} key(s) read empty and could not be read at "
            f"R=N (a replica is down or slow), not exported: {shown}",
            file=sys.stderr,
        )
    return 0 if report.complete else 1


def cmd_check(args: argparse.Namespace) -> int:
    from . import tools

    if args.keys and args.keys != "-":
        _validate_keys_file(args.keys)
    keys_file = _open_in(args.keys) if args.keys else None
    try:
        keys = tools.read_keys(keys_file) if keys_file else None  # type: ignore[arg-type]
        report = tools.check(args.nodes, args.store, keys=keys, concurrency=args.concurrency)
    finally:
        if keys_file is not None and keys_file is not sys.stdin:
            keys_file.close()  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(report.json()))
    else:
        for p in report.problems:
            key = p.key.decode("utf-8", "backslashreplace")
            if p.error:
                print(f"{key}: cannot read at R=N: {p.error}")
                continue
            parts = []
            if p.siblings > 1:
                parts.append(f"{p.siblings} siblings")
            if p.stale_replicas:
                parts.append(f"replicas disagreed (repaired): {', '.join(p.stale_replicas)}")
            print(f"{key}: {'; '.join(parts)}")
        summary = report.json()
        if report.unanswered:
            print(f"not checked: keys only {', '.join(report.unanswered)} hold (they did not answer the listing)")
        print(
            f"checked {report.keys} key(s): {summary['with_siblings']} with siblings, "
            f"{summary['with_stale_replicas']} with replicas that disagreed, "
            f"{summary['errors']} unreadable"
        )
    return 0 if report.ok else 1


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plot

    return plot.run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m dynamo`."""
    parser = argparse.ArgumentParser(
        prog="python -m dynamo", description="libdynamo tools (Python bindings over the C API)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("node", help="run one node in this process until SIGTERM/Ctrl-C")
    p.add_argument("--config", required=True, help="the node's TOML config file")
    p.set_defaults(run=cmd_node)

    p = sub.add_parser("cluster", help="start (up) or stop (down) a local cluster of node processes")
    p.add_argument("action", nargs="?", default="up", choices=["up", "down"],
                   help="up (default): start the nodes; down: stop a detached cluster")
    p.add_argument("--dir", help="directory for configs, data and logs (up: default a new "
                   "temporary directory; down: required)")
    p.add_argument("--nodes", type=int, default=3, help="number of nodes (default: %(default)s)")
    p.add_argument("--engine", default="rocksdb", help="engine of the store 'default' (default: %(default)s)")
    p.add_argument("--base-port", type=int, help="first port (default: ports the OS picks)")
    p.add_argument("--partitions", type=int, default=64, help="ring partitions (default: %(default)s)")
    p.add_argument("--detach", action="store_true", help="leave the nodes running and return")
    p.set_defaults(run=cmd_cluster)

    p = sub.add_parser("load", help="write JSON Lines records into a store")
    _nodes(p)
    p.add_argument("file", help="JSON Lines file, or - for stdin")
    p.add_argument("--concurrency", type=int, default=64, help="writes in flight (default: %(default)s)")
    p.add_argument("--blind", action="store_true", help="do not read keys first (empty store)")
    p.add_argument("--keep-going", action="store_true", help="report failed writes instead of stopping")
    p.set_defaults(run=cmd_load)

    p = sub.add_parser("export", help="write a store's keys, siblings and contexts as JSON Lines")
    _nodes(p)
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--keys", help="export only the keys in this file (one per line, or JSON Lines)")
    p.add_argument("--concurrency", type=int, default=64, help="reads in flight (default: %(default)s)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("check", help="read keys at R=N; report siblings and disagreeing replicas")
    _nodes(p)
    p.add_argument("--keys", help="check only these keys (file, or - for stdin); default: every key")
    p.add_argument("--concurrency", type=int, default=64, help="reads in flight (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_check)

    from . import plot

    p = sub.add_parser("plot", help="chart the JSON of `dynamo bench` / `dynamo bench engines`")
    plot.add_arguments(p)
    p.set_defaults(run=cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `python -m dynamo` with `argv`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import DynamoError

    try:
        code: int = args.run(args)
        return code
    except DynamoError as e:
        print(f"error: {type(e).__name__}: {e.message}", file=sys.stderr)
        return 1
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
