//! Fuzzes the runner's record parser and validator (`RecordParser::parse`) and the CEL
//! transforms (`Transforms::apply`) with the schema of `examples/property-listings.yaml`:
//! 19 typed fields, a derived `price_per_sqft` and the filter `price > 0`.
//!
//!     cargo +nightly fuzz run record_parser fuzz/corpus-local/record_parser fuzz/seeds/record_parser

#![no_main]

mod common;

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pipeline_runner::record::DEFAULT_MAX_RECORD_BYTES;

static HARNESS: LazyLock<common::Harness> = LazyLock::new(|| {
    common::Harness::new(common::property_listings_schema(), DEFAULT_MAX_RECORD_BYTES)
});

fuzz_target!(|data: &[u8]| {
    HARNESS.check(data);
});
