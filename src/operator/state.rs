//! Job states as operators name them. apalis stores a raw status (`Pending`, `Queued`,
//! `Running`, `Done`, `Failed`, `Killed`); two of them hide two states each: a `Pending` job
//! may be due now or later, and a `Failed` one may still have attempts left (a retry waits
//! for its persisted backoff) or be the dead letter.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::error::OperatorError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Due now, waiting for a worker.
    Available,
    /// Due later: a delayed callback, a waiting step's follow-up.
    Scheduled,
    /// Claimed by a worker (fetched or executing).
    Running,
    /// Failed, with attempts left; runs again at its persisted backoff.
    Retrying,
    /// Failed its last attempt: the dead letter, which an operator may retry.
    Failed,
    Completed,
    /// Killed by an operator's cancel.
    Cancelled,
}

/// The SQL expression computing [`JobState`] from an `apalis.jobs` row aliased `j`.
pub const STATE_SQL: &str = "CASE \
    WHEN j.status = 'Pending' AND j.run_at > now() THEN 'scheduled' \
    WHEN j.status = 'Pending' THEN 'available' \
    WHEN j.status IN ('Queued', 'Running') THEN 'running' \
    WHEN j.status = 'Failed' AND j.attempts < j.max_attempts THEN 'retrying' \
    WHEN j.status = 'Failed' THEN 'failed' \
    WHEN j.status = 'Done' THEN 'completed' \
    ELSE 'cancelled' END";

/// A state as bound parameters: the raw statuses, and whether the job must be due later
/// and whether its attempts must be used up (`None`: either).
pub struct StateFilter {
    pub statuses: &'static [&'static str],
    pub later: Option<bool>,
    pub exhausted: Option<bool>,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Available,
        JobState::Scheduled,
        JobState::Running,
        JobState::Retrying,
        JobState::Failed,
        JobState::Completed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Failed => "failed",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn filter(self) -> StateFilter {
        let (statuses, later, exhausted): (&'static [&'static str], _, _) = match self {
            JobState::Available => (&["Pending"], Some(false), None),
            JobState::Scheduled => (&["Pending"], Some(true), None),
            JobState::Running => (&["Queued", "Running"], None, None),
            JobState::Retrying => (&["Failed"], None, Some(false)),
            JobState::Failed => (&["Failed"], None, Some(true)),
            JobState::Completed => (&["Done"], None, None),
            JobState::Cancelled => (&["Killed"], None, None),
        };
        StateFilter {
            statuses,
            later,
            exhausted,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = OperatorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                OperatorError::Invalid(format!(
                    "unknown job state {s:?} (known: {})",
                    known.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_parses_back_and_filters_on_raw_statuses() {
        for st in JobState::ALL {
            assert_eq!(st.as_str().parse::<JobState>().ok(), Some(st));
            assert!(!st.filter().statuses.is_empty());
            assert!(STATE_SQL.contains(&format!("'{}'", st.as_str())));
        }
        assert!("FAILED".parse::<JobState>().is_ok());
        assert!("dead".parse::<JobState>().is_err());
    }
}
