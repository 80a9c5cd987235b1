//! Timestamps: naive feed times read in named IANA zones, ISO-8601 instants,
//! and the conversions between [`Timestamp`] and chrono.
//!
//! Feeds mostly write local wall-clock times without an offset and document
//! the zone elsewhere ("Europe/London", "MST"). A [`Timestamp`] keeps both the
//! instant and the offset it was written in, so nothing is lost: the offset
//! is that zone's offset at that instant. Local times that do not exist (the
//! hour skipped when clocks go forward) are refused; local times that occur
//! twice (when clocks go back) resolve to the earlier instant.
//!
//! The plugin sandbox has no clock and no tz database: zones come compiled in
//! from `chrono-tz`.

use crate::{FieldError, Timestamp};
use chrono::format::{Parsed, StrftimeItems};
use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Timelike,
};
use chrono_tz::Tz;

/// A named IANA zone, looked up once (e.g. when a plugin opens) and reused
/// for every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(Tz);

/// Look up an IANA zone name ("Europe/London", "UTC", "GMT", "MST"; exact
/// case), so configs can be checked up front.
pub fn zone(name: &str) -> Result<Zone, FieldError> {
    name.parse::<Tz>().map(Zone).map_err(|_| {
        FieldError::reason(format!(
            "unknown time zone {name:?} (expected an IANA name such as \"Europe/London\")"
        ))
    })
}

impl Zone {
    /// The zone's IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The chrono-tz zone, for arithmetic this module does not cover.
    pub fn tz(&self) -> Tz {
        self.0
    }

