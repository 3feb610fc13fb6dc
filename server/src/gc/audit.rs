//! The audit a full collection ends with: the index made to match the links again.
//!
//! The index may lack entries (it was never built, as in a registry Distribution or an older
//! Stowage wrote, or a replica of an older Stowage still serves) and may hold entries that stand
//! for nothing (a push that recorded its references, then failed before its link). The first
//! kind is recorded; the second is pruned, but only once older than a write may take, so an entry
//! of a push still in flight is never taken for stale.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::index::{Entry, Recorded, ReferenceIndex};
use crate::storage;
use crate::sweep::MIN_SWEEP_WAIT;

/// Entries recorded at or after this may belong to a write still in flight, whose link is not
/// there yet: they are never pruned. (A write finishes within the sweep wait, so the judgement
/// after it sees their links.)
pub(super) fn settle(run_start: SystemTime) -> SystemTime {
    run_start
        .checked_sub(MIN_SWEEP_WAIT)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// How far the index was from the links.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Drift {
    pub added: usize,
    pub pruned: usize,
}

/// Records the `expected` entries the index lacks and forgets the ones it holds beyond them that
/// were recorded before `settle`, or that stand for what this run `swept`; with `dry_run`, only
/// counts.
pub(super) async fn reconcile(
    index: &dyn ReferenceIndex,
    expected: HashSet<Entry>,
    settle: SystemTime,
    swept: impl Fn(&Entry) -> bool,
    dry_run: bool,
) -> storage::Result<Drift> {
    let held = index.all().await?;
    let present: HashSet<&Entry> = held.iter().map(|r| &r.entry).collect();
    let mut missing: Vec<Entry> = expected
        .iter()
        .filter(|e| !present.contains(e))
        .cloned()
        .collect();
    missing.sort();
    let (swept, stale): (Vec<&Recorded>, Vec<&Recorded>) = held
        .iter()
        .filter(|r| !expected.contains(&r.entry))
        .filter(|r| r.at < settle || swept(&r.entry))
        .partition(|r| swept(&r.entry));
    if !dry_run {
        index.record(&missing).await?;
        let gone: Vec<Entry> = swept
            .iter()
            .chain(&stale)
            .map(|r| r.entry.clone())
            .collect();
        index.forget(&gone).await?;
    }
    // What the run swept is no drift: the index held it rightly until then.
    Ok(Drift {
        added: missing.len(),
        pruned: stale.len(),
    })
}
