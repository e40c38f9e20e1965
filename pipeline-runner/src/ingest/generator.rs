//! Synthetic property listings at a steady rate: shaped like the seed's Zillow search
//! results (about 1 KB each), deterministic per index, cycling through a fixed set of keys so
//! later records update earlier ones.

use std::time::Duration;

use rtdp_crds::GeneratorSource;
use serde_json::json;
use tokio::sync::watch;

use crate::ingest::sink::Sink;

const CITIES: [(&str, &str, f64, f64); 8] = [
    ("Houston", "TX", 29.7604, -95.3698),
    ("Austin", "TX", 30.2672, -97.7431),
    ("Dallas", "TX", 32.7767, -96.7970),
    ("Denver", "CO", 39.7392, -104.9903),
    ("Phoenix", "AZ", 33.4484, -112.0740),
    ("Atlanta", "GA", 33.7490, -84.3880),
    ("Seattle", "WA", 47.6062, -122.3321),
    ("Chicago", "IL", 41.8781, -87.6298),
];
const HOME_TYPES: [&str; 4] = ["SINGLE_FAMILY", "CONDO", "TOWNHOUSE", "MULTI_FAMILY"];
const STREETS: [&str; 6] = ["Oak", "Maple", "Cedar", "Pine", "Elm", "Willow"];

/// SplitMix64: a tiny, fast, well-mixed deterministic sequence (no RNG crate needed).
fn mix(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The listing with sequence number `index`; its key (zpid) cycles over `distinct_keys`.
pub fn listing(index: u64, distinct_keys: u64) -> (String, Vec<u8>) {
    let zpid = 20_000_000 + index % distinct_keys.max(1);
    let random = mix(index);
    let (city, state, latitude, longitude) = CITIES[(zpid % CITIES.len() as u64) as usize];
    let bedrooms = 1 + random % 5;
    let bathrooms = 1.0 + (random >> 8) as f64 % 4.0 * 0.5;
    let living_area = 600 + (random >> 16) % 3400;
    let price = 90_000 + ((random >> 24) % 1_500_000) / 1000 * 1000;
    let street = STREETS[((random >> 32) % STREETS.len() as u64) as usize];
    let number = 100 + (random >> 40) % 9_800;
    let home_type = HOME_TYPES[((random >> 44) % HOME_TYPES.len() as u64) as usize];
    let offset = ((random >> 48) % 2000) as f64 / 10_000.0;
    let record = json!({
        "zpid": zpid,
        "bedrooms": bedrooms,
        "bathrooms": bathrooms,
        "streetAddress": format!("{number} {street} St"),
        "city": city,
        "state": state,
        "zipcode": format!("{:05}", 70_000 + zpid % 9_000),
        "country": "USA",
        "daysOnZillow": (random >> 20) % 120,
        "homeStatus": "FOR_SALE",
        "homeType": home_type,
        "isFeatured": random.is_multiple_of(7),
        "isNonOwnerOccupied": random.is_multiple_of(3),
        "livingArea": living_area,
        "lotAreaValue": living_area * 3,
        "lotAreaUnit": "sqft",
        "price": price,
        "priceChange": -(((random >> 12) % 20) as i64) * 1000,
        "currency": "USD",
        "rentZestimate": price / 200,
        "taxAssessedValue": price as f64 * 0.87,
        "zestimate": price + (random >> 36) % 20_000,
        "latitude": latitude + offset,
        "longitude": longitude - offset,
        "imgSrc": format!("https://photos.example.com/p/{zpid:x}/{random:016x}-p_e.jpg"),
        "detailUrl": format!("https://listings.example.com/homedetails/{number}-{street}-St-{city}-{state}/{zpid}_zpid/"),
        "listingSubType": {"isFSBA": random.is_multiple_of(2), "isOpenHouse": random.is_multiple_of(5)},
        "description": "Light-filled home with an updated kitchen, hardwood floors, a fenced back yard and a two-car garage, close to schools, parks and shopping. Recent roof, new HVAC, energy-efficient windows; move-in ready.",
        "sequence": index,
    });
    (
        zpid.to_string(),
        serde_json::to_vec(&record).unwrap_or_default(),
    )
}

/// Produces listings at the configured rate until `totalRecords` (or shutdown). Returns the
/// records produced.
pub async fn run(
    source: &GeneratorSource,
    sink: &mut Sink<'_>,
    shutdown: &mut watch::Receiver<bool>,
) -> u64 {
    let rate = u64::try_from(source.records_per_second).unwrap_or(1).max(1);
    let total = source
        .total_records
        .and_then(|total| u64::try_from(total).ok());
    let distinct_keys = u64::try_from(source.distinct_keys).unwrap_or(1).max(1);
    // Ticks of 10 ms; each tick sends what the rate allows so far (no drift).
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = tokio::time::Instant::now();
    let mut sent = 0_u64;
    loop {
        if total.is_some_and(|total| sent >= total) || *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        let elapsed = started.elapsed().as_secs_f64();
        let mut due = (elapsed * rate as f64) as u64 + 1;
        if let Some(total) = total {
            due = due.min(total);
        }
        while sent < due {
            let (key, payload) = listing(sent, distinct_keys);
            sink.send(Some(key.as_bytes()), &payload).await;
            sent += 1;
        }
    }
    sink.flush().await;
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_deterministic_about_one_kilobyte_and_cycle_keys() {
        let (key, payload) = listing(5, 3);
        assert_eq!(listing(5, 3), (key.clone(), payload.clone()));
        assert_eq!(key, "20000002");
        assert_eq!(listing(8, 3).0, key, "index 8 reuses the key of index 5");
        assert!(
            (800..1400).contains(&payload.len()),
            "a listing is about 1 KB, got {}",
            payload.len()
        );
        let document: serde_json::Value =
            serde_json::from_slice(&payload).expect("a listing is JSON");
        assert!(document["price"].as_u64().is_some());
        assert!(document["livingArea"].as_u64().is_some());
    }
}
