//! The HTTP source: one pass requests every page of results, extracts the records at the
//! declared pointer, keys them by the key field and hands them to the sink. Ingest does not
//! validate records: the process role does, in one place, and dead-letters with reasons.

use std::cell::Cell;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use rtdp_crds::template::{self, Interval};
use rtdp_crds::{HttpMethod, HttpSource, PaginationType};
use serde_json::Value as Json;

use crate::connect::secret_from_env;
use crate::error::RunnerError;
use crate::ingest::sink::Sink;
use crate::record::raw::raw_items_at;
use crate::telemetry::{Metrics, OutcomeLabel};

/// The longest a single backoff waits, whatever Retry-After says.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Pages fetched and produced.
    pub pages: u64,
    /// Records handed to Kafka.
    pub records: u64,
    /// Pages that failed after their retries (their records are missing from this pass).
    pub failed_pages: u64,
    /// The first failure, for the log and the exit status.
    pub first_error: Option<String>,
}

/// An HTTP source ready to run passes.
#[derive(Clone, Debug)]
pub struct HttpIngest {
    client: reqwest::Client,
    source: HttpSource,
    url: Url,
    /// The URL as configured, before templates are filled in.
    url_text: String,
    headers: HeaderMap,
    timeout: Duration,
    base_backoff: Duration,
}

/// The environment variable carrying a header's secret value (docs/runner-contract.md).
pub fn header_variable(header: &str) -> String {
    format!(
        "RTDP_HTTP_HEADER_{}",
        header.to_ascii_uppercase().replace('-', "_")
    )
}

impl HttpIngest {
    /// Builds the client; every header value must be resolvable now.
    pub fn new(source: &HttpSource, url_override: Option<&str>) -> Result<Self, RunnerError> {
        let url_text = url_override.unwrap_or(&source.url);
        let url = Url::parse(url_text)
            .map_err(|error| RunnerError::Config(format!("source url {url_text:?}: {error}")))?;
        let mut headers = HeaderMap::new();
        for header in &source.headers {
            let value = match (&header.value, &header.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => secret_from_env(
                    &header_variable(&header.name),
                    &format!(
                        "header {} (Secret {} key {})",
                        header.name, from.secret_key_ref.name, from.secret_key_ref.key
                    ),
                )?,
                (None, None) => String::new(),
            };
            let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|error| {
                RunnerError::Config(format!("header name {:?}: {error}", header.name))
            })?;
            let value = HeaderValue::from_str(&value).map_err(|error| {
                RunnerError::Config(format!("value of header {}: {error}", header.name))
            })?;
            headers.insert(name, value);
        }
        let timeout = Duration::from_secs(u64::try_from(source.timeout_seconds).unwrap_or(30));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("rtdp-pipeline-runner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| RunnerError::Config(format!("building the HTTP client: {error}")))?;
        Ok(Self {
            client,
            source: source.clone(),
            url,
            url_text: url_text.to_string(),
            headers,
            timeout,
            base_backoff: Duration::from_millis(500),
        })
    }

    /// This source with its templates (`{{ interval.start }}`...) filled in for `interval`:
    /// the URL, the query parameter values, the inline header values and the body.
    pub fn for_interval(&self, interval: &Interval) -> Result<Self, String> {
        let mut rendered = self.clone();
        let url_text = template::render(&self.url_text, interval)?;
        rendered.url =
            Url::parse(&url_text).map_err(|error| format!("source url {url_text:?}: {error}"))?;
        for value in rendered.source.query_params.values_mut() {
            *value = template::render(value, interval)?;
        }
        if let Some(body) = &mut rendered.source.body {
            *body = template::render(body, interval)?;
        }
        for header in &self.source.headers {
            if let Some(value) = header
                .value
                .as_deref()
                .filter(|value| template::is_templated(value))
            {
                let value = HeaderValue::from_str(&template::render(value, interval)?)
                    .map_err(|error| format!("value of header {}: {error}", header.name))?;
                if let Ok(name) = HeaderName::from_bytes(header.name.as_bytes()) {
                    rendered.headers.insert(name, value);
                }
            }
        }
        Ok(rendered)
    }

    /// Shortens the first retry's wait (tests).
    pub fn with_base_backoff(mut self, base_backoff: Duration) -> Self {
        self.base_backoff = base_backoff;
        self
    }

