// SPDX-License-Identifier: MPL-2.0
//! A bounded queue between the streaming thread and a worker. When full, a push either
//! drops the oldest item (leaky, the default: the watched pipeline never waits) and hands it
//! back so the caller can count it, or waits for room (for offline analysis, where every
//! window matters more than speed).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
    /// The consumer took an item and has not said `done` yet.
    busy: bool,
}

#[derive(Debug)]
pub struct BoundedQueue<T> {
    inner: Mutex<Inner<T>>,
    changed: Condvar,
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    pub fn new(capacity: usize) -> Self {
        BoundedQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                closed: false,
                busy: false,
            }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds `item`. When full: `leaky` drops and returns the oldest item; otherwise waits
    /// for room. A closed queue returns `item` itself.
    pub fn push(&self, item: T, leaky: bool) -> Option<T> {
        let mut inner = self.inner.lock().unwrap();
        if inner.closed {
            return Some(item);
        }
        let mut dropped = None;
        if inner.items.len() >= self.capacity {
            if leaky {
                dropped = inner.items.pop_front();
            } else {
                inner = self
                    .changed
                    .wait_while(inner, |i| i.items.len() >= self.capacity && !i.closed)
                    .unwrap();
                if inner.closed {
                    return Some(item);
                }
            }
        }
        inner.items.push_back(item);
        self.changed.notify_all();
        dropped
    }

    /// The next item, waiting for one; `None` once closed. Marks the consumer busy until
    /// [`BoundedQueue::done`].
    pub fn pop(&self) -> Option<T> {
        let mut inner = self
            .changed
            .wait_while(self.inner.lock().unwrap(), |i| {
                i.items.is_empty() && !i.closed
            })
            .unwrap();
        if inner.closed {
            return None;
        }
        inner.busy = true;
        let item = inner.items.pop_front();
        self.changed.notify_all();
        item
    }

    /// The consumer finished the item it popped.
    pub fn done(&self) {
        self.inner.lock().unwrap().busy = false;
        self.changed.notify_all();
    }

    /// Waits until the queue is empty and the consumer idle, at most `timeout`. Returns
    /// whether it drained.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut inner = self.inner.lock().unwrap();
        while (!inner.items.is_empty() || inner.busy) && !inner.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            inner = self.changed.wait_timeout(inner, left).unwrap().0;
        }
        true
    }

    /// Removes every waiting item (e.g. on a flushing seek), returning how many.
    pub fn clear(&self) -> usize {
        let mut inner = self.inner.lock().unwrap();
        let n = inner.items.len();
        inner.items.clear();
        self.changed.notify_all();
        n
    }

    /// Wakes everyone; later pushes are refused and pops return `None`. Items still queued
    /// are dropped.
    pub fn close(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.closed = true;
        inner.items.clear();
        self.changed.notify_all();
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn leaky_push_drops_the_oldest() {
        let q = BoundedQueue::new(2);
        assert_eq!(q.push(1, true), None);
        assert_eq!(q.push(2, true), None);
        assert_eq!(q.push(3, true), Some(1));
        assert_eq!(q.pop(), Some(2));
        q.done();
        assert_eq!(q.pop(), Some(3));
        q.done();
        assert!(q.wait_idle(Duration::from_millis(10)));
    }

    #[test]
    fn blocking_push_waits_for_room() {
        let q = Arc::new(BoundedQueue::new(1));
        q.push(1, false);
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || q.push(2, false))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.len(), 1, "the second push waits");
        assert_eq!(q.pop(), Some(1));
        q.done();
        assert_eq!(producer.join().unwrap(), None);
        assert_eq!(q.pop(), Some(2));
    }

    #[test]
    fn close_wakes_consumers_and_refuses_items() {
        let q = Arc::new(BoundedQueue::<u32>::new(1));
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || q.pop())
        };
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        assert_eq!(consumer.join().unwrap(), None);
        assert_eq!(q.push(5, false), Some(5));
    }

    #[test]
    fn wait_idle_waits_for_the_consumer() {
        let q = BoundedQueue::new(4);
        q.push(1, true);
        assert!(!q.wait_idle(Duration::from_millis(10)), "an item waits");
        q.pop();
        assert!(
            !q.wait_idle(Duration::from_millis(10)),
            "the consumer is busy"
        );
        q.done();
        assert!(q.wait_idle(Duration::from_millis(10)));
    }
}
