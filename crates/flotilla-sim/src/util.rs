//! Small helpers shared by the simulators: ids, hashing, clock formatting, key masking.

use std::time::{SystemTime, UNIX_EPOCH};

/// FNV-1a, 64 bit. Used instead of `std`'s hasher because replies must be the same across
/// builds and processes (std's `DefaultHasher` is only stable within one build).
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// A short, stable, non-reversible label for an API key, so tests can tell which credential a
/// request used without the simulator ever storing the key itself.
pub fn key_fingerprint(key: &str) -> String {
    let mut h = Fnv::new();
    h.write(b"flotilla-sim-key:");
    h.write(key.as_bytes());
    format!("key-{:016x}", h.finish())
}

/// `prefix` followed by `len` random ASCII letters and digits.
pub(crate) fn alnum_id(prefix: &str, len: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        s.push(fastrand::alphanumeric());
    }
    s
}

/// `prefix` followed by `len` random lowercase hex digits.
pub(crate) fn hex_id(prefix: &str, len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        s.push(char::from(HEX[fastrand::usize(..16)]));
    }
    s
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// RFC 3339 UTC timestamp (`2025-01-02T03:04:05Z`) for `secs` since the epoch, as the
/// `anthropic-ratelimit-*-reset` headers carry it. Written by hand to avoid a date crate.
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A key as the real APIs echo it in "incorrect key" messages: everything but the last four
/// characters starred out (short keys are starred out entirely).
pub(crate) fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "*".repeat(chars.len());
    }
    let keep = chars.len() - 4;
    let mut s = "*".repeat(keep);
    s.extend(&chars[keep..]);
    s
}

/// Integer division rounding up, for "tokens ≈ chars / 4".
pub(crate) fn div_ceil_u64(n: u64, d: u64) -> u64 {
    if d == 0 { n } else { n.div_ceil(d) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_787_045), "2025-01-02T03:04:05Z");
    }

    #[test]
    fn mask_key_keeps_only_the_tail() {
        assert_eq!(mask_key("sk-test-1234567890abcd"), "******************abcd");
        assert_eq!(mask_key("short"), "*****");
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(key_fingerprint("a"), key_fingerprint("a"));
        assert_ne!(key_fingerprint("a"), key_fingerprint("b"));
        assert!(!key_fingerprint("secret-key").contains("secret"));
    }
}
