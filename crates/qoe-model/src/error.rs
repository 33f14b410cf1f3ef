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
    /// A remote inference server is unreachable, or holds models other than the bundle's.
    #[error("{0}")]
    Server(String),
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

/// What a caught panic says ("(no message)" when it carries neither text type).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A closed set of words (a manifest's roles, the execution providers): every value, each
/// value's word, and a value from its word.
pub trait Words: Copy + 'static {
    const ALL: &'static [Self];

    fn word(self) -> &'static str;

    /// The value whose word is `word`.
    fn from_word(word: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.word() == word)
    }

    /// The value whose word is `word`, or an input error naming `what` and every word.
    fn parse_as(word: &str, what: &str) -> Result<Self, Error> {
        Self::from_word(word).ok_or_else(|| {
            Error::Input(format!("{what} \"{word}\" is not one of {}", Self::list()))
        })
    }

    /// Every word, for messages: "a, b, c".
    fn list() -> String {
        Self::ALL
            .iter()
            .map(|v| v.word())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
