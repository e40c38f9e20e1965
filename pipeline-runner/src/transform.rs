//! Derived fields and the filter: CEL expressions over a parsed record, compiled once.
//!
//! Every field is a variable named by its column (`price`, `living_area`, ...; null when the
//! record has none), and each derived field becomes a variable for the derived fields after it
//! and for the filter. An expression that fails, or yields a value that does not fit its
//! column, rejects the record with the reason; a filter that is false skips it on purpose.

use std::sync::Arc;

use cel::{Context, Program, Value};
use rtdp_crds::{CqlType, SchemaSpec};
use scylla::value::{CqlDate, CqlTimestamp, CqlValue};

use crate::record::{ParsedRecord, RecordError, RejectReason, convert_text};

/// A CEL expression in the Pipeline that does not compile: a configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{what} {expression:?} does not compile: {detail}")]
pub struct TransformError {
    what: String,
    expression: String,
    detail: String,
}

/// What the transforms decided for a record.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Write it, with these derived values appended to the parsed ones.
    Keep(Vec<Option<CqlValue>>),
    /// The filter rejected it on purpose.
    FilteredOut,
    /// `spec.schema.identity.deleteWhen` is true: the record says its identity is gone.
    Delete,
}

struct Derived {
    name: String,
    cql_type: CqlType,
    program: Program,
}

/// The compiled derived fields and filter of a schema.
pub struct Transforms {
    field_names: Vec<String>,
    /// Whether any expression reads the field; only those become CEL variables (building
    /// a variable clones its value, and most records have many fields no expression reads).
    field_used: Vec<bool>,
    derived: Vec<Derived>,
    filter: Option<Program>,
    delete_when: Option<Program>,
}

impl std::fmt::Debug for Transforms {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Transforms")
            .field(
                "derived",
                &self
                    .derived
                    .iter()
                    .map(|derived| &derived.name)
                    .collect::<Vec<_>>(),
            )
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

impl Transforms {
    /// Compiles every expression of the schema.
    pub fn new(schema: &SchemaSpec) -> Result<Self, TransformError> {
        let compile = |what: String, expression: &str| {
            Program::compile(expression).map_err(|error| TransformError {
                what,
                expression: expression.to_string(),
                detail: error.to_string(),
            })
        };
        let mut derived = Vec::with_capacity(schema.derived.len());
        for field in &schema.derived {
            derived.push(Derived {
                name: field.name.clone(),
                cql_type: field.type_,
                program: compile(format!("derived field {}", field.name), &field.expression)?,
            });
        }
        let filter = match &schema.filter {
            Some(expression) => Some(compile("filter".to_string(), expression)?),
            None => None,
        };
        let delete_when = match schema
            .identity
            .as_ref()
            .and_then(|identity| identity.delete_when.as_ref())
        {
            Some(expression) => Some(compile("identity.deleteWhen".to_string(), expression)?),
            None => None,
        };
        let field_used = schema
            .fields
            .iter()
            .map(|field| {
                derived
                    .iter()
                    .map(|derived| &derived.program)
                    .chain(filter.as_ref())
                    .chain(delete_when.as_ref())
                    .any(|program| program.references().has_variable(&field.name))
            })
            .collect();
        Ok(Self {
            field_names: schema
                .fields
                .iter()
                .map(|field| field.name.clone())
                .collect(),
            field_used,
            derived,
            filter,
            delete_when,
        })
    }

    /// True when there is nothing to evaluate (the fast path).
    pub fn is_empty(&self) -> bool {
        self.derived.is_empty() && self.filter.is_none() && self.delete_when.is_none()
    }

    /// The derived field names, in the order their values are returned.
    pub fn derived_names(&self) -> impl Iterator<Item = &str> {
        self.derived.iter().map(|derived| derived.name.as_str())
    }

