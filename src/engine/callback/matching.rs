//! Which call in the provider's list is an attempt's ([`choose`]), and how long to wait
//! before asking a provider that could not answer ([`retry_delay`]): the pure half of
//! [`super::lookup`].

use std::collections::HashSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::retry::RetryPolicy;
use crate::telephony::ListedCall;

/// How far the provider's clock may run behind leadflow's: a call created this long before
/// the attempt's row still counts as the attempt's.
pub(super) const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);

/// The call an attempt is looking for.
pub(super) struct Wanted<'a> {
    pub attempt_id: Uuid,
    pub to: &'a str,
    pub from: &'a str,
    /// When the attempt's row was written, in real time (the provider's clock).
    pub written: Timestamp,
}

/// What a lookup found.
#[derive(Debug, PartialEq)]
pub(super) enum Found {
    /// The attempt's call; `others`: the ids of further calls that matched too, which should
    /// not happen and are left to an operator.
    Adopt {
        call: ListedCall,
        others: Vec<String>,
    },
    /// The provider has no call that can be the attempt's.
    None,
}

/// Picks the attempt's call among those the provider `listed`; `held`: call ids that other
/// attempts already hold. Several matches: the earliest is adopted.
pub(super) fn choose(listed: Vec<ListedCall>, wanted: &Wanted, held: &HashSet<String>) -> Found {
    let earliest = wanted
        .written
        .checked_sub(CLOCK_SKEW)
        .unwrap_or(wanted.written);
    let mut matches: Vec<ListedCall> = listed
        .into_iter()
        .filter(|c| {
            c.to == wanted.to
                && c.from == wanted.from
                && c.created >= earliest
                && !held.contains(&c.call_sid)
                && c.attempt_id.is_none_or(|id| id == wanted.attempt_id)
        })
        .collect();
    matches.sort_by(|a, b| (a.created, &a.call_sid).cmp(&(b.created, &b.call_sid)));
    let mut matches = matches.into_iter();
    match matches.next() {
        Some(call) => Found::Adopt {
            call,
            others: matches.map(|c| c.call_sid).collect(),
        },
        None => Found::None,
    }
}

/// The wait before asking again after the `lookups`-th lookup failed: the provider backoff,
/// held at its longest step once the policy's tries are spent (a lookup never gives up on
/// its own, since giving up would mean guessing).
pub(super) fn retry_delay(policy: &RetryPolicy, lookups: u32, seed: u64) -> Duration {
    let step = lookups.clamp(1, policy.max_attempts.saturating_sub(1).max(1));
    policy.delay_after(step, seed).unwrap_or(policy.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telephony::CallStatus;

    const TO: &str = "+14155550123";
    const FROM: &str = "+14155550100";

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn call(sid: &str, created: &str) -> ListedCall {
        ListedCall {
            call_sid: sid.to_owned(),
            to: TO.to_owned(),
            from: FROM.to_owned(),
            created: at(created),
            attempt_id: None,
            status: Some(CallStatus::Completed),
            answered_by: Some("human".to_owned()),
            duration: Some(30),
        }
    }

    fn wanted(id: Uuid) -> Wanted<'static> {
        Wanted {
            attempt_id: id,
            to: TO,
            from: FROM,
            written: at("2026-12-07T10:00:00Z"),
        }
    }

    fn adopted(found: Found) -> (String, Vec<String>) {
        match found {
            Found::Adopt { call, others } => (call.call_sid, others),
            Found::None => panic!("nothing adopted"),
        }
    }

    #[test]
    fn the_call_made_after_the_attempt_was_written_is_adopted() {
        let id = Uuid::now_v7();
        let listed = vec![call("CA2", "2026-12-07T10:00:01Z")];
        let (sid, others) = adopted(choose(listed, &wanted(id), &HashSet::new()));
        assert_eq!(sid, "CA2");
        assert!(others.is_empty());
    }

    #[test]
    fn a_little_clock_skew_is_allowed_an_earlier_call_is_not_this_attempts() {
        let id = Uuid::now_v7();
        let skewed = vec![call("CA1", "2026-12-07T09:59:30Z")];
        assert_eq!(
            adopted(choose(skewed, &wanted(id), &HashSet::new())).0,
            "CA1"
        );
        let earlier = vec![call("CA0", "2026-12-07T09:58:00Z")];
        assert_eq!(choose(earlier, &wanted(id), &HashSet::new()), Found::None);
    }

    #[test]
    fn another_number_another_caller_id_or_a_held_call_is_not_adopted() {
        let id = Uuid::now_v7();
        let mut other_to = call("CA1", "2026-12-07T10:00:01Z");
        other_to.to = "+14155550999".to_owned();
        let mut other_from = call("CA2", "2026-12-07T10:00:01Z");
        other_from.from = "+14155550999".to_owned();
        let held_call = call("CA3", "2026-12-07T10:00:01Z");
        let held: HashSet<String> = ["CA3".to_owned()].into();
        let found = choose(vec![other_to, other_from, held_call], &wanted(id), &held);
        assert_eq!(found, Found::None);
    }

    #[test]
    fn a_call_known_to_run_another_attempts_twiml_is_not_adopted() {
        let id = Uuid::now_v7();
        let mut mine = call("CA1", "2026-12-07T10:00:02Z");
        mine.attempt_id = Some(id);
        let mut theirs = call("CA0", "2026-12-07T10:00:01Z");
        theirs.attempt_id = Some(Uuid::now_v7());
        let (sid, others) = adopted(choose(vec![theirs, mine], &wanted(id), &HashSet::new()));
        assert_eq!(sid, "CA1");
        assert!(others.is_empty());
    }

    #[test]
    fn several_matches_adopt_the_earliest_and_name_the_others() {
        let id = Uuid::now_v7();
        let listed = vec![
            call("CA9", "2026-12-07T10:00:09Z"),
            call("CA3", "2026-12-07T10:00:03Z"),
            call("CA5", "2026-12-07T10:00:05Z"),
        ];
        let (sid, others) = adopted(choose(listed, &wanted(id), &HashSet::new()));
        assert_eq!(sid, "CA3");
        assert_eq!(others, ["CA5", "CA9"]);
    }

    #[test]
    fn nothing_listed_is_none() {
        assert_eq!(
            choose(Vec::new(), &wanted(Uuid::now_v7()), &HashSet::new()),
            Found::None
        );
    }

    #[test]
    fn failed_lookups_back_off_and_never_stop() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base: Duration::from_secs(2),
            max: Duration::from_secs(30),
        };
        let first = retry_delay(&policy, 1, 7);
        assert!(first >= Duration::from_secs(2) && first < Duration::from_secs(4));
        let third = retry_delay(&policy, 3, 7);
        assert!(third >= Duration::from_secs(8) && third < Duration::from_secs(16));
        // Past the policy's tries, the longest step repeats.
        assert_eq!(retry_delay(&policy, 50, 7), retry_delay(&policy, 3, 7));
        let single = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        assert!(retry_delay(&single, 9, 7) >= Duration::from_secs(2));
    }
}
