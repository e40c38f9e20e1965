use super::*;
use crate::{CqlType, parse_pipeline};

fn listings() -> Pipeline {
    parse_pipeline(
        include_str!("../../../examples/property-listings.yaml"),
        "property-listings.yaml",
    )
    .expect("the example parses")
}

/// The example's HTTP source, to change it.
fn http(pipeline: &mut Pipeline) -> &mut crate::HttpSource {
    pipeline
        .spec
        .source
        .as_mut()
        .and_then(|source| source.http.as_mut())
        .expect("http source")
}

fn fields_of(errors: &[FieldError]) -> Vec<&str> {
    errors.iter().map(|error| error.field.as_str()).collect()
}

#[test]
fn the_examples_are_valid() {
    for (name, text) in [
        (
            "property-listings",
            include_str!("../../../examples/property-listings.yaml"),
        ),
        (
            "generated-listings",
            include_str!("../../../examples/generated-listings.yaml"),
        ),
        (
            "web-events",
            include_str!("../../../examples/web-events.yaml"),
        ),
        (
            "listings-by-day",
            include_str!("../../../examples/listings-by-day.yaml"),
        ),
    ] {
        let pipeline = parse_pipeline(text, name).expect("parses");
        assert_eq!(validate(&pipeline), Vec::new(), "{name}");
    }
}

#[test]
fn cron_patterns_are_parsed_as_cron_jobs_read_them() {
    for good in [
        "*/5 * * * *",
        "0 6 * * 1-5",
        "@hourly",
        "15 2 1 JAN,JUL *",
        "0 0 ? * MON",
    ] {
        assert_eq!(check_cron(good), Ok(()), "{good}");
    }
    for bad in [
        "61 25 * * *",
        "* * * *",
        "0 0 * * * *",
        "0 0 L * *",
        "0 0 * * 5#3",
        "@fortnightly",
    ] {
        assert!(check_cron(bad).is_err(), "{bad}");
    }
}

#[test]
fn expressions_must_compile_and_read_declared_fields() {
    let mut pipeline = listings();
    pipeline.spec.schema.filter = Some("price >".into());
    let errors = validate(&pipeline);
    assert_eq!(fields_of(&errors), ["spec.schema.filter"]);
    assert!(
        errors[0].message.contains("is not valid CEL"),
        "{}",
        errors[0]
    );

    pipeline.spec.schema.filter = Some("prize > 0".into());
    let errors = validate(&pipeline);
    assert!(
        errors[0].message.contains("reads \"prize\" not declared"),
        "{}",
        errors[0]
    );

    // Variables bound by macros are not fields.
    pipeline.spec.schema.filter = Some("[1, 2].all(x, x > 0) && price > 0".into());
    assert_eq!(validate(&pipeline), Vec::new());
}

#[test]
fn defaults_must_parse_as_their_type() {
    for (cql_type, good, bad) in [
        (CqlType::Int, "42", "many"),
        (CqlType::Tinyint, "-128", "300"),
        (CqlType::Boolean, "true", "yes"),
        (CqlType::Decimal, "-12.50e3", "12,50"),
        (CqlType::Double, "1.5", "NaN"),
        (CqlType::Timestamp, "2026-11-27T10:00:00Z", "yesterday"),
        (CqlType::Date, "2026-02-28", "2026-02-30"),
        (CqlType::Uuid, "123e4567-e89b-12d3-a456-426614174000", "123"),
        (CqlType::Blob, "aGVsbG8=", "not base64!"),
        (CqlType::Ascii, "USA", "Zürich"),
    ] {
        assert_eq!(check_text(cql_type, good), Ok(()), "{good}");
        assert!(check_text(cql_type, bad).is_err(), "{bad}");
    }
}

#[test]
fn credentials_are_never_inline_and_topics_never_loop() {
    let mut pipeline = listings();
    let http = http(&mut pipeline);
    http.headers[1].value = Some("secret".into());
    http.headers[1].value_from = None;
    pipeline.spec.topic.dead_letter.name = Some(pipeline.topic_name());
    let errors = validate(&pipeline);
    assert_eq!(
        fields_of(&errors),
        [
            "spec.topic.deadLetter.name",
            "spec.source.http.headers[1].value"
        ]
    );
    assert!(describe(&errors).contains("carries a credential"));
}

