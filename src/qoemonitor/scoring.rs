// SPDX-License-Identifier: MPL-2.0
//! Quality scoring off the streaming thread.
//!
//! The streaming thread only decides which frames are sampled and when a window is due, and
//! hands over references to the sampled buffers (no copy, no conversion). A feature thread
//! converts them to RGB with GStreamer's converter, computes each keyframe's and each frame's
//! features once ([`StreamScorer`]) and passes complete windows on; a scoring thread runs
//! the per-window decoder; an explanation thread (only when asked for) generates text. Each
//! hand-over is a [`BoundedQueue`]: leaky by default, so the watched pipeline never waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::glib;
use gst_video::prelude::*;

use qoe_core::queue::BoundedQueue;
use qoe_core::sampling::{KeyframeSampler, Window, WindowScheduler};
use qoe_core::stall::WindowStalls;
use qoe_core::time::{Nanos, SECOND};
use qoe_model::bundle::ScoreMode;
use qoe_model::level::{level_of_score, rank};
use qoe_model::preprocess::RgbImage;
use qoe_model::stream::{ReadyWindow, StageTimes, StreamScorer, Unscorable};
use qoe_model::{Priority, Provider, Scorer};

/// Sampled frames (and window marks) waiting for the feature thread.
const INTAKE_CAPACITY: usize = 48;
/// Complete windows waiting for the decoder.
const WINDOW_CAPACITY: usize = 2;
/// Reports waiting to be delivered to the element.
const REPORT_CAPACITY: usize = 64;
/// How long end of stream waits for the last windows to be scored.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstQoeExplain")]
pub enum Explain {
    #[default]
    #[enum_value(name = "Never", nick = "never")]
    Never,
    #[enum_value(name = "When the quality level drops", nick = "on-drop")]
    OnDrop,
    #[enum_value(name = "Every window (rate-limited)", nick = "always")]
    Always,
}

/// Why the workers cannot start or a sampled frame cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error(transparent)]
    Model(#[from] qoe_model::Error),
    #[error("cannot start the {thread} thread: {source}")]
    Thread {
        thread: &'static str,
        source: std::io::Error,
    },
    /// A sampled frame cannot be converted to RGB.
    #[error("{0}")]
    Convert(String),
    /// The model code panicked: caught, so that the stream goes on.
    #[error("the {stage} panicked: {message}")]
    Panicked {
        stage: &'static str,
        message: String,
    },
}

/// Runs model work `f` of `stage`; a panic in it becomes an error (and is counted) instead
/// of ending the worker, so that windows go stale and EOS still flows.
fn guarded<T>(
    shared: &Shared,
    stage: &'static str,
    f: impl FnOnce() -> Result<T, ScoringError>,
) -> Result<T, ScoringError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        shared.panics.fetch_add(1, Ordering::Relaxed);
        let message = qoe_model::error::panic_message(&*panic);
        Err(ScoringError::Panicked { stage, message })
    })
}

/// What the workers tell the element.
#[derive(Debug, Clone)]
pub enum Report {
    Quality(Quality),
    /// A window could not be scored; `warn` on the first failure after a good score.
    Failed {
        error: String,
        warn: bool,
    },
    /// A window was not scored: the queue overflowed or its frames were lost.
    Dropped {
        reason: &'static str,
    },
    Explanation {
        window: Window,
        running_time: Nanos,
        text: String,
        seconds: f64,
    },
}

#[derive(Debug, Clone)]
pub struct Quality {
    pub window: Window,
    /// Running time at which the window was due.
    pub running_time: Nanos,
    pub score: f64,
    pub level: String,
    /// Level word → probability (VQA² level logits only).
    pub probabilities: Vec<(String, f64)>,
    pub keyframes: usize,
    pub motion_frames: usize,
    pub times: StageTimes,
    pub provider: Provider,
    /// The model failed since the last good score (this one then repeats the last good one).
    pub stale: bool,
}

pub type ReportSink = Arc<dyn Fn(Report) + Send + Sync>;

