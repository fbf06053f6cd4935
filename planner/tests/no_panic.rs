//! `Planner::plan` never panics, whatever the text (arbitrary strings and mutated SQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use planner::{Planner, PlannerOptions};
use proptest::prelude::*;

fn planner() -> Planner {
    let text = include_str!("../testdata/vschema.toml");
    let vschema = vindex::VSchema::from_toml(text).unwrap().validate().unwrap();
    let options = PlannerOptions { default_keyspace: Some("main".into()), cache_capacity: 0 };
    Planner::new(Arc::new(vschema), options).unwrap()
}

const SEEDS: &[&str] = &[
    "SELECT status, count(DISTINCT user_id), avg(total) FROM orders WHERE user_id IN (1, $2) GROUP BY 1 HAVING sum(total) > 3 ORDER BY 2 DESC LIMIT 5 OFFSET 2",
    "SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1 AND EXISTS (SELECT 1 FROM countries)",
    "INSERT INTO orders (user_id, total) VALUES (1, 2), ($1, 3) ON CONFLICT DO NOTHING RETURNING *",
    "UPDATE users SET name = 'x' WHERE id = 1; DELETE FROM orders WHERE user_id = 2",
    "WITH x AS (SELECT * FROM orders WHERE user_id = 1) SELECT * FROM x UNION ALL SELECT * FROM orders WHERE user_id = 1",
    "/* pg_router: shard=-80 */ SELECT 1",
    "SHOW ROUTE FOR SELECT DISTINCT status FROM orders ORDER BY status",
    "DO $$ BEGIN PERFORM 1; END $$; COPY settings FROM STDIN",
];

fn mutate(seed: &str, cuts: &[(usize, usize, String)]) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for (pos, del, ins) in cuts {
        let p = pos % (s.len() + 1);
        let end = (p + del % 8).min(s.len());
        s.splice(p..end, ins.chars());
    }
    s.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(s in "\\PC{0,200}") {
        let p = planner();
        let _ = p.plan(&s);
    }

    #[test]
    fn sqlish_tokens(words in proptest::collection::vec(prop::sample::select(vec![
        "SELECT", "*", "FROM", "users", "orders", "WHERE", "id", "=", "$1", "1", "(", ")", ",", "AND", "OR",
        "GROUP", "BY", "ORDER", "LIMIT", "count(*)", "avg(total)", "JOIN", "ON", "u.id", "o.user_id", "'x'",
        ";", "INSERT", "INTO", "VALUES", "UPDATE", "SET", "DELETE", "DISTINCT", "HAVING", "UNION", "WITH", "AS",
        "$$", "/*", "*/", "--", "\"", "E'", "IN", "NULL", "::int", "OVER", "LATERAL", "SHOW", "ROUTE", "FOR",
    ]), 0..40)) {
        let p = planner();
        let _ = p.plan(&words.join(" "));
    }

    #[test]
    fn mutated_sql(seed in prop::sample::select(SEEDS.to_vec()),
                   cuts in proptest::collection::vec((0usize..400, 0usize..8, "\\PC{0,6}"), 1..4)) {
        let p = planner();
        let _ = p.plan(&mutate(seed, &cuts));
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let p = planner();
    for depth in [100usize, 1000, 20000] {
        let sql = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
        let _ = p.plan(&sql);
        let sql = format!("SELECT * FROM users WHERE {}id = 1{}", "NOT (".repeat(depth), ")".repeat(depth));
        let _ = p.plan(&sql);
    }
}
