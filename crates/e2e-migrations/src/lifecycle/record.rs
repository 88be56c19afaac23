//! What setup leaves in the state folder for later commands, test crates and teardown:
//! `state.json` (the record, mode 0600: it holds the generated password) and `connection.env`
//! (shell-quoted `KEY=VALUE` lines, 0600).
//!
//! The record says which state folder it was made in (`made_in`, canonical) and keeps paths
//! inside that folder relative to it. A record read in another folder (a checkout copied with
//! its `target/`) is [`Saved::Foreign`]: nothing it names is reused, stopped or deleted.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The record's file name in the state folder.
pub const RECORD_FILE: &str = "state.json";

/// The env file's name in the state folder.
pub const ENV_FILE: &str = "connection.env";

/// The record layout written by this version.
pub const RECORD_FORMAT: u32 = 2;

/// Files that earlier versions wrote (read only to clean up after them): `run.json` held the
/// run id that the record's [`SetupState::run_id`] now holds.
const LEGACY_FILES: &[&str] = &["connection.json", "local/state.json", "run.json"];

/// The backend a setup used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The local server.
    Local,
    /// A server given by URL (setup made nothing).
    Url,
    /// A Kind cluster.
    Kind,
    /// A namespace in an existing cluster.
    Kube,
}

impl BackendKind {
    /// The name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Url => "url",
            BackendKind::Kind => "kind",
            BackendKind::Kube => "kube",
        }
    }
}

/// The connection a setup made, and what it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupState {
    /// Which backend.
    pub backend: BackendKind,
    /// A URL reachable from this host, when there is one (kube reaches the server through a
    /// port-forward instead, see `kube`).
    pub database_url: Option<String>,
    /// The kubeconfig file setup used or wrote (kind, kube).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (kube).
    pub context: Option<String>,
    /// The namespace PostgreSQL runs in (kind, kube).
    pub namespace: Option<String>,
    /// The Kind cluster name (kind).
    pub cluster: Option<String>,
    /// Whether setup made what it runs in, so teardown may delete it: the local server; kube:
    /// the namespace (not with `--existing-namespace`, where it owns only its run's objects);
    /// kind: this checkout's namespace in the cluster. Never the Kind cluster itself, which
    /// checkouts share: see [`SetupState::cluster_created`].
    pub owned: bool,
    /// Kind: this checkout's setup created the cluster (`kind create cluster`), rather than
    /// joining one that was there. Said by `doctor` and in teardown's messages; never a reason
    /// to delete the cluster, which other checkouts may have joined since (teardown deletes it
    /// when its API shows that no other checkout uses it). Records written before this field
    /// read `false`: their `owned` was `true` for a cluster made and for one joined alike.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_created: bool,
    /// The sets applied by the last setup.
    pub sets: Vec<String>,
    /// Kind, kube: the run whose objects setup made (their names and labels carry it). Saved
    /// before anything is made on the cluster, and kept by every later setup until teardown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Kind, kube: when the run's first setup happened (its objects' `created-at` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Kube: the namespace was made by someone else (`--existing-namespace`); teardown deletes
    /// only the run's objects in it, never the namespace.
    #[serde(default)]
    pub existing_namespace: bool,
    /// Kind, kube: the settings file setup read (absolute), so that a later setup that follows
    /// this one (and its teardown) reads the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_file: Option<PathBuf>,
}

impl SetupState {
    /// A setup of `backend` that has made nothing yet and owns nothing: no URL, no kubeconfig,
    /// context, namespace, cluster or run, no sets. Setup fills in what it makes and owns.
    pub fn new(backend: BackendKind) -> SetupState {
        SetupState {
            backend,
            database_url: None,
            kubeconfig: None,
            context: None,
            namespace: None,
            cluster: None,
            owned: false,
            cluster_created: false,
            sets: Vec::new(),
            run_id: None,
            run_created_at: None,
            existing_namespace: false,
            settings_file: None,
        }
    }

