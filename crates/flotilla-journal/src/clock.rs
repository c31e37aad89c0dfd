//! The journal's notion of "now", behind a trait so tests (here and in dependent crates) control
//! time instead of sleeping.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Source of wall-clock time for timestamps the journal stores (received, delivered, seen).
pub trait Clock: Debug + Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    #[must_use]
    pub fn new(start: SystemTime) -> Self {
        Self { millis: Arc::new(AtomicI64::new(to_millis(start))) }
    }

    pub fn set(&self, now: SystemTime) {
        self.millis.store(to_millis(now), Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.millis.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        from_millis(self.millis.load(Ordering::SeqCst))
    }
}

/// Milliseconds since the Unix epoch, as stored in the database (negative before 1970).
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
}

pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_including_before_epoch() {
        for ms in [0, 1, 1_712_345_678_123, -5_000] {
            assert_eq!(to_millis(from_millis(ms)), ms);
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(from_millis(1_000));
        let other = clock.clone();
        assert_eq!(to_millis(clock.now()), 1_000);
        other.advance(Duration::from_secs(2));
        assert_eq!(to_millis(clock.now()), 3_000);
        clock.set(from_millis(10));
        assert_eq!(to_millis(other.now()), 10);
    }
}
