//! A timer that runs only while a stream is being waited on: it measures how long the other
//! side has sent nothing, and never blames it for the time its reader took.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

/// Expires when a stream stays pending for `limit`; progress resets it.
#[derive(Debug)]
pub struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    pub fn new(limit: Duration) -> Self {
        Self { limit, sleep: None }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Given what polling the stream returned: `true` once it has been pending for the limit.
    /// While pending and not expired, the task is woken when the limit is reached.
    pub fn expired<T>(&mut self, cx: &mut Context<'_>, polled: &Poll<T>) -> bool {
        if polled.is_ready() {
            self.sleep = None;
            return false;
        }
        let limit = self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        sleep.as_mut().poll(cx).is_ready()
    }
}
