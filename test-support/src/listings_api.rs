//! A local listings API shaped like the seed's Zillow search endpoint: paginated JSON pages
//! (`{"results": [...], "totalPages": N}`), a required API-key header, and a few malformed
//! records on purpose; listings carry a `datePosted` and `postedSince`/`postedBefore` filter
//! them (what a scheduled run's interval asks for). Used by the runner's tests and by `make demo` (the
//! `rtdp-listings-api` binary); deterministic, so tests know every expected row.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::SignedDuration;
use k8s_openapi::jiff::civil::Date;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;

/// The header the API requires (as RapidAPI does).
pub const API_KEY_HEADER: &str = "x-rapidapi-key";

/// The query parameter that keeps listings posted on or after a date (`YYYY-MM-DD`).
pub const POSTED_SINCE: &str = "postedSince";
/// The query parameter that keeps listings posted before a date (`YYYY-MM-DD`).
pub const POSTED_BEFORE: &str = "postedBefore";

/// What a malformed record should be dead-lettered for, and for which field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// `price` is a string.
    PriceIsText,
    /// `city` is missing (a required field).
    MissingCity,
    /// `bedrooms` is a word.
    BedroomsIsAWord,
    /// `imgSrc` exceeds its maxLength of 2048.
    ImageUrlTooLong,
    /// `livingArea` does not fit an int.
    LivingAreaTooLarge,
    /// `price` is 0: the filter `price > 0` skips it on purpose (not a dead letter).
    ZeroPrice,
}

impl Defect {
    const ROTATION: [Defect; 6] = [
        Defect::PriceIsText,
        Defect::MissingCity,
        Defect::BedroomsIsAWord,
        Defect::ImageUrlTooLong,
        Defect::LivingAreaTooLarge,
        Defect::ZeroPrice,
    ];

    /// The dead-letter reason and field the runner must report; `None` for a filtered record.
    pub fn expected(self) -> Option<(&'static str, &'static str)> {
        match self {
            Defect::PriceIsText => Some(("wrong_type", "price")),
            Defect::MissingCity => Some(("missing_required_field", "city")),
            Defect::BedroomsIsAWord => Some(("wrong_type", "bedrooms")),
            Defect::ImageUrlTooLong => Some(("value_too_long", "img_src")),
            Defect::LivingAreaTooLarge => Some(("out_of_range", "living_area")),
            Defect::ZeroPrice => None,
        }
    }
}

/// The listings served, page by page, and which of them are defective.
#[derive(Clone, Debug)]
pub struct Listings {
    /// Records per page.
    pub pages: Vec<Vec<Json>>,
    /// Defective records by zpid.
    pub defects: BTreeMap<i64, Defect>,
}

const CITIES: [(&str, &str, f64, f64); 4] = [
    ("Houston", "77002", 29.7604, -95.3698),
    ("Austin", "78701", 30.2672, -97.7431),
    ("Dallas", "75201", 32.7767, -96.7970),
    ("San Antonio", "78205", 29.4241, -98.4936),
];

impl Listings {
    /// `pages` pages of `per_page` listings; every `defect_every`-th one (0: none) is
    /// defective, cycling through every [`Defect`].
    pub fn generate(pages: usize, per_page: usize, defect_every: usize) -> Self {
        let mut defects = BTreeMap::new();
        let mut rotation = Defect::ROTATION.iter().cycle();
        let pages = (0..pages)
            .map(|page| {
                (0..per_page)
                    .map(|slot| {
                        let index = page * per_page + slot;
                        let mut record = listing(index);
                        if defect_every > 0 && index % defect_every == defect_every - 1 {
                            let defect = *rotation.next().unwrap_or(&Defect::PriceIsText);
                            spoil(&mut record, defect);
                            if let Some(zpid) = record["zpid"].as_i64() {
                                defects.insert(zpid, defect);
                            }
                        }
                        record
                    })
                    .collect()
            })
            .collect();
        Self { pages, defects }
    }

    /// The market `day` days later (0: unchanged): every fourth listing is re-priced (3 %
    /// cheaper a day) and every tenth, from the sixth on, is sold (`homeStatus` `SOLD`).
    /// Defective listings stay as they are.
    pub fn on_day(mut self, day: u32) -> Self {
        if day == 0 {
            return self;
        }
        for (index, record) in self.pages.iter_mut().flatten().enumerate() {
            let defective = record["zpid"]
                .as_i64()
                .is_some_and(|zpid| self.defects.contains_key(&zpid));
            if defective {
                continue;
            }
            if index % 4 == 0
                && let Some(price) = record["price"].as_i64()
            {
                let price = price * 100_i64.saturating_sub(3 * i64::from(day)).max(1) / 100;
                record["price"] = json!(price);
                record["priceForHDP"] = json!(price);
            }
            if index % 10 == 5 {
                record["homeStatus"] = json!("SOLD");
            }
        }
        self
    }

