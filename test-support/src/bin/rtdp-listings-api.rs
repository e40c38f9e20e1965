//! `rtdp-listings-api`: the local listings API for `make demo`. Prints its URL on the first
//! line of stdout, then serves until killed.

use std::net::SocketAddr;

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::Date;
use k8s_openapi::jiff::tz::TimeZone;
use rtdp_test_support::listings_api::{Listings, ListingsApi};

/// Yesterday's date in UTC: the newest listings were posted then, so a backfill of the past
/// week finds every day filled.
fn yesterday() -> Date {
    let today = Timestamp::now().to_zoned(TimeZone::UTC).date();
    today.yesterday().unwrap_or(today)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut address: SocketAddr = "127.0.0.1:0".parse()?;
    let mut pages = 5_usize;
    let mut per_page = 40_usize;
    let mut defect_every = 25_usize;
    let mut posted_over_days = 7_i64;
    let mut day = 0_u32;
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || {
            arguments
                .next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--address" => address = value()?.parse()?,
            "--pages" => pages = value()?.parse()?,
            "--per-page" => per_page = value()?.parse()?,
            "--defect-every" => defect_every = value()?.parse()?,
            "--posted-over-days" => posted_over_days = value()?.parse()?,
            "--day" => day = value()?.parse()?,
            "--help" | "-h" => {
                println!(
                    "rtdp-listings-api [--address 127.0.0.1:0] [--pages 5] [--per-page 40] [--defect-every 25] [--posted-over-days 7] [--day 0]\n\
                     Serves Zillow-style search pages at /search?page=N (header X-RapidAPI-Key required).\n\
                     Listings were posted over the days up to yesterday (UTC); postedSince=YYYY-MM-DD and\n\
                     postedBefore=YYYY-MM-DD keep those posted in [since, before). --day N serves the market N days\n\
                     on: every fourth listing re-priced (3 % cheaper a day), every tenth from the sixth sold."
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown flag {other} (see --help)"),
        }
    }
    let api = ListingsApi::start(
        address,
        Listings::generate(pages, per_page, defect_every)
            .on_day(day)
            .posted_over(posted_over_days, yesterday()),
        None,
    )
    .await
    .map_err(|error| anyhow::anyhow!("binding {address}: {error}"))?;
    println!("{}", api.url);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
