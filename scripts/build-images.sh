#!/usr/bin/env bash
# Builds the stowage and stowage-operator images as OCI image layouts, without a Docker engine:
# the binaries, the glibc libraries they link (as the distroless base of the Dockerfiles has),
# a passwd entry for the non-root user, the CA certificates that TLS clients (S3, the Kubernetes
# API) verify servers with, and the image config, assembled with umoci.
#
#   scripts/build-images.sh [release|debug] [output dir]     (default: release target/images)
#
# Each image lands in <output dir>/<name> tagged with the workspace version; push one with
#   skopeo copy oci:target/images/stowage:0.1.0 docker://<registry>/stowage:0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-release}"
out="${2:-target/images}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
command -v umoci >/dev/null || { echo "umoci is missing: scripts/test-deps.sh installs it" >&2; exit 1; }

# Debian's bundle, as in the distroless base: without it no https endpoint can be verified.
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || { echo "$ca_bundle is missing: install Debian's ca-certificates (scripts/test-deps.sh does)" >&2; exit 1; }

for binary in stowage stowage-operator; do
  [ -x "target/$profile/$binary" ] || { echo "target/$profile/$binary is missing: build it first (make images does)" >&2; exit 1; }
done

# build_image NAME BINARY PORT [CMD]
build_image() {
  local name="$1" binary="$2" port="$3" cmd="${4:-}"
  local layout="$out/$name" work
  work="$(mktemp -d)"
  rm -rf "$layout"
  mkdir -p "$out"
  umoci init --layout "$layout"
  umoci new --image "$layout:$version"
  umoci unpack --rootless --image "$layout:$version" "$work/bundle" >/dev/null
  local rootfs="$work/bundle/rootfs"
  install -D -m 0755 "target/$profile/$binary" "$rootfs/usr/local/bin/$binary"
  # The shared libraries the binary needs, where the loader looks for them.
  ldd "target/$profile/$binary" | grep -o '/[^ ]*' | while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done
  mkdir -p "$rootfs/etc" "$rootfs/tmp"
  install -D -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
  umoci repack --image "$layout:$version" "$work/bundle" >/dev/null
  local config=(--config.entrypoint "/usr/local/bin/$binary" --config.user 65532:65532
    --config.exposedports "$port/tcp" --config.workingdir /
    --config.label "org.opencontainers.image.title=$name"
    --config.label "org.opencontainers.image.version=$version"
    --config.label "org.opencontainers.image.licenses=Apache-2.0"
    --os linux --architecture amd64)
  [ -n "$cmd" ] && config+=(--config.cmd "$cmd")
  umoci config --image "$layout:$version" "${config[@]}"
  umoci gc --layout "$layout"
  rm -rf "$work"
  echo "built $layout:$version"
}

build_image stowage stowage 5000 serve
build_image stowage-operator stowage-operator 8080
