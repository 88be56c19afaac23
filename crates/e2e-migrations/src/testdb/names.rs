//! Names of the databases this module makes, and which leftovers to reap (pure).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::{DEAD_OWNER_MIN_AGE, FOREIGN_MIN_AGE, OLD_TEMPLATE_MIN_AGE, PREFIX};

/// How many hex digits of a fingerprint's hash database names carry.
pub(super) const HASH_LEN: usize = 12;

/// The process that made a database: host tag, pid, process start (unix seconds), sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// 8 hex digits from the host name and pid namespace (4 in names of earlier versions).
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When the process first used this module (unix seconds).
    pub start: u64,
}

/// What a database made by this module is, read back from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbName {
    /// A finished template: `e2e_tpl_<hash>_<label>`.
    Template {
        /// The fingerprint's short hash.
        hash: String,
        /// The sets label.
        label: String,
    },
    /// A template being built: `e2e_b_<hash>_<host>_<pid>_<start>_<n>`.
    Build {
        /// The fingerprint's short hash.
        hash: String,
        /// Who builds it.
        owner: Owner,
    },
    /// A ready clone in the pool: `e2e_r_<hash>_<host>_<pid>_<start>_<n>`.
    Ready {
        /// The template's short hash.
        hash: String,
        /// Who made it.
        owner: Owner,
    },
    /// A test's database: `e2e_t_<hash>_<host>_<pid>_<start>_<n>`.
    Test {
        /// The template's short hash.
        hash: String,
        /// The test process.
        owner: Owner,
    },
    /// An empty database a test made itself: `e2e_s_<host>_<pid>_<start>_<n>` (see
    /// [`super::scratch_name`]).
    Scratch {
        /// The test process.
        owner: Owner,
    },
}

/// A per-process database name: `e2e_<kind>_<hash>_<host>_<pid>_<start base 36>_<n base 36>`.
pub(crate) fn owned_name(kind: char, short_hash: &str, owner: &Owner, n: u64) -> String {
    format!("{PREFIX}{kind}_{short_hash}_{}", owner_part(owner, n))
}

/// A scratch database's name: `e2e_s_<host>_<pid>_<start base 36>_<n base 36>`.
pub(crate) fn scratch_name(owner: &Owner, n: u64) -> String {
    format!("{PREFIX}s_{}", owner_part(owner, n))
}

/// `<host>_<pid>_<start base 36>_<n base 36>`.
fn owner_part(owner: &Owner, n: u64) -> String {
    format!("{}_{}_{}_{}", owner.host, owner.pid, base36(owner.start), base36(n))
}

/// `e2e_tpl_<hash>_<label>`.
pub(crate) fn template_name(short_hash: &str, label: &str) -> String {
    format!("{PREFIX}tpl_{short_hash}_{label}")
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Reads a name made by this module back (pure); `None` for anything else.
pub fn parse_name(name: &str) -> Option<DbName> {
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(t) = rest.strip_prefix("tpl_") {
        let (hash, label) = t.split_once('_')?;
        return is_hash(hash).then(|| DbName::Template { hash: hash.into(), label: label.into() });
    }
    let parts: Vec<&str> = rest.split('_').collect();
    if let ["s", owner @ ..] = parts.as_slice() {
        return Some(DbName::Scratch { owner: parse_owner(owner)? });
    }
    let [kind, hash, owner @ ..] = parts.as_slice() else {
        return None;
    };
    let owner = parse_owner(owner)?;
    if !is_hash(hash) {
        return None;
    }
    let hash = hash.to_string();
    match *kind {
        "b" => Some(DbName::Build { hash, owner }),
        "r" => Some(DbName::Ready { hash, owner }),
        "t" => Some(DbName::Test { hash, owner }),
        _ => None,
    }
}

/// `<host>_<pid>_<start base 36>_<n base 36>`, split at `_`.
fn parse_owner(parts: &[&str]) -> Option<Owner> {
    let [host, pid, start, n] = parts else {
        return None;
    };
    if !matches!(host.len(), 4 | 8) || !host.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(n, 36).ok()?;
    Some(Owner { host: host.to_string(), pid: pid.parse().ok()?, start: u64::from_str_radix(start, 36).ok()? })
}

fn is_hash(s: &str) -> bool {
    s.len() == HASH_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the reaper knows when it looks at the server.
pub(crate) struct ReapContext<'a> {
    /// This process.
    pub me: &'a Owner,
    /// Now, unix seconds.
    pub now: u64,
    /// Short hashes of the finished templates on the server.
    pub templates: &'a BTreeSet<String>,
    /// The fingerprints this process uses, by label (their templates are never reaped).
    pub current: &'a HashMap<String, String>,
    /// Whether a pid on this host is alive.
    pub pid_alive: &'a (dyn Fn(u32) -> bool + Sync),
}

/// One database as the reaper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Its name.
    pub name: String,
    /// Sessions connected to it now.
    pub sessions: i64,
    /// For templates: when it was built (unix seconds), from its comment.
    pub built_at: Option<u64>,
}

