//! What the CRD schema cannot express, checked in one place: the operator's admission webhook,
//! its reconcile (for objects written while the webhook was down) and `pipeline-runner
//! validate` / standalone mode all call [`validate`], so every path gives the same message.
//!
//! The schema (OpenAPI bounds, patterns, CEL rules in `pipeline.rs`) refuses what it can at
//! apply time; this covers what needs a real parser: cron patterns (croner, as Kubernetes
//! CronJobs read them), CEL expressions compiled against the declared fields, defaults parsed
//! as their types, and names that must fit Kubernetes and Kafka limits.

use std::fmt;

use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::{Pipeline, template};

/// One reason a Pipeline is refused: the field (a JSON path as `kubectl explain` spells it)
/// and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field, e.g. `spec.schema.filter`.
    pub field: String,
    /// What is wrong, e.g. `references undeclared field "prize"`.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.message)
    }
}

/// Every error joined into one message, e.g. for a status condition or an admission response.
pub fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a Pipeline beyond its schema. Empty when it is valid. Pure.
pub fn validate(pipeline: &Pipeline) -> Vec<FieldError> {
    let mut errors = Vec::new();
    names(pipeline, &mut errors);
    topics(pipeline, &mut errors);
    source(pipeline, &mut errors);
    if let Err(error) = backfill_intervals(pipeline) {
        errors.push(error);
    }
    schema(pipeline, &mut errors);
    identity(pipeline, &mut errors);
    tables(pipeline, &mut errors);
    reserved_words(pipeline, &mut errors);
    resources(pipeline, &mut errors);
    if pipeline.spec.runner.image.as_deref() == Some("") {
        errors.push(FieldError::new("spec.runner.image", "is empty"));
    }
    errors
}

/// Label values are at most 63 characters; a CronJob's name at most 52 (its Jobs append 11).
fn names(pipeline: &Pipeline, errors: &mut Vec<FieldError>) {
    let name = pipeline.name_any();
    let scheduled = pipeline
        .spec
        .source
        .as_ref()
        .and_then(|source| source.http.as_ref())
        .is_some_and(|http| http.schedule.is_some());
    let longest = if scheduled { 52 - "-ingest".len() } else { 63 };
    if name.len() > longest {
        errors.push(FieldError::new(
            "metadata.name",
            format!(
                "{name:?} is {} characters; at most {longest} fit the runner's object names and labels",
                name.len()
            ),
        ));
    }
}

fn topics(pipeline: &Pipeline, errors: &mut Vec<FieldError>) {
    let topic = pipeline.topic_name();
    let dead_letter = pipeline.dead_letter_topic_name();
    for (field, name) in [
        ("spec.topic.name", &topic),
        ("spec.topic.deadLetter.name", &dead_letter),
    ] {
        if name == "." || name == ".." {
            errors.push(FieldError::new(
                field,
                format!("{name:?} is not a valid Kafka topic name"),
            ));
        }
    }
    if topic == dead_letter {
        errors.push(FieldError::new(
            "spec.topic.deadLetter.name",
            format!("is the main topic {topic:?}: dead letters would be read back as records"),
        ));
    }
    if pipeline.schedule().is_some() && dead_letter == pipeline.runs_topic_name() {
        errors.push(FieldError::new(
            "spec.topic.deadLetter.name",
            format!(
                "is {dead_letter:?}, the run ledger of the scheduled source: choose another name"
            ),
        ));
    }
    let catch_up_without_schedule = pipeline
        .spec
        .source
        .as_ref()
        .and_then(|source| source.http.as_ref())
        .is_some_and(|http| http.catch_up.is_some() && http.schedule.is_none());
    if catch_up_without_schedule {
        errors.push(FieldError::new(
            "spec.source.http.catchUp",
            "is about the runs of a schedule: set schedule, or remove catchUp",
        ));
    }
}

/// Header names that carry credentials: their value must come from a Secret.
const CREDENTIAL_HEADERS: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-rapidapi-key",
    "api-key",
    "x-auth-token",
];

/// The intervals `spec.backfill` covers, in order (none without a backfill): each interval of
/// the source's schedule within `from`..`to`.
pub fn backfill_intervals(pipeline: &Pipeline) -> Result<Vec<template::Interval>, FieldError> {
    let Some(backfill) = &pipeline.spec.backfill else {
        return Ok(Vec::new());
    };
    let schedule = pipeline.schedule().ok_or_else(|| {
        FieldError::new(
            "spec.backfill",
            "runs the intervals of spec.source.http.schedule, and the source has no schedule",
        )
    })?;
    let time = |field: &str, text: &str| {
        text.parse::<Timestamp>().map_err(|error| {
            FieldError::new(
                format!("spec.backfill.{field}"),
                format!("{text:?} is not an RFC 3339 time: {error}"),
            )
        })
    };
    let range = template::Interval {
        start: time("from", &backfill.from)?,
        end: time("to", &backfill.to)?,
    };
    if range.start >= range.end {
        return Err(FieldError::new(
            "spec.backfill.to",
            format!("{} is not after from ({})", backfill.to, backfill.from),
        ));
    }
    template::Interval::scheduled_within(schedule, range)
        .map_err(|message| FieldError::new("spec.backfill", message))
}

