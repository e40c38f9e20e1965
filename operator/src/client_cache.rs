//! Clients (Kafka admin clients, Cassandra sessions) shared by every Pipeline that names the
//! same cluster and credentials. Connecting happens outside the table's lock, one attempt per
//! key at a time, so a cluster that takes 20 s to time out delays only the Pipelines that use
//! it. Keys are SHA-256 digests: no password is kept in the table. Clients unused for an hour
//! are dropped (rotated credentials, deleted Pipelines).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// How long a client may stay unused before it is dropped. Longer than the resync period, so
/// a healthy Pipeline's client is never dropped between two reconciles.
const IDLE_LIMIT: Duration = Duration::from_secs(3600);

/// The digest of the parts that identify a cluster and the credentials used with it.
pub fn cache_key<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    crate::digest::sha256_hex(parts)
}

struct Entry<T> {
    client: Arc<OnceCell<T>>,
    last_used: Instant,
}

/// A table of clients by key, each connected on first use.
pub struct ClientCache<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
}

impl<T> Default for ClientCache<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> std::fmt::Debug for ClientCache<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        formatter
            .debug_struct("ClientCache")
            .field("entries", &entries)
            .finish()
    }
}

impl<T: Clone> ClientCache<T> {
    /// The client for `key`, connected with `connect` if there is none yet. A failed
    /// connection is not kept: the next call tries again.
    pub async fn get_or_connect<E, F>(&self, key: String, connect: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            entries.retain(|_, entry| now.duration_since(entry.last_used) < IDLE_LIMIT);
            let entry = entries.entry(key).or_insert_with(|| Entry {
                client: Arc::new(OnceCell::new()),
                last_used: now,
            });
            entry.last_used = now;
            Arc::clone(&entry.client)
        };
        cell.get_or_try_init(|| connect).await.cloned()
    }

    /// How many clients (connected or connecting) the table holds.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the table holds no client.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn keys_differ_by_credentials_and_hide_them() {
        let one = cache_key(["cassandra:9042", "user", "secret-a"]);
        assert_ne!(one, cache_key(["cassandra:9042", "user", "secret-b"]));
        assert_eq!(one, cache_key(["cassandra:9042", "user", "secret-a"]));
        // Separators matter: ("ab", "c") is not ("a", "bc").
        assert_ne!(cache_key(["ab", "c"]), cache_key(["a", "bc"]));
        assert!(!one.contains("secret"));
    }

    #[tokio::test]
    async fn a_slow_cluster_does_not_block_another_and_failures_are_not_kept() {
        let cache: Arc<ClientCache<u32>> = Arc::default();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                cache
                    .get_or_connect("slow".into(), async move {
                        released.await.ok();
                        Ok::<_, String>(1)
                    })
                    .await
            })
        };
        // While "slow" is connecting, another key connects at once.
        let fast = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get_or_connect("fast".into(), async { Ok::<_, String>(2) }),
        )
        .await
        .expect("not blocked by the slow connection");
        assert_eq!(fast, Ok(2));
        release.send(()).ok();
        assert_eq!(slow.await.expect("joined"), Ok(1));

        let attempts = AtomicU32::new(0);
        let failed = cache
            .get_or_connect("flaky".into(), async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err::<u32, _>("refused".to_string())
            })
            .await;
        assert_eq!(failed, Err("refused".to_string()));
        let retried = cache
            .get_or_connect("flaky".into(), async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(3)
            })
            .await;
        assert_eq!(retried, Ok(3));
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        // Connected once, served from the table afterwards.
        let cached = cache
            .get_or_connect("flaky".into(), async { Ok::<_, String>(4) })
            .await;
        assert_eq!(cached, Ok(3));
    }
}
