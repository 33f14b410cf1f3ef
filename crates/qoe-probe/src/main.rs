// SPDX-License-Identifier: MPL-2.0
//! `qoe-probe`: watch a file or URI with `qoemonitor`, no pipeline writing needed.
//!
//! Plays the input through `uridecodebin ! videoconvert ! qoemonitor ! fakesink`, prints one
//! line per stall or freeze event (or JSON lines with `--json`), shows progress on files, and
//! ends with a summary. Exits 1 when the input cannot be opened or decoded, 2 on bad usage,
//! 3 when a file ends short of its declared duration.
//!
//! This crate owns the command line ([`cli`]), the run and its summary (here) and the SVG
//! report ([`report`]); it builds on the plugin (registered statically) and `qoe-model`, and
//! nothing depends on it.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use qoe_model::level::rank;
use serde_json::{Value, json};

mod cli;
mod report;
use cli::{CliError, Options, USAGE, parse_args};
use report::{Span, Timeline};

/// A URI for `input`, which is a URI already or a path to an existing file.
fn input_uri(input: &str) -> Result<String, String> {
    let scheme = input.split_once("://").map(|(scheme, _)| scheme);
    if scheme.is_some_and(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    }) {
        return Ok(input.to_owned());
    }
    let path = Path::new(input);
    if !path.exists() {
        return Err(format!("cannot open {input}: no such file"));
    }
    let absolute = std::fs::canonicalize(path).map_err(|e| format!("cannot open {input}: {e}"))?;
    gst::glib::filename_to_uri(&absolute, None)
        .map(|u| u.to_string())
        .map_err(|e| format!("cannot open {input}: {e}"))
}