fn source(pipeline: &Pipeline, errors: &mut Vec<FieldError>) {
    let Some(http) = pipeline
        .spec
        .source
        .as_ref()
        .and_then(|source| source.http.as_ref())
    else {
        return;
    };
    if let Some(schedule) = &http.schedule
        && let Err(message) = check_cron(schedule)
    {
        errors.push(FieldError::new("spec.source.http.schedule", message));
    }
    // A templated body must be JSON once filled in; a sample interval stands in for a run's.
    let sample = template::Interval {
        start: Timestamp::UNIX_EPOCH,
        end: Timestamp::UNIX_EPOCH + SignedDuration::from_hours(24),
    };
    if let Some(body) = &http.body
        && let Ok(rendered) = template::render(body, &sample)
        && let Err(error) = serde_json::from_str::<serde_json::Value>(&rendered)
    {
        errors.push(FieldError::new(
            "spec.source.http.body",
            format!("is not JSON: {error}"),
        ));
    }
    template::check(http, errors);
    for (index, header) in http.headers.iter().enumerate() {
        let lower = header.name.to_ascii_lowercase();
        let credential = CREDENTIAL_HEADERS.contains(&lower.as_str())
            || ["key", "token", "secret", "password"]
                .iter()
                .any(|word| lower.contains(word));
        if credential && header.value.is_some() {
            errors.push(FieldError::new(
                format!("spec.source.http.headers[{index}].value"),
                format!(
                    "header {} carries a credential: take it from a Secret with valueFrom.secretKeyRef, never inline",
                    header.name
                ),
            ));
        }
    }
}

/// Parses a schedule as a Kubernetes CronJob does (five fields or an `@` nickname; none of
/// the Quartz extensions `L`, `W`, `#`). Pure.
pub fn check_cron(schedule: &str) -> Result<(), String> {
    const NAMES: [&str; 19] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", "SUN",
        "MON", "TUE", "WED", "THU", "FRI", "SAT",
    ];
    let mut bare = schedule.to_ascii_uppercase();
    for name in NAMES {
        bare = bare.replace(name, "");
    }
    if !schedule.starts_with('@') && bare.contains(['L', 'W', '#']) {
        return Err(format!(
            "{schedule:?}: L, W and # are not understood by Kubernetes CronJobs"
        ));
    }
    parse_cron(schedule).map(|_| ())
}

/// A schedule parsed as a Kubernetes CronJob reads it (no seconds, no year).
pub fn parse_cron(schedule: &str) -> Result<croner::Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|error| format!("{schedule:?} is not a valid cron schedule: {error}"))
}

fn schema(pipeline: &Pipeline, errors: &mut Vec<FieldError>) {
    let schema = &pipeline.spec.schema;
    for (index, field) in schema.fields.iter().enumerate() {
        if let Some(default) = &field.default
            && let Err(message) = check_text(field.type_, default)
        {
            errors.push(FieldError::new(
                format!("spec.schema.fields[{index}].default"),
                format!(
                    "{default:?} is not a valid {}: {message}",
                    field.type_.as_cql()
                ),
            ));
        }
    }
    let declared: Vec<&str> = schema
        .fields
        .iter()
        .map(|field| field.name.as_str())
        .collect();
    for (index, derived) in schema.derived.iter().enumerate() {
        // Derived expressions see the parsed fields.
        check_expression(
            &format!("spec.schema.derived[{index}].expression"),
            &derived.expression,
            &declared,
            errors,
        );
    }
    if let Some(filter) = &schema.filter {
        // The filter sees the parsed and the derived fields.
        let visible: Vec<&str> = declared
            .iter()
            .copied()
            .chain(schema.derived.iter().map(|derived| derived.name.as_str()))
            .collect();
        check_expression("spec.schema.filter", filter, &visible, errors);
    }
}

