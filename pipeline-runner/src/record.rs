//! Parsing and validating one Kafka record against the Pipeline's schema.
//!
//! This is what Spark's `from_json(schema)` did in the seed pipeline, with one difference that
//! matters: a value that does not fit its declared type is never silently nulled. The record
//! is rejected with a [`RecordError`] that names the field and says why, and the caller
//! dead-letters it. Pure logic: no I/O, and no input can make it panic (see `fuzz/`).

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;
use rtdp_crds::{CqlType, FieldSpec, SchemaSpec, UnknownFieldPolicy};
use scylla::value::{CqlDate, CqlDecimal, CqlTimestamp, CqlValue};
use serde_json::Value as Json;

/// The longest record accepted, in bytes; larger ones are dead-lettered.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The longest text, ascii or blob value accepted when a field declares no maxLength.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why a record was rejected: a stable label for metrics and the dead-letter header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The payload is not UTF-8.
    InvalidUtf8,
    /// The payload is not JSON.
    MalformedJson,
    /// The payload is JSON but not an object.
    NotAnObject,
    /// The payload exceeds the size limit.
    RecordTooLarge,
    /// A required field is missing or null.
    MissingRequiredField,
    /// A value has the wrong JSON type for its column.
    WrongType,
    /// A number does not fit its column's type.
    OutOfRange,
    /// A text, ascii or blob value exceeds its maxLength.
    ValueTooLong,
    /// The record has a member the schema does not declare (unknownFields: Reject).
    UnknownField,
    /// A derived field's expression failed or produced the wrong type.
    DerivedFieldFailed,
    /// The filter expression failed (as opposed to returning false).
    FilterFailed,
    /// The record has no payload (a tombstone).
    EmptyPayload,
    /// Cassandra (or its driver) refused the row for good, e.g. a null or oversized key.
    WriteRejected,
}

impl RejectReason {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [RejectReason; 13] = [
        RejectReason::InvalidUtf8,
        RejectReason::MalformedJson,
        RejectReason::NotAnObject,
        RejectReason::RecordTooLarge,
        RejectReason::MissingRequiredField,
        RejectReason::WrongType,
        RejectReason::OutOfRange,
        RejectReason::ValueTooLong,
        RejectReason::UnknownField,
        RejectReason::DerivedFieldFailed,
        RejectReason::FilterFailed,
        RejectReason::EmptyPayload,
        RejectReason::WriteRejected,
    ];

    /// The label used in metrics and in the `rtdp.reason` dead-letter header.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::RecordTooLarge => "record_too_large",
            RejectReason::MissingRequiredField => "missing_required_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::ValueTooLong => "value_too_long",
            RejectReason::UnknownField => "unknown_field",
            RejectReason::DerivedFieldFailed => "derived_field_failed",
            RejectReason::FilterFailed => "filter_failed",
            RejectReason::EmptyPayload => "empty_payload",
            RejectReason::WriteRejected => "write_rejected",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A rejected record: why, which field, and a human-readable detail.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordError {
    /// The reason label.
    pub reason: RejectReason,
    /// The field (column name) at fault, when one is.
    pub field: Option<String>,
    /// The table that refused the row (write rejections only).
    pub table: Option<String>,
    /// What exactly was wrong, e.g. `expected an integer, found 2.5`; for a write rejection,
    /// the server's message byte for byte.
    pub detail: String,
}

impl RecordError {
    /// Cassandra refused the row for `table` with `message`.
    pub fn write_rejected(table: &str, message: String) -> Self {
        Self {
            reason: RejectReason::WriteRejected,
            field: None,
            table: Some(table.to_string()),
            detail: message,
        }
    }

    fn record(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            field: None,
            table: None,
            detail: detail.into(),
        }
    }

    fn field(reason: RejectReason, field: &str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            field: Some(field.to_string()),
            table: None,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(table) = &self.table {
            return write!(
                formatter,
                "{} (table {table}): {}",
                self.reason, self.detail
            );
        }
        match &self.field {
            Some(field) => write!(
                formatter,
                "{} (field {field}): {}",
                self.reason, self.detail
            ),
            None => write!(formatter, "{}: {}", self.reason, self.detail),
        }
    }
}

impl std::error::Error for RecordError {}

