//! The record's `time`: RFC 3339 in UTC with the sub-second digits that are
//! not zero, exactly as `time`'s `Rfc3339` format writes it
//! (`2026-12-04T05:17:42.1234Z`).
//!
//! The calendar part changes once a second, so each thread keeps it from
//! `time`'s own formatting and only the fraction is written per record.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `YYYY-MM-DDTHH:MM:SS`.
const PREFIX: usize = 19;

/// The second a thread last formatted, and its calendar text.
#[derive(Clone, Copy)]
struct Second {
    unix: i64,
    text: [u8; PREFIX],
}

thread_local! {
    static LAST: Cell<Option<Second>> = const { Cell::new(None) };
}

/// Now, formatted. Empty when the clock is outside what RFC 3339 can say
/// (before 1970 here, or after 9999), as `time`'s formatting fails there.
pub fn now() -> String {
    let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return String::new();
    };
    let Ok(unix) = i64::try_from(since.as_secs()) else {
        return String::new();
    };
    let second = LAST.with(|last| {
        let second = last
            .get()
            .filter(|s| s.unix == unix)
            .or_else(|| calendar(unix));
        last.set(second);
        second
    });
    second.map_or_else(String::new, |s| format(&s.text, since.subsec_nanos()))
}

/// The calendar text of `unix`, from `time`.
fn calendar(unix: i64) -> Option<Second> {
    let text = OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .format(&Rfc3339)
        .ok()?;
    let text: [u8; PREFIX] = text.as_bytes().get(..PREFIX)?.try_into().ok()?;
    Some(Second { unix, text })
}

/// `prefix`, the fraction without its trailing zeros (none when `nanos` is
/// 0), and `Z`.
fn format(prefix: &[u8; PREFIX], nanos: u32) -> String {
    let mut out = Vec::with_capacity(PREFIX + 11);
    out.extend_from_slice(prefix);
    if nanos != 0 {
        let mut digits = [0u8; 10];
        digits[0] = b'.';
        let mut n = nanos;
        for d in digits[1..].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let zeros = digits.iter().rev().take_while(|d| **d == b'0').count();
        out.extend_from_slice(&digits[..10 - zeros]);
    }
    out.push(b'Z');
    // ASCII only (digits, '-', ':', 'T', '.', 'Z'), so never empty.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(unix: i64, nanos: u32) -> String {
        (OffsetDateTime::from_unix_timestamp(unix).expect("in range")
            + time::Duration::nanoseconds(i64::from(nanos)))
        .format(&Rfc3339)
        .expect("formats")
    }

    fn ours(unix: i64, nanos: u32) -> String {
        format(&calendar(unix).expect("in range").text, nanos)
    }

    #[test]
    fn same_text_as_the_time_crate() {
        let seconds = [
            0,
            1,
            951_782_400,   // 2000-02-29
            1_796_361_462, // 2026-12-04T05:17:42
            4_102_444_799, // 2099-12-31T23:59:59
            253_402_300_799,
        ];
        let fractions = [
            0,
            1,
            10,
            100_000_000,
            120_000_000,
            123_456_789,
            999_999_999,
            500_000,
            7_000,
        ];
        for s in seconds {
            for n in fractions {
                assert_eq!(ours(s, n), reference(s, n), "{s}.{n:09}");
            }
        }
        // A spread of instants, the fraction's every digit position included.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s = (x % 4_102_444_800) as i64;
            let n = ((x >> 32) % 1_000_000_000) as u32;
            let n = n / 10u32.pow((x % 9) as u32) * 10u32.pow((x % 9) as u32);
            assert_eq!(ours(s, n), reference(s, n), "{s}.{n:09}");
        }
    }

    #[test]
    fn now_is_well_formed_current_and_in_order() {
        let a = now();
        let b = now();
        let [pa, pb] = [&a, &b].map(|t| {
            let parsed = OffsetDateTime::parse(t, &Rfc3339).expect(t);
            assert_eq!(parsed.offset(), time::UtcOffset::UTC, "{t}");
            assert!(t.ends_with('Z'), "{t}");
            parsed
        });
        assert!(pa <= pb, "{a} then {b}");
        let elapsed = OffsetDateTime::now_utc() - pa;
        assert!(elapsed >= time::Duration::ZERO && elapsed < time::Duration::minutes(5));
    }

    #[test]
    fn years_past_9999_are_empty_as_with_the_time_crate() {
        // 10000-01-01T00:00:00Z
        assert!(calendar(253_402_300_800).is_none());
        assert!(calendar(253_402_300_799).is_some());
    }
}
