// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! gst-qoe: live video quality-of-experience monitoring for GStreamer.
//!
//! The plugin provides one element, `qoemonitor`, which watches decoded video, lets every
//! frame pass untouched, and reports stalls, content freezes, running statistics and quality
//! scores.
//!
//! This crate owns the element ([`qoemonitor`]) and the Prometheus endpoint and textfile
//! ([`metrics`]): everything that touches GStreamer. The model-free checks live in
//! `qoe-core` and the models in `qoe-model`, which must never depend on this crate; the
//! `qoe-probe` CLI builds on it.

use gst::glib;

pub mod metrics;
pub mod qoemonitor;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    qoemonitor::register(plugin)
}

gst::plugin_define!(
    qoe,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL-2.0",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    // No public repository yet; GStreamer refuses an empty origin, and this is what its own
    // builds say without one (GST_PACKAGE_ORIGIN's default).
    "Unknown package origin",
    env!("BUILD_REL_DATE")
);
