//! Unit tests of the HTTP source: header variables, record pointers, page URLs, errors.

use super::*;
use serde_json::json;

#[test]
fn header_variables_follow_the_contract() {
    assert_eq!(
        header_variable("X-RapidAPI-Key"),
        "RTDP_HTTP_HEADER_X_RAPIDAPI_KEY"
    );
}

#[test]
fn records_are_found_at_the_pointer() {
    let document = json!({"results": [{"zpid": 1}, {"zpid": "2"}], "totalPages": 3});
    let records = records_at(&document, "/results").expect("an array");
    assert_eq!(records.len(), 2);
    assert_eq!(key_of(&records[0], "/zpid").as_deref(), Some("1"));
    assert_eq!(key_of(&records[1], "/zpid").as_deref(), Some("2"));
    assert_eq!(key_of(&records[1], "/missing"), None);
    let error = records_at(&document, "/totalPages").expect_err("not an array");
    assert!(error.contains("a number"), "{error}");
    assert!(records_at(&document, "/nothing").is_err());
    let bare = json!([1, 2]);
    assert_eq!(records_at(&bare, "").expect("the document").len(), 2);
}

#[test]
fn page_urls_carry_query_and_page_parameters() {
    let source: HttpSource = serde_json::from_value(json!({
        "url": "http://127.0.0.1:1/search",
        "queryParams": {"location": "houston, tx"},
        "pagination": {"type": "PageNumber", "pageParam": "page"},
        "schedule": "@daily"
    }))
    .expect("a source");
    let ingest = HttpIngest::new(&source, None).expect("an ingest");
    let url = ingest.page_url(3, None, None);
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:1/search?location=houston%2C+tx&page=3"
    );
}

#[tokio::test]
async fn request_errors_name_their_cause() {
    // A port nothing listens on: the cause (connection refused) must be in the text.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("its address");
    drop(listener);
    let error = reqwest::Client::new()
        .get(format!("http://{address}/search"))
        .send()
        .await
        .expect_err("nothing listens there");
    let text = error_chain(&error);
    assert!(text.starts_with("error sending request for url"), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    // A name that cannot resolve: the DNS failure is named.
    let error = reqwest::Client::new()
        .get("http://rtdp-no-such-host.invalid/search")
        .send()
        .await
        .expect_err("the name does not resolve");
    let text = error_chain(&error).to_lowercase();
    assert!(
        text.contains("dns error") || text.contains("resolve") || text.contains("name"),
        "{text}"
    );
}

#[test]
fn retryable_statuses() {
    assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
    assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
    assert!(!retryable(StatusCode::NOT_FOUND));
    assert!(!retryable(StatusCode::UNAUTHORIZED));
}
