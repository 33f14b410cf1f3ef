// SPDX-License-Identifier: MPL-2.0
//! Prometheus metrics: one registry per process, an HTTP endpoint shared by every element
//! ([`http`]), and an optional text file for node_exporter's textfile collector. Free of
//! GStreamer types.
//!
//! Every series carries the operator-chosen `stream` label (the element's `stream-id`); the
//! other labels are bounded sets (`level`, `stage`, `provider`). An element that goes to NULL
//! removes its series, so a process that adds and removes streams does not grow.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

mod http;
pub use http::{
    MAX_CONNECTIONS, MAX_REQUEST_BYTES, REQUEST_DEADLINE, Route, ServeError, route, serve,
    served_address,
};

use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

const STALL_BUCKETS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
const INFERENCE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide metric families.
pub struct Families {
    pub registry: Registry,
    frames: IntCounterVec,
    stalls: IntCounterVec,
    stall_seconds: HistogramVec,
    stalled: IntGaugeVec,
    stall_ratio: GaugeVec,
    initial_buffering: GaugeVec,
    freezes: IntCounterVec,
    frozen_seconds: CounterVec,
    frozen: IntGaugeVec,
    quality_score: GaugeVec,
    level_probability: GaugeVec,
    windows_scored: IntCounterVec,
    windows_dropped: IntCounterVec,
    inference_seconds: HistogramVec,
    provider_info: IntGaugeVec,
    quality_stale: IntGaugeVec,
    black: IntGaugeVec,
    black_seconds: CounterVec,
    frames_dropped: IntCounterVec,
    jitter: GaugeVec,
    rendition_switches: IntCounterVec,
    rendition_seconds: CounterVec,
    corrupted: IntCounterVec,
    discont: IntCounterVec,
}

