//! `[bus].leaf` and its companions: a host at an acquired hospital whose
//! embedded `nats-server` is a leaf node of the network's hub, with a
//! JetStream domain of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::BusTls;

/// How an edge host's bus joins the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// The hub's leaf node URLs (`nats-leaf://` or `tls://`), without credentials.
    pub leaf: Vec<String>,
    /// Credentials file for the leaf connection.
    pub creds: Option<PathBuf>,
    /// User name for the leaf connection.
    pub user: Option<String>,
    /// Name of the secret holding that user's password.
    pub password: Option<String>,
    /// TLS towards the hub's leaf port.
    pub tls: Option<BusTls>,
    /// This site's JetStream domain: records are stored here first.
    pub domain: String,
    /// The hub's JetStream domain, where the fleet's buckets live.
    pub hub_domain: String,
    /// The `Plexus-Facility` header on every record this host publishes.
    pub facility: String,
}

/// The hub's JetStream domain when `[bus].hub_domain` is not set.
pub const HUB_DOMAIN: &str = "hub";

/// The raw `[bus]` keys of an edge.
#[derive(Default)]
pub(super) struct RawEdge {
    pub leaf: Option<String>,
    pub creds: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls: Option<BusTls>,
    pub domain: Option<String>,
    pub hub_domain: Option<String>,
}

impl RawEdge {
    fn is_empty(&self) -> bool {
        self.leaf.is_none()
            && self.creds.is_none()
            && self.user.is_none()
            && self.password.is_none()
            && self.tls.is_none()
            && self.domain.is_none()
            && self.hub_domain.is_none()
    }
}

/// Validate the edge keys; `None` when the host is not an edge.
pub(super) fn parse(
    raw: RawEdge,
    url: Option<&str>,
    labels: &BTreeMap<String, String>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Option<EdgeConfig>, String> {
    let Some(leaf) = raw.leaf.as_deref() else {
        return if raw.is_empty() {
            Ok(None)
        } else {
            Err("[bus].leaf_creds, leaf_user, leaf_password, leaf_tls, domain and hub_domain are for an edge host; set [bus].leaf to the hub's leaf node URL".into())
        };
    };
    if url.is_some() {
        return Err(
            "[bus].url and [bus].leaf exclude each other: an edge host runs its own bus, joined to the hub by [bus].leaf".into(),
        );
    }
    let mut urls = Vec::new();
    for one in leaf.split(',').map(str::trim) {
        let Some((scheme, rest)) = one.split_once("://") else {
            return Err(format!(
                "[bus].leaf {:?} must be a nats-leaf:// or tls:// URL, e.g. \"nats-leaf://hub.example.org:7422\"",
                crate::bus::redact_url(one)
            ));
        };
        if !matches!(scheme, "nats-leaf" | "tls") {
            return Err(format!(
                "[bus].leaf {:?} must be a nats-leaf:// or tls:// URL",
                crate::bus::redact_url(one)
            ));
        }
        if rest.contains('@') {
            return Err(format!(
                "[bus].leaf {:?}: put the leaf connection's credentials in leaf_creds, or leaf_user and leaf_password, not in the URL",
                crate::bus::redact_url(one)
            ));
        }
        if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains('"') {
            return Err(format!("[bus].leaf {one:?} names no host"));
        }
        urls.push(one.to_owned());
    }
    if raw.creds.is_some() && raw.user.is_some() {
        return Err("[bus] takes one of `leaf_creds` or `leaf_user` + `leaf_password`".into());
    }
    if raw.user.is_some() != raw.password.is_some() {
        return Err(
            "[bus].leaf_user and [bus].leaf_password go together (leaf_password names a secret)"
                .into(),
        );
    }
    if let Some(user) = &raw.user
        && (user.is_empty()
            || !user
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '@' && c != ':' && c != '/'))
    {
        return Err(format!(
            "[bus].leaf_user {user:?} must be printable ASCII without '\"', '@', ':' or '/'"
        ));
    }
    let creds = super::readable_file(raw.creds, "[bus].leaf_creds", resolve)?;
    let tls = raw
        .tls
        .map(|tls| tls.resolved("[bus].leaf_tls", resolve))
        .transpose()?;
    let facility = labels.get("facility").cloned();
    let domain = match (raw.domain, &facility) {
        (Some(domain), _) => domain,
        (None, Some(facility)) => facility.clone(),
        (None, None) => {
            return Err(
                "[bus].leaf needs a JetStream domain for this site: set [host].labels.facility (e.g. { facility = \"st-marys\" }) or [bus].domain".into(),
            );
        }
    };
    check_domain("[bus].domain", &domain)?;
    let hub_domain = raw.hub_domain.unwrap_or_else(|| HUB_DOMAIN.to_owned());
    check_domain("[bus].hub_domain", &hub_domain)?;
    if domain == hub_domain {
        return Err(format!(
            "[bus].domain {domain:?} is the hub's domain; an edge needs a domain of its own"
        ));
    }
    let facility = facility.unwrap_or_else(|| domain.clone());
    // Part of record identities (`<facility>/<origin>`) and of a header.
    check_domain("[host].labels.facility", &facility)?;
    Ok(Some(EdgeConfig {
        leaf: urls,
        creds,
        user: raw.user,
        password: raw.password,
        tls,
        domain,
        hub_domain,
        facility,
    }))
}

