//! `spec.source`: where records come from (an HTTP API, pulled on a schedule or continuously, or the generator).

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CRON_PATTERN, DURATION_PATTERN, JSON_POINTER_PATTERN, SecretKeySelector};

/// Where records come from: exactly one of `http` or `generator`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.http) != has(self.generator)").message("source must set exactly one of http or generator"))]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Pull records from an HTTP/JSON API, on a cron schedule or by continuous polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,

    /// Synthetic property listings at a steady rate, for demos and benchmarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorSource>,
}

/// An HTTP/JSON API polled for records.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.schedule) != has(self.pollInterval)").message("http source must set exactly one of schedule (cron) or pollInterval (continuous)"))]
#[x_kube(validation = Rule::new("!has(self.body) || (has(self.method) && self.method == 'POST')").message("a body is sent only with method: POST").field_path(".body"))]
#[x_kube(validation = Rule::new("!has(self.catchUp) || has(self.schedule)").message("catchUp is about the runs of a schedule: set schedule, or remove catchUp").field_path(".catchUp"))]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    /// The URL to request, e.g. `https://api.example.com/search`.
    #[schemars(regex(pattern = "^https?://[^ ]+$"), length(max = 2048))]
    pub url: String,

    /// The HTTP method.
    #[serde(default)]
    pub method: HttpMethod,

    /// Query parameters added to every request, e.g. `location: "houston, tx"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, String>,

    /// Request headers; values either inline or from a Secret (for API keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub headers: Vec<HttpHeader>,

    /// A JSON body sent with POST requests (refused with GET; must parse as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,

    /// JSON pointer to the array of records in each response, e.g. `/results`. Empty when the
    /// response body itself is the array.
    #[serde(default)]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN), length(max = 256))]
    pub records_pointer: String,

    /// JSON pointer, inside each record, to the value used as the Kafka record key, e.g.
    /// `/zpid`. Records with the same key land in the same partition, in order. Must be the
    /// path of a declared schema field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN), length(max = 256))]
    pub key_field: Option<String>,

    /// How to request further pages of results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,

    /// A cron schedule (as a CronJob takes it, e.g. `@daily` or `0 */6 * * *`): each run
    /// fetches all pages once. Mutually exclusive with pollInterval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN), length(min = 1, max = 128))]
    pub schedule: Option<String>,

    /// What a scheduled run does about the intervals missed since the last one (the cluster
    /// or the source was down): by default it runs each of them, in order, before its own.
    /// Only with schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpSpec>,

    /// Poll continuously, waiting this long between passes, e.g. `30s` or `5m`. Mutually
    /// exclusive with schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub poll_interval: Option<String>,

    /// Timeout of each request, in seconds.
    #[serde(default = "default_http_timeout_seconds")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: i32,

    /// Retries of a failed request (connection error, 429 or 5xx), with exponential backoff.
    #[serde(default = "default_http_max_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub max_retries: i32,
}

/// What a scheduled run does about missed intervals. Every run is recorded in the run ledger
/// (the compacted topic `<topic>.runs`), which tells the next run where the schedule stopped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatchUpSpec {
    /// `All`: run every missed interval, oldest first, then the latest (Airflow's catchup).
    /// `Latest`: run only the latest interval, however late. `None`: run only a run started
    /// within 5 minutes of its schedule time; missed runs are dropped.
    #[serde(default)]
    pub policy: CatchUpPolicy,

    /// With `All`, the most missed intervals one run catches up (the newest ones); older ones
    /// are recorded as `Skipped`, with the backfill that runs them.
    #[serde(default = "default_catch_up_max_intervals")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_intervals: i32,
}

impl Default for CatchUpSpec {
    fn default() -> Self {
        Self {
            policy: CatchUpPolicy::default(),
            max_intervals: default_catch_up_max_intervals(),
        }
    }
}

fn default_catch_up_max_intervals() -> i32 {
    100
}

