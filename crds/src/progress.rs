//! What the processors commit with each offset, as the offset's metadata: the partition's
//! chain of write times and how many of its records before that offset were written,
//! dead-lettered and filtered. The runner writes it, the operator reads it (status and
//! replays), so it is a contract between the two and lives here.
//!
//! Counting there rather than in metrics means the counts are exact at the committed offset
//! (the same commit carries both), survive restarts and rebalances (the next owner resumes
//! from them), and need no scraping: whoever can read the group's offsets can read them.

use crate::RecordCounts;

/// The progress committed with one partition's offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommittedProgress {
    /// The write time (µs) of the record just before the committed offset; after a replay
    /// moved the offset, the floor the replayed records' write times start above (see
    /// `rtdp_provisioning::kafka::replay_floor_micros`). Absent where the chain restarts from
    /// the Kafka timestamps.
    pub write_time_micros: Option<i64>,
    /// The partition's records before the committed offset, by outcome.
    pub records: RecordCounts,
}

const WRITE_TIME: &str = "rtdp.write-time";
const WRITTEN: &str = "rtdp.written";
const DEAD_LETTERED: &str = "rtdp.dead-lettered";
const FILTERED: &str = "rtdp.filtered";

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
            match key.trim() {
                WRITE_TIME => progress.write_time_micros = Some(value),
                WRITTEN => progress.records.written = value.max(0),
                DEAD_LETTERED => progress.records.dead_lettered = value.max(0),
                FILTERED => progress.records.filtered = value.max(0),
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
        let counts =
            format!("{WRITTEN}={written};{DEAD_LETTERED}={dead_lettered};{FILTERED}={filtered}");
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
        };
        assert_eq!(CommittedProgress::parse(&progress.encode()), progress);
        let without_clock = CommittedProgress {
            write_time_micros: None,
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
                records: RecordCounts::default(),
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
            }
        );
    }
}
