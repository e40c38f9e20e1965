//! What the processors commit with each offset, as the offset's metadata: the partition's
//! chain of write times and how many of its records before that offset were written,
//! dead-lettered and filtered. The runner writes it, the operator reads it (status and
//! replays), so it is a contract between the two and lives here.
//!
//! Counting there rather than in metrics means the counts are exact at the committed offset
//! (the same commit carries both), survive restarts and rebalances (the next owner resumes
//! from them), and need no scraping: whoever can read the group's offsets can read them.

use std::collections::BTreeMap;

use crate::RecordCounts;

/// The progress committed with one partition's offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommittedProgress {
    /// The write time (µs) of the record just before the committed offset; after a replay
    /// moved the offset, the floor the replayed records' write times start above (see
    /// `rtdp_provisioning::kafka::replay_floor_micros`). Absent where the chain restarts from
    /// the Kafka timestamps.
    pub write_time_micros: Option<i64>,
    /// The partition's records before the committed offset, by outcome.
    pub records: RecordCounts,
    /// The Kafka timestamp (ms) of the newest record written to the tables before the
    /// committed offset: `Some(0)` when none was (every record dead-lettered or filtered),
    /// `None` where the processors did not say (runners before this field).
    pub last_written_millis: Option<i64>,
    /// The dead-lettered records before the committed offset, by reason label.
    pub dead_lettered_by_reason: BTreeMap<String, i64>,
}

const WRITE_TIME: &str = "rtdp.write-time";
const WRITTEN: &str = "rtdp.written";
const DEAD_LETTERED: &str = "rtdp.dead-lettered";
const FILTERED: &str = "rtdp.filtered";
const LAST_WRITTEN: &str = "rtdp.last-written";
/// Followed by the reason label: `rtdp.dead-lettered.wrong_type=3`.
const DEAD_LETTERED_REASON: &str = "rtdp.dead-lettered.";

impl CommittedProgress {
    /// Reads committed metadata. Anything not ours (another tool's metadata, an unknown key,
    /// a value that is not a number) is left out, never an error: the counts then start at 0.
    pub fn parse(metadata: &str) -> Self {
        let mut progress = Self::default();
        for pair in metadata.split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<i64>() else {
                continue;
            };
            let key = key.trim();
            if let Some(reason) = key.strip_prefix(DEAD_LETTERED_REASON) {
                progress
                    .dead_lettered_by_reason
                    .insert(reason.to_string(), value.max(0));
                continue;
            }
            match key {
                WRITE_TIME => progress.write_time_micros = Some(value),
                WRITTEN => progress.records.written = value.max(0),
                DEAD_LETTERED => progress.records.dead_lettered = value.max(0),
                FILTERED => progress.records.filtered = value.max(0),
                LAST_WRITTEN => progress.last_written_millis = Some(value.max(0)),
                _ => {}
            }
        }
        progress
    }

    /// The metadata to commit (well under Kafka's default 4 KiB limit).
    pub fn encode(&self) -> String {
        let RecordCounts {
            written,
            dead_lettered,
            filtered,
        } = self.records;
        let mut counts =
            format!("{WRITTEN}={written};{DEAD_LETTERED}={dead_lettered};{FILTERED}={filtered}");
        if let Some(millis) = self.last_written_millis {
            counts.push_str(&format!(";{LAST_WRITTEN}={millis}"));
        }
        // Fourteen reasons at most: well under the 4 KiB limit.
        for (reason, count) in &self.dead_lettered_by_reason {
            counts.push_str(&format!(";{DEAD_LETTERED_REASON}{reason}={count}"));
        }
        match self.write_time_micros {
            Some(micros) => format!("{WRITE_TIME}={micros};{counts}"),
            None => counts,
        }
    }
}

impl RecordCounts {
    /// The records counted here and in `other`.
    pub fn plus(self, other: Self) -> Self {
        Self {
            written: self.written.saturating_add(other.written),
            dead_lettered: self.dead_lettered.saturating_add(other.dead_lettered),
            filtered: self.filtered.saturating_add(other.filtered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_metadata() {
        let progress = CommittedProgress {
            write_time_micros: Some(1_764_000_000_000_123),
            records: RecordCounts {
                written: 12,
                dead_lettered: 3,
                filtered: 4,
            },
            last_written_millis: Some(1_764_000_000_000),
            dead_lettered_by_reason: BTreeMap::from([
                ("wrong_type".to_string(), 2),
                ("malformed_json".to_string(), 1),
            ]),
        };
        assert_eq!(CommittedProgress::parse(&progress.encode()), progress);
        let nothing_written = CommittedProgress {
            last_written_millis: Some(0),
            ..progress.clone()
        };
        assert_eq!(
            CommittedProgress::parse(&nothing_written.encode()),
            nothing_written
        );
        let without_clock = CommittedProgress {
            write_time_micros: None,
            last_written_millis: None,
            dead_lettered_by_reason: BTreeMap::new(),
            ..progress
        };
        assert_eq!(
            without_clock.encode(),
            "rtdp.written=12;rtdp.dead-lettered=3;rtdp.filtered=4"
        );
        assert_eq!(
            CommittedProgress::parse(&without_clock.encode()),
            without_clock
        );
    }

    #[test]
    fn older_and_foreign_metadata_read_as_far_as_they_go() {
        // What runners before the counts committed.
        assert_eq!(
            CommittedProgress::parse("rtdp.write-time=5000123"),
            CommittedProgress {
                write_time_micros: Some(5_000_123),
                ..CommittedProgress::default()
            }
        );
        assert_eq!(CommittedProgress::parse(""), CommittedProgress::default());
        assert_eq!(
            CommittedProgress::parse("checkpoint from another tool"),
            CommittedProgress::default()
        );
        assert_eq!(
            CommittedProgress::parse("rtdp.write-time=x;rtdp.written=-3;rtdp.filtered=2"),
            CommittedProgress {
                write_time_micros: None,
                records: RecordCounts {
                    filtered: 2,
                    ..RecordCounts::default()
                },
                last_written_millis: None,
                dead_lettered_by_reason: BTreeMap::new(),
            }
        );
    }
}