/// Why the reaper drops a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reap {
    /// A test, scratch or build database whose process is gone.
    DeadOwner,
    /// A test, scratch or build database from another host, older than [`FOREIGN_MIN_AGE`].
    ForeignAndOld,
    /// A ready clone whose template is gone (a changed migration, another day).
    OrphanReady,
    /// A template of the same sets with another fingerprint, older than [`OLD_TEMPLATE_MIN_AGE`].
    Superseded,
}

/// Decides whether to drop `db` (pure). Never drops a database with sessions, one of this
/// process, one not made by this module, or a template this process uses.
pub(crate) fn reap_decision(db: &Seen, ctx: &ReapContext<'_>) -> Option<Reap> {
    if db.sessions > 0 {
        return None;
    }
    let age = |start: u64| Duration::from_secs(ctx.now.saturating_sub(start));
    match parse_name(&db.name)? {
        DbName::Template { hash, label } => {
            let current = ctx.current.get(&label)?; // only sets this process uses
            let old_enough = db.built_at.map(|b| age(b) >= OLD_TEMPLATE_MIN_AGE).unwrap_or(true);
            (*current != hash && old_enough).then_some(Reap::Superseded)
        }
        DbName::Ready { hash, .. } => (!ctx.templates.contains(&hash)).then_some(Reap::OrphanReady),
        DbName::Build { owner, .. } | DbName::Test { owner, .. } | DbName::Scratch { owner } => {
            if owner == *ctx.me {
                None
            } else if owner.host == ctx.me.host {
                (!(ctx.pid_alive)(owner.pid) && age(owner.start) >= DEAD_OWNER_MIN_AGE).then_some(Reap::DeadOwner)
            } else {
                (age(owner.start) >= FOREIGN_MIN_AGE).then_some(Reap::ForeignAndOld)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::fingerprint::tests::{at, project, sets};
    use crate::testdb::Fingerprint;

    #[test]
    fn names_fit_postgres_and_parse_back() {
        let fp = Fingerprint::new(&project("SELECT 1;"), &sets(&["audit", "workflow"]), at("2025-03-10")).unwrap();
        let tpl = fp.template_name();
        assert!(tpl.starts_with("e2e_tpl_") && tpl.ends_with("_audit_workflow"), "{tpl}");
        assert_eq!(parse_name(&tpl), Some(DbName::Template { hash: fp.short(), label: "audit_workflow".into() }));
        let earlier = Owner { host: "ab12".into(), pid: 7, start: 1_760_000_000 };
        assert_eq!(parse_name(&scratch_name(&earlier, 1)), Some(DbName::Scratch { owner: earlier }), "4 digits");
        let owner = Owner { host: "ab12cd34".into(), pid: 4_194_304, start: 1_760_000_000 };
        let t = owned_name('t', &fp.short(), &owner, u64::MAX);
        assert!(t.len() <= crate::ident::MAX_LEN, "{t} is {} bytes", t.len());
        crate::ident::validate(&t).unwrap();
        assert_eq!(parse_name(&t), Some(DbName::Test { hash: fp.short(), owner: owner.clone() }));
        assert_eq!(
            parse_name(&owned_name('r', &fp.short(), &owner, 7)),
            Some(DbName::Ready { hash: fp.short(), owner: owner.clone() })
        );
        assert_eq!(
            parse_name(&owned_name('b', &fp.short(), &owner, 0)),
            Some(DbName::Build { hash: fp.short(), owner })
        );
        for foreign in [
            "e2e",
            "postgres",
            "e2e_tpl_xyz_audit",
            "e2e_t_0123456789ab_zz12_1_1_1",
            "e2e_q_0123456789ab_ab12_1_1_1",
            "e2e_s_ab123_1_1_1",
        ] {
            assert_eq!(parse_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn scratch_names_fit_postgres_and_parse_back() {
        let owner = Owner { host: "ab12".into(), pid: 4_194_304, start: 1_760_000_000 };
        let s = scratch_name(&owner, u64::MAX);
        assert!(s.starts_with("e2e_s_ab12_4194304_"), "{s}");
        assert!(s.len() <= crate::ident::MAX_LEN, "{s} is {} bytes", s.len());
        crate::ident::validate(&s).unwrap();
        assert_eq!(parse_name(&s), Some(DbName::Scratch { owner: owner.clone() }));
        assert_eq!(parse_name(&scratch_name(&owner, 0)), Some(DbName::Scratch { owner }));
        for foreign in ["e2e_s_ab12_1_1", "e2e_s_zz12_1_1_1", "e2e_s_0123456789ab_ab12_1_1_1", "cli_0123456789ab"] {
            assert_eq!(parse_name(foreign), None, "{foreign}");
        }
    }

    struct Fixture {
        me: Owner,
        templates: BTreeSet<String>,
        current: HashMap<String, String>,
    }

    const NOW: u64 = 1_760_000_000;
    const H1: &str = "aaaaaaaaaaaa";
    const H2: &str = "bbbbbbbbbbbb";

    fn fixture() -> Fixture {
        Fixture {
            me: Owner { host: "ab12".into(), pid: 100, start: NOW - 5 },
            templates: [H1.to_string()].into(),
            current: [("audit".to_string(), H1.to_string())].into(),
        }
    }

    fn decide(f: &Fixture, name: &str, sessions: i64, built_at: Option<u64>, alive: &[u32]) -> Option<Reap> {
        let alive = alive.to_vec();
        let pid_alive = move |p: u32| alive.contains(&p);
        let ctx =
            ReapContext { me: &f.me, now: NOW, templates: &f.templates, current: &f.current, pid_alive: &pid_alive };
        reap_decision(&Seen { name: name.into(), sessions, built_at }, &ctx)
    }

    #[test]
    fn reaps_test_databases_of_dead_processes_on_this_host_once_old_enough() {
        let f = fixture();
        let dead_old = owned_name('t', H1, &Owner { host: "ab12".into(), pid: 7, start: NOW - 3600 }, 0);
        assert_eq!(decide(&f, &dead_old, 0, None, &[]), Some(Reap::DeadOwner));
        assert_eq!(decide(&f, &dead_old, 1, None, &[]), None, "a session is connected");
        assert_eq!(decide(&f, &dead_old, 0, None, &[7]), None, "the process is alive");
        let dead_young = owned_name('b', H1, &Owner { host: "ab12".into(), pid: 7, start: NOW - 10 }, 0);
        assert_eq!(decide(&f, &dead_young, 0, None, &[]), None, "too young to be sure");
        let mine = owned_name('t', H1, &f.me, 3);
        assert_eq!(decide(&f, &mine, 0, None, &[]), None, "this process's own");
    }

    #[test]
    fn foreign_hosts_are_reaped_only_after_a_day() {
        let f = fixture();
        let hour = owned_name('t', H1, &Owner { host: "ffff".into(), pid: 7, start: NOW - 3600 }, 0);
        assert_eq!(decide(&f, &hour, 0, None, &[]), None);
        let days = owned_name('t', H1, &Owner { host: "ffff".into(), pid: 7, start: NOW - 2 * 86400 }, 0);
        assert_eq!(decide(&f, &days, 0, None, &[]), Some(Reap::ForeignAndOld));
    }

    #[test]
    fn ready_clones_live_as_long_as_their_template() {
        let f = fixture();
        let dead = Owner { host: "ab12".into(), pid: 7, start: NOW - 3600 };
        assert_eq!(
            decide(&f, &owned_name('r', H1, &dead, 0), 0, None, &[]),
            None,
            "a pool is shared: its maker may be gone"
        );
        assert_eq!(decide(&f, &owned_name('r', H2, &dead, 0), 0, None, &[]), Some(Reap::OrphanReady));
    }

    #[test]
    fn superseded_templates_of_the_same_sets_are_reaped() {
        let f = fixture();
        let old = template_name(H2, "audit");
        assert_eq!(decide(&f, &old, 0, Some(NOW - 3600), &[]), Some(Reap::Superseded));
        assert_eq!(decide(&f, &old, 0, Some(NOW - 30), &[]), None, "just built by another run");
        assert_eq!(decide(&f, &template_name(H1, "audit"), 0, None, &[]), None, "the current one");
        assert_eq!(decide(&f, &template_name(H2, "workflow"), 0, None, &[]), None, "sets this process does not use");
        assert_eq!(decide(&f, "e2e", 0, None, &[]), None, "not ours");
    }

    /// Before scratch names, a test's own empty database (`cli_...`, `t_...`) was invisible to
    /// the reaper: a crashed run left it on the shared server for good.
    #[test]
    fn scratch_databases_of_dead_processes_are_reaped_like_test_databases() {
        let f = fixture();
        let dead = Owner { host: "ab12".into(), pid: 7, start: NOW - 3600 };
        assert_eq!(decide(&f, &scratch_name(&dead, 0), 0, None, &[]), Some(Reap::DeadOwner));
        assert_eq!(decide(&f, &scratch_name(&dead, 0), 0, None, &[7]), None, "the process is alive");
        assert_eq!(decide(&f, &scratch_name(&dead, 0), 1, None, &[]), None, "a session is connected");
        assert_eq!(decide(&f, &scratch_name(&f.me, 0), 0, None, &[]), None, "this process's own");
        let young = Owner { start: NOW - 10, ..dead };
        assert_eq!(decide(&f, &scratch_name(&young, 0), 0, None, &[]), None, "too young to be sure");
        let foreign = Owner { host: "ffff".into(), pid: 7, start: NOW - 2 * 86400 };
        assert_eq!(decide(&f, &scratch_name(&foreign, 0), 0, None, &[]), Some(Reap::ForeignAndOld));
    }
}
