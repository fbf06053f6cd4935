//! float4/float8 text and binary formats, byte-identical to PostgreSQL 15.
//!
//! With the default `extra_float_digits = 1`, `float8out`/`float4out`
//! (`src/backend/utils/adt/float.c`) print the shortest decimal that round-trips, via
//! `double_to_shortest_decimal_buf` / `float_to_shortest_decimal_buf` (Ryu, in
//! `src/common/d2s.c` / `f2s.c`). Their `to_chars` uses fixed notation when the decimal
//! exponent `exp` satisfies `exp >= -4 && exp < 15` (float8) or `exp < 6` (float4), and
//! otherwise `d.ddde±XX` with a sign and at least two exponent digits. Rust's `{:e}` also
//! prints the shortest round-trip digits, so we take its digits and re-lay them out.
//! Special values come from `float8out_internal`: `NaN`, `Infinity`, `-Infinity`; `-0` keeps
//! its sign.

use crate::exec::merge::error::MergeError;

/// `to_chars` switches to exponent notation at this decimal exponent for float8.
const FLOAT8_EXP_FORM_AT: i32 = 15;
/// ... and for float4.
const FLOAT4_EXP_FORM_AT: i32 = 6;

/// `float8out` with extra_float_digits = 1.
pub fn format_f64(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    layout(x.is_sign_negative(), x.is_infinite(), &format!("{:e}", x.abs()), FLOAT8_EXP_FORM_AT)
}

/// `float4out` with extra_float_digits = 1.
pub fn format_f32(x: f32) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    layout(x.is_sign_negative(), x.is_infinite(), &format!("{:e}", x.abs()), FLOAT4_EXP_FORM_AT)
}

/// Re-lay out Rust's shortest `{:e}` form (`1.2345e-5`, `1e20`, `0e0`) the way PostgreSQL's
/// `to_chars` does.
fn layout(neg: bool, infinite: bool, sci: &str, exp_form_at: i32) -> String {
    let sign = if neg { "-" } else { "" };
    if infinite {
        return format!("{sign}Infinity");
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if digits == "0" {
        return format!("{sign}0");
    }
    let n = digits.len() as i32;
    let body = if (-4..exp_form_at).contains(&exp) {
        if exp < 0 {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else if n <= exp + 1 {
            format!("{digits}{}", "0".repeat((exp + 1 - n) as usize))
        } else {
            let (int, frac) = digits.split_at((exp + 1) as usize);
            format!("{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{first}{point}e{esign}{:02}", exp.unsigned_abs())
    };
    format!("{sign}{body}")
}

/// `float8in` for what the server prints (also accepts `inf`, exponents, spaces).
pub fn parse_f64(text: &str) -> Result<f64, MergeError> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    t.parse::<f64>().map_err(|_| MergeError::InvalidText { type_name: "double precision" })
}

/// `float4in`.
pub fn parse_f32(text: &str) -> Result<f32, MergeError> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    t.parse::<f32>().map_err(|_| MergeError::InvalidText { type_name: "real" })
}

/// `float8recv`: 8 bytes, IEEE 754 big-endian (pq_getmsgfloat8).
pub fn f64_from_binary(buf: &[u8]) -> Result<f64, MergeError> {
    let b: [u8; 8] = buf.try_into().map_err(|_| MergeError::protocol("float8 value is not 8 bytes"))?;
    Ok(f64::from_be_bytes(b))
}

/// `float4recv`: 4 bytes, IEEE 754 big-endian (pq_getmsgfloat4).
pub fn f32_from_binary(buf: &[u8]) -> Result<f32, MergeError> {
    let b: [u8; 4] = buf.try_into().map_err(|_| MergeError::protocol("float4 value is not 4 bytes"))?;
    Ok(f32::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float8out_table() {
        // Outputs of PostgreSQL 15 `SELECT x::float8` with default settings (the regression
        // suite's float8.out and hand-checked server output).
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.0 / 3.0, "0.3333333333333333"),
            (100.0, "100"),
            (1e14, "100000000000000"),
            (123456789012345.0, "123456789012345"),
            (1e15, "1e+15"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (1e20, "1e+20"),
            (1.5e20, "1.5e+20"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (0.00001, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (1.234e-5, "1.234e-05"),
            (1e100, "1e+100"),
            (1e-100, "1e-100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (-1004.3, "-1004.3"),
            (1.2345678901234e200, "1.2345678901234e+200"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (x, want) in cases {
            assert_eq!(format_f64(*x), *want, "{x:?}");
        }
    }

    #[test]
    fn float4out_table() {
        // float4.out: '1004.3'::float4 → 1004.3, '1.2345678901234e+20' → 1.2345679e+20,
        // '1.2345678901234e-20' → 1.2345679e-20; 1e6 switches to exponent form.
        let cases: &[(f32, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1004.3, "1004.3"),
            (-34.84, "-34.84"),
            (1.234_567_9e20, "1.2345679e+20"),
            (1.234_567_9e-20, "1.2345679e-20"),
            (0.1, "0.1"),
            (99999.0, "99999"),
            (100000.0, "100000"),
            (1000000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (f32::NAN, "NaN"),
            (f32::INFINITY, "Infinity"),
            (f32::NEG_INFINITY, "-Infinity"),
        ];
        for (x, want) in cases {
            assert_eq!(format_f32(*x), *want, "{x:?}");
        }
    }

    #[test]
    fn text_round_trips() {
        for x in [0.1, 1e-7, 123.456, 1e300, -2.5e-300, 9007199254740993.0, 0.30000000000000004] {
            assert_eq!(parse_f64(&format_f64(x)).unwrap(), x);
        }
        assert!(parse_f64("NaN").unwrap().is_nan());
        assert_eq!(parse_f64("-Infinity").unwrap(), f64::NEG_INFINITY);
        assert_eq!(parse_f64(" 1e+20 ").unwrap(), 1e20);
        assert!(parse_f64("one").is_err());
        assert_eq!(parse_f32("1.2345679e+20").unwrap(), 1.234_567_9e20);
    }

    #[test]
    fn binary_formats() {
        assert_eq!(f64_from_binary(&1.5f64.to_be_bytes()).unwrap(), 1.5);
        assert_eq!(f32_from_binary(&(-2.25f32).to_be_bytes()).unwrap(), -2.25);
        assert!(f64_from_binary(&[0; 4]).is_err());
        assert!(f32_from_binary(&[0; 8]).is_err());
    }
}
