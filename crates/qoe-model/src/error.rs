// SPDX-License-Identifier: MPL-2.0
//! The one error type of the model crate. Every message names the file, field, graph or
//! value at fault, as a user reading one log line needs.

/// Why a bundle cannot be opened or a window cannot be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The bundle folder or its manifest is unusable; the message names the file and field.
    #[error("{0}")]
    Bundle(String),
    /// ONNX Runtime cannot be loaded or started, or an execution provider cannot start.
    #[error("{0}")]
    Runtime(String),
    /// A graph failed while running.
    #[error("{role}: {message}")]
    Graph { role: String, message: String },
    /// What was handed over cannot be scored (no frames, a wrong picture size, a token the
    /// vocabulary lacks).
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// A failure of graph `role` (a part name).
    pub fn graph(role: impl std::fmt::Display, message: impl std::fmt::Display) -> Error {
        Error::Graph {
            role: role.to_string(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
