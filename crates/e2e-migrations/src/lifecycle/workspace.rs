//! The checkout a command runs in: its root, its migrations folder and its own state folder.
//!
//! The root is the nearest folder, from the current one upwards, that holds `Cargo.lock` (the
//! workspace root, also when cargo runs a test binary from its crate's folder). Everything else
//! is derived from it, never from a path compiled into a binary: a binary built in one checkout
//! and run in another reads the other's `migrations/` and keeps its state there.
//!
//! The state folder belongs to this checkout alone:
//! - `$E2E_STATE_DIR` when set (relative to the root), shared on purpose by whoever sets it;
//! - else `$CARGO_TARGET_DIR/e2e/<checkout>-<hash of the root>` when a target folder is shared
//!   by several checkouts (worktrees; a relative one is taken against the root, as the test
//!   binaries, run from their crate's folders, would otherwise each find another);
//! - else `<root>/target/e2e`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::LifecycleError;
use crate::error::{Error, Result};
use crate::{Project, MIGRATIONS_DIR_ENV, STATE_DIR_ENV};

/// Environment variable naming the server cache folder (default: `e2e-cache` in the target folder).
pub const CACHE_DIR_ENV: &str = "E2E_CACHE_DIR";

/// Environment variable that turns the server cache off (`off`, `0` or `false`).
pub const CACHE_ENV: &str = "E2E_CACHE";

/// The environment variables the workspace depends on, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvVars {
    /// `E2E_STATE_DIR`.
    pub state_dir: Option<PathBuf>,
    /// `CARGO_TARGET_DIR`.
    pub target_dir: Option<PathBuf>,
    /// `E2E_MIGRATIONS_DIR`.
    pub migrations_dir: Option<PathBuf>,
    /// `E2E_CACHE_DIR`.
    pub cache_dir: Option<PathBuf>,
    /// `E2E_CACHE=off`.
    pub cache_off: bool,
    /// `E2E_CONNECT_TIMEOUT`, as written (checked by [`Workspace::find`]).
    pub connect_timeout: Option<String>,
}

impl EnvVars {
    /// Reads this process's environment (empty values count as unset).
    pub fn from_process() -> EnvVars {
        let path = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cache_off = std::env::var(CACHE_ENV)
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "off" | "0" | "false" | "no"))
            .unwrap_or(false);
        EnvVars {
            state_dir: path(STATE_DIR_ENV),
            target_dir: path("CARGO_TARGET_DIR"),
            migrations_dir: path(MIGRATIONS_DIR_ENV),
            cache_dir: path(CACHE_DIR_ENV),
            cache_off,
            connect_timeout: std::env::var(crate::db::CONNECT_TIMEOUT_ENV).ok().filter(|v| !v.trim().is_empty()),
        }
    }
}

/// One checkout, as found from a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// The root: the folder holding `Cargo.lock` (canonical).
    pub root: PathBuf,
    /// The migrations folder (`<root>/migrations`, or `$E2E_MIGRATIONS_DIR`).
    pub migrations: PathBuf,
    /// The target folder: `$CARGO_TARGET_DIR`, else `<root>/target`.
    pub target_dir: PathBuf,
    /// This checkout's state folder.
    pub state_dir: PathBuf,
    /// The server cache folder, or `None` when the cache is off.
    pub cache_dir: Option<PathBuf>,
    /// How long each connection the lifecycle opens may take to be ready (the engine's connect
    /// timeout: `E2E_CONNECT_TIMEOUT`, else 10 s; a command's `--connect-timeout` sets it).
    pub connect_timeout: std::time::Duration,
}

/// The nearest of `start` and its ancestors for which `holds_lock` is true (pure over it).
pub(crate) fn find_root(start: &Path, holds_lock: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    start.ancestors().find(|a| holds_lock(a)).map(Path::to_path_buf)
}

/// A short name for a checkout that is unique on the machine: `<folder name>-<8 hex digits of
/// the root path's SHA-256>` (pure).
pub fn checkout_tag(root: &Path) -> String {
    let name: String = root
        .file_name()
        .map(|n| n.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect())
        .unwrap_or_default();
    let name = if name.is_empty() { "root".to_string() } else { name };
    let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{name}-{hash}")
}

