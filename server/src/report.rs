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
}

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
}

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
}

/// Prints `report` as `output` asks, and writes its counts to `report_file` if given.
pub fn print_report(
    report: &impl CommandReport,
    output: OutputFormat,
    report_file: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if let Some(path) = report_file {
        // The counts only: the item list could overflow a termination message (4 KiB).
        let mut counts = serde_json::to_value(report)?;
        if let Some(fields) = counts.as_object_mut() {
            fields.remove("deleted");
        }
        std::fs::write(path, counts.to_string())
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
