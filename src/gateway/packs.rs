//! The gateway's shared pack cache: when sessions on the same repository clone at about
//! the same time, their `git-upload-pack` fetches are the same request (the same wants,
//! no haves, the same capabilities) and get the same pack. The first one goes upstream;
//! the others wait for its answer and are given the same bytes, so the repository's
//! server builds and sends the pack once (what GitLab's Gitaly does with its
//! pack-objects cache).
//!
//! Invariants: only a `fetch` is shared (never `ls-refs`, whose answer changes when a
//! branch moves: objects named by id never change); the key covers the repository, its
//! credential, the protocol header, the encoding and the whole request body, so a
//! session gets only what its own request would have got; an answer is shared only when
//! it was whole (status 200, no error, under the size limit), else each waiting request
//! goes upstream itself. Entries live for [`TTL`], within [`MAX_TOTAL`] bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

/// How long a pack is kept for later identical fetches.
pub const TTL: Duration = Duration::from_secs(300);
/// The largest answer kept; a bigger one is passed on, not shared.
pub const MAX_ENTRY: usize = 128 * 1024 * 1024;
/// All answers kept, at most.
pub const MAX_TOTAL: usize = 256 * 1024 * 1024;
/// The largest request body read to decide (a bigger fetch is not shared).
pub const MAX_REQUEST: usize = 1024 * 1024;
/// How long a request waits for an identical one in flight before going itself.
const WAIT: Duration = Duration::from_secs(600);

pub type Key = [u8; 32];

