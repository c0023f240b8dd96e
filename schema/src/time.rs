//! Calendar arithmetic for the canonical timestamp form `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339,
//! UTC, milliseconds) and ISO dates, by hand rather than through a date crate: the schema needs
//! only these two forms, exactly, and no time zone or clock.

/// The earliest millisecond rendered as RFC 3339: 0000-01-01T00:00:00.000Z.
pub(crate) const MIN_RFC3339_MS: i64 = -62_167_219_200_000;
/// The latest millisecond rendered as RFC 3339: 9999-12-31T23:59:59.999Z.
pub(crate) const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let d = i64::from(d);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time in milliseconds, or `None` outside years
/// 0000-9999.
pub(crate) fn format_rfc3339_ms(ms: i64) -> Option<String> {
    if !(MIN_RFC3339_MS..=MAX_RFC3339_MS).contains(&ms) {
        return None;
    }
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    Some(format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z"
    ))
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Parses exactly the form [`format_rfc3339_ms`] writes.
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'.' {
        return None;
    }
    if b[23] != b'Z' {
        return None;
    }
    let (y, mo, d) = parse_date_bytes(&b[..10])?;
    let h = digits(&b[11..13])?;
    let mi = digits(&b[14..16])?;
    let sec = digits(&b[17..19])?;
    let milli = digits(&b[20..23])?;
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(
        days * MS_PER_DAY
            + i64::from(h) * 3_600_000
            + i64::from(mi) * 60_000
            + i64::from(sec) * 1000
            + i64::from(milli),
    )
}

fn parse_date_bytes(b: &[u8]) -> Option<(i64, u32, u32)> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = i64::from(digits(&b[..4])?);
    let mo = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return None;
    }
    Some((y, mo, d))
}

/// Whether `s` is an ISO calendar date, `YYYY-MM-DD`.
pub(crate) fn is_iso_date(s: &str) -> bool {
    parse_date_bytes(s.as_bytes()).is_some()
}

/// Whether `s` is an ISO date, optionally followed by a local time `THH:MM` or `THH:MM:SS`
/// (no zone: itinerary times are local to the place).
pub(crate) fn is_iso_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 10 || parse_date_bytes(&b[..10]).is_none() {
        return false;
    }
    let t = &b[10..];
    let hm = |t: &[u8]| {
        t.len() == 5
            && t[2] == b':'
            && digits(&t[..2]).is_some_and(|h| h < 24)
            && digits(&t[3..5]).is_some_and(|m| m < 60)
    };
    match t.len() {
        0 => true,
        6 => t[0] == b'T' && hm(&t[1..]),
        9 => {
            t[0] == b'T' && hm(&t[1..6]) && t[6] == b':' && digits(&t[7..]).is_some_and(|s| s < 60)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_rfc3339_ms(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_700_000_000_123).unwrap(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(MAX_RFC3339_MS).unwrap(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            format_rfc3339_ms(MIN_RFC3339_MS).unwrap(),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(format_rfc3339_ms(MAX_RFC3339_MS + 1), None);
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:00:00.000Z"),
            Some(1_709_208_000_000)
        );
        assert_eq!(parse_rfc3339_ms("2023-02-29T12:00:00.000Z"), None);
        assert_eq!(parse_rfc3339_ms("2023-01-01T24:00:00.000Z"), None);
        assert_eq!(parse_rfc3339_ms("2023-01-01T00:00:00.000+"), None);
    }

    #[test]
    fn dates() {
        assert!(is_iso_date("2024-02-29"));
        assert!(!is_iso_date("2100-02-29"));
        assert!(!is_iso_date("2024-13-01"));
        assert!(!is_iso_date("24-01-01"));
        assert!(is_iso_date_time("2024-06-01T09:30"));
        assert!(is_iso_date_time("2024-06-01T09:30:59"));
        assert!(is_iso_date_time("2024-06-01"));
        assert!(!is_iso_date_time("2024-06-01T25:00"));
        assert!(!is_iso_date_time("2024-06-01 09:30"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::proptest_cases()))]
        #[test]
        fn rfc3339_round_trips(ms in MIN_RFC3339_MS..=MAX_RFC3339_MS) {
            let s = format_rfc3339_ms(ms).unwrap();
            prop_assert_eq!(parse_rfc3339_ms(&s), Some(ms));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,30}") {
            let _ = parse_rfc3339_ms(&s);
            let _ = is_iso_date_time(&s);
        }
    }
}
