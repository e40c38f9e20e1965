//! The Cassandra side of a Pipeline: the keyspace and one table per `spec.cassandra.tables`
//! entry, derived from the single schema. Planning is pure (unit-tested); applying reads
//! `system_schema` and changes nothing unless every change is safe.

use std::collections::BTreeMap;
use std::fmt;

use rtdp_crds::{
    ClusteringOrder, CqlType, KeyspaceSpec, Pipeline, PipelineSpec, ReplicationStrategy, TableSpec,
    WriteConsistency,
};

mod apply;
mod datacenter;

pub use apply::{
    Replication, SchemaReport, drop_tables, ensure_schema, ensure_schema_with, plan_schema,
    read_table,
};
pub use datacenter::{check_datacenter, check_local_datacenter, cluster_datacenters};

/// A column of a table and its CQL type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column name.
    pub name: String,
    /// Its CQL type.
    pub cql_type: CqlType,
}

/// A table as the Pipeline declares it, with its columns resolved from the schema.
#[derive(Clone, Debug, PartialEq)]
pub struct TableDefinition {
    /// The keyspace.
    pub keyspace: String,
    /// The table name.
    pub name: String,
    /// Every stored column: the partition key, then the clustering columns, then the rest.
    pub columns: Vec<Column>,
    /// Partition key column names, in order.
    pub partition_key: Vec<String>,
    /// Clustering columns and their order.
    pub clustering: Vec<(String, ClusteringOrder)>,
    /// `default_time_to_live` in seconds; 0 keeps rows forever.
    pub ttl_seconds: i32,
    /// The write consistency.
    pub consistency: WriteConsistency,
}

impl TableDefinition {
    /// `keyspace.table`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.keyspace, self.name)
    }

    /// `CREATE TABLE IF NOT EXISTS ...`.
    pub fn create_cql(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|column| format!("{} {}", column.name, column.cql_type.as_cql()))
            .collect();
        let mut primary_key = format!("({})", self.partition_key.join(", "));
        for (name, _) in &self.clustering {
            primary_key.push_str(", ");
            primary_key.push_str(name);
        }
        let mut options = Vec::new();
        if !self.clustering.is_empty() {
            let order: Vec<String> = self
                .clustering
                .iter()
                .map(|(name, order)| format!("{name} {}", order_cql(*order)))
                .collect();
            options.push(format!("CLUSTERING ORDER BY ({})", order.join(", ")));
        }
        options.push(format!("default_time_to_live = {}", self.ttl_seconds));
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({primary_key})) WITH {}",
            self.qualified_name(),
            columns.join(", "),
            options.join(" AND ")
        )
    }

    /// The prepared INSERT the runner executes: every column, then the write timestamp (the
    /// Kafka record's, in microseconds) so a replay never overwrites newer data with older.
    pub fn insert_cql(&self) -> String {
        let names: Vec<&str> = self
            .columns
            .iter()
            .map(|column| column.name.as_str())
            .collect();
        let markers = vec!["?"; names.len()].join(", ");
        format!(
            "INSERT INTO {} ({}) VALUES ({markers}) USING TIMESTAMP ?",
            self.qualified_name(),
            names.join(", ")
        )
    }
}

fn order_cql(order: ClusteringOrder) -> &'static str {
    match order {
        ClusteringOrder::Ascending => "ASC",
        ClusteringOrder::Descending => "DESC",
    }
}

/// `CREATE KEYSPACE IF NOT EXISTS ...` with the declared replication.
pub fn keyspace_cql(keyspace: &KeyspaceSpec) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {}",
        keyspace.name,
        replication_cql(keyspace)
    )
}

/// The declared replication as the option map Cassandra stores (short class name).
fn replication_options(keyspace: &KeyspaceSpec) -> BTreeMap<String, String> {
    let replication = &keyspace.replication;
    let mut options = BTreeMap::new();
    match replication.strategy {
        ReplicationStrategy::SimpleStrategy => {
            options.insert("class".to_string(), "SimpleStrategy".to_string());
            options.insert(
                "replication_factor".to_string(),
                replication.replication_factor.unwrap_or(1).to_string(),
            );
        }
        ReplicationStrategy::NetworkTopologyStrategy => {
            options.insert("class".to_string(), "NetworkTopologyStrategy".to_string());
            for (datacenter, factor) in &replication.datacenters {
                options.insert(datacenter.clone(), factor.to_string());
            }
        }
    }
    options
}

fn replication_cql(keyspace: &KeyspaceSpec) -> String {
    let replication = &keyspace.replication;
    match replication.strategy {
        ReplicationStrategy::SimpleStrategy => format!(
            "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            replication.replication_factor.unwrap_or(1)
        ),
        ReplicationStrategy::NetworkTopologyStrategy => {
            let mut entries = vec!["'class': 'NetworkTopologyStrategy'".to_string()];
            entries.extend(
                replication
                    .datacenters
                    .iter()
                    .map(|(datacenter, factor)| format!("'{datacenter}': {factor}")),
            );
            format!("{{{}}}", entries.join(", "))
        }
    }
}

