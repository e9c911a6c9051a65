"""Charts of ``dynamo bench`` reports (PNG or SVG, drawn with matplotlib).

Two kinds of report are understood, told apart by their keys:

* the cluster workload benchmark, ``dynamo bench --json``: a JSON array with one object
  per coordination mode run, each with ``options``, ``total``, ``reads`` and ``updates``
  (the last three are phase summaries: ``ops``, ``ops_per_sec``, ``p50_us``, ``p99_us``,
  ``p999_us``, ``max_us``). Charted as throughput per operation type and latency
  percentiles (p50, p99, p99.9, max) per operation type.
* the engine benchmark, ``dynamo bench engines --json``: an object whose ``rows`` each
  have ``engine``, ``value_size``, ``durability``, ``put`` and ``get`` (phase summaries).
  The ``--advise --json`` output, ``{"report": ..., "advice": ...}``, is accepted too.
  Charted as put and get throughput and latency per engine, durability and value size.

Several reports of the same kind share one set of axes, their bars side by side. Reports
of both kinds give one figure with a row of charts per kind.

matplotlib is imported only when a chart is drawn, so ``import dynamo`` does not need it
(install it with ``pip install 'libdynamo[plot]'``). From the command line::

    python -m dynamo plot bench.json [more.json ...] -o bench.png [--title TITLE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:  # pragma: no cover - typing only, never imported at run time
    from matplotlib.axes import Axes
    from matplotlib.figure import SubFigure

__all__ = ["SUFFIXES", "add_arguments", "plot", "run"]

#: Output file suffixes :func:`plot` accepts, and the format each one selects.
SUFFIXES: dict[str, str] = {".png": "png", ".svg": "svg"}

#: One report: a path to its JSON file (``"-"`` reads standard input), a parsed engine
#: report (a dict), one parsed workload run (a dict), or a parsed ``dynamo bench --json``
#: array (a list of run dicts).
ReportSource: TypeAlias = "str | os.PathLike[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]]"

CLUSTER = "cluster"
ENGINES = "engines"

# Keys the charts read. A phase summary is `PhaseSummary` in src/bench/latency.rs.
PHASE_KEYS = ("ops", "ops_per_sec", "p50_us", "p99_us", "p999_us", "max_us")
RUN_KEYS = ("options", "total", "reads", "updates")
ROW_KEYS = ("engine", "value_size", "durability", "put", "get")
# (phase key in a workload run, label)
OPERATIONS = (("total", "all"), ("reads", "read"), ("updates", "update"))
# (phase key, label)
PERCENTILES = (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"), ("max_us", "max"))

_EXPECTED = (
    "expected the output of `dynamo bench --json` (a JSON array of runs, each an object "
    "with keys options, total, reads, updates) or of `dynamo bench engines --json` (an "
    "object with key 'rows', each row with keys engine, value_size, durability, put, get)"
)
_INSTALL_HINT = "plotting needs matplotlib: pip install 'libdynamo[plot]'"
_DPI = 130


@dataclass
class _Report:
    """One loaded, validated report."""

    label: str
    kind: str  # CLUSTER or ENGINES
    items: list[Mapping[str, Any]]  # workload runs, or engine rows


# ---------------------------------------------------------------------------------------
# Loading and validation (no matplotlib needed).


def _describe(data: Any) -> str:
    """A short description of a JSON value for error messages."""
    if isinstance(data, Mapping):
        keys = ", ".join(sorted(str(k) for k in data)[:12])
        return f"an object with keys [{keys}]" if data else "an empty object"
    if isinstance(data, list):
        return f"an array of {len(data)} item(s)" if data else "an empty array"
    return {str: "a string", bool: "a boolean", type(None): "null"}.get(type(data), "a number")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_phase(phase: Any, where: str) -> None:
    if not isinstance(phase, Mapping):
        raise ValueError(f"{where}: expected a phase summary object, found {_describe(phase)}")
    missing = [k for k in PHASE_KEYS if k not in phase]
    if missing:
        raise ValueError(
            f"{where}: phase summary lacks key(s) {', '.join(missing)} "
            f"(expected {', '.join(PHASE_KEYS)})"
        )
    bad = [k for k in PHASE_KEYS if not _is_number(phase[k])]
    if bad:
        raise ValueError(f"{where}: {', '.join(bad)} must be number(s)")


def _check_object(obj: Any, keys: Sequence[str], where: str, what: str) -> None:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected {what} (an object), found {_describe(obj)}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(
            f"{where}: {what} lacks key(s) {', '.join(missing)} (expected {', '.join(keys)})"
        )


def _is_run(x: Any) -> bool:
    return isinstance(x, Mapping) and "options" in x and "total" in x


def _is_run_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and bool(x) and all(_is_run(i) for i in x)


def _classify(data: Any, name: str, label: str) -> _Report:
    """Validates ``data`` as a bench report and tells its kind."""
    if isinstance(data, Mapping) and isinstance(data.get("report"), Mapping) and "advice" in data:
        data = data["report"]  # `dynamo bench engines --advise --json`
    if isinstance(data, Mapping) and "rows" in data:
        rows = data["rows"]
        if not isinstance(rows, list):
            raise ValueError(f"{name}: 'rows' must be an array, found {_describe(rows)}")
        if not rows:
            raise ValueError(f"{name}: the engine benchmark report has no rows to plot")
        for i, row in enumerate(rows):
            _check_object(row, ROW_KEYS, f"{name}: rows[{i}]", "an engine benchmark row")
            _check_phase(row["put"], f"{name}: rows[{i}].put")
            _check_phase(row["get"], f"{name}: rows[{i}].get")
        return _Report(label, ENGINES, list(rows))
    if _is_run(data):
        data = [data]  # one run, not wrapped in an array
    if isinstance(data, (list, tuple)) and data and any(_is_run(i) for i in data):
        for i, run_ in enumerate(data):
            _check_object(run_, RUN_KEYS, f"{name}: [{i}]", "a workload run")
            if not isinstance(run_["options"], Mapping):
                raise ValueError(f"{name}: [{i}].options must be an object")
            for key, _ in OPERATIONS:
                _check_phase(run_[key], f"{name}: [{i}].{key}")
        return _Report(label, CLUSTER, list(data))
    raise ValueError(f"{name}: not a dynamo bench report: {_EXPECTED}; found {_describe(data)}")


def _load(source: Any, index: int, stdin_used: list[bool]) -> _Report:
    """Reads and validates one report source."""
    if isinstance(source, (str, os.PathLike)):
        if os.fspath(source) == "-":
            if stdin_used[0]:
                raise ValueError("standard input ('-') can be read only once")
            stdin_used[0] = True
            name, label = "<stdin>", "stdin"
            text = sys.stdin.read()
        else:
            path = Path(source)
            name, label = str(path), path.stem
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{name}: not a JSON text file ({e.reason}); {_EXPECTED}") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{name}: invalid JSON ({e.msg} at line {e.lineno}, column {e.colno}); {_EXPECTED}"
            ) from e
        return _classify(data, name, label)
    if isinstance(source, Mapping) or _is_run_list(source):
        label = f"report {index + 1}"
        return _classify(source, f"{label} (parsed)", label)
    raise TypeError(
        f"report {index + 1}: expected a path, a parsed report dict or a list of workload "
        f"runs, got {type(source).__name__}"
    )


def _sources(reports: Any) -> list[Any]:
    """The list of report sources in ``reports`` (one source or an iterable of them)."""
    if isinstance(reports, (str, os.PathLike, Mapping)) or _is_run_list(reports):
        return [reports]
    if isinstance(reports, Iterable):
        items = list(reports)
        if not items:
            raise ValueError("no reports given: pass at least one bench report")
        return items
    raise TypeError(
        f"reports: expected a path, a dict or a list of them, got {type(reports).__name__}"
    )


def _unique_labels(reports: list[_Report]) -> None:
    """Makes report labels distinct (two files may share a stem)."""
    seen: dict[str, int] = {}
    for r in reports:
        n = seen.get(r.label, 0) + 1
        seen[r.label] = n
        if n > 1:
            r.label = f"{r.label} ({n})"


# ---------------------------------------------------------------------------------------
# Formatting.


def _format_us(us: float) -> str:
    """Microseconds as ``850 µs``, ``12.3 ms``, ``1.2 s``."""
    if not us or us <= 0 or not math.isfinite(us):
        return "0"
    if us < 1_000:
        return f"{us:.3g} µs"
    if us < 1_000_000:
        return f"{us / 1_000:.3g} ms"
    return f"{us / 1_000_000:.3g} s"


def _format_rate(ops: float) -> str:
    """Operations per second as ``950``, ``12.3k``, ``1.2M``."""
    if not math.isfinite(ops) or ops <= 0:
        return "0"
    if ops < 1_000:
        return f"{ops:.3g}"
    if ops < 1_000_000:
        return f"{ops / 1_000:.3g}k"
    return f"{ops / 1_000_000:.3g}M"


def _format_size(n: Any) -> str:
    """Bytes as ``100 B``, ``4 KiB``, ``1 MiB`` (as the Rust CLI prints them)."""
    if not isinstance(n, int):
        return str(n)
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


def _format_seconds(d: Any) -> str | None:
    """A serde ``Duration`` (``{"secs", "nanos"}``) or a number of seconds, as ``3 s``."""
    if isinstance(d, Mapping) and _is_number(d.get("secs")):
        secs = d["secs"] + (d.get("nanos") or 0) / 1e9
    elif _is_number(d):
        secs = float(d)
    else:
        return None
    return f"{secs:g} s"


def _positive(x: float) -> float:
    """``x`` when it can be drawn on a log axis, else NaN (a missing bar)."""
    return x if _is_number(x) and x > 0 and math.isfinite(x) else math.nan


# ---------------------------------------------------------------------------------------
# Drawing.


def _bar_positions(n_groups: int, n_series: int, k: int) -> tuple[list[float], float]:
    width = 0.8 / max(n_series, 1)
    return [g - 0.4 + width * (k + 0.5) for g in range(n_groups)], width


def _nice(x: float, up: bool) -> float:
    """The nearest 1, 2 or 5 times a power of ten at or above (``up``) or below ``x``."""
    decade = math.pow(10.0, math.floor(math.log10(x)))
    if up:
        step = next(m for m in (1.0, 2.0, 5.0, 10.0) if decade * m >= x * (1 - 1e-9))
    else:
        step = next(m for m in (5.0, 2.0, 1.0) if decade * m <= x * (1 + 1e-9))
    return decade * step


def _log_limits(ax: Axes, values: Iterable[float], headroom: float = 1.0) -> None:
    """Log y limits at 1, 2 or 5 times a power of ten around ``values``."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if not finite:
        return
    lo = _nice(min(finite) / 1.5, up=False)  # the shortest bar still shows
    hi = _nice(max(finite) * headroom, up=True)
    if hi / lo < 10:  # at least one decade, so a labelled decade tick is in view
        hi = _nice(lo * 10, up=True)
    ax.set_ylim(lo, hi)


