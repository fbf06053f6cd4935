//! Engine tests over fake shard streams. Expected outputs are what one PostgreSQL 15 server
//! holding all rows prints for the equivalent query (default settings, text format unless the
//! test says otherwise).

use bytes::{Bytes, BytesMut};

use super::*;
use planner::{CompareOp, Operand, OutputColumn as C, PassThrough, Predicate, Scatter, SortKey};

mod props;

pub(super) const INT4: u32 = 23;
pub(super) const INT8: u32 = 20;
pub(super) const TEXT: u32 = 25;
pub(super) const NUMERIC: u32 = 1700;
pub(super) const FLOAT8: u32 = 701;
pub(super) const TSTZ: u32 = 1184;
pub(super) const BOOL: u32 = 16;
pub(super) const DATE: u32 = 1082;

pub(super) fn field(name: &str, oid: u32) -> FieldDesc {
    let size = match oid {
        INT4 => 4,
        INT8 | FLOAT8 | TSTZ => 8,
        BOOL => 1,
        _ => -1,
    };
    FieldDesc {
        name: Bytes::copy_from_slice(name.as_bytes()),
        table_oid: 16384,
        column_attr: 1,
        type_oid: oid,
        type_size: size,
        type_modifier: -1,
        format: Format::Text,
    }
}

pub(super) fn fields(spec: &[(&str, u32)]) -> Vec<FieldDesc> {
    spec.iter().map(|(n, o)| field(n, *o)).collect()
}

pub(super) fn row(vals: &[Option<&str>]) -> Bytes {
    let mut out = BytesMut::new();
    row::write_data_row(&mut out, vals.iter().map(|v| v.map(str::as_bytes))).unwrap();
    out.freeze()
}

/// Shorthand: a row of non-NULL text values ("NULL" means SQL NULL).
pub(super) fn r(vals: &[&str]) -> Bytes {
    row(&vals.iter().map(|v| if *v == "NULL" { None } else { Some(*v) }).collect::<Vec<_>>())
}

pub(super) fn asc(column: usize) -> SortKey {
    SortKey { column, descending: false, nulls_first: false }
}

pub(super) fn desc(column: usize) -> SortKey {
    SortKey { column, descending: true, nulls_first: true }
}

pub(super) fn scatter(columns: Vec<C>, visible: usize) -> Scatter {
    Scatter {
        sql: "SELECT ...".into(),
        columns,
        visible,
        shard_order: Vec::new(),
        group: None,
        having: None,
        final_order: None,
        offset: 0,
        limit: None,
        write: false,
        passthrough: None,
    }
}

/// Split an output buffer into DataRows rendered as text ("NULL" for NULL).
pub(super) fn rows_of(out: &[u8]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        let len = i32::from_be_bytes([out[pos + 1], out[pos + 2], out[pos + 3], out[pos + 4]]) as usize;
        let frame = Bytes::copy_from_slice(&out[pos..pos + 1 + len]);
        let dr = DataRow::parse(frame).unwrap();
        rows.push(
            (0..dr.len())
                .map(|i| dr.get(i).map_or("NULL".to_string(), |b| String::from_utf8_lossy(b).into_owned()))
                .collect(),
        );
        pos += 1 + len;
    }
    rows
}

/// Drive the merger like the router: feed the shard it needs (or any shard with rows left),
/// emitting after every step, until it is done.
pub(super) fn drive(m: &mut Merger, shards: Vec<Vec<Bytes>>) -> Result<BytesMut, MergeError> {
    let mut iters: Vec<_> = shards.into_iter().map(|s| s.into_iter()).collect();
    let mut finished = vec![false; iters.len()];
    let mut out = BytesMut::new();
    let mut rr = 0;
    loop {
        m.emit(&mut out)?;
        if m.is_done() {
            return Ok(out);
        }
        let s = match m.needs() {
            Some(s) => s,
            None => match (0..iters.len()).map(|k| (rr + k) % iters.len()).find(|&k| !finished[k]) {
                Some(s) => s,
                None => panic!("merger not done, but every shard finished"),
            },
        };
        rr += 1;
        match iters[s].next() {
            Some(frame) => m.push_row(s, frame)?,
            None => {
                finished[s] = true;
                m.finish_shard(s);
            }
        }
    }
}