/// A JetStream domain: it becomes part of API subjects (`$JS.<domain>.API`).
fn check_domain(key: &str, domain: &str) -> Result<(), String> {
    if domain.is_empty()
        || domain.len() > 64
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{key} {domain:?} must be 1 to 64 of [A-Za-z0-9_-] (it becomes part of NATS subjects)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(facility: Option<&str>) -> BTreeMap<String, String> {
        facility
            .map(|f| BTreeMap::from([("facility".to_owned(), f.to_owned())]))
            .unwrap_or_default()
    }

    fn leaf(url: &str) -> RawEdge {
        RawEdge {
            leaf: Some(url.to_owned()),
            ..RawEdge::default()
        }
    }

    fn parse_with(raw: RawEdge, facility: Option<&str>) -> Result<Option<EdgeConfig>, String> {
        parse(raw, None, &labels(facility), &|p: &Path| p.to_owned())
    }

    #[test]
    fn the_domain_defaults_to_the_facility() {
        let edge = parse_with(leaf("nats-leaf://hub:7422"), Some("st-marys"))
            .unwrap()
            .unwrap();
        assert_eq!(edge.domain, "st-marys");
        assert_eq!(edge.hub_domain, "hub");
        assert_eq!(edge.facility, "st-marys");
        assert_eq!(edge.leaf, ["nats-leaf://hub:7422"]);
    }

    #[test]
    fn refusals_name_the_key() {
        let no_domain = parse_with(leaf("nats-leaf://hub:7422"), None).unwrap_err();
        assert!(no_domain.contains("labels.facility"), "{no_domain}");
        let scheme = parse_with(leaf("http://hub:7422"), Some("a")).unwrap_err();
        assert!(scheme.contains("nats-leaf://"), "{scheme}");
        let secret = parse_with(leaf("nats-leaf://u:pw@hub:7422"), Some("a")).unwrap_err();
        assert!(!secret.contains("pw"), "{secret}");
        assert!(secret.contains("leaf_creds"), "{secret}");
        let bad_domain = parse_with(
            RawEdge {
                domain: Some("st.marys".into()),
                ..leaf("nats-leaf://hub:7422")
            },
            None,
        )
        .unwrap_err();
        assert!(bad_domain.contains("[bus].domain"), "{bad_domain}");
        let same = parse_with(leaf("nats-leaf://hub:7422"), Some("hub")).unwrap_err();
        assert!(same.contains("hub's domain"), "{same}");
        let both = parse(
            leaf("nats-leaf://hub:7422"),
            Some("nats://x:4222"),
            &labels(Some("a")),
            &|p: &Path| p.to_owned(),
        )
        .unwrap_err();
        assert!(both.contains("exclude"), "{both}");
        let stray = parse_with(
            RawEdge {
                domain: Some("a".into()),
                ..RawEdge::default()
            },
            None,
        )
        .unwrap_err();
        assert!(stray.contains("set [bus].leaf"), "{stray}");
    }

    #[test]
    fn no_leaf_no_edge() {
        assert_eq!(parse_with(RawEdge::default(), Some("a")).unwrap(), None);
    }
}