/// Settings the workers need.
#[derive(Debug, Clone)]
pub struct ScoringConfig {
    pub window: Nanos,
    pub hop: Nanos,
    pub leaky: bool,
    pub explain: Explain,
    pub explain_interval: Nanos,
    pub explain_question: String,
    pub explain_max_tokens: usize,
    /// The workers' scheduling against the pipeline's threads.
    pub priority: Priority,
}

struct ExplainJob {
    ready: ReadyWindow,
}

/// Counters and flags the threads share.
#[derive(Default)]
struct Shared {
    /// Stream time of the newest frame dropped from the intake (+1, 0: none).
    lost_at: AtomicU64,
    frames_dropped: AtomicU64,
    windows_dropped: AtomicU64,
    windows_scored: AtomicU64,
    stale: AtomicBool,
    last_good: Mutex<Option<Quality>>,
    /// Panics of the model code, caught.
    panics: AtomicU64,
}

/// What the workers have done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCounts {
    pub windows_scored: u64,
    pub windows_dropped: u64,
    pub frames_dropped: u64,
    /// The model failed since its last good score.
    pub stale: bool,
    /// Panics of the model code, caught (each also a failure).
    pub panics: u64,
}

/// The streaming thread's side: which frames are sampled and when windows are due. Lives
/// under the element's state lock; it only produces jobs, which [`Workers::submit`] hands
/// over after that lock is released (a non-leaky hand-over may wait).
pub struct Sampler {
    config: ScoringConfig,
    keyframes: KeyframeSampler,
    scheduler: WindowScheduler,
    motion_stride: Option<u64>,
    frame_index: u64,
    last_end: Option<Nanos>,
}

/// Work for the feature thread.
pub struct Job(JobKind);

enum JobKind {
    Frame {
        buffer: gst::Buffer,
        info: Arc<gst_video::VideoInfo>,
        time: Nanos,
        keyframe: bool,
        motion: bool,
    },
    Window {
        window: Window,
        stall: Option<WindowStalls>,
        running_time: Nanos,
    },
    End,
    Reset,
}

impl Sampler {
    pub fn new(scorer: &Scorer, config: ScoringConfig) -> Sampler {
        Sampler {
            keyframes: KeyframeSampler::with_phase(scorer.keyframe_phase()),
            scheduler: WindowScheduler::new(config.window, config.hop),
            config,
            motion_stride: scorer.motion_stride(),
            frame_index: 0,
            last_end: None,
        }
    }

    /// A frame at running time `time`: a few comparisons, and a buffer reference when the
    /// frame is sampled. `stall` gives a window's stall figures.
    pub fn on_frame(
        &mut self,
        buffer: &gst::Buffer,
        info: &Arc<gst_video::VideoInfo>,
        time: Nanos,
        duration: Option<Nanos>,
        stall: impl Fn(Window) -> Option<WindowStalls>,
    ) -> Vec<Job> {
        let mut jobs: Vec<Job> = self
            .scheduler
            .on_frame(time)
            .into_iter()
            .map(|window| {
                Job(JobKind::Window {
                    window,
                    stall: stall(window),
                    running_time: time,
                })
            })
            .collect();
        let keyframe = self.keyframes.is_keyframe(time);
        let motion = self
            .motion_stride
            .is_some_and(|stride| self.frame_index.is_multiple_of(stride));
        self.frame_index += 1;
        self.last_end = Some(time + duration.unwrap_or(0));
        if keyframe || motion {
            jobs.push(Job(JobKind::Frame {
                buffer: buffer.clone(),
                info: info.clone(),
                time,
                keyframe,
                motion,
            }));
        }
        jobs
    }

    /// End of stream: the final (partial) window, then the end mark.
    pub fn finish(&mut self, stall: impl Fn(Window) -> Option<WindowStalls>) -> Vec<Job> {
        let mut jobs = Vec::new();
        if let Some(end) = self.last_end
            && let Some(window) = self.scheduler.finish(end)
        {
            jobs.push(Job(JobKind::Window {
                window,
                stall: stall(window),
                running_time: end,
            }));
        }
        jobs.push(Job(JobKind::End));
        jobs
    }

