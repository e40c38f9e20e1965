# shellcheck shell=bash
# Shared helpers for dev/stack. Sourced, never run.
# Everything listens on 127.0.0.1. Builds live outside the work tree so a fresh clone
# (what CI runs) reuses them; runtime state (data, logs, pids, certs) lives in the clone.

RTDP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../versions.env
source "$RTDP_ROOT/dev/versions.env"
RTDP_CACHE=${RTDP_CACHE:-$HOME/.cache/rtdp}
RTDP_STATE=${RTDP_STATE:-$RTDP_ROOT/.stack}

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
CASSANDRA_PORT=${CASSANDRA_PORT:-9042}
CASSANDRA_STORAGE_PORT=${CASSANDRA_STORAGE_PORT:-7000}
ETCD_PORT=${ETCD_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
APISERVER_PORT=${APISERVER_PORT:-6443}
# The secured endpoints (dev/lib/secured.sh): Kafka's SASL_SSL and mTLS listeners on the one broker and
# a second Cassandra with PasswordAuthenticator, started only by the tests that need it.
KAFKA_SECURE_PORT=${KAFKA_SECURE_PORT:-9094}
# Kafka's mutual-TLS listener (SSL, client certificate required), on the same broker.
KAFKA_MTLS_PORT=${KAFKA_MTLS_PORT:-9095}
CASSANDRA_SECURED_PORT=${CASSANDRA_SECURED_PORT:-9142}
CASSANDRA_SECURED_STORAGE_PORT=${CASSANDRA_SECURED_STORAGE_PORT:-7100}
CASSANDRA_SECURED_JMX_PORT=${CASSANDRA_SECURED_JMX_PORT:-7299}
# Test credentials of the local stack only (dev/stack env exports them to the tests).
KAFKA_SASL_USERNAME=${KAFKA_SASL_USERNAME:-rtdp}
KAFKA_SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-rtdp-kafka-local-7Jq2Wx}
CASSANDRA_SECURED_USERNAME=${CASSANDRA_SECURED_USERNAME:-rtdp}
CASSANDRA_SECURED_PASSWORD=${CASSANDRA_SECURED_PASSWORD:-rtdp-cassandra-local-4Vn8Kd}

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# require_command NAME FIX: one line naming the missing prerequisite and how to get it.
require_command() {
  command -v "$1" >/dev/null 2>&1 || die "missing prerequisite '$1': $2"
}

# port_in_use PORT: true when something already listens on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_alive NAME: true when the pid file of NAME names a running process.
pid_alive() {
  local pid_file="$RTDP_STATE/$1/pid"
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

# ensure_port_free NAME PORT: refuses to start NAME over a foreign listener.
ensure_port_free() {
  if port_in_use "$2"; then
    die "port 127.0.0.1:$2 (needed by $1) is in use by another process; stop it (e.g. 'ss -ltnp | grep :$2') or set ${3:-the port variable} to a free port"
  fi
}

# start_daemon NAME LOGFILE COMMAND...: starts COMMAND in its own session, records its pid.
start_daemon() {
  local name=$1 log_file=$2
  shift 2
  mkdir -p "$RTDP_STATE/$name"
  setsid "$@" >>"$log_file" 2>&1 </dev/null &
  echo $! >"$RTDP_STATE/$name/pid"
}

# wait_until NAME LOGFILE SECONDS CHECK...: polls CHECK; on timeout or early death prints the log tail.
wait_until() {
  local name=$1 log_file=$2 seconds=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$name"; then
      log "$name exited during start-up; last lines of $log_file:"
      tail -n 40 "$log_file" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name did not become ready within ${seconds}s; last lines of $log_file:"
      tail -n 40 "$log_file" >&2
      return 1
    fi
    sleep 1
  done
}

# stop_daemon NAME: stops exactly the process group that start_daemon started.
stop_daemon() {
  local name=$1 pid_file="$RTDP_STATE/$1/pid"
  [ -f "$pid_file" ] || return 0
  local pid
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    local waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < 30)); do
      sleep 1
      waited=$((waited + 1))
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

# build_maven_jars NAME VERSION DIR POM PROPERTY ARTIFACT: DIR/lib holds, once, the runtime jars
# of the Maven artifact ARTIFACT:VERSION, resolved from Maven Central through POM (which reads
# the version from -DPROPERTY=VERSION). DIR/lib is the done marker and DIR.lock the lock.
build_maven_jars() {
  require_command java "install a Java 17+ JDK (apt-get install openjdk-17-jdk-headless)"
  require_command mvn "install Maven (apt-get install maven)"
  build_once "$3" "$3/lib" _resolve_maven_jars "$@"
}

_resolve_maven_jars() {
  local name=$1 version=$2 dir=$3 pom=$4 property=$5 artifact=$6
  log "resolving $name $version from Maven Central (cached in $dir)"
  rm -rf "$dir/lib.partial"
  mvn -B -q -Dstyle.color=never -f "$pom" -D"$property=$version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir/lib.partial" ||
    die "resolving $artifact:$version with Maven failed (see above)"
  mv "$dir/lib.partial" "$dir/lib"
}

# build_once DIR DONE_MARKER COMMAND...: runs COMMAND unless DONE_MARKER exists, holding a lock
# so concurrent runs (two terminals, a test and a demo) never build one cache entry twice.
build_once() {
  local dir=$1 marker=$2
  shift 2
  [ -e "$marker" ] && return 0
  mkdir -p "$dir"
  (
    flock 9
    [ -e "$marker" ] || "$@"
  ) 9>"$dir.lock"
}
