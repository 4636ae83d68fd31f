//! [`Contexts`]: request contexts by id, without hashing. Hosts number contexts in
//! sequence, so the live ones (the requests in flight) sit in a window of ids, and a table
//! indexed by an id's low bits holds them one per place. An id whose place a live older
//! request still holds (a long request the window moved past) goes to a small spill map.
//!
//! A header filter's guest time was mostly this lookup when it was a hash map (hashbrown's
//! probing, its tombstones from constant insert/remove): the table is one index and one
//! compare.

/// Ids to values; a value is `None` while its hook runs (taken out, see `dispatch`).
pub(crate) struct Contexts<T> {
    table: Vec<Option<(u32, Option<T>)>>,
    spill: rustc_hash::FxHashMap<u32, Option<T>>,
    live: usize,
}

impl<T> Default for Contexts<T> {
    fn default() -> Self {
        Contexts {
            table: Vec::new(),
            spill: Default::default(),
            live: 0,
        }
    }
}

/// The table's size before its first growth.
const FIRST_SIZE: usize = 16;

impl<T> Contexts<T> {
    fn place(&self, id: u32) -> usize {
        id as usize & (self.table.len() - 1)
    }

    /// Whether `id` is known.
    pub(crate) fn contains(&self, id: u32) -> bool {
        if self.table.is_empty() {
            return false;
        }
        match &self.table[self.place(id)] {
            Some((k, _)) if *k == id => true,
            _ => !self.spill.is_empty() && self.spill.contains_key(&id),
        }
    }

    /// `id`'s entry.
    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Option<T>> {
        if self.table.is_empty() {
            return None;
        }
        let place = self.place(id);
        match &mut self.table[place] {
            Some((k, value)) if *k == id => Some(value),
            _ if self.spill.is_empty() => None,
            _ => self.spill.get_mut(&id),
        }
    }

    /// `id`'s entry, or `make`'s value put in as `id`'s (nothing if `make` gives `None`).
    pub(crate) fn get_or_insert_with(
        &mut self,
        id: u32,
        make: impl FnOnce() -> Option<Option<T>>,
    ) -> Option<&mut Option<T>> {
        if !self.table.is_empty() {
            let place = self.place(id);
            if matches!(&self.table[place], Some((k, _)) if *k == id) {
                return self.table[place].as_mut().map(|(_, value)| value);
            }
            if !self.spill.is_empty() && self.spill.contains_key(&id) {
                return self.spill.get_mut(&id);
            }
        }
        let value = make()?;
        Some(self.insert_new(id, value))
    }

    /// Sets `id`'s entry; returns it.
    pub(crate) fn insert(&mut self, id: u32, value: Option<T>) -> &mut Option<T> {
        if !self.contains(id) {
            return self.insert_new(id, value);
        }
        let place = self.place(id);
        match &mut self.table[place] {
            Some((k, entry)) if *k == id => {
                *entry = value;
                entry
            }
            // Known and not in its place: spilled.
            _ => self.spill.entry(id).insert_entry(value).into_mut(),
        }
    }

    /// Adds `id`, which is not known.
    fn insert_new(&mut self, id: u32, value: Option<T>) -> &mut Option<T> {
        // Kept at most half full, so that a window of ids mostly finds its places free.
        if (self.live + 1) * 2 > self.table.len() {
            self.grow();
        }
        self.live += 1;
        self.put(id, value)
    }

    /// Puts a new entry in its place, or in the spill map if another id holds the place.
    fn put(&mut self, id: u32, value: Option<T>) -> &mut Option<T> {
        let place = self.place(id);
        match &mut self.table[place] {
            free @ None => &mut free.insert((id, value)).1,
            Some(_) => self.spill.entry(id).insert_entry(value).into_mut(),
        }
    }

    /// Forgets `id`; its value if it had one.
    pub(crate) fn remove(&mut self, id: u32) -> Option<Option<T>> {
        if self.table.is_empty() {
            return None;
        }
        let place = self.place(id);
        let removed = match &mut self.table[place] {
            Some((k, _)) if *k == id => self.table[place].take().map(|(_, v)| v),
            _ if self.spill.is_empty() => None,
            _ => self.spill.remove(&id),
        };
        if removed.is_some() {
            self.live -= 1;
        }
        removed
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Option<T>)> {
        let table = self.table.iter().flatten().map(|(id, v)| (*id, v));
        table.chain(self.spill.iter().map(|(id, v)| (*id, v)))
    }

    /// Whether no id is known.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Doubles the table and places every entry again (spilled ones too, which may now
    /// have a place of their own).
    fn grow(&mut self) {
        let size = (self.table.len() * 2).max(FIRST_SIZE);
        let old = std::mem::replace(&mut self.table, (0..size).map(|_| None).collect());
        let spilled = std::mem::take(&mut self.spill);
        let entries = old.into_iter().flatten().chain(spilled);
        for (id, value) in entries {
            self.put(id, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Contexts;

    #[test]
    fn a_window_of_ids_and_a_long_request_behind_it() {
        let mut c = Contexts::default();
        // A long request, then 10,000 short ones with up to 20 in flight.
        c.insert(2, Some("long"));
        for id in 3..10_003u32 {
            c.insert(id, None);
            *c.get_mut(id).expect("just inserted") = Some("short");
            if id >= 23 {
                assert_eq!(c.remove(id - 20), Some(Some("short")), "id {}", id - 20);
            }
            assert_eq!(c.get_mut(2), Some(&mut Some("long")), "at id {id}");
        }
        assert!(c.contains(2));
        assert!(!c.contains(1));
        assert!(c.table.len() <= 64, "the table stays the window's size");
        for id in 9_983..10_003u32 {
            assert_eq!(c.remove(id), Some(Some("short")));
        }
        assert_eq!(c.remove(2), Some(Some("long")));
        assert_eq!(c.remove(2), None);
        assert!(c.is_empty());
    }

    #[test]
    fn ids_that_share_a_place_are_all_kept() {
        let mut c = Contexts::default();
        let ids: Vec<u32> = (0..200).map(|i| i * 1024 + 5).collect();
        for &id in &ids {
            c.insert(id, Some(id));
        }
        c.insert(5, Some(0)); // replaced, not added
        for &id in &ids {
            let expected = if id == 5 { 0 } else { id };
            assert_eq!(c.get_mut(id).copied(), Some(Some(expected)), "id {id}");
        }
        for &id in ids.iter().rev() {
            assert!(c.remove(id).is_some(), "id {id}");
            assert!(!c.contains(id));
        }
        assert!(c.is_empty());
    }

    #[test]
    fn get_or_insert_with_finds_placed_and_spilled_ids_and_makes_only_new_ones() {
        let mut c = Contexts::default();
        let mut made = 0;
        // Ids that share a place: the first is placed, the rest spill.
        let ids: Vec<u32> = (0..50).map(|i| i * 1024 + 7).collect();
        for &id in &ids {
            let entry = c.get_or_insert_with(id, || {
                made += 1;
                Some(Some(id))
            });
            assert_eq!(entry.copied(), Some(Some(id)));
        }
        assert_eq!(made, ids.len());
        for &id in &ids {
            let entry = c.get_or_insert_with(id, || panic!("id {id} is known"));
            assert_eq!(entry.copied(), Some(Some(id)), "id {id}");
        }
        // `None` from `make`: nothing is added.
        assert_eq!(c.get_or_insert_with(3, || None), None);
        assert!(!c.contains(3));
        for &id in &ids {
            assert_eq!(c.remove(id), Some(Some(id)));
        }
        assert!(c.is_empty());
    }
}
