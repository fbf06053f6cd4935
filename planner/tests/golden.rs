//! Golden tests: `testdata/cases.json` and `testdata/unsupported_cases.json` planned against
//! `testdata/vschema.toml` (default keyspace `main`). `UPDATE_GOLDEN=1` rewrites the expected
//! texts instead of comparing (review the diff before committing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use planner::{Planner, PlannerOptions};
use serde_json::Value;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
}

fn planner() -> Planner {
    let text = std::fs::read_to_string(testdata("vschema.toml")).unwrap();
    let vschema = vindex::VSchema::from_toml(&text).unwrap().validate().unwrap();
    let options = PlannerOptions { default_keyspace: Some("main".into()), ..Default::default() };
    Planner::new(Arc::new(vschema), options).unwrap()
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

fn outcome(p: &Planner, sql: &str) -> (String, String) {
    match p.plan(sql) {
        Ok(plan) => (plan.explain(), String::new()),
        Err(e) => (String::new(), format!("{} {}", e.sqlstate(), e)),
    }
}

/// Write an array of objects with keys in the given order; a multi-line value becomes an
/// array of lines.
fn write_cases(name: &str, cases: &[Vec<(&str, String)>]) {
    let mut out = String::from("[\n");
    for (i, case) in cases.iter().enumerate() {
        out.push_str("  {\n");
        for (j, (k, v)) in case.iter().enumerate() {
            let sep = if j + 1 < case.len() { "," } else { "" };
            let value = if *k == "plan" && v.ends_with('\n') {
                let lines: Vec<String> =
                    v.lines().map(|l| format!("      {}", serde_json::to_string(l).unwrap())).collect();
                format!("[\n{}\n    ]", lines.join(",\n"))
            } else {
                serde_json::to_string(v).unwrap()
            };
            out.push_str(&format!("    {}: {value}{sep}\n", serde_json::to_string(k).unwrap()));
        }
        out.push_str(if i + 1 < cases.len() { "  },\n" } else { "  }\n" });
    }
    out.push_str("]\n");
    std::fs::write(testdata(name), out).unwrap();
}

fn load(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(testdata(name)).unwrap();
    serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
}

fn field(case: &Value, key: &str) -> String {
    case.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

#[test]
fn golden_plans() {
    let p = planner();
    let cases = load("cases.json");
    let mut failures = Vec::new();
    let mut updated = Vec::new();
    for case in &cases {
        let (sql, comment) = (field(case, "sql"), field(case, "comment"));
        let (plan, err) = outcome(&p, &sql);
        let got = if err.is_empty() { plan.clone() } else { format!("ERROR {err}") };
        let expected = case.get("plan").map(|v| match v {
            Value::Array(lines) => lines.iter().filter_map(Value::as_str).map(|l| format!("{l}\n")).collect(),
            other => other.as_str().unwrap_or_default().to_owned(),
        });
        if expected.as_deref() != Some(got.as_str()) {
            failures.push(format!(
                "{comment}\n  sql: {sql}\n  expected:\n{}\n  got:\n{got}",
                expected.unwrap_or_default()
            ));
        }
        updated.push(vec![("comment", comment), ("sql", sql), ("plan", got)]);
    }
    if updating() {
        write_cases("cases.json", &updated);
        return;
    }
    assert!(cases.len() >= 80, "only {} golden cases", cases.len());
    assert!(failures.is_empty(), "{} golden case(s) differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn golden_unsupported() {
    let p = planner();
    let cases = load("unsupported_cases.json");
    let mut failures = Vec::new();
    let mut updated = Vec::new();
    for case in &cases {
        let sql = field(case, "sql");
        let (plan, err) = outcome(&p, &sql);
        let got = if err.is_empty() { format!("PLANNED (expected an error): {plan}") } else { err };
        if field(case, "error") != got {
            failures.push(format!("sql: {sql}\n  expected: {}\n  got:      {got}", field(case, "error")));
        }
        updated.push(vec![("sql", sql), ("error", got)]);
    }
    if updating() {
        write_cases("unsupported_cases.json", &updated);
        return;
    }
    assert!(cases.len() >= 30, "only {} unsupported cases", cases.len());
    assert!(failures.is_empty(), "{} unsupported case(s) differ:\n{}", failures.len(), failures.join("\n"));
}
