//! Whose is this pod IP? Asked of the API on demand, only for addresses a pod keeps failing
//! to connect to: `GET /api/v1/pods?fieldSelector=status.podIP=<ip>&limit=4`
//! (`kubectl get pods -A --field-selector status.podIP=<ip>`). Answers are cached for
//! [`CACHE_TTL`] (at most [`CACHE_MAX`] addresses) and requests are rate-limited by a token
//! bucket ([`PER_MINUTE`] a minute, bursts of [`BURST`]): a pod that connects to thousands of
//! dead addresses costs the API at most that. No cluster-wide pod watch: a node sees a few
//! such addresses, a watch would hold every pod of the cluster.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::Value;
use tracing::debug;

use crate::model::{PodId, PodIpOwner, PodIpOwners};
use crate::util::lock;

/// How long an answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Addresses cached, at most (the oldest half is dropped beyond).
pub const CACHE_MAX: usize = 1024;
/// Look-ups per minute, sustained.
pub const PER_MINUTE: u32 = 30;
/// Look-ups in a burst.
pub const BURST: u32 = 10;
/// Longest one look-up may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Most of an answer read (a list of at most 4 pods; a pod object is a few KiB).
const MAX_BODY: usize = 256 << 10;

/// A token bucket: `rate` tokens a minute, at most `burst` saved.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_minute: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_minute) / 60.0,
            last: now,
        }
    }

    /// Take a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The owner of each pod in a `PodList` answer that still holds its IP (not `Succeeded` or
/// `Failed`: their IPs are released, though the field selector still matches them).
pub fn owner_from_list(list: &Value) -> PodIpOwner {
    let Some(items) = list.get("items").and_then(Value::as_array) else {
        return PodIpOwner::Unknown;
    };
    let s = |v: &Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut live = items.iter().filter(|p| {
        !matches!(
            s(p, &["status", "phase"]).as_deref(),
            Some("Succeeded" | "Failed")
        )
    });
    let Some(first) = live.next() else {
        return PodIpOwner::NoPod;
    };
    std::iter::once(first)
        .chain(live)
        .find_map(|p| {
            Some(PodIpOwner::Pod {
                id: PodId {
                    namespace: s(p, &["metadata", "namespace"])?,
                    name: s(p, &["metadata", "name"])?,
                },
                node: s(p, &["spec", "nodeName"]),
            })
        })
        .unwrap_or(PodIpOwner::Unknown)
}

/// Pod IP owners from the API, cached and rate-limited.
pub struct PodIpLookup {
    client: kube::Client,
    cache: Mutex<HashMap<IpAddr, (PodIpOwner, Instant)>>,
    bucket: Mutex<TokenBucket>,
}

impl std::fmt::Debug for PodIpLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodIpLookup").finish_non_exhaustive()
    }
}

impl PodIpLookup {
    /// Look-ups through `client`.
    pub fn new(client: kube::Client) -> Self {
        PodIpLookup {
            client,
            cache: Mutex::new(HashMap::new()),
            bucket: Mutex::new(TokenBucket::new(PER_MINUTE, BURST, Instant::now())),
        }
    }

    async fn ask(&self, ip: IpAddr) -> Result<PodIpOwner, String> {
        let path = format!("/api/v1/pods?fieldSelector=status.podIP%3D{ip}&limit=4");
        let req = http::Request::get(path)
            .body(kube::client::Body::empty())
            .map_err(|e| e.to_string())?;
        let res = self.client.send(req).await.map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        let mut body = res.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() > MAX_BODY {
                    return Err("answer too large".into());
                }
            }
        }
        let list: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(owner_from_list(&list))
    }

    async fn lookup(&self, ip: IpAddr) -> PodIpOwner {
        let now = Instant::now();
        if let Some((owner, at)) = lock(&self.cache).get(&ip)
            && now.saturating_duration_since(*at) < CACHE_TTL
        {
            return owner.clone();
        }
        if !lock(&self.bucket).take(now) {
            return PodIpOwner::Unknown;
        }
        let owner = match tokio::time::timeout(TIMEOUT, self.ask(ip)).await {
            Ok(Ok(owner)) => owner,
            Ok(Err(e)) => {
                debug!(%ip, error = %e, "pod IP look-up failed");
                return PodIpOwner::Unknown;
            }
            Err(_) => return PodIpOwner::Unknown,
        };
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| now.saturating_duration_since(*at) < CACHE_TTL / 2);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(ip, (owner.clone(), now));
        owner
    }
}

impl PodIpOwners for PodIpLookup {
    fn owner(&self, ip: IpAddr) -> Pin<Box<dyn Future<Output = PodIpOwner> + Send + '_>> {
        Box::pin(self.lookup(ip))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_bucket_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, 3, t0);
        assert_eq!((0..5).filter(|_| b.take(t0)).count(), 3);
        assert!(!b.take(t0 + Duration::from_millis(500)));
        assert!(b.take(t0 + Duration::from_millis(1000)));
        // Idle for long: no more than a burst saved.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 3);
    }

    #[test]
    fn owners_from_lists() {
        let pod = |phase: &str| {
            json!({"metadata": {"namespace": "shop", "name": "api-1"},
                   "spec": {"nodeName": "node-2"}, "status": {"phase": phase}})
        };
        assert_eq!(
            owner_from_list(&json!({"items": [pod("Running")]})),
            PodIpOwner::Pod {
                id: PodId {
                    namespace: "shop".into(),
                    name: "api-1".into()
                },
                node: Some("node-2".into())
            }
        );
        assert_eq!(
            owner_from_list(&json!({"items": [pod("Succeeded")]})),
            PodIpOwner::NoPod
        );
        assert_eq!(owner_from_list(&json!({"items": []})), PodIpOwner::NoPod);
        assert_eq!(owner_from_list(&json!({"items": 7})), PodIpOwner::Unknown);
        assert_eq!(
            owner_from_list(&json!({"items": [{"metadata": 1}]})),
            PodIpOwner::Unknown
        );
    }
}
