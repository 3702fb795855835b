//! Per-route `max_requests_per_minute`: a token bucket that holds a
//! minute's worth of requests and refills continuously. Pure: time comes in
//! as an [`Instant`].

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// One route's bucket.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_minute: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket of `per_minute` requests.
    pub fn new(per_minute: u64, now: Instant) -> RateLimit {
        RateLimit {
            per_minute: per_minute as f64,
            tokens: per_minute as f64,
            last: now,
        }
    }

    /// Take one request: `Err(retry after)` when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_minute / 60.0).min(self.per_minute);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) * 60.0 / self.per_minute;
            Err(Duration::from_secs_f64(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_of_requests_then_429_then_refill() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(3, t0);
        assert!(l.take(t0).is_ok());
        assert!(l.take(t0).is_ok());
        assert!(l.take(t0).is_ok());
        let wait = l.take(t0).expect_err("limited");
        assert!(wait <= Duration::from_secs(20) && wait > Duration::from_secs(19));
        assert!(l.take(t0 + Duration::from_secs(19)).is_err());
        assert!(l.take(t0 + Duration::from_secs(21)).is_ok());
        assert!(l.take(t0 + Duration::from_secs(21)).is_err());
        // Never more than a minute's worth saved up.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.take(later).is_ok());
        }
        assert!(l.take(later).is_err());
    }
}
