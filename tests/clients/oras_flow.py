"""Drives a registry with the oras Python SDK (PyPI `oras`), as an artifact user would.

1. Pushes an artifact with a custom artifactType, its file uploaded in chunks, and pulls it back.
2. Attaches a referrer (a signature-like artifact whose subject is an existing image).
3. Queries the referrers API of the image.

Prints one JSON document describing what it saw; exits non-zero when anything is off.
"""

import argparse
import hashlib
import json
import os
import sys

import oras.client
import oras.oci
import oras.provider

ARTIFACT_TYPE = "application/vnd.stowage.test.bundle"
SIGNATURE_TYPE = "application/vnd.stowage.test.signature"
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json",
         "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
         "size": 2}


def check(response):
    if response.status_code not in (200, 201, 202):
        sys.exit(f"unexpected {response.status_code} from {response.request.method} "
                 f"{response.request.url}: {response.text}")
    return response


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", required=True)
    parser.add_argument("--repository", required=True)
    parser.add_argument("--subject", required=True, help="tag of an image in the repository")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()

    client = oras.client.OrasClient(hostname=args.registry, insecure=True)
    base = f"http://{args.registry}/v2/{args.repository}"
    os.chdir(args.workdir)

    # 1. An artifact with a custom artifactType; the file goes up in 64 KiB chunks.
    payload = bytes((i * 7 + 3) % 251 for i in range(300_000))
    with open("bundle.bin", "wb") as f:
        f.write(payload)
    container = client.get_container(f"{args.registry}/{args.repository}:bundle")
    layer = oras.oci.NewLayer("bundle.bin", media_type="application/vnd.stowage.test.data")
    layer["annotations"] = {"org.opencontainers.image.title": "bundle.bin"}
    check(client.upload_blob("bundle.bin", container, layer, do_chunked=True, chunk_size=64 * 1024))
    with open("empty.json", "w") as f:
        f.write("{}")
    check(client.upload_blob("empty.json", container, dict(EMPTY)))
    manifest = oras.oci.NewManifest()
    manifest["artifactType"] = ARTIFACT_TYPE
    manifest["config"] = dict(EMPTY)
    manifest["layers"] = [layer]
    check(client.upload_manifest(manifest, container))

    pulled_manifest = client.get_manifest(f"{args.registry}/{args.repository}:bundle")
    os.makedirs("pulled", exist_ok=True)
    files = client.pull(target=f"{args.registry}/{args.repository}:bundle", outdir="pulled")
    with open(os.path.join("pulled", "bundle.bin"), "rb") as f:
        pulled = f.read()
    if pulled != payload:
        sys.exit("pulled artifact differs from the pushed one")

    # 2. A referrer attached to the image: its subject is the image's manifest, as stored.
    accept = ",".join([oras.defaults.default_manifest_media_type,
                       "application/vnd.docker.distribution.manifest.v2+json"])
    image = check(client.do_request(f"{base}/manifests/{args.subject}", "GET",
                                    headers={"Accept": accept}))
    subject = oras.oci.Subject(mediaType=image.headers["Content-Type"],
                               digest="sha256:" + hashlib.sha256(image.content).hexdigest(),
                               size=len(image.content))
    if subject.digest != image.headers["Docker-Content-Digest"]:
        sys.exit("registry digest header does not match the manifest bytes")
    with open("signature.sig", "w") as f:
        f.write("signed by the stowage test suite")
    pushed = client.push(target=f"{args.registry}/{args.repository}:signature",
                         files=["signature.sig"], subject=subject,
                         manifest_config=f"empty.json:{SIGNATURE_TYPE}", quiet=True)
    check(pushed)

    # 3. The referrers API lists it.
    referrers = check(client.do_request(f"{base}/referrers/{subject.digest}", "GET")).json()
    filtered = check(client.do_request(
        f"{base}/referrers/{subject.digest}?artifactType={SIGNATURE_TYPE}", "GET"))

    print(json.dumps({
        "artifact_manifest": pulled_manifest,
        "pulled_files": [os.path.basename(p) for p in files],
        "subject": subject.digest,
        "oci_subject_header": pushed.headers.get("OCI-Subject"),
        "referrers": referrers,
        "filtered": filtered.json(),
        "filters_applied": filtered.headers.get("OCI-Filters-Applied"),
    }))


if __name__ == "__main__":
    main()
