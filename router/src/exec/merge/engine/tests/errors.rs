//! Refusals and malformed input: typed errors with the right SQLSTATE, never a panic.

use super::*;

fn simple() -> (Scatter, Vec<FieldDesc>) {
    (
        Scatter { shard_order: vec![asc(0)], ..scatter(vec![C::Column(0), C::Column(1)], 2) },
        fields(&[("a", INT4), ("b", TEXT)]),
    )
}

#[test]
fn malformed_frames_are_protocol_errors() {
    let (spec, f) = simple();
    let mut m = Merger::new(&spec, f, vec![0, 0], 2, 100).unwrap();
    let bad = [
        Bytes::from_static(b""),
        Bytes::from_static(b"D\x00\x00\x00\x06\x00"),
        Bytes::from_static(b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x09"),
        Bytes::from_static(b"C\x00\x00\x00\x0dSELECT 1\x00"),
        r(&["1"]),           // one column, RowDescription had two
        r(&["1", "x", "y"]), // three
    ];
    for frame in bad {
        assert_eq!(m.push_row(0, frame.clone()).unwrap_err().sqlstate(), "08P01", "{frame:?}");
    }
    assert_eq!(m.push_row(7, r(&["1", "x"])).unwrap_err().sqlstate(), "08P01");
    m.finish_shard(1);
    assert_eq!(m.push_row(1, r(&["1", "x"])).unwrap_err().sqlstate(), "08P01");
    m.finish_shard(99); // ignored, no panic
}

#[test]
fn garbage_never_panics() {
    let (spec, f) = simple();
    let mut m = Merger::new(&spec, f, vec![0, 0], 1, 1_000_000).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut out = BytesMut::new();
    for n in 0..2000usize {
        let mut buf = r(&["1", "x"]).to_vec();
        for _ in 0..(n % 4 + 1) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % buf.len();
            buf[i] = (seed >> 32) as u8;
        }
        if m.push_row(0, Bytes::from(buf)).is_ok() {
            let _ = m.emit(&mut out);
        }
    }
}

#[test]
fn bad_values_in_keys() {
    let (spec, f) = simple();
    let mut m = Merger::new(&spec, f, vec![0, 0], 1, 100).unwrap();
    let e = m.push_row(0, r(&["one", "x"])).unwrap_err();
    assert_eq!(e, MergeError::InvalidText { type_name: "integer" });
    assert_eq!(e.sqlstate(), "22P02");
}

#[test]
fn unsupported_shapes_are_0a000() {
    let f = fields(&[("j", 3802), ("n", INT8)]);
    // ORDER BY a jsonb column across shards
    let spec = Scatter { shard_order: vec![asc(0)], ..scatter(vec![C::Column(0)], 1) };
    let e = Merger::new(&spec, f.clone(), vec![0], 2, 10).unwrap_err();
    assert_eq!(e.to_string(), "pg-router: cannot merge values of type oid 3802 across shards");
    assert_eq!(e.sqlstate(), "0A000");
    // min(jsonb)
    let spec = Scatter { group: Some(vec![]), ..scatter(vec![C::Min(0)], 1) };
    assert_eq!(Merger::new(&spec, f.clone(), vec![0], 2, 10).unwrap_err().sqlstate(), "0A000");
    // sum(text)
    let spec = Scatter { group: Some(vec![]), ..scatter(vec![C::Sum(0)], 1) };
    let ft = fields(&[("t", TEXT)]);
    assert_eq!(Merger::new(&spec, ft.clone(), vec![0], 2, 10).unwrap_err().sqlstate(), "0A000");
    // bool_and(text)
    let spec = Scatter { group: Some(vec![]), ..scatter(vec![C::BoolAnd(0)], 1) };
    assert_eq!(Merger::new(&spec, ft, vec![0], 2, 10).unwrap_err().sqlstate(), "0A000");
    // HAVING count > $1
    let spec = Scatter {
        group: Some(vec![]),
        having: Some(Predicate::Compare {
            left: Operand::Column(0),
            op: CompareOp::Gt,
            right: Operand::Param(1),
        }),
        ..scatter(vec![C::Count(1)], 1)
    };
    assert_eq!(Merger::new(&spec, f.clone(), vec![0], 2, 10).unwrap_err().sqlstate(), "0A000");
    // aggregates without a grouping
    let spec = scatter(vec![C::Count(1)], 1);
    assert_eq!(Merger::new(&spec, f.clone(), vec![0], 2, 10).unwrap_err().sqlstate(), "0A000");
    // count(DISTINCT) on two different columns
    let spec =
        Scatter { group: Some(vec![0, 1]), ..scatter(vec![C::CountDistinct(0), C::CountDistinct(1)], 2) };
    assert_eq!(
        Merger::new(&spec, fields(&[("a", INT4), ("b", INT4)]), vec![0, 0], 2, 10).unwrap_err().sqlstate(),
        "0A000"
    );
    // GROUP BY keys the shards do not sort by
    let spec = Scatter { group: Some(vec![1]), shard_order: vec![asc(0)], ..scatter(vec![C::Column(1)], 1) };
    let e = Merger::new(&spec, fields(&[("a", INT4), ("b", INT4)]), vec![0], 2, 10).unwrap_err();
    assert_eq!(e.sqlstate(), "0A000");
    // final_order on a jsonb merged column
    let spec = Scatter { final_order: Some(vec![asc(0)]), ..scatter(vec![C::Column(0)], 1) };
    assert_eq!(Merger::new(&spec, f, vec![0], 2, 10).unwrap_err().sqlstate(), "0A000");
}

#[test]
fn inconsistent_plans_are_refused() {
    let f = fields(&[("a", INT4)]);
    for spec in [
        scatter(vec![C::Column(3)], 1),
        scatter(vec![C::Column(0)], 2),
        Scatter { shard_order: vec![asc(5)], ..scatter(vec![C::Column(0)], 1) },
        Scatter { final_order: Some(vec![asc(5)]), ..scatter(vec![C::Column(0)], 1) },
    ] {
        assert!(Merger::new(&spec, f.clone(), vec![0], 1, 10).is_err(), "{spec:?}");
    }
    // client format count must match the visible columns; codes must be 0 or 1
    assert!(Merger::new(&scatter(vec![C::Column(0)], 1), f.clone(), vec![0, 0], 1, 10).is_err());
    assert!(Merger::new(&scatter(vec![C::Column(0)], 1), f, vec![2], 1, 10).is_err());
}
