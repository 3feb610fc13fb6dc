//! The command line: `stowage serve`, `gc`, `purge-uploads`, `retention`, `usage`, `replicate`
//! and `copy`. Settings are resolved in [`crate::config`], the server started in
//! [`crate::serve`], reports printed by [`crate::report`].

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, ServeArgs};
use crate::oci::Digest;
use crate::registry::Registry;
use crate::report::{OutputFormat, print_report};
use crate::telemetry::LogFormat;
use crate::{gc, storage, telemetry};

/// Stowage, a clustered OCI registry.
#[derive(Debug, Parser)]
#[command(name = "stowage", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the OCI Distribution API.
    Serve(ServeArgs),
    /// Delete unreferenced blobs and manifests, while the registry keeps serving.
    Gc(GcArgs),
    /// Delete upload sessions that were started long ago and never finished.
    PurgeUploads(PurgeArgs),
    /// Delete the tags and manifests the retention rules (`[[policies.retention]]`) let go.
    Retention(RetentionArgs),
    /// Show what repositories and namespaces store, counted from the index.
    Usage(UsageArgs),
    /// Compare the replication rules' destinations (`[[replication]]`) with this registry and
    /// send what is missing; with `--once`, one pass and a report, else for as long as it runs.
    Replicate(ReplicateArgs),
    /// Copy images between registries and OCI image layouts, sending only what is missing.
    Copy(crate::copy::CopyArgs),
}

/// How a maintenance command reports what it did.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Report format.
    #[arg(long, default_value = "text")]
    pub output: OutputFormat,

    /// Also write the counts as one line of JSON to this file, such as `/dev/termination-log`
    /// in a Kubernetes Job.
    #[arg(long, env = "STOWAGE_REPORT_FILE")]
    pub report_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// List what would be deleted; delete nothing.
    #[arg(long, env = "STOWAGE_GC_DRY_RUN")]
    pub dry_run: bool,

    /// Mark and sweep from every link and audit the index against them, instead of reviewing
    /// only what the journal says changed. The first run on a registry another registry (or an
    /// older Stowage) wrote is always full.
    #[arg(long, env = "STOWAGE_GC_FULL")]
    pub full: bool,

    /// Run in full when the last full run (the last audit of the index) is older than this,
    /// such as `168h`: one schedule then runs both, never two collections at once.
    #[arg(long, env = "STOWAGE_GC_FULL_EVERY", value_parser = humantime::parse_duration)]
    pub full_every: Option<Duration>,

    /// Also delete manifests that no tag, and nothing kept, refers to.
    #[arg(long, env = "STOWAGE_GC_DELETE_UNTAGGED")]
    pub delete_untagged: bool,

    /// Nothing younger than this is deleted.
    #[arg(long, env = "STOWAGE_GC_GRACE_PERIOD", default_value = "1h", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,

    /// How long the announced sweep stands before deleting; at least twice the manifest push
    /// deadline (5s), so pushes under way finish first.
    #[arg(long, env = "STOWAGE_GC_SWEEP_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_wait: Duration,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub storage: ServeArgs,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// List what would be deleted; delete nothing.
    #[arg(long, env = "STOWAGE_PURGE_DRY_RUN")]
    pub dry_run: bool,

    /// Sessions started longer ago than this are deleted.
    #[arg(long, env = "STOWAGE_PURGE_OLDER_THAN", default_value = "168h", value_parser = humantime::parse_duration)]
    pub older_than: Duration,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub storage: ServeArgs,
}

/// How long `stowage retention` waits to deliver its events before it leaves them to the
/// serving replicas.
const EVENTS_DRAIN: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// List what would be deleted, and why; delete nothing.
    #[arg(long, env = "STOWAGE_RETENTION_DRY_RUN")]
    pub dry_run: bool,

    /// A file of image digests workloads run, one per line (`sha256:…`, or an image reference
    /// ending in `@sha256:…`, as pods report them): these stay whatever the rules say.
    #[arg(long, env = "STOWAGE_RETENTION_IN_USE_FILE")]
    pub in_use_file: Option<PathBuf>,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub storage: ServeArgs,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this namespace: a repository and those below it, such as `team`.
    #[arg(long)]
    pub namespace: Option<crate::oci::RepositoryName>,

    /// Report format.
    #[arg(long, default_value = "text")]
    pub output: OutputFormat,

    #[command(flatten)]
    pub storage: ServeArgs,
}