/// A schema that cannot be compiled (a bad default value); a configuration error, not a
/// record error.
#[derive(Debug, thiserror::Error)]
#[error("schema field {field}: default {default:?} is not a valid {cql_type}: {detail}")]
pub struct SchemaError {
    field: String,
    default: String,
    cql_type: &'static str,
    detail: String,
}

/// One compiled field.
#[derive(Clone, Debug)]
struct CompiledField {
    name: String,
    pointer: String,
    cql_type: CqlType,
    required: bool,
    default: Option<CqlValue>,
    max_length: usize,
}

/// The schema compiled once for parsing many records.
#[derive(Clone, Debug)]
pub struct RecordParser {
    fields: Vec<CompiledField>,
    /// Top-level members the schema reads, for `unknownFields: Reject`.
    known_members: Option<BTreeSet<String>>,
    max_record_bytes: usize,
}

/// A parsed record: one value (or null) per schema field, in declaration order.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedRecord {
    /// Values by field index; `None` is a CQL null.
    pub values: Vec<Option<CqlValue>>,
}

impl RecordParser {
    /// Compiles the schema; fails only when a declared default does not fit its type.
    pub fn new(schema: &SchemaSpec) -> Result<Self, SchemaError> {
        let mut fields = Vec::with_capacity(schema.fields.len());
        for field in &schema.fields {
            fields.push(compile_field(field)?);
        }
        let known_members = match schema.unknown_fields {
            UnknownFieldPolicy::Ignore => None,
            UnknownFieldPolicy::Reject => Some(
                fields
                    .iter()
                    .filter_map(|field| first_pointer_token(&field.pointer))
                    .collect(),
            ),
        };
        Ok(Self {
            fields,
            known_members,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        })
    }

    /// Changes the record size limit.
    pub fn with_max_record_bytes(mut self, max_record_bytes: usize) -> Self {
        self.max_record_bytes = max_record_bytes;
        self
    }

    /// The field names, in the order of [`ParsedRecord::values`].
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|field| field.name.as_str())
    }

    /// The field types, in the order of [`ParsedRecord::values`].
    pub fn field_types(&self) -> impl Iterator<Item = CqlType> + '_ {
        self.fields.iter().map(|field| field.cql_type)
    }

    /// Parses one record payload.
    pub fn parse(&self, payload: Option<&[u8]>) -> Result<ParsedRecord, RecordError> {
        let payload = payload.ok_or_else(|| {
            RecordError::record(RejectReason::EmptyPayload, "the record has no value")
        })?;
        if payload.len() > self.max_record_bytes {
            return Err(RecordError::record(
                RejectReason::RecordTooLarge,
                format!(
                    "{} bytes exceeds the limit of {}",
                    payload.len(),
                    self.max_record_bytes
                ),
            ));
        }
        let text = std::str::from_utf8(payload).map_err(|error| {
            RecordError::record(RejectReason::InvalidUtf8, format!("not UTF-8: {error}"))
        })?;
        let document: Json = serde_json::from_str(text).map_err(|error| {
            RecordError::record(RejectReason::MalformedJson, format!("not JSON: {error}"))
        })?;
        self.parse_value(&document)
    }

    /// Validates an already-decoded JSON document (the HTTP source checks records this way).
    pub fn parse_value(&self, document: &Json) -> Result<ParsedRecord, RecordError> {
        let Json::Object(members) = document else {
            return Err(RecordError::record(
                RejectReason::NotAnObject,
                format!("expected a JSON object, found {}", json_kind(document)),
            ));
        };
        if let Some(known) = &self.known_members
            && let Some(unknown) = members.keys().find(|key| !known.contains(*key))
        {
            return Err(RecordError::field(
                RejectReason::UnknownField,
                unknown,
                "the schema declares no such member (unknownFields: Reject)",
            ));
        }
        let mut values = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            let value =
                match document.pointer(&field.pointer) {
                    None | Some(Json::Null) => match (&field.default, field.required) {
                        (Some(default), _) => Some(default.clone()),
                        (None, true) => {
                            return Err(RecordError::field(
                                RejectReason::MissingRequiredField,
                                &field.name,
                                format!("required value at {} is missing or null", field.pointer),
                            ));
                        }
                        (None, false) => None,
                    },
                    Some(json) => Some(convert(json, field.cql_type, field.max_length).map_err(
                        |(reason, detail)| RecordError::field(reason, &field.name, detail),
                    )?),
                };
            values.push(value);
        }
        Ok(ParsedRecord { values })
    }
}

