//! The clock that time-dependent decisions read (is the team open, is it daytime where the
//! lead is). Production reads the system clock; tests stand on a chosen instant — a Friday
//! 16:59 in New York — while jobs still run in real time.

use jiff::{SignedDuration, Timestamp};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    #[default]
    System,
    /// The system clock shifted by a fixed amount, so it keeps ticking from a chosen instant.
    Offset(SignedDuration),
}

impl Clock {
    /// A clock that reads `at` now and advances in real time from there.
    pub fn starting_at(at: Timestamp) -> Clock {
        Clock::Offset(at.duration_since(Timestamp::now()))
    }

    /// The real instant at which this clock will read `at`: job run times are real times,
    /// since the database's `now()` decides when a job is due.
    pub fn to_real(&self, at: Timestamp) -> Timestamp {
        match self {
            Clock::System => at,
            Clock::Offset(by) => at.checked_sub(*by).unwrap_or(at),
        }
    }

    /// What this clock reads at real instant `at` (a time another system reported).
    pub fn from_real(&self, at: Timestamp) -> Timestamp {
        match self {
            Clock::System => at,
            Clock::Offset(by) => at.checked_add(*by).unwrap_or(at),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Offset(by) => Timestamp::now()
                .saturating_add(*by)
                .unwrap_or_else(|_| Timestamp::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_clock_starts_where_asked_and_keeps_ticking() {
        let target: Timestamp = "2030-01-04T21:59:00Z".parse().expect("timestamp");
        let clock = Clock::starting_at(target);
        let first = clock.now();
        assert!((first - target).abs().get_seconds() < 2);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(clock.now() > first);
        let real = Timestamp::now();
        assert_eq!(clock.from_real(clock.to_real(target)), target);
        assert_eq!(clock.to_real(clock.from_real(real)), real);
    }
}
