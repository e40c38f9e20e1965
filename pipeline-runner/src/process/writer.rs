//! Writing a record to every table of the Pipeline: one prepared, idempotent INSERT per
//! table, bound with the record's values and its Kafka timestamp.

use std::sync::Arc;

use futures::future::join_all;
use rtdp_crds::{PipelineSpec, WriteConsistency};
use rtdp_provisioning::cassandra::table_definitions;
use scylla::client::session::Session;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::serialize::SerializationError;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::value::SerializeValue;
use scylla::serialize::writers::RowWriter;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;

use crate::error::RunnerError;

/// One table's prepared INSERT and where its columns come from.
#[derive(Debug)]
struct PreparedTable {
    /// `keyspace.table`, named in a rejection.
    qualified_name: String,
    statement: PreparedStatement,
    /// For each column of the INSERT, its index in the record's values.
    value_indexes: Vec<usize>,
}

/// The prepared INSERTs of every table, shared by all write tasks.
#[derive(Debug, Clone)]
pub struct TableWriter {
    session: Arc<Session>,
    tables: Arc<Vec<PreparedTable>>,
}

impl TableWriter {
    /// Prepares one INSERT per table (once, at start). `value_names` are the names of a
    /// record's values: the schema fields, then the derived fields.
    pub async fn prepare(
        session: Arc<Session>,
        spec: &PipelineSpec,
        value_names: &[String],
    ) -> Result<Self, RunnerError> {
        let mut tables = Vec::new();
        for table in table_definitions(spec) {
            let value_indexes = table
                .columns
                .iter()
                .map(|column| {
                    value_names
                        .iter()
                        .position(|name| *name == column.name)
                        .ok_or_else(|| {
                            RunnerError::Config(format!(
                                "table {} stores column {}, which is neither a field nor a derived field",
                                table.qualified_name(),
                                column.name
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut statement = session.prepare(table.insert_cql()).await.map_err(|error| {
                RunnerError::CassandraUnavailable {
                    context: format!(
                        "preparing the INSERT into {} (does the table exist with these columns?)",
                        table.qualified_name()
                    ),
                    message: error.to_string(),
                }
            })?;
            // The same row with the same timestamp: retrying can never change the outcome.
            statement.set_is_idempotent(true);
            statement.set_consistency(consistency(table.consistency));
            tables.push(PreparedTable {
                qualified_name: table.qualified_name(),
                statement,
                value_indexes,
            });
        }
        Ok(Self {
            session,
            tables: Arc::new(tables),
        })
    }

    /// Writes one record to every table, concurrently; `timestamp_micros` becomes the cells'
    /// write time. Every table's write runs to its end, so the outcome says whether anything
    /// is worth retrying: a transient failure anywhere wins over a rejection (retrying the
    /// whole record is safe, each INSERT is idempotent), and a record is rejected only when
    /// nothing transient stands in its way.
    pub async fn write(
        &self,
        values: &[Option<CqlValue>],
        timestamp_micros: i64,
    ) -> Result<(), WriteFailure> {
        let writes = self.tables.iter().map(|table| {
            let row = TableRow {
                values,
                value_indexes: &table.value_indexes,
                timestamp_micros,
            };
            let session = &self.session;
            async move {
                session
                    .execute_unpaged(&table.statement, row)
                    .await
                    .map_err(|error| (table.qualified_name.as_str(), error))
            }
        });
        let mut rejection = None;
        for result in join_all(writes).await {
            let Err((table, error)) = result else {
                continue;
            };
            match rejection_message(&error) {
                None => return Err(WriteFailure::Transient(error)),
                Some(message) => {
                    rejection.get_or_insert(WriteFailure::Rejected {
                        table: table.to_string(),
                        message,
                        kind: error_kind(&error),
                    });
                }
            }
        }
        rejection.map_or(Ok(()), Err)
    }

    /// Tables written per record.
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }
}

/// One table's row of a record: its columns' values, borrowed from the record's values in
/// the INSERT's order, then the write time. Serialized straight into the request, with no
/// copy of the record's values per table.
struct TableRow<'a> {
    values: &'a [Option<CqlValue>],
    value_indexes: &'a [usize],
    timestamp_micros: i64,
}

/// Why a table's row could not be serialized.
#[derive(Debug, thiserror::Error)]
enum RowError {
    /// The prepared INSERT does not have the columns the row was built for.
    #[error("the INSERT has {found} bind markers, the row {expected} values")]
    ColumnCount { expected: usize, found: usize },
    /// A value of the record does not fit its column as Cassandra declares it.
    #[error("failed to serialize column {column}: {error}")]
    Column {
        column: String,
        error: SerializationError,
    },
}

impl SerializeRow for TableRow<'_> {
    fn serialize(
        &self,
        context: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> Result<(), SerializationError> {
        let columns = context.columns();
        let Some((timestamp_column, value_columns)) = columns
            .split_last()
            .filter(|(_, value_columns)| value_columns.len() == self.value_indexes.len())
        else {
            return Err(SerializationError::new(RowError::ColumnCount {
                expected: self.value_indexes.len() + 1,
                found: columns.len(),
            }));
        };
        for (column, index) in value_columns.iter().zip(self.value_indexes) {
            let value: Option<&CqlValue> = self.values.get(*index).and_then(Option::as_ref);
            value
                .serialize(column.typ(), writer.make_cell_writer())
                .map_err(column_error(column.name()))?;
        }
        self.timestamp_micros
            .serialize(timestamp_column.typ(), writer.make_cell_writer())
            .map_err(column_error(timestamp_column.name()))?;
        Ok(())
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// A column's value that could not be serialized, named after the column.
fn column_error(column: &str) -> impl FnOnce(SerializationError) -> SerializationError + '_ {
    move |error| {
        SerializationError::new(RowError::Column {
            column: column.to_string(),
            error,
        })
    }
}

pub(super) fn consistency(consistency: WriteConsistency) -> Consistency {
    match consistency {
        WriteConsistency::One => Consistency::One,
        WriteConsistency::LocalOne => Consistency::LocalOne,
        WriteConsistency::Quorum => Consistency::Quorum,
        WriteConsistency::LocalQuorum => Consistency::LocalQuorum,
        WriteConsistency::EachQuorum => Consistency::EachQuorum,
        WriteConsistency::All => Consistency::All,
    }
}

/// Why a record's write failed, and so what happens next.
#[derive(Debug)]
pub enum WriteFailure {
    /// Cassandra, or the way to it, failed: the record is fine, so it is retried (and
    /// consumption pauses) until a write succeeds.
    Transient(ExecutionError),
    /// Cassandra answered the read of an identity's state with something that is not its
    /// row (the table being repaired, say): retried like an outage, never guessed.
    StateUnreadable(String),
    /// Cassandra (or the driver, before sending) refused this record's values, e.g. a null
    /// or oversized key: retrying can never succeed, so the record is dead-lettered.
    Rejected {
        /// The table that refused the row.
        table: String,
        /// The server's message, byte for byte (or the driver's, when it refused first).
        message: String,
        /// The metric label of the error.
        kind: &'static str,
    },
}

/// A metric label for a failed write.
pub fn error_kind(error: &ExecutionError) -> &'static str {
    match error {
        ExecutionError::BadQuery(_) => "bad_values",
        ExecutionError::ConnectionPoolError(_) => "no_connection",
        ExecutionError::RequestTimeout(_) => "timeout",
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db_error, _)) => {
            match db_error {
                DbError::Unavailable { .. } => "unavailable",
                DbError::WriteTimeout { .. } => "write_timeout",
                DbError::Overloaded => "overloaded",
                DbError::Invalid => "invalid",
                _ => "server_error",
            }
        }
        ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(_)) => {
            "broken_connection"
        }
        _ => "other",
    }
}

/// Messages of `Invalid` errors that are about the schema, not the record: a table or column
/// missing while the operator repairs the schema. Every record would fail the same way, so
/// they are waited out like an outage instead of dead-lettering the whole stream.
const SCHEMA_PROBLEMS: [&str; 4] = [
    "unconfigured table",
    "undefined column",
    "unknown identifier",
    "does not exist",
];

/// The message to dead-letter a record with when `error` is a permanent refusal of its
/// values; `None` when the error is transient (anything about availability, time-outs,
/// connections, overload, authentication or the schema itself).
pub fn rejection_message(error: &ExecutionError) -> Option<String> {
    match error {
        // The driver refused to serialise or route these values: no server would take them.
        ExecutionError::BadQuery(bad_query) => Some(bad_query.to_string()),
        ExecutionError::LastAttemptError(RequestAttemptError::SerializationError(error)) => {
            Some(error.to_string())
        }
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Invalid,
            message,
        )) => {
            let lowercase = message.to_lowercase();
            (!SCHEMA_PROBLEMS
                .iter()
                .any(|problem| lowercase.contains(problem)))
            .then(|| message.clone())
        }
        _ => None,
    }
}