    /// A local date-time written in chrono strftime `format`, in this zone.
    /// See [`parse_local`].
    pub fn parse_local(&self, text: &str, format: &str) -> Result<Timestamp, FieldError> {
        let t = text.trim();
        if format == "%Y-%m-%d %H:%M:%S" || format == "%Y-%m-%dT%H:%M:%S" {
            let sep = format.as_bytes()[8];
            if let Some(naive) = fast_ymd_hms(t.as_bytes(), sep) {
                return self.resolve(naive, text);
            }
            // Anything unusual (unpadded fields, bad values): chrono decides.
        }
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, t, StrftimeItems::new(format)).map_err(|e| {
            FieldError::reason(format!(
                "date-time {text:?} does not match format {format:?}: {e}"
            ))
        })?;
        let date = parsed.to_naive_date().map_err(|e| {
            FieldError::reason(format!(
                "date-time {text:?} (format {format:?}) has no valid date: {e}"
            ))
        })?;
        let has_time = parsed.hour_div_12().is_some()
            || parsed.hour_mod_12().is_some()
            || parsed.minute().is_some()
            || parsed.second().is_some();
        if !has_time {
            return self.resolve_midnight(date, text);
        }
        let time = parsed.to_naive_time().map_err(|e| {
            FieldError::reason(format!(
                "date-time {text:?} (format {format:?}) has no valid time: {e}"
            ))
        })?;
        let naive = date.and_time(time);
        match parsed.offset() {
            // The format carried its own offset (%z): it wins over the zone.
            Some(secs) => {
                let off = FixedOffset::east_opt(secs).ok_or_else(|| {
                    FieldError::reason(format!("date-time {text:?} has an out-of-range offset"))
                })?;
                fixed(naive, off, text)
            }
            None => self.resolve(naive, text),
        }
    }

    /// A date written in chrono strftime `format`, as midnight in this zone.
    /// See [`parse_date`].
    pub fn parse_date(&self, text: &str, format: &str) -> Result<Timestamp, FieldError> {
        let date = NaiveDate::parse_from_str(text.trim(), format).map_err(|e| {
            FieldError::reason(format!(
                "date {text:?} does not match format {format:?}: {e}"
            ))
        })?;
        self.resolve_midnight(date, text)
    }

    /// An ISO-8601 / RFC 3339 date-time, or a bare date; without an offset it
    /// is read in this zone. See [`parse_instant`].
    pub fn parse_instant(&self, text: &str) -> Result<Timestamp, FieldError> {
        let t = text.trim();
        let bad = || {
            FieldError::reason(format!(
                "{text:?} is not an ISO-8601 date-time (expected e.g. \"2024-03-09T18:42:10Z\")"
            ))
        };
        let b = t.as_bytes();
        let date = b.get(..10).and_then(ymd).ok_or_else(bad)?;
        if b.len() == 10 {
            return self.resolve_midnight(date, text);
        }
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(bad());
        }
        let mut i = 11;
        let hour = two_digits(b, i).ok_or_else(bad)?;
        if b.get(i + 2) != Some(&b':') {
            return Err(bad());
        }
        let minute = two_digits(b, i + 3).ok_or_else(bad)?;
        i += 5;
        let mut second = 0;
        let mut nanos = 0;
        if b.get(i) == Some(&b':') {
            second = two_digits(b, i + 1).ok_or_else(bad)?;
            i += 3;
            if matches!(b.get(i), Some(b'.' | b',')) {
                i += 1;
                let start = i;
                let mut scale = 100_000_000;
                while i < b.len() && b[i].is_ascii_digit() {
                    // Digits past nanoseconds are truncated.
                    nanos += u32::from(b[i] - b'0') * scale;
                    scale /= 10;
                    i += 1;
                }
                if i == start {
                    return Err(bad());
                }
            }
        }
        let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
            .ok_or_else(|| FieldError::reason(format!("{text:?} has an impossible time of day")))?;
        let naive = date.and_time(time);
        let rest = &b[i..];
        let offset_secs = match rest {
            [] => return self.resolve(naive, text),
            [b'Z' | b'z'] => 0,
            [s @ (b'+' | b'-'), ..] => {
                let sign = if *s == b'-' { -1 } else { 1 };
                let (h, m) = match rest.len() {
                    3 => (two_digits(rest, 1), Some(0)),
                    5 => (two_digits(rest, 1), two_digits(rest, 3)),
                    6 if rest[3] == b':' => (two_digits(rest, 1), two_digits(rest, 4)),
                    _ => (None, None),
                };
                match (h, m) {
                    (Some(h), Some(m)) if h < 24 && m < 60 => {
                        sign * (h as i32 * 3600 + m as i32 * 60)
                    }
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        };
        let off = FixedOffset::east_opt(offset_secs).ok_or_else(bad)?;
        fixed(naive, off, text)
    }

    /// The instant `naive` names in this zone: refused in a DST gap, the
    /// earlier one in a DST fold.
    fn resolve(&self, naive: NaiveDateTime, text: &str) -> Result<Timestamp, FieldError> {
        match self.0.from_local_datetime(&naive) {
            LocalResult::Single(dt) => Ok(from_datetime(&dt)),
            LocalResult::Ambiguous(a, b) => Ok(from_datetime(if a <= b { &a } else { &b })),
            LocalResult::None => Err(FieldError::reason(format!(
                "local time {text:?} does not exist in {} (skipped by a clock change)",
                self.0.name()
            ))),
        }
    }

    /// Start of `date` in this zone. Where a clock change skips midnight
    /// itself, the day starts at the first local time that exists.
    fn resolve_midnight(&self, date: NaiveDate, text: &str) -> Result<Timestamp, FieldError> {
        let midnight = date.and_time(NaiveTime::MIN);
        for quarter in 0..=4 * 24 {
            let naive = midnight + chrono::Duration::minutes(15 * quarter);
            if naive.date() != date {
                break;
            }
            if let Ok(ts) = self.resolve(naive, text) {
                return Ok(ts);
            }
        }
        Err(FieldError::reason(format!(
            "date {text:?} does not exist in {}",
            self.0.name()
        )))
    }
}

/// A naive date-time written in chrono strftime `format`, read in IANA zone
/// `zone`; the result keeps that zone's offset at that instant. A format
/// without a time part means midnight. Look the zone up once with [`zone`]
/// and use [`Zone::parse_local`] when parsing many rows.
pub fn parse_local(text: &str, format: &str, zone_name: &str) -> Result<Timestamp, FieldError> {
    zone(zone_name)?.parse_local(text, format)
}

