//! Lag-based autoscaling of the processors, decided in the freshness loop from the lag it
//! reads, applied by the reconcile (the one writer of the processor Deployment).
//!
//! The recommendation is ⌈records waiting ÷ targetLag⌉ within minReplicas..maxReplicas and
//! never above the partition count. Stabilisation follows the HorizontalPodAutoscaler: a
//! scale-up takes the lowest recommendation of its window, a scale-down the highest of its
//! window, so a short burst or a short lull does not flap the replicas. Decisions live here
//! (for the reconcile to read at once) and in `status.autoscaling` (to survive a restart or a
//! new leader); after a restart, no scale-down happens before a whole scale-down window of
//! recommendations was seen.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rtdp_crds::{AutoscalingSpec, Pipeline};

/// Why a replica count was recommended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// The replicas.
    pub replicas: i32,
    /// The arithmetic and the bounds, for the status and the Event.
    pub reason: String,
}

/// The replicas `lag_records` waiting on `partitions` partitions call for. Pure.
pub fn recommend(spec: &AutoscalingSpec, lag_records: i64, partitions: i32) -> Recommendation {
    let target = spec.target_lag.max(1);
    let wanted = (lag_records.max(0) + target - 1) / target;
    let ceiling = spec.max_replicas.min(partitions.max(1));
    let floor = spec.min_replicas.min(ceiling);
    let replicas = i32::try_from(wanted)
        .unwrap_or(i32::MAX)
        .clamp(floor, ceiling);
    let bound = if replicas == ceiling && i64::from(ceiling) < wanted {
        if ceiling < spec.max_replicas {
            format!(", capped at the topic's {partitions} partitions")
        } else {
            format!(", capped at maxReplicas {}", spec.max_replicas)
        }
    } else if replicas == floor && i64::from(floor) > wanted {
        format!(", raised to minReplicas {floor}")
    } else {
        String::new()
    };
    Recommendation {
        replicas,
        reason: format!(
            "{lag_records} records waiting ÷ targetLag {target} = {wanted} replicas{bound}"
        ),
    }
}

/// The replicas to run, given `current` and the recommendations seen (oldest first, the
/// newest included), as the HorizontalPodAutoscaler stabilises them. `tracked_since` is when
/// recommendations started to be kept: before a whole scale-down window is covered, no
/// scale-down. Pure.
pub fn stabilize(
    spec: &AutoscalingSpec,
    current: i32,
    history: &VecDeque<(Timestamp, i32)>,
    tracked_since: Timestamp,
    now: Timestamp,
) -> i32 {
    let within = |seconds: i64| {
        let start = now - SignedDuration::from_secs(seconds);
        history
            .iter()
            .filter(move |(time, _)| *time >= start)
            .map(|(_, replicas)| *replicas)
    };
    let up = within(spec.scale_up_stabilization_seconds)
        .min()
        .unwrap_or(current);
    let mut down = within(spec.scale_down_stabilization_seconds)
        .max()
        .unwrap_or(current);
    if now.duration_since(tracked_since)
        < SignedDuration::from_secs(spec.scale_down_stabilization_seconds)
    {
        down = down.max(current);
    }
    if up > current {
        up
    } else if down < current {
        down
    } else {
        current
    }
}

/// A change of the processor replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The replicas before.
    pub from: i32,
    /// The replicas now.
    pub to: i32,
    /// Why, for the status and the Event.
    pub reason: String,
}

#[derive(Debug)]
struct Tracked {
    since: Timestamp,
    history: VecDeque<(Timestamp, i32)>,
    decided: i32,
}

/// The autoscaler's memory: per Pipeline (by uid), the recommendations of the longest window
/// and the replicas decided.
#[derive(Debug, Default)]
pub struct Autoscaler {
    tracked: Mutex<HashMap<String, Tracked>>,
}

impl Autoscaler {
    /// The replicas decided for the Pipeline with `uid`, if this process decided any.
    pub fn decided(&self, uid: &str) -> Option<i32> {
        self.lock().get(uid).map(|tracked| tracked.decided)
    }

    /// Takes a new lag reading into account: returns the replicas to run and, when they
    /// differ from `current`, the decision to report.
    pub fn observe(
        &self,
        uid: &str,
        spec: &AutoscalingSpec,
        recommendation: &Recommendation,
        current: i32,
        now: Timestamp,
    ) -> (i32, Option<Decision>) {
        let mut tracked = self.lock();
        let entry = tracked.entry(uid.to_string()).or_insert_with(|| Tracked {
            since: now,
            history: VecDeque::new(),
            decided: current,
        });
        entry.history.push_back((now, recommendation.replicas));
        let longest = spec
            .scale_up_stabilization_seconds
            .max(spec.scale_down_stabilization_seconds);
        let oldest = now - SignedDuration::from_secs(longest);
        while entry
            .history
            .front()
            .is_some_and(|(time, _)| *time < oldest)
        {
            entry.history.pop_front();
        }
        let replicas = stabilize(spec, current, &entry.history, entry.since, now);
        entry.decided = replicas;
        let decision = (replicas != current).then(|| Decision {
            from: current,
            to: replicas,
            reason: recommendation.reason.clone(),
        });
        (replicas, decision)
    }