/// Run a spec over shard streams; all columns text, client text.
pub(super) fn run(
    spec: &Scatter,
    f: Vec<FieldDesc>,
    shards: Vec<Vec<Bytes>>,
) -> Result<Vec<Vec<String>>, MergeError> {
    let n = if spec.passthrough.is_some() { f.len() } else { spec.visible };
    let mut m = Merger::new(spec, f, vec![0; n], shards.len(), 10_000)?;
    let bulk = run_bulk(spec, m_fields(&m), shards.clone(), n);
    let out = drive(&mut m, shards)?;
    let rows = rows_of(&out);
    assert_eq!(m.rows_emitted(), rows.len() as u64);
    // Feeding everything up front must give the same answer.
    assert_eq!(bulk.as_ref().ok(), Some(&rows), "bulk feeding differs");
    Ok(rows)
}

fn m_fields(m: &Merger) -> Vec<FieldDesc> {
    m.cols.fields.clone()
}

fn run_bulk(
    spec: &Scatter,
    f: Vec<FieldDesc>,
    shards: Vec<Vec<Bytes>>,
    n: usize,
) -> Result<Vec<Vec<String>>, MergeError> {
    let mut m = Merger::new(spec, f, vec![0; n], shards.len(), 10_000)?;
    for (s, rows) in shards.into_iter().enumerate() {
        for frame in rows {
            m.push_row(s, frame)?;
        }
        m.finish_shard(s);
    }
    let mut out = BytesMut::new();
    m.emit(&mut out)?;
    assert!(m.is_done());
    assert_eq!(m.needs(), None);
    Ok(rows_of(&out))
}

pub(super) fn table(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter().map(|r| r.iter().map(|s| s.to_string()).collect()).collect()
}

fn ordered(keys: Vec<SortKey>) -> Scatter {
    Scatter { shard_order: keys, ..scatter(vec![C::Column(0), C::Column(1)], 2) }
}

#[test]
fn order_by_int_is_stable_across_shards() {
    let f = fields(&[("id", INT4), ("src", TEXT)]);
    let shards = vec![
        vec![r(&["1", "s0"]), r(&["3", "s0"]), r(&["3", "s0b"])],
        vec![r(&["2", "s1"]), r(&["3", "s1"])],
        vec![],
        vec![r(&["-5", "s3"]), r(&["10", "s3"])],
    ];
    let got = run(&ordered(vec![asc(0)]), f, shards).unwrap();
    let want: &[&[&str]] = &[
        &["-5", "s3"],
        &["1", "s0"],
        &["2", "s1"],
        &["3", "s0"],
        &["3", "s0b"],
        &["3", "s1"],
        &["10", "s3"],
    ];
    assert_eq!(got, table(want));
}

#[test]
fn order_by_desc_nulls_first_and_asc_nulls_last() {
    let f = fields(&[("v", INT8), ("s", TEXT)]);
    let shards = || {
        vec![vec![r(&["NULL", "a"]), r(&["5", "a"]), r(&["1", "a"])], vec![r(&["NULL", "b"]), r(&["7", "b"])]]
    };
    // ORDER BY v DESC (NULLS FIRST by default)
    let got = run(&ordered(vec![desc(0)]), f.clone(), shards()).unwrap();
    assert_eq!(got, table(&[&["NULL", "a"], &["NULL", "b"], &["7", "b"], &["5", "a"], &["1", "a"]]));
    // ORDER BY v DESC NULLS LAST
    let key = SortKey { column: 0, descending: true, nulls_first: false };
    let shards_last = vec![
        vec![r(&["5", "a"]), r(&["1", "a"]), r(&["NULL", "a"])],
        vec![r(&["7", "b"]), r(&["NULL", "b"])],
    ];
    let got = run(&ordered(vec![key]), f.clone(), shards_last).unwrap();
    assert_eq!(got, table(&[&["7", "b"], &["5", "a"], &["1", "a"], &["NULL", "a"], &["NULL", "b"]]));
    // ORDER BY v ASC NULLS FIRST
    let key = SortKey { column: 0, descending: false, nulls_first: true };
    let s = vec![vec![r(&["NULL", "a"]), r(&["1", "a"]), r(&["5", "a"])], vec![r(&["2", "b"])]];
    let got = run(&ordered(vec![key]), f, s).unwrap();
    assert_eq!(got, table(&[&["NULL", "a"], &["1", "a"], &["2", "b"], &["5", "a"]]));
}