    /// A setup of the local backend: this checkout's own server, which teardown removes; its
    /// URL is filled in once the server listens.
    pub fn local() -> SetupState {
        SetupState { owned: true, ..SetupState::new(BackendKind::Local) }
    }

    /// The KEY=VALUE pairs that `--print-env` prints and `connection.env` holds.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(u) = &self.database_url {
            env.push(("DATABASE_URL".to_string(), u.clone()));
        }
        if let Some(k) = &self.kubeconfig {
            env.push(("KUBECONFIG".to_string(), k.display().to_string()));
        }
        if let Some(c) = &self.context {
            env.push(("E2E_KUBE_CONTEXT".to_string(), c.clone()));
        }
        if let Some(n) = &self.namespace {
            env.push(("E2E_NAMESPACE".to_string(), n.clone()));
        }
        if let Some(r) = &self.run_id {
            env.push(("E2E_RUN_ID".to_string(), r.clone()));
        }
        env
    }
}

/// How far setup got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Setup is making the server (or was killed while making it).
    Creating,
    /// The server was made and reached once.
    Ready,
}

/// Where the local server's folder is, relative to nothing a copy could share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPlace {
    /// `local/server` in the state folder.
    State,
    /// A private folder under `/tmp` named after the state folder (when the state folder is too
    /// deep for a unix socket path, or unreachable by the server's account).
    Temp,
}

/// The local server's part of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRecord {
    /// Where its folder is.
    pub place: DataPlace,
    /// TCP port on 127.0.0.1 (chosen at each start).
    pub port: u16,
    /// Superuser name.
    pub user: String,
    /// Generated password (TCP logins only; the private socket uses peer authentication).
    pub password: String,
    /// The test database.
    pub database: String,
    /// Where `initdb` and `postgres` were found.
    pub bindir: PathBuf,
    /// The account the server runs as, when started by root.
    pub run_as: Option<String>,
}

impl LocalRecord {
    /// The URL of `database` on this server, over TCP.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{}:{}@127.0.0.1:{}/{}", self.user, self.password, self.port, database)
    }

    /// The URL of the test database.
    pub fn url(&self) -> String {
        self.url_for(&self.database)
    }
}

/// The record (`state.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_FORMAT`].
    pub format: u32,
    /// The canonical state folder it was made in.
    pub made_in: PathBuf,
    /// Made at creation, kept in the server's settings and checked on the live server.
    pub instance_id: String,
    /// How far setup got.
    pub phase: Phase,
    /// The connection and what setup owns. Paths inside the state folder are kept relative.
    pub setup: SetupState,
    /// The local server, for the local backend.
    pub local: Option<LocalRecord>,
}

/// What the state folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // read once per command; matching on it stays plain
pub enum Saved {
    /// No record.
    Missing,
    /// A record made in this state folder.
    Ours(Record),
    /// A record made in another state folder.
    Foreign {
        /// The record (nothing it names is acted on).
        record: Box<Record>,
        /// Where it was made.
        made_in: PathBuf,
    },
    /// A record that cannot be parsed.
    Unreadable {
        /// Why.
        reason: String,
    },
    /// Only files of an earlier version (`connection.json`, `local/state.json`).
    Legacy {
        /// The local server's password there, when it can be read (to prove the server ours).
        password: Option<String>,
        /// Its user.
        user: Option<String>,
    },
}

/// The record file in `state_dir`.
pub fn record_file(state_dir: &Path) -> PathBuf {
    state_dir.join(RECORD_FILE)
}

/// The env file in `state_dir`.
pub fn env_file(state_dir: &Path) -> PathBuf {
    state_dir.join(ENV_FILE)
}

