//! What the repository holds: no state or build output of a run (`.rivetctl/`, `target/`)
//! is tracked or would be picked up by `git add`, and no tracked file other than prose
//! refers to the project's shared directory beside the repository: a contributor's clone has
//! everything its tests need. Needs a git checkout (CI runs in a clone).

mod support;

use std::process::Command;

use support::repo;

fn git(args: &[&str]) -> std::process::Output {
    Command::new("git").args(args).current_dir(repo()).output().unwrap_or_else(|err| {
        panic!("cannot run `git {}`: {err}; these tests need git and a checkout of the repository", args.join(" "))
    })
}

fn tracked() -> Vec<String> {
    let output = git(&["ls-files", "-z"]);
    assert!(
        output.status.success(),
        "`git ls-files` failed in {}: {}; these tests run in a git checkout of the repository",
        repo().display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let files: Vec<String> =
        String::from_utf8_lossy(&output.stdout).split('\0').filter(|f| !f.is_empty()).map(str::to_string).collect();
    assert!(files.iter().any(|f| f == "Cargo.toml"), "not the repository's file list: {files:?}");
    files
}

#[test]
fn no_state_or_build_output_is_tracked() {
    let bad: Vec<String> = tracked()
        .into_iter()
        .filter(|path| path.split('/').any(|component| component == ".rivetctl" || component == "target"))
        .collect();
    assert!(bad.is_empty(), "tracked files that a run or a build writes: {bad:?}");
}

#[test]
fn what_a_run_writes_beside_a_config_is_ignored() {
    let examples = std::fs::read_dir(repo().join("examples")).unwrap();
    let mut checked = Vec::new();
    for dir in examples.map(|e| e.unwrap().path()).filter(|p| p.join("rivet.config.yaml").is_file()) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for written in ["locks/rivet.lock", "journal.json", "logs/build-agent-0123456789ab.log"] {
            let path = format!("examples/{name}/.rivetctl/{written}");
            let output = git(&["check-ignore", "--no-index", "-q", &path]);
            assert_eq!(output.status.code(), Some(0), "{path} is not ignored by git");
            checked.push(path);
        }
    }
    assert!(checked.iter().any(|p| p.starts_with("examples/quickstart/")), "{checked:?}");
    for build_output in ["target/debug/rivetctl", "fuzz/target/x"] {
        assert_eq!(git(&["check-ignore", "--no-index", "-q", build_output]).status.code(), Some(0), "{build_output}");
    }
}

/// The path of the project's shared directory as seen from the repository, spelled so that
/// this file does not contain it.
const OUTSIDE: &str = concat!("..", "/shared");

#[test]
fn no_tracked_file_but_prose_reaches_outside_the_repository() {
    tracked();
    // `git grep` searches the tracked files of the work tree; exit 1 means no match.
    let output = git(&["grep", "-l", "-F", OUTSIDE, "--", ".", ":(exclude)*.md"]);
    let found = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "these files refer to {OUTSIDE}, outside the repository:\n{found}");
}