#[test]
fn order_by_text_numeric_and_timestamptz() {
    // text compares as bytes (C collation): 'B' < 'a' < 'ab'
    let f = fields(&[("t", TEXT), ("n", INT4)]);
    let got =
        run(&ordered(vec![asc(0)]), f, vec![vec![r(&["a", "1"]), r(&["ab", "2"])], vec![r(&["B", "3"])]])
            .unwrap();
    assert_eq!(got, table(&[&["B", "3"], &["a", "1"], &["ab", "2"]]));
    // numeric by value, display scale preserved
    let f = fields(&[("n", NUMERIC), ("s", TEXT)]);
    let s = vec![
        vec![r(&["1.50", "a"]), r(&["10", "a"])],
        vec![r(&["-1", "b"]), r(&["2", "b"]), r(&["NaN", "b"])],
    ];
    let got = run(&ordered(vec![asc(0)]), f, s).unwrap();
    assert_eq!(got, table(&[&["-1", "b"], &["1.50", "a"], &["2", "b"], &["10", "a"], &["NaN", "b"]]));
    // timestamptz by instant, whatever offset each shard printed
    let f = fields(&[("at", TSTZ), ("s", TEXT)]);
    let s = vec![
        vec![r(&["2024-03-01 12:00:00+01", "a"]), r(&["2024-03-01 10:00:00+01", "a"])],
        vec![r(&["2024-03-01 10:30:00.5+00", "b"]), r(&["2024-03-01 09:30:00+00", "b"])],
    ];
    let got = run(&ordered(vec![desc(0)]), f, s).unwrap();
    let want: &[&[&str]] = &[
        &["2024-03-01 12:00:00+01", "a"],
        &["2024-03-01 10:30:00.5+00", "b"],
        &["2024-03-01 09:30:00+00", "b"],
        &["2024-03-01 10:00:00+01", "a"],
    ];
    assert_eq!(got, table(want));
}

#[test]
fn limit_and_offset() {
    let f = fields(&[("id", INT4), ("s", TEXT)]);
    let shards =
        || vec![vec![r(&["1", "a"]), r(&["4", "a"]), r(&["5", "a"])], vec![r(&["2", "b"]), r(&["3", "b"])]];
    let spec = Scatter { offset: 1, limit: Some(2), ..ordered(vec![asc(0)]) };
    assert_eq!(run(&spec, f.clone(), shards()).unwrap(), table(&[&["2", "b"], &["3", "b"]]));
    let spec = Scatter { offset: 4, limit: None, ..ordered(vec![asc(0)]) };
    assert_eq!(run(&spec, f.clone(), shards()).unwrap(), table(&[&["5", "a"]]));
    let spec = Scatter { offset: 10, ..ordered(vec![asc(0)]) };
    assert!(run(&spec, f.clone(), shards()).unwrap().is_empty());
    let spec = Scatter { limit: Some(0), ..ordered(vec![asc(0)]) };
    let m = Merger::new(&spec, f.clone(), vec![0, 0], 2, 10).unwrap();
    assert!(m.is_done());
    // Unordered: concatenation, LIMIT still applies.
    let spec = Scatter { limit: Some(3), ..scatter(vec![C::Column(0), C::Column(1)], 2) };
    assert_eq!(run(&spec, f, shards()).unwrap().len(), 3);
}

#[test]
fn limit_finishes_early_and_drops_late_rows() {
    let f = fields(&[("id", INT4)]);
    let spec = Scatter { shard_order: vec![asc(0)], limit: Some(2), ..scatter(vec![C::Column(0)], 1) };
    let mut m = Merger::new(&spec, f, vec![0], 2, 100).unwrap();
    let mut out = BytesMut::new();
    assert_eq!(m.needs(), Some(0));
    m.push_row(0, r(&["1"])).unwrap();
    m.push_row(0, r(&["2"])).unwrap();
    m.emit(&mut out).unwrap();
    assert_eq!(m.needs(), Some(1));
    m.push_row(1, r(&["5"])).unwrap();
    m.emit(&mut out).unwrap();
    // Both rows are out; shard 1 has not finished but nothing else can be emitted.
    assert!(m.is_done());
    assert_eq!(m.needs(), None);
    assert_eq!(m.queued(1), 0);
    m.push_row(1, r(&["6"])).unwrap();
    m.emit(&mut out).unwrap();
    assert_eq!(rows_of(&out), table(&[&["1"], &["2"]]));
    assert_eq!(m.rows_emitted(), 2);
}

