//! Operator commands that never mislead (issue 14, item 4): `revoke` and
//! `inventory` find a sidecar on a chosen admin socket or say plainly that
//! none runs, `check` shows a revoked secret as revoked, and every command
//! that learns secrets warns when nothing is protected.

use crate::util::*;

/// One secret `openai` in `secrets/openai`, injected as OPENAI_API_KEY.
fn setup(dir: &Dir) -> String {
    let value = secret(40);
    dir.write("secrets/openai", &value);
    dir.write(
        "reg.yaml",
        "openai:\n  dev:\n    secret_ref: file://secrets/openai\n    scope: [pool]\n    env: OPENAI_API_KEY\n",
    );
    value
}

const NO_SIDECAR: &str = "no running keywarden sidecar found";

#[test]
fn issue_14_4_revoke_and_inventory_find_a_sidecar_on_a_chosen_admin_socket() {
    let dir = Dir::new();
    setup(&dir);
    let admin = dir.join("ops/admin.sock");
    std::fs::create_dir_all(dir.join("ops")).expect("mkdir");
    let child = sidecar_until_go(
        &dir,
        &admin,
        &format!("{} get openai >/dev/null 2>&1; echo rc=$?", bin()),
    );
    // From another folder, with no registry there and no --admin-socket.
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let inventory = output(kw(&dir, &["inventory", "--format", "json"]).current_dir(&elsewhere));
    let revoke = output(kw(&dir, &["revoke", "openai"]).current_dir(&elsewhere));
    dir.write("go", "");
    let out = child.wait_with_output().expect("wait");
    assert!(inventory.status.success(), "{}", stderr(&inventory));
    assert!(
        !stderr(&inventory).contains(NO_SIDECAR),
        "{}",
        stderr(&inventory)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&inventory)).expect("json");
    assert!(
        v["secrets"][0]["resolved_at"].is_string(),
        "the sidecar's inventory, not the registry's: {v}"
    );
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    assert!(
        stdout(&revoke).contains(&format!(
            "revoked 'openai' in the sidecar at {}",
            admin.display()
        )),
        "{}",
        stdout(&revoke)
    );
    assert_eq!(stdout(&out), "rc=77\n", "the sidecar revoked it");
    // The link that made it findable is gone with the sidecar.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("keywarden-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn issue_14_4_revoke_without_a_sidecar_says_so() {
    let dir = Dir::new();
    // No sidecar and no registry knowing the id: 69, said plainly.
    let out = output(&mut kw(&dir, &["revoke", "openai"]));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(NO_SIDECAR), "{err}");
    assert!(err.contains("nothing was revoked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A named admin socket where nothing listens: 69 about the socket.
    setup(&dir);
    let out = output(&mut kw(
        &dir,
        &[
            "revoke",
            "openai",
            "--registry",
            "reg.yaml",
            "--admin-socket",
            "nothere.sock",
        ],
    ));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothere.sock"), "{}", stderr(&out));
    // The registry knows it: recorded in the list, with a plain note.
    let out = output(&mut kw(
        &dir,
        &["revoke", "openai", "--registry", "reg.yaml"],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(NO_SIDECAR), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("on the revocation list")
            || stdout(&out).contains("added to the revocation list"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn issue_14_4_inventory_without_a_sidecar_says_what_it_shows() {
    let dir = Dir::new();
    setup(&dir);
    let out = output(&mut kw(&dir, &["inventory", "--registry", "reg.yaml"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(NO_SIDECAR), "{err}");
    assert!(
        err.contains("the registry's secrets for env 'dev'") && err.contains("nothing resolved"),
        "{err}"
    );
    assert!(stdout(&out).lines().any(|l| l.starts_with("openai")));
}

#[test]
fn issue_14_4_check_shows_a_revoked_secret_as_revoked() {
    let dir = Dir::new();
    let value = setup(&dir);
    let out = output(&mut kw(
        &dir,
        &[
            "revoke",
            "openai",
            "--registry",
            "reg.yaml",
            "--reason",
            "leaked",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = output(&mut kw(&dir, &["check", "--registry", "reg.yaml"]));
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    let table = stdout(&out);
    let row = table
        .lines()
        .find(|l| l.starts_with("openai"))
        .unwrap_or_default();
    assert!(row.contains("revoked") && !row.contains(" ok"), "{table}");
    assert!(row.contains("leaked"), "{table}");
    assert!(
        stderr(&out).contains("1 of 1 secrets are revoked"),
        "{}",
        stderr(&out)
    );
    let out = output(&mut kw(
        &dir,
        &["check", "--registry", "reg.yaml", "--format", "json"],
    ));
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["secrets"][0]["status"], "revoked");
    assert!(!stdout(&out).contains(&value));
}

#[test]
fn issue_14_4_nothing_protected_is_warned_once() {
    let dir = Dir::new();
    dir.write("notes.txt", "nothing secret\n");
    let warning = "nothing is protected";
    for args in [
        &["run", "--", "true"][..],
        &["check"],
        &["redact"],
        &["scan", "notes.txt"],
    ] {
        let out = output(&mut kw(&dir, args));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.matches(warning).count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("configs/secrets-registry.yaml")
                && err.contains(&dir.path().display().to_string()),
            "{args:?}: {err}"
        );
    }
    // A registry, or a ref in the environment: no warning.
    setup(&dir);
    let out = output(&mut kw(&dir, &["check", "--registry", "reg.yaml"]));
    assert!(!stderr(&out).contains(warning), "{}", stderr(&out));
    let out = output(kw(&dir, &["run", "--", "true"]).env("TOKEN", "file://secrets/openai"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(warning), "{}", stderr(&out));
}
