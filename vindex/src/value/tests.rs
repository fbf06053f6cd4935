#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

const UUID_TEXT: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
const UUID_BYTES: [u8; 16] =
    [0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11];

fn lit(sql: &str, ty: ColumnType) -> Value {
    Value::from_sql_literal(sql, ty).unwrap()
}

#[test]
fn forty_two_is_forty_two_in_every_shape() {
    let want = Value::Int(42);
    let int = ColumnType::Int;
    let shapes = [
        lit("42", int),
        lit("'42'", int),
        lit(" '  42 ' ", int),
        lit("42::int8", int),
        lit("'42'::integer", int),
        lit("int2 '42'", int),
        lit("$$42$$", int),
        Value::from_text_param(Some(b"42"), TypeOid::INT2, int).unwrap(),
        Value::from_text_param(Some(b"42"), TypeOid::INT4, int).unwrap(),
        Value::from_text_param(Some(b"42"), TypeOid::INT8, int).unwrap(),
        Value::from_text_param(Some(b"+42"), TypeOid::UNKNOWN, int).unwrap(),
        Value::from_binary_param(Some(&42i16.to_be_bytes()), TypeOid::INT2, int).unwrap(),
        Value::from_binary_param(Some(&42i32.to_be_bytes()), TypeOid::INT4, int).unwrap(),
        Value::from_binary_param(Some(&42i64.to_be_bytes()), TypeOid::INT8, int).unwrap(),
        Value::from_binary_param(Some(&42i32.to_be_bytes()), TypeOid::UNKNOWN, int).unwrap(),
        Value::from_binary_param(Some(&42i64.to_be_bytes()), TypeOid::UNKNOWN, int).unwrap(),
    ];
    for (i, v) in shapes.iter().enumerate() {
        assert_eq!(v, &want, "shape {i}");
    }
}

#[test]
fn integer_ranges_follow_the_declared_width() {
    let int = ColumnType::Int;
    assert!(Value::from_text_param(Some(b"40000"), TypeOid::INT2, int).is_err());
    assert!(Value::from_text_param(Some(b"3000000000"), TypeOid::INT4, int).is_err());
    assert_eq!(
        Value::from_text_param(Some(b"-9223372036854775808"), TypeOid::INT8, int).unwrap(),
        Value::Int(i64::MIN)
    );
    assert!(Value::from_text_param(Some(b"9223372036854775808"), TypeOid::INT8, int).is_err());
    // Either side of the all-digits shortcut (up to 18 digits) and the general path.
    for (text, value) in [
        (&b"999999999999999999"[..], 999_999_999_999_999_999),
        (b"9223372036854775807", i64::MAX),
        (b"007", 7),
        (b" 7 ", 7),
        (b"32767", 32767),
    ] {
        assert_eq!(Value::from_text_param(Some(text), TypeOid::UNKNOWN, int).unwrap(), Value::Int(value));
    }
    assert!(Value::from_text_param(Some(b"32768"), TypeOid::INT2, int).is_err());
    assert!(Value::from_text_param(Some(b""), TypeOid::INT8, int).is_err());
    assert!(Value::from_binary_param(Some(&[0, 0, 42]), TypeOid::INT4, int).is_err());
    let err = Value::from_sql_literal("42.5", int).unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    assert!(Value::from_sql_literal("1e3", int).is_err());
    assert!(Value::from_sql_literal("'4 2'", int).is_err());
}

#[test]
fn null_in_every_shape() {
    for ty in [ColumnType::Int, ColumnType::Text, ColumnType::Uuid] {
        assert_eq!(lit("NULL", ty), Value::Null);
        assert_eq!(lit("null::text", ty), Value::Null);
        assert_eq!(Value::from_text_param(None, TypeOid::INT8, ty).unwrap(), Value::Null);
        assert_eq!(Value::from_binary_param(None, TypeOid::UUID, ty).unwrap(), Value::Null);
    }
    // The text 'NULL' is a string, not NULL.
    assert_eq!(lit("'NULL'", ColumnType::Text), Value::Text("NULL".into()));
}

#[test]
fn type_mismatches_are_errors_like_postgres() {
    assert!(matches!(Value::from_sql_literal("42", ColumnType::Text), Err(Error::TypeMismatch { .. })));
    assert!(matches!(
        Value::from_text_param(Some(b"42"), TypeOid::TEXT, ColumnType::Int),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        Value::from_binary_param(Some(&[1; 8]), TypeOid::INT8, ColumnType::Uuid),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        Value::from_text_param(Some(b"1.5"), TypeOid(700), ColumnType::Int),
        Err(Error::UnsupportedType { oid: TypeOid(700) })
    ));
    let msg = Value::from_text_param(Some(b"x"), TypeOid::VARCHAR, ColumnType::Int).unwrap_err().to_string();
    assert_eq!(msg, "a value of type varchar cannot be used for a int column");
}

