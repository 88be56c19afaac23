//! Running a command as a test does (no input), and reading what it printed: text, and the
//! `KEY=VALUE` lines of `--print-env`.

use std::process::{Command, Output, Stdio};

/// Runs `cmd` to its end with no input, and returns what it printed and how it exited.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// What it printed on stdout, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What it printed on stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `KEY=VALUE` lines of `text` (as `--print-env` prints them), in order.
pub fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Whether `program` is a file in a folder of `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_are_split_at_the_first_equals_sign() {
        let lines = env_lines("DATABASE_URL=postgres://u:p@h/d?x=1\nnot a pair\nE2E_RUN_ID=ab\n");
        assert_eq!(
            lines,
            [("DATABASE_URL".into(), "postgres://u:p@h/d?x=1".into()), ("E2E_RUN_ID".into(), "ab".into())]
        );
    }

    #[test]
    fn a_command_runs_with_no_input_and_its_output_is_read() {
        let o = run(Command::new("sh").args(["-c", "cat; echo out; echo err >&2"]));
        assert!(o.status.success());
        assert_eq!((stdout(&o), stderr(&o)), ("out\n".to_string(), "err\n".to_string()));
        assert!(on_path("sh") && !on_path("no-such-program-here"));
    }
}
