// SPDX-License-Identifier: MPL-2.0
//! The `qoemonitor` element: glue between GStreamer and the pure trackers in
//! [`qoe_core::stall`] and [`qoe_core::freeze`].
//!
//! Frames are never modified: the element runs in passthrough and only reads a subsampled
//! luma thumbnail of each frame. Messages are built under the state lock and posted after it
//! is released. The per-stream state and its messages are in [`super::state`], the scoring
//! threads in [`super::scoring`].
//!
//! Over 800 lines on purpose: the settings, their property table with each property's docs
//! (about 300 lines) and the callbacks that read them stay side by side, as in the
//! gst-plugins-rs elements this one follows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;

use super::scoring::{Explain, Report, ReportSink, Sampler, ScoringConfig, Workers};
use super::state::State;
use qoe_core::black::LumaRange;
use qoe_core::freeze::{LumaLayout, LumaPlane};
use qoe_core::rendition::Size;
use qoe_core::stall::FrameTiming;
use qoe_core::time::Nanos;
use qoe_model::bundle::ScoreMode;
use qoe_model::{Priority, Provider, SessionOptions};

use crate::metrics::StreamMetrics;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "qoemonitor",
        gst::DebugColorFlags::empty(),
        Some("Video QoE monitor"),
    )
});

const DEFAULT_STALL_THRESHOLD: gst::ClockTime = gst::ClockTime::from_mseconds(250);
/// Mean absolute luma difference, as a fraction of full scale, below which a frame counts as
/// unchanged. FFmpeg freezedetect's default is 0.001 on full frames; our thumbnail averages
/// a few pixels per cell, and compressed still pictures keep a little coding noise
/// (`tests/pipeline.rs` measures it on x264), so the default sits a bit higher.
const DEFAULT_FREEZE_THRESHOLD: f64 = 0.002;
const DEFAULT_FREEZE_MIN_DURATION: gst::ClockTime = gst::ClockTime::SECOND;
/// As FFmpeg blackdetect: pixels at or below 10 % of the luma range are black, a frame with
/// 98 % black pixels is black, and 2 s of black frames make a black segment.
const DEFAULT_BLACK_PIXEL_THRESHOLD: f64 = 0.10;
const DEFAULT_BLACK_RATIO: f64 = 0.98;
const DEFAULT_BLACK_MIN_DURATION: gst::ClockTime = gst::ClockTime::from_seconds(2);
const DEFAULT_STATS_INTERVAL: gst::ClockTime = gst::ClockTime::SECOND;
const DEFAULT_METRICS_FILE_INTERVAL: gst::ClockTime = gst::ClockTime::from_seconds(15);
const DEFAULT_WINDOW: gst::ClockTime = gst::ClockTime::from_seconds(8);
const DEFAULT_HOP: gst::ClockTime = gst::ClockTime::from_seconds(2);
/// A call to an inference server: long enough for a loaded pool, short next to a hop.
const DEFAULT_INFERENCE_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(5);
const DEFAULT_MAX_BATCH: u32 = qoe_model::batch::DEFAULT_MAX_ROWS as u32;
const DEFAULT_MAX_BATCH_DELAY: gst::ClockTime =
    gst::ClockTime::from_mseconds(qoe_model::batch::DEFAULT_MAX_DELAY.as_millis() as u64);
const DEFAULT_EXPLAIN_INTERVAL: gst::ClockTime = gst::ClockTime::from_seconds(30);
const DEFAULT_EXPLAIN_QUESTION: &str =
    "Describe the quality of this video and what, if anything, degrades it.";
const DEFAULT_EXPLAIN_MAX_TOKENS: u32 = 64;
/// Stream time between metric updates (events update them at once).
const METRICS_TICK: Nanos = 500_000_000;

/// Raw formats read without conversion. Anything else must be converted upstream.
const FORMATS: &[gst_video::VideoFormat] = {
    use gst_video::VideoFormat::*;
    &[
        I420, Yv12, Nv12, Nv21, Y41b, Y42b, Y444, Nv16, Nv24, A420, Gray8, Yuy2, Yvyu, Uyvy, Vyuy,
        Ayuv, Rgb, Bgr, Rgba, Bgra, Argb, Abgr, Rgbx, Bgrx, Xrgb, Xbgr, I42010le, I42210le,
        Y44410le, I42012le, P01010le, Gray16Le,
    ]
};

