//! `Registry`: vindex type name → constructor, with parameter checking.
//!
//! A VSchema names vindexes by type (`type = "hash"`) and gives string parameters. The registry
//! refuses parameters the type does not declare (a typo such as `vnode = "64"` must not be
//! silently ignored) and names the vindex, its type and the parameter in the error.
//!
//! Built-in types ([`Registry::builtin`]):
//!
//! | type | parameters | file |
//! |---|---|---|
//! | `hash` | `column_type` | `hash.rs` |
//! | `numeric` | none (int columns) | `numeric.rs` |
//! | `range` | `column_type`, `ranges` | `range.rs` |
//! | `consistent_hash` | `column_type`, `shards`, `vnodes` | `consistent_hash.rs` |
//! | `lookup_unique`, `lookup` | `column_type`, `table`, `from`, `to` | `lookup.rs` |

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::value::ColumnType;
use crate::vindex::Vindex;

/// Vindex parameters as written in the VSchema.
pub type Params = BTreeMap<String, String>;

/// Builds a vindex from its spec; parameters were already checked against the declared list.
pub type Constructor = fn(&VindexSpec<'_>) -> Result<Arc<dyn Vindex>>;

/// What a constructor gets: the instance name, the type name and the parameters.
#[derive(Clone, Copy, Debug)]
pub struct VindexSpec<'a> {
    name: &'a str,
    type_name: &'a str,
    params: &'a Params,
}

impl<'a> VindexSpec<'a> {
    /// A spec.
    #[must_use]
    pub fn new(name: &'a str, type_name: &'a str, params: &'a Params) -> Self {
        VindexSpec { name, type_name, params }
    }

