//! docker's encodings of times and durations: RFC 3339 with nanoseconds for times, int64
//! nanoseconds for durations.

/// Unix nanoseconds as docker writes a time ("2026-12-07T00:01:02.123456789Z"); 0 (unset) as
/// Go's zero time, which the CLI prints as never.
pub fn rfc3339(ns: i64) -> String {
    if ns == 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Parses docker's `since`/`until` query values: Unix seconds with an optional fraction
/// ("1700000000", "1700000000.5"), or an RFC 3339 time. Returns Unix nanoseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let numeric = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !numeric {
        return chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt());
    }
    if let Some((secs, frac)) = s.split_once('.') {
        let secs: i64 = secs.parse().ok()?;
        let digits: String = frac.chars().take(9).collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let nanos: i64 = format!("{digits:0<9}").parse().ok()?;
        return secs.checked_mul(1_000_000_000)?.checked_add(nanos);
    }
    s.parse::<i64>().ok()?.checked_mul(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(
            rfc3339(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            parse_timestamp("1700000000"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_timestamp("1700000000.5"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(parse_timestamp("soon"), None);
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
    }
}
