#!/usr/bin/env bash
# Builds the project's images from Dockerfile.operator / Dockerfile.trainer with buildah, without a Docker
# engine or a registry (see docs/images.md):
#   - the production base images (python:3.11-slim, nvidia/cuda) cannot be pulled here, so the Dockerfiles'
#     BASE argument is pointed at a local Debian bookworm with python3 (3.11), made once with debootstrap;
#   - the trainer gets torch from PyPI's default index (the PyTorch wheel index is not reachable here) and
#     only the `trainer` extra (the GPU-only extras are left out: there is no GPU to run them on).
# Images live in their own store under the cache ($FINETUNE_CACHE/containers, overlay driver), so builds are
# cached between runs: buildah's layer cache keys each layer by the Dockerfile's instructions and the files
# they copy, so the dependency layers are rebuilt only when the Dockerfile or requirements/lock.txt changes,
# and a code change rebuilds only the small layers with the project's packages.
#
#   scripts/build-images.sh operator [trainer]   builds localhost/finetune/<name>:test; prints one
#                                                "<name> <image id> <seconds>" line per image on stdout
#   FINETUNE_CACHE    cache root (default ~/.cache/finetune-operator)
#   IMAGE_TAG         tag of the built images (default test)
#   IMAGE_STORE_MAX_GB  above this size the store drops the layers no tagged image uses before a build
#                     (older builds; the next build may then redo a small stage); default 25
# Other scripts and the tests reach the store with the same flags: `buildah $(scripts/build-images.sh --store-flags) ...`.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FINETUNE_CACHE:-$HOME/.cache/finetune-operator}
STORE="$CACHE/containers"
STORE_FLAGS=(--root "$STORE/storage" --runroot "$STORE/run" --storage-driver overlay)
TAG=${IMAGE_TAG:-test}

# The local base: Debian bookworm, minimal, with python3 + venv + the CA bundle. Its tag carries a hash of
# everything that defines it, so a change makes a new one.
SUITE=bookworm
INCLUDE=python3,python3-venv,ca-certificates
MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BASE_KEY=$(printf '%s %s %s minbase' "$SUITE" "$INCLUDE" "$MIRROR" | sha256sum | cut -c1-12)
BASE_IMAGE="localhost/finetune/debian-python:$SUITE-$BASE_KEY"

log() { printf '[build-images] %s\n' "$*" >&2; }
bah() { buildah "${STORE_FLAGS[@]}" "$@"; }

if [[ "${1:-}" == --store-flags ]]; then echo "${STORE_FLAGS[*]}"; exit 0; fi
if [[ "${1:-}" == --base-image ]]; then echo "$BASE_IMAGE"; exit 0; fi
(($#)) || { echo "usage: $0 operator|trainer..." >&2; exit 2; }
for cmd in buildah debootstrap; do
  command -v "$cmd" >/dev/null || { log "$cmd missing: run scripts/install-image-tools.sh"; exit 1; }
done
mkdir -p "$STORE" "$CACHE/tmp"

ensure_base() {
  if bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  local t=$SECONDS work; work=$(mktemp -d "$CACHE/tmp/debootstrap.XXXXXX")
  log "making $BASE_IMAGE with debootstrap ($MIRROR)"
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$work/rootfs" "$MIRROR" >"$work/log" 2>&1 \
    || { tail -20 "$work/log" >&2; rm -rf "$work"; exit 1; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  local c m; c=$(bah from scratch); m=$(bah mount "$c")
  tar -C "$work/rootfs" --numeric-owner -cf - . | tar -C "$m" --numeric-owner -xf -
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$c"
  bah commit -q --rm "$c" "$BASE_IMAGE" >/dev/null
  rm -rf "$work"
  log "base image made in $((SECONDS - t))s"
}

# Build arguments that replace what cannot be reached here; the Dockerfile defaults are the production ones.
build_args() {
  case $1 in
    operator) echo "--build-arg BASE=$BASE_IMAGE" ;;
    trainer) echo "--build-arg BASE=$BASE_IMAGE --build-arg PYTHON=python3.11" \
                  "--build-arg TORCH_INDEX=https://pypi.org/simple --build-arg EXTRAS=trainer" ;;
    *) log "unknown image $1 (operator|trainer)"; exit 2 ;;
  esac
}

build() {
  local name=$1 t=$SECONDS
  # This machine reaches the package indexes through a proxy that only the host's CA bundle trusts: RUN steps
  # see the bundle and a pip.conf naming it (bind mounts: nothing of them stays in the image).
  local pipconf="$STORE/pip.conf"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$pipconf"
  log "building localhost/finetune/$name:$TAG from Dockerfile.$name"
  # shellcheck disable=SC2046
  bah bud --layers --isolation chroot --network host \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro -v "$pipconf:/etc/pip.conf:ro" \
    $(build_args "$name") -f "$REPO/Dockerfile.$name" -t "localhost/finetune/$name:$TAG" "$REPO" >&2
  local id; id=$(bah inspect --type image --format '{{.FromImageID}}' "localhost/finetune/$name:$TAG")
  log "$name built in $((SECONDS - t))s"
  echo "$name $id $((SECONDS - t))"
}

# Each change of the lock leaves a dependency layer of several GB behind: past a size, drop what no tagged
# image uses (buildah's dangling images, repeatedly, so whole old chains go).
prune_if_large() {
  local max=${IMAGE_STORE_MAX_GB:-25} gb
  # no store yet on a cold machine: du fails, and under pipefail + errexit that must not end the script
  gb=$(du -s --block-size=1G "$STORE/storage" 2>/dev/null | cut -f1 || true)
  if ((${gb:-0} > max)); then
    log "image store is ${gb} GB (> ${max}): removing images no tag uses"
    bah rmi --prune >/dev/null || true
  fi
}

prune_if_large
ensure_base
for name in "$@"; do build "$name"; done
