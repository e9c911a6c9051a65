"""Builds the libdynamo wheel: the Python package plus the shared library it binds.

`build_py` runs `cargo build -p dynamo-ffi` in the repository this directory belongs to
(release profile unless `DYNAMO_PROFILE` names another), then copies `libdynamo.so` and
`include/dynamo.h` into `dynamo/_native/`. Cargo honours `CARGO_TARGET_DIR`, so a build
that shares the workspace's target directory and profile reuses everything compiled
there (RocksDB included) instead of compiling it again. `DYNAMO_LIBRARY=/path/libdynamo.so`
skips cargo and packs that library (it must come from the same checkout: the tests
compare its API version with the header's). Debug info is stripped from the packed copy
(`DYNAMO_KEEP_DEBUG=1` keeps it). The wheel is tagged `py3-none-<platform>`: the
bindings use cffi's ABI mode, so one wheel serves every Python 3 on the platform.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # newer setuptools carry it themselves
    from setuptools.command.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def _fail(message: str) -> None:
    sys.stderr.write(f"\nerror: {message}\n\n")
    raise SystemExit(1)


def _cargo_build() -> Path:
    if not (REPO / "ffi" / "Cargo.toml").is_file():
        _fail(
            f"{REPO} is not a libdynamo checkout (no ffi/Cargo.toml): build the wheel from "
            "the repository, or set DYNAMO_LIBRARY to a built libdynamo.so"
        )
    cargo = shutil.which("cargo")
    if cargo is None:
        _fail("cargo is not on PATH: install Rust 1.88+ (rustup), or set DYNAMO_LIBRARY")
    profile = os.environ.get("DYNAMO_PROFILE", "release")
    command = [
        cargo, "build", "-p", "dynamo-ffi", "--profile", profile,
        "--message-format=json-render-diagnostics",
    ]
    sys.stderr.write(f"building libdynamo: {' '.join(command)} (in {REPO})\n")
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        _fail(f"cargo build failed (exit {done.returncode}); its errors are above")
    library = None
    for line in done.stdout.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("reason") != "compiler-artifact":
            continue
        if message.get("target", {}).get("name") != "dynamo":
            continue
        for f in message.get("filenames", []):
            if f.endswith(".so"):
                library = Path(f)
    if library is None or not library.is_file():
        _fail("cargo build succeeded but reported no libdynamo.so")
    return library


def _library() -> Path:
    given = os.environ.get("DYNAMO_LIBRARY")
    if given:
        path = Path(given)
        if not path.is_file():
            _fail(f"DYNAMO_LIBRARY={given} is not a file")
        return path
    return _cargo_build()


class BuildWithLibrary(build_py):
    """`build_py` that also packs libdynamo.so and dynamo.h into `dynamo/_native/`."""

    def run(self) -> None:
        super().run()
        header = REPO / "include" / "dynamo.h"
        if not header.is_file():
            _fail(f"{header} is missing: build from a libdynamo checkout")
        native = Path(self.build_lib) / "dynamo" / "_native"
        native.mkdir(parents=True, exist_ok=True)
        target = native / "libdynamo.so"
        if target.exists():
            target.unlink()
        shutil.copyfile(_library(), target)
        target.chmod(0o755)
        shutil.copyfile(header, native / "dynamo.h")
        strip = shutil.which("strip")
        if strip and not os.environ.get("DYNAMO_KEEP_DEBUG"):
            subprocess.run([strip, "--strip-debug", str(target)], check=True)
        # The bindings dlopen() the library into a running Python: a library built with
        # initial-exec TLS (flag STATIC_TLS) fails there once the process's spare
        # static TLS is used up, even if it loads into a fresh one.
        readelf = shutil.which("readelf")
        if readelf:
            dynamic = subprocess.run(
                [readelf, "-d", str(target)], capture_output=True, text=True, check=True
            ).stdout
            if "STATIC_TLS" in dynamic:
                _fail(
                    f"{target} uses initial-exec TLS (STATIC_TLS): it cannot be reliably "
                    "loaded with dlopen; build libdynamo with local-dynamic TLS"
                )
        loaded = subprocess.run(
            [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(target)],
            capture_output=True,
            text=True,
        )
        if loaded.returncode != 0:
            _fail(f"the built libdynamo.so cannot be loaded with dlopen: {loaded.stderr.strip()}")


class PlatformWheel(bdist_wheel):
    """A wheel for this platform (it carries a shared library), any Python 3."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel})
