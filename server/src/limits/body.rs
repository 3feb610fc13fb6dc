//! A request body that fails when the client sends nothing for a while: a stalled upload ends,
//! freeing its connection and its upload, instead of being held forever. A body that keeps
//! flowing, however slowly, is never cut off.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::pressure::{Event, Pressure};
use crate::idle::IdleTimer;

/// Wraps `body` so that it fails after `limit` without a byte.
pub fn with_idle_timeout(body: Body, limit: Duration, pressure: Arc<Pressure>) -> Body {
    Body::new(IdleBody {
        inner: body,
        timer: IdleTimer::new(limit),
        pressure,
        expired: false,
    })
}

struct IdleBody {
    inner: Body,
    timer: IdleTimer,
    pressure: Arc<Pressure>,
    expired: bool,
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if !self.timer.expired(cx, &polled) {
            return polled;
        }
        self.expired = true;
        self.pressure.count(Event::BodyIdleTimeout);
        let error = io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client sent nothing for {:?}", self.timer.limit()),
        );
        Poll::Ready(Some(Err(axum::Error::new(error))))
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures::SinkExt;
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_off_and_a_slow_one_is_not() {
        let pressure = Arc::new(Pressure::default());
        let (mut sender, receiver) = futures::channel::mpsc::channel::<io::Result<Bytes>>(1);
        let body = Body::from_stream(receiver);
        let mut body = with_idle_timeout(body, Duration::from_secs(5), Arc::clone(&pressure));
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => received.extend_from_slice(&frame.into_data().unwrap_or_default()),
                    Err(error) => return (received, Some(error.to_string())),
                }
            }
            (received, None)
        });
        for chunk in [b"slow ", b"but  ", b"alive"] {
            sender.send(Ok(Bytes::from_static(chunk))).await.unwrap();
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        // Then silence.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (received, error) = reader.await.unwrap();
        assert_eq!(received, b"slow but  alive");
        assert!(error.is_some_and(|e| e.contains("sent nothing")));
        assert_eq!(pressure.total(Event::BodyIdleTimeout), 1);
        drop(sender);
    }
}
