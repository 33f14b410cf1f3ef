// SPDX-License-Identifier: MPL-2.0
//! `qoe-probe`'s command line: the usage text, the options, and their parsing, with a reason
//! for every refusal.

use std::path::PathBuf;

use qoe_model::Provider;

pub const USAGE: &str = "\
usage: qoe-probe <file|URI> [options]

Watches a video with the qoemonitor element and reports quality scores (the default
bundle, micro-vqa2-streaming, unless --bundle or --no-quality), playback stalls and content
freezes, then a summary.

options:
  --json                   one JSON object per line on stdout instead of text
  --realtime               play at real speed (as a viewer would; needed for live-like
                           monitoring of network streams); default: as fast as it decodes
  --metrics-address ADDR   serve Prometheus metrics on ADDR (host:port, or :PORT for
                           every interface) while running
  --stream-id ID           name of the stream in messages and metrics (default: input name)
  --report FILE.svg        draw the timeline (stalls, freezes, score) as an SVG picture
  --stall-threshold MS     lateness in milliseconds that counts as a stall (default 250)
  --bundle DIR|NAME        model bundle for quality scores: a folder, or a name looked up
                           in GST_QOE_BUNDLE_PATH, the installed bundles and a checkout's
                           models/; every window is scored, the run waiting for the model
                           if need be, unless --realtime
  --no-quality             no quality scores: stalls and freezes only (no model loaded)
  --provider NAME          where the model runs: cpu (default), cuda, tensorrt, auto
  --inference-server URL   run the bundle's graphs on a KServe v2 server (Triton) at
                           grpc://host:port or http://host:port, whose repository
                           python -m qoe_onnx.triton wrote from the same bundle
  -h, --help               this text
  -V, --version            the version of qoe-probe and of the GStreamer it runs on

Options take their value as --name VALUE or --name=VALUE.

Ctrl-C ends the run early and still prints the summary.";

#[derive(Debug, Default)]
pub struct Options {
    pub input: String,
    pub json: bool,
    pub realtime: bool,
    pub metrics_address: Option<String>,
    pub stream_id: Option<String>,
    pub report: Option<PathBuf>,
    pub stall_threshold_ms: Option<u64>,
    /// The bundle folder; `None` with `--no-quality`.
    pub bundle: Option<PathBuf>,
    pub provider: Option<Provider>,
    pub inference_server: Option<String>,
}

/// Why the command line gives no run.
#[derive(Debug, PartialEq)]
pub enum CliError {
    /// `-h` or `--help`: the usage, and a successful exit.
    Help,
    /// `-V` or `--version`: the version, and a successful exit.
    Version,
    /// A wrong command line: the reason, the usage, and exit code 2.
    Usage(String),
}

impl From<String> for CliError {
    fn from(reason: String) -> Self {
        CliError::Usage(reason)
    }
}

impl From<&str> for CliError {
    fn from(reason: &str) -> Self {
        CliError::Usage(reason.to_owned())
    }
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, CliError> {
    use lexopt::prelude::*;
    let mut o = Options::default();
    let mut parser = lexopt::Parser::from_args(args);
    let mut input = None;
    let mut no_quality = false;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Err(CliError::Help),
            Short('V') | Long("version") => return Err(CliError::Version),
            Long("json") => o.json = true,
            Long("realtime") => o.realtime = true,
            Long("metrics-address") => {
                o.metrics_address = Some(value(&mut parser, "--metrics-address")?)
            }
            Long("stream-id") => o.stream_id = Some(value(&mut parser, "--stream-id")?),
            Long("report") => {
                let path = PathBuf::from(value(&mut parser, "--report")?);
                if path.extension().and_then(|e| e.to_str()) != Some("svg") {
                    return Err(CliError::Usage(format!(
                        "--report {}: only .svg reports are supported",
                        path.display()
                    )));
                }
                o.report = Some(path);
            }
            Long("stall-threshold") => {
                let v = value(&mut parser, "--stall-threshold")?;
                o.stall_threshold_ms = Some(v.parse().ok().filter(|ms| *ms > 0).ok_or(format!(
                    "--stall-threshold {v}: not a positive number of ms"
                ))?);
            }
            Long("bundle") => {
                o.bundle = Some(bundle_folder("--bundle", &value(&mut parser, "--bundle")?)?)
            }
            Long("no-quality") => no_quality = true,
            Long("provider") => {
                let p = value(&mut parser, "--provider")?;
                o.provider = Some(p.parse().map_err(|e| format!("--provider {p}: {e}"))?);
            }
            Long("inference-server") => {
                let url = value(&mut parser, "--inference-server")?;
                qoe_model::remote::ServerAddress::parse(&url)
                    .map_err(|e| format!("--inference-server: {e}"))?;
                o.inference_server = Some(url);
            }
            Long(other) => return Err(format!("unknown option --{other}").into()),
            Short(other) => return Err(format!("unknown option -{other}").into()),
            Value(v) => {
                let v = v
                    .into_string()
                    .map_err(|v| format!("input {}: not UTF-8", v.to_string_lossy()))?;
                if input.replace(v).is_some() {
                    return Err(CliError::Usage("only one input, please".into()));
                }
            }
        }
    }
    o.input = input.ok_or("no input given")?;
    match (no_quality, &o.bundle) {
        (true, Some(_)) => return Err("--bundle and --no-quality contradict each other".into()),
        (true, None) if o.provider.is_some() => {
            return Err("--provider says where the model runs, and --no-quality loads none".into());
        }
        (true, None) if o.inference_server.is_some() => {
            return Err(
                "--inference-server runs the model remotely, and --no-quality loads none".into(),
            );
        }
        (true, None) => {}
        (false, Some(_)) => {}
        (false, None) => {
            let default = qoe_model::locate::DEFAULT_BUNDLE;
            o.bundle = Some(bundle_folder("the default bundle", default).map_err(|e| {
                format!("{e}; give --bundle, or --no-quality for stalls and freezes only")
            })?);
        }
    }
    Ok(o)
}

