//! Project tasks, run with `cargo run -p xtask -- <task>`:
//!
//! - `header [--check]`: regenerates `include/dynamo.h` from `ffi/` with cbindgen
//!   (`--check`: fails if the committed header is stale instead of writing it);
//! - `install --prefix DIR [--profile release|debug] [--no-build] [--lib-dir DIR]`:
//!   builds `libdynamo` (unless `--no-build`) and installs `lib/libdynamo.so`,
//!   `lib/libdynamo.a`, `include/dynamo.h`, `include/dynamo.hpp` and
//!   `lib/pkgconfig/dynamo.pc` under DIR, so that
//!   `cc app.c $(pkg-config --cflags --libs dynamo)` builds a program that runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The header cbindgen makes from `ffi/` and `ffi/cbindgen.toml`.
pub fn generate_header(root: &Path) -> Result<String> {
    let ffi = root.join("ffi");
    let config = cbindgen::Config::from_file(ffi.join("cbindgen.toml"))
        .map_err(|e| anyhow::anyhow!("reading ffi/cbindgen.toml: {e}"))?;
    let bindings = cbindgen::Builder::new()
        .with_crate(&ffi)
        .with_config(config)
        .generate()
        .context("cbindgen could not generate the header from ffi/")?;
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).context("cbindgen wrote invalid UTF-8")
}

