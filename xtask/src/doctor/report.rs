//! The doctor's decisions (pure): from the facts probed on this machine to a report of what is
//! there, what each backend needs, and the install line for each missing piece on this platform.

use std::path::PathBuf;

use e2e_migrations::lifecycle::{BackendKind, SetupState};
use serde::Serialize;

use crate::kind::cluster::{self, EngineAnswer, Probe};

/// Below this much free disk under the state folder, nothing can run (a server's data, images).
pub(crate) const DISK_CRITICAL: u64 = 256 << 20;
/// Below this much, a warning: a Kind node image and PostgreSQL image alone take about 1.5 GiB.
pub(crate) const DISK_LOW: u64 = 4 << 30;

/// The kind release the install lines name.
pub(crate) const KIND_VERSION: &str = "v0.27.0";

/// The operating system, as far as install lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Platform {
    /// Debian, Ubuntu and their derivatives (apt); the name from os-release.
    Debian(String),
    /// macOS (Homebrew).
    MacOs,
    /// Anything else; its name.
    Other(String),
}

/// An installed program and what it says of its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tool {
    /// Its version, when it said one.
    pub(crate) version: Option<String>,
}

/// PostgreSQL's server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Postgres {
    /// The folder holding `initdb` and `postgres`.
    pub(crate) bindir: PathBuf,
    /// `postgres --version`'s version, e.g. `15.18`.
    pub(crate) version: Option<String>,
}

/// The kubeconfig as read (no cluster is contacted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kubeconfig {
    /// No kubeconfig file (`$KUBECONFIG`, `~/.kube/config`).
    Absent,
    /// It could not be read: why.
    Unreadable(String),
    /// Its contexts and the current one.
    Read { contexts: Vec<String>, current: Option<String> },
}

/// The local server's saved state, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalServer {
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    /// Whether something accepts connections on that port now.
    pub(crate) answers: bool,
    /// Its data folder.
    pub(crate) data_root: PathBuf,
}

/// Everything the doctor decides from: plain data, probed by `probe`.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    /// The platform.
    pub(crate) platform: Platform,
    /// `x86_64`, `aarch64`, ... (for download lines).
    pub(crate) arch: String,
    /// Running as root.
    pub(crate) root: bool,
    /// The server binaries, or why they were not found.
    pub(crate) postgres: Result<Postgres, String>,
    /// As root: the unprivileged account the server would run as (`postgres`, else `nobody`).
    pub(crate) server_account: Option<String>,
    /// `kind`, when on PATH.
    pub(crate) kind: Option<Tool>,
    /// Docker and Podman, as kind's availability probe sees them (engines probed even without kind).
    pub(crate) engines: Probe,
    /// `kubectl`, when on PATH.
    pub(crate) kubectl: Option<Tool>,
    /// The kubeconfig.
    pub(crate) kubeconfig: Kubeconfig,
    /// The state folder (`target/e2e` or `$E2E_STATE_DIR`).
    pub(crate) state_dir: PathBuf,
    /// Free bytes on the file system holding it, when known.
    pub(crate) free_bytes: Option<u64>,
    /// What an earlier `e2e-setup` left, or why it could not be read.
    pub(crate) setup: Result<Option<SetupState>, String>,
    /// The local server's state, when it has one (made by setup or by tests on demand).
    pub(crate) local: Option<LocalServer>,
    /// `DATABASE_URL` is set.
    pub(crate) database_url_set: bool,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Present and working.
    Ok,
    /// Present but not usable as it is, or worth a look.
    Warn,
    /// Not there.
    Missing,
    /// For information (optional pieces, earlier state).
    Info,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    /// What was checked.
    pub(crate) name: &'static str,
    /// How it came out.
    pub(crate) status: Status,
    /// What was found.
    pub(crate) detail: String,
    /// What to do about it, for this platform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
}

