//! PostgreSQL `numeric`, exact, for merging sums, averages, min/max and comparisons.
//!
//! A finite value is a sign, an arbitrary-precision decimal magnitude and a scale equal to
//! PostgreSQL's display scale (`dscale`): value = magnitude × 10^-scale. PostgreSQL keeps
//! exactly `dscale` fractional digits too (`numeric_in` keeps what was typed, `add_var` uses
//! `Max(dscale1, dscale2)`, `numeric_recv` truncates digits hidden by `dscale`), so text output
//! (`numeric_out` → `get_str_from_var`) is simply the magnitude with a point inserted.
//!
//! Magnitudes are decimal digit vectors: the values merged here are short (tens of digits), and
//! decimal digits make scale alignment, text I/O and exact rounding trivial. All references are
//! to PostgreSQL 15 `src/backend/utils/adt/numeric.c`.

use std::cmp::Ordering;

use crate::exec::merge::error::MergeError;

/// `NUMERIC_MIN_SIG_DIGITS`: division keeps at least this many significant digits.
const MIN_SIG_DIGITS: i32 = 16;
/// `DEC_DIGITS`: decimal digits per base-`NBASE` digit.
const DEC_DIGITS: i32 = 4;
/// `NUMERIC_MIN_DISPLAY_SCALE` / `NUMERIC_MAX_DISPLAY_SCALE`.
const MIN_DISPLAY_SCALE: i32 = 0;
const MAX_DISPLAY_SCALE: i32 = 1000;
/// `NUMERIC_DSCALE_MAX` (0x3FFF): the largest dscale the on-disk and wire formats carry.
const DSCALE_MAX: u16 = 0x3FFF;
/// Sign words of the binary format (`NUMERIC_POS`, `NUMERIC_NEG`, `NUMERIC_NAN`,
/// `NUMERIC_PINF`, `NUMERIC_NINF`).
const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;
/// `NUMERIC_MAX_PRECISION`-ish bound on digits we accept from text (numeric's own limit is
/// 131072 before the point + 16383 after); refuses absurd exponents before allocating.
const MAX_DIGITS: usize = 131_072 + 16_383;

/// A PostgreSQL `numeric` value.
#[derive(Debug, Clone)]
pub enum Numeric {
    NaN,
    PosInf,
    NegInf,
    Finite(Decimal),
}

/// A finite numeric: `(-1)^neg × digits × 10^-scale`.
#[derive(Debug, Clone)]
pub struct Decimal {
    neg: bool,
    /// Decimal digits (0..=9), most significant first, no leading zeros; empty for zero.
    digits: Vec<u8>,
    /// The display scale.
    scale: u16,
}

fn invalid() -> MergeError {
    MergeError::InvalidText { type_name: "numeric" }
}

impl Numeric {
    /// Zero with display scale 0.
    pub fn zero() -> Numeric {
        Numeric::Finite(Decimal { neg: false, digits: Vec::new(), scale: 0 })
    }

    /// An integer (scale 0), as `int64_to_numeric`.
    pub fn from_i128(v: i128) -> Numeric {
        let digits = if v == 0 { Vec::new() } else { v.unsigned_abs().to_string().into_bytes() };
        let digits = digits.into_iter().map(|c| c - b'0').collect();
        Numeric::Finite(Decimal { neg: v < 0, digits, scale: 0 })
    }

    /// Parse `numeric_in` text: optional surrounding spaces and sign, digits with an optional
    /// point and exponent, or `NaN` / `Infinity` / `inf` (case-insensitive, PG ≥ 14).
    pub fn parse(text: &str) -> Result<Numeric, MergeError> {
        let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
        let (neg, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        if body.eq_ignore_ascii_case("infinity") || body.eq_ignore_ascii_case("inf") {
            return Ok(if neg { Numeric::NegInf } else { Numeric::PosInf });
        }
        if t.eq_ignore_ascii_case("nan") {
            return Ok(Numeric::NaN);
        }
        let (mantissa, exp) = match body.find(['e', 'E']) {
            Some(i) => {
                let e: i64 = body[i + 1..].parse().map_err(|_| invalid())?;
                (&body[..i], e)
            }
            None => (body, 0),
        };
        let (int_part, frac_part) = match mantissa.find('.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac_part.is_empty()) || !all_digits(int_part) || !all_digits(frac_part) {
            return Err(invalid());
        }
        if exp.unsigned_abs() > MAX_DISPLAY_SCALE as u64 * 2 || mantissa.len() > MAX_DIGITS {
            return Err(MergeError::Overflow { what: "numeric" });
        }
        let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).map(|b| b - b'0').collect();
        // numeric_in: dscale = digits after the point minus the exponent, at least 0.
        let scale = frac_part.len() as i64 - exp;
        let scale = if scale < 0 {
            digits.extend(std::iter::repeat_n(0, (-scale) as usize));
            0
        } else {
            scale
        };
        let scale = u16::try_from(scale).map_err(|_| MergeError::Overflow { what: "numeric" })?;
        Ok(Numeric::Finite(Decimal::new(neg, digits, scale)))
    }

