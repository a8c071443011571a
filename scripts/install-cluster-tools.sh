#!/usr/bin/env bash
# Builds the "cluster" test tier's binaries from the Go module proxy, once, into a cache outside the clone:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, helm, the kubelet of the
#   tier's real node (tests/cluster/node.py; its containerd and runc come from Debian: install-image-tools.sh);
#   CoreDNS for the real node's pods (cluster DNS: the headless Service names of multi-node jobs);
#   and Kueue's controller (with its CRDs and webhook manifests) in a folder of its own, keyed by its version:
#   $ROOT/kueue-v<version>/.
# None of them ship in Debian or PyPI and no prebuilt download is reachable here, so we compile them
# (see shared/cluster-tier.md). Idempotent: a binary already in the bin dir is skipped; each one is built
# in a temp dir and renamed into place, so a half-built binary never shows up. Prints the bin dir last
# (stdout's last line); progress goes to stderr.
#
#   FINETUNE_CACHE   cache root (default ~/.cache/finetune-operator)
#   FORCE=1          rebuild everything
set -euo pipefail

K8S_VERSION=1.34.2      # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet
ETCD_VERSION=3.6.16
KWOK_VERSION=0.7.0      # 0.8.0 has no built-in stages when run standalone
HELM_VERSION=3.21.4
KUEUE_VERSION=0.17.0    # Kueue's controller manager + its CRDs and webhook manifests (tests/cluster/kueue.py)
COREDNS_BUILD=1.14.7-2  # CoreDNS version, -N: the plugin list below; the real node's cluster DNS (tests/cluster/node.py)

CACHE=${FINETUNE_CACHE:-$HOME/.cache/finetune-operator}
ROOT="$CACHE/k8s-v$K8S_VERSION"
BIN="$ROOT/bin"
STAGES="$ROOT/kwok-stages"
# Versions are in the bin dir's path (k8s) and in a stamp (the others), so a version bump rebuilds.
STAMP="etcd-v$ETCD_VERSION kwok-v$KWOK_VERSION helm-v$HELM_VERSION"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/pkg/mod" GOCACHE="$CACHE/go/cache"

