//! A timer for streams that go quiet: it measures how long the other side has sent nothing
//! while we wait on it, and never counts the time our own reader took. Used for request bodies
//! (a client that stalls) and for storage reads (a backend that stalls).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Expires when a stream stays pending for `limit`; progress resets it.
#[derive(Debug)]
pub struct IdleTimer {
    limit: Duration,
    /// Allocated once and reset, so a busy stream costs no allocation per wait.
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl IdleTimer {
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Given what polling the stream returned: `true` once it has been pending for the limit.
    /// While pending and not expired, the task is woken when the limit is reached.
    pub fn expired<T>(&mut self, cx: &mut Context<'_>, polled: &Poll<T>) -> bool {
        if polled.is_ready() {
            self.armed = false;
            return false;
        }
        if !self.armed {
            self.sleep.as_mut().reset(Instant::now() + self.limit);
            self.armed = true;
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    /// Yields `items` with the given pauses before each, failing once the timer expires.
    async fn drain(pauses: &[u64], limit: u64) -> (usize, bool) {
        let pauses = pauses.to_vec();
        let mut stream = futures::stream::iter(pauses)
            .then(|pause| async move {
                tokio::time::sleep(Duration::from_secs(pause)).await;
            })
            .boxed();
        let mut timer = IdleTimer::new(Duration::from_secs(limit));
        let mut items = 0;
        loop {
            let polled = std::future::poll_fn(|cx| {
                let polled = stream.poll_next_unpin(cx);
                if timer.expired(cx, &polled) {
                    return Poll::Ready(None::<Option<()>>);
                }
                polled.map(Some)
            })
            .await;
            match polled {
                Some(Some(())) => items += 1,
                Some(None) => return (items, false),
                None => return (items, true),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_silence_longer_than_the_limit_expires() {
        assert_eq!(drain(&[1, 4, 2, 4], 5).await, (4, false));
        assert_eq!(drain(&[1, 6, 1], 5).await, (1, true));
    }
}
