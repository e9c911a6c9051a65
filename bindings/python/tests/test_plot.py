"""Tests of ``dynamo.plot``: charts of ``dynamo bench`` reports.

The sample reports in ``data/`` are real outputs of the release binary:
``bench.json`` from ``dynamo bench --spawn 3 --keys 2000 --duration 3 --warmup 1
--concurrency 16 --mode both --json`` and ``bench_engines.json`` from ``dynamo bench
engines --quick --engines memory,rocksdb,sqlite,buffered:rocksdb --sizes 100,4KiB
--durability os,sync --put-ms 200 --get-ms 100 --baseline-ops 0 --json``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from dynamo import plot

DATA = Path(__file__).parent / "data"
BENCH = DATA / "bench.json"
ENGINES = DATA / "bench_engines.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_ROOT = "{http://www.w3.org/2000/svg}svg"

def needs_matplotlib(test: Any) -> Any:
    """Marks a test that draws. matplotlib is in the `test` extra: a missing one fails
    the test (never a silent skip)."""
    return test


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), data[:16]
    assert len(data) > 1000


def svg_text(path: Path) -> str:
    """Checks ``path`` is an SVG document and returns its text."""
    assert path.is_file() and path.stat().st_size > 1000
    text = path.read_text(encoding="utf-8")
    assert ET.fromstring(text).tag == SVG_ROOT
    return text


# --- the sample data --------------------------------------------------------------------


def test_samples_have_the_shapes_the_rust_cli_prints() -> None:
    runs = load(BENCH)
    assert isinstance(runs, list) and len(runs) == 2
    assert {r["options"]["coordination"] for r in runs} == {"client-driven", "server-driven"}
    for r in runs:
        for key in plot.RUN_KEYS:
            assert key in r
        for phase in ("total", "reads", "updates"):
            assert set(plot.PHASE_KEYS) <= set(r[phase])
    engines = load(ENGINES)
    assert {"rows", "baseline", "buffered_vs_sync", "elapsed_seconds"} <= set(engines)
    assert all(set(plot.ROW_KEYS) <= set(row) for row in engines["rows"])


# --- each kind to each format -----------------------------------------------------------


@needs_matplotlib
def test_cluster_report_to_png(tmp_path: Path) -> None:
    out = plot.plot(BENCH, tmp_path / "bench.png")
    assert out == tmp_path / "bench.png"
    assert isinstance(out, Path)
    assert_png(out)


@needs_matplotlib
def test_cluster_report_to_svg(tmp_path: Path) -> None:
    out = plot.plot(str(BENCH), tmp_path / "bench.svg", title="Workload A")
    text = svg_text(out)
    # Text stays text in the SVG (svg.fonttype none), so the labels can be checked.
    for label in ("Workload A", "client-driven", "server-driven", "Throughput", "p99.9"):
        assert label in text, label


@needs_matplotlib
def test_engines_report_to_png(tmp_path: Path) -> None:
    assert_png(plot.plot(ENGINES, tmp_path / "engines.png"))


@needs_matplotlib
def test_engines_report_to_svg(tmp_path: Path) -> None:
    text = svg_text(plot.plot(ENGINES, tmp_path / "engines.SVG"))
    for label in ("sqlite", "rocksdb", "memory", "4 KiB", "100 B", "Put throughput", "Get latency"):
        assert label in text, label


# --- several reports, parsed input ------------------------------------------------------


@needs_matplotlib
def test_two_cluster_reports_side_by_side(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    runs = load(BENCH)
    for r in runs:
        r["total"]["ops_per_sec"] *= 0.5
    other.write_text(json.dumps(runs), encoding="utf-8")
    text = svg_text(plot.plot([BENCH, other], tmp_path / "two.svg"))
    # Each run is labelled with its report's file name.
    for label in ("bench: client-driven", "other: server-driven"):
        assert label in text, label


@needs_matplotlib
def test_two_reports_with_the_same_file_name_get_distinct_labels(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    copy_ = tmp_path / "a" / "bench.json"
    copy_.write_text(BENCH.read_text(encoding="utf-8"), encoding="utf-8")
    text = svg_text(plot.plot([BENCH, copy_], tmp_path / "same.svg"))
    assert "bench (2): client-driven" in text


@needs_matplotlib
def test_two_engine_reports_and_mixed_kinds_in_one_figure(tmp_path: Path) -> None:
    assert_png(plot.plot([ENGINES, ENGINES], tmp_path / "engines2.png"))
    text = svg_text(plot.plot([BENCH, ENGINES], tmp_path / "mixed.svg", title="Both"))
    assert "client-driven" in text and "buffered:" in text


@needs_matplotlib
def test_parsed_dicts_and_lists_are_accepted(tmp_path: Path) -> None:
    engines = load(ENGINES)
    runs = load(BENCH)
    # A parsed engine report (a dict).
    assert_png(plot.plot(engines, tmp_path / "d1.png"))
    # A parsed `dynamo bench --json` array is one report, not a list of reports.
    text = svg_text(plot.plot(runs, tmp_path / "d2.svg"))
    assert "client-driven" in text and "report 1:" not in text
    # A single workload run, and a mixture of paths and dicts.
    assert_png(plot.plot([runs[0], ENGINES, engines], tmp_path / "d3.png"))
    # The input is not modified.
    assert engines == load(ENGINES) and runs == load(BENCH)


@needs_matplotlib
def test_advise_output_is_an_engine_report(tmp_path: Path) -> None:
    advise = {
        "report": load(ENGINES),
        "advice": {"rows": [], "sqlite_from": None, "built_in_sqlite_from": 65536},
    }
    assert_png(plot.plot(advise, tmp_path / "advise.png"))


@needs_matplotlib
def test_workloads_without_reads_or_updates(tmp_path: Path) -> None:
    write_only = copy.deepcopy(load(BENCH)[0])
    write_only["options"]["workload"] = "W"
    write_only["reads"] = dict.fromkeys(plot.PHASE_KEYS, 0)
    read_only = copy.deepcopy(load(BENCH)[1])
    read_only["options"]["workload"] = "C"
    read_only["updates"] = dict.fromkeys(plot.PHASE_KEYS, 0)
    read_only["errors"] = 3
    text = svg_text(plot.plot([[write_only, read_only]], tmp_path / "wc.svg"))
    assert "workload W, client-driven" in text
    assert "workload C, server-driven (3 errors)" in text


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chart.pdf", "chart", "chart.png.txt"])
def test_bad_suffix(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.png, \.svg") as e:
        plot.plot(BENCH, tmp_path / name)
    assert name in str(e.value)
    assert not (tmp_path / name).exists()


def test_json_that_is_not_a_report(tmp_path: Path) -> None:
    bad = tmp_path / "status.json"
    bad.write_text(json.dumps({"node": "node-1", "members": []}), encoding="utf-8")
    with pytest.raises(ValueError) as e:
        plot.plot(bad, tmp_path / "out.png")
    message = str(e.value)
    assert str(bad) in message
    assert "not a dynamo bench report" in message
    assert "options, total, reads, updates" in message
    assert "'rows'" in message
    assert "[members, node]" in message  # what was found
    assert not (tmp_path / "out.png").exists()


def test_malformed_json(tmp_path: Path) -> None:
    bad = tmp_path / "truncated.json"
    bad.write_text(BENCH.read_text(encoding="utf-8")[:200], encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON") as e:
        plot.plot(bad, tmp_path / "out.svg")
    assert str(bad) in str(e.value) and "line" in str(e.value)


def test_binary_file(tmp_path: Path) -> None:
    bad = tmp_path / "chart.png"
    bad.write_bytes(PNG_MAGIC + bytes(range(256)))
    with pytest.raises(ValueError, match="not a JSON text file"):
        plot.plot(bad, tmp_path / "out.svg")


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ([], "empty array"),
        ({"rows": []}, "no rows"),
        ({"rows": [{"engine": "memory"}]}, r"rows\[0\].*value_size, durability, put, get"),
        ([{"options": {}, "total": {}}], r"\[0\].*lacks key\(s\) reads, updates"),
        (
            [{"options": {}, "total": {"ops": 1}, "reads": {}, "updates": {}}],
            r"\[0\]\.total.*lacks key\(s\) ops_per_sec",
        ),
        ("hello", "found a string"),
    ],
)
def test_incomplete_reports_name_what_is_missing(
    tmp_path: Path, report: Any, expected: str
) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    with pytest.raises(ValueError, match=expected):
        plot.plot(path, tmp_path / "out.png")


def test_parsed_dict_that_is_not_a_report(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"report 1 \(parsed\): not a dynamo bench report"):
        plot.plot({"hello": "world"}, tmp_path / "out.png")


def test_no_reports_and_wrong_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no reports"):
        plot.plot([], tmp_path / "out.png")
    with pytest.raises(TypeError, match="int"):
        plot.plot([42], tmp_path / "out.png")  # type: ignore[list-item]


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ImportError, match=r"pip install 'libdynamo\[plot\]'"):
        plot.plot(BENCH, tmp_path / "out.png")


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys; from dynamo import plot; assert 'matplotlib' not in sys.modules"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- the command line -------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dynamo plot")
    plot.add_arguments(parser)
    return parser.parse_args(argv)


@needs_matplotlib
def test_run_writes_the_chart_and_prints_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.svg"
    args = parse([str(BENCH), str(ENGINES), "-o", str(out), "--title", "From the CLI"])
    assert args.title == "From the CLI"
    assert plot.run(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "From the CLI" in svg_text(out)


@needs_matplotlib
def test_run_reads_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(ENGINES.read_text(encoding="utf-8")))
    out = tmp_path / "stdin.png"
    assert plot.run(parse(["-", "--output", str(out)])) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert_png(out)


def test_run_reports_errors_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert plot.run(parse([str(BENCH), "-o", str(tmp_path / "x.gif")])) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and ".png, .svg" in captured.err

    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert plot.run(parse([str(bad), "-o", str(tmp_path / "x.png")])) == 2
    assert f"error: {bad}: invalid JSON" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO(ENGINES.read_text(encoding="utf-8")))
    assert plot.run(parse(["-", "-", "-o", str(tmp_path / "x.png")])) == 2
    assert "error: standard input ('-') can be read only once" in capsys.readouterr().err

    missing = tmp_path / "missing.json"
    assert plot.run(parse([str(missing), "-o", str(tmp_path / "x.png")])) == 1
    assert "missing.json" in capsys.readouterr().err


def test_arguments_are_required() -> None:
    with pytest.raises(SystemExit):
        parse(["report.json"])  # no -o
    with pytest.raises(SystemExit):
        parse(["-o", "out.png"])  # no report
