#!/usr/bin/env bash
# Runs every test: the workspace on the default backends, the Helm chart, then the HTTP API
# suite again on S3 with the blob cache shared in Redis, and on Azure (Azurite) and GCS
# (fake-gcs-server) as three replicas behind one round-robin address.
# Expects STOWAGE_TEST_S3_*, STOWAGE_TEST_REDIS, STOWAGE_TEST_AZURE_* and STOWAGE_TEST_GCS_* in the
# environment (make test runs this under `with-services`).
set -uo pipefail

# Every run selects from the whole workspace, so features unify as in `make build` and the
# second pass reuses the first one's binaries instead of rebuilding.
if command -v cargo-nextest >/dev/null; then
  run=(cargo nextest run --no-fail-fast --workspace)
  api_suite=(-E 'package(stowage) & binary(it)')
else
  run=(cargo test --no-fail-fast --workspace)
  api_suite=(--test it)
fi

status=0
"${run[@]}" || status=1
echo "=== the Helm chart, with Helm's Go SDK ==="
python3 -m unittest discover -s tests/chart -v || status=1
echo "=== the HTTP API suite on S3 (Garage), the blob cache shared in Redis ==="
STOWAGE_TEST_STORAGE=s3 STOWAGE_TEST_BLOB_CACHE=redis "${run[@]}" "${api_suite[@]}" || status=1
echo "=== the HTTP API suite on Azure (Azurite), three replicas round robin, the blob cache in Redis ==="
STOWAGE_TEST_STORAGE=azure STOWAGE_TEST_REPLICAS=3 STOWAGE_TEST_BLOB_CACHE=redis "${run[@]}" "${api_suite[@]}" || status=1
echo "=== the HTTP API suite on GCS (fake-gcs-server), three replicas round robin ==="
STOWAGE_TEST_STORAGE=gcs STOWAGE_TEST_REPLICAS=3 "${run[@]}" "${api_suite[@]}" || status=1
if [ -n "${KUBECONFIG:-}" ] && [ -n "${STOWAGE_E2E_IMAGE:-}" ]; then
  echo "=== the operator on the cluster in KUBECONFIG ==="
  make test-cluster || status=1
else
  echo "=== the cluster test was skipped: set KUBECONFIG and STOWAGE_E2E_IMAGE to run it ==="
fi
exit $status