#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Reconcile every rule once, print the report and exit; without it, deliver the rules'
    /// events and reconcile on their schedules until stopped, as a replica would.
    #[arg(long)]
    pub once: bool,

    /// With `--once`: report what would be sent or deleted, and why; send nothing.
    #[arg(long, env = "STOWAGE_REPLICATE_DRY_RUN", requires = "once")]
    pub dry_run: bool,

    /// Only these rules (by name; repeat for several).
    #[arg(long = "rule", value_name = "NAME")]
    pub rules: Vec<String>,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten)]
    pub storage: ServeArgs,
}

/// The digests in `text`: one a line, bare or at the end of an image reference, and what
/// follows it on the line after a space ignored (the operator writes when it last saw each);
/// blank lines and `#` comments skipped.
pub fn digests_in_use(text: &str) -> Result<HashSet<Digest>, ConfigError> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let digest = line.rsplit_once('@').map_or(line, |(_, digest)| digest);
            digest.parse().map_err(|_| {
                ConfigError::Invalid(format!("--in-use-file: {line:?} names no digest"))
            })
        })
        .collect()
}

impl Cli {
    /// Runs the chosen subcommand to completion. `copy` sets its own exit codes, one per kind
    /// of failure; the others fail with 1.
    pub async fn run(self) -> ExitCode {
        crate::tls::install_crypto_provider();
        let service = match self.command {
            Command::Copy(args) => {
                // Warnings (an auth file's unsupported helper) only, unless RUST_LOG asks.
                let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
                let _telemetry = telemetry::init(LogFormat::Text, &filter);
                return crate::copy::run(args).await;
            }
            Command::Serve(args) => Service::Serve(args),
            Command::Gc(args) => Service::Gc(args),
            Command::PurgeUploads(args) => Service::PurgeUploads(args),
            Command::Retention(args) => Service::Retention(args),
            Command::Replicate(args) => Service::Replicate(args),
            Command::Usage(args) => Service::Usage(args),
        };
        match run_service(service).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("stowage: {err}");
                ExitCode::FAILURE
            }
        }
    }
}

/// The subcommands that serve or maintain a registry's storage.
enum Service {
    Serve(ServeArgs),
    Gc(GcArgs),
    PurgeUploads(PurgeArgs),
    Retention(RetentionArgs),
    Replicate(ReplicateArgs),
    Usage(UsageArgs),
}

