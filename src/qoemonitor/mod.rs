// SPDX-License-Identifier: MPL-2.0
//! `qoemonitor`: a passthrough element that watches decoded video and reports stalls,
//! content freezes, black picture, rendition switches, running QoE statistics and quality
//! scores as element messages.

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
    // The property enums, documented with the element (gst-inspect, the plugin docs).
    Explain::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    qoe_model::Provider::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    qoe_model::Priority::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "qoemonitor",
        gst::Rank::NONE,
        QoeMonitor::static_type(),
    )
}
