# shellcheck shell=bash
# shellcheck shell=bash
# A kind cluster built entirely from local parts (dev/kind-cluster). Sourced after
# dev/lib/common.sh, dev/lib/kube.sh (etcd and helm builders) and dev/lib/docker.sh, never run.
#
# No container registry is reachable on the project's machines, so `kind build node-image`
# (which fetches pause, etcd, CoreDNS, kindnetd and local-path images) cannot run. Instead:
#   1. binaries from the Go module proxy into ${RTDP_CACHE}/<name>-<version>/ (build_once):
#      kind, the node runtime (containerd, runc, crictl, CNI plugins), the Kubernetes binaries,
#      etcd, CoreDNS, local-path-provisioner, pause (gcc -static);
#   2. a base image (kind's images/base recipe, dev/kind/base.Dockerfile);
#   3. component images FROM rtdp.local/debian, tagged exactly as kubeadm and kind ask;
#   4. the node image: kind's buildImage() steps done by hand (binaries, /kind/version,
#      manifests, images imported into the node's containerd, `docker commit`).
# Images are tagged with a key over every input (versions, the image files of dev/kind/, the Debian base image
# id), so a warm machine rebuilds nothing and a changed input rebuilds only the images.

KIND_CLUSTER_NAME=${KIND_CLUSTER_NAME:-rtdp}
KIND_STATE="$RTDP_STATE/kind"
KIND_KUBECONFIG="$KIND_STATE/kubeconfig"
KIND_CONFIG="$RTDP_ROOT/kind-config.yaml"

KIND_DIR="$RTDP_CACHE/kind-$KIND_VERSION"
KIND_RUNTIME_DIR="$RTDP_CACHE/kind-runtime-containerd-$KIND_CONTAINERD_VERSION-runc-$KIND_RUNC_VERSION-crictl-$KIND_CRICTL_VERSION-cni-$KIND_CNI_PLUGINS_VERSION"
KIND_KUBE_DIR="$RTDP_CACHE/kind-kubernetes-$KUBERNETES_VERSION"
KIND_ETCD_DIR="$RTDP_CACHE/etcd-$KIND_ETCD_VERSION"
COREDNS_DIR="$RTDP_CACHE/coredns-$KIND_COREDNS_VERSION"
LOCAL_PATH_DIR="$RTDP_CACHE/local-path-provisioner-$KIND_LOCAL_PATH_PROVISIONER_VERSION"
PAUSE_DIR="$RTDP_CACHE/pause-$KIND_PAUSE_VERSION"
# Bump when the image recipe in this file changes in a way dev/kind/* does not show.
KIND_IMAGE_RECIPE=1

# Binaries the node needs on its own (kind's buildImage puts exactly these in /usr/bin) and the
# control-plane/kube-proxy binaries that go into component images.
KIND_NODE_BINARIES=(kubeadm kubelet kubectl)
KIND_IMAGE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy)

# timed LABEL COMMAND...: runs COMMAND and logs how long it took (build timings for the docs).
timed() {
  local label=$1 start=$SECONDS
  shift
  "$@"
  log "$label: $((SECONDS - start))s"
}

# go_module_dir MODULE@VERSION: the module's source directory in the Go module cache.
go_module_dir() {
  local dir
  dir=$(cd "$RTDP_CACHE" && GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir" ] || die "could not download $1 from the Go module proxy"
  echo "$dir"
}

# --- 1. binaries -------------------------------------------------------------------------

# kind, and the parts of its source the node image recipe needs (images/base/files, the default
# CNI and storage manifests), copied out of the module cache so `go clean -modcache` is harmless.
_build_kind() {
  log "building kind $KIND_VERSION (cached in $KIND_DIR)"
  local src
  src=$(go_module_dir "sigs.k8s.io/kind@$KIND_VERSION")
  rm -rf "${KIND_DIR:?}/recipe" "${KIND_DIR:?}/bin"
  mkdir -p "$KIND_DIR/recipe/manifests"
  cp -r "$src/images/base/files" "$KIND_DIR/recipe/files"
  chmod -R u+w "$KIND_DIR/recipe"
  local name
  for name in cni storage; do
    _kind_manifest "$src/pkg/build/nodeimage/const_$name.go" >"$KIND_DIR/recipe/manifests/default-$name.yaml" ||
      die "could not extract the default $name manifest from kind $KIND_VERSION's source"
  done
  GOBIN="$KIND_DIR/bin.partial" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION" ||
    die "building kind $KIND_VERSION failed (see the go output above)"
  mv "$KIND_DIR/bin.partial" "$KIND_DIR/bin"
}

# _kind_manifest CONST_FILE: the manifest held in a Go raw-string constant of kind's nodeimage
# package, with its `+ image +` concatenations resolved from the file's string constants.
_kind_manifest() {
  perl -0777 -ne '
    my %c; $c{$1} = $2 while /const (\w+)\s*=\s*"([^"]*)"/g;
    s/`\s*\+\s*(\w+)\s*\+\s*`/exists $c{$1} ? $c{$1} : die "unknown constant $1\n"/ge;
    /const default\w+Manifest\s*=\s*`\n?(.*?)`/s or die "no manifest constant\n";
    print $1;' "$1"
}

