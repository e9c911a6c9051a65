"""The bindings cannot drift from the C header: the package's declarations are
`include/dynamo.h` itself, the loaded library has the header's API version, and every
function the header declares is used by the package (or listed here as not wrapped,
with the reason)."""

from __future__ import annotations

import re
from pathlib import Path

import dynamo
from dynamo import _native

REPO_HEADER = Path(__file__).resolve().parents[3] / "include" / "dynamo.h"
PACKAGE = Path(dynamo.__file__).resolve().parent

NOT_WRAPPED = {
    # Engines written in C register from C; Python code uses the built-in engines.
    "dynamo_engine_register": "C engines",
    "dynamo_engine_check": "C engines",
    # The async client completes futures by callback; blocking waits are the blocking client.
    "dynamo_future_wait": "callbacks instead",
    "dynamo_future_is_ready": "callbacks instead",
    # A test hook (test_errors.py calls it).
    "dynamo_debug_panic": "test hook",
}


def declared_functions(text: str) -> set[str]:
    return set(re.findall(r"^\w[\w\s\*]*?\b(dynamo_\w+)\(", text, re.M))


def test_packaged_header_is_the_repository_header() -> None:
    assert REPO_HEADER.is_file(), REPO_HEADER
    assert _native.HEADER.read_bytes() == REPO_HEADER.read_bytes()


def test_library_api_version_matches_the_header() -> None:
    declared = re.search(r"#define DYNAMO_API_VERSION (\d+)", REPO_HEADER.read_text())
    assert declared is not None
    assert dynamo.API_VERSION == int(declared.group(1))
    assert _native.lib.dynamo_api_version() == dynamo.API_VERSION


def test_every_declared_function_is_bound_and_used() -> None:
    functions = declared_functions(REPO_HEADER.read_text())
    assert len(functions) > 60
    for name in functions:
        assert hasattr(_native.lib, name), f"{name} is declared but not loadable"
    sources = "\n".join(p.read_text() for p in PACKAGE.glob("*.py"))
    sources += (Path(__file__).parent / "test_errors.py").read_text()
    unused = sorted(n for n in functions if n not in NOT_WRAPPED and f"lib.{n}(" not in sources)
    assert unused == [], f"header functions the package does not wrap: {unused}"


def test_cdef_keeps_constants_and_drops_preprocessor_lines() -> None:
    cdef = _native.cdef_source(REPO_HEADER.read_text())
    assert "#include" not in cdef and 'extern "C"' not in cdef
    assert "#define DYNAMO_ERR_TOO_LARGE 7" in cdef
    assert _native.lib.DYNAMO_ERR_TOO_LARGE == 7
