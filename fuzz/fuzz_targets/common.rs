//! What both fuzz targets share: a schema compiled once, and one check per input.
//!
//! The check feeds the bytes to `RecordParser::parse` exactly as the runner does with a Kafka
//! record value, then runs the CEL transforms on every accepted record. Errors are expected
//! (they are dead-letter reasons); a panic, an abort, a timeout or an out-of-memory is a bug.
//! Beyond "does not panic", accepted records and errors are checked against the parser's
//! documented contract (the asserts below), so a silent mis-conversion also shows up as a
//! crash.

use std::sync::LazyLock;

use pipeline_runner::record::{
    DEFAULT_MAX_VALUE_BYTES, ParsedRecord, RecordError, RecordParser, RejectReason,
};
use pipeline_runner::transform::{Outcome, Transforms};
use rtdp_crds::{CqlType, SchemaSpec, UnknownFieldPolicy};
use scylla::value::CqlValue;

/// `RTDP_FUZZ_TRACE=1` prints each input's outcome to stderr, for replaying single inputs
/// (`cargo +nightly fuzz run record_parser fuzz/seeds/record_parser/listing-01.json`).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("RTDP_FUZZ_TRACE").is_some());

/// The seed pipeline, embedded so the target needs no files at run time.
pub const PROPERTY_LISTINGS: &str = include_str!("../../examples/property-listings.yaml");

/// The schema of `examples/property-listings.yaml`.
pub fn property_listings_schema() -> SchemaSpec {
    rtdp_crds::parse_pipeline(PROPERTY_LISTINGS, "examples/property-listings.yaml")
        .expect("examples/property-listings.yaml is a valid Pipeline")
        .spec
        .schema
}

/// A compiled schema, built once per fuzzing process.
pub struct Harness {
    schema: SchemaSpec,
    parser: RecordParser,
    transforms: Transforms,
    max_record_bytes: usize,
}

impl Harness {
    /// Compiles the schema (a failure here is a bad fuzz setup, not a finding).
    pub fn new(schema: SchemaSpec, max_record_bytes: usize) -> Self {
        let parser = RecordParser::new(&schema)
            .expect("the schema compiles")
            .with_max_record_bytes(max_record_bytes);
        let transforms = Transforms::new(&schema).expect("the expressions compile");
        assert_eq!(
            parser.parse(None).map_err(|error| error.reason),
            Err(RejectReason::EmptyPayload),
            "a tombstone is an empty payload"
        );
        Self {
            schema,
            parser,
            transforms,
            max_record_bytes,
        }
    }

    /// One fuzz input: parse, validate, transform, and check the results' invariants.
    pub fn check(&self, data: &[u8]) {
        let parsed = self.parser.parse(Some(data));
        if *TRACE {
            eprintln!("parse: {parsed:?}");
        }
        // The one-pass reading of top-level members answers as decoding the whole document.
        assert_eq!(
            parsed,
            self.parser.parse_whole_document(Some(data)),
            "the fast path and the whole-document path disagree"
        );
        match parsed {
            Ok(record) => {
                self.check_record(&record);
                // The runner builds CEL's standard library once per worker; a fresh one per
                // input keeps each run independent.
                let root = cel::Context::default();
                let outcome = self.transforms.apply(&root, &record);
                if *TRACE {
                    eprintln!("transforms: {outcome:?}");
                }
                match outcome {
                    Ok(Outcome::Keep(derived)) => self.check_derived(&derived),
                    Ok(Outcome::FilteredOut | Outcome::Delete) => {}
                    Err(error) => {
                        check_error_text(&error);
                        assert!(
                            matches!(
                                error.reason,
                                RejectReason::DerivedFieldFailed | RejectReason::FilterFailed
                            ),
                            "transforms rejected with a parser reason: {error}"
                        );
                    }
                }
            }
            Err(error) => self.check_parse_error(data, &error),
        }
    }

