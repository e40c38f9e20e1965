//! Request templates: `{{ interval.start }}`-style variables in an HTTP source's URL, query
//! parameter values, inline header values and body, filled in for each run with the run's
//! logical interval (as Airflow's `{{ ds }}`): a scheduled source's run covers the interval
//! between the previous schedule time and its own; a polling source's pass covers the time
//! since the previous pass. The same interval requested twice gives the same request.

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

use crate::HttpSource;
use crate::validation::FieldError;

/// The variables a template may use, each with what it becomes.
pub const VARIABLES: [(&str, &str); 6] = [
    (
        "interval.start",
        "the interval's start, RFC 3339 in UTC: 2026-11-26T00:00:00Z",
    ),
    (
        "interval.end",
        "the interval's end (exclusive), RFC 3339 in UTC",
    ),
    ("interval.startDate", "the start's date in UTC: 2026-11-26"),
    ("interval.endDate", "the end's date in UTC"),
    (
        "interval.startEpoch",
        "the start in seconds since the epoch",
    ),
    ("interval.endEpoch", "the end in seconds since the epoch"),
];

/// The most intervals one backfill runs (a year of hourly runs is 8 760: split it).
pub const MAX_BACKFILL_RUNS: usize = 1_000;

/// A run's logical interval, [start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// The start, included.
    pub start: Timestamp,
    /// The end, excluded.
    pub end: Timestamp,
}

impl std::fmt::Display for Interval {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |time: Timestamp| time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        write!(formatter, "{}..{}", text(self.start), text(self.end))
    }
}

impl Interval {
    /// Parses `FROM..TO` (two RFC 3339 times), as `--interval` takes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (start, end) = text
            .split_once("..")
            .ok_or_else(|| format!("interval {text:?} is not FROM..TO (two RFC 3339 times)"))?;
        let time = |part: &str| {
            part.trim().parse::<Timestamp>().map_err(|error| {
                format!("interval {text:?}: {part:?} is not an RFC 3339 time: {error}")
            })
        };
        let interval = Self {
            start: time(start)?,
            end: time(end)?,
        };
        if interval.start >= interval.end {
            return Err(format!("interval {text:?} ends before it starts"));
        }
        Ok(interval)
    }

    /// The interval of a scheduled run at `now`: from the schedule time before the latest one
    /// to the latest one at or before `now` (in UTC, as the CronJob's schedule is read).
    pub fn scheduled(schedule: &str, now: Timestamp) -> Result<Self, String> {
        let cron = crate::validation::parse_cron(schedule)?;
        let now = now.to_zoned(TimeZone::UTC);
        let end = cron
            .find_previous_occurrence(&now, true)
            .map_err(|error| format!("no schedule time of {schedule:?} before {now}: {error}"))?;
        let start = cron
            .find_previous_occurrence(&end, false)
            .map_err(|error| format!("no schedule time of {schedule:?} before {end}: {error}"))?;
        Ok(Self {
            start: start.timestamp(),
            end: end.timestamp(),
        })
    }

    /// The schedule intervals that lie within `range`, in order, as a backfill runs them:
    /// between each two consecutive schedule times from the first at or after its start to
    /// the last at or before its end (Airflow's data intervals). At most [`MAX_BACKFILL_RUNS`];
    /// an error when none fits or too many would.
    pub fn scheduled_within(schedule: &str, range: Interval) -> Result<Vec<Self>, String> {
        let cron = crate::validation::parse_cron(schedule)?;
        let from = range.start.to_zoned(TimeZone::UTC);
        let mut time = cron
            .find_next_occurrence(&from, true)
            .map_err(|error| format!("no schedule time of {schedule:?} after {from}: {error}"))?;
        let mut intervals = Vec::new();
        loop {
            let next = cron.find_next_occurrence(&time, false).map_err(|error| {
                format!("no schedule time of {schedule:?} after {time}: {error}")
            })?;
            if next.timestamp() > range.end {
                break;
            }
            if intervals.len() == MAX_BACKFILL_RUNS {
                return Err(format!(
                    "{}..{} holds more than {MAX_BACKFILL_RUNS} intervals of schedule {schedule:?}; backfill a shorter range at a time",
                    range.start, range.end
                ));
            }
            intervals.push(Self {
                start: time.timestamp(),
                end: next.timestamp(),
            });
            time = next;
        }
        if intervals.is_empty() {
            return Err(format!(
                "{}..{} holds no whole interval of schedule {schedule:?} (two schedule times within it)",
                range.start, range.end
            ));
        }
        Ok(intervals)
    }

    /// The value of a template variable; `None` for an unknown one.
    pub fn value(&self, variable: &str) -> Option<String> {
        let date = |time: Timestamp| time.strftime("%Y-%m-%d").to_string();
        let text = |time: Timestamp| time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        Some(match variable {
            "interval.start" => text(self.start),
            "interval.end" => text(self.end),
            "interval.startDate" => date(self.start),
            "interval.endDate" => date(self.end),
            "interval.startEpoch" => self.start.as_second().to_string(),
            "interval.endEpoch" => self.end.as_second().to_string(),
            _ => return None,
        })
    }
}

