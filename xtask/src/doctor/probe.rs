//! The doctor's probes: what is installed and running, read without changing anything (no
//! server started, no file written, no cluster contacted; engines answer `info` within seconds).

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_migrations::{local, state};
use xshell::Shell;

use super::report::{
    parse_os_release, parse_postgres_version, Facts, Kubeconfig, LocalServer, Platform, Postgres, Tool,
};
use crate::kind::cluster::{self, EngineAnswer, Probe};
use crate::kind::plan::Engine;

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
    let bindir = local::find_bindir().map_err(|e| e.to_string())?;
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

fn local_server() -> Option<LocalServer> {
    let st = local::read_state(&local::default_state_dir()).ok()??;
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, st.port);
    let answers = st.port != 0 && TcpStream::connect_timeout(&addr.into(), Duration::from_millis(300)).is_ok();
    Some(LocalServer { port: st.port, answers, data_root: st.data_root })
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
    let state_dir = e2e_migrations::state_root();
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
        setup: state::read(&state_dir).map_err(|e| e2e_migrations::error::report(&e)),
        local: local_server(),
        state_dir,
        database_url_set: std::env::var_os("DATABASE_URL").is_some_and(|u| !u.is_empty()),
    }
}
