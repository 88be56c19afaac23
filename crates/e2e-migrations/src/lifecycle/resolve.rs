//! From "this checkout, this URL (if any) and this state" to a server: the decision is pure
//! ([`route`]), reaching the server is the thin I/O layer ([`resolve`]).

use std::path::{Path, PathBuf};

use super::error::LifecycleError;
use super::local::{self, StartOptions};
use super::record::{self, BackendKind, Saved};
use super::workspace::Workspace;
use crate::error::Result;

/// Whether reaching the server may start it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never start or create anything (status, plans): with nothing set up, say so.
    ReadOnly,
    /// Start the local server if it is down, or create it when nothing is set up (migrations,
    /// test databases).
    StartIfNeeded,
}

/// Where a server's URL came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Given by the caller (a flag or `DATABASE_URL`).
    Given,
    /// The URL a setup of this backend saved.
    Setup(BackendKind),
    /// This checkout's local server.
    Local,
    /// A port-forward to the PostgreSQL in this namespace.
    Kube {
        /// The namespace.
        namespace: String,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Given => write!(f, "the given URL"),
            Origin::Setup(b) => write!(f, "the {} setup of this checkout", b.name()),
            Origin::Local => write!(f, "this checkout's local server"),
            Origin::Kube { namespace } => write!(f, "namespace {namespace} through a port-forward"),
        }
    }
}

/// Which server to reach, decided from the URL given and the state (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A URL reachable from this host.
    Url {
        /// The URL.
        url: String,
        /// Where it came from.
        origin: Origin,
    },
    /// This checkout's local server.
    Local,
    /// The PostgreSQL in a namespace, through a port-forward.
    Kube {
        /// The kubeconfig file (`None`: the default).
        kubeconfig: Option<PathBuf>,
        /// The context (`None`: the current one).
        context: Option<String>,
        /// The namespace.
        namespace: String,
        /// The run whose server it is (`None`: the namespace's only run).
        run_id: Option<String>,
    },
}

/// Decides which server a command reaches (pure): a given URL, else what this checkout's setup
/// saved, else (when it may start one) the local default. A record made elsewhere (a copied
/// checkout) or unreadable is never followed: read-only work says so, other work makes this
/// checkout's own local server.
pub fn route(given_url: Option<&str>, saved: &Saved, access: Access, file: &Path) -> Result<Route, LifecycleError> {
    if let Some(url) = given_url.filter(|u| !u.trim().is_empty()) {
        return Ok(Route::Url { url: url.to_string(), origin: Origin::Given });
    }
    let rec = match (saved, access) {
        (Saved::Ours(rec), _) => rec,
        (_, Access::StartIfNeeded) => return Ok(Route::Local),
        (Saved::Missing | Saved::Legacy { .. }, Access::ReadOnly) => {
            return Err(LifecycleError::NotSetUp { file: file.to_path_buf() })
        }
        (Saved::Foreign { made_in, .. }, Access::ReadOnly) => {
            return Err(LifecycleError::ForeignRecord { file: file.to_path_buf(), made_in: made_in.clone() })
        }
        (Saved::Unreadable { reason }, Access::ReadOnly) => {
            return Err(LifecycleError::UnreadableRecord { file: file.to_path_buf(), reason: reason.clone() })
        }
    };
    let s = &rec.setup;
    let incomplete = || LifecycleError::IncompleteRecord { file: file.to_path_buf(), backend: s.backend.name().into() };
    match s.backend {
        BackendKind::Local if rec.local.is_some() => Ok(Route::Local),
        BackendKind::Local => Err(incomplete()),
        BackendKind::Url | BackendKind::Kind => match &s.database_url {
            Some(url) => Ok(Route::Url { url: url.clone(), origin: Origin::Setup(s.backend) }),
            None => Err(incomplete()),
        },
        BackendKind::Kube => match &s.namespace {
            Some(ns) => Ok(Route::Kube {
                kubeconfig: s.kubeconfig.clone(),
                context: s.context.clone(),
                namespace: ns.clone(),
                run_id: s.run_id.clone(),
            }),
            None => Err(incomplete()),
        },
    }
}

/// A server to connect to, and whatever keeps the way to it open (a port-forward listener):
/// keep the value while connections are in use.
#[derive(Debug)]
pub struct Endpoint {
    /// A `postgres://` URL of the setup's database (the password in it).
    pub url: String,
    /// Where it came from.
    pub origin: Origin,
    /// The local server, when that is what this is.
    pub local: Option<local::LocalServer>,
    #[cfg(feature = "kube")]
    _forward: Option<crate::kube::LocalForward>,
}

impl Endpoint {
    fn url(url: String, origin: Origin) -> Endpoint {
        Endpoint {
            url,
            origin,
            local: None,
            #[cfg(feature = "kube")]
            _forward: None,
        }
    }
}

