//! How the commands print what they did: `gc`, `purge-uploads` and `retention` their reports,
//! and the choice of text or JSON that `copy` shares.

use std::path::Path;

use crate::gc;

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// A maintenance command's report: everything in JSON, a summary line in text, and on a dry
/// run the items it would delete.
pub trait CommandReport: serde::Serialize {
    fn dry_run(&self) -> bool;
    /// One line per item deleted, or that would be.
    fn items(&self) -> Vec<String>;
    fn summary(&self) -> String;
    /// What `--report-file` gets: the counts, without the item lists, which could overflow a
    /// termination message (4 KiB).
    fn counts(&self) -> serde_json::Result<serde_json::Value> {
        let mut counts = serde_json::to_value(self)?;
        if let Some(fields) = counts.as_object_mut() {
            fields.remove("deleted");
        }
        Ok(counts)
    }
}

impl CommandReport for gc::Report {
    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn items(&self) -> Vec<String> {
        self.deleted.clone()
    }

    fn summary(&self) -> String {
        Self::summary(self)
    }

    /// The counts, with the usage cut to the total and the largest namespaces.
    fn counts(&self) -> serde_json::Result<serde_json::Value> {
        let mut counts = serde_json::to_value(self)?;
        if let Some(fields) = counts.as_object_mut() {
            fields.remove("deleted");
            fields.remove("usage");
            if let Some(usage) = &self.usage {
                let largest: serde_json::Map<String, serde_json::Value> = usage
                    .largest_namespaces(USAGE_NAMESPACES_REPORTED)
                    .into_iter()
                    .map(|(name, bytes)| (name.to_owned(), bytes.into()))
                    .collect();
                fields.insert("stored_bytes".into(), usage.total_bytes.into());
                fields.insert("largest_namespaces".into(), largest.into());
            }
        }
        // The fullest quotas that fit beside the rest.
        while counts.to_string().len() > TERMINATION_MESSAGE {
            let Some(serde_json::Value::Array(quotas)) = counts.get_mut("quotas") else {
                break;
            };
            if quotas.pop().is_none() {
                break;
            }
        }
        Ok(counts)
    }
}

/// How many namespaces a gc report file names: with their names capped at 255 bytes, ten fit a
/// termination message beside the counts.
const USAGE_NAMESPACES_REPORTED: usize = 10;

impl CommandReport for gc::RetentionReport {
    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn items(&self) -> Vec<String> {
        self.deleted
            .iter()
            .map(|deletion| format!("{}: {}", deletion.what, deletion.why))
            .collect()
    }

    fn summary(&self) -> String {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let skipped = if self.skipped_changed > 0 {
            format!(
                ", leaving {} pushed again since the decision",
                self.skipped_changed
            )
        } else {
            String::new()
        };
        format!(
            "{verb} {} tags and {} manifests in {} repositories{skipped}, in {:.2}s; gc reclaims \
             their blobs",
            self.tags_deleted,
            self.manifests_deleted,
            self.repositories_checked,
            self.duration_seconds
        )
    }

    /// The counts, and as many of the first deletions as fit a termination message, so the
    /// operator's status can show what a dry run would delete and why.
    fn counts(&self) -> serde_json::Result<serde_json::Value> {
        let mut counts = serde_json::to_value(self)?;
        let mut listed = self.deleted.len();
        while counts.to_string().len() > TERMINATION_MESSAGE && listed > 0 {
            listed /= 2;
            counts["deleted"] = serde_json::to_value(&self.deleted[..listed])?;
        }
        Ok(counts)
    }
}

/// What a Kubernetes termination message holds, less a margin.
const TERMINATION_MESSAGE: usize = 4000;

/// What `stowage replicate --once` did, rule by rule.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationReport {
    pub dry_run: bool,
    pub rules: Vec<crate::replication::Reconciled>,
}

impl CommandReport for ReplicationReport {
    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn items(&self) -> Vec<String> {
        let mut items = Vec::new();
        for rule in &self.rules {
            let lines = [("send", &rule.copied), ("delete", &rule.deleted)];
            for (verb, changes) in lines {
                for change in changes {
                    items.push(format!(
                        "{}: {verb} {}: {}",
                        rule.rule, change.image, change.reason
                    ));
                }
            }
        }
        items
    }

