//! Azure and GCS that hang instead of refusing: a frozen emulator (SIGSTOP) and an endpoint that
//! accepts connections and never answers. As on S3: a request that needs storage answers 503
//! within the storage timeout, `/readyz` turns not ready at once, nothing half-written becomes
//! visible, and the registry recovers by itself.

use std::time::Duration;

use reqwest::StatusCode;
use stowage_e2e::emulators::Emulator;
use stowage_e2e::{Stowage, sha256};

use crate::s3_hang::{
    client, fails_fast, never_answering_endpoint, outage_is_answered_fast, push, readiness_becomes,
};

#[derive(Debug, Clone, Copy)]
enum Cloud {
    Azure,
    Gcs,
}

async fn a_frozen_emulator_fails_fast_and_recovers(cloud: Cloud) {
    let dir = tempfile::tempdir().unwrap();
    let (emulator, flags) = match cloud {
        Cloud::Azure => {
            let (emulator, azure) = Emulator::azurite(dir.path());
            (emulator, azure.stowage_flags("hang"))
        }
        Cloud::Gcs => {
            let (emulator, gcs) = Emulator::fake_gcs(dir.path());
            (emulator, gcs.stowage_flags("hang"))
        }
    };
    let registry = Stowage::start_args(&flags);
    let http = client();
    readiness_becomes(&http, &registry, StatusCode::OK, Duration::from_secs(10)).await;
    let kept = b"pushed before the outage".to_vec();
    assert_eq!(
        push(&http, &registry, "hang/app", &kept).await,
        StatusCode::CREATED
    );

    emulator.freeze();
    let lost: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    outage_is_answered_fast(&http, &registry, "hang/app", &lost).await;
    let base = http.get(registry.url("/v2/")).send().await.unwrap();
    assert_eq!(
        base.status(),
        StatusCode::OK,
        "a request that needs no storage"
    );

    emulator.thaw();
    readiness_becomes(&http, &registry, StatusCode::OK, Duration::from_secs(20)).await;
    // What was pushed before is whole; what failed during the outage left nothing visible.
    let before = http
        .get(registry.url(&format!("/v2/hang/app/blobs/{}", sha256(&kept))))
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), StatusCode::OK);
    assert_eq!(before.bytes().await.unwrap(), kept);
    let during = http
        .head(registry.url(&format!("/v2/hang/app/blobs/{}", sha256(&lost))))
        .send()
        .await
        .unwrap();
    assert_eq!(during.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        push(&http, &registry, "hang/app", &lost).await,
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_azurite_fails_fast_and_recovers() {
    a_frozen_emulator_fails_fast_and_recovers(Cloud::Azure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_fake_gcs_server_fails_fast_and_recovers() {
    a_frozen_emulator_fails_fast_and_recovers(Cloud::Gcs).await;
}

async fn an_endpoint_that_never_answers(cloud: Cloud) {
    let endpoint = never_answering_endpoint();
    let flags: Vec<String> = match cloud {
        Cloud::Azure => stowage_e2e::emulators::AzureEndpoint {
            endpoint: format!("{endpoint}/devstoreaccount1"),
        }
        .stowage_flags("void"),
        Cloud::Gcs => stowage_e2e::emulators::GcsEndpoint { endpoint }.stowage_flags("void"),
    };
    let registry = Stowage::start_args(&flags);
    let http = client();
    outage_is_answered_fast(&http, &registry, "void", b"x").await;
    let took = fails_fast(
        "a request with the breaker open",
        http.get(registry.url("/v2/void/tags/list")),
    )
    .await;
    assert!(took < Duration::from_secs(1), "not at once: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_endpoint_that_never_answers_fails_fast() {
    an_endpoint_that_never_answers(Cloud::Azure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcs_endpoint_that_never_answers_fails_fast() {
    an_endpoint_that_never_answers(Cloud::Gcs).await;
}