/// The cache key of a fetch, or None when the request is not one to share.
pub fn key(
    upstream: &str,
    authorization: Option<&str>,
    protocol: Option<&[u8]>,
    encoding: Option<&[u8]>,
    body: &[u8],
) -> Option<Key> {
    let is_ls_refs = body.windows(15).any(|w| w == b"command=ls-refs");
    if is_ls_refs || body.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for part in [
        upstream.as_bytes(),
        authorization.unwrap_or("").as_bytes(),
        protocol.unwrap_or(b""),
        encoding.unwrap_or(b""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(body);
    Some(h.finalize().into())
}

/// One answer, being received or received.
#[derive(Default)]
pub struct Flight {
    state: Mutex<FlightState>,
    changed: Notify,
}

#[derive(Default)]
struct FlightState {
    content_type: Option<String>,
    chunks: Vec<Bytes>,
    size: usize,
    /// None while it is received; Some(true) when whole and shareable.
    done: Option<bool>,
    finished_at: Option<Instant>,
}

impl Flight {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlightState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upstream answered 200 with this content type: its body follows.
    pub fn start(&self, content_type: Option<String>) {
        self.lock().content_type = content_type;
    }

    /// A chunk of the answer; false once the answer is too big to keep (it is then
    /// not shared).
    pub fn push(&self, chunk: &Bytes) -> bool {
        let mut st = self.lock();
        if st.done.is_some() {
            return false;
        }
        if st.size + chunk.len() > MAX_ENTRY {
            st.chunks.clear();
            st.done = Some(false);
            st.finished_at = Some(Instant::now());
            drop(st);
            self.changed.notify_waiters();
            return false;
        }
        st.size += chunk.len();
        st.chunks.push(chunk.clone());
        true
    }

    /// The answer ended: `whole` when it may be shared.
    pub fn finish(&self, whole: bool) {
        let mut st = self.lock();
        if st.done.is_none() {
            st.done = Some(whole);
            if !whole {
                st.chunks.clear();
            }
            st.finished_at = Some(Instant::now());
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Waits for the answer: its content type and chunks when it can be shared.
    pub async fn wait(&self) -> Option<(Option<String>, Vec<Bytes>)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.lock();
                match st.done {
                    Some(true) => return Some((st.content_type.clone(), st.chunks.clone())),
                    Some(false) => return None,
                    None => {}
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    fn size(&self) -> usize {
        self.lock().size
    }

    fn expired(&self, now: Instant) -> bool {
        let st = self.lock();
        match (st.done, st.finished_at) {
            (Some(true), Some(at)) => now.duration_since(at) > TTL,
            (Some(false), _) => true,
            _ => false,
        }
    }
}

/// What a request is to the cache.
pub enum Role {
    /// The first: go upstream and fill the flight.
    Leader(Arc<Flight>),
    /// An identical request is (or was) in flight: wait for its answer.
    Follower(Arc<Flight>),
}

/// The packs, by key.
#[derive(Default)]
pub struct Packs {
    entries: Mutex<HashMap<Key, (Instant, Arc<Flight>)>>,
    /// Fetches answered from the cache, and fetches that went upstream (for tests and
    /// the log).
    pub shared: std::sync::atomic::AtomicU64,
}

impl Packs {
    /// The role of a request with `key`: the leader of a new flight, or a follower of one
    /// in flight or kept.
    pub fn join(&self, key: Key) -> Role {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (_, f)| !f.expired(now));
        if let Some((_, f)) = entries.get(&key) {
            return Role::Follower(f.clone());
        }
        // Room for one more: the oldest go first.
        let mut total: usize = entries.values().map(|(_, f)| f.size()).sum();
        while total > MAX_TOTAL {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((_, f)) = entries.remove(&oldest) {
                total -= f.size();
            }
        }
        let flight = Arc::new(Flight::default());
        entries.insert(key, (now, flight.clone()));
        Role::Leader(flight)
    }

    /// Entries kept now (expired ones included until the next `join`).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FETCH: &[u8] = b"0011command=fetch0001000dthin-pack0032want 1111111111111111111111111111111111111111\n0009done\n0000";

    #[test]
    fn only_fetches_are_keyed_and_every_part_counts() {
        let k = key(
            "https://x/r.git",
            Some("Basic a"),
            Some(b"version=2"),
            None,
            FETCH,
        )
        .unwrap();
        assert_ne!(
            Some(k),
            key(
                "https://x/s.git",
                Some("Basic a"),
                Some(b"version=2"),
                None,
                FETCH
            )
        );
        assert_ne!(
            Some(k),
            key(
                "https://x/r.git",
                Some("Basic b"),
                Some(b"version=2"),
                None,
                FETCH
            )
        );
        assert_ne!(
            Some(k),
            key("https://x/r.git", Some("Basic a"), None, None, FETCH)
        );
        assert_ne!(
            Some(k),
            key(
                "https://x/r.git",
                Some("Basic a"),
                Some(b"version=2"),
                Some(b"gzip"),
                FETCH
            )
        );
        assert!(
            key(
                "https://x/r.git",
                None,
                Some(b"version=2"),
                None,
                b"0014command=ls-refs\n0000"
            )
            .is_none()
        );
        assert!(key("https://x/r.git", None, None, None, b"").is_none());
    }

    #[tokio::test]
    async fn a_burst_of_identical_fetches_goes_upstream_once() {
        let packs = Arc::new(Packs::default());
        let k = key("u", None, None, None, FETCH).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        let leaders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..20 {
            let packs = packs.clone();
            let leaders = leaders.clone();
            tasks.spawn(async move {
                match packs.join(k) {
                    Role::Leader(f) => {
                        leaders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        f.start(Some("application/x-git-upload-pack-result".into()));
                        f.push(&Bytes::from_static(b"PACK"));
                        tokio::task::yield_now().await;
                        f.push(&Bytes::from_static(b"data"));
                        f.finish(true);
                        b"PACKdata".to_vec()
                    }
                    Role::Follower(f) => {
                        let (_, chunks) = f.wait().await.expect("shared");
                        chunks.concat()
                    }
                }
            });
        }
        while let Some(got) = tasks.join_next().await {
            assert_eq!(got.unwrap(), b"PACKdata");
        }
        assert_eq!(leaders.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(packs.join(k), Role::Follower(_)));
    }

    #[tokio::test]
    async fn a_failed_or_oversized_answer_is_not_shared() {
        let packs = Packs::default();
        let k = key("u", None, None, None, FETCH).unwrap();
        let Role::Leader(f) = packs.join(k) else {
            panic!("not the leader")
        };
        let Role::Follower(g) = packs.join(k) else {
            panic!("not a follower")
        };
        f.push(&Bytes::from_static(b"PA"));
        f.finish(false);
        assert!(g.wait().await.is_none());
        // The failed flight is gone: the next request leads again.
        let Role::Leader(f) = packs.join(k) else {
            panic!("not the leader")
        };
        assert!(!f.push(&Bytes::from(vec![0u8; MAX_ENTRY + 1])));
        let Role::Leader(_) = packs.join(k) else {
            panic!("an oversized answer was kept")
        };
    }
}
