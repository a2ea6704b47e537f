//! The parts of the stream still to read during a full load, shared by the loaders. The stream is
//! first cut into equal spans of time; a loader that reads a full page while another loader is
//! idle hands it the upper half of what remains of its span, so a burst of revocations inside a
//! narrow time range is still read by several connections at once.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Stream entry ids (`{milliseconds}-{sequence}`) as one ordered number.
pub(super) type Position = u128;

/// The position of the entry id `id`, if it is one.
pub(super) fn position(id: &str) -> Option<Position> {
    let (millis, sequence) = id.split_once('-')?;
    let (millis, sequence): (u64, u64) = (millis.parse().ok()?, sequence.parse().ok()?);
    Some((u128::from(millis) << 64) | u128::from(sequence))
}

/// The entry id at `position`, as `XRANGE` takes it.
pub(super) fn entry_id(position: Position) -> String {
    format!("{}-{}", position >> 64, position as u64)
}

/// An inclusive range of positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub low: Position,
    pub high: Position,
}

impl Span {
    /// The two halves, when there is more than one position.
    fn halves(self) -> Option<(Span, Span)> {
        (self.low < self.high).then(|| {
            let middle = self.low + (self.high - self.low) / 2;
            (
                Span {
                    low: self.low,
                    high: middle,
                },
                Span {
                    low: middle + 1,
                    high: self.high,
                },
            )
        })
    }

    /// `parts` spans of equal length covering this one.
    pub fn split_evenly(self, parts: u128) -> Vec<Span> {
        let length = (self.high - self.low) / parts.max(1) + 1;
        (0..parts.max(1))
            .map(|part| self.low.saturating_add(part * length))
            .take_while(|low| *low <= self.high)
            .map(|low| Span {
                low,
                high: low.saturating_add(length - 1).min(self.high),
            })
            .collect()
    }
}

#[derive(Default)]
struct Queue {
    spans: Vec<Span>,
    // Loaders reading a span, and loaders waiting for one.
    busy: usize,
    idle: usize,
    failed: bool,
}

/// The spans still to read.
pub(super) struct LoadQueue {
    queue: Mutex<Queue>,
    changed: Notify,
}

impl LoadQueue {
    /// A queue holding `spans`.
    pub fn new(spans: Vec<Span>) -> Self {
        Self {
            queue: Mutex::new(Queue {
                spans,
                ..Queue::default()
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next span to read; waits while a busy loader may still hand one over, and answers
    /// `None` once everything is read (or a loader failed).
    pub async fn next(&self) -> Option<Span> {
        let mut waited = false;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut queue = self.lock();
                if waited {
                    queue.idle -= 1;
                }
                if queue.failed {
                    return None;
                }
                if let Some(span) = queue.spans.pop() {
                    queue.busy += 1;
                    return Some(span);
                }
                if queue.busy == 0 {
                    return None;
                }
                queue.idle += 1;
            }
            waited = true;
            notified.await;
        }
    }

    /// What to keep reading of `rest`: all of it, or its lower half when a loader is idle and
    /// nothing is queued (the upper half is then queued for it).
    pub fn share(&self, rest: Span) -> Span {
        let mut queue = self.lock();
        if queue.idle == 0 || !queue.spans.is_empty() {
            return rest;
        }
        let Some((lower, upper)) = rest.halves() else {
            return rest;
        };
        queue.spans.push(upper);
        drop(queue);
        self.changed.notify_one();
        lower
    }

    /// A loader is done with its span.
    pub fn finished(&self) {
        let mut queue = self.lock();
        queue.busy -= 1;
        let all_read = queue.busy == 0 && queue.spans.is_empty();
        drop(queue);
        if all_read {
            self.changed.notify_waiters();
        }
    }

    /// A loader failed: every loader stops.
    pub fn fail(&self) {
        self.lock().failed = true;
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_as_positions() {
        let (a, b, c) = (
            position("5-18446744073709551615").unwrap(),
            position("6-0").unwrap(),
            position("6-1").unwrap(),
        );
        assert!(a < b && b < c);
        assert_eq!(entry_id(b), "6-0");
        assert_eq!(position("x-1"), None);
    }

    #[test]
    fn even_spans_cover_the_range_without_overlap() {
        let whole = Span { low: 10, high: 109 };
        let spans = whole.split_evenly(8);
        assert_eq!(spans.first().unwrap().low, 10);
        assert_eq!(spans.last().unwrap().high, 109);
        for pair in spans.windows(2) {
            assert_eq!(pair[0].high + 1, pair[1].low);
        }
        assert_eq!(
            Span { low: 3, high: 3 }.split_evenly(4),
            vec![Span { low: 3, high: 3 }]
        );
    }

    #[tokio::test]
    async fn an_idle_loader_gets_half_of_a_busy_loaders_rest_and_all_end() {
        let queue = std::sync::Arc::new(LoadQueue::new(vec![Span { low: 0, high: 99 }]));
        let busy = queue.next().await.unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        while queue.lock().idle == 0 {
            tokio::task::yield_now().await;
        }
        let kept = queue.share(Span {
            low: 50,
            high: busy.high,
        });
        assert_eq!(kept, Span { low: 50, high: 74 });
        assert_eq!(waiting.await.unwrap(), Some(Span { low: 75, high: 99 }));
        assert_eq!(queue.share(kept), kept, "nobody idle: nothing is handed over");
        queue.finished();
        queue.finished();
        assert_eq!(queue.next().await, None);
    }

    #[tokio::test]
    async fn a_failure_releases_the_waiting_loaders() {
        let queue = std::sync::Arc::new(LoadQueue::new(vec![Span { low: 0, high: 9 }]));
        queue.next().await.unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        while queue.lock().idle == 0 {
            tokio::task::yield_now().await;
        }
        queue.fail();
        assert_eq!(waiting.await.unwrap(), None);
    }
}
