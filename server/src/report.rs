//! How the commands print what they did: `gc` and `purge-uploads` their reports, and the
//! choice of text or JSON that `copy` shares.

use std::path::Path;

use crate::gc;

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Prints `report` as `output` asks, and writes its counts to `report_file` if given.
pub fn print_report(
    report: &gc::Report,
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
            if report.dry_run {
                for item in &report.deleted {
                    println!("{item}");
                }
            }
            println!("{}", report.summary());
        }
    }
    Ok(())
}
