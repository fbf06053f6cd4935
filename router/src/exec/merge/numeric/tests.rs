//! Expected strings are what PostgreSQL 15 prints (psql, `numeric_out`); division cases follow
//! `select_div_scale` and were checked against known server output (`select 1/3::numeric`,
//! the regression suite's `avg(a)` over aggtest = `32.6666666666666667`).

use super::*;

fn n(s: &str) -> Numeric {
    Numeric::parse(s).unwrap()
}

#[test]
fn parse_and_format_round_trip() {
    let cases = [
        ("-12.3400", "-12.3400"),
        ("0", "0"),
        ("0.000", "0.000"),
        ("-0.00", "0.00"),
        ("  12  ", "12"),
        ("+7", "7"),
        (".5", "0.5"),
        ("5.", "5"),
        ("007.10", "7.10"),
        ("1e3", "1000"),
        ("1.2e2", "120"),
        ("1.2E+2", "120"),
        ("1.5e-3", "0.0015"),
        ("12.345e1", "123.45"),
        ("123456789012345678901234567890.123456789", "123456789012345678901234567890.123456789"),
        ("NaN", "NaN"),
        ("nan", "NaN"),
        ("Infinity", "Infinity"),
        ("+inf", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("-INF", "-Infinity"),
    ];
    for (input, want) in cases {
        assert_eq!(n(input).to_text(), want, "input {input:?}");
    }
}

#[test]
fn parse_rejects_garbage() {
    for bad in ["", " ", "abc", "1.2.3", "--1", "1e", "e5", ".", "1 2", "0x10", "-"] {
        assert!(Numeric::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(Numeric::parse("1e99999999"), Err(MergeError::Overflow { what: "numeric" }));
}

#[test]
fn addition_keeps_max_dscale() {
    let cases = [
        ("1.50", "2.5", "4.00"),
        ("-1.5", "1.5", "0.0"),
        ("0.1", "-0.25", "-0.15"),
        ("999.99", "0.01", "1000.00"),
        ("-999.99", "-0.01", "-1000.00"),
        ("1", "-1000", "-999"),
        ("99999999999999999999", "1", "100000000000000000000"),
        ("0", "0.000", "0.000"),
        ("NaN", "1", "NaN"),
        ("Infinity", "-Infinity", "NaN"),
        ("Infinity", "5", "Infinity"),
        ("-Infinity", "5", "-Infinity"),
        ("NaN", "Infinity", "NaN"),
    ];
    for (a, b, want) in cases {
        assert_eq!(n(a).add(&n(b)).to_text(), want, "{a} + {b}");
        assert_eq!(n(b).add(&n(a)).to_text(), want, "{b} + {a}");
    }
}

#[test]
fn division_follows_select_div_scale() {
    let cases = [
        // avg(int) of 1,2 / 1..4 / 10,20 (int8_avg → numeric_div)
        ("3", "2", "1.5000000000000000"),
        ("10", "4", "2.5000000000000000"),
        ("30", "2", "15.0000000000000000"),
        // regression suite: SELECT avg(a) FROM aggtest WHERE a < 100 (56, 0, 42)
        ("98", "3", "32.6666666666666667"),
        // avg(numeric) of 1.25, 2.5: first digits 3 > 2 so qweight 0, rscale 16
        ("3.75", "2", "1.8750000000000000"),
        // first digit of the dividend ≤ divisor's → one more group of scale
        ("0.75", "2", "0.37500000000000000000"),
        ("1", "3", "0.33333333333333333333"),
        ("2", "3", "0.66666666666666666667"),
        ("-2", "3", "-0.66666666666666666667"),
        ("10", "3", "3.3333333333333333"),
        ("100000", "3", "33333.333333333333"),
        ("123456789", "1", "123456789.000000000000"),
        ("-7", "2", "-3.5000000000000000"),
        ("0", "5", "0.00000000000000000000"),
        ("1", "8", "0.12500000000000000000"),
        // dividend dscale larger than the minimum: keep it
        ("1.00000000000000000000000", "3", "0.33333333333333333333333"),
        ("5", "0.5", "10.0000000000000000"),
        ("1", "10000", "0.000100000000000000000000"),
        ("1", "-3", "-0.33333333333333333333"),
        // rounding half away from zero at rscale
        ("0.00000000000000005", "1", "0.000000000000000050000000000000000000"),
        ("NaN", "0", "NaN"),
        ("Infinity", "2", "Infinity"),
        ("Infinity", "-2", "-Infinity"),
        ("-Infinity", "-2", "Infinity"),
        ("Infinity", "Infinity", "NaN"),
        ("5", "Infinity", "0"),
    ];
    for (a, b, want) in cases {
        assert_eq!(n(a).div(&n(b)).unwrap().to_text(), want, "{a} / {b}");
    }
    assert_eq!(n("1").div(&n("0")), Err(MergeError::DivisionByZero));
    assert_eq!(n("Infinity").div(&n("0.00")), Err(MergeError::DivisionByZero));
}

#[test]
fn rounding_is_half_away_from_zero() {
    // rscale = dividend dscale (23) here, and the exact quotient ends in a 5 one place further.
    let tie = n("1.00000000000000000000001").div(&n("2")).unwrap();
    assert_eq!(tie.to_text(), "0.50000000000000000000001");
    let tie = n("-1.00000000000000000000001").div(&n("2")).unwrap();
    assert_eq!(tie.to_text(), "-0.50000000000000000000001");
    let up = n("1.00000000000000000000003").div(&n("2")).unwrap();
    assert_eq!(up.to_text(), "0.50000000000000000000002");
    let q = n("1").div(&n("7")).unwrap();
    assert_eq!(q.to_text(), "0.14285714285714285714");
    let q = n("-1").div(&n("6")).unwrap();
    assert_eq!(q.to_text(), "-0.16666666666666666667");
}

#[test]
fn comparison_is_pg_total_order() {
    assert_eq!(n("1.0").cmp_pg(&n("1.00")), Ordering::Equal);
    assert_eq!(n("1.0"), n("1"));
    assert_eq!(n("-0.5").cmp_pg(&n("0")), Ordering::Less);
    assert_eq!(n("-2").cmp_pg(&n("-10")), Ordering::Greater);
    assert_eq!(n("10").cmp_pg(&n("9.999")), Ordering::Greater);
    assert_eq!(n("NaN").cmp_pg(&n("Infinity")), Ordering::Greater);
    assert_eq!(n("NaN").cmp_pg(&n("NaN")), Ordering::Equal);
    assert_eq!(n("-Infinity").cmp_pg(&n("-1e100")), Ordering::Less);
    assert_eq!(n("Infinity").cmp_pg(&n("1e100")), Ordering::Greater);
}

fn bin(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&ndigits.to_be_bytes());
    v.extend_from_slice(&weight.to_be_bytes());
    v.extend_from_slice(&sign.to_be_bytes());
    v.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

#[test]
fn binary_matches_numeric_send() {
    let cases = [
        ("1.5", bin(2, 0, 0, 1, &[1, 5000])),
        ("-12.3400", bin(2, 0, 0x4000, 4, &[12, 3400])),
        ("0.00", bin(0, 0, 0, 2, &[])),
        ("10000", bin(1, 1, 0, 0, &[1])),
        ("123456789", bin(3, 2, 0, 0, &[1, 2345, 6789])),
        ("0.0001234", bin(2, -1, 0, 7, &[1, 2340])),
        ("1.0000000000000000", bin(1, 0, 0, 16, &[1])),
        ("NaN", bin(0, 0, 0xC000, 0, &[])),
        ("Infinity", bin(0, 0, 0xD000, 0, &[])),
        ("-Infinity", bin(0, 0, 0xF000, 0, &[])),
    ];
    for (text, wire) in cases {
        let mut out = Vec::new();
        n(text).to_binary(&mut out);
        assert_eq!(out, wire, "send {text}");
        assert_eq!(Numeric::from_binary(&wire).unwrap().to_text(), text, "recv {text}");
    }
}

#[test]
fn binary_recv_truncates_hidden_digits_and_validates() {
    // numeric_recv applies trunc_var(value, dscale).
    assert_eq!(Numeric::from_binary(&bin(2, 0, 0, 0, &[1, 5000])).unwrap().to_text(), "1");
    assert_eq!(Numeric::from_binary(&bin(1, 0, 0, 3, &[7])).unwrap().to_text(), "7.000");
    assert_eq!(Numeric::from_binary(&bin(1, -2, 0, 8, &[12])).unwrap().to_text(), "0.00000012");
    assert!(Numeric::from_binary(&bin(1, 0, 0, 0, &[10000])).is_err());
    assert!(Numeric::from_binary(&bin(1, 0, 0x1234, 0, &[1])).is_err());
    assert!(Numeric::from_binary(&bin(-1, 0, 0, 0, &[])).is_err());
    assert!(Numeric::from_binary(&bin(2, 0, 0, 0, &[1])).is_err());
    assert!(Numeric::from_binary(&[0, 0, 0]).is_err());
    assert!(Numeric::from_binary(&bin(0, 0, 0, 0x4000, &[])).is_err());
}

#[test]
fn binary_round_trips_generated_values() {
    for text in ["1", "-1", "9999", "10000.0001", "-0.1", "1234567.89012", "0.00000001", "5e20", "7e-12"] {
        let v = n(text);
        let mut out = Vec::new();
        v.to_binary(&mut out);
        let back = Numeric::from_binary(&out).unwrap();
        assert_eq!(back.to_text(), v.to_text(), "{text}");
    }
}

#[test]
fn from_integers_and_floats() {
    assert_eq!(Numeric::from_i128(0).to_text(), "0");
    assert_eq!(Numeric::from_i128(-42).to_text(), "-42");
    assert_eq!(Numeric::from_i128(i64::MIN as i128).to_text(), "-9223372036854775808");
    assert_eq!(n("2.5").to_f64(), 2.5);
    assert!(n("NaN").to_f64().is_nan());
    assert_eq!(n("-Infinity").to_f64(), f64::NEG_INFINITY);
}
