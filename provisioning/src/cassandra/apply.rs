//! Applying the planned schema to a live Cassandra: reads `system_schema`, creates what is
//! missing, adds columns, and alters nothing unless every change is safe.

use scylla::client::session::Session;

use super::*;
use crate::ProvisionError;

/// What `ensure_schema` did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchemaReport {
    /// Tables created, as `keyspace.table`.
    pub created: Vec<String>,
    /// Columns added, as `keyspace.table.column`.
    pub added_columns: Vec<String>,
}

/// Reads a table's columns from `system_schema.columns`; empty when the table is missing.
pub async fn read_table(
    session: &Session,
    keyspace: &str,
    table: &str,
) -> Result<ExistingTable, ProvisionError> {
    let context = || format!("reading system_schema.columns of {keyspace}.{table}");
    let rows = session
        .query_unpaged(
            "SELECT column_name, type, kind, position, clustering_order FROM system_schema.columns \
             WHERE keyspace_name = ? AND table_name = ?",
            (keyspace, table),
        )
        .await
        .map_err(|error| ProvisionError::cassandra(context(), error))?
        .into_rows_result()
        .map_err(|error| ProvisionError::cassandra(context(), error))?;
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
    spec: &PipelineSpec,
) -> Result<SchemaReport, ProvisionError> {
    let keyspace = &spec.cassandra.keyspace;
    run(
        session,
        keyspace_cql(keyspace),
        format!("creating keyspace {}", keyspace.name),
    )
    .await?;

    // Plan every table before touching any, so a refused change alters nothing.
    let mut plans = Vec::new();
    let mut incompatible = Vec::new();
    for table in table_definitions(spec) {
        let existing = read_table(session, &table.keyspace, &table.name).await?;
        match plan_table(&table, Some(&existing)) {
            Ok(plan) => plans.push((table, plan)),
            Err(changes) => incompatible.extend(changes),
        }
    }
    if !incompatible.is_empty() {
        return Err(ProvisionError::IncompatibleSchema(incompatible));
    }

    let mut report = SchemaReport::default();
    for (table, plan) in plans {
        match plan {
            TablePlan::Create => {
                run(
                    session,
                    table.create_cql(),
                    format!("creating table {}", table.qualified_name()),
                )
                .await?;
                report.created.push(table.qualified_name());
            }
            TablePlan::AddColumns(columns) => {
                for column in columns {
                    let statement = format!(
                        "ALTER TABLE {} ADD {} {}",
                        table.qualified_name(),
                        column.name,
                        column.cql_type.as_cql()
                    );
                    run(
                        session,
                        statement,
                        format!(
                            "adding column {} to {}",
                            column.name,
                            table.qualified_name()
                        ),
                    )
                    .await?;
                    report.added_columns.push(format!(
                        "{}.{}",
                        table.qualified_name(),
                        column.name
                    ));
                }
            }
            TablePlan::UpToDate => {}
        }
    }
    session
        .await_schema_agreement()
        .await
        .map_err(|error| ProvisionError::cassandra("waiting for schema agreement", error))?;
    Ok(report)
}

/// Drops the Pipeline's tables (the keyspace stays: other Pipelines may share it).
pub async fn drop_tables(session: &Session, spec: &PipelineSpec) -> Result<(), ProvisionError> {
    for table in table_definitions(spec) {
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