    /// A flushing seek or a new stream: sampling starts afresh; the job tells the workers.
    pub fn reset(&mut self) -> Job {
        self.keyframes.restart();
        self.scheduler = WindowScheduler::new(self.config.window, self.config.hop);
        self.frame_index = 0;
        self.last_end = None;
        Job(JobKind::Reset)
    }
}

/// The worker threads of one stream and the queues to them.
pub struct Workers {
    leaky: bool,
    intake: Arc<BoundedQueue<JobKind>>,
    windows: Arc<BoundedQueue<ReadyWindow>>,
    explains: Arc<BoundedQueue<ExplainJob>>,
    reports: Arc<BoundedQueue<Report>>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    relay: Mutex<Option<JoinHandle<()>>>,
}

impl Workers {
    /// Starts the worker threads for one stream of `fps` frames per second.
    pub fn start(
        scorer: Arc<Scorer>,
        config: &ScoringConfig,
        fps: Option<f64>,
        sink: ReportSink,
    ) -> Result<Workers, ScoringError> {
        let scheduler = WindowScheduler::new(config.window, config.hop);
        // One fast-pathway run per hop of frames keeps the context overhead small.
        let fps = fps.unwrap_or(30.0).max(1.0);
        let chunk = ((scheduler.hop() / SECOND) as f64 * fps).round().max(1.0) as usize;
        let stream = StreamScorer::new(scorer.clone(), scheduler.window(), chunk)?;
        let intake = Arc::new(BoundedQueue::new(INTAKE_CAPACITY));
        let windows = Arc::new(BoundedQueue::new(WINDOW_CAPACITY));
        let explains = Arc::new(BoundedQueue::new(1));
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        // The model's threads may run at a low priority; a report takes the element's lock,
        // which the streaming thread needs for every frame, so reports are delivered by a
        // thread at the pipeline's priority: a starved model thread never holds that lock.
        let reports = Arc::new(BoundedQueue::new(REPORT_CAPACITY));
        let relay = std::thread::Builder::new()
            .name("qoe-report".into())
            .spawn({
                let reports = reports.clone();
                move || {
                    while let Some(report) = reports.pop() {
                        sink(report);
                        reports.done();
                    }
                }
            })
            .map_err(|source| ScoringError::Thread {
                thread: "qoe-report",
                source,
            })?;
        let sink: ReportSink = {
            let reports = reports.clone();
            Arc::new(move |report| {
                reports.push(report, false);
            })
        };
        let priority = config.priority;
        let spawn = |thread: &'static str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(thread.into())
                .spawn(move || {
                    // Refused only by an unusual OS policy: the worker then runs as before.
                    let _ = priority.apply_to_current_thread();
                    f()
                })
                .map_err(|source| ScoringError::Thread { thread, source })
        };
        threads.push(spawn(
            "qoe-features",
            Box::new({
                let (intake, windows, shared, sink, leaky) = (
                    intake.clone(),
                    windows.clone(),
                    shared.clone(),
                    sink.clone(),
                    config.leaky,
                );
                move || feature_thread(stream, &intake, &windows, &shared, &sink, leaky)
            }),
        )?);
        threads.push(spawn(
            "qoe-score",
            Box::new({
                let (windows, explains, shared, sink, scorer, config) = (
                    windows.clone(),
                    explains.clone(),
                    shared.clone(),
                    sink.clone(),
                    scorer.clone(),
                    config.clone(),
                );
                move || score_thread(&scorer, &config, &windows, &explains, &shared, &sink)
            }),
        )?);
        if config.explain != Explain::Never {
            threads.push(spawn(
                "qoe-explain",
                Box::new({
                    let (explains, shared, sink, scorer, config) = (
                        explains.clone(),
                        shared.clone(),
                        sink.clone(),
                        scorer.clone(),
                        config.clone(),
                    );
                    move || explain_thread(&scorer, &config, &explains, &shared, &sink)
                }),
            )?);
        }
        Ok(Workers {
            leaky: config.leaky,
            intake,
            windows,
            explains,
            reports,
            shared,
            threads: Mutex::new(threads),
            relay: Mutex::new(Some(relay)),
        })
    }

    /// Hands jobs over; call with no element lock held (a non-leaky hand-over may wait).
    /// Returns how many windows were dropped on the way.
    pub fn submit(&self, jobs: Vec<Job>) -> u64 {
        let mut dropped_windows = 0;
        for Job(job) in jobs {
            // End and reset marks are never dropped.
            let leaky = self.leaky && matches!(job, JobKind::Frame { .. } | JobKind::Window { .. });
            match self.intake.push(job, leaky) {
                None | Some(JobKind::End | JobKind::Reset) => {}
                Some(JobKind::Frame { time, .. }) => {
                    self.shared.frames_dropped.fetch_add(1, Ordering::Relaxed);
                    self.shared.lost_at.fetch_max(time + 1, Ordering::SeqCst);
                }
                Some(JobKind::Window { .. }) => {
                    self.shared.windows_dropped.fetch_add(1, Ordering::Relaxed);
                    dropped_windows += 1;
                }
            }
        }
        dropped_windows
    }

    /// Waits (bounded) until every submitted window is scored: at end of stream, so that
    /// the last scores come before EOS.
    pub fn drain(&self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        self.intake
            .wait_idle(deadline.saturating_duration_since(Instant::now()));
        self.windows
            .wait_idle(deadline.saturating_duration_since(Instant::now()));
        self.reports
            .wait_idle(deadline.saturating_duration_since(Instant::now()));
    }

    /// Forgets queued work (flushing seek); the reset job from [`Sampler::reset`] follows.
    pub fn flush(&self) {
        self.intake.clear();
        self.windows.clear();
    }

    /// What the workers have done so far.
    pub fn counts(&self) -> WorkerCounts {
        WorkerCounts {
            windows_scored: self.shared.windows_scored.load(Ordering::Relaxed),
            windows_dropped: self.shared.windows_dropped.load(Ordering::Relaxed),
            frames_dropped: self.shared.frames_dropped.load(Ordering::Relaxed),
            stale: self.shared.stale.load(Ordering::Relaxed),
            panics: self.shared.panics.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.intake.close();
        self.windows.close();
        self.explains.close();
        for thread in self.threads.lock().unwrap().drain(..) {
            let _ = thread.join();
        }
        // The workers are gone: deliver what they reported, then end the relay.
        self.reports.wait_idle(Duration::from_secs(5));
        self.reports.close();
        if let Some(relay) = self.relay.lock().unwrap().take() {
            let _ = relay.join();
        }
    }
}