# kind_manifest_images MANIFEST: the images a manifest names (for the preload list).
_manifest_images() {
  sed -n 's/^[ -]*image: *//p; s/^ *- \(docker\.io\/[^ ]*\)$/\1/p' "$1" | sort -u
}

# The node's container runtime at the versions kind pins. runc needs cgo + libseccomp (seccomp
# filters for pods); the rest are static.
_build_runtime() {
  local bin="$KIND_RUNTIME_DIR/bin.partial"
  log "building containerd $KIND_CONTAINERD_VERSION, runc $KIND_RUNC_VERSION, crictl $KIND_CRICTL_VERSION, CNI plugins $KIND_CNI_PLUGINS_VERSION (cold: ~3 min; cached in $KIND_RUNTIME_DIR)"
  rm -rf "$bin" && mkdir -p "$bin/bin" "$bin/sbin" "$bin/cni"
  local containerd=github.com/containerd/containerd/v2
  CGO_ENABLED=0 GOBIN="$bin/bin" GOFLAGS=-mod=mod go install -trimpath -tags "no_aufs no_zfs no_btrfs no_devmapper" \
    -ldflags "-s -w -X $containerd/version.Version=$KIND_CONTAINERD_VERSION -X $containerd/version.Package=$containerd" \
    "$containerd/cmd/containerd@$KIND_CONTAINERD_VERSION" "$containerd/cmd/ctr@$KIND_CONTAINERD_VERSION" \
    "$containerd/cmd/containerd-shim-runc-v2@$KIND_CONTAINERD_VERSION" ||
    die "building containerd $KIND_CONTAINERD_VERSION failed (see the go output above)"
  CGO_ENABLED=1 GOBIN="$bin/sbin" GOFLAGS=-mod=mod go install -trimpath -tags "seccomp urfave_cli_no_docs" -ldflags "-s -w" \
    "github.com/opencontainers/runc@$KIND_RUNC_VERSION" ||
    die "building runc $KIND_RUNC_VERSION failed (it needs libseccomp-dev: apt-get install libseccomp-dev)"
  CGO_ENABLED=0 GOBIN="$bin/bin" GOFLAGS=-mod=mod go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$KIND_CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$KIND_CRICTL_VERSION" ||
    die "building crictl $KIND_CRICTL_VERSION failed (see the go output above)"
  local plugins=github.com/containernetworking/plugins
  CGO_ENABLED=0 GOBIN="$bin/cni" GOFLAGS=-mod=mod go install -trimpath \
    -ldflags "-s -w -X $plugins/pkg/utils/buildversion.BuildVersion=$KIND_CNI_PLUGINS_VERSION" \
    "$plugins/plugins/ipam/host-local@$KIND_CNI_PLUGINS_VERSION" "$plugins/plugins/main/loopback@$KIND_CNI_PLUGINS_VERSION" \
    "$plugins/plugins/main/ptp@$KIND_CNI_PLUGINS_VERSION" "$plugins/plugins/meta/portmap@$KIND_CNI_PLUGINS_VERSION" ||
    die "building the CNI plugins $KIND_CNI_PLUGINS_VERSION failed (see the go output above)"
  rm -rf "${KIND_RUNTIME_DIR:?}/bin" && mv "$bin" "$KIND_RUNTIME_DIR/bin"
}

# dev/lib/kube.sh's wrapper module and flags, so the shared Go build cache makes this cheap
# after `dev/stack build`. A separate directory: the local stack's kubernetes-<version>/ stays
# exactly what dev/stack builds.
_build_kind_kubernetes() {
  log "building ${KIND_NODE_BINARIES[*]} ${KIND_IMAGE_BINARIES[*]} $KUBERNETES_VERSION (cold: 10-20 min on 2 cores, ~1-2 min after dev/stack build; cached in $KIND_KUBE_DIR)"
  build_kubernetes_commands "$KIND_KUBE_DIR" "${KIND_NODE_BINARIES[@]}" "${KIND_IMAGE_BINARIES[@]}"
}

