# Apache Cassandra 5.0 (cassandra-all from Maven Central) as its own JVM.

CASSANDRA_DIR="$RTDP_CACHE/cassandra-$CASSANDRA_VERSION"
CASSANDRA_STATE="$RTDP_STATE/cassandra"

_resolve_cassandra() {
  log "resolving Apache Cassandra $CASSANDRA_VERSION from Maven Central (cached in $CASSANDRA_DIR)"
  rm -rf "$CASSANDRA_DIR/lib.partial"
  mvn -B -q -Dstyle.color=never -f "$RTDP_ROOT/dev/cassandra/pom.xml" -Dcassandra.version="$CASSANDRA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$CASSANDRA_DIR/lib.partial" ||
    die "resolving org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION with Maven failed (see above)"
  mv "$CASSANDRA_DIR/lib.partial" "$CASSANDRA_DIR/lib"
}

cassandra_build() {
  require_command java "install a Java 17+ JDK (apt-get install openjdk-17-jdk-headless)"
  require_command mvn "install Maven (apt-get install maven)"
  build_once "$CASSANDRA_DIR" "$CASSANDRA_DIR/lib" _resolve_cassandra
}

cassandra_ready() {
  port_in_use "$CASSANDRA_PORT" && grep -q "Starting listening for CQL clients" "$CASSANDRA_STATE/cassandra.log"
}

cassandra_up() {
  if pid_alive cassandra; then
    log "cassandra already running (pid $(cat "$CASSANDRA_STATE/pid")) on 127.0.0.1:$CASSANDRA_PORT"
    return 0
  fi
  ensure_port_free cassandra "$CASSANDRA_PORT" CASSANDRA_PORT
  ensure_port_free cassandra-storage "$CASSANDRA_STORAGE_PORT" CASSANDRA_STORAGE_PORT
  cassandra_build
  mkdir -p "$CASSANDRA_STATE"/{data,commitlog,saved_caches,hints,cdc_raw,tmp,logs}
  sed -e "s|@STATE_DIR@|$CASSANDRA_STATE|g" -e "s|@CASSANDRA_PORT@|$CASSANDRA_PORT|g" \
    -e "s|@CASSANDRA_STORAGE_PORT@|$CASSANDRA_STORAGE_PORT|g" \
    "$RTDP_ROOT/dev/cassandra/cassandra.yaml.in" >"$CASSANDRA_STATE/cassandra.yaml"
  local jamm module_flags
  jamm=$(ls "$CASSANDRA_DIR"/lib/jamm-*.jar 2>/dev/null | head -n1)
  mapfile -t module_flags < <(grep -v '^#' "$RTDP_ROOT/dev/cassandra/jvm17.options" | grep -v '^$')
  : >"$CASSANDRA_STATE/cassandra.log"
  log "starting cassandra on 127.0.0.1:$CASSANDRA_PORT (log: $CASSANDRA_STATE/cassandra.log; 20-60 s)"
  start_daemon cassandra "$CASSANDRA_STATE/cassandra.log" java \
    -Xms${CASSANDRA_HEAP:-1G} -Xmx${CASSANDRA_HEAP:-1G} -XX:+UseG1GC -XX:+HeapDumpOnOutOfMemoryError -Xss512k \
    "${module_flags[@]}" ${jamm:+-javaagent:$jamm} \
    -Dcassandra.config="file://$CASSANDRA_STATE/cassandra.yaml" \
    -Dcassandra.storagedir="$CASSANDRA_STATE" \
    -Dcassandra.logdir="$CASSANDRA_STATE/logs" \
    -Dcassandra-foreground=yes \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.load_ring_state=false \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -Dcassandra.jmx.local.port=${CASSANDRA_JMX_PORT:-7199} \
    -Dlogback.configurationFile="$RTDP_ROOT/dev/cassandra/logback.xml" \
    -Djna.tmpdir="$CASSANDRA_STATE/tmp" -Djava.io.tmpdir="$CASSANDRA_STATE/tmp" \
    -cp "$CASSANDRA_DIR/lib/*" org.apache.cassandra.service.CassandraDaemon
  wait_until cassandra "$CASSANDRA_STATE/cassandra.log" 180 cassandra_ready
}

cassandra_down() { stop_daemon cassandra; }
