//! date, time, timestamp, timestamptz and interval: text (DateStyle ISO, IntervalStyle
//! postgres) and binary formats, as integers in PostgreSQL's own units.
//!
//! PostgreSQL stores dates as days and timestamps as microseconds since 2000-01-01
//! (`POSTGRES_EPOCH_JDATE`, `src/include/datatype/timestamp.h`), timestamptz in UTC, with
//! `DT_NOBEGIN`/`DT_NOEND` = INT64_MIN/MAX for `-infinity`/`infinity` and `DATEVAL_NOBEGIN`/
//! `DATEVAL_NOEND` = INT32_MIN/MAX for dates. `date_send`/`timestamp_send`/`time_send` send
//! those integers big-endian; `interval_send` sends int64 time, int32 day, int32 month.
//! Text output follows `EncodeDateOnly`/`EncodeDateTime` (`src/backend/utils/adt/datetime.c`):
//! `YYYY-MM-DD HH:MM:SS[.ffffff]` with trailing fraction zeros dropped, a `+HH[:MM[:SS]]` zone
//! offset for timestamptz, and a ` BC` suffix for years ≤ 0. The calendar is proleptic
//! Gregorian (PostgreSQL's Julian-day arithmetic in `date2j`).

use crate::exec::merge::error::MergeError;

pub const USECS_PER_SEC: i64 = 1_000_000;
pub const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// Days from 1970-01-01 to 2000-01-01.
const UNIX_TO_PG_EPOCH_DAYS: i64 = 10_957;
pub const DATE_NOBEGIN: i32 = i32::MIN;
pub const DATE_NOEND: i32 = i32::MAX;
pub const TS_NOBEGIN: i64 = i64::MIN;
pub const TS_NOEND: i64 = i64::MAX;

/// An interval: the three fields PostgreSQL keeps separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub micros: i64,
    pub days: i32,
    pub months: i32,
}

impl Interval {
    /// `interval_cmp_value`: months count as 30 days and days as 24 hours, in 128 bits.
    pub fn cmp_value(&self) -> i128 {
        (self.months as i128 * 30 + self.days as i128) * USECS_PER_DAY as i128 + self.micros as i128
    }
}

fn bad(type_name: &'static str) -> MergeError {
    MergeError::InvalidText { type_name }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year numbering).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn num(s: &str, type_name: &'static str) -> Result<i64, MergeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 9 {
        return Err(bad(type_name));
    }
    s.parse().map_err(|_| bad(type_name))
}

/// Split a trailing ` BC` off.
fn strip_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

/// `YYYY-MM-DD` → days since 2000-01-01; `bc` converts the year to astronomical numbering.
fn parse_ymd(s: &str, bc: bool, type_name: &'static str) -> Result<i64, MergeError> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = match (it.next(), it.next(), it.next()) {
        (Some(y), Some(m), Some(d)) => (num(y, type_name)?, num(m, type_name)?, num(d, type_name)?),
        _ => return Err(bad(type_name)),
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y == 0 {
        return Err(bad(type_name));
    }
    let y = if bc { 1 - y } else { y };
    Ok(days_from_civil(y, m, d) - UNIX_TO_PG_EPOCH_DAYS)
}

fn format_ymd(days: i64) -> (String, bool) {
    let (y, m, d) = civil_from_days(days + UNIX_TO_PG_EPOCH_DAYS);
    let bc = y <= 0;
    let y = if bc { 1 - y } else { y };
    (format!("{y:04}-{m:02}-{d:02}"), bc)
}

/// `date_in` for DateStyle ISO output.
pub fn parse_date(s: &str) -> Result<i32, MergeError> {
    match s {
        "infinity" => return Ok(DATE_NOEND),
        "-infinity" => return Ok(DATE_NOBEGIN),
        _ => {}
    }
    let (s, bc) = strip_bc(s);
    let days = parse_ymd(s, bc, "date")?;
    i32::try_from(days).map_err(|_| MergeError::Overflow { what: "date" })
}

/// `date_out` with DateStyle ISO.
pub fn format_date(d: i32) -> String {
    match d {
        DATE_NOEND => "infinity".to_string(),
        DATE_NOBEGIN => "-infinity".to_string(),
        _ => {
            let (s, bc) = format_ymd(d as i64);
            if bc {
                format!("{s} BC")
            } else {
                s
            }
        }
    }
}