def _style_log_axis(ax: Axes, fmt: Callable[[float], str]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
    lo, hi = ax.get_ylim()
    if hi / max(lo, 1e-12) <= 1e3:  # few decades: label 2x and 5x too
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.grid(axis="y", which="minor", alpha=0.12)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="y", which="major", alpha=0.35)
    ax.set_axisbelow(True)


def _annotate(
    ax: Axes, bars: Any, values: list[float], fmt: Callable[[float], str], vertical: bool
) -> None:
    for bar, v in zip(bars, values, strict=True):
        if not math.isfinite(v):
            continue
        ax.annotate(
            fmt(v),
            (bar.get_x() + bar.get_width() / 2, v),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=6.5,
            rotation=90 if vertical else 0,
        )


def _cluster_options_text(runs: list[Mapping[str, Any]]) -> str:
    """What the runs have in common, e.g. ``workload A, zipfian keys, 16 in flight``."""

    def common(key: str) -> Any:
        values = [r["options"].get(key) for r in runs]
        return values[0] if values and all(v == values[0] for v in values) else None

    parts = []
    if (w := common("workload")) is not None:
        parts.append(f"workload {w}")
    if (d := common("distribution")) is not None:
        parts.append(f"{d} keys")
    keys, size = common("keys"), common("value_size")
    if keys is not None:
        parts.append(
            f"{keys:,} records" + (f" of {_format_size(size)}" if size is not None else "")
        )
    if (c := common("concurrency")) is not None:
        parts.append(f"{c} in flight")
    if (rate := common("rate")) is not None:
        parts.append(f"target {_format_rate(rate)} ops/s")
    if (dur := _format_seconds(common("duration"))) is not None:
        parts.append(f"{dur} per run")
    nodes = common("nodes")
    if isinstance(nodes, list):
        parts.append(f"{len(nodes)} node" + ("" if len(nodes) == 1 else "s"))
    return ", ".join(parts)