    /// Text output exactly as `numeric_out`.
    pub fn to_text(&self) -> String {
        match self {
            Numeric::NaN => "NaN".to_string(),
            Numeric::PosInf => "Infinity".to_string(),
            Numeric::NegInf => "-Infinity".to_string(),
            Numeric::Finite(d) => d.to_text(),
        }
    }

    /// Decode the binary format of `numeric_recv`: int16 ndigits, int16 weight, uint16 sign,
    /// uint16 dscale, then ndigits base-10000 int16 digits.
    pub fn from_binary(buf: &[u8]) -> Result<Numeric, MergeError> {
        let bad = |what: &str| MergeError::protocol(format!("invalid external numeric value: {what}"));
        if buf.len() < 8 {
            return Err(bad("too short"));
        }
        let word = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        let ndigits = i16::from_be_bytes([buf[0], buf[1]]);
        let weight = i16::from_be_bytes([buf[2], buf[3]]) as i64;
        let sign = word(4);
        let dscale = word(6);
        let ndigits = usize::try_from(ndigits).map_err(|_| bad("negative digit count"))?;
        if buf.len() != 8 + 2 * ndigits {
            return Err(bad("length does not match digit count"));
        }
        match sign {
            SIGN_NAN => return Ok(Numeric::NaN),
            SIGN_PINF => return Ok(Numeric::PosInf),
            SIGN_NINF => return Ok(Numeric::NegInf),
            SIGN_POS | SIGN_NEG => {}
            _ => return Err(bad("invalid sign")),
        }
        if dscale > DSCALE_MAX {
            return Err(bad("invalid scale"));
        }
        // The digits read as one integer G have value G × 10^(4 × (weight - ndigits + 1)); at
        // scale dscale the magnitude is G × 10^(exp + dscale). numeric_recv truncates digits
        // that dscale hides (trunc_var), so a negative shift drops digits.
        let mut digits = Vec::with_capacity(4 * ndigits);
        for i in 0..ndigits {
            let d = word(8 + 2 * i);
            if d >= 10_000 {
                return Err(bad("invalid digit"));
            }
            digits.extend_from_slice(&[
                (d / 1000) as u8,
                (d / 100 % 10) as u8,
                (d / 10 % 10) as u8,
                (d % 10) as u8,
            ]);
        }
        let shift = 4 * (weight - ndigits as i64 + 1) + dscale as i64;
        if shift >= 0 {
            if shift as usize > MAX_DIGITS {
                return Err(bad("weight out of range"));
            }
            digits.extend(std::iter::repeat_n(0, shift as usize));
        } else {
            let keep = digits.len().saturating_sub((-shift) as usize);
            digits.truncate(keep);
        }
        Ok(Numeric::Finite(Decimal::new(sign == SIGN_NEG, digits, dscale)))
    }

    /// Encode as `numeric_send` does (digits stripped of leading/trailing zero base-10000
    /// digits by `make_result`; zero has weight 0 and positive sign).
    pub fn to_binary(&self, out: &mut Vec<u8>) {
        let special = |out: &mut Vec<u8>, sign: u16| {
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&sign.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        };
        match self {
            Numeric::NaN => special(out, SIGN_NAN),
            Numeric::PosInf => special(out, SIGN_PINF),
            Numeric::NegInf => special(out, SIGN_NINF),
            Numeric::Finite(d) => {
                let (weight, groups) = d.base10000();
                out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
                out.extend_from_slice(&(weight as i16).to_be_bytes());
                let sign = if d.neg { SIGN_NEG } else { SIGN_POS };
                out.extend_from_slice(&sign.to_be_bytes());
                out.extend_from_slice(&d.scale.to_be_bytes());
                for g in groups {
                    out.extend_from_slice(&g.to_be_bytes());
                }
            }
        }
    }

    /// Addition as `numeric_add`: NaN wins, +Inf + -Inf is NaN, result dscale is the larger.
    pub fn add(&self, other: &Numeric) -> Numeric {
        use Numeric::*;
        match (self, other) {
            (NaN, _) | (_, NaN) | (PosInf, NegInf) | (NegInf, PosInf) => NaN,
            (PosInf, _) | (_, PosInf) => PosInf,
            (NegInf, _) | (_, NegInf) => NegInf,
            (Finite(a), Finite(b)) => Finite(a.add(b)),
        }
    }