#[test]
fn needs_and_queued_drive_backpressure() {
    let f = fields(&[("id", INT4)]);
    let spec = Scatter { shard_order: vec![asc(0)], ..scatter(vec![C::Column(0)], 1) };
    let mut m = Merger::new(&spec, f.clone(), vec![0], 3, 100).unwrap();
    let mut out = BytesMut::new();
    m.push_row(0, r(&["1"])).unwrap();
    m.push_row(0, r(&["2"])).unwrap();
    m.push_row(2, r(&["0"])).unwrap();
    assert_eq!(m.queued(0), 2);
    assert_eq!(m.needs(), Some(1));
    m.emit(&mut out).unwrap();
    assert!(out.is_empty(), "cannot emit before shard 1 has a row");
    m.finish_shard(1);
    m.emit(&mut out).unwrap();
    // shard 2's 0 goes out, then shard 2 must speak before 1 can.
    assert_eq!(rows_of(&out), table(&[&["0"]]));
    assert_eq!(m.needs(), Some(2));
    m.finish_shard(2);
    m.finish_shard(0);
    m.emit(&mut out).unwrap();
    assert_eq!(rows_of(&out), table(&[&["0"], &["1"], &["2"]]));
    assert!(m.is_done());
    // Without shard_order rows flow as soon as any shard has one.
    let spec = scatter(vec![C::Column(0)], 1);
    let mut m = Merger::new(&spec, f, vec![0], 2, 100).unwrap();
    assert_eq!(m.needs(), Some(0));
    m.push_row(1, r(&["9"])).unwrap();
    assert_eq!(m.needs(), None);
    let mut out = BytesMut::new();
    m.emit(&mut out).unwrap();
    assert_eq!(rows_of(&out), table(&[&["9"]]));
}

/// count(*), sum(x) (int8 from sum(int4)), avg(x) as sum+count, min(x), max(x)
fn global_aggs() -> (Scatter, Vec<FieldDesc>) {
    let spec = Scatter {
        group: Some(vec![]),
        ..scatter(vec![C::Count(0), C::Sum(1), C::Avg { sum: 2, count: 3 }, C::Min(4), C::Max(4)], 5)
    };
    let f = fields(&[("count", INT8), ("sum", INT8), ("avg", INT8), ("count", INT8), ("min", INT4)]);
    (spec, f)
}

#[test]
fn global_aggregates() {
    let (spec, f) = global_aggs();
    // values 1,2 on shard 0 and 3,4 on shard 1; shard 2 empty (count 0, others NULL)
    let shards = vec![
        vec![r(&["2", "3", "3", "2", "1"])],
        vec![r(&["2", "7", "7", "2", "3"])],
        vec![r(&["0", "NULL", "NULL", "0", "NULL"])],
    ];
    let got = run(&spec, f.clone(), shards).unwrap();
    assert_eq!(got, table(&[&["4", "10", "2.5000000000000000", "1", "3"]]));
    // avg of 1,2 / 10,20
    let got =
        run(&spec, f.clone(), vec![vec![r(&["1", "1", "1", "1", "1"])], vec![r(&["1", "2", "2", "1", "2"])]]);
    assert_eq!(got.unwrap()[0][2], "1.5000000000000000");
    let got = run(
        &spec,
        f.clone(),
        vec![vec![r(&["1", "10", "10", "1", "10"])], vec![r(&["1", "20", "20", "1", "20"])]],
    );
    assert_eq!(got.unwrap()[0][2], "15.0000000000000000");
    // SELECT avg(a) FROM aggtest WHERE a < 100 (56, 0, 42) = 32.6666666666666667
    let got =
        run(&spec, f, vec![vec![r(&["2", "56", "56", "2", "0"])], vec![r(&["1", "42", "42", "1", "42"])]]);
    assert_eq!(got.unwrap()[0][2], "32.6666666666666667");
}