def _cluster_series(reports: list[_Report]) -> list[tuple[str, Mapping[str, Any]]]:
    """(legend label, run) for every run of every cluster report."""
    runs = [(r, i, run_) for r in reports for i, run_ in enumerate(r.items)]
    workloads = {str(run_["options"].get("workload")) for _, _, run_ in runs}
    out = []
    for r, i, run_ in runs:
        opts = run_["options"]
        label = str(opts.get("coordination") or f"run {i + 1}")
        if len(workloads) > 1:
            label = f"workload {opts.get('workload')}, {label}"
        if len(reports) > 1:
            label = f"{r.label}: {label}"
        errors = run_.get("errors")
        if isinstance(errors, int) and errors > 0:
            label += f" ({errors:,} errors)"
        out.append((label, run_))
    seen: dict[str, int] = {}
    for i, (label, run_) in enumerate(out):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            out[i] = (f"{label} #{seen[label]}", run_)
    return out


def _cluster_panels(reports: list[_Report]) -> int:
    """Panels in the cluster row: throughput plus one latency panel per operation type."""
    series = [run_ for r in reports for run_ in r.items]
    ops = [k for k, _ in OPERATIONS if any(run_[k]["ops"] > 0 for run_ in series)]
    return 1 + max(len(ops), 1)


