# shellcheck shell=bash
# The secured side of the local stack (docs/development.md, "The local stack"):
# - Kafka's SASL_SSL listener (SCRAM-SHA-512 over TLS) is part of the one broker (kafka.sh);
# - cassandra-secured: a second single-node Cassandra with PasswordAuthenticator on its own
#   ports and state directory and a small heap, not in `dev/stack up` without arguments: the
#   tests that need it start it (`dev/stack up cassandra-secured`); `dev/stack run` and
#   `dev/stack down` stop it.

CASSANDRA_SECURED_STATE="$RTDP_STATE/cassandra-secured"

cassandra-secured_build() { cassandra_build; }

cassandra-secured_up() {
  _cassandra_start cassandra-secured "$CASSANDRA_SECURED_STATE" "$CASSANDRA_SECURED_PORT" \
    "$CASSANDRA_SECURED_STORAGE_PORT" "$CASSANDRA_SECURED_JMX_PORT" PasswordAuthenticator \
    rtdp-local-secured "${CASSANDRA_SECURED_HEAP:-512M}" CASSANDRA_SECURED || return 1
  log "creating the Cassandra role $CASSANDRA_SECURED_USERNAME (via the default superuser)"
  RTDP_ROLE_NAME="$CASSANDRA_SECURED_USERNAME" RTDP_ROLE_PASSWORD="$CASSANDRA_SECURED_PASSWORD" \
    java -cp "$CASSANDRA_DIR/lib/*" "$RTDP_ROOT/dev/cassandra/CreateRole.java" 127.0.0.1 "$CASSANDRA_SECURED_PORT" \
    >"$CASSANDRA_SECURED_STATE/create-role.log" 2>&1 ||
    { tail -n 20 "$CASSANDRA_SECURED_STATE/create-role.log" >&2; die "creating the Cassandra role failed"; }
}

cassandra-secured_down() { stop_daemon cassandra-secured; }
