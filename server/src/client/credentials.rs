//! Credentials for a registry: from a flag, or from the auth files docker, podman and skopeo
//! write (`auths` keyed by registry host, `auth` holding base64 `user:password`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::ClientError;
use crate::reload::Watched;

/// What to present to a registry.
#[derive(Clone)]
pub enum Credentials {
    /// A user and password (or a token used as the password).
    Basic {
        username: String,
        password: Zeroizing<String>,
    },
    /// An OAuth2 refresh token (`identitytoken` in docker's config), exchanged at the realm.
    IdentityToken {
        username: String,
        token: Zeroizing<String>,
    },
    /// A token sent as it is, `Authorization: Bearer <token>`, with no token flow.
    Bearer { token: Zeroizing<String> },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, <redacted>)")
            }
            Self::Bearer { .. } => write!(f, "Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    /// `username` with the password, or token, in the first line of `file` (a mounted Secret's
    /// key, a projected service account token), read again every `interval` when it changes,
    /// as the kubelet rotates a projected token.
    pub fn watch_password_file(
        username: String,
        file: PathBuf,
        interval: Duration,
    ) -> Result<Arc<Watched<Option<Self>>>, ClientError> {
        Watched::start("registry password", vec![file], interval, move |contents| {
            Ok(Some(Self::Basic {
                username: username.clone(),
                password: secret_line(&contents[0])?,
            }))
        })
        .map_err(|err| ClientError::Config(err.to_string()))
    }

    /// `USER:PASSWORD`, as skopeo's `--creds` takes it.
    pub fn from_flag(value: &str) -> Result<Self, ClientError> {
        let (username, password) = value.split_once(':').ok_or_else(|| {
            ClientError::Config("credentials must be given as USER:PASSWORD".into())
        })?;
        Ok(Self::Basic {
            username: username.to_owned(),
            password: Zeroizing::new(password.to_owned()),
        })
    }

    /// The credentials stored for `host`, looking where podman and skopeo look, in their order:
    /// `authfile` if given (then only there), `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`, then docker's
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub fn lookup(host: &str, authfile: Option<&Path>) -> Result<Option<Self>, ClientError> {
        let files = match authfile {
            Some(file) => vec![file.to_owned()],
            None => default_auth_files(),
        };
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && authfile.is_none() => {
                    continue;
                }
                Err(err) => {
                    return Err(ClientError::Config(format!("{}: {err}", file.display())));
                }
            };
            let config: AuthFile = serde_json::from_str(&text)
                .map_err(|err| ClientError::Config(format!("{}: {err}", file.display())))?;
            if let Some(entry) = config.entry_for(host) {
                return entry.credentials().map_err(|why| {
                    ClientError::Config(format!("{}: {host}: {why}", file.display()))
                });
            }
            if config.has_helper_for(host) {
                tracing::warn!(
                    file = %file.display(),
                    host,
                    "credential helpers are not supported; pass --creds or an auth file with the entry"
                );
            }
        }
        Ok(None)
    }
}