def _draw_cluster(subfig: SubFigure, reports: list[_Report]) -> None:
    """Throughput per operation type, and latency percentiles per operation type."""
    series = _cluster_series(reports)
    runs = [run_ for _, run_ in series]
    ops = [(k, name) for k, name in OPERATIONS if any(run_[k]["ops"] > 0 for run_ in runs)]
    if not ops:
        ops = [OPERATIONS[0]]
    axes = subfig.subplots(1, 1 + len(ops), squeeze=False)[0]
    colors = _colors(len(series))
    many = len(series) > 2

    ax = axes[0]
    for k, (label, run_) in enumerate(series):
        xs, width = _bar_positions(len(ops), len(series), k)
        values = [run_[key]["ops_per_sec"] if run_[key]["ops"] > 0 else math.nan for key, _ in ops]
        bars = ax.bar(xs, values, width * 0.92, label=label, color=colors[k])
        _annotate(ax, bars, values, _format_rate, vertical=many)
    ax.set_xticks(range(len(ops)), [name for _, name in ops])
    ax.set_title("Throughput")
    ax.set_ylabel("operations per second")
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _format_rate(v)))
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.35)
    ax.set_axisbelow(True)

    all_values: list[float] = []
    for ax, (key, name) in zip(axes[1:], ops, strict=True):
        for k, (label, run_) in enumerate(series):
            phase = run_[key]
            xs, width = _bar_positions(len(PERCENTILES), len(series), k)
            values = [_positive(phase[p]) if phase["ops"] > 0 else math.nan for p, _ in PERCENTILES]
            all_values += values
            bars = ax.bar(xs, values, width * 0.92, label=label, color=colors[k])
            _annotate(ax, bars, values, _format_us, vertical=True)
        ax.set_xticks(range(len(PERCENTILES)), [p for _, p in PERCENTILES])
        ax.set_title(f"{'All operations' if key == 'total' else name.capitalize() + 's'}: latency")
        ax.set_xlabel("percentile")
    for ax in axes[1:]:
        _log_limits(ax, all_values, headroom=2.5)  # room for the vertical value labels
        _style_log_axis(ax, _format_us)
    axes[1].set_ylabel("latency (log scale)")

    context = _cluster_options_text(runs)
    subfig.suptitle(
        "dynamo bench: cluster workload" + (f" ({context})" if context else ""),
        fontsize=11,
    )
    handles, labels = axes[0].get_legend_handles_labels()
    subfig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(len(labels), 4),
        fontsize=8,
        frameon=False,
    )


def _config_label(row: Mapping[str, Any]) -> tuple[str, str]:
    durability = str(row["durability"])
    return (str(row["engine"]), durability)


