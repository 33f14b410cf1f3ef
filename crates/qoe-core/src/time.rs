// SPDX-License-Identifier: MPL-2.0
//! Time units shared by every tracker: nanoseconds of running (or stream) time, as GStreamer
//! counts them, without depending on GStreamer.

/// Nanoseconds of running time.
pub type Nanos = u64;

/// One second in [`Nanos`].
pub const SECOND: Nanos = 1_000_000_000;

/// `nanos` in seconds, for reports.
pub fn seconds(nanos: Nanos) -> f64 {
    nanos as f64 * 1e-9
}
