//! What gets a user past an error, said after it: the library's messages name no CLI flag or
//! command (it is also called from test crates), so the CLI maps the error's kind to its own
//! flags and commands.

use e2e_migrations::core::Error as CoreError;
use e2e_migrations::kube::rbac::Scope;
use e2e_migrations::kube::KubeError;
use e2e_migrations::lifecycle::LifecycleError;
use e2e_migrations::Error;

/// A hint naming the flag, setting or command that changes the outcome of `e`, if one does.
pub(crate) fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return library(e);
        }
        if let Some(e) = cause.downcast_ref::<LifecycleError>() {
            return lifecycle(e).map(str::to_string);
        }
        if let Some(e) = cause.downcast_ref::<KubeError>() {
            return kube(e);
        }
        cause.downcast_ref::<CoreError>().and_then(core).map(str::to_string)
    })
}

fn library(e: &Error) -> Option<String> {
    let hint = match e {
        Error::Core(e) => core(e),
        Error::Lifecycle(e) => lifecycle(e),
        Error::Kube(e) => return kube(e),
        Error::LockTimeout { .. } => Some("wait longer with --lock-timeout SECONDS, or stop the other run"),
        Error::ConnectTimeout { .. } | Error::NoAnswer { .. } => {
            Some("raise the limit with --connect-timeout SECONDS (or E2E_CONNECT_TIMEOUT) if the server is slow")
        }
        Error::InvalidEnv { var, .. } if *var == e2e_migrations::db::CONNECT_TIMEOUT_ENV => {
            Some("--connect-timeout SECONDS overrides E2E_CONNECT_TIMEOUT")
        }
        // Refused or reset before the server said anything: nothing of PostgreSQL answered.
        Error::Connect { source, .. } if source.as_db_error().is_none() => {
            return Some(refused_hint(std::env::var_os("DATABASE_URL").is_some_and(|v| !v.is_empty())));
        }
        _ => None,
    };
    hint.map(str::to_string)
}

/// Said when nothing of PostgreSQL answered (pure over whether `DATABASE_URL` is set): a
/// `DATABASE_URL` left in the shell by an earlier `--print-env=shell` names a server that a
/// teardown since has stopped, and it wins over what e2e-setup left.
fn refused_hint(env_url: bool) -> String {
    let base = "is a PostgreSQL server running there, on this port? (the server is --database-url, else DATABASE_URL, \
                else what e2e-setup left)";
    if env_url {
        format!(
            "{base}; DATABASE_URL is set in this environment (an earlier `eval \"$(cargo xtask e2e-setup \
             --print-env=shell)\"`?), and after a teardown it names a server that is gone: `unset DATABASE_URL` to \
             use this checkout's setup"
        )
    } else {
        base.to_string()
    }
}

/// What gets past a failure of the Kubernetes side: the command that sets up in a namespace, and
/// the flags that pick the context or a namespace the account's Role covers.
fn kube(e: &KubeError) -> Option<String> {
    let set_up = |ns: &str| {
        format!("set it up first: `cargo xtask e2e-setup --backend kube --context CONTEXT --namespace {ns}`")
    };
    match e {
        KubeError::NoRun { namespace }
        | KubeError::NoSecret { namespace, .. }
        | KubeError::NoReadyPod { namespace, .. } => Some(set_up(namespace)),
        KubeError::ManyRuns { .. } => Some(
            "`cargo xtask e2e-setup --print-env` prints a setup's E2E_RUN_ID (and `connection.env` holds it)".into(),
        ),
        KubeError::NoNamespaceEnv => Some(
            "`eval \"$(cargo xtask e2e-setup --backend kube --context CONTEXT --namespace NAMESPACE --print-env)\"` \
             sets it"
                .into(),
        ),
        KubeError::MissingSecretKey { .. } | KubeError::SecretKeyNotUtf8 { .. } => {
            Some("`cargo xtask e2e-setup` writes the secret again".into())
        }
        KubeError::Kubeconfig { context: Some(_), .. } => {
            Some("--context names the kubeconfig context; `kubectl config get-contexts` lists them".into())
        }
        // A refusal outside one namespace: the Role covers a namespace, only the ClusterRole more.
        KubeError::Forbidden { need, namespace: None, .. } => match need.rights()[0].scope {
            Scope::Cluster => Some(
                "without cluster rights, work in a namespace made for you: --namespace N --existing-namespace".into(),
            ),
            Scope::Namespace => Some("with the Role alone, clean up one namespace: --namespace N".into()),
        },
        _ => None,
    }
}

/// What to do next about where the database lives: the commands that set up, start and remove it.
fn lifecycle(e: &LifecycleError) -> Option<&'static str> {
    use LifecycleError as L;
    Some(match e {
        L::NotSetUp { .. } => "set up first: `cargo xtask e2e-setup [--sets SET,...]`; or name a server: --database-url URL",
        L::ServerDown { .. } => "`cargo xtask e2e-setup` starts it again (read-only commands never start a server)",
        L::SetupIncomplete { .. } => "`cargo xtask e2e-setup` completes it (read-only commands never do)",
        L::ForeignRecord { .. } => {
            "this checkout has no setup of its own: `cargo xtask e2e-setup` makes one (the other checkout's is left alone)"
        }
        L::UnreadableRecord { .. } | L::IncompleteRecord { .. } => {
            "`cargo xtask e2e-teardown` removes what is provably this checkout's; `cargo xtask e2e-setup` then starts over"
        }
        L::NotOurs { .. } => "it is left alone; if it is a server you started yourself on this folder, stop it yourself",
        L::NoServerBinaries { .. } | L::BadBindir { .. } => "or use a server you have: --database-url URL, or --backend kind",
        L::Unresponsive { .. } => "`cargo xtask status` shows it; once it is stopped, `cargo xtask e2e-setup` starts it again",
        L::Start { tail, .. } if tail.contains("lock file") && tail.contains("already exists") => {
            "a process still holds that lock file (the log's HINT names its pid): stop it, then run \
             `cargo xtask e2e-setup` again; `cargo xtask e2e-teardown` removes the server instead"
        }
        _ => return None,
    })
}