fn compile_field(field: &FieldSpec) -> Result<CompiledField, SchemaError> {
    let max_length = field
        .max_length
        .and_then(|length| usize::try_from(length).ok())
        .unwrap_or(DEFAULT_MAX_VALUE_BYTES);
    let default = match &field.default {
        None => None,
        Some(text) => Some(
            parse_default(text, field.type_, max_length).map_err(|detail| SchemaError {
                field: field.name.clone(),
                default: text.clone(),
                cql_type: field.type_.as_cql(),
                detail,
            })?,
        ),
    };
    Ok(CompiledField {
        name: field.name.clone(),
        pointer: field.json_pointer(),
        cql_type: field.type_,
        required: field.required,
        default,
        max_length,
    })
}

/// Defaults are written as text; numbers and booleans are read as their JSON form.
fn parse_default(text: &str, cql_type: CqlType, max_length: usize) -> Result<CqlValue, String> {
    let json = match cql_type {
        CqlType::Text
        | CqlType::Ascii
        | CqlType::Blob
        | CqlType::Uuid
        | CqlType::Date
        | CqlType::Decimal => Json::String(text.to_string()),
        CqlType::Timestamp => serde_json::from_str::<Json>(text)
            .ok()
            .filter(Json::is_number)
            .unwrap_or_else(|| Json::String(text.to_string())),
        _ => serde_json::from_str(text).map_err(|error| error.to_string())?,
    };
    convert(&json, cql_type, max_length).map_err(|(_, detail)| detail)
}

fn first_pointer_token(pointer: &str) -> Option<String> {
    let token = pointer.strip_prefix('/')?.split('/').next()?;
    Some(token.replace("~1", "/").replace("~0", "~"))
}

fn json_kind(value: &Json) -> String {
    match value {
        Json::Null => "null".to_string(),
        Json::Bool(value) => format!("boolean {value}"),
        Json::Number(number) => format!("number {number}"),
        Json::String(text) => {
            let shown: String = text.chars().take(40).collect();
            if shown.len() < text.len() {
                format!("string \"{shown}...\"")
            } else {
                format!("string \"{shown}\"")
            }
        }
        Json::Array(_) => "an array".to_string(),
        Json::Object(_) => "an object".to_string(),
    }
}

type ConversionError = (RejectReason, String);

fn wrong_type(expected: &str, found: &Json) -> ConversionError {
    (
        RejectReason::WrongType,
        format!("expected {expected}, found {}", json_kind(found)),
    )
}

