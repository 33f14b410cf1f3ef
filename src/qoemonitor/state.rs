// SPDX-License-Identifier: MPL-2.0
//! The element's per-stream state: the trackers, the scoring hand-over and the Prometheus
//! series, created on `start()` and dropped on `stop()`, and the `qoe-*` message structures
//! built from them.

use std::sync::Arc;

use gst::prelude::*;

use qoe_core::black::{BlackDetector, BlackEvent, LumaRange};
use qoe_core::cadence::Cadence;
use qoe_core::freeze::{FreezeDetector, FreezeEvent, LumaLayout};
use qoe_core::rendition::{Renditions, Switch};
use qoe_core::sampling::Window;
use qoe_core::stall::{StallEvent, StallTracker, WindowStalls};
use qoe_core::time::{Nanos, seconds};
use qoe_model::Scorer;

use super::imp::Settings;
use super::scoring::{Job, Sampler, ScoringConfig, Workers};
use crate::metrics::{QualityFigures, StreamFigures, StreamMetrics, TextfileLease};

/// Per-stream state, created on `start()` and dropped on `stop()`.
pub(super) struct State {
    pub(super) stream_id: String,
    pub(super) stats_interval: Option<Nanos>,
    pub(super) info: Option<gst_video::VideoInfo>,
    pub(super) luma: Option<LumaLayout>,
    /// 1/framerate from the caps, `None` for variable rate.
    pub(super) frame_period: Option<Nanos>,
    /// Running time of the latest frame's timestamp (interpolated where a frame had none).
    pub(super) last_pts: Option<Nanos>,
    pub(super) segment: gst::FormattedSegment<gst::ClockTime>,
    pub(super) stall: StallTracker,
    pub(super) freeze: FreezeDetector,
    pub(super) black: BlackDetector,
    /// Which luma values are black, from the caps' colorimetry.
    pub(super) luma_range: LumaRange,
    pub(super) cadence: Cadence,
    pub(super) renditions: Renditions,
    /// The picture is smaller than the bundle can score: no frame is sampled.
    pub(super) too_small: bool,
    /// A rendition switch from the caps, told with the first frame at the new size.
    pub(super) pending_switch: Option<Switch>,
    /// Frames flagged corrupted and discontinuous.
    pub(super) corrupted: u64,
    pub(super) discont: u64,
    pub(super) playing: bool,
    /// Running time of the next `qoe-stats` message, on the frame timeline.
    pub(super) next_stats: Option<Nanos>,
    /// The pending late-arrival clock wait and its generation (stale callbacks are ignored).
    pub(super) clock_wait: Option<gst::SingleShotClockId>,
    pub(super) wait_generation: u64,
    pub(super) warned_no_timestamp: bool,
    pub(super) warned_unreadable: bool,
    /// This stream's Prometheus series, and when (frame time) they were last refreshed.
    pub(super) metrics: StreamMetrics,
    pub(super) next_metrics: Nanos,
    pub(super) _textfile: Option<TextfileLease>,
    /// The model (shared by every element using the same bundle and provider), loaded on
    /// start; the sampler and workers start with the first caps.
    pub(super) scorer: Option<Arc<Scorer>>,
    pub(super) scoring_config: ScoringConfig,
    pub(super) sampler: Option<Sampler>,
    pub(super) workers: Option<Arc<Workers>>,
    pub(super) info_shared: Option<Arc<gst_video::VideoInfo>>,
}

impl State {
    pub(super) fn new(
        stream_id: String,
        settings: &Settings,
        metrics: StreamMetrics,
        textfile: Option<TextfileLease>,
        scorer: Option<Arc<Scorer>>,
    ) -> Self {
        State {
            stream_id,
            stats_interval: settings.stats_interval_ns(),
            info: None,
            luma: None,
            frame_period: None,
            last_pts: None,
            segment: gst::FormattedSegment::new(),
            stall: StallTracker::new(settings.stall_threshold.nseconds()),
            freeze: FreezeDetector::new(
                settings.freeze_threshold,
                settings.freeze_min_duration.nseconds(),
            ),
            black: BlackDetector::new(
                settings.black_pixel_threshold,
                settings.black_ratio,
                settings.black_min_duration.nseconds(),
            ),
            luma_range: LumaRange::default(),
            cadence: Cadence::new(settings.stall_threshold.nseconds()),
            renditions: Renditions::default(),
            pending_switch: None,
            too_small: false,
            corrupted: 0,
            discont: 0,
            playing: false,
            next_stats: None,
            clock_wait: None,
            wait_generation: 0,
            warned_no_timestamp: false,
            warned_unreadable: false,
            metrics,
            next_metrics: 0,
            _textfile: textfile,
            scorer,
            scoring_config: settings.scoring_config(),
            sampler: None,
            workers: None,
            info_shared: None,
        }
    }

