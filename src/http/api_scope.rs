//! Which sessions a session-API key reaches: an org's key (`[[http.api_keys]]`)
//! only that org's, the operator key (`http.api_key`) every org's. Pure; the
//! handlers in `sessions.rs` ask it.

use crate::config::{OrgApiKey, Secret};
use subtle::ConstantTimeEq;

/// Who is calling the session API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `http.api_key`: every org.
    Operator,
    /// An org's key: that org only. `name` is the key's name, for logs.
    Org { org_id: String, name: String },
}

impl Scope {
    /// Whether a session of `org_id` is visible to this caller.
    pub fn reaches(&self, org_id: &str) -> bool {
        match self {
            Scope::Operator => true,
            Scope::Org { org_id: own, .. } => own == org_id,
        }
    }

    /// The key's name for logs.
    pub fn name(&self) -> &str {
        match self {
            Scope::Operator => "operator",
            Scope::Org { name, .. } => name,
        }
    }
}

fn equal(presented: &[u8], configured: &Secret) -> bool {
    presented.ct_eq(configured.expose().as_bytes()).into()
}

/// The scope of a presented key, or None when it is no configured key. Every
/// key is compared (in constant time each), so the time taken does not tell
/// which one matched or how far a guess got.
pub fn resolve(presented: &str, operator: Option<&Secret>, orgs: &[OrgApiKey]) -> Option<Scope> {
    let p = presented.as_bytes();
    let mut found = None;
    if let Some(op) = operator {
        if equal(p, op) {
            found = Some(Scope::Operator);
        }
    }
    for k in orgs {
        if equal(p, &k.key) && found.is_none() {
            found = Some(Scope::Org {
                org_id: k.org_id.clone(),
                name: k.name.clone(),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(org: &str, key: &str, name: &str) -> OrgApiKey {
        OrgApiKey {
            org_id: org.into(),
            key: Secret::new(key),
            name: name.into(),
        }
    }

    #[test]
    fn keys_resolve_to_their_scope() {
        let op = Secret::new("operator-key-0123456789");
        let orgs = [
            org("org-a", "org-a-key-0123456789abcdef0123456789", "a"),
            org("org-b", "org-b-key-0123456789abcdef0123456789", "b"),
        ];
        assert_eq!(
            resolve("operator-key-0123456789", Some(&op), &orgs),
            Some(Scope::Operator)
        );
        let b = resolve("org-b-key-0123456789abcdef0123456789", Some(&op), &orgs).unwrap();
        assert_eq!(
            b,
            Scope::Org {
                org_id: "org-b".into(),
                name: "b".into()
            }
        );
        assert!(b.reaches("org-b") && !b.reaches("org-a") && !b.reaches(""));
        assert!(Scope::Operator.reaches("org-a"));
        for wrong in [
            "",
            "org-b-key-0123456789abcdef012345678",
            "org-b-key-0123456789abcdef01234567890",
            "operator-key-0123456789 ",
        ] {
            assert_eq!(resolve(wrong, Some(&op), &orgs), None, "{wrong:?}");
        }
        assert_eq!(resolve("operator-key-0123456789", None, &orgs), None);
    }
}
