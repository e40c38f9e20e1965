# shellcheck shell=bash
# shellcheck shell=bash
# The Docker engine and the Debian base image every locally built image starts FROM.
# Sourced after dev/lib/common.sh (log, die, require_command, RTDP_ROOT, RTDP_CACHE), never run.
#
# Machines here reach no container registry, so nothing is pulled: the engine comes from apt
# (Debian's docker.io) and the base image from debootstrap + `docker import`.

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/rtdp-dockerd.log}
DOCKER_DAEMON_JSON=${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
# Where the capability-filtering runtime wrapper (dev/kind/runc-capfilter) is installed: outside
# the clone, since dockerd keeps using it after a clone is deleted.
CAPFILTER_RUNTIME_NAME=rtdp-runc
CAPFILTER_RUNTIME_PATH=/usr/local/libexec/rtdp/runc-capfilter

DEBIAN_RELEASE=${DEBIAN_RELEASE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_BASE_IMAGE="rtdp.local/debian:$DEBIAN_RELEASE"
# Bump when the way the rootfs is made changes, so every machine re-imports it.
DEBIAN_BASE_RECIPE=1

# apt_install PACKAGE...: installs what is missing; refreshes the package lists once if needed.
apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}"
  require_command apt-get "this needs a Debian/Ubuntu host; install ${missing[*]} by hand"
  log "installing with apt: ${missing[*]}"
  # A fresh machine may have no package lists yet: try as is, then once more after an update.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    {
      apt-get update -q >/dev/null 2>&1 || log "apt-get update reported errors (continuing)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    } || die "apt-get install ${missing[*]} failed (see apt's output above)"
}

# capbnd_incomplete: true when this host's capability bounding set lacks capabilities the
# kernel knows (seen on sandboxed CI hosts: no CAP_SYS_RESOURCE). Then `--privileged`
# containers need the runtime wrapper; a normal laptop never does.
capbnd_incomplete() {
  local last bounding
  last=$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null) || return 1
  bounding=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
  (((0x$bounding & ((1 << (last + 1)) - 1)) != ((1 << (last + 1)) - 1)))
}

docker_ready() {
  docker info >/dev/null 2>&1
}

# docker_default_runtime: the runtime dockerd gives containers that name none.
docker_default_runtime() {
  docker info --format '{{.DefaultRuntime}}' 2>/dev/null
}

# docker_can_run_privileged: false when --privileged containers (kind nodes) would fail on this
# host because the wrapper is needed but dockerd does not use it.
docker_can_run_privileged() {
  ! capbnd_incomplete || [ "$(docker_default_runtime)" = "$CAPFILTER_RUNTIME_NAME" ]
}

_install_capfilter_runtime() {
  require_command jq "apt-get install jq (the runtime wrapper edits OCI JSON with it)"
  mkdir -p "$(dirname "$CAPFILTER_RUNTIME_PATH")"
  install -m 0755 "$RTDP_ROOT/dev/kind/runc-capfilter" "$CAPFILTER_RUNTIME_PATH.new"
  mv -f "$CAPFILTER_RUNTIME_PATH.new" "$CAPFILTER_RUNTIME_PATH"
}

# _write_daemon_json: registers the wrapper as the default runtime, keeping any other settings
# already in daemon.json. Nothing else is changed (the default bridge stays: `--bridge=none`
# on a shared host deletes docker0 under everyone else's containers).
_write_daemon_json() {
  local current='{}'
  [ -s "$DOCKER_DAEMON_JSON" ] && current=$(cat "$DOCKER_DAEMON_JSON")
  mkdir -p "$(dirname "$DOCKER_DAEMON_JSON")"
  jq --arg name "$CAPFILTER_RUNTIME_NAME" --arg path "$CAPFILTER_RUNTIME_PATH" \
    '.runtimes[$name] = {path: $path} | ."default-runtime" = $name' <<<"$current" >"$DOCKER_DAEMON_JSON.tmp" ||
    die "$DOCKER_DAEMON_JSON is not valid JSON; fix or remove it"
  mv -f "$DOCKER_DAEMON_JSON.tmp" "$DOCKER_DAEMON_JSON"
}

