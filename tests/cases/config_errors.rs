//! Every class of configuration error exits 78 with one line naming the
//! file and the key — and never echoes a value.

use crate::util::*;

#[test]
fn every_config_error_class_is_78_and_names_file_and_key() {
    let canary = format!("sk-{}", secret(32));
    let dir = Dir::new();
    // (registry, policy, expected fragment)
    let cases: Vec<(Option<String>, Option<String>, String)> = vec![
        (
            Some(format!("openai:\n  dev:\n    secret_ref: \"{canary}\"\n")),
            None,
            "reg.yaml:3: secret 'openai' env 'dev': secret_ref: not a secret reference".into(),
        ),
        (
            Some("openai:\n  dev:\n    secret_ref: kv://a\n    scpe: [x]\n".into()),
            None,
            "reg.yaml:4: secret 'openai' env 'dev': unknown field 'scpe'".into(),
        ),
        (
            Some("openai:\n  dev:\n    secret_ref: smb://a\n".into()),
            None,
            "reg.yaml:3: secret 'openai' env 'dev': secret_ref: unknown scheme 'smb'".into(),
        ),
        (
            Some("openai:\n  dev:\n    env: X\n".into()),
            None,
            "reg.yaml:2: secret 'openai' env 'dev': missing field 'secret_ref'".into(),
        ),
        (
            Some("openai:\n  staging:\n    secret_ref: kv://a\n".into()),
            None,
            "reg.yaml:2: secret 'openai': unknown environment 'staging'".into(),
        ),
        (
            Some(format!(
                "openai:\n  dev:\n    secret_ref: kv://a\n    max_ttl_seconds: \"{canary}\"\n"
            )),
            None,
            "reg.yaml:4: secret 'openai' env 'dev': max_ttl_seconds: expected a positive integer"
                .into(),
        ),
        (
            Some("openai: [\n".into()),
            None,
            "reg.yaml:2: invalid YAML".into(),
        ),
        (
            Some("openai:\n  dev:\n    secret_ref: file://k\n".into()),
            Some(r#"{"allowed_schemes": ["kv"]}"#.into()),
            "reg.yaml:2: secret 'openai' env 'dev': scheme 'file' is not allowed by p.json".into(),
        ),
        (
            Some("openai:\n  dev:\n    secret_ref: kv://a\n    env: LITELLM_MASTER_KEY\n".into()),
            None,
            "secret 'openai' env 'dev': env: LITELLM_MASTER_KEY is a denied variable".into(),
        ),
        (
            None,
            Some("{\n  \"allowed_secret\": [\"x\"]\n}".into()),
            "p.json:2: unknown field 'allowed_secret'".into(),
        ),
        (
            None,
            Some(format!("{{\"clean_env\": \"{canary}\"}}")),
            "p.json:1: invalid type: string (value not shown), expected a boolean".into(),
        ),
        (
            None,
            Some(r#"{"flags": {"loud": true}}"#.into()),
            "p.json:1: unknown field 'loud'".into(),
        ),
        (
            None,
            Some(r#"{"kv_backend": {"type": "etcd"}}"#.into()),
            "p.json:1: unknown variant 'etcd'".into(),
        ),
    ];
    for (reg, pol, want) in cases {
        let _ = std::fs::remove_file(dir.join("reg.yaml"));
        let _ = std::fs::remove_file(dir.join("p.json"));
        let mut args = vec!["run", "--env", "dev"];
        if let Some(r) = &reg {
            dir.write("reg.yaml", r);
            args.extend(["--registry", "reg.yaml"]);
        }
        if let Some(p) = &pol {
            dir.write("p.json", p);
            args.extend(["--policy", "p.json"]);
        }
        args.extend(["--", "touch", "marker"]);
        let out = output(&mut kw(&dir, &args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{want}: {err}");
        assert!(err.contains(&want), "wanted {want:?} in {err:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!err.contains(&canary), "the value was echoed: {err}");
        assert!(!dir.join("marker").exists());
        // check reports the same error the same way
        args[0] = "check";
        args.truncate(args.len() - 3);
        let out = output(&mut kw(&dir, &args));
        assert_eq!(out.status.code(), Some(78), "check: {want}");
        assert!(!stderr(&out).contains(&canary));
    }
}

#[test]
fn a_named_file_that_is_missing_is_a_config_error() {
    let dir = Dir::new();
    let out = output(&mut kw(
        &dir,
        &["run", "--registry", "nope.yaml", "--", "true"],
    ));
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("nope.yaml: cannot read the registry: no such file"),
        "{}",
        stderr(&out)
    );
    let out = output(kw(&dir, &["run", "--", "true"]).env("KEYWARDEN_POLICY", "missing.json"));
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("missing.json: cannot read the policy"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_canary_secret_never_appears_on_any_error_path() {
    let dir = Dir::new();
    let canary = secret(40);
    dir.write("k", &canary);
    dir.write("copy.env", format!("K={canary}\n"));
    dir.script(
        "fails",
        &format!("echo 'cannot open {canary}' >&2\nprintf '%s' '{canary}'\nexit 1\n"),
    );
    dir.write("reg.yaml", "a:\n  dev:\n    secret_ref: file://k\n    env: A\nb:\n  dev:\n    secret_ref: exec://./fails?x\n");
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "-vv",
            "run",
            "--registry",
            "reg.yaml",
            "--env",
            "dev",
            "--",
            "true",
        ],
        vec!["-vv", "check", "--registry", "reg.yaml", "--env", "dev"],
        vec![
            "-vv",
            "check",
            "--registry",
            "reg.yaml",
            "--env",
            "dev",
            "--format",
            "json",
        ],
        vec![
            "-vv",
            "--log-format",
            "json",
            "run",
            "--registry",
            "reg.yaml",
            "--env",
            "dev",
            "--",
            "true",
        ],
        vec!["-vv", "run", "--", "no-such-command-kw"],
        vec!["-vv", "run", "--user", "no-such-user-kw", "--", "true"],
    ];
    for args in runs {
        let out = output(
            kw(&dir, &args)
                .env("A_REF", "file://k")
                .env("FROM_DOTENV", "dotenv://copy.env#K"),
        );
        assert!(!out.status.success(), "{args:?}");
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains(&canary), "{args:?} leaked: {all}");
    }
}
