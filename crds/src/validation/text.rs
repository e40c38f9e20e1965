//! Values written as text in a spec (a field's `default`, a resource quantity), parsed as
//! the type they stand for. Pure.

use std::str::FromStr;

use crate::CqlType;

/// Whether `text` is a value of `cql_type` as a field's `default` is written. Pure.
pub fn check_text(cql_type: CqlType, text: &str) -> Result<(), String> {
    fn parsed<T: FromStr>(text: &str, what: &str) -> Result<(), String> {
        text.trim()
            .parse::<T>()
            .map(|_| ())
            .map_err(|_| format!("expected {what}"))
    }
    match cql_type {
        CqlType::Text => Ok(()),
        CqlType::Ascii => text
            .is_ascii()
            .then_some(())
            .ok_or_else(|| "expected ASCII text".to_string()),
        CqlType::Boolean => matches!(text.trim(), "true" | "false")
            .then_some(())
            .ok_or_else(|| "expected true or false".to_string()),
        CqlType::Tinyint => parsed::<i8>(text, "an integer from -128 to 127"),
        CqlType::Smallint => parsed::<i16>(text, "an integer from -32768 to 32767"),
        CqlType::Int => parsed::<i32>(text, "a 32-bit integer"),
        CqlType::Bigint => parsed::<i64>(text, "a 64-bit integer"),
        CqlType::Float | CqlType::Double => {
            let value: f64 = text
                .trim()
                .parse()
                .map_err(|_| "expected a number".to_string())?;
            value
                .is_finite()
                .then_some(())
                .ok_or_else(|| "expected a finite number".to_string())
        }
        CqlType::Decimal => is_decimal(text.trim())
            .then_some(())
            .ok_or_else(|| "expected a decimal number, e.g. 12.50".to_string()),
        CqlType::Timestamp => {
            let trimmed = text.trim();
            if trimmed.parse::<i64>().is_ok() {
                return Ok(());
            }
            trimmed
                .parse::<k8s_openapi::jiff::Timestamp>()
                .map(|_| ())
                .map_err(|_| "expected an RFC 3339 time or epoch milliseconds".to_string())
        }
        CqlType::Date => text
            .trim()
            .parse::<k8s_openapi::jiff::civil::Date>()
            .map(|_| ())
            .map_err(|_| "expected a date as YYYY-MM-DD".to_string()),
        CqlType::Uuid => is_uuid(text.trim())
            .then_some(())
            .ok_or_else(|| "expected a UUID like 123e4567-e89b-12d3-a456-426614174000".to_string()),
        CqlType::Blob => is_base64(text.trim())
            .then_some(())
            .ok_or_else(|| "expected base64".to_string()),
    }
}

/// `[+-]digits[.digits][e[+-]digits]`, at least one digit before the exponent.
fn is_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |part: &str| part.chars().all(|character| character.is_ascii_digit());
    let mantissa_ok =
        digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty());
    let exponent_ok = exponent.is_none_or(|exponent| {
        let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        !exponent.is_empty() && digits(exponent)
    });
    mantissa_ok && exponent_ok
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, length)| {
            group.len() == length && group.chars().all(|character| character.is_ascii_hexdigit())
        })
}

fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len().is_multiple_of(4)
        && text.len() - body.len() <= 2
        && body.chars().all(|character| {
            character.is_ascii_alphanumeric() || character == '+' || character == '/'
        })
}

/// Kubernetes' quantity: a signed decimal number, then nothing, a binary suffix (Ki..Ei), a
/// decimal suffix (n, u, m, k, M, G, T, P, E) or an exponent (e3, E-2).
pub(super) fn is_quantity(text: &str) -> bool {
    const SUFFIXES: [&str; 15] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|suffix| text.strip_suffix(suffix))
        .unwrap_or(text);
    // An exponent is the decimal grammar's own; a suffix and an exponent do not combine.
    let plain = number
        .split_once(['e', 'E'])
        .map_or(number, |(mantissa, _)| mantissa);
    let has_digit = plain.chars().any(|character| character.is_ascii_digit());
    has_digit && !number.is_empty() && is_decimal(number)
}