_build_coredns() {
  log "building CoreDNS $KIND_COREDNS_VERSION (cold: ~3 min; cached in $COREDNS_DIR)"
  rm -rf "$COREDNS_DIR/bin.partial"
  CGO_ENABLED=0 GOBIN="$COREDNS_DIR/bin.partial" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" \
    "github.com/coredns/coredns@$KIND_COREDNS_VERSION" ||
    die "building CoreDNS $KIND_COREDNS_VERSION failed (see the go output above)"
  rm -rf "${COREDNS_DIR:?}/bin" && mv "$COREDNS_DIR/bin.partial" "$COREDNS_DIR/bin"
}

_build_local_path_provisioner() {
  log "building local-path-provisioner $KIND_LOCAL_PATH_PROVISIONER_VERSION (cold: ~2 min; cached in $LOCAL_PATH_DIR)"
  rm -rf "$LOCAL_PATH_DIR/bin.partial"
  CGO_ENABLED=0 GOBIN="$LOCAL_PATH_DIR/bin.partial" GOFLAGS=-mod=mod go install -trimpath \
    -ldflags "-s -w -X main.VERSION=$KIND_LOCAL_PATH_PROVISIONER_VERSION" \
    "github.com/rancher/local-path-provisioner@$KIND_LOCAL_PATH_PROVISIONER_VERSION" ||
    die "building local-path-provisioner $KIND_LOCAL_PATH_PROVISIONER_VERSION failed (see the go output above)"
  rm -rf "${LOCAL_PATH_DIR:?}/bin" && mv "$LOCAL_PATH_DIR/bin.partial" "$LOCAL_PATH_DIR/bin"
}

# pause.c ships in the k8s.io/kubernetes module (build/pause/linux); upstream compiles it the same way.
_build_pause() {
  require_command gcc "apt-get install gcc libc6-dev"
  log "building pause $KIND_PAUSE_VERSION (cached in $PAUSE_DIR)"
  local src
  src=$(go_module_dir "k8s.io/kubernetes@$KUBERNETES_VERSION")
  mkdir -p "$PAUSE_DIR/bin"
  gcc -Os -Wall -Werror -static -DVERSION="v$KIND_PAUSE_VERSION-rtdp" -o "$PAUSE_DIR/bin/pause.partial" \
    "$src/build/pause/linux/pause.c" || die "compiling pause failed (static linking needs libc6-dev)"
  mv "$PAUSE_DIR/bin/pause.partial" "$PAUSE_DIR/bin/pause"
}

# etcd through dev/lib/kube.sh's own wrapper (dev/kube/etcd/main.go), at the version kubeadm
# pins rather than the local stack's ETCD_VERSION, in its own etcd-<version> directory.
_build_kind_etcd() {
  (
    # shellcheck disable=SC2034 # read by _build_etcd (dev/lib/kube.sh)
    ETCD_VERSION=$KIND_ETCD_VERSION
    ETCD_DIR=$KIND_ETCD_DIR
    build_once "$ETCD_DIR" "$ETCD_DIR/bin/etcd" _build_etcd
  )
}

kind_build_binaries() {
  if ! [ -e "$KIND_DIR/bin/kind" ] || ! [ -e "$KIND_RUNTIME_DIR/bin/sbin/runc" ] || ! [ -e "$KIND_KUBE_DIR/bin/kubectl" ] ||
    ! [ -e "$KIND_ETCD_DIR/bin/etcd" ] || ! [ -e "$COREDNS_DIR/bin/coredns" ] ||
    ! [ -e "$LOCAL_PATH_DIR/bin/local-path-provisioner" ] || ! [ -e "$PAUSE_DIR/bin/pause" ] || ! [ -e "$HELM_DIR/bin/helm" ]; then
    require_command go "install Go 1.24+ (https://go.dev/doc/install) and put it on PATH"
    require_command perl "apt-get install perl"
  fi
  if ! [ -e "$KIND_RUNTIME_DIR/bin/sbin/runc" ]; then
    # runc's seccomp support links against libseccomp; Debian ships its headers separately.
    [ -e /usr/include/seccomp.h ] || apt_install libseccomp-dev pkg-config
  fi
  [ -e "$KIND_DIR/bin/kind" ] || timed "kind binary" build_once "$KIND_DIR" "$KIND_DIR/bin/kind" _build_kind
  [ -e "$KIND_RUNTIME_DIR/bin/sbin/runc" ] ||
    timed "runtime bundle" build_once "$KIND_RUNTIME_DIR" "$KIND_RUNTIME_DIR/bin/sbin/runc" _build_runtime
  [ -e "$KIND_KUBE_DIR/bin/kubectl" ] ||
    timed "Kubernetes binaries" build_once "$KIND_KUBE_DIR" "$KIND_KUBE_DIR/bin/kubectl" _build_kind_kubernetes
  [ -e "$KIND_ETCD_DIR/bin/etcd" ] || timed "etcd" _build_kind_etcd
  [ -e "$COREDNS_DIR/bin/coredns" ] || timed "CoreDNS" build_once "$COREDNS_DIR" "$COREDNS_DIR/bin/coredns" _build_coredns
  [ -e "$LOCAL_PATH_DIR/bin/local-path-provisioner" ] ||
    timed "local-path-provisioner" build_once "$LOCAL_PATH_DIR" "$LOCAL_PATH_DIR/bin/local-path-provisioner" _build_local_path_provisioner
  [ -e "$PAUSE_DIR/bin/pause" ] || timed "pause" build_once "$PAUSE_DIR" "$PAUSE_DIR/bin/pause" _build_pause
  # helm for `dev/kind-cluster env`: the very artefact dev/stack builds (same directory and lock).
  [ -e "$HELM_DIR/bin/helm" ] || timed "helm" build_once "$HELM_DIR" "$HELM_DIR/bin/helm" _build_helm
}

