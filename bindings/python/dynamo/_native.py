"""The C API, loaded with cffi in ABI mode from the header the wheel carries.

The declarations are `include/dynamo.h` itself (its preprocessor lines dropped, integer
`#define`s kept), so the bindings cannot drift from the library they load: a function
whose signature changed in the header changes here too, and the API version of the
loaded library is checked against the header's `DYNAMO_API_VERSION` at import.
`DYNAMO_LIBRARY` (a path to libdynamo.so) overrides the packaged library, for
development.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cffi import FFI

NATIVE_DIR = Path(__file__).resolve().parent / "_native"
HEADER = NATIVE_DIR / "dynamo.h"

_INT_DEFINE = re.compile(r"^#define\s+(\w+)\s+(-?\d+)\s*$")
_FUNCTION = re.compile(r"^\w[\w\s*]*?\b(dynamo_\w+)\(", re.M)


def cdef_source(header_text: str) -> str:
    """The header's declarations as cffi's `cdef` takes them: preprocessor directives
    and the C++-only `extern "C"` lines dropped, integer constants kept."""
    out = []
    skipping_cpp = False
    for line in header_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#ifdef __cplusplus"):
            skipping_cpp = True
            continue
        if skipping_cpp:
            if stripped.startswith("#endif"):
                skipping_cpp = False
            continue
        if stripped.startswith("#"):
            m = _INT_DEFINE.match(stripped)
            if m:
                out.append(f"#define {m.group(1)} {m.group(2)}")
            continue
        out.append(line)
    return "\n".join(out)


def _load() -> tuple[FFI, Any]:
    if not HEADER.is_file():
        raise ImportError(
            f"libdynamo's header is missing from the package ({HEADER}): reinstall "
            "libdynamo with `pip install ./bindings/python` from a checkout"
        )
    text = HEADER.read_text(encoding="utf-8")
    ffi = FFI()
    ffi.cdef(cdef_source(text))
    path = os.environ.get("DYNAMO_LIBRARY") or str(NATIVE_DIR / "libdynamo.so")
    try:
        lib = ffi.dlopen(path)
    except OSError as e:
        raise ImportError(
            f"cannot load libdynamo from {path}: {e}; reinstall libdynamo with "
            "`pip install ./bindings/python` from a checkout"
        ) from e
    missing = []
    for name in sorted(set(_FUNCTION.findall(text))):
        try:
            getattr(lib, name)
        except AttributeError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"{path} lacks functions the bindings' header declares ({', '.join(missing)}): "
            "it is older than the bindings; reinstall libdynamo"
        )
    expected = lib.DYNAMO_API_VERSION
    found = lib.dynamo_api_version()
    if found != expected:
        raise ImportError(
            f"{path} implements libdynamo C API version {found}, but the bindings were "
            f"built for version {expected}: reinstall libdynamo"
        )
    return ffi, lib


ffi, lib = _load()
