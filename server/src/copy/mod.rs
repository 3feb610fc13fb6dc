//! `stowage copy`: images between registries and OCI image layouts, sending only what the
//! destination lacks. The command line and its summary; the engine is [`crate::transfer`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args};

use crate::client::{ClientOptions, Credentials, RegistryClient};
use crate::report::OutputFormat;
use crate::transfer::{
    self, CopyError, Destination, Display, Endpoint, LayoutDestination, LayoutReference,
    LayoutSource, Naming, PlatformFilter, Progress, RegistryRepository, ResumeDir, Selection,
    Source, Summary, Uploads, Wanted,
};

/// `stowage copy SOURCE DESTINATION`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// What to copy: `oci:<dir>[:<name>|@<digest>]` or
    /// `docker://<host>/<repository>[:<tag>|@<digest>]`.
    pub source: String,

    /// Where to: as the source; without a tag, the source's tag (or digest) is kept.
    pub destination: String,

    /// Every tag of the source repository (or every name in the source layout).
    #[arg(long)]
    pub all_tags: bool,

    /// Of a multi-platform index, only this platform's image (`os/arch[/variant]`), stored
    /// under the index's name.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<PlatformFilter>,

    /// Also copy the referrers (signatures, SBOMs, attestations) of what is copied, and theirs.
    #[arg(long)]
    pub referrers: bool,

    /// Credentials for the source registry (else from the auth files docker and podman write).
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "STOWAGE_COPY_SRC_CREDS",
        hide_env_values = true
    )]
    pub src_creds: Option<String>,

    /// Credentials for the destination registry.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "STOWAGE_COPY_DEST_CREDS",
        hide_env_values = true
    )]
    pub dest_creds: Option<String>,

    /// The user for `--src-password-file`.
    #[arg(long, value_name = "USER", env = "STOWAGE_COPY_SRC_USERNAME")]
    pub src_username: Option<String>,

    /// A file whose first line is the source registry's password or token, such as a
    /// projected service account token; read again when it changes.
    #[arg(long, value_name = "FILE", env = "STOWAGE_COPY_SRC_PASSWORD_FILE")]
    pub src_password_file: Option<PathBuf>,

    /// The user for `--dest-password-file`.
    #[arg(long, value_name = "USER", env = "STOWAGE_COPY_DEST_USERNAME")]
    pub dest_username: Option<String>,

    /// A file whose first line is the destination registry's password or token, such as a
    /// projected service account token; read again when it changes.
    #[arg(long, value_name = "FILE", env = "STOWAGE_COPY_DEST_PASSWORD_FILE")]
    pub dest_password_file: Option<PathBuf>,

    /// The auth file to read credentials from, instead of `$REGISTRY_AUTH_FILE`,
    /// `containers/auth.json` and `~/.docker/config.json`.
    #[arg(long)]
    pub authfile: Option<PathBuf>,

    /// Access the source registry anonymously.
    #[arg(long)]
    pub src_no_creds: bool,

    /// Access the destination registry anonymously.
    #[arg(long)]
    pub dest_no_creds: bool,

    /// Verify the source registry's certificate; when false, plain HTTP is allowed too.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub src_tls_verify: bool,

    /// Verify the destination registry's certificate; when false, plain HTTP is allowed too.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub dest_tls_verify: bool,

    /// Upload blobs larger than this in chunks of this size (default 16MiB, raised to the
    /// registry's `OCI-Chunk-Min-Length`).
    #[arg(long, value_parser = crate::units::parse_size)]
    pub chunk_size: Option<u64>,

    /// Blobs copied at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Read at most this many bytes per second from the source (`50MiB`).
    #[arg(long, value_parser = crate::units::parse_size)]
    pub limit_rate: Option<u64>,

    /// Where interrupted uploads are recorded so a second run resumes them (default
    /// `$XDG_CACHE_HOME/stowage/uploads`).
    #[arg(long)]
    pub resume_dir: Option<PathBuf>,

    /// Give up on a registry that sends nothing for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Print nothing but errors (and the JSON summary, if asked for).
    #[arg(long, short)]
    pub quiet: bool,

    /// The summary's format: a line of text, or JSON on standard output.
    #[arg(long, default_value = "text")]
    pub output: OutputFormat,
}

