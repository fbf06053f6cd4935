//! Binary formats, format conversion and the client RowDescription.

use super::*;
use crate::exec::merge::row::parse_row_description;

fn bin_field(name: &str, oid: u32) -> FieldDesc {
    FieldDesc { format: Format::Binary, ..field(name, oid) }
}

fn raw_rows(out: &[u8]) -> Vec<DataRow> {
    let mut rows = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        let len = i32::from_be_bytes([out[pos + 1], out[pos + 2], out[pos + 3], out[pos + 4]]) as usize;
        rows.push(DataRow::parse(Bytes::copy_from_slice(&out[pos..pos + 1 + len])).unwrap());
        pos += 1 + len;
    }
    rows
}

fn brow(vals: &[Option<Vec<u8>>]) -> Bytes {
    let mut out = BytesMut::new();
    row::write_data_row(&mut out, vals.iter().map(|v| v.as_deref())).unwrap();
    out.freeze()
}

#[test]
fn row_description_types_and_formats() {
    let spec = Scatter {
        group: Some(vec![0, 4]),
        shard_order: vec![asc(0), asc(4)],
        ..scatter(
            vec![
                C::Column(0),
                C::Avg { sum: 1, count: 2 },
                C::Avg { sum: 3, count: 2 },
                C::CountDistinct(4),
                C::Count(2),
                C::Max(0),
            ],
            5,
        )
    };
    let f = fields(&[("g", TEXT), ("avg", INT8), ("count", INT8), ("favg", FLOAT8), ("x", INT4)]);
    let m = Merger::new(&spec, f, vec![1, 0, 1, 0, 1], 2, 10).unwrap();
    let rd = parse_row_description(&m.row_description()).unwrap();
    let got: Vec<(String, u32, i16, i32, Format, u32)> = rd
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(&f.name).into(),
                f.type_oid,
                f.type_size,
                f.type_modifier,
                f.format,
                f.table_oid,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("g".into(), TEXT, -1, -1, Format::Binary, 16384),
            ("avg".into(), NUMERIC, -1, -1, Format::Text, 0),
            ("favg".into(), FLOAT8, 8, -1, Format::Binary, 0),
            ("count".into(), INT8, 8, -1, Format::Text, 0),
            ("count".into(), INT8, 8, -1, Format::Binary, 16384),
        ]
    );
}

#[test]
fn binary_shard_keys_and_binary_client_output() {
    // SELECT g, avg(v), count(*) ... ORDER BY g; shards send binary, the client wants binary.
    let spec = Scatter {
        group: Some(vec![0]),
        shard_order: vec![asc(0)],
        ..scatter(vec![C::Column(0), C::Avg { sum: 1, count: 2 }, C::Count(2)], 3)
    };
    let f = vec![bin_field("g", INT8), bin_field("sum", INT8), bin_field("count", INT8)];
    let b8 = |v: i64| Some(v.to_be_bytes().to_vec());
    let shards = vec![
        vec![brow(&[b8(-1), b8(3), b8(2)]), brow(&[b8(7), b8(1), b8(1)])],
        vec![brow(&[b8(-1), b8(0), b8(1)]), brow(&[b8(256), b8(5), b8(1)])],
    ];
    let mut m = Merger::new(&spec, f, vec![1, 1, 1], 2, 100).unwrap();
    let out = drive(&mut m, shards).unwrap();
    let rows = raw_rows(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].get(0), Some(&(-1i64).to_be_bytes()[..]));
    // avg = 3 / 3: first digits 3 ≤ 3, so select_div_scale gives 20 → 1.00000000000000000000
    // → numeric_send: ndigits 1, weight 0, sign +, dscale 20, digits [1]
    assert_eq!(rows[0].get(1), Some(&[0, 1, 0, 0, 0, 0, 0, 20, 0, 1][..]));
    assert_eq!(rows[0].get(2), Some(&3i64.to_be_bytes()[..]));
    assert_eq!(rows[2].get(0), Some(&256i64.to_be_bytes()[..]));
}