/// Whether a backend can run here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Verdict {
    /// `local`, `kind`, `kube` or `url`.
    pub(crate) backend: &'static str,
    /// It can run.
    pub(crate) ready: bool,
    /// Why (not).
    pub(crate) why: String,
}

/// The doctor's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Report {
    /// The platform, as named in install lines.
    pub(crate) platform: String,
    /// What was checked.
    pub(crate) checks: Vec<Check>,
    /// Each backend.
    pub(crate) backends: Vec<Verdict>,
    /// What `e2e-setup` (backend auto) would use now, and why.
    pub(crate) auto: String,
}

impl Report {
    /// Whether the local default can run (the exit code).
    pub(crate) fn local_ready(&self) -> bool {
        self.backends.iter().any(|v| v.backend == "local" && v.ready)
    }
}

fn platform_name(p: &Platform) -> String {
    match p {
        Platform::Debian(name) => name.clone(),
        Platform::MacOs => "macOS".to_string(),
        Platform::Other(name) => name.clone(),
    }
}

/// The OS from `/etc/os-release` text (pure): Debian-like when `ID` or `ID_LIKE` names debian
/// or ubuntu.
pub(crate) fn parse_os_release(text: &str) -> Platform {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    let name = field("PRETTY_NAME").or_else(|| field("NAME")).unwrap_or_else(|| "Linux".to_string());
    let ids = format!("{} {}", field("ID").unwrap_or_default(), field("ID_LIKE").unwrap_or_default());
    if ids.split_whitespace().any(|id| id == "debian" || id == "ubuntu") {
        Platform::Debian(name)
    } else {
        Platform::Other(name)
    }
}

/// The version in `postgres --version` output (`postgres (PostgreSQL) 15.18 (Debian ...)`).
pub(crate) fn parse_postgres_version(out: &str) -> Option<String> {
    out.split_once("(PostgreSQL)").and_then(|(_, rest)| rest.split_whitespace().next()).map(str::to_string)
}

/// Install lines, one per platform.
struct Lines<'a> {
    facts: &'a Facts,
}