    fn summary(&self) -> String {
        let (sent, deleted) = if self.dry_run {
            ("would send", "would delete")
        } else {
            ("sent", "deleted")
        };
        self.rules
            .iter()
            .map(|rule| {
                let refused = rule
                    .refused
                    .iter()
                    .map(|change| format!("; refused {}: {}", change.image, change.reason))
                    .collect::<String>();
                format!(
                    "{}: {sent} {} and {deleted} {} of {} tags in {} repositories to {}, in \
                     {:.2}s; {} events pending, the oldest {:.0}s old{refused}",
                    rule.rule,
                    rule.copied.len(),
                    rule.deleted.len(),
                    rule.tags_checked,
                    rule.repositories,
                    rule.destination,
                    rule.seconds,
                    rule.pending_events,
                    rule.oldest_pending_seconds,
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Each rule's counts, and the first refusal's reason cut short; with many rules, what the
    /// status can do without goes first, so the counts stay within a termination message.
    fn counts(&self) -> serde_json::Result<serde_json::Value> {
        let rules = self
            .rules
            .iter()
            .map(|rule| {
                let first_refusal = rule.refused.first().map(|change| {
                    let text = format!("{}: {}", change.image, change.reason);
                    text.chars().take(160).collect::<String>()
                });
                serde_json::json!({
                    "rule": rule.rule,
                    "destination": rule.destination,
                    "tagsChecked": rule.tags_checked,
                    "copied": rule.copied.len(),
                    "deleted": rule.deleted.len(),
                    "refused": rule.refused.len(),
                    "firstRefusal": first_refusal,
                    "pendingEvents": rule.pending_events,
                    // Whole seconds: the operator's status keeps integers.
                    "oldestPendingSeconds": rule.oldest_pending_seconds.ceil() as u64,
                    "seconds": rule.seconds,
                })
            })
            .collect::<Vec<_>>();
        let mut counts = serde_json::json!({"dryRun": self.dry_run, "rules": rules});
        for dispensable in ["seconds", "destination", "firstRefusal"] {
            if counts.to_string().len() <= TERMINATION_MESSAGE {
                break;
            }
            for rule in counts["rules"].as_array_mut().into_iter().flatten() {
                if let Some(fields) = rule.as_object_mut() {
                    fields.remove(dispensable);
                }
            }
        }
        Ok(counts)
    }
}

/// Prints what `stowage usage` counted: JSON, or a line per namespace and repository.
pub fn print_usage(
    counted: &crate::index::usage::Counted,
    output: OutputFormat,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string(counted)?),
        OutputFormat::Text => {
            let usage = &counted.usage;
            for (name, bytes) in &usage.namespaces {
                println!("namespace  {bytes:>16}  {name}");
            }
            for (name, bytes) in &usage.repositories {
                println!("repository {bytes:>16}  {name}");
            }
            println!("{} bytes stored", usage.total_bytes);
            if !counted.complete {
                println!(
                    "the index was never found whole: run `stowage gc` once for a complete count"
                );
            }
        }
    }
    Ok(())
}

/// Prints `report` as `output` asks, and writes its counts to `report_file` if given.
pub fn print_report(
    report: &impl CommandReport,
    output: OutputFormat,
    report_file: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if let Some(path) = report_file {
        std::fs::write(path, report.counts()?.to_string())
            .map_err(|e| format!("writing the report to {}: {e}", path.display()))?;
    }
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string(report)?),
        OutputFormat::Text => {
            if report.dry_run() {
                for item in report.items() {
                    println!("{item}");
                }
            }
            println!("{}", report.summary());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{Change, Reconciled};

    /// The keys the operator reads (its status test holds the same line); the usage cut to
    /// what fits a termination message, whatever the namespaces are called.
    #[test]
    fn a_full_gc_report_file_carries_the_counts_and_the_largest_namespaces() {
        let namespaces = (0..40u64)
            .map(|n| (format!("{n:0>255}"), n * 1000))
            .collect();
        let report = gc::Report {
            mode: gc::Mode::Full,
            journal_pending: 2,
            index_entries_added: 5,
            usage: Some(crate::index::Usage {
                total_bytes: 4000,
                namespaces,
                repositories: (0..10_000).map(|n| (format!("r/{n}"), 1)).collect(),
            }),
            deleted: vec!["blob sha256:…".to_owned(); 1000],
            ..gc::Report::default()
        };
        let counts = report.counts().unwrap();
        assert_eq!(counts["mode"], "full");
        assert_eq!(counts["journal_pending"], 2);
        assert_eq!(counts["index_entries_added"], 5);
        assert_eq!(counts["stored_bytes"], 4000);
        let largest = counts["largest_namespaces"].as_object().unwrap();
        assert_eq!(largest.len(), USAGE_NAMESPACES_REPORTED);
        assert_eq!(largest[&format!("{:0>255}", 39)], 39_000);
        assert!(counts.get("deleted").is_none() && counts.get("usage").is_none());
        assert!(
            counts.to_string().len() <= TERMINATION_MESSAGE,
            "{}",
            counts.to_string().len()
        );
    }

    /// As many of the fullest quotas as fit, however long their names.
    #[test]
    fn a_gc_report_file_carries_the_fullest_quotas_that_fit() {
        let quota = |n: u64| crate::index::usage::QuotaUsage {
            quota: format!("{n:0>63}"),
            scope: "repository",
            name: format!("{n:0>255}"),
            used_bytes: 100 - n,
            limit_bytes: 100,
        };
        let report = gc::Report {
            mode: gc::Mode::Full,
            usage: Some(crate::index::Usage {
                total_bytes: 4000,
                namespaces: (0..40u64).map(|n| (format!("{n:0>255}"), n)).collect(),
                repositories: Default::default(),
            }),
            quotas: (0..50).map(quota).collect(),
            ..gc::Report::default()
        };
        let counts = report.counts().unwrap();
        assert!(counts.to_string().len() <= TERMINATION_MESSAGE);
        let quotas = counts["quotas"].as_array().unwrap();
        assert!(!quotas.is_empty() && quotas.len() < 50, "{}", quotas.len());
        assert_eq!(quotas[0]["used_bytes"], 100, "the fullest first");
        assert_eq!(quotas[0]["limit_bytes"], 100);

        let few = gc::Report {
            quotas: (0..3).map(quota).collect(),
            ..gc::Report::default()
        };
        assert_eq!(few.counts().unwrap()["quotas"].as_array().unwrap().len(), 3);
    }

    fn rule(index: usize, refusals: usize) -> Reconciled {
        let change = |n: usize| Change {
            image: format!("team/service-with-a-long-name-{n}:v1.2.3"),
            reason: "the destination answered 403 DENIED: the robot account may not push here"
                .repeat(3),
        };
        Reconciled {
            rule: format!("rule-{index}-{}", "x".repeat(50)),
            destination: format!("registry-{index}.{}.example", "region".repeat(30)),
            dry_run: false,
            repositories: 3,
            tags_checked: 1000,
            copied: (0..500).map(change).collect(),
            deleted: Vec::new(),
            refused: (0..refusals).map(change).collect(),
            pending_events: 12,
            oldest_pending_seconds: 4.2,
            finished: "2026-12-02T00:00:00Z".to_owned(),
            seconds: 1.5,
        }
    }

    #[test]
    fn replication_counts_fit_a_termination_message() {
        let one = ReplicationReport {
            dry_run: false,
            rules: vec![rule(0, 2)],
        };
        let counts = one.counts().unwrap();
        let first = &counts["rules"][0];
        assert_eq!(
            (first["copied"].as_u64(), first["refused"].as_u64()),
            (Some(500), Some(2))
        );
        assert_eq!(first["oldestPendingSeconds"].as_u64(), Some(5));
        assert_eq!(first["firstRefusal"].as_str().map(str::len), Some(160));
        assert!(first["destination"].is_string(), "kept while there is room");

        let many = ReplicationReport {
            dry_run: false,
            rules: (0..16).map(|index| rule(index, 100)).collect(),
        };
        let counts = many.counts().unwrap();
        assert!(
            counts.to_string().len() <= TERMINATION_MESSAGE,
            "{}",
            counts.to_string().len()
        );
        assert_eq!(counts["rules"].as_array().map(Vec::len), Some(16));
        assert_eq!(counts["rules"][15]["refused"].as_u64(), Some(100));
    }

    #[test]
    fn retention_counts_keep_the_first_deletions_that_fit() {
        let deletion = |n: usize| gc::Deletion {
            what: format!("tag team/app:build-{n}"),
            why: "not kept by builds".to_owned(),
        };
        let report = |deletions: usize| gc::RetentionReport {
            dry_run: true,
            repositories_checked: 2,
            tags_deleted: deletions,
            deleted: (0..deletions).map(deletion).collect(),
            ..gc::RetentionReport::default()
        };
        let few = report(3).counts().unwrap();
        assert_eq!(few["deleted"].as_array().map(Vec::len), Some(3));
        assert_eq!(few["deleted"][0]["why"], "not kept by builds");

        let many = report(5000).counts().unwrap();
        assert!(many.to_string().len() <= TERMINATION_MESSAGE);
        let listed = many["deleted"].as_array().map_or(0, Vec::len);
        assert!(listed >= 20, "what the status shows fits: {listed}");
        assert_eq!(many["tags_deleted"], 5000, "the counts are whole");
    }
}
