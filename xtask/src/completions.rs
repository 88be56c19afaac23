//! `cargo xtask completions bash|zsh|fish`: a completion script on stdout.
//!
//! clap_complete writes the script for a program named `cargo-xtask`; the shells, though, see
//! `cargo xtask ...`, a cargo command whose completion belongs to cargo. So each script is
//! hooked into cargo's completion:
//! - zsh: cargo's own `_cargo` calls `_cargo-<command>` for commands it does not know, with the
//!   words starting at `xtask`: clap's `_cargo-xtask` is exactly that function;
//! - bash: cargo's completion has no such hook, so the script takes over `complete ... cargo`,
//!   routes `cargo xtask ...` to clap's function (the words shifted by one) and hands every other
//!   cargo command to the completion cargo had (loaded on demand by bash-completion, if at all);
//! - fish: clap's completions are registered for `cargo`, guarded by `cargo xtask` being the
//!   command line's first two words.

use anyhow::Result;
use clap::CommandFactory;

use crate::flags::{Completions, Shell, Xtask};

/// The program name clap_complete writes for.
const BIN: &str = "cargo-xtask";

/// The name for bash: clap_complete 4.6 names its bash cases inconsistently for a program name
/// with a `-` (subcommands then complete nothing), so bash gets one without.
const BASH_BIN: &str = "cargo_xtask";

/// Routes `cargo xtask ...` to clap's `_cargo_xtask` and everything else to cargo's own
/// completion. Works in bash 3.2 (macOS) and later.
const BASH_HOOK: &str = r#"
# --- `cargo xtask` hook: cargo's own completion keeps every other cargo command ---
__cargo_xtask_inner=
__cargo_xtask_find_inner() {
    local spec
    spec=$(complete -p cargo 2>/dev/null) || return 0
    case "$spec" in *" -F _cargo_xtask_complete "*) return 0 ;; esac
    spec=${spec##* -F }
    __cargo_xtask_inner=${spec%% *}
}
_cargo_xtask_complete() {
    if [[ "${COMP_WORDS[1]-}" == xtask && $COMP_CWORD -ge 2 ]]; then
        local COMP_CWORD=$((COMP_CWORD - 1))
        local -a COMP_WORDS=(cargo_xtask "${COMP_WORDS[@]:2}")
        _cargo_xtask cargo_xtask "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        return
    fi
    if [[ -z "$__cargo_xtask_inner" ]] && declare -F _completion_loader >/dev/null; then
        # bash-completion loads cargo's completion on first use: load it now, then take over again.
        complete -r cargo 2>/dev/null
        _completion_loader cargo
        __cargo_xtask_find_inner
        complete -F _cargo_xtask_complete -o bashdefault -o default cargo
    fi
    if [[ -n "$__cargo_xtask_inner" ]]; then
        "$__cargo_xtask_inner" "$@"
    fi
}
__cargo_xtask_find_inner
complete -F _cargo_xtask_complete -o bashdefault -o default cargo
"#;

/// clap's fish helper drops the program name; ours drops `cargo xtask` and answers only there.
const FISH_FROM: &str = "    set -l cmd (commandline -opc)\n    set -e cmd[1]\n";
const FISH_TO: &str = "    set -l cmd (commandline -opc)\n    # only `cargo xtask ...`\n    test \"$cmd[2]\" = xtask\n    or return 1\n    set -e cmd[1..2]\n";

/// The script for `shell` (pure).
pub(crate) fn script(shell: Shell) -> String {
    let mut cmd = Xtask::command();
    let mut out = Vec::new();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let bin = if shell == Shell::Bash { BASH_BIN } else { BIN };
    clap_complete::generate(generator, &mut cmd, bin, &mut out);
    let generated = String::from_utf8(out).expect("clap_complete writes UTF-8");
    match shell {
        Shell::Zsh => generated,
        Shell::Bash => {
            assert!(generated.starts_with("_cargo_xtask() {"), "clap_complete's bash function was renamed");
            format!("{generated}{BASH_HOOK}")
        }
        Shell::Fish => {
            assert!(generated.contains(FISH_FROM), "clap_complete's fish helper changed");
            generated.replace(FISH_FROM, FISH_TO).replace("complete -c cargo-xtask ", "complete -c cargo ")
        }
    }
}