    /// Fetches every page once and produces its records.
    pub async fn run_pass(&self, sink: &mut Sink<'_>, metrics: &Metrics) -> PassReport {
        let mut report = PassReport::default();
        let pagination = self.source.pagination.as_ref();
        let max_pages = pagination.map_or(1, |pagination| {
            u64::try_from(pagination.max_pages).unwrap_or(1)
        });
        let mut page_number = pagination.map_or(1, |pagination| i64::from(pagination.start_page));
        let mut cursor: Option<String> = None;
        let mut next_url: Option<Url> = None;
        let mut last_page: Option<i64> = None;
        let mut requested = 0_u64;

        while requested < max_pages {
            requested += 1;
            let url = self.page_url(page_number, cursor.as_deref(), next_url.as_ref());
            let (document, text) = match self.fetch(url.clone(), metrics).await {
                Ok(page) => page,
                Err(error) => {
                    report.failed_pages += 1;
                    tracing::error!(%url, %error, "page failed after its retries");
                    report.first_error.get_or_insert(error);
                    // Page numbers can skip a bad page when the total is known; cursors and
                    // next URLs cannot go on without the failed response.
                    let can_skip = pagination.is_some_and(|pagination| {
                        pagination.type_ == PaginationType::PageNumber
                            && last_page.is_some_and(|last| page_number < last)
                    });
                    if can_skip {
                        page_number += 1;
                        continue;
                    }
                    break;
                }
            };
            let records = match records_at(&document, &self.source.records_pointer) {
                Ok(records) => records,
                Err(error) => {
                    report.failed_pages += 1;
                    tracing::error!(%url, %error, "page has no records array");
                    report.first_error.get_or_insert(error);
                    break;
                }
            };
            report.pages += 1;
            let count = records.len();
            // Each record as the API wrote it: serde_json's Value keeps a number with a
            // fraction as an f64, and a decimal field wants every digit.
            let written = raw_items_at(&text, &self.source.records_pointer)
                .filter(|written| written.len() == count);
            for (index, record) in records.iter().enumerate() {
                let key = self
                    .source
                    .key_field
                    .as_deref()
                    .and_then(|pointer| key_of(record, pointer));
                let payload = match written.as_ref().and_then(|written| written.get(index)) {
                    Some(written) => written.get().as_bytes().to_vec(),
                    None => serde_json::to_vec(record).unwrap_or_default(),
                };
                sink.send(key.as_deref().map(str::as_bytes), &payload).await;
                report.records += 1;
            }
            tracing::info!(%url, records = count, "page ingested");

            let Some(pagination) = pagination else {
                break;
            };
            match pagination.type_ {
                PaginationType::PageNumber => {
                    if let Some(pointer) = &pagination.total_pages_pointer {
                        last_page = document
                            .pointer(pointer)
                            .and_then(Json::as_i64)
                            .map(|total| i64::from(pagination.start_page) + total - 1);
                    }
                    let done = match last_page {
                        Some(last) => page_number >= last,
                        None => count == 0,
                    };
                    if done {
                        break;
                    }
                    page_number += 1;
                }
                PaginationType::Cursor => {
                    cursor = pagination
                        .next_cursor_pointer
                        .as_deref()
                        .and_then(|pointer| document.pointer(pointer))
                        .and_then(scalar_text);
                    if cursor.as_deref().is_none_or(str::is_empty) {
                        break;
                    }
                }
                PaginationType::NextUrl => {
                    next_url = pagination
                        .next_url_pointer
                        .as_deref()
                        .and_then(|pointer| document.pointer(pointer))
                        .and_then(Json::as_str)
                        .filter(|text| !text.is_empty())
                        .and_then(|text| self.url.join(text).ok());
                    if next_url.is_none() {
                        break;
                    }
                }
            }
        }
        sink.flush().await;
        report
    }

