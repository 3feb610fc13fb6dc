# Stowage entry points. `make run` serves the registry; `make test` installs what the tests
# drive and runs every test.

CARGO ?= cargo
.PHONY: run build test test-cluster test-deps unit lint fmt bench clean generate images

## Serve the registry on the embedded default: filesystem storage in ./stowage-data, port 5000,
## with the web interface at http://localhost:5000/ui/.
run:
	$(CARGO) run --release -p stowage -- serve --ui true

build:
	$(CARGO) build --workspace --all-targets

## Install test tools, check formatting and lints, then run every test against a Garage S3
## server that the run starts and stops.
test: test-deps lint build
	./target/debug/with-services ./scripts/run-tests.sh

## The operator on a real cluster (kind is enough): KUBECONFIG names the cluster, and
## STOWAGE_E2E_IMAGE a server image it can pull (`make images`, then push it where the cluster
## pulls from). `make test` reports this test as ignored unless both are set.
test-cluster:
	@test -n "$$KUBECONFIG" || { echo "set KUBECONFIG to the cluster to test on" >&2; exit 2; }
	@test -n "$$STOWAGE_E2E_IMAGE" || { echo "set STOWAGE_E2E_IMAGE to a server image the cluster can pull" >&2; exit 2; }
	$(CARGO) test -p stowage-operator --test cluster -- --ignored --nocapture

## skopeo, docker-registry (CNCF Distribution), haproxy, umoci, Garage, the oras SDK and Helm's
## Go SDK for Python, each installed only when missing.
test-deps:
	./scripts/test-deps.sh

## The stowage and stowage-operator images as OCI layouts in target/images, without a Docker
## engine (umoci); images/*.Dockerfile build the same images where there is one.
images:
	$(CARGO) build --release -p stowage --bin stowage -p stowage-operator --bin stowage-operator
	./scripts/build-images.sh release target/images

## Regenerate the CRD in crds/ and the chart's CRD and RBAC rules from the operator's types
## (the tests fail when they are stale).
generate:
	$(CARGO) run -q -p stowage-operator --bin crdgen crd > crds/registries.stowage.dev.yaml
	cp crds/registries.stowage.dev.yaml charts/stowage-operator/files/
	$(CARGO) run -q -p stowage-operator --bin crdgen rbac > charts/stowage-operator/files/rbac-rules.yaml
	$(CARGO) run -q -p stowage-operator --bin crdgen leader-election-rbac > charts/stowage-operator/files/leader-election-rules.yaml

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/check-layers.py server operator

fmt:
	$(CARGO) fmt --all

## Push/pull throughput and peak server memory for a 1 GiB blob (release build).
bench:
	$(CARGO) build --release -p stowage
	$(CARGO) bench -p stowage-e2e

clean:
	$(CARGO) clean
	rm -rf stowage-data