    /// Evaluates the derived fields, then the filter. `root` holds CEL's standard functions
    /// and is built once per worker with `Context::default()`.
    pub fn apply(
        &self,
        root: &Context<'_, '_>,
        record: &ParsedRecord,
    ) -> Result<Outcome, RecordError> {
        if self.is_empty() {
            return Ok(Outcome::Keep(Vec::new()));
        }
        let mut scope = root.new_inner_scope();
        for ((name, value), used) in self
            .field_names
            .iter()
            .zip(&record.values)
            .zip(&self.field_used)
        {
            if *used {
                scope.add_variable_from_value(name.as_str(), to_cel(value.as_ref()));
            }
        }
        let mut derived_values = Vec::with_capacity(self.derived.len());
        for derived in &self.derived {
            let failed = |detail: String| RecordError {
                reason: RejectReason::DerivedFieldFailed,
                field: Some(derived.name.clone()),
                table: None,
                detail,
            };
            let result = derived
                .program
                .execute(&scope)
                .map_err(|error| failed(format!("evaluating the expression: {error}")))?;
            let value = from_cel(&result, derived.cql_type).map_err(failed)?;
            scope.add_variable_from_value(derived.name.as_str(), to_cel(value.as_ref()));
            derived_values.push(value);
        }
        if let Some(delete_when) = &self.delete_when {
            let failed = |detail: String| RecordError {
                reason: RejectReason::FilterFailed,
                field: None,
                table: None,
                detail: format!("identity.deleteWhen: {detail}"),
            };
            match delete_when.execute(&scope) {
                Ok(Value::Bool(true)) => return Ok(Outcome::Delete),
                Ok(Value::Bool(false)) => {}
                Ok(other) => {
                    return Err(failed(format!("must be a boolean, got {other:?}")));
                }
                Err(error) => return Err(failed(format!("evaluating it: {error}"))),
            }
        }
        if let Some(filter) = &self.filter {
            let failed = |detail: String| RecordError {
                reason: RejectReason::FilterFailed,
                field: None,
                table: None,
                detail,
            };
            match filter.execute(&scope) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => return Ok(Outcome::FilteredOut),
                Ok(other) => {
                    return Err(failed(format!(
                        "the filter must be a boolean, got {other:?}"
                    )));
                }
                Err(error) => return Err(failed(format!("evaluating the filter: {error}"))),
            }
        }
        Ok(Outcome::Keep(derived_values))
    }
}

/// A column value as CEL sees it.
fn to_cel(value: Option<&CqlValue>) -> Value {
    let Some(value) = value else {
        return Value::Null;
    };
    match value {
        CqlValue::Text(text) | CqlValue::Ascii(text) => Value::String(Arc::new(text.clone())),
        CqlValue::Boolean(value) => Value::Bool(*value),
        CqlValue::TinyInt(value) => Value::Int(i64::from(*value)),
        CqlValue::SmallInt(value) => Value::Int(i64::from(*value)),
        CqlValue::Int(value) => Value::Int(i64::from(*value)),
        CqlValue::BigInt(value) => Value::Int(*value),
        CqlValue::Float(value) => Value::Float(f64::from(*value)),
        CqlValue::Double(value) => Value::Float(*value),
        CqlValue::Decimal(decimal) => Value::Float(decimal_to_f64(decimal)),
        CqlValue::Timestamp(CqlTimestamp(millis)) => {
            chrono::DateTime::from_timestamp_millis(*millis)
                .map(|time| Value::Timestamp(time.fixed_offset()))
                .unwrap_or(Value::Null)
        }
        CqlValue::Date(CqlDate(days)) => {
            let offset = i64::from(*days) - (1_i64 << 31);
            chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(offset)))
                .map(|date| Value::String(Arc::new(date.format("%Y-%m-%d").to_string())))
                .unwrap_or(Value::Null)
        }
        CqlValue::Uuid(uuid) => Value::String(Arc::new(uuid.to_string())),
        CqlValue::Blob(bytes) => Value::Bytes(Arc::new(bytes.clone())),
        _ => Value::Null,
    }
}

fn decimal_to_f64(decimal: &scylla::value::CqlDecimal) -> f64 {
    let (bytes, scale) = decimal.as_signed_be_bytes_slice_and_exponent();
    let mut padded = if bytes.first().is_some_and(|byte| byte & 0x80 != 0) {
        [0xff; 16]
    } else {
        [0; 16]
    };
    let start = 16_usize.saturating_sub(bytes.len());
    padded[start..].copy_from_slice(&bytes[bytes.len().saturating_sub(16)..]);
    // Expressions compute in doubles; the column itself keeps the exact decimal.
    #[allow(clippy::cast_precision_loss)]
    let unscaled = i128::from_be_bytes(padded) as f64;
    unscaled / 10_f64.powi(scale)
}

