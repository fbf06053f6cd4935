//! Property tests: the merged result equals a single-list computation over all rows.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// (id or NULL, group key, value)
type Input = (Option<i32>, i64, i64);

fn inputs() -> impl Strategy<Value = (Vec<Input>, Vec<usize>, usize)> {
    (1usize..=4).prop_flat_map(|shards| {
        let rows =
            prop::collection::vec((prop::option::weighted(0.9, -20i32..20), 0i64..6, -1000i64..1000), 0..60);
        rows.prop_flat_map(move |rows| {
            let n = rows.len();
            (Just(rows), prop::collection::vec(0..shards, n), Just(shards))
        })
    })
}

fn cmp_id(a: Option<i32>, b: Option<i32>, key: SortKey) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => {
            if key.nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Some(_), None) => {
            if key.nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(x), Some(y)) => {
            if key.descending {
                y.cmp(&x)
            } else {
                x.cmp(&y)
            }
        }
    }
}

fn page<T: Clone>(all: &[T], offset: u64, limit: Option<u64>) -> Vec<T> {
    let it = all.iter().skip(offset as usize).cloned();
    match limit {
        Some(l) => it.take(l as usize).collect(),
        None => it.collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn order_by_limit_offset_matches_one_list(
        (rows, assign, shards) in inputs(),
        descending in any::<bool>(),
        nulls_first in any::<bool>(),
        offset in 0u64..10,
        limit in prop::option::of(0u64..20),
    ) {
        let key = SortKey { column: 0, descending, nulls_first };
        // Tag every row with (shard, position in shard) to check stability.
        let mut per_shard: Vec<Vec<(Option<i32>, String)>> = vec![Vec::new(); shards];
        for (i, (id, _, _)) in rows.iter().enumerate() {
            per_shard[assign[i]].push((*id, format!("s{}r{}", assign[i], i)));
        }
        for s in &mut per_shard {
            s.sort_by(|a, b| cmp_id(a.0, b.0, key)); // each shard sorts (stably) by the key
        }
        let mut all: Vec<(usize, usize, Option<i32>, String)> = Vec::new();
        for (si, s) in per_shard.iter().enumerate() {
            for (pos, (id, tag)) in s.iter().enumerate() {
                all.push((si, pos, *id, tag.clone()));
            }
        }
        all.sort_by(|a, b| cmp_id(a.2, b.2, key).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        let render = |id: Option<i32>| id.map_or("NULL".to_string(), |v| v.to_string());
        let want: Vec<Vec<String>> = page(&all, offset, limit).into_iter().map(|(_, _, id, tag)| vec![render(id), tag]).collect();

        let spec = Scatter { shard_order: vec![key], offset, limit, ..scatter(vec![C::Column(0), C::Column(1)], 2) };
        let streams: Vec<Vec<Bytes>> = per_shard
            .iter()
            .map(|s| s.iter().map(|(id, tag)| row(&[id.map(|v| v.to_string()).as_deref(), Some(tag)])).collect())
            .collect();
        let got = run(&spec, fields(&[("id", INT4), ("tag", TEXT)]), streams).unwrap();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn grouped_sums_match_one_list(
        (rows, assign, shards) in inputs(),
        offset in 0u64..4,
        limit in prop::option::of(0u64..8),
        by_count in any::<bool>(),
    ) {
        // SELECT g, count(*), sum(v), avg(v) FROM t GROUP BY g [ORDER BY count(*) DESC, g] ...
        let mut per_shard: Vec<BTreeMap<i64, (i64, i64)>> = vec![BTreeMap::new(); shards];
        let mut total: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for (i, (_, g, v)) in rows.iter().enumerate() {
            let e = per_shard[assign[i]].entry(*g).or_default();
            e.0 += 1;
            e.1 += v;
            let t = total.entry(*g).or_default();
            t.0 += 1;
            t.1 += v;
        }
        let mut groups: Vec<(i64, i64, i64)> = total.into_iter().map(|(g, (c, s))| (g, c, s)).collect();
        if by_count {
            groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        let avg = |s: i64, c: i64| {
            crate::exec::merge::numeric::Numeric::from_i128(s as i128)
                .div(&crate::exec::merge::numeric::Numeric::from_i128(c as i128))
                .unwrap()
                .to_text()
        };
        let want: Vec<Vec<String>> = page(&groups, offset, limit)
            .into_iter()
            .map(|(g, c, s)| vec![g.to_string(), c.to_string(), s.to_string(), avg(s, c)])
            .collect();
        let spec = Scatter {
            group: Some(vec![0]),
            shard_order: vec![asc(0)],
            final_order: by_count.then(|| vec![desc(1), asc(0)]),
            offset,
            limit,
            ..scatter(vec![C::Column(0), C::Count(1), C::Sum(2), C::Avg { sum: 2, count: 1 }], 4)
        };
        let streams: Vec<Vec<Bytes>> = per_shard
            .iter()
            .map(|m| m.iter().map(|(g, (c, s))| r(&[&g.to_string(), &c.to_string(), &s.to_string()])).collect())
            .collect();
        let got = run(&spec, fields(&[("g", INT8), ("count", INT8), ("sum", INT8)]), streams).unwrap();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn avg_reference_spot_check() {
    // The property test's reference uses Numeric::div; pin it to PostgreSQL output once more.
    let q = crate::exec::merge::numeric::Numeric::from_i128(-7)
        .div(&crate::exec::merge::numeric::Numeric::from_i128(3))
        .unwrap();
    assert_eq!(q.to_text(), "-2.3333333333333333");
}