/// Which missed intervals a scheduled run runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum CatchUpPolicy {
    /// Every missed interval, in order, then the latest.
    #[default]
    All,
    /// The latest interval only.
    Latest,
    /// The latest interval only, and only when its run starts within 5 minutes of the
    /// schedule time.
    None,
}

fn default_http_timeout_seconds() -> i32 {
    30
}

fn default_http_max_retries() -> i32 {
    5
}

/// An HTTP method for the source's requests.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum HttpMethod {
    /// GET with query parameters.
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// POST with the configured body.
    #[serde(rename = "POST")]
    Post,
}

/// One request header: a literal value or a value read from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("a header sets exactly one of value or valueFrom"))]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// The header's name, e.g. `X-Api-Key`.
    #[schemars(regex(pattern = "^[A-Za-z0-9-]{1,128}$"))]
    pub name: String,

    /// A literal value. Never put credentials here: use valueFrom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,

    /// The value, read from a key of a Secret in the Pipeline's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<HeaderValueSource>,
}

/// Where a header's value comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValueSource {
    /// A key of a Secret in the Pipeline's namespace.
    pub secret_key_ref: SecretKeySelector,
}

/// How further pages are requested. Omit pagination for a single request per pass.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.type != 'PageNumber' || has(self.pageParam)").message("PageNumber pagination needs pageParam"))]
#[x_kube(validation = Rule::new("self.type != 'Cursor' || (has(self.cursorParam) && has(self.nextCursorPointer))").message("Cursor pagination needs cursorParam and nextCursorPointer"))]
#[x_kube(validation = Rule::new("self.type != 'NextUrl' || has(self.nextUrlPointer)").message("NextUrl pagination needs nextUrlPointer"))]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// The pagination style.
    #[serde(rename = "type")]
    pub type_: PaginationType,

    /// PageNumber: the query parameter carrying the page number, e.g. `page`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_param: Option<String>,

    /// PageNumber: the first page's number.
    #[serde(default = "default_start_page")]
    #[schemars(range(min = 0, max = 1000000))]
    pub start_page: i32,

    /// PageNumber: JSON pointer to the total number of pages in a response, e.g.
    /// `/totalPages`. Without it, paging stops at the first empty page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN))]
    pub total_pages_pointer: Option<String>,

    /// Cursor: the query parameter carrying the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_param: Option<String>,

    /// Cursor: JSON pointer to the next cursor in a response; paging stops when it is absent
    /// or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN))]
    pub next_cursor_pointer: Option<String>,

    /// NextUrl: JSON pointer to the URL of the next page; paging stops when it is absent or
    /// null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = JSON_POINTER_PATTERN))]
    pub next_url_pointer: Option<String>,

    /// The most pages fetched in one pass, a guard against APIs that never stop.
    #[serde(default = "default_max_pages")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_pages: i32,
}

fn default_start_page() -> i32 {
    1
}

fn default_max_pages() -> i32 {
    100
}

/// A pagination style.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PaginationType {
    /// A page-number query parameter, incremented until the last page.
    PageNumber,
    /// An opaque cursor taken from each response and sent with the next request.
    Cursor,
    /// The full URL of the next page, taken from each response.
    NextUrl,
}

/// Synthetic records at a steady rate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorSource {
    /// Records produced per second.
    #[schemars(range(min = 1, max = 1000000))]
    pub records_per_second: i32,

    /// Stop after this many records. Omit to run until stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub total_records: Option<i64>,

    /// Distinct keys the generator cycles through, so later records update earlier ones.
    #[serde(default = "default_generator_keys")]
    #[schemars(range(min = 1))]
    pub distinct_keys: i64,

    /// The kind of synthetic record.
    #[serde(default)]
    pub profile: GeneratorProfile,
}

fn default_generator_keys() -> i64 {
    100_000
}

/// The shape of synthetic records.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum GeneratorProfile {
    /// Zillow-style property listings (zpid, price, livingArea, city, ...), about 1 KB each.
    #[default]
    PropertyListings,
}