/// Converts a sampled frame to packed RGB with GStreamer's converter (any accepted format).
struct ToRgb {
    converter: Option<(
        gst_video::VideoInfo,
        gst_video::VideoConverter,
        gst_video::VideoInfo,
    )>,
}

impl ToRgb {
    fn convert(
        &mut self,
        buffer: gst::Buffer,
        info: &gst_video::VideoInfo,
    ) -> Result<RgbImage, ScoringError> {
        if self.converter.as_ref().is_none_or(|(i, _, _)| i != info) {
            let out = gst_video::VideoInfo::builder(
                gst_video::VideoFormat::Rgb,
                info.width(),
                info.height(),
            )
            .fps(info.fps())
            .par(info.par())
            .interlace_mode(info.interlace_mode())
            .build()
            .map_err(|e| ScoringError::Convert(format!("no RGB layout for {info:?}: {e}")))?;
            let converter = gst_video::VideoConverter::new(info, &out, None).map_err(|e| {
                ScoringError::Convert(format!("cannot convert {} to RGB: {e}", info.format()))
            })?;
            self.converter = Some((info.clone(), converter, out));
        }
        let (_, converter, out_info) = self.converter.as_ref().expect("just made");
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer, info).map_err(|_| {
            ScoringError::Convert("a sampled frame cannot be mapped for reading".into())
        })?;
        let out = gst::Buffer::with_size(out_info.size())
            .map_err(|e| ScoringError::Convert(format!("no RGB buffer: {e}")))?;
        let mut out = gst_video::VideoFrame::from_buffer_writable(out, out_info)
            .map_err(|_| ScoringError::Convert("cannot map the RGB frame".into()))?;
        converter.frame(&frame, &mut out);
        let (width, height) = (out.width() as usize, out.height() as usize);
        let stride = out.plane_stride()[0] as usize;
        let plane = out
            .plane_data(0)
            .map_err(|e| ScoringError::Convert(format!("the RGB plane: {e}")))?;
        let mut data = Vec::with_capacity(width * height * 3);
        for row in plane.chunks(stride).take(height) {
            data.extend_from_slice(&row[..width * 3]);
        }
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }
}

