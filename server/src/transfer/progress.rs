//! What a copy tells its user: a progress bar per blob on a terminal, a line per blob
//! otherwise, nothing with `--quiet`; and the summary at the end, as text or JSON. Every byte
//! read from the source passes through a [`Meter`], which also paces reads to `--limit-rate`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::ends::{BlobOutcome, BlobStream};
use super::manifest::Descriptor;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Bars with bytes, rate and ETA, redrawn in place (a terminal).
    Bars,
    /// A line as each blob and manifest is done (logs, CI).
    Lines,
    Quiet,
}

/// The copy's running totals and how they are shown.
pub struct Progress {
    display: Display,
    bars: MultiProgress,
    pace: Option<Arc<Pace>>,
    started: Instant,
    blobs_sent: AtomicU64,
    bytes_sent: AtomicU64,
    blobs_present: AtomicU64,
    blobs_mounted: AtomicU64,
    manifests: AtomicU64,
}

/// What a finished copy did, as `--output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub images: Vec<String>,
    pub blobs_sent: u64,
    pub bytes_sent: u64,
    pub blobs_present: u64,
    pub blobs_mounted: u64,
    pub manifests: u64,
    pub seconds: f64,
}

impl Progress {
    /// `limit_rate`: the most source bytes to read per second, over all blobs together.
    pub fn new(display: Display, limit_rate: Option<u64>) -> Arc<Self> {
        let target = if display == Display::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Arc::new(Self {
            display,
            bars: MultiProgress::with_draw_target(target),
            pace: limit_rate.map(|rate| Arc::new(Pace::new(rate))),
            started: Instant::now(),
            blobs_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            blobs_present: AtomicU64::new(0),
            blobs_mounted: AtomicU64::new(0),
            manifests: AtomicU64::new(0),
        })
    }

    /// A line for the user, above any bars.
    pub fn say(&self, line: &str) {
        match self.display {
            Display::Bars => {
                let _ = self.bars.println(line);
            }
            Display::Lines => eprintln!("{line}"),
            Display::Quiet => {}
        }
    }

    /// The meter for a blob about to be sent.
    pub fn blob(&self, descriptor: &Descriptor) -> Meter {
        let bar = (self.display == Display::Bars).then(|| {
            let bar = self.bars.add(ProgressBar::new(descriptor.size));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("blob {}", descriptor.short()));
            bar
        });
        Meter {
            bar,
            pace: self.pace.clone(),
        }
    }

    /// Counts a blob done, and says so.
    pub fn blob_done(&self, descriptor: &Descriptor, meter: &Meter, outcome: BlobOutcome) {
        if let Some(bar) = &meter.bar {
            bar.finish_and_clear();
            self.bars.remove(bar);
        }
        let what = match outcome {
            BlobOutcome::Sent { bytes } => {
                self.blobs_sent.fetch_add(1, Ordering::Relaxed);
                self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                if bytes < descriptor.size {
                    format!("sent {} (resumed)", HumanBytes(bytes))
                } else {
                    format!("sent {}", HumanBytes(bytes))
                }
            }
            BlobOutcome::Mounted => {
                self.blobs_mounted.fetch_add(1, Ordering::Relaxed);
                "mounted".to_owned()
            }
            BlobOutcome::Present => {
                self.blobs_present.fetch_add(1, Ordering::Relaxed);
                "already present".to_owned()
            }
        };
        self.say(&format!(
            "blob {} ({}): {what}",
            descriptor.short(),
            HumanBytes(descriptor.size)
        ));
    }

    /// Takes a failed blob's bar away.
    pub fn blob_failed(&self, meter: &Meter) {
        if let Some(bar) = &meter.bar {
            bar.abandon();
            self.bars.remove(bar);
        }
    }

    pub fn manifest_done(&self, descriptor: &Descriptor) {
        self.manifests.fetch_add(1, Ordering::Relaxed);
        self.say(&format!(
            "manifest {} ({}): stored",
            descriptor.short(),
            descriptor.media_type
        ));
    }

    pub fn summary(&self, images: Vec<String>) -> Summary {
        Summary {
            images,
            blobs_sent: self.blobs_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            blobs_present: self.blobs_present.load(Ordering::Relaxed),
            blobs_mounted: self.blobs_mounted.load(Ordering::Relaxed),
            manifests: self.manifests.load(Ordering::Relaxed),
            seconds: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        }
    }
}

