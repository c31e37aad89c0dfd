//! Slack message timestamps (`"1712345678.123456"`) turned into integers that sort and compare
//! numerically, so "the highest ts" and "since ts" do not depend on string length.

use crate::error::JournalError;

const MICROS: i64 = 1_000_000;

/// Parses a Slack `ts` into microseconds since the epoch. Accepts digits with an optional
/// fraction of at most six digits (Slack always sends exactly six).
pub(crate) fn ts_key(ts: &str) -> Result<i64, JournalError> {
    let invalid = || JournalError::InvalidTs(ts.to_owned());
    let (secs, frac) = match ts.split_once('.') {
        Some((_, "")) => return Err(invalid()),
        Some(parts) => parts,
        None => (ts, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !all_digits(secs) || frac.len() > 6 || !all_digits(frac) {
        return Err(invalid());
    }
    let secs: i64 = secs.parse().map_err(|_| invalid())?;
    let mut micros: i64 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| invalid())? };
    for _ in frac.len()..6 {
        micros *= 10;
    }
    secs.checked_mul(MICROS).and_then(|s| s.checked_add(micros)).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_ts_sorts_numerically() {
        let a = ts_key("999999999.999999").unwrap();
        let b = ts_key("1000000000.000001").unwrap();
        assert!(a < b, "a string compare would put these the other way round");
        assert_eq!(ts_key("1712345678.123456").unwrap(), 1_712_345_678_123_456);
        assert_eq!(ts_key("12.5").unwrap(), ts_key("12.500000").unwrap());
        assert_eq!(ts_key("12").unwrap(), 12_000_000);
    }

    #[test]
    fn rejects_malformed_ts() {
        for bad in ["", ".5", "12.", "12.1234567", "a.1", "1.2.3", "-1.0", "99999999999999999999.0"] {
            assert!(matches!(ts_key(bad), Err(JournalError::InvalidTs(_))), "{bad:?} accepted");
        }
    }
}