/// Runs the copy, prints its summary, and gives the exit code its outcome calls for.
pub async fn run(args: CopyArgs) -> ExitCode {
    let display = if args.quiet {
        Display::Quiet
    } else if std::io::stderr().is_terminal() {
        Display::Bars
    } else {
        Display::Lines
    };
    let progress = Progress::new(display, args.limit_rate);
    let outcome = tokio::select! {
        outcome = copy(&args, &progress) => outcome,
        _ = tokio::signal::ctrl_c() => Err(CopyError::Interrupted),
    };
    match outcome {
        Ok(summary) => {
            match args.output {
                OutputFormat::Json => match serde_json::to_string(&summary) {
                    Ok(json) => println!("{json}"),
                    Err(err) => eprintln!("stowage copy: {err}"),
                },
                OutputFormat::Text if !args.quiet => println!("{}", summary.text()),
                OutputFormat::Text => {}
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("stowage copy: {err}");
            err.exit_code()
        }
    }
}

/// One image to copy: what to take from the source, and how to name it at the destination.
struct Image {
    wanted: Wanted,
    naming: Naming,
    label: String,
}

/// Copies what `args` names.
pub async fn copy(args: &CopyArgs, progress: &Arc<Progress>) -> Result<Summary, CopyError> {
    let source_end: Endpoint = args.source.parse().map_err(CopyError::Usage)?;
    let destination_end: Endpoint = args.destination.parse().map_err(CopyError::Usage)?;
    let images = images_to_copy(args, &source_end, &destination_end)?;

    let source = open_source(args, &source_end).await?;
    let destination = open_destination(args, &destination_end).await?;
    let images = match images {
        Some(images) => images,
        None => {
            let mut tags = source.tags().await?;
            tags.sort();
            tags.dedup();
            tags.into_iter()
                .map(|tag| Image {
                    label: source_end
                        .with_tag(&tag)
                        .map_or_else(|_| tag.clone(), |e| e.to_string()),
                    wanted: Wanted::Tag(tag.clone()),
                    naming: Naming::Tag(tag),
                })
                .collect()
        }
    };
    let selection = Selection {
        platform: args.platform.clone(),
        referrers: args.referrers,
    };

    let mut labels = Vec::new();
    for image in images {
        progress.say(&format!("Copying {} to {destination_end}", image.label));
        let plan = transfer::plan(source.as_ref(), &image.wanted, image.naming, &selection).await?;
        transfer::copy_plan(
            &plan,
            source.as_ref(),
            destination.as_ref(),
            usize::from(args.jobs),
            transfer::Manifests::All,
            progress,
        )
        .await?;
        labels.push(image.label);
    }
    destination.commit().await?;
    Ok(progress.summary(labels))
}

/// The images named on the command line, or `None` for every tag of the source.
fn images_to_copy(
    args: &CopyArgs,
    source: &Endpoint,
    destination: &Endpoint,
) -> Result<Option<Vec<Image>>, CopyError> {
    if destination.digest().is_some() {
        return Err(CopyError::Usage(
            "a destination is named by a tag, or not at all (the digest is the source's)".into(),
        ));
    }
    if args.all_tags {
        if source.tag().is_some() || source.digest().is_some() || destination.tag().is_some() {
            return Err(CopyError::Usage(
                "--all-tags copies a whole repository: name neither a tag nor a digest".into(),
            ));
        }
        return Ok(None);
    }
    let wanted = match (source.tag(), source.digest()) {
        (Some(tag), _) => Wanted::Tag(tag),
        (None, Some(digest)) => Wanted::Digest(digest.clone()),
        (None, None) => Wanted::Only,
    };
    let naming = match (destination.tag(), &wanted) {
        (Some(tag), _) => Naming::Tag(tag),
        (None, Wanted::Tag(tag)) => Naming::Tag(tag.clone()),
        (None, Wanted::Digest(_)) => Naming::Root,
        // A registry's `latest`, or a layout's only image, keeps its name if it has one.
        (None, Wanted::Only) => match source {
            Endpoint::Registry { .. } => Naming::Tag("latest".into()),
            Endpoint::Layout { .. } => Naming::Root,
        },
    };
    Ok(Some(vec![Image {
        wanted,
        naming,
        label: source.to_string(),
    }]))
}

async fn open_source(args: &CopyArgs, end: &Endpoint) -> Result<Box<dyn Source>, CopyError> {
    Ok(match end {
        Endpoint::Layout { dir, .. } => Box::new(LayoutSource::open(dir).await?),
        Endpoint::Registry {
            host, repository, ..
        } => {
            let given = Given {
                creds: args.src_creds.as_deref(),
                username: args.src_username.as_deref(),
                password_file: args.src_password_file.as_deref(),
                anonymous: args.src_no_creds,
            };
            let client = client_for(host, &given, args.src_tls_verify, args)?;
            Box::new(RegistryRepository::source(
                client,
                host,
                repository.as_str(),
            ))
        }
    })
}

async fn open_destination(
    args: &CopyArgs,
    end: &Endpoint,
) -> Result<Box<dyn Destination>, CopyError> {
    Ok(match end {
        Endpoint::Layout { dir, reference } => {
            if matches!(reference, Some(LayoutReference::Digest(_))) {
                return Err(CopyError::Usage(
                    "a layout destination is named by a name, not a digest".into(),
                ));
            }
            Box::new(LayoutDestination::open(dir).await?)
        }
        Endpoint::Registry {
            host, repository, ..
        } => {
            let given = Given {
                creds: args.dest_creds.as_deref(),
                username: args.dest_username.as_deref(),
                password_file: args.dest_password_file.as_deref(),
                anonymous: args.dest_no_creds,
            };
            let client = client_for(host, &given, args.dest_tls_verify, args)?;
            let uploads = Uploads {
                chunk_size: args.chunk_size,
                resume: args
                    .resume_dir
                    .clone()
                    .or_else(default_resume_dir)
                    .map(|dir| Arc::new(ResumeDir(dir)) as _),
            };
            Box::new(RegistryRepository::destination(
                client,
                host,
                repository.as_str(),
                uploads,
            ))
        }
    })
}

/// The credential flags given for one end.
struct Given<'a> {
    creds: Option<&'a str>,
    username: Option<&'a str>,
    password_file: Option<&'a Path>,
    anonymous: bool,
}