/// An ISO-8601 / RFC 3339 date-time: `T` or space between date and time,
/// optional seconds and fraction, and `Z`, `±HH:MM`, `±HHMM` or `±HH` (kept as
/// given). Without an offset, and for a bare date (midnight), the local time
/// is read in `default_zone`.
pub fn parse_instant(text: &str, default_zone: &str) -> Result<Timestamp, FieldError> {
    zone(default_zone)?.parse_instant(text)
}

/// A date only, in chrono strftime `format`, as midnight local time in `zone`.
pub fn parse_date(text: &str, format: &str, zone_name: &str) -> Result<Timestamp, FieldError> {
    zone(zone_name)?.parse_date(text, format)
}

/// A chrono date-time as a [`Timestamp`], keeping its offset.
pub fn from_datetime<Tz2: TimeZone>(dt: &DateTime<Tz2>) -> Timestamp {
    Timestamp {
        epoch_seconds: dt.timestamp(),
        nanos: dt.timestamp_subsec_nanos(),
        utc_offset_seconds: dt.offset().fix().local_minus_utc(),
    }
}

/// A [`Timestamp`] as a chrono date-time in its own offset, for arithmetic
/// and formatting; fails only on values no parser here produces.
pub fn to_datetime(ts: &Timestamp) -> Result<DateTime<FixedOffset>, FieldError> {
    let off = FixedOffset::east_opt(ts.utc_offset_seconds).ok_or_else(|| {
        FieldError::reason(format!(
            "UTC offset of {} seconds is out of range",
            ts.utc_offset_seconds
        ))
    })?;
    let utc = DateTime::from_timestamp(ts.epoch_seconds, ts.nanos).ok_or_else(|| {
        FieldError::reason(format!(
            "timestamp {}s + {}ns is out of range",
            ts.epoch_seconds, ts.nanos
        ))
    })?;
    Ok(utc.with_timezone(&off))
}

/// ISO-8601 text in the timestamp's own offset, as Python's `isoformat`
/// writes it (what Harmonia's exports and the reference docs show):
/// `2024-03-09T18:42:10+00:00`, with `.ffffff` (microseconds, truncated) only
/// when there is a sub-second part. A timestamp out of chrono's range
/// renders as `invalid-timestamp(...)` rather than panicking.
pub fn format_iso(ts: &Timestamp) -> String {
    use std::fmt::Write;
    let Ok(dt) = to_datetime(ts) else {
        return format!(
            "invalid-timestamp({},{},{})",
            ts.epoch_seconds, ts.nanos, ts.utc_offset_seconds
        );
    };
    let mut s = String::with_capacity(32);
    let year = dt.year();
    if (0..=9999).contains(&year) {
        let _ = write!(s, "{year:04}");
    } else {
        let _ = write!(s, "{year:+05}");
    }
    let _ = write!(
        s,
        "-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    if ts.nanos != 0 {
        let _ = write!(s, ".{:06}", (ts.nanos % 1_000_000_000) / 1_000);
    }
    let off = ts.utc_offset_seconds;
    let abs = off.unsigned_abs();
    let _ = write!(
        s,
        "{}{:02}:{:02}",
        if off < 0 { '-' } else { '+' },
        abs / 3600,
        abs / 60 % 60
    );
    if !abs.is_multiple_of(60) {
        let _ = write!(s, ":{:02}", abs % 60);
    }
    s
}

fn fixed(naive: NaiveDateTime, off: FixedOffset, text: &str) -> Result<Timestamp, FieldError> {
    match off.from_local_datetime(&naive) {
        LocalResult::Single(dt) => Ok(from_datetime(&dt)),
        _ => Err(FieldError::reason(format!(
            "date-time {text:?} is out of range"
        ))),
    }
}

fn two_digits(b: &[u8], at: usize) -> Option<u32> {
    match b.get(at..at + 2)? {
        [x @ b'0'..=b'9', y @ b'0'..=b'9'] => Some(u32::from(x - b'0') * 10 + u32::from(y - b'0')),
        _ => None,
    }
}

/// `YYYY-MM-DD`, exactly ten bytes.
fn ymd(b: &[u8]) -> Option<NaiveDate> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = two_digits(b, 0)? * 100 + two_digits(b, 2)?;
    NaiveDate::from_ymd_opt(year as i32, two_digits(b, 5)?, two_digits(b, 8)?)
}

