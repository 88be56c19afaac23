//! What `e2e-setup` leaves for later commands, test crates and teardown: `connection.json`
//! (mode 0600) and `connection.env` (KEY=VALUE, 0600) in the state folder.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    /// Whether setup created the cluster (or namespace), so teardown may delete it (a kube
    /// setup in a namespace someone else made owns only its run's objects there).
    pub owned: bool,
    /// The sets applied by the last setup.
    pub sets: Vec<String>,
    /// Kind, kube: the run whose objects setup made (their names and labels carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Kube: the namespace was made by someone else (`--existing-namespace`); teardown deletes
    /// only the run's objects in it, never the namespace.
    #[serde(default)]
    pub existing_namespace: bool,
}

impl SetupState {
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

/// The state file in `root`.
pub fn state_file(root: &Path) -> PathBuf {
    root.join("connection.json")
}

/// The env file in `root`.
pub fn env_file(root: &Path) -> PathBuf {
    root.join("connection.env")
}

/// Reads the state setup left in `root`, if any.
pub fn read(root: &Path) -> Result<Option<SetupState>> {
    read_json(&state_file(root))
}

/// Reads a JSON file into `T`; `None` when the file does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| Error::Other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path: path.to_path_buf(), source }),
    }
}

/// Writes `path` with mode 0600 (atomically, through a temporary file).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // A temporary name of this process's own, so that two writers never share one.
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut f =
        fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Saves `state` (and its env file) in `root`, both 0600.
pub fn write(root: &Path, state: &SetupState) -> Result<()> {
    write_private(&state_file(root), &serde_json::to_vec_pretty(state).expect("serialisable"))?;
    let env: String = state.env().iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    write_private(&env_file(root), env.as_bytes())
}

/// Removes the state files (not the backend's own folders).
pub fn remove(root: &Path) -> Result<()> {
    for f in [state_file(root), env_file(root)] {
        match fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path: f, source }),
        }
    }
    Ok(())
}