    /// Dates the listings (field `datePosted`, `YYYY-MM-DD`): the k-th was posted `k % days`
    /// days before `last_day`, so each of the `days` days up to `last_day` has listings.
    pub fn posted_over(mut self, days: i64, last_day: Date) -> Self {
        for (index, record) in (0_i64..).zip(self.pages.iter_mut().flatten()) {
            let posted = last_day
                .checked_sub(SignedDuration::from_hours(24 * (index % days.max(1))))
                .unwrap_or(last_day);
            record["datePosted"] = json!(posted.to_string());
        }
        self
    }

    /// The records posted in [`since`, `before`) (dates `YYYY-MM-DD`; either may be absent),
    /// in serving order: what the API serves for `postedSince`/`postedBefore`.
    pub fn posted_within<'a>(
        &'a self,
        since: Option<&'a str>,
        before: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Json> {
        self.all().filter(move |record| {
            let posted = record["datePosted"].as_str().unwrap_or_default();
            since.is_none_or(|since| posted >= since) && before.is_none_or(|before| posted < before)
        })
    }

    /// Every record, in serving order.
    pub fn all(&self) -> impl Iterator<Item = &Json> {
        self.pages.iter().flatten()
    }

    /// The records that must reach Cassandra.
    pub fn good(&self) -> impl Iterator<Item = &Json> {
        self.all().filter(|record| {
            record["zpid"]
                .as_i64()
                .is_none_or(|zpid| !self.defects.contains_key(&zpid))
        })
    }
}

/// One realistic listing (a Zillow search result), deterministic per index.
pub fn listing(index: usize) -> Json {
    let (city, zipcode, latitude, longitude) = CITIES[index % CITIES.len()];
    let zpid = 2_080_000_000_i64 + index as i64 * 7;
    let living_area = 850 + (index as i64 * 137) % 3200;
    let price = 120_000 + (index as i64 * 48_611) % 900_000;
    let home_type = ["SINGLE_FAMILY", "CONDO", "TOWNHOUSE"][index % 3];
    let mut record = json!({
        "zpid": zpid,
        "bedrooms": 1 + index % 5,
        "bathrooms": 1.0 + (index % 4) as f64 * 0.5,
        "streetAddress": format!("{} Westheimer Rd Unit {}", 1000 + index * 3, index % 40),
        "city": city,
        "state": "TX",
        "zipcode": zipcode,
        "country": "USA",
        "daysOnZillow": index % 90,
        "homeStatus": "FOR_SALE",
        "homeType": home_type,
        "isNonOwnerOccupied": index.is_multiple_of(2),
        "livingArea": living_area,
        "price": price,
        "currency": "USD",
        "rentZestimate": price / 190,
        "taxAssessedValue": (price as f64 * 0.83).round(),
        "latitude": latitude + (index % 100) as f64 / 1000.0,
        "longitude": longitude - (index % 100) as f64 / 1000.0,
        "imgSrc": format!("https://photos.zillowstatic.com/fp/{zpid:x}-p_e.jpg"),
        "detailUrl": format!("/homedetails/{zpid}_zpid/"),
        "listingSubType": {"is_FSBA": true},
        "priceForHDP": price,
    });
    // Like the real API: some listings omit optional fields; isFeatured is often absent.
    if index.is_multiple_of(3) {
        record["isFeatured"] = json!(index.is_multiple_of(2));
    }
    if index.is_multiple_of(11)
        && let Some(object) = record.as_object_mut()
    {
        object.remove("livingArea");
        object.remove("rentZestimate");
    }
    record
}

fn spoil(record: &mut Json, defect: Defect) {
    match defect {
        Defect::PriceIsText => record["price"] = json!("call for price"),
        Defect::MissingCity => {
            if let Some(object) = record.as_object_mut() {
                object.remove("city");
            }
        }
        Defect::BedroomsIsAWord => record["bedrooms"] = json!("three"),
        Defect::ImageUrlTooLong => {
            record["imgSrc"] = json!(format!("https://photos.example.com/{}", "x".repeat(3000)))
        }
        Defect::LivingAreaTooLarge => record["livingArea"] = json!(40_000_000_000_i64),
        Defect::ZeroPrice => record["price"] = json!(0),
    }
}

