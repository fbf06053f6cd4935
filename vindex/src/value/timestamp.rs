//! Timestamps as PostgreSQL stores them: `i64` microseconds since 2000-01-01 00:00:00.
//!
//! Accepted text (the ISO 8601 subset drivers send; anything else is an error, never a guess):
//! `YYYY-MM-DD`, optionally followed by ` ` or `T` and `HH:MM[:SS[.ffffff]]`, optionally
//! followed by a zone: `Z`, `UTC`, `GMT`, or a numeric offset `±HH`, `±HHMM`, `±HH:MM`
//! (`±HH:MM:SS`). Also `infinity`, `-infinity` and `epoch`. `24:00:00` and second `60` are
//! accepted and roll over, as in PostgreSQL. More than 6 fractional digits, zone names such as
//! `Europe/Paris`, BC dates and relative words (`now`, `today`) are rejected.
//!
//! For `timestamp` (without time zone) PostgreSQL ignores a zone in the input; so do we. For
//! `timestamptz` a value without a zone is read in the session's `TimeZone`, which the router
//! does not track, so it is an error ([`Zone::Required`]).

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

type Parsed<T> = std::result::Result<T, &'static str>;

/// What to do with a zone in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Zone {
    /// `timestamp`: accept and ignore it.
    Ignore,
    /// `timestamptz`: require it and convert to UTC.
    Required,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// A cursor over ASCII input.
struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Exactly `n` digits.
    fn digits(&mut self, n: usize, what: &'static str) -> Parsed<i64> {
        let part = self.s.get(self.at..self.at + n).ok_or(what)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(what);
        }
        self.at += n;
        Ok(part.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    fn rest(&self) -> &[u8] {
        &self.s[self.at..]
    }
}

/// Parse a timestamp; see the module docs for the accepted forms.
pub(crate) fn parse_timestamp(input: &str, zone: Zone) -> Parsed<i64> {
    let trimmed = input.trim();
    match trimmed.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        "epoch" => return Ok(-PG_EPOCH_DAYS * USECS_PER_DAY),
        _ => {}
    }
    let mut c = Cursor { s: trimmed.as_bytes(), at: 0 };
    let y = c.digits(4, "expected a YYYY-MM-DD date")?;
    if !c.eat(b'-') {
        return Err("expected a YYYY-MM-DD date");
    }
    let m = c.digits(2, "expected a YYYY-MM-DD date")?;
    if !c.eat(b'-') {
        return Err("expected a YYYY-MM-DD date");
    }
    let d = c.digits(2, "expected a YYYY-MM-DD date")?;
    if y == 0 || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err("date out of range");
    }
    let mut micros = 0i64;
    let mut offset_secs: Option<i64> = None;
    if c.eat(b' ') || c.eat(b'T') || c.eat(b't') {
        c.skip_spaces();
        micros = parse_time(&mut c)?;
        c.skip_spaces();
        offset_secs = parse_zone(&mut c)?;
    }
    if !c.rest().is_empty() {
        return Err("unsupported timestamp format");
    }
    let local = (days_from_civil(y, m, d) - PG_EPOCH_DAYS) * USECS_PER_DAY + micros;
    match (zone, offset_secs) {
        (Zone::Ignore, _) => Ok(local),
        (Zone::Required, Some(off)) => Ok(local - off * USECS_PER_SEC),
        (Zone::Required, None) => {
            Err("timestamptz value without a UTC offset depends on the session TimeZone")
        }
    }
}

/// `HH:MM[:SS[.ffffff]]` as microseconds since midnight (24:00:00 and second 60 allowed).
fn parse_time(c: &mut Cursor<'_>) -> Parsed<i64> {
    let h = c.digits(2, "expected HH:MM")?;
    if !c.eat(b':') {
        return Err("expected HH:MM");
    }
    let mi = c.digits(2, "expected HH:MM")?;
    let mut s = 0;
    let mut frac = 0;
    if c.eat(b':') {
        s = c.digits(2, "expected seconds as SS")?;
        if c.eat(b'.') {
            let start = c.at;
            while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                c.at += 1;
            }
            let digits = &c.s[start..c.at];
            if digits.is_empty() || digits.len() > 6 {
                return Err("fractional seconds must have 1 to 6 digits");
            }
            frac = digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
                * 10i64.pow(6 - digits.len() as u32);
        }
    }
    let valid = (h < 24 && mi < 60 && s <= 60) || (h == 24 && mi == 0 && s == 0 && frac == 0);
    if !valid || (s == 60 && frac > 0) {
        return Err("time out of range");
    }
    Ok(((h * 60 + mi) * 60 + s) * USECS_PER_SEC + frac)
}

