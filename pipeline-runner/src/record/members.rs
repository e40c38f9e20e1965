//! The fast path of [`super::RecordParser::parse`] for schemas whose fields all read top-level
//! members (`/price`, `/city`): one pass over the record's object that decodes only the
//! members a field reads and skips the others without building them (no key strings, no
//! values nobody reads). Any record it does not fully accept (not an object, malformed JSON,
//! an unknown member under `unknownFields: Reject`) goes the general way, whose error is the
//! one reported, so both paths give the same answer for every input.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

/// Which fields read each top-level member.
#[derive(Clone, Debug)]
pub(super) struct TopLevelMembers {
    fields_by_member: HashMap<String, Vec<usize>>,
    field_count: usize,
}

impl TopLevelMembers {
    /// `None` unless every pointer is a single token: nested paths need the whole document.
    pub(super) fn new<'a>(pointers: impl ExactSizeIterator<Item = &'a str>) -> Option<Self> {
        let field_count = pointers.len();
        let mut fields_by_member: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, pointer) in pointers.enumerate() {
            let token = pointer.strip_prefix('/')?;
            if token.contains('/') {
                return None;
            }
            let member = super::raw::unescape(token);
            fields_by_member.entry(member).or_default().push(index);
        }
        Some(Self {
            fields_by_member,
            field_count,
        })
    }

    /// Each field's value (`None`: the member is absent), or `None` when the record must go
    /// the general way. `known` is the `unknownFields: Reject` list.
    pub(super) fn read(
        &self,
        text: &str,
        known: Option<&BTreeSet<String>>,
    ) -> Option<Vec<Option<Json>>> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let values = deserializer
            .deserialize_map(RecordVisitor {
                members: self,
                known,
            })
            .ok()?;
        deserializer.end().ok()?;
        values
    }
}

struct RecordVisitor<'a> {
    members: &'a TopLevelMembers,
    known: Option<&'a BTreeSet<String>>,
}

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    /// `None`: an unknown member under `Reject`; the general path names the first one.
    type Value = Option<Vec<Option<Json>>>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values: Vec<Option<Json>> = vec![None; self.members.field_count];
        let mut unknown = false;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if let Some(indexes) = self.members.fields_by_member.get(key.as_ref()) {
                // A duplicate member overwrites the earlier one, as in serde_json's `Value`.
                let value: Json = map.next_value()?;
                if let Some((last, others)) = indexes.split_last() {
                    for index in others {
                        values[*index] = Some(value.clone());
                    }
                    values[*last] = Some(value);
                }
            } else {
                map.next_value::<Skipped>()?;
                if self
                    .known
                    .is_some_and(|known| !known.contains(key.as_ref()))
                {
                    unknown = true;
                }
            }
        }
        Ok((!unknown).then_some(values))
    }
}

/// A member name, borrowed from the text unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

/// A value no field reads, decoded without being built. Unlike serde's `IgnoredAny`, which
/// scans a number without reading it, every number is read as `Value` would read it, so a
/// record `Value` refuses (`1e400`) is refused here too.
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skipped;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_unit<E>(self) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Skipped, A::Error> {
        while items.next_element::<Skipped>()?.is_some() {}
        Ok(Skipped)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Skipped, A::Error> {
        while members.next_key::<Skipped>()?.is_some() {
            members.next_value::<Skipped>()?;
        }
        Ok(Skipped)
    }
}
