//! The storage guard against backends that hang, fail or stall, on tokio's paused clock.

use std::sync::atomic::Ordering;

use super::*;
use crate::storage::testing::Hangs;

const TIMEOUTS: Timeouts = Timeouts {
    request: Duration::from_secs(2),
    min_throughput: 1 << 20,
};

#[tokio::test(start_paused = true)]
async fn a_hung_backend_trips_the_breaker_and_a_probe_closes_it() {
    let backend = Arc::new(Hangs::default());
    let guarded = Guarded::start(backend.clone(), TIMEOUTS, 3, Duration::from_secs(1), None);
    let health = guarded.health();
    guarded.put("a", Bytes::from_static(b"x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(health.report().ready, "{}", health.report());

    backend.hung.store(true, Ordering::SeqCst);
    // Each call gives up at its limit; then the breaker opens.
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        assert!(matches!(
            guarded.stat("a").await,
            Err(Error::Unavailable(_))
        ));
        assert!(started.elapsed() <= TIMEOUTS.request + MARGIN);
    }
    let report = health.report();
    assert!(report.failing_fast && !report.ready, "{report}");
    let started = tokio::time::Instant::now();
    let refused = guarded.stat("a").await;
    assert!(
        matches!(&refused, Err(Error::Unavailable(m)) if m.contains("failing fast")),
        "{refused:?}"
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "at once");

    backend.hung.store(false, Ordering::SeqCst);
    tokio::time::sleep(TIMEOUTS.request + MARGIN + Duration::from_secs(2)).await;
    let report = health.report();
    assert!(report.ready && !report.failing_fast, "{report}");
    assert_eq!(guarded.stat("a").await.unwrap().size, 1);
}

#[tokio::test(start_paused = true)]
async fn a_probe_left_waiting_makes_the_replica_not_ready_before_its_own_limit() {
    let timeouts = Timeouts {
        request: Duration::from_secs(6),
        ..TIMEOUTS
    };
    let backend = Arc::new(Hangs::default());
    let guarded = Guarded::start(backend.clone(), timeouts, 3, Duration::from_secs(2), None);
    let health = guarded.health();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(health.report().ready, "{}", health.report());

    backend.hung.store(true, Ordering::SeqCst);
    // The next probe starts within the 2 s interval and is overdue 3 s later, long before
    // its own 7 s limit.
    tokio::time::sleep(Duration::from_secs(2) + PROBE_OVERDUE + Duration::from_millis(100)).await;
    let report = health.report();
    assert!(!report.ready, "{report}");
    assert!(
        !report.failing_fast,
        "requests still try storage: it may yet answer"
    );
    assert!(
        report
            .to_string()
            .contains("storage has not answered for 3."),
        "{report}"
    );

    backend.hung.store(false, Ordering::SeqCst);
    tokio::time::sleep(timeouts.request + MARGIN + Duration::from_secs(3)).await;
    assert!(health.report().ready, "{}", health.report());
}

#[tokio::test(start_paused = true)]
async fn answers_reset_the_count_and_not_found_is_an_answer() {
    let backend = Arc::new(Hangs::default());
    let guarded = Guarded::start(
        backend.clone(),
        TIMEOUTS,
        2,
        Duration::from_secs(3600),
        None,
    );
    // Let the first probe run and pass before storage hangs.
    tokio::time::sleep(Duration::from_millis(10)).await;
    backend.hung.store(true, Ordering::SeqCst);
    assert!(guarded.stat("a").await.is_err());
    backend.hung.store(false, Ordering::SeqCst);
    assert!(matches!(
        guarded.stat("missing").await,
        Err(Error::NotFound)
    ));
    backend.hung.store(true, Ordering::SeqCst);
    assert!(guarded.stat("a").await.is_err());
    assert!(
        !guarded.health().report().failing_fast,
        "failures in a row open it, not failures in all"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_read_fails_but_a_slow_reader_does_not() {
    let health = Arc::new(Health::new(3));
    let stalled = StallGuard {
        inner: futures::stream::pending().boxed(),
        timer: IdleTimer::new(Duration::from_secs(2)),
        health: Arc::clone(&health),
        failed: false,
    };
    let items: Vec<_> = stalled.collect().await;
    assert_eq!(items.len(), 1);
    assert!(items[0].is_err());

    let mut steady = StallGuard {
        inner: futures::stream::iter([Ok(Bytes::from_static(b"a")), Ok(Bytes::from_static(b"b"))])
            .boxed(),
        timer: IdleTimer::new(Duration::from_secs(2)),
        health,
        failed: false,
    };
    assert!(steady.next().await.is_some_and(|r| r.is_ok()));
    // The reader takes its time between chunks: storage is not to blame.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(steady.next().await.is_some_and(|r| r.is_ok()));
    assert!(steady.next().await.is_none());
}