/// A CEL result converted to the derived column's type, exactly.
fn from_cel(value: &Value, cql_type: CqlType) -> Result<Option<CqlValue>, String> {
    let mismatch = || {
        format!(
            "the expression produced {value:?}, which is not a {}",
            cql_type.as_cql()
        )
    };
    let out_of_range = || {
        format!(
            "the expression produced {value:?}, out of range for {}",
            cql_type.as_cql()
        )
    };
    Ok(Some(match (cql_type, value) {
        (_, Value::Null) => return Ok(None),
        (CqlType::Text, Value::String(text)) => CqlValue::Text(text.to_string()),
        (CqlType::Ascii, Value::String(text)) if text.is_ascii() => {
            CqlValue::Ascii(text.to_string())
        }
        (CqlType::Boolean, Value::Bool(value)) => CqlValue::Boolean(*value),
        (CqlType::Bigint, Value::Int(value)) => CqlValue::BigInt(*value),
        (CqlType::Int, Value::Int(value)) => {
            CqlValue::Int(i32::try_from(*value).map_err(|_| out_of_range())?)
        }
        (CqlType::Smallint, Value::Int(value)) => {
            CqlValue::SmallInt(i16::try_from(*value).map_err(|_| out_of_range())?)
        }
        (CqlType::Tinyint, Value::Int(value)) => {
            CqlValue::TinyInt(i8::try_from(*value).map_err(|_| out_of_range())?)
        }
        (CqlType::Double, Value::Float(value)) if value.is_finite() => CqlValue::Double(*value),
        #[allow(clippy::cast_precision_loss)]
        (CqlType::Double, Value::Int(value)) => CqlValue::Double(*value as f64),
        #[allow(clippy::cast_possible_truncation)]
        (CqlType::Float, Value::Float(value))
            if value.is_finite() && value.abs() <= f64::from(f32::MAX) =>
        {
            CqlValue::Float(*value as f32)
        }
        (CqlType::Timestamp, Value::Timestamp(time)) => {
            CqlValue::Timestamp(CqlTimestamp(time.timestamp_millis()))
        }
        (CqlType::Blob, Value::Bytes(bytes)) => CqlValue::Blob(bytes.to_vec()),
        // CEL has no decimal, date or UUID type: expressions produce their text (or an
        // integer, for a decimal), converted as the same text in a record would be.
        (
            CqlType::Decimal | CqlType::Date | CqlType::Uuid | CqlType::Timestamp,
            Value::String(text),
        ) => convert_text(text, cql_type).map_err(|detail| format!("{}: {detail}", mismatch()))?,
        (CqlType::Decimal, Value::Int(value)) => {
            convert_text(&value.to_string(), cql_type).map_err(|_| mismatch())?
        }
        (CqlType::Decimal, Value::UInt(value)) => {
            convert_text(&value.to_string(), cql_type).map_err(|_| mismatch())?
        }
        (CqlType::Double | CqlType::Float, Value::Float(_)) => return Err(out_of_range()),
        _ => return Err(mismatch()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordParser;
    use rtdp_crds::{DerivedFieldSpec, FieldSpec, UnknownFieldPolicy};

    fn schema(derived: &[(&str, CqlType, &str)], filter: Option<&str>) -> SchemaSpec {
        let field = |name: &str, cql_type| FieldSpec {
            name: name.into(),
            path: None,
            type_: cql_type,
            required: false,
            default: None,
            max_length: None,
        };
        SchemaSpec {
            fields: vec![
                field("price", CqlType::Bigint),
                field("living_area", CqlType::Int),
                field("city", CqlType::Text),
            ],
            derived: derived
                .iter()
                .map(|(name, cql_type, expression)| DerivedFieldSpec {
                    name: (*name).into(),
                    type_: *cql_type,
                    expression: (*expression).into(),
                })
                .collect(),
            filter: filter.map(Into::into),
            unknown_fields: UnknownFieldPolicy::Ignore,
            identity: None,
        }
    }

    fn run(schema: &SchemaSpec, record: &str) -> Result<Outcome, RecordError> {
        let parsed = RecordParser::new(schema)
            .expect("schema")
            .parse(Some(record.as_bytes()))
            .expect("parses");
        let root = Context::default();
        Transforms::new(schema)
            .expect("compiles")
            .apply(&root, &parsed)
    }

    const PRICE_PER_SQFT: &str =
        "living_area != null && living_area > 0 ? double(price) / double(living_area) : null";

    #[test]
    fn derives_price_per_square_foot_or_null() {
        let spec = schema(
            &[("price_per_sqft", CqlType::Double, PRICE_PER_SQFT)],
            Some("price > 0"),
        );
        assert_eq!(
            run(&spec, r#"{"price": 300000, "living_area": 1500}"#),
            Ok(Outcome::Keep(vec![Some(CqlValue::Double(200.0))]))
        );
        assert_eq!(
            run(&spec, r#"{"price": 300000}"#),
            Ok(Outcome::Keep(vec![None]))
        );
        assert_eq!(
            run(&spec, r#"{"price": 300000, "living_area": 0}"#),
            Ok(Outcome::Keep(vec![None]))
        );
    }

    #[test]
    fn filter_false_skips_and_later_expressions_see_derived_fields() {
        let spec = schema(
            &[("band", CqlType::Text, "price > 500000 ? 'high' : 'low'")],
            Some("band == 'high' && city == 'Austin'"),
        );
        assert_eq!(
            run(&spec, r#"{"price": 100, "city": "Austin"}"#),
            Ok(Outcome::FilteredOut)
        );
        assert_eq!(
            run(&spec, r#"{"price": 900000, "city": "Austin"}"#),
            Ok(Outcome::Keep(vec![Some(CqlValue::Text("high".into()))]))
        );
    }

    #[test]
    fn delete_when_wins_over_the_filter_and_sees_derived_fields() {
        let mut spec = schema(
            &[("band", CqlType::Text, "price > 500000 ? 'high' : 'low'")],
            Some("price > 0"),
        );
        spec.identity = Some(rtdp_crds::IdentitySpec {
            fields: vec!["city".into()],
            delete_when: Some("band == 'high' || city == 'Gone'".into()),
        });
        assert_eq!(
            run(&spec, r#"{"price": 900000, "city": "Austin"}"#),
            Ok(Outcome::Delete)
        );
        assert_eq!(
            run(&spec, r#"{"price": 0, "city": "Gone"}"#),
            Ok(Outcome::Delete),
            "a record saying its identity is gone deletes it even when the filter skips it"
        );
        assert_eq!(
            run(&spec, r#"{"price": 0, "city": "Austin"}"#),
            Ok(Outcome::FilteredOut)
        );
        spec.identity = Some(rtdp_crds::IdentitySpec {
            fields: vec!["city".into()],
            delete_when: Some("city".into()),
        });
        let error = run(&spec, r#"{"price": 1, "city": "Austin"}"#).expect_err("not a boolean");
        assert!(
            error
                .detail
                .starts_with("identity.deleteWhen: must be a boolean"),
            "{error}"
        );
    }

    #[test]
    fn failures_are_reasons_not_nulls() {
        let spec = schema(&[("ratio", CqlType::Double, "price / living_area")], None);
        let error = run(&spec, r#"{"price": 10}"#).expect_err("null arithmetic fails");
        assert_eq!(
            (error.reason, error.field.as_deref()),
            (RejectReason::DerivedFieldFailed, Some("ratio"))
        );

        let spec = schema(&[("label", CqlType::Int, "city")], None);
        let error = run(&spec, r#"{"city": "Houston"}"#).expect_err("wrong type");
        assert!(error.detail.contains("not a int"), "{error}");

        let spec = schema(&[], Some("city"));
        let error = run(&spec, r#"{"city": "Houston"}"#).expect_err("non-boolean filter");
        assert_eq!(error.reason, RejectReason::FilterFailed);
    }

    #[test]
    fn decimals_dates_uuids_and_times_are_derived_from_text() {
        let spec = schema(
            &[
                ("price_exact", CqlType::Decimal, "string(price) + '.50'"),
                ("price_whole", CqlType::Decimal, "price"),
                ("listed_on", CqlType::Date, "'2026-11-' + city"),
                (
                    "listing_id",
                    CqlType::Uuid,
                    "'123e4567-e89b-12d3-a456-42661417400' + string(living_area)",
                ),
                ("listed_at", CqlType::Timestamp, "'2026-11-27T10:00:00Z'"),
            ],
            None,
        );
        let Ok(Outcome::Keep(values)) = run(
            &spec,
            r#"{"price": 12345678901234567, "living_area": 0, "city": "27"}"#,
        ) else {
            panic!("kept");
        };
        assert_eq!(
            values[0],
            Some(convert_text("12345678901234567.50", CqlType::Decimal).expect("a decimal"))
        );
        assert_eq!(
            values[1],
            Some(convert_text("12345678901234567", CqlType::Decimal).expect("a decimal"))
        );
        assert_eq!(
            values[2],
            Some(convert_text("2026-11-27", CqlType::Date).expect("a date"))
        );
        assert!(matches!(values[3], Some(CqlValue::Uuid(_))), "{values:?}");
        assert!(
            matches!(values[4], Some(CqlValue::Timestamp(_))),
            "{values:?}"
        );
        // Text that is not such a value is a reason, never a null.
        let error = run(&spec, r#"{"price": 1, "living_area": 0, "city": "31"}"#)
            .expect_err("2026-11-31 is no date");
        assert_eq!(error.field.as_deref(), Some("listed_on"));
    }

    #[test]
    fn expressions_that_do_not_compile_are_configuration_errors() {
        let error =
            Transforms::new(&schema(&[("x", CqlType::Int, "price +")], None)).expect_err("syntax");
        assert!(error.to_string().contains("derived field x"), "{error}");
    }
}