#[test]
fn the_run_ledger_has_its_own_topic_and_catch_up_needs_a_schedule() {
    let mut pipeline = listings();
    pipeline.spec.topic.dead_letter.name = Some(pipeline.runs_topic_name());
    assert_eq!(
        fields_of(&validate(&pipeline)),
        ["spec.topic.deadLetter.name"]
    );
    let mut pipeline = listings();
    let http = http(&mut pipeline);
    http.schedule = None;
    http.poll_interval = Some("5m".into());
    http.catch_up = Some(crate::CatchUpSpec::default());
    assert_eq!(
        fields_of(&validate(&pipeline)),
        ["spec.source.http.catchUp"]
    );
    assert_eq!(pipeline.catch_up(), None);
}

#[test]
fn reserved_words_and_malformed_quantities_are_refused() {
    let mut pipeline = listings();
    pipeline.spec.schema.fields[1].name = "order".into();
    pipeline.spec.runner.resources = Some(
        serde_json::from_value(serde_json::json!({
            "requests": {"cpu": "half", "memory": "256Mi"},
            "limits": {"memory": "1.5Gi", "cpu": "2"}
        }))
        .expect("resources"),
    );
    let errors = validate(&pipeline);
    let fields = fields_of(&errors);
    assert!(fields.contains(&"spec.schema.fields[1].name"), "{errors:?}");
    assert!(
        fields.contains(&"spec.runner.resources.requests.cpu"),
        "{errors:?}"
    );
    assert!(
        !fields.iter().any(|field| field.contains("memory")),
        "{errors:?}"
    );
    for good in ["500m", "1", "256Mi", "1.5Gi", "1e3", "0.5"] {
        assert!(is_quantity(good), "{good}");
    }
    for bad in ["half", "Mi", "1.5.0", "12 Mi", "-"] {
        assert!(!is_quantity(bad), "{bad}");
    }
}

#[test]
fn a_body_must_be_json_and_claims_are_refused() {
    let mut pipeline = listings();
    let http = http(&mut pipeline);
    http.body = Some("{\"location\": ".into());
    pipeline.spec.runner.resources = Some(
        serde_json::from_value(serde_json::json!({"claims": [{"name": "gpu"}]}))
            .expect("resources"),
    );
    let errors = validate(&pipeline);
    assert_eq!(
        fields_of(&errors),
        ["spec.source.http.body", "spec.runner.resources.claims"]
    );
}

#[test]
fn templates_name_known_variables_and_need_an_interval() {
    let mut pipeline = listings();
    let source = http(&mut pipeline);
    source
        .query_params
        .insert("since".into(), "{{ interval.startDate }}".into());
    source
        .query_params
        .insert("until".into(), "{{ ds }}".into());
    source.url = "http://api.example.com/{{ interval.start".into();
    // A body that is JSON once filled in is fine.
    source.body = Some("{\"from\": {{ interval.startEpoch }}}".into());
    let errors = validate(&pipeline);
    assert_eq!(
        fields_of(&errors),
        ["spec.source.http.url", "spec.source.http.queryParams.until"],
        "{errors:?}"
    );
    assert!(
        errors[1]
            .message
            .contains("unknown template variable {{ ds }}; known: interval.start,"),
        "{errors:?}"
    );

    // Without a schedule or a poll interval there is no run to take an interval from.
    let mut unscheduled = listings();
    let source = http(&mut unscheduled);
    source
        .query_params
        .insert("since".into(), "{{ interval.startDate }}".into());
    source.schedule = None;
    source.poll_interval = None;
    let errors = validate(&unscheduled);
    assert_eq!(fields_of(&errors), ["spec.source.http.queryParams.since"]);
    assert!(
        errors[0]
            .message
            .contains("needs a schedule or a pollInterval")
    );
}

