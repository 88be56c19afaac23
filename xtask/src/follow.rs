//! What setup and teardown act on, decided from the flags and this checkout's record (pure).
//!
//! - `auto` follows the previous setup, whatever its backend: a second setup, or the nextest
//!   setup script (`cargo xtask e2e-setup --print-env`), keeps using the cluster (or server) the
//!   first one made, with its context, namespace, settings file and sets ([`choose_setup`],
//!   [`follow_flags`]).
//! - A setup never replaces the record of a setup that made something (a local server, a Kind
//!   cluster, a namespace or a run's objects) with another: it refuses and names the teardown
//!   that removes it first. The record is the only way teardown finds what setup made, so
//!   replacing it would strand those resources. Only a `url` setup, which made nothing, is
//!   replaced, and setup says so.
//! - Teardown acts on what the record names; with no record and no flags it changes nothing
//!   and says so ([`choose_teardown`]). It never falls back to another backend's resources.

use std::path::Path;

use e2e_migrations::lifecycle::{BackendKind, Saved, SetupState};

use crate::flags::{Backend, Setup};

/// The backend as the command line spells it.
pub(crate) fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Auto => "auto",
        Backend::Local => "local",
        Backend::Kind => "kind",
        Backend::Kube => "kube",
        Backend::Url => "url",
    }
}

/// The command-line backend of a recorded setup.
pub(crate) fn backend_of(kind: BackendKind) -> Backend {
    match kind {
        BackendKind::Local => Backend::Local,
        BackendKind::Url => Backend::Url,
        BackendKind::Kind => Backend::Kind,
        BackendKind::Kube => Backend::Kube,
    }
}

/// A recorded setup in a few words: `kube setup in namespace e2e-a (context lab, run 3f9a1c2b)`.
pub(crate) fn describe(s: &SetupState) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &s.cluster {
        parts.push(format!("cluster {c}"));
    }
    if let Some(c) = &s.context {
        parts.push(format!("context {c}"));
    }
    if let Some(r) = &s.run_id {
        parts.push(format!("run {r}"));
    }
    let place = match (&s.namespace, s.backend) {
        (Some(n), BackendKind::Kind | BackendKind::Kube) => format!(" in namespace {n}"),
        _ => String::new(),
    };
    let detail = if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) };
    format!("{} setup{place}{detail}", s.backend.name())
}

/// What setup was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asked<'a> {
    /// `--backend` (`auto` unless given).
    pub(crate) backend: Option<Backend>,
    /// `--database-url` or `DATABASE_URL`.
    pub(crate) url: Option<&'a str>,
    /// `--context`.
    pub(crate) context: Option<&'a str>,
    /// `--namespace`.
    pub(crate) namespace: Option<&'a str>,
}

/// What setup does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetupChoice {
    /// The backend.
    pub(crate) backend: Backend,
    /// Why (for `auto`).
    pub(crate) why: Option<String>,
    /// It continues the recorded setup: its flags are the defaults ([`follow_flags`]).
    pub(crate) follows: bool,
    /// Said on stderr before anything is done (a record replaced).
    pub(crate) note: Option<String>,
}

/// The refusal to replace `previous` with a setup of `wanted`.
fn refuse_replace(previous: &SetupState, wanted: &str) -> String {
    format!(
        "this checkout is set up already: a {}; it stays the one setup and teardown act on until \
         `cargo xtask e2e-teardown` removes it, then set up {wanted}",
        describe(previous)
    )
}

