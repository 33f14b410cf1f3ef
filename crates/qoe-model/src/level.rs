// SPDX-License-Identifier: MPL-2.0
//! The quality level words, best first: VQA²'s five MOS bins, as the element reports them and
//! the probe orders and draws them.

/// The five quality levels, best first.
pub const LEVELS: [&str; 5] = ["high", "good", "fair", "poor", "low"];

/// The level of a 0–1 score given without level probabilities: five equal bins.
pub fn level_of_score(score: f64) -> &'static str {
    let bin = ((score * 5.0).floor().max(0.0) as usize).min(4);
    LEVELS[4 - bin]
}

/// A level word's rank (0: the best), `None` for a word that is not a level.
pub fn rank(word: &str) -> Option<usize> {
    LEVELS.iter().position(|l| *l == word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_fall_in_five_equal_bins() {
        assert_eq!(level_of_score(0.0), "low");
        assert_eq!(level_of_score(0.19), "low");
        assert_eq!(level_of_score(0.2), "poor");
        assert_eq!(level_of_score(0.5), "fair");
        assert_eq!(level_of_score(0.79), "good");
        assert_eq!(level_of_score(1.0), "high");
        assert_eq!(level_of_score(-3.0), "low");
        assert_eq!(rank("high"), Some(0));
        assert_eq!(rank("low"), Some(4));
        assert_eq!(rank("excellent"), None);
    }
}