/// A failure: warns once per stale episode (the first failure after a good score), so that a
/// model that keeps failing does not flood the bus.
fn report_failure(shared: &Shared, sink: &ReportSink, error: impl std::fmt::Display) {
    let warn = !shared.stale.swap(true, Ordering::SeqCst);
    sink(Report::Failed {
        error: error.to_string(),
        warn,
    });
}

/// A window the failing model did not score: the last good figures again, flagged stale, so
/// that readers see the gap.
fn repeat_stale(shared: &Shared, sink: &ReportSink, window: Window, running_time: Nanos) {
    if let Some(last) = shared.last_good.lock().unwrap().clone() {
        sink(Report::Quality(Quality {
            window,
            running_time,
            stale: true,
            ..last
        }));
    }
}

/// A window whose features are missing: stale while the model is failing (its frames were
/// lost to an encoder or a server that is down, as a failing decoder loses a window),
/// otherwise dropped for `reason`.
fn window_lost(
    shared: &Shared,
    sink: &ReportSink,
    window: Window,
    due: Nanos,
    reason: &'static str,
) {
    match shared.stale.load(Ordering::SeqCst) {
        true => repeat_stale(shared, sink, window, due),
        false => window_dropped(shared, sink, reason),
    }
}

/// A window the workers will not score: counted, and reported for the metrics.
fn window_dropped(shared: &Shared, sink: &ReportSink, reason: &'static str) {
    shared.windows_dropped.fetch_add(1, Ordering::Relaxed);
    sink(Report::Dropped { reason });
}

fn feature_thread(
    mut stream: StreamScorer,
    intake: &BoundedQueue<JobKind>,
    windows: &BoundedQueue<ReadyWindow>,
    shared: &Shared,
    sink: &ReportSink,
    leaky: bool,
) {
    let mut rgb = ToRgb { converter: None };
    let mut lost_seen = 0;
    while let Some(job) = intake.pop() {
        let lost = shared.lost_at.load(Ordering::SeqCst);
        if lost != lost_seen {
            lost_seen = lost;
            stream.lose(lost - 1);
        }
        match job {
            JobKind::Frame {
                buffer,
                info,
                time,
                keyframe,
                motion,
            } => {
                // A frame that fails counts as lost (`add_frame` marks its own failures).
                let result = match rgb.convert(buffer, &info) {
                    Ok(image) => guarded(shared, "feature stage", || {
                        Ok(stream.add_frame(time, &image, keyframe, motion)?)
                    }),
                    Err(error) => Err(error),
                };
                if result.is_err() {
                    stream.lose(time);
                }
                if let Err(error) = result {
                    report_failure(shared, sink, error);
                }
            }
            JobKind::Window {
                window,
                stall,
                running_time,
            } => {
                if stream.request(window, stall, running_time).is_err() {
                    window_lost(
                        shared,
                        sink,
                        window,
                        running_time,
                        "frames of the window were lost",
                    );
                }
            }
            JobKind::End => {
                if let Err(error) = guarded(shared, "feature stage", || Ok(stream.finish()?)) {
                    report_failure(shared, sink, error);
                }
            }
            JobKind::Reset => stream.reset(),
        }
        for ready in stream.ready() {
            match ready {
                Ok(ready) => {
                    if windows.push(ready, leaky).is_some() {
                        window_dropped(shared, sink, "the scorer fell behind");
                    }
                }
                Err((window, due, Unscorable::Empty | Unscorable::Hole)) => {
                    window_lost(shared, sink, window, due, "no sampled frame in the window");
                }
            }
        }
        intake.done();
    }
}