/// Timestamps that order a partition's writes: the write time of a record is its Kafka
/// timestamp in microseconds, raised where needed to one microsecond above the previous
/// record of its partition. So a later offset of a partition always gets a strictly later
/// write time (Cassandra keeps the cell with the latest write time), however many records
/// share a millisecond and whatever the clocks did.
///
/// The chain is carried across restarts and rebalances in the committed offset's metadata
/// (see [`rtdp_crds::CommittedProgress`]). A replay commits, with the offset it moves back to,
/// a floor above every write time given so far, so replayed records overwrite what the first
/// run wrote (a fixed transform corrects the rows) while records produced after them still
/// win. A consumer starting anywhere else (a reset by another tool) restarts the chain from
/// the Kafka timestamps.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteClock {
    /// The write time of the last record of the partition, in microseconds.
    last_micros: i64,
}

impl WriteClock {
    /// The chain resumed where a committed offset left it: `last_micros` is the write time of
    /// the record just before that offset (see [`rtdp_crds::CommittedProgress`]).
    pub fn resumed_at(last_micros: i64) -> Self {
        Self { last_micros }
    }

    /// The write time of the last record given one, to commit with the next offset.
    pub fn last_micros(self) -> i64 {
        self.last_micros
    }

    /// The write time of the next record of the partition, whose Kafka timestamp is
    /// `kafka_timestamp_millis`.
    pub fn next(&mut self, kafka_timestamp_millis: i64) -> i64 {
        let micros = kafka_timestamp_millis
            .saturating_mul(1000)
            .max(self.last_micros.saturating_add(1));
        self.last_micros = micros;
        micros
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_offsets_in_the_same_millisecond_win_however_many_there_are() {
        let mut clock = WriteClock::default();
        let times: Vec<i64> = (0..2_500).map(|_| clock.next(1_000)).collect();
        // Offsets 999 and 1000 (and 1999 and 2000) in one millisecond: the old
        // `millis * 1000 + offset % 1000` gave offset 1000 a lower time than offset 999.
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(times[999] < times[1000]);
        assert_eq!(times[0], 1_000_000);
    }

    #[test]
    fn a_clock_going_back_never_reorders_a_partition() {
        let mut clock = WriteClock::default();
        let first = clock.next(5_000);
        let earlier_clock = clock.next(4_000);
        assert!(
            earlier_clock > first,
            "a later offset wins even with an earlier timestamp"
        );
        assert_eq!(
            clock.next(6_000),
            6_000_000,
            "the chain rejoins the Kafka time"
        );
    }

    #[test]
    fn the_chain_survives_a_restart_through_commit_metadata() {
        let mut clock = WriteClock::default();
        clock.next(1_000);
        let before_restart = clock.next(1_000);
        let committed = rtdp_crds::CommittedProgress {
            write_time_micros: Some(clock.last_micros()),
            ..Default::default()
        };
        let parsed = rtdp_crds::CommittedProgress::parse(&committed.encode());
        let mut resumed =
            WriteClock::resumed_at(parsed.write_time_micros.expect("the clock is committed"));
        assert!(resumed.next(1_000) > before_restart);
    }
}