    /// Division as `numeric_div`: result scale from `select_div_scale`, rounded half away
    /// from zero (div_var with round = true).
    pub fn div(&self, other: &Numeric) -> Result<Numeric, MergeError> {
        use Numeric::*;
        match (self, other) {
            (NaN, _) | (_, NaN) => Ok(NaN),
            (PosInf | NegInf, PosInf | NegInf) => Ok(NaN),
            (PosInf | NegInf, Finite(b)) => {
                if b.is_zero() {
                    return Err(MergeError::DivisionByZero);
                }
                Ok(if matches!(self, PosInf) != b.neg { PosInf } else { NegInf })
            }
            // Finite / ±Infinity is zero (numeric_div returns const_zero).
            (Finite(_), PosInf | NegInf) => Ok(Numeric::zero()),
            (Finite(a), Finite(b)) => a.div(b).map(Finite),
        }
    }

    /// PostgreSQL's total order (`cmp_numerics`): -Inf < finite < +Inf < NaN, NaN = NaN.
    pub fn cmp_pg(&self, other: &Numeric) -> Ordering {
        fn rank(n: &Numeric) -> u8 {
            match n {
                Numeric::NegInf => 0,
                Numeric::Finite(_) => 1,
                Numeric::PosInf => 2,
                Numeric::NaN => 3,
            }
        }
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => a.cmp_value(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }

    /// The nearest f64 (as `numeric_float8`: through the text form).
    pub fn to_f64(&self) -> f64 {
        match self {
            Numeric::NaN => f64::NAN,
            Numeric::PosInf => f64::INFINITY,
            Numeric::NegInf => f64::NEG_INFINITY,
            Numeric::Finite(d) => d.to_text().parse().unwrap_or(f64::NAN),
        }
    }

    /// The display scale (0 for special values).
    pub fn scale(&self) -> u16 {
        match self {
            Numeric::Finite(d) => d.scale,
            _ => 0,
        }
    }
}

impl PartialEq for Numeric {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_pg(other) == Ordering::Equal
    }
}

impl Decimal {
    fn new(neg: bool, mut digits: Vec<u8>, scale: u16) -> Decimal {
        let lead = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..lead);
        // Zero is never negative (make_result resets the sign when there are no digits).
        let neg = neg && !digits.is_empty();
        Decimal { neg, digits, scale }
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    fn to_text(&self) -> String {
        let scale = self.scale as usize;
        let mut s = String::with_capacity(self.digits.len() + scale + 3);
        if self.neg {
            s.push('-');
        }
        // Left-pad so there is at least one integer digit.
        let pad = (scale + 1).saturating_sub(self.digits.len());
        let padded = std::iter::repeat_n(0u8, pad).chain(self.digits.iter().copied());
        let total = pad + self.digits.len();
        for (i, d) in padded.enumerate() {
            if i == total - scale && scale > 0 {
                s.push('.');
            }
            s.push((b'0' + d) as char);
        }
        s
    }

    /// Magnitude scaled to `scale` (≥ self.scale) as a digit vector.
    fn mag_at(&self, scale: u16) -> Vec<u8> {
        let mut m = self.digits.clone();
        if !m.is_empty() {
            m.extend(std::iter::repeat_n(0, (scale - self.scale) as usize));
        }
        m
    }