fn default_auth_files() -> Vec<PathBuf> {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.extend(env("XDG_RUNTIME_DIR").map(|dir| dir.join("containers/auth.json")));
    files.extend(
        env("XDG_CONFIG_HOME")
            .or_else(|| home.as_ref().map(|home| home.join(".config")))
            .map(|dir| dir.join("containers/auth.json")),
    );
    files.extend(
        env("DOCKER_CONFIG")
            .or_else(|| home.as_ref().map(|home| home.join(".docker")))
            .map(|dir| dir.join("config.json")),
    );
    files
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl AuthFile {
    /// The entry for `host`, whichever of the spellings docker and podman use it is under.
    fn entry_for(&self, host: &str) -> Option<&AuthEntry> {
        self.auths
            .iter()
            .find(|(key, _)| normalize_key(key) == normalize_host(host))
            .map(|(_, entry)| entry)
    }

    fn has_helper_for(&self, host: &str) -> bool {
        self.creds_store.is_some() || self.cred_helpers.contains_key(host)
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/v2/` → `host:5000`.
fn normalize_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    normalize_host(key.split('/').next().unwrap_or(key))
}

fn normalize_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

impl AuthEntry {
    fn credentials(&self) -> Result<Option<Credentials>, &'static str> {
        let (username, password) = match &self.auth {
            Some(auth) if !auth.is_empty() => {
                let decoded = STANDARD.decode(auth).map_err(|_| "auth is not base64")?;
                let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8")?;
                let (user, password) = decoded
                    .split_once(':')
                    .ok_or("auth is not base64 of user:password")?;
                (user.to_owned(), password.to_owned())
            }
            _ => (
                self.username.clone().unwrap_or_default(),
                self.password.clone().unwrap_or_default(),
            ),
        };
        if let Some(token) = self.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::IdentityToken {
                username,
                token: Zeroizing::new(token.clone()),
            }));
        }
        if username.is_empty() && password.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credentials::Basic {
            username,
            password: Zeroizing::new(password),
        }))
    }
}

/// Where a registry's credentials come from, as a config file names them. Files are read again
/// when they change, as the kubelet updates a mounted Secret or rotates a projected token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Anonymous,
    /// `username` with the password, or a token used as one, in the first line of a file.
    Password {
        username: String,
        password_file: PathBuf,
    },
    /// A token sent as `Authorization: Bearer`, with no token flow.
    Token {
        token_file: PathBuf,
    },
    /// A directory (a mounted Secret) with `username` and `password` files, or a `token` file;
    /// which it holds is looked at once, when the client starts.
    Directory(PathBuf),
}

impl CredentialSource {
    /// The source a config table's `username`, `password-file`, `token-file` and
    /// `credentials-dir` name, or why they do not go together.
    pub fn from_fields(
        username: Option<String>,
        password_file: Option<PathBuf>,
        token_file: Option<PathBuf>,
        credentials_dir: Option<PathBuf>,
    ) -> Result<Self, String> {
        match ((username, password_file, token_file), credentials_dir) {
            ((None, None, None), None) => Ok(Self::Anonymous),
            ((None, None, None), Some(dir)) => Ok(Self::Directory(dir)),
            ((Some(username), Some(password_file), None), None) => Ok(Self::Password {
                username,
                password_file,
            }),
            ((None, None, Some(token_file)), None) => Ok(Self::Token { token_file }),
            _ => Err(
                "credentials are one of: username with password-file, token-file, \
                      credentials-dir"
                    .into(),
            ),
        }
    }

    /// The credentials, kept current by checking the files every `interval`.
    pub fn watch(
        &self,
        interval: Duration,
    ) -> Result<Arc<Watched<Option<Credentials>>>, ClientError> {
        let config = |err: crate::reload::LoadError| ClientError::Config(err.to_string());
        match self {
            Self::Anonymous => Ok(Watched::fixed("registry credentials", None)),
            Self::Password {
                username,
                password_file,
            } => {
                Credentials::watch_password_file(username.clone(), password_file.clone(), interval)
            }
            Self::Token { token_file } => {
                Watched::start("registry token", vec![token_file.clone()], interval, bearer)
                    .map_err(config)
            }
            Self::Directory(dir) => {
                let (token, username, password) = (
                    dir.join("token"),
                    dir.join("username"),
                    dir.join("password"),
                );
                if token.exists() {
                    Watched::start("registry token", vec![token], interval, bearer).map_err(config)
                } else if username.exists() && password.exists() {
                    Watched::start(
                        "registry credentials",
                        vec![username, password],
                        interval,
                        |contents| {
                            Ok(Some(Credentials::Basic {
                                username: secret_line(&contents[0])?.to_string(),
                                password: secret_line(&contents[1])?,
                            }))
                        },
                    )
                    .map_err(config)
                } else {
                    Err(ClientError::Config(format!(
                        "{} holds neither a token file nor username and password files",
                        dir.display()
                    )))
                }
            }
        }
    }
}

fn bearer(contents: &[Vec<u8>]) -> Result<Option<Credentials>, String> {
    Ok(Some(Credentials::Bearer {
        token: secret_line(&contents[0])?,
    }))
}

/// A secret file's first line, without its line ending or surrounding blanks.
pub fn secret_line(contents: &[u8]) -> Result<Zeroizing<String>, String> {
    let text = std::str::from_utf8(contents).map_err(|_| "not UTF-8".to_owned())?;
    let line = text.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        return Err("empty".into());
    }
    Ok(Zeroizing::new(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password_of(credentials: Option<Credentials>) -> (String, String) {
        match credentials {
            Some(Credentials::Basic { username, password }) => (username, password.to_string()),
            other => panic!("expected basic credentials, got {other:?}"),
        }
    }

    #[test]
    fn docker_and_podman_spellings_of_a_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let pair = STANDARD.encode("alice:s3cret:with-colon");
        std::fs::write(
            &file,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{pair}"}},
                "localhost:5000":{{"username":"bob","password":"pw"}},
                "http://registry.example:8080/v2/":{{"auth":"{pair}"}},
                "tokens.example":{{"auth":"","identitytoken":"refresh"}}}}}}"#
            ),
        )
        .unwrap();
        let lookup = |host| Credentials::lookup(host, Some(&file)).unwrap();
        assert_eq!(
            password_of(lookup("docker.io")),
            ("alice".into(), "s3cret:with-colon".into())
        );
        assert_eq!(
            password_of(lookup("localhost:5000")),
            ("bob".into(), "pw".into())
        );
        assert_eq!(password_of(lookup("registry.example:8080")).0, "alice");
        assert!(matches!(
            lookup("tokens.example"),
            Some(Credentials::IdentityToken { .. })
        ));
        assert!(lookup("elsewhere.example").is_none());
    }

    #[test]
    fn a_named_auth_file_must_exist_and_parse() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Credentials::lookup("x", Some(&dir.path().join("missing.json"))).is_err());
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"auths":{"x":{"auth":"!!!"}}}"#).unwrap();
        assert!(Credentials::lookup("x", Some(&bad)).is_err());
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let credentials = Credentials::from_flag("user:hunter2").unwrap();
        assert!(!format!("{credentials:?}").contains("hunter2"));
        assert!(Credentials::from_flag("no-colon").is_err());
    }
}
