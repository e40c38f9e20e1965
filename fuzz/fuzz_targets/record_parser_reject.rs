//! The same checks as `record_parser`, with a stricter variant of the
//! `examples/property-listings.yaml` schema that reaches the code the seed schema does not:
//! `unknownFields: Reject`, maxLength on text and ascii fields, every CQL type (tinyint,
//! smallint, float, decimal, timestamp, date, uuid, blob, ascii), an escaped and a nested JSON
//! pointer, defaults of several types, more derived fields and a 4 KiB record limit.
//!
//!     cargo +nightly fuzz run record_parser_reject fuzz/corpus-local/record_parser_reject fuzz/seeds/record_parser

#![no_main]

mod common;

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rtdp_crds::{CqlType, DerivedFieldSpec, FieldSpec, SchemaSpec, UnknownFieldPolicy};

/// Small enough that libFuzzer reaches it (its inputs grow to a few KiB).
const MAX_RECORD_BYTES: usize = 4096;

fn field(name: &str, path: &str, cql_type: CqlType) -> FieldSpec {
    FieldSpec {
        name: name.to_string(),
        path: Some(path.to_string()),
        type_: cql_type,
        required: false,
        default: None,
        max_length: None,
    }
}

fn derived(name: &str, cql_type: CqlType, expression: &str) -> DerivedFieldSpec {
    DerivedFieldSpec {
        name: name.to_string(),
        type_: cql_type,
        expression: expression.to_string(),
    }
}

fn strict_schema() -> SchemaSpec {
    let mut schema = common::property_listings_schema();
    schema.unknown_fields = UnknownFieldPolicy::Reject;
    for spec in &mut schema.fields {
        match spec.name.as_str() {
            "street_address" => spec.max_length = Some(64),
            "city" => spec.max_length = Some(32),
            "zipcode" => {
                spec.type_ = CqlType::Ascii;
                spec.max_length = Some(10);
            }
            "home_status" => {
                spec.type_ = CqlType::Ascii;
                spec.max_length = Some(32);
                spec.default = Some("FOR_SALE".to_string());
            }
            "bedrooms" => spec.type_ = CqlType::Tinyint,
            "days_on_zillow" => spec.type_ = CqlType::Smallint,
            "img_src" => spec.max_length = Some(256),
            _ => {}
        }
    }
    let mut list_date = field("list_date", "/listDate", CqlType::Date);
    list_date.default = Some("1970-01-01".to_string());
    let mut thumbnail = field("thumbnail", "/thumbnail", CqlType::Blob);
    thumbnail.max_length = Some(48);
    let mut unit = field("unit", "/unit~1apt", CqlType::Text);
    unit.max_length = Some(8);
    let mut lot_area = field("lot_area", "/lotAreaValue", CqlType::Float);
    lot_area.default = Some("0.0".to_string());
    schema.fields.extend([
        field("listed_at", "/listedAt", CqlType::Timestamp),
        list_date,
        field("listing_id", "/listingId", CqlType::Uuid),
        field("price_exact", "/priceExact", CqlType::Decimal),
        thumbnail,
        lot_area,
        unit,
        field("broker_name", "/brokerInfo/name", CqlType::Text),
        field("broker_phone", "/brokerInfo/phones/0", CqlType::Ascii),
    ]);
    schema.derived.extend([
        derived(
            "price_exact_double",
            CqlType::Double,
            "price_exact == null ? null : price_exact * 1.0",
        ),
        derived(
            "yearly_rent",
            CqlType::Bigint,
            "rent_zestimate == null ? null : rent_zestimate * 12",
        ),
        derived(
            "rooms",
            CqlType::Smallint,
            "bedrooms == null ? null : bedrooms + 1",
        ),
        derived(
            "listed_day",
            CqlType::Text,
            "listed_at == null ? null : string(listed_at)",
        ),
        derived("list_day", CqlType::Text, "list_date"),
        derived(
            "thumbnail_bytes",
            CqlType::Int,
            "thumbnail == null ? null : size(thumbnail)",
        ),
        derived(
            "label",
            CqlType::Ascii,
            "city + ' ' + (zipcode == null ? '' : zipcode)",
        ),
    ]);
    schema.filter = Some("price > 0 && home_status != 'SOLD'".to_string());
    schema
}

static HARNESS: LazyLock<common::Harness> =
    LazyLock::new(|| common::Harness::new(strict_schema(), MAX_RECORD_BYTES));

fuzz_target!(|data: &[u8]| {
    HARNESS.check(data);
});
