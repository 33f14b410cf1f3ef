// SPDX-License-Identifier: MPL-2.0
//! Batching across streams: the scoring threads of every stream that shares a model hand
//! their work to one [`Batcher`], which runs what is waiting as one call.
//!
//! There is no batching thread. The first caller that finds no batch running and a batch
//! ready leads: it takes the waiting requests (oldest first, up to `max_rows` rows), runs
//! them, hands each caller its result and wakes the others. A batch is ready when it is full,
//! when every stream that uses the model is waiting, or when its oldest request has waited
//! `max_delay`. While a batch runs, new requests gather for the next one, so under load the
//! batches grow by themselves, and a lone stream never waits.
//!
//! A request's rows (an ensemble's prefills of one window) always stay in one batch. What a
//! batch returns is per request: the run function decides what a failure costs (the scorer
//! retries each request alone, so that one stream's bad window fails only that window).

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result, panic_message};

/// How a shared model batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchOptions {
    /// The most rows (decoder prefills: one per window and ensemble model) in one call;
    /// 1 runs every row alone, as without batching.
    pub max_rows: usize,
    /// The longest the oldest waiting request waits for others before its batch runs.
    pub max_delay: Duration,
}

/// Rows per batch by default: on the 2-core machine the default bundle's decoder costs 0.81×
/// per row at 16 rows of 45 tokens (a streaming window) against one at a time, and 0.79× at
/// 32; 0.75× and 0.68× at 21 tokens (`python -m qoe_onnx.micro.bench_batch`). 16 rows of an
/// ensemble are 8 windows.
pub const DEFAULT_MAX_ROWS: usize = 16;
/// The default wait for a batch to fill.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(20);

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_rows: DEFAULT_MAX_ROWS,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }
}

/// Batches and rows run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    pub batches: u64,
    pub rows: u64,
    /// The most rows one batch held.
    pub largest: usize,
}

struct Request<R> {
    ticket: u64,
    arrived: Instant,
    rows: Vec<R>,
}

struct State<R, O> {
    next_ticket: u64,
    waiting: VecDeque<Request<R>>,
    done: HashMap<u64, Result<Vec<O>>>,
    running: bool,
    counts: BatchCounts,
}

/// Gathers requests of rows from many threads into batches (see the module doc).
pub struct Batcher<R, O> {
    options: BatchOptions,
    /// Streams that use the model now: when all of them wait, nothing more can come.
    streams: AtomicUsize,
    state: Mutex<State<R, O>>,
    finished: Condvar,
}

impl<R, O> Batcher<R, O> {
    pub fn new(options: BatchOptions) -> Self {
        Batcher {
            options: BatchOptions {
                max_rows: options.max_rows.max(1),
                ..options
            },
            streams: AtomicUsize::new(0),
            state: Mutex::new(State {
                next_ticket: 0,
                waiting: VecDeque::new(),
                done: HashMap::new(),
                running: false,
                counts: BatchCounts::default(),
            }),
            finished: Condvar::new(),
        }
    }

