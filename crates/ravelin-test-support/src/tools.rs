//! Real programs the end-to-end tests drive (headless Chromium, curl, python3, node): found on
//! `PATH`, run with a bound.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// `name` from `$RAVELIN_<NAME>` or `PATH`: `None` after printing a skip, or a panic under
/// `CI=true`, where every tool a test needs must be installed (`.ci/run` installs them).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let env = format!("RAVELIN_{}", name.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{name} not found, and CI=true forbids skipping: install it (or set {env})");
        }
        eprintln!("skipped: {name} not found (install it, or set {env})");
    }
    found
}

/// Runs `program` to completion within `bound` in its own process group (killed as a whole if
/// it overruns, so no Chromium helper outlives the test); its stdout. A failure exit or an
/// overrun fails the test, with the program's output.
pub async fn run_bounded(program: &PathBuf, args: &[String], bound: Duration) -> String {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    let pid = child.id().unwrap();
    match tokio::time::timeout(bound, child.wait_with_output()).await {
        Ok(output) => {
            let output = output.unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "{} {args:?}: {}\nstdout: {stdout}\nstderr: {}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
        }
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!(
                "{} {args:?} did not finish within {bound:?}",
                program.display()
            );
        }
    }
}
