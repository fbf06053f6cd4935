//! The `range` vindex: ordered boundaries on the raw value, each interval mapped to one
//! keyspace id.
//!
//! Use it when rows must be placed by value ranges (tenants by id block, events by month):
//! every value in an interval gets the interval's keyspace id, so the interval's rows live on
//! whichever shard owns that keyspace id today, and a split of that shard's key range keeps
//! them together (they all have the same keyspace id).
//!
//! Parameters:
//!
//! * `column_type` (required): `int`, `text`, `bytea`, `uuid`, `timestamp`, `timestamptz`.
//! * `ranges` (required): comma-separated entries `LOWER => KEYSPACE_ID`, in strictly ascending
//!   order of `LOWER`. `LOWER` is the inclusive lower bound of an interval, written as an SQL
//!   literal of the column type (`1000`, `'m'`, `'2024-01-01'`), or `MINVALUE` (first entry
//!   only, as in PostgreSQL's range partitioning) for "no lower bound". The interval runs up to
//!   the next entry's bound (exclusive); the last one is unbounded above. `KEYSPACE_ID` is a
//!   hex prefix of the 8-byte keyspace id, as in key ranges (`40` = `4000000000000000`); pick
//!   the start of the key range that should hold the interval.
//!
//! ```toml
//! [keyspaces.events.vindexes.by_month]
//! type = "range"
//! params = { column_type = "timestamptz", ranges = "MINVALUE => 00, '2024-01-01 00:00Z' => 40, '2024-07-01 00:00Z' => 80" }
//! ```
//!
//! Values are ordered as [`Value::compare`] does: integers and timestamps numerically, text and
//! bytea bytewise (PostgreSQL's `C` collation, whatever the column's collation: only equality
//! routing depends on it, and equality does not depend on collation for deterministic ones),
//! uuids bytewise.
//!
//! Cost 1; unique; not reversible. NULL and values below the first bound (when it is not
//! `MINVALUE`): `map` → [`Destination::None`] (no row can hold them), `verify` → false;
//! `map_for_insert` → [`crate::Error::NullShardingKey`] / [`crate::Error::NoShardForValue`].

use std::cmp::Ordering;
use std::sync::Arc;

use crate::destination::Destination;
use crate::error::{Error, Result};
use crate::keyspace_id::KeyspaceId;
use crate::registry::VindexSpec;
use crate::value::{quoted_len, ColumnType, Value};
use crate::vindex::{check_value, SingleColumn, Vindex};

/// Type name in the VSchema.
pub const TYPE_NAME: &str = "range";
pub(crate) const PARAMS: &[&str] = &["column_type", "ranges"];

/// The `range` vindex.
#[derive(Clone, Debug)]
pub struct RangeVindex {
    name: String,
    column_type: ColumnType,
    /// Target of values below the first bound (`MINVALUE => …`), if any.
    below: Option<KeyspaceId>,
    /// (inclusive lower bound, keyspace id), strictly ascending by bound.
    bounds: Vec<(Value, KeyspaceId)>,
}

impl RangeVindex {
    /// A range vindex from already-typed boundaries. `below` is the target of values under the
    /// first bound (`None`: they map nowhere). Bounds must be non-NULL values of `column_type`
    /// in strictly ascending order, and there must be at least one interval.
    pub fn new(
        name: impl Into<String>,
        column_type: ColumnType,
        below: Option<KeyspaceId>,
        bounds: Vec<(Value, KeyspaceId)>,
    ) -> Result<Self> {
        let name = name.into();
        let invalid = |reason: String| Error::InvalidParam {
            vindex: name.clone(),
            vindex_type: TYPE_NAME.to_owned(),
            param: "ranges",
            reason,
        };
        if below.is_none() && bounds.is_empty() {
            return Err(invalid("at least one interval is needed".to_owned()));
        }
        for (i, (b, _)) in bounds.iter().enumerate() {
            if b.is_null() || !b.fits(column_type) {
                return Err(invalid(format!(
                    "bound {} is a {}, expected a non-NULL {column_type}",
                    i + 1,
                    b.type_name()
                )));
            }
        }
        if let Some(i) = bounds.windows(2).position(|w| w[0].0.compare(&w[1].0) != Some(Ordering::Less)) {
            return Err(invalid(format!(
                "bounds must be strictly ascending: bound {} is not below bound {}",
                i + 1,
                i + 2
            )));
        }
        Ok(RangeVindex { name, column_type, below, bounds })
    }

