// SPDX-License-Identifier: MPL-2.0
//! The bookkeeping that frozen and black pictures share: a condition holds over a run of
//! frames from some start, counts as an event (an episode) once it has lasted long enough,
//! and ends at the first frame without it, or where the last frame ended.

use crate::time::Nanos;

/// A completed episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: Nanos,
    pub duration: Nanos,
}

/// An event of an episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpisodeEvent {
    Started { start: Nanos },
    Ended(Span),
}

/// The current run, whether it became an episode, and the totals.
#[derive(Debug, Default)]
pub struct Episodes {
    /// Start of the current run of frames (the condition may not have lasted yet).
    run_start: Option<Nanos>,
    /// The current run is an episode: its start was told.
    on: bool,
    /// End of the latest frame seen (its time plus duration).
    latest_end: Option<Nanos>,
    count: u64,
    total: Nanos,
}

impl Episodes {
    /// A frame shown until `end`.
    pub fn saw_frame_until(&mut self, end: Nanos) {
        self.latest_end = Some(self.latest_end.map_or(end, |e| e.max(end)));
    }

    /// Start of the current run, if any.
    pub fn run_start(&self) -> Option<Nanos> {
        self.run_start
    }

    /// A new run starts at `start`; the current one ends there.
    pub fn restart(&mut self, start: Nanos) -> Option<EpisodeEvent> {
        let ended = self.end_at(start);
        self.run_start = Some(start);
        ended
    }

    /// The current run has lasted long enough: it becomes an episode, told once.
    pub fn lasted(&mut self) -> Option<EpisodeEvent> {
        let start = self.run_start?;
        if std::mem::replace(&mut self.on, true) {
            return None;
        }
        self.count += 1;
        Some(EpisodeEvent::Started { start })
    }

    /// The current run ends at `end` (the first frame without the condition); no run goes
    /// on. Returns the episode's end, if it was one.
    pub fn end_at(&mut self, end: Nanos) -> Option<EpisodeEvent> {
        let start = self.run_start.take()?;
        if !std::mem::take(&mut self.on) {
            return None;
        }
        let span = Span {
            start,
            duration: end.saturating_sub(start),
        };
        self.total += span.duration;
        Some(EpisodeEvent::Ended(span))
    }

    /// The current run ends where the last frame ended (end of stream, caps change, flush).
    pub fn finish(&mut self) -> Option<EpisodeEvent> {
        match self.latest_end {
            Some(end) => self.end_at(end),
            None => {
                self.run_start = None;
                None
            }
        }
    }

    /// Whether an episode is going on.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Episodes so far, the open one included.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Total time in episodes, the open one's time so far included.
    pub fn total(&self) -> Nanos {
        let open = match (self.on, self.run_start, self.latest_end) {
            (true, Some(start), Some(end)) => end.saturating_sub(start),
            _ => 0,
        };
        self.total + open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_counts_once_it_lasted_and_ends_at_the_next_frame() {
        let mut e = Episodes::default();
        assert_eq!(e.restart(10), None);
        e.saw_frame_until(20);
        assert_eq!(e.lasted(), Some(EpisodeEvent::Started { start: 10 }));
        assert_eq!(e.lasted(), None, "told once");
        e.saw_frame_until(50);
        assert_eq!((e.count(), e.total()), (1, 40));
        assert_eq!(
            e.restart(60),
            Some(EpisodeEvent::Ended(Span {
                start: 10,
                duration: 50
            }))
        );
        // A run that never lasted ends without an event.
        assert_eq!(e.end_at(70), None);
        assert_eq!((e.count(), e.total(), e.is_on()), (1, 50, false));
    }

    #[test]
    fn finish_ends_an_episode_where_the_last_frame_ended() {
        let mut e = Episodes::default();
        e.restart(0);
        e.saw_frame_until(100);
        e.lasted();
        assert_eq!(
            e.finish(),
            Some(EpisodeEvent::Ended(Span {
                start: 0,
                duration: 100
            }))
        );
        assert_eq!(e.finish(), None);
        assert_eq!(e.run_start(), None);
    }
}
