//! The `numeric` vindex: the integer itself is the keyspace id (Vitess `numeric`).
//!
//! `keyspace_id(i) = i as u64` (two's complement reinterpretation, so negative ints land in the
//! upper half of the space). Useful when the application already chooses well-spread 64-bit ids
//! (or wants to pick the key range of a row explicitly), and the one built-in [`Reversible`]
//! vindex: `reverse_map(k) = k as i64`.
//!
//! Parameters: none (int columns only). Cost 0; unique. NULL: `map` → [`Destination::None`],
//! `verify` → false, `map_for_insert` → [`crate::Error::NullShardingKey`].

use std::sync::Arc;

use crate::destination::Destination;
use crate::error::Result;
use crate::keyspace_id::KeyspaceId;
use crate::registry::VindexSpec;
use crate::value::{ColumnType, Value};
use crate::vindex::{check_value, Reversible, SingleColumn, Vindex};

/// Type name in the VSchema.
pub const TYPE_NAME: &str = "numeric";
pub(crate) const PARAMS: &[&str] = &[];

/// The `numeric` vindex.
#[derive(Clone, Debug)]
pub struct Numeric {
    name: String,
}

impl Numeric {
    /// A numeric vindex named `name`.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Numeric { name: name.into() }
    }

    fn id_of(value: &Value) -> Option<KeyspaceId> {
        match value {
            // Two's complement reinterpretation, by definition of this vindex.
            Value::Int(i) => Some(KeyspaceId::new(*i as u64)),
            _ => None,
        }
    }
}

pub(crate) fn build(spec: &VindexSpec<'_>) -> Result<Arc<dyn Vindex>> {
    Ok(Arc::new(Numeric::new(spec.name())))
}

impl Vindex for Numeric {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }
    fn column_type(&self) -> ColumnType {
        ColumnType::Int
    }
    fn cost(&self) -> u32 {
        0
    }
    fn is_unique(&self) -> bool {
        true
    }
    fn as_single_column(&self) -> Option<&dyn SingleColumn> {
        Some(self)
    }
    fn as_reversible(&self) -> Option<&dyn Reversible> {
        Some(self)
    }
}

impl SingleColumn for Numeric {
    fn map_one(&self, value: &Value) -> Result<Destination> {
        check_value(self, value)?;
        Ok(Self::id_of(value).map_or(Destination::None, Destination::KeyspaceId))
    }

    fn verify_one(&self, value: &Value, id: KeyspaceId) -> Result<bool> {
        check_value(self, value)?;
        Ok(Self::id_of(value) == Some(id))
    }
}

impl Reversible for Numeric {
    fn reverse_map(&self, ids: &[KeyspaceId]) -> Result<Vec<Value>> {
        // Two's complement reinterpretation, the inverse of `id_of`.
        Ok(ids.iter().map(|id| Value::Int(id.get() as i64)).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn maps_the_integer_itself() {
        let n = Numeric::new("n");
        assert_eq!(n.map_one(&Value::Int(0x4000)).unwrap(), Destination::KeyspaceId(KeyspaceId::new(0x4000)));
        assert_eq!(n.map_one(&Value::Int(-1)).unwrap(), Destination::KeyspaceId(KeyspaceId::MAX));
        assert_eq!(n.map_one(&Value::Null).unwrap(), Destination::None);
        assert!(n.map_one(&Value::from("1")).is_err());
    }

    proptest! {
        #[test]
        fn reverse_map_inverts_map(i in any::<i64>()) {
            let n = Numeric::new("n");
            let Destination::KeyspaceId(id) = n.map_one(&Value::Int(i)).unwrap() else {
                return Err(TestCaseError::fail("not a keyspace id"));
            };
            prop_assert_eq!(n.reverse_map(&[id]).unwrap(), vec![Value::Int(i)]);
        }
    }
}
