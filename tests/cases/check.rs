//! `keywarden check`: a table or JSON of every ref, never a value.

use crate::util::*;

fn setup(dir: &Dir) -> (String, String) {
    let a = secret(32);
    let b = secret(32);
    dir.write("keys/a", &a);
    dir.write("keys/b", &b);
    dir.write(
        "reg.yaml",
        "openai:\n  dev:\n    secret_ref: file://keys/a\n    scope: [\"llm:chat\", pool]\n    max_ttl_seconds: 7200\n    env: OPENAI_API_KEY\nslack:\n  dev:\n    secret_ref: file://keys/b\nbilling:\n  dev:\n    secret_ref: file://keys/none\n",
    );
    (a, b)
}

#[test]
fn table_and_json_list_every_ref_and_no_value() {
    let dir = Dir::new();
    let (a, b) = setup(&dir);
    dir.write(
        "p.json",
        r#"{"allowed_secrets": ["openai", "slack"], "max_ttl_seconds": {"dev": 3600}}"#,
    );
    let out = output(&mut kw(
        &dir,
        &[
            "check",
            "--registry",
            "reg.yaml",
            "--policy",
            "p.json",
            "--env",
            "dev",
        ],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "ID",
        "REF",
        "SCOPE",
        "TTL",
        "ENV",
        "STATUS",
        "openai",
        "file://keys/a",
        "llm:chat,pool",
        "3600s",
        "OPENAI_API_KEY",
        "ok",
        "billing",
        "skipped",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    assert!(!text.contains(&a) && !text.contains(&b));

    let out = output(&mut kw(
        &dir,
        &[
            "check",
            "--registry",
            "reg.yaml",
            "--policy",
            "p.json",
            "--env",
            "dev",
            "--format",
            "json",
        ],
    ));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["ok"], true);
    assert_eq!(json["env"], "dev");
    let rows = json["secrets"].as_array().expect("rows");
    assert_eq!(rows[0]["id"], "openai");
    assert_eq!(rows[0]["ref"], "file://keys/a");
    assert_eq!(rows[0]["ttl_seconds"], 3600);
    assert_eq!(rows[0]["status"], "ok");
    assert_eq!(rows[2]["status"], "skipped");
    assert!(!stdout(&out).contains(&a));
}

#[test]
fn a_failing_ref_makes_check_fail_with_its_code() {
    let dir = Dir::new();
    setup(&dir);
    let out = output(&mut kw(
        &dir,
        &["check", "--registry", "reg.yaml", "--env", "dev"],
    ));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("billing") && text.contains("error") && text.contains("no such file"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("1 of 3 secrets could not be resolved"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_reports_config_errors_with_78() {
    let dir = Dir::new();
    dir.write(
        "reg.yaml",
        "a:\n  dev:\n    secret_ref: kv://x\n    colour: blue\n",
    );
    let out = output(&mut kw(&dir, &["check", "--registry", "reg.yaml"]));
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("reg.yaml:4: secret 'a' env 'dev': unknown field 'colour'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn overdue_rotations_are_flagged() {
    let dir = Dir::new();
    dir.write("old", secret(32));
    dir.write("new", secret(32));
    let status = std::process::Command::new("touch")
        .args(["-d", "40 days ago"])
        .arg(dir.join("old"))
        .status()
        .expect("touch");
    assert!(status.success());
    dir.write(
        "reg.yaml",
        "old:\n  dev:\n    secret_ref: file://old\n    rotate_every_days: 30\nnew:\n  dev:\n    secret_ref: file://new\n    rotate_every_days: 30\n",
    );
    let out = output(&mut kw(
        &dir,
        &[
            "check",
            "--registry",
            "reg.yaml",
            "--env",
            "dev",
            "--format",
            "json",
        ],
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "flagging is not failing: {}",
        stderr(&out)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["secrets"][0]["rotation_overdue"], true);
    assert_eq!(json["secrets"][1]["rotation_overdue"], false);
    assert!(
        stderr(&out).contains(
            "secret 'old': overdue for rotation: last changed 40 days ago, due every 30 days"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kv_refs_resolve_through_the_store_into_the_child() {
    let dir = Dir::new();
    let key = store_key();
    let value = secret(40);
    let store = dir.join("store.kw");
    let run = |args: &[&str], stdin: &str| {
        feed(
            kw(&dir, args)
                .env("ENCRYPTION_KEY", &key)
                .env("KEYWARDEN_STORE", &store),
            stdin.as_bytes(),
        )
    };
    assert!(run(&["store", "init"], "").status.success());
    assert!(run(&["store", "set", "kv://openai/dev/api_key"], &value)
        .status
        .success());
    dir.write("reg.yaml", "openai:\n  dev:\n    secret_ref: kv://openai/dev/api_key\n    env: OPENAI_API_KEY\n    rotate_every_days: 30\n");
    dir.write("expected", &value);
    let out = run(&["run", "--env", "dev", "--registry", "reg.yaml", "--", "sh", "-c", "[ \"$OPENAI_API_KEY\" = \"$(cat expected)\" ] && echo same; env | grep -c '^ENCRYPTION_KEY' || true"], "");
    assert_eq!(stdout(&out), "same\n0\n", "{}", stderr(&out));
    let raw = std::fs::read(&store).expect("store");
    assert!(
        !raw.windows(value.len()).any(|w| w == value.as_bytes()),
        "the store holds the value in clear"
    );
    let out = run(
        &[
            "check",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--format",
            "json",
        ],
        "",
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["secrets"][0]["status"], "ok");
    assert_eq!(json["secrets"][0]["rotation_overdue"], false);
    // Without the key, kv:// fails closed with 78 naming the variable.
    let out = output(
        kw(
            &dir,
            &[
                "run",
                "--env",
                "dev",
                "--registry",
                "reg.yaml",
                "--",
                "touch",
                "marker",
            ],
        )
        .env("KEYWARDEN_STORE", &store),
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(!dir.join("marker").exists());
}
