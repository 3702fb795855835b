//! `pass://` against Debian's `pass` with a throwaway GPG key, and `op://`
//! with the missing tool and a stand-in `op` script (the real one is not
//! installable here).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::harness::*;
use keywarden::error::ErrorKind;

fn path_with(dir: &Path) -> String {
    format!("{}:/usr/bin:/bin", dir.display())
}

/// A temp GNUPGHOME with a passphrase-less key and a pass store; None when
/// `pass` or `gpg` is missing.
struct PassStore {
    home: tempfile::TempDir,
}

impl PassStore {
    fn new(test: &str) -> Option<PassStore> {
        let _ = test;
        for tool in ["pass", "gpg", "gpgconf"] {
            crate::util::need(tool);
        }
        // Short path: gpg-agent's socket lives in GNUPGHOME.
        let home = tempfile::Builder::new()
            .prefix("kwp")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::create_dir(home.path().join("gnupg")).expect("mkdir");
        std::fs::set_permissions(
            home.path().join("gnupg"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
        let s = PassStore { home };
        s.cmd(
            "gpg",
            &[
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                "keywarden-test@example.invalid",
                "default",
                "default",
                "never",
            ],
            None,
        );
        s.cmd("pass", &["init", "keywarden-test@example.invalid"], None);
        Some(s)
    }

    fn env(&self) -> Vec<(String, String)> {
        let h = self.home.path();
        vec![
            ("GNUPGHOME".into(), h.join("gnupg").display().to_string()),
            (
                "PASSWORD_STORE_DIR".into(),
                h.join("store").display().to_string(),
            ),
            ("HOME".into(), h.display().to_string()),
            ("PATH".into(), "/usr/bin:/bin".into()),
        ]
    }

    fn cmd(&self, program: &str, args: &[&str], stdin: Option<&str>) {
        let out = crate::util::feed(
            Command::new(program).args(args).envs(self.env()),
            stdin.unwrap_or("").as_bytes(),
        );
        assert!(
            out.status.success(),
            "{program} {:?}: {}",
            args.first(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .envs(self.env())
            .status();
    }
}

#[test]
fn pass_first_line_not_found_and_missing_tool() {
    let Some(store) = PassStore::new("pass_first_line_not_found_and_missing_tool") else {
        return;
    };
    let (first, second) = (rand_hex(12), rand_hex(12));
    store.cmd(
        "pass",
        &["insert", "-m", "team/api"],
        Some(&format!("{first}\nlogin: {second}\n")),
    );
    let env: Vec<(String, String)> = store.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = resolve_all(
        env_of(&pairs),
        fast(),
        &["pass://team/api", "pass://team/none"],
    );
    assert_eq!(value(out.remove(0)), first, "first line only");
    let e = err_without(out.remove(0), &[&first, &second]);
    assert_eq!(e.kind.exit_code(), 69);
    assert!(
        e.reason.contains("'pass' exited with status 1")
            && e.reason.contains("not in the password store"),
        "{e}"
    );

    let empty = tempfile::tempdir().expect("tempdir");
    let no_pass = env_of(&[("PATH", empty.path().to_str().expect("utf8"))]);
    let e = err_without(
        resolve_all(no_pass, fast(), &["pass://team/api"]).remove(0),
        &[],
    );
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(
        e.reason.contains("'pass'") && e.reason.contains("not installed"),
        "{e}"
    );
}

fn fake_op(dir: &Path, body: &str) {
    let path = dir.join("op");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn op_missing_tool_and_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = path_with(dir.path());
    let e = err_without(
        resolve_all(
            env_of(&[("PATH", &path)]),
            fast(),
            &["op://Dev/db/password"],
        )
        .remove(0),
        &[],
    );
    assert_eq!(e.kind.exit_code(), 69);
    assert!(
        e.reason.contains("'op'")
            && e.reason.contains("1Password CLI")
            && e.reason.contains("not installed"),
        "{e}"
    );

    // `op read REF` prints the value and a newline; the ref goes as written.
    let secret = rand_hex(12);
    fake_op(
        dir.path(),
        r#"[ "$1" = read ] && [ "$2" = 'op://Dev/db/password' ] && [ $# -eq 2 ] || { echo "[ERROR] unexpected: $*" >&2; exit 2; }
printf '%s\n' "$KW_FAKE_VALUE""#,
    );
    let env = env_of(&[("PATH", &path), ("KW_FAKE_VALUE", &secret)]);
    let mut out = resolve_all(env, fast(), &["op://Dev/db/password", "op://Dev/db/other"]);
    assert_eq!(value(out.remove(0)), secret, "one newline trimmed");
    let e = err_without(out.remove(0), &[&secret]);
    assert_eq!(e.kind.exit_code(), 69);
    assert!(
        e.reason.contains("status 2") && e.reason.contains("[ERROR] unexpected"),
        "{e}"
    );

    // A failing `op` that printed the value: the value is scrubbed.
    fake_op(dir.path(), "printf '%s\\n' \"$KW_FAKE_VALUE\"; echo \"[ERROR] item $KW_FAKE_VALUE is locked\" >&2; exit 1");
    let env = env_of(&[("PATH", &path), ("KW_FAKE_VALUE", &secret)]);
    let e = err_without(
        resolve_all(env, fast(), &["op://Dev/db/password"]).remove(0),
        &[&secret],
    );
    assert!(e.reason.contains("[REDACTED] is locked"), "{e}");

    let e = err_without(
        resolve_all(env_of(&[("PATH", &path)]), fast(), &["op://Dev/db"]).remove(0),
        &[],
    );
    assert_eq!(e.kind.exit_code(), 78);
}

/// `pass://` through `run` and `check`; a GPG home without the key fails
/// closed before the child starts, and never shows the value.
#[test]
fn pass_refs_through_run_and_check() {
    use crate::util::{kw, output, stderr, stdout, Dir};
    let Some(store) = PassStore::new("pass_refs_through_run_and_check") else {
        return;
    };
    let value = rand_hex(16);
    store.cmd(
        "pass",
        &["insert", "-m", "agent/api"],
        Some(&format!("{value}\n")),
    );
    let dir = Dir::new();
    dir.write(
        "reg.yaml",
        "api:\n  dev:\n    secret_ref: pass://agent/api\n    env: API_KEY\n",
    );
    let with_store = |env: &[(String, String)], args: &[&str]| {
        let mut cmd = kw(&dir, args);
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        output(&mut cmd)
    };
    let out = with_store(
        &store.env(),
        &[
            "check",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(report["secrets"][0]["backend"], "pass", "{report}");
    assert!(!stdout(&out).contains(&value));

    let script = format!("[ \"$API_KEY\" = {value} ] && echo same; touch ran");
    let run = crate::util::run_sh(&[], &script);
    let out = with_store(&store.env(), &run);
    assert_eq!(stdout(&out), "same\n", "{}", stderr(&out));

    // The store without its GPG key: pass fails, keywarden fails closed.
    std::fs::remove_file(dir.join("ran")).expect("marker");
    let empty = tempfile::Builder::new()
        .prefix("kwg")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(empty.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let env: Vec<(String, String)> = store
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "GNUPGHOME" {
                (k, empty.path().display().to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    let out = with_store(&env, &run);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(!dir.join("ran").exists(), "the child ran");
    assert!(
        err.contains("pass://agent/api") && !err.contains(&value),
        "{err}"
    );
    let _ = Command::new("gpgconf")
        .args(["--kill", "gpg-agent"])
        .env("GNUPGHOME", empty.path())
        .status();
}