async fn run_service(service: Service) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match service {
        Service::Serve(args) => {
            let config = args.resolve()?;
            let _telemetry = telemetry::init(config.log_format, &config.log_level)?;
            crate::serve::serve(config).await
        }
        Service::Gc(args) => {
            if args.sweep_wait < gc::MIN_SWEEP_WAIT {
                return Err(ConfigError::Invalid(format!(
                    "--sweep-wait must be at least {:?}",
                    gc::MIN_SWEEP_WAIT
                ))
                .into());
            }
            let config = args.storage.resolve_for_maintenance()?;
            let _telemetry = telemetry::init(config.log_format, &config.log_level)?;
            let options = gc::Options {
                dry_run: args.dry_run,
                full: args.full,
                full_every: args.full_every,
                delete_untagged: args.delete_untagged,
                grace_period: args.grace_period,
                sweep_wait: args.sweep_wait,
                mirror_retention: config
                    .proxy
                    .retention
                    .map(|unused_for| gc::MirrorRetention {
                        prefixes: config
                            .proxy
                            .upstreams
                            .iter()
                            .map(|u| u.prefix.clone())
                            .collect(),
                        unused_for,
                    }),
                quotas: config.policies.quotas().to_vec(),
            };
            let report = gc::run_once(storage::open(&config.storage).await?, &options).await?;
            print_report(
                &report,
                args.report.output,
                args.report.report_file.as_deref(),
            )
        }
        Service::PurgeUploads(args) => {
            let config = args.storage.resolve_for_maintenance()?;
            let _telemetry = telemetry::init(config.log_format, &config.log_level)?;
            let options = gc::PurgeOptions {
                dry_run: args.dry_run,
                older_than: args.older_than,
            };
            let report = gc::purge_uploads(storage::open(&config.storage).await?, &options).await?;
            print_report(
                &report,
                args.report.output,
                args.report.report_file.as_deref(),
            )
        }
        Service::Retention(args) => {
            let in_use = match &args.in_use_file {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    digests_in_use(&text)?
                }
                None => HashSet::new(),
            };
            let config = args.storage.resolve_for_maintenance()?;
            let _telemetry = telemetry::init(config.log_format, &config.log_level)?;
            if config.policies.retention().is_empty() {
                return Err(ConfigError::Invalid(
                    "no retention rules: add [[policies.retention]] tables to the config file"
                        .into(),
                )
                .into());
            }
            let store = storage::open(&config.storage).await?;
            let registry = Registry::new(Arc::clone(&store), config.limits);
            // Deletions go to webhooks, and to the registries that replicate deletes.
            let mut outlets = crate::events::webhooks(&config.notifications, None)?;
            let rules = crate::replication::rules(&config.replication)?;
            outlets.extend(crate::replication::outlets(&rules, &registry, None));
            let events = crate::events::Notifier::start(
                outlets,
                store,
                gc::RETENTION_ACTOR.to_owned(),
                "http",
            );
            let options = gc::RetentionOptions {
                dry_run: args.dry_run,
                in_use,
                events: events.clone(),
            };
            let report = gc::apply_retention(&registry, &config.policies, &options).await?;
            if let Some(events) = events {
                // What is not delivered by then, a serving replica takes over from the outbox.
                events
                    .drain(tokio::time::Instant::now() + EVENTS_DRAIN)
                    .await;
            }
            print_report(
                &report,
                args.report.output,
                args.report.report_file.as_deref(),
            )
        }
        Service::Replicate(args) => replicate(args).await,
        Service::Usage(args) => {
            let config = args.storage.resolve_for_maintenance()?;
            let _telemetry = telemetry::init(config.log_format, &config.log_level)?;
            let index = crate::index::StoredIndex::new(storage::open(&config.storage).await?);
            let counted = crate::index::usage::count(&index, args.namespace.as_ref()).await?;
            crate::report::print_usage(&counted, args.output)
        }
    }
}

/// `stowage replicate`.
async fn replicate(args: ReplicateArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = args.storage.resolve_for_maintenance()?;
    let _telemetry = telemetry::init(config.log_format, &config.log_level)?;
    let mut rules = crate::replication::rules(&config.replication)?;
    if let Some(unknown) = args
        .rules
        .iter()
        .find(|name| !rules.iter().any(|rule| rule.name() == name.as_str()))
    {
        return Err(
            ConfigError::Invalid(format!("no replication rule is named {unknown:?}")).into(),
        );
    }
    if !args.rules.is_empty() {
        rules.retain(|rule| args.rules.iter().any(|name| name == rule.name()));
    }
    if rules.is_empty() {
        return Err(ConfigError::Invalid(
            "no replication rules: add [[replication]] tables to the config file".into(),
        )
        .into());
    }
    let store = storage::open(&config.storage).await?;
    let registry = Registry::new(Arc::clone(&store), config.limits);
    if !args.once {
        let outlets = crate::replication::outlets(&rules, &registry, None);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
        let events = crate::events::Notifier::start(outlets, store, host, "http");
        tokio::select! {
            () = crate::replication::reconcile_on_schedule(rules, registry) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        drop(events);
        return Ok(());
    }
    let mut report = crate::report::ReplicationReport {
        dry_run: args.dry_run,
        rules: Vec::new(),
    };
    for rule in &rules {
        report
            .rules
            .push(crate::replication::reconcile(rule, &registry, args.dry_run).await?);
    }
    print_report(
        &report,
        args.report.output,
        args.report.report_file.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_use_files_name_digests_as_pods_and_the_operator_write_them() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = format!("sha256:{}", "c".repeat(64));
        let text = format!("# running\n{a}\n\nregistry.example/team/app@{b}\n  {c} 1764748800\n");
        let digests = digests_in_use(&text).unwrap();
        let expected: HashSet<Digest> = [a, b, c].iter().map(|d| d.parse().unwrap()).collect();
        assert_eq!(digests, expected);
        assert!(digests_in_use("team/app:v1\n").is_err());
    }
}
