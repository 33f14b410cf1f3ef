// SPDX-License-Identifier: MPL-2.0
//! qoe-model: VQA²-family quality scoring on ONNX Runtime, free of GStreamer.
//!
//! Owns the model bundle format ([`bundle`]), ONNX Runtime sessions and execution providers
//! ([`session`]), pixel preprocessing ([`preprocess`]), the prompt ([`prompt`]), the level
//! words ([`level`]), scoring with one module per model family ([`vqa2`], [`lmm_vqa`],
//! [`cp_llm`]) over a shared core ([`scorer`]), greedy generation ([`generate`]), the
//! per-stream feature cache ([`stream`]), the process-wide scorer registry ([`registry`]),
//! batching across the streams that share a model ([`batch`]), where bundles and ONNX Runtime
//! are found without settings ([`locate`]) and the one error type ([`error`]).
//!
//! It builds on `qoe-core` (time units, sampling, stall figures) and must not depend on
//! GStreamer or on the plugin: the element and `qoe-probe` use it, never the other way round.
//! The optional `glib` feature only registers [`session::Provider`] as a GObject enum.

pub mod batch;
pub mod bundle;
pub mod cp_llm;
pub mod error;
pub mod generate;
pub mod level;
pub mod lmm_vqa;
pub mod locate;
pub mod preprocess;
pub mod prompt;
pub mod registry;
pub mod remote;
pub mod runner;
pub mod scorer;
pub mod session;
pub mod stream;
pub mod vqa2;

pub use error::{Error, Result, Words};
pub use registry::{SharedScorer, shared_scorer};
pub use scorer::{Scored, Scorer, WindowFeatures};
pub use session::{Priority, Provider, SessionOptions, intra_threads};