/// How luma is laid out in the first plane of a frame of `info`'s format (every accepted
/// format keeps luma, or RGB, in plane 0).
fn luma_source(info: &gst_video::VideoInfo) -> Option<LumaLayout> {
    use gst_video::VideoFormat::*;
    let rgb = |pixel_stride, r, g, b| LumaLayout::Rgb8 {
        pixel_stride,
        r,
        g,
        b,
    };
    let layout = match info.format() {
        I420 | Yv12 | Nv12 | Nv21 | Y41b | Y42b | Y444 | Nv16 | Nv24 | A420 | Gray8 => {
            LumaLayout::Luma8 {
                pixel_stride: 1,
                offset: 0,
            }
        }
        Yuy2 | Yvyu => LumaLayout::Luma8 {
            pixel_stride: 2,
            offset: 0,
        },
        Uyvy | Vyuy => LumaLayout::Luma8 {
            pixel_stride: 2,
            offset: 1,
        },
        Ayuv => LumaLayout::Luma8 {
            pixel_stride: 4,
            offset: 1,
        },
        Rgb => rgb(3, 0, 1, 2),
        Bgr => rgb(3, 2, 1, 0),
        Rgba | Rgbx => rgb(4, 0, 1, 2),
        Bgra | Bgrx => rgb(4, 2, 1, 0),
        Argb | Xrgb => rgb(4, 1, 2, 3),
        Abgr | Xbgr => rgb(4, 3, 2, 1),
        I42010le | I42210le | Y44410le | I42012le | P01010le | Gray16Le => {
            let finfo = info.format_info();
            LumaLayout::Luma16Le {
                pixel_stride: finfo.pixel_stride()[0] as usize,
                offset: finfo.poffset()[0] as usize,
                shift: finfo.shift()[0],
                depth: finfo.depth()[0],
            }
        }
        _ => return None,
    };
    Some(layout)
}

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) stream_id: Option<String>,
    pub(super) stall_threshold: gst::ClockTime,
    pub(super) freeze_threshold: f64,
    pub(super) freeze_min_duration: gst::ClockTime,
    pub(super) black_pixel_threshold: f64,
    pub(super) black_ratio: f64,
    pub(super) black_min_duration: gst::ClockTime,
    pub(super) stats_interval: gst::ClockTime,
    pub(super) metrics_address: Option<String>,
    pub(super) metrics_file: Option<String>,
    pub(super) metrics_file_interval: gst::ClockTime,
    /// A bundle folder or name, as set.
    pub(super) bundle: Option<String>,
    pub(super) window: gst::ClockTime,
    pub(super) hop: gst::ClockTime,
    pub(super) execution_provider: Provider,
    pub(super) device_id: i32,
    pub(super) threads: u32,
    pub(super) model_priority: Priority,
    pub(super) tensorrt_cache: Option<PathBuf>,
    /// A KServe v2 server (`http://host:port`) that runs the bundle's graphs.
    pub(super) inference_server: Option<String>,
    pub(super) inference_timeout: gst::ClockTime,
    pub(super) max_batch: u32,
    pub(super) max_batch_delay: gst::ClockTime,
    pub(super) leaky: bool,
    pub(super) explain: Explain,
    pub(super) explain_interval: gst::ClockTime,
    pub(super) explain_question: String,
    pub(super) explain_max_tokens: u32,
}

impl Settings {
    pub(super) fn session_options(&self) -> SessionOptions {
        SessionOptions {
            provider: self.execution_provider,
            threads: self.threads as usize,
            priority: self.model_priority.resolved(self.leaky),
            device_id: self.device_id,
            tensorrt_cache: self.tensorrt_cache.clone(),
            server: self.inference_server.clone(),
            server_timeout_ms: self.inference_timeout.mseconds(),
            batch: qoe_model::batch::BatchOptions {
                max_rows: self.max_batch as usize,
                max_delay: self.max_batch_delay.into(),
            },
        }
    }

    pub(super) fn scoring_config(&self) -> ScoringConfig {
        ScoringConfig {
            window: self.window.nseconds(),
            hop: self.hop.nseconds(),
            leaky: self.leaky,
            explain: self.explain,
            explain_interval: self.explain_interval.nseconds(),
            explain_question: self.explain_question.clone(),
            explain_max_tokens: self.explain_max_tokens as usize,
            priority: self.model_priority.resolved(self.leaky),
        }
    }

    /// The stats interval in nanoseconds; `None` when 0 (only the final stats at EOS).
    pub(super) fn stats_interval_ns(&self) -> Option<Nanos> {
        Some(self.stats_interval.nseconds()).filter(|i| *i > 0)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream_id: None,
            stall_threshold: DEFAULT_STALL_THRESHOLD,
            freeze_threshold: DEFAULT_FREEZE_THRESHOLD,
            freeze_min_duration: DEFAULT_FREEZE_MIN_DURATION,
            black_pixel_threshold: DEFAULT_BLACK_PIXEL_THRESHOLD,
            black_ratio: DEFAULT_BLACK_RATIO,
            black_min_duration: DEFAULT_BLACK_MIN_DURATION,
            stats_interval: DEFAULT_STATS_INTERVAL,
            metrics_address: None,
            metrics_file: None,
            metrics_file_interval: DEFAULT_METRICS_FILE_INTERVAL,
            bundle: None,
            window: DEFAULT_WINDOW,
            hop: DEFAULT_HOP,
            execution_provider: Provider::Cpu,
            device_id: 0,
            threads: 0,
            model_priority: Priority::default(),
            tensorrt_cache: None,
            inference_server: None,
            inference_timeout: DEFAULT_INFERENCE_TIMEOUT,
            max_batch: DEFAULT_MAX_BATCH,
            max_batch_delay: DEFAULT_MAX_BATCH_DELAY,
            leaky: true,
            explain: Explain::Never,
            explain_interval: DEFAULT_EXPLAIN_INTERVAL,
            explain_question: DEFAULT_EXPLAIN_QUESTION.into(),
            explain_max_tokens: DEFAULT_EXPLAIN_MAX_TOKENS,
        }
    }
}

#[derive(Default)]
pub struct QoeMonitor {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Set on entering PLAYING: the next frame asks upstream whether it is live. Sources
    /// often answer latency queries only once negotiated, so asking at the state change
    /// itself is too early.
    check_live: AtomicBool,
    /// Refused caps are explained once per element.
    warned_caps: AtomicBool,
    /// The stream's Prometheus series while the element is stopped (READY): kept so that
    /// counters never restart within the process, removed on the way to NULL.
    parked_metrics: Mutex<Option<StreamMetrics>>,
}

