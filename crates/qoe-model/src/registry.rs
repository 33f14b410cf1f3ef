// SPDX-License-Identifier: MPL-2.0
//! The process's scorers: one per bundle folder and session options, shared by every stream
//! that uses it and released when the last one lets go.
//!
//! The registry's own lock is held only to find a bundle's slot; the slot's lock is held
//! while that bundle opens, so that streams starting together open it once, and opening one
//! bundle never waits for another.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use crate::error::{Error, Result};
use crate::scorer::Scorer;
use crate::session::{Provider, SessionOptions};

/// One scorer per bundle and session options in the process, shared by every element that
/// uses it.
pub type SharedScorer = Arc<Scorer>;

/// A bundle folder (canonical) and options (threads count only at the first opening).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    dir: PathBuf,
    options: SessionOptions,
}

/// One bundle's scorer, held weakly so that it goes when its last user does.
struct Slot {
    key: Key,
    scorer: Mutex<Weak<Scorer>>,
}

static SLOTS: LazyLock<Mutex<Vec<Arc<Slot>>>> = LazyLock::new(Default::default);

/// A model in memory and how much it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedModel {
    /// The bundle folder, canonical.
    pub dir: PathBuf,
    pub provider: Provider,
    /// References held to it: each stream using it holds a few (element, workers).
    pub holders: usize,
}

fn key_of(dir: &Path, options: &SessionOptions) -> Result<Key> {
    let dir =
        std::fs::canonicalize(dir).map_err(|e| Error::Bundle(format!("{}: {e}", dir.display())))?;
    Ok(Key {
        dir,
        options: SessionOptions {
            threads: 0,
            ..options.clone()
        },
    })
}

/// The slot for `key`, made if new; slots of released models are forgotten on the way.
fn slot(key: &Key) -> Arc<Slot> {
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    // A slot being opened is locked: keep it.
    slots.retain(|s| {
        s.scorer
            .try_lock()
            .map_or(true, |scorer| scorer.strong_count() > 0)
            || s.key == *key
    });
    if let Some(slot) = slots.iter().find(|s| s.key == *key) {
        return slot.clone();
    }
    let slot = Arc::new(Slot {
        key: key.clone(),
        scorer: Mutex::new(Weak::new()),
    });
    slots.push(slot.clone());
    slot
}

/// Returns the scorer of `key`, opening it with `open` when no one holds it.
fn shared_with(key: Key, open: impl FnOnce() -> Result<Scorer>) -> Result<SharedScorer> {
    let slot = slot(&key);
    let mut held = slot.scorer.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(scorer) = held.upgrade() {
        return Ok(scorer);
    }
    let scorer = Arc::new(open()?);
    *held = Arc::downgrade(&scorer);
    Ok(scorer)
}

/// The process's scorer for the bundle in `dir` opened with `options`, opened on first use
/// and shared while anyone holds it.
pub fn shared_scorer(dir: &Path, options: &SessionOptions) -> Result<SharedScorer> {
    let key = key_of(dir, options)?;
    let dir = key.dir.clone();
    shared_with(key, || Scorer::open_with(&dir, options))
}

/// [`shared_scorer`] for a scorer with test faults: streams that open `dir` with `options`
/// while the caller holds the result get this scorer (tests only).
#[cfg(feature = "test-faults")]
pub fn shared_scorer_with_faults(
    dir: &Path,
    options: &SessionOptions,
    faults: crate::scorer::Faults,
) -> Result<SharedScorer> {
    let key = key_of(dir, options)?;
    let dir = key.dir.clone();
    shared_with(key, || Scorer::open_with_faults(&dir, options, faults))
}

/// The models in memory now, with how many holders each has.
pub fn loaded() -> Vec<LoadedModel> {
    let slots: Vec<Arc<Slot>> = SLOTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    slots
        .iter()
        .filter_map(|s| {
            let scorer = s
                .scorer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .upgrade()?;
            // Less the reference taken here.
            let holders = Arc::strong_count(&scorer) - 1;
            Some(LoadedModel {
                dir: s.key.dir.clone(),
                provider: scorer.provider(),
                holders,
            })
        })
        .collect()
}
