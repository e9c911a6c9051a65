"""The C API, loaded with cffi in ABI mode from the header the wheel carries.

The declarations are `include/dynamo.h` itself (its preprocessor lines dropped, integer
`#define`s kept), so the bindings cannot drift from the library they load: a function
whose signature changed in the header changes here too, and the API version of the
loaded library is checked against the header's `DYNAMO_API_VERSION` at import.
`DYNAMO_LIBRARY` (a path to libdynamo.so) overrides the packaged library, for
development; imported from the source tree of a checkout, the package uses the
repository's header and the library cargo built there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from cffi import FFI

NATIVE_DIR = Path(__file__).resolve().parent / "_native"


def _locate() -> tuple[Path, str]:
    """The header and the library to load: the ones packed in the wheel; or, when this
    is the source tree of a checkout (`bindings/python/dynamo`, nothing packed), the
    repository's header with the newest `libdynamo.so` cargo built (`DYNAMO_LIBRARY`
    overrides the library either way)."""
    override = os.environ.get("DYNAMO_LIBRARY")
    packed = NATIVE_DIR / "dynamo.h"
    if packed.is_file():
        return packed, override or str(NATIVE_DIR / "libdynamo.so")
    repo = Path(__file__).resolve().parents[3]
    header = repo / "include" / "dynamo.h"
    if header.is_file():
        if override:
            return header, override
        targets = [repo / "target"]
        if os.environ.get("CARGO_TARGET_DIR"):
            targets.insert(0, Path(os.environ["CARGO_TARGET_DIR"]))
        built = [t / profile / "libdynamo.so" for t in targets for profile in ("release", "debug")]
        built = [b for b in built if b.is_file()]
        if built:
            return header, str(max(built, key=lambda b: b.stat().st_mtime))
    raise ImportError(
        f"libdynamo is not built into this package ({NATIVE_DIR} is missing): install it "
        "with `pip install ./bindings/python` from a checkout (or, in a checkout, build it "
        "with `cargo build -p dynamo-ffi`, or set DYNAMO_LIBRARY to a libdynamo.so)"
    )


HEADER, LIBRARY = _locate()

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
    text = HEADER.read_text(encoding="utf-8")
    ffi = FFI()
    ffi.cdef(cdef_source(text))
    path = LIBRARY
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
