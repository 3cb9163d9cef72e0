#!/bin/sh
# Starts dockerd through docker:dind's `dind` wrapper (it prepares cgroups for nesting)
# with the arguments given (the socket, the group, the config file), then loads the
# preloaded images, so that the engine has the runtime image without any network.
# Stops dockerd, and waits for it, on TERM: the pod's server has removed its pool by then.
set -eu

dind dockerd "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT

tries=0
until docker version >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" || exit $?
    exit 1
  fi
  tries=$((tries + 1))
  if [ "$tries" -ge 240 ]; then
    echo "dind-runsc: dockerd did not answer within 120 s" >&2
    exit 1
  fi
  sleep 0.5
done

for archive in /opt/sandbox/preload/*.tar; do
  [ -e "$archive" ] || continue
  echo "dind-runsc: loading $archive" >&2
  docker load --quiet --input "$archive"
done

# wait returns early when the trap runs; loop until dockerd is really gone.
status=0
while kill -0 "$pid" 2>/dev/null; do
  status=0
  wait "$pid" || status=$?
done
exit "$status"
