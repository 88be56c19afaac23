//! Checks of `.github/workflows/` (and of the `cargo xtask` lines in the docs), run as ordinary
//! tests because no GitHub runner exists where the tests run:
//! - every workflow file is valid against GitHub's published workflow schema, with
//!   `check-jsonschema --builtin-schema vendor.github-workflows` (PyPI `check-jsonschema`, which
//!   `.ci/run` installs; it works offline). Missing, the check fails under `CI=true` and is
//!   skipped elsewhere with a line saying how to install it;
//! - every `cargo xtask ...` command in a workflow's `run:` (and in the README's and docs' shell
//!   blocks) parses with the real command line (`Xtask::try_parse_from`), so a renamed flag fails
//!   here rather than on a runner;
//! - actions are pinned by commit SHA, and every job has a `timeout-minutes`.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;

use crate::flags::Xtask;

/// Where `.ci/run` installs check-jsonschema, told to the tests through this variable.
const CHECK_JSONSCHEMA_ENV: &str = "CHECK_JSONSCHEMA";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_path_buf()
}

fn workflow_files() -> Vec<PathBuf> {
    let dir = root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no workflow files in {}", dir.display());
    files
}

/// Splits one line of shell into words: quotes group and are removed, `\` escapes, an unquoted
/// `#` starting a word begins a comment. Expansions stay as they are written (`$X` is a word).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The arguments of every `cargo xtask ...` command in a shell script (pure): lines joined at a
/// trailing `\`, each command cut at the first shell operator or the `)` closing a `$( ... )`.
fn xtask_commands(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("cargo xtask") {
            let after = &rest[at + "cargo xtask".len()..];
            let end = ["&&", "||", ";", "|", ")", ">", "<"]
                .iter()
                .filter_map(|op| after.find(op))
                .min()
                .unwrap_or(after.len());
            out.push(shell_words(&after[..end]));
            rest = &after[end..];
        }
    }
    out
}

/// Replaces GitHub expressions (`${{ ... }}`) with a placeholder word.
fn without_expressions(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push_str("EXPR");
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every `run:` script of a workflow, with where it is (`job/step`).
fn run_scripts(yaml: &str) -> Result<Vec<(String, String)>, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    let jobs = doc.get("jobs").and_then(|j| j.as_mapping()).ok_or("no jobs")?;
    let mut out = Vec::new();
    for (job, body) in jobs {
        let job = job.as_str().unwrap_or("?");
        let steps = body.get("steps").and_then(|s| s.as_sequence()).map(Vec::as_slice).unwrap_or_default();
        for (i, step) in steps.iter().enumerate() {
            if let Some(run) = step.get("run").and_then(|r| r.as_str()) {
                let name = step.get("name").and_then(|n| n.as_str()).map(str::to_string).unwrap_or(format!("step {i}"));
                out.push((format!("{job}/{name}"), without_expressions(run)));
            }
        }
    }
    Ok(out)
}

/// Parses `args` as `cargo xtask` would; the error names the command and clap's complaint.
fn parse_xtask(args: &[String]) -> Result<(), String> {
    Xtask::try_parse_from(std::iter::once("cargo xtask".to_string()).chain(args.iter().cloned()))
        .map(|_| ())
        .map_err(|e| format!("`cargo xtask {}`: {}", args.join(" "), e.render().to_string().trim()))
}

/// Every `cargo xtask` command of a workflow, checked; returns the commands and the failures.
fn check_workflow(yaml: &str) -> (usize, Vec<String>) {
    let scripts = match run_scripts(yaml) {
        Ok(s) => s,
        Err(e) => return (0, vec![format!("cannot read the workflow: {e}")]),
    };
    let mut count = 0;
    let mut failures = Vec::new();
    for (at, script) in scripts {
        for args in xtask_commands(&script) {
            count += 1;
            if let Err(e) = parse_xtask(&args) {
                failures.push(format!("{at}: {e}"));
            }
        }
    }
    (count, failures)
}

#[test]
fn workflow_xtask_commands_parse_with_the_real_cli() {
    let mut total = 0;
    let mut failures = Vec::new();
    for file in workflow_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let (count, errs) = check_workflow(&text);
        total += count;
        failures.extend(errs.into_iter().map(|e| format!("{}: {e}", file.display())));
    }
    assert!(failures.is_empty(), "workflow commands the CLI refuses:\n{}", failures.join("\n"));
    assert!(total >= 5, "found only {total} `cargo xtask` commands in the workflows: is the extraction broken?");
}

#[test]
fn a_renamed_flag_in_a_workflow_fails_the_check() {
    let yaml = "jobs:\n  kind:\n    steps:\n      - name: setup\n        run: |\n          cargo xtask e2e-setup --backnd kind --sets audit\n          eval \"$(cargo xtask e2e-setup --print-env)\"\n";
    let (count, failures) = check_workflow(yaml);
    assert_eq!(count, 2);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].starts_with(
            "kind/setup: `cargo xtask e2e-setup --backnd kind --sets audit`: error: unexpected argument '--backnd'"
        ),
        "{}",
        failures[0]
    );
}

#[test]
fn command_extraction_follows_the_shell() {
    let cmds = xtask_commands(
        "eval \"$(cargo xtask e2e-setup --print-env)\"\ncargo xtask migrate up \\\n  --sets 'a,b' # apply\nx && cargo xtask doctor --output json | jq .\n",
    );
    let want: Vec<Vec<&str>> = vec![
        vec!["e2e-setup", "--print-env"],
        vec!["migrate", "up", "--sets", "a,b"],
        vec!["doctor", "--output", "json"],
    ];
    assert_eq!(cmds, want);
    assert_eq!(without_expressions("--namespace e2e-${{ github.run_id }} x"), "--namespace e2e-EXPR x");
}