    /// The instance name.
    #[must_use]
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The type name.
    #[must_use]
    pub fn type_name(&self) -> &'a str {
        self.type_name
    }

    /// An optional parameter.
    #[must_use]
    pub fn get(&self, param: &'static str) -> Option<&'a str> {
        self.params.get(param).map(String::as_str)
    }

    /// A required parameter.
    pub fn required(&self, param: &'static str) -> Result<&'a str> {
        self.get(param).ok_or_else(|| Error::MissingParam {
            vindex: self.name.to_owned(),
            vindex_type: self.type_name.to_owned(),
            param,
        })
    }

    /// The required `column_type` parameter.
    pub fn column_type(&self) -> Result<ColumnType> {
        self.required("column_type")?.parse().map_err(|reason: &str| self.invalid("column_type", reason))
    }

    /// An [`Error::InvalidParam`] for this vindex.
    #[must_use]
    pub fn invalid(&self, param: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidParam {
            vindex: self.name.to_owned(),
            vindex_type: self.type_name.to_owned(),
            param,
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    params: &'static [&'static str],
    constructor: Constructor,
}

/// Type name → constructor.
#[derive(Clone, Debug)]
pub struct Registry {
    entries: BTreeMap<&'static str, Entry>,
}

impl Registry {
    /// A registry with no types.
    #[must_use]
    pub fn empty() -> Self {
        Registry { entries: BTreeMap::new() }
    }

    /// A registry with the built-in types (see the module docs).
    #[must_use]
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        r.register(crate::hash::TYPE_NAME, crate::hash::PARAMS, crate::hash::build);
        r.register(crate::numeric::TYPE_NAME, crate::numeric::PARAMS, crate::numeric::build);
        r.register(crate::range::TYPE_NAME, crate::range::PARAMS, crate::range::build);
        r.register(
            crate::consistent_hash::TYPE_NAME,
            crate::consistent_hash::PARAMS,
            crate::consistent_hash::build,
        );
        r.register(crate::lookup::UNIQUE_TYPE_NAME, crate::lookup::PARAMS, crate::lookup::build_unique);
        r.register(
            crate::lookup::NON_UNIQUE_TYPE_NAME,
            crate::lookup::PARAMS,
            crate::lookup::build_non_unique,
        );
        r
    }

    /// Add (or replace) a type accepting exactly the parameters in `params`.
    pub fn register(
        &mut self,
        type_name: &'static str,
        params: &'static [&'static str],
        constructor: Constructor,
    ) {
        self.entries.insert(type_name, Entry { params, constructor });
    }

    /// The registered type names, sorted.
    pub fn type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.keys().copied()
    }

    /// Build vindex `name` of type `type_name`. Unknown types and parameters are errors.
    pub fn build(&self, name: &str, type_name: &str, params: &Params) -> Result<Arc<dyn Vindex>> {
        let entry = self.entries.get(type_name).ok_or_else(|| Error::UnknownVindexType {
            vindex: name.to_owned(),
            vindex_type: type_name.to_owned(),
        })?;
        if let Some(unknown) = params.keys().find(|k| !entry.params.contains(&k.as_str())) {
            return Err(Error::UnknownParam {
                vindex: name.to_owned(),
                vindex_type: type_name.to_owned(),
                param: unknown.clone(),
                accepted: if entry.params.is_empty() { "none".to_owned() } else { entry.params.join(", ") },
            });
        }
        (entry.constructor)(&VindexSpec::new(name, type_name, params))
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params(kv: &[(&str, &str)]) -> Params {
        kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn builds_every_builtin() {
        let r = Registry::builtin();
        let names: Vec<_> = r.type_names().collect();
        assert_eq!(names, ["consistent_hash", "hash", "lookup", "lookup_unique", "numeric", "range"]);
        let h = r.build("h", "hash", &params(&[("column_type", "int")])).unwrap();
        assert_eq!((h.name(), h.type_name(), h.cost(), h.is_unique()), ("h", "hash", 1, true));
        let n = r.build("n", "numeric", &Params::new()).unwrap();
        assert_eq!(n.cost(), 0);
        let rg = r
            .build("r", "range", &params(&[("column_type", "int"), ("ranges", "MINVALUE => 00, 100 => 80")]))
            .unwrap();
        assert_eq!(rg.type_name(), "range");
        let c = r
            .build(
                "c",
                "consistent_hash",
                &params(&[("column_type", "text"), ("shards", "a,b"), ("vnodes", "8")]),
            )
            .unwrap();
        assert!(c.as_hashing().is_some());
        let lookup_params =
            params(&[("column_type", "text"), ("table", "user_email_lookup"), ("from", "email")]);
        let lu = r.build("lu", "lookup_unique", &lookup_params).unwrap();
        assert_eq!((lu.cost(), lu.is_unique(), lu.needs_lookup()), (10, true, true));
        let l = r.build("l", "lookup", &lookup_params).unwrap();
        assert_eq!((l.cost(), l.is_unique(), l.needs_lookup()), (20, false, true));
    }

    #[test]
    fn rejects_unknown_type_and_parameters() {
        let r = Registry::builtin();
        let err = r.build("v", "md5", &Params::new()).unwrap_err();
        assert_eq!(err.to_string(), "vindex v: unknown vindex type \"md5\"");
        let err = r
            .build(
                "ring",
                "consistent_hash",
                &params(&[("column_type", "int"), ("shards", "a"), ("vnode", "8")]),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "vindex ring (type consistent_hash): unknown parameter \"vnode\" (accepted: column_type, shards, vnodes)"
        );
        let err = r.build("n", "numeric", &params(&[("column_type", "int")])).unwrap_err();
        assert!(matches!(err, Error::UnknownParam { ref param, .. } if param == "column_type"));
    }

    #[test]
    fn missing_and_invalid_parameters_are_named() {
        let r = Registry::builtin();
        let err = r.build("h", "hash", &Params::new()).unwrap_err();
        assert_eq!(err.to_string(), "vindex h (type hash): missing required parameter \"column_type\"");
        let err = r.build("h", "hash", &params(&[("column_type", "float8")])).unwrap_err();
        assert!(matches!(err, Error::InvalidParam { param: "column_type", .. }), "{err}");
    }

    #[test]
    fn custom_types_can_be_registered() {
        fn build(spec: &VindexSpec<'_>) -> Result<Arc<dyn Vindex>> {
            Ok(Arc::new(crate::hash::HashVindex::new(spec.name(), ColumnType::Text)))
        }
        let mut r = Registry::empty();
        r.register("text_hash", &[], build);
        let v = r.build("t", "text_hash", &Params::new()).unwrap();
        assert_eq!(v.column_type(), ColumnType::Text);
        assert!(r.build("h", "hash", &Params::new()).is_err());
    }
}
