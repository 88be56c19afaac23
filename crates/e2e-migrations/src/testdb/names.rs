//! Names of the databases this module makes, and which leftovers to reap (pure).

use super::*;

/// The process that made a database: host tag, pid, process start (unix seconds), sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// 4 hex digits from the host name and pid namespace.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When the process first used this module (unix seconds).
    pub start: u64,
}

/// What a database made by this module is, read back from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// A per-process database name: `e2e_<kind>_<hash>_<host>_<pid>_<start base 36>_<n base 36>`.
pub fn owned_name(kind: char, short_hash: &str, owner: &Owner, n: u64) -> String {
    format!("{PREFIX}{kind}_{short_hash}_{}_{}_{}_{}", owner.host, owner.pid, base36(owner.start), base36(n))
}

pub(super) fn base36(mut n: u64) -> String {
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
    let [kind, hash, host, pid, start, n] = parts.as_slice() else {
        return None;
    };
    if !is_hash(hash) || host.len() != 4 || !host.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let owner = Owner { host: host.to_string(), pid: pid.parse().ok()?, start: u64::from_str_radix(start, 36).ok()? };
    u64::from_str_radix(n, 36).ok()?;
    let hash = hash.to_string();
    match *kind {
        "b" => Some(DbName::Build { hash, owner }),
        "r" => Some(DbName::Ready { hash, owner }),
        "t" => Some(DbName::Test { hash, owner }),
        _ => None,
    }
}

pub(super) fn is_hash(s: &str) -> bool {
    s.len() == HASH_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the reaper knows when it looks at the server.
pub struct ReapContext<'a> {
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
pub struct Seen {
    /// Its name.
    pub name: String,
    /// Sessions connected to it now.
    pub sessions: i64,
    /// For templates: when it was built (unix seconds), from its comment.
    pub built_at: Option<u64>,
}

/// Why the reaper drops a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reap {
    /// A test or build database whose process is gone.
    DeadOwner,
    /// A test or build database from another host, older than [`FOREIGN_MIN_AGE`].
    ForeignAndOld,
    /// A ready clone whose template is gone (a changed migration, another day).
    OrphanReady,
    /// A template of the same sets with another fingerprint, older than [`OLD_TEMPLATE_MIN_AGE`].
    Superseded,
}

/// Decides whether to drop `db` (pure). Never drops a database with sessions, one of this
/// process, one not made by this module, or a template this process uses.
pub fn reap_decision(db: &Seen, ctx: &ReapContext<'_>) -> Option<Reap> {
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
        DbName::Build { owner, .. } | DbName::Test { owner, .. } => {
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