/// The level a score falls in: the most probable level word when the model gives
/// probabilities, else five equal bins of the score's range (VQA²'s 20-point MOS bins).
fn level_of(scorer: &Scorer, score: f64, probabilities: &[f64]) -> String {
    let levels = &scorer.bundle().manifest.score.levels;
    if !probabilities.is_empty() && probabilities.len() == levels.len() {
        let best = probabilities
            .iter()
            .enumerate()
            .fold(0, |b, (i, p)| if *p > probabilities[b] { i } else { b });
        return levels[best].word.trim().to_owned();
    }
    level_of_score(score).to_owned()
}

fn score_thread(
    scorer: &Scorer,
    config: &ScoringConfig,
    windows: &BoundedQueue<ReadyWindow>,
    explains: &BoundedQueue<ExplainJob>,
    shared: &Shared,
    sink: &ReportSink,
) {
    let mut last_level: Option<usize> = None;
    let mut last_explained: Option<Nanos> = None;
    let levels: Vec<String> = scorer
        .bundle()
        .manifest
        .score
        .levels
        .iter()
        .map(|l| l.word.trim().to_owned())
        .collect();
    // An Assistant bundle (score.mode none) only explains.
    let scores = scorer.mode() != ScoreMode::None;
    while let Some(ready) = windows.pop() {
        let running_time = ready.due;
        let t0 = Instant::now();
        let result = scores.then(|| {
            guarded(shared, "scorer", || {
                let s = scorer.score_window(&ready.features)?;
                s.score
                    .map(|score| (score, s.probabilities))
                    .ok_or_else(|| {
                        qoe_model::Error::Input("the model's answer holds no score".into()).into()
                    })
            })
        });
        let decoder = t0.elapsed().as_secs_f64();
        let mut explain_now = config.explain == Explain::Always;
        match result {
            None => {}
            Some(Ok((score, probabilities))) => {
                shared.stale.store(false, Ordering::SeqCst);
                shared.windows_scored.fetch_add(1, Ordering::Relaxed);
                let level = level_of(scorer, score, &probabilities);
                let rank = rank(&level);
                if config.explain == Explain::OnDrop
                    && let (Some(now), Some(before)) = (rank, last_level)
                {
                    explain_now = now > before;
                }
                last_level = rank.or(last_level);
                let quality = Quality {
                    window: ready.window,
                    running_time,
                    score,
                    level,
                    probabilities: levels.iter().cloned().zip(probabilities).collect(),
                    keyframes: ready.features.keyframes.len(),
                    motion_frames: ready.motion_frames,
                    times: StageTimes {
                        decoder,
                        ..ready.spent
                    },
                    provider: scorer.provider(),
                    stale: false,
                };
                *shared.last_good.lock().unwrap() = Some(quality.clone());
                sink(Report::Quality(quality));
            }
            Some(Err(error)) => {
                report_failure(shared, sink, error);
                repeat_stale(shared, sink, ready.window, running_time);
            }
        }
        let rested = last_explained.is_none_or(|t| ready.window.end >= t + config.explain_interval);
        if explain_now && rested && scorer.can_generate() {
            last_explained = Some(ready.window.end);
            // Leaky whatever the mode: explanations never hold up scores.
            explains.push(ExplainJob { ready }, true);
        }
        windows.done();
    }
}

fn explain_thread(
    scorer: &Scorer,
    config: &ScoringConfig,
    explains: &BoundedQueue<ExplainJob>,
    shared: &Shared,
    sink: &ReportSink,
) {
    while let Some(ExplainJob { ready }) = explains.pop() {
        let t0 = Instant::now();
        match guarded(shared, "explainer", || {
            Ok(scorer.explain_window(
                &ready.features,
                &config.explain_question,
                config.explain_max_tokens,
                None,
            )?)
        }) {
            Ok((_, text)) => sink(Report::Explanation {
                window: ready.window,
                running_time: ready.window.end,
                text,
                seconds: t0.elapsed().as_secs_f64(),
            }),
            Err(error) => sink(Report::Failed {
                error: format!("explanation: {error}"),
                warn: true,
            }),
        }
        explains.done();
    }
}