impl Lines<'_> {
    fn sudo(&self) -> &'static str {
        if self.facts.root {
            ""
        } else {
            "sudo "
        }
    }

    fn download_arch(&self) -> &'static str {
        match self.facts.arch.as_str() {
            "aarch64" => "arm64",
            _ => "amd64",
        }
    }

    fn postgres(&self) -> String {
        match &self.facts.platform {
            Platform::Debian(_) => format!("{}apt-get install postgresql", self.sudo()),
            Platform::MacOs => "brew install postgresql@16 (keg-only: found in $(brew --prefix postgresql@16)/bin, \
                                or set E2E_PG_BINDIR to that folder)"
                .to_string(),
            Platform::Other(_) => {
                "install PostgreSQL's server binaries (initdb, postgres) and set E2E_PG_BINDIR to their folder"
                    .to_string()
            }
        }
    }

    fn kind(&self) -> String {
        match &self.facts.platform {
            Platform::MacOs => "brew install kind".to_string(),
            _ => format!(
                "curl -Lo kind https://kind.sigs.k8s.io/dl/{KIND_VERSION}/kind-linux-{arch} && {sudo}install kind /usr/local/bin/kind \
                 (or: go install sigs.k8s.io/kind@{KIND_VERSION})",
                arch = self.download_arch(),
                sudo = self.sudo()
            ),
        }
    }

    fn engine(&self) -> String {
        match &self.facts.platform {
            Platform::Debian(_) => format!(
                "{sudo}apt-get install docker.io && {sudo}systemctl start docker (or: {sudo}apt-get install podman, \
                 with KIND_EXPERIMENTAL_PROVIDER=podman)",
                sudo = self.sudo()
            ),
            Platform::MacOs => {
                "brew install --cask docker, then open Docker Desktop (or: brew install colima docker && \
                                colima start)"
                    .to_string()
            }
            Platform::Other(_) => "install Docker or Podman and start it".to_string(),
        }
    }

    fn kubectl(&self) -> String {
        match &self.facts.platform {
            Platform::MacOs => "brew install kubectl".to_string(),
            _ => format!(
                "curl -LO https://dl.k8s.io/release/v1.32.0/bin/linux/{arch}/kubectl && {sudo}install kubectl /usr/local/bin/kubectl",
                arch = self.download_arch(),
                sudo = self.sudo()
            ),
        }
    }

    fn account(&self) -> String {
        match &self.facts.platform {
            Platform::MacOs => "run as your own user instead of root".to_string(),
            _ => "useradd --system --no-create-home postgres (installing the postgresql package makes it too)"
                .to_string(),
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Decides the report from the facts (pure).
pub(crate) fn report(f: &Facts) -> Report {
    let lines = Lines { facts: f };
    let mut checks = Vec::new();

    // PostgreSQL's server binaries, and (as root) the account the server runs as.
    let postgres_ok = f.postgres.is_ok();
    checks.push(match &f.postgres {
        Ok(pg) => Check {
            name: "postgresql",
            status: Status::Ok,
            detail: format!(
                "PostgreSQL {} server binaries in {}",
                pg.version.as_deref().unwrap_or("(version unknown)"),
                pg.bindir.display()
            ),
            fix: None,
        },
        Err(why) => Check {
            name: "postgresql",
            status: Status::Missing,
            detail: why.split(';').next().unwrap_or(why).to_string(),
            fix: Some(lines.postgres()),
        },
    });
    let account_ok = !f.root || f.server_account.is_some();
    if f.root {
        checks.push(match &f.server_account {
            Some(a) => Check {
                name: "server account",
                status: Status::Ok,
                detail: format!("running as root: the local server runs as the unprivileged account '{a}'"),
                fix: None,
            },
            None => Check {
                name: "server account",
                status: Status::Missing,
                detail: "running as root, and neither a 'postgres' nor a 'nobody' account exists (PostgreSQL refuses to run as root)".to_string(),
                fix: Some(lines.account()),
            },
        });
    }

    // Kind and a container engine, as kind's own availability check sees them.
    checks.push(match &f.kind {
        Some(t) => Check {
            name: "kind",
            status: Status::Ok,
            detail: t.version.clone().unwrap_or_else(|| "on PATH".to_string()),
            fix: None,
        },
        None => {
            Check { name: "kind", status: Status::Missing, detail: "not on PATH".to_string(), fix: Some(lines.kind()) }
        }
    });
    checks.push(engine_check(&f.engines, &lines));

    // kubectl (optional) and the kubeconfig (for --backend kube).
    checks.push(match &f.kubectl {
        Some(t) => Check {
            name: "kubectl",
            status: Status::Ok,
            detail: t.version.clone().unwrap_or_else(|| "on PATH".to_string()),
            fix: None,
        },
        None => Check {
            name: "kubectl",
            status: Status::Info,
            detail: "not on PATH (optional: setup talks to the Kubernetes API itself; kubectl is for looking around)"
                .to_string(),
            fix: Some(lines.kubectl()),
        },
    });
    checks.push(match &f.kubeconfig {
        Kubeconfig::Absent => Check {
            name: "kube context",
            status: Status::Info,
            detail: "no kubeconfig ($KUBECONFIG or ~/.kube/config): only --backend kube needs one".to_string(),
            fix: None,
        },
        Kubeconfig::Unreadable(why) => Check {
            name: "kube context",
            status: Status::Warn,
            detail: format!("the kubeconfig cannot be read: {why}"),
            fix: Some("fix or unset KUBECONFIG".to_string()),
        },
        Kubeconfig::Read { contexts, current } => Check {
            name: "kube context",
            status: Status::Ok,
            detail: format!(
                "current context: {} ({} context{} in the kubeconfig)",
                current.as_deref().unwrap_or("none"),
                contexts.len(),
                if contexts.len() == 1 { "" } else { "s" }
            ),
            fix: None,
        },
    });

    // Free disk under the state folder.
    let disk_ok = f.free_bytes.is_none_or(|b| b >= DISK_CRITICAL);
    checks.push(match f.free_bytes {
        None => Check {
            name: "disk",
            status: Status::Info,
            detail: format!("free space under {} unknown", f.state_dir.display()),
            fix: None,
        },
        Some(b) => Check {
            name: "disk",
            status: if b < DISK_CRITICAL {
                Status::Missing
            } else if b < DISK_LOW {
                Status::Warn
            } else {
                Status::Ok
            },
            detail: format!("{} free under {}", gib(b), f.state_dir.display()),
            fix: (b < DISK_LOW).then(|| {
                format!(
                    "free some space there (a Kind cluster takes about {}), or set E2E_STATE_DIR to a roomier folder",
                    gib(DISK_LOW)
                )
            }),
        },
    });

    checks.push(setup_check(f));

    // The backends.
    let mut backends = Vec::new();
    let local_why = if !postgres_ok {
        "no PostgreSQL server binaries".to_string()
    } else if !account_ok {
        "running as root without an account to run the server as".to_string()
    } else if !disk_ok {
        format!("less than {} free under {}", gib(DISK_CRITICAL), f.state_dir.display())
    } else {
        "a throwaway server from this machine's binaries".to_string()
    };
    backends.push(Verdict { backend: "local", ready: postgres_ok && account_ok && disk_ok, why: local_why });
    let kind_probe = Probe { kind: f.kind.is_some(), ..f.engines.clone() };
    let kind_verdict = match cluster::availability(&kind_probe) {
        Ok(engine) if disk_ok => {
            Verdict { backend: "kind", ready: true, why: format!("kind and a running {}", engine.program()) }
        }
        Ok(_) => Verdict {
            backend: "kind",
            ready: false,
            why: format!("less than {} free under {}", gib(DISK_CRITICAL), f.state_dir.display()),
        },
        Err(why) => Verdict { backend: "kind", ready: false, why },
    };
    // said where auto falls back to local: the reason alone; the kind line adds what to do instead
    let kind_why = (!kind_verdict.ready).then(|| kind_verdict.why.clone());
    let kind_verdict = match kind_verdict {
        Verdict { ready: false, why, .. } => Verdict { backend: "kind", ready: false, why: cluster::or_local(&why) },
        ready => ready,
    };
    backends.push(kind_verdict);
    backends.push(match &f.kubeconfig {
        Kubeconfig::Read { contexts, .. } if !contexts.is_empty() => Verdict {
            backend: "kube",
            ready: true,
            why: "an existing cluster: give --context CONTEXT and --namespace NAMESPACE".to_string(),
        },
        _ => Verdict {
            backend: "kube",
            ready: false,
            why: "no kubeconfig context to deploy to (KUBECONFIG or ~/.kube/config)".to_string(),
        },
    });
    backends.push(Verdict {
        backend: "url",
        ready: true,
        why: if f.database_url_set {
            "DATABASE_URL is set: setup uses that server".to_string()
        } else {
            "an existing server: give --database-url URL (or DATABASE_URL)".to_string()
        },
    });

    let previous = f.setup.as_ref().ok().and_then(|s| s.as_ref());
    let asked = crate::follow::Asked { url: f.database_url_set.then_some("$DATABASE_URL"), ..Default::default() };
    let auto = match crate::follow::choose_setup(&asked, previous, || kind_why) {
        Ok(c) => format!("{} ({})", crate::follow::backend_name(c.backend), c.why.unwrap_or_default()),
        Err(e) => format!("refused: {e}"),
    };
    Report { platform: platform_name(&f.platform), checks, backends, auto }
}

fn engine_check(p: &Probe, lines: &Lines) -> Check {
    let answers = [("docker", &p.docker), ("podman", &p.podman)];
    let wanted: Vec<_> = if p.podman_requested { vec![answers[1]] } else { answers.to_vec() };
    if let Some((name, _)) = wanted.iter().find(|(_, a)| **a == EngineAnswer::Running) {
        let requested = if p.podman_requested { " (KIND_EXPERIMENTAL_PROVIDER=podman)" } else { "" };
        return Check {
            name: "container engine",
            status: Status::Ok,
            detail: format!("{name} is running{requested}"),
            fix: None,
        };
    }
    let mut said = Vec::new();
    for (name, answer) in &wanted {
        match answer {
            EngineAnswer::Missing => {}
            EngineAnswer::Running => unreachable!("handled above"),
            EngineAnswer::NotRunning(out) => said.push(format!(
                "{name} is installed but not running ({})",
                out.lines().find(|l| !l.trim().is_empty()).unwrap_or("`info` failed").trim()
            )),
            EngineAnswer::TimedOut => said.push(format!("{name} is installed but `{name} info` does not answer")),
        }
    }
    if said.is_empty() {
        let which = if p.podman_requested { "podman is not on PATH" } else { "neither docker nor podman is on PATH" };
        return Check {
            name: "container engine",
            status: Status::Missing,
            detail: which.to_string(),
            fix: Some(lines.engine()),
        };
    }
    let start = match lines.facts.platform {
        Platform::MacOs => "open Docker Desktop (or `colima start`, `podman machine start`)",
        _ => "`sudo systemctl start docker` (Podman: check `podman info`)",
    };
    Check {
        name: "container engine",
        status: Status::Warn,
        detail: said.join("; "),
        fix: Some(format!("start it: {start}")),
    }
}

fn setup_check(f: &Facts) -> Check {
    let local = |l: &LocalServer| {
        if l.answers {
            format!("the local server answers on 127.0.0.1:{} (data in {})", l.port, l.data_root.display())
        } else {
            format!(
                "the local server (port {}, data in {}) is not running: the next setup or test run starts it again",
                l.port,
                l.data_root.display()
            )
        }
    };
    match &f.setup {
        Err(why) => Check {
            name: "previous setup",
            status: Status::Warn,
            detail: format!("its state cannot be read: {why}"),
            fix: Some("cargo xtask e2e-teardown, then cargo xtask e2e-setup".to_string()),
        },
        Ok(None) => Check {
            name: "previous setup",
            status: Status::Info,
            detail: match &f.local {
                None => format!("none (nothing in {})", f.state_dir.display()),
                Some(l) => format!("no e2e-setup state; {}", local(l)),
            },
            fix: None,
        },
        Ok(Some(s)) => {
            let sets = if s.sets.is_empty() { "all".to_string() } else { s.sets.join(",") };
            let mut detail = format!("--backend {}, sets {sets}", format!("{:?}", s.backend).to_lowercase());
            match s.backend {
                BackendKind::Local => {
                    if let Some(l) = &f.local {
                        detail.push_str(&format!("; {}", local(l)));
                    }
                }
                BackendKind::Url => {
                    if let Some(u) = &s.database_url {
                        detail.push_str(&format!("; server {}", e2e_migrations::db::redact(u)));
                    }
                }
                BackendKind::Kind => {
                    detail.push_str(&format!(
                        "; Kind cluster {} ({}), namespace {}: teardown deletes the namespace, and the cluster when \
                         no other checkout uses it",
                        s.cluster.as_deref().unwrap_or("?"),
                        if s.cluster_created {
                            "created by this checkout's setup"
                        } else {
                            "joined, not created, by this checkout"
                        },
                        s.namespace.as_deref().unwrap_or("?"),
                    ));
                }
                BackendKind::Kube => {
                    detail.push_str(&format!(
                        "; context {}, namespace {}",
                        s.context.as_deref().unwrap_or("?"),
                        s.namespace.as_deref().unwrap_or("?")
                    ));
                }
            }
            Check { name: "previous setup", status: Status::Info, detail, fix: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn debian_root() -> Facts {
        Facts {
            platform: Platform::Debian("Debian GNU/Linux 12 (bookworm)".to_string()),
            arch: "x86_64".to_string(),
            root: true,
            postgres: Ok(Postgres { bindir: "/usr/lib/postgresql/15/bin".into(), version: Some("15.18".into()) }),
            server_account: Some("postgres".to_string()),
            kind: None,
            engines: Probe {
                kind: false,
                podman_requested: false,
                docker: EngineAnswer::NotRunning(
                    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
                        .into(),
                ),
                podman: EngineAnswer::Missing,
            },
            kubectl: Some(Tool { version: Some("v1.32.4".into()) }),
            kubeconfig: Kubeconfig::Absent,
            state_dir: "/w/target/e2e".into(),
            free_bytes: Some(60 << 30),
            setup: Ok(None),
            local: None,
            database_url_set: false,
        }
    }

    fn render(f: &Facts) -> String {
        super::super::render_text(&report(f))
    }

    #[test]
    fn this_machine_can_run_local_only_and_says_what_kind_needs() {
        let r = report(&debian_root());
        assert!(r.local_ready());
        expect![[r#"
            platform: Debian GNU/Linux 12 (bookworm)

              ok       postgresql        PostgreSQL 15.18 server binaries in /usr/lib/postgresql/15/bin
              ok       server account    running as root: the local server runs as the unprivileged account 'postgres'
              missing  kind              not on PATH
                                         fix: curl -Lo kind https://kind.sigs.k8s.io/dl/v0.27.0/kind-linux-amd64 && install kind /usr/local/bin/kind (or: go install sigs.k8s.io/kind@v0.27.0)
              warn     container engine  docker is installed but not running (Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?)
                                         fix: start it: `sudo systemctl start docker` (Podman: check `podman info`)
              ok       kubectl           v1.32.4
              info     kube context      no kubeconfig ($KUBECONFIG or ~/.kube/config): only --backend kube needs one
              ok       disk              60.0 GiB free under /w/target/e2e
              info     previous setup    none (nothing in /w/target/e2e)

            backends:
              local  ready      a throwaway server from this machine's binaries
              kind   not ready  `kind` is not on PATH: install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation; e.g. `go install sigs.k8s.io/kind@v0.27.0`), or use --backend local
              kube   not ready  no kubeconfig context to deploy to (KUBECONFIG or ~/.kube/config)
              url    ready      an existing server: give --database-url URL (or DATABASE_URL)

            e2e-setup would use: local (kind is not usable here: `kind` is not on PATH: install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation; e.g. `go install sigs.k8s.io/kind@v0.27.0`))
        "#]]
        .assert_eq(&render(&debian_root()));
    }

    #[test]
    fn a_mac_without_postgres_is_told_the_homebrew_line_and_fails() {
        let f = Facts {
            platform: Platform::MacOs,
            arch: "aarch64".into(),
            root: false,
            postgres: Err(
                "no PostgreSQL server binaries found (initdb and postgres, searched PATH); install them".into()
            ),
            server_account: None,
            kind: Some(Tool { version: Some("kind v0.27.0 go1.23.6 darwin/arm64".into()) }),
            engines: Probe {
                kind: true,
                podman_requested: false,
                docker: EngineAnswer::Running,
                podman: EngineAnswer::Missing,
            },
            ..debian_root()
        };
        let r = report(&f);
        assert!(!r.local_ready());
        let pg = &r.checks[0];
        assert_eq!(pg.status, Status::Missing);
        expect![[r#"brew install postgresql@16 (keg-only: found in $(brew --prefix postgresql@16)/bin, or set E2E_PG_BINDIR to that folder)"#]]
        .assert_eq(pg.fix.as_deref().unwrap());
        assert!(r.checks.iter().all(|c| c.name != "server account"), "not root: no account check");
        let kind = r.backends.iter().find(|v| v.backend == "kind").unwrap();
        assert!(kind.ready, "{kind:?}");
        assert_eq!(kind.why, "kind and a running docker");
        assert!(r.auto.starts_with("kind ("), "{}", r.auto);
    }

    #[test]
    fn root_without_an_account_or_disk_cannot_run_local() {
        let f = Facts { server_account: None, ..debian_root() };
        let r = report(&f);
        assert!(!r.local_ready());
        let acct = r.checks.iter().find(|c| c.name == "server account").unwrap();
        assert_eq!(acct.status, Status::Missing);
        assert!(acct.fix.as_deref().unwrap().starts_with("useradd --system"));

        let f = Facts { free_bytes: Some(100 << 20), ..debian_root() };
        let r = report(&f);
        assert!(!r.local_ready());
        assert_eq!(r.checks.iter().find(|c| c.name == "disk").unwrap().status, Status::Missing);
        let f = Facts { free_bytes: Some(1 << 30), ..debian_root() };
        let r = report(&f);
        assert!(r.local_ready(), "low disk only warns");
        assert_eq!(r.checks.iter().find(|c| c.name == "disk").unwrap().status, Status::Warn);
    }

    #[test]
    fn install_lines_use_sudo_only_when_not_root() {
        let f = Facts { root: false, postgres: Err("none".into()), ..debian_root() };
        let r = report(&f);
        assert_eq!(r.checks[0].fix.as_deref(), Some("sudo apt-get install postgresql"));
        let f = Facts { postgres: Err("none".into()), ..debian_root() };
        assert_eq!(report(&f).checks[0].fix.as_deref(), Some("apt-get install postgresql"));
    }

    #[test]
    fn previous_setup_is_described_without_its_password() {
        let state = SetupState {
            database_url: Some("postgres://e2e:s3cret@127.0.0.1:40001/e2e".into()),
            sets: vec!["audit".into(), "workflow".into()],
            ..SetupState::local()
        };
        let local = LocalServer { port: 40001, answers: true, data_root: "/w/target/e2e/local/server".into() };
        let f = Facts { setup: Ok(Some(state.clone())), local: Some(local), ..debian_root() };
        let r = report(&f);
        let c = r.checks.iter().find(|c| c.name == "previous setup").unwrap();
        expect![[r#"--backend local, sets audit,workflow; the local server answers on 127.0.0.1:40001 (data in /w/target/e2e/local/server)"#]]
        .assert_eq(&c.detail);
        assert!(r.auto.starts_with("local (following this checkout's local setup"), "{}", r.auto);
        let url = SetupState { backend: BackendKind::Url, ..state };
        let f = Facts { setup: Ok(Some(url)), ..debian_root() };
        let json = serde_json::to_string(&report(&f)).unwrap();
        assert!(!json.contains("s3cret") && json.contains("postgres://e2e:***@127.0.0.1:40001/e2e"), "{json}");
    }

    #[test]
    fn os_release_and_postgres_version_parsing() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n";
        assert_eq!(parse_os_release(debian), Platform::Debian("Debian GNU/Linux 12 (bookworm)".into()));
        let mint = "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
        assert_eq!(parse_os_release(mint), Platform::Debian("Linux Mint".into()));
        assert_eq!(parse_os_release("ID=fedora\nNAME=Fedora\n"), Platform::Other("Fedora".into()));
        assert_eq!(
            parse_postgres_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").as_deref(),
            Some("15.18")
        );
        assert_eq!(parse_postgres_version("postgres (PostgreSQL) 16.4 (Homebrew)").as_deref(), Some("16.4"));
        assert_eq!(parse_postgres_version("garbage"), None);
    }
}
