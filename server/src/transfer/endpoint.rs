//! The two ends of a copy, as written on the command line:
//! `oci:<dir>[:<tag>|@<digest>]` and `docker://<host>/<repo>[:<tag>|@<digest>]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::oci::{Digest, Reference, RepositoryName, Tag};

/// Docker Hub, where names without a registry host go, as docker resolves them.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// One end of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An OCI image layout directory; the tag is a `org.opencontainers.image.ref.name`.
    Layout {
        dir: PathBuf,
        reference: Option<LayoutReference>,
    },
    /// A repository in a registry.
    Registry {
        /// As written (`docker.io`, `localhost:5000`): credentials are stored under it.
        host: String,
        repository: RepositoryName,
        reference: Option<Reference>,
    },
}

/// A name in a layout's `index.json`, or a manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutReference {
    Name(String),
    Digest(Digest),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("oci:") {
            return parse_layout(rest);
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            return parse_registry(rest);
        }
        Err(format!(
            "{s:?}: expected oci:<dir>[:<tag>|@<digest>] or docker://<host>/<repository>[:<tag>|@<digest>]"
        ))
    }
}

fn parse_layout(rest: &str) -> Result<Endpoint, String> {
    if let Some((dir, digest)) = rest.rsplit_once('@')
        && let Ok(digest) = digest.parse::<Digest>()
    {
        return layout(dir, Some(LayoutReference::Digest(digest)));
    }
    // A colon followed by something without a slash names an image; `oci:/a:b/c` is a directory.
    match rest.rsplit_once(':') {
        Some((dir, name)) if !name.contains('/') && !name.is_empty() => {
            if !valid_ref_name(name) {
                return Err(format!("{name:?} is not a valid image name in a layout"));
            }
            layout(dir, Some(LayoutReference::Name(name.to_owned())))
        }
        _ => layout(rest, None),
    }
}

fn layout(dir: &str, reference: Option<LayoutReference>) -> Result<Endpoint, String> {
    if dir.is_empty() {
        return Err("oci: needs a directory".into());
    }
    Ok(Endpoint::Layout {
        dir: PathBuf::from(dir),
        reference,
    })
}

/// The characters the image layout spec allows in `org.opencontainers.image.ref.name`.
fn valid_ref_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:@/+".contains(c))
}

fn parse_registry(rest: &str) -> Result<Endpoint, String> {
    let (name, reference) = if let Some((name, digest)) = rest.split_once('@') {
        let digest: Digest = digest.parse().map_err(|err| format!("{rest:?}: {err}"))?;
        (name, Some(Reference::Digest(digest)))
    } else {
        match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => {
                let tag: Tag = tag.parse().map_err(|err| format!("{tag:?}: {err}"))?;
                (name, Some(Reference::Tag(tag)))
            }
            _ => (rest, None),
        }
    };
    let (host, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => (first, path),
        _ => (DOCKER_HUB, name),
    };
    let path = if host == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    let repository: RepositoryName = path.parse().map_err(|err| format!("{path:?}: {err}"))?;
    Ok(Endpoint::Registry {
        host: host.to_owned(),
        repository,
        reference,
    })
}

impl Endpoint {
    /// The host to connect to for a registry named `host`.
    pub fn api_host(host: &str) -> &str {
        if host == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            host
        }
    }

    /// The same place with another reference.
    pub fn with_tag(&self, tag: &str) -> Result<Self, String> {
        Ok(match self {
            Self::Layout { dir, .. } => Self::Layout {
                dir: dir.clone(),
                reference: Some(LayoutReference::Name(tag.to_owned())),
            },
            Self::Registry {
                host, repository, ..
            } => Self::Registry {
                host: host.clone(),
                repository: repository.clone(),
                reference: Some(Reference::Tag(
                    tag.parse().map_err(|err| format!("{tag:?}: {err}"))?,
                )),
            },
        })
    }

    /// The tag (or layout name) this end names, if it names one.
    pub fn tag(&self) -> Option<String> {
        match self {
            Self::Layout {
                reference: Some(LayoutReference::Name(name)),
                ..
            } => Some(name.clone()),
            Self::Registry {
                reference: Some(Reference::Tag(tag)),
                ..
            } => Some(tag.to_string()),
            _ => None,
        }
    }

    pub fn digest(&self) -> Option<&Digest> {
        match self {
            Self::Layout {
                reference: Some(LayoutReference::Digest(digest)),
                ..
            }
            | Self::Registry {
                reference: Some(Reference::Digest(digest)),
                ..
            } => Some(digest),
            _ => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Layout { dir, reference } => {
                write!(f, "oci:{}", dir.display())?;
                match reference {
                    Some(LayoutReference::Name(name)) => write!(f, ":{name}"),
                    Some(LayoutReference::Digest(digest)) => write!(f, "@{digest}"),
                    None => Ok(()),
                }
            }
            Self::Registry {
                host,
                repository,
                reference,
            } => {
                write!(f, "docker://{host}/{repository}")?;
                match reference {
                    Some(Reference::Tag(tag)) => write!(f, ":{tag}"),
                    Some(Reference::Digest(digest)) => write!(f, "@{digest}"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn registry(s: &str) -> (String, String, Option<String>) {
        match s.parse::<Endpoint>().unwrap() {
            Endpoint::Registry {
                host,
                repository,
                reference,
            } => (
                host,
                repository.to_string(),
                reference.map(|r| r.to_string()),
            ),
            other @ Endpoint::Layout { .. } => panic!("{other:?}"),
        }
    }

    #[test]
    fn registry_references() {
        assert_eq!(
            registry("docker://localhost:5000/team/app:v1"),
            (
                "localhost:5000".into(),
                "team/app".into(),
                Some("v1".into())
            )
        );
        assert_eq!(
            registry(&format!("docker://ghcr.io/o/r@{DIGEST}")),
            ("ghcr.io".into(), "o/r".into(), Some(DIGEST.into()))
        );
        assert_eq!(
            registry("docker://alpine"),
            ("docker.io".into(), "library/alpine".into(), None)
        );
        assert_eq!(registry("docker://localhost/x").0, "localhost");
        assert!("docker://host:5000/UPPER".parse::<Endpoint>().is_err());
        assert!("docker://host:5000/a:bad tag".parse::<Endpoint>().is_err());
        assert!("http://x/y".parse::<Endpoint>().is_err());
    }

    #[test]
    fn layout_references() {
        let parse = |s: &str| s.parse::<Endpoint>().unwrap();
        assert_eq!(
            parse("oci:/tmp/a:b/c"),
            Endpoint::Layout {
                dir: "/tmp/a:b/c".into(),
                reference: None
            }
        );
        assert_eq!(
            parse("oci:dir:v1.2"),
            Endpoint::Layout {
                dir: "dir".into(),
                reference: Some(LayoutReference::Name("v1.2".into()))
            }
        );
        assert_eq!(
            parse(&format!("oci:dir@{DIGEST}"))
                .digest()
                .map(ToString::to_string),
            Some(DIGEST.to_owned())
        );
        assert_eq!(parse("oci:dir:v1").to_string(), "oci:dir:v1");
        assert!("oci:".parse::<Endpoint>().is_err());
        assert!("oci:dir:bad name".parse::<Endpoint>().is_err());
    }
}
