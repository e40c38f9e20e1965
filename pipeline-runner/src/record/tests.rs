//! Unit tests of record parsing and conversion.

use scylla::value::{CqlDate, CqlDecimal, CqlTimestamp};

use super::convert::{convert, parse_decimal};
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
        identity: None,
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
fn decimals_longer_than_any_machine_integer_keep_every_digit() {
    let digits = "-123456789012345678901234567890123456789012345.6789";
    let value = parse_decimal(digits).expect("a long decimal");
    let (bytes, scale) = value.as_signed_be_bytes_slice_and_exponent();
    let unscaled = bigdecimal::num_bigint::BigInt::from_signed_bytes_be(bytes);
    assert_eq!(
        (unscaled.to_string(), scale),
        (
            "-1234567890123456789012345678901234567890123456789".to_string(),
            4
        )
    );
    assert_eq!(parse_decimal("1_000"), None);
    assert_eq!(parse_decimal("1e"), None);
}

#[test]
fn a_default_that_does_not_fit_its_type_is_a_schema_error() {
    let mut bad = field("bedrooms", CqlType::Int);
    bad.default = Some("many".to_string());
    let error = RecordParser::new(&schema(vec![bad])).expect_err("bad default");
    assert!(error.to_string().contains("bedrooms"), "{error}");
}

/// The unscaled digits and the scale of a parsed decimal.
fn digits_and_scale(value: &Option<CqlValue>) -> (String, i32) {
    let Some(CqlValue::Decimal(decimal)) = value else {
        panic!("expected a decimal, got {value:?}");
    };
    let (bytes, scale) = decimal.as_signed_be_bytes_slice_and_exponent();
    (
        bigdecimal::num_bigint::BigInt::from_signed_bytes_be(bytes).to_string(),
        scale,
    )
}