/// Converts a JSON value to the column's CQL type, exactly: no truncation, no silent null.
fn convert(json: &Json, cql_type: CqlType, max_length: usize) -> Result<CqlValue, ConversionError> {
    match cql_type {
        CqlType::Text => {
            let text = match json {
                Json::String(text) => text.clone(),
                // Scalars keep their exact JSON text (a zipcode sent as a number stays 77001).
                Json::Number(number) => number.to_string(),
                Json::Bool(value) => value.to_string(),
                other => return Err(wrong_type("text", other)),
            };
            check_length(text.len(), max_length)?;
            Ok(CqlValue::Text(text))
        }
        CqlType::Ascii => match json {
            Json::String(text) if text.is_ascii() => {
                check_length(text.len(), max_length)?;
                Ok(CqlValue::Ascii(text.clone()))
            }
            Json::String(_) => Err((
                RejectReason::WrongType,
                "expected ASCII text, found non-ASCII characters".to_string(),
            )),
            other => Err(wrong_type("ascii text", other)),
        },
        CqlType::Boolean => match json {
            Json::Bool(value) => Ok(CqlValue::Boolean(*value)),
            other => Err(wrong_type("a boolean", other)),
        },
        CqlType::Tinyint => integer(json, "a tinyint", i64::from(i8::MIN), i64::from(i8::MAX))
            .and_then(|value| {
                i8::try_from(value)
                    .map(CqlValue::TinyInt)
                    .map_err(|_| unreachable_range())
            }),
        CqlType::Smallint => integer(json, "a smallint", i64::from(i16::MIN), i64::from(i16::MAX))
            .and_then(|value| {
                i16::try_from(value)
                    .map(CqlValue::SmallInt)
                    .map_err(|_| unreachable_range())
            }),
        CqlType::Int => {
            integer(json, "an int", i64::from(i32::MIN), i64::from(i32::MAX)).and_then(|value| {
                i32::try_from(value)
                    .map(CqlValue::Int)
                    .map_err(|_| unreachable_range())
            })
        }
        CqlType::Bigint => integer(json, "a bigint", i64::MIN, i64::MAX).map(CqlValue::BigInt),
        CqlType::Double => match json {
            Json::Number(number) => number
                .as_f64()
                .filter(|value| value.is_finite())
                .map(CqlValue::Double)
                .ok_or_else(|| {
                    (
                        RejectReason::OutOfRange,
                        format!("{number} is not a finite double"),
                    )
                }),
            other => Err(wrong_type("a number", other)),
        },
        CqlType::Float => match json {
            Json::Number(number) => {
                let value = number.as_f64().unwrap_or(f64::INFINITY);
                if value.is_finite() && value.abs() <= f64::from(f32::MAX) {
                    // Narrowing to f32 is the column's declared precision, not truncation of range.
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(CqlValue::Float(value as f32))
                } else {
                    Err((
                        RejectReason::OutOfRange,
                        format!("{number} does not fit a float"),
                    ))
                }
            }
            other => Err(wrong_type("a number", other)),
        },
        CqlType::Decimal => {
            let text = match json {
                Json::Number(number) => number.to_string(),
                Json::String(text) => text.trim().to_string(),
                other => return Err(wrong_type("a decimal number", other)),
            };
            parse_decimal(&text).map(CqlValue::Decimal).ok_or_else(|| {
                (
                    RejectReason::WrongType,
                    format!("\"{text}\" is not a decimal number"),
                )
            })
        }
        CqlType::Timestamp => match json {
            Json::Number(_) => integer(json, "epoch milliseconds", i64::MIN, i64::MAX)
                .map(|millis| CqlValue::Timestamp(CqlTimestamp(millis))),
            Json::String(text) => chrono::DateTime::parse_from_rfc3339(text)
                .map(|time| CqlValue::Timestamp(CqlTimestamp(time.timestamp_millis())))
                .map_err(|error| {
                    (
                        RejectReason::WrongType,
                        format!("\"{text}\" is not an RFC 3339 timestamp: {error}"),
                    )
                }),
            other => Err(wrong_type(
                "an RFC 3339 string or epoch milliseconds",
                other,
            )),
        },
        CqlType::Date => match json {
            Json::String(text) => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|error| {
                    (
                        RejectReason::WrongType,
                        format!("\"{text}\" is not a YYYY-MM-DD date: {error}"),
                    )
                })
                .and_then(|date| {
                    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                    let days = date.signed_duration_since(epoch).num_days();
                    u32::try_from(days + (1_i64 << 31))
                        .map(|days| CqlValue::Date(CqlDate(days)))
                        .map_err(|_| (RejectReason::OutOfRange, format!("{text} is out of range")))
                }),
            other => Err(wrong_type("a YYYY-MM-DD string", other)),
        },
        CqlType::Uuid => match json {
            Json::String(text) => {
                uuid::Uuid::parse_str(text)
                    .map(CqlValue::Uuid)
                    .map_err(|error| {
                        (
                            RejectReason::WrongType,
                            format!("\"{text}\" is not a UUID: {error}"),
                        )
                    })
            }
            other => Err(wrong_type("a UUID string", other)),
        },
        CqlType::Blob => match json {
            Json::String(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|error| (RejectReason::WrongType, format!("not base64: {error}")))?;
                check_length(bytes.len(), max_length)?;
                Ok(CqlValue::Blob(bytes))
            }
            other => Err(wrong_type("a base64 string", other)),
        },
    }
}

fn unreachable_range() -> ConversionError {
    (RejectReason::OutOfRange, "value out of range".to_string())
}

fn check_length(length: usize, max_length: usize) -> Result<(), ConversionError> {
    if length > max_length {
        Err((
            RejectReason::ValueTooLong,
            format!("{length} bytes exceeds maxLength {max_length}"),
        ))
    } else {
        Ok(())
    }
}

