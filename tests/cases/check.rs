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