def _draw_engines(subfig: SubFigure, reports: list[_Report]) -> None:
    """Put and get throughput and latency per engine configuration and value size."""
    configs: list[tuple[str, str]] = []
    sizes: list[Any] = []
    for r in reports:
        for row in r.items:
            if (c := _config_label(row)) not in configs:
                configs.append(c)
            if row["value_size"] not in sizes:
                sizes.append(row["value_size"])
    sizes.sort(key=lambda s: (not isinstance(s, int), s if isinstance(s, int) else 0, str(s)))
    series = [(r, size) for r in reports for size in sizes]
    colors = _colors(len(sizes))  # a colour per value size, a hatch per report
    hatches = ["", "//", "..", "xx", "\\\\", "oo"]
    axes = subfig.subplots(2, 2, squeeze=False)
    # "buffered:rocksdb" is long: break it after the colon; durability goes below.
    group_labels = [e.replace(":", ":\n") + ("" if d == "none" else f"\n{d}") for e, d in configs]

    for col, phase_key in enumerate(("put", "get")):
        tput, lat = axes[0][col], axes[1][col]
        tput_values: list[float] = []
        lat_values: list[float] = []
        for k, (r, size) in enumerate(series):
            rows = {(_config_label(row)): row for row in r.items if row["value_size"] == size}
            phases = [rows[c][phase_key] if c in rows else None for c in configs]
            xs, width = _bar_positions(len(configs), len(series), k)
            label = _format_size(size) if len(reports) == 1 else f"{r.label}: {_format_size(size)}"
            style = {
                "color": colors[sizes.index(size)],
                "hatch": hatches[reports.index(r) % len(hatches)],
            }
            rates = [
                _positive(p["ops_per_sec"]) if p and p["ops"] > 0 else math.nan for p in phases
            ]
            tput.bar(
                xs, rates, width * 0.92, label=label, edgecolor="white", linewidth=0.4, **style
            )
            tput_values += rates
            p50 = [_positive(p["p50_us"]) if p and p["ops"] > 0 else math.nan for p in phases]
            p99 = [_positive(p["p99_us"]) if p and p["ops"] > 0 else math.nan for p in phases]
            p999 = [_positive(p["p999_us"]) if p and p["ops"] > 0 else math.nan for p in phases]
            lat.bar(xs, p50, width * 0.92, label=label, edgecolor="white", linewidth=0.4, **style)
            lat.vlines(xs, p50, p999, color="black", linewidth=0.8)
            lat.plot(
                xs, p999, linestyle="none", marker="_", color="black", markersize=max(3, 40 * width)
            )
            lat.plot(xs, p99, linestyle="none", marker="o", color="black", markersize=2.5)
            lat_values += p50 + p999
        _log_limits(tput, tput_values, headroom=1.5)
        _style_log_axis(tput, _format_rate)
        tput.set_title(f"{phase_key.capitalize()} throughput")
        tput.set_ylabel("operations per second (log scale)")
        _log_limits(lat, lat_values, headroom=1.3)
        _style_log_axis(lat, _format_us)
        lat.set_title(f"{phase_key.capitalize()} latency (bar p50, dot p99, line top p99.9)")
        lat.set_ylabel("latency (log scale)")
        for ax in (tput, lat):
            ax.set_xticks(range(len(configs)), group_labels, fontsize=8)
            ax.set_xlim(-0.6, len(configs) - 0.4)

    subfig.suptitle(
        "dynamo bench engines: closed-loop puts and gets per engine and durability", fontsize=11
    )
    handles, labels = axes[0][0].get_legend_handles_labels()
    subfig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(len(labels), 8),
        fontsize=8,
        frameon=False,
        title="value size",
        title_fontsize=8,
    )


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _engine_width(reports: list[_Report]) -> float:
    configs = {_config_label(row) for r in reports for row in r.items}
    sizes = {row["value_size"] for r in reports for row in r.items}
    bars = len(sizes) * len(reports)
    per_group = max(0.9, 0.2 * bars)
    return min(max(len(configs) * per_group + 1.2, 5.5), 14.0)