# --- 2-4. images -------------------------------------------------------------------------

# The files of dev/kind/ that go into images (the overrides apply at `up`, the runtime wrapper
# on the host, the smoke test after: changing those must not rebuild the node image).
KIND_IMAGE_FILES=(base.Dockerfile component.Dockerfile kube-proxy.Dockerfile coredns.Dockerfile
  pause.Dockerfile cni.conflist)

# kind_image_key: 12 hex digits over every input of the images: versions, KIND_IMAGE_FILES, this
# recipe's number and the Debian base image's id (a re-imported base rebuilds what is FROM it).
kind_image_key() {
  {
    echo "recipe=$KIND_IMAGE_RECIPE kind=$KIND_VERSION k8s=$KUBERNETES_VERSION debian=$DEBIAN_RELEASE"
    echo "containerd=$KIND_CONTAINERD_VERSION runc=$KIND_RUNC_VERSION crictl=$KIND_CRICTL_VERSION cni=$KIND_CNI_PLUGINS_VERSION"
    echo "etcd=$KIND_ETCD_VERSION coredns=$KIND_COREDNS_VERSION pause=$KIND_PAUSE_VERSION local-path=$KIND_LOCAL_PATH_PROVISIONER_VERSION"
    docker image inspect -f '{{.Id}}' "$DEBIAN_BASE_IMAGE"
    (cd "$RTDP_ROOT/dev/kind" && sha256sum "${KIND_IMAGE_FILES[@]}")
  } | sha256sum | cut -c1-12
}

