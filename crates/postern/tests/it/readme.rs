//! Every command the README shows can be run as written: each fenced `sh`
//! block is read line by line; `postern …` and `cargo run … -- …` commands
//! must parse (the real binary with `--help` appended), `cargo run` at the
//! root must pick `postern`, scripts must exist and be executable, and the
//! first command must be the demo. A command of a kind
//! this test does not know fails it, so a new one cannot go unchecked.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The commands of the fenced `sh` blocks of `markdown` (also those indented
/// in a list), with `\` continuations joined and comments left out.
fn shell_commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && matches!(info.trim(), "sh" | "bash" | "shell" | "console");
            continue;
        }
        if !in_sh || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let code = trimmed.split(" #").next().unwrap_or(trimmed).trim_end();
        match code.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(code);
                commands.push(
                    std::mem::take(&mut pending)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
    }
    commands
}

/// Splits a command line into words as a shell would, for the quoting the
/// README uses (single and double quotes, no expansions).
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
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

/// Leading `NAME=value` environment assignments, and the rest.
fn split_environment(words: &[String]) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut rest = words.iter();
    let mut command = Vec::new();
    for w in rest.by_ref() {
        match w.split_once('=') {
            Some((name, value))
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
            {
                env.push((name.to_owned(), value.to_owned()));
            }
            _ => {
                command.push(w.clone());
                break;
            }
        }
    }
    command.extend(rest.cloned());
    (env, command)
}

/// Runs `postern ARGS --help`: it must parse and exit 0.
fn postern_parses(args: &[String], line: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(args)
        .arg("--help")
        .env_remove("POSTERN_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README command {line:?} does not parse:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cargo run` at the root must know which binary to run: among the default
/// members of the workspace, `postern` is the only one.
fn cargo_run_runs_postern(line: &str) {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let defaults = meta["workspace_default_members"].as_array().unwrap();
    let binaries: Vec<&str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| defaults.contains(&p["id"]))
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        binaries,
        ["postern"],
        "README command {line:?}: `cargo run` must run postern"
    );
}

/// Checks one README command; returns the postern arguments it runs, if any.
fn check(line: &str) -> Option<Vec<String>> {
    let (_env, command) = split_environment(&words(line));
    let (program, args) = command
        .split_first()
        .unwrap_or_else(|| panic!("empty command {line:?}"));
    match program.as_str() {
        "postern" => {
            postern_parses(args, line);
            Some(args.to_vec())
        }
        "cargo" if args.first().map(String::as_str) == Some("run") => {
            let dashes = args.iter().position(|a| a == "--");
            let before = &args[..dashes.unwrap_or(args.len())];
            assert!(
                !before.iter().any(|a| a == "-p" || a == "--bin" || a == "--package"),
                "README command {line:?}: `cargo run` at the root runs postern (default-members)"
            );
            cargo_run_runs_postern(line);
            let postern_args = dashes.map(|i| args[i + 1..].to_vec()).unwrap_or_default();
            postern_parses(&postern_args, line);
            Some(postern_args)
        }
        script if script.starts_with("scripts/") || script.starts_with(".ci/") => {
            use std::os::unix::fs::PermissionsExt;
            let path = workspace_root().join(script);
            let mode = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("README command {line:?}: {}: {e}", path.display()))
                .permissions()
                .mode();
            assert!(
                mode & 0o111 != 0,
                "README command {line:?}: {} is not executable",
                path.display()
            );
            None
        }
        other => panic!("README command {line:?} runs {other:?}, which this test does not know how to check"),
    }
}

#[test]
fn every_command_in_the_readme_runs() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let commands = shell_commands(&readme);
    assert!(commands.len() > 3, "found only {commands:?} in the README's sh blocks");
    let runs: Vec<Option<Vec<String>>> = commands.iter().map(|c| check(c)).collect();
    assert_eq!(
        commands[0], "cargo run --release -- demo",
        "the README's first command is the demo"
    );
    assert_eq!(runs[0].as_deref(), Some(&["demo".to_owned()][..]));
    assert!(
        commands.iter().any(|c| c == "scripts/test"),
        "the README's test command: {commands:?}"
    );
}

#[test]
fn readme_commands_are_read_as_a_shell_would() {
    let markdown = "text\n```sh\nfoo --a \\\n  --b 'x y' # note\n```\n   ```sh\n   # comment\n   A=1 B=\"2 3\" postern admin users create \"Al ice\"\n   ```\n```toml\nnot = \"a command\"\n```\n";
    let commands = shell_commands(markdown);
    assert_eq!(
        commands,
        vec![
            "foo --a --b 'x y'".to_owned(),
            "A=1 B=\"2 3\" postern admin users create \"Al ice\"".to_owned()
        ]
    );
    let (env, command) = split_environment(&words(&commands[1]));
    assert_eq!(
        env,
        vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "2 3".to_owned())]
    );
    assert_eq!(command, ["postern", "admin", "users", "create", "Al ice"]);
}
