//! One row per identity (`spec.schema.identity`): every table shows each identity once, at its
//! latest record's values, and an identity that is gone leaves every table.
//!
//! A table whose primary key holds more than the identity (`listings_by_city`, clustered by
//! price) gets a new row when a listing is re-priced; the old one must be deleted. Its key
//! values are kept in the state table (one row per identity: the moving tables' key columns as
//! the latest record had them, that record's write time, whether it deleted the identity),
//! cached per process. One consumer owns a partition, and one identity lives on one partition
//! (its records share a Kafka key), so the cache holds what the state table holds; it is
//! dropped whenever a partition is assigned, since another processor may have moved on.
//!
//! A record with write time T, under its identity's lock (records of one identity apply one
//! at a time, in any order):
//! 1. read the state (cache, else the state table); a state written at T or later means this
//!    record is superseded (or was applied already before a crash): nothing to do;
//! 2. write its rows at T (or, for a delete, delete every row at T);
//! 3. delete at T each moving table's row at the state's old keys, when they differ;
//! 4. write the state at T, last: a crash before it re-runs 2–3 with the same T on
//!    re-delivery, which changes nothing that already happened (every statement is
//!    idempotent at a fixed timestamp).
//!
//! Cassandra keeps the cell or tombstone with the highest timestamp (a tombstone wins a tie),
//! so the order in which these statements land never matters, and an older record can neither
//! resurrect a deleted row nor delete a newer one.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::join_all;
use lru::LruCache;
use rtdp_crds::{CqlType, Pipeline, WriteConsistency};
use rtdp_provisioning::cassandra::{
    STATE_DELETED, STATE_WRITE_TIME, TableDefinition, state_table_definition, table_definitions,
};
use scylla::client::session::Session;
use scylla::errors::ExecutionError;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;
use tokio::sync::OwnedMutexGuard;

use super::writer::{TableWriter, WriteFailure, consistency, error_kind, rejection_message};
use crate::error::RunnerError;
use crate::record::{RecordError, RejectReason, convert_key};

/// Identities whose state one process keeps in memory (about 100 bytes each); beyond it the
/// least recently used are read from the state table again when their next record comes.
const CACHED_IDENTITIES: usize = 65_536;

/// What a record does to its identity.
#[derive(Debug)]
pub enum Change {
    /// Its values become the identity's row in every table.
    Upsert(Vec<Option<CqlValue>>),
    /// The identity is gone (`deleteWhen`, a tombstone, or a record the filter skips).
    Delete,
}

/// What applying a record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Its rows were written (and superseded rows deleted).
    Upserted,
    /// The identity's rows were deleted.
    Deleted,
    /// The identity's state is as new or newer: nothing was written.
    Superseded,
}

/// An identity's latest state: what the state table holds.
#[derive(Clone, Debug, PartialEq)]
struct State {
    /// The write time of the identity's latest record.
    write_time: i64,
    /// The moving tables' key columns as that record had them (`None` once deleted); a
    /// column is `None` where the state predates it.
    keys: Option<Vec<Option<CqlValue>>>,
}

/// Where a primary key column's value comes from.
#[derive(Clone, Copy, Debug)]
enum KeySource {
    /// The identity's value at this index.
    Identity(usize),
    /// The state's key column at this index.
    State(usize),
}

/// A table's DELETE of one row, and where its key values come from.
#[derive(Debug)]
struct TableDelete {
    qualified_name: String,
    /// `DELETE FROM t USING TIMESTAMP ? WHERE <primary key> = ?...`
    statement: PreparedStatement,
    /// For each primary key column, in the statement's order.
    sources: Vec<KeySource>,
    /// For each primary key column: its index in a record's values.
    value_indexes: Vec<usize>,
    /// True when the primary key holds more than the identity.
    moving: bool,
}

/// The state table's statements.
#[derive(Debug)]
struct StateTable {
    qualified_name: String,
    select: PreparedStatement,
    upsert: PreparedStatement,
    /// For each of the state's key columns: its index in a record's values.
    value_indexes: Vec<usize>,
}