/// Decides the backend of a setup (pure): see the module's documentation. `kind_unavailable`
/// is asked only when nothing else decides.
pub(crate) fn choose_setup(
    asked: &Asked<'_>,
    previous: Option<&SetupState>,
    kind_unavailable: impl FnOnce() -> Option<String>,
) -> Result<SetupChoice, String> {
    let given_url = asked.url.filter(|u| !u.trim().is_empty());
    let requested = asked.backend.filter(|b| *b != Backend::Auto);
    let Some(prev) = previous else {
        let (backend, why) = match (requested, given_url) {
            (Some(b), _) => (b, None),
            (None, Some(_)) => (
                Backend::Url,
                Some("a database URL was given: --database-url, or DATABASE_URL in the environment".to_string()),
            ),
            (None, None) => match kind_unavailable() {
                None => (Backend::Kind, Some("kind and a container engine are present".to_string())),
                Some(why) => (Backend::Local, Some(format!("kind is not usable here: {why}"))),
            },
        };
        return Ok(SetupChoice { backend, why, follows: false, note: None });
    };
    let prev_backend = backend_of(prev.backend);
    // A url setup made nothing: any other setup may replace its record.
    if prev.backend == BackendKind::Url {
        let replaced = |backend: Backend, why: Option<String>| SetupChoice {
            backend,
            why,
            follows: false,
            note: Some(format!("replacing the record of the {} (it made nothing)", describe(prev))),
        };
        return Ok(match (requested, given_url) {
            (None | Some(Backend::Url), None) if prev.database_url.is_some() => SetupChoice {
                backend: Backend::Url,
                why: Some(format!("following this checkout's {}", describe(prev))),
                follows: true,
                note: None,
            },
            (None | Some(Backend::Url), Some(u)) if prev.database_url.as_deref() == Some(u) => {
                SetupChoice { backend: Backend::Url, why: None, follows: true, note: None }
            }
            (None, Some(_)) => replaced(
                Backend::Url,
                Some("a database URL was given: --database-url, or DATABASE_URL in the environment".to_string()),
            ),
            (Some(b), _) => replaced(b, None),
            (None, None) => match kind_unavailable() {
                None => replaced(Backend::Kind, Some("kind and a container engine are present".to_string())),
                Some(why) => replaced(Backend::Local, Some(format!("kind is not usable here: {why}"))),
            },
        });
    }
    let backend = requested.unwrap_or(prev_backend);
    if backend != prev_backend {
        return Err(refuse_replace(prev, &format!("--backend {}", backend_name(backend))));
    }
    if let Some(u) = given_url {
        if prev.database_url.as_deref() != Some(u) {
            return Err(format!(
                "this checkout is set up already: a {}; a database URL was given too (--database-url or \
                 DATABASE_URL), which is not that setup's: unset it to keep testing against the setup, or tear the \
                 setup down first (`cargo xtask e2e-teardown`) to use the URL",
                describe(prev)
            ));
        }
    }
    if backend == Backend::Kube {
        for (flag, asked, recorded) in [
            ("--context", asked.context, prev.context.as_deref()),
            ("--namespace", asked.namespace, prev.namespace.as_deref()),
        ] {
            if let (Some(a), Some(r)) = (asked, recorded) {
                if a != r {
                    return Err(refuse_replace(prev, &format!("with {flag} {a}")));
                }
            }
        }
    }
    let why = requested.is_none().then(|| format!("following this checkout's {}", describe(prev)));
    Ok(SetupChoice { backend, why, follows: true, note: None })
}

/// Takes what a followed setup used where the flags say nothing (pure): its sets, settings
/// file, context, namespace, `--existing-namespace`, and a url setup's URL.
pub(crate) fn follow_flags(args: &mut Setup, previous: &SetupState) {
    if args.sets.sets.is_none() && !previous.sets.is_empty() {
        args.sets.sets = Some(previous.sets.join(","));
    }
    let c = &mut args.cluster;
    if c.config.is_none() {
        c.config.clone_from(&previous.settings_file);
    }
    match previous.backend {
        BackendKind::Kube => {
            if c.context.is_none() {
                c.context.clone_from(&previous.context);
            }
            if c.namespace.is_none() {
                c.namespace.clone_from(&previous.namespace);
            }
            c.existing_namespace |= previous.existing_namespace;
        }
        BackendKind::Kind => {
            if c.namespace.is_none() {
                c.namespace.clone_from(&previous.namespace);
            }
        }
        BackendKind::Url => {
            if args.database_url.is_none() {
                args.database_url.clone_from(&previous.database_url);
            }
        }
        BackendKind::Local => {}
    }
}

/// What teardown does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TeardownChoice {
    /// Nothing (what to say).
    Nothing(String),
    /// Tear down this backend's resources.
    Act {
        /// The backend.
        backend: Backend,
        /// The record names that setup: it is forgotten once its resources are gone.
        recorded: bool,
    },
}