kind_base_image() { echo "rtdp.local/kind-base:$KIND_VERSION-$(kind_image_key)"; }
kind_node_image() { echo "rtdp.local/kind-node:$KUBERNETES_VERSION-$(kind_image_key)"; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# _build_base_image TAG: the context is assembled with the modes kind's Dockerfile gives by
# COPY --chmod (scripts 0755, the rest 0644), which the legacy builder's COPY keeps.
_build_base_image() {
  local tag=$1 ctx
  ctx=$(mktemp -d "$RTDP_CACHE/kind-base-context.XXXXXX")
  cp -r "$KIND_DIR/recipe/files" "$ctx/files"
  find "$ctx/files" -type d -exec chmod 0755 {} +
  find "$ctx/files" -type f -exec chmod 0644 {} +
  chmod 0755 "$ctx"/files/usr/local/bin/* "$ctx"/files/kind/bin/*
  cp -r "$KIND_RUNTIME_DIR/bin/bin" "$KIND_RUNTIME_DIR/bin/sbin" "$KIND_RUNTIME_DIR/bin/cni" "$ctx/"
  cp "$RTDP_ROOT/dev/kind/base.Dockerfile" "$ctx/Dockerfile"
  log "building $tag (kind's base recipe on $DEBIAN_BASE_IMAGE; ~1 min)"
  docker build -q --build-arg "BASE_IMAGE=$DEBIAN_BASE_IMAGE" -t "$tag" "$ctx" >/dev/null ||
    { rm -rf "$ctx"; die "building the kind base image failed (see the docker output above)"; }
  rm -rf "$ctx"
}

# _build_component_image TAG DOCKERFILE BINARY...: one image from dev/kind/DOCKERFILE with the
# binaries in a minimal context (hard links: no copy of 100 MB binaries).
_build_component_image() {
  local tag=$1 dockerfile=$2 ctx binary
  shift 2
  ctx=$(mktemp -d "$RTDP_CACHE/kind-image-context.XXXXXX")
  for binary in "$@"; do ln "$binary" "$ctx/" 2>/dev/null || cp "$binary" "$ctx/"; done
  docker build -q --build-arg "BASE_IMAGE=$DEBIAN_BASE_IMAGE" --build-arg "BINARY=$(basename "${1:-none}")" \
    -f "$RTDP_ROOT/dev/kind/$dockerfile" -t "$tag" "$ctx" >/dev/null ||
    { rm -rf "$ctx"; die "building $tag failed (see the docker output above)"; }
  rm -rf "$ctx"
}

# _component_images_tar KEY TAR: every image the node must hold, built and saved into one
# docker-archive (shared layers once). Names come from kubeadm itself and from kind's manifests
# and containerd config, so a version bump cannot leave a name behind.
_component_images_tar() {
  local tar=$1 images=() required=() line
  local kubeadm="$KIND_KUBE_DIR/bin/kubeadm"
  mapfile -t required < <("$kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION" 2>/dev/null)
  [ ${#required[@]} -gt 0 ] || die "kubeadm config images list printed nothing"
  local sandbox
  sandbox=$(sed -n 's/^ *sandbox_image *= *"\(.*\)"/\1/p' "$KIND_DIR/recipe/files/etc/containerd/config.toml")
  [ -n "$sandbox" ] || die "no sandbox_image in kind's containerd config"
  log "component images: ${required[*]} $sandbox"
  for line in "${required[@]}"; do
    local name=${line%:*} tag=${line##*:}
    case "$name" in
      */kube-apiserver | */kube-controller-manager | */kube-scheduler)
        _build_component_image "$line" component.Dockerfile "$KIND_KUBE_DIR/bin/${name##*/}" ;;
      */kube-proxy) _build_component_image "$line" kube-proxy.Dockerfile "$KIND_KUBE_DIR/bin/kube-proxy" ;;
      */etcd)
        [ "$tag" = "${KIND_ETCD_VERSION#v}-0" ] ||
          die "kubeadm $KUBERNETES_VERSION wants etcd $tag; set KIND_ETCD_VERSION=v${tag%-*} in dev/versions.env"
        _build_component_image "$line" component.Dockerfile "$KIND_ETCD_DIR/bin/etcd" ;;
      */coredns)
        [ "$tag" = "$KIND_COREDNS_VERSION" ] ||
          die "kubeadm $KUBERNETES_VERSION wants CoreDNS $tag; set KIND_COREDNS_VERSION=$tag in dev/versions.env"
        _build_component_image "$line" coredns.Dockerfile "$COREDNS_DIR/bin/coredns" ;;
      */pause)
        [ "$tag" = "$KIND_PAUSE_VERSION" ] ||
          die "kubeadm $KUBERNETES_VERSION wants pause $tag; set KIND_PAUSE_VERSION=$tag in dev/versions.env"
        _build_component_image "$line" pause.Dockerfile "$PAUSE_DIR/bin/pause" ;;
      *) die "kubeadm wants an image this script does not know how to build: $line" ;;
    esac
    images+=("$line")
  done
  # containerd's sandbox image (kind pins its own tag, kubelet >= 1.34 asks containerd for it).
  if [[ " ${images[*]} " != *" $sandbox "* ]]; then
    docker tag "$(printf '%s\n' "${images[@]}" | grep '/pause:')" "$sandbox"
    images+=("$sandbox")
  fi
  # kind's default storage: the provisioner, and a helper that only needs sh, mkdir and rm.
  local storage_manifest="$KIND_DIR/recipe/manifests/default-storage.yaml"
  while read -r line; do
    case "$line" in
      *local-path-provisioner:*)
        _build_component_image "$line" component.Dockerfile "$LOCAL_PATH_DIR/bin/local-path-provisioner" ;;
      *local-path-helper:*) docker tag "$DEBIAN_BASE_IMAGE" "$line" ;;
      *) die "kind's storage manifest names an unknown image: $line" ;;
    esac
    images+=("$line")
  done < <(_manifest_images "$storage_manifest")
  log "saving ${#images[@]} images into $tar"
  docker save "${images[@]}" -o "$tar.partial" || die "docker save failed"
  mv -f "$tar.partial" "$tar"
}

