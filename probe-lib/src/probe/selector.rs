//! Kubernetes label selectors as `kubectl get -l` writes them (`app=web,tier!=db`,
//! `env in (prod,staging)`, `!canary`), for limiting a configured probe target to some pods.
//! Pure: parsing and matching.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A selector's longest accepted text: it comes from configuration, but one line is plenty.
const MAX_SELECTOR_LEN: usize = 1024;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (a,b)`: also true without the label, as in Kubernetes.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A label selector: every requirement must hold. The empty selector matches every pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    text: String,
}

/// A selector that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector '{text}': {why}")]
pub struct SelectorError {
    text: String,
    why: String,
}

impl LabelSelector {
    /// Whether a pod with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// A label key as Kubernetes accepts it: `[prefix/]name`, name 1–63 characters of
/// alphanumerics, `-`, `_`, `.` starting and ending alphanumeric; prefix a DNS subdomain.
fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let dns = |p: &str| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    };
    prefix.is_none_or(dns) && !name.is_empty() && valid_value(name)
}

/// A label value: empty, or up to 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
fn valid_value(v: &str) -> bool {
    let b = v.as_bytes();
    v.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c)))
}

/// Split at commas outside parentheses.
fn split_top(s: &str) -> Option<Vec<&str>> {
    let (mut depth, mut start, mut out) = (0u32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            ')' if depth == 1 => depth = 0,
            '(' | ')' => return None,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0).then(|| {
        out.push(&s[start..]);
        out
    })
}

fn requirement(part: &str) -> Result<Requirement, String> {
    let part = part.trim();
    let key = |k: &str| {
        let k = k.trim();
        if valid_key(k) {
            Ok(k.to_owned())
        } else {
            Err(format!("'{k}' is not a label key"))
        }
    };
    let value = |v: &str| {
        let v = v.trim();
        if valid_value(v) {
            Ok(v.to_owned())
        } else {
            Err(format!("'{v}' is not a label value"))
        }
    };
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(k)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(key(k)?, vec![value(v)?]));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::In(key(k)?, vec![value(v)?]));
    }
    if let Some(open) = part.find('(') {
        let head = part[..open].trim_end();
        let Some(list) = part[open + 1..].trim_end().strip_suffix(')') else {
            return Err(format!("'{part}': no closing parenthesis"));
        };
        let values = list.split(',').map(value).collect::<Result<Vec<_>, _>>()?;
        let (k, negated) = if let Some(k) = head.strip_suffix(" notin") {
            (k, true)
        } else if let Some(k) = head.strip_suffix(" in") {
            (k, false)
        } else {
            return Err(format!(
                "'{part}': expected 'KEY in (…)' or 'KEY notin (…)'"
            ));
        };
        let k = key(k)?;
        return Ok(if negated {
            Requirement::NotIn(k, values)
        } else {
            Requirement::In(k, values)
        });
    }
    Ok(Requirement::Exists(key(part)?))
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: String| SelectorError {
            text: text.chars().take(80).collect(),
            why,
        };
        if text.len() > MAX_SELECTOR_LEN {
            return Err(err(format!("longer than {MAX_SELECTOR_LEN} bytes")));
        }
        if text.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        let parts = split_top(text).ok_or_else(|| err("unbalanced parentheses".into()))?;
        let requirements = parts
            .into_iter()
            .map(requirement)
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok(LabelSelector {
            requirements,
            text: text.trim().to_owned(),
        })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn equality_inequality_and_existence() {
        let web_db = labels(&[("app", "web"), ("tier", "db")]);
        let web_fe = labels(&[("app", "web"), ("tier", "frontend")]);
        let bare = labels(&[]);
        let s = sel("app=web,tier!=db");
        assert!(!s.matches(&web_db));
        assert!(s.matches(&web_fe));
        assert!(!s.matches(&bare));
        assert!(sel("app==web").matches(&web_db));
        assert!(sel("tier!=db").matches(&bare), "!= holds without the label");
        assert!(sel("tier").matches(&web_db) && !sel("tier").matches(&bare));
        assert!(sel("!tier").matches(&bare) && !sel("!tier").matches(&web_db));
        assert!(
            sel("").matches(&bare),
            "the empty selector selects every pod"
        );
        assert!(sel(" app = web ").matches(&web_db));
    }

    #[test]
    fn set_based() {
        let s = sel("tier in (db, frontend),env notin (dev)");
        assert!(s.matches(&labels(&[("tier", "db")])));
        assert!(s.matches(&labels(&[("tier", "frontend"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("tier", "cache")])));
        assert!(!s.matches(&labels(&[("tier", "db"), ("env", "dev")])));
        assert!(sel("example.com/team in (a)").matches(&labels(&[("example.com/team", "a")])));
        assert_eq!(s.to_string(), "tier in (db, frontend),env notin (dev)");
    }

    #[test]
    fn rejects_what_kubectl_rejects() {
        assert!(
            sel("app=").matches(&labels(&[("app", "")])),
            "an empty value is valid"
        );
        for bad in [
            "=web",
            "app=web,",
            "app in (a,b",
            "app in a,b)",
            "app inn (a)",
            "a b",
            "app=we b",
            "-app=web",
            "app=-web",
            "Bad_Prefix/app=web",
            "app=((x))",
            &"a".repeat(64),
            &format!("app={}", "v".repeat(64)),
            &"x".repeat(MAX_SELECTOR_LEN + 1),
        ] {
            assert!(bad.parse::<LabelSelector>().is_err(), "{bad:?} accepted");
        }
        let e = "app in (a"
            .parse::<LabelSelector>()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid label selector 'app in (a'"), "{e}");
    }
}