/// Decides what teardown acts on (pure): the backend asked for, else the one the record names;
/// `--context` alone means kube. A record that is unreadable, copied from another checkout or
/// of an earlier version leads only to this state folder's own local files (what is provably
/// this checkout's); with no record and no flags, nothing. `local_files`: the state folder
/// still holds a local server's files.
pub(crate) fn choose_teardown(
    requested: Option<Backend>,
    context_given: bool,
    saved: &Saved,
    record_file: &Path,
    local_files: bool,
) -> TeardownChoice {
    let recorded_backend = match saved {
        Saved::Ours(r) => Some(backend_of(r.setup.backend)),
        _ => None,
    };
    let act = |backend: Backend| TeardownChoice::Act { backend, recorded: recorded_backend == Some(backend) };
    match (requested.filter(|b| *b != Backend::Auto), saved) {
        (Some(b), _) => act(b),
        (None, Saved::Ours(r)) => act(backend_of(r.setup.backend)),
        (None, _) if context_given => act(Backend::Kube),
        (None, Saved::Unreadable { .. } | Saved::Foreign { .. } | Saved::Legacy { .. }) => act(Backend::Local),
        (None, Saved::Missing) => {
            let mut says = format!(
                "nothing is set up in this checkout (no {}): nothing torn down. To remove what a lost record \
                 made, name it: --backend local, --backend kind, or --backend kube --context C --namespace N",
                record_file.display()
            );
            if local_files {
                says.push_str(
                    "; this state folder still holds a local server's files: `cargo xtask e2e-teardown --backend \
                     local` stops and removes it",
                );
            }
            TeardownChoice::Nothing(says)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{ClusterArgs, SetArgs};
    use e2e_migrations::lifecycle::{Phase, Record};

    fn state(backend: BackendKind) -> SetupState {
        let cluster = matches!(backend, BackendKind::Kind | BackendKind::Kube);
        SetupState {
            backend,
            database_url: match backend {
                BackendKind::Kube => None,
                _ => Some("postgres://e2e:pw@127.0.0.1:5432/e2e".into()),
            },
            kubeconfig: None,
            context: cluster.then(|| "lab".to_string()),
            namespace: cluster.then(|| "e2e-a".to_string()),
            cluster: (backend == BackendKind::Kind).then(|| "e2e-migrations".to_string()),
            owned: backend != BackendKind::Url,
            cluster_created: false,
            sets: vec!["audit".into(), "notification".into()],
            run_id: cluster.then(|| "3f9a1c2b".to_string()),
            run_created_at: None,
            existing_namespace: false,
            settings_file: cluster.then(|| "/w/lab/e2e.toml".into()),
        }
    }

    fn auto(previous: Option<&SetupState>) -> Result<SetupChoice, String> {
        choose_setup(&Asked::default(), previous, || Some("kind is not on PATH".into()))
    }

    #[test]
    fn auto_follows_a_kube_setup_instead_of_picking_local() {
        let kube = state(BackendKind::Kube);
        let c = auto(Some(&kube)).unwrap();
        assert_eq!((c.backend, c.follows), (Backend::Kube, true));
        assert_eq!(
            c.why.as_deref(),
            Some("following this checkout's kube setup in namespace e2e-a (context lab, run 3f9a1c2b)")
        );
        // and every earlier backend too
        for b in [BackendKind::Local, BackendKind::Kind, BackendKind::Url] {
            let c = auto(Some(&state(b))).unwrap();
            assert_eq!((c.backend, c.follows), (backend_of(b), true), "{b:?}");
        }
        // nothing set up: kind when usable, else local, else the URL given
        assert_eq!(auto(None).unwrap().backend, Backend::Local);
        assert_eq!(choose_setup(&Asked::default(), None, || None).unwrap().backend, Backend::Kind);
        let url = Asked { url: Some("postgres://x/y"), ..Asked::default() };
        assert_eq!(choose_setup(&url, None, || None).unwrap().backend, Backend::Url);
    }

    #[test]
    fn a_setup_that_made_something_is_never_replaced_by_another() {
        let kube = state(BackendKind::Kube);
        let local = Asked { backend: Some(Backend::Local), ..Asked::default() };
        let e = choose_setup(&local, Some(&kube), || None).unwrap_err();
        assert_eq!(
            e,
            "this checkout is set up already: a kube setup in namespace e2e-a (context lab, run 3f9a1c2b); it stays \
             the one setup and teardown act on until `cargo xtask e2e-teardown` removes it, then set up --backend local"
        );
        let other_ns = Asked { backend: Some(Backend::Kube), namespace: Some("e2e-b"), ..Asked::default() };
        assert!(choose_setup(&other_ns, Some(&kube), || None)
            .unwrap_err()
            .ends_with("then set up with --namespace e2e-b"));
        let same = Asked { backend: Some(Backend::Kube), namespace: Some("e2e-a"), context: Some("lab"), url: None };
        assert!(choose_setup(&same, Some(&kube), || None).unwrap().follows);
        // DATABASE_URL left in the environment does not silently move the tests elsewhere
        let env_url = Asked { url: Some("postgres://e2e:pw@127.0.0.1:5999/e2e"), ..Asked::default() };
        let e = choose_setup(&env_url, Some(&kube), || None).unwrap_err();
        assert!(e.contains("a database URL was given too") && e.contains("unset it"), "{e}");
        let e = choose_setup(&env_url, Some(&state(BackendKind::Local)), || None).unwrap_err();
        assert!(e.contains("local setup"), "{e}");
        // the local setup's own URL (from an earlier --print-env) is that setup
        let own = Asked { url: Some("postgres://e2e:pw@127.0.0.1:5432/e2e"), ..Asked::default() };
        assert_eq!(choose_setup(&own, Some(&state(BackendKind::Local)), || None).unwrap().backend, Backend::Local);
    }

    #[test]
    fn a_url_setup_made_nothing_and_is_replaced_saying_so() {
        let url = state(BackendKind::Url);
        let local = Asked { backend: Some(Backend::Local), ..Asked::default() };
        let c = choose_setup(&local, Some(&url), || None).unwrap();
        assert_eq!(c.backend, Backend::Local);
        assert_eq!(c.note.as_deref(), Some("replacing the record of the url setup (it made nothing)"));
        let other = Asked { url: Some("postgres://other/db"), ..Asked::default() };
        assert!(choose_setup(&other, Some(&url), || None).unwrap().note.is_some());
    }

    fn setup_args() -> Setup {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            s: Setup,
        }
        P::parse_from(["x"]).s
    }

    #[test]
    fn following_takes_the_recorded_flags_where_none_are_given() {
        let kube = SetupState { existing_namespace: true, ..state(BackendKind::Kube) };
        let mut a = setup_args();
        a.database_url = None;
        follow_flags(&mut a, &kube);
        assert_eq!(a.sets.sets.as_deref(), Some("audit,notification"));
        assert_eq!(a.cluster.context.as_deref(), Some("lab"));
        assert_eq!(a.cluster.namespace.as_deref(), Some("e2e-a"));
        assert!(a.cluster.existing_namespace);
        assert_eq!(a.cluster.config.as_deref(), Some(Path::new("/w/lab/e2e.toml")));
        let mut given = setup_args();
        given.sets = SetArgs { sets: Some("workflow".into()), migrations_dir: None };
        given.cluster = ClusterArgs { config: Some("mine.toml".into()), ..given.cluster };
        follow_flags(&mut given, &kube);
        assert_eq!(given.sets.sets.as_deref(), Some("workflow"), "a flag wins");
        assert_eq!(given.cluster.config.as_deref(), Some(Path::new("mine.toml")));
        let all = SetupState { sets: vec![], ..state(BackendKind::Local) };
        let mut a = setup_args();
        follow_flags(&mut a, &all);
        assert_eq!(a.sets.sets, None, "all sets stay all");
    }

    fn record(backend: BackendKind, phase: Phase) -> Saved {
        Saved::Ours(Record {
            format: e2e_migrations::lifecycle::record::RECORD_FORMAT,
            made_in: "/w/target/e2e".into(),
            instance_id: "i".into(),
            phase,
            setup: state(backend),
            local: None,
        })
    }

    #[test]
    fn teardown_acts_on_the_record_even_of_a_failed_setup_and_on_nothing_without_one() {
        let f = Path::new("/w/target/e2e/state.json");
        let failed_kube = record(BackendKind::Kube, Phase::Creating);
        assert_eq!(
            choose_teardown(None, false, &failed_kube, f, false),
            TeardownChoice::Act { backend: Backend::Kube, recorded: true }
        );
        let TeardownChoice::Nothing(says) = choose_teardown(None, false, &Saved::Missing, f, false) else {
            panic!("no record, no flags: nothing")
        };
        assert!(says.starts_with("nothing is set up in this checkout (no /w/target/e2e/state.json): nothing torn down"));
        let TeardownChoice::Nothing(says) = choose_teardown(None, false, &Saved::Missing, f, true) else { panic!() };
        assert!(says.contains("--backend local` stops and removes it"), "{says}");
        // flags name what to remove without a record
        assert_eq!(
            choose_teardown(None, true, &Saved::Missing, f, false),
            TeardownChoice::Act { backend: Backend::Kube, recorded: false }
        );
        assert_eq!(
            choose_teardown(Some(Backend::Local), false, &failed_kube, f, false),
            TeardownChoice::Act { backend: Backend::Local, recorded: false },
            "an explicit other backend leaves the kube record alone"
        );
        let unreadable = Saved::Unreadable { reason: "EOF".into() };
        assert_eq!(
            choose_teardown(None, false, &unreadable, f, false),
            TeardownChoice::Act { backend: Backend::Local, recorded: false }
        );
    }
}
