//! `--secure-metrics` authorization, as controller-runtime's authn/authz filter and
//! kube-rbac-proxy do it: the bearer token is authenticated with a TokenReview
//! (authentication.k8s.io/v1), and the user is authorized with a SubjectAccessReview
//! (authorization.k8s.io/v1) for the non-resource URL (`path`, verb `get`).
//!
//! Answers (allowed, forbidden, unauthenticated) are cached for [`CACHE_TTL`] in a bounded
//! map keyed by a keyed hash of token and path (the token itself is not kept); API errors are
//! never cached, and become 503, never 200.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// How long an answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Cached answers at most (a peer sending random tokens cannot grow the map).
pub const CACHE_CAP: usize = 1024;
/// Each review call's deadline.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No token, or one the API does not authenticate: 401.
    Unauthenticated,
    /// Authenticated, but not allowed `get` on the path: 403.
    Forbidden,
    /// 200.
    Allowed,
}

/// Why no verdict could be reached (503).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The TokenReview failed.
    #[error("TokenReview failed: {0}")]
    TokenReview(#[source] kube::Error),
    /// The SubjectAccessReview failed.
    #[error("SubjectAccessReview failed: {0}")]
    AccessReview(#[source] kube::Error),
    /// The API did not answer in time.
    #[error("the Kubernetes API did not answer a review within {0:?}")]
    Timeout(Duration),
}

/// A review's future.
pub type ReviewFuture<'a> = Pin<Box<dyn Future<Output = Result<Verdict, AuthError>> + Send + 'a>>;

/// Asks the API about a token (the real one: [`KubeReviewer`]; tests: a fake).
pub trait Reviewer: Send + Sync + std::fmt::Debug {
    /// Authenticate `token`, then authorize `get` on `path` for its user.
    fn review<'a>(&'a self, token: &'a str, path: &'a str) -> ReviewFuture<'a>;
}

/// TokenReview + SubjectAccessReview through the agent's service account.
#[derive(Clone)]
pub struct KubeReviewer {
    client: kube::Client,
}

impl std::fmt::Debug for KubeReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeReviewer")
    }
}

impl KubeReviewer {
    /// Reviews through `client`.
    pub fn new(client: kube::Client) -> Self {
        KubeReviewer { client }
    }

    async fn ask(&self, token: &str, path: &str) -> Result<Verdict, AuthError> {
        // `kubectl create token` / POST /apis/authentication.k8s.io/v1/tokenreviews
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::TokenReview)?;
        let status = reviewed.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => return Ok(Verdict::Unauthenticated),
        };
        // `kubectl auth can-i get /metrics --as USER`:
        // POST /apis/authorization.k8s.io/v1/subjectaccessreviews
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some("get".to_owned()),
                }),
                resource_attributes: None,
            },
            ..SubjectAccessReview::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
            .map_err(AuthError::AccessReview)?;
        let allowed = decided
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true));
        Ok(if allowed {
            Verdict::Allowed
        } else {
            Verdict::Forbidden
        })
    }
}

impl Reviewer for KubeReviewer {
    fn review<'a>(&'a self, token: &'a str, path: &'a str) -> ReviewFuture<'a> {
        Box::pin(async move {
            tokio::time::timeout(REVIEW_TIMEOUT, self.ask(token, path))
                .await
                .map_err(|_| AuthError::Timeout(REVIEW_TIMEOUT))?
        })
    }
}

/// A reviewer behind a bounded, short-lived cache.
#[derive(Debug)]
pub struct Authorizer {
    reviewer: Box<dyn Reviewer>,
    cache: Mutex<Cache>,
    hasher: RandomState,
}

impl Authorizer {
    /// Cache `reviewer`'s answers.
    pub fn new(reviewer: Box<dyn Reviewer>) -> Self {
        Authorizer {
            reviewer,
            cache: Mutex::new(Cache::default()),
            hasher: RandomState::new(),
        }
    }