/// Resolves every declared table against the schema. Assumes a spec the CRD accepted (key
/// columns are declared fields); an undeclared column is skipped rather than guessed.
pub fn table_definitions(spec: &PipelineSpec) -> Vec<TableDefinition> {
    let mut types: BTreeMap<&str, CqlType> = BTreeMap::new();
    let mut declared_order: Vec<&str> = Vec::new();
    for field in &spec.schema.fields {
        types.insert(&field.name, field.type_);
        declared_order.push(&field.name);
    }
    for derived in &spec.schema.derived {
        types.insert(&derived.name, derived.type_);
        declared_order.push(&derived.name);
    }
    spec.cassandra
        .tables
        .iter()
        .map(|table| {
            table_definition(
                &spec.cassandra.keyspace.name,
                table,
                &types,
                &declared_order,
            )
        })
        .collect()
}

/// The state table's column holding the write time (µs) of an identity's latest record.
pub const STATE_WRITE_TIME: &str = "rtdp_write_time";
/// The state table's column that is true once an identity was deleted.
pub const STATE_DELETED: &str = "rtdp_deleted";

/// The identity's state table (see [`Pipeline::identity_state_table`]): one row per identity,
/// keyed by the identity fields, holding the key columns of every moving table as the
/// identity's latest record had them, that record's write time and whether it deleted the
/// identity. The runner reads it to find an identity's superseded rows.
pub fn state_table_definition(pipeline: &Pipeline) -> Option<TableDefinition> {
    let name = pipeline.identity_state_table()?;
    let spec = &pipeline.spec;
    let identity = pipeline.identity_fields();
    let moving = pipeline.moving_tables();
    let types = field_types(spec);
    let mut names: Vec<&str> = identity.iter().map(String::as_str).collect();
    for table in &moving {
        let keys = table
            .partition_key
            .iter()
            .chain(table.clustering_columns.iter().map(|column| &column.name));
        for key in keys {
            if !names.contains(&key.as_str()) {
                names.push(key);
            }
        }
    }
    let mut columns: Vec<Column> = names
        .iter()
        .filter_map(|name| {
            types.get(name).map(|cql_type| Column {
                name: (*name).to_string(),
                cql_type: *cql_type,
            })
        })
        .collect();
    columns.push(Column {
        name: STATE_WRITE_TIME.to_string(),
        cql_type: CqlType::Bigint,
    });
    columns.push(Column {
        name: STATE_DELETED.to_string(),
        cql_type: CqlType::Boolean,
    });
    Some(TableDefinition {
        keyspace: spec.cassandra.keyspace.name.clone(),
        name,
        columns,
        partition_key: identity.to_vec(),
        clustering: Vec::new(),
        ttl_seconds: 0,
        // Read and written at LOCAL_QUORUM whatever the tables declare: a processor that
        // takes a partition over must read what the previous one wrote, or it cannot find the
        // superseded rows.
        consistency: WriteConsistency::LocalQuorum,
    })
}

/// Every table the Pipeline owns: the declared ones, then the identity's state table.
pub fn schema_tables(pipeline: &Pipeline) -> Vec<TableDefinition> {
    let mut tables = table_definitions(&pipeline.spec);
    tables.extend(state_table_definition(pipeline));
    tables
}

/// Every field's and derived field's CQL type, by name.
fn field_types(spec: &PipelineSpec) -> BTreeMap<&str, CqlType> {
    spec.schema
        .fields
        .iter()
        .map(|field| (field.name.as_str(), field.type_))
        .chain(
            spec.schema
                .derived
                .iter()
                .map(|derived| (derived.name.as_str(), derived.type_)),
        )
        .collect()
}

fn table_definition(
    keyspace: &str,
    table: &TableSpec,
    types: &BTreeMap<&str, CqlType>,
    declared_order: &[&str],
) -> TableDefinition {
    let mut names: Vec<&str> = Vec::new();
    let wanted = table
        .partition_key
        .iter()
        .chain(table.clustering_columns.iter().map(|column| &column.name))
        .map(String::as_str)
        .chain(match &table.columns {
            Some(columns) => columns.iter().map(String::as_str).collect::<Vec<_>>(),
            None => declared_order.to_vec(),
        });
    for name in wanted {
        if types.contains_key(name) && !names.contains(&name) {
            names.push(name);
        }
    }
    TableDefinition {
        keyspace: keyspace.to_string(),
        name: table.name.clone(),
        columns: names
            .iter()
            .map(|name| Column {
                name: (*name).to_string(),
                cql_type: types[name],
            })
            .collect(),
        partition_key: table.partition_key.clone(),
        clustering: table
            .clustering_columns
            .iter()
            .map(|column| (column.name.clone(), column.order))
            .collect(),
        ttl_seconds: table.ttl_seconds,
        consistency: table.consistency,
    }
}

