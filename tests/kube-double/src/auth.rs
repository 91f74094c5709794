//! `POST /apis/authentication.k8s.io/v1/tokenreviews` and
//! `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`, speaking the real JSON, for
//! agents that authorize their own scrapers (kube-rbac-proxy style). The test decides which
//! tokens exist (and their user and groups) and which users or groups may `get` which
//! non-resource URLs (what a ClusterRole with `nonResourceURLs` grants).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use axum::response::Response;
use serde_json::{Value, json};

use super::KubeApiServer;
use super::status::{ApiError, json_response};

/// Largest review body accepted (a real one is a few hundred bytes plus the token).
pub(crate) const MAX_REVIEW_BODY: usize = 64 * 1024;

/// Known tokens and RBAC grants on non-resource URLs.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    inner: Mutex<GrantsInner>,
}

#[derive(Debug, Default)]
struct GrantsInner {
    /// token → (username, groups)
    tokens: HashMap<String, (String, Vec<String>)>,
    /// (user or group, path, verb)
    allowed: BTreeSet<(String, String, String)>,
}

impl Grants {
    fn lock(&self) -> MutexGuard<'_, GrantsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answer a TokenReview: the review with its `status` filled in.
    pub(crate) fn token_review(&self, body: &[u8]) -> Result<Response, ApiError> {
        let mut review: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("decoding TokenReview: {e}")))?;
        let token = review["spec"]["token"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("spec.token: Required value"))?;
        let status = match self.lock().tokens.get(token) {
            Some((user, groups)) => json!({
                "authenticated": true,
                "user": {
                    "username": user,
                    "uid": format!("uid-{user}"),
                    "groups": groups,
                },
                "audiences": ["https://kubernetes.default.svc"],
            }),
            // What kube-apiserver answers for an unknown token: no `authenticated`.
            None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
        };
        review["status"] = status;
        Ok(json_response(201, review.to_string().into_bytes()))
    }

    /// Answer a SubjectAccessReview for a non-resource URL.
    pub(crate) fn access_review(&self, body: &[u8]) -> Result<Response, ApiError> {
        let mut review: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("decoding SubjectAccessReview: {e}")))?;
        let spec = &review["spec"];
        let attrs = &spec["nonResourceAttributes"];
        let (Some(path), Some(verb)) = (attrs["path"].as_str(), attrs["verb"].as_str()) else {
            return Err(ApiError::bad_request(
                "spec: only nonResourceAttributes {path, verb} are modelled",
            ));
        };
        let mut subjects: Vec<&str> = spec["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        subjects.extend(spec["user"].as_str());
        let allowed = {
            let g = self.lock();
            subjects.iter().any(|s| {
                g.allowed
                    .contains(&((*s).to_owned(), path.to_owned(), verb.to_owned()))
            })
        };
        review["status"] = if allowed {
            json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding"})
        } else {
            json!({"allowed": false})
        };
        Ok(json_response(201, review.to_string().into_bytes()))
    }
}

impl KubeApiServer {
    /// Make `token` authenticate as `user` in `groups` (TokenReview).
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        let groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self.shared
            .auth
            .lock()
            .tokens
            .insert(token.to_owned(), (user.to_owned(), groups));
    }

    /// Allow `subject` (a user or a group) `verb` on the non-resource URL `path`
    /// (SubjectAccessReview), as a ClusterRole with `nonResourceURLs` does.
    pub fn grant_non_resource(&self, subject: &str, path: &str, verb: &str) {
        self.shared.auth.lock().allowed.insert((
            subject.to_owned(),
            path.to_owned(),
            verb.to_owned(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Response) -> (u16, Value) {
        let code = r.status().as_u16();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let body = rt
            .block_on(axum::body::to_bytes(r.into_body(), MAX_REVIEW_BODY))
            .unwrap();
        (code, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn reviews_answer_from_tokens_and_grants() {
        let g = Grants::default();
        g.lock()
            .tokens
            .insert("t".into(), ("alice".into(), vec!["readers".into()]));
        g.lock()
            .allowed
            .insert(("readers".into(), "/metrics".into(), "get".into()));
        let review = |token: &str| {
            let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                              "spec": {"token": token}});
            status(g.token_review(body.to_string().as_bytes()).unwrap())
        };
        let (code, known) = review("t");
        assert_eq!(code, 201);
        assert_eq!(known["status"]["authenticated"], true);
        assert_eq!(known["status"]["user"]["username"], "alice");
        assert!(review("x").1["status"].get("authenticated").is_none());
        let access = |path: &str| {
            let body = json!({"kind": "SubjectAccessReview", "spec": {
                "user": "alice", "groups": ["readers"],
                "nonResourceAttributes": {"path": path, "verb": "get"}}});
            status(g.access_review(body.to_string().as_bytes()).unwrap()).1["status"]["allowed"]
                .clone()
        };
        assert_eq!(access("/metrics"), true);
        assert_eq!(access("/status"), false);
        assert!(g.token_review(b"{}").is_err());
        assert!(g.access_review(b"{\"spec\":{}}").is_err());
    }
}
