//! The server cache: a migrated server's data folder, kept so that a cold setup copies it
//! instead of running `initdb`, starting and applying every migration.
//!
//! An entry is keyed by everything its content depends on: the caller's content key (sets,
//! each migration's checksum and statements, partition specs and the day partitions were rolled
//! for, see `testdb::Fingerprint`), the PostgreSQL version, the cache format and the accounts
//! (the socket's peer map names the user). Any change is another key, so a stale entry is never
//! reused. Entries are copies of a cleanly stopped server with the password cleared, so they
//! hold no secret; each server made from one gets its own instance id, configuration and
//! password. They are immutable once stored (written aside, then renamed into place), copied
//! under a shared lock and evicted under an exclusive one: oldest use first, past
//! [`MAX_AGE`] or beyond the size bound ([`MAX_MB_ENV`], default [`DEFAULT_MAX_MB`] MB).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bumped when an entry's layout changes.
pub const CACHE_FORMAT: u32 = 1;

/// Environment variable: the cache's size bound in megabytes.
pub const MAX_MB_ENV: &str = "E2E_CACHE_MAX_MB";

/// The size bound when [`MAX_MB_ENV`] is not set.
pub const DEFAULT_MAX_MB: u64 = 512;

/// Entries unused for this long are removed.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Files of a data folder that belong to one server, not to its content.
const INSTANCE_FILES: &[&str] = &["postmaster.pid", "postmaster.opts", "e2e.conf"];

/// What a setup asks of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRequest {
    /// The cache folder.
    pub dir: PathBuf,
    /// A key for everything the content depends on (a fingerprint hash).
    pub content: String,
    /// A label for people (sets and day).
    pub label: String,
}

/// The entry's name for `request` on this server version and these accounts (pure).
pub(crate) fn entry_key(
    request: &CacheRequest,
    pg_version: &str,
    os_user: &str,
    server_account: Option<&str>,
) -> String {
    let text = format!(
        "format {CACHE_FORMAT}\ncontent {}\npostgres {pg_version}\nuser {os_user}\naccount {}\n",
        request.content,
        server_account.unwrap_or("-")
    );
    Sha256::digest(text).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// One entry as eviction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Its folder name.
    pub(crate) name: String,
    /// Its size.
    pub(crate) bytes: u64,
    /// Since its last use.
    pub(crate) unused_for: Duration,
}

/// Which entries to remove (pure): those unused for longer than `max_age`, then the least
/// recently used until the rest fit in `max_bytes`; never `keep` (the entry just stored).
pub(crate) fn eviction(entries: &[Entry], keep: &str, max_bytes: u64, max_age: Duration) -> Vec<String> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.unused_for));
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut out = Vec::new();
    for e in sorted {
        if e.name == keep {
            continue;
        }
        if e.unused_for > max_age || total > max_bytes {
            total -= e.bytes;
            out.push(e.name.clone());
        }
    }
    out
}

/// The size bound from [`MAX_MB_ENV`] (pure over its value).
pub(crate) fn max_bytes_from(value: Option<&str>) -> u64 {
    value.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(DEFAULT_MAX_MB) * 1024 * 1024
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    label: String,
    bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// A lock on the cache folder: shared to copy out, exclusive to store and evict.
struct CacheLock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

fn lock(dir: &Path, exclusive: bool) -> Result<CacheLock> {
    Ok(CacheLock(super::lock_dir(dir, exclusive)?))
}

/// Copies the folder `from` to `to` (made, mode 0700), files, folders and symlinks, skipping
/// `skip` at the top, giving everything to `owner`; returns the bytes copied.
fn copy_tree(from: &Path, to: &Path, skip: &[&str], owner: Option<(u32, u32)>) -> Result<u64> {
    fs::create_dir(to).map_err(io(to))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).map_err(io(to))?;
    let chown = |p: &Path| -> Result<()> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(io(p))?;
        }
        Ok(())
    };
    chown(to)?;
    let mut bytes = 0;
    for e in fs::read_dir(from).map_err(io(from))? {
        let e = e.map_err(io(from))?;
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        let kind = e.file_type().map_err(io(&src))?;
        if kind.is_symlink() {
            let target = fs::read_link(&src).map_err(io(&src))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(io(&dst))?;
            chown(&dst)?;
        } else if kind.is_dir() {
            bytes += copy_tree(&src, &dst, &[], owner)?;
            let mode = fs::metadata(&src).map_err(io(&src))?.permissions().mode();
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode & 0o777)).map_err(io(&dst))?;
        } else if kind.is_file() {
            bytes += fs::copy(&src, &dst).map_err(io(&dst))?;
            chown(&dst)?;
        }
    }
    Ok(bytes)
}

/// Copies the entry `key` of `dir` into the new folder `into`, owned by `owner`; false when
/// there is no such entry.
pub(crate) fn restore(dir: &Path, key: &str, into: &Path, owner: Option<(u32, u32)>) -> Result<bool> {
    let entry = dir.join(key);
    if !entry.join("meta.json").is_file() {
        return Ok(false);
    }
    let _lock = lock(dir, false)?;
    if !entry.join("meta.json").is_file() {
        return Ok(false); // evicted while we waited
    }
    copy_tree(&entry.join("data"), into, &[], owner)?;
    // Its last use, for eviction.
    if let Ok(f) = fs::File::open(&entry) {
        let _ = f.set_modified(SystemTime::now());
    }
    Ok(true)
}