/// Classifies a record's text read in the canonical state folder `here` (pure).
pub(crate) fn classify(text: &str, here: &Path) -> Saved {
    let mut record: Record = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return Saved::Unreadable { reason: e.to_string() },
    };
    if record.format != RECORD_FORMAT {
        return Saved::Unreadable {
            reason: format!("record format {} (this version reads {RECORD_FORMAT})", record.format),
        };
    }
    if record.made_in != here {
        let made_in = record.made_in.clone();
        return Saved::Foreign { record: Box::new(record), made_in };
    }
    if let Some(k) = &record.setup.kubeconfig {
        if k.is_relative() {
            record.setup.kubeconfig = Some(here.join(k));
        }
    }
    Saved::Ours(record)
}

/// Reads the record in the canonical state folder `here`.
pub fn read(here: &Path) -> Result<Saved> {
    let file = record_file(here);
    match fs::read_to_string(&file) {
        Ok(text) => Ok(classify(&text, here)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(read_legacy(here)),
        Err(source) => Err(Error::Io { path: file, source }),
    }
}

#[derive(Deserialize)]
struct LegacyLocal {
    user: String,
    password: String,
}

fn read_legacy(here: &Path) -> Saved {
    if !LEGACY_FILES.iter().any(|f| here.join(f).exists()) {
        return Saved::Missing;
    }
    let local: Option<LegacyLocal> =
        fs::read_to_string(here.join("local/state.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    Saved::Legacy { password: local.as_ref().map(|l| l.password.clone()), user: local.map(|l| l.user) }
}

/// Writes `path` with mode 0600 (atomically, through a temporary file of this process's own).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut f =
        fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// The record's JSON as written in `here`: paths inside `here` relative (pure).
pub(crate) fn to_json(record: &Record, here: &Path) -> String {
    let mut r = record.clone();
    if let Some(k) = &r.setup.kubeconfig {
        if let Ok(rel) = k.strip_prefix(here) {
            r.setup.kubeconfig = Some(rel.to_path_buf());
        }
    }
    serde_json::to_string_pretty(&r).expect("serialisable")
}

/// Saves the record and its env file in `here`, both 0600.
pub fn write(here: &Path, record: &Record) -> Result<()> {
    write_private(&record_file(here), to_json(record, here).as_bytes())?;
    write_private(&env_file(here), env_file_text(&record.setup.env()).as_bytes())
}

/// Removes the record, the env file and an earlier version's files (not the backends' folders).
pub fn remove(here: &Path) -> Result<()> {
    let files = [RECORD_FILE, ENV_FILE].iter().chain(LEGACY_FILES).map(|f| here.join(f));
    for f in files {
        match fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path: f, source }),
        }
    }
    Ok(())
}

