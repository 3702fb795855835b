//! The child's environment: denied names stripped, refs resolved in place,
//! registry injection, `--clean-env`, equal values and `env://` sources.

use crate::util::*;

fn child_env(out: &std::process::Output) -> Vec<(String, String)> {
    stdout(out)
        .split('\0')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn each_always_denied_variable_is_stripped_while_others_pass() {
    let dir = Dir::new();
    let denied = [
        "INTERNAL_API_TOKEN",
        "ENCRYPTION_KEY",
        "ENCRYPTION_KEY_V1",
        "ENCRYPTION_KEY_VERSION",
        "LITELLM_MASTER_KEY",
        "OPENROUTER_MANAGEMENT_KEY",
        "HITL_CHALLENGE_HMAC_KEY",
        "KEYWARDEN_ADMIN_TOKEN",
    ];
    let mut cmd = kw(&dir, &["run", "--no-redact", "--", "env", "-0"]);
    for name in denied {
        cmd.env(name, secret(20));
    }
    cmd.env("ORDINARY_SETTING", "kept")
        .env("MASTER_KEY_ROTATION_DOC", "kept too");
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let env = child_env(&out);
    for name in denied {
        assert_eq!(get(&env, name), None, "{name} reached the child");
    }
    assert_eq!(get(&env, "ORDINARY_SETTING"), Some("kept"));
    assert_eq!(get(&env, "MASTER_KEY_ROTATION_DOC"), Some("kept too"));
}

#[test]
fn policy_deny_env_globs_are_stripped() {
    let dir = Dir::new();
    dir.write("p.json", r#"{"deny_env": ["AWS_*", "EXACT_NAME"]}"#);
    let out = output(
        kw(
            &dir,
            &[
                "run",
                "--no-redact",
                "--policy",
                "p.json",
                "--",
                "env",
                "-0",
            ],
        )
        .env("AWS_SECRET_ACCESS_KEY", secret(20))
        .env("EXACT_NAME", "x")
        .env("EXACT_NAME_2", "y"),
    );
    let env = child_env(&out);
    assert_eq!(get(&env, "AWS_SECRET_ACCESS_KEY"), None);
    assert_eq!(get(&env, "EXACT_NAME"), None);
    assert_eq!(get(&env, "EXACT_NAME_2"), Some("y"));
}

#[test]
fn env_values_that_are_refs_are_resolved_in_place() {
    let dir = Dir::new();
    let value = secret(32);
    dir.write("k", format!("{value}\n"));
    let abs = format!("file://{}", dir.join("k").display());
    let out = output(
        kw(&dir, &["run", "--no-redact", "--", "env", "-0"])
            .env("OPENAI_API_KEY", &abs)
            .env("REL_KEY", "file://k")
            .env("HTTP_PROXY", "http://proxy.invalid:3128"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let env = child_env(&out);
    assert_eq!(
        get(&env, "OPENAI_API_KEY"),
        Some(value.as_str()),
        "trailing newline trimmed"
    );
    assert_eq!(
        get(&env, "REL_KEY"),
        Some(value.as_str()),
        "relative to the current folder"
    );
    assert_eq!(
        get(&env, "HTTP_PROXY"),
        Some("http://proxy.invalid:3128"),
        "other URLs are not refs"
    );
}

#[test]
fn registry_injection_env_sources_and_equal_values() {
    let dir = Dir::new();
    let openai = secret(40);
    let slack = secret(40);
    dir.write("conf/keys/openai", &openai);
    dir.write(
        "conf/reg.yaml",
        "openai:\n  dev:\n    secret_ref: file://keys/openai\n    env: OPENAI_API_KEY\n  prod:\n    secret_ref: file://keys/prod\n    env: OPENAI_API_KEY\nslack:\n  dev:\n    secret_ref: env://SLACK_SOURCE\n    env: SLACK_BOT_TOKEN\nquiet:\n  dev:\n    secret_ref: file://keys/openai\n",
    );
    let out = output(
        kw(
            &dir,
            &[
                "run",
                "--no-redact",
                "--registry",
                "conf/reg.yaml",
                "--env",
                "dev",
                "--",
                "env",
                "-0",
            ],
        )
        .env("SLACK_SOURCE", &slack)
        .env("COPY_OF_OPENAI", &openai)
        .env("OPENAI_API_KEY", "stale value"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let env = child_env(&out);
    assert_eq!(get(&env, "OPENAI_API_KEY"), Some(openai.as_str()));
    assert_eq!(get(&env, "SLACK_BOT_TOKEN"), Some(slack.as_str()));
    assert_eq!(
        get(&env, "SLACK_SOURCE"),
        None,
        "env:// sources are stripped"
    );
    assert_eq!(
        get(&env, "COPY_OF_OPENAI"),
        None,
        "a variable equal to a secret is stripped"
    );
    assert_eq!(env.iter().filter(|(k, _)| k == "OPENAI_API_KEY").count(), 1);
}

#[test]
fn clean_env_keeps_only_keep_env_and_injected() {
    let dir = Dir::new();
    dir.write("k", secret(24));
    dir.write(
        "reg.yaml",
        "a:\n  dev:\n    secret_ref: file://k\n    env: API_KEY\n",
    );
    let run = |extra: &[&str], policy: Option<&str>| {
        let mut args = vec![
            "run",
            "--no-redact",
            "--registry",
            "reg.yaml",
            "--env",
            "dev",
        ];
        if let Some(p) = policy {
            dir.write("p.json", p);
            args.extend(["--policy", "p.json"]);
        }
        args.extend_from_slice(extra);
        args.extend(["--", "env", "-0"]);
        child_env(&output(
            kw(&dir, &args)
                .env("NOISE", "n")
                .env("EXTRA", "e")
                .env("HOME", "/h"),
        ))
    };
    let env = run(&["--clean-env"], None);
    let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    assert!(
        names.contains(&"PATH") && names.contains(&"HOME") && names.contains(&"API_KEY"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"NOISE") && !names.contains(&"EXTRA"),
        "{names:?}"
    );

    let env = run(&["--clean-env", "--keep-env", "EXTRA"], None);
    assert_eq!(get(&env, "EXTRA"), Some("e"));

    let env = run(&[], Some(r#"{"clean_env": true, "keep_env": ["NOISE"]}"#));
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for want in ["NOISE", "API_KEY", "KEYWARDEN_SOCKET", "KEYWARDEN_TOKEN"] {
        assert!(names.contains(&want), "{names:?}");
    }
}

#[test]
fn default_registry_and_policy_are_picked_up_and_ci_selects_the_ci_env() {
    let dir = Dir::new();
    dir.write("configs/dev.key", "dev-value-123456");
    dir.write("configs/ci.key", "ci-value-1234567");
    dir.write(
        "configs/secrets-registry.yaml",
        "k:\n  dev:\n    secret_ref: file://dev.key\n    env: K\n  ci:\n    secret_ref: file://ci.key\n    env: K\n",
    );
    dir.write(
        "configs/secrets-policy.json",
        r#"{"deny_env": ["DROPPED"]}"#,
    );
    let out = output(
        kw(
            &dir,
            &[
                "run",
                "--no-redact",
                "--",
                "sh",
                "-c",
                "echo $K ${DROPPED:-gone}",
            ],
        )
        .env("DROPPED", "x"),
    );
    assert_eq!(stdout(&out), "dev-value-123456 gone\n");
    let out =
        output(kw(&dir, &["run", "--no-redact", "--", "sh", "-c", "echo $K"]).env("CI", "true"));
    assert_eq!(stdout(&out), "ci-value-1234567\n");
    let out = output(
        kw(&dir, &["run", "--no-redact", "--", "sh", "-c", "echo $K"])
            .env("CI", "true")
            .env("KEYWARDEN_ENV", "dev"),
    );
    assert_eq!(stdout(&out), "dev-value-123456\n");
}

#[test]
fn secrets_not_allowed_by_policy_are_skipped() {
    let dir = Dir::new();
    dir.write("a", "aaaaaaaaaaaa");
    dir.write("b", "bbbbbbbbbbbb");
    dir.write("reg.yaml", "openai:\n  dev:\n    secret_ref: file://a\n    env: A\nbilling:\n  dev:\n    secret_ref: file://b\n    env: BILLING_KEY\n");
    dir.write("p.json", r#"{"allowed_secrets": ["openai"]}"#);
    let out = output(&mut kw(
        &dir,
        &[
            "run",
            "--no-redact",
            "--registry",
            "reg.yaml",
            "--policy",
            "p.json",
            "--env",
            "dev",
            "--",
            "sh",
            "-c",
            "echo ${A:-none} ${BILLING_KEY:-none}",
        ],
    ));
    assert_eq!(stdout(&out), "aaaaaaaaaaaa none\n", "{}", stderr(&out));
}