impl Families {
    /// Every family, for registration and for listing names.
    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.frames.clone()),
            Box::new(self.stalls.clone()),
            Box::new(self.stall_seconds.clone()),
            Box::new(self.stalled.clone()),
            Box::new(self.stall_ratio.clone()),
            Box::new(self.initial_buffering.clone()),
            Box::new(self.freezes.clone()),
            Box::new(self.frozen_seconds.clone()),
            Box::new(self.frozen.clone()),
            Box::new(self.quality_score.clone()),
            Box::new(self.level_probability.clone()),
            Box::new(self.windows_scored.clone()),
            Box::new(self.windows_dropped.clone()),
            Box::new(self.inference_seconds.clone()),
            Box::new(self.provider_info.clone()),
            Box::new(self.quality_stale.clone()),
            Box::new(self.black.clone()),
            Box::new(self.black_seconds.clone()),
            Box::new(self.frames_dropped.clone()),
            Box::new(self.jitter.clone()),
            Box::new(self.rendition_switches.clone()),
            Box::new(self.rendition_seconds.clone()),
            Box::new(self.corrupted.clone()),
            Box::new(self.discont.clone()),
        ]
    }

    /// Names of every metric family this process can expose.
    pub fn names(&self) -> Vec<String> {
        self.collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }

    fn new() -> Self {
        let s = &["stream"];
        let families = Families {
            frames: IntCounterVec::new(Opts::new("qoe_frames_total", "Video frames seen"), s)
                .unwrap(),
            stalls: IntCounterVec::new(Opts::new("qoe_stalls_total", "Playback stalls started"), s)
                .unwrap(),
            stall_seconds: HistogramVec::new(
                HistogramOpts::new("qoe_stall_seconds", "Durations of ended stalls")
                    .buckets(STALL_BUCKETS.to_vec()),
                s,
            )
            .unwrap(),
            stalled: IntGaugeVec::new(Opts::new("qoe_stalled", "1 while playback is stalled"), s)
                .unwrap(),
            stall_ratio: GaugeVec::new(
                Opts::new("qoe_stall_ratio", "Stall time over watched time (0..1)"),
                s,
            )
            .unwrap(),
            initial_buffering: GaugeVec::new(
                Opts::new(
                    "qoe_initial_buffering_seconds",
                    "Time from PLAYING to the first frame (live streams)",
                ),
                s,
            )
            .unwrap(),
            freezes: IntCounterVec::new(
                Opts::new("qoe_freezes_total", "Content freezes started"),
                s,
            )
            .unwrap(),
            frozen_seconds: CounterVec::new(
                Opts::new("qoe_frozen_seconds_total", "Time the picture was frozen"),
                s,
            )
            .unwrap(),
            frozen: IntGaugeVec::new(
                Opts::new("qoe_frozen", "1 while the picture is frozen (a freeze is going on)"),
                s,
            )
            .unwrap(),
            quality_score: GaugeVec::new(
                Opts::new("qoe_quality_score", "Latest window's quality score (0..1)"),
                s,
            )
            .unwrap(),
            level_probability: GaugeVec::new(
                Opts::new(
                    "qoe_quality_level_probability",
                    "Latest window's probability of each quality level",
                ),
                &["stream", "level"],
            )
            .unwrap(),
            windows_scored: IntCounterVec::new(
                Opts::new("qoe_windows_scored_total", "Windows scored by the model"),
                s,
            )
            .unwrap(),
            windows_dropped: IntCounterVec::new(
                Opts::new(
                    "qoe_windows_dropped_total",
                    "Windows dropped because inference was busy",
                ),
                s,
            )
            .unwrap(),
            inference_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "qoe_inference_seconds",
                    "Inference time per window and stage",
                )
                .buckets(INFERENCE_BUCKETS.to_vec()),
                &["stream", "stage"],
            )
            .unwrap(),
            provider_info: IntGaugeVec::new(
                Opts::new(
                    "qoe_execution_provider_info",
                    "1 for the execution provider in use",
                ),
                &["stream", "provider"],
            )
            .unwrap(),
            quality_stale: IntGaugeVec::new(
                Opts::new(
                    "qoe_quality_stale",
                    "1 while the model fails: the quality series hold their last good values",
                ),
                &["stream"],
            )
            .unwrap(),
            black: IntGaugeVec::new(Opts::new("qoe_black", "1 while the picture is black"), s)
                .unwrap(),
            black_seconds: CounterVec::new(
                Opts::new("qoe_black_seconds_total", "Time the picture was black"),
                s,
            )
            .unwrap(),
            frames_dropped: IntCounterVec::new(
                Opts::new(
                    "qoe_frames_dropped_total",
                    "Frames missing in holes shorter than the stall threshold (stutter)",
                ),
                s,
            )
            .unwrap(),
            jitter: GaugeVec::new(
                Opts::new(
                    "qoe_frame_interval_jitter_seconds",
                    "Live streams: deviation of frame arrival intervals from the frame period, over the last 300 frames",
                ),
                &["stream", "quantile"],
            )
            .unwrap(),
            rendition_switches: IntCounterVec::new(
                Opts::new(
                    "qoe_rendition_switches_total",
                    "Changes of picture size (adaptive streaming), up or down in pixels",
                ),
                &["stream", "direction"],
            )
            .unwrap(),
            rendition_seconds: CounterVec::new(
                Opts::new(
                    "qoe_rendition_seconds_total",
                    "Time shown at each rendition, by height (at most 8 heights, then \"other\")",
                ),
                &["stream", "height"],
            )
            .unwrap(),
            corrupted: IntCounterVec::new(
                Opts::new(
                    "qoe_corrupted_buffers_total",
                    "Frames the decoder flagged corrupted (GST_BUFFER_FLAG_CORRUPTED)",
                ),
                s,
            )
            .unwrap(),
            discont: IntCounterVec::new(
                Opts::new(
                    "qoe_discont_buffers_total",
                    "Frames flagged as a discontinuity (GST_BUFFER_FLAG_DISCONT)",
                ),
                s,
            )
            .unwrap(),
            registry: Registry::new(),
        };
        for collector in families.collectors() {
            families
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        families
    }
}

/// The process-wide families.
pub fn families() -> &'static Families {
    static FAMILIES: LazyLock<Families> = LazyLock::new(Families::new);
    &FAMILIES
}

