//! A webhook: batches of events POSTed in CNCF Distribution's envelope, with the signature
//! and headers the endpoint wants.

use async_trait::async_trait;
use hmac::{KeyInit, Mac};
use reqwest::header;

use super::EndpointSettings;
use super::event::{EVENTS_MEDIA_TYPE, Envelope, Event};
use super::outbox::Sink;

/// The signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-stowage-signature";

/// An endpoint and its client.
pub struct Webhook {
    config: EndpointSettings,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(config: EndpointSettings) -> Result<Self, String> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("stowage/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .build()
            .map_err(|err| format!("endpoint {}: {err}", config.name))?;
        Ok(Self { config, http })
    }
}

#[async_trait]
impl Sink for Webhook {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn outbox(&self) -> String {
        super::outbox_of(&self.config.name)
    }

    fn wants(&self, event: &Event) -> bool {
        !self.config.ignored_actions.contains(event.action.as_str())
            && !event
                .target
                .media_type
                .as_ref()
                .is_some_and(|media_type| self.config.ignored_media_types.contains(media_type))
    }

    async fn deliver(&self, events: &[Event]) -> Result<(), String> {
        self.send(events).await
    }
}

impl Webhook {
    async fn send(&self, events: &[Event]) -> Result<(), String> {
        let body = serde_json::to_vec(&Envelope { events }).map_err(|err| err.to_string())?;
        let mut request = self
            .http
            .post(self.config.url.clone())
            .header(header::CONTENT_TYPE, EVENTS_MEDIA_TYPE);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        for (name, file) in &self.config.header_files {
            let value = std::fs::read_to_string(file)
                .map_err(|err| format!("header {name} from {}: {err}", file.display()))?;
            request = request.header(name, value.trim_end());
        }
        if let Some(file) = &self.config.signing_key_file {
            let key = std::fs::read(file).map_err(|err| format!("{}: {err}", file.display()))?;
            request = request.header(SIGNATURE_HEADER, signature(trim_newline(&key), &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|err| format!("{}: {err}", self.config.url))?;
        if !response.status().is_success() {
            return Err(format!(
                "{} answered {}",
                self.config.url,
                response.status()
            ));
        }
        Ok(())
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn trim_newline(key: &[u8]) -> &[u8] {
    key.strip_suffix(b"\n").unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(trim_newline(b"key\n"), b"key");
    }
}
