//! RFC 3339 timestamps in UTC for the audit log, the API and the store,
//! without a date-time dependency. Pure.

#![forbid(unsafe_code)]

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds as RFC 3339 UTC, e.g. `2025-01-31T12:00:00Z`.
pub fn rfc3339_secs(secs: i64) -> String {
    let (date, time) = split(secs);
    format!("{date}T{time}Z")
}

/// A system time as RFC 3339 UTC with milliseconds, e.g.
/// `2025-01-31T12:00:00.250Z` (times before 1970 print as the epoch).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let (secs, millis) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(_) => (0, 0),
    };
    let (date, time) = split(secs);
    format!("{date}T{time}.{millis:03}Z")
}

/// Parse an RFC 3339 UTC timestamp (`2025-01-31T12:00:00Z`, with or
/// without fractional seconds, `Z` or `+00:00`) into unix seconds (the
/// fraction is dropped). Other offsets are applied. `None` if malformed.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let o = rest.get(1..)?;
            if o.len() != 5 || o.as_bytes()[2] != b':' {
                return None;
            }
            let oh: i64 = o[..2].parse().ok()?;
            let om: i64 = o[3..].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// (year, month, day) → days since 1970-01-01; the inverse of
/// [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn split(secs: i64) -> (String, String) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar, by counting 400-year eras that start on March 1st.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_what_it_prints_and_common_forms() {
        for secs in [0, 951_782_400, 1_735_689_599, 4_102_444_800, 1_800_000_123] {
            assert_eq!(parse_rfc3339(&rfc3339_secs(secs)), Some(secs), "{secs}");
        }
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00.250Z"), Some(951_782_400));
        assert_eq!(
            parse_rfc3339("2000-02-29T02:00:00+02:00"),
            Some(951_782_400)
        );
        assert_eq!(
            parse_rfc3339("2000-02-28T23:00:00-01:00"),
            Some(951_782_400)
        );
        for bad in [
            "",
            "2000-02-29",
            "2000-02-29T00:00:00",
            "2000-13-01T00:00:00Z",
            "2000-02-29T24:00:00Z",
            "2000-02-29T00:00:00.Z",
            "2000-02-29T00:00:00+0200",
            "x000-02-29T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn known_dates() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_735_689_599, "2024-12-31T23:59:59Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
            (-86_400, "1969-12-31T00:00:00Z"),
        ] {
            assert_eq!(rfc3339_secs(secs), want, "{secs}");
        }
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400) + Duration::from_millis(250);
        assert_eq!(rfc3339_millis(t), "2000-02-29T00:00:00.250Z");
    }
}