/// The whole registry in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families().registry.gather(), &mut out)
        .expect("text encoding cannot fail");
    String::from_utf8(out).expect("text format is UTF-8")
}

/// A stream's running figures, as the element knows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamFigures {
    pub stalls: u64,
    pub stalled: bool,
    pub stall_ratio: f64,
    pub initial_buffering_seconds: Option<f64>,
    pub freezes: u64,
    pub frozen_seconds: f64,
    pub frozen: bool,
    pub black: bool,
    pub black_seconds: f64,
    pub frames_dropped: u64,
    /// Live streams: the arrival jitter's median and 99th percentile, seconds.
    pub jitter: Option<(f64, f64)>,
    pub switches_up: u64,
    pub switches_down: u64,
    /// Seconds shown per rendition height label.
    pub rendition_seconds: Vec<(String, f64)>,
    pub corrupted: u64,
    pub discont: u64,
}

/// One window's quality result (filled once scoring exists).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QualityFigures<'a> {
    pub score: f64,
    pub levels: &'a [(&'a str, f64)],
    pub stages: &'a [(&'a str, f64)],
    pub provider: &'a str,
}

/// One stream's series. Counters only move forward: they follow the element's totals by
/// adding what is new since the last update, also across restarts of the element.
#[derive(Debug)]
pub struct StreamMetrics {
    stream: String,
    frames: prometheus::IntCounter,
    seen: StreamFigures,
    levels: BTreeSet<String>,
    stages: BTreeSet<String>,
    provider: Option<String>,
    /// Rendition heights with a series.
    heights: BTreeSet<String>,
}

/// Labels of the jitter quantiles.
const QUANTILES: [&str; 2] = ["0.5", "0.99"];
/// Labels of the switch directions.
const DIRECTIONS: [&str; 2] = ["up", "down"];