log() { printf '[install-cluster-tools] %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go is not installed"; exit 1; }
mkdir -p "$BIN" "$CACHE/tmp"
if [[ "${FORCE:-0}" == 1 || "$(cat "$ROOT/versions" 2>/dev/null)" != "$STAMP" ]]; then
  if [[ -f "$ROOT/versions" ]]; then log "versions changed or FORCE=1: rebuilding etcd/kwok/helm"; fi
  rm -f "$BIN/etcd" "$BIN/kwok" "$BIN/helm"
  if [[ "${FORCE:-0}" == 1 ]]; then rm -f "$BIN"/*; fi
  echo "$STAMP" >"$ROOT/versions"
fi

WORK=$(mktemp -d "$CACHE/tmp/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start_all=$SECONDS

have() { [[ -x "$BIN/$1" ]]; }
# install_bins DIR NAME...: rename built binaries into the bin dir (same filesystem, so atomic).
install_bins() { local d=$1; shift; for b in "$@"; do chmod 0755 "$d/$b"; mv -f "$d/$b" "$BIN/$b"; done; }

# --- kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet -----------------------------
# k8s.io/kubernetes replaces its ~31 staging modules with ./staging/...; a wrapper module points each one at
# its published tag v0.<minor>.<patch> instead.
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
missing=(); for c in "${K8S_CMDS[@]}"; do have "$c" || missing+=("$c"); done
if ((${#missing[@]})); then
  t=$SECONDS; log "building ${missing[*]} v$K8S_VERSION"
  mkdir -p "$WORK/k8s/out" && cd "$WORK/k8s"
  go mod init k8sbuild >/dev/null 2>&1
  MOD=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  for m in $(sed -n 's|^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*|\1|p' "$MOD"); do
    go mod edit "-replace=$m=$m@v0.${K8S_VERSION#1.}"
  done
  grep '^godebug' "$MOD" >>go.mod || true
  pkgs=(); for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  go get "${pkgs[@]/%/@v$K8S_VERSION}" >&2
  minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  LD="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LD+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  go build -trimpath -ldflags "$LD" -o out/ "${pkgs[@]}"
  install_bins out "${missing[@]}"
  log "k8s binaries built in $((SECONDS - t))s"
fi

# --- etcd: server/v3 replaces its sibling modules, so build it from a wrapper module too -------------------
if ! have etcd; then
  t=$SECONDS; log "building etcd v$ETCD_VERSION"
  mkdir -p "$WORK/etcd/out" && cd "$WORK/etcd"
  go mod init etcdbuild >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION" -o out/etcd go.etcd.io/etcd/server/v3
  install_bins out etcd
  log "etcd built in $((SECONDS - t))s"
fi

# --- kwok (no replace directives: plain go install) --------------------------------------------------------
if ! have kwok; then
  t=$SECONDS; log "building kwok v$KWOK_VERSION"
  mkdir -p "$WORK/kwok"
  GOBIN="$WORK/kwok" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  install_bins "$WORK/kwok" kwok
  log "kwok built in $((SECONDS - t))s"
fi
# Stage files (pod ready/complete/delete, chaos), kept beside bin so tests need no module cache.
if [[ ! -f "$STAGES/.v$KWOK_VERSION" ]]; then
  src=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  rm -rf "$STAGES.new" && mkdir -p "$STAGES.new"
  (cd "$src/kustomize/stage" && find . -name '*.yaml' ! -name kustomization.yaml ! -path '*/testdata/*' \
     -exec cp --parents {} "$STAGES.new/" \;)
  chmod -R u+w "$STAGES.new" && touch "$STAGES.new/.v$KWOK_VERSION"
  rm -rf "$STAGES" && mv "$STAGES.new" "$STAGES"
fi

# --- helm ---------------------------------------------------------------------------------------------------
if ! have helm; then
  t=$SECONDS; log "building helm v$HELM_VERSION"
  mkdir -p "$WORK/helm"
  # Default capabilities for `helm template`/lint without --kube-version: the server version we run.
  LD="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    LD+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  GOBIN="$WORK/helm" go install -trimpath -ldflags "$LD" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  install_bins "$WORK/helm" helm
  log "helm built in $((SECONDS - t))s"
fi

# --- coredns: a main package with only the plugins the real node needs (kubernetes, forward, ...) -------------
# `go install github.com/coredns/coredns@v...` also works but compiles every plugin (cloud DNS providers and
# all); CoreDNS's documented way to choose plugins at build time is a main that sets dnsserver.Directives.
# Its own version stamp, so a bump rebuilds CoreDNS alone.
if [[ ! -x "$BIN/coredns" || "$(cat "$BIN/.coredns-version" 2>/dev/null)" != "$COREDNS_BUILD" ]]; then
  t=$SECONDS; log "building coredns v${COREDNS_BUILD%-*}"
  mkdir -p "$WORK/coredns" && cd "$WORK/coredns"
  go mod init corednsbuild >/dev/null 2>&1
  cat >main.go <<'GO'
// CoreDNS with the plugins a cluster's DNS uses: answer cluster.local from the API, forward the rest.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// the order of CoreDNS's plugin.cfg (the order a request passes the plugins)
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes", "forward"}
}

func main() { coremain.Run() }
GO
  go get "github.com/coredns/coredns@v${COREDNS_BUILD%-*}" >&2
  go mod tidy >&2
  go build -trimpath -ldflags "-s -w" -o out/coredns .
  install_bins out coredns
  echo "$COREDNS_BUILD" >"$BIN/.coredns-version"
  log "coredns built in $((SECONDS - t))s"
fi

# --- kueue (no replace directives: plain go install), keyed by version in its own folder ----------------------
# Its own folder, not the shared stamp: worktrees pinning other Kueue versions never rebuild each other's etcd/helm.
KUEUE="$ROOT/kueue-v$KUEUE_VERSION"
if [[ ! -x "$KUEUE/bin/kueue" || ! -f "$KUEUE/manifests/.complete" ]]; then
  t=$SECONDS; log "building kueue v$KUEUE_VERSION"
  mkdir -p "$WORK/kueue"
  GOBIN="$WORK/kueue" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=v$KUEUE_VERSION" "sigs.k8s.io/kueue/cmd/kueue@v$KUEUE_VERSION"
  src=$(go mod download -json "sigs.k8s.io/kueue@v$KUEUE_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  rm -rf "$KUEUE.new" && mkdir -p "$KUEUE.new/bin" "$KUEUE.new/manifests/crd"
  cp "$src"/config/components/crd/bases/*.yaml "$KUEUE.new/manifests/crd/"
  cp "$src/config/components/webhook/manifests.yaml" "$KUEUE.new/manifests/webhooks.yaml"
  chmod -R u+w "$KUEUE.new" && install -m 0755 "$WORK/kueue/kueue" "$KUEUE.new/bin/kueue"
  touch "$KUEUE.new/manifests/.complete"
  rm -rf "$KUEUE" && mv "$KUEUE.new" "$KUEUE"
  log "kueue built in $((SECONDS - t))s"
fi

log "done in $((SECONDS - start_all))s"
echo "$BIN"
