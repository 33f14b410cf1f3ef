// SPDX-License-Identifier: MPL-2.0
//! Where installed things are found without environment variables: model bundles by name and
//! the ONNX Runtime library.
//!
//! `meson install` puts the default bundle under `<datadir>/gst-qoe/bundles/` and the pinned
//! ONNX Runtime under `<libdir>/gst-qoe/`, and tells the build those two folders
//! (`GST_QOE_BUNDLE_DIR`, `GST_QOE_RUNTIME_DIR`), so an installed plugin needs no setting.
//! A build from a checkout also knows the checkout: its `models/` and the `.cache/venv` that
//! `pipelines/model-runtime.sh` fills, the last places looked.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The bundle `qoe-probe` scores with when given none.
pub const DEFAULT_BUNDLE: &str = "micro-vqa2-streaming";

/// Folders of bundles looked in first, `:`-separated, before the installed ones.
pub const BUNDLE_PATH_VAR: &str = "GST_QOE_BUNDLE_PATH";

/// The ONNX Runtime library to load; when set, the only place tried.
pub const RUNTIME_VAR: &str = "ORT_DYLIB_PATH";

/// Set by meson at build time (absolute, under the install prefix).
const INSTALLED_BUNDLES: Option<&str> = option_env!("GST_QOE_BUNDLE_DIR");
const INSTALLED_RUNTIME: Option<&str> = option_env!("GST_QOE_RUNTIME_DIR");

/// The checkout this crate was built from (`crates/qoe-model/../..`).
fn checkout() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.ancestors().nth(2).unwrap_or(crate_dir).to_owned()
}

/// The folders a bundle name is looked up in, in order: `GST_QOE_BUNDLE_PATH`'s entries, the
/// installed bundles, the checkout's `models/`.
pub fn bundle_search_path() -> Vec<PathBuf> {
    search_path(
        std::env::var_os(BUNDLE_PATH_VAR),
        INSTALLED_BUNDLES.map(PathBuf::from),
    )
}

fn search_path(variable: Option<OsString>, installed: Option<PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = variable
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    dirs.extend(installed);
    dirs.push(checkout().join("models"));
    dirs
}

/// The folder of bundle `spec`: a folder (anything with a `/`, or a folder that exists here)
/// as given, else a bundle name looked up on [`bundle_search_path`]. Whether the folder holds
/// a usable bundle is [`crate::bundle::Bundle::load`]'s to say.
pub fn resolve_bundle(spec: &str) -> Result<PathBuf> {
    resolve_in(spec, &bundle_search_path())
}

fn resolve_in(spec: &str, search: &[PathBuf]) -> Result<PathBuf> {
    let given = Path::new(spec);
    if spec.is_empty() {
        return Err(Error::Bundle("the bundle name is empty".into()));
    }
    if spec.contains('/') || given.is_dir() {
        return Ok(given.to_owned());
    }
    if let Some(dir) = search
        .iter()
        .map(|d| d.join(spec))
        .find(|d| d.join(crate::bundle::MANIFEST).is_file())
    {
        return Ok(dir);
    }
    let looked: Vec<String> = search.iter().map(|d| d.display().to_string()).collect();
    Err(Error::Bundle(format!(
        "no bundle named {spec} in {} (give a folder, or add one to {BUNDLE_PATH_VAR})",
        looked.join(", ")
    )))
}

/// One place ONNX Runtime may be loaded from, with what to call it in an error.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimePlace {
    /// Handed to `dlopen`: a file, or a bare name for the system's library path.
    pub library: PathBuf,
    pub described: String,
}

/// Where ONNX Runtime is looked for, in order, and why each place that had nothing was passed
/// over: `ORT_DYLIB_PATH` (when set, nothing else), the library installed with the plugin,
/// the system's library path, the checkout's `.cache/venv`.
pub fn runtime_places() -> (Vec<RuntimePlace>, Vec<String>) {
    runtime_places_from(
        std::env::var_os(RUNTIME_VAR),
        INSTALLED_RUNTIME.map(PathBuf::from),
        &checkout().join(".cache/venv/lib"),
    )
}

fn runtime_places_from(
    variable: Option<OsString>,
    installed: Option<PathBuf>,
    venv_lib: &Path,
) -> (Vec<RuntimePlace>, Vec<String>) {
    if let Some(path) = variable {
        let path = PathBuf::from(path);
        let described = format!("{RUNTIME_VAR}={}", path.display());
        return (
            vec![RuntimePlace {
                library: path,
                described,
            }],
            Vec::new(),
        );
    }
    let mut places = Vec::new();
    let mut passed = vec![format!("{RUNTIME_VAR} is not set")];
    match installed {
        Some(dir) => match newest_library(&dir) {
            Some(library) => places.push(RuntimePlace {
                described: library.display().to_string(),
                library,
            }),
            None => passed.push(format!("no libonnxruntime.so* in {}", dir.display())),
        },
        None => passed.push("not installed by meson (no <libdir>/gst-qoe)".into()),
    }
    places.push(RuntimePlace {
        library: PathBuf::from("libonnxruntime.so"),
        described: "libonnxruntime.so on the system's library path".into(),
    });
    match venv_runtime(venv_lib) {
        Some(library) => places.push(RuntimePlace {
            described: library.display().to_string(),
            library,
        }),
        None => passed.push(format!("no onnxruntime wheel in {}", venv_lib.display())),
    }
    (places, passed)
}