    /// The stall figures of a scoring window, for streaming prompts.
    pub(super) fn window_stalls(stall: &StallTracker, window: Window) -> Option<WindowStalls> {
        Some(stall.within(window.start, window.end))
    }

    /// Jobs for the scoring workers from this frame (none without a model).
    pub(super) fn sample(&mut self, buffer: &gst::Buffer, time: Nanos) -> Vec<Job> {
        let (Some(sampler), Some(info)) = (self.sampler.as_mut(), self.info_shared.as_ref()) else {
            return Vec::new();
        };
        if self.too_small {
            return Vec::new();
        }
        let stall = &self.stall;
        sampler.on_frame(
            buffer,
            info,
            time,
            self.frame_period
                .or(buffer.duration().map(|d| d.nseconds())),
            |w| Self::window_stalls(stall, w),
        )
    }

    /// The `qoe-quality` structure of a scored window; also feeds the metrics.
    pub(super) fn quality_message(&mut self, q: &super::scoring::Quality) -> gst::Structure {
        let ns = gst::ClockTime::from_nseconds;
        if !q.stale {
            let levels: Vec<(&str, f64)> = q
                .probabilities
                .iter()
                .map(|(l, p)| (l.as_str(), *p))
                .collect();
            let stages = [
                ("preprocess", q.times.preprocess),
                ("vision", q.times.vision),
                ("motion", q.times.motion),
                ("decoder", q.times.decoder),
            ];
            self.metrics.quality(&QualityFigures {
                score: q.score,
                levels: &levels,
                stages: &stages,
                provider: q.provider.as_str(),
            });
        }
        self.metrics.stale(q.stale);
        let mut probabilities = gst::Structure::new_empty("probabilities");
        for (level, p) in &q.probabilities {
            probabilities.set(level.as_str(), *p);
        }
        let times = gst::Structure::builder("inference-times")
            .field("preprocess", q.times.preprocess)
            .field("vision", q.times.vision)
            .field("motion", q.times.motion)
            .field("decoder", q.times.decoder)
            .build();
        gst::Structure::builder("qoe-quality")
            .field("score", q.score)
            .field("level", &q.level)
            .field("probabilities", probabilities)
            .field("window-start", self.stream_time(q.window.start))
            .field("window-end", self.stream_time(q.window.end))
            .field("running-time", ns(q.running_time))
            .field("stream-id", &self.stream_id)
            .field("keyframes", q.keyframes as u32)
            .field("motion-frames", q.motion_frames as u32)
            .field("inference-time", q.times.total())
            .field("inference-times", times)
            .field("provider", q.provider.as_str())
            .field("stale", q.stale)
            .build()
    }

    /// Brings the Prometheus series up to date with the trackers.
    pub(super) fn sync_metrics(&mut self, now: Option<Nanos>) {
        let summary = self.stall.summary(now);
        self.metrics.update(&StreamFigures {
            stalls: summary.count,
            stalled: summary.stalled,
            stall_ratio: summary.ratio,
            initial_buffering_seconds: summary.initial_buffering.map(seconds),
            freezes: self.freeze.count(),
            frozen_seconds: seconds(self.freeze.total()),
            frozen: self.freeze.is_frozen(),
            black: self.black.is_black(),
            black_seconds: seconds(self.black.total()),
            frames_dropped: self.cadence.missing(),
            jitter: self
                .cadence
                .jitter()
                .map(|j| (seconds(j.p50), seconds(j.p99))),
            switches_up: self.renditions.switches().0,
            switches_down: self.renditions.switches().1,
            rendition_seconds: self
                .renditions
                .time_at()
                .iter()
                .map(|(height, t)| (height.clone(), seconds(*t)))
                .collect(),
            corrupted: self.corrupted,
            discont: self.discont,
        });
    }

    pub(super) fn stream_time(&self, running_time: Nanos) -> Option<gst::ClockTime> {
        let rt = gst::ClockTime::from_nseconds(running_time);
        self.segment
            .position_from_running_time(rt)
            .and_then(|pos| self.segment.to_stream_time(pos))
    }

    /// The message for a stall event; also records it in the metrics.
    pub(super) fn stall_message(&mut self, event: StallEvent) -> gst::Structure {
        if let StallEvent::Ended(stall) = event {
            self.metrics.stall_ended(seconds(stall.duration));
        }
        self.sync_metrics(None);
        let (name, start, end, duration, cause) = match event {
            StallEvent::Started { start, cause } => ("start", start, start, None, cause),
            StallEvent::Ended(s) => ("end", s.start, s.end(), Some(s.duration), s.cause),
        };
        let head = gst::Structure::builder("qoe-stall")
            .field("event", name)
            .field("cause", cause.as_str());
        self.event_fields(head, start, end, duration).build()
    }

