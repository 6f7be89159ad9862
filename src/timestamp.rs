//! Wall-clock seconds as the one text form switchyard shows them in: RFC 3339 in UTC, such as
//! `2026-11-22T07:23:45Z` — in the admin API, the audit log and the flags file alike. A leaf: it
//! depends on nothing in the crate. Internally times stay unix seconds (`u64`).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The last second RFC 3339's four-digit years can write: 9999-12-31T23:59:59Z.
pub(crate) const LAST_SECOND_OF_9999: u64 = 253_402_300_799;

/// Unix seconds as an RFC 3339 UTC timestamp, such as `2026-11-22T07:23:45Z`.
///
/// RFC 3339 has four-digit years, so a time past the end of 9999 (no clock reads one; the flags
/// file refuses one) is shown as the last second of 9999.
pub(crate) fn rfc3339(unix_seconds: u64) -> String {
    let seconds = i64::try_from(unix_seconds.min(LAST_SECOND_OF_9999)).unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(time::Error::from)
        .and_then(|at| at.format(&Rfc3339).map_err(time::Error::from))
        .expect("every second of 1970..=9999 is a valid RFC 3339 time")
}

/// An RFC 3339 timestamp (any offset; a fraction of a second is dropped) as unix seconds.
/// Times before 1970 are refused: nothing switchyard stamps can be one.
pub(crate) fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|error| format!("{text:?} is not an RFC 3339 time ({error})"))?;
    u64::try_from(at.unix_timestamp())
        .map_err(|_| format!("{text:?} is before 1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_332_225), "2026-11-22T07:23:45Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_parses_back_to_the_same_second() {
        for seconds in [0, 951_782_400, 1_795_332_225, LAST_SECOND_OF_9999] {
            assert_eq!(parse_rfc3339(&rfc3339(seconds)), Ok(seconds));
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T08:23:45.9+01:00"),
            Ok(1_795_332_225)
        );
        for bad in ["1969-12-31T23:59:59Z", "2026-11-22", "yesterday", ""] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