/// Reaches the server [`route`] picks for `ws`: a URL as is; the local server, running and
/// proven this checkout's (started or created only with [`Access::StartIfNeeded`]); a namespace
/// through an in-process port-forward held by the endpoint.
pub async fn resolve(ws: &Workspace, given_url: Option<&str>, access: Access) -> Result<Endpoint> {
    let saved = super::read_saved(ws)?;
    let file = record::record_file(&ws.state_dir);
    match route(given_url, &saved, access, &file)? {
        Route::Url { url, origin } => Ok(Endpoint::url(url, origin)),
        Route::Local => {
            let server = match access {
                Access::ReadOnly => local::running(ws).await?,
                // Running and ready (the usual case for every test process): no lock, no writes.
                Access::StartIfNeeded => match local::running(ws).await {
                    Ok(s) => s,
                    Err(_) => local::ensure_running(ws, &StartOptions::default()).await?,
                },
            };
            for n in &server.notes {
                tracing::info!("{n}");
            }
            let mut e = Endpoint::url(server.url(), Origin::Local);
            e.local = Some(server);
            Ok(e)
        }
        #[cfg(feature = "kube")]
        Route::Kube { kubeconfig, context, namespace, run_id } => {
            let server = crate::kube::Server { kubeconfig, context, namespace: namespace.clone(), run_id };
            let forward = server.local_forward().await?;
            Ok(Endpoint {
                url: forward.url.clone(),
                origin: Origin::Kube { namespace },
                local: None,
                _forward: Some(forward),
            })
        }
        #[cfg(not(feature = "kube"))]
        Route::Kube { .. } => Err(LifecycleError::NoKubeSupport { file, backend: "kube".into() }.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::record::{Phase, Record, SetupState, RECORD_FORMAT};

    fn rec(backend: BackendKind, url: Option<&str>) -> Record {
        Record {
            format: RECORD_FORMAT,
            made_in: "/w/target/e2e".into(),
            instance_id: "i".into(),
            phase: Phase::Ready,
            setup: SetupState {
                database_url: url.map(str::to_string),
                context: Some("ctx".into()),
                namespace: Some("ns".into()),
                owned: true,
                run_id: Some("3f9a1c2b".into()),
                ..SetupState::new(backend)
            },
            local: None,
        }
    }

    const F: &str = "/w/target/e2e/state.json";

    fn r(url: Option<&str>, saved: &Saved, access: Access) -> Result<Route, LifecycleError> {
        route(url, saved, access, Path::new(F))
    }

    #[test]
    fn a_given_url_wins_then_the_setup_then_the_local_default() {
        let kind = Saved::Ours(rec(BackendKind::Kind, Some("postgres://k/e2e")));
        assert_eq!(
            r(Some("postgres://given/x"), &kind, Access::ReadOnly).unwrap(),
            Route::Url { url: "postgres://given/x".into(), origin: Origin::Given }
        );
        assert_eq!(
            r(Some("  "), &kind, Access::ReadOnly).unwrap(),
            Route::Url { url: "postgres://k/e2e".into(), origin: Origin::Setup(BackendKind::Kind) }
        );
        assert_eq!(r(None, &Saved::Missing, Access::StartIfNeeded).unwrap(), Route::Local);
        let kube = Saved::Ours(rec(BackendKind::Kube, None));
        assert_eq!(
            r(None, &kube, Access::ReadOnly).unwrap(),
            Route::Kube {
                kubeconfig: None,
                context: Some("ctx".into()),
                namespace: "ns".into(),
                run_id: Some("3f9a1c2b".into())
            },
            "a kube setup is reached through a port-forward to its own run's server"
        );
        assert_eq!(
            r(Some("postgres://env/x"), &kube, Access::StartIfNeeded).unwrap(),
            Route::Url { url: "postgres://env/x".into(), origin: Origin::Given },
            "DATABASE_URL wins over a kube setup too"
        );
    }

    #[test]
    fn read_only_work_with_nothing_set_up_says_so_instead_of_starting_a_server() {
        assert!(matches!(r(None, &Saved::Missing, Access::ReadOnly), Err(LifecycleError::NotSetUp { .. })));
        let e = r(None, &Saved::Missing, Access::ReadOnly).unwrap_err().to_string();
        assert_eq!(e, "nothing is set up for this checkout (no /w/target/e2e/state.json)");
        assert!(!e.contains("--"), "the library names no flag: {e}");
    }

    #[test]
    fn a_copied_or_unreadable_record_is_never_followed() {
        let foreign = Saved::Foreign {
            record: Box::new(rec(BackendKind::Kind, Some("postgres://orig/e2e"))),
            made_in: "/orig".into(),
        };
        assert!(matches!(r(None, &foreign, Access::ReadOnly), Err(LifecycleError::ForeignRecord { .. })));
        assert_eq!(r(None, &foreign, Access::StartIfNeeded).unwrap(), Route::Local, "this checkout's own server");
        let bad = Saved::Unreadable { reason: "EOF".into() };
        assert!(matches!(r(None, &bad, Access::ReadOnly), Err(LifecycleError::UnreadableRecord { .. })));
        assert_eq!(r(None, &bad, Access::StartIfNeeded).unwrap(), Route::Local);
    }

    #[test]
    fn a_record_without_a_way_in_is_an_error_naming_its_backend() {
        let e = r(None, &Saved::Ours(rec(BackendKind::Local, None)), Access::StartIfNeeded).unwrap_err();
        assert!(e.to_string().contains("names the local backend"), "{e}");
    }
}
