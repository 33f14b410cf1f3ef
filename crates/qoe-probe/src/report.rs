// SPDX-License-Identifier: MPL-2.0
//! The `qoe-probe --report` picture: an SVG timeline of one stream with its stall, freeze and
//! model-stale spans and its quality score over time (a 0–1 axis, the level bands, a marker
//! per window, a legend). Free of GStreamer types.

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
    /// Windows the model could not score (a failing model: the element's stale flag).
    pub stale: Vec<Span>,
    /// Scored windows: (window end in seconds, score 0..1, the level the element reported).
    /// The level is the most likely level word, and the score the probability-weighted
    /// mean, so a window can sit in one level's band and be reported as another.
    pub scores: Vec<(f64, f64, String)>,
    /// Why there are no scores, if there are none.
    pub no_scores_reason: Option<String>,
    /// Summary lines printed under the chart.
    pub summary: Vec<String>,
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 60.0;
const PLOT_TOP: f64 = 60.0;
const SCORE_HEIGHT: f64 = 180.0;
const LANE_HEIGHT: f64 = 28.0;
/// Windows beyond which markers carry no level word (it would crowd the panel).
const MAX_LABELLED_WINDOWS: usize = 12;
const SCORE_COLOUR: &str = "#1f77b4";
const STALL_COLOUR: &str = "#d62728";
const FREEZE_COLOUR: &str = "#9467bd";
const STALE_COLOUR: &str = "#7f7f7f";

/// The score band of level `rank` (0: the best): the level's fifth of 0–1, as
/// `qoe_model::level::level_of_score` bins a score.
fn level_band(rank: usize) -> (f64, f64) {
    let n = LEVELS.len() as f64;
    let low = (n - 1.0 - rank as f64) / n;
    (low, low + 1.0 / n)
}

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
        let stale_lane = freeze_lane + LANE_HEIGHT + 10.0;
        let axis_y = stale_lane + LANE_HEIGHT + 10.0;
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
        // The level bands, shaded in turn and named on the right; the score axis on the left.
        for (rank, level) in LEVELS.iter().enumerate() {
            let (low, high) = level_band(rank);
            if rank % 2 == 0 {
                let _ = writeln!(
                    s,
                    r##"<rect class="band" x="{LEFT}" y="{:.1}" width="{plot_width}" height="{:.1}" fill="#e8e8e8"/>"##,
                    y(high),
                    y(low) - y(high)
                );
            }
            let _ = writeln!(
                s,
                r##"<text class="level" x="{}" y="{:.1}" fill="#555555">{level}</text>"##,
                LEFT + plot_width + 6.0,
                y((low + high) / 2.0) + 4.0
            );
        }
        for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let yy = y(tick);
            let _ = writeln!(
                s,
                r##"<line x1="{}" x2="{LEFT}" y1="{yy:.1}" y2="{yy:.1}" stroke="#333333"/><text x="{}" y="{:.1}" text-anchor="end">{tick:.2}</text>"##,
                LEFT - 5.0,
                LEFT - 8.0,
                yy + 4.0,
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
                .map(|(t, v, _)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = writeln!(
                s,
                r##"<polyline points="{}" fill="none" stroke="{SCORE_COLOUR}" stroke-width="2"/>"##,
                points.join(" ")
            );
            // A marker per window, so that one window alone is seen too, with its level word
            // where there is room for it.
            let labelled = self.scores.len() <= MAX_LABELLED_WINDOWS;
            for (t, v, level) in &self.scores {
                let level = escape(level);
                let _ = writeln!(
                    s,
                    r##"<circle class="window" cx="{:.1}" cy="{:.1}" r="4" fill="{SCORE_COLOUR}"><title>{v:.3} ({level}) at {t:.3} s</title></circle>"##,
                    x(*t),
                    y(*v)
                );
                if labelled {
                    let _ = writeln!(
                        s,
                        r##"<text class="window-level" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{SCORE_COLOUR}">{level}</text>"##,
                        x(*t),
                        y(*v) - 8.0
                    );
                }
            }
        }

        // Stall and freeze lanes.
        for (label, lane, spans, colour) in [
            ("stalls", stall_lane, &self.stalls, STALL_COLOUR),
            ("freezes", freeze_lane, &self.freezes, FREEZE_COLOUR),
            ("stale", stale_lane, &self.stale, STALE_COLOUR),
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

        // The legend, above the score panel.
        let mut legend_x = LEFT + plot_width;
        for (label, colour) in [
            ("model stale", STALE_COLOUR),
            ("freeze", FREEZE_COLOUR),
            ("stall", STALL_COLOUR),
            (
                "window: score (0–1), level; bands: the level of a score alone",
                SCORE_COLOUR,
            ),
        ] {
            legend_x -= 18.0 + 7.5 * label.chars().count() as f64;
            let _ = writeln!(
                s,
                r#"<g class="legend"><rect x="{legend_x:.1}" y="{}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{}">{label}</text></g>"#,
                PLOT_TOP - 18.0,
                legend_x + 16.0,
                PLOT_TOP - 8.0
            );
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
            stale: vec![],
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
        t.scores = vec![(2.0, 1.0, "high".into()), (4.0, 0.0, "low".into())];
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
    fn one_window_is_a_marker_in_its_level_band() {
        let mut t = timeline();
        t.scores = vec![(8.0, 0.45, "fair".into())];
        t.stale = vec![Span {
            start: 2.0,
            duration: 8.0,
        }];
        let svg = t.svg();
        let plot = WIDTH - LEFT - RIGHT;
        let y = PLOT_TOP + SCORE_HEIGHT - 0.45 * SCORE_HEIGHT;
        assert!(
            svg.contains(&format!(
                r#"class="window" cx="{:.1}" cy="{y:.1}""#,
                LEFT + 0.8 * plot
            )),
            "{svg}"
        );
        // 0.45 lies in fair's band, 0.4-0.6, whose word is drawn at 0.5.
        assert_eq!(level_band(2), (0.4, 0.6000000000000001));
        assert!(svg.contains(&format!(
            r##"y="{:.1}" fill="#555555">fair<"##,
            PLOT_TOP + SCORE_HEIGHT - 0.5 * SCORE_HEIGHT + 4.0
        )));
        for tick in ["0.00", "0.25", "0.50", "0.75", "1.00"] {
            assert!(svg.contains(&format!(">{tick}</text>")), "{tick}");
        }
        assert_eq!(svg.matches(r#"class="stale""#).count(), 1);
        assert!(svg.contains(r#"class="window-level""#) && svg.contains(">fair</text>"));
        assert_eq!(svg.matches(r#"class="legend""#).count(), 4);
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(10.0), 2.0);
        assert_eq!(tick_step(60.0), 10.0);
        assert_eq!(tick_step(3600.0), 500.0);
        assert_eq!(tick_step(0.5), 0.1);
    }
}
