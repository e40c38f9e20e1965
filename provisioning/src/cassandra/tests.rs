//! Unit tests of table planning and CQL.

use super::*;
use rtdp_crds::parse_pipeline;

fn listings() -> PipelineSpec {
    let text = include_str!("../../../examples/property-listings.yaml");
    parse_pipeline(text, "property-listings.yaml")
        .expect("the example parses")
        .spec
}

#[test]
fn tables_put_keys_first_and_keep_declared_columns() {
    let tables = table_definitions(&listings());
    assert_eq!(tables.len(), 2);
    let by_id = &tables[0];
    assert_eq!(by_id.columns.len(), 20, "19 fields and 1 derived field");
    assert_eq!(by_id.columns[0].name, "zpid");
    let by_city = &tables[1];
    let names: Vec<&str> = by_city
        .columns
        .iter()
        .map(|column| column.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "city",
            "price",
            "zpid",
            "street_address",
            "zipcode",
            "bedrooms",
            "bathrooms",
            "living_area",
            "price_per_sqft",
            "home_type",
            "home_status",
            "img_src"
        ]
    );
}

#[test]
fn ddl_is_what_cassandra_expects() {
    let spec = listings();
    assert_eq!(
        keyspace_cql(&spec.cassandra.keyspace),
        "CREATE KEYSPACE IF NOT EXISTS real_estate WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    );
    let tables = table_definitions(&spec);
    let create = tables[1].create_cql();
    assert!(create.starts_with("CREATE TABLE IF NOT EXISTS real_estate.listings_by_city (city text, price bigint, zpid bigint, "), "{create}");
    assert!(create.ends_with("PRIMARY KEY ((city), price, zpid)) WITH CLUSTERING ORDER BY (price ASC, zpid ASC) AND default_time_to_live = 0"), "{create}");
    assert_eq!(
        tables[0].insert_cql().matches('?').count(),
        tables[0].columns.len() + 1,
        "one marker per column plus the timestamp"
    );
}

fn existing_from(table: &TableDefinition) -> ExistingTable {
    table
        .columns
        .iter()
        .map(|column| {
            let (kind, position, order) = if let Some(index) = table
                .partition_key
                .iter()
                .position(|key| key == &column.name)
            {
                ("partition_key", index, "none".to_string())
            } else if let Some(index) = table
                .clustering
                .iter()
                .position(|(name, _)| name == &column.name)
            {
                (
                    "clustering",
                    index,
                    order_cql(table.clustering[index].1).to_lowercase(),
                )
            } else {
                ("regular", 0, "none".to_string())
            };
            (
                column.name.clone(),
                ExistingColumn {
                    cql_type: column.cql_type.as_cql().to_string(),
                    kind: kind.to_string(),
                    position: i32::try_from(position).unwrap_or_default(),
                    clustering_order: order,
                },
            )
        })
        .collect()
}

#[test]
fn plans_create_add_and_nothing() {
    let table = table_definitions(&listings()).remove(1);
    assert_eq!(plan_table(&table, None), Ok(TablePlan::Create));
    let existing = existing_from(&table);
    assert_eq!(plan_table(&table, Some(&existing)), Ok(TablePlan::UpToDate));

    let mut wider = table.clone();
    wider.columns.push(Column {
        name: "country".into(),
        cql_type: CqlType::Text,
    });
    assert_eq!(
        plan_table(&wider, Some(&existing)),
        Ok(TablePlan::AddColumns(vec![Column {
            name: "country".into(),
            cql_type: CqlType::Text
        }]))
    );
}

#[test]
fn refuses_type_key_and_dropped_column_changes() {
    let table = table_definitions(&listings()).remove(1);
    let existing = existing_from(&table);

    let mut retyped = table.clone();
    retyped.columns[3].cql_type = CqlType::Int;
    let changes = plan_table(&retyped, Some(&existing)).expect_err("type change");
    assert!(
        matches!(&changes[0], IncompatibleChange::TypeChanged { column, .. } if column == "street_address")
    );

    let mut rekeyed = table.clone();
    rekeyed.clustering[0].1 = ClusteringOrder::Descending;
    let changes = plan_table(&rekeyed, Some(&existing)).expect_err("order change");
    assert_eq!(
        changes[0].to_string(),
        "real_estate.listings_by_city has primary key ((city), price ASC, zpid ASC) in Cassandra but declares ((city), price DESC, zpid ASC)"
    );

    let mut narrower = table.clone();
    narrower.columns.retain(|column| column.name != "img_src");
    let changes = plan_table(&narrower, Some(&existing)).expect_err("dropped column");
    assert_eq!(
        changes,
        vec![IncompatibleChange::ColumnDropped {
            table: "real_estate.listings_by_city".into(),
            column: "img_src".into()
        }]
    );
}

#[test]
fn the_identity_state_table_keys_by_identity_and_holds_the_moving_keys() {
    let text = include_str!("../../../examples/property-listings.yaml");
    let pipeline = parse_pipeline(text, "property-listings.yaml").expect("the example parses");
    let state = state_table_definition(&pipeline).expect("listings_by_city moves");
    assert_eq!(
        state.create_cql(),
        "CREATE TABLE IF NOT EXISTS real_estate.property_listings_identity (zpid bigint, city text, \
         price bigint, rtdp_write_time bigint, rtdp_deleted boolean, PRIMARY KEY ((zpid))) WITH \
         default_time_to_live = 0"
    );
    assert_eq!(state.consistency, WriteConsistency::LocalQuorum);
    let names: Vec<String> = schema_tables(&pipeline)
        .iter()
        .map(TableDefinition::qualified_name)
        .collect();
    assert_eq!(
        names,
        [
            "real_estate.listings_by_id",
            "real_estate.listings_by_city",
            "real_estate.property_listings_identity"
        ],
        "created and dropped with the declared tables"
    );
    let mut by_id_only = pipeline;
    by_id_only.spec.cassandra.tables.truncate(1);
    assert_eq!(state_table_definition(&by_id_only), None);
}
