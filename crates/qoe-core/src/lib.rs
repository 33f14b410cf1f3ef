// SPDX-License-Identifier: MPL-2.0
//! qoe-core: the QoE checks that need no model and no GStreamer types.
//!
//! Owns time units ([`time`]), stall tracking ([`stall`]), content-freeze detection
//! ([`freeze`]), black pictures ([`black`]) with the episode bookkeeping they share
//! ([`episode`]), dropped frames and arrival jitter ([`cadence`]),
//! rendition switches ([`rendition`]), frame sampling and rolling windows ([`sampling`]) and
//! the bounded hand-over queue between the streaming thread and the workers ([`queue`]).
//!
//! It must not depend on GStreamer, ONNX Runtime or any model code: the element and the
//! model crate build on it, never the other way round.

pub mod black;
pub mod cadence;
pub mod episode;
pub mod freeze;
pub mod queue;
pub mod rendition;
pub mod sampling;
pub mod stall;
pub mod time;