#[test]
fn global_aggregate_over_no_rows_yields_one_row() {
    let (spec, f) = global_aggs();
    // Shards with a global aggregate always return one row, but the engine must also cope
    // with none at all (e.g. a HAVING pushed down).
    let got = run(&spec, f.clone(), vec![vec![], vec![]]).unwrap();
    assert_eq!(got, table(&[&["0", "NULL", "NULL", "NULL", "NULL"]]));
    let got = run(&spec, f, vec![vec![r(&["0", "NULL", "NULL", "0", "NULL"])], vec![]]).unwrap();
    assert_eq!(got, table(&[&["0", "NULL", "NULL", "NULL", "NULL"]]));
    // A grouped query over no rows yields no rows.
    let spec = Scatter {
        group: Some(vec![0]),
        shard_order: vec![asc(0)],
        ..scatter(vec![C::Column(0), C::Count(1)], 2)
    };
    let got = run(&spec, fields(&[("g", TEXT), ("count", INT8)]), vec![vec![], vec![]]).unwrap();
    assert!(got.is_empty());
}

#[test]
fn numeric_and_float_sums_and_averages() {
    let spec = Scatter {
        group: Some(vec![]),
        ..scatter(vec![C::Sum(0), C::Avg { sum: 0, count: 1 }, C::Sum(2), C::Avg { sum: 2, count: 1 }], 4)
    };
    let f = fields(&[("sum", NUMERIC), ("count", INT8), ("fsum", FLOAT8)]);
    let shards = vec![vec![r(&["1.50", "1", "0.1"])], vec![r(&["2.5", "1", "0.2"])]];
    let got = run(&spec, f.clone(), shards).unwrap();
    // sum keeps the larger dscale; avg(numeric) = numeric_div(4.00, 2)
    assert_eq!(got, table(&[&["4.00", "2.0000000000000000", "0.30000000000000004", "0.15000000000000002"]]));
    // avg(numeric) of 1.25, 2.5: 3.75 / 2 at select_div_scale's 16 digits
    let got = run(&spec, f.clone(), vec![vec![r(&["1.25", "1", "1"])], vec![r(&["2.5", "1", "1"])]]).unwrap();
    assert_eq!(got[0][1], "1.8750000000000000");
    // avg(numeric) of 0.25, 0.5: the quotient's weight is one base-10000 digit lower
    let got = run(&spec, f.clone(), vec![vec![r(&["0.25", "1", "1"])], vec![r(&["0.5", "1", "1"])]]).unwrap();
    assert_eq!(got[0][1], "0.37500000000000000000");
    // NaN and infinities propagate
    let got = run(&spec, f, vec![vec![r(&["NaN", "1", "Infinity"])], vec![r(&["1", "1", "1"])]]).unwrap();
    assert_eq!(got, table(&[&["NaN", "NaN", "Infinity", "Infinity"]]));
}

#[test]
fn int8_sum_overflow_is_22003() {
    let spec = Scatter { group: Some(vec![]), ..scatter(vec![C::Sum(0)], 1) };
    let f = fields(&[("sum", INT8)]);
    let e = run(&spec, f, vec![vec![r(&["9223372036854775807"])], vec![r(&["1"])]]).unwrap_err();
    assert_eq!(e, MergeError::Overflow { what: "bigint" });
    assert_eq!(e.sqlstate(), "22003");
}

/// SELECT g, count(*), sum(v) FROM t GROUP BY g HAVING ... (shards: ORDER BY g)
fn grouped(having: Option<Predicate>) -> Scatter {
    Scatter {
        group: Some(vec![0]),
        shard_order: vec![asc(0)],
        having,
        ..scatter(vec![C::Column(0), C::Count(1), C::Sum(2)], 3)
    }
}

fn grouped_shards() -> Vec<Vec<Bytes>> {
    vec![
        vec![r(&["a", "2", "10"]), r(&["b", "1", "NULL"]), r(&["d", "1", "4"]), r(&["NULL", "1", "1"])],
        vec![r(&["a", "1", "5"]), r(&["c", "3", "30"]), r(&["NULL", "2", "2"])],
        vec![r(&["b", "1", "NULL"]), r(&["c", "1", "-30"])],
    ]
}