    /// Forgets a Pipeline (deleted, suspended, or no longer autoscaled).
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tracked>> {
        self.tracked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The replicas the processors run with now: the autoscaler's last decision (this process's,
/// else the one in the status), or `spec.runner.replicas` before the first, within the bounds.
pub fn current_replicas(pipeline: &Pipeline, spec: &AutoscalingSpec, decided: Option<i32>) -> i32 {
    decided
        .or_else(|| {
            pipeline
                .status
                .as_ref()
                .and_then(|status| status.autoscaling.as_ref())
                .map(|autoscaling| autoscaling.desired_replicas)
        })
        .unwrap_or(pipeline.spec.runner.replicas)
        .clamp(spec.min_replicas.min(spec.max_replicas), spec.max_replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(up: i64, down: i64) -> AutoscalingSpec {
        AutoscalingSpec {
            min_replicas: 1,
            max_replicas: 4,
            target_lag: 100,
            scale_up_stabilization_seconds: up,
            scale_down_stabilization_seconds: down,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("a time")
    }

    #[test]
    fn recommends_lag_over_target_within_bounds_and_partitions() {
        let spec = spec(0, 60);
        assert_eq!(recommend(&spec, 0, 6).replicas, 1);
        assert_eq!(recommend(&spec, 250, 6).replicas, 3);
        let capped = recommend(&spec, 10_000, 6);
        assert_eq!(capped.replicas, 4);
        assert!(
            capped.reason.ends_with("capped at maxReplicas 4"),
            "{}",
            capped.reason
        );
        let partitions = recommend(&spec, 10_000, 2);
        assert_eq!(partitions.replicas, 2);
        assert!(
            partitions
                .reason
                .contains("capped at the topic's 2 partitions"),
            "{}",
            partitions.reason
        );
        let idle = recommend(&spec, 0, 6);
        assert_eq!(
            idle.reason,
            "0 records waiting ÷ targetLag 100 = 0 replicas, raised to minReplicas 1"
        );
    }

    /// A fresh autoscaler, its spec, and a busy (400 waiting: 4) and an idle recommendation.
    fn setup(up: i64, down: i64) -> (Autoscaler, AutoscalingSpec, Recommendation, Recommendation) {
        let spec = spec(up, down);
        let busy = recommend(&spec, 400, 4);
        let idle = recommend(&spec, 0, 4);
        (Autoscaler::default(), spec, busy, idle)
    }

    #[test]
    fn scales_up_at_once_and_down_only_after_the_window() {
        let (autoscaler, spec, busy, idle) = setup(0, 60);
        // A burst: up at once.
        let (replicas, decision) = autoscaler.observe("uid", &spec, &busy, 1, at(0));
        assert_eq!(replicas, 4);
        assert_eq!(
            decision.map(|decision| (decision.from, decision.to)),
            Some((1, 4))
        );
        // Drained: the window still holds the burst's recommendation.
        let (replicas, decision) = autoscaler.observe("uid", &spec, &idle, 4, at(30));
        assert_eq!((replicas, decision), (4, None));
        // A whole window of idle readings: down.
        let (replicas, decision) = autoscaler.observe("uid", &spec, &idle, 4, at(61));
        assert_eq!(replicas, 1);
        assert!(decision.is_some());
        assert_eq!(autoscaler.decided("uid"), Some(1));
    }

    /// Feeds readings (recommendation, current replicas, at seconds) and checks each result.
    fn expect_replicas(
        autoscaler: &Autoscaler,
        spec: &AutoscalingSpec,
        readings: &[(&Recommendation, i32, i64, i32)],
    ) {
        for (recommendation, current, seconds, expected) in readings {
            let (replicas, _) =
                autoscaler.observe("uid", spec, recommendation, *current, at(*seconds));
            assert_eq!(replicas, *expected, "at {seconds} s");
        }
    }

    #[test]
    fn a_fresh_autoscaler_does_not_scale_down_before_a_window_was_seen() {
        let (autoscaler, spec, _, idle) = setup(0, 60);
        // E.g. a new leader: the status says 3 replicas, the topic is drained.
        let readings = [(&idle, 3, 0, 3), (&idle, 3, 59, 3), (&idle, 3, 61, 1)];
        expect_replicas(&autoscaler, &spec, &readings);
    }

    #[test]
    fn a_scale_up_window_needs_the_whole_window_busy() {
        let (autoscaler, spec, busy, idle) = setup(20, 0);
        // Busy at 10 s only: the idle reading of 0 s is still in the window; at 25 s it is not.
        let readings = [(&idle, 1, 0, 1), (&busy, 1, 10, 1), (&busy, 1, 25, 4)];
        expect_replicas(&autoscaler, &spec, &readings);
    }
}