/// The variables `text` uses, in order; an error for a `{{` without its `}}`.
pub fn variables_in(text: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("{{{{ without a closing }}}} in {text:?}"))?;
        found.push(after[..close].trim());
        rest = &after[close + 2..];
    }
    Ok(found)
}

/// Whether `text` uses any variable.
pub fn is_templated(text: &str) -> bool {
    text.contains("{{")
}

/// `text` with each variable replaced by its value in `interval`.
pub fn render(text: &str, interval: &Interval) -> Result<String, String> {
    let mut rendered = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        rendered.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("{{{{ without a closing }}}} in {text:?}"))?;
        let variable = after[..close].trim();
        let value = interval
            .value(variable)
            .ok_or_else(|| format!("unknown template variable {variable:?} in {text:?}"))?;
        rendered.push_str(&value);
        rest = &after[close + 2..];
    }
    rendered.push_str(rest);
    Ok(rendered)
}

/// What a validation message says about the variables: their names.
pub fn known_variables() -> String {
    VARIABLES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Template variables (`{{ interval.start }}`...) in the URL, query values, inline header
/// values and body: each must be known, and a run needs an interval, so a schedule or a poll
/// interval.
pub(crate) fn check(http: &HttpSource, errors: &mut Vec<FieldError>) {
    let mut texts: Vec<(String, &str)> = vec![("spec.source.http.url".to_string(), &http.url)];
    texts.extend(http.query_params.iter().map(|(name, value)| {
        (
            format!("spec.source.http.queryParams.{name}"),
            value.as_str(),
        )
    }));
    texts.extend(
        http.headers
            .iter()
            .enumerate()
            .filter_map(|(index, header)| {
                let value = header.value.as_deref()?;
                Some((format!("spec.source.http.headers[{index}].value"), value))
            }),
    );
    if let Some(body) = &http.body {
        texts.push(("spec.source.http.body".to_string(), body));
    }
    let mut templated = None;
    for (field, text) in texts {
        match variables_in(text) {
            Ok(variables) => {
                for variable in &variables {
                    if !VARIABLES.iter().any(|(known, _)| known == variable) {
                        errors.push(FieldError::new(
                            field.clone(),
                            format!(
                                "unknown template variable {{{{ {variable} }}}}; known: {}",
                                known_variables()
                            ),
                        ));
                    }
                }
                if !variables.is_empty() && templated.is_none() {
                    templated = Some(field);
                }
            }
            Err(message) => errors.push(FieldError::new(field, message)),
        }
    }
    if let Some(field) = templated
        && http.schedule.is_none()
        && http.poll_interval.is_none()
    {
        errors.push(FieldError::new(
            field,
            "uses the run's interval, which needs a schedule or a pollInterval".to_string(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> Interval {
        Interval::parse("2026-11-26T00:00:00Z..2026-11-27T00:00:00Z").expect("an interval")
    }

    #[test]
    fn renders_every_variable() {
        let rendered = render(
            "{{interval.start}}|{{ interval.end }}|{{ interval.startDate }}|{{interval.endDate}}|{{ interval.startEpoch }}|{{ interval.endEpoch }}",
            &day(),
        )
        .expect("renders");
        assert_eq!(
            rendered,
            "2026-11-26T00:00:00Z|2026-11-27T00:00:00Z|2026-11-26|2026-11-27|1795651200|1795737600"
        );
        assert_eq!(
            render("no variables", &day()).as_deref(),
            Ok("no variables")
        );
    }

    #[test]
    fn a_backfill_runs_each_schedule_interval_within_the_range_in_order() {
        let week =
            Interval::parse("2026-11-20T00:00:00Z..2026-11-27T00:00:00Z").expect("an interval");
        let days = Interval::scheduled_within("0 0 * * *", week).expect("intervals");
        assert_eq!(days.len(), 7);
        assert_eq!(
            days[0].to_string(),
            "2026-11-20T00:00:00Z..2026-11-21T00:00:00Z"
        );
        assert_eq!(days[6], day());
        assert!(days.windows(2).all(|pair| pair[0].end == pair[1].start));
        // A range that does not start on a tick begins at the first tick inside it, and a
        // partial interval at the end is left out.
        let ragged =
            Interval::parse("2026-11-20T09:00:00Z..2026-11-23T12:00:00Z").expect("an interval");
        let days = Interval::scheduled_within("@daily", ragged).expect("intervals");
        assert_eq!(
            days.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "2026-11-21T00:00:00Z..2026-11-22T00:00:00Z",
                "2026-11-22T00:00:00Z..2026-11-23T00:00:00Z",
            ]
        );
        let hour =
            Interval::parse("2026-11-20T09:00:00Z..2026-11-20T10:00:00Z").expect("an interval");
        let none = Interval::scheduled_within("@daily", hour).expect_err("no whole day");
        assert!(none.contains("no whole interval"), "{none}");
        let years =
            Interval::parse("2024-01-01T00:00:00Z..2026-01-01T00:00:00Z").expect("an interval");
        let many = Interval::scheduled_within("@hourly", years).expect_err("too many");
        assert!(many.contains("more than 1000 intervals"), "{many}");
    }

    #[test]
    fn a_scheduled_run_covers_the_previous_schedule_interval() {
        let at = |text: &str| text.parse::<Timestamp>().expect("a time");
        // A daily run at 00:05 (a late start) covers the day before.
        assert_eq!(
            Interval::scheduled("@daily", at("2026-11-27T00:05:00Z")),
            Ok(day())
        );
        // On the tick itself, the run is that tick's.
        assert_eq!(
            Interval::scheduled("0 0 * * *", at("2026-11-27T00:00:00Z")),
            Ok(day())
        );
        let hourly =
            Interval::scheduled("0 */6 * * *", at("2026-11-27T13:59:00Z")).expect("an interval");
        assert_eq!(
            (hourly.value("interval.start"), hourly.value("interval.end")),
            (
                Some("2026-11-27T06:00:00Z".to_string()),
                Some("2026-11-27T12:00:00Z".to_string())
            )
        );
    }

    #[test]
    fn unknown_and_unclosed_variables_are_errors() {
        assert_eq!(
            variables_in("since={{ interval.start }}&x={{ds}}"),
            Ok(vec!["interval.start", "ds"])
        );
        assert!(
            render("{{ ds }}", &day())
                .expect_err("unknown")
                .contains("\"ds\"")
        );
        assert!(variables_in("{{ interval.start").is_err());
        assert!(Interval::parse("2026-11-27T00:00:00Z..2026-11-26T00:00:00Z").is_err());
        assert!(Interval::parse("yesterday").is_err());
    }
}
