//! Routing for `/v2/...`: repository names contain slashes, so one catch-all route hands the
//! path to this pure parser, which matches the spec's endpoints from the end.

/// An endpoint under `/v2/`, with its parts still unvalidated (so each handler can answer an
/// invalid part with that part's own error code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciPath<'a> {
    Catalog,
    Tags { name: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Uploads { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> OciPath<'a> {
    /// Parses the path after `/v2/`. `None` means no such endpoint.
    pub fn parse(rest: &'a str) -> Option<Self> {
        if rest == "_catalog" {
            return Some(Self::Catalog);
        }
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return Some(Self::Tags { name });
        }
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return Some(Self::Uploads { name });
        }
        let (head, last) = rest.rsplit_once('/')?;
        if last.is_empty() {
            return None;
        }
        if let Some(name) = head.strip_suffix("/blobs/uploads") {
            return Some(Self::Upload { name, id: last });
        }
        if let Some(name) = head.strip_suffix("/blobs") {
            return Some(Self::Blob { name, digest: last });
        }
        if let Some(name) = head.strip_suffix("/manifests") {
            return Some(Self::Manifest {
                name,
                reference: last,
            });
        }
        if let Some(name) = head.strip_suffix("/referrers") {
            return Some(Self::Referrers { name, digest: last });
        }
        None
    }

    /// The repository named, if the endpoint names one.
    pub fn repository(&self) -> Option<&'a str> {
        match *self {
            Self::Catalog => None,
            Self::Tags { name }
            | Self::Blob { name, .. }
            | Self::Uploads { name }
            | Self::Upload { name, .. }
            | Self::Manifest { name, .. }
            | Self::Referrers { name, .. } => Some(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OciPath::{self, *};

    #[test]
    fn parses_every_endpoint() {
        let cases = [
            ("_catalog", Some(Catalog)),
            ("a/b/tags/list", Some(Tags { name: "a/b" })),
            ("a/blobs/uploads/", Some(Uploads { name: "a" })),
            ("a/blobs/uploads", Some(Uploads { name: "a" })),
            (
                "a/blobs/uploads/123",
                Some(Upload {
                    name: "a",
                    id: "123",
                }),
            ),
            (
                "a/b/blobs/sha256:x",
                Some(Blob {
                    name: "a/b",
                    digest: "sha256:x",
                }),
            ),
            (
                "blobs/blobs/sha256:x",
                Some(Blob {
                    name: "blobs",
                    digest: "sha256:x",
                }),
            ),
            (
                "a/manifests/latest",
                Some(Manifest {
                    name: "a",
                    reference: "latest",
                }),
            ),
            (
                "x/manifests/manifests/v1",
                Some(Manifest {
                    name: "x/manifests",
                    reference: "v1",
                }),
            ),
            (
                "a/referrers/sha256:x",
                Some(Referrers {
                    name: "a",
                    digest: "sha256:x",
                }),
            ),
            ("a/manifests/", None),
            ("a/blobs/", None),
            ("a/unknown/x", None),
            ("a", None),
            ("", None),
        ];
        for (path, expected) in cases {
            assert_eq!(OciPath::parse(path), expected, "{path}");
        }
    }
}
