//! TLS: the crypto provider every subcommand uses, and the server's certificate, reloaded from
//! disk when it changes so a rotated certificate is served without a restart.

mod certificate;

pub use certificate::{ServerTls, TlsError};

/// Installs aws-lc-rs as the process-wide rustls crypto provider.
///
/// rustls refuses to guess when more than one provider is compiled in (a workspace build can
/// bring in several through feature unification) and panics at the first TLS client instead.
/// The workspace builds only aws-lc-rs, the AWS SDK's own choice; installing it explicitly keeps
/// that decision in one place. Calling this twice is harmless.
pub fn install_crypto_provider() {
    // Err only when a provider is already installed, which is what we want either way.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // jsonwebtoken has providers of its own; the same one, for the same reasons.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