/// `YYYY-MM-DD?HH:MM:SS` with `sep` between date and time, all zero-padded.
fn fast_ymd_hms(b: &[u8], sep: u8) -> Option<NaiveDateTime> {
    if b.len() != 19 || b[10] != sep || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = ymd(&b[..10])?;
    let time = NaiveTime::from_hms_opt(two_digits(b, 11)?, two_digits(b, 14)?, two_digits(b, 17)?)?;
    Some(date.and_time(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn zones_resolve_by_iana_name() {
        for name in [
            "Europe/London",
            "UTC",
            "GMT",
            "MST",
            "America/New_York",
            "Etc/UTC",
        ] {
            assert_eq!(zone(name).unwrap().name(), name);
        }
        let e = zone("Mars/Olympus").unwrap_err();
        assert!(e.reason.contains("\"Mars/Olympus\""), "{e}");
        assert!(e.field.is_empty());
        assert!(zone("").is_err());
        assert!(zone("europe/london").is_err());
    }

    #[test]
    fn amex_auth_time_is_mst_without_dst() {
        let ts = parse_local("2024-03-09 11:42:10", "%Y-%m-%d %H:%M:%S", "MST").unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-03-09T18:42:10Z"));
        assert_eq!(ts.utc_offset_seconds, -25200);
        assert_eq!(ts.nanos, 0);
        assert_eq!(format_iso(&ts), "2024-03-09T11:42:10-07:00");
        // Mid-summer: still -07:00 (Phoenix rules, no DST).
        let ts = parse_local("2024-07-01 12:00:00", "%Y-%m-%d %H:%M:%S", "MST").unwrap();
        assert_eq!(ts.utc_offset_seconds, -25200);
    }

    #[test]
    fn london_follows_bst() {
        let z = zone("Europe/London").unwrap();
        let winter = z
            .parse_local("2024-03-09 18:42:10", "%Y-%m-%d %H:%M:%S")
            .unwrap();
        assert_eq!(winter.epoch_seconds, utc("2024-03-09T18:42:10Z"));
        assert_eq!(winter.utc_offset_seconds, 0);
        let summer = z
            .parse_local("2024-07-01 12:00:00", "%Y-%m-%d %H:%M:%S")
            .unwrap();
        assert_eq!(summer.epoch_seconds, utc("2024-07-01T11:00:00Z"));
        assert_eq!(summer.utc_offset_seconds, 3600);
        assert_eq!(format_iso(&summer), "2024-07-01T12:00:00+01:00");
        let t = z
            .parse_local("2024-07-01T12:00:00", "%Y-%m-%dT%H:%M:%S")
            .unwrap();
        assert_eq!(t, summer);
    }

    #[test]
    fn dst_gap_is_refused_and_fold_takes_the_earlier_instant() {
        // 2024-03-31 01:00 GMT -> 02:00 BST: 01:30 never happened.
        let e =
            parse_local("2024-03-31 01:30:00", "%Y-%m-%d %H:%M:%S", "Europe/London").unwrap_err();
        assert!(e.reason.contains("does not exist"), "{e}");
        assert!(e.reason.contains("2024-03-31 01:30:00"), "{e}");
        // The slow path refuses it as well.
        assert!(parse_local("31/03/2024 01:30", "%d/%m/%Y %H:%M", "Europe/London").is_err());
        // 2024-10-27 02:00 BST -> 01:00 GMT: 01:30 happened twice.
        let ts = parse_local("2024-10-27 01:30:00", "%Y-%m-%d %H:%M:%S", "Europe/London").unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-10-27T00:30:00Z"));
        assert_eq!(ts.utc_offset_seconds, 3600);
        let ts = parse_instant("2024-10-27T01:30:00", "Europe/London").unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-10-27T00:30:00Z"));
    }

    #[test]
    fn visa_refund_unpadded_12_hour_times() {
        // chrono's numeric fields accept unpadded digits, so no special parser.
        let f = "%m/%d/%Y %I:%M:%S %p";
        let ts = parse_local("3/10/2024 9:5:7 AM", f, "Europe/London").unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-03-10T09:05:07Z"));
        assert_eq!(format_iso(&ts), "2024-03-10T09:05:07+00:00");
        let pm = parse_local("3/10/2024 9:5:7 PM", f, "UTC").unwrap();
        assert_eq!(pm.epoch_seconds, utc("2024-03-10T21:05:07Z"));
        let noon = parse_local("03/10/2024 12:00:00 PM", f, "UTC").unwrap();
        assert_eq!(noon.epoch_seconds, utc("2024-03-10T12:00:00Z"));
        let midnight = parse_local("3/10/2024 12:00:00 am", f, "UTC").unwrap();
        assert_eq!(midnight.epoch_seconds, utc("2024-03-10T00:00:00Z"));
        assert!(parse_local("13/10/2024 9:5:7 AM", f, "UTC").is_err());
    }

    #[test]
    fn fast_path_agrees_with_chrono() {
        let z = zone("Europe/London").unwrap();
        for text in [
            "2024-03-09 18:42:10",
            "2024-07-01 00:00:00",
            "1999-12-31 23:59:59",
            "2024-02-29 12:00:00",
        ] {
            let fast = z.parse_local(text, "%Y-%m-%d %H:%M:%S").unwrap();
            // Same format spelled differently takes the chrono path.
            let slow = z.parse_local(text, "%F %T").unwrap();
            assert_eq!(fast, slow, "{text}");
        }
        // Unpadded input falls back to chrono instead of failing.
        let ts = z
            .parse_local("2024-3-9 8:42:10", "%Y-%m-%d %H:%M:%S")
            .unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-03-09T08:42:10Z"));
        for bad in [
            "2024-02-30 12:00:00",
            "2024-03-09 24:00:00",
            "2024-03-09 12:60:00",
            "2024-03-09T12:00:00",
            "x",
        ] {
            let e = z.parse_local(bad, "%Y-%m-%d %H:%M:%S").unwrap_err();
            assert!(e.reason.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn formats_without_time_mean_midnight() {
        let ts = parse_local("09/03/2024", "%d/%m/%Y", "Europe/London").unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-03-09T00:00:00Z"));
        let ts = parse_date("01/07/2024", "%d/%m/%Y", "Europe/London").unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-06-30T23:00:00Z"));
        assert_eq!(ts.utc_offset_seconds, 3600);
        let ts = parse_date("20240309", "%Y%m%d", "UTC").unwrap();
        assert_eq!(format_iso(&ts), "2024-03-09T00:00:00+00:00");
        assert!(
            parse_date("2024-13-01", "%Y-%m-%d", "UTC")
                .unwrap_err()
                .reason
                .contains("2024-13-01")
        );
        assert!(parse_date("2024-01-01", "%Y-%m-%d", "Nowhere").is_err());
        // Midnight skipped by DST (Brazil, 2018-11-04 00:00 -> 01:00): the day
        // starts at the first local time that exists.
        let ts = parse_date("2018-11-04", "%Y-%m-%d", "America/Sao_Paulo").unwrap();
        assert_eq!(format_iso(&ts), "2018-11-04T01:00:00-02:00");
    }

    #[test]
    fn formats_with_offsets_keep_them() {
        let ts = parse_local("2024-03-09 18:42:10 +0130", "%Y-%m-%d %H:%M:%S %z", "UTC").unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-03-09T17:12:10Z"));
        assert_eq!(ts.utc_offset_seconds, 5400);
    }

    #[test]
    fn instants_keep_their_offset() {
        let cases = [
            ("2024-03-09T18:42:10Z", "2024-03-09T18:42:10+00:00"),
            ("2024-03-09t18:42:10z", "2024-03-09T18:42:10+00:00"),
            ("2024-03-09 18:42:10+01:00", "2024-03-09T18:42:10+01:00"),
            ("2024-03-09T18:42:10-0700", "2024-03-09T18:42:10-07:00"),
            ("2024-03-09T18:42:10+05", "2024-03-09T18:42:10+05:00"),
            ("2024-03-09T18:42:10.5Z", "2024-03-09T18:42:10.500000+00:00"),
            (
                "2024-03-09T18:42:10,123456789+00:00",
                "2024-03-09T18:42:10.123456+00:00",
            ),
            ("2024-03-09T18:42Z", "2024-03-09T18:42:00+00:00"),
            ("  2024-03-09T18:42:10Z \r", "2024-03-09T18:42:10+00:00"),
        ];
        for (text, iso) in cases {
            assert_eq!(
                format_iso(&parse_instant(text, "Europe/London").unwrap()),
                iso,
                "{text}"
            );
        }
        let ts = parse_instant("2024-03-09T18:42:10.123456789-07:00", "UTC").unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-03-10T01:42:10Z"));
        assert_eq!(ts.nanos, 123_456_789);
        assert_eq!(ts.utc_offset_seconds, -25200);
    }

    #[test]
    fn instants_without_offset_use_the_default_zone() {
        let ts = parse_instant("2024-07-01 12:00:00", "Europe/London").unwrap();
        assert_eq!(format_iso(&ts), "2024-07-01T12:00:00+01:00");
        assert_eq!(ts.epoch_seconds, utc("2024-07-01T11:00:00Z"));
        let ts = parse_instant("2024-03-09", "Europe/London").unwrap();
        assert_eq!(format_iso(&ts), "2024-03-09T00:00:00+00:00");
        let ts = parse_instant("2024-03-09T11:42:10", "MST").unwrap();
        assert_eq!(ts.epoch_seconds, utc("2024-03-09T18:42:10Z"));
        assert!(parse_instant("2024-03-31T01:30:00", "Europe/London").is_err());
        assert!(
            parse_instant("2024-03-09", "Nowhere")
                .unwrap_err()
                .reason
                .contains("Nowhere")
        );
    }

    #[test]
    fn malformed_instants_are_refused() {
        for bad in [
            "",
            "2024-03-09X18:42:10",
            "2024-3-9T18:42:10Z",
            "2024-03-09T18:42:10+1",
            "2024-03-09T18:42:10+01:0",
            "2024-03-09T18:42:10+25:00",
            "2024-03-09T18:42:10.Z",
            "2024-03-09T18:42:10 Z",
            "2024-03-09T18:4",
            "2024-02-30T00:00:00Z",
            "2024-03-09T25:00:00Z",
            "20240309T184210Z",
            "yesterday",
        ] {
            let e = parse_instant(bad, "UTC").unwrap_err();
            assert!(e.reason.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn chrono_round_trip() {
        let dt = DateTime::parse_from_rfc3339("2024-03-09T11:42:10.25-07:00").unwrap();
        let ts = from_datetime(&dt);
        assert_eq!(
            ts,
            Timestamp::new(utc("2024-03-09T18:42:10Z"), 250_000_000, -25200)
        );
        assert_eq!(to_datetime(&ts).unwrap(), dt);
        let london = chrono_tz::Europe::London
            .with_ymd_and_hms(2024, 7, 1, 12, 0, 0)
            .unwrap();
        assert_eq!(from_datetime(&london).utc_offset_seconds, 3600);
        assert!(to_datetime(&Timestamp::new(0, 0, 86_400)).is_err());
        assert!(to_datetime(&Timestamp::new(i64::MAX, 0, 0)).is_err());
    }

    #[test]
    fn iso_rendering_matches_python() {
        assert_eq!(
            format_iso(&Timestamp::new(0, 0, 0)),
            "1970-01-01T00:00:00+00:00"
        );
        assert_eq!(
            format_iso(&Timestamp::new(0, 1_000, 0)),
            "1970-01-01T00:00:00.000001+00:00"
        );
        assert_eq!(
            format_iso(&Timestamp::new(0, 0, -(5 * 3600 + 30 * 60))),
            "1969-12-31T18:30:00-05:30"
        );
        // Offsets with seconds (old LMT rules) keep them, like Python.
        assert_eq!(
            format_iso(&Timestamp::new(0, 0, -75)),
            "1969-12-31T23:58:45-00:01:15"
        );
        assert!(format_iso(&Timestamp::new(0, 0, 90_000)).starts_with("invalid-timestamp"));
    }
}