/// The value of option `name`: `--name VALUE` or `--name=VALUE`.
fn value(parser: &mut lexopt::Parser, name: &str) -> Result<String, CliError> {
    parser
        .value()
        .map_err(|_| format!("{name} needs a value"))?
        .into_string()
        .map_err(|v| format!("{name} {}: not UTF-8", v.to_string_lossy()).into())
}

/// The folder of bundle `spec` (a folder or a name), which must hold a manifest.
fn bundle_folder(option: &str, spec: &str) -> Result<PathBuf, String> {
    let dir =
        qoe_model::locate::resolve_bundle(spec).map_err(|e| format!("{option} {spec}: {e}"))?;
    if !dir.join(qoe_model::bundle::MANIFEST).is_file() {
        return Err(format!(
            "{option} {}: not a model bundle (no bundle.json in it)",
            dir.display()
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Options, String> {
        parse_args(a.iter().map(|s| s.to_string())).map_err(|e| match e {
            CliError::Usage(reason) => reason,
            CliError::Help => "(help)".into(),
            CliError::Version => "(version)".into(),
        })
    }

    #[test]
    fn arguments() {
        let o = args(&[
            "video.mp4",
            "--no-quality",
            "--json",
            "--realtime",
            "--metrics-address",
            "127.0.0.1:9464",
            "--report",
            "r.svg",
        ])
        .unwrap();
        assert_eq!(o.input, "video.mp4");
        assert!(o.json && o.realtime);
        assert_eq!(o.metrics_address.as_deref(), Some("127.0.0.1:9464"));
        assert!(o.bundle.is_none());
        // Without either, the default bundle (here the checkout's models/ has it).
        let default = args(&["video.mp4"]).unwrap().bundle.unwrap();
        assert!(
            default.ends_with("micro-vqa2-streaming"),
            "{}",
            default.display()
        );
        assert!(args(&[]).unwrap_err().contains("no input"));
        assert!(args(&["a", "b"]).unwrap_err().contains("one input"));
        assert!(
            args(&["a", "--frobnicate"])
                .unwrap_err()
                .contains("unknown option --frobnicate")
        );
        assert!(
            args(&["a", "--report", "r.png"])
                .unwrap_err()
                .contains("only .svg")
        );
        assert!(
            args(&["a", "--metrics-address"])
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            args(&["a", "--stall-threshold", "-3"])
                .unwrap_err()
                .contains("positive")
        );
        assert!(
            args(&["a", "--bundle", "/nonexistent"])
                .unwrap_err()
                .contains("/nonexistent: not a model bundle")
        );
        assert!(
            args(&["a", "--bundle", "no-such-bundle-name"])
                .unwrap_err()
                .contains("--bundle no-such-bundle-name: no bundle named no-such-bundle-name in")
        );
        assert!(
            args(&["a", "--no-quality", "--bundle", "micro-vqa2-streaming"])
                .unwrap_err()
                .contains("contradict")
        );
        assert!(
            args(&["a", "--no-quality", "--provider", "cuda"])
                .unwrap_err()
                .contains("--no-quality loads none")
        );
        assert!(
            args(&["a", "--provider", "metal"])
                .unwrap_err()
                .contains("not one of cpu, cuda, tensorrt, auto")
        );
        let e = args(&["a", "--inference-server=ftp://pool"]).unwrap_err();
        assert!(
            e.contains("--inference-server") && e.contains("grpc://host:port"),
            "{e}"
        );
        assert!(
            args(&[
                "a",
                "--no-quality",
                "--inference-server",
                "grpc://pool:8001"
            ])
            .unwrap_err()
            .contains("--no-quality loads none")
        );
        assert_eq!(args(&["-h"]).unwrap_err(), "(help)");
        assert_eq!(args(&["--version"]).unwrap_err(), "(version)");
        assert_eq!(args(&["a", "-V"]).unwrap_err(), "(version)");
        // --name=VALUE as well as --name VALUE; a flag takes no value.
        let o = args(&[
            "a",
            "--no-quality",
            "--stall-threshold=500",
            "--stream-id=x=y",
        ])
        .unwrap();
        assert_eq!(o.stall_threshold_ms, Some(500));
        assert_eq!(o.stream_id.as_deref(), Some("x=y"));
        assert!(args(&["a", "--json=yes"]).unwrap_err().contains("--json"));
        assert!(
            args(&["a", "-q"])
                .unwrap_err()
                .contains("unknown option -q")
        );
    }
}
