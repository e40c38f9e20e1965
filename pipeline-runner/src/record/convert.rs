//! Converting one JSON value to its column's CQL type, exactly: no truncation, no silent
//! null, decimals with every digit.

use std::str::FromStr;

use base64::Engine;
use bigdecimal::BigDecimal;
use rtdp_crds::CqlType;
use scylla::value::{CqlDate, CqlDecimal, CqlTimestamp, CqlValue};
use serde_json::Value as Json;

use super::RejectReason;

pub(super) fn json_kind(value: &Json) -> String {
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

/// A rejection reason and what was wrong.
pub(super) type ConversionError = (RejectReason, String);

fn wrong_type(expected: &str, found: &Json) -> ConversionError {
    (
        RejectReason::WrongType,
        format!("expected {expected}, found {}", json_kind(found)),
    )
}

/// Converts a JSON value to the column's CQL type, exactly: no truncation, no silent null.
pub(super) fn convert(
    json: &Json,
    cql_type: CqlType,
    max_length: usize,
) -> Result<CqlValue, ConversionError> {
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

pub(super) fn check_length(length: usize, max_length: usize) -> Result<(), ConversionError> {
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

/// Parses `-12.345`, `1e3` or `1.5E-2` with every digit kept (bigdecimal: arbitrary
/// precision, never through f64), as CQL's unscaled two's-complement integer and scale.
pub(super) fn parse_decimal(text: &str) -> Option<CqlDecimal> {
    // Only plain decimal notation: bigdecimal would also read forms such as `1_000`.
    let plain = text
        .bytes()
        .all(|byte| byte.is_ascii_digit() || matches!(byte, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !plain {
        return None;
    }
    let (unscaled, scale) = BigDecimal::from_str(text).ok()?.into_bigint_and_exponent();
    Some(CqlDecimal::from_signed_be_bytes_slice_and_exponent(
        &unscaled.to_signed_bytes_be(),
        i32::try_from(scale).ok()?,
    ))
}