impl QoeMonitor {
    fn lock_state(&self) -> MutexGuard<'_, Option<State>> {
        self.state.lock().unwrap()
    }

    fn post(&self, structures: Vec<gst::Structure>) {
        let obj = self.obj();
        for s in structures {
            // No bus (a bare element in a test) is not an error for the stream.
            let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
        }
    }

    /// The workers' channel back to this element. It holds no strong reference: the element
    /// stops (and joins) its workers before it can go away.
    fn report_sink(&self) -> ReportSink {
        let weak = self.obj().downgrade();
        Arc::new(move |report| {
            if let Some(element) = weak.upgrade() {
                element.imp().on_report(report);
            }
        })
    }

    /// A worker's report: a message on the bus, the metrics, a warning.
    fn on_report(&self, report: Report) {
        let message = {
            let mut guard = self.lock_state();
            let Some(state) = guard.as_mut() else { return };
            match report {
                Report::Quality(q) => Some(state.quality_message(&q)),
                Report::Dropped { reason } => {
                    gst::debug!(CAT, imp = self, "Window not scored: {reason}");
                    state.metrics.window_dropped();
                    None
                }
                Report::Failed { error, warn } => {
                    state.metrics.stale(true);
                    drop(guard);
                    gst::debug!(CAT, imp = self, "Scoring failed: {error}");
                    if warn {
                        gst::element_imp_warning!(
                            self,
                            gst::LibraryError::Failed,
                            ("Quality scoring failed; scores are stale until it recovers"),
                            ["{}", error]
                        );
                    }
                    return;
                }
                Report::Explanation {
                    window,
                    running_time,
                    text,
                    seconds,
                } => Some(
                    gst::Structure::builder("qoe-explanation")
                        .field("text", text)
                        .field("window-start", state.stream_time(window.start))
                        .field("window-end", state.stream_time(window.end))
                        .field("running-time", gst::ClockTime::from_nseconds(running_time))
                        .field("stream-id", &state.stream_id)
                        .field("inference-time", seconds)
                        .build(),
                ),
            }
        };
        self.post(message.into_iter().collect());
    }

    /// Starts the sampler and workers once the stream's frame rate is known.
    fn start_scoring(&self, state: &mut State) {
        if state.workers.is_some() {
            return;
        }
        let Some(scorer) = state.scorer.clone() else {
            return;
        };
        let fps = state.frame_period.map(|p| 1e9 / p as f64);
        match Workers::start(
            scorer.clone(),
            &state.scoring_config,
            fps,
            self.report_sink(),
        ) {
            Ok(workers) => {
                state.sampler = Some(Sampler::new(&scorer, state.scoring_config.clone()));
                state.workers = Some(Arc::new(workers));
            }
            Err(err) => gst::element_imp_warning!(
                self,
                gst::LibraryError::Init,
                ("Quality scoring not started: {}", err)
            ),
        }
    }

    /// Arms a clock wait for the late-arrival deadline if none is pending.
    fn schedule_arrival_check(&self, state: &mut State) {
        if !state.playing || state.clock_wait.is_some() {
            return;
        }
        let Some(deadline) = state.stall.arrival_deadline() else {
            return;
        };
        let obj = self.obj();
        let (Some(clock), Some(base_time)) = (obj.clock(), obj.base_time()) else {
            return;
        };
        let id = clock.new_single_shot_id(base_time + gst::ClockTime::from_nseconds(deadline));
        state.wait_generation += 1;
        let generation = state.wait_generation;
        let weak = obj.downgrade();
        let scheduled = id.wait_async(move |_clock, time, _id| {
            if let (Some(element), Some(time)) = (weak.upgrade(), time) {
                element.imp().on_arrival_deadline(generation, time);
            }
        });
        match scheduled {
            Ok(_) => state.clock_wait = Some(id),
            Err(err) => gst::warning!(
                CAT,
                imp = self,
                "Cannot wait on the clock for late frames: {err:?}"
            ),
        }
    }

    /// Clock callback: no frame came by the deadline, or it is time to look again.
    fn on_arrival_deadline(&self, generation: u64, clock_time: gst::ClockTime) {
        let mut messages = Vec::new();
        {
            let mut guard = self.lock_state();
            let Some(state) = guard.as_mut() else { return };
            if state.wait_generation != generation {
                return;
            }
            state.clock_wait = None;
            if !state.playing {
                return;
            }
            let Some(base_time) = self.obj().base_time() else {
                return;
            };
            let now = clock_time.saturating_sub(base_time).nseconds();
            if let Some(event) = state.stall.on_clock(now) {
                gst::debug!(CAT, imp = self, "Late-arrival stall: {event:?}");
                messages.push(state.stall_message(event));
            }
            self.schedule_arrival_check(state);
        }
        self.post(messages);
    }

    fn cancel_arrival_check(state: &mut State) {
        if let Some(id) = state.clock_wait.take() {
            id.unschedule();
        }
        state.wait_generation += 1;
    }

    /// Whether upstream is live, from a latency query.
    fn upstream_is_live(&self) -> bool {
        let mut query = gst::query::Latency::new();
        self.obj().sink_pad().peer_query(&mut query) && query.result().0
    }

    /// Tracks a frame; returns its time (running time of its PTS, else of its arrival).
    fn observe_frame(
        &self,
        state: &mut State,
        buffer: &gst::BufferRef,
        messages: &mut Vec<gst::Structure>,
    ) -> Option<Nanos> {
        let arrival = if state.playing {
            self.obj().current_running_time().map(|t| t.nseconds())
        } else {
            None
        };
        let period = state
            .frame_period
            .or(buffer.duration().map(|d| d.nseconds()));
        let stamped = buffer
            .pts()
            .and_then(|pts| state.segment.to_running_time(pts))
            .map(|t| t.nseconds());
        // In a timestamped stream, a frame without a timestamp comes a frame period after
        // the one before: never a stall by itself. A stream never timestamped is timed by
        // arrival.
        let pts = stamped.or_else(|| state.last_pts.zip(period).map(|(last, p)| last + p));
        state.last_pts = pts.or(state.last_pts);
        if stamped.is_none() && !state.warned_no_timestamp {
            state.warned_no_timestamp = true;
            gst::warning!(
                CAT,
                imp = self,
                "Buffer without a timestamp: {}",
                if pts.is_some() {
                    "its time is interpolated from the frame period"
                } else {
                    "timing uses arrival time"
                }
            );
        }
        let timing = FrameTiming {
            pts,
            duration: buffer.duration().map(|d| d.nseconds()),
            arrival,
        };
        for event in state.stall.on_frame(timing) {
            messages.push(state.stall_message(event));
        }
        // Arrival jitter means something only where frames arrive in real time.
        let live_arrival = arrival.filter(|_| state.stall.is_live());
        state.cadence.on_frame(pts, live_arrival, period);
        state.metrics.frames(1);
        let flags = buffer.flags();
        state.corrupted += flags.contains(gst::BufferFlags::CORRUPTED) as u64;
        state.discont += flags.contains(gst::BufferFlags::DISCONT) as u64;

        let time = pts.or(arrival)?;
        if let Some(switch) = state.pending_switch.take() {
            messages.push(state.rendition_message(switch, time));
        }
        let shown_for = state
            .frame_period
            .or(buffer.duration().map(|d| d.nseconds()))
            .unwrap_or(0);
        state.renditions.on_frame(shown_for);
        if time >= state.next_metrics {
            state.sync_metrics(Some(time));
            state.next_metrics = time + METRICS_TICK;
        }
        self.detect_pictures(state, buffer, time, shown_for, messages);

        if let Some(interval) = state.stats_interval {
            let due = *state.next_stats.get_or_insert(time + interval);
            if time >= due {
                messages.push(state.stats(Some(time)));
                let behind = (time - due) / interval + 1;
                state.next_stats = Some(due + behind * interval);
            }
        }
        self.schedule_arrival_check(state);
        Some(time)
    }

    /// Freeze and black-picture detection, from one luma thumbnail of the frame.
    fn detect_pictures(
        &self,
        state: &mut State,
        buffer: &gst::BufferRef,
        time: Nanos,
        shown_for: Nanos,
        messages: &mut Vec<gst::Structure>,
    ) {
        let (Some(info), Some(layout)) = (state.info.as_ref(), state.luma) else {
            return;
        };
        let frame = match gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info) {
            Ok(frame) => frame,
            Err(_) => {
                if !std::mem::replace(&mut state.warned_unreadable, true) {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "Cannot map a frame for reading; freeze detection skips it"
                    );
                }
                return;
            }
        };
        let Ok(data) = frame.plane_data(0) else {
            return;
        };
        let luma = LumaPlane {
            data,
            width: frame.width() as usize,
            height: frame.height() as usize,
            stride: frame.plane_stride()[0] as usize,
            layout,
        };
        match state.freeze.observe(time, shown_for, &luma) {
            Ok(freeze) => {
                if let Some(event) = freeze {
                    messages.push(state.freeze_message(event));
                }
                let thumbnail = state.freeze.thumbnail();
                if let Some(event) =
                    state
                        .black
                        .observe(time, shown_for, thumbnail, state.luma_range)
                {
                    messages.push(state.black_message(event));
                }
            }
            Err(err) => {
                if !std::mem::replace(&mut state.warned_unreadable, true) {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "Frame unreadable for freeze detection: {err}"
                    );
                }
            }
        }
    }
}