#[test]
fn text_and_bpchar() {
    let t = ColumnType::Text;
    assert_eq!(lit("'it''s'", t), Value::Text("it's".into()));
    assert_eq!(lit("'a\\b'", t), Value::Text("a\\b".into()));
    assert_eq!(lit("E'a\\tb\\x41\\101\\u00e9\\''", t), Value::Text("a\tbAAé'".into()));
    assert_eq!(lit("$tag$it's $$ fine$tag$", t), Value::Text("it's $$ fine".into()));
    assert_eq!(lit("'x  '::bpchar", t), Value::Text("x".into()));
    assert_eq!(lit("'x  '::varchar(10)", t), Value::Text("x  ".into()));
    assert_eq!(lit("42::text", t), Value::Text("42".into()));
    assert_eq!(Value::from_text_param(Some(b"ab  "), TypeOid::BPCHAR, t).unwrap(), Value::Text("ab".into()));
    assert_eq!(
        Value::from_binary_param(Some(b"ab  "), TypeOid::BPCHAR, t).unwrap(),
        Value::Text("ab".into())
    );
    assert_eq!(
        Value::from_binary_param(Some(b"ab  "), TypeOid::TEXT, t).unwrap(),
        Value::Text("ab  ".into())
    );
    assert!(Value::from_text_param(Some(&[0xff, 0xfe]), TypeOid::TEXT, t).is_err());
}