/// The target folder: `$CARGO_TARGET_DIR`, else `<root>/target` (pure).
///
/// Cargo takes a relative `CARGO_TARGET_DIR` against the folder it is run from. The processes
/// that read it here are not all run from there: `cargo test` and nextest run each test binary
/// in its crate's folder, while `cargo xtask` runs where the user is. So it is taken against the
/// root, which is where cargo puts the target folder when run from the root (as the README's
/// commands are), and where every process of a checkout finds the same state folder whatever
/// its current folder.
pub(crate) fn target_dir(root: &Path, vars: &EnvVars) -> PathBuf {
    match &vars.target_dir {
        Some(t) => root.join(t),
        None => root.join("target"),
    }
}

/// Derives the workspace's folders from its canonical root (pure). Relative `E2E_*` paths are
/// taken against the root, so that a test binary (run from its crate's folder) and a command
/// run from the root agree.
pub(crate) fn layout(root: &Path, vars: &EnvVars) -> Workspace {
    let target = target_dir(root, vars);
    let state_dir = match (&vars.state_dir, &vars.target_dir) {
        (Some(s), _) => root.join(s),
        (None, Some(_)) => target.join("e2e").join(checkout_tag(root)),
        (None, None) => root.join("target").join("e2e"),
    };
    let migrations = match &vars.migrations_dir {
        Some(m) => root.join(m),
        None => root.join("migrations"),
    };
    let cache_dir = match (&vars.cache_dir, vars.cache_off) {
        (_, true) => None,
        (Some(c), false) => Some(root.join(c)),
        (None, false) => Some(target.join("e2e-cache")),
    };
    Workspace {
        root: root.to_path_buf(),
        migrations,
        target_dir: target,
        state_dir,
        cache_dir,
        connect_timeout: crate::db::DEFAULT_CONNECT_TIMEOUT,
    }
}

impl Workspace {
    /// The workspace of the current folder and this process's environment.
    pub fn current() -> Result<Workspace> {
        let cwd = std::env::current_dir().map_err(|source| Error::Io { path: PathBuf::from("."), source })?;
        Workspace::find(&cwd, &EnvVars::from_process())
    }

    /// The workspace that holds `dir`, with these environment values.
    pub fn find(dir: &Path, vars: &EnvVars) -> Result<Workspace> {
        let root = find_root(dir, |a| a.join("Cargo.lock").is_file())
            .ok_or_else(|| LifecycleError::NoWorkspace { from: dir.to_path_buf() })?;
        let root = std::fs::canonicalize(&root).map_err(|source| Error::Io { path: root.clone(), source })?;
        let mut ws = layout(&root, vars);
        if let Some(t) = &vars.connect_timeout {
            ws.connect_timeout = crate::db::parse_timeout(t).map_err(|_| Error::InvalidEnv {
                var: crate::db::CONNECT_TIMEOUT_ENV,
                value: t.clone(),
                expected: crate::db::TIMEOUT_EXPECTED,
            })?;
        }
        Ok(ws)
    }