# _build_node_image BASE NODE_TAG IMAGES_TAR: kind's buildImage() (pkg/build/nodeimage/
# buildcontext.go), step by step, minus every registry fetch.
_build_node_image() {
  local base=$1 tag=$2 tar=$3 container
  container="rtdp-kind-build-$$-$RANDOM"
  log "building $tag (node image; ~30 s)"
  docker run -d --entrypoint=sleep --name "$container" --security-opt seccomp=unconfined "$base" infinity >/dev/null ||
    die "could not start the node-image build container from $base"
  # Runs inside kind_build_images' lock subshell: EXIT there also covers a die below.
  # shellcheck disable=SC2064 # expanded now on purpose: the name is fixed
  trap "docker rm -f -v '$container' >/dev/null 2>&1 || true" EXIT
  local binary
  for binary in "${KIND_NODE_BINARIES[@]}"; do
    docker cp "$KIND_KUBE_DIR/bin/$binary" "$container:/usr/bin/$binary" >/dev/null
  done
  docker exec "$container" chown root:root "${KIND_NODE_BINARIES[@]/#//usr/bin/}"
  docker exec "$container" chmod 0755 "${KIND_NODE_BINARIES[@]/#//usr/bin/}"
  docker exec "$container" mkdir -p /kind/manifests /etc/cni/net.d
  printf '%s' "$KUBERNETES_VERSION" | docker exec -i "$container" cp /dev/stdin /kind/version
  docker cp "$KIND_DIR/recipe/manifests/default-cni.yaml" "$container:/kind/manifests/default-cni.yaml" >/dev/null
  docker cp "$KIND_DIR/recipe/manifests/default-storage.yaml" "$container:/kind/manifests/default-storage.yaml" >/dev/null
  # In place of kindnetd (see dev/kind/overrides/no-default-cni.yaml).
  docker cp "$RTDP_ROOT/dev/kind/cni.conflist" "$container:/etc/cni/net.d/10-rtdp-ptp.conflist" >/dev/null
  docker exec "$container" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
  docker exec "$container" bash -c 'for i in $(seq 1 30); do ctr version >/dev/null 2>&1 && exit 0; sleep 1; done; cat /tmp/containerd.log; exit 1' ||
    die "containerd did not start in the build container"
  docker exec -i "$container" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
    --all-platforms --no-unpack --digests - <"$tar" >/dev/null || die "importing the component images into the node's containerd failed"
  # --digests also records the archive itself as "import-<date>@sha256:..."; it names nothing.
  docker exec "$container" bash -c 'ctr -n k8s.io images list -q | grep "^import-" | xargs -r ctr -n k8s.io images rm >/dev/null'
  log "node images: $(docker exec "$container" ctr --namespace=k8s.io images list -q | grep -v '^sha256:' | tr '\n' ' ')"
  # PID 1 is sleep, which reaps nothing: containerd lingers as a zombie. Commit once it is no
  # longer running (a zombie holds no files open), not once it is gone.
  docker exec "$container" pkill containerd || true
  docker exec "$container" bash -c 'for i in $(seq 1 30); do ps -C containerd -o stat= | grep -qv Z || exit 0; sleep 1; done; exit 1' ||
    die "containerd did not stop in the build container"
  docker exec "$container" rm -f /tmp/containerd.log
  docker commit \
    --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""' \
    "$container" "$tag" >/dev/null || die "docker commit of the node image failed"
  docker rm -f -v "$container" >/dev/null
  trap - EXIT
}

# kind_build_images: base, component images and node image, each skipped when its keyed tag
# (or, for the component images, their saved archive) exists.
kind_build_images() {
  local key base node images_dir
  key=$(kind_image_key)
  base="rtdp.local/kind-base:$KIND_VERSION-$key"
  node="rtdp.local/kind-node:$KUBERNETES_VERSION-$key"
  images_dir="$RTDP_CACHE/kind-images-$KUBERNETES_VERSION-$key"
  image_exists "$node" && return 0
  mkdir -p "$images_dir"
  (
    flock 9
    image_exists "$base" || timed "base image" _build_base_image "$base"
    [ -s "$images_dir/images.tar" ] || timed "component images" _component_images_tar "$images_dir/images.tar"
    image_exists "$node" || timed "node image" _build_node_image "$base" "$node" "$images_dir/images.tar"
    # A stable alias for humans; the cluster is always created from the keyed tag.
    docker tag "$node" "rtdp.local/kind-node:$KUBERNETES_VERSION"
  ) 9>"$images_dir.lock"
}

kind_build() {
  ensure_docker_engine
  ensure_debian_base_image
  kind_build_binaries
  kind_build_images
}

# --- cluster -----------------------------------------------------------------------------

kind_cmd() { "$KIND_DIR/bin/kind" "$@"; }
kubectl_kind() { "$KIND_KUBE_DIR/bin/kubectl" --kubeconfig "$KIND_KUBECONFIG" "$@"; }

host_has_cgroup_v1() { [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]; }