/// Applies records to every table keeping one row per identity.
#[derive(Debug)]
pub struct IdentityWriter {
    session: Arc<Session>,
    /// The identity fields' indexes in a record's values, and their types (for tombstones).
    identity_indexes: Vec<usize>,
    identity_types: Vec<CqlType>,
    tables: Vec<TableDelete>,
    state: Option<StateTable>,
    cache: Mutex<LruCache<String, State>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl IdentityWriter {
    /// Prepares the DELETEs and the state table's statements (once, at start); `None` when the
    /// Pipeline declares no identity.
    pub async fn prepare(
        session: Arc<Session>,
        pipeline: &Pipeline,
        value_names: &[String],
    ) -> Result<Option<Self>, RunnerError> {
        let identity = pipeline.identity_fields();
        if identity.is_empty() {
            return Ok(None);
        }
        let index_of = |name: &str| {
            value_names
                .iter()
                .position(|value_name| value_name == name)
                .ok_or_else(|| {
                    RunnerError::Config(format!(
                        "{name} is neither a field nor a derived field of spec.schema"
                    ))
                })
        };
        let identity_indexes = identity
            .iter()
            .map(|name| index_of(name))
            .collect::<Result<Vec<_>, _>>()?;
        let identity_types = identity
            .iter()
            .map(|name| {
                pipeline
                    .spec
                    .schema
                    .fields
                    .iter()
                    .find(|field| field.name == *name)
                    .map(|field| field.type_)
                    .ok_or_else(|| {
                        RunnerError::Config(format!(
                            "identity field {name} is not declared in spec.schema.fields"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let state_definition = state_table_definition(pipeline);
        // The state's key columns: the state table's columns after the identity, before its
        // own two.
        let state_keys: Vec<String> = state_definition
            .as_ref()
            .map(|definition| {
                definition
                    .columns
                    .iter()
                    .skip(identity.len())
                    .map(|column| column.name.clone())
                    .filter(|name| name != STATE_WRITE_TIME && name != STATE_DELETED)
                    .collect()
            })
            .unwrap_or_default();
        let mut tables = Vec::new();
        for table in table_definitions(&pipeline.spec) {
            let primary_key = primary_key(&table);
            let moving = primary_key.iter().any(|column| !identity.contains(column));
            let sources = primary_key
                .iter()
                .map(|column| match identity.iter().position(|name| name == column) {
                    Some(index) => Ok(KeySource::Identity(index)),
                    None => state_keys
                        .iter()
                        .position(|name| name == column)
                        .map(KeySource::State)
                        .ok_or_else(|| {
                            RunnerError::Config(format!(
                                "key column {column} of {} is missing from the identity's state table",
                                table.qualified_name()
                            ))
                        }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let value_indexes = primary_key
                .iter()
                .map(|column| index_of(column))
                .collect::<Result<Vec<_>, _>>()?;
            let conditions: Vec<String> = primary_key
                .iter()
                .map(|column| format!("{column} = ?"))
                .collect();
            let cql = format!(
                "DELETE FROM {} USING TIMESTAMP ? WHERE {}",
                table.qualified_name(),
                conditions.join(" AND ")
            );
            let statement = prepare(&session, cql, table.consistency, &table).await?;
            tables.push(TableDelete {
                qualified_name: table.qualified_name(),
                statement,
                sources,
                value_indexes,
                moving,
            });
        }
        let state = match &state_definition {
            None => None,
            Some(definition) => {
                let conditions: Vec<String> = identity
                    .iter()
                    .map(|column| format!("{column} = ?"))
                    .collect();
                let mut selected = state_keys.clone();
                selected.push(STATE_WRITE_TIME.to_string());
                selected.push(STATE_DELETED.to_string());
                let select = format!(
                    "SELECT {} FROM {} WHERE {}",
                    selected.join(", "),
                    definition.qualified_name(),
                    conditions.join(" AND ")
                );
                let select = prepare(&session, select, definition.consistency, definition).await?;
                let upsert = prepare(
                    &session,
                    definition.insert_cql(),
                    definition.consistency,
                    definition,
                )
                .await?;
                let value_indexes = state_keys
                    .iter()
                    .map(|column| index_of(column))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(StateTable {
                    qualified_name: definition.qualified_name(),
                    select,
                    upsert,
                    value_indexes,
                })
            }
        };
        Ok(Some(Self {
            session,
            identity_indexes,
            identity_types,
            tables,
            state,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHED_IDENTITIES).unwrap_or(NonZeroUsize::MIN),
            )),
            locks: Mutex::new(HashMap::new()),
        }))
    }

    /// Statements per record beyond the tables' INSERTs (the state's write), for bounding the
    /// requests in flight.
    pub fn extra_statements(&self) -> usize {
        usize::from(self.state.is_some())
    }

    /// The identity of a parsed record.
    pub fn identity_of(&self, values: &[Option<CqlValue>]) -> Option<Vec<CqlValue>> {
        self.identity_indexes
            .iter()
            .map(|index| values.get(*index).cloned().flatten())
            .collect()
    }

    /// The identity a tombstone's Kafka key names: the identity field's value as text (as an
    /// HTTP source's `keyField` writes it).
    pub fn identity_of_key(&self, key: Option<&[u8]>) -> Result<Vec<CqlValue>, RecordError> {
        let invalid = |detail: String| RecordError {
            reason: RejectReason::InvalidKey,
            field: None,
            table: None,
            detail,
        };
        let [cql_type] = self.identity_types.as_slice() else {
            return Err(invalid(format!(
                "a tombstone's key names one field's value; this identity has {} fields, so send the record with its fields and a deleteWhen condition instead",
                self.identity_types.len()
            )));
        };
        let key = key.ok_or_else(|| {
            invalid("a tombstone without a key names no identity to delete".to_string())
        })?;
        let text = std::str::from_utf8(key)
            .map_err(|error| invalid(format!("the key is not UTF-8: {error}")))?;
        convert_key(text, *cql_type)
            .map(|value| vec![value])
            .map_err(|detail| invalid(format!("the key {text:?} is not the identity: {detail}")))
    }

    /// Forgets every cached state: a partition was assigned, and another processor may have
    /// applied its records since this one last owned it.
    pub fn forget_cached(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Takes the identity's lock: records of one identity apply one at a time.
    pub async fn lock(&self, identity: &[CqlValue]) -> IdentityLock<'_> {
        let key = identity_key(identity);
        let lock = Arc::clone(
            self.locks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key.clone())
                .or_default(),
        );
        let guard = Arc::clone(&lock).lock_owned().await;
        IdentityLock {
            writer: self,
            key,
            lock,
            guard: Some(guard),
        }
    }

    /// Applies one record to every table (see the module's steps). Retrying after a
    /// transient failure is safe: every statement is idempotent at `write_time`.
    pub async fn apply(
        &self,
        tables: &TableWriter,
        lock: &IdentityLock<'_>,
        identity: &[CqlValue],
        change: &Change,
        write_time: i64,
    ) -> Result<Applied, WriteFailure> {
        let previous = self.state_of(&lock.key, identity).await?;
        if previous
            .as_ref()
            .is_some_and(|state| state.write_time >= write_time)
        {
            return Ok(Applied::Superseded);
        }
        let old_keys = previous.as_ref().and_then(|state| state.keys.as_deref());
        let deletes: Vec<(&TableDelete, Vec<Option<CqlValue>>)> = match change {
            Change::Upsert(values) => {
                tables.write(values, write_time).await?;
                // The superseded rows: a moving table's row at the old keys, when they differ.
                self.tables
                    .iter()
                    .filter(|table| table.moving)
                    .filter_map(|table| {
                        let old = table.key_at(identity, old_keys?)?;
                        let new: Vec<Option<CqlValue>> = table
                            .value_indexes
                            .iter()
                            .map(|index| values.get(*index).cloned().flatten())
                            .collect();
                        (old != new).then_some((table, old))
                    })
                    .collect()
            }
            Change::Delete => self
                .tables
                .iter()
                .filter_map(|table| {
                    if table.moving {
                        Some((table, table.key_at(identity, old_keys?)?))
                    } else {
                        Some((table, table.key_at(identity, &[])?))
                    }
                })
                .collect(),
        };
        let deleting = deletes.iter().map(|(table, key)| {
            let mut row: Vec<Option<CqlValue>> = Vec::with_capacity(key.len() + 1);
            row.push(Some(CqlValue::BigInt(write_time)));
            row.extend(key.iter().cloned());
            async move {
                self.session
                    .execute_unpaged(&table.statement, row)
                    .await
                    .map_err(|error| failure(&table.qualified_name, error))
            }
        });
        for result in join_all(deleting).await {
            result?;
        }
        let state = State {
            write_time,
            keys: match change {
                Change::Upsert(values) => Some(self.state_keys_of(values)),
                Change::Delete => None,
            },
        };
        if let Some(table) = &self.state {
            let mut row: Vec<Option<CqlValue>> = identity.iter().cloned().map(Some).collect();
            match &state.keys {
                Some(keys) => row.extend(keys.iter().cloned()),
                None => row.extend(std::iter::repeat_n(None, table.value_indexes.len())),
            }
            row.push(Some(CqlValue::BigInt(write_time)));
            row.push(Some(CqlValue::Boolean(state.keys.is_none())));
            row.push(Some(CqlValue::BigInt(write_time)));
            self.session
                .execute_unpaged(&table.upsert, row)
                .await
                .map_err(|error| failure("the identity's state table", error))?;
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(lock.key.clone(), state);
        }
        Ok(match change {
            Change::Upsert(_) => Applied::Upserted,
            Change::Delete => Applied::Deleted,
        })
    }

    /// The identity's state: cached, else read from the state table; `None` when it has none
    /// (or no table moves, so none is kept).
    async fn state_of(
        &self,
        key: &str,
        identity: &[CqlValue],
    ) -> Result<Option<State>, WriteFailure> {
        let Some(table) = &self.state else {
            return Ok(None);
        };
        if let Some(state) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Ok(Some(state.clone()));
        }
        let result = self
            .session
            .execute_unpaged(&table.select, identity)
            .await
            .map_err(WriteFailure::Transient)?;
        let unreadable = |error: String| {
            WriteFailure::StateUnreadable(format!(
                "reading the identity's state from {}: {error}",
                table.qualified_name
            ))
        };
        let rows = result
            .into_rows_result()
            .map_err(|error| unreadable(error.to_string()))?;
        let mut rows = rows
            .rows::<scylla::value::Row>()
            .map_err(|error| unreadable(error.to_string()))?;
        let Some(row) = rows.next() else {
            return Ok(None);
        };
        let row = row.map_err(|error| unreadable(error.to_string()))?;
        let mut columns = row.columns;
        let deleted = matches!(columns.pop().flatten(), Some(CqlValue::Boolean(true)));
        let Some(Some(CqlValue::BigInt(write_time))) = columns.pop() else {
            return Ok(None);
        };
        let state = State {
            write_time,
            keys: (!deleted).then_some(columns),
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(key.to_string(), state.clone());
        Ok(Some(state))
    }

    /// The state's key columns as `values` has them.
    fn state_keys_of(&self, values: &[Option<CqlValue>]) -> Vec<Option<CqlValue>> {
        self.state
            .as_ref()
            .map(|table| {
                table
                    .value_indexes
                    .iter()
                    .map(|index| values.get(*index).cloned().flatten())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TableDelete {
    /// This table's primary key for `identity` with the state's `keys`; `None` where a key
    /// column is unknown (the state predates it: no row was ever written there).
    fn key_at(
        &self,
        identity: &[CqlValue],
        keys: &[Option<CqlValue>],
    ) -> Option<Vec<Option<CqlValue>>> {
        self.sources
            .iter()
            .map(|source| match source {
                KeySource::Identity(index) => identity.get(*index).cloned().map(Some),
                KeySource::State(index) => keys.get(*index).cloned().flatten().map(Some),
            })
            .collect()
    }
}

/// An identity's lock, held while its record applies; released (and forgotten when nobody
/// waits) on drop.
#[derive(Debug)]
pub struct IdentityLock<'writer> {
    writer: &'writer IdentityWriter,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for IdentityLock<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .writer
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map's reference and this one: nobody else waits for it.
        if Arc::strong_count(&self.lock) <= 2 {
            locks.remove(&self.key);
        }
    }
}

/// The cache's and the locks' key for an identity's values.
fn identity_key(identity: &[CqlValue]) -> String {
    format!("{identity:?}")
}

fn primary_key(table: &TableDefinition) -> Vec<String> {
    table
        .partition_key
        .iter()
        .cloned()
        .chain(table.clustering.iter().map(|(name, _)| name.clone()))
        .collect()
}

async fn prepare(
    session: &Session,
    cql: String,
    level: WriteConsistency,
    table: &TableDefinition,
) -> Result<PreparedStatement, RunnerError> {
    let mut statement =
        session
            .prepare(cql)
            .await
            .map_err(|error| RunnerError::CassandraUnavailable {
                context: format!(
                    "preparing the identity's statements on {} (does the table exist with these columns?)",
                    table.qualified_name()
                ),
                message: error.to_string(),
            })?;
    // A fixed timestamp and fixed values: retrying can never change the outcome.
    statement.set_is_idempotent(true);
    statement.set_consistency(consistency(level));
    Ok(statement)
}

/// A failed DELETE or state write: transient unless Cassandra refused the values for good.
fn failure(table: &str, error: ExecutionError) -> WriteFailure {
    match rejection_message(&error) {
        Some(message) => WriteFailure::Rejected {
            table: table.to_string(),
            kind: error_kind(&error),
            message,
        },
        None => WriteFailure::Transient(error),
    }
}