    /// A range vindex from the `ranges` parameter text (see the module docs).
    pub fn parse(name: impl Into<String>, column_type: ColumnType, ranges: &str) -> Result<Self> {
        let name = name.into();
        let invalid = |reason: String| Error::InvalidParam {
            vindex: name.clone(),
            vindex_type: TYPE_NAME.to_owned(),
            param: "ranges",
            reason,
        };
        let mut below = None;
        let mut bounds = Vec::new();
        for (i, entry) in split_top_level(ranges, ",").map_err(&invalid)?.into_iter().enumerate() {
            let parts = split_top_level(entry, "=>").map_err(&invalid)?;
            let [lower, target] = parts[..] else {
                return Err(invalid(format!("entry {}: expected LOWER => KEYSPACE_ID", i + 1)));
            };
            let id: KeyspaceId =
                target.trim().parse().map_err(|e| invalid(format!("entry {}: {e}", i + 1)))?;
            if lower.trim().eq_ignore_ascii_case("minvalue") {
                if i != 0 {
                    return Err(invalid(format!("entry {}: MINVALUE must come first", i + 1)));
                }
                below = Some(id);
                continue;
            }
            let value = Value::from_sql_literal(lower, column_type)
                .map_err(|e| invalid(format!("entry {}: {e}", i + 1)))?;
            bounds.push((value, id));
        }
        Self::new(name, column_type, below, bounds)
    }

    fn id_of(&self, value: &Value) -> Option<KeyspaceId> {
        if value.is_null() {
            return None;
        }
        // Number of bounds <= value; the interval is the last of them.
        let n = self.bounds.partition_point(|(b, _)| b.compare(value) != Some(Ordering::Greater));
        match n {
            0 => self.below,
            n => Some(self.bounds[n - 1].1),
        }
    }
}

/// Split `s` on `sep` outside quoted strings; each piece trimmed, empty pieces rejected.
fn split_top_level<'a>(s: &'a str, sep: &str) -> std::result::Result<Vec<&'a str>, String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'$' => {
                let escapes = i > 0
                    && bytes[i - 1].eq_ignore_ascii_case(&b'e')
                    && (i == 1 || !bytes[i - 2].is_ascii_alphanumeric());
                i += quoted_len(&s[i..], escapes).map_err(|e| e.to_string())?;
            }
            _ if s[i..].starts_with(sep) => {
                pieces.push(&s[start..i]);
                i += sep.len();
                start = i;
            }
            _ => i += 1,
        }
    }
    pieces.push(&s[start..]);
    let pieces: Vec<&str> = pieces.into_iter().map(str::trim).collect();
    if pieces.iter().any(|p| p.is_empty()) {
        return Err(format!("empty entry in {s:?}"));
    }
    Ok(pieces)
}

pub(crate) fn build(spec: &VindexSpec<'_>) -> Result<Arc<dyn Vindex>> {
    Ok(Arc::new(RangeVindex::parse(spec.name(), spec.column_type()?, spec.required("ranges")?)?))
}

impl Vindex for RangeVindex {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }
    fn column_type(&self) -> ColumnType {
        self.column_type
    }
    fn cost(&self) -> u32 {
        1
    }
    fn is_unique(&self) -> bool {
        true
    }
    fn as_single_column(&self) -> Option<&dyn SingleColumn> {
        Some(self)
    }
}

impl SingleColumn for RangeVindex {
    fn map_one(&self, value: &Value) -> Result<Destination> {
        check_value(self, value)?;
        Ok(self.id_of(value).map_or(Destination::None, Destination::KeyspaceId))
    }

