//! Applying the planned schema to a live Cassandra: reads `system_schema`, creates what is
//! missing, adds columns, sets a changed keyspace replication and table TTL, and alters nothing
//! unless every change is safe.

use std::collections::BTreeMap;

use scylla::client::session::Session;
use scylla::response::query_result::QueryRowsResult;
use scylla::serialize::row::SerializeRow;

use super::*;
use crate::ProvisionError;

/// What `ensure_schema` did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchemaReport {
    /// Tables created, as `keyspace.table`.
    pub created: Vec<String>,
    /// Columns added, as `keyspace.table.column`.
    pub added_columns: Vec<String>,
    /// The keyspace whose replication was changed to the declared one, as
    /// `keyspace (before → after)`. Existing data reaches new replicas only after a repair.
    pub replication_changed: Vec<String>,
    /// Tables whose default TTL was changed, as `keyspace.table (before → after seconds)`.
    /// Rows written before keep the TTL they were written with.
    pub ttl_changed: Vec<String>,
    /// With [`Replication::LeaveExisting`]: the keyspace whose replication differs from the
    /// declared one and was left as it is, as `keyspace (existing → declared)`.
    pub replication_left: Option<String>,
}

/// Whether `ensure_schema_with` may change an existing keyspace's replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// Set it to the declared one (the Pipeline owns the keyspace's replication).
    Apply,
    /// Leave it, and report the difference (another Pipeline owns it).
    LeaveExisting,
}

/// Reads a table's columns from `system_schema.columns`; empty when the table is missing.
pub async fn read_table(
    session: &Session,
    keyspace: &str,
    table: &str,
) -> Result<ExistingTable, ProvisionError> {
    let context = || format!("reading system_schema.columns of {keyspace}.{table}");
    let rows = select(
        session,
        "SELECT column_name, type, kind, position, clustering_order FROM system_schema.columns \
         WHERE keyspace_name = ? AND table_name = ?",
        (keyspace, table),
        context(),
    )
    .await?;
    let mut columns = ExistingTable::new();
    for row in rows
        .rows::<(String, String, String, i32, String)>()
        .map_err(|error| ProvisionError::cassandra(context(), error))?
    {
        let (name, cql_type, kind, position, clustering_order) =
            row.map_err(|error| ProvisionError::cassandra(context(), error))?;
        columns.insert(
            name,
            ExistingColumn {
                cql_type,
                kind,
                position,
                clustering_order,
            },
        );
    }
    Ok(columns)
}

/// Creates the keyspace and tables, adds new columns, and refuses (changing nothing) when any
/// table would need an incompatible change.
pub async fn ensure_schema(
    session: &Session,
    pipeline: &Pipeline,
) -> Result<SchemaReport, ProvisionError> {
    ensure_schema_with(session, pipeline, Replication::Apply).await
}

/// [`ensure_schema`], changing an existing keyspace's replication only with
/// [`Replication::Apply`].
pub async fn ensure_schema_with(
    session: &Session,
    pipeline: &Pipeline,
    replication: Replication,
) -> Result<SchemaReport, ProvisionError> {
    let mut report = SchemaReport::default();
    for statement in schema_statements(session, pipeline, replication).await? {
        if let Change::ReplicationLeft(entry) = statement.change {
            report.replication_left = Some(entry);
            continue;
        }
        run(session, statement.cql, statement.context).await?;
        match statement.change {
            Change::Keyspace | Change::ReplicationLeft(_) => {}
            Change::Replication(entry) => report.replication_changed.push(entry),
            Change::Table(entry) => report.created.push(entry),
            Change::Column(entry) => report.added_columns.push(entry),
            Change::Ttl(entry) => report.ttl_changed.push(entry),
        }
    }
    session
        .await_schema_agreement()
        .await
        .map_err(|error| ProvisionError::cassandra("waiting for schema agreement", error))?;
    Ok(report)
}

/// The CQL statements `ensure_schema` would run, in order, changing nothing; an incompatible
/// change is the same error `ensure_schema` returns.
pub async fn plan_schema(
    session: &Session,
    pipeline: &Pipeline,
) -> Result<Vec<String>, ProvisionError> {
    Ok(schema_statements(session, pipeline, Replication::Apply)
        .await?
        .into_iter()
        .map(|statement| statement.cql)
        .collect())
}

/// One schema statement: its CQL, what it is doing (for errors) and the change to report.
struct Statement {
    cql: String,
    context: String,
    change: Change,
}

/// What a statement changes, as `SchemaReport` lists it.
enum Change {
    Keyspace,
    Replication(String),
    /// Not a statement: the replication differs and is left as it is.
    ReplicationLeft(String),
    Table(String),
    Column(String),
    Ttl(String),
}