fn core(e: &CoreError) -> Option<&'static str> {
    match e {
        CoreError::Drift { .. } => Some("pass --accept-drift to keep the applied version and record the new checksum"),
        CoreError::EmptySetName { .. } => {
            Some("--sets takes set names separated by commas, e.g. --sets audit,workflow")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_names_a_database_url_left_in_the_environment() {
        assert!(!refused_hint(false).contains("unset"));
        let h = refused_hint(true);
        assert!(h.starts_with("is a PostgreSQL server running there"), "{h}");
        assert!(h.contains("`unset DATABASE_URL` to use this checkout's setup"), "{h}");
    }

    #[test]
    fn the_library_errors_a_flag_gets_past_say_the_flag() {
        let drift: anyhow::Error = Error::from(CoreError::Drift { files: vec!["m/1_a.sql".into()] }).into();
        assert!(hint(&drift.context("migrating")).unwrap().contains("--accept-drift"));
        let empty: anyhow::Error = CoreError::EmptySetName { list: "a,".into() }.into();
        assert!(hint(&empty).unwrap().contains("--sets"));
        let lock = Error::LockTimeout {
            lock: "the migration lock".into(),
            holder: "pid 1".into(),
            waited: std::time::Duration::from_secs(1),
        };
        assert!(hint(&lock.into()).unwrap().contains("--lock-timeout"));
        let slow = Error::ConnectTimeout {
            address: "127.0.0.1:1".into(),
            url: "postgres://127.0.0.1:1/x".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        assert!(hint(&slow.into()).unwrap().contains("--connect-timeout"));
        let other: anyhow::Error = CoreError::UnknownSet { name: "x".into(), known: vec![] }.into();
        assert_eq!(hint(&other), None);
    }

    #[test]
    fn the_kube_errors_say_the_command_and_flags_that_get_past_them() {
        use e2e_migrations::kube::rbac::Need;
        let no_pod: anyhow::Error = KubeError::NoReadyPod { namespace: "e2e-a".into(), run_id: "ab".into() }.into();
        assert_eq!(
            hint(&no_pod.context("psql")).as_deref(),
            Some("set it up first: `cargo xtask e2e-setup --backend kube --context CONTEXT --namespace e2e-a`")
        );
        let wrapped: anyhow::Error = Error::from(KubeError::NoRun { namespace: "e2e-b".into() }).into();
        assert!(hint(&wrapped).unwrap().ends_with("--namespace e2e-b`"));
        let refused = |need, namespace: Option<&str>| -> anyhow::Error {
            KubeError::Forbidden { doing: "x".into(), need, namespace: namespace.map(Into::into), said: "no".into() }
                .into()
        };
        let h = hint(&refused(Need::ApplyNamespaces, None)).unwrap();
        assert!(h.contains("--namespace N --existing-namespace"), "{h}");
        let h = hint(&refused(Need::ListDeployments, None)).unwrap();
        assert!(h.contains("--namespace N"), "{h}");
        assert_eq!(hint(&refused(Need::GetSecrets, Some("team-a"))), None, "the Role is named in the message");
    }

    #[test]
    fn the_lifecycle_errors_say_the_command_that_gets_past_them() {
        let not_set_up = Error::from(LifecycleError::NotSetUp { file: "target/e2e/state.json".into() });
        assert!(hint(&anyhow::Error::from(not_set_up).context("status")).unwrap().contains("cargo xtask e2e-setup"));
        let down: anyhow::Error = LifecycleError::ServerDown { state_dir: "target/e2e".into() }.into();
        assert!(hint(&down).unwrap().contains("e2e-setup"));
        let no_workspace: anyhow::Error = LifecycleError::NoWorkspace { from: "/".into() }.into();
        assert_eq!(hint(&no_workspace), None);
    }

    #[test]
    fn a_start_refused_for_a_held_lock_file_says_what_holds_it() {
        let held = LifecycleError::Start {
            log: "server.log".into(),
            tail:
                "postgres exited (exit status: 1)\n... FATAL:  lock file \"postmaster.pid\" already exists\n... HINT:  \
                   Is another postmaster (PID 4242) running in data directory \"/d\"?"
                    .into(),
        };
        assert!(hint(&held.into()).unwrap().contains("names its pid"));
        let other = LifecycleError::Start { log: "server.log".into(), tail: "FATAL:  could not map memory".into() };
        assert_eq!(hint(&other.into()), None);
        let hung = LifecycleError::Unresponsive { data_dir: "/d".into(), pid: 4242, why: "alive".into() };
        assert!(hint(&hung.into()).unwrap().contains("cargo xtask e2e-setup"));
    }
}