/// An identity keeps one row per identity in every table, which holds only when every table's
/// primary key holds the identity, and one processor sees all of an identity's records in
/// order (they share a Kafka key).
fn identity(pipeline: &Pipeline, errors: &mut Vec<FieldError>) {
    let schema = &pipeline.spec.schema;
    let Some(identity) = &schema.identity else {
        return;
    };
    for (index, name) in identity.fields.iter().enumerate() {
        let field = format!("spec.schema.identity.fields[{index}]");
        if identity.fields[..index].contains(name) {
            errors.push(FieldError::new(field, format!("{name:?} is listed twice")));
            continue;
        }
        match schema.fields.iter().find(|declared| declared.name == *name) {
            None => errors.push(FieldError::new(
                field,
                format!("{name:?} is not a field declared in spec.schema.fields (derived fields cannot identify a record: a tombstone carries only its key)"),
            )),
            Some(declared) if !declared.required && declared.default.is_none() => {
                errors.push(FieldError::new(
                    field,
                    format!("{name:?} may be null: mark it required: true (or give it a default), a record without an identity cannot be kept once"),
                ));
            }
            Some(_) => {}
        }
    }
    for (index, table) in pipeline.spec.cassandra.tables.iter().enumerate() {
        let primary_key: Vec<&str> = table
            .partition_key
            .iter()
            .chain(table.clustering_columns.iter().map(|column| &column.name))
            .map(String::as_str)
            .collect();
        let missing: Vec<&str> = identity
            .fields
            .iter()
            .map(String::as_str)
            .filter(|name| !primary_key.contains(name))
            .collect();
        if !missing.is_empty() {
            errors.push(FieldError::new(
                format!("spec.cassandra.tables[{index}]"),
                format!(
                    "table {}'s primary key ({}) does not hold the identity field{} {}: add {} to its clusteringColumns so each identity keeps exactly one row",
                    table.name,
                    primary_key.join(", "),
                    if missing.len() > 1 { "s" } else { "" },
                    missing.join(", "),
                    missing.join(", ")
                ),
            ));
        }
    }
    if let Some(http) = pipeline
        .spec
        .source
        .as_ref()
        .and_then(|source| source.http.as_ref())
    {
        let identity_path = match identity.fields.as_slice() {
            [only] => schema
                .fields
                .iter()
                .find(|field| field.name == *only)
                .map(|field| field.json_pointer()),
            _ => None,
        };
        if identity_path.is_none() || http.key_field != identity_path {
            errors.push(FieldError::new(
                "spec.source.http.keyField",
                format!(
                    "is {}, but records of one identity must share a Kafka key so that one processor applies them in order: {}",
                    http.key_field
                        .as_deref()
                        .map_or("unset".to_string(), |key| format!("{key:?}")),
                    match &identity_path {
                        Some(path) => format!("set it to {path:?}, the identity's path"),
                        None => "an HTTP source keys records by one field: declare an identity of that one field".to_string(),
                    }
                ),
            ));
        }
    }
    if let Some(delete_when) = &identity.delete_when {
        let visible: Vec<&str> = schema
            .fields
            .iter()
            .map(|field| field.name.as_str())
            .chain(schema.derived.iter().map(|derived| derived.name.as_str()))
            .collect();
        check_expression(
            "spec.schema.identity.deleteWhen",
            delete_when,
            &visible,
            errors,
        );
    }
    if let Some(state_table) = pipeline.identity_state_table() {
        if state_table.len() > 48 {
            errors.push(FieldError::new(
                "metadata.name",
                format!(
                    "the identity's state table would be named {state_table:?}, longer than Cassandra's 48 characters: use a name of at most 39 characters"
                ),
            ));
        }
        if let Some(index) = pipeline
            .spec
            .cassandra
            .tables
            .iter()
            .position(|table| table.name == state_table)
        {
            errors.push(FieldError::new(
                format!("spec.cassandra.tables[{index}].name"),
                format!("{state_table} is the identity's state table (see spec.schema.identity): choose another name"),
            ));
        }
    }
}

/// The CEL macros whose first argument binds a variable (`list.all(x, x > 0)`).
const BINDING_MACROS: [&str; 5] = ["all", "exists", "exists_one", "map", "filter"];

