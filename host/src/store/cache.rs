//! Stored transactions kept in memory between staging and matching.
//!
//! Staging reads every row of an import; a matching claim needs the same
//! rows again (the matcher plugin gets whole transactions), by then at
//! random places of a table much larger than the server's buffers: 2.2
//! million random reads, a fifth of `accord bench match`'s time. Rows of
//! `transactions` are never updated or deleted, so a copy can never be
//! stale: staging keeps the rows that will be claimed (pending payments and
//! merchant records) here, a claim takes what it finds and reads only the
//! rest, and a decision drops what no claim needs any more. Bounded by an
//! approximate size in bytes; when full the cache evicts (S3-FIFO,
//! `quick_cache`) and claims read from the database again. Another daemon
//! on the same database simply reads.

use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::domain::Transaction;

/// Default size: about a million transactions.
pub const DEFAULT_CACHE_BYTES: u64 = 512 << 20;

#[derive(Clone)]
struct Size;

impl Weighter<i64, Arc<Transaction>> for Size {
    fn weight(&self, _: &i64, t: &Arc<Transaction>) -> u64 {
        approximate_size(t)
    }
}

/// Heap and inline bytes of `t` (the allocator's own overhead aside).
pub fn approximate_size(t: &Transaction) -> u64 {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
    let heap = t.external_id.capacity()
        + t.amount.currency.capacity()
        + t.merchant_ids.capacity() * std::mem::size_of::<crate::domain::MerchantIdentifier>()
        + t.merchant_ids
            .iter()
            .map(|m| m.value.capacity())
            .sum::<usize>()
        + t.optional_texts().into_iter().map(text).sum::<usize>()
        + t.extras.capacity() * std::mem::size_of::<(String, String)>()
        + t.extras
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity())
            .sum::<usize>();
    // The entry itself: key, Arc header, the struct.
    (heap + std::mem::size_of::<Transaction>() + 32) as u64
}

/// Transactions by id (see the module docs).
pub struct TransactionCache {
    /// None: caching off (size 0).
    cache: Option<Cache<i64, Arc<Transaction>, Size>>,
}

impl std::fmt::Debug for TransactionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("TransactionCache");
        if let Some(c) = &self.cache {
            d.field("entries", &c.len())
                .field("bytes", &c.weight())
                .field("capacity_bytes", &c.capacity());
        }
        d.finish()
    }
}

impl TransactionCache {
    /// A cache of about `bytes` (0: none).
    pub fn new(bytes: u64) -> TransactionCache {
        TransactionCache {
            cache: (bytes > 0).then(|| {
                // quick_cache sizes its tables from the expected entry count.
                let estimated = (bytes / 600).max(16) as usize;
                Cache::with_weighter(estimated, bytes, Size)
            }),
        }
    }

    pub fn insert(&self, id: i64, t: Arc<Transaction>) {
        if let Some(c) = &self.cache {
            c.insert(id, t);
        }
    }

    pub fn get(&self, id: i64) -> Option<Arc<Transaction>> {
        self.cache.as_ref()?.get(&id)
    }

    pub fn remove(&self, ids: impl IntoIterator<Item = i64>) {
        if let Some(c) = &self.cache {
            for id in ids {
                c.remove(&id);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, Cache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(id: &str) -> Arc<Transaction> {
        let mut t = Transaction::example(id);
        t.extras = vec![("k".into(), "v".repeat(1000))];
        Arc::new(t)
    }

    #[test]
    fn holds_what_fits_and_forgets_what_is_removed() {
        let cache = TransactionCache::new(1 << 20);
        cache.insert(1, tx("a"));
        assert_eq!(cache.get(1).unwrap().external_id, "a");
        cache.remove([1]);
        assert!(cache.get(1).is_none());
        // About 1.5 kB an entry: a 1 MB cache keeps well under 1,000 of 5,000.
        for i in 0..5000 {
            cache.insert(i, tx("b"));
        }
        assert!(cache.len() < 1000, "{} entries", cache.len());
        assert!(cache.len() > 100, "{} entries", cache.len());
        let off = TransactionCache::new(0);
        off.insert(1, tx("a"));
        assert!(off.get(1).is_none());
        assert!(off.is_empty());
    }
}