/// An integral JSON number within `[minimum, maximum]`. `245000.0` is accepted (it is an
/// integer), `2.5` and `"3"` are not.
fn integer(
    json: &Json,
    expected: &str,
    minimum: i64,
    maximum: i64,
) -> Result<i64, ConversionError> {
    let Json::Number(number) = json else {
        return Err(wrong_type(expected, json));
    };
    let value = if let Some(value) = number.as_i64() {
        value
    } else if number.is_u64() {
        return Err((
            RejectReason::OutOfRange,
            format!("{number} does not fit {expected}"),
        ));
    } else {
        let float = number.as_f64().unwrap_or(f64::NAN);
        // 2^63 is the first float past i64's range; anything with a fraction is not an integer.
        if float.fract() != 0.0 || !float.is_finite() {
            return Err((
                RejectReason::WrongType,
                format!("expected {expected}, found {number}"),
            ));
        }
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
        if !(-TWO_POW_63..TWO_POW_63).contains(&float) {
            return Err((
                RejectReason::OutOfRange,
                format!("{number} does not fit {expected}"),
            ));
        }
        #[allow(clippy::cast_possible_truncation)]
        let integral = float as i64;
        integral
    };
    if value < minimum || value > maximum {
        return Err((
            RejectReason::OutOfRange,
            format!("{value} does not fit {expected}"),
        ));
    }
    Ok(value)
}