/// Reads the live schema and decides every statement before any runs, so a refused change
/// alters nothing.
async fn schema_statements(
    session: &Session,
    pipeline: &Pipeline,
    replication: Replication,
) -> Result<Vec<Statement>, ProvisionError> {
    let keyspace = &pipeline.spec.cassandra.keyspace;
    let mut statements = Vec::new();
    let existing_replication = read_replication(session, &keyspace.name).await?;
    let declared_replication = replication_options(keyspace);
    match existing_replication {
        None => statements.push(Statement {
            cql: keyspace_cql(keyspace),
            context: format!("creating keyspace {}", keyspace.name),
            change: Change::Keyspace,
        }),
        Some(existing)
            if !same_replication(&existing, &declared_replication)
                && replication == Replication::LeaveExisting =>
        {
            statements.push(Statement {
                cql: String::new(),
                context: String::new(),
                change: Change::ReplicationLeft(format!(
                    "{} ({} → {})",
                    keyspace.name,
                    describe_replication(&existing),
                    describe_replication(&declared_replication)
                )),
            });
        }
        Some(existing) if !same_replication(&existing, &declared_replication) => {
            statements.push(Statement {
                cql: format!(
                    "ALTER KEYSPACE {} WITH replication = {}",
                    keyspace.name,
                    replication_cql(keyspace)
                ),
                context: format!("changing the replication of keyspace {}", keyspace.name),
                change: Change::Replication(format!(
                    "{} ({} → {})",
                    keyspace.name,
                    describe_replication(&existing),
                    describe_replication(&declared_replication)
                )),
            });
        }
        Some(_) => {}
    }

    let mut plans = Vec::new();
    let mut incompatible = Vec::new();
    for table in schema_tables(pipeline) {
        let existing = read_table(session, &table.keyspace, &table.name).await?;
        match plan_table(&table, Some(&existing)) {
            Ok(plan) => plans.push((table, plan)),
            Err(changes) => incompatible.extend(changes),
        }
    }
    if !incompatible.is_empty() {
        return Err(ProvisionError::IncompatibleSchema(incompatible));
    }

    for (table, plan) in plans {
        let name = table.qualified_name();
        match plan {
            TablePlan::Create => {
                statements.push(Statement {
                    cql: table.create_cql(),
                    context: format!("creating table {name}"),
                    change: Change::Table(name),
                });
                continue;
            }
            TablePlan::AddColumns(columns) => {
                for column in columns {
                    statements.push(Statement {
                        cql: format!(
                            "ALTER TABLE {name} ADD {} {}",
                            column.name,
                            column.cql_type.as_cql()
                        ),
                        context: format!("adding column {} to {name}", column.name),
                        change: Change::Column(format!("{name}.{}", column.name)),
                    });
                }
            }
            TablePlan::UpToDate => {}
        }
        let existing_ttl = read_default_ttl(session, &table.keyspace, &table.name).await?;
        if existing_ttl != Some(table.ttl_seconds) {
            statements.push(Statement {
                cql: format!(
                    "ALTER TABLE {name} WITH default_time_to_live = {}",
                    table.ttl_seconds
                ),
                context: format!("changing the default TTL of {name}"),
                change: Change::Ttl(format!(
                    "{name} ({} → {} seconds)",
                    existing_ttl.unwrap_or_default(),
                    table.ttl_seconds
                )),
            });
        }
    }
    Ok(statements)
}

/// A keyspace's replication options as `system_schema.keyspaces` holds them; `None` when the
/// keyspace does not exist.
async fn read_replication(
    session: &Session,
    keyspace: &str,
) -> Result<Option<BTreeMap<String, String>>, ProvisionError> {
    let context = || format!("reading the replication of keyspace {keyspace}");
    let rows = select(
        session,
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
        (keyspace,),
        context(),
    )
    .await?;
    let replication = rows
        .maybe_first_row::<(BTreeMap<String, String>,)>()
        .map_err(|error| ProvisionError::cassandra(context(), error))?;
    Ok(replication.map(|(options,)| options))
}

/// A table's `default_time_to_live`; `None` when the table does not exist.
async fn read_default_ttl(
    session: &Session,
    keyspace: &str,
    table: &str,
) -> Result<Option<i32>, ProvisionError> {
    let context = || format!("reading the default TTL of {keyspace}.{table}");
    let rows = select(
        session,
        "SELECT default_time_to_live FROM system_schema.tables \
         WHERE keyspace_name = ? AND table_name = ?",
        (keyspace, table),
        context(),
    )
    .await?;
    let ttl = rows
        .maybe_first_row::<(i32,)>()
        .map_err(|error| ProvisionError::cassandra(context(), error))?;
    Ok(ttl.map(|(seconds,)| seconds))
}

/// Runs a `system_schema` query and returns its rows, errors saying what was being read.
async fn select(
    session: &Session,
    statement: &str,
    values: impl SerializeRow,
    context: String,
) -> Result<QueryRowsResult, ProvisionError> {
    session
        .query_unpaged(statement, values)
        .await
        .map_err(|error| ProvisionError::cassandra(context.clone(), error))?
        .into_rows_result()
        .map_err(|error| ProvisionError::cassandra(context, error))
}

/// Replication options with the class's short name: Cassandra stores the full Java name
/// (`org.apache.cassandra.locator.SimpleStrategy`), the spec the short one.
fn normalized(options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    options
        .iter()
        .map(|(key, value)| {
            let value = match key.as_str() {
                "class" => value.rsplit('.').next().unwrap_or(value),
                _ => value,
            };
            (key.clone(), value.to_string())
        })
        .collect()
}

fn same_replication(
    existing: &BTreeMap<String, String>,
    declared: &BTreeMap<String, String>,
) -> bool {
    normalized(existing) == normalized(declared)
}

fn describe_replication(options: &BTreeMap<String, String>) -> String {
    normalized(options)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Drops the Pipeline's tables, its identity's state table too (the keyspace stays: other
/// Pipelines may share it).
pub async fn drop_tables(session: &Session, pipeline: &Pipeline) -> Result<(), ProvisionError> {
    for table in schema_tables(pipeline) {
        run(
            session,
            format!("DROP TABLE IF EXISTS {}", table.qualified_name()),
            format!("dropping table {}", table.qualified_name()),
        )
        .await?;
    }
    Ok(())
}

async fn run(session: &Session, statement: String, context: String) -> Result<(), ProvisionError> {
    tracing::debug!(%statement, "cassandra schema statement");
    session
        .query_unpaged(statement, ())
        .await
        .map(|_| ())
        .map_err(|error| ProvisionError::cassandra(context, error))
}
