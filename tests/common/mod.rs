// SPDX-License-Identifier: MPL-2.0
//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gst::prelude::*;

pub const MS: u64 = 1_000_000;

pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().unwrap();
        gstqoe::plugin_register_static().expect("register plugin");
    });
}

/// A folder holding only the plugin cargo built for this test run, for `GST_PLUGIN_PATH`.
/// `cargo test` leaves the cdylib in `deps/`, next to the test binary, among other
/// libraries that GStreamer should not try to load.
pub fn plugin_dir() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let built = [deps.join("libgstqoe.so"), deps.parent().unwrap().join("libgstqoe.so")]
        .into_iter()
        .find(|p| p.exists())
        .expect("libgstqoe.so built by cargo next to the test binary");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&built, dir.join("libgstqoe.so")).unwrap();
    dir
}

/// Runs `pipeline` to EOS and returns the `qoe-*` element messages in bus order.
pub fn run(description: &str) -> Vec<gst::Structure> {
    init();
    let pipeline = gst::parse::launch(description).unwrap().downcast::<gst::Pipeline>().unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut messages = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name().starts_with("qoe-")) {
                    messages.push(s.to_owned());
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("pipeline error: {} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    messages
}

pub fn named<'a>(messages: &'a [gst::Structure], name: &str) -> Vec<&'a gst::Structure> {
    messages.iter().filter(|s| s.name() == name).collect()
}

pub fn t(s: &gst::Structure, field: &str) -> u64 {
    s.get::<u64>(field).unwrap_or_else(|e| panic!("{field} in {s}: {e}"))
}

pub fn assert_near(what: &str, got: u64, want: u64, tolerance: u64) {
    assert!(got.abs_diff(want) <= tolerance, "{what}: got {got} ns, want {want} ns ± {tolerance}");
}