    /// A path from a setting, a flag or an environment variable, taken against the workspace
    /// root when it is relative (not against the current folder, which differs between a
    /// command run from the root and a test binary run from its crate's folder) (pure).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.root.join(path)
    }

    /// Loads and validates the migrations folder.
    pub fn project(&self) -> Result<Project> {
        Project::load(&self.migrations)
    }

    /// The state folder, created if needed, as a canonical path (what a record's `made_in` is
    /// compared with).
    pub fn canonical_state_dir(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|source| Error::Io { path: self.state_dir.clone(), source })?;
        std::fs::canonicalize(&self.state_dir).map_err(|source| Error::Io { path: self.state_dir.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> EnvVars {
        EnvVars::default()
    }

    #[test]
    fn the_root_is_the_nearest_folder_with_a_lock_file() {
        let has = |p: &Path| p == Path::new("/w") || p == Path::new("/w/sub/inner");
        assert_eq!(find_root(Path::new("/w/xtask/src"), has), Some(PathBuf::from("/w")));
        assert_eq!(find_root(Path::new("/w/sub/inner/tests"), has), Some(PathBuf::from("/w/sub/inner")));
        assert_eq!(find_root(Path::new("/elsewhere"), has), None);
    }

    #[test]
    fn state_and_migrations_default_to_the_checkout() {
        let w = layout(Path::new("/src/a"), &vars());
        assert_eq!(w.state_dir, Path::new("/src/a/target/e2e"));
        assert_eq!(w.migrations, Path::new("/src/a/migrations"));
        assert_eq!(w.cache_dir.as_deref(), Some(Path::new("/src/a/target/e2e-cache")));
    }

    #[test]
    fn a_shared_target_dir_gives_each_checkout_its_own_state_folder() {
        let v = EnvVars { target_dir: Some("/shared/target".into()), ..vars() };
        let a = layout(Path::new("/src/a"), &v);
        let b = layout(Path::new("/src/b"), &v);
        let a2 = layout(Path::new("/other/a"), &v);
        let text = |p: &Path| p.to_string_lossy().into_owned();
        assert!(text(&a.state_dir).starts_with("/shared/target/e2e/a-"), "{:?}", a.state_dir);
        assert!(text(&b.state_dir).starts_with("/shared/target/e2e/b-"), "{:?}", b.state_dir);
        assert_ne!(a.state_dir, a2.state_dir, "same folder name, another checkout");
        assert_eq!(a.cache_dir.as_deref(), Some(Path::new("/shared/target/e2e-cache")), "the cache is shared");
    }

    #[test]
    fn a_relative_target_dir_is_taken_from_the_root_so_tests_and_commands_agree() {
        // A test binary runs in its crate's folder, `cargo xtask` where the user is: both find
        // the state in the target folder cargo made when run from the root.
        let v = EnvVars { target_dir: Some("t".into()), ..vars() };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let from_crate = Workspace::find(Path::new(env!("CARGO_MANIFEST_DIR")), &v).unwrap();
        let from_root = Workspace::find(&root, &v).unwrap();
        assert_eq!(from_crate.state_dir, from_root.state_dir);
        assert_eq!(from_crate.target_dir, from_root.root.join("t"));
        assert!(from_crate.state_dir.starts_with(from_root.root.join("t/e2e")), "{:?}", from_crate.state_dir);
    }

    #[test]
    fn e2e_variables_win_and_relative_ones_are_taken_from_the_root() {
        let v = EnvVars {
            state_dir: Some("st".into()),
            target_dir: Some("/shared".into()),
            migrations_dir: Some("db/migrations".into()),
            cache_dir: Some("/c".into()),
            cache_off: false,
            connect_timeout: None,
        };
        let w = layout(Path::new("/src/a"), &v);
        assert_eq!(w.state_dir, Path::new("/src/a/st"));
        assert_eq!(w.migrations, Path::new("/src/a/db/migrations"));
        assert_eq!(w.cache_dir.as_deref(), Some(Path::new("/c")));
        let off = layout(Path::new("/src/a"), &EnvVars { cache_off: true, ..v });
        assert_eq!(off.cache_dir, None);
    }

    #[test]
    fn checkout_tags_are_dns_friendly_and_differ_by_path() {
        let t = checkout_tag(Path::new("/home/me/my repo.v2"));
        assert!(t.starts_with("my-repo-v2-") && t.len() == "my-repo-v2-".len() + 8, "{t}");
        assert_ne!(checkout_tag(Path::new("/x/a")), checkout_tag(Path::new("/y/a")));
    }

    #[test]
    fn the_connect_timeout_comes_from_the_environment_and_a_bad_one_is_named() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(Workspace::find(here, &vars()).unwrap().connect_timeout, crate::db::DEFAULT_CONNECT_TIMEOUT);
        let v = EnvVars { connect_timeout: Some("2.5".into()), ..vars() };
        assert_eq!(Workspace::find(here, &v).unwrap().connect_timeout, std::time::Duration::from_millis(2500));
        let v = EnvVars { connect_timeout: Some("soon".into()), ..vars() };
        let e = Workspace::find(here, &v).unwrap_err().to_string();
        assert!(e.starts_with("E2E_CONNECT_TIMEOUT=\"soon\""), "{e}");
    }

    #[test]
    fn relative_paths_are_taken_from_the_root_and_absolute_ones_kept() {
        let w = layout(Path::new("/src/a"), &vars());
        assert_eq!(w.resolve(Path::new("e2e.toml")), Path::new("/src/a/e2e.toml"));
        assert_eq!(w.resolve(Path::new("lab/e2e.toml")), Path::new("/src/a/lab/e2e.toml"));
        assert_eq!(w.resolve(Path::new("/etc/e2e.toml")), Path::new("/etc/e2e.toml"));
    }
}
