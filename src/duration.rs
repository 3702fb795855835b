//! Durations on the command line: `10s`, `500ms`, `2m`, `1h`, or a bare
//! number of seconds.

#![forbid(unsafe_code)]

use std::time::Duration;

/// What stands for "never" where a deadline must be an `Instant`: a
/// duration from a registry, a policy or the command line can reach past
/// what the monotonic clock counts (adding it would panic).
pub const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// An optional whole number of seconds in 8 bytes (`Option<Duration>`
/// takes 16, `Option<u64>` 16): TTLs and leases come as whole seconds, and
/// one is kept for each of tens of thousands of secrets. `u64::MAX` stands
/// for none; a TTL or lease that long (585 billion years) is read as none,
/// which is what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(u64);

impl Seconds {
    /// None.
    pub const NONE: Seconds = Seconds(u64::MAX);

    /// From whole seconds.
    pub fn of_secs(secs: Option<u64>) -> Seconds {
        Seconds(secs.unwrap_or(u64::MAX))
    }

    /// From a duration (its whole seconds).
    pub fn of(d: Option<Duration>) -> Seconds {
        Self::of_secs(d.map(|d| d.as_secs()))
    }

    /// The seconds.
    pub fn secs(self) -> Option<u64> {
        (self != Self::NONE).then_some(self.0)
    }

    /// As a duration.
    pub fn get(self) -> Option<Duration> {
        self.secs().map(Duration::from_secs)
    }
}

/// Parse a duration such as `10s`, `250ms`, `2m`, `1h` or `5` (seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("'{text}' is out of range"))
}

/// [`parse`], for an interval: at least a millisecond. Zero would mean
/// "again at once, forever" (`--watch 0` polled every source in a busy
/// loop, a full core re-reading files or running provider programs).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match parse(text)? {
        d if d < Duration::from_millis(1) => {
            Err(format!("'{text}': an interval must be at least 1ms"))
        }
        d => Ok(d),
    }
}

/// Format a duration compactly: `10s`, `1.5s`, `250ms`.
pub fn format(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        for (text, ms) in [
            ("10s", 10_000),
            ("500ms", 500),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("5", 5_000),
            ("0.5s", 500),
            ("0", 0),
        ] {
            assert_eq!(parse(text).map(|d| d.as_millis()), Ok(ms), "{text}");
        }
        for bad in ["", "s", "10x", "-1s", "ten"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_keep_what_they_are_given() {
        for secs in [
            Some(0),
            Some(1),
            Some(i64::MAX as u64),
            Some(u64::MAX - 1),
            None,
        ] {
            assert_eq!(Seconds::of_secs(secs).secs(), secs, "{secs:?}");
        }
        // As long as the clock could never count to: none.
        assert_eq!(Seconds::of_secs(Some(u64::MAX)).secs(), None);
        assert_eq!(
            Seconds::of(Some(Duration::from_millis(1500))).get(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(Seconds::of(None).get(), None);
        assert_eq!(std::mem::size_of::<Seconds>(), 8);
    }

    #[test]
    fn an_interval_is_at_least_a_millisecond() {
        for zero in ["0", "0s", "0ms", "0.0001ms"] {
            assert!(parse_interval(zero).is_err(), "{zero}");
        }
        assert_eq!(parse_interval("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_interval("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn formats() {
        assert_eq!(format(Duration::from_secs(10)), "10s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
    }
}