/// The ONNX Runtime that `pipelines/model-runtime.sh` installs in the checkout's
/// `.cache/venv`, if it is there.
pub fn checkout_runtime() -> Option<PathBuf> {
    venv_runtime(&checkout().join(".cache/venv/lib"))
}

/// The onnxruntime wheel's library in a venv's `lib` folder (python3.X is whichever Python
/// made the venv).
fn venv_runtime(venv_lib: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv_lib)
        .ok()?
        .flatten()
        .find_map(|d| newest_library(&d.path().join("site-packages/onnxruntime/capi")))
}

/// The `libonnxruntime.so*` of `dir` with the highest version (`.so` alone counts lowest).
fn newest_library(dir: &Path) -> Option<PathBuf> {
    let version = |p: &Path| -> Vec<u32> {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        name.trim_start_matches("libonnxruntime.so")
            .split('.')
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                && p.is_file()
        })
        .max_by_key(|p| version(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("qoe-locate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_are_looked_up_in_order_and_folders_taken_as_given() {
        let root = scratch("bundles");
        let (first, second) = (root.join("first"), root.join("second"));
        for dir in [&first, &second] {
            std::fs::create_dir_all(dir.join("b")).unwrap();
            std::fs::write(dir.join("b/bundle.json"), "{}").unwrap();
        }
        std::fs::create_dir_all(first.join("not-a-bundle")).unwrap();
        std::fs::create_dir_all(second.join("not-a-bundle")).unwrap();
        std::fs::write(second.join("not-a-bundle/bundle.json"), "{}").unwrap();
        let search = [first.clone(), second.clone()];
        assert_eq!(resolve_in("b", &search).unwrap(), first.join("b"));
        // A folder without a manifest is passed over for the next place.
        assert_eq!(
            resolve_in("not-a-bundle", &search).unwrap(),
            second.join("not-a-bundle")
        );
        assert_eq!(
            resolve_in("some/where", &search).unwrap(),
            Path::new("some/where")
        );
        let missing = resolve_in("nope", &search).unwrap_err().to_string();
        assert!(
            missing.contains("no bundle named nope in")
                && missing.contains(&first.display().to_string())
                && missing.contains(&second.display().to_string())
                && missing.contains(BUNDLE_PATH_VAR),
            "{missing}"
        );
        assert!(resolve_in("", &search).is_err());
    }

    #[test]
    fn the_variable_comes_before_the_installed_folder_and_the_checkout() {
        let dirs = search_path(
            Some("/a:/b::".into()),
            Some(PathBuf::from("/usr/share/gst-qoe/bundles")),
        );
        assert_eq!(
            dirs[..3],
            [
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                PathBuf::from("/usr/share/gst-qoe/bundles")
            ]
        );
        assert!(dirs[3].ends_with("models"));
        assert_eq!(search_path(None, None).len(), 1);
    }

    #[test]
    fn the_runtime_variable_is_the_only_place_when_set() {
        let (places, passed) = runtime_places_from(
            Some("/opt/ort/libonnxruntime.so".into()),
            Some(PathBuf::from("/nowhere")),
            Path::new("/nowhere"),
        );
        assert_eq!(places.len(), 1);
        assert_eq!(places[0].library, Path::new("/opt/ort/libonnxruntime.so"));
        assert!(places[0].described.starts_with("ORT_DYLIB_PATH="));
        assert!(passed.is_empty());
    }

    #[test]
    fn the_installed_library_comes_first_newest_version_then_system_then_checkout() {
        let root = scratch("runtime");
        let installed = root.join("lib/gst-qoe");
        std::fs::create_dir_all(&installed).unwrap();
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime_providers_shared.so",
        ] {
            std::fs::write(installed.join(name), b"").unwrap();
        }
        let capi = root.join("venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.31.1"), b"").unwrap();
        let (places, passed) =
            runtime_places_from(None, Some(installed.clone()), &root.join("venv/lib"));
        let libraries: Vec<_> = places.iter().map(|p| p.library.clone()).collect();
        assert_eq!(
            libraries,
            [
                installed.join("libonnxruntime.so.1.31.1"),
                PathBuf::from("libonnxruntime.so"),
                capi.join("libonnxruntime.so.1.31.1"),
            ]
        );
        assert_eq!(passed, ["ORT_DYLIB_PATH is not set"]);

        let (places, passed) =
            runtime_places_from(None, Some(root.join("empty")), &root.join("none"));
        assert_eq!(places.len(), 1);
        assert!(passed[1].contains("no libonnxruntime.so* in") && passed[1].contains("empty"));
        assert!(passed[2].contains("no onnxruntime wheel in"));
        let (_, passed) = runtime_places_from(None, None, &root.join("none"));
        assert!(passed[1].contains("not installed by meson"));
    }
}
