//! What a long run (a migration run, a partition roll) reports while it works, for a caller that
//! shows progress: plain [`Event`]s handed to an optional [`Observer`]. The library never prints;
//! without an observer, a run reports only through `tracing`, as before.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// One thing a run reports, as it happens.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Another session holds the advisory lock `lock`: the run waits for it, at most `timeout`.
    /// Said once per wait, after a short while (a lock released at once is not worth a word).
    LockWaiting {
        /// The lock, in words ("the migration lock").
        lock: String,
        /// Who holds it: `pid N (application, state: "query")`.
        holder: String,
        /// How long the run waits in all before it gives up.
        timeout: Duration,
    },
    /// The lock a [`Event::LockWaiting`] was about is taken: the wait is over.
    LockTaken {
        /// The lock, in words.
        lock: String,
        /// How long the run waited for it.
        waited: Duration,
    },
    /// What a migration run will do: `pending` migrations to apply (or revert), of which
    /// `already_applied` of the selected ones need nothing.
    Planned {
        /// Migrations the run applies (`up`) or reverts (`down`).
        pending: usize,
        /// Selected migrations applied already (`up`; 0 for `down`).
        already_applied: usize,
    },
    /// A migration starts: the `index`-th (from 1) of the run's `total`.
    Applying {
        /// Its place in the run, from 1.
        index: usize,
        /// The run's number of migrations to apply.
        total: usize,
        /// Its version.
        version: i64,
        /// Its file name.
        name: String,
        /// Its statements.
        statements: usize,
    },
    /// A migration is applied.
    Applied {
        /// Its place in the run, from 1.
        index: usize,
        /// The run's number of migrations to apply.
        total: usize,
        /// Its file name.
        name: String,
        /// How long it took.
        duration: Duration,
    },
    /// A migration's Down section starts (`down`).
    Reverting {
        /// Its place in the run, from 1.
        index: usize,
        /// The run's number of migrations to revert.
        total: usize,
        /// Its version.
        version: i64,
        /// Its file name.
        name: String,
    },
    /// A partition roll (or prune) moves on to `table`, the `index`-th (from 1) of `total`.
    Rolling {
        /// Its place in the roll, from 1.
        index: usize,
        /// The number of partitioned tables the roll looks at.
        total: usize,
        /// The partitioned table.
        table: String,
    },
}

impl fmt::Display for Event {
    /// One line saying what the run is doing, for a status line or a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::LockWaiting { lock, holder, timeout } => {
                write!(f, "waiting for {lock}, held by {holder} (gives up after {}s)", timeout.as_secs())
            }
            Event::LockTaken { lock, waited } => write!(f, "took {lock} after {:.1}s", waited.as_secs_f64()),
            Event::Planned { pending, already_applied } => {
                write!(f, "{pending} to run, {already_applied} already applied")
            }
            Event::Applying { index, total, name, statements, .. } => {
                let s = if *statements == 1 { "" } else { "s" };
                write!(f, "applying {name} ({index} of {total}, {statements} statement{s})")
            }
            Event::Applied { index, total, name, duration } => {
                write!(f, "applied {name} ({index} of {total}, {:.0} ms)", duration.as_secs_f64() * 1000.0)
            }
            Event::Reverting { index, total, name, .. } => write!(f, "reverting {name} ({index} of {total})"),
            Event::Rolling { index, total, table } => write!(f, "rolling {table} ({index} of {total})"),
        }
    }
}

/// Receives a run's [`Event`]s as they happen, on the task that runs it: it must return quickly
/// (update a status line, send on a channel) and must not block.
#[derive(Clone)]
pub struct Observer(Arc<dyn Fn(&Event) + Send + Sync>);

impl Observer {
    /// An observer that calls `f` with each event.
    pub fn new(f: impl Fn(&Event) + Send + Sync + 'static) -> Observer {
        Observer(Arc::new(f))
    }

    /// Hands `event` to the observer.
    pub fn notify(&self, event: &Event) {
        (self.0)(event)
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observer(..)")
    }
}

/// Hands the event `make` builds to `observer`, if there is one (the event is built only then).
pub(crate) fn notify(observer: Option<&Observer>, make: impl FnOnce() -> Event) {
    if let Some(o) = observer {
        o.notify(&make());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn events_read_as_one_line_each() {
        let lines: Vec<String> = [
            Event::LockWaiting {
                lock: "the migration lock".into(),
                holder: "pid 42 (psql, idle: \"SELECT 1\")".into(),
                timeout: Duration::from_secs(120),
            },
            Event::LockTaken { lock: "the migration lock".into(), waited: Duration::from_millis(1250) },
            Event::Planned { pending: 3, already_applied: 18 },
            Event::Applying { index: 2, total: 3, version: 15, name: "015_b.sql".into(), statements: 1 },
            Event::Applied { index: 2, total: 3, name: "015_b.sql".into(), duration: Duration::from_micros(12_400) },
            Event::Reverting { index: 1, total: 1, version: 21, name: "021_c.sql".into() },
            Event::Rolling { index: 1, total: 2, table: "audit_events".into() },
        ]
        .iter()
        .map(Event::to_string)
        .collect();
        assert_eq!(
            lines,
            [
                "waiting for the migration lock, held by pid 42 (psql, idle: \"SELECT 1\") (gives up after 120s)",
                "took the migration lock after 1.2s",
                "3 to run, 18 already applied",
                "applying 015_b.sql (2 of 3, 1 statement)",
                "applied 015_b.sql (2 of 3, 12 ms)",
                "reverting 021_c.sql (1 of 1)",
                "rolling audit_events (1 of 2)",
            ]
        );
    }

    #[test]
    fn an_event_is_built_only_for_an_observer() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let o = {
            let seen = seen.clone();
            Observer::new(move |e| seen.lock().unwrap().push(e.clone()))
        };
        notify(None, || panic!("built without an observer"));
        notify(Some(&o), || Event::Planned { pending: 1, already_applied: 0 });
        assert_eq!(*seen.lock().unwrap(), [Event::Planned { pending: 1, already_applied: 0 }]);
        assert_eq!(format!("{o:?}"), "Observer(..)");
    }
}
