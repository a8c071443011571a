#!/usr/bin/env bash
# Installs Debian's `prometheus` package, for `prometheus` and `promtool` (rule checks and rule unit tests).
# Tests start their own server on loopback with a temp config, so the packaged service must not start at
# install time nor stay running/enabled. Idempotent: does nothing when both binaries exist and the service
# is not running. Needs root (or sudo) and Debian's package lists (apt-get update runs once if needed).
set -euo pipefail

log() { printf '[install-prometheus] %s\n' "$*" >&2; }
SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"

stop_service() {
  # Stop and disable the packaged service, under whichever init system is present.
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    if [[ -x /etc/init.d/prometheus ]]; then $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true; fi
    if command -v update-rc.d >/dev/null; then $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true; fi
    # systemd not running (container): drop the enablement link the package made, for a later boot.
    $SUDO rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service
  fi
  # Last resort: a daemon started by the package runs as user `prometheus`; ours run as the test user.
  if id prometheus >/dev/null 2>&1; then
    for pid in $(pgrep -u prometheus -x prometheus || true); do
      log "stopping packaged prometheus (pid $pid)"; $SUDO kill "$pid" || true
    done
  fi
}

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  stop_service
  log "already installed: $(prometheus --version 2>&1 | head -1)"
  exit 0
fi

# Keep the package's postinst from starting the daemon: policy-rc.d exit 101 = "action forbidden".
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e $POLICY ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null && $SUDO chmod 0755 "$POLICY"
  trap '$SUDO rm -f "$POLICY"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
APT=($SUDO apt-get -o DPkg::Lock::Timeout=600 -q)
if ! apt-cache show prometheus >/dev/null 2>&1; then
  log "apt-get update"; "${APT[@]}" update >&2
fi
log "apt-get install prometheus"
if ! "${APT[@]}" install -y --no-install-recommends prometheus >&2; then
  log "install failed; refreshing package lists once and retrying"
  "${APT[@]}" update >&2
  "${APT[@]}" install -y --no-install-recommends prometheus >&2
fi
stop_service
log "installed: $(prometheus --version 2>&1 | head -1); $(command -v promtool)"