/// The README's and docs' shell blocks name only commands and flags that exist.
#[test]
fn documented_xtask_commands_parse_with_the_real_cli() {
    let mut docs = vec![root().join("README.md")];
    docs.extend(std::fs::read_dir(root().join("docs")).unwrap().map(|e| e.unwrap().path()));
    let mut failures = Vec::new();
    let mut total = 0;
    for doc in docs.iter().filter(|p| p.extension().is_some_and(|x| x == "md")) {
        let text = std::fs::read_to_string(doc).unwrap();
        let mut in_sh = false;
        let mut block = String::new();
        for line in text.lines() {
            match line.trim_start().strip_prefix("```") {
                Some(lang) if !in_sh && (lang == "sh" || lang == "bash" || lang == "console") => in_sh = true,
                Some(_) if in_sh => {
                    for args in xtask_commands(&std::mem::take(&mut block)) {
                        total += 1;
                        if let Err(e) = parse_xtask(&args) {
                            failures.push(format!("{}: {e}", doc.display()));
                        }
                    }
                    in_sh = false;
                }
                _ if in_sh => {
                    block.push_str(line);
                    block.push('\n');
                }
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "documented commands the CLI refuses:\n{}", failures.join("\n"));
    assert!(total >= 20, "found only {total} documented `cargo xtask` commands: is the extraction broken?");
}

#[test]
fn workflows_pin_actions_by_commit_and_time_out() {
    let mut problems = Vec::new();
    for file in workflow_files() {
        let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for (job, body) in doc["jobs"].as_mapping().expect("jobs") {
            let job = job.as_str().unwrap_or("?");
            if body.get("timeout-minutes").is_none() {
                problems.push(format!("{}: job {job} has no timeout-minutes", file.display()));
            }
            for step in body.get("steps").and_then(|s| s.as_sequence()).map(Vec::as_slice).unwrap_or_default() {
                let Some(uses) = step.get("uses").and_then(|u| u.as_str()) else { continue };
                if uses.starts_with("./") || uses.starts_with("docker://") {
                    continue;
                }
                let pinned = uses
                    .rsplit_once('@')
                    .is_some_and(|(_, r)| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()));
                if !pinned {
                    problems.push(format!("{}: job {job}: {uses} is not pinned by commit SHA", file.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check-jsonschema program: `$CHECK_JSONSCHEMA`, else `check-jsonschema` on PATH.
fn check_jsonschema() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CHECK_JSONSCHEMA_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("check-jsonschema")).find(|p| p.is_file())
}

#[test]
fn workflows_match_githubs_schema() {
    let Some(program) = check_jsonschema() else {
        let how = "pip install check-jsonschema (or run .ci/run, which installs it)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but check-jsonschema is not installed, so the workflows cannot be checked: {how}");
        }
        eprintln!("skipped: check-jsonschema is not installed: {how}");
        return;
    };
    let files = workflow_files();
    let out = Command::new(&program)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the workflows do not match GitHub's schema:\n{said}");
    assert!(said.contains("ok -- validation done"), "unexpected check-jsonschema output:\n{said}");
}

/// The lines of `text` that `eval` the plain `--print-env` output (pure): its `KEY=VALUE` lines
/// are for nextest, and a shell's `eval` neither exports them nor keeps an unquoted value whole.
fn plain_env_evals(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("eval") || l.contains("$(cargo xtask"))
        .filter(|l| xtask_commands(l).iter().any(|args| args.iter().any(|a| a == "--print-env")))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn shells_eval_only_the_shell_form_of_print_env() {
    assert_eq!(plain_env_evals("eval \"$(cargo xtask e2e-setup --print-env)\"\n").len(), 1);
    assert_eq!(plain_env_evals("env=\"$(cargo xtask e2e-setup --sets a --print-env)\"\n").len(), 1);
    assert!(plain_env_evals("eval \"$(cargo xtask e2e-setup --print-env=shell)\"\n").is_empty());
    assert!(plain_env_evals("cargo xtask e2e-setup --print-env >> \"$NEXTEST_ENV\"\n").is_empty());
    let mut files = workflow_files();
    files.push(root().join("README.md"));
    files.extend(std::fs::read_dir(root().join("docs")).unwrap().map(|e| e.unwrap().path()));
    files.retain(|p| p.extension().is_some_and(|x| x == "md" || x == "yml" || x == "yaml"));
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        found.extend(plain_env_evals(&text).into_iter().map(|l| format!("{}: {l}", f.display())));
    }
    assert!(found.is_empty(), "use --print-env=shell where a shell evaluates it:\n{}", found.join("\n"));
}

/// `.ci/run` runs the tests as on a developer machine: against the local backend, whatever
/// else the machine has, in a state folder of its own under the clone's `target/`, so that the
/// developer's own setup is neither used nor torn down by its trap.
#[test]
fn ci_run_pins_the_local_backend_and_a_state_folder_of_its_own() {
    let text = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!(".ci/run lacks `{needle}`"));
    let backend = at("export E2E_BACKEND=local\n");
    let state = at("export E2E_STATE_DIR=\"$PWD/target/");
    let first_use = at("trap ").min(at("cargo nextest run --workspace"));
    assert!(backend < first_use && state < first_use, "set before the trap and the tests");
    assert!(at("cd \"$(dirname \"$0\")/..\"") < state, "$PWD is the clone's root there");
}
