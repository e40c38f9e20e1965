//! `docs/pipeline-fields.md` lists every field of a Pipeline's `spec`, how it is honoured and
//! what proves it. This test keeps the list honest: its rows must be exactly the field paths
//! of the CRD the Rust types generate, and every row must name its proof, be marked **GAP**
//! or be a container.

use std::collections::BTreeSet;

use serde_json::Value;

/// The children of `spec.runner.resources` not walked into: Kubernetes' own
/// `ResourceRequirements`, documented by Kubernetes.
const OPAQUE: [&str; 3] = [
    "spec.runner.resources.claims",
    "spec.runner.resources.limits",
    "spec.runner.resources.requests",
];

/// Adds the path of every property under `schema` (an object schema at `prefix`): array items
/// are walked as `[]`, map values as `{}`; only named properties are rows.
fn walk(schema: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
    if OPAQUE.contains(&prefix) {
        return;
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let path = format!("{prefix}.{name}");
            paths.insert(path.clone());
            walk(property, &path, paths);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{prefix}[]"), paths);
    }
    if let Some(values) = schema.get("additionalProperties")
        && values.is_object()
    {
        walk(values, &format!("{prefix}{{}}"), paths);
    }
}

/// The field paths of `spec` in the generated CRD.
fn crd_paths() -> BTreeSet<String> {
    let crd = serde_json::to_value(rtdp_crds::crd()).expect("serialising the CRD");
    let spec = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
        .expect("the CRD has a spec schema");
    let mut paths = BTreeSet::new();
    walk(spec, "spec", &mut paths);
    paths
}

/// One row of the doc's table.
struct Row {
    field: String,
    honoured: String,
    proved_by: String,
}

/// The rows of the table whose header starts with `| field |`.
fn doc_rows(text: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if line.starts_with("| field |") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("| ---") {
            continue;
        }
        let inner = line.strip_prefix('|').unwrap_or(line);
        let inner = inner.strip_suffix('|').unwrap_or(inner);
        let cells: Vec<&str> = inner.split('|').map(str::trim).collect();
        assert_eq!(
            cells.len(),
            3,
            "a row has three cells (no `|` inside one): {line}"
        );
        let field = cells[0]
            .strip_prefix('`')
            .and_then(|field| field.strip_suffix('`'))
            .unwrap_or_else(|| panic!("the field is not in backticks: {line}"));
        rows.push(Row {
            field: field.to_string(),
            honoured: cells[1].to_string(),
            proved_by: cells[2].to_string(),
        });
    }
    rows
}

fn read_doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pipeline-fields.md");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

#[test]
fn the_doc_lists_exactly_the_fields_of_the_crd() {
    let expected = crd_paths();
    let rows = doc_rows(&read_doc());
    let mut listed = BTreeSet::new();
    for row in &rows {
        assert!(
            listed.insert(row.field.clone()),
            "{} is listed twice",
            row.field
        );
    }
    let missing: Vec<&String> = expected.difference(&listed).collect();
    let extra: Vec<&String> = listed.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/pipeline-fields.md is out of date with the CRD:\n  missing: {missing:#?}\n  extra (not in the CRD): {extra:#?}"
    );
}

#[test]
fn every_field_names_its_proof_or_its_gap() {
    for row in doc_rows(&read_doc()) {
        let gap = row.honoured.contains("**GAP**") || row.proved_by.contains("**GAP**");
        let container = row.honoured.starts_with("container");
        assert!(
            !row.honoured.is_empty(),
            "{}: says nothing about how it is honoured",
            row.field
        );
        assert!(
            gap || container || !row.proved_by.is_empty(),
            "{}: no test named in \"proved by\", and not marked **GAP**",
            row.field
        );
    }
}