/// `Z`, `UTC`, `GMT`, `±HH`, `±HHMM`, `±HH:MM`, `±HH:MM:SS` as seconds east of UTC.
fn parse_zone(c: &mut Cursor<'_>) -> Parsed<Option<i64>> {
    let rest = c.rest();
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.eq_ignore_ascii_case(b"z")
        || rest.eq_ignore_ascii_case(b"utc")
        || rest.eq_ignore_ascii_case(b"gmt")
    {
        c.at = c.s.len();
        return Ok(Some(0));
    }
    let sign = match c.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err("unsupported time zone (only Z, UTC or a numeric offset)"),
    };
    c.at += 1;
    let h = c.digits(2, "expected a UTC offset as ±HH[:MM]")?;
    let mut mi = 0;
    let mut s = 0;
    if !c.rest().is_empty() {
        c.eat(b':');
        mi = c.digits(2, "expected a UTC offset as ±HH[:MM]")?;
        if !c.rest().is_empty() {
            c.eat(b':');
            s = c.digits(2, "expected a UTC offset as ±HH:MM:SS")?;
        }
    }
    if h > 15 || mi > 59 || s > 59 {
        return Err("UTC offset out of range");
    }
    Ok(Some(sign * (h * 3600 + mi * 60 + s)))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` (PostgreSQL's ISO output without zone), `infinity`,
/// `-infinity`.
pub(crate) fn format_timestamp(t: i64) -> String {
    match t {
        i64::MAX => return "infinity".to_owned(),
        i64::MIN => return "-infinity".to_owned(),
        _ => {}
    }
    let days = t.div_euclid(USECS_PER_DAY);
    let in_day = t.rem_euclid(USECS_PER_DAY);
    let (y, m, d) = civil_from_days(days + PG_EPOCH_DAYS);
    let secs = in_day / USECS_PER_SEC;
    let frac = in_day % USECS_PER_SEC;
    let base = format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac == 0 {
        base
    } else {
        format!("{base}.{frac:06}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pg_epoch_is_zero() {
        assert_eq!(parse_timestamp("2000-01-01", Zone::Ignore), Ok(0));
        assert_eq!(parse_timestamp("2000-01-01 00:00:00", Zone::Ignore), Ok(0));
        assert_eq!(parse_timestamp("2000-01-01T00:00:00Z", Zone::Required), Ok(0));
        assert_eq!(parse_timestamp("epoch", Zone::Ignore), Ok(-946_684_800 * USECS_PER_SEC));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(PG_EPOCH_DAYS), (2000, 1, 1));
    }

    #[test]
    fn known_values() {
        // SELECT extract(epoch FROM '2024-02-29 12:34:56.789'::timestamp) = 1709210096.789
        let want = (1_709_210_096_789_000i64) - 946_684_800 * USECS_PER_SEC;
        assert_eq!(parse_timestamp("2024-02-29 12:34:56.789", Zone::Ignore), Ok(want));
        assert_eq!(format_timestamp(want), "2024-02-29 12:34:56.789000");
        assert_eq!(parse_timestamp("2024-02-29 14:34:56.789+02", Zone::Required), Ok(want));
        assert_eq!(parse_timestamp("2024-02-29 07:04:56.789 -05:30", Zone::Required), Ok(want));
        // The offset is ignored for timestamp without time zone, as PostgreSQL does.
        assert_eq!(parse_timestamp("2024-02-29 12:34:56.789+02", Zone::Ignore), Ok(want));
    }

    #[test]
    fn rollovers_and_rejections() {
        assert_eq!(
            parse_timestamp("2023-12-31 24:00:00", Zone::Ignore),
            parse_timestamp("2024-01-01", Zone::Ignore)
        );
        assert_eq!(
            parse_timestamp("2016-12-31 23:59:60", Zone::Ignore),
            parse_timestamp("2017-01-01", Zone::Ignore)
        );
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "0000-01-01",
            "2024-01-01 25:00",
            "2024-01-01 12:00:00.1234567",
            "2024-01-01 12:00 Europe/Paris",
            "now",
            "2024-1-1",
            "2024-01-01 12",
        ] {
            assert!(parse_timestamp(bad, Zone::Ignore).is_err(), "{bad}");
        }
        assert!(parse_timestamp("2024-01-01 12:00", Zone::Required).is_err());
        assert!(parse_timestamp("2024-01-01", Zone::Required).is_err());
        assert_eq!(parse_timestamp("-infinity", Zone::Required), Ok(i64::MIN));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn format_parse_roundtrip(t in -63_000_000_000_000_000i64..252_000_000_000_000_000) {
            let text = format_timestamp(t);
            prop_assert_eq!(parse_timestamp(&text, Zone::Ignore), Ok(t));
        }
    }
}