/// Compiles a CEL expression and checks that every variable it reads is visible to it.
fn check_expression(field: &str, expression: &str, visible: &[&str], errors: &mut Vec<FieldError>) {
    let program = match cel::Program::compile(expression) {
        Ok(program) => program,
        Err(error) => {
            errors.push(FieldError::new(
                field,
                format!("{expression:?} is not valid CEL: {error}"),
            ));
            return;
        }
    };
    let bound = macro_bound_variables(expression);
    let references = program.references();
    let mut unknown: Vec<&str> = references
        .variables()
        .into_iter()
        .filter(|name| !visible.contains(name) && !bound.iter().any(|bound| bound == name))
        .collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        errors.push(FieldError::new(
            field,
            format!(
                "{expression:?} reads {} not declared in spec.schema (declared: {})",
                unknown
                    .iter()
                    .map(|name| format!("{name:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                visible.join(", ")
            ),
        ));
    }
}

/// The variables CEL macros bind, e.g. `x` in `tags.exists(x, x == "new")`: the identifier
/// right after `.<macro>(`. cel's reference list does not tell bound from free variables.
fn macro_bound_variables(expression: &str) -> Vec<String> {
    let mut bound = Vec::new();
    for name in BINDING_MACROS {
        let pattern = format!(".{name}(");
        let mut rest = expression;
        while let Some(position) = rest.find(&pattern) {
            rest = &rest[position + pattern.len()..];
            let variable: String = rest
                .trim_start()
                .chars()
                .take_while(|character| character.is_alphanumeric() || *character == '_')
                .collect();
            if !variable.is_empty() {
                bound.push(variable);
            }
        }
    }
    bound
}

fn tables(pipeline: &Pipeline, errors: &mut Vec<FieldError>) {
    let nullable = pipeline.nullable_key_columns();
    if !nullable.is_empty() {
        errors.push(FieldError::new(
            "spec.cassandra.tables",
            format!(
                "key columns {} may be null (their fields are neither required nor defaulted); mark each field required: true or give it a default",
                nullable.join(", ")
            ),
        ));
    }
    let tables = pipeline.qualified_table_names();
    for (index, table) in tables.iter().enumerate() {
        if tables[..index].contains(table) {
            errors.push(FieldError::new(
                format!("spec.cassandra.tables[{index}].name"),
                format!("table {table} is declared twice"),
            ));
        }
    }
}

/// CQL's reserved keywords: not usable as unquoted identifiers (the DDL and the INSERTs write
/// names unquoted, so such a name would break them).
const CQL_RESERVED: [&str; 60] = [
    "add",
    "allow",
    "alter",
    "and",
    "apply",
    "asc",
    "authorize",
    "batch",
    "begin",
    "by",
    "columnfamily",
    "create",
    "default",
    "delete",
    "desc",
    "describe",
    "drop",
    "entries",
    "execute",
    "from",
    "full",
    "grant",
    "if",
    "in",
    "index",
    "infinity",
    "insert",
    "into",
    "is",
    "keyspace",
    "limit",
    "materialized",
    "mbean",
    "mbeans",
    "modify",
    "nan",
    "norecursive",
    "not",
    "null",
    "of",
    "on",
    "or",
    "order",
    "primary",
    "rename",
    "replace",
    "revoke",
    "schema",
    "select",
    "set",
    "table",
    "to",
    "token",
    "truncate",
    "unlogged",
    "unset",
    "update",
    "use",
    "using",
    "where",
];

/// Each name of a list with the path of its `name` field: `<list>[<index>].name`.
fn indexed<'names>(
    list: &'names str,
    names: impl Iterator<Item = &'names str> + 'names,
) -> impl Iterator<Item = (String, &'names str)> + 'names {
    names
        .enumerate()
        .map(move |(index, name)| (format!("{list}[{index}].name"), name))
}

fn reserved_words(pipeline: &Pipeline, errors: &mut Vec<FieldError>) {
    let spec = &pipeline.spec;
    let mut names: Vec<(String, &str)> = vec![(
        "spec.cassandra.keyspace.name".to_string(),
        spec.cassandra.keyspace.name.as_str(),
    )];
    names.extend(indexed(
        "spec.cassandra.tables",
        spec.cassandra
            .tables
            .iter()
            .map(|table| table.name.as_str()),
    ));
    names.extend(indexed(
        "spec.schema.fields",
        spec.schema.fields.iter().map(|field| field.name.as_str()),
    ));
    names.extend(indexed(
        "spec.schema.derived",
        spec.schema.derived.iter().map(|field| field.name.as_str()),
    ));
    for (field, name) in names {
        if CQL_RESERVED.contains(&name) {
            errors.push(FieldError::new(
                field,
                format!(
                    "{name:?} is a reserved CQL keyword; choose another name, e.g. {name}_value"
                ),
            ));
        }
    }
}

/// Resource quantities: the CRD takes them as free text (Kubernetes' int-or-string), so they
/// are parsed here, with Kubernetes' quantity grammar, before a Deployment refuses them.
fn resources(pipeline: &Pipeline, errors: &mut Vec<FieldError>) {
    let Some(resources) = &pipeline.spec.runner.resources else {
        return;
    };
    if resources
        .claims
        .as_ref()
        .is_some_and(|claims| !claims.is_empty())
    {
        errors.push(FieldError::new(
            "spec.runner.resources.claims",
            "dynamic resource claims are not supported: the runner pods declare no resourceClaims",
        ));
    }
    for (kind, quantities) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for (resource, quantity) in quantities.iter().flatten() {
            if !is_quantity(&quantity.0) {
                errors.push(FieldError::new(
                    format!("spec.runner.resources.{kind}.{resource}"),
                    format!(
                        "{:?} is not a quantity, e.g. 500m or 1 for CPU, 256Mi or 1Gi for memory",
                        quantity.0
                    ),
                ));
            }
        }
    }
}

mod text;

pub use text::check_text;
use text::is_quantity;

#[cfg(test)]
mod tests;
