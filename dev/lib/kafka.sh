# Apache Kafka (single-node KRaft) from Maven Central jars.

KAFKA_DIR="$RTDP_CACHE/kafka-$KAFKA_VERSION"
KAFKA_STATE="$RTDP_STATE/kafka"

_resolve_kafka() {
  log "resolving Apache Kafka $KAFKA_VERSION from Maven Central (cached in $KAFKA_DIR)"
  rm -rf "$KAFKA_DIR/lib.partial"
  mvn -B -q -Dstyle.color=never -f "$RTDP_ROOT/dev/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_DIR/lib.partial" ||
    die "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION with Maven failed (see above)"
  mv "$KAFKA_DIR/lib.partial" "$KAFKA_DIR/lib"
}

kafka_build() {
  require_command java "install a Java 17+ JDK (apt-get install openjdk-17-jdk-headless)"
  require_command mvn "install Maven (apt-get install maven)"
  build_once "$KAFKA_DIR" "$KAFKA_DIR/lib" _resolve_kafka
}

kafka_ready() {
  port_in_use "$KAFKA_PORT" && grep -q "Kafka Server started" "$KAFKA_STATE/kafka.log"
}

kafka_up() {
  if pid_alive kafka; then
    log "kafka already running (pid $(cat "$KAFKA_STATE/pid")) on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  ensure_port_free kafka "$KAFKA_PORT" KAFKA_PORT
  ensure_port_free kafka-controller "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT
  kafka_build
  mkdir -p "$KAFKA_STATE/data"
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@DATA_DIR@|$KAFKA_STATE/data|g" "$RTDP_ROOT/dev/kafka/server.properties.in" >"$KAFKA_STATE/server.properties"
  local java_options=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$RTDP_ROOT/dev/kafka/log4j2.properties" -cp "$KAFKA_DIR/lib/*")
  if [ ! -f "$KAFKA_STATE/data/meta.properties" ]; then
    log "formatting Kafka storage in $KAFKA_STATE/data"
    java "${java_options[@]}" kafka.tools.StorageTool format --ignore-formatted \
      --cluster-id "$(java "${java_options[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)" \
      --config "$KAFKA_STATE/server.properties" >"$KAFKA_STATE/format.log" 2>&1 ||
      { tail -n 20 "$KAFKA_STATE/format.log" >&2; die "formatting Kafka storage failed"; }
  fi
  : >"$KAFKA_STATE/kafka.log"
  log "starting kafka on 127.0.0.1:$KAFKA_PORT (log: $KAFKA_STATE/kafka.log)"
  start_daemon kafka "$KAFKA_STATE/kafka.log" java "${java_options[@]}" kafka.Kafka "$KAFKA_STATE/server.properties"
  wait_until kafka "$KAFKA_STATE/kafka.log" 120 kafka_ready
}

kafka_down() { stop_daemon kafka; }