fn gfields() -> Vec<FieldDesc> {
    fields(&[("g", TEXT), ("count", INT8), ("sum", INT8)])
}

#[test]
fn group_by_combines_adjacent_keys() {
    let got = run(&grouped(None), gfields(), grouped_shards()).unwrap();
    let want: &[&[&str]] =
        &[&["a", "3", "15"], &["b", "2", "NULL"], &["c", "4", "0"], &["d", "1", "4"], &["NULL", "3", "3"]];
    assert_eq!(got, table(want));
}

fn cmp(col: usize, op: CompareOp, n: &str) -> Predicate {
    Predicate::Compare { left: Operand::Column(col), op, right: Operand::Number(n.into()) }
}

#[test]
fn having_filters_with_three_valued_logic() {
    // HAVING count(*) > 2
    let got = run(&grouped(Some(cmp(1, CompareOp::Gt, "2"))), gfields(), grouped_shards()).unwrap();
    assert_eq!(got, table(&[&["a", "3", "15"], &["c", "4", "0"], &["NULL", "3", "3"]]));
    // HAVING sum(v) >= 3.5: NULL sum is unknown → filtered
    let got = run(&grouped(Some(cmp(2, CompareOp::GtEq, "3.5"))), gfields(), grouped_shards()).unwrap();
    assert_eq!(got, table(&[&["a", "3", "15"], &["d", "1", "4"]]));
    // HAVING NOT (sum(v) < 1): NOT unknown is unknown
    let p = Predicate::Not(Box::new(cmp(2, CompareOp::Lt, "1")));
    let got = run(&grouped(Some(p)), gfields(), grouped_shards()).unwrap();
    assert_eq!(got, table(&[&["a", "3", "15"], &["d", "1", "4"], &["NULL", "3", "3"]]));
    // HAVING sum(v) = 0 OR count(*) = 2: unknown OR true is true
    let p = Predicate::Or(Box::new(cmp(2, CompareOp::Eq, "0")), Box::new(cmp(1, CompareOp::Eq, "2")));
    let got = run(&grouped(Some(p)), gfields(), grouped_shards()).unwrap();
    assert_eq!(got, table(&[&["b", "2", "NULL"], &["c", "4", "0"]]));
    // HAVING sum(v) IS NULL AND g <> 'a'
    let p = Predicate::And(
        Box::new(Predicate::IsNull { operand: Operand::Column(2), negated: false }),
        Box::new(Predicate::Compare {
            left: Operand::Column(0),
            op: CompareOp::NotEq,
            right: Operand::Text("a".into()),
        }),
    );
    let got = run(&grouped(Some(p)), gfields(), grouped_shards()).unwrap();
    assert_eq!(got, table(&[&["b", "2", "NULL"]]));
    // HAVING g > 'b' (text vs text literal, bytewise)
    let p =
        Predicate::Compare { left: Operand::Text("b".into()), op: CompareOp::Lt, right: Operand::Column(0) };
    let got = run(&grouped(Some(p)), gfields(), grouped_shards()).unwrap();
    assert_eq!(got, table(&[&["c", "4", "0"], &["d", "1", "4"]]));
}

#[test]
fn having_compares_across_numeric_types_and_literal_types() {
    // SELECT d, avg(x) ... HAVING avg(x) > 1.5 (numeric vs numeric literal), d >= '2024-01-02'
    let spec = Scatter {
        group: Some(vec![0]),
        shard_order: vec![asc(0)],
        having: Some(Predicate::And(
            Box::new(cmp(1, CompareOp::Gt, "1.5")),
            Box::new(Predicate::Compare {
                left: Operand::Column(0),
                op: CompareOp::GtEq,
                right: Operand::Text("2024-01-02".into()),
            }),
        )),
        ..scatter(vec![C::Column(0), C::Avg { sum: 1, count: 2 }], 2)
    };
    let f = fields(&[("d", DATE), ("sum", INT8), ("count", INT8)]);
    let shards = vec![
        vec![r(&["2024-01-01", "10", "2"]), r(&["2024-01-02", "1", "1"]), r(&["2024-01-03", "4", "2"])],
        vec![r(&["2024-01-02", "2", "1"]), r(&["2024-01-03", "1", "1"])],
    ];
    let got = run(&spec, f, shards).unwrap();
    assert_eq!(got, table(&[&["2024-01-03", "1.6666666666666667"]]));
    // float column vs numeric literal
    let spec = Scatter {
        group: Some(vec![]),
        having: Some(cmp(0, CompareOp::Lt, "0.30000000000000004")),
        ..scatter(vec![C::Sum(0)], 1)
    };
    let got = run(&spec, fields(&[("s", FLOAT8)]), vec![vec![r(&["0.1"])], vec![r(&["0.2"])]]).unwrap();
    assert!(got.is_empty());
}