/// How often a password file is checked for a new password (a rotated token).
const PASSWORD_FILE_INTERVAL: Duration = Duration::from_secs(10);

fn client_for(
    host: &str,
    given: &Given<'_>,
    tls_verify: bool,
    args: &CopyArgs,
) -> Result<Arc<RegistryClient>, CopyError> {
    let fixed = |credentials| crate::reload::Watched::fixed("registry credentials", credentials);
    if given.anonymous && (given.creds.is_some() || given.password_file.is_some()) {
        return Err(CopyError::Usage(
            "credentials and --*-no-creds together".into(),
        ));
    }
    if given.username.is_some() && given.password_file.is_none() {
        return Err(CopyError::Usage(
            "--*-username goes with --*-password-file".into(),
        ));
    }
    let credentials = match (given.creds, given.password_file) {
        (Some(_), Some(_)) => {
            return Err(CopyError::Usage(
                "--*-creds and --*-password-file together".into(),
            ));
        }
        (Some(flag), None) => fixed(Some(Credentials::from_flag(flag)?)),
        (None, Some(file)) => {
            let username = given
                .username
                .ok_or_else(|| CopyError::Usage("--*-password-file needs --*-username".into()))?;
            Credentials::watch_password_file(
                username.to_owned(),
                file.to_owned(),
                PASSWORD_FILE_INTERVAL,
            )?
        }
        (None, None) if given.anonymous => fixed(None),
        (None, None) => fixed(Credentials::lookup(host, args.authfile.as_deref())?),
    };
    let options = ClientOptions {
        tls_verify,
        ca_file: None,
        credentials,
        read_timeout: args.timeout,
        deadline: None,
    };
    Ok(Arc::new(RegistryClient::new(
        Endpoint::api_host(host),
        options,
    )?))
}

/// `$XDG_CACHE_HOME/stowage/uploads`, or `~/.cache/stowage/uploads`.
fn default_resume_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("stowage/uploads"))
}