/// Parses `-12.345`, `1e3` or `1.5E-2` into an unscaled big-endian integer and a scale.
fn parse_decimal(text: &str) -> Option<CqlDecimal> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(index) => (&text[..index], text[index + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (negative, digits) = match mantissa.as_bytes().first()? {
        b'-' => (true, &mantissa[1..]),
        b'+' => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (integral, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if integral.is_empty() && fraction.is_empty() {
        return None;
    }
    if !integral
        .bytes()
        .chain(fraction.bytes())
        .all(|byte| byte.is_ascii_digit())
    {
        return None;
    }
    let all_digits = format!("{integral}{fraction}");
    if all_digits.len() > 38 {
        return None;
    }
    let mut unscaled: i128 = all_digits.parse().ok()?;
    if negative {
        unscaled = -unscaled;
    }
    let scale = i32::try_from(fraction.len()).ok()?.checked_sub(exponent)?;
    // Minimal two's-complement big-endian bytes, as CQL's varint encoding expects.
    let bytes = unscaled.to_be_bytes();
    let mut start = 0;
    while start < bytes.len() - 1 {
        let redundant = (bytes[start] == 0x00 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    Some(CqlDecimal::from_signed_be_bytes_slice_and_exponent(
        &bytes[start..],
        scale,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtdp_crds::FieldSpec;

    fn field(name: &str, cql_type: CqlType) -> FieldSpec {
        FieldSpec {
            name: name.to_string(),
            path: None,
            type_: cql_type,
            required: false,
            default: None,
            max_length: None,
        }
    }

    fn schema(fields: Vec<FieldSpec>) -> SchemaSpec {
        SchemaSpec {
            fields,
            derived: Vec::new(),
            filter: None,
            unknown_fields: UnknownFieldPolicy::Ignore,
        }
    }

    fn listing_parser() -> RecordParser {
        let mut zpid = field("zpid", CqlType::Bigint);
        zpid.required = true;
        let mut city = field("city", CqlType::Text);
        city.required = true;
        let mut street = field("street_address", CqlType::Text);
        street.path = Some("/streetAddress".to_string());
        street.max_length = Some(16);
        let mut country = field("country", CqlType::Text);
        country.default = Some("USA".to_string());
        RecordParser::new(&schema(vec![
            zpid,
            city,
            street,
            country,
            field("bedrooms", CqlType::Int),
            field("bathrooms", CqlType::Double),
            field("is_featured", CqlType::Boolean),
            field("price", CqlType::Decimal),
        ]))
        .expect("a valid schema")
    }

    fn reject(payload: &str) -> RecordError {
        listing_parser()
            .parse(Some(payload.as_bytes()))
            .expect_err("the record must be rejected")
    }

    #[test]
    fn parses_a_listing_with_defaults_and_nulls() {
        let parsed = listing_parser()
            .parse(Some(
                br#"{"zpid": 123, "city": "Houston", "streetAddress": "1 Main St", "bedrooms": 3.0, "bathrooms": 2.5, "price": 250000.5, "extra": [1]}"#,
            ))
            .expect("valid");
        assert_eq!(parsed.values[0], Some(CqlValue::BigInt(123)));
        assert_eq!(parsed.values[1], Some(CqlValue::Text("Houston".into())));
        assert_eq!(
            parsed.values[3],
            Some(CqlValue::Text("USA".into())),
            "default applies"
        );
        assert_eq!(
            parsed.values[4],
            Some(CqlValue::Int(3)),
            "3.0 is an integer"
        );
        assert_eq!(parsed.values[5], Some(CqlValue::Double(2.5)));
        assert_eq!(parsed.values[6], None, "absent optional field is null");
        assert_eq!(
            parsed.values[7],
            Some(CqlValue::Decimal(
                CqlDecimal::from_signed_be_bytes_slice_and_exponent(
                    &2_500_005_i32.to_be_bytes()[..],
                    1
                )
            ))
        );
    }

    #[test]
    fn rejects_each_kind_of_bad_input_with_its_reason() {
        let cases: &[(&[u8], RejectReason, Option<&str>)] = &[
            (b"{not json", RejectReason::MalformedJson, None),
            (b"[1,2]", RejectReason::NotAnObject, None),
            (b"\xff\xfe{}", RejectReason::InvalidUtf8, None),
            (
                br#"{"city": "Houston"}"#,
                RejectReason::MissingRequiredField,
                Some("zpid"),
            ),
            (
                br#"{"zpid": null, "city": "X"}"#,
                RejectReason::MissingRequiredField,
                Some("zpid"),
            ),
            (
                br#"{"zpid": "123", "city": "X"}"#,
                RejectReason::WrongType,
                Some("zpid"),
            ),
            (
                br#"{"zpid": 1, "city": "X", "bedrooms": 2.5}"#,
                RejectReason::WrongType,
                Some("bedrooms"),
            ),
            (
                br#"{"zpid": 1, "city": "X", "bedrooms": 3000000000}"#,
                RejectReason::OutOfRange,
                Some("bedrooms"),
            ),
            (
                br#"{"zpid": 18446744073709551615, "city": "X"}"#,
                RejectReason::OutOfRange,
                Some("zpid"),
            ),
            (
                br#"{"zpid": 1, "city": {"name": "X"}}"#,
                RejectReason::WrongType,
                Some("city"),
            ),
            (
                br#"{"zpid": 1, "city": "X", "is_featured": "yes"}"#,
                RejectReason::WrongType,
                Some("is_featured"),
            ),
            (
                br#"{"zpid": 1, "city": "X", "streetAddress": "a very long street address"}"#,
                RejectReason::ValueTooLong,
                Some("street_address"),
            ),
            (
                br#"{"zpid": 1, "city": "X", "price": "12,5"}"#,
                RejectReason::WrongType,
                Some("price"),
            ),
        ];
        for (payload, reason, field) in cases {
            let error = listing_parser().parse(Some(payload)).expect_err("rejected");
            assert_eq!(
                error.reason,
                *reason,
                "{}: {error}",
                String::from_utf8_lossy(payload)
            );
            assert_eq!(error.field.as_deref(), *field, "{error}");
        }
        assert_eq!(
            listing_parser().parse(None).expect_err("tombstone").reason,
            RejectReason::EmptyPayload
        );
    }

    #[test]
    fn messages_name_what_was_found() {
        let error = reject(r#"{"zpid": 1, "city": "X", "bedrooms": 2.5}"#);
        assert_eq!(
            error.to_string(),
            "wrong_type (field bedrooms): expected an int, found 2.5"
        );
        let error = reject(r#"{"zpid": "abc", "city": "X"}"#);
        assert_eq!(error.detail, "expected a bigint, found string \"abc\"");
    }

    #[test]
    fn oversized_records_are_rejected_before_parsing() {
        let parser = listing_parser().with_max_record_bytes(10);
        let error = parser
            .parse(Some(br#"{"zpid": 1, "city": "Houston"}"#))
            .expect_err("too large");
        assert_eq!(error.reason, RejectReason::RecordTooLarge);
    }

    #[test]
    fn unknown_members_are_rejected_when_asked() {
        let mut spec = schema(vec![field("zpid", CqlType::Bigint)]);
        spec.unknown_fields = UnknownFieldPolicy::Reject;
        let parser = RecordParser::new(&spec).expect("valid");
        assert!(parser.parse(Some(br#"{"zpid": 1}"#)).is_ok());
        let error = parser
            .parse(Some(br#"{"zpid": 1, "price": 3}"#))
            .expect_err("unknown");
        assert_eq!(
            (error.reason, error.field.as_deref()),
            (RejectReason::UnknownField, Some("price"))
        );
    }

    #[test]
    fn converts_every_type() {
        let cases: &[(CqlType, Json, CqlValue)] = &[
            (
                CqlType::Tinyint,
                serde_json::json!(-8),
                CqlValue::TinyInt(-8),
            ),
            (
                CqlType::Smallint,
                serde_json::json!(300),
                CqlValue::SmallInt(300),
            ),
            (CqlType::Float, serde_json::json!(1.5), CqlValue::Float(1.5)),
            (
                CqlType::Ascii,
                serde_json::json!("abc"),
                CqlValue::Ascii("abc".into()),
            ),
            (
                CqlType::Text,
                serde_json::json!(77001),
                CqlValue::Text("77001".into()),
            ),
            (
                CqlType::Timestamp,
                serde_json::json!(1_700_000_000_000_i64),
                CqlValue::Timestamp(CqlTimestamp(1_700_000_000_000)),
            ),
            (
                CqlType::Timestamp,
                serde_json::json!("2023-11-14T22:13:20Z"),
                CqlValue::Timestamp(CqlTimestamp(1_700_000_000_000)),
            ),
            (
                CqlType::Date,
                serde_json::json!("1970-01-02"),
                CqlValue::Date(CqlDate((1 << 31) + 1)),
            ),
            (
                CqlType::Blob,
                serde_json::json!("aGk="),
                CqlValue::Blob(b"hi".to_vec()),
            ),
            (
                CqlType::Uuid,
                serde_json::json!("67e55044-10b1-426f-9247-bb680e5fe0c8"),
                CqlValue::Uuid(uuid::Uuid::from_u128(
                    0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8,
                )),
            ),
        ];
        for (cql_type, json, expected) in cases {
            assert_eq!(
                &convert(json, *cql_type, 100).expect("converts"),
                expected,
                "{cql_type:?} {json}"
            );
        }
        assert_eq!(
            convert(&serde_json::json!(128), CqlType::Tinyint, 100)
                .expect_err("range")
                .0,
            RejectReason::OutOfRange
        );
        assert_eq!(
            convert(&serde_json::json!("é"), CqlType::Ascii, 100)
                .expect_err("ascii")
                .0,
            RejectReason::WrongType
        );
        assert_eq!(
            convert(&serde_json::json!(1e39), CqlType::Float, 100)
                .expect_err("range")
                .0,
            RejectReason::OutOfRange
        );
    }

    #[test]
    fn decimals_keep_their_exact_digits() {
        let decimal = |text: &str| {
            parse_decimal(text).map(|value| {
                let (bytes, scale) = value.as_signed_be_bytes_slice_and_exponent();
                let mut padded = if bytes.first().is_some_and(|byte| byte & 0x80 != 0) {
                    [0xff; 16]
                } else {
                    [0; 16]
                };
                padded[16 - bytes.len()..].copy_from_slice(bytes);
                (i128::from_be_bytes(padded), scale)
            })
        };
        assert_eq!(decimal("12.345"), Some((12345, 3)));
        assert_eq!(decimal("-0.5"), Some((-5, 1)));
        assert_eq!(decimal("1e3"), Some((1, -3)));
        assert_eq!(decimal("1.5E-2"), Some((15, 3)));
        assert_eq!(decimal("128"), Some((128, 0)));
        assert_eq!(decimal("-128"), Some((-128, 0)));
        assert_eq!(decimal("abc"), None);
        assert_eq!(decimal(""), None);
        assert_eq!(decimal("."), None);
        assert_eq!(decimal("1e99999999999"), None);
    }

    #[test]
    fn a_default_that_does_not_fit_its_type_is_a_schema_error() {
        let mut bad = field("bedrooms", CqlType::Int);
        bad.default = Some("many".to_string());
        let error = RecordParser::new(&schema(vec![bad])).expect_err("bad default");
        assert!(error.to_string().contains("bedrooms"), "{error}");
    }
}