def _render(reports: list[_Report], output: Path, fmt: str, title: str | None) -> None:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e

    kinds = [k for k in (CLUSTER, ENGINES) if any(r.kind == k for r in reports)]
    by_kind = {k: [r for r in reports if r.kind == k] for k in kinds}
    widths, heights = [], []
    for k in kinds:
        if k == CLUSTER:
            widths.append(3.7 * _cluster_panels(by_kind[k]))
            heights.append(4.6)
        else:
            widths.append(2 * _engine_width(by_kind[k]))
            heights.append(8.0)
    extra = 0.5 if title else 0.0
    with matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": "libdynamo", "font.size": 9}
    ):
        # The Agg canvas renders off screen; no pyplot, so no global backend or figure
        # registry of the caller is touched.
        fig = Figure(figsize=(max(widths), sum(heights) + extra), layout="constrained")
        FigureCanvasAgg(fig)
        if title:
            fig.suptitle(title, fontsize=13, fontweight="bold")
        subfigs = fig.subfigures(len(kinds), 1, squeeze=False, height_ratios=heights)[:, 0]
        for subfig, k in zip(subfigs, kinds, strict=True):
            (_draw_cluster if k == CLUSTER else _draw_engines)(subfig, by_kind[k])
        metadata = {"Date": None} if fmt == "svg" else {"Software": "libdynamo (matplotlib)"}
        fig.savefig(output, format=fmt, dpi=_DPI, metadata=metadata)


# ---------------------------------------------------------------------------------------
# Public API.


def plot(
    reports: ReportSource | Iterable[ReportSource],
    output: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Draws a chart of one or more ``dynamo bench`` reports and writes it to ``output``.

    Args:
        reports: one report or an iterable of them. A report is a path to the JSON
            printed by ``dynamo bench --json`` or ``dynamo bench engines --json``
            (``"-"`` reads standard input), or the same JSON already parsed: a dict (an
            engine report, an ``--advise`` report or a single workload run) or a list of
            workload-run dicts (a whole ``dynamo bench --json`` array).
        output: the file to write; its suffix picks the format, ``.png`` or ``.svg``.
        title: a title above the whole figure.

    Cluster reports are drawn as throughput per operation type (all, read, update) and
    latency percentiles (p50, p99, p99.9, max) per operation type; engine reports as put
    and get throughput and latency (p50 bars, p99 dots, p99.9 lines) per engine and
    durability, one bar per value size. Several reports of a kind share axes, their bars
    side by side; reports of both kinds give one row of charts per kind.

    Returns:
        ``output`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: the suffix is not ``.png`` or ``.svg``; a report is not valid JSON
            or not a bench report (the message names the file and the keys expected).
        ImportError: matplotlib is not installed (``pip install 'libdynamo[plot]'``).
        TypeError: a report is neither a path nor parsed JSON.
        OSError: a report cannot be read or the output cannot be written.
    """
    out = Path(output)
    fmt = SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        accepted = ", ".join(SUFFIXES)
        raise ValueError(
            f"{out}: unsupported output format {out.suffix or '(no suffix)'!r}; "
            f"use a file name ending in one of: {accepted}"
        )
    stdin_used = [False]
    loaded = [_load(s, i, stdin_used) for i, s in enumerate(_sources(reports))]
    _unique_labels(loaded)
    _render(loaded, out, fmt, title)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``plot`` command's arguments to ``parser`` (for :func:`run`)."""
    parser.add_argument(
        "reports",
        nargs="+",
        metavar="REPORT.json",
        help="JSON from `dynamo bench --json` or `dynamo bench engines --json`; '-' reads "
        "standard input. Several reports of a kind are drawn side by side.",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.png",
        help="the chart to write: .png or .svg",
    )
    parser.add_argument("--title", default=None, help="a title above the chart")


def run(args: argparse.Namespace) -> int:
    """Runs ``python -m dynamo plot``: writes the chart and prints its path.

    Returns 0 on success, 2 when a report or the output name is unusable (the reason goes
    to standard error as ``error: ...``), 1 when matplotlib is missing or a file cannot
    be read or written.
    """
    try:
        path = plot(args.reports, args.output, title=args.title)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ImportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dynamo.plot``: the ``plot`` command on its own."""
    parser = argparse.ArgumentParser(
        prog="python -m dynamo plot", description="Charts of `dynamo bench` reports."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