/// What a column is in an existing table, as `system_schema.columns` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingColumn {
    /// The CQL type as Cassandra prints it (`text`, `bigint`, ...).
    pub cql_type: String,
    /// `partition_key`, `clustering` or `regular`.
    pub kind: String,
    /// Position within the partition key or clustering columns.
    pub position: i32,
    /// `asc`, `desc` or `none`.
    pub clustering_order: String,
}

/// An existing table: its columns by name.
pub type ExistingTable = BTreeMap<String, ExistingColumn>;

/// A change that would lose data or break readers; the operator refuses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncompatibleChange {
    /// A column's type differs.
    TypeChanged {
        /// `keyspace.table`.
        table: String,
        /// The column.
        column: String,
        /// The existing type.
        existing: String,
        /// The declared type.
        declared: String,
    },
    /// The primary key (partition key, clustering columns or their order) differs.
    KeyChanged {
        /// `keyspace.table`.
        table: String,
        /// The existing primary key.
        existing: String,
        /// The declared primary key.
        declared: String,
    },
    /// A column exists that the Pipeline no longer declares.
    ColumnDropped {
        /// `keyspace.table`.
        table: String,
        /// The column.
        column: String,
    },
}

impl fmt::Display for IncompatibleChange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IncompatibleChange::TypeChanged {
                table,
                column,
                existing,
                declared,
            } => write!(
                formatter,
                "{table}.{column} is {existing} in Cassandra but declared {declared}"
            ),
            IncompatibleChange::KeyChanged {
                table,
                existing,
                declared,
            } => write!(
                formatter,
                "{table} has primary key {existing} in Cassandra but declares {declared}"
            ),
            IncompatibleChange::ColumnDropped { table, column } => write!(
                formatter,
                "{table}.{column} exists in Cassandra but is no longer declared (dropping a column loses data)"
            ),
        }
    }
}

/// What applying a table's declaration takes.
#[derive(Clone, Debug, PartialEq)]
pub enum TablePlan {
    /// The table does not exist: create it.
    Create,
    /// The table lacks these columns: add them with ALTER TABLE.
    AddColumns(Vec<Column>),
    /// Nothing to do.
    UpToDate,
}

/// Compares a declared table with what exists. Pure.
pub fn plan_table(
    declared: &TableDefinition,
    existing: Option<&ExistingTable>,
) -> Result<TablePlan, Vec<IncompatibleChange>> {
    let Some(existing) = existing.filter(|existing| !existing.is_empty()) else {
        return Ok(TablePlan::Create);
    };
    let table = declared.qualified_name();
    let mut incompatible = Vec::new();

    let existing_key = describe_existing_key(existing);
    let declared_key = describe_declared_key(declared);
    if existing_key != declared_key {
        incompatible.push(IncompatibleChange::KeyChanged {
            table: table.clone(),
            existing: existing_key,
            declared: declared_key,
        });
    }
    let mut additions = Vec::new();
    for column in &declared.columns {
        match existing.get(&column.name) {
            None => additions.push(column.clone()),
            Some(found) if found.cql_type != column.cql_type.as_cql() => {
                incompatible.push(IncompatibleChange::TypeChanged {
                    table: table.clone(),
                    column: column.name.clone(),
                    existing: found.cql_type.clone(),
                    declared: column.cql_type.as_cql().to_string(),
                });
            }
            Some(_) => {}
        }
    }
    for name in existing.keys() {
        if !declared.columns.iter().any(|column| &column.name == name) {
            incompatible.push(IncompatibleChange::ColumnDropped {
                table: table.clone(),
                column: name.clone(),
            });
        }
    }
    if !incompatible.is_empty() {
        return Err(incompatible);
    }
    Ok(if additions.is_empty() {
        TablePlan::UpToDate
    } else {
        TablePlan::AddColumns(additions)
    })
}

fn describe_declared_key(declared: &TableDefinition) -> String {
    let clustering: Vec<String> = declared
        .clustering
        .iter()
        .map(|(name, order)| format!("{name} {}", order_cql(*order)))
        .collect();
    format!(
        "(({}){})",
        declared.partition_key.join(", "),
        prefixed(&clustering)
    )
}

fn describe_existing_key(existing: &ExistingTable) -> String {
    let mut partition: Vec<(i32, &str)> = Vec::new();
    let mut clustering: Vec<(i32, String)> = Vec::new();
    for (name, column) in existing {
        match column.kind.as_str() {
            "partition_key" => partition.push((column.position, name)),
            "clustering" => clustering.push((
                column.position,
                format!("{name} {}", column.clustering_order.to_uppercase()),
            )),
            _ => {}
        }
    }
    partition.sort();
    clustering.sort();
    let partition: Vec<&str> = partition.into_iter().map(|(_, name)| name).collect();
    let clustering: Vec<String> = clustering.into_iter().map(|(_, text)| text).collect();
    format!("(({}){})", partition.join(", "), prefixed(&clustering))
}

fn prefixed(items: &[String]) -> String {
    items.iter().map(|item| format!(", {item}")).collect()
}

#[cfg(test)]
mod tests;
