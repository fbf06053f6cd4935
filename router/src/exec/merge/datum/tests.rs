use super::*;

fn t(kind: TypeKind, s: &str) -> Datum {
    decode(kind, Format::Text, Some(s.as_bytes())).unwrap()
}

fn b(kind: TypeKind, v: &[u8]) -> Datum {
    decode(kind, Format::Binary, Some(v)).unwrap()
}

fn cmp_text(kind: TypeKind, x: &str, y: &str) -> Ordering {
    compare(&t(kind, x), &t(kind, y))
}

#[test]
fn oids() {
    for (oid, kind) in
        [(16, TypeKind::Bool), (20, TypeKind::Int8), (1700, TypeKind::Numeric), (2950, TypeKind::Uuid)]
    {
        assert_eq!(TypeKind::from_oid(oid), Some(kind));
    }
    let e = TypeKind::require(3802).unwrap_err();
    assert_eq!(e.sqlstate(), "0A000");
    assert_eq!(e.to_string(), "pg-router: cannot merge values of type oid 3802 across shards");
}

#[test]
fn ordering_per_type() {
    use Ordering::*;
    use TypeKind as K;
    let cases = [
        (K::Int4, "-5", "3", Less),
        (K::Int8, "9223372036854775807", "-9223372036854775808", Greater),
        (K::Numeric, "1.0", "1.00", Equal),
        (K::Numeric, "NaN", "Infinity", Greater),
        (K::Numeric, "-Infinity", "-99999", Less),
        (K::Float8, "NaN", "Infinity", Greater),
        (K::Float8, "NaN", "NaN", Equal),
        (K::Float8, "-0", "0", Equal),
        (K::Float8, "-Infinity", "-1e308", Less),
        (K::Float4, "1.5", "1.25", Greater),
        (K::Text, "B", "a", Less),
        (K::Text, "ab", "abc", Less),
        (K::Varchar, "é", "z", Greater),
        (K::Bpchar, "ab  ", "ab", Equal),
        (K::Bpchar, "a ", "a!", Less),
        (K::Bool, "f", "t", Less),
        (K::Bool, "true", "t", Equal),
        (K::Bytea, "\\x00ff", "\\x0100", Less),
        (K::Bytea, "\\x61", "a", Equal),
        (K::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC999C0B4EF8BB6D6BB9BD380A12", Less),
        (K::Date, "2024-03-01", "2023-12-31", Greater),
        (K::Date, "infinity", "9999-12-31", Greater),
        (K::Date, "0001-01-01 BC", "0001-01-01", Less),
        (K::Timestamptz, "2024-03-01 10:00:00+01", "2024-03-01 09:30:00+00", Less),
        (K::Timestamptz, "2024-03-01 10:00:00+05:30", "2024-03-01 04:30:00+00", Equal),
        (K::Timestamptz, "-infinity", "0100-01-01 00:00:00+00 BC", Less),
        (K::Timestamp, "2024-03-01 10:00:00.5", "2024-03-01 10:00:00.25", Greater),
        (K::Time, "23:59:59", "00:00:00", Greater),
        (K::Interval, "1 mon", "30 days", Equal),
        (K::Interval, "1 day", "23:59:59", Greater),
        (K::Oid, "4294967295", "1", Greater),
        (K::Char, "a", "\\377", Less),
    ];
    for (kind, x, y, want) in cases {
        assert_eq!(cmp_text(kind, x, y), want, "{kind:?} {x} vs {y}");
        assert_eq!(cmp_text(kind, y, x), want.reverse(), "{kind:?} {y} vs {x}");
    }
    assert_eq!(compare(&Datum::Null, &Datum::Null), Equal);
    assert_eq!(compare(&Datum::Null, &t(K::Int4, "1")), Greater);
}

#[test]
fn binary_decoding() {
    use TypeKind as K;
    assert!(matches!(b(K::Int2, &(-7i16).to_be_bytes()), Datum::Int(-7)));
    assert!(matches!(b(K::Int4, &70000i32.to_be_bytes()), Datum::Int(70000)));
    assert!(matches!(b(K::Int8, &i64::MIN.to_be_bytes()), Datum::Int(i64::MIN)));
    assert!(matches!(b(K::Oid, &u32::MAX.to_be_bytes()), Datum::Int(4294967295)));
    assert!(matches!(b(K::Bool, &[1]), Datum::Bool(true)));
    assert!(matches!(b(K::Date, &8826i32.to_be_bytes()), Datum::Date(8826)));
    assert_eq!(compare(&b(K::Float8, &2.5f64.to_be_bytes()), &t(K::Float8, "2.5")), Ordering::Equal);
    let ts = t(K::Timestamptz, "2000-01-01 00:00:01+00");
    assert_eq!(compare(&b(K::Timestamptz, &1_000_000i64.to_be_bytes()), &ts), Ordering::Equal);
    let numeric = b(K::Numeric, &[0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0x13, 0x88]);
    assert_eq!(compare(&numeric, &t(K::Numeric, "1.5")), Ordering::Equal);
    for (kind, bad) in [(K::Int4, &[0u8; 3][..]), (K::Int8, &[0; 4]), (K::Uuid, &[0; 15]), (K::Bool, &[])] {
        assert_eq!(decode(kind, Format::Binary, Some(bad)).unwrap_err().sqlstate(), "08P01");
    }
}

#[test]
fn invalid_text_is_22p02_or_22003() {
    use TypeKind as K;
    for (kind, s) in
        [(K::Int4, "x"), (K::Numeric, "1.2.3"), (K::Bool, "maybe"), (K::Uuid, "123"), (K::Bytea, "\\xzz")]
    {
        assert_eq!(decode(kind, Format::Text, Some(s.as_bytes())).unwrap_err().sqlstate(), "22P02", "{s}");
    }
    assert_eq!(decode(K::Int2, Format::Text, Some(b"40000")).unwrap_err().sqlstate(), "22003");
    assert_eq!(decode(K::Int4, Format::Text, Some(&[0xff])).unwrap_err().sqlstate(), "22P02");
}

fn roundtrip(kind: TypeKind, text: &str) {
    let d = t(kind, text);
    let mut bin = Vec::new();
    encode(&d, kind, Format::Binary, &mut bin).unwrap();
    let back = b(kind, &bin);
    assert_eq!(compare(&d, &back), Ordering::Equal, "{kind:?} {text}");
    if kind.can_convert(Format::Binary, Format::Text) {
        let mut txt = Vec::new();
        encode(&back, kind, Format::Text, &mut txt).unwrap();
        assert_eq!(String::from_utf8(txt).unwrap(), text, "{kind:?}");
    }
}

#[test]
fn text_binary_conversions() {
    use TypeKind as K;
    roundtrip(K::Int2, "-32768");
    roundtrip(K::Int4, "2147483647");
    roundtrip(K::Int8, "-9223372036854775808");
    roundtrip(K::Oid, "4294967295");
    roundtrip(K::Bool, "t");
    roundtrip(K::Bool, "f");
    roundtrip(K::Float8, "1.5e-05");
    roundtrip(K::Float8, "-0");
    roundtrip(K::Float8, "NaN");
    roundtrip(K::Float4, "1.2345679e+20");
    roundtrip(K::Numeric, "-12.3400");
    roundtrip(K::Numeric, "Infinity");
    roundtrip(K::Text, "héllo");
    roundtrip(K::Bpchar, "ab   ");
    roundtrip(K::Name, "pg_class");
    roundtrip(K::Bytea, "\\x00ff10");
    roundtrip(K::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    roundtrip(K::Char, "a");
    roundtrip(K::Char, "\\377");
    roundtrip(K::Date, "2024-03-01");
    roundtrip(K::Date, "0044-03-15 BC");
    roundtrip(K::Date, "-infinity");
    roundtrip(K::Time, "12:34:56.789");
    roundtrip(K::Timestamp, "2024-03-01 10:00:00.5");
    roundtrip(K::Timestamptz, "2024-03-01 10:00:00.5+01");
    roundtrip(K::Interval, "1 year 2 mons -3 days +04:05:06.5");
    let mut out = Vec::new();
    let err = encode(&t(K::Timestamptz, "2024-03-01 10:00:00+00"), K::Timestamptz, Format::Text, &mut out);
    assert_eq!(err.unwrap_err().sqlstate(), "0A000");
    assert!(encode(&Datum::Int(40000), K::Int2, Format::Binary, &mut out).is_err());
    assert!(encode(&Datum::Bool(true), K::Int4, Format::Text, &mut out).is_err());
}

#[test]
fn bytea_escape_format() {
    assert!(matches!(t(TypeKind::Bytea, "a\\\\b\\001"), Datum::Bytes(v) if v == b"a\\b\x01"));
    assert!(decode(TypeKind::Bytea, Format::Text, Some(b"\\q")).is_err());
}