#[test]
fn malformed_literals() {
    for bad in [
        "'abc",
        "abc",
        "'a' 'b'",
        "$1",
        "$$x",
        "U&'d\\0061t'",
        "B'101'",
        "X'1F'",
        "''::money",
        "E'\\xZZ'",
        "-",
        "'a'::uuid::text",
        "",
    ] {
        assert!(Value::from_sql_literal(bad, ColumnType::Text).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn uuid_forms() {
    let u = ColumnType::Uuid;
    let want = Value::Uuid(UUID_BYTES);
    for form in [
        UUID_TEXT,
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
    ] {
        assert_eq!(Value::from_text_param(Some(form.as_bytes()), TypeOid::UUID, u).unwrap(), want, "{form}");
    }
    for bad in [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
        "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
        "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11-",
        "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "g0eebc999c0b4ef8bb6d6bb9bd380a11",
    ] {
        assert!(Value::from_text_param(Some(bad.as_bytes()), TypeOid::UUID, u).is_err(), "{bad}");
    }
    assert_eq!(Value::from_binary_param(Some(&UUID_BYTES), TypeOid::UUID, u).unwrap(), want);
    assert_eq!(lit(&format!("'{UUID_TEXT}'::uuid"), u), want);
    assert_eq!(want.to_string(), format!("'{UUID_TEXT}'"));
}

#[test]
fn bytea_forms() {
    let b = ColumnType::Bytea;
    let want = Value::Bytes(vec![0xde, 0xad, 0x5c, 0x00]);
    assert_eq!(lit("'\\xdead5c00'", b), want);
    assert_eq!(lit("'\\xDE AD 5c 00'", b), want);
    assert_eq!(lit("'\\336\\255\\\\\\000'", b), want);
    assert_eq!(Value::from_binary_param(Some(&[0xde, 0xad, 0x5c, 0]), TypeOid::UNKNOWN, b).unwrap(), want);
    assert_eq!(lit("'abc'", b), Value::Bytes(b"abc".to_vec()));
    assert!(Value::from_sql_literal("'\\xabc'", b).is_err());
    assert!(Value::from_sql_literal("'\\9'", b).is_err());
    assert_eq!(want.to_string(), "'\\xdead5c00'");
}

#[test]
fn timestamps() {
    let ts = ColumnType::Timestamp;
    let tz = ColumnType::TimestampTz;
    assert_eq!(lit("'2000-01-01 00:00:00'", ts), Value::Timestamp(0));
    assert_eq!(lit("timestamp '2000-01-01 00:00:01'", ts), Value::Timestamp(1_000_000));
    assert_eq!(lit("'2000-01-01 01:00:00+01'", tz), Value::Timestamp(0));
    assert_eq!(lit("'2000-01-01T00:00:00Z'::timestamptz", tz), Value::Timestamp(0));
    // Without a zone a timestamptz literal depends on the session TimeZone: refuse to guess.
    let err = Value::from_sql_literal("'2000-01-01 00:00:00'", tz).unwrap_err();
    assert!(err.to_string().contains("TimeZone"), "{err}");
    // timestamp vs timestamptz comparisons are TimeZone-dependent too.
    assert!(Value::from_sql_literal("'2000-01-01 00:00:00Z'::timestamptz", ts).is_err());
    assert!(Value::from_binary_param(Some(&[0; 8]), TypeOid::TIMESTAMP, tz).is_err());
    assert_eq!(
        Value::from_binary_param(Some(&7i64.to_be_bytes()), TypeOid::TIMESTAMPTZ, tz).unwrap(),
        Value::Timestamp(7)
    );
    assert_eq!(lit("'infinity'", ts), Value::Timestamp(i64::MAX));
    assert_eq!(Value::Timestamp(1).to_string(), "'2000-01-01 00:00:00.000001'");
}

#[test]
fn canonical_bytes_are_as_documented() {
    assert_eq!(
        Value::Int(-2).canonical_bytes().unwrap().as_ref(),
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
    );
    assert_eq!(Value::Text("é".into()).canonical_bytes().unwrap().as_ref(), "é".as_bytes());
    assert_eq!(Value::Uuid(UUID_BYTES).canonical_bytes().unwrap().as_ref(), &UUID_BYTES);
    assert_eq!(Value::Timestamp(1).canonical_bytes().unwrap().as_ref(), &[0, 0, 0, 0, 0, 0, 0, 1]);
    assert!(Value::Null.canonical_bytes().is_none());
}

#[test]
fn compare_and_fits() {
    assert_eq!(Value::Int(1).compare(&Value::Int(2)), Some(Ordering::Less));
    assert_eq!(Value::from("b").compare(&Value::from("a")), Some(Ordering::Greater));
    assert_eq!(Value::Int(1).compare(&Value::from("a")), None);
    assert_eq!(Value::Null.compare(&Value::Null), None);
    assert!(Value::Timestamp(0).fits(ColumnType::TimestampTz));
    assert!(Value::Null.fits(ColumnType::Uuid));
    assert!(!Value::Int(0).fits(ColumnType::Text));
}

#[test]
fn column_type_names() {
    for ty in [
        ColumnType::Int,
        ColumnType::Text,
        ColumnType::Bytea,
        ColumnType::Uuid,
        ColumnType::Timestamp,
        ColumnType::TimestampTz,
    ] {
        assert_eq!(ty.as_str().parse::<ColumnType>(), Ok(ty));
    }
    assert_eq!("BIGINT".parse::<ColumnType>(), Ok(ColumnType::Int));
    assert!("float8".parse::<ColumnType>().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn int_shapes_agree(i in any::<i64>()) {
        let int = ColumnType::Int;
        let text = i.to_string();
        let from_text = Value::from_text_param(Some(text.as_bytes()), TypeOid::INT8, int).unwrap();
        let from_bin = Value::from_binary_param(Some(&i.to_be_bytes()), TypeOid::INT8, int).unwrap();
        let from_lit = Value::from_sql_literal(&text, int).unwrap();
        let from_quoted = Value::from_sql_literal(&format!("'{text}'"), int).unwrap();
        prop_assert_eq!(&from_text, &Value::Int(i));
        prop_assert_eq!(&from_bin, &from_text);
        prop_assert_eq!(&from_lit, &from_text);
        prop_assert_eq!(&from_quoted, &from_text);
        if let Ok(small) = i32::try_from(i) {
            let b = Value::from_binary_param(Some(&small.to_be_bytes()), TypeOid::INT4, int).unwrap();
            prop_assert_eq!(b, Value::Int(i));
        }
    }

    #[test]
    fn text_display_roundtrips_through_the_literal_parser(s in "[a-zA-Z0-9 '\\\\é$]{0,20}") {
        let v = Value::Text(s);
        let back = Value::from_sql_literal(&v.to_string(), ColumnType::Text).unwrap();
        prop_assert_eq!(back, v);
    }

    #[test]
    fn uuid_and_bytes_display_roundtrip(u in any::<[u8; 16]>(), b in proptest::collection::vec(any::<u8>(), 0..20)) {
        let uv = Value::Uuid(u);
        prop_assert_eq!(Value::from_sql_literal(&uv.to_string(), ColumnType::Uuid).unwrap(), uv);
        let bv = Value::Bytes(b);
        prop_assert_eq!(Value::from_sql_literal(&bv.to_string(), ColumnType::Bytea).unwrap(), bv);
    }
}
