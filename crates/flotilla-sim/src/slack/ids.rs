//! Slack-looking identifiers (`U…`, `C…`, `Ev…`, envelope UUIDs) and message timestamps.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

const BASE36: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `prefix` + `0` + 9 base-36 digits of `n` (`U00000000A7`): uppercase alphanumerics like real
/// Slack ids, unique per `n`, deterministic so test output is stable.
pub(crate) fn slack_id(prefix: &str, n: u64) -> String {
    let mut digits = [b'0'; 9];
    let mut v = n;
    for d in digits.iter_mut().rev() {
        *d = BASE36[usize::try_from(v % 36).unwrap_or(0)];
        v /= 36;
    }
    let mut s = String::with_capacity(prefix.len() + 10);
    s.push_str(prefix);
    s.push('0');
    s.extend(digits.iter().map(|b| char::from(*b)));
    s
}

/// `len` random uppercase letters and digits.
pub(crate) fn upper_alnum(len: usize) -> String {
    (0..len).map(|_| char::from(BASE36[fastrand::usize(..36)])).collect()
}

/// A random version-4 UUID in its usual text form (Slack's envelope ids and `client_msg_id`s
/// look like this).
pub(crate) fn uuid() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            s.push('-');
        }
        let c = match i {
            12 => b'4',
            16 => b"89ab"[fastrand::usize(..4)],
            _ => HEX[fastrand::usize(..16)],
        };
        s.push(char::from(c));
    }
    s
}

/// A message timestamp, kept as microseconds since the epoch and written the Slack way
/// (`"1732560000.000100"`). Unique within a workspace: it is the message's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Ts(pub(crate) u64);

impl Ts {
    /// Parses `"1732560000.000100"`, `"1732560000"` or `"1732560000.1"` (a short fraction is
    /// padded, a long one truncated to microseconds). `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Ts> {
        let s = s.trim();
        let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
        if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: u64 = secs.parse().ok()?;
        let mut micros = 0u64;
        for i in 0..6 {
            micros = micros * 10 + frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
        }
        secs.checked_mul(1_000_000)?.checked_add(micros).map(Ts)
    }

    pub(crate) fn secs(self) -> u64 {
        self.0 / 1_000_000
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Hands out strictly increasing timestamps close to the wall clock, so message order is ts
/// order even when many messages land in the same microsecond or the clock steps back.
#[derive(Debug, Default)]
pub(crate) struct TsClock {
    last: u64,
}

impl TsClock {
    pub(crate) fn next(&mut self) -> Ts {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last = now.max(self.last.saturating_add(1));
        Ts(self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_parses_and_prints_the_slack_way() {
        assert_eq!(Ts::parse("1732560000.000100"), Some(Ts(1_732_560_000_000_100)));
        assert_eq!(Ts::parse("1732560000"), Some(Ts(1_732_560_000_000_000)));
        assert_eq!(Ts::parse("1732560000.1"), Some(Ts(1_732_560_000_100_000)));
        assert_eq!(Ts::parse("1732560000.0001009"), Some(Ts(1_732_560_000_000_100)));
        assert_eq!(Ts::parse("abc"), None);
        assert_eq!(Ts::parse("1.2.3"), None);
        assert_eq!(Ts::parse(""), None);
        assert_eq!(Ts(1_732_560_000_000_100).to_string(), "1732560000.000100");
    }

    #[test]
    fn clock_is_strictly_increasing() {
        let mut c = TsClock::default();
        let mut last = c.next();
        for _ in 0..1000 {
            let t = c.next();
            assert!(t > last);
            last = t;
        }
    }

    #[test]
    fn ids_look_like_slack_ids() {
        assert_eq!(slack_id("U", 1), "U0000000001");
        assert_eq!(slack_id("C", 36), "C0000000010");
        assert_ne!(slack_id("C", 1), slack_id("C", 2));
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(upper_alnum(8).bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    }
}
