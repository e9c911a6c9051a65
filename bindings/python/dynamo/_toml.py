"""A small TOML writer for node configs given as dicts (tables, arrays of tables,
strings, numbers, booleans and lists of them): enough for `[node]`, `[cluster]`,
`[[cluster.members]]` and `[[stores]]`."""

from __future__ import annotations

import json
from typing import Any, Mapping


def _scalar(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if hasattr(v, "__fspath__"):
        return json.dumps(str(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x, where) for x in v) + "]"
    raise TypeError(f"config value at {where} has unsupported type {type(v).__name__}")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _emit(table: Mapping[str, Any], prefix: str, out: list[str]) -> None:
    for k, v in table.items():
        if not isinstance(k, str):
            raise TypeError(f"config keys must be str, not {type(k).__name__}")
        if not isinstance(v, Mapping) and not _is_table_array(v):
            out.append(f"{k} = {_scalar(v, prefix + k)}")
    for k, v in table.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.append(f"\n[{name}]")
            _emit(v, name + ".", out)
        elif _is_table_array(v):
            for item in v:
                out.append(f"\n[[{name}]]")
                _emit(item, name + ".", out)


def dumps(config: Mapping[str, Any]) -> str:
    """`config` as TOML text."""
    out: list[str] = []
    _emit(config, "", out)
    return "\n".join(out).strip() + "\n"