#[test]
fn decimal_numbers_and_strings_keep_every_digit_from_the_record_text() {
    let mut nested = field("nested", CqlType::Decimal);
    nested.path = Some("/amounts/1".to_string());
    let parser = RecordParser::new(&schema(vec![
        field("number", CqlType::Decimal),
        field("string", CqlType::Decimal),
        field("exponent", CqlType::Decimal),
        nested,
        field("integer", CqlType::Decimal),
    ]))
    .expect("a valid schema");
    // 30 significant digits: an f64 keeps about 17.
    let payload = br#"{"number": 1234567890.12345678901234567890,
        "string": "1234567890.12345678901234567890",
        "exponent": 1.00000000000000000001E+3,
        "amounts": [0, -0.100000000000000000000000000001],
        "integer": 123456789012345678901234567890}"#;
    let parsed = parser.parse(Some(payload)).expect("valid");
    let thirty = ("123456789012345678901234567890".to_string(), 20);
    assert_eq!(digits_and_scale(&parsed.values[0]), thirty, "a number");
    assert_eq!(digits_and_scale(&parsed.values[1]), thirty, "a string");
    assert_eq!(
        digits_and_scale(&parsed.values[2]),
        ("100000000000000000001".to_string(), 17)
    );
    assert_eq!(
        digits_and_scale(&parsed.values[3]),
        ("-100000000000000000000000000001".to_string(), 30)
    );
    assert_eq!(
        digits_and_scale(&parsed.values[4]),
        ("123456789012345678901234567890".to_string(), 0),
        "an integer too long for any machine integer"
    );

    // An already-decoded document has only what serde_json kept: an f64's digits.
    let document: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
    let decoded = parser.parse_value(&document).expect("valid");
    assert_eq!(
        digits_and_scale(&decoded.values[0]),
        ("12345678901234567".to_string(), 7),
        "parse_value: 17 significant digits"
    );
    assert_eq!(
        digits_and_scale(&decoded.values[1]),
        thirty,
        "a string stays exact"
    );

    // Beyond a double's range, serde_json refuses the number: the record is malformed JSON.
    let error = parser
        .parse(Some(br#"{"number": 1e400}"#))
        .expect_err("out of a double's range");
    assert_eq!(error.reason, RejectReason::MalformedJson, "{error}");
    let parsed = parser
        .parse(Some(br#"{"number": "1e400"}"#))
        .expect("as a string");
    assert_eq!(digits_and_scale(&parsed.values[0]), ("1".to_string(), -400));
}

/// The one-pass reading of top-level members (`members.rs`) and the general reading of the
/// whole document give the same answer, value or error, for every input.
#[test]
fn the_fast_path_answers_as_the_general_one() {
    let mut rejecting = schema(vec![
        field("zpid", CqlType::Bigint),
        field("city", CqlType::Text),
    ]);
    rejecting.unknown_fields = UnknownFieldPolicy::Reject;
    let mut twice = field("zpid_again", CqlType::Text);
    twice.path = Some("/zpid".to_string());
    let mut escaped = field("slash", CqlType::Text);
    escaped.path = Some("/a~1b".to_string());
    let parsers = [
        listing_parser(),
        RecordParser::new(&rejecting).expect("valid"),
        RecordParser::new(&schema(vec![
            field("zpid", CqlType::Bigint),
            twice,
            escaped,
        ]))
        .expect("valid"),
    ];
    let records = [
        r#"{"zpid": 1, "city": "Houston", "streetAddress": "1 Main St", "price": 2.50000000000000000001}"#,
        r#"{"zpid": 1, "city": "Houston", "zpid": 2}"#,
        r#"{"zpid": 1, "city": "Houston", "extra": {"deep": [1, {"x": null}]}, "a/b": "s"}"#,
        r#"{"\u007apid": 7, "city": "\u0048ouston", "a/b": "\n"}"#,
        r#"{"zpid": 1, "city": "Houston", "streetAddress": "far too long a street name"}"#,
        r#"{"zpid": 1, "city": null}"#,
        r#"{"zpid": "1", "city": "Houston"}"#,
        r#"{"zpid": 1, "city": "Houston", "unknown": 1, "another": 2}"#,
        r#"{"zpid": 1, "city": "Houston"} trailing"#,
        r#"{"zpid": 1, "city": "Houston""#,
        r#"{"zpid": 1, "city": "Houston", "price": 1e400}"#,
        r#"[1, 2]"#,
        r#""a string""#,
        r#"{}"#,
        "",
        r#"{"zpid": 1, "city": "Houston", "x": "\ud800"}"#,
        r#"{"zpid": 1, "city": "Houston", "x": "\q"}"#,
        r#"{"zpid": 1, "city": "Houston", "x": [1, 2e400]}"#,
        r#"{"zpid": 1, "city": "Houston", "x": -0, "y": 18446744073709551616}"#,
    ];
    let deep = format!(
        r#"{{"zpid": 1, "x": {}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for parser in &parsers {
        assert!(parser.top_level.is_some(), "every path is top-level");
        for record in records.iter().copied().chain([deep.as_str()]) {
            assert_eq!(
                parser.parse(Some(record.as_bytes())),
                parser.parse_general(record),
                "{record}"
            );
        }
    }
    let mut nested = field("nested", CqlType::Int);
    nested.path = Some("/a/b".to_string());
    let nested = RecordParser::new(&schema(vec![nested])).expect("valid");
    assert!(
        nested.top_level.is_none(),
        "a nested path reads the whole document"
    );
}

/// The same, over many mutations of real listings: bytes replaced, removed or inserted, with
/// JSON's own punctuation among them, for the example's schema and a rejecting one.
#[test]
fn the_fast_path_answers_as_the_general_one_for_mutated_listings() {
    let example = rtdp_crds::parse_pipeline(
        include_str!("../../../examples/property-listings.yaml"),
        "property-listings.yaml",
    )
    .expect("the example parses");
    let mut rejecting = example.spec.schema.clone();
    rejecting.unknown_fields = UnknownFieldPolicy::Reject;
    let parsers = [
        RecordParser::new(&example.spec.schema).expect("valid"),
        RecordParser::new(&rejecting).expect("valid"),
    ];
    const PIECES: [&[u8]; 12] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"\"",
        b"\\",
        b"null",
        b"1e400",
        b"-0.5",
        b"\"zpid\":",
    ];
    // A fixed xorshift: the same cases on every run.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..20_000_u64 {
        let (_, mut payload) = crate::ingest::generator::listing(case % 64, 50_000);
        for _ in 0..=(next() % 4) {
            let at = (next() % payload.len().max(1) as u64) as usize;
            match next() % 4 {
                0 => payload[at] = PIECES[(next() % 12) as usize][0],
                1 => {
                    payload.remove(at);
                }
                2 => {
                    let piece = PIECES[(next() % 12) as usize];
                    payload.splice(at..at, piece.iter().copied());
                }
                _ => payload[at] = (next() % 256) as u8,
            }
        }
        for parser in &parsers {
            assert_eq!(
                parser.parse(Some(&payload)),
                parser.parse_whole_document(Some(&payload)),
                "case {case}: {}",
                String::from_utf8_lossy(&payload)
            );
        }
    }
}

#[test]
fn keys_convert_as_the_http_source_writes_them() {
    assert_eq!(
        convert_key("2080000049", CqlType::Bigint),
        Ok(CqlValue::BigInt(2_080_000_049))
    );
    assert_eq!(
        convert_key("abc-1", CqlType::Text),
        Ok(CqlValue::Text("abc-1".into()))
    );
    assert_eq!(
        convert_key("42", CqlType::Text),
        Ok(CqlValue::Text("42".into()))
    );
    assert!(convert_key("k", CqlType::Bigint).is_err());
}
