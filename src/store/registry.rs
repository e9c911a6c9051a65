//! The stores a node hosts, by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{StoreError, VersionedStore};

/// Named stores. Invariant: names are unique; looking up a name that is not here is a
/// [`StoreError::UnknownStore`] listing the names that are.
#[derive(Default, Debug)]
pub struct StoreRegistry {
    stores: BTreeMap<String, Arc<VersionedStore>>,
}

impl StoreRegistry {
    /// No stores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a store; a second store with the same name is refused.
    pub fn insert(&mut self, store: VersionedStore) -> Result<Arc<VersionedStore>, StoreError> {
        let name = store.name().to_owned();
        if self.stores.contains_key(&name) {
            return Err(StoreError::InvalidConfig {
                store: name,
                field: "name",
                reason: "another store already has this name".into(),
            });
        }
        let store = Arc::new(store);
        self.stores.insert(name, Arc::clone(&store));
        Ok(store)
    }

    /// The store called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<VersionedStore>, StoreError> {
        self.stores
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::UnknownStore {
                store: name.to_owned(),
                known: self.names(),
            })
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.stores.keys().cloned().collect()
    }

    /// All stores.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VersionedStore>> {
        self.stores.values()
    }
}
