//! The doctor's probes: what is installed and running, read without changing anything (no
//! server started, no file written, no cluster contacted; engines answer `info` within seconds).

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_migrations::error::report;
use e2e_migrations::lifecycle::{self, local, Saved, SetupState, Workspace};
use xshell::Shell;

use super::report::{
    parse_os_release, parse_postgres_version, Facts, Kubeconfig, LocalServer, Platform, Postgres, Tool,
};
use crate::kind::cluster::{self, EngineAnswer, Probe};
use crate::kind::dry_run::Engine;

/// The first line a program prints for `args`, if it runs and succeeds.
fn first_line(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().next().map(|l| l.trim().to_string())
}

fn platform() -> Platform {
    if cfg!(target_os = "macos") {
        return Platform::MacOs;
    }
    match std::fs::read_to_string("/etc/os-release") {
        Ok(text) => parse_os_release(&text),
        Err(_) => Platform::Other(std::env::consts::OS.to_string()),
    }
}

fn postgres() -> Result<Postgres, String> {
    let bindir = local::find_bindir().map_err(|e| report(&e))?;
    let version = first_line(&bindir.join("postgres"), &["--version"]).and_then(|l| parse_postgres_version(&l));
    Ok(Postgres { bindir, version })
}

fn server_account() -> Option<String> {
    ["postgres", "nobody"]
        .into_iter()
        .find(|name| matches!(nix::unistd::User::from_name(name), Ok(Some(_))))
        .map(str::to_string)
}

fn kubectl() -> Option<Tool> {
    if !cluster::on_path("kubectl") {
        return None;
    }
    let out = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok();
    let version = out
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["clientVersion"]["gitVersion"].as_str().map(str::to_string));
    Some(Tool { version })
}

fn kubeconfig() -> Kubeconfig {
    let explicit = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty());
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube").join("config"));
    if explicit.is_none() && !home.as_deref().is_some_and(Path::is_file) {
        return Kubeconfig::Absent;
    }
    match kube::config::Kubeconfig::read() {
        Ok(kc) => Kubeconfig::Read {
            contexts: kc.contexts.iter().map(|c| c.name.clone()).collect(),
            current: kc.current_context,
        },
        Err(e) => Kubeconfig::Unreadable(e.to_string()),
    }
}

/// Free bytes on the file system of `dir`, or of its nearest existing ancestor.
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|a| a.exists())?;
    let st = nix::sys::statvfs::statvfs(existing).ok()?;
    #[allow(clippy::useless_conversion)] // the field types differ between Linux and macOS
    Some(u64::from(st.blocks_available()) * u64::from(st.fragment_size()))
}

/// What this checkout's record says: the setup (an unusable record is the error), and the
/// local server it keeps, if any (asked only whether its port accepts connections).
fn saved(ws: &Workspace) -> (Result<Option<SetupState>, String>, Option<LocalServer>) {
    let file = lifecycle::record::record_file(&ws.state_dir);
    let rec = match lifecycle::read_saved(ws) {
        Ok(Saved::Ours(rec)) => rec,
        Ok(Saved::Missing) => return (Ok(None), None),
        Ok(Saved::Legacy { .. }) => {
            return (Err(format!("{} holds an earlier version's state", ws.state_dir.display())), None)
        }
        Ok(Saved::Foreign { made_in, .. }) => {
            return (Err(format!("{} was made in {} (a copied checkout)", file.display(), made_in.display())), None)
        }
        Ok(Saved::Unreadable { reason }) => return (Err(format!("{}: {reason}", file.display())), None),
        Err(e) => return (Err(report(&e)), None),
    };
    let local = rec.local.as_ref().map(|l| {
        let here = std::fs::canonicalize(&ws.state_dir).unwrap_or_else(|_| ws.state_dir.clone());
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, l.port);
        let answers = l.port != 0 && TcpStream::connect_timeout(&addr.into(), Duration::from_millis(300)).is_ok();
        LocalServer { port: l.port, answers, data_root: local::Layout::new(&here, l.place).root }
    });
    (Ok(Some(rec.setup)), local)
}

/// Probes this machine.
pub(crate) fn probe() -> Facts {
    let kind = cluster::on_path("kind").then(|| Tool { version: first_line(Path::new("kind"), &["version"]) });
    let podman_requested = std::env::var("KIND_EXPERIMENTAL_PROVIDER").is_ok_and(|v| v == "podman");
    let (docker, podman) = match Shell::new() {
        Ok(sh) => {
            let docker =
                if podman_requested { EngineAnswer::Missing } else { cluster::engine_answer(&sh, Engine::Docker) };
            let podman = if docker == EngineAnswer::Running {
                EngineAnswer::Missing
            } else {
                cluster::engine_answer(&sh, Engine::Podman)
            };
            (docker, podman)
        }
        Err(e) => (EngineAnswer::NotRunning(e.to_string()), EngineAnswer::Missing),
    };
    let ws = Workspace::current();
    let state_dir = ws.as_ref().map(|w| w.state_dir.clone()).unwrap_or_else(|_| PathBuf::from("target/e2e"));
    let (setup, local) = match &ws {
        Ok(ws) => saved(ws),
        Err(e) => (Err(report(e)), None),
    };
    Facts {
        platform: platform(),
        arch: std::env::consts::ARCH.to_string(),
        root: nix::unistd::geteuid().is_root(),
        postgres: postgres(),
        server_account: server_account(),
        engines: Probe { kind: kind.is_some(), podman_requested, docker, podman },
        kind,
        kubectl: kubectl(),
        kubeconfig: kubeconfig(),
        free_bytes: free_bytes(&state_dir),
        setup,
        local,
        state_dir,
        database_url_set: std::env::var_os("DATABASE_URL").is_some_and(|u| !u.is_empty()),
    }
}
