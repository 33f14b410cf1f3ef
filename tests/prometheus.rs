// SPDX-License-Identifier: MPL-2.0
//! A real Prometheus (Debian's `prometheus`) scrapes a running pipeline, using the example
//! scrape config from `pipelines/prometheus.yml`; the test then asks Prometheus's HTTP API for
//! the stream's counters and checks them against what the pipeline did.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gst::prelude::*;

mod common;
use common::*;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn api_query(port: u16, promql: &str) -> Option<String> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    get(port, &format!("/api/v1/query?query={encoded}"))
}

/// The single value of an instant query, once Prometheus has one.
fn query(port: u16, promql: &str) -> Option<f64> {
    let body = api_query(port, promql)?;
    // {"status":"success","data":{"resultType":"vector","result":[{"metric":{…},"value":[t,"240"]}]}}
    let value = body.split("\"value\":[").nth(1)?;
    value.split('"').nth(1)?.parse().ok()
}

#[test]
fn prometheus_scrapes_the_stream_counters() {
    let Ok(version) = Command::new("prometheus").arg("--version").output() else {
        panic!(
            "prometheus not installed: run pipelines/install-deps.sh (Debian package prometheus)"
        );
    };
    assert!(version.status.success());

    // The pipeline: the test video (one stall), run to EOS and kept PLAYING so its series stay.
    init();
    let metrics_port = free_port();
    let video = test_video("mkv");
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! qoemonitor stream-id=prom-e2e metrics-address=127.0.0.1:{metrics_port} ! fakesink",
        video.display()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    bus.timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos])
        .expect("EOS");

    // Prometheus with the example config, pointed at this process and scraping every second.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/prometheus.yml"),
    )
    .unwrap();
    assert!(
        example.contains("localhost:9464"),
        "the example config targets the default address"
    );
    let config = example
        .replace("localhost:9464", &format!("127.0.0.1:{metrics_port}"))
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let web_port = free_port();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut frames, mut stalls) = (None, None);
    while Instant::now() < deadline && (frames.is_none() || stalls.is_none()) {
        std::thread::sleep(Duration::from_millis(500));
        frames = query(
            web_port,
            "qoe_frames_total{stream=\"prom-e2e\",job=\"gst-qoe\"}",
        );
        stalls = query(
            web_port,
            "qoe_stalls_total{stream=\"prom-e2e\",job=\"gst-qoe\"}",
        );
    }
    let up = query(web_port, "up{job=\"gst-qoe\"}");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(up, Some(1.0), "Prometheus sees the target up");
    assert_eq!(
        frames,
        Some(VIDEO_FRAMES as f64),
        "qoe_frames_total in Prometheus"
    );
    assert_eq!(stalls, Some(1.0), "qoe_stalls_total in Prometheus");
    // The example config's extra label made it through.
    let site = query(web_port, "count(qoe_frames_total{site=\"example\"})");
    assert_eq!(site, Some(1.0));

    // Every query of the Grafana dashboard is valid PromQL to this Prometheus.
    for expr in dashboard_queries() {
        let promql = expr
            .replace("$stream", ".*")
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m");
        let answer = api_query(web_port, &promql).unwrap();
        assert!(
            answer.contains("\"status\":\"success\""),
            "dashboard query {expr} rejected: {answer}"
        );
    }
}

/// The PromQL expressions in the Grafana dashboard (panels and annotations).
fn dashboard_queries() -> Vec<String> {
    let json = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/grafana-dashboard.json"),
    )
    .unwrap();
    json.split("\"expr\": \"")
        .skip(1)
        .map(|rest| {
            let end = rest
                .find("\",\n")
                .or_else(|| rest.find("\"\n"))
                .expect("expr string ends the line");
            rest[..end].replace("\\\"", "\"").replace("\\\\", "\\")
        })
        .collect()
}

#[test]
fn dashboard_names_only_exported_metrics() {
    let exported = gstqoe::metrics::families().names();
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    let mut used = std::collections::BTreeSet::new();
    for q in &queries {
        for (i, _) in q.match_indices("qoe_") {
            let name: String = q[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.clone(), |n, suffix| {
                    n.strip_suffix(suffix)
                        .filter(|base| exported.iter().any(|e| e == base))
                        .map(str::to_owned)
                        .unwrap_or(n)
                });
            assert!(
                exported.contains(&family),
                "dashboard uses {name}, which is not exported ({exported:?})"
            );
            used.insert(family);
        }
    }
    // The dashboard shows every family.
    let unused: Vec<_> = exported.iter().filter(|e| !used.contains(*e)).collect();
    assert!(
        unused.iter().all(|u| *u == "qoe_execution_provider_info"),
        "not on the dashboard: {unused:?}"
    );
}

/// The shipped alert rules load in Prometheus's own checker and pass their unit tests
/// (black picture, dropped frames, stalls).
#[test]
fn alert_rules_pass_promtool() {
    let pipelines = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for args in [
        ["check", "rules", "qoe-alerts.yml"],
        ["test", "rules", "qoe-alerts.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&pipelines)
            .output()
            .expect("promtool (Debian package prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every metric an alert names is exported.
    let rules = std::fs::read_to_string(pipelines.join("qoe-alerts.yml")).unwrap();
    let exported = gstqoe::metrics::families().names();
    for (i, _) in rules.match_indices("qoe_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(exported.contains(&name), "alert rules use {name}");
    }
}

/// Every series on the dashboard has a unit (the panel's, or its own by query), and the
/// state rows name what a 1 means for each row (stalled, frozen, model stale), not one word
/// for all.
#[test]
fn dashboard_series_have_units_and_state_rows_their_words() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let overridden = |panel: &serde_json::Value, ref_id: &str, property: &str| {
        panel["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["matcher"]["options"] == ref_id)
            .flat_map(|o| o["properties"].as_array().unwrap().iter())
            .find(|p| p["id"] == property)
            .map(|p| p["value"].clone())
    };
    for panel in json["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let ref_id = target["refId"].as_str().unwrap();
            match panel["type"].as_str().unwrap() {
                "timeseries" => assert!(
                    panel["fieldConfig"]["defaults"]["unit"].is_string()
                        || overridden(panel, ref_id, "unit").is_some(),
                    "{title}: query {ref_id} has no unit"
                ),
                "state-timeline" => {
                    let word =
                        overridden(panel, ref_id, "mappings").unwrap()[0]["options"]["1"]["text"]
                            .as_str()
                            .unwrap()
                            .to_owned();
                    let legend = target["legendFormat"].as_str().unwrap();
                    assert!(
                        legend.starts_with(&word),
                        "{title}: {legend} shows 1 as {word}"
                    );
                }
                other => panic!("{title}: panel type {other}"),
            }
        }
    }
}