#[test]
fn distinct_is_a_grouping_on_every_column() {
    // SELECT DISTINCT a, b: shards ORDER BY a, b
    let spec = Scatter {
        group: Some(vec![0, 1]),
        shard_order: vec![asc(0), asc(1)],
        ..scatter(vec![C::Column(0), C::Column(1)], 2)
    };
    let f = fields(&[("a", INT4), ("b", NUMERIC)]);
    let shards = vec![
        vec![r(&["1", "1.0"]), r(&["1", "2"]), r(&["2", "NULL"])],
        vec![r(&["1", "1.00"]), r(&["2", "5"]), r(&["2", "NULL"])],
        vec![r(&["1", "2"])],
    ];
    let got = run(&spec, f, shards).unwrap();
    // numeric 1.0 = 1.00: one row, showing the first shard's text
    assert_eq!(got, table(&[&["1", "1.0"], &["1", "2"], &["2", "5"], &["2", "NULL"]]));
}

#[test]
fn count_distinct_global_and_grouped() {
    // SELECT count(DISTINCT x), count(*) FROM t: shards return (x, count(*)) GROUP BY x ORDER BY x
    let spec = Scatter {
        group: Some(vec![0]),
        shard_order: vec![asc(0)],
        ..scatter(vec![C::CountDistinct(0), C::Count(1)], 2)
    };
    let f = fields(&[("x", INT4), ("count", INT8)]);
    let shards =
        vec![vec![r(&["1", "2"]), r(&["2", "1"]), r(&["NULL", "4"])], vec![r(&["2", "3"]), r(&["3", "1"])]];
    let got = run(&spec, f.clone(), shards).unwrap();
    assert_eq!(got, table(&[&["3", "11"]]));
    let got = run(&spec, f, vec![vec![], vec![]]).unwrap();
    assert_eq!(got, table(&[&["0", "0"]]));
    // SELECT g, count(DISTINCT x) FROM t GROUP BY g: shards GROUP BY g, x ORDER BY g, x
    let spec = Scatter {
        group: Some(vec![0, 1]),
        shard_order: vec![asc(0), asc(1)],
        ..scatter(vec![C::Column(0), C::CountDistinct(1)], 2)
    };
    let f = fields(&[("g", TEXT), ("x", INT4)]);
    let shards = vec![
        vec![r(&["a", "1"]), r(&["a", "2"]), r(&["b", "NULL"])],
        vec![r(&["a", "2"]), r(&["a", "3"]), r(&["c", "7"])],
        vec![r(&["b", "5"]), r(&["c", "7"])],
    ];
    let got = run(&spec, f, shards).unwrap();
    assert_eq!(got, table(&[&["a", "3"], &["b", "1"], &["c", "1"]]));
}

#[test]
fn final_order_count_desc_limit() {
    // SELECT g, count(*) FROM t GROUP BY g ORDER BY count(*) DESC, g LIMIT 2
    let spec = Scatter {
        group: Some(vec![0]),
        shard_order: vec![asc(0)],
        final_order: Some(vec![desc(1), asc(0)]),
        limit: Some(2),
        ..scatter(vec![C::Column(0), C::Count(1), C::Sum(2)], 2)
    };
    let got = run(&spec, gfields(), grouped_shards()).unwrap();
    assert_eq!(got, table(&[&["c", "4"], &["a", "3"]]));
    // ORDER BY sum DESC (NULLS FIRST) OFFSET 1 without a limit; helper column 2 is hidden
    let spec = Scatter { final_order: Some(vec![desc(2)]), limit: None, offset: 1, ..spec };
    let got = run(&spec, gfields(), grouped_shards()).unwrap();
    assert_eq!(got, table(&[&["a", "3"], &["d", "1"], &["NULL", "3"], &["c", "4"]]));
}