/// Stores the data folder of a cleanly stopped server as the entry `key` (if another process
/// stored it first, that one stays), then evicts.
pub(crate) fn store(dir: &Path, key: &str, data: &Path, label: &str) -> Result<()> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let nonce = crate::secret::random_hex(4, "a folder name")?;
    let tmp = dir.join(format!(".tmp-{}-{nonce}", std::process::id()));
    fs::create_dir(&tmp).map_err(io(&tmp))?;
    let stored = (|| -> Result<()> {
        let bytes = copy_tree(data, &tmp.join("data"), INSTANCE_FILES, None)?;
        let meta = Meta { format: CACHE_FORMAT, label: label.to_string(), bytes };
        let meta_file = tmp.join("meta.json");
        fs::write(&meta_file, serde_json::to_vec_pretty(&meta).expect("serialisable")).map_err(io(&meta_file))?;
        let _lock = lock(dir, true)?;
        let entry = dir.join(key);
        if entry.exists() {
            return Ok(());
        }
        fs::rename(&tmp, &entry).map_err(io(&entry))?;
        evict(dir, key)
    })();
    if tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    stored
}

/// Removes what [`eviction`] picks, and temporary folders of stores that died (under the
/// exclusive lock).
fn evict(dir: &Path, keep: &str) -> Result<()> {
    let now = SystemTime::now();
    let mut entries = Vec::new();
    for e in fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let unused_for = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| now.duration_since(t).ok());
        let unused_for = unused_for.unwrap_or_default();
        if name.starts_with(".tmp-") {
            if unused_for > Duration::from_secs(3600) {
                let _ = fs::remove_dir_all(e.path());
            }
            continue;
        }
        let meta: Option<Meta> =
            fs::read_to_string(e.path().join("meta.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
        match meta {
            Some(m) if m.format == CACHE_FORMAT => entries.push(Entry { name, bytes: m.bytes, unused_for }),
            _ => {
                let _ = fs::remove_dir_all(e.path()); // another format, or broken
            }
        }
    }
    let max = max_bytes_from(std::env::var(MAX_MB_ENV).ok().as_deref());
    for name in eviction(&entries, keep, max, MAX_AGE) {
        tracing::debug!("evicting server cache entry {name}");
        let p = dir.join(&name);
        fs::remove_dir_all(&p).map_err(io(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(content: &str) -> CacheRequest {
        CacheRequest { dir: "/c".into(), content: content.into(), label: "audit 2025-03-10".into() }
    }

    #[test]
    fn any_change_of_content_version_or_account_is_another_entry() {
        let base = entry_key(&req("fp1"), "postgres (PostgreSQL) 15.6", "me", None);
        assert_eq!(base, entry_key(&req("fp1"), "postgres (PostgreSQL) 15.6", "me", None));
        for other in [
            entry_key(&req("fp2"), "postgres (PostgreSQL) 15.6", "me", None),
            entry_key(&req("fp1"), "postgres (PostgreSQL) 16.2", "me", None),
            entry_key(&req("fp1"), "postgres (PostgreSQL) 15.6", "you", None),
            entry_key(&req("fp1"), "postgres (PostgreSQL) 15.6", "root", Some("postgres")),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(base.len(), 32);
    }

    fn e(name: &str, mb: u64, hours: u64) -> Entry {
        Entry { name: name.into(), bytes: mb << 20, unused_for: Duration::from_secs(hours * 3600) }
    }

    #[test]
    fn eviction_drops_old_entries_then_least_recently_used_beyond_the_bound() {
        let day = 24;
        let entries = [e("old", 40, 8 * day), e("a", 40, 5), e("b", 40, 1), e("new", 40, 0)];
        assert_eq!(eviction(&entries, "new", 1000 << 20, MAX_AGE), ["old"]);
        assert_eq!(eviction(&entries, "new", 100 << 20, MAX_AGE), ["old", "a"]);
        assert_eq!(eviction(&entries, "new", 10 << 20, MAX_AGE), ["old", "a", "b"], "the new entry stays");
    }

    #[test]
    fn the_bound_comes_from_the_environment() {
        assert_eq!(max_bytes_from(None), DEFAULT_MAX_MB << 20);
        assert_eq!(max_bytes_from(Some("64")), 64 << 20);
        assert_eq!(max_bytes_from(Some("lots")), DEFAULT_MAX_MB << 20);
    }

    #[test]
    fn entries_are_stored_without_instance_files_and_restored_whole() {
        let base = e2e_test_support::TempDir::new("e2e-cache-test");
        let data = base.join("data");
        fs::create_dir_all(data.join("base/1")).unwrap();
        fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        fs::write(data.join("base/1/1259"), vec![7u8; 8192]).unwrap();
        fs::write(data.join("postmaster.pid"), "1\n").unwrap();
        fs::write(data.join("e2e.conf"), "port = 1\n").unwrap();
        std::os::unix::fs::symlink("base", data.join("link")).unwrap();
        let dir = base.join("cache");
        store(&dir, "k1", &data, "label").unwrap();
        store(&dir, "k1", &data, "label").unwrap(); // a second store of the same key keeps the first
        let into = base.join("restored");
        assert!(restore(&dir, "k1", &into, None).unwrap());
        assert!(!restore(&dir, "k2", &base.join("none"), None).unwrap());
        assert_eq!(fs::read(into.join("base/1/1259")).unwrap().len(), 8192);
        assert!(!into.join("postmaster.pid").exists() && !into.join("e2e.conf").exists());
        assert_eq!(fs::read_link(into.join("link")).unwrap(), Path::new("base"));
        assert_eq!(fs::metadata(&into).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary folders left");
    }
}