fn default_stream_id(input: &str) -> String {
    let tail = input
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(input);
    let stem = tail.split(['?', '#']).next().unwrap_or(tail);
    let stem = Path::new(stem)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("probe");
    if stem.is_empty() {
        "probe".into()
    } else {
        stem.to_owned()
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 * 1e-9
}

/// `x` to `digits` decimals, for JSON numbers as short as the text lines' figures.
fn rounded(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

struct Progress {
    tty: bool,
    last: Instant,
    last_decile: i64,
    shown: bool,
}

impl Progress {
    fn update(&mut self, pipeline: &gst::Pipeline) {
        // A terminal line is redrawn at most 4 times a second; plain lines come per 10%.
        if self.tty && self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        let (Some(position), Some(duration)) = (
            pipeline.query_position::<gst::ClockTime>(),
            pipeline.query_duration::<gst::ClockTime>(),
        ) else {
            return; // live or unknown length: no progress to show
        };
        if duration.is_zero() {
            return;
        }
        let fraction = (position.nseconds() as f64 / duration.nseconds() as f64).clamp(0.0, 1.0);
        let line = format!(
            "progress {:3.0}%  {:.1} / {:.1} s",
            fraction * 100.0,
            secs(position.nseconds()),
            secs(duration.nseconds())
        );
        if self.tty {
            eprint!("\r{line}  ");
            self.shown = true;
        } else {
            let decile = (fraction * 10.0) as i64;
            if decile > self.last_decile {
                self.last_decile = decile;
                eprintln!("{line}");
            }
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r{:60}\r", "");
            self.shown = false;
        }
    }
}

fn main() -> ExitCode {
    // Output piped into `head` and closed early: end quietly, as Unix tools do.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Known before parsing, so that a refused command line is answered in JSON too.
    let json = args.iter().any(|a| a == "--json");
    let options = match parse_args(args) {
        Ok(o) => o,
        Err(CliError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(CliError::Version) => {
            println!(
                "qoe-probe {} ({})",
                env!("CARGO_PKG_VERSION"),
                gst::version_string()
            );
            return ExitCode::SUCCESS;
        }
        Err(CliError::Usage(e)) => return fail(json, &e, 2),
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        // The summary says why: the input ended short of its declared duration.
        Ok(false) => ExitCode::from(3),
        Err(e) => fail(options.json, &e, 1),
    }
}

/// Says why there is no run, and exits with `code` (2: the command line, 1: the run). With
/// `--json` it is one JSON object on stdout, where the other JSON lines go.
fn fail(json: bool, reason: &str, code: u8) -> ExitCode {
    if json {
        let error = json!({"type": "error", "message": reason, "exit_code": code});
        println!("{error}");
    } else if code == 2 {
        eprintln!("qoe-probe: {reason}\n\n{USAGE}");
    } else {
        eprintln!("qoe-probe: {reason}");
    }
    ExitCode::from(code)
}

/// Sets the pipeline to NULL however the run ends: a pipeline dropped in another state makes
/// GStreamer print CRITICAL warnings over the one line that says what went wrong.
struct StopOnDrop(gst::Pipeline);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// A GStreamer error in one line: the error, then the detail its debug text gives after the
/// source location and object path (`file(line): function (): object:\ndetail`), which only
/// developers can use.
fn one_line(e: &gst::message::Error) -> String {
    let detail = e
        .debug()
        .and_then(|d| {
            d.split_once('\n')
                .map(|(_, detail)| detail.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .filter(|d| !d.is_empty());
    match detail {
        Some(detail) => format!("{}: {detail}", e.error()),
        None => e.error().to_string(),
    }
}

/// The pipeline, its monitor, and whether a video stream got linked to it.
type Built = (gst::Pipeline, gst::Element, Arc<AtomicBool>);

fn build(options: &Options, uri: &str, stream_id: &str) -> Result<Built, String> {
    gst::init().map_err(|e| format!("cannot start GStreamer: {e}"))?;
    gstqoe::plugin_register_static().map_err(|e| format!("cannot register qoemonitor: {e}"))?;
    let make = |factory: &str| {
        gst::ElementFactory::make(factory).build().map_err(|_| {
            format!("GStreamer element {factory} is missing (install gstreamer1.0-plugins-base)")
        })
    };
    let pipeline = gst::Pipeline::new();
    let source = make("uridecodebin")?;
    source.set_property("uri", uri);
    let convert = make("videoconvert")?;
    let monitor = make("qoemonitor")?;
    monitor.set_property("stream-id", stream_id);
    monitor.set_property("stats-interval", 0u64);
    if let Some(address) = &options.metrics_address {
        monitor.set_property("metrics-address", address);
    }
    if let Some(ms) = options.stall_threshold_ms {
        monitor.set_property("stall-threshold", ms * 1_000_000);
    }
    if let Some(bundle) = &options.bundle {
        monitor.set_property("bundle", bundle.to_str().ok_or("bundle path is not UTF-8")?);
        // Files are analysed whole: every window scored, at the model's pace. At real speed
        // the monitor behaves as in a live pipeline and drops what the model cannot keep up with.
        monitor.set_property("leaky", options.realtime);
        if let Some(provider) = &options.provider {
            monitor.set_property("execution-provider", *provider);
        }
        if let Some(server) = &options.inference_server {
            monitor.set_property("inference-server", server);
        }
    }
    let sink = make("fakesink")?;
    sink.set_property("sync", options.realtime);
    pipeline
        .add_many([&source, &convert, &monitor, &sink])
        .unwrap();
    gst::Element::link_many([&convert, &monitor, &sink])
        .map_err(|e| format!("cannot link the pipeline: {e}"))?;
    let convert_sink = convert.static_pad("sink").unwrap();
    let video_linked = Arc::new(AtomicBool::new(false));
    let linked = video_linked.clone();
    source.connect_pad_added(move |_, pad| {
        let is_video = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|caps| caps.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        // The first video stream is watched; audio and further streams are left unlinked.
        if is_video && !convert_sink.is_linked() && pad.link(&convert_sink).is_ok() {
            linked.store(true, Ordering::SeqCst);
        }
    });
    Ok((pipeline, monitor, video_linked))
}

/// Everything a run reports, gathered from the monitor's messages.
#[derive(Default)]
struct Run {
    stalls: Vec<Span>,
    freezes: Vec<Span>,
    end: f64,
    last_stats: Option<gst::Structure>,
    windows: Vec<Scored>,
    /// Playback ended early: seconds played, and the duration the container declares.
    incomplete: Option<(f64, f64)>,
}

/// Whether a run that reached EOS at `played` seconds fell short of the `declared` duration
/// (more than half a second, or 2 %, short: a truncated or damaged file).
fn fell_short(played: f64, declared: f64) -> bool {
    declared - played > (0.02 * declared).max(0.5)
}

/// A network input's host is reachable: a refused or unresolvable connection is named as
/// such, before GStreamer reports it as a stream error.
fn check_reachable(input: &str) -> Result<(), String> {
    let Some((scheme, rest)) = input.split_once("://") else {
        return Ok(());
    };
    let port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        "rtsp" | "rtspt" => 554,
        "rtsps" => 322,
        "rtmp" => 1935,
        _ => return Ok(()),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let address = match host_port.rsplit_once(':') {
        Some((host, p)) if !host.ends_with(']') || host.starts_with('[') => {
            if p.parse::<u16>().is_ok() {
                host_port.to_owned()
            } else {
                format!("{host_port}:{port}")
            }
        }
        _ => format!("{host_port}:{port}"),
    };
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address} for {input}: {e}"))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => format!("cannot connect to {address} for {input}: {e}"),
        None => format!("cannot resolve {address} for {input}: no address"),
    })
}

/// A scored window, as the summary needs it.
#[derive(Debug, Clone)]
struct Scored {
    start: f64,
    end: f64,
    score: f64,
    level: String,
    stale: bool,
}

/// Seconds spent in each level, best level first.
type LevelTimes = Vec<(String, f64)>;

/// Mean and minimum score over fresh windows, and seconds in each level: each window's
/// level stands for the stretch it adds to the timeline (the first window for its whole
/// length, later ones from the previous window's end).
fn quality_summary(windows: &[Scored]) -> Option<(f64, f64, LevelTimes)> {
    let fresh: Vec<&Scored> = windows.iter().filter(|w| !w.stale).collect();
    if fresh.is_empty() {
        return None;
    }
    let mean = fresh.iter().map(|w| w.score).sum::<f64>() / fresh.len() as f64;
    let min = fresh.iter().map(|w| w.score).fold(f64::INFINITY, f64::min);
    let mut levels: Vec<(String, f64)> = Vec::new();
    let mut covered: Option<f64> = None;
    for w in &fresh {
        let from = covered.map_or(w.start, |c| c.max(w.start));
        let seconds = (w.end - from).max(0.0);
        covered = Some(covered.map_or(w.end, |c| c.max(w.end)));
        match levels.iter_mut().find(|(l, _)| *l == w.level) {
            Some((_, t)) => *t += seconds,
            None => levels.push((w.level.clone(), seconds)),
        }
    }
    levels.sort_by_key(|(l, _)| rank(l).unwrap_or(usize::MAX));
    Some((mean, min, levels))
}

/// Runs the probe; `Ok(false)` when the input ended short of its declared duration.
fn run(options: &Options) -> Result<bool, String> {
    let uri = input_uri(&options.input)?;
    let stream_id = options
        .stream_id
        .clone()
        .unwrap_or_else(|| default_stream_id(&options.input));
    check_reachable(&uri)?;
    let (pipeline, monitor, video_linked) = build(options, &uri, &stream_id)?;
    let _stopped = StopOnDrop(pipeline.clone());
    let bus = pipeline.bus().unwrap();
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    pipeline.set_state(gst::State::Playing).map_err(|_| {
        let detail = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .map(|m| match m.view() {
                gst::MessageView::Error(e) => one_line(e),
                _ => unreachable!(),
            })
            .unwrap_or_else(|| "the pipeline would not start".into());
        format!("cannot play {}: {detail}", options.input)
    })?;
    if !options.json {
        println!("watching {} as stream '{stream_id}'", options.input);
        if let Some(address) = &options.metrics_address {
            println!("metrics at http://{address}/metrics");
        }
    }

    let mut progress = Progress {
        tty: std::io::stderr().is_terminal() && !options.json,
        last: Instant::now(),
        last_decile: 0,
        shown: false,
    };
    let mut result = Run::default();
    let mut eos_sent = false;
    let outcome = loop {
        if INTERRUPTED.load(Ordering::SeqCst) && !eos_sent {
            eos_sent = true;
            pipeline.send_event(gst::event::Eos::new());
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            progress.update(&pipeline);
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => {
                progress.update(&pipeline);
                break Ok(());
            }
            gst::MessageView::Error(e) => {
                if !video_linked.load(Ordering::SeqCst)
                    && e.error().matches(gst::StreamError::Failed)
                {
                    // Nothing reached the monitor: the demuxer had no video stream to give.
                    break Err(format!(
                        "no video stream in {} ({})",
                        options.input,
                        e.error()
                    ));
                }
                // A source that cannot read (an HTTP 404, a vanished file) is no decoding fault.
                let what = match e.error().kind::<gst::ResourceError>() {
                    Some(_) => "cannot read",
                    None => "cannot decode",
                };
                break Err(format!("{what} {}: {}", options.input, one_line(e)));
            }
            gst::MessageView::Warning(w) if !options.json => {
                progress.clear();
                eprintln!("qoe-probe: warning: {}", w.error());
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name().starts_with("qoe-")) {
                    progress.clear();
                    report_event(options, s, &mut result);
                }
            }
            _ => {}
        }
        progress.update(&pipeline);
    };
    progress.clear();
    let stats = monitor.property::<Option<gst::Structure>>("stats");
    // Files end at EOS: short of the duration their container declares, they were cut.
    let declared = pipeline
        .query_duration::<gst::ClockTime>()
        .map(|d| d.nseconds() as f64 * 1e-9);
    pipeline
        .set_state(gst::State::Null)
        .map_err(|_| "cannot stop the pipeline".to_string())?;
    outcome?;
    let stats = result
        .last_stats
        .clone()
        .or(stats)
        .ok_or("no statistics were gathered")?;
    let frames = stats.get::<u64>("frames").unwrap_or(0);
    if frames == 0 {
        return Err(format!(
            "no video frames decoded from {} (no video stream?)",
            options.input
        ));
    }
    let played = result
        .end
        .max(secs(stats.get::<u64>("stream-time").unwrap_or(0)));
    if let Some(declared) = declared
        && !eos_sent
        && fell_short(played, declared)
    {
        result.incomplete = Some((played, declared));
    }
    let summary = summary_lines(&stats, &result);
    if options.json {
        println!("{}", summary_json(&stats, &stream_id, &result));
    } else {
        println!("summary:");
        for line in &summary {
            println!("  {line}");
        }
    }
    if let Some(path) = &options.report {
        let timeline = Timeline {
            title: format!("qoe-probe: {stream_id}"),
            duration: result
                .end
                .max(secs(stats.get::<u64>("stream-time").unwrap_or(0))),
            stalls: result.stalls.clone(),
            freezes: result.freezes.clone(),
            stale: result
                .windows
                .iter()
                .filter(|w| w.stale)
                .map(|w| Span {
                    start: w.start,
                    duration: w.end - w.start,
                })
                .collect(),
            scores: result
                .windows
                .iter()
                .filter(|w| !w.stale)
                .map(|w| (w.end, w.score, w.level.clone()))
                .collect(),
            no_scores_reason: Some(match options.bundle {
                None => "quality not scored (--no-quality)".into(),
                Some(_) => "no window was scored".into(),
            }),
            summary,
        };
        std::fs::write(path, timeline.svg())
            .map_err(|e| format!("cannot write report {}: {e}", path.display()))?;
        if !options.json {
            println!("report written to {}", path.display());
        }
    }
    Ok(result.incomplete.is_none())
}

fn report_event(options: &Options, s: &gst::StructureRef, run: &mut Run) {
    let time = |field: &str| {
        s.get::<u64>(field)
            .ok()
            .filter(|t| *t != u64::MAX)
            .map(secs)
    };
    if let Some(t) = time("stream-time") {
        run.end = run.end.max(t);
    }
    let kind = match s.name().as_str() {
        "qoe-stall" => "stall",
        "qoe-freeze" => "freeze",
        "qoe-black" => "black",
        "qoe-rendition" => return report_rendition(options, s),
        "qoe-stats" => {
            run.last_stats = Some(s.to_owned());
            return;
        }
        "qoe-quality" => return report_quality(options, s, run),
        "qoe-explanation" => {
            let text = s.get::<&str>("text").unwrap_or_default();
            let end = time("window-end").unwrap_or(0.0);
            if options.json {
                let line =
                    json!({"type": "explanation", "window_end": rounded(end, 3), "text": text});
                println!("{line}");
            } else {
                println!("{end:9.3} s  explanation: {}", text.trim());
            }
            return;
        }
        _ => return,
    };
    let event = s.get::<&str>("event").unwrap_or("?");
    let start = time("start").unwrap_or(0.0);
    let duration = time("duration");
    let cause = s.get::<&str>("cause").ok();
    if let (Some(d), "end") = (duration, event) {
        let span = Span { start, duration: d };
        match kind {
            "stall" => run.stalls.push(span),
            "freeze" => run.freezes.push(span),
            _ => {}
        }
        run.end = run.end.max(start + d);
    }
    if options.json {
        let mut line = json!({"type": kind, "event": event, "start": rounded(start, 3)});
        if let Some(d) = duration {
            line["duration"] = json!(rounded(d, 3));
        }
        if let Some(c) = cause {
            line["cause"] = json!(c);
        }
        line["stream_id"] = json!(s.get::<&str>("stream-id").unwrap_or_default());
        println!("{line}");
    } else {
        let what = match (kind, event) {
            ("stall", "start") => format!("stall started ({})", cause.unwrap_or("?")),
            ("stall", _) => format!("stall ended after {:.3} s", duration.unwrap_or(0.0)),
            ("black", "start") => "picture black".to_string(),
            ("black", _) => format!("black ended after {:.3} s", duration.unwrap_or(0.0)),
            (_, "start") => "picture frozen".to_string(),
            _ => format!("freeze ended after {:.3} s", duration.unwrap_or(0.0)),
        };
        println!("{start:9.3} s  {what}");
    }
    let _ = std::io::stdout().flush();
}

/// A rendition switch: one line, or a JSON line.
fn report_rendition(options: &Options, s: &gst::StructureRef) {
    let at = s
        .get::<u64>("stream-time")
        .ok()
        .filter(|t| *t != u64::MAX)
        .map_or(0.0, secs);
    let size = |w: &str, h: &str| {
        (
            s.get::<u32>(w).unwrap_or_default(),
            s.get::<u32>(h).unwrap_or_default(),
        )
    };
    let (from, to) = (
        size("from-width", "from-height"),
        size("to-width", "to-height"),
    );
    let direction = s.get::<&str>("direction").unwrap_or("?");
    if options.json {
        let line = json!({
            "type": "rendition",
            "at": rounded(at, 3),
            "direction": direction,
            "from": [from.0, from.1],
            "to": [to.0, to.1],
            "stream_id": s.get::<&str>("stream-id").unwrap_or_default(),
        });
        println!("{line}");
    } else {
        println!(
            "{at:9.3} s  rendition {direction}: {}x{} -> {}x{}",
            from.0, from.1, to.0, to.1
        );
    }
    let _ = std::io::stdout().flush();
}

fn report_quality(options: &Options, s: &gst::StructureRef, run: &mut Run) {
    let time = |field: &str| {
        s.get::<u64>(field)
            .ok()
            .filter(|t| *t != u64::MAX)
            .map(secs)
    };
    let w = Scored {
        start: time("window-start").unwrap_or(0.0),
        end: time("window-end").unwrap_or(0.0),
        score: s.get::<f64>("score").unwrap_or(f64::NAN),
        level: s.get::<&str>("level").unwrap_or("?").to_owned(),
        stale: s.get::<bool>("stale").unwrap_or(false),
    };
    run.end = run.end.max(w.end);
    let seconds = s.get::<f64>("inference-time").unwrap_or(0.0);
    if options.json {
        let probabilities: serde_json::Map<String, Value> = s
            .get::<gst::Structure>("probabilities")
            .map(|p| {
                p.iter()
                    .filter_map(|(k, v)| {
                        v.get::<f64>()
                            .ok()
                            .map(|v| (k.to_string(), json!(rounded(v, 6))))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let line = json!({
            "type": "quality",
            "window_start": rounded(w.start, 3),
            "window_end": rounded(w.end, 3),
            "score": rounded(w.score, 6),
            "level": w.level,
            "probabilities": probabilities,
            "stale": w.stale,
            "inference_time": rounded(seconds, 4),
            "stream_id": s.get::<&str>("stream-id").unwrap_or_default(),
        });
        println!("{line}");
    } else {
        println!(
            "{:9.3} s  quality {:.3} ({}) for {:.3}–{:.3} s{}",
            w.end,
            w.score,
            w.level,
            w.start,
            w.end,
            if w.stale {
                ", STALE: the model is failing"
            } else {
                ""
            }
        );
    }
    let _ = std::io::stdout().flush();
    run.windows.push(w);
}

fn summary_lines(stats: &gst::Structure, run: &Run) -> Vec<String> {
    let u = |f: &str| stats.get::<u64>(f).unwrap_or(0);
    let t = |f: &str| {
        stats
            .get::<u64>(f)
            .ok()
            .filter(|v| *v != u64::MAX)
            .map(secs)
    };
    let mut lines = vec![
        format!("frames: {}", u("frames")),
        format!(
            "stalls: {}, total {:.3} s, stall ratio {:.1}%{}",
            u("stalls"),
            t("stall-time").unwrap_or(0.0),
            100.0 * stats.get::<f64>("stall-ratio").unwrap_or(0.0),
            match run.stalls.iter().map(|s| s.duration).reduce(f64::max) {
                Some(longest) => format!(", longest {longest:.3} s"),
                None => String::new(),
            }
        ),
        format!(
            "freezes: {}, total {:.3} s",
            u("freezes"),
            t("frozen-time").unwrap_or(0.0)
        ),
    ];
    if let Some(initial) = t("initial-buffering") {
        lines.push(format!("initial buffering: {initial:.3} s"));
    }
    lines.push(match quality_summary(&run.windows) {
        Some((mean, min, levels)) => format!(
            "quality: {} windows, mean {mean:.3}, min {min:.3}; time in level: {}",
            run.windows.iter().filter(|w| !w.stale).count(),
            levels
                .iter()
                .map(|(l, t)| format!("{l} {t:.1} s"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None if stats.get::<bool>("too-small-to-score").unwrap_or(false) => {
            "quality: too small to score (the picture is below the bundle's minimum size)".into()
        }
        None => "quality: not scored (--no-quality, or no window scored)".into(),
    });
    if let Some((played, declared)) = run.incomplete {
        lines.push(format!(
            "INCOMPLETE: playback ended at {played:.3} s of the {declared:.3} s the input declares (truncated or damaged)"
        ));
    }
    lines
}

fn summary_json(stats: &gst::Structure, stream_id: &str, run: &Run) -> Value {
    let quality = match quality_summary(&run.windows) {
        Some((mean, min, levels)) => json!({
            "windows": run.windows.iter().filter(|w| !w.stale).count(),
            "mean": rounded(mean, 6),
            "min": rounded(min, 6),
            "time_in_level": levels
                .iter()
                .map(|(l, t)| (l.to_string(), json!(rounded(*t, 3))))
                .collect::<serde_json::Map<_, _>>(),
        }),
        None => Value::Null,
    };
    let u = |f: &str| stats.get::<u64>(f).unwrap_or(0);
    // A time the element does not know (GST_CLOCK_TIME_NONE) is null.
    let t = |f: &str| {
        stats
            .get::<u64>(f)
            .ok()
            .filter(|v| *v != u64::MAX)
            .map(|v| rounded(secs(v), 3))
    };
    json!({
        "type": "summary",
        "stream_id": stream_id,
        "frames": u("frames"),
        "stalls": u("stalls"),
        "stall_time": t("stall-time"),
        "stall_ratio": rounded(stats.get::<f64>("stall-ratio").unwrap_or(0.0), 6),
        "initial_buffering": t("initial-buffering"),
        "freezes": u("freezes"),
        "frozen_time": t("frozen-time"),
        "quality": quality,
        "incomplete": run.incomplete.map(|(played, declared)| {
            json!({"played": rounded(played, 3), "declared_duration": rounded(declared, 3)})
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_runs_and_network_inputs() {
        assert!(fell_short(2.9, 6.0));
        assert!(
            !fell_short(5.97, 6.0),
            "the last frame's duration is no cut"
        );
        assert!(!fell_short(595.0, 600.0), "2 % of a long file");
        assert!(check_reachable("file:///tmp/x.mp4").is_ok());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(check_reachable(&format!("http://127.0.0.1:{port}/x.mp4")).is_ok());
        drop(listener);
        let e = check_reachable(&format!("http://user@127.0.0.1:{port}/x.mp4")).unwrap_err();
        assert!(
            e.contains(&format!("cannot connect to 127.0.0.1:{port}")),
            "{e}"
        );
        assert!(e.to_lowercase().contains("refused"), "{e}");
    }

    #[test]
    fn quality_summary_partitions_the_timeline() {
        let w = |start, end, score, level: &str| Scored {
            start,
            end,
            score,
            level: level.into(),
            stale: false,
        };
        let windows = [
            w(0.0, 8.0, 0.9, "high"),
            w(2.0, 10.0, 0.5, "fair"),
            w(4.0, 12.0, 0.7, "good"),
            Scored {
                stale: true,
                ..w(6.0, 14.0, 0.7, "good")
            },
        ];
        let (mean, min, levels) = quality_summary(&windows).unwrap();
        assert!((mean - 0.7).abs() < 1e-9, "stale windows do not count");
        assert_eq!(min, 0.5);
        assert_eq!(
            levels,
            vec![
                ("high".to_string(), 8.0),
                ("good".to_string(), 2.0),
                ("fair".to_string(), 2.0)
            ]
        );
        assert!(quality_summary(&[]).is_none());
    }

    #[test]
    fn stream_ids_from_inputs() {
        assert_eq!(default_stream_id("/srv/videos/match.mp4"), "match");
        assert_eq!(
            default_stream_id("https://cdn.example/live/index.m3u8?token=1"),
            "index"
        );
        assert_eq!(default_stream_id("rtsp://cam.local/"), "cam");
    }

    #[test]
    fn json_numbers_are_rounded_like_the_text() {
        assert_eq!(rounded(2.0004, 3), 2.0);
        assert_eq!(rounded(0.1234567, 6), 0.123457);
        assert_eq!(json!(rounded(1.5, 3)).to_string(), "1.5");
    }
}
