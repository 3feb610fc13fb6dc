# The registry server. Build from the repository root:
#   docker build -f images/stowage.Dockerfile -t stowage .
# Without a Docker engine, `make images` builds the same image as an OCI layout with umoci.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stowage

# glibc and libgcc only, no shell, non-root (uid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/stowage /usr/local/bin/stowage
USER 65532:65532
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/stowage"]
CMD ["serve"]
