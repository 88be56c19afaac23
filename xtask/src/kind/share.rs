//! How checkouts on one machine share Kind clusters (pure decisions; see docs/kind.md).
//!
//! A Kind cluster is machine-wide (one per name), so checkouts share it rather than each making
//! its own (a cluster costs a minute and a gigabyte):
//! - one cluster per `cluster.name`, created with [`SLOTS`] NodePorts published on 127.0.0.1
//!   (`postgres.node_port + n` on `postgres.host_port + n`), so that no checkout needs the
//!   cluster recreated to get a port of its own;
//! - one namespace per checkout, [`checkout_namespace`], labelled with the checkout's tag
//!   ([`CHECKOUT_LABEL`]) and its port slot ([`SLOT_LABEL`]): PostgreSQL's Service takes
//!   `node_port + slot`, the host reaches it on `host_port + slot`;
//! - a checkout takes the slot its namespace already has, else the lowest free one
//!   ([`choose_slot`]); with all taken, setup stops and names the checkouts holding them;
//! - teardown deletes its own namespace, and the cluster only when no other checkout's
//!   labelled namespace remains ([`decide_shared_teardown`]); a cluster other checkouts use is
//!   never recreated by one of them ([`guard_recreate`]).
//!
//! The checkout's tag is `lifecycle::workspace::checkout_tag` (folder name and a hash of its
//! path), so a copy of a checkout is another checkout.
//!
//! Wired in `kind::setup_kind` (claims listed, slot chosen, namespace labelled, NodePort and
//! host port `+ slot`, a recreate guarded), `KindCluster::from_config` (publishes
//! [`slot_ports`]) and `kind::teardown` (namespace first, then [`decide_shared_teardown`]).

/// NodePorts (and host ports) published at cluster creation: at most this many checkouts use a
/// cluster at once.
pub(crate) const SLOTS: u16 = 8;

/// Label on a checkout's namespace: the checkout's tag.
pub(crate) const CHECKOUT_LABEL: &str = "e2e-migrations/checkout";

/// Label on a checkout's namespace: its port slot (0 to [`SLOTS`] - 1).
pub(crate) const SLOT_LABEL: &str = "e2e-migrations/port-slot";

/// The namespace of a checkout: `<base>-<tag>`, lower-case, `[a-z0-9-]`, at most 63 bytes, as
/// a DNS label must be (pure).
pub(crate) fn checkout_namespace(base: &str, tag: &str) -> String {
    let raw = format!("{base}-{tag}").to_ascii_lowercase();
    let mut s: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    if s.len() > 63 {
        // Keep the tag's hash (its end), which is what makes it unique.
        s = s[s.len() - 63..].to_string();
    }
    s.trim_matches('-').to_string()
}

/// The `(node port, host port)` pairs a shared cluster publishes (pure).
pub(crate) fn slot_ports(node_base: u16, host_base: u16) -> Vec<(u16, u16)> {
    (0..SLOTS).map(|n| (node_base + n, host_base + n)).collect()
}

/// What a labelled namespace in the cluster says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The namespace.
    pub(crate) namespace: String,
    /// Its [`CHECKOUT_LABEL`].
    pub(crate) checkout: String,
    /// Its [`SLOT_LABEL`], if it parses.
    pub(crate) slot: Option<u16>,
    /// Whether it is being deleted (its slot is free once it is gone).
    pub(crate) terminating: bool,
}

/// The port slot of checkout `me` (pure): the one its namespace holds, else the lowest that no
/// other checkout's namespace holds.
pub(crate) fn choose_slot(me: &str, claims: &[Claim]) -> Result<u16, String> {
    if let Some(slot) = claims.iter().find(|c| c.checkout == me).and_then(|c| c.slot) {
        return Ok(slot);
    }
    let taken: Vec<u16> = claims.iter().filter(|c| c.checkout != me).filter_map(|c| c.slot).collect();
    (0..SLOTS).find(|s| !taken.contains(s)).ok_or_else(|| {
        let holders: Vec<String> = claims
            .iter()
            .filter(|c| c.checkout != me)
            .map(|c| format!("{} (namespace {})", c.checkout, c.namespace))
            .collect();
        format!(
            "all {SLOTS} port slots of the shared Kind cluster are taken by other checkouts: {}; \
             tear one of them down (`cargo xtask e2e-teardown` in that checkout, or `kubectl delete namespace N`)",
            holders.join(", ")
        )
    })
}