host_lacks_cap_sys_resource() {
  local bounding
  bounding=$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)
  (((0x$bounding >> 24 & 1) == 0))
}

# _kind_generated_config FILE: kind-config.yaml as a user with internet runs it, plus only what
# this machine needs (dev/kind/overrides/*.yaml, each explaining itself). Appended as top-level
# keys: kind-config.yaml must not set them itself (checked), since kind takes one config file.
_kind_generated_config() {
  local out=$1 fragments=(no-default-cni.yaml) fragment key
  host_has_cgroup_v1 && fragments+=(cgroup-v1.yaml)
  host_lacks_cap_sys_resource && fragments+=(capbnd.yaml)
  {
    echo "# Generated by dev/kind-cluster from kind-config.yaml + dev/kind/overrides/{$(
      IFS=,
      echo "${fragments[*]}"
    )}; do not edit."
    cat "$KIND_CONFIG"
    for fragment in "${fragments[@]}"; do
      key=$(sed -n 's/^\([A-Za-z]*\):.*/\1/p' "$RTDP_ROOT/dev/kind/overrides/$fragment" | head -n1)
      grep -q "^$key:" "$KIND_CONFIG" &&
        die "kind-config.yaml sets '$key' itself; merge dev/kind/overrides/$fragment into it by hand (kind reads one config)"
      echo
      cat "$RTDP_ROOT/dev/kind/overrides/$fragment"
    done
  } >"$out"
}

# Host ports kind-config.yaml asks for (apiServerPort, extraPortMappings' hostPort): refuse early
# and clearly rather than let docker fail half-way through cluster creation.
_kind_check_ports() {
  local port
  while read -r port; do
    ensure_port_free "kind cluster $KIND_CLUSTER_NAME (kind-config.yaml)" "$port" "the port in kind-config.yaml"
  done < <(sed -n 's/^ *\(apiServerPort\|- *hostPort\|hostPort\): *\([0-9][0-9]*\).*/\2/p' "$KIND_CONFIG")
}

kind_cluster_exists() {
  kind_cmd get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"
}

# kind_wait_ready: the node Ready, CoreDNS and local-path-provisioner rolled out.
kind_wait_ready() {
  local deadline=$((SECONDS + ${KIND_READY_TIMEOUT:-300}))
  log "waiting for the node to be Ready and CoreDNS and local-path-provisioner to run"
  until kubectl_kind wait --for=condition=Ready node --all --timeout=10s >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { kubectl_kind get nodes -o wide >&2 || true; die "the node did not become Ready"; }
  done
  local left=$((deadline - SECONDS))
  kubectl_kind -n kube-system rollout status deployment/coredns --timeout="$((left > 10 ? left : 10))s" >/dev/null ||
    { kubectl_kind get pods -A >&2 || true; die "CoreDNS did not become ready"; }
  left=$((deadline - SECONDS))
  kubectl_kind -n local-path-storage rollout status deployment/local-path-provisioner --timeout="$((left > 10 ? left : 10))s" >/dev/null ||
    { kubectl_kind get pods -A >&2 || true; die "local-path-provisioner did not become ready"; }
}

kind_up() {
  kind_build
  docker_can_run_privileged ||
    die "dockerd's default runtime is '$(docker_default_runtime)', but this host's capability bounding set is incomplete: kind's --privileged node would fail ('unable to apply caps'). Stop dockerd (nothing else of yours running in it?) and rerun: dev/kind-cluster up"
  local node
  node=$(kind_node_image)
  mkdir -p "$KIND_STATE"
  if kind_cluster_exists; then
    local running current
    running=$(docker inspect -f '{{.State.Running}}' "$KIND_CLUSTER_NAME-control-plane" 2>/dev/null || echo false)
    current=$(docker inspect -f '{{.Config.Image}}' "$KIND_CLUSTER_NAME-control-plane" 2>/dev/null || echo unknown)
    if [ "$running" = true ] && [ "$current" = "$node" ]; then
      log "kind cluster $KIND_CLUSTER_NAME already exists from the current node image: reusing it"
      kind_cmd export kubeconfig --name "$KIND_CLUSTER_NAME" --kubeconfig "$KIND_KUBECONFIG" >/dev/null 2>&1
      kind_wait_ready
      log "cluster $KIND_CLUSTER_NAME ready; eval \"\$(dev/kind-cluster env)\""
      return 0
    fi
    die "a kind cluster named $KIND_CLUSTER_NAME exists already (node running: $running, image $current; current build $node); delete it first: dev/kind-cluster down"
  fi
  _kind_check_ports
  local config="$KIND_STATE/kind-config.generated.yaml"
  _kind_generated_config "$config"
  log "creating kind cluster $KIND_CLUSTER_NAME from $node (config: $config)"
  local start=$SECONDS
  kind_cmd create cluster --name "$KIND_CLUSTER_NAME" --image "$node" --config "$config" \
    --kubeconfig "$KIND_KUBECONFIG" ||
    die "kind create cluster failed (kind's output above; node logs: $KIND_DIR/bin/kind export logs --name $KIND_CLUSTER_NAME)"
  log "kind create cluster: $((SECONDS - start))s"
  kind_wait_ready
  log "cluster $KIND_CLUSTER_NAME ready after $((SECONDS - start))s; eval \"\$(dev/kind-cluster env)\""
}

