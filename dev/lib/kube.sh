# shellcheck shell=bash
# etcd, kube-apiserver, kubectl and helm, built from their Go modules into the cache; promtool
# (for the chart's alert rules), unpacked from Debian's prometheus package.

KUBE_DIR="$RTDP_CACHE/kubernetes-$KUBERNETES_VERSION"
ETCD_DIR="$RTDP_CACHE/etcd-$ETCD_VERSION"
HELM_DIR="$RTDP_CACHE/helm-$HELM_VERSION"
PROMTOOL_DIR="$RTDP_CACHE/promtool-$PROMETHEUS_DEBIAN_VERSION"
KUBE_STATE="$RTDP_STATE/kube"
export KUBECONFIG_PATH="$KUBE_STATE/admin.kubeconfig"

# build_kubernetes_commands DIR COMMAND...: builds k8s.io/kubernetes/cmd/COMMAND... at
# $KUBERNETES_VERSION into DIR/bin (through DIR/bin.partial), from a wrapper module in DIR/src.
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging
# paths, which a dependent module ignores. Our own module replaces each with its published
# v0.<minor>.<patch> twin, derived from that version's go.mod rather than a hard-coded list.
# The same module and flags for every caller, so Go's build cache serves all of them.
build_kubernetes_commands() {
  local dir=$1
  shift
  local src="$dir/src" staging_version="v0.${KUBERNETES_VERSION#v1.}"
  mkdir -p "$src"
  local upstream_mod
  upstream_mod=$(cd "$src" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$upstream_mod" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy"
  {
    echo "module rtdp.dev/localkube"
    echo
    sed -n 's/^go \(.*\)/go \1/p' "$upstream_mod"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$upstream_mod" | sort -u |
      while read -r module; do echo "replace $module => $module $staging_version"; done
  } >"$src/go.mod"
  local minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION \
    -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  local targets=() name
  for name in "$@"; do
    targets+=("k8s.io/kubernetes/cmd/$name")
  done
  rm -rf "$dir/bin.partial"
  (cd "$src" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$dir/bin.partial/" "${targets[@]}") ||
    die "building Kubernetes $KUBERNETES_VERSION failed (see the go output above)"
  rm -rf "${dir:?}/bin" && mv "$dir/bin.partial" "$dir/bin"
}

_build_kubernetes() {
  log "building kube-apiserver, kube-controller-manager and kubectl $KUBERNETES_VERSION (cold: 10-20 min on 2 cores; cached in $KUBE_DIR)"
  build_kubernetes_commands "$KUBE_DIR" kube-apiserver kube-controller-manager kubectl
}

# etcd's server/go.mod carries replaces a dependent ignores, so `go install` fails;
# a tiny module of ours whose main calls etcdmain.Main builds it instead.
_build_etcd() {
  local src="$ETCD_DIR/src"
  mkdir -p "$src" "$ETCD_DIR/bin"
  log "building etcd $ETCD_VERSION (cached in $ETCD_DIR)"
  cp "$RTDP_ROOT/dev/kube/etcd/main.go" "$src/main.go"
  printf 'module rtdp.dev/localetcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$src/go.mod"
  (cd "$src" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$ETCD_DIR/bin/etcd" .) ||
    die "building etcd failed (see the go output above)"
}

_build_helm() {
  mkdir -p "$HELM_DIR/bin"
  log "building helm $HELM_VERSION (cached in $HELM_DIR)"
  GOBIN="$HELM_DIR/bin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || die "building helm failed (see the go output above)"
}

# promtool alone, from the Debian package (the package would also install and start a
# Prometheus server); apt's package lists are refreshed once if they do not know the version.
_fetch_promtool() {
  local work="$PROMTOOL_DIR/download"
  require_command apt-get "promtool comes from Debian's prometheus package; elsewhere put a promtool 2.42 or later at $PROMTOOL_DIR/bin/promtool"
  log "fetching promtool from Debian's prometheus $PROMETHEUS_DEBIAN_VERSION (cached in $PROMTOOL_DIR)"
  rm -rf "$work" && mkdir -p "$work"
  if ! (cd "$work" && apt-get download -q "prometheus=$PROMETHEUS_DEBIAN_VERSION" >/dev/null 2>&1); then
    apt-get update -q >/dev/null 2>&1 || true
    (cd "$work" && apt-get download -q "prometheus=$PROMETHEUS_DEBIAN_VERSION") ||
      die "apt-get download prometheus=$PROMETHEUS_DEBIAN_VERSION failed (apt-cache policy prometheus shows what this machine's Debian offers; set PROMETHEUS_DEBIAN_VERSION in dev/versions.env)"
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/unpacked" || die "unpacking the prometheus package failed"
  mkdir -p "$PROMTOOL_DIR/bin"
  mv "$work/unpacked/usr/bin/promtool" "$PROMTOOL_DIR/bin/promtool"
  rm -rf "$work"
}

kube_build() {
  require_command go "install Go 1.24+ (https://go.dev/doc/install) and put it on PATH"
  require_command openssl "apt-get install openssl"
  build_once "$ETCD_DIR" "$ETCD_DIR/bin/etcd" _build_etcd
  # kubectl is built last, so its presence means the whole set is there.
  build_once "$KUBE_DIR" "$KUBE_DIR/bin/kubectl" _build_kubernetes
  build_once "$HELM_DIR" "$HELM_DIR/bin/helm" _build_helm
  build_once "$PROMTOOL_DIR" "$PROMTOOL_DIR/bin/promtool" _fetch_promtool
}

# A CA, the API server's serving certificate, an admin client certificate (system:masters)
# and the service-account signing key; made once per state directory.
_make_certificates() {
  local pki="$KUBE_STATE/pki"
  [ -f "$pki/admin.crt" ] && return 0
  mkdir -p "$pki"
  log "creating certificates in $pki"
  (
    cd "$pki" || exit 1
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=rtdp-local-ca" \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr
    printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=rtdp-admin" -keyout admin.key -out admin.csr
    printf 'extendedKeyUsage=clientAuth\n' >admin.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile admin.ext -out admin.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=system:kube-controller-manager" \
      -keyout controller-manager.key -out controller-manager.csr
    openssl x509 -req -in controller-manager.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile admin.ext -out controller-manager.crt
    openssl genrsa -out service-account.key 2048
    openssl rsa -in service-account.key -pubout -out service-account.pub
  ) >"$KUBE_STATE/pki.log" 2>&1 || { tail -n 20 "$KUBE_STATE/pki.log" >&2; die "creating certificates with openssl failed"; }
}

# _write_kubeconfig FILE USER CERT KEY: a kubeconfig with embedded credentials.
_write_kubeconfig() {
  local pki="$KUBE_STATE/pki"
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: rtdp-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$3")
    client-key-data: $(base64 -w0 "$4")
contexts:
- name: rtdp-local
  context:
    cluster: rtdp-local
    user: $2
current-context: rtdp-local
KUBECONFIG
}

etcd_ready() {
  curl -sf "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'
}

apiserver_ready() {
  [ "$("$KUBE_DIR/bin/kubectl" --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz 2>/dev/null)" = "ok" ]
}

controller_manager_ready() {
  curl -sfk "https://127.0.0.1:${CONTROLLER_MANAGER_PORT:-10257}/healthz" | grep -q ok
}

kube_up() {
  kube_build
  require_command curl "apt-get install curl"
  mkdir -p "$KUBE_STATE"
  _make_certificates
  _write_kubeconfig "$KUBECONFIG_PATH" rtdp-admin "$KUBE_STATE/pki/admin.crt" "$KUBE_STATE/pki/admin.key"
  _write_kubeconfig "$KUBE_STATE/controller-manager.kubeconfig" system:kube-controller-manager \
    "$KUBE_STATE/pki/controller-manager.crt" "$KUBE_STATE/pki/controller-manager.key"
  local pki="$KUBE_STATE/pki"

  if pid_alive etcd; then
    log "etcd already running (pid $(cat "$RTDP_STATE/etcd/pid")) on 127.0.0.1:$ETCD_PORT"
  else
    ensure_port_free etcd "$ETCD_PORT" ETCD_PORT
    ensure_port_free etcd-peer "$ETCD_PEER_PORT" ETCD_PEER_PORT
    mkdir -p "$RTDP_STATE/etcd"
    : >"$RTDP_STATE/etcd/etcd.log"
    log "starting etcd on 127.0.0.1:$ETCD_PORT (log: $RTDP_STATE/etcd/etcd.log)"
    start_daemon etcd "$RTDP_STATE/etcd/etcd.log" "$ETCD_DIR/bin/etcd" \
      --name rtdp-local --data-dir "$RTDP_STATE/etcd/data" \
      --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster "rtdp-local=http://127.0.0.1:$ETCD_PEER_PORT" \
      --unsafe-no-fsync=true --quota-backend-bytes=4294967296 --log-level=warn
    wait_until etcd "$RTDP_STATE/etcd/etcd.log" 60 etcd_ready || return 1
  fi

  if pid_alive kube-apiserver; then
    log "kube-apiserver already running (pid $(cat "$RTDP_STATE/kube-apiserver/pid")) on 127.0.0.1:$APISERVER_PORT"
  else
    ensure_port_free kube-apiserver "$APISERVER_PORT" APISERVER_PORT
    mkdir -p "$RTDP_STATE/kube-apiserver"
    local log_file="$RTDP_STATE/kube-apiserver/kube-apiserver.log"
    : >"$log_file"
    log "starting kube-apiserver $KUBERNETES_VERSION on https://127.0.0.1:$APISERVER_PORT (log: $log_file)"
    start_daemon kube-apiserver "$log_file" "$KUBE_DIR/bin/kube-apiserver" \
      --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
      --secure-port="$APISERVER_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
      --cert-dir="$RTDP_STATE/kube-apiserver/certs" \
      --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
      --client-ca-file="$pki/ca.crt" \
      --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true \
      --authorization-mode=RBAC \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$pki/service-account.pub" \
      --service-account-signing-key-file="$pki/service-account.key" \
      --enable-priority-and-fairness=false --profiling=false --v=1
    wait_until kube-apiserver "$log_file" 120 apiserver_ready || return 1
  fi

  if pid_alive kube-controller-manager; then
    log "kube-controller-manager already running (pid $(cat "$RTDP_STATE/kube-controller-manager/pid"))"
  else
    ensure_port_free kube-controller-manager "${CONTROLLER_MANAGER_PORT:-10257}" CONTROLLER_MANAGER_PORT
    mkdir -p "$RTDP_STATE/kube-controller-manager"
    local log_file="$RTDP_STATE/kube-controller-manager/kube-controller-manager.log"
    : >"$log_file"
    # Garbage collection (owner references) and namespace deletion, as on a real cluster;
    # no scheduler or kubelet exists, so pods are created but never run. Each controller
    # acts as its own service account (system:controller:* roles), as kubeadm runs it: the
    # controller manager's own identity may not delete what those controllers must.
    log "starting kube-controller-manager (log: $log_file)"
    start_daemon kube-controller-manager "$log_file" "$KUBE_DIR/bin/kube-controller-manager" \
      --kubeconfig="$KUBE_STATE/controller-manager.kubeconfig" \
      --authentication-kubeconfig="$KUBE_STATE/controller-manager.kubeconfig" \
      --authorization-kubeconfig="$KUBE_STATE/controller-manager.kubeconfig" \
      --bind-address=127.0.0.1 --secure-port="${CONTROLLER_MANAGER_PORT:-10257}" \
      --cert-dir="$RTDP_STATE/kube-controller-manager/certs" \
      --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/service-account.key" \
      --use-service-account-credentials=true --leader-elect=false \
      --controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller \
      --concurrent-gc-syncs=5 --v=1
    wait_until kube-controller-manager "$log_file" 60 controller_manager_ready || return 1
  fi
}

kube_down() {
  stop_daemon kube-controller-manager
  stop_daemon kube-apiserver
  stop_daemon etcd
}