    /// Streams that use the model now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Counts one more stream that uses the model, until [`Batcher::leave`].
    pub fn join(&self) {
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn leave(&self) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> BatchCounts {
        self.lock().counts
    }

    fn lock(&self) -> MutexGuard<'_, State<R, O>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `rows` in a batch with whatever else is waiting; returns their outputs in order.
    /// `run` gets the batch's requests and returns one result per request.
    pub fn submit(
        &self,
        rows: Vec<R>,
        run: impl Fn(Vec<Vec<R>>) -> Vec<Result<Vec<O>>>,
    ) -> Result<Vec<O>> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(Request {
            ticket,
            arrived: Instant::now(),
            rows,
        });
        loop {
            if let Some(result) = state.done.remove(&ticket) {
                return result;
            }
            if state.running {
                state = self.finished.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let oldest = state.waiting.front().expect("our request waits").arrived;
            let due = oldest + self.options.max_delay;
            let rows: usize = state.waiting.iter().map(|r| r.rows.len()).sum();
            let now = Instant::now();
            let ready = rows >= self.options.max_rows
                || state.waiting.len() >= self.streams().max(1)
                || now >= due;
            if !ready {
                state = self
                    .finished
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            state = self.lead(state, &run);
        }
    }

    /// Takes a batch from the waiting requests, runs it without the lock, and files the results.
    fn lead<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<R, O>>,
        run: &impl Fn(Vec<Vec<R>>) -> Vec<Result<Vec<O>>>,
    ) -> MutexGuard<'a, State<R, O>> {
        let mut tickets = Vec::new();
        let mut batch = Vec::new();
        let mut rows = 0;
        while let Some(front) = state.waiting.front() {
            if !batch.is_empty() && rows + front.rows.len() > self.options.max_rows {
                break;
            }
            let request = state.waiting.pop_front().expect("just seen");
            rows += request.rows.len();
            tickets.push(request.ticket);
            batch.push(request.rows);
        }
        state.running = true;
        state.counts.batches += 1;
        state.counts.rows += rows as u64;
        state.counts.largest = state.counts.largest.max(rows);
        drop(state);
        let results = catch_unwind(AssertUnwindSafe(|| run(batch))).unwrap_or_else(|panic| {
            let error = Error::Input(format!(
                "a batched model call panicked: {}",
                panic_message(&*panic)
            ));
            tickets.iter().map(|_| Err(error.clone())).collect()
        });
        let mut state = self.lock();
        let mut results = results.into_iter();
        for ticket in tickets {
            let result = results.next().unwrap_or_else(|| {
                Err(Error::Input(
                    "a batched model call returned too few results".into(),
                ))
            });
            state.done.insert(ticket, result);
        }
        state.running = false;
        self.finished.notify_all();
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn doubled(requests: Vec<Vec<u32>>) -> Vec<Result<Vec<u32>>> {
        requests
            .into_iter()
            .map(|rows| {
                if rows.contains(&13) {
                    Err(Error::Input("13 is bad".into()))
                } else {
                    Ok(rows.iter().map(|r| r * 2).collect())
                }
            })
            .collect()
    }

    #[test]
    fn a_lone_stream_runs_at_once() {
        let batcher = Batcher::new(BatchOptions {
            max_rows: 16,
            max_delay: Duration::from_secs(60),
        });
        batcher.join();
        let started = Instant::now();
        assert_eq!(batcher.submit(vec![1, 2], doubled).unwrap(), vec![2, 4]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "it waited for nobody"
        );
        assert_eq!(
            batcher.counts(),
            BatchCounts {
                batches: 1,
                rows: 2,
                largest: 2
            }
        );
    }

    #[test]
    fn waiting_streams_share_one_batch_and_keep_their_own_results() {
        let streams = 6;
        let batcher = Arc::new(Batcher::new(BatchOptions {
            max_rows: 16,
            max_delay: Duration::from_secs(60),
        }));
        for _ in 0..streams {
            batcher.join();
        }
        let barrier = Arc::new(Barrier::new(streams));
        let threads: Vec<_> = (0..streams as u32)
            .map(|i| {
                let (batcher, barrier) = (batcher.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Stream 3 sends a bad row: only its own request fails.
                    let rows = if i == 3 { vec![13] } else { vec![i, 100 + i] };
                    batcher.submit(rows, doubled)
                })
            })
            .collect();
        for (i, thread) in threads.into_iter().enumerate() {
            let result = thread.join().unwrap();
            let i = i as u32;
            if i == 3 {
                assert_eq!(result, Err(Error::Input("13 is bad".into())));
            } else {
                assert_eq!(result, Ok(vec![2 * i, 200 + 2 * i]));
            }
        }
        // All six waited for each other (the delay is a minute): one batch.
        let counts = batcher.counts();
        assert_eq!((counts.batches, counts.rows), (1, 11));
    }

    #[test]
    fn a_full_batch_runs_without_waiting_and_requests_stay_whole() {
        let batcher = Arc::new(Batcher::new(BatchOptions {
            max_rows: 3,
            max_delay: Duration::from_millis(200),
        }));
        for _ in 0..100 {
            batcher.join(); // more streams than will ever wait
        }
        let threads: Vec<_> = (0..4u32)
            .map(|i| {
                let batcher = batcher.clone();
                std::thread::spawn(move || batcher.submit(vec![i, i], doubled))
            })
            .collect();
        for (i, thread) in threads.into_iter().enumerate() {
            let i = i as u32;
            assert_eq!(thread.join().unwrap(), Ok(vec![2 * i, 2 * i]));
        }
        let counts = batcher.counts();
        // Two-row requests never split, and never more than three rows together.
        assert_eq!((counts.batches, counts.rows, counts.largest), (4, 8, 2));
    }

    #[test]
    fn the_oldest_request_waits_at_most_the_delay() {
        let batcher = Batcher::new(BatchOptions {
            max_rows: 16,
            max_delay: Duration::from_millis(50),
        });
        batcher.join();
        batcher.join(); // a second stream that sends nothing
        let started = Instant::now();
        assert_eq!(batcher.submit(vec![5], doubled).unwrap(), vec![10]);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
    }

    #[test]
    fn a_panicking_batch_fails_its_requests_and_the_batcher_goes_on() {
        let batcher = Batcher::new(BatchOptions::default());
        let result = batcher.submit(vec![1], |_: Vec<Vec<u32>>| -> Vec<Result<Vec<u32>>> {
            panic!("boom")
        });
        assert_eq!(
            result,
            Err(Error::Input("a batched model call panicked: boom".into()))
        );
        assert_eq!(batcher.submit(vec![4], doubled).unwrap(), vec![8]);
    }
}
