//! `spec.schema`: how a record is parsed (its fields and CQL types), derived, filtered and identified.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CQL_IDENTIFIER_PATTERN, JSON_POINTER_PATTERN};

/// The record schema.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.derived) || self.derived.all(d, !self.fields.exists(f, f.name == d.name))").message("a derived field must not reuse the name of a field").field_path(".derived"))]
#[serde(rename_all = "camelCase")]
pub struct SchemaSpec {
    /// The typed fields read from each JSON record. Each becomes a Cassandra column.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub fields: Vec<FieldSpec>,

    /// Fields computed from the parsed ones with a CEL expression. Each becomes a column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub derived: Vec<DerivedFieldSpec>,

    /// A CEL expression over the parsed and derived fields; records for which it is false are
    /// skipped on purpose (and counted), e.g. `price > 0 && home_status == "FOR_SALE"`. With
    /// `identity`, the tables show the identities whose latest record passes it: a record it
    /// skips also removes its identity's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub filter: Option<String>,

    /// What identifies a record (a listing's `zpid`). With it every table keeps exactly one
    /// row per identity, at its latest values: when a newer record moves an identity to other
    /// key values (a new price in a table clustered by price), its superseded row is deleted.
    /// Without it every record is an event of its own and rows are only ever upserted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySpec>,

    /// What to do with JSON members the schema does not declare: `Ignore` (default) or
    /// `Reject` (dead-letter the record).
    #[serde(default)]
    pub unknown_fields: UnknownFieldPolicy,
}

/// What identifies a record, and when a record says its identity is gone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// The fields whose values identify a record, e.g. `[zpid]`: declared fields (not derived),
    /// required or defaulted, in every table's primary key. Records of one identity must share
    /// a Kafka key (a source's `keyField` is the identity's path), so one processor orders them.
    #[schemars(length(min = 1, max = 8), inner(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48)))]
    pub fields: Vec<String>,

    /// A CEL expression over the parsed and derived fields; when it is true the record says
    /// its identity is gone (e.g. `home_status == "SOLD"`) and its rows are deleted from every
    /// table. A Kafka tombstone (a key with no value) deletes the identity its key names too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub delete_when: Option<String>,
}

/// One typed field of the record.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.maxLength) || self.type in ['text', 'ascii', 'blob']").message("maxLength applies only to text, ascii and blob fields"))]
#[serde(rename_all = "camelCase")]
pub struct FieldSpec {
    /// The column name: a lowercase CQL identifier, e.g. `street_address`.
    #[schemars(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48))]
    pub name: String,

    /// JSON pointer to the value inside the record, e.g. `/streetAddress`. Defaults to
    /// `/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN), length(max = 256))]
    pub path: Option<String>,

    /// The CQL type of the column; the JSON value must convert to it exactly (no silent
    /// truncation: 2.5 is not an int).
    #[serde(rename = "type")]
    pub type_: CqlType,

    /// A record whose value is missing or null is dead-lettered instead of written.
    #[serde(default)]
    pub required: bool,

    /// The value used when the record has none, written as text and parsed as the field's
    /// type, e.g. `"0"` or `"USA"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub default: Option<String>,

    /// For text, ascii and blob: the longest accepted value in bytes; longer values are
    /// dead-lettered. Defaults to 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16777216))]
    pub max_length: Option<i32>,
}

impl FieldSpec {
    /// The JSON pointer this field reads: the declared path, or `/<name>`.
    pub fn json_pointer(&self) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("/{}", self.name))
    }
}

/// A field computed with a CEL expression.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DerivedFieldSpec {
    /// The column name: a lowercase CQL identifier, e.g. `price_per_sqft`.
    #[schemars(regex(pattern = CQL_IDENTIFIER_PATTERN), length(min = 1, max = 48))]
    pub name: String,

    /// The CQL type of the result.
    #[serde(rename = "type")]
    pub type_: CqlType,

    /// A CEL expression over the parsed fields (by column name), e.g.
    /// `living_area > 0 ? double(price) / double(living_area) : null`. A null result leaves
    /// the column empty; an evaluation error dead-letters the record.
    #[schemars(length(min = 1, max = 4096))]
    pub expression: String,
}

/// The CQL types a field can have.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CqlType {
    /// UTF-8 text.
    Text,
    /// US-ASCII text.
    Ascii,
    /// true or false.
    Boolean,
    /// 8-bit signed integer.
    Tinyint,
    /// 16-bit signed integer.
    Smallint,
    /// 32-bit signed integer.
    Int,
    /// 64-bit signed integer.
    Bigint,
    /// 32-bit floating point.
    Float,
    /// 64-bit floating point.
    Double,
    /// Arbitrary-precision decimal, every digit kept: from a JSON number (read from the
    /// record's text, never through a double), a numeric string or an integer. A JSON number
    /// beyond a double's range (such as 1e400) is refused as malformed JSON: send it as a
    /// string. Derived: from a CEL string or integer.
    Decimal,
    /// Milliseconds since the epoch, from an RFC 3339 string or epoch milliseconds.
    Timestamp,
    /// A calendar date, from a `YYYY-MM-DD` string (derived: a CEL string).
    Date,
    /// A UUID, from its canonical string (derived: a CEL string).
    Uuid,
    /// Bytes, from a base64 string.
    Blob,
}

impl CqlType {
    /// The type as written in CQL DDL.
    pub fn as_cql(self) -> &'static str {
        match self {
            CqlType::Text => "text",
            CqlType::Ascii => "ascii",
            CqlType::Boolean => "boolean",
            CqlType::Tinyint => "tinyint",
            CqlType::Smallint => "smallint",
            CqlType::Int => "int",
            CqlType::Bigint => "bigint",
            CqlType::Float => "float",
            CqlType::Double => "double",
            CqlType::Decimal => "decimal",
            CqlType::Timestamp => "timestamp",
            CqlType::Date => "date",
            CqlType::Uuid => "uuid",
            CqlType::Blob => "blob",
        }
    }
}

/// What to do with record members the schema does not declare.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum UnknownFieldPolicy {
    /// Ignore them: APIs add members all the time.
    #[default]
    Ignore,
    /// Dead-letter the record, naming the first unknown member.
    Reject,
}
