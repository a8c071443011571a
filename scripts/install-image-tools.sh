#!/usr/bin/env bash
# Installs what the image tiers need, from Debian (no Docker engine exists here, and none is needed):
#   buildah + debootstrap   build the images from Dockerfile.* on a local Debian base (scripts/build-images.sh)
#   runc                    runs a container from a built image (the tests' checks, the node's runtime)
#   containerd + CNI        the container runtime and pod network of the cluster tier's real node
# Idempotent: does nothing when every tool is already on PATH. Needs root (apt-get) on a fresh machine.
set -euo pipefail

PKGS=(buildah debootstrap runc containerd containernetworking-plugins)
need=()
for cmd in buildah debootstrap runc containerd; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
[[ -x /usr/lib/cni/bridge ]] || need+=(cni)
if ((${#need[@]} == 0)); then exit 0; fi

log() { printf '[install-image-tools] %s\n' "$*" >&2; }
log "missing: ${need[*]}; installing ${PKGS[*]}"
SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
t=$SECONDS
$SUDO apt-get update -q >&2
$SUDO apt-get install -y -q --no-install-recommends "${PKGS[@]}" >&2
log "installed in $((SECONDS - t))s"