#[test]
fn final_order_with_limit_keeps_only_the_top_rows() {
    // 1000 groups, max_buffered 50: a LIMIT 5 fits, no LIMIT does not.
    let spec = Scatter {
        group: Some(vec![0]),
        shard_order: vec![asc(0)],
        final_order: Some(vec![desc(1), asc(0)]),
        limit: Some(5),
        ..scatter(vec![C::Column(0), C::Count(1)], 2)
    };
    let f = fields(&[("g", INT4), ("count", INT8)]);
    let shard: Vec<Bytes> =
        (0..1000).map(|i| r(&[&i.to_string(), &((i * 7919) % 1000).to_string()])).collect();
    let mut m = Merger::new(&spec, f.clone(), vec![0, 0], 1, 50).unwrap();
    let out = drive(&mut m, vec![shard.clone()]).unwrap();
    let got = rows_of(&out);
    let mut want: Vec<(i64, i64)> = (0..1000).map(|i| (i, (i * 7919) % 1000)).collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let want: Vec<Vec<String>> = want[..5].iter().map(|(g, c)| vec![g.to_string(), c.to_string()]).collect();
    assert_eq!(got, want);
    let spec = Scatter { limit: None, ..spec };
    let mut m = Merger::new(&spec, f, vec![0, 0], 1, 50).unwrap();
    let e = drive(&mut m, vec![shard]).unwrap_err();
    assert_eq!(e, MergeError::TooManyRows { limit: 50 });
    assert_eq!(e.sqlstate(), "54000");
}

#[test]
fn shard_queues_count_toward_the_buffer_limit() {
    let f = fields(&[("id", INT4)]);
    let spec = Scatter { shard_order: vec![asc(0)], ..scatter(vec![C::Column(0)], 1) };
    let mut m = Merger::new(&spec, f, vec![0], 2, 3).unwrap();
    for i in 0..3 {
        m.push_row(0, r(&[&i.to_string()])).unwrap();
    }
    assert_eq!(m.push_row(0, r(&["9"])), Err(MergeError::TooManyRows { limit: 3 }));
}

#[test]
fn bool_and_bool_or() {
    let spec = Scatter {
        group: Some(vec![0]),
        shard_order: vec![asc(0)],
        ..scatter(vec![C::Column(0), C::BoolAnd(1), C::BoolOr(2)], 3)
    };
    let f = fields(&[("g", INT4), ("band", BOOL), ("bor", BOOL)]);
    let shards = vec![
        vec![r(&["1", "t", "f"]), r(&["2", "NULL", "NULL"]), r(&["3", "t", "f"])],
        vec![r(&["1", "f", "t"]), r(&["3", "t", "NULL"])],
    ];
    let got = run(&spec, f, shards).unwrap();
    assert_eq!(got, table(&[&["1", "f", "t"], &["2", "NULL", "NULL"], &["3", "t", "f"]]));
}

#[test]
fn min_max_keep_original_bytes() {
    let spec =
        Scatter { group: Some(vec![]), ..scatter(vec![C::Min(0), C::Max(0), C::Min(1), C::Max(1)], 4) };
    let f = fields(&[("n", NUMERIC), ("t", TSTZ)]);
    let shards = vec![
        vec![r(&["1.500", "2024-03-01 10:00:00+01"])],
        vec![r(&["1.5", "2024-03-01 09:30:00+00"])],
        vec![r(&["NULL", "NULL"])],
        vec![r(&["-0.25", "2024-03-01 10:30:00+02"])],
    ];
    let got = run(&spec, f, shards).unwrap();
    // min/max keep the first-seen winner among equal values (1.500 = 1.5)
    assert_eq!(got, table(&[&["-0.25", "1.500", "2024-03-01 10:30:00+02", "2024-03-01 09:30:00+00"]]));
}

mod errors;
mod formats;
