# shellcheck shell=bash
# Apache Cassandra 5.0 (cassandra-all from Maven Central) as its own JVM.

CASSANDRA_DIR="$RTDP_CACHE/cassandra-$CASSANDRA_VERSION"
CASSANDRA_STATE="$RTDP_STATE/cassandra"

cassandra_build() {
  build_maven_jars "Apache Cassandra" "$CASSANDRA_VERSION" "$CASSANDRA_DIR" "$RTDP_ROOT/dev/cassandra/pom.xml" \
    cassandra.version org.apache.cassandra:cassandra-all
}

cassandra_ready() {
  port_in_use "$CASSANDRA_PORT" && grep -q "Starting listening for CQL clients" "$CASSANDRA_STATE/cassandra.log"
}

cassandra_up() {
  _cassandra_start cassandra "$CASSANDRA_STATE" "$CASSANDRA_PORT" "$CASSANDRA_STORAGE_PORT" \
    "${CASSANDRA_JMX_PORT:-7199}" AllowAllAuthenticator rtdp-local "${CASSANDRA_HEAP:-1G}" CASSANDRA
}

cassandra_down() { stop_daemon cassandra; }

# _cassandra_start NAME STATE NATIVE_PORT STORAGE_PORT JMX_PORT AUTHENTICATOR CLUSTER HEAP VAR_PREFIX:
# one single-node Cassandra with its own state directory, ports and cluster name.
_cassandra_start() {
  local name=$1 state=$2 native_port=$3 storage_port=$4 jmx_port=$5 authenticator=$6 cluster=$7 heap=$8 prefix=$9
  if pid_alive "$name"; then
    log "$name already running (pid $(cat "$state/pid")) on 127.0.0.1:$native_port"
    return 0
  fi
  ensure_port_free "$name" "$native_port" "${prefix}_PORT"
  ensure_port_free "$name-storage" "$storage_port" "${prefix}_STORAGE_PORT"
  cassandra_build
  mkdir -p "$state"/{data,commitlog,saved_caches,hints,cdc_raw,tmp,logs}
  sed -e "s|@STATE_DIR@|$state|g" -e "s|@CASSANDRA_PORT@|$native_port|g" \
    -e "s|@CASSANDRA_STORAGE_PORT@|$storage_port|g" -e "s|@AUTHENTICATOR@|$authenticator|g" \
    -e "s|@CLUSTER_NAME@|$cluster|g" \
    "$RTDP_ROOT/dev/cassandra/cassandra.yaml.in" >"$state/cassandra.yaml"
  local jamm module_flags
  jamm=$(find "$CASSANDRA_DIR/lib" -maxdepth 1 -name "jamm-*.jar" 2>/dev/null | head -n1)
  mapfile -t module_flags < <(grep -v '^#' "$RTDP_ROOT/dev/cassandra/jvm17.options" | grep -v '^$')
  : >"$state/cassandra.log"
  log "starting $name on 127.0.0.1:$native_port (log: $state/cassandra.log; 20-60 s)"
  start_daemon "$name" "$state/cassandra.log" java \
    -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:+HeapDumpOnOutOfMemoryError -Xss512k \
    "${module_flags[@]}" ${jamm:+-javaagent:$jamm} \
    -Dcassandra.config="file://$state/cassandra.yaml" \
    -Dcassandra.storagedir="$state" \
    -Dcassandra.logdir="$state/logs" \
    -Dcassandra-foreground=yes \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.load_ring_state=false \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -Dcassandra.jmx.local.port="$jmx_port" \
    -Dlogback.configurationFile="$RTDP_ROOT/dev/cassandra/logback.xml" \
    -Djna.tmpdir="$state/tmp" -Djava.io.tmpdir="$state/tmp" \
    -cp "$CASSANDRA_DIR/lib/*" org.apache.cassandra.service.CassandraDaemon
  # shellcheck disable=SC2317 # called through wait_until
  _ready() { port_in_use "$native_port" && grep -q "Starting listening for CQL clients" "$state/cassandra.log"; }
  wait_until "$name" "$state/cassandra.log" 180 _ready
}