    /// The message for a freeze event; also records it in the metrics.
    pub(super) fn freeze_message(&mut self, event: FreezeEvent) -> gst::Structure {
        self.sync_metrics(None);
        let (name, start, at, duration) = match event {
            FreezeEvent::Started { start } => ("start", start, start, None),
            FreezeEvent::Ended(f) => ("end", f.start, f.start + f.duration, Some(f.duration)),
        };
        let head = gst::Structure::builder("qoe-freeze").field("event", name);
        self.event_fields(head, start, at, duration).build()
    }

    /// The message for a black-picture event; also records it in the metrics.
    pub(super) fn black_message(&mut self, event: BlackEvent) -> gst::Structure {
        self.sync_metrics(None);
        let (name, start, at, duration) = match event {
            BlackEvent::Started { start } => ("start", start, start, None),
            BlackEvent::Ended(b) => ("end", b.start, b.start + b.duration, Some(b.duration)),
        };
        let head = gst::Structure::builder("qoe-black").field("event", name);
        self.event_fields(head, start, at, duration).build()
    }

    /// The message for a rendition switch seen with the frame at running time `at`.
    pub(super) fn rendition_message(&mut self, switch: Switch, at: Nanos) -> gst::Structure {
        self.sync_metrics(None);
        let (from, to) = (switch.from, switch.to);
        let (up, down) = self.renditions.switches();
        gst::Structure::builder("qoe-rendition")
            .field("direction", switch.direction.as_str())
            .field("from-width", from.width)
            .field("from-height", from.height)
            .field("to-width", to.width)
            .field("to-height", to.height)
            .field("switches", up + down)
            .field("running-time", gst::ClockTime::from_nseconds(at))
            .field("stream-time", self.stream_time(at))
            .field("stream-id", &self.stream_id)
            .build()
    }

    /// The fields every stall and freeze message ends with: when the event started, how
    /// long it lasted (end messages), when it was seen (`at`, running time) and the stream.
    fn event_fields(
        &self,
        head: gst::structure::Builder,
        start: Nanos,
        at: Nanos,
        duration: Option<Nanos>,
    ) -> gst::structure::Builder {
        head.field("start", self.stream_time(start))
            .field_if_some("duration", duration.map(gst::ClockTime::from_nseconds))
            .field("running-time", gst::ClockTime::from_nseconds(at))
            .field("stream-time", self.stream_time(at))
            .field("stream-id", &self.stream_id)
    }

    /// The `qoe-stats` structure at running time `now`.
    pub(super) fn stats(&self, now: Option<Nanos>) -> gst::Structure {
        let summary = self.stall.summary(now);
        let ns = gst::ClockTime::from_nseconds;
        let durations = gst::Array::new(summary.durations.iter().map(|d| ns(*d).to_send_value()));
        let counts = self.workers.as_ref().map(|w| w.counts());
        let jitter = self.cadence.jitter();
        let (up, down) = self.renditions.switches();
        let mut rendition_time = gst::Structure::new_empty("rendition-time");
        for (height, t) in self.renditions.time_at() {
            rendition_time.set(height.as_str(), ns(*t));
        }
        gst::Structure::builder("qoe-stats")
            .field("stream-id", &self.stream_id)
            .field("running-time", now.map(ns))
            .field("stream-time", now.and_then(|n| self.stream_time(n)))
            .field("live", self.stall.is_live())
            .field("frames", summary.frames)
            .field("stalls", summary.count)
            .field("stall-time", ns(summary.total))
            .field("stall-ratio", summary.ratio)
            .field("stall-durations", durations)
            .field("stalled", summary.stalled)
            .field("initial-buffering", summary.initial_buffering.map(ns))
            .field("time-since-last-stall", summary.since_last_stall.map(ns))
            .field("freezes", self.freeze.count())
            .field("frozen-time", ns(self.freeze.total()))
            .field("frozen", self.freeze.is_frozen())
            .field("blacks", self.black.count())
            .field("black-time", ns(self.black.total()))
            .field("black", self.black.is_black())
            .field("frames-missing", self.cadence.missing())
            .field("frames-missing-ratio", self.cadence.missing_ratio())
            .field_if_some("jitter-p50", jitter.map(|j| ns(j.p50)))
            .field_if_some("jitter-p99", jitter.map(|j| ns(j.p99)))
            .field("rendition-switches", up + down)
            .field("rendition-switches-up", up)
            .field("rendition-switches-down", down)
            .field("rendition-time", rendition_time)
            .field("corrupted-buffers", self.corrupted)
            .field("discont-buffers", self.discont)
            .field_if_some("windows-scored", counts.map(|c| c.windows_scored))
            .field_if_some("windows-dropped", counts.map(|c| c.windows_dropped))
            .field_if_some("frames-dropped", counts.map(|c| c.frames_dropped))
            .field_if_some("stale", counts.map(|c| c.stale))
            .field_if_some("model-panics", counts.map(|c| c.panics))
            .field_if_some(
                "too-small-to-score",
                self.scorer.as_ref().map(|_| self.too_small),
            )
            .build()
    }
}
