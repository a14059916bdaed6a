//! A small map keyed by `u32`, for the host layer's registries of things in flight (exchanges by context
//! id, calls by token).
//!
//! Why not `HashMap<u32, T>`: each value type was a hashbrown copy of its own in the module (six of them),
//! and a worker holds only a handful of entries, which a linear scan of a short `Vec` finds faster than
//! SipHash hashes the key. The methods mirror `HashMap`'s, so the registries' call sites read the same.
//! Entries are in no particular order: a removal moves the last entry into the gap.

/// Entries keyed by `u32`, at most one per key.
pub struct Slots<T>(Vec<(u32, T)>);

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Slots<T> {
    /// Const, so that a `thread_local!` holding one needs no lazy initialisation.
    pub const fn new() -> Self {
        Slots(Vec::new())
    }

    fn position(&self, key: u32) -> Option<usize> {
        self.0.iter().position(|(k, _)| *k == key)
    }

    pub fn get(&self, key: &u32) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &u32) -> Option<&mut T> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &u32) -> bool {
        self.position(*key).is_some()
    }

    /// Inserts or replaces the value of `key`; returns the value it replaced.
    pub fn insert(&mut self, key: u32, value: T) -> Option<T> {
        match self.get_mut(&key) {
            Some(old) => Some(std::mem::replace(old, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// The value of `key`, inserted by `make` first if there is none.
    pub fn get_or_insert_with(&mut self, key: u32, make: impl FnOnce() -> T) -> &mut T {
        let i = match self.position(key) {
            Some(i) => i,
            None => {
                self.0.push((key, make()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    pub fn remove(&mut self, key: &u32) -> Option<T> {
        let i = self.position(*key)?;
        Some(self.0.swap_remove(i).1)
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&u32, &mut T) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &u32> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u32, &T)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u32, &mut T)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests;
