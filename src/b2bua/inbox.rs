//! A call's inbox: a bounded queue with many senders (the dispatcher, a
//! resolver task) and one receiver (the call's task).
//!
//! Why not `tokio::sync::mpsc`: its channel allocates a 32-slot block and a
//! cache-padded header when created, about 1 KB per call whether or not a
//! message ever waits. This queue allocates only what is queued (and keeps
//! that capacity): a held call's inbox costs about 200 bytes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// Why `try_send` did not queue the value; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// `depth` values are already waiting.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// `send` found the receiver gone; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed<T>(pub T);

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver's task, while it waits.
    waker: Option<Waker>,
    senders: usize,
    receiver_gone: bool,
}

struct Chan<T> {
    depth: usize,
    state: Mutex<State<T>>,
}

impl<T> Chan<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No code under the lock can panic half-way through a change.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side; clone it for every holder.
pub struct InboxSender<T>(Arc<Chan<T>>);

/// The receiving side, owned by the call's task.
pub struct Inbox<T>(Arc<Chan<T>>);

/// An inbox holding at most `depth` values sent with `try_send`.
pub fn inbox<T>(depth: usize) -> (InboxSender<T>, Inbox<T>) {
    let chan = Arc::new(Chan {
        depth,
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waker: None,
            senders: 1,
            receiver_gone: false,
        }),
    });
    (InboxSender(chan.clone()), Inbox(chan))
}

impl<T> InboxSender<T> {
    /// Whether both send to the same inbox.
    #[cfg(test)]
    pub fn same_channel(&self, other: &InboxSender<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Queue `value` unless `depth` values already wait or the receiver is gone.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.push(value, true)
    }

    /// Queue `value` past the bound: for the call's own rare events (a
    /// resolved transfer target), which must not be lost to a burst of
    /// messages. Async only to read like the channel it replaced.
    pub async fn send(&self, value: T) -> Result<(), Closed<T>> {
        self.push(value, false).map_err(|e| match e {
            TrySendError::Full(v) | TrySendError::Closed(v) => Closed(v),
        })
    }

    /// Queue `value` (refused at `depth` when `bounded`) and wake the receiver.
    fn push(&self, value: T, bounded: bool) -> Result<(), TrySendError<T>> {
        let mut s = self.0.lock();
        if s.receiver_gone {
            return Err(TrySendError::Closed(value));
        }
        if bounded && s.queue.len() >= self.0.depth {
            return Err(TrySendError::Full(value));
        }
        s.queue.push_back(value);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Clone for InboxSender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        InboxSender(self.0.clone())
    }
}

impl<T> Drop for InboxSender<T> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.senders -= 1;
        // The last sender gone: a waiting receiver learns there is nothing more.
        let waker = if s.senders == 0 { s.waker.take() } else { None };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Inbox<T> {
    /// The next value if one waits, without waiting.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<T> {
        self.0.lock().queue.pop_front()
    }

    /// The next value in order; `None` once it is empty and every sender is
    /// gone. Cancel-safe: a value is taken only when it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut s = self.0.lock();
            if let Some(v) = s.queue.pop_front() {
                return Poll::Ready(Some(v));
            }
            if s.senders == 0 {
                return Poll::Ready(None);
            }
            match &mut s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.receiver_gone = true;
        // Dropped outside the lock: a value's drop may do anything.
        let left = std::mem::take(&mut s.queue);
        s.waker = None;
        drop(s);
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_arrive_in_order() {
        let (tx, mut rx) = inbox(4);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test]
    async fn try_send_beyond_depth_is_full() {
        let (tx, mut rx) = inbox(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(3).unwrap();
    }

    #[tokio::test]
    async fn send_goes_past_the_bound() {
        let (tx, mut rx) = inbox(1);
        tx.try_send(1).unwrap();
        tx.send(2).await.unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test]
    async fn receiver_gone_is_closed() {
        let (tx, rx) = inbox(4);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)));
        assert_eq!(tx.send(2).await, Err(Closed(2)));
    }

    #[tokio::test]
    async fn recv_is_none_once_every_sender_is_gone() {
        let (tx, mut rx) = inbox(4);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        drop(tx);
        drop(tx2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_another_task() {
        let (tx, mut rx) = inbox(4);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tokio::spawn(async move { tx.try_send(7).unwrap() });
        assert_eq!(waiter.await.unwrap(), Some(7));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_when_the_last_sender_goes() {
        let (tx, mut rx) = inbox::<u8>(4);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.unwrap(), None);
    }
}