    fn check_record(&self, record: &ParsedRecord) {
        assert_eq!(
            record.values.len(),
            self.schema.fields.len(),
            "one value per declared field"
        );
        for (field, value) in self.schema.fields.iter().zip(&record.values) {
            match value {
                None => assert!(
                    !field.required && field.default.is_none(),
                    "field {} is null although it is required or has a default",
                    field.name
                ),
                Some(value) => {
                    let max_length = field
                        .max_length
                        .and_then(|length| usize::try_from(length).ok())
                        .unwrap_or(DEFAULT_MAX_VALUE_BYTES);
                    check_value(&field.name, field.type_, value, Some(max_length));
                }
            }
        }
    }

    fn check_derived(&self, derived: &[Option<CqlValue>]) {
        assert_eq!(
            derived.len(),
            self.schema.derived.len(),
            "one value per derived field"
        );
        for (field, value) in self.schema.derived.iter().zip(derived) {
            if let Some(value) = value {
                check_value(&field.name, field.type_, value, None);
            }
        }
    }

    fn check_parse_error(&self, data: &[u8], error: &RecordError) {
        check_error_text(error);
        match error.reason {
            RejectReason::RecordTooLarge => assert!(data.len() > self.max_record_bytes),
            RejectReason::InvalidUtf8 => assert!(std::str::from_utf8(data).is_err()),
            RejectReason::UnknownField => assert_eq!(
                self.schema.unknown_fields,
                UnknownFieldPolicy::Reject,
                "unknown members are ignored by default"
            ),
            RejectReason::MalformedJson | RejectReason::NotAnObject => {
                assert!(error.field.is_none())
            }
            RejectReason::MissingRequiredField
            | RejectReason::WrongType
            | RejectReason::OutOfRange
            | RejectReason::ValueTooLong => {
                let field = error
                    .field
                    .as_deref()
                    .expect("a field error names its field");
                assert!(
                    self.schema.fields.iter().any(|spec| spec.name == field),
                    "error names an undeclared field {field:?}: {error}"
                );
            }
            // Reasons of later steps (the transforms, a tombstone, its key, the Cassandra write).
            RejectReason::DerivedFieldFailed
            | RejectReason::FilterFailed
            | RejectReason::EmptyPayload
            | RejectReason::InvalidKey
            | RejectReason::WriteRejected => {
                panic!("the parser rejected a payload with {error}")
            }
        }
    }
}

/// The Display form is what lands in the dead-letter header: it must render and lead with the
/// reason label.
fn check_error_text(error: &RecordError) {
    let text = error.to_string();
    assert!(
        text.starts_with(error.reason.as_str()),
        "error text {text:?} does not start with its reason"
    );
}

/// A value has its column's CQL type and respects the column's limits.
fn check_value(name: &str, cql_type: CqlType, value: &CqlValue, max_length: Option<usize>) {
    let within = |length: usize| max_length.is_none_or(|max| length <= max);
    let ok = match (cql_type, value) {
        (CqlType::Text, CqlValue::Text(text)) => within(text.len()),
        (CqlType::Ascii, CqlValue::Ascii(text)) => text.is_ascii() && within(text.len()),
        (CqlType::Blob, CqlValue::Blob(bytes)) => within(bytes.len()),
        (CqlType::Boolean, CqlValue::Boolean(_))
        | (CqlType::Tinyint, CqlValue::TinyInt(_))
        | (CqlType::Smallint, CqlValue::SmallInt(_))
        | (CqlType::Int, CqlValue::Int(_))
        | (CqlType::Bigint, CqlValue::BigInt(_))
        | (CqlType::Decimal, CqlValue::Decimal(_))
        | (CqlType::Timestamp, CqlValue::Timestamp(_))
        | (CqlType::Date, CqlValue::Date(_))
        | (CqlType::Uuid, CqlValue::Uuid(_)) => true,
        (CqlType::Float, CqlValue::Float(value)) => value.is_finite(),
        (CqlType::Double, CqlValue::Double(value)) => value.is_finite(),
        _ => false,
    };
    assert!(ok, "field {name}: {value:?} is not a valid {cql_type:?}");
}
