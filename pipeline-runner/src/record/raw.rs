//! The exact text of a JSON number in a record. serde_json (without `arbitrary_precision`,
//! which would change every crate's `Value` in the workspace) keeps a number with a fraction
//! or an exponent as an f64, about 17 significant digits; a `decimal` field wants every digit
//! the producer wrote. This walks the record's text along the field's JSON pointer with
//! `RawValue`s (borrowed slices of the text, nothing converted) and returns the number as
//! written. Only `decimal` fields holding such a number take this path; the HTTP source
//! takes its records' text the same way, so what it produces is what the API wrote.

use std::collections::HashMap;

use serde_json::value::RawValue;

/// One JSON pointer token with `~1` and `~0` unescaped (RFC 6901).
pub(crate) fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The text of the JSON value at `pointer` (RFC 6901) in the JSON document `text`, as
/// written; `None` when the pointer does not lead to a value. For duplicate members the last
/// one counts, as for serde_json's `Value`.
pub(crate) fn raw_value_at<'a>(text: &'a str, pointer: &str) -> Option<&'a str> {
    let mut current = text.trim();
    if pointer.is_empty() {
        return Some(current);
    }
    for token in pointer.strip_prefix('/')?.split('/') {
        let next: &'a RawValue = if current.starts_with('{') {
            let mut members: HashMap<String, &'a RawValue> = serde_json::from_str(current).ok()?;
            members.remove(&unescape(token))?
        } else if current.starts_with('[') {
            let items: Vec<&'a RawValue> = serde_json::from_str(current).ok()?;
            let index: usize = token.parse().ok()?;
            items.get(index)?
        } else {
            return None;
        };
        current = next.get();
    }
    Some(current)
}

/// The text of each item of the JSON array at `pointer` in `text`, as written; `None` when
/// the pointer does not lead to an array.
pub(crate) fn raw_items_at<'a>(text: &'a str, pointer: &str) -> Option<Vec<&'a RawValue>> {
    let array = raw_value_at(text, pointer)?;
    if !array.starts_with('[') {
        return None;
    }
    serde_json::from_str(array).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_text_of_a_member_an_item_and_an_escaped_name() {
        let text = r#" { "a": {"b/c": [1, 2.50000000000000000001, {"~d": -1e-30}]}, "x": 1 } "#;
        assert_eq!(
            raw_value_at(text, "/a/b~1c/1"),
            Some("2.50000000000000000001")
        );
        assert_eq!(raw_value_at(text, "/a/b~1c/2/~0d"), Some("-1e-30"));
        assert_eq!(raw_value_at(text, "/x"), Some("1"));
        assert_eq!(raw_value_at(text, "/a/b~1c/3"), None);
        assert_eq!(raw_value_at(text, "/missing"), None);
        assert_eq!(raw_value_at(text, "/x/deeper"), None);
        assert_eq!(raw_value_at(text, ""), Some(text.trim()));
    }

    #[test]
    fn array_items_are_found_as_written() {
        let text = r#"{"data": {"listings": [{"price": 1.000000000000000000001}, {"b": [1,2]}]}}"#;
        let items = raw_items_at(text, "/data/listings").expect("an array");
        let items: Vec<&str> = items.iter().map(|item| item.get()).collect();
        assert_eq!(
            items,
            [r#"{"price": 1.000000000000000000001}"#, r#"{"b": [1,2]}"#]
        );
        assert!(raw_items_at(text, "/data").is_none(), "not an array");
        assert_eq!(raw_items_at("[]", "").map(|items| items.len()), Some(0));
    }

    #[test]
    fn the_last_of_duplicate_members_counts_as_in_serde_json() {
        let text = r#"{"p": 1.25, "p": 3.75}"#;
        let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(value["p"], serde_json::json!(3.75));
        assert_eq!(raw_value_at(text, "/p"), Some("3.75"));
    }
}
