//! Writing a record to every table of the Pipeline: one prepared, idempotent INSERT per
//! table, bound with the record's values and its Kafka timestamp.

use std::sync::Arc;

use futures::future::try_join_all;
use rtdp_crds::{PipelineSpec, WriteConsistency};
use rtdp_provisioning::cassandra::table_definitions;
use scylla::client::session::Session;
use scylla::errors::{ExecutionError, RequestAttemptError};
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;

use crate::error::RunnerError;

/// One table's prepared INSERT and where its columns come from.
#[derive(Debug)]
struct PreparedTable {
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
    /// write time.
    pub async fn write(
        &self,
        values: &[Option<CqlValue>],
        timestamp_micros: i64,
    ) -> Result<(), ExecutionError> {
        let writes = self.tables.iter().map(|table| {
            let mut row: Vec<Option<CqlValue>> = table
                .value_indexes
                .iter()
                .map(|index| values.get(*index).cloned().flatten())
                .collect();
            row.push(Some(CqlValue::BigInt(timestamp_micros)));
            let session = &self.session;
            async move { session.execute_unpaged(&table.statement, row).await }
        });
        try_join_all(writes).await.map(|_| ())
    }

    /// Tables written per record.
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }
}

fn consistency(consistency: WriteConsistency) -> Consistency {
    match consistency {
        WriteConsistency::One => Consistency::One,
        WriteConsistency::LocalOne => Consistency::LocalOne,
        WriteConsistency::Quorum => Consistency::Quorum,
        WriteConsistency::LocalQuorum => Consistency::LocalQuorum,
        WriteConsistency::EachQuorum => Consistency::EachQuorum,
        WriteConsistency::All => Consistency::All,
    }
}

/// A metric label for a failed write.
pub fn error_kind(error: &ExecutionError) -> &'static str {
    match error {
        ExecutionError::ConnectionPoolError(_) => "no_connection",
        ExecutionError::RequestTimeout(_) => "timeout",
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db_error, _)) => {
            use scylla::errors::DbError;
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

/// The write timestamp of a Kafka record, in microseconds: its milliseconds, with the
/// offset's last three digits as sub-millisecond ticks, so two updates of one key in the same
/// millisecond keep their order (the later offset wins) on every replay.
pub fn write_timestamp_micros(kafka_timestamp_millis: i64, offset: i64) -> i64 {
    kafka_timestamp_millis
        .saturating_mul(1000)
        .saturating_add(offset.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_offsets_in_the_same_millisecond_win() {
        assert!(write_timestamp_micros(1_000, 41) < write_timestamp_micros(1_000, 42));
        assert!(write_timestamp_micros(1_000, 999) < write_timestamp_micros(1_001, 0));
        assert_eq!(write_timestamp_micros(2, 7), 2_007);
    }
}
