//! Parsing and validating one Kafka record against the Pipeline's schema.
//!
//! This is what Spark's `from_json(schema)` did in the seed pipeline, with one difference that
//! matters: a value that does not fit its declared type is never silently nulled. The record
//! is rejected with a [`RecordError`] that names the field and says why, and the caller
//! dead-letters it. Pure logic: no I/O, and no input can make it panic (see `fuzz/`).

use std::collections::BTreeSet;
use std::fmt;

use rtdp_crds::{CqlType, FieldSpec, SchemaSpec, UnknownFieldPolicy};
use scylla::value::CqlValue;
use serde_json::Value as Json;

use convert::{check_length, convert, json_kind};

mod convert;
mod members;
pub(crate) mod raw;

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
    /// The record has no payload (a tombstone) and the Pipeline declares no identity.
    EmptyPayload,
    /// A tombstone whose key names no identity (absent, or not the identity field's value).
    InvalidKey,
    /// Cassandra (or its driver) refused the row for good, e.g. a null or oversized key.
    WriteRejected,
}

impl RejectReason {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [RejectReason; 14] = [
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
        RejectReason::InvalidKey,
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
            RejectReason::InvalidKey => "invalid_key",
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
    /// The one-pass reading when every field reads a top-level member (`members`).
    top_level: Option<members::TopLevelMembers>,
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
        let top_level =
            members::TopLevelMembers::new(fields.iter().map(|field| field.pointer.as_str()));
        Ok(Self {
            fields,
            known_members,
            top_level,
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
        let text = self.text_of(payload)?;
        if let Some(top_level) = &self.top_level
            && let Some(members) = top_level.read(text, self.known_members.as_ref())
        {
            return self.parse_members(members, text);
        }
        self.parse_general(text)
    }

    /// [`RecordParser::parse`] without its one-pass reading of top-level members: the whole
    /// document is decoded first. The same answer for every input; the fuzz targets check it.
    #[doc(hidden)]
    pub fn parse_whole_document(
        &self,
        payload: Option<&[u8]>,
    ) -> Result<ParsedRecord, RecordError> {
        self.parse_general(self.text_of(payload)?)
    }

    /// The payload as text, or why it is no record: absent, too large, not UTF-8.
    fn text_of<'a>(&self, payload: Option<&'a [u8]>) -> Result<&'a str, RecordError> {
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
        std::str::from_utf8(payload).map_err(|error| {
            RecordError::record(RejectReason::InvalidUtf8, format!("not UTF-8: {error}"))
        })
    }

    /// Parses `text` whatever the fields' paths: the whole document is decoded first.
    fn parse_general(&self, text: &str) -> Result<ParsedRecord, RecordError> {
        let document: Json = serde_json::from_str(text).map_err(|error| {
            RecordError::record(RejectReason::MalformedJson, format!("not JSON: {error}"))
        })?;
        self.parse_document(&document, Some(text))
    }

    /// Validates an already-decoded JSON document. Its numbers are what serde_json kept: a
    /// `decimal` field given a number with a fraction or an exponent keeps about 17
    /// significant digits (an f64); [`RecordParser::parse`] reads such numbers from the text.
    pub fn parse_value(&self, document: &Json) -> Result<ParsedRecord, RecordError> {
        self.parse_document(document, None)
    }

    /// Validates `document`, decoded from `text` when given: a `decimal` field's number that
    /// serde_json holds as an f64 is then taken as written in `text`, every digit kept.
    fn parse_document(
        &self,
        document: &Json,
        text: Option<&str>,
    ) -> Result<ParsedRecord, RecordError> {
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
            values.push(field.value(document.pointer(&field.pointer), text)?);
        }
        Ok(ParsedRecord { values })
    }

    /// The values of a record read by the fast path: each field's member, if present.
    fn parse_members(
        &self,
        members: Vec<Option<Json>>,
        text: &str,
    ) -> Result<ParsedRecord, RecordError> {
        let mut values = Vec::with_capacity(self.fields.len());
        for (field, member) in self.fields.iter().zip(members) {
            let value = match (field.cql_type, member) {
                // The decoded text moves into the value rather than being copied.
                (CqlType::Text, Some(Json::String(text))) => {
                    check_length(text.len(), field.max_length).map_err(|(reason, detail)| {
                        RecordError::field(reason, &field.name, detail)
                    })?;
                    Some(CqlValue::Text(text))
                }
                (_, member) => field.value(member.as_ref(), Some(text))?,
            };
            values.push(value);
        }
        Ok(ParsedRecord { values })
    }
}

impl CompiledField {
    /// This field's value from its JSON value (`None`: absent): the default or a rejection
    /// when it is absent or null, else the value converted to the column's type.
    fn value(
        &self,
        json: Option<&Json>,
        text: Option<&str>,
    ) -> Result<Option<CqlValue>, RecordError> {
        match json {
            None | Some(Json::Null) => match (&self.default, self.required) {
                (Some(default), _) => Ok(Some(default.clone())),
                (None, true) => Err(RecordError::field(
                    RejectReason::MissingRequiredField,
                    &self.name,
                    format!("required value at {} is missing or null", self.pointer),
                )),
                (None, false) => Ok(None),
            },
            Some(json) => {
                let exact = exact_decimal(json, self, text);
                convert(
                    exact.as_ref().unwrap_or(json),
                    self.cql_type,
                    self.max_length,
                )
                .map(Some)
                .map_err(|(reason, detail)| RecordError::field(reason, &self.name, detail))
            }
        }
    }
}

/// For a `decimal` field holding a number serde_json keeps as an f64 (a fraction or an
/// exponent), the number as written in `text`, as a JSON string (which `convert` reads with
/// every digit); `None` otherwise (integers are exact already).
fn exact_decimal(json: &Json, field: &CompiledField, text: Option<&str>) -> Option<Json> {
    match (field.cql_type, json, text) {
        (CqlType::Decimal, Json::Number(number), Some(text)) if number.is_f64() => {
            raw::raw_value_at(text, &field.pointer).map(|raw| Json::String(raw.to_string()))
        }
        _ => None,
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

/// A text value (a default, or a derived expression's string result) converted to `cql_type`
/// exactly as a JSON string in a record would be: one conversion for every path.
pub(crate) fn convert_text(text: &str, cql_type: CqlType) -> Result<CqlValue, String> {
    convert(&Json::String(text.to_string()), cql_type, usize::MAX).map_err(|(_, detail)| detail)
}

/// A Kafka key converted to `cql_type` as the HTTP source wrote it (`keyField`'s value as
/// text): a number or boolean as its JSON text, anything else as the string itself.
pub(crate) fn convert_key(text: &str, cql_type: CqlType) -> Result<CqlValue, String> {
    let textual = matches!(
        cql_type,
        CqlType::Text | CqlType::Ascii | CqlType::Date | CqlType::Uuid | CqlType::Blob
    );
    let json = match serde_json::from_str::<Json>(text) {
        Ok(json @ (Json::Number(_) | Json::Bool(_))) if !textual => json,
        _ => Json::String(text.to_string()),
    };
    convert(&json, cql_type, usize::MAX).map_err(|(_, detail)| detail)
}

fn first_pointer_token(pointer: &str) -> Option<String> {
    let token = pointer.strip_prefix('/')?.split('/').next()?;
    Some(raw::unescape(token))
}

#[cfg(test)]
mod tests;