/// Quotes `s` for a POSIX shell: as is when it holds only safe characters, else in single
/// quotes (a `'` inside becomes `'\''`) (pure).
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The env file's text: one `KEY=value` per line, values shell-quoted, so that `. file` in a
/// shell sets exactly those values (pure).
pub(crate) fn env_file_text(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={}\n", shell_quote(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(here: &Path) -> Record {
        Record {
            format: RECORD_FORMAT,
            made_in: here.to_path_buf(),
            instance_id: "abc".into(),
            phase: Phase::Ready,
            setup: SetupState {
                backend: BackendKind::Kind,
                database_url: Some("postgres://e2e:pw@127.0.0.1:15432/e2e".into()),
                kubeconfig: Some(here.join("kind/kubeconfig")),
                context: Some("kind-e2e".into()),
                namespace: Some("e2e".into()),
                cluster: Some("e2e".into()),
                owned: true,
                cluster_created: true,
                sets: vec!["audit".into()],
                run_id: Some("3f9a1c2b".into()),
                run_created_at: Some("2024-06-15T12:00:00Z".parse().unwrap()),
                existing_namespace: false,
                settings_file: None,
            },
            local: None,
        }
    }

    #[test]
    fn a_new_setup_owns_nothing_and_a_local_one_owns_its_server() {
        let url = SetupState::new(BackendKind::Url);
        assert!(!url.owned && url.env().is_empty() && url.sets.is_empty());
        let local = SetupState::local();
        assert_eq!((local.backend, local.owned), (BackendKind::Local, true));
    }

    #[test]
    fn paths_inside_the_state_folder_are_kept_relative() {
        let here = Path::new("/w/target/e2e");
        let json = to_json(&record(here), here);
        assert!(json.contains("\"kubeconfig\": \"kind/kubeconfig\""), "{json}");
        assert_eq!(classify(&json, here), Saved::Ours(record(here)));
    }

    #[test]
    fn a_record_read_in_another_folder_is_foreign() {
        let here = Path::new("/w/target/e2e");
        let json = to_json(&record(here), here);
        match classify(&json, Path::new("/copy/target/e2e")) {
            Saved::Foreign { made_in, .. } => assert_eq!(made_in, here),
            other => panic!("{other:?}"),
        }
    }

    /// A Kind record from before `cluster_created` said `owned: true` for a cluster its setup
    /// made and for one it joined alike: it reads as not having made the cluster, and keeps
    /// owning its namespace. A record that made the cluster says so, and one that did not
    /// leaves the field out.
    #[test]
    fn an_older_kind_record_reads_as_not_having_created_the_cluster() {
        let here = Path::new("/w/target/e2e");
        let made = to_json(&record(here), here);
        assert!(made.contains("\"cluster_created\": true"), "{made}");
        let older = made.replace("\"cluster_created\": true,\n", "").replace("\"cluster_created\": true", "");
        assert!(!older.contains("cluster_created"), "{older}");
        let Saved::Ours(read) = classify(&older, here) else { panic!("{older}") };
        assert!(read.setup.owned && !read.setup.cluster_created, "{:?}", read.setup);
        let joined = Record { setup: SetupState { cluster_created: false, ..record(here).setup }, ..record(here) };
        assert!(!to_json(&joined, here).contains("cluster_created"));
    }

    #[test]
    fn truncated_or_foreign_format_records_are_unreadable_not_errors() {
        let here = Path::new("/w");
        assert!(matches!(classify("{\"format\": 2, \"made_", here), Saved::Unreadable { .. }));
        let old = to_json(&record(here), here).replace("\"format\": 2", "\"format\": 9");
        assert!(matches!(classify(&old, here), Saved::Unreadable { reason } if reason.contains("format 9")));
    }

    #[test]
    fn an_earlier_versions_files_are_read_only_to_clean_up_after_them() {
        let tmp = e2e_test_support::TempDir::new("e2e-record-legacy");
        let here = tmp.path();
        fs::create_dir_all(here.join("local")).unwrap();
        assert_eq!(read(here).unwrap(), Saved::Missing);
        fs::write(here.join("connection.json"), "{}").unwrap();
        fs::write(here.join("local/state.json"), r#"{"port": 5, "user": "e2e", "password": "pw"}"#).unwrap();
        assert_eq!(read(here).unwrap(), Saved::Legacy { password: Some("pw".into()), user: Some("e2e".into()) });
        remove(here).unwrap();
        assert_eq!(read(here).unwrap(), Saved::Missing);
    }

    #[test]
    fn shell_quoting_keeps_paths_and_urls_literal() {
        assert_eq!(shell_quote("/plain/path-1.env"), "/plain/path-1.env");
        assert_eq!(shell_quote("postgres://e2e:ab12@127.0.0.1:5432/e2e"), "postgres://e2e:ab12@127.0.0.1:5432/e2e");
        assert_eq!(shell_quote("/a b/$(touch x)/it's"), r"'/a b/$(touch x)/it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            env_file_text(&[("KUBECONFIG".into(), "/my dir/kc".into()), ("A".into(), "b".into())]),
            "KUBECONFIG='/my dir/kc'\nA=b\n"
        );
    }
}