#[test]
fn text_shard_values_convert_to_binary_client_formats() {
    // min(int4) and a pass-through numeric column: shards text, client binary.
    let spec = Scatter {
        group: Some(vec![1]),
        shard_order: vec![asc(1)],
        ..scatter(vec![C::Min(0), C::Column(1), C::Sum(2)], 3)
    };
    let f = fields(&[("min", INT4), ("n", NUMERIC), ("s", FLOAT8)]);
    let mut m = Merger::new(&spec, f, vec![1, 1, 0], 2, 100).unwrap();
    let out = drive(&mut m, vec![vec![r(&["5", "1.5", "1e+20"])], vec![r(&["-3", "1.50", "1"])]]).unwrap();
    let rows = raw_rows(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get(0), Some(&(-3i32).to_be_bytes()[..]));
    assert_eq!(rows[0].get(1), Some(&[0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0x13, 0x88][..]));
    assert_eq!(rows[0].get(2), Some(&b"1e+20"[..]));
}

#[test]
fn impossible_conversions_are_refused_up_front() {
    // jsonb (3802) passes through untouched in its own format, but cannot be converted.
    let spec = scatter(vec![C::Column(0)], 1);
    let f = vec![field("j", 3802)];
    assert!(Merger::new(&spec, f.clone(), vec![0], 1, 10).is_ok());
    let e = Merger::new(&spec, f, vec![1], 1, 10).unwrap_err();
    assert_eq!(e.sqlstate(), "0A000");
    // timestamptz binary → text needs the session TimeZone
    let e = Merger::new(&spec, vec![bin_field("t", TSTZ)], vec![0], 1, 10).unwrap_err();
    assert_eq!(e.sqlstate(), "0A000");
    assert!(Merger::new(&spec, vec![field("t", TSTZ)], vec![1], 1, 10).is_ok());
}

#[test]
fn passthrough_forwards_frames_and_applies_order_and_limit() {
    // SELECT * FROM t ORDER BY 1 LIMIT 3
    let spec = Scatter {
        passthrough: Some(PassThrough { helpers: 0 }),
        shard_order: vec![asc(0)],
        limit: Some(3),
        ..scatter(vec![], 0)
    };
    let f = fields(&[("id", INT4), ("payload", 3802)]);
    let shards = vec![
        vec![r(&["1", "{\"a\": 1}"]), r(&["4", "{}"])],
        vec![r(&["2", "NULL"]), r(&["3", "[1, 2]"]), r(&["5", "{}"])],
    ];
    let frames: Vec<Bytes> = vec![shards[0][0].clone(), shards[1][0].clone(), shards[1][1].clone()];
    let mut m = Merger::new(&spec, f.clone(), vec![0, 0], 2, 100).unwrap();
    let rd = parse_row_description(&m.row_description()).unwrap();
    assert_eq!(rd, f);
    let out = drive(&mut m, shards.clone()).unwrap();
    assert_eq!(&out[..], &frames.concat()[..], "frames forwarded byte for byte");
    // With a format conversion the rows are re-encoded.
    let mut m = Merger::new(&spec, f, vec![1, 0], 2, 100).unwrap();
    let rows = raw_rows(&drive(&mut m, shards).unwrap());
    assert_eq!(rows[2].get(0), Some(&3i32.to_be_bytes()[..]));
    assert_eq!(rows[2].get(1), Some(&b"[1, 2]"[..]));
    assert_eq!(rows[1].get(1), None);
    // passthrough cannot group
    let bad =
        Scatter { passthrough: Some(PassThrough { helpers: 0 }), group: Some(vec![]), ..scatter(vec![], 0) };
    assert!(Merger::new(&bad, fields(&[("a", INT4)]), vec![0], 1, 10).is_err());
}

#[test]
fn identity_projection_forwards_frames() {
    let spec = Scatter { shard_order: vec![desc(0)], ..scatter(vec![C::Column(0), C::Column(1)], 2) };
    let f = fields(&[("id", INT4), ("x", 3802)]);
    let shards = vec![vec![r(&["2", "{}"])], vec![r(&["3", "[]"])]];
    let mut m = Merger::new(&spec, f, vec![0, 0], 2, 100).unwrap();
    let out = drive(&mut m, shards.clone()).unwrap();
    assert_eq!(&out[..], &[shards[1][0].clone(), shards[0][0].clone()].concat()[..]);
}

#[test]
fn hidden_helper_columns_are_dropped() {
    // SELECT name FROM t ORDER BY id: id is a helper column after the visible one.
    let spec = Scatter { shard_order: vec![asc(1)], ..scatter(vec![C::Column(0), C::Column(1)], 1) };
    let f = fields(&[("name", TEXT), ("id", INT4)]);
    let got = run(&spec, f, vec![vec![r(&["b", "2"])], vec![r(&["a", "1"]), r(&["c", "3"])]]).unwrap();
    assert_eq!(got, table(&[&["a"], &["b"], &["c"]]));
}