#[test]
fn a_backfill_needs_a_schedule_and_a_range_of_whole_intervals() {
    let mut pipeline = listings();
    let backfill = |from: &str, to: &str| crate::BackfillSpec {
        id: "week".into(),
        from: from.into(),
        to: to.into(),
        parallelism: 1,
    };
    pipeline.spec.backfill = Some(backfill("2026-11-20T00:00:00Z", "2026-11-27T00:00:00Z"));
    assert!(validate(&pipeline).is_empty());
    assert_eq!(backfill_intervals(&pipeline).map(|days| days.len()), Ok(7));

    pipeline.spec.backfill = Some(backfill("2026-11-27T00:00:00Z", "2026-11-20T00:00:00Z"));
    let errors = validate(&pipeline);
    assert_eq!(fields_of(&errors), ["spec.backfill.to"], "{errors:?}");

    // Less than one day: no whole interval of @daily.
    pipeline.spec.backfill = Some(backfill("2026-11-20T01:00:00Z", "2026-11-20T23:00:00Z"));
    let errors = validate(&pipeline);
    assert_eq!(fields_of(&errors), ["spec.backfill"], "{errors:?}");
    assert!(
        errors[0].message.contains("no whole interval"),
        "{errors:?}"
    );

    pipeline.spec.backfill = Some(backfill("2026-11-20T00:00:00Z", "2026-11-27T00:00:00Z"));
    http(&mut pipeline).schedule = None;
    http(&mut pipeline).poll_interval = Some("5m".into());
    let errors = validate(&pipeline);
    assert_eq!(fields_of(&errors), ["spec.backfill"], "{errors:?}");
    assert!(errors[0].message.contains("no schedule"), "{errors:?}");
}

#[test]
fn an_identity_must_be_required_fields_held_by_every_primary_key_and_the_source_key() {
    let pipeline = listings();
    assert_eq!(pipeline.identity_fields(), ["zpid"]);
    assert_eq!(
        pipeline.identity_state_table().as_deref(),
        Some("property_listings_identity"),
        "listings_by_city clusters on price: a state table keeps each listing's current keys"
    );

    let mut undeclared = listings();
    let identity = undeclared.spec.schema.identity.as_mut().expect("identity");
    identity.fields = vec!["price_per_sqft".into(), "zpid".into(), "zpid".into()];
    let errors = validate(&undeclared);
    assert!(
        fields_of(&errors).contains(&"spec.schema.identity.fields[0]")
            && fields_of(&errors).contains(&"spec.schema.identity.fields[2]"),
        "{errors:?}"
    );

    let mut nullable = listings();
    nullable
        .spec
        .schema
        .identity
        .as_mut()
        .expect("identity")
        .fields = vec!["zipcode".into()];
    let messages = describe(&validate(&nullable));
    assert!(messages.contains("\"zipcode\" may be null"), "{messages}");

    let mut not_in_key = listings();
    not_in_key.spec.cassandra.tables[1]
        .clustering_columns
        .retain(|column| column.name != "zpid");
    let messages = describe(&validate(&not_in_key));
    assert!(
        messages.contains("spec.cassandra.tables[1]: table listings_by_city's primary key (city, price) does not hold the identity field zpid: add zpid to its clusteringColumns"),
        "{messages}"
    );

    let mut other_key = listings();
    http(&mut other_key).key_field = Some("/city".into());
    let messages = describe(&validate(&other_key));
    assert!(
        messages.contains("spec.source.http.keyField: is \"/city\"")
            && messages.contains("set it to \"/zpid\""),
        "{messages}"
    );

    let mut bad_delete = listings();
    bad_delete
        .spec
        .schema
        .identity
        .as_mut()
        .expect("identity")
        .delete_when = Some("status == \"SOLD\"".into());
    assert_eq!(
        fields_of(&validate(&bad_delete)),
        ["spec.schema.identity.deleteWhen"]
    );

    let mut long_name = listings();
    long_name.metadata.name = Some("a".repeat(40));
    assert_eq!(fields_of(&validate(&long_name)), ["metadata.name"]);

    let mut clash = listings();
    clash.spec.cassandra.tables[0].name = "property_listings_identity".into();
    assert_eq!(
        fields_of(&validate(&clash)),
        ["spec.cassandra.tables[0].name"]
    );
}

#[test]
fn without_moving_tables_no_state_table_is_needed() {
    let mut by_id_only = listings();
    by_id_only.spec.cassandra.tables.truncate(1);
    assert_eq!(by_id_only.identity_state_table(), None);
    assert!(by_id_only.moving_tables().is_empty());
    let mut no_identity = listings();
    no_identity.spec.schema.identity = None;
    assert_eq!(no_identity.identity_state_table(), None);
    assert_eq!(validate(&no_identity), Vec::new());
}