/// `HH:MM:SS[.ffffff]` → microseconds (hours may exceed 24 for intervals).
fn parse_hms(s: &str, type_name: &'static str) -> Result<i64, MergeError> {
    let (hms, frac) = match s.split_once('.') {
        Some((a, f)) => (a, f),
        None => (s, ""),
    };
    let mut it = hms.split(':');
    let h = num(it.next().unwrap_or(""), type_name)?;
    let m = num(it.next().unwrap_or(""), type_name)?;
    let sec = match it.next() {
        Some(x) => num(x, type_name)?,
        None => 0,
    };
    if it.next().is_some() || m > 59 || sec > 60 {
        return Err(bad(type_name));
    }
    let mut usec = 0i64;
    if !frac.is_empty() {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(type_name));
        }
        // Microsecond precision: the server never prints more than six digits.
        let six: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        usec = six.parse().map_err(|_| bad(type_name))?;
    }
    Ok(((h * 60 + m) * 60 + sec) * USECS_PER_SEC + usec)
}

/// `HH:MM:SS` plus the fraction without trailing zeros (`AppendSeconds`).
fn format_hms(micros: i64) -> String {
    let secs = micros / USECS_PER_SEC;
    let frac = micros % USECS_PER_SEC;
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        let f = format!("{frac:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

/// `time_in` → microseconds since midnight.
pub fn parse_time(s: &str) -> Result<i64, MergeError> {
    let t = parse_hms(s, "time without time zone")?;
    if t > USECS_PER_DAY {
        return Err(bad("time without time zone"));
    }
    Ok(t)
}

/// `time_out`.
pub fn format_time(micros: i64) -> String {
    format_hms(micros)
}

/// Parse a zone offset `+HH`, `-HH:MM`, `+HH:MM:SS` into seconds east of UTC.
fn parse_offset(s: &str) -> Result<i64, MergeError> {
    let neg = s.starts_with('-');
    let body = &s[1..];
    let mut secs = 0i64;
    for (i, part) in body.split(':').enumerate() {
        if i > 2 || part.len() != 2 {
            return Err(bad("timestamp with time zone"));
        }
        secs += num(part, "timestamp with time zone")? * [3600, 60, 1][i];
    }
    Ok(if neg { -secs } else { secs })
}

/// `timestamp_in` / `timestamptz_in` for DateStyle ISO output → microseconds since
/// 2000-01-01 (UTC for timestamptz).
pub fn parse_timestamp(s: &str, with_tz: bool) -> Result<i64, MergeError> {
    let type_name = if with_tz { "timestamp with time zone" } else { "timestamp without time zone" };
    match s {
        "infinity" => return Ok(TS_NOEND),
        "-infinity" => return Ok(TS_NOBEGIN),
        _ => {}
    }
    let (s, bc) = strip_bc(s);
    let (date, rest) = s.split_once(' ').ok_or_else(|| bad(type_name))?;
    let days = parse_ymd(date, bc, type_name)?;
    let (time, offset) = if with_tz {
        let at = rest.find(['+', '-']).ok_or_else(|| bad(type_name))?;
        (&rest[..at], parse_offset(&rest[at..])?)
    } else {
        (rest, 0)
    };
    let t = parse_hms(time, type_name)?;
    days.checked_mul(USECS_PER_DAY)
        .and_then(|d| d.checked_add(t))
        .and_then(|v| v.checked_sub(offset * USECS_PER_SEC))
        .ok_or(MergeError::Overflow { what: "timestamp" })
}

/// `timestamp_out` with DateStyle ISO (no zone: timestamptz needs the session TimeZone,
/// which the router does not track, so it is never converted to text here).
pub fn format_timestamp(ts: i64) -> String {
    match ts {
        TS_NOEND => "infinity".to_string(),
        TS_NOBEGIN => "-infinity".to_string(),
        _ => {
            let (date, bc) = format_ymd(ts.div_euclid(USECS_PER_DAY));
            let time = format_hms(ts.rem_euclid(USECS_PER_DAY));
            if bc {
                format!("{date} {time} BC")
            } else {
                format!("{date} {time}")
            }
        }
    }
}

/// `interval_in` for IntervalStyle postgres output: `1 year 2 mons -3 days +04:05:06.5`.
pub fn parse_interval(s: &str) -> Result<Interval, MergeError> {
    let type_name = "interval";
    let mut iv = Interval { micros: 0, days: 0, months: 0 };
    let mut tokens = s.split_ascii_whitespace();
    let overflow = || MergeError::Overflow { what: "interval" };
    while let Some(tok) = tokens.next() {
        if tok.contains(':') {
            let (neg, body) = match tok.as_bytes()[0] {
                b'-' => (true, &tok[1..]),
                b'+' => (false, &tok[1..]),
                _ => (false, tok),
            };
            let t = parse_hms(body, type_name)?;
            iv.micros = iv.micros.checked_add(if neg { -t } else { t }).ok_or_else(overflow)?;
            continue;
        }
        let n: i64 = tok.parse().map_err(|_| bad(type_name))?;
        let unit = tokens.next().ok_or_else(|| bad(type_name))?;
        let n32 = |k: i64| i32::try_from(n * k).map_err(|_| overflow());
        match unit {
            "year" | "years" => iv.months = iv.months.checked_add(n32(12)?).ok_or_else(overflow)?,
            "mon" | "mons" => iv.months = iv.months.checked_add(n32(1)?).ok_or_else(overflow)?,
            "day" | "days" => iv.days = iv.days.checked_add(n32(1)?).ok_or_else(overflow)?,
            _ => return Err(bad(type_name)),
        }
    }
    Ok(iv)
}

/// `interval_recv`: int64 time, int32 day, int32 month.
pub fn interval_from_binary(b: &[u8]) -> Result<Interval, MergeError> {
    if b.len() != 16 {
        return Err(MergeError::protocol("interval value is not 16 bytes"));
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&b[..8]);
    Ok(Interval {
        micros: i64::from_be_bytes(t),
        days: i32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        months: i32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    })
}

/// `interval_send`.
pub fn interval_to_binary(iv: &Interval, out: &mut Vec<u8>) {
    out.extend_from_slice(&iv.micros.to_be_bytes());
    out.extend_from_slice(&iv.days.to_be_bytes());
    out.extend_from_slice(&iv.months.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("2000-01-01").unwrap(), 0);
        assert_eq!(parse_date("2000-01-02").unwrap(), 1);
        assert_eq!(parse_date("1999-12-31").unwrap(), -1);
        assert_eq!(parse_date("2024-03-01").unwrap(), 8826);
        assert_eq!(parse_date("1970-01-01").unwrap(), -10957);
        // 1 BC is astronomical year 0, a leap year.
        assert_eq!(parse_date("0001-12-31 BC").unwrap() + 1, parse_date("0001-01-01").unwrap());
        assert_eq!(parse_date("infinity").unwrap(), DATE_NOEND);
        assert_eq!(parse_date("-infinity").unwrap(), DATE_NOBEGIN);
        for s in ["2024-03-01", "0001-01-01", "0044-03-15 BC", "10000-01-01", "infinity", "-infinity"] {
            assert_eq!(format_date(parse_date(s).unwrap()), s);
        }
        for s in ["2024-13-01", "2024-03", "x", "2024-03-01x", "0000-01-01"] {
            assert!(parse_date(s).is_err(), "{s}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("2000-01-01 00:00:00", false).unwrap(), 0);
        assert_eq!(parse_timestamp("2000-01-01 00:00:00.5", false).unwrap(), 500_000);
        assert_eq!(parse_timestamp("1999-12-31 23:59:59.999999", false).unwrap(), -1);
        let a = parse_timestamp("2024-03-01 10:00:00.5+01", true).unwrap();
        let b = parse_timestamp("2024-03-01 09:00:00.5+00", true).unwrap();
        assert_eq!(a, b);
        let c = parse_timestamp("2024-03-01 10:00:00+05:30", true).unwrap();
        assert_eq!(c, parse_timestamp("2024-03-01 04:30:00+00", true).unwrap());
        let d = parse_timestamp("1883-11-18 12:03:58-04:56:02", true).unwrap();
        assert_eq!(d, parse_timestamp("1883-11-18 17:00:00+00", true).unwrap());
        let bc = parse_timestamp("0044-03-15 12:00:00+00 BC", true).unwrap();
        assert!(bc < parse_timestamp("0001-01-01 00:00:00+00", true).unwrap());
        assert_eq!(parse_timestamp("infinity", true).unwrap(), TS_NOEND);
        assert_eq!(parse_timestamp("-infinity", false).unwrap(), TS_NOBEGIN);
        for s in ["2024-03-01 10:00:00", "2024-03-01 10:00:00.123", "0044-03-15 12:00:00 BC", "infinity"] {
            assert_eq!(format_timestamp(parse_timestamp(s, false).unwrap()), s);
        }
        assert!(parse_timestamp("2024-03-01 10:00:00", true).is_err());
        assert!(parse_timestamp("2024-03-01", false).is_err());
    }

    #[test]
    fn times_and_intervals() {
        assert_eq!(parse_time("00:00:01.25").unwrap(), 1_250_000);
        assert_eq!(parse_time("24:00:00").unwrap(), USECS_PER_DAY);
        assert_eq!(format_time(3_723_000_001), "01:02:03.000001");
        let iv = parse_interval("1 year 2 mons -3 days +04:05:06.5").unwrap();
        assert_eq!(iv, Interval { micros: 14_706_500_000, days: -3, months: 14 });
        assert_eq!(parse_interval("-00:00:01").unwrap().micros, -1_000_000);
        assert_eq!(parse_interval("00:00:00").unwrap().cmp_value(), 0);
        assert_eq!(
            parse_interval("1 mon").unwrap().cmp_value(),
            parse_interval("30 days").unwrap().cmp_value()
        );
        assert!(parse_interval("3 fortnights").is_err());
        let mut b = Vec::new();
        interval_to_binary(&iv, &mut b);
        assert_eq!(interval_from_binary(&b).unwrap(), iv);
    }
}
