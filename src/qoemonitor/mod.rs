// SPDX-License-Identifier: MPL-2.0
//! `qoemonitor`: a passthrough element that watches decoded video and reports stalls,
//! content freezes and running QoE statistics as element messages.

use gst::glib;
use gst::prelude::*;

mod imp;
mod scoring;
mod state;

pub use scoring::Explain;

glib::wrapper! {
    pub struct QoeMonitor(ObjectSubclass<imp::QoeMonitor>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "qoemonitor",
        gst::Rank::NONE,
        QoeMonitor::static_type(),
    )
}