/// What teardown removes from a shared cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SharedTeardown {
    /// Only this checkout's namespace: these checkouts still use the cluster.
    NamespaceOnly {
        /// The other checkouts.
        others: Vec<String>,
    },
    /// The namespace, then the cluster: nobody else uses it.
    NamespaceAndCluster,
}

/// Whether the cluster goes too (pure): only when no other checkout's namespace remains
/// (a namespace being deleted does not count).
pub(crate) fn decide_shared_teardown(me: &str, claims: &[Claim]) -> SharedTeardown {
    let mut others: Vec<String> =
        claims.iter().filter(|c| c.checkout != me && !c.terminating).map(|c| c.checkout.clone()).collect();
    others.sort();
    others.dedup();
    if others.is_empty() {
        SharedTeardown::NamespaceAndCluster
    } else {
        SharedTeardown::NamespaceOnly { others }
    }
}

/// Refuses to recreate (for `why`) a cluster that other checkouts use (pure).
pub(crate) fn guard_recreate(me: &str, claims: &[Claim], why: &str) -> Result<(), String> {
    match decide_shared_teardown(me, claims) {
        SharedTeardown::NamespaceAndCluster => Ok(()),
        SharedTeardown::NamespaceOnly { others } => Err(format!(
            "the Kind cluster would be recreated ({why}), but other checkouts use it: {}; \
             tear them down first, or give this checkout another cluster.name in e2e.toml",
            others.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(checkout: &str, slot: Option<u16>) -> Claim {
        Claim { namespace: format!("e2e-{checkout}"), checkout: checkout.into(), slot, terminating: false }
    }

    #[test]
    fn namespaces_are_dns_labels_that_keep_the_tag_hash() {
        assert_eq!(checkout_namespace("e2e", "app-1a2b3c4d"), "e2e-app-1a2b3c4d");
        assert_eq!(checkout_namespace("e2e", "My_Repo.v2-1a2b3c4d"), "e2e-my-repo-v2-1a2b3c4d");
        let long = checkout_namespace("e2e", &format!("{}-1a2b3c4d", "x".repeat(80)));
        assert!(long.len() <= 63 && long.ends_with("-1a2b3c4d"), "{long}");
    }

    #[test]
    fn slots_are_published_side_by_side() {
        let p = slot_ports(30432, 15432);
        assert_eq!(p.len(), SLOTS as usize);
        assert_eq!((p[0], p[7]), ((30432, 15432), (30439, 15439)));
    }

    #[test]
    fn a_checkout_keeps_its_slot_else_takes_the_lowest_free() {
        let claims = [claim("a", Some(0)), claim("b", Some(2))];
        assert_eq!(choose_slot("b", &claims), Ok(2));
        assert_eq!(choose_slot("c", &claims), Ok(1));
        assert_eq!(choose_slot("c", &[]), Ok(0));
        let full: Vec<Claim> = (0..SLOTS).map(|n| claim(&format!("k{n}"), Some(n))).collect();
        let e = choose_slot("c", &full).unwrap_err();
        assert!(e.contains("all 8 port slots") && e.contains("k7 (namespace e2e-k7)"), "{e}");
    }

    #[test]
    fn teardown_keeps_a_cluster_another_checkout_uses() {
        let claims = [claim("a", Some(0)), claim("b", Some(1))];
        assert_eq!(decide_shared_teardown("a", &claims), SharedTeardown::NamespaceOnly { others: vec!["b".into()] });
        assert_eq!(decide_shared_teardown("a", &claims[..1]), SharedTeardown::NamespaceAndCluster);
        let leaving = Claim { terminating: true, ..claim("b", Some(1)) };
        assert_eq!(decide_shared_teardown("a", &[claims[0].clone(), leaving]), SharedTeardown::NamespaceAndCluster);
        assert!(guard_recreate("a", &claims, "its node is not Ready")
            .unwrap_err()
            .contains("other checkouts use it: b"));
        assert_eq!(guard_recreate("a", &claims[..1], "--recreate"), Ok(()));
    }
}