    fn add(&self, other: &Decimal) -> Decimal {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.mag_at(scale), other.mag_at(scale));
        if self.neg == other.neg {
            return Decimal::new(self.neg, mag_add(&a, &b), scale);
        }
        match mag_cmp(&a, &b) {
            Ordering::Less => Decimal::new(other.neg, mag_sub(&b, &a), scale),
            _ => Decimal::new(self.neg, mag_sub(&a, &b), scale),
        }
    }

    fn cmp_value(&self, other: &Decimal) -> Ordering {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.mag_at(scale), other.mag_at(scale));
        match (self.neg, other.neg) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => mag_cmp(&a, &b),
            (true, true) => mag_cmp(&b, &a),
        }
    }

    /// Base-10000 digits (stripped of leading and trailing zeros) and the weight of the first.
    /// Zero gives `(0, [])`.
    fn base10000(&self) -> (i32, Vec<u16>) {
        if self.is_zero() {
            return (0, Vec::new());
        }
        let scale = self.scale as usize;
        let int_len = self.digits.len().saturating_sub(scale);
        // Pad the integer part on the left and the fraction on the right to whole groups.
        let int_pad = (4 - int_len % 4) % 4;
        let frac_len = scale;
        let frac_pad = (4 - frac_len % 4) % 4;
        let lead_zeros = scale.saturating_sub(self.digits.len()); // 0.00ddd
        let all: Vec<u8> = std::iter::repeat_n(0u8, int_pad + lead_zeros)
            .chain(self.digits.iter().copied())
            .chain(std::iter::repeat_n(0u8, frac_pad))
            .collect();
        let int_groups = (int_len + int_pad) / 4;
        let mut groups: Vec<u16> =
            all.chunks(4).map(|c| c.iter().fold(0u16, |acc, &d| acc * 10 + d as u16)).collect();
        let mut weight = int_groups as i32 - 1;
        let lead = groups.iter().take_while(|&&g| g == 0).count();
        groups.drain(..lead);
        weight -= lead as i32;
        while groups.last() == Some(&0) {
            groups.pop();
        }
        (weight, groups)
    }

    /// `select_div_scale`: estimate the quotient's weight from the first base-10000 digits
    /// and keep at least NUMERIC_MIN_SIG_DIGITS significant digits, never less than either
    /// input's dscale, clamped to [MIN_DISPLAY_SCALE, MAX_DISPLAY_SCALE].
    fn div_scale(&self, other: &Decimal) -> i32 {
        let (w1, g1) = self.base10000();
        let (w2, g2) = other.base10000();
        let first1 = g1.first().copied().unwrap_or(0);
        let first2 = g2.first().copied().unwrap_or(0);
        let mut qweight = w1 - w2;
        if first1 <= first2 {
            qweight -= 1;
        }
        let rscale = (MIN_SIG_DIGITS - qweight * DEC_DIGITS)
            .max(self.scale as i32)
            .max(other.scale as i32)
            .max(MIN_DISPLAY_SCALE);
        rscale.min(MAX_DISPLAY_SCALE)
    }

    fn div(&self, other: &Decimal) -> Result<Decimal, MergeError> {
        if other.is_zero() {
            return Err(MergeError::DivisionByZero);
        }
        let rscale = self.div_scale(other);
        // a/10^sa ÷ b/10^sb × 10^r = a × 10^(sb + r - sa) ÷ b; r ≥ sa by select_div_scale.
        let shift = other.scale as i32 + rscale - self.scale as i32;
        let mut num = self.digits.clone();
        if !num.is_empty() {
            num.extend(std::iter::repeat_n(0, shift.max(0) as usize));
        }
        let (mut q, r) = mag_divmod(&num, &other.digits);
        // Round half away from zero on the exact remainder: 2r ≥ b rounds up.
        if mag_cmp(&mag_add(&r, &r), &other.digits) != Ordering::Less {
            q = mag_add(&q, &[1]);
        }
        Ok(Decimal::new(self.neg != other.neg, q, rscale as u16))
    }
}

fn strip(mut v: Vec<u8>) -> Vec<u8> {
    let lead = v.iter().take_while(|&&d| d == 0).count();
    v.drain(..lead);
    v
}

/// Compare magnitudes without leading zeros.
fn mag_cmp(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn mag_add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let n = a.len().max(b.len());
    let mut out = vec![0u8; n + 1];
    let mut carry = 0u8;
    for i in 0..n {
        let da = if i < a.len() { a[a.len() - 1 - i] } else { 0 };
        let db = if i < b.len() { b[b.len() - 1 - i] } else { 0 };
        let s = da + db + carry;
        out[n - i] = s % 10;
        carry = s / 10;
    }
    out[0] = carry;
    strip(out)
}

/// `a - b` for `a ≥ b`.
fn mag_sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = a.to_vec();
    let mut borrow = 0i8;
    for i in 0..a.len() {
        let db = if i < b.len() { b[b.len() - 1 - i] as i8 } else { 0 };
        let idx = a.len() - 1 - i;
        let mut d = a[idx] as i8 - db - borrow;
        borrow = 0;
        if d < 0 {
            d += 10;
            borrow = 1;
        }
        out[idx] = d as u8;
    }
    strip(out)
}

/// Schoolbook long division of magnitudes (b nonzero): quotient and remainder.
fn mag_divmod(a: &[u8], b: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut q = Vec::with_capacity(a.len());
    let mut r: Vec<u8> = Vec::with_capacity(b.len() + 1);
    for &d in a {
        r.push(d);
        r = strip(r);
        let mut count = 0u8;
        while mag_cmp(&r, b) != Ordering::Less {
            r = mag_sub(&r, b);
            count += 1;
        }
        q.push(count);
    }
    (strip(q), r)
}

#[cfg(test)]
mod tests;