    fn page_url(&self, page_number: i64, cursor: Option<&str>, next_url: Option<&Url>) -> Url {
        if let Some(next) = next_url {
            return next.clone();
        }
        let mut url = self.url.clone();
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in &self.source.query_params {
                query.append_pair(name, value);
            }
            if let Some(pagination) = &self.source.pagination {
                match pagination.type_ {
                    PaginationType::PageNumber => {
                        if let Some(parameter) = &pagination.page_param {
                            query.append_pair(parameter, &page_number.to_string());
                        }
                    }
                    PaginationType::Cursor => {
                        if let (Some(parameter), Some(cursor)) = (&pagination.cursor_param, cursor)
                        {
                            query.append_pair(parameter, cursor);
                        }
                    }
                    PaginationType::NextUrl => {}
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// One page, with retries and exponential backoff (backon) on connection errors,
    /// timeouts, 429 and 5xx, a server's Retry-After replacing the computed wait. Other
    /// statuses fail at once: retrying cannot help. The decoded document and its text.
    async fn fetch(&self, url: Url, metrics: &Metrics) -> Result<(Json, String), String> {
        let max_retries = usize::try_from(self.source.max_retries).unwrap_or(0);
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.base_backoff)
            .with_max_delay(MAX_BACKOFF)
            .with_max_times(max_retries);
        let retries = Cell::new(0_u32);
        let outcome = (|| self.fetch_once(&url, metrics))
            .retry(policy)
            .when(|failure| failure.retryable)
            .adjust(|failure, planned| {
                planned.map(|delay| {
                    failure
                        .retry_after
                        .map_or(delay, |after| after.min(MAX_BACKOFF))
                })
            })
            .notify(|failure, backoff| {
                count(metrics, "retried");
                tracing::warn!(
                    error = %failure.message,
                    attempt = retries.get(),
                    retry_in_ms = backoff.as_millis() as u64,
                    "request failed; retrying"
                );
                retries.set(retries.get() + 1);
            })
            .await;
        outcome.map_err(|failure| {
            count(metrics, "failed");
            if failure.retryable {
                format!("{} (after {} retries)", failure.message, retries.get())
            } else {
                failure.message
            }
        })
    }

    /// One request of a page.
    async fn fetch_once(
        &self,
        url: &Url,
        metrics: &Metrics,
    ) -> Result<(Json, String), FetchFailure> {
        let request = match self.source.method {
            HttpMethod::Get => self.client.get(url.clone()),
            HttpMethod::Post => self
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(self.source.body.clone().unwrap_or_default()),
        };
        let response = request
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|error| {
                FetchFailure::retryable(format!("requesting {url}: {}", self.describe(&error)))
            })?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(FetchFailure {
                message: format!("{url} answered {status}"),
                retryable: retryable(status),
                retry_after,
            });
        }
        let body = response.bytes().await.map_err(|error| {
            FetchFailure::retryable(format!(
                "reading the response of {url}: {}",
                self.describe(&error)
            ))
        })?;
        let not_json = |error: &dyn std::fmt::Display| {
            FetchFailure::retryable(format!("the response of {url} is not JSON: {error}"))
        };
        let text = String::from_utf8(body.to_vec()).map_err(|error| not_json(&error))?;
        let document = serde_json::from_str::<Json>(&text).map_err(|error| not_json(&error))?;
        count(metrics, "ok");
        Ok((document, text))
    }

    /// A request error with its causes; a timeout also names the limit (reqwest says only
    /// "operation timed out"; connecting has at most 10 s of it).
    fn describe(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            format!(
                "timed out (timeoutSeconds: {}): {}",
                self.timeout.as_secs(),
                error_chain(error)
            )
        } else {
            error_chain(error)
        }
    }
}

/// Why one request failed, and whether and when to try again.
#[derive(Debug)]
struct FetchFailure {
    message: String,
    retryable: bool,
    /// The server's Retry-After, which replaces the computed backoff.
    retry_after: Option<Duration>,
}

impl FetchFailure {
    fn retryable(message: String) -> Self {
        FetchFailure {
            message,
            retryable: true,
            retry_after: None,
        }
    }
}

/// An error and every cause under it, outermost first: reqwest's own message is only
/// "error sending request for url (...)"; the causes say DNS, connect, TLS or timeout.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and std::io sometimes repeat the same words one level down.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn count(metrics: &Metrics, outcome: &str) {
    metrics
        .source_requests
        .get_or_create(&OutcomeLabel {
            outcome: outcome.to_string(),
        })
        .inc();
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// The records array at `pointer` (the whole document when the pointer is empty).
pub fn records_at<'a>(document: &'a Json, pointer: &str) -> Result<&'a Vec<Json>, String> {
    match document.pointer(pointer) {
        Some(Json::Array(records)) => Ok(records),
        Some(other) => Err(format!(
            "recordsPointer {pointer:?} points at {}, not an array",
            kind(other)
        )),
        None => Err(format!("recordsPointer {pointer:?} is not in the response")),
    }
}

/// The Kafka key of a record: the key field's value as text; none when absent or not a
/// scalar (the record still goes to Kafka, and the process role judges it).
pub fn key_of(record: &Json, pointer: &str) -> Option<String> {
    record.pointer(pointer).and_then(scalar_text)
}

fn scalar_text(value: &Json) -> Option<String> {
    match value {
        Json::String(text) => Some(text.clone()),
        Json::Number(number) => Some(number.to_string()),
        Json::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
