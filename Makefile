# Stowage entry points. `make run` serves the registry; `make test` installs what the tests
# drive and runs every test.

CARGO ?= cargo
.PHONY: run build test test-deps unit lint fmt bench clean generate

## Serve the registry on the embedded default: filesystem storage in ./stowage-data, port 5000.
run:
	$(CARGO) run --release -p stowage -- serve

build:
	$(CARGO) build --workspace --all-targets

## Install test tools, check formatting and lints, then run every test against a Garage S3
## server that the run starts and stops.
test: test-deps lint build
	./target/debug/with-garage ./scripts/run-tests.sh

## skopeo, docker-registry (CNCF Distribution), haproxy, Garage and the oras SDK, each
## installed only when missing.
test-deps:
	./scripts/test-deps.sh

## Regenerate the CRD in crds/ from operator/src/crd.rs (the tests fail when it is stale).
generate:
	$(CARGO) run -q -p stowage-operator --bin crdgen crd > crds/registries.stowage.dev.yaml

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Push/pull throughput and peak server memory for a 1 GiB blob (release build).
bench:
	$(CARGO) build --release -p stowage
	$(CARGO) bench -p stowage-e2e

clean:
	$(CARGO) clean
	rm -rf stowage-data
