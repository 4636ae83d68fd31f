//! A request context's mailbox: its `http_call` results and wake-ups. Made for every
//! request, used by few, so it is one small allocation (a channel would allocate a block
//! of slots per request).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::state::Event;

/// The receiving side, held by the request's `Stream`.
pub(crate) struct Mailbox {
    queue: Mutex<VecDeque<Event>>,
    notify: Notify,
    /// Live [`Sender`]s; none left means nothing more can arrive.
    senders: AtomicUsize,
    /// Events in `queue`, readable without its lock (most phases find none).
    queued: AtomicUsize,
    /// `http_call`s made and not answered yet.
    in_flight: AtomicUsize,
    /// Held by the phase that waits on the mailbox (others leave its events to it).
    pub(crate) waiting: tokio::sync::Mutex<()>,
}

/// A sending side: the context holds one, each `http_call` in flight another.
pub(crate) struct Sender(Arc<Mailbox>);

impl Mailbox {
    /// A mailbox and its first sender.
    pub(crate) fn new() -> (Arc<Mailbox>, Sender) {
        let mailbox = Arc::new(Mailbox {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            senders: AtomicUsize::new(1),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            waiting: tokio::sync::Mutex::new(()),
        });
        (mailbox.clone(), Sender(mailbox))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next event if one is there.
    pub(crate) fn try_recv(&self) -> Option<Event> {
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let event = self.queue().pop_front();
        if event.is_some() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        event
    }

    /// Whether nothing is queued (without taking the lock).
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }

    /// Whether nothing is queued and no call is awaited: a phase skipped now cannot be the
    /// one that would have delivered a call's result.
    pub(crate) fn idle(&self) -> bool {
        self.is_empty() && self.in_flight.load(Ordering::Acquire) == 0
    }

    /// The next event; `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&self) -> Option<Event> {
        loop {
            if let Some(event) = self.try_recv() {
                return Some(event);
            }
            if self.senders.load(Ordering::Acquire) == 0 {
                return None;
            }
            // `notify_one` stores a permit when nobody waits, so a send between the checks
            // above and this wait is not lost.
            self.notify.notified().await;
        }
    }
}

impl Sender {
    /// Queues an event and wakes the waiting phase, if any.
    pub(crate) fn send(&self, event: Event) {
        let answers_a_call = matches!(event, Event::CallDone(..));
        self.0.queue().push_back(event);
        // Queued before the call stops counting as in flight: `idle` never sees neither.
        self.0.queued.fetch_add(1, Ordering::AcqRel);
        if answers_a_call {
            self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        self.0.notify.notify_one();
    }
}

impl Sender {
    /// An `http_call` was made: its answer is awaited (until [`Sender::send`] brings it).
    pub(crate) fn call_started(&self) {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
    }
}

impl Clone for Sender {
    fn clone(&self) -> Sender {
        self.0.senders.fetch_add(1, Ordering::AcqRel);
        Sender(self.0.clone())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mailbox;
    use crate::state::Event;

    #[tokio::test]
    async fn delivers_in_order_then_ends_when_every_sender_is_gone() {
        let (mailbox, tx) = Mailbox::new();
        let call = tx.clone();
        tx.send(Event::Wake);
        drop(tx);
        let waiter = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while let Some(event) = mailbox.recv().await {
                    seen.push(matches!(event, Event::Wake));
                }
                seen
            })
        };
        tokio::task::yield_now().await;
        call.call_started();
        assert!(!mailbox.idle(), "a call is awaited");
        call.send(Event::CallDone(7, Err("x".into())));
        drop(call);
        assert_eq!(waiter.await.expect("waiter"), vec![true, false]);
        assert!(mailbox.idle(), "answered and delivered");
    }
}
