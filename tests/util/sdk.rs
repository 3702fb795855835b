//! The vendors' official SDKs for the credential proxy's tests, installed
//! once into the git-ignored `.venv` (Python: `openai`, `anthropic`,
//! `slack_sdk`) and `node_modules` (Node: `openai`) at the repository's
//! root, under a lock so parallel tests install once. One function per
//! language: `.ci/run` and other suites share them.

use std::path::PathBuf;
use std::process::Command;

const PY_PACKAGES: [&str; 3] = ["openai", "anthropic", "slack_sdk"];
const NODE_PACKAGES: [&str; 1] = ["openai"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Hold an exclusive lock on a file beside the installs while `f` runs.
fn locked<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join(format!("keywarden-{name}.lock")))
        .expect("lock file");
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock");
    f()
}

/// `.venv/bin/python` with the Python SDKs; `None` when they cannot be
/// installed (no network, no python3 venv).
pub fn python() -> Option<PathBuf> {
    let python = root().join(".venv/bin/python");
    locked("venv", || {
        let has = |p: &PathBuf| {
            Command::new(p)
                .args(["-c", "import openai, anthropic, slack_sdk"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if has(&python) {
            return Some(python.clone());
        }
        if !python.exists() {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(root().join(".venv"))
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
        }
        let ok = Command::new(&python)
            .args(["-m", "pip", "install", "-q"])
            .args(PY_PACKAGES)
            .status()
            .is_ok_and(|s| s.success());
        (ok && has(&python)).then_some(python.clone())
    })
}

/// `node_modules` with the Node SDK; `None` when it cannot be installed.
pub fn node_modules() -> Option<PathBuf> {
    let modules = root().join("node_modules");
    locked("node", || {
        if modules.join("openai/package.json").exists() {
            return Some(modules.clone());
        }
        let ok = Command::new("npm")
            .args(["install", "--no-save", "--no-package-lock", "--silent"])
            .args(NODE_PACKAGES)
            .current_dir(root())
            .status()
            .is_ok_and(|s| s.success());
        (ok && modules.join("openai/package.json").exists()).then_some(modules.clone())
    })
}