/// A running listings API.
#[derive(Debug)]
pub struct ListingsApi {
    /// The search URL, e.g. `http://127.0.0.1:41234/search`.
    pub url: String,
    requests: Arc<AtomicU64>,
    queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ListingsApi {
    /// Serves `listings` on `address` (port 0 picks one). When `fail_first_request_of_page`
    /// is set, that page answers 503 once before succeeding (to prove retries).
    pub async fn start(
        address: SocketAddr,
        listings: Listings,
        fail_first_request_of_page: Option<usize>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let query_log = Arc::clone(&queries);
        let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let listings = Arc::new(listings);
        let counter = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let listings = Arc::clone(&listings);
                let counter = Arc::clone(&counter);
                let failed_once = Arc::clone(&failed_once);
                let query_log = Arc::clone(&query_log);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        query_log
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(request.uri().query().unwrap_or_default().to_string());
                        let response = answer(
                            &request,
                            &listings,
                            fail_first_request_of_page,
                            &failed_once,
                        );
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            url: format!("http://{local}/search"),
            requests,
            queries,
            task,
        })
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The (`postedSince`, `postedBefore`) of every request so far, in order (empty strings
    /// where a request had none).
    pub fn requested_dates(&self) -> Vec<(String, String)> {
        self.queries()
            .iter()
            .map(|query| {
                let value = |name: &str| {
                    query
                        .split('&')
                        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                        .unwrap_or_default()
                        .to_string()
                };
                (value(POSTED_SINCE), value(POSTED_BEFORE))
            })
            .collect()
    }

    /// The query string of every request answered so far, in order.
    pub fn queries(&self) -> Vec<String> {
        self.queries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ListingsApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(
    request: &Request<hyper::body::Incoming>,
    listings: &Listings,
    fail_first_request_of_page: Option<usize>,
    failed_once: &std::sync::atomic::AtomicBool,
) -> Response<Full<Bytes>> {
    if request.uri().path() != "/search" {
        return respond(StatusCode::NOT_FOUND, json!({"message": "not found"}));
    }
    let has_key = request
        .headers()
        .get(API_KEY_HEADER)
        .is_some_and(|value| !value.is_empty());
    if !has_key {
        return respond(
            StatusCode::UNAUTHORIZED,
            json!({"message": "You are not subscribed to this API."}),
        );
    }
    let query = request.uri().query().unwrap_or_default();
    let parameter = |name: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    let page: usize = parameter("page")
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    if fail_first_request_of_page == Some(page) && !failed_once.swap(true, Ordering::Relaxed) {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"message": "try again"}),
        );
    }
    // Without a date filter, the pages as generated; with one, the matching listings paged
    // anew at the same page size.
    let per_page = listings.pages.first().map_or(0, Vec::len).max(1);
    let (since, before) = (parameter(POSTED_SINCE), parameter(POSTED_BEFORE));
    let pages: Vec<Vec<Json>> = if since.is_some() || before.is_some() {
        let matching: Vec<Json> = listings.posted_within(since, before).cloned().collect();
        matching.chunks(per_page).map(<[Json]>::to_vec).collect()
    } else {
        listings.pages.clone()
    };
    let results = page
        .checked_sub(1)
        .and_then(|index| pages.get(index))
        .cloned()
        .unwrap_or_default();
    let total: usize = pages.iter().map(Vec::len).sum();
    respond(
        StatusCode::OK,
        json!({
            "results": results,
            "resultsPerPage": per_page,
            "totalPages": pages.len(),
            "totalResultCount": total,
        }),
    )
}

fn respond(status: StatusCode, body: Json) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_posted_over_the_days_and_filtered_by_them() {
        let last_day: Date = "2026-11-26".parse().expect("a date");
        let listings = Listings::generate(2, 10, 0).posted_over(7, last_day);
        let one_day: Vec<&Json> = listings
            .posted_within(Some("2026-11-26"), Some("2026-11-27"))
            .collect();
        assert_eq!(one_day.len(), 3, "listings 0, 7 and 14");
        assert_eq!(
            listings
                .posted_within(Some("2026-11-20"), Some("2026-11-27"))
                .count(),
            20
        );
        assert_eq!(listings.posted_within(Some("2026-11-27"), None).count(), 0);
    }

    #[test]
    fn defects_rotate_and_are_tracked() {
        let listings = Listings::generate(2, 12, 4);
        assert_eq!(listings.all().count(), 24);
        assert_eq!(listings.defects.len(), 6);
        assert_eq!(listings.good().count(), 18);
        let kinds: Vec<Defect> = listings.defects.values().copied().collect();
        assert_eq!(kinds, Defect::ROTATION.to_vec());
    }
}
