# shellcheck shell=bash
# Apache Kafka (single-node KRaft) from Maven Central jars.

KAFKA_DIR="$RTDP_CACHE/kafka-$KAFKA_VERSION"
KAFKA_STATE="$RTDP_STATE/kafka"

kafka_build() {
  build_maven_jars "Apache Kafka" "$KAFKA_VERSION" "$KAFKA_DIR" "$RTDP_ROOT/dev/kafka/pom.xml" \
    kafka.version org.apache.kafka:kafka_2.13
}

kafka_ready() {
  port_in_use "$KAFKA_PORT" && port_in_use "$KAFKA_SECURE_PORT" && port_in_use "$KAFKA_MTLS_PORT" && grep -q "Kafka Server started" "$KAFKA_STATE/kafka.log"
}

# The SASL_SSL listener's TLS material: a CA and a server certificate for 127.0.0.1 and
# localhost, made once per state directory; the keystore is PEM (key + chain), no keytool.
KAFKA_PKI="$KAFKA_STATE/pki"
KAFKA_CA_FILE="$KAFKA_PKI/ca.crt"
_kafka_certificates() {
  [ -f "$KAFKA_PKI/kafka-keystore.pem" ] && return 0
  require_command openssl "apt-get install openssl"
  mkdir -p "$KAFKA_PKI"
  log "creating Kafka TLS certificates in $KAFKA_PKI"
  (
    cd "$KAFKA_PKI" || exit 1
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=rtdp-local-kafka-ca" \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout kafka.key -out kafka.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >kafka.ext
    openssl x509 -req -in kafka.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile kafka.ext -out kafka.crt
    # PKCS#8, unencrypted: what Kafka's PEM keystore reads without ssl.key.password.
    openssl pkcs8 -topk8 -nocrypt -in kafka.key -out kafka.pk8
    cat kafka.pk8 kafka.crt ca.crt >kafka-keystore.pem.partial
    mv kafka-keystore.pem.partial kafka-keystore.pem
  ) >"$KAFKA_STATE/pki.log" 2>&1 || { tail -n 20 "$KAFKA_STATE/pki.log" >&2; die "creating Kafka certificates with openssl failed"; }
}

# The MTLS listener's client: a certificate (CN=rtdp-local-client, clientAuth) signed by the
# same CA, with its PKCS#8 key, made once per state directory (also for a state directory
# whose CA predates it).
# shellcheck disable=SC2034 # exported by dev/stack env
KAFKA_CLIENT_CERTIFICATE_FILE="$KAFKA_PKI/client.crt"
KAFKA_CLIENT_KEY_FILE="$KAFKA_PKI/client.key"
_kafka_client_certificate() {
  [ -f "$KAFKA_CLIENT_KEY_FILE" ] && return 0
  (
    cd "$KAFKA_PKI" || exit 1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=rtdp-local-client" -keyout client.rsa -out client.csr
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out client.crt
    openssl pkcs8 -topk8 -nocrypt -in client.rsa -out client.key.partial
    mv client.key.partial client.key
  ) >"$KAFKA_STATE/pki-client.log" 2>&1 || { tail -n 20 "$KAFKA_STATE/pki-client.log" >&2; die "creating the Kafka client certificate with openssl failed"; }
}

# The SCRAM-SHA-512 user of the SASL_SSL listener, set (idempotently) through the broker's
# own admin tool over the PLAINTEXT listener. The password never reaches a log file.
_kafka_scram_user() {
  java -Dlog4j2.configurationFile="$RTDP_ROOT/dev/kafka/log4j2.properties" -cp "$KAFKA_DIR/lib/*" \
    kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
    --add-config "SCRAM-SHA-512=[iterations=4096,password=$KAFKA_SASL_PASSWORD]" \
    --entity-type users --entity-name "$KAFKA_SASL_USERNAME" >"$KAFKA_STATE/scram.log" 2>&1 ||
    { tail -n 20 "$KAFKA_STATE/scram.log" >&2; die "creating the Kafka SCRAM user $KAFKA_SASL_USERNAME failed"; }
}

kafka_up() {
  if pid_alive kafka; then
    log "kafka already running (pid $(cat "$KAFKA_STATE/pid")) on 127.0.0.1:$KAFKA_PORT"
    port_in_use "$KAFKA_SECURE_PORT" ||
      log "warning: its SASL_SSL listener 127.0.0.1:$KAFKA_SECURE_PORT is not up (started by an older dev/stack?); 'dev/stack down kafka && dev/stack up kafka' restarts it"
    port_in_use "$KAFKA_MTLS_PORT" ||
      log "warning: its mTLS listener 127.0.0.1:$KAFKA_MTLS_PORT is not up (started by an older dev/stack?); 'dev/stack down kafka && dev/stack up kafka' restarts it"
    return 0
  fi
  ensure_port_free kafka "$KAFKA_PORT" KAFKA_PORT
  ensure_port_free kafka-controller "$KAFKA_CONTROLLER_PORT" KAFKA_CONTROLLER_PORT
  ensure_port_free kafka-sasl-ssl "$KAFKA_SECURE_PORT" KAFKA_SECURE_PORT
  ensure_port_free kafka-mtls "$KAFKA_MTLS_PORT" KAFKA_MTLS_PORT
  kafka_build
  _kafka_certificates
  _kafka_client_certificate
  mkdir -p "$KAFKA_STATE/data"
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@KAFKA_SECURE_PORT@|$KAFKA_SECURE_PORT|g" -e "s|@KAFKA_MTLS_PORT@|$KAFKA_MTLS_PORT|g" -e "s|@PKI_DIR@|$KAFKA_PKI|g" \
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
  wait_until kafka "$KAFKA_STATE/kafka.log" 120 kafka_ready || return 1
  _kafka_scram_user
  log "kafka SASL_SSL (SCRAM-SHA-512) on 127.0.0.1:$KAFKA_SECURE_PORT, mTLS on 127.0.0.1:$KAFKA_MTLS_PORT, CA $KAFKA_CA_FILE"
}

kafka_down() { stop_daemon kafka; }