impl StreamMetrics {
    pub fn new(stream: &str) -> Self {
        let f = families();
        let l = &[stream];
        let m = StreamMetrics {
            stream: stream.to_owned(),
            frames: f.frames.with_label_values(l),
            seen: StreamFigures::default(),
            levels: BTreeSet::new(),
            stages: BTreeSet::new(),
            provider: None,
            heights: BTreeSet::new(),
        };
        // Series exist from the start, at zero, so dashboards see the stream at once.
        f.stalls.with_label_values(l);
        f.stalled.with_label_values(l).set(0);
        f.stall_ratio.with_label_values(l).set(0.0);
        f.freezes.with_label_values(l);
        f.frozen_seconds.with_label_values(l);
        f.frozen.with_label_values(l).set(0);
        f.stall_seconds.with_label_values(l);
        f.windows_scored.with_label_values(l);
        f.windows_dropped.with_label_values(l);
        f.quality_stale.with_label_values(l).set(0);
        f.black.with_label_values(l).set(0);
        f.black_seconds.with_label_values(l);
        f.frames_dropped.with_label_values(l);
        for direction in DIRECTIONS {
            f.rendition_switches.with_label_values(&[stream, direction]);
        }
        f.corrupted.with_label_values(l);
        f.discont.with_label_values(l);
        m
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The element's totals restart from zero (a new run of the element).
    pub fn rebase(&mut self) {
        self.seen = StreamFigures::default();
    }

    /// Counts frames; a plain atomic add on the streaming thread.
    pub fn frames(&self, n: u64) {
        self.frames.inc_by(n);
    }

    pub fn stall_ended(&self, seconds: f64) {
        families()
            .stall_seconds
            .with_label_values(&[&self.stream])
            .observe(seconds);
    }

    pub fn update(&mut self, now: &StreamFigures) {
        let f = families();
        let l = &[self.stream.as_str()];
        f.stalls
            .with_label_values(l)
            .inc_by(now.stalls.saturating_sub(self.seen.stalls));
        f.freezes
            .with_label_values(l)
            .inc_by(now.freezes.saturating_sub(self.seen.freezes));
        let frozen = now.frozen_seconds - self.seen.frozen_seconds;
        if frozen > 0.0 {
            f.frozen_seconds.with_label_values(l).inc_by(frozen);
        }
        f.stalled.with_label_values(l).set(now.stalled as i64);
        f.frozen.with_label_values(l).set(now.frozen as i64);
        f.stall_ratio.with_label_values(l).set(now.stall_ratio);
        if let Some(initial) = now.initial_buffering_seconds {
            f.initial_buffering.with_label_values(l).set(initial);
        }
        f.black.with_label_values(l).set(now.black as i64);
        let black = now.black_seconds - self.seen.black_seconds;
        if black > 0.0 {
            f.black_seconds.with_label_values(l).inc_by(black);
        }
        let counts = [
            (
                &f.frames_dropped,
                now.frames_dropped,
                self.seen.frames_dropped,
            ),
            (&f.corrupted, now.corrupted, self.seen.corrupted),
            (&f.discont, now.discont, self.seen.discont),
        ];
        for (family, now, seen) in counts {
            family.with_label_values(l).inc_by(now.saturating_sub(seen));
        }
        for (direction, now, seen) in [
            ("up", now.switches_up, self.seen.switches_up),
            ("down", now.switches_down, self.seen.switches_down),
        ] {
            f.rendition_switches
                .with_label_values(&[l[0], direction])
                .inc_by(now.saturating_sub(seen));
        }
        for (height, seconds) in &now.rendition_seconds {
            let seen = self
                .seen
                .rendition_seconds
                .iter()
                .find(|(h, _)| h == height)
                .map_or(0.0, |(_, s)| *s);
            if *seconds > seen {
                f.rendition_seconds
                    .with_label_values(&[l[0], height])
                    .inc_by(seconds - seen);
            }
            self.heights.insert(height.clone());
        }
        if let Some((p50, p99)) = now.jitter {
            for (quantile, value) in QUANTILES.iter().zip([p50, p99]) {
                f.jitter.with_label_values(&[l[0], quantile]).set(value);
            }
        }
        let mut heights = self.seen.rendition_seconds.clone();
        for (height, seconds) in &now.rendition_seconds {
            match heights.iter_mut().find(|(h, _)| h == height) {
                Some((_, s)) => *s = s.max(*seconds),
                None => heights.push((height.clone(), *seconds)),
            }
        }
        self.seen = StreamFigures {
            stalls: now.stalls.max(self.seen.stalls),
            freezes: now.freezes.max(self.seen.freezes),
            frozen_seconds: now.frozen_seconds.max(self.seen.frozen_seconds),
            black_seconds: now.black_seconds.max(self.seen.black_seconds),
            frames_dropped: now.frames_dropped.max(self.seen.frames_dropped),
            corrupted: now.corrupted.max(self.seen.corrupted),
            discont: now.discont.max(self.seen.discont),
            switches_up: now.switches_up.max(self.seen.switches_up),
            switches_down: now.switches_down.max(self.seen.switches_down),
            rendition_seconds: heights,
            ..now.clone()
        };
    }

    /// A scored window.
    pub fn quality(&mut self, q: &QualityFigures) {
        let f = families();
        let s = self.stream.as_str();
        f.quality_score.with_label_values(&[s]).set(q.score);
        for (level, p) in q.levels {
            f.level_probability.with_label_values(&[s, level]).set(*p);
            self.levels.insert((*level).to_owned());
        }
        for (stage, seconds) in q.stages {
            f.inference_seconds
                .with_label_values(&[s, stage])
                .observe(*seconds);
            self.stages.insert((*stage).to_owned());
        }
        if self.provider.as_deref() != Some(q.provider) {
            if let Some(old) = self.provider.take() {
                let _ = f.provider_info.remove_label_values(&[s, &old]);
            }
            f.provider_info.with_label_values(&[s, q.provider]).set(1);
            self.provider = Some(q.provider.to_owned());
        }
        f.windows_scored.with_label_values(&[s]).inc();
    }

    /// Whether the model is failing. The quality series are left as they were: they hold
    /// the last good values.
    pub fn stale(&self, stale: bool) {
        families()
            .quality_stale
            .with_label_values(&[&self.stream])
            .set(stale as i64);
    }

    pub fn window_dropped(&self) {
        families()
            .windows_dropped
            .with_label_values(&[&self.stream])
            .inc();
    }

    /// Removes every series of this stream.
    pub fn remove(self) {
        let f = families();
        let s = self.stream.as_str();
        let l = &[s];
        // A series never touched is absent; that is not an error.
        let _ = f.frames.remove_label_values(l);
        let _ = f.stalls.remove_label_values(l);
        let _ = f.stall_seconds.remove_label_values(l);
        let _ = f.stalled.remove_label_values(l);
        let _ = f.stall_ratio.remove_label_values(l);
        let _ = f.initial_buffering.remove_label_values(l);
        let _ = f.freezes.remove_label_values(l);
        let _ = f.frozen_seconds.remove_label_values(l);
        let _ = f.frozen.remove_label_values(l);
        let _ = f.quality_score.remove_label_values(l);
        let _ = f.windows_scored.remove_label_values(l);
        let _ = f.windows_dropped.remove_label_values(l);
        let _ = f.quality_stale.remove_label_values(l);
        for level in &self.levels {
            let _ = f.level_probability.remove_label_values(&[s, level]);
        }
        for stage in &self.stages {
            let _ = f.inference_seconds.remove_label_values(&[s, stage]);
        }
        if let Some(provider) = &self.provider {
            let _ = f.provider_info.remove_label_values(&[s, provider]);
        }
        for family in [&f.frames_dropped, &f.corrupted, &f.discont] {
            let _ = family.remove_label_values(l);
        }
        let _ = f.black.remove_label_values(l);
        let _ = f.black_seconds.remove_label_values(l);
        for quantile in QUANTILES {
            let _ = f.jitter.remove_label_values(&[s, quantile]);
        }
        for direction in DIRECTIONS {
            let _ = f.rendition_switches.remove_label_values(&[s, direction]);
        }
        for height in &self.heights {
            let _ = f.rendition_seconds.remove_label_values(&[s, height]);
        }
    }
}

/// Writes `render()` to `path` atomically (a temporary file in the same folder, renamed).
pub fn write_textfile(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("metrics file path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, render())?;
    std::fs::rename(&tmp, path)
}

/// Textfile writers: one thread per path, alive while some element uses it.
static WRITERS: Mutex<Option<HashMap<PathBuf, Arc<AtomicUsize>>>> = Mutex::new(None);

/// A registration of a textfile writer; dropping it releases the path.
#[derive(Debug)]
pub struct TextfileLease {
    users: Arc<AtomicUsize>,
}

impl Drop for TextfileLease {
    fn drop(&mut self) {
        self.users.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Writes the metrics to `path` every `interval` while a lease is held. The first write
/// happens now, so that a bad path is reported at once.
pub fn textfile(path: &Path, interval: Duration) -> std::io::Result<TextfileLease> {
    write_textfile(path)?;
    let mut writers = WRITERS.lock().unwrap();
    let writers = writers.get_or_insert_with(HashMap::new);
    if let Some(users) = writers.get(path) {
        if users.fetch_add(1, Ordering::SeqCst) > 0 {
            return Ok(TextfileLease {
                users: users.clone(),
            });
        }
        // The last writer is ending; start a new one below.
        users.fetch_sub(1, Ordering::SeqCst);
    }
    let users = Arc::new(AtomicUsize::new(1));
    writers.insert(path.to_owned(), users.clone());
    let (path, thread_users) = (path.to_owned(), users.clone());
    std::thread::Builder::new()
        .name("qoe-metrics-file".into())
        .spawn(move || {
            let tick = Duration::from_millis(100).min(interval);
            let mut next = Instant::now() + interval;
            while thread_users.load(Ordering::SeqCst) > 0 {
                std::thread::sleep(tick);
                if Instant::now() >= next {
                    let _ = write_textfile(&path);
                    next += interval;
                }
            }
            // A last write, so the file holds the final figures.
            let _ = write_textfile(&path);
        })?;
    Ok(TextfileLease { users })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
    }

    #[test]
    fn every_series_of_a_stream_exists_from_its_start() {
        let mut m = StreamMetrics::new("unit-zero");
        let text = render();
        for series in [
            "qoe_frames_total",
            "qoe_stalls_total",
            "qoe_stall_seconds_count",
            "qoe_stalled",
            "qoe_frozen",
            "qoe_freezes_total",
            "qoe_windows_scored_total",
            "qoe_windows_dropped_total",
            "qoe_quality_stale",
            "qoe_black",
            "qoe_frames_dropped_total",
        ] {
            assert_eq!(
                sample(&text, &format!("{series}{{stream=\"unit-zero\"}}")),
                Some(0.0),
                "{series}"
            );
        }
        m.update(&StreamFigures {
            frozen: true,
            ..Default::default()
        });
        assert_eq!(
            sample(&render(), "qoe_frozen{stream=\"unit-zero\"}"),
            Some(1.0)
        );
        m.remove();
        assert!(!render().contains("unit-zero"));
    }

    #[test]
    fn stream_series_follow_totals_forward_and_are_removed() {
        let mut m = StreamMetrics::new("unit-a");
        m.frames(10);
        m.update(&StreamFigures {
            stalls: 2,
            freezes: 1,
            frozen_seconds: 1.5,
            stall_ratio: 0.25,
            ..Default::default()
        });
        // The element restarts: its totals restart, the counters do not go back.
        m.rebase();
        m.update(&StreamFigures {
            stalls: 1,
            ..Default::default()
        });
        m.stall_ended(0.7);
        let text = render();
        assert_eq!(
            sample(&text, "qoe_frames_total{stream=\"unit-a\"}"),
            Some(10.0)
        );
        assert_eq!(
            sample(&text, "qoe_stalls_total{stream=\"unit-a\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "qoe_freezes_total{stream=\"unit-a\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "qoe_frozen_seconds_total{stream=\"unit-a\"}"),
            Some(1.5)
        );
        assert_eq!(
            sample(&text, "qoe_stall_seconds_count{stream=\"unit-a\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "qoe_stall_ratio{stream=\"unit-a\"}"),
            Some(0.0)
        );
        m.remove();
        assert!(!render().contains("unit-a"));
    }

    #[test]
    fn quality_series_are_labelled_by_level_stage_and_provider() {
        let mut m = StreamMetrics::new("unit-q");
        m.quality(&QualityFigures {
            score: 0.8,
            levels: &[("high", 0.6), ("good", 0.4)],
            stages: &[("vision", 0.01), ("decoder", 0.2)],
            provider: "cpu",
        });
        m.window_dropped();
        let text = render();
        assert_eq!(
            sample(&text, "qoe_quality_score{stream=\"unit-q\"}"),
            Some(0.8)
        );
        assert_eq!(
            sample(
                &text,
                "qoe_quality_level_probability{level=\"good\",stream=\"unit-q\"}"
            ),
            Some(0.4)
        );
        assert_eq!(
            sample(
                &text,
                "qoe_inference_seconds_count{stage=\"decoder\",stream=\"unit-q\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "qoe_execution_provider_info{provider=\"cpu\",stream=\"unit-q\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "qoe_windows_dropped_total{stream=\"unit-q\"}"),
            Some(1.0)
        );
        m.remove();
        assert!(!render().contains("unit-q"));
    }

    #[test]
    fn textfile_is_written_atomically() {
        let dir = std::env::temp_dir().join(format!("qoe-textfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = StreamMetrics::new("unit-file");
        m.frames(3);
        let path = dir.join("qoe.prom");
        let lease = textfile(&path, Duration::from_millis(50)).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("qoe_frames_total{stream=\"unit-file\"} 3")
        );
        m.frames(2);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("qoe_frames_total{stream=\"unit-file\"} 5")
        );
        drop(lease);
        m.remove();
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("qoe.prom")],
            "no temporary files left"
        );
        let err = textfile(
            Path::new("/nonexistent-dir/qoe.prom"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