impl Summary {
    /// One line a person reads.
    pub fn text(&self) -> String {
        format!(
            "Copied {}: {} blob(s) sent ({}), {} already present, {} mounted; {} manifest(s) in {:.1}s",
            match self.images.as_slice() {
                [one] => one.clone(),
                many => format!("{} images", many.len()),
            },
            self.blobs_sent,
            HumanBytes(self.bytes_sent),
            self.blobs_present,
            self.blobs_mounted,
            self.manifests,
            self.seconds
        )
    }
}

/// Counts (and paces) one blob's bytes as they are read.
#[derive(Clone)]
pub struct Meter {
    bar: Option<ProgressBar>,
    pace: Option<Arc<Pace>>,
}

impl Meter {
    /// A meter that shows nothing and never waits.
    pub fn silent() -> Self {
        Self {
            bar: None,
            pace: None,
        }
    }

    /// The bytes of `stream`, counted and paced.
    pub fn wrap(&self, stream: BlobStream) -> BlobStream {
        let meter = self.clone();
        stream
            .then(move |item| {
                let meter = meter.clone();
                async move {
                    if let Ok(chunk) = &item {
                        if let Some(pace) = &meter.pace {
                            pace.take(chunk.len() as u64).await;
                        }
                        if let Some(bar) = &meter.bar {
                            bar.inc(chunk.len() as u64);
                        }
                    }
                    item
                }
            })
            .boxed()
    }

    /// Where the blob stands now: an upload resumed, or restarted, from `position`.
    pub fn set_position(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }
}

/// A shared rate limit: reading `n` more bytes waits until they fit the rate after everything
/// read before (a token bucket). Time not spent reading earns at most [`Pace::BURST`] of
/// credit: enough that the work between reads (hashing, sending) does not slow the rate down,
/// while a replication rule quiet for an hour still sends its next image at the rate, not an
/// hour's worth at once.
struct Pace {
    bytes_per_second: u64,
    /// When the bytes read so far have been paid for.
    paid_until: std::sync::Mutex<tokio::time::Instant>,
}

impl Pace {
    const BURST: Duration = Duration::from_millis(250);

    fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1),
            paid_until: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn take(&self, n: u64) {
        let due = {
            let mut paid_until = self
                .paid_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let cost = Duration::from_secs_f64(n as f64 / self.bytes_per_second as f64);
            let earliest = tokio::time::Instant::now()
                .checked_sub(Self::BURST)
                .unwrap_or_else(tokio::time::Instant::now);
            *paid_until = (*paid_until).max(earliest) + cost;
            *paid_until
        };
        tokio::time::sleep_until(due).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test(start_paused = true)]
    async fn the_pace_holds_reads_to_the_rate() {
        let progress = Progress::new(Display::Quiet, Some(1000));
        let meter = progress.blob(&Descriptor::new(
            "x",
            crate::oci::Digest::sha256_of(b""),
            3000,
        ));
        let chunks = futures::stream::iter((0..3).map(|_| Ok(Bytes::from(vec![0u8; 1000]))));
        let started = tokio::time::Instant::now();
        let read: Vec<_> = meter.wrap(chunks.boxed()).collect().await;
        assert_eq!(read.len(), 3);
        // 3000 bytes at 1000 bytes/s: three seconds, give or take the paused clock's rounding.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(2990) && took < Duration::from_millis(3100),
            "{took:?}"
        );

        // A minute idle earns no more than the burst: the next blob is read at the rate too.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let chunks = futures::stream::iter((0..3).map(|_| Ok(Bytes::from(vec![0u8; 1000]))));
        let started = tokio::time::Instant::now();
        let read: Vec<_> = meter.wrap(chunks.boxed()).collect().await;
        assert_eq!(read.len(), 3);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(3000) - Pace::BURST,
            "{took:?}"
        );
    }

    #[test]
    fn the_summary_counts_each_outcome() {
        let progress = Progress::new(Display::Quiet, None);
        let blob = Descriptor::new("x", crate::oci::Digest::sha256_of(b"abc"), 10);
        progress.blob_done(&blob, &Meter::silent(), BlobOutcome::Sent { bytes: 4 });
        progress.blob_done(&blob, &Meter::silent(), BlobOutcome::Present);
        progress.blob_done(&blob, &Meter::silent(), BlobOutcome::Mounted);
        progress.manifest_done(&blob);
        let summary = progress.summary(vec!["oci:x:y".into()]);
        assert_eq!(
            (
                summary.blobs_sent,
                summary.bytes_sent,
                summary.blobs_present,
                summary.blobs_mounted,
                summary.manifests
            ),
            (1, 4, 1, 1, 1)
        );
        assert!(
            summary
                .text()
                .starts_with("Copied oci:x:y: 1 blob(s) sent (4 B)"),
            "{}",
            summary.text()
        );
    }
}
