// SPDX-License-Identifier: MPL-2.0
//! The `qoe-probe --report` picture: an SVG timeline of one stream with its stall and freeze
//! spans and its quality score over time. Free of GStreamer types.

use std::fmt::Write;

use qoe_model::level::LEVELS;

/// A span of stream time, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub start: f64,
    pub duration: f64,
}

/// What a report shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    pub title: String,
    /// Seconds of stream time covered.
    pub duration: f64,
    pub stalls: Vec<Span>,
    pub freezes: Vec<Span>,
    /// (window end in seconds, score 0..1).
    pub scores: Vec<(f64, f64)>,
    /// Why there are no scores, if there are none.
    pub no_scores_reason: Option<String>,
    /// Summary lines printed under the chart.
    pub summary: Vec<String>,
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 30.0;
const PLOT_TOP: f64 = 60.0;
const SCORE_HEIGHT: f64 = 180.0;
const LANE_HEIGHT: f64 = 28.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step of 1, 2 or 5 × 10^k seconds giving about eight ticks.
fn tick_step(duration: f64) -> f64 {
    let raw = (duration / 8.0).max(1e-3);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

impl Timeline {
    /// The SVG document.
    pub fn svg(&self) -> String {
        let duration = self.duration.max(1e-3);
        let plot_width = WIDTH - LEFT - RIGHT;
        let x = |t: f64| LEFT + (t.clamp(0.0, duration) / duration) * plot_width;
        let stall_lane = PLOT_TOP + SCORE_HEIGHT + 20.0;
        let freeze_lane = stall_lane + LANE_HEIGHT + 10.0;
        let axis_y = freeze_lane + LANE_HEIGHT + 10.0;
        let height = axis_y + 40.0 + 20.0 * self.summary.len() as f64 + 10.0;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">"#
        );
        let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="30" font-size="18" font-weight="bold">{}</text>"#,
            escape(&self.title)
        );

        // Quality score panel.
        let (top, bottom) = (PLOT_TOP, PLOT_TOP + SCORE_HEIGHT);
        let y = |score: f64| bottom - score.clamp(0.0, 1.0) * SCORE_HEIGHT;
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{SCORE_HEIGHT}" fill="#f7f7f7" stroke="#cccccc"/>"##
        );
        for (rank, level) in LEVELS.iter().enumerate() {
            let score = 1.0 - rank as f64 / (LEVELS.len() - 1) as f64;
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{yy}" y2="{yy}" stroke="#dddddd"/><text x="{}" y="{}" text-anchor="end" fill="#666666">{level}</text>"##,
                LEFT + plot_width,
                LEFT - 8.0,
                y(score) + 4.0,
                yy = y(score)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="14" y="{}" font-weight="bold">quality</text>"#,
            (top + bottom) / 2.0
        );
        if self.scores.is_empty() {
            let reason = self
                .no_scores_reason
                .as_deref()
                .unwrap_or("no quality windows");
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#888888">{}</text>"##,
                LEFT + plot_width / 2.0,
                (top + bottom) / 2.0,
                escape(reason)
            );
        } else {
            let points: Vec<String> = self
                .scores
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = writeln!(
                s,
                r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
                points.join(" ")
            );
        }

        // Stall and freeze lanes.
        for (label, lane, spans, colour) in [
            ("stalls", stall_lane, &self.stalls, "#d62728"),
            ("freezes", freeze_lane, &self.freezes, "#1f77b4"),
        ] {
            let _ = writeln!(
                s,
                r##"<rect x="{LEFT}" y="{lane}" width="{plot_width}" height="{LANE_HEIGHT}" fill="#f7f7f7" stroke="#cccccc"/><text x="14" y="{}" font-weight="bold">{label}</text>"##,
                lane + 19.0
            );
            for span in spans.iter() {
                let (x0, x1) = (x(span.start), x(span.start + span.duration));
                let _ = writeln!(
                    s,
                    r#"<rect class="{label}" x="{x0:.1}" y="{lane}" width="{:.1}" height="{LANE_HEIGHT}" fill="{colour}" opacity="0.8"><title>{label}: {:.3} s at {:.3} s</title></rect>"#,
                    (x1 - x0).max(1.5),
                    span.duration,
                    span.start
                );
                // The same span, shaded across the score panel.
                let _ = writeln!(
                    s,
                    r#"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{SCORE_HEIGHT}" fill="{colour}" opacity="0.12"/>"#,
                    (x1 - x0).max(1.5)
                );
            }
        }

        // Time axis.
        let step = tick_step(duration);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{axis_y}" y2="{axis_y}" stroke="#333333"/>"##,
            LEFT + plot_width
        );
        let mut tick = 0.0;
        while tick <= duration + 1e-9 {
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{axis_y}" y2="{}" stroke="#333333"/><text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"##,
                axis_y + 5.0,
                axis_y + 20.0,
                format_seconds(tick, step),
                xx = x(tick)
            );
            tick += step;
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">stream time (s)</text>"#,
            LEFT + plot_width,
            axis_y + 36.0
        );

        for (i, line) in self.summary.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{LEFT}" y="{}">{}</text>"#,
                axis_y + 58.0 + 20.0 * i as f64,
                escape(line)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn format_seconds(t: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Timeline {
        Timeline {
            title: "bikes <impaired> & co".into(),
            duration: 10.0,
            stalls: vec![Span {
                start: 3.0,
                duration: 1.2,
            }],
            freezes: vec![
                Span {
                    start: 7.2,
                    duration: 2.0,
                },
                Span {
                    start: 9.9,
                    duration: 0.5,
                },
            ],
            scores: vec![],
            no_scores_reason: Some("no model bundle".into()),
            summary: vec!["1 stall, 1.200 s".into()],
        }
    }

    #[test]
    fn spans_land_where_their_times_are() {
        let svg = timeline().svg();
        let plot = WIDTH - LEFT - RIGHT;
        // The stall starts 30% of the way along the axis and is 12% wide.
        assert!(
            svg.contains(&format!(r#"class="stalls" x="{:.1}""#, LEFT + 0.3 * plot)),
            "{svg}"
        );
        assert!(svg.contains(&format!(r#"width="{:.1}""#, 0.12 * plot)));
        assert_eq!(svg.matches(r#"class="freezes""#).count(), 2);
        // A span past the end is clipped to the axis.
        assert!(svg.contains(&format!(r#"class="freezes" x="{:.1}""#, LEFT + 0.99 * plot)));
        assert!(svg.contains("no model bundle"));
        assert!(
            svg.contains("bikes &lt;impaired&gt; &amp; co"),
            "text is escaped"
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn scores_are_a_line_from_low_to_high() {
        let mut t = timeline();
        t.scores = vec![(2.0, 1.0), (4.0, 0.0)];
        let svg = t.svg();
        let plot = WIDTH - LEFT - RIGHT;
        let expected = format!(
            "{:.1},{:.1} {:.1},{:.1}",
            LEFT + 0.2 * plot,
            PLOT_TOP,
            LEFT + 0.4 * plot,
            PLOT_TOP + SCORE_HEIGHT
        );
        assert!(svg.contains(&expected), "{svg}");
        assert!(!svg.contains("no model bundle"));
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(10.0), 2.0);
        assert_eq!(tick_step(60.0), 10.0);
        assert_eq!(tick_step(3600.0), 500.0);
        assert_eq!(tick_step(0.5), 0.1);
    }
}
