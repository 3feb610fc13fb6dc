"""Pushes and pulls an artifact with the oras Python SDK (PyPI `oras`) through a registry's
access control: logged in with the token flow or Basic auth, over HTTP or HTTPS (the CA bundle
in REQUESTS_CA_BUNDLE). Then tries again with a wrong password, which must fail.

Prints one JSON document describing what it saw; exits non-zero when anything is off.
"""

import argparse
import hashlib
import json
import os
import sys

import oras.client


def client_for(args, password):
    client = oras.client.OrasClient(
        hostname=args.registry,
        insecure=not args.https,
        tls_verify=os.environ.get("REQUESTS_CA_BUNDLE", True) if args.https else False,
        auth_backend=args.auth_backend,
    )
    client.login(
        username=args.user,
        password=password,
        hostname=args.registry,
        config_path=os.path.join(args.workdir, "auth.json"),
    )
    return client


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", required=True)
    parser.add_argument("--repository", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--auth-backend", choices=["token", "basic"], required=True)
    parser.add_argument("--https", action="store_true")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    os.chdir(args.workdir)

    payload = os.urandom(200_000)
    with open("artifact.bin", "wb") as f:
        f.write(payload)
    target = f"{args.registry}/{args.repository}:artifact"
    client = client_for(args, args.password)
    client.push(target=target, files=["artifact.bin"])

    os.makedirs("pulled", exist_ok=True)
    pulled = client.pull(target=target, outdir="pulled")
    with open(pulled[0], "rb") as f:
        same = hashlib.sha256(f.read()).digest() == hashlib.sha256(payload).digest()

    # A wrong password: the SDK's request path, without the retry loop that would back off
    # for two minutes before giving up.
    wrong = client_for(args, "wrong-" + args.password)
    scheme = "https" if args.https else "http"
    url = f"{scheme}://{args.registry}/v2/{args.repository}/blobs/uploads/"
    try:
        response = type(wrong).do_request.__wrapped__(wrong, url, "POST")
        refused = response.status_code == 401
    except ValueError:  # "Cannot respond to request for authentication": the token was refused
        refused = True

    print(json.dumps({"pulled_same": same, "wrong_password_refused": refused}))
    if not (same and refused):
        sys.exit(1)


if __name__ == "__main__":
    main()