/// Which luma values are black: limited range unless the caps say full (RGB is full).
fn luma_range(info: &gst_video::VideoInfo) -> LumaRange {
    if info.format_info().is_rgb()
        || info.colorimetry().range() == gst_video::VideoColorRange::Range0_255
    {
        LumaRange::Full
    } else {
        LumaRange::Limited
    }
}

/// 1/framerate in nanoseconds; `None` for variable (0/1) or invalid rates.
fn frame_period(info: &gst_video::VideoInfo) -> Option<Nanos> {
    let fps = info.fps();
    (fps.numer() > 0 && fps.denom() > 0).then(|| {
        gst::ClockTime::SECOND
            .mul_div_round(fps.denom() as u64, fps.numer() as u64)
            .unwrap_or(gst::ClockTime::ZERO)
            .nseconds()
    })
}

#[glib::object_subclass]
impl ObjectSubclass for QoeMonitor {
    const NAME: &'static str = "GstQoeMonitor";
    type Type = super::QoeMonitor;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for QoeMonitor {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("stream-id")
                    .nick("Stream ID")
                    .blurb("Operator-chosen name of the watched stream, carried in every message and as the metrics' stream label (default: the element's name)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("metrics-address")
                    .nick("Metrics address")
                    .blurb("host:port on which to serve Prometheus metrics at /metrics, e.g. 127.0.0.1:9464, or :PORT for every interface (unset: no endpoint). One endpoint per process serves every stream; if the port is taken the element warns and keeps working")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("metrics-file")
                    .nick("Metrics file")
                    .blurb("Path of a file to write the Prometheus metrics to, for node_exporter's textfile collector (unset: none). Written atomically every metrics-file-interval")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("metrics-file-interval")
                    .nick("Metrics file interval")
                    .blurb("Nanoseconds between writes of metrics-file")
                    .minimum(100 * gst::ClockTime::MSECOND.nseconds())
                    .maximum(gst::ClockTime::from_seconds(86400).nseconds())
                    .default_value(DEFAULT_METRICS_FILE_INTERVAL.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("stall-threshold")
                    .nick("Stall threshold")
                    .blurb("Nanoseconds by which a frame may be late (timestamp gap, GAP event, or live arrival) before it counts as a stall")
                    .minimum(gst::ClockTime::MSECOND.nseconds())
                    .maximum(gst::ClockTime::from_seconds(3600).nseconds())
                    .default_value(DEFAULT_STALL_THRESHOLD.nseconds())
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("freeze-threshold")
                    .nick("Freeze threshold")
                    .blurb("Largest mean absolute luma difference to the last changed frame, as a fraction of full scale (like FFmpeg freezedetect's noise), for a frame to count as unchanged")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_FREEZE_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("freeze-min-duration")
                    .nick("Freeze minimum duration")
                    .blurb("Nanoseconds of stream time a picture must stay unchanged to count as a content freeze")
                    .minimum(1)
                    .maximum(gst::ClockTime::from_seconds(3600).nseconds())
                    .default_value(DEFAULT_FREEZE_MIN_DURATION.nseconds())
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("black-pixel-threshold")
                    .nick("Black pixel threshold")
                    .blurb("Luma level, as a fraction of the luma range (16-235 for limited-range video, 0-255 for full range), at or below which a pixel is black (like FFmpeg blackdetect's pixel_black_th)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_BLACK_PIXEL_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("black-ratio")
                    .nick("Black ratio")
                    .blurb("Share of black pixels (0-1) that makes a frame black (like FFmpeg blackdetect's picture_black_ratio_th)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_BLACK_RATIO)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("black-min-duration")
                    .nick("Black minimum duration")
                    .blurb("Nanoseconds of stream time black frames must last to count as a black segment (qoe-black)")
                    .minimum(1)
                    .maximum(gst::ClockTime::from_seconds(3600).nseconds())
                    .default_value(DEFAULT_BLACK_MIN_DURATION.nseconds())
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("stats-interval")
                    .nick("Statistics interval")
                    .blurb("Nanoseconds of stream time between qoe-stats messages (0: only the final one at end of stream)")
                    .maximum(gst::ClockTime::from_seconds(86400).nseconds())
                    .default_value(DEFAULT_STATS_INTERVAL.nseconds())
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("bundle")
                    .nick("Model bundle")
                    .blurb("Model bundle to score quality with: a folder (bundle.json and its graphs) or a bundle name, looked up in GST_QOE_BUNDLE_PATH, the installed bundles (<datadir>/gst-qoe/bundles) and a checkout's models/ (e.g. micro-vqa2-streaming, the default bundle). Unset: no quality scores, only stalls and freezes. Loaded on the way to PAUSED; a bad bundle fails that state change with an error saying why. ONNX Runtime is taken from ORT_DYLIB_PATH, else the one installed with the plugin, else the system's")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("window")
                    .nick("Window")
                    .blurb("Nanoseconds of video each quality score covers")
                    .minimum(gst::ClockTime::SECOND.nseconds())
                    .maximum(gst::ClockTime::from_seconds(600).nseconds())
                    .default_value(DEFAULT_WINDOW.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("hop")
                    .nick("Hop")
                    .blurb("Nanoseconds between the ends of consecutive windows, rounded up to whole seconds so that windows share their keyframes' features (a window shorter than the hop is made as long)")
                    .minimum(gst::ClockTime::SECOND.nseconds())
                    .maximum(gst::ClockTime::from_seconds(600).nseconds())
                    .default_value(DEFAULT_HOP.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("execution-provider", Provider::Cpu)
                    .nick("Execution provider")
                    .blurb("Where ONNX Runtime runs the model: cpu, cuda, tensorrt, or auto (TensorRT, else CUDA, else CPU). An explicitly asked-for provider that cannot start fails the start with the reason; the provider in use is the provider property")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("provider")
                    .nick("Provider in use")
                    .blurb("The execution provider the model actually runs on (NULL without a model or before start)")
                    .read_only()
                    .build(),
                glib::ParamSpecInt::builder("device-id")
                    .nick("Device ID")
                    .blurb("GPU ordinal for the cuda and tensorrt providers")
                    .minimum(0)
                    .maximum(64)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Threads")
                    .blurb("ONNX Runtime intra-op threads per graph (0: half the cores, at least one, leaving the rest to the pipeline). A model shared by several elements keeps the value of the first to load it")
                    .maximum(256)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("model-priority", Priority::default())
                    .nick("Model priority")
                    .blurb("Scheduling of the model's threads (ONNX Runtime's and the element's workers) against the pipeline's: low (nice 19: the pipeline's threads come first and the model drops windows when starved), idle (Linux SCHED_IDLE: only CPU time nobody else wants), normal, or auto (the default: low when leaky, normal when the pipeline waits for the model anyway). A model shared by several elements keeps the ONNX Runtime threads of the first to load it")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tensorrt-cache")
                    .nick("TensorRT engine cache")
                    .blurb("Folder where TensorRT engines are kept between runs, in subfolders keyed by model hash, ONNX Runtime library, GPU and precision (unset: engines are rebuilt on each start)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("inference-server")
                    .nick("Inference server")
                    .blurb("A KServe v2 inference server (Triton, KServe) that runs the bundle's graphs, as grpc://host:port (Triton: 8001) or http://host:port (8000); unset: they run here on execution-provider. Its model repository must be written from this bundle by python -m qoe_onnx.triton: a server holding other graphs fails the start. While the server is down or slow, windows are reported stale and the element retries with backoff; stall and freeze checks go on")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("inference-timeout")
                    .nick("Inference timeout")
                    .blurb("The longest one call to inference-server may take, in nanoseconds, connecting included; a window whose call takes longer is reported stale")
                    .minimum(gst::ClockTime::MSECOND.nseconds())
                    .maximum(gst::ClockTime::from_seconds(600).nseconds())
                    .default_value(DEFAULT_INFERENCE_TIMEOUT.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-batch")
                    .nick("Maximum batch")
                    .blurb("The most decoder prefills (one per window and ensemble model) that the streams sharing a model run in one call, for bundles whose decoder batches; 1 runs each alone. Taken from the first element that opens the model")
                    .minimum(1)
                    .maximum(256)
                    .default_value(DEFAULT_MAX_BATCH)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-batch-delay")
                    .nick("Maximum batch delay")
                    .blurb("The longest a window waits, in nanoseconds, for other streams' windows to join its decoder batch; it never waits once every stream sharing the model has handed in one. Taken from the first element that opens the model")
                    .maximum(gst::ClockTime::from_seconds(10).nseconds())
                    .default_value(DEFAULT_MAX_BATCH_DELAY.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("leaky")
                    .nick("Leaky")
                    .blurb("When the model falls behind, drop the oldest waiting frames and windows (counted in qoe-stats and qoe_windows_dropped_total) so that the pipeline never waits. Set to false for offline analysis of files, where every window should be scored and the pipeline may slow down to the model's pace")
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("explain", Explain::Never)
                    .nick("Explain")
                    .blurb("When to generate a text explanation of a window (bundles with a generation graph, e.g. VQA²-Assistant): never, on-drop (the quality level got worse) or always; at most one per explain-interval. It arrives later in its own qoe-explanation message and never delays scores")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("explain-interval")
                    .nick("Explain interval")
                    .blurb("Least nanoseconds of stream time between two explanations")
                    .maximum(gst::ClockTime::from_seconds(86400).nseconds())
                    .default_value(DEFAULT_EXPLAIN_INTERVAL.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("explain-question")
                    .nick("Explain question")
                    .blurb("The question put to the model for explanations (for prompts with a {question} slot)")
                    .default_value(Some(DEFAULT_EXPLAIN_QUESTION))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("explain-max-tokens")
                    .nick("Explain max tokens")
                    .blurb("Most tokens generated per explanation")
                    .minimum(1)
                    .maximum(4096)
                    .default_value(DEFAULT_EXPLAIN_MAX_TOKENS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("The figures of the latest qoe-stats message, computed now (NULL before the element starts)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        let mut state = self.lock_state();
        let ns = |v: &glib::Value| {
            gst::ClockTime::from_nseconds(v.get().expect("type checked upstream"))
        };
        // Detection settings also apply at once to a running stream; the stream's identity and
        // its outputs are taken when it starts.
        match pspec.name() {
            "stream-id" => settings.stream_id = value.get().expect("type checked upstream"),
            "metrics-address" => {
                settings.metrics_address = value.get().expect("type checked upstream")
            }
            "metrics-file" => settings.metrics_file = value.get().expect("type checked upstream"),
            "metrics-file-interval" => settings.metrics_file_interval = ns(value),
            "stall-threshold" => {
                settings.stall_threshold = ns(value);
                if let Some(state) = state.as_mut() {
                    let threshold = settings.stall_threshold.nseconds();
                    state.stall.set_threshold(threshold);
                    state.cadence.set_threshold(threshold);
                }
            }
            "freeze-threshold" => {
                settings.freeze_threshold = value.get().expect("type checked upstream");
                if let Some(state) = state.as_mut() {
                    state.freeze.set_threshold(settings.freeze_threshold);
                }
            }
            "freeze-min-duration" => {
                settings.freeze_min_duration = ns(value);
                if let Some(state) = state.as_mut() {
                    state
                        .freeze
                        .set_min_duration(settings.freeze_min_duration.nseconds());
                }
            }
            "black-pixel-threshold" => {
                settings.black_pixel_threshold = value.get().expect("type checked upstream");
                if let Some(state) = state.as_mut() {
                    state
                        .black
                        .set_pixel_threshold(settings.black_pixel_threshold);
                }
            }
            "black-ratio" => {
                settings.black_ratio = value.get().expect("type checked upstream");
                if let Some(state) = state.as_mut() {
                    state.black.set_ratio(settings.black_ratio);
                }
            }
            "black-min-duration" => {
                settings.black_min_duration = ns(value);
                if let Some(state) = state.as_mut() {
                    state
                        .black
                        .set_min_duration(settings.black_min_duration.nseconds());
                }
            }
            "bundle" => {
                settings.bundle = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|spec| !spec.is_empty())
            }
            "window" => settings.window = ns(value),
            "hop" => settings.hop = ns(value),
            "execution-provider" => {
                settings.execution_provider = value.get().expect("type checked upstream")
            }
            "device-id" => settings.device_id = value.get().expect("type checked upstream"),
            "threads" => settings.threads = value.get().expect("type checked upstream"),
            "model-priority" => {
                settings.model_priority = value.get().expect("type checked upstream")
            }
            "tensorrt-cache" => {
                settings.tensorrt_cache = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .map(PathBuf::from)
            }
            "inference-server" => {
                settings.inference_server = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|s| !s.is_empty())
            }
            "inference-timeout" => settings.inference_timeout = ns(value),
            "max-batch" => settings.max_batch = value.get().expect("type checked upstream"),
            "max-batch-delay" => settings.max_batch_delay = ns(value),
            "leaky" => settings.leaky = value.get().expect("type checked upstream"),
            "explain" => settings.explain = value.get().expect("type checked upstream"),
            "explain-interval" => settings.explain_interval = ns(value),
            "explain-question" => {
                settings.explain_question = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_else(|| DEFAULT_EXPLAIN_QUESTION.into())
            }
            "explain-max-tokens" => {
                settings.explain_max_tokens = value.get().expect("type checked upstream")
            }
            "stats-interval" => {
                settings.stats_interval = ns(value);
                if let Some(state) = state.as_mut() {
                    state.stats_interval = settings.stats_interval_ns();
                    state.next_stats = None;
                }
            }
            other => unimplemented!("property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "stream-id" => settings
                .stream_id
                .clone()
                .unwrap_or_else(|| self.obj().name().to_string())
                .to_value(),
            "stall-threshold" => settings.stall_threshold.nseconds().to_value(),
            "freeze-threshold" => settings.freeze_threshold.to_value(),
            "freeze-min-duration" => settings.freeze_min_duration.nseconds().to_value(),
            "black-pixel-threshold" => settings.black_pixel_threshold.to_value(),
            "black-ratio" => settings.black_ratio.to_value(),
            "black-min-duration" => settings.black_min_duration.nseconds().to_value(),
            "stats-interval" => settings.stats_interval.nseconds().to_value(),
            "metrics-address" => settings.metrics_address.to_value(),
            "metrics-file" => settings.metrics_file.to_value(),
            "metrics-file-interval" => settings.metrics_file_interval.nseconds().to_value(),
            "bundle" => settings.bundle.to_value(),
            "window" => settings.window.nseconds().to_value(),
            "hop" => settings.hop.nseconds().to_value(),
            "execution-provider" => settings.execution_provider.to_value(),
            "device-id" => settings.device_id.to_value(),
            "threads" => settings.threads.to_value(),
            "model-priority" => settings.model_priority.to_value(),
            "tensorrt-cache" => settings
                .tensorrt_cache
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "inference-server" => settings.inference_server.to_value(),
            "inference-timeout" => settings.inference_timeout.nseconds().to_value(),
            "max-batch" => settings.max_batch.to_value(),
            "max-batch-delay" => settings.max_batch_delay.nseconds().to_value(),
            "leaky" => settings.leaky.to_value(),
            "explain" => settings.explain.to_value(),
            "explain-interval" => settings.explain_interval.nseconds().to_value(),
            "explain-question" => settings.explain_question.to_value(),
            "explain-max-tokens" => settings.explain_max_tokens.to_value(),
            "provider" => {
                drop(settings);
                self.lock_state()
                    .as_ref()
                    .and_then(|s| s.scorer.as_ref())
                    .map(|s| s.provider().as_str())
                    .to_value()
            }
            "stats" => {
                drop(settings);
                let now = self.obj().current_running_time().map(|t| t.nseconds());
                self.lock_state()
                    .as_ref()
                    .map(|state| state.stats(now))
                    .to_value()
            }
            other => unimplemented!("property {other}"),
        }
    }
}

impl GstObjectImpl for QoeMonitor {}

impl ElementImpl for QoeMonitor {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Video QoE monitor",
                "Filter/Analyzer/Video",
                "Passes video through untouched and reports, as element messages, playback stalls (qoe-stall), content freezes (qoe-freeze), black picture (qoe-black), rendition switches (qoe-rendition), running QoE statistics (qoe-stats) and, with a model bundle, VQA²-family quality scores (qoe-quality) and explanations (qoe-explanation); optionally as Prometheus metrics",
                "gst-qoe developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS.iter().copied())
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::PlayingToPaused
            && let Some(state) = self.lock_state().as_mut()
        {
            state.playing = false;
            Self::cancel_arrival_check(state);
            state.stall.on_paused();
        }
        let success = self.parent_change_state(transition)?;
        if transition == gst::StateChange::ReadyToNull
            && let Some(metrics) = self.parked_metrics.lock().unwrap().take()
        {
            metrics.remove();
        }
        if transition == gst::StateChange::PausedToPlaying {
            let now = self.obj().current_running_time();
            gst::debug!(CAT, imp = self, "PLAYING at {now:?}");
            self.check_live.store(true, Ordering::SeqCst);
            if let Some(state) = self.lock_state().as_mut() {
                state.playing = true;
                if let Some(now) = now {
                    state.stall.on_playing(now.nseconds());
                }
                self.schedule_arrival_check(state);
            }
        }
        Ok(success)
    }
}

impl BaseTransformImpl for QoeMonitor {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = true;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let stream_id = settings
            .stream_id
            .clone()
            .unwrap_or_else(|| self.obj().name().to_string());
        let mut metrics = match self.parked_metrics.lock().unwrap().take() {
            Some(parked) if parked.stream() == stream_id => parked,
            Some(parked) => {
                parked.remove(); // the stream was renamed while stopped
                StreamMetrics::new(&stream_id)
            }
            None => StreamMetrics::new(&stream_id),
        };
        metrics.rebase();
        if let Some(address) = &settings.metrics_address {
            // A failure here must not stop the stream: warn and go on without the endpoint.
            match crate::metrics::serve(address) {
                Ok(bound) => gst::info!(CAT, imp = self, "Metrics at http://{bound}/metrics"),
                Err(err) => gst::element_imp_warning!(
                    self,
                    gst::ResourceError::OpenWrite,
                    ("Metrics endpoint not opened: {}", err)
                ),
            }
        }
        let textfile = settings.metrics_file.as_ref().and_then(|path| {
            let interval =
                std::time::Duration::from_nanos(settings.metrics_file_interval.nseconds());
            crate::metrics::textfile(std::path::Path::new(path), interval)
                .inspect_err(|err| {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::OpenWrite,
                        ("Metrics file {} not written: {}", path, err)
                    )
                })
                .ok()
        });
        let scorer = match &settings.bundle {
            None => None,
            Some(spec) => {
                let options = settings.session_options();
                let scorer = qoe_model::locate::resolve_bundle(spec)
                    .and_then(|dir| qoe_model::shared_scorer(&dir, &options))
                    .map_err(|e| {
                        gst::error_msg!(
                            gst::ResourceError::OpenRead,
                            ("Cannot load the model bundle {}", spec),
                            ["{}", e]
                        )
                    })?;
                gst::info!(
                    CAT,
                    imp = self,
                    "Bundle {} ({}) on {}, ONNX Runtime from {}",
                    scorer.bundle().manifest.name,
                    scorer.bundle().dir.display(),
                    settings
                        .inference_server
                        .clone()
                        .unwrap_or_else(|| scorer.provider().as_str().to_owned()),
                    qoe_model::session::library_path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
                if scorer.mode() == ScoreMode::None && settings.explain == Explain::Never {
                    gst::element_imp_warning!(
                        self,
                        gst::LibraryError::Settings,
                        (
                            "Bundle {} does not score and explain=never: it will say nothing",
                            spec
                        ),
                        [
                            "Set explain=always or on-drop to get explanations from an Assistant bundle"
                        ]
                    );
                }
                Some(scorer)
            }
        };
        *self.lock_state() = Some(State::new(stream_id, &settings, metrics, textfile, scorer));
        gst::debug!(CAT, imp = self, "Started with {settings:?}");
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = self.lock_state().take();
        if let Some(mut state) = state {
            Self::cancel_arrival_check(&mut state);
            state.sync_metrics(None);
            // Joined with no lock held: a worker may be reporting right now.
            drop(state.workers.take());
            *self.parked_metrics.lock().unwrap() = Some(state.metrics);
        }
        Ok(())
    }

    fn accept_caps(&self, direction: gst::PadDirection, caps: &gst::Caps) -> bool {
        let accepted = self.parent_accept_caps(direction, caps);
        if !accepted
            && direction == gst::PadDirection::Sink
            && !self.warned_caps.swap(true, Ordering::SeqCst)
        {
            // Upstream only sees "not-negotiated"; say what would work.
            gst::element_imp_warning!(
                self,
                gst::CoreError::Negotiation,
                ("qoemonitor cannot read {}", caps),
                [
                    "It reads raw video in system memory in these formats: {}. Put videoconvert (or a download element) before it.",
                    FORMATS
                        .iter()
                        .map(|f| f.to_str().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ]
            );
        }
        accepted
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "Cannot read video caps {incaps}"))?;
        let luma = luma_source(&info).ok_or_else(|| {
            gst::loggable_error!(CAT, "Format {} has no readable luma", info.format())
        })?;
        let mut messages = Vec::new();
        let mut too_small = None;
        if let Some(state) = self.lock_state().as_mut() {
            if state.info.as_ref().is_some_and(|old| {
                old.width() != info.width()
                    || old.height() != info.height()
                    || old.format() != info.format()
            }) {
                // A new picture shape: the old reference cannot be compared with.
                if let Some(event) = state.freeze.reset() {
                    messages.push(state.freeze_message(event));
                }
                if let Some(event) = state.black.finish() {
                    messages.push(state.black_message(event));
                }
            }
            let size = Size {
                width: info.width(),
                height: info.height(),
            };
            if let Some(switch) = state.renditions.on_size(size) {
                state.pending_switch = Some(switch);
            }
            state.luma_range = luma_range(&info);
            if let Some(scorer) = &state.scorer {
                let small = !scorer
                    .bundle()
                    .can_score_size(info.width() as usize, info.height() as usize);
                if small && !state.too_small {
                    too_small = Some((info.width(), info.height()));
                }
                state.too_small = small;
            }
            state.frame_period = frame_period(&info);
            state.stall.set_nominal_period(state.frame_period);
            state.info_shared = Some(Arc::new(info.clone()));
            state.info = Some(info);
            state.luma = Some(luma);
            self.start_scoring(state);
        }
        self.post(messages);
        if let Some((width, height)) = too_small {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Format,
                ("The picture, {width}x{height}, is too small to score: no quality levels while it is")
            );
        }
        self.parent_set_caps(incaps, outcaps)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        use gst::EventView;
        // Scoring first, with no lock held: the final window at EOS (waited for, so that its
        // score comes before EOS), a fresh start after a flush or a new stream.
        let scoring = {
            let mut guard = self.lock_state();
            guard.as_mut().and_then(|state| {
                let workers = state.workers.clone()?;
                let sampler = state.sampler.as_mut()?;
                let jobs = match event.view() {
                    EventView::Eos(_) => {
                        let stall = &state.stall;
                        sampler.finish(|w| State::window_stalls(stall, w))
                    }
                    EventView::FlushStop(_) | EventView::StreamStart(_) => {
                        workers.flush();
                        vec![sampler.reset()]
                    }
                    _ => return None,
                };
                Some((workers, jobs))
            })
        };
        if let Some((workers, jobs)) = scoring {
            workers.submit(jobs);
            if event.type_() == gst::EventType::Eos {
                workers.drain();
            }
        }
        let mut messages = Vec::new();
        if let Some(state) = self.lock_state().as_mut() {
            match event.view() {
                EventView::Segment(e) => match e.segment().downcast_ref::<gst::ClockTime>() {
                    Some(segment) => state.segment = segment.clone(),
                    None => gst::warning!(
                        CAT,
                        imp = self,
                        "Segment not in time format; timestamps read as running time"
                    ),
                },
                EventView::Gap(e) => {
                    let (ts, duration) = e.get();
                    if let Some(rt) = state.segment.to_running_time(ts) {
                        if let Some(ev) = state
                            .stall
                            .on_gap(rt.nseconds(), duration.map(|d| d.nseconds()))
                        {
                            messages.push(state.stall_message(ev));
                        }
                        // A live hole is confirmed by the clock: wait for its deadline.
                        Self::cancel_arrival_check(state);
                        self.schedule_arrival_check(state);
                    }
                }
                EventView::FlushStop(_) => {
                    if let Some(ev) = state.stall.on_discontinuity() {
                        messages.push(state.stall_message(ev));
                    }
                    state.cadence.on_discontinuity();
                    state.last_pts = None;
                    if let Some(ev) = state.freeze.reset() {
                        messages.push(state.freeze_message(ev));
                    }
                    if let Some(ev) = state.black.finish() {
                        messages.push(state.black_message(ev));
                    }
                    state.next_stats = None;
                }
                EventView::StreamStart(_) => {
                    // A new stream on the same element (e.g. a playlist): timing restarts.
                    if let Some(ev) = state.stall.on_discontinuity() {
                        messages.push(state.stall_message(ev));
                    }
                    state.cadence.on_discontinuity();
                    state.last_pts = None;
                }
                EventView::Eos(_) => {
                    for ev in state.stall.finish() {
                        messages.push(state.stall_message(ev));
                    }
                    if let Some(ev) = state.freeze.finish() {
                        messages.push(state.freeze_message(ev));
                    }
                    if let Some(ev) = state.black.finish() {
                        messages.push(state.black_message(ev));
                    }
                    Self::cancel_arrival_check(state);
                    state.sync_metrics(state.stall.latest());
                    messages.push(state.stats(state.stall.latest()));
                }
                _ => {}
            }
        }
        // Messages go out before the event does, so they precede EOS on the bus.
        self.post(messages);
        self.parent_sink_event(event)
    }

    fn transform_ip_passthrough(
        &self,
        buf: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut messages = Vec::new();
        // Upstream is asked with no lock held.
        let live = self
            .check_live
            .swap(false, Ordering::SeqCst)
            .then(|| self.upstream_is_live());
        let mut jobs = Vec::new();
        let mut workers = None;
        if let Some(state) = self.lock_state().as_mut() {
            if let Some(live) = live {
                gst::debug!(CAT, imp = self, "Upstream live: {live}");
                state.stall.set_live(live);
            }
            if let Some(time) = self.observe_frame(state, buf.as_ref(), &mut messages) {
                jobs = state.sample(buf, time);
                workers = state.workers.clone();
            }
        }
        self.post(messages);
        // Handed over with no lock held: a non-leaky hand-over may wait for the workers.
        if let Some(workers) = workers
            && !jobs.is_empty()
        {
            let dropped = workers.submit(jobs);
            if dropped > 0
                && let Some(state) = self.lock_state().as_ref()
            {
                for _ in 0..dropped {
                    state.metrics.window_dropped();
                }
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
