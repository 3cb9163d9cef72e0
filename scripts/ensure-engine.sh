#!/usr/bin/env bash
# Make sure a Docker engine answers, with gVisor's runsc registered as a runtime.
#
# On a machine that already runs an engine (a developer laptop, a CI runner with
# Docker) this only checks it answers. On a bare Debian machine where we are root it
# installs docker.io and runsc from Debian, registers runsc, and starts dockerd.
set -euo pipefail

log() { printf 'ensure-engine: %s\n' "$*" >&2; }

engine_up() { docker info >/dev/null 2>&1; }

write_daemon_json() {
  mkdir -p /etc/docker
  cat >/etc/docker/daemon.json <<JSON
{
  "runtimes": {
    "runsc": {
      "path": "$(command -v runsc)",
      "runtimeArgs": ["--platform=ptrace", "--network=none"]
    }
  }
}
JSON
}

if engine_up; then
  if [ "$(id -u)" = 0 ] && [ -f /etc/docker/daemon.json ] && command -v runsc >/dev/null 2>&1 \
     && grep -q -- "--oci-seccomp" /etc/docker/daemon.json && [ -s /var/run/docker.pid ]; then
    write_daemon_json
    kill -HUP "$(cat /var/run/docker.pid)"  # dockerd reloads its runtimes on SIGHUP
    log "runsc configuration updated and reloaded"
  fi
  log "Docker engine already answers"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "no Docker engine answers and we are not root: start one (dockerd) and retry"
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v runsc >/dev/null 2>&1; then
  log "installing docker.io and runsc from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q docker.io runsc >/dev/null
fi

# runsc: ptrace platform (no KVM here) and no network stack of its own. Not
# --oci-seccomp: with Debian's runsc (2022-12) it makes every thread creation fail.
if [ ! -s /etc/docker/daemon.json ] || ! grep -q runsc /etc/docker/daemon.json \
   || grep -q -- "--oci-seccomp" /etc/docker/daemon.json; then
  write_daemon_json
fi

log "starting dockerd"
mkdir -p /var/log
nohup dockerd >/var/log/dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if engine_up; then
    log "Docker engine is up"
    exit 0
  fi
  sleep 0.5
done
log "dockerd did not come up; see /var/log/dockerd.log"
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