fn header(check: bool) -> Result<()> {
    let root = workspace();
    let fresh = generate_header(&root)?;
    let path = root.join("include").join("dynamo.h");
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != fresh {
            bail!(
                "{} is stale: regenerate it with `cargo run -p xtask -- header` and commit it",
                path.display()
            );
        }
        println!("{} is up to date", path.display());
    } else {
        std::fs::create_dir_all(path.parent().unwrap_or(&root))?;
        std::fs::write(&path, fresh).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The `dynamo.pc` for an install under `prefix`. The run path lets programs built with
/// `pkg-config --libs dynamo` find `libdynamo.so` under any prefix without
/// `LD_LIBRARY_PATH`; `Libs.private` lists what the static library needs.
pub fn pkg_config(prefix: &Path, version: &str) -> String {
    format!(
        "prefix={}\n\
         exec_prefix=${{prefix}}\n\
         libdir=${{exec_prefix}}/lib\n\
         includedir=${{prefix}}/include\n\
         \n\
         Name: dynamo\n\
         Description: libdynamo, a Dynamo (SOSP 2007) key-value store: client, embedded node, storage engines\n\
         Version: {version}\n\
         Cflags: -I${{includedir}}\n\
         Libs: -L${{libdir}} -ldynamo -Wl,-rpath,${{libdir}}\n\
         Libs.private: -lstdc++ -lpthread -ldl -lm\n",
        prefix.display()
    )
}

fn install(args: &[String]) -> Result<()> {
    let mut prefix = None;
    let mut profile = "release".to_owned();
    let mut build = true;
    let mut lib_dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prefix" => prefix = it.next().map(PathBuf::from),
            "--profile" => profile = it.next().cloned().unwrap_or_default(),
            "--no-build" => build = false,
            "--lib-dir" => lib_dir = it.next().map(PathBuf::from),
            other => bail!("install: unknown argument {other:?}"),
        }
    }
    let Some(prefix) = prefix else {
        bail!("install: --prefix DIR is required (for example --prefix /usr/local)");
    };
    if profile != "release" && profile != "debug" {
        bail!("install: --profile is release or debug, not {profile:?}");
    }
    let root = workspace();
    if build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root).args(["build", "-p", "dynamo-ffi"]);
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build -p dynamo-ffi")?;
        if !status.success() {
            bail!("cargo build -p dynamo-ffi failed ({status})");
        }
    }
    let from = lib_dir.unwrap_or_else(|| target_dir(&root).join(&profile));
    let prefix = if prefix.is_absolute() {
        prefix
    } else {
        std::env::current_dir()?.join(prefix)
    };
    let lib = prefix.join("lib");
    let include = prefix.join("include");
    let pc_dir = lib.join("pkgconfig");
    for d in [&lib, &include, &pc_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for name in ["libdynamo.so", "libdynamo.a"] {
        let src = from.join(name);
        if !src.exists() {
            bail!(
                "{} does not exist: build it first (cargo build -p dynamo-ffi{})",
                src.display(),
                if profile == "release" {
                    " --release"
                } else {
                    ""
                }
            );
        }
        // Copy to a temporary name and rename, so a running program keeps its mapping.
        let tmp = lib.join(format!(".{name}.tmp"));
        std::fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
        std::fs::rename(&tmp, lib.join(name))?;
    }
    for name in ["dynamo.h", "dynamo.hpp"] {
        std::fs::copy(root.join("include").join(name), include.join(name))
            .with_context(|| format!("copying include/{name}"))?;
    }
    let version = env!("CARGO_PKG_VERSION");
    std::fs::write(pc_dir.join("dynamo.pc"), pkg_config(&prefix, version))?;
    println!(
        "installed libdynamo {version} under {}\n  \
         build with: cc app.c $(PKG_CONFIG_PATH={} pkg-config --cflags --libs dynamo)",
        prefix.display(),
        pc_dir.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("header") => header(args.iter().any(|a| a == "--check")),
        Some("install") => install(&args[1..]),
        _ => bail!(
            "usage: cargo run -p xtask -- header [--check]\n       \
             cargo run -p xtask -- install --prefix DIR [--profile release|debug] [--no-build] [--lib-dir DIR]"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI fails when include/dynamo.h is not what cbindgen makes from ffi/ now.
    #[test]
    fn committed_header_is_fresh() {
        let root = workspace();
        let fresh = generate_header(&root).expect("cbindgen runs");
        let committed = std::fs::read_to_string(root.join("include/dynamo.h"))
            .expect("include/dynamo.h exists");
        assert!(
            committed == fresh,
            "include/dynamo.h is stale: run `cargo run -p xtask -- header` and commit it"
        );
    }

    /// Issue rule: every export's doc comment states ownership and thread-safety.
    #[test]
    fn every_export_documents_ownership_and_threads() {
        let header = std::fs::read_to_string(workspace().join("include/dynamo.h")).expect("header");
        let mut comment = String::new();
        let mut missing = Vec::new();
        let mut exports = 0;
        for line in header.lines() {
            let t = line.trim_start();
            if t.starts_with('*') || t.starts_with("/*") {
                continue; // the conventions block, not a declaration
            }
            if let Some(c) = t.strip_prefix("//") {
                comment.push_str(c);
                comment.push(' ');
                continue;
            }
            if let Some(name) = t
                .split('(')
                .next()
                .and_then(|head| head.split_whitespace().last())
                .map(|n| n.trim_start_matches('*'))
                .filter(|n| n.starts_with("dynamo_") && t.contains(&format!("{n}(")))
            {
                exports += 1;
                let c = comment.to_lowercase();
                let threads = c.contains("thread");
                let ownership = [
                    "owns",
                    "owned",
                    "ownership",
                    "borrows",
                    "belongs",
                    "copied",
                    "nothing to free",
                    "free",
                ]
                .iter()
                .any(|w| c.contains(w));
                if !(threads && ownership) {
                    missing.push(format!(
                        "{name} ({}{})",
                        if threads { "" } else { "no thread-safety " },
                        if ownership { "" } else { "no ownership" }
                    ));
                }
            }
            if !t.is_empty() {
                comment.clear();
            }
        }
        assert!(exports > 40, "found only {exports} exports in the header");
        assert!(missing.is_empty(), "exports without the rule: {missing:#?}");
    }

    #[test]
    fn pkg_config_points_at_the_prefix() {
        let pc = pkg_config(Path::new("/opt/dyn"), "1.2.3");
        assert!(pc.contains("prefix=/opt/dyn\n"), "{pc}");
        assert!(pc.contains("Libs: -L${libdir} -ldynamo"), "{pc}");
        assert!(pc.contains("Version: 1.2.3"), "{pc}");
    }
}
