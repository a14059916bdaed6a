//! A small map keyed by `u32`, for the host layer's registries of things in flight (exchanges by context
//! id, calls by token).
//!
//! Why not `HashMap<u32, T>`: each value type was a hashbrown copy of its own in the module (six of them,
//! about 7.6 KB). Here the entries are a `Vec` kept sorted by key and found by binary search, so a worker
//! with thousands of streams open (long-lived SSE streams stay registered) still finds one in a dozen
//! comparisons. Values are boxed so that an entry is 8 bytes on wasm32: a removal shifts the entries after
//! it, which stays cheap however large the values are. Keys come from the host's increasing counters
//! (context ids, call tokens), so an insertion is almost always a push at the end.

/// Entries keyed by `u32`, at most one per key, in key order.
pub struct Slots<T>(Vec<(u32, Box<T>)>);

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

    /// Where `key` is, or where it would go.
    fn find(&self, key: u32) -> Result<usize, usize> {
        // The newest key is the likeliest to be asked for, and to be appended after.
        match self.0.last() {
            Some((last, _)) if *last < key => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&key, |(k, _)| *k),
        }
    }

    pub fn get(&self, key: &u32) -> Option<&T> {
        self.find(*key).ok().map(|i| &*self.0[i].1)
    }

    pub fn get_mut(&mut self, key: &u32) -> Option<&mut T> {
        self.find(*key).ok().map(|i| &mut *self.0[i].1)
    }

    pub fn contains_key(&self, key: &u32) -> bool {
        self.find(*key).is_ok()
    }

    /// Inserts or replaces the value of `key`; returns the value it replaced.
    pub fn insert(&mut self, key: u32, value: T) -> Option<T> {
        match self.find(key) {
            Ok(i) => Some(std::mem::replace(&mut *self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, Box::new(value)));
                None
            }
        }
    }

    /// The value of `key`, inserted by `make` first if there is none.
    pub fn get_or_insert_with(&mut self, key: u32, make: impl FnOnce() -> T) -> &mut T {
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (key, Box::new(make())));
                i
            }
        };
        &mut self.0[i].1
    }

    pub fn remove(&mut self, key: &u32) -> Option<T> {
        let i = self.find(*key).ok()?;
        Some(*self.0.remove(i).1)
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&u32, &mut T) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &u32> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u32, &T)> {
        self.0.iter().map(|(k, v)| (k, &**v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u32, &mut T)> {
        self.0.iter_mut().map(|(k, v)| (&*k, &mut **v))
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
