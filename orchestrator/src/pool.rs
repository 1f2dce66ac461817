//! Strings and secret digests a lowering computes or stores once, however many objects carry
//! them: a thousand agents have the same field names, mostly the same values, and the same
//! secrets (hashing those is the bulk of lowering a large fleet).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::resource::FieldValue;

/// What the objects of one deployment share, computed or stored once: secret digests (every
/// agent carries the same secrets, and hashing them is the bulk of lowering a large fleet),
/// and the names and texts of fields (a thousand agents have the same field names and mostly
/// the same values).
pub(crate) struct Pool<'a> {
    deployment: &'a str,
    /// Digests by field name, then by value.
    digests: HashMap<Arc<str>, HashMap<Arc<str>, FieldValue>>,
    texts: HashSet<Arc<str>>,
}

impl<'a> Pool<'a> {
    pub(crate) fn new(deployment: &'a str) -> Self {
        Pool { deployment, digests: HashMap::new(), texts: HashSet::new() }
    }

    /// The one copy of `text`.
    pub(crate) fn text(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.texts.get(text) {
            return Arc::clone(known);
        }
        let new: Arc<str> = text.into();
        self.texts.insert(Arc::clone(&new));
        new
    }

    /// The digest of a secret `value` of `field` (see [`FieldValue::secret`]).
    pub(crate) fn digest(&mut self, field: &Arc<str>, value: &str) -> FieldValue {
        let deployment = self.deployment;
        let by_value = self.digests.entry(Arc::clone(field)).or_default();
        if let Some(known) = by_value.get(value) {
            return known.clone();
        }
        let digest = FieldValue::secret(deployment, field, value);
        by_value.insert(value.into(), digest.clone());
        digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_held_once() {
        let mut pool = Pool::new("d");
        let a = pool.text("env.RIVETOS_ROLE");
        let b = pool.text(&format!("env.{}", "RIVETOS_ROLE"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &pool.text("env.OTHER")));
    }

    #[test]
    fn digests_are_the_secret_digest_computed_once() {
        let mut pool = Pool::new("d");
        let field = pool.text("env.API_KEY");
        let first = pool.digest(&field, "hunter2");
        assert_eq!(first, FieldValue::secret("d", "env.API_KEY", "hunter2"));
        assert!(Arc::ptr_eq(&first.text, &pool.digest(&field, "hunter2").text));
        assert_ne!(first, pool.digest(&field, "other"));
    }
}