    fn verify_one(&self, value: &Value, id: KeyspaceId) -> Result<bool> {
        check_value(self, value)?;
        Ok(self.id_of(value) == Some(id))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(hex: &str) -> Destination {
        Destination::KeyspaceId(hex.parse().unwrap())
    }

    #[test]
    fn int_intervals() {
        let r = RangeVindex::parse("r", ColumnType::Int, "MINVALUE => 00, 1000 => 40, 2000 => 80").unwrap();
        let m = |i: i64| r.map_one(&Value::Int(i)).unwrap();
        assert_eq!(m(i64::MIN), id("00"));
        assert_eq!(m(999), id("00"));
        assert_eq!(m(1000), id("40"));
        assert_eq!(m(1999), id("40"));
        assert_eq!(m(2000), id("80"));
        assert_eq!(m(i64::MAX), id("80"));
        assert_eq!(r.map_one(&Value::Null).unwrap(), Destination::None);
        assert!(r.verify_one(&Value::Int(1500), "40".parse().unwrap()).unwrap());
        assert!(!r.verify_one(&Value::Int(1500), "80".parse().unwrap()).unwrap());
    }

    #[test]
    fn values_below_a_bounded_first_interval_map_nowhere() {
        let r = RangeVindex::parse("r", ColumnType::Int, "0 => 00, 100 => 80").unwrap();
        assert_eq!(r.map_one(&Value::Int(-1)).unwrap(), Destination::None);
        let err = r.map_for_insert(&Value::Int(-1)).unwrap_err().at_column("t", "k");
        assert_eq!(
            err.to_string(),
            "no shard for the sharding key column t.k (vindex r): the value is outside every range"
        );
        assert_eq!(r.map_for_insert(&Value::Int(5)).unwrap(), id("00"));
    }

    #[test]
    fn text_and_timestamp_bounds() {
        let t = RangeVindex::parse(
            "t",
            ColumnType::Text,
            "MINVALUE => 00, 'g' => 40, 'it''s, ok' => 80, E'n\\'' => c0",
        )
        .unwrap();
        assert_eq!(t.map_one(&Value::from("apple")).unwrap(), id("00"));
        assert_eq!(t.map_one(&Value::from("grape")).unwrap(), id("40"));
        assert_eq!(t.map_one(&Value::from("it's, ok")).unwrap(), id("80"));
        assert_eq!(t.map_one(&Value::from("n'")).unwrap(), id("c0"));
        assert_eq!(t.map_one(&Value::from("zebra")).unwrap(), id("c0"));
        let ts = RangeVindex::parse(
            "ts",
            ColumnType::TimestampTz,
            "MINVALUE => 00, '2024-01-01 00:00:00Z' => 40, '2024-07-01Z'::timestamptz => 80",
        );
        // '2024-07-01Z' is a date followed by a zone, which the timestamp reader refuses.
        assert!(ts.is_err());
        let ts = RangeVindex::parse(
            "ts",
            ColumnType::TimestampTz,
            "MINVALUE => 00, '2024-01-01 00:00:00Z' => 40, '2024-07-01 00:00+00' => 80",
        )
        .unwrap();
        let v = Value::from_sql_literal("'2024-03-01 12:00:00+02'", ColumnType::TimestampTz).unwrap();
        assert_eq!(ts.map_one(&v).unwrap(), id("40"));
    }

    #[test]
    fn documented_example_builds() {
        let toml = crate::testing::doc_toml_block(include_str!("range.rs"));
        let doc = crate::VSchema::from_toml(&format!("[keyspaces.events]\nsharded = true\n{toml}")).unwrap();
        let v = doc.validate().unwrap();
        let by_month = v.keyspace("events").unwrap().vindex("by_month").unwrap();
        let key = Value::from_sql_literal("'2024-08-01 00:00:00+00'", ColumnType::TimestampTz).unwrap();
        assert_eq!(by_month.as_single_column().unwrap().map_one(&key).unwrap(), id("80"));
    }

    #[test]
    fn bad_parameters_are_named() {
        for (ranges, needle) in [
            ("", "empty entry"),
            ("1000 => 40, 500 => 80", "strictly ascending"),
            ("1000 => 40, 1000 => 80", "strictly ascending"),
            ("0 => 40, MINVALUE => 00", "MINVALUE must come first"),
            ("0 => 4", "hex digits"),
            ("'x' => 40", "invalid input syntax"),
            ("0 40", "expected LOWER => KEYSPACE_ID"),
            ("NULL => 40", "non-NULL"),
            ("'unterminated => 40", "unterminated"),
        ] {
            let err = RangeVindex::parse("r", ColumnType::Int, ranges).unwrap_err().to_string();
            assert!(
                err.starts_with("vindex r (type range): parameter \"ranges\"") && err.contains(needle),
                "{ranges:?}: {err}"
            );
        }
    }
}
