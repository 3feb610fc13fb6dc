#!/usr/bin/env bash
# Runs every test: the workspace on the default backends, the Helm chart, then the HTTP API
# suite again on S3.
# Expects STOWAGE_TEST_S3_* in the environment (make test runs this under `with-garage`).
set -uo pipefail

if command -v cargo-nextest >/dev/null; then
  run=(cargo nextest run --no-fail-fast)
else
  run=(cargo test --no-fail-fast)
fi

status=0
"${run[@]}" --workspace || status=1
echo "=== the Helm chart, with Helm's Go SDK ==="
python3 -m unittest discover -s tests/chart -v || status=1
echo "=== the HTTP API suite on S3 (Garage) ==="
STOWAGE_TEST_STORAGE=s3 "${run[@]}" -p stowage --test it || status=1
exit $status
