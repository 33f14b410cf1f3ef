// SPDX-License-Identifier: MPL-2.0
//! The prompt's text: the streaming prompt's stall sentence, filled from a window's stall
//! figures as the reference fills it, and the `{K}`/`{T}`/`{question}`/`{stall}` fields of
//! text segments.

use std::collections::BTreeMap;

use qoe_core::stall::WindowStalls;
use qoe_core::time::seconds;

/// Fills a bundle's stall template (`prompt.stall_text[format]`); empty when the format has
/// no template (`none`).
pub fn stall_text(format: &str, templates: &BTreeMap<String, String>, s: &WindowStalls) -> String {
    let Some(template) = templates.get(format) else {
        return String::new();
    };
    let durations = if s.durations.is_empty() {
        "none".to_owned()
    } else {
        s.durations
            .iter()
            .map(|d| format!("{:.1}", seconds(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sequence = s
        .sequence
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    template
        .replace("{count}", &s.count.to_string())
        .replace("{total}", &format!("{:.1}", seconds(s.total)))
        .replace("{durations}", &durations)
        .replace("{initial}", &format!("{:.1}", seconds(s.initial_buffering)))
        .replace("{ratio}", &format!("{:.1}", 100.0 * s.ratio))
        .replace("{since}", &format!("{:.1}", seconds(s.since_last_stall)))
        .replace("{sequence}", &sequence)
}

/// A text segment with its fields filled: `keyframes` and `motion` block sizes, the
/// question (Assistant prompts) and the stall sentence.
pub fn fill_text(
    text: &str,
    keyframes: usize,
    motion: usize,
    question: &str,
    stall: &str,
) -> String {
    text.replace("{K}", &keyframes.to_string())
        .replace("{T}", &motion.to_string())
        .replace("{question}", question)
        .replace("{stall}", stall)
}

/// The first decimal number in `text` ("4", "3.25"): a generated answer's score.
pub fn first_number(text: &str) -> Option<f64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut end = digits(rest);
    if rest[end..].starts_with('.') && rest[end + 1..].starts_with(|c: char| c.is_ascii_digit()) {
        end += 1 + digits(&rest[end + 1..]);
    }
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qoe_core::time::SECOND;

    #[test]
    fn numbers_in_answers() {
        assert_eq!(first_number("The score is 4.5."), Some(4.5));
        assert_eq!(first_number("quality8 quality"), Some(8.0));
        assert_eq!(first_number("3."), Some(3.0));
        assert_eq!(first_number("none"), None);
    }

    #[test]
    fn stall_sentence_in_seconds() {
        let templates = BTreeMap::from([(
            "summary".to_owned(),
            "{count} stalls, {total} s ({durations}), {ratio} %, {initial} s, {since} s, [{sequence}]"
                .to_owned(),
        )]);
        let stalls = WindowStalls {
            count: 2,
            durations: vec![SECOND, SECOND / 2],
            total: 3 * SECOND / 2,
            ratio: 0.12,
            initial_buffering: 2 * SECOND / 5,
            since_last_stall: 3 * SECOND,
            sequence: vec![1, 0],
        };
        assert_eq!(
            stall_text("summary", &templates, &stalls),
            "2 stalls, 1.5 s (1.0, 0.5), 12.0 %, 0.4 s, 3.0 s, [1 0]"
        );
        assert_eq!(stall_text("none", &templates, &stalls), "");
    }
}