kind_down() {
  if [ -x "$KIND_DIR/bin/kind" ] && kind_cluster_exists; then
    log "deleting kind cluster $KIND_CLUSTER_NAME"
    kind_cmd delete cluster --name "$KIND_CLUSTER_NAME" --kubeconfig "$KIND_KUBECONFIG"
  else
    log "no kind cluster named $KIND_CLUSTER_NAME"
  fi
  rm -f "$KIND_KUBECONFIG"
}

kind_load() {
  [ $# -gt 0 ] || die "usage: dev/kind-cluster load IMAGE..."
  kind_cluster_exists || die "no kind cluster named $KIND_CLUSTER_NAME; start it: dev/kind-cluster up"
  kind_cmd load docker-image --name "$KIND_CLUSTER_NAME" "$@"
}

kind_print_env() {
  cat <<ENV
export KUBECONFIG=$KIND_KUBECONFIG
export PATH=$KIND_DIR/bin:$KIND_KUBE_DIR/bin:$HELM_DIR/bin:\$PATH
ENV
}

# kind_smoke: proves the cluster does what the project needs (dev/kind/smoke.yaml): a `kind
# load`ed image runs, a Service name resolves through CoreDNS and answers, a PVC binds through
# the `standard` StorageClass. Leaves nothing behind unless KIND_SMOKE_KEEP=1.
kind_smoke() {
  kind_cluster_exists || die "no kind cluster named $KIND_CLUSTER_NAME; start it: dev/kind-cluster up"
  local image start=$SECONDS
  image="rtdp.local/kind-smoke:$DEBIAN_RELEASE-$(sha256sum "$RTDP_ROOT/dev/kind/smoke.Dockerfile" | cut -c1-12)"
  if ! image_exists "$image"; then
    log "building $image"
    docker build -q --build-arg "BASE_IMAGE=$DEBIAN_BASE_IMAGE" -f "$RTDP_ROOT/dev/kind/smoke.Dockerfile" \
      -t "$image" "$RTDP_ROOT/dev/kind" >/dev/null || die "building $image failed"
  fi
  kind_load "$image"
  kubectl_kind delete namespace rtdp-smoke --ignore-not-found --wait=true >/dev/null
  sed "s|SMOKE_IMAGE|$image|" "$RTDP_ROOT/dev/kind/smoke.yaml" | kubectl_kind apply -f - >/dev/null
  kubectl_kind -n rtdp-smoke rollout status deployment/web --timeout=180s >/dev/null ||
    { kubectl_kind -n rtdp-smoke describe pods >&2; die "smoke: the web Deployment did not become ready"; }
  local deadline=$((SECONDS + 180)) succeeded failed
  while :; do
    succeeded=$(kubectl_kind -n rtdp-smoke get job client -o jsonpath='{.status.succeeded}')
    failed=$(kubectl_kind -n rtdp-smoke get job client -o jsonpath='{.status.failed}')
    [ "${succeeded:-0}" -ge 1 ] && break
    if [ "${failed:-0}" -ge 1 ] || ((SECONDS >= deadline)); then
      kubectl_kind -n rtdp-smoke logs job/client >&2 || true
      kubectl_kind -n rtdp-smoke describe job,pods,pvc >&2 || true
      die "smoke: the client Job did not succeed"
    fi
    sleep 2
  done
  kubectl_kind -n rtdp-smoke logs job/client | grep -q SMOKE-PASSED || die "smoke: the client Job ended without SMOKE-PASSED"
  log "smoke passed in $((SECONDS - start))s: $(kubectl_kind -n rtdp-smoke get pvc data -o jsonpath='PVC {.metadata.name} {.status.phase} ({.spec.storageClassName})'), Service web resolved and answered, $image ran without a pull"
  if [ "${KIND_SMOKE_KEEP:-0}" != 1 ]; then
    kubectl_kind delete namespace rtdp-smoke --wait=false >/dev/null
  fi
}
