// SPDX-License-Identifier: MPL-2.0
//! The process's scorers: one per bundle folder and session options, shared by every stream
//! that uses it and released when the last one lets go.
//!
//! The registry's own lock is held only to find a bundle's slot; the slot's lock is held
//! while that bundle opens, so that streams starting together open it once, and opening one
//! bundle never waits for another.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};
use crate::scorer::Scorer;
use crate::session::{Provider, SessionOptions};

/// One scorer per bundle and session options in the process, shared by every element that
/// uses it.
pub type SharedScorer = Arc<Scorer>;

/// A bundle folder (canonical) and options (threads, their priority, the inference server's
/// timeout and batching count only at the first opening: they do not split the share).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    dir: PathBuf,
    options: SessionOptions,
}

/// Values opened once per key and shared while anyone holds them.
struct Shared<K, T> {
    slots: Mutex<Vec<Arc<Slot<K, T>>>>,
}

/// One key's value, held weakly so that it goes when its last user does. Its lock is held
/// while the value opens.
struct Slot<K, T> {
    key: K,
    value: Mutex<Weak<T>>,
}

impl<K: PartialEq + Clone, T> Shared<K, T> {
    const fn new() -> Self {
        Shared {
            slots: Mutex::new(Vec::new()),
        }
    }

    /// The slot for `key`, made if new; slots of released values are forgotten on the way.
    fn slot(&self, key: &K) -> Arc<Slot<K, T>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // A slot that is opening is locked: keep it.
        slots.retain(|s| {
            s.key == *key
                || s.value
                    .try_lock()
                    .map_or(true, |value| value.strong_count() > 0)
        });
        if let Some(slot) = slots.iter().find(|s| s.key == *key) {
            return slot.clone();
        }
        let slot = Arc::new(Slot {
            key: key.clone(),
            value: Mutex::new(Weak::new()),
        });
        slots.push(slot.clone());
        slot
    }

    /// The value of `key`, opened with `open` when no one holds it. Only openings of the
    /// same key wait for each other.
    fn get_or_open(&self, key: &K, open: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let slot = self.slot(key);
        let mut held = slot.value.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = held.upgrade() {
            return Ok(value);
        }
        let value = Arc::new(open()?);
        *held = Arc::downgrade(&value);
        Ok(value)
    }

    /// The values held now, with their keys.
    fn live(&self) -> Vec<(K, Arc<T>)> {
        let slots: Vec<_> = self.slots.lock().unwrap_or_else(|e| e.into_inner()).clone();
        slots
            .iter()
            .filter_map(|s| {
                let value = s
                    .value
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .upgrade()?;
                Some((s.key.clone(), value))
            })
            .collect()
    }
}

static SCORERS: Shared<Key, Scorer> = Shared::new();

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
            priority: crate::Priority::default(),
            server_timeout_ms: 0,
            batch: Default::default(),
            ..options.clone()
        },
    })
}

/// The process's scorer for the bundle in `dir` opened with `options`, opened on first use
/// and shared while anyone holds it.
pub fn shared_scorer(dir: &Path, options: &SessionOptions) -> Result<SharedScorer> {
    let key = key_of(dir, options)?;
    // Opened by the path the caller gave, so load errors name it; the key's canonical path
    // only makes two spellings of one folder share a scorer.
    SCORERS.get_or_open(&key, || Scorer::open_with(dir, options))
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
    SCORERS.get_or_open(&key, || Scorer::open_with_faults(dir, options, faults))
}

/// The models in memory now, with how many holders each has.
pub fn loaded() -> Vec<LoadedModel> {
    SCORERS
        .live()
        .into_iter()
        .map(|(key, scorer)| LoadedModel {
            dir: key.dir,
            provider: scorer.provider(),
            // Less the reference taken here.
            holders: Arc::strong_count(&scorer) - 1,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn one_value_per_key_while_held() {
        let shared: Shared<u32, String> = Shared::new();
        let opened = AtomicUsize::new(0);
        let open = || {
            opened.fetch_add(1, Ordering::SeqCst);
            Ok("model".to_owned())
        };
        let a = shared.get_or_open(&1, open).unwrap();
        let b = shared.get_or_open(&1, open).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(shared.live().len(), 1);
        drop((a, b));
        assert!(shared.live().is_empty(), "released with its last holder");
        let _c = shared.get_or_open(&1, open).unwrap();
        assert_eq!(
            opened.load(Ordering::SeqCst),
            2,
            "opened again after release"
        );
    }

    #[test]
    fn a_failed_open_leaves_nothing_held() {
        let shared: Shared<u32, String> = Shared::new();
        let e = shared
            .get_or_open(&1, || Err(Error::Bundle("bad manifest".into())))
            .unwrap_err();
        assert_eq!(e.to_string(), "bad manifest");
        assert!(shared.live().is_empty());
    }

    #[test]
    fn opening_one_key_does_not_wait_for_another() {
        static SHARED: Shared<u32, String> = Shared::new();
        let (started, wait_started) = mpsc::channel();
        let (release, wait_release) = mpsc::channel::<()>();
        // Key 1 opens slowly: it holds its slot until released.
        let slow = std::thread::spawn(move || {
            SHARED
                .get_or_open(&1, || {
                    started.send(()).unwrap();
                    wait_release.recv().unwrap();
                    Ok("slow".to_owned())
                })
                .unwrap()
        });
        wait_started.recv().unwrap();
        // Key 2 opens while key 1 is still opening.
        let (done, wait_done) = mpsc::channel();
        let fast = std::thread::spawn(move || {
            let value = SHARED.get_or_open(&2, || Ok("fast".to_owned())).unwrap();
            done.send(()).unwrap();
            value
        });
        let not_blocked = wait_done.recv_timeout(Duration::from_secs(10)).is_ok();
        release.send(()).unwrap();
        assert!(not_blocked, "key 2 waited for key 1's opening");
        assert_eq!(*fast.join().unwrap(), "fast");
        assert_eq!(*slow.join().unwrap(), "slow");
    }
}