# ensure_docker_engine: makes `docker info` succeed, installing and starting dockerd when needed.
# Idempotent: a running engine is left alone (never restarted: others' containers live in it).
ensure_docker_engine() {
  if docker_ready; then
    # Keep an installed wrapper current: dockerd execs it afresh for every container, so a fix
    # takes effect without restarting the engine (rename: a running copy is never rewritten).
    if capbnd_incomplete && [ "$(docker_default_runtime)" = "$CAPFILTER_RUNTIME_NAME" ] && [ -w "$CAPFILTER_RUNTIME_PATH" ] &&
      ! cmp -s "$RTDP_ROOT/dev/kind/runc-capfilter" "$CAPFILTER_RUNTIME_PATH"; then
      _install_capfilter_runtime
      log "updated the runtime wrapper $CAPFILTER_RUNTIME_PATH"
    fi
    if ! docker_can_run_privileged; then
      log "warning: this host's capability bounding set is incomplete (CapBnd $(awk '/^CapBnd:/ { print $2 }' /proc/self/status)) and the running dockerd's default runtime is '$(docker_default_runtime)', not '$CAPFILTER_RUNTIME_NAME': --privileged containers (kind nodes) will fail with 'unable to apply caps'. Fix: stop dockerd, then run dev/kind-cluster up (or source dev/lib/docker.sh and call ensure_docker_engine) to restart it with the wrapper."
    fi
    return 0
  fi
  case "${DOCKER_HOST:-unix:///var/run/docker.sock}" in
    unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
    *) die "DOCKER_HOST=$DOCKER_HOST does not answer ('docker info' fails); start that engine or unset DOCKER_HOST" ;;
  esac
  if [ "$(id -u)" -ne 0 ]; then
    pgrep -x dockerd >/dev/null 2>&1 &&
      die "dockerd runs but 'docker info' fails for you ($(docker info 2>&1 | tail -n 1)); add yourself to the docker group or use sudo"
    die "the Docker engine is not running and starting it needs root: sudo dockerd (or: sudo systemctl start docker)"
  fi

  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  command -v docker >/dev/null 2>&1 || apt_install docker.io
  if capbnd_incomplete; then
    apt_install jq
    _install_capfilter_runtime
    _write_daemon_json
    log "capability bounding set incomplete: dockerd's default runtime is the wrapper $CAPFILTER_RUNTIME_PATH"
  fi

  # A dockerd that is still starting (or hung) must not get a twin fighting over its socket.
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the engine outlives this shell and its Ctrl-C; it is shared, so nothing stops it.
    setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  else
    log "dockerd is running but not answering yet; waiting for it"
  fi
  local deadline=$((SECONDS + ${DOCKERD_START_TIMEOUT:-90}))
  until docker_ready; do
    if ! pgrep -x dockerd >/dev/null 2>&1; then
      tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || true
      die "dockerd exited during start-up (last lines of $DOCKERD_LOG above)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || true
      die "dockerd did not answer 'docker info' within ${DOCKERD_START_TIMEOUT:-90}s (last lines of $DOCKERD_LOG above)"
    fi
    sleep 1
  done
  log "Docker engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null), default runtime $(docker_default_runtime))"
  docker_can_run_privileged ||
    die "dockerd is up but its default runtime is '$(docker_default_runtime)', not '$CAPFILTER_RUNTIME_NAME' (daemon flags override $DOCKER_DAEMON_JSON?)"
}

# _build_debian_rootfs TAR: debootstrap minbase into a scratch dir, tidied like Debian's official
# images, packed as TAR (kept in the cache: re-importing it after a Docker wipe takes seconds).
_build_debian_rootfs() {
  local tar=$1 root
  root=$(mktemp -d "$RTDP_CACHE/debian-rootfs.XXXXXX")
  log "debootstrap --variant=minbase $DEBIAN_RELEASE from $DEBIAN_MIRROR (~30 s)"
  debootstrap --variant=minbase "$DEBIAN_RELEASE" "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2
    rm -rf "$root"
    die "debootstrap failed (see above; full log $root.log)"
  }
  # Updates and security fixes, so `apt-get upgrade` in a derived image means something.
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $DEBIAN_MIRROR $DEBIAN_RELEASE main
deb $DEBIAN_MIRROR $DEBIAN_RELEASE-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security $DEBIAN_RELEASE-security main
SOURCES
  # As in Debian's Docker images: no service starts during `apt-get install` in a build.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/log/*.log
  tar --numeric-owner --xattrs -C "$root" -cf "$tar.partial" . || die "packing the Debian rootfs failed"
  mv -f "$tar.partial" "$tar"
  rm -rf "$root" "$root.log"
}

_import_debian_base_image() {
  local dir=$1 tar=$1/rootfs.tar
  docker image inspect "$DEBIAN_BASE_IMAGE" >/dev/null 2>&1 &&
    [ "$(docker image inspect -f '{{ index .Config.Labels "dev.rtdp.recipe" }}' "$DEBIAN_BASE_IMAGE")" = "$DEBIAN_BASE_RECIPE" ] &&
    return 0
  [ -s "$tar" ] || _build_debian_rootfs "$tar"
  local debian_version
  debian_version=$(tar -xOf "$tar" ./etc/debian_version 2>/dev/null || echo unknown)
  log "importing $DEBIAN_BASE_IMAGE (Debian $debian_version)"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL dev.rtdp.debian.release=$DEBIAN_RELEASE dev.rtdp.debian.version=$debian_version dev.rtdp.debian.variant=minbase dev.rtdp.recipe=$DEBIAN_BASE_RECIPE" \
    "$tar" "$DEBIAN_BASE_IMAGE" >/dev/null || die "docker import of $tar failed"
  # A second, exact tag (e.g. rtdp.local/debian:12.10) for whoever wants to pin the point release.
  docker tag "$DEBIAN_BASE_IMAGE" "rtdp.local/debian:$debian_version"
}

# ensure_debian_base_image: rtdp.local/debian:<release> in the local image store (skipped when
# present with the current recipe label). The rootfs tar is cached in $RTDP_CACHE/debian-<release>.
ensure_debian_base_image() {
  local dir="$RTDP_CACHE/debian-$DEBIAN_RELEASE-r$DEBIAN_BASE_RECIPE"
  if docker image inspect "$DEBIAN_BASE_IMAGE" >/dev/null 2>&1 &&
    [ "$(docker image inspect -f '{{ index .Config.Labels "dev.rtdp.recipe" }}' "$DEBIAN_BASE_IMAGE")" = "$DEBIAN_BASE_RECIPE" ]; then
    return 0
  fi
  [ -s "$dir/rootfs.tar" ] || { [ "$(id -u)" -eq 0 ] || die "building the Debian base image needs root (debootstrap)"; }
  command -v debootstrap >/dev/null 2>&1 || [ -s "$dir/rootfs.tar" ] || apt_install debootstrap
  mkdir -p "$dir"
  (
    flock 9
    _import_debian_base_image "$dir"
  ) 9>"$dir.lock"
}