impl Completions {
    pub(crate) fn run(self) -> Result<()> {
        print!("{}", script(self.shell));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    const SUBCOMMANDS: &[&str] =
        &["e2e-setup", "e2e-teardown", "migrate", "partitions", "bench", "doctor", "completions"];

    #[test]
    fn every_script_names_every_command() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            assert!(s.len() > 1000, "{shell:?}: {} bytes", s.len());
            for sub in SUBCOMMANDS {
                assert!(s.contains(sub), "{shell:?} script lacks {sub}");
            }
            assert!(s.contains("migrations-dir") && s.contains("backend"), "{shell:?} lacks flags");
        }
        assert!(script(Shell::Zsh).starts_with("#compdef cargo-xtask\n"));
        assert!(script(Shell::Zsh).contains("\n_cargo-xtask() {"), "the function cargo's _cargo calls");
        let fish = script(Shell::Fish);
        assert!(!fish.contains("complete -c cargo-xtask"), "fish completions belong to cargo");
        assert!(fish.contains("test \"$cmd[2]\" = xtask"), "fish completions answer only for cargo xtask");
    }

    /// What bash completes for `words` (the last one being completed), with a stand-in for
    /// cargo's own completion registered first.
    fn bash_complete(words: &[&str]) -> Option<Vec<String>> {
        let probe = format!(
            "_cargo() {{ COMPREPLY=(cargo-own-completion); }}\n\
             complete -F _cargo cargo\n\
             {script}\n\
             COMP_WORDS=({words})\n\
             COMP_CWORD={cword}\n\
             _cargo_xtask_complete cargo \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            script = script(Shell::Bash),
            words = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            cword = words.len() - 1,
        );
        let out =
            Command::new("bash").args(["--norc", "--noprofile", "-c", &probe]).stdin(Stdio::null()).output().ok()?;
        assert!(out.status.success(), "bash failed: {}", String::from_utf8_lossy(&out.stderr));
        Some(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
    }

    #[test]
    fn bash_completes_cargo_xtask_and_leaves_other_cargo_commands_to_cargo() {
        let Some(top) = bash_complete(&["cargo", "xtask", "e2e-"]) else {
            eprintln!("skipped: no bash on this machine");
            return;
        };
        assert_eq!(top, ["e2e-setup", "e2e-teardown"]);
        assert_eq!(bash_complete(&["cargo", "xtask", "migrate", "n"]).unwrap(), ["new"]);
        assert_eq!(bash_complete(&["cargo", "xtask", "e2e-setup", "--back"]).unwrap(), ["--backend"]);
        let backends = bash_complete(&["cargo", "xtask", "e2e-setup", "--backend", ""]).unwrap();
        assert_eq!(backends, ["auto", "local", "kind", "kube", "url"]);
        assert_eq!(bash_complete(&["cargo", "xtask", "completions", "z"]).unwrap(), ["zsh"]);
        assert_eq!(bash_complete(&["cargo", "bu"]).unwrap(), ["cargo-own-completion"]);
    }

    #[test]
    fn fish_completes_cargo_xtask_and_leaves_other_cargo_commands_alone() {
        let complete = |line: &str| -> Option<Vec<String>> {
            let probe = format!("{}\ncomplete -C '{line}'\n", script(Shell::Fish));
            let out = Command::new("fish").args(["--no-config", "-c", &probe]).stdin(Stdio::null()).output().ok()?;
            assert!(out.status.success(), "fish failed: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            Some(text.lines().map(|l| l.split('\t').next().unwrap_or("").to_string()).collect())
        };
        let Some(top) = complete("cargo xtask e2e-") else {
            eprintln!("skipped: no fish on this machine");
            return;
        };
        assert_eq!(top, ["e2e-setup", "e2e-teardown"]);
        assert!(complete("cargo xtask migrate ").unwrap().contains(&"new".to_string()));
        assert_eq!(complete("cargo xtask e2e-setup --back").unwrap(), ["--backend"]);
        // Outside `cargo xtask`, none of ours.
        assert!(!complete("cargo ").unwrap().iter().any(|c| c == "e2e-setup" || c == "doctor"));
    }
}
