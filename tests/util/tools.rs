//! The tools tests need beyond Rust: set up once per test run by
//! `scripts/test-tools.sh` (Debian packages when run as root, and `.venv`
//! with OpenBao's `bao` and moto), so a plain `cargo test` works on a fresh
//! clone. A tool that cannot be had fails the test that needs it, with the
//! step that installs it: never a crash, never a silent skip.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The crate root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run the set-up script once for this test process (it takes a lock, so
/// concurrent test processes wait for one another): `Err` holds what it
/// said when it failed.
fn set_up() -> &'static Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = root().join("scripts/test-tools.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.status.success() {
            if !said.is_empty() {
                eprintln!("{said}");
            }
            Ok(())
        } else {
            Err(format!(
                "scripts/test-tools.sh failed ({}): {said}",
                out.status
            ))
        }
    })
}

/// Make sure `tool` (a command on PATH) is there, installing the test
/// tools first if needed; panics naming the install step when it cannot
/// be had.
pub fn need(tool: &str) {
    if super::have(tool) {
        return;
    }
    let why = match set_up() {
        Ok(()) if super::have(tool) => return,
        Ok(()) => "scripts/test-tools.sh does not install it".to_string(),
        Err(e) => e.clone(),
    };
    panic!("this test needs `{tool}`, which is not installed: {why}");
}

/// A program of the test `.venv` (`bao`, `moto_server`, `python`), set up
/// on first use; panics naming the install step when it cannot be had.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = root().join(".venv/bin").join(name);
    // The script also reports Debian packages it could not install, which
    // this program may not need.
    let said = set_up();
    if !path.exists() {
        match said {
            Err(e) => panic!("this test needs .venv/bin/{name}: {e}"),
            Ok(()) => {
                panic!("this test needs .venv/bin/{name}: scripts/test-tools.sh did not make it")
            }
        }
    }
    path
}
