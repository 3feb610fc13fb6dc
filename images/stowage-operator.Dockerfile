# The operator. Build from the repository root:
#   docker build -f images/stowage-operator.Dockerfile -t stowage-operator .
# Without a Docker engine, `make images` builds the same image as an OCI layout with umoci.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stowage-operator --bin stowage-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/stowage-operator /usr/local/bin/stowage-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stowage-operator"]