    /// The verdict for a request to `path` carrying `token` (None: no usable header).
    pub async fn check(&self, token: Option<&str>, path: &str) -> Result<Verdict, AuthError> {
        let Some(token) = token else {
            return Ok(Verdict::Unauthenticated);
        };
        let key = self.hasher.hash_one((token, path));
        if let Some(v) = self.cache().get(key, Instant::now()) {
            return Ok(v);
        }
        let v = self.reviewer.review(token, path).await?;
        self.cache().put(key, v, Instant::now());
        Ok(v)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Answers by key, each until its expiry; at most [`CACHE_CAP`].
#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<u64, (Verdict, Instant)>,
}

impl Cache {
    fn get(&self, key: u64, now: Instant) -> Option<Verdict> {
        self.entries
            .get(&key)
            .filter(|(_, expires)| now < *expires)
            .map(|(v, _)| *v)
    }

    fn put(&mut self, key: u64, v: Verdict, now: Instant) {
        if self.entries.len() >= CACHE_CAP {
            self.entries.retain(|_, (_, expires)| now < *expires);
        }
        if self.entries.len() >= CACHE_CAP {
            // Still full of live answers: a flood of tokens. Forget them all rather than grow
            // or scan per request; legitimate scrapers pay one review each.
            self.entries.clear();
        }
        self.entries.insert(key, (v, now + CACHE_TTL));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Allows token "good" on /metrics, knows token "nogrant", fails on "broken".
    #[derive(Debug, Default)]
    struct Fake {
        calls: Arc<AtomicUsize>,
    }

    impl Reviewer for Fake {
        fn review<'a>(&'a self, token: &'a str, path: &'a str) -> ReviewFuture<'a> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                match (token, path) {
                    ("good", "/metrics") => Ok(Verdict::Allowed),
                    ("good" | "nogrant", _) => Ok(Verdict::Forbidden),
                    ("broken", _) => Err(AuthError::Timeout(Duration::ZERO)),
                    _ => Ok(Verdict::Unauthenticated),
                }
            })
        }
    }

    #[tokio::test]
    async fn verdicts_are_cached_but_errors_are_not() {
        let fake = Fake::default();
        let count = Arc::clone(&fake.calls);
        let calls = |_: &Authorizer| count.load(Ordering::Relaxed);
        let a = Authorizer::new(Box::new(fake));
        assert_eq!(
            a.check(None, "/metrics").await.unwrap(),
            Verdict::Unauthenticated
        );
        assert_eq!(calls(&a), 0, "no token, no review");
        assert_eq!(
            a.check(Some("good"), "/metrics").await.unwrap(),
            Verdict::Allowed
        );
        assert_eq!(
            a.check(Some("good"), "/metrics").await.unwrap(),
            Verdict::Allowed
        );
        assert_eq!(calls(&a), 1, "second answer from the cache");
        assert_eq!(
            a.check(Some("good"), "/status").await.unwrap(),
            Verdict::Forbidden
        );
        assert_eq!(
            a.check(Some("nogrant"), "/metrics").await.unwrap(),
            Verdict::Forbidden
        );
        assert_eq!(
            a.check(Some("other"), "/metrics").await.unwrap(),
            Verdict::Unauthenticated
        );
        assert_eq!(calls(&a), 4);
        assert!(a.check(Some("broken"), "/metrics").await.is_err());
        assert!(a.check(Some("broken"), "/metrics").await.is_err());
        assert_eq!(calls(&a), 6, "errors are asked again");
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let mut c = Cache::default();
        let t0 = Instant::now();
        c.put(1, Verdict::Allowed, t0);
        assert_eq!(c.get(1, t0 + CACHE_TTL / 2), Some(Verdict::Allowed));
        assert_eq!(c.get(1, t0 + CACHE_TTL), None);
        for k in 0..(3 * CACHE_CAP as u64) {
            c.put(k, Verdict::Forbidden, t0);
            assert!(c.entries.len() <= CACHE_CAP);
        }
        // Expired entries make room without clearing live ones.
        let later = t0 + CACHE_TTL;
        c.put(u64::MAX, Verdict::Allowed, later);
        assert_eq!(c.entries.len(), 1);
    }
}
