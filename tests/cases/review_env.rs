//! Regressions of the outside review about environments and sources: what
//! providers keywarden starts may see, what reaches the child, how large a
//! source may be, what `execve` can carry, and how many providers run at
//! once.

use std::time::Duration;

use base64::Engine;

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

fn hex(value: &str) -> String {
    value.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A provider script that writes its whole environment to a file of its
/// own under `dumps/` (providers run concurrently: one shared file would
/// interleave their runs), then prints `value`.
fn dumping_provider(dir: &Dir, name: &str, value: &str) {
    let dumps = dir.join("dumps");
    dir.script(
        name,
        &format!(
            "mkdir -p '{d}'\nenv > \"{d}/run.$$\"\nprintf '%s\\n' '{value}'\n",
            d = dumps.display()
        ),
    );
}

#[test]
fn review_01_providers_never_see_denied_variables_sources_or_keywardens_own() {
    let dir = Dir::new();
    dumping_provider(&dir, "prov", &secret(32));
    // A `pass` on PATH that dumps its environment the same way.
    dumping_provider(&dir, "bin/pass", &secret(32));
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    dir.write(
        "reg.yaml",
        "prov:\n  dev:\n    secret_ref: exec://./prov?x\n    scope: [pool]\n    max_ttl_seconds: 1\n\
         gpg:\n  dev:\n    secret_ref: pass://team/db\n    scope: [pool]\n    max_ttl_seconds: 1\n\
         src:\n  dev:\n    secret_ref: env://SOURCE_VAR\n    env: FROM_SOURCE\n",
    );
    let hidden: Vec<(&str, String)> = vec![
        ("ENCRYPTION_KEY", secret(40)),
        ("INTERNAL_API_TOKEN", secret(40)),
        ("encryption_key_v2", secret(40)),
        ("LITELLM_MASTER_KEY", secret(40)),
        ("HITL_CHALLENGE_HMAC_KEY", secret(40)),
        ("SOURCE_VAR", secret(40)),
        ("KEYWARDEN_SOMETHING", secret(40)),
    ];
    // The child asks for both secrets again until each provider has run
    // twice (their TTL is 1 s), within a deadline.
    let fetch = |id: &str| {
        format!("curl -s --unix-socket \"$KEYWARDEN_SOCKET\" -H \"Authorization: Bearer $KEYWARDEN_TOKEN\" http://kw/v1/secrets/{id} > /dev/null")
    };
    let script = format!(
        "i=0; while [ \"$(ls dumps | wc -l)\" -lt 4 ] && [ $i -lt 600 ]; do {}; {}; sleep 0.1; i=$((i+1)); done",
        fetch("prov"),
        fetch("gpg")
    );
    let mut cmd = kw(&dir, &run_sh(&[], &script));
    cmd.env("PATH", &path).env("ORDINARY_SETTING", "kept");
    for (k, v) in &hidden {
        cmd.env(k, v);
    }
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs: Vec<String> = std::fs::read_dir(dir.join("dumps"))
        .expect("dumps")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("dump"))
        .collect();
    for run in &runs {
        assert!(run.contains("ORDINARY_SETTING=kept\n"), "{run}");
        for (name, value) in &hidden {
            assert!(
                !run.contains(value.as_str()),
                "a provider saw {name}'s value"
            );
            let prefix = format!("{}=", name.to_ascii_uppercase());
            assert!(
                !run.lines()
                    .any(|l| l.to_ascii_uppercase().starts_with(&prefix)),
                "a provider saw {name}"
            );
        }
        assert!(!run.contains("KEYWARDEN_TOKEN="), "{run}");
    }
    assert!(
        runs.len() >= 4,
        "both providers ran at start and again after their TTL: {} runs; {}",
        runs.len(),
        stderr(&out)
    );
}

#[test]
fn review_04_copies_and_holders_of_denied_values_and_secrets_are_stripped() {
    let dir = Dir::new();
    let master = secret(40);
    let quiet = secret(32);
    let injected = secret(32);
    dir.write("quiet", &quiet);
    dir.write("injected", &injected);
    dir.write(
        "reg.yaml",
        "quiet:\n  dev:\n    secret_ref: file://quiet\n\
         injected:\n  dev:\n    secret_ref: file://injected\n    env: INJECTED\n",
    );
    let out = output(
        kw(
            &dir,
            &[
                "run",
                "--no-redact",
                "--no-socket",
                "--registry",
                "reg.yaml",
                "--",
                "env",
                "-0",
            ],
        )
        .env("ENCRYPTION_KEY", &master)
        .env("BACKUP_KEY", &master)
        .env("DSN", format!("postgres://app:{master}@db/app"))
        .env("AUTH_HEADER", format!("Bearer {quiet}"))
        .env("COPY_OF_QUIET", &quiet)
        .env("SHORT_PIECE", &quiet[..7])
        .env("ORDINARY_SETTING", "kept"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let env = child_env(&out);
    for name in [
        "ENCRYPTION_KEY",
        "BACKUP_KEY",
        "DSN",
        "AUTH_HEADER",
        "COPY_OF_QUIET",
    ] {
        assert_eq!(get(&env, name), None, "{name} reached the child");
    }
    assert_eq!(get(&env, "INJECTED"), Some(injected.as_str()));
    assert_eq!(get(&env, "SHORT_PIECE"), Some(&quiet[..7]));
    assert_eq!(get(&env, "ORDINARY_SETTING"), Some("kept"));
    let all = stdout(&out);
    assert!(!all.contains(&master) && !all.contains(&quiet));
}

#[test]
fn review_05_an_env_ref_to_an_always_denied_variable_is_78() {
    let dir = Dir::new();
    let master = secret(40);
    let out = output(
        kw(&dir, &["run", "--", "touch", "marker"])
            .env("ENCRYPTION_KEY", &master)
            .env("APP_KEY", "env://ENCRYPTION_KEY"),
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("variable APP_KEY") && err.contains("always-denied"),
        "{err}"
    );
    assert!(!err.contains(&master));
    assert!(!dir.join("marker").exists(), "the child ran");

    dir.write(
        "reg.yaml",
        "app:\n  dev:\n    secret_ref: env://Internal_Api_Token\n    env: APP_TOKEN\n",
    );
    let out =
        output(kw(&dir, &["check", "--registry", "reg.yaml"]).env("Internal_Api_Token", &master));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("reg.yaml:2: secret 'app' env 'dev': secret_ref:"),
        "{err}"
    );
    assert!(!err.contains(&master) && !stdout(&out).contains(&master));
}

#[test]
fn review_08_provider_stderr_is_scrubbed_of_every_form_and_denied_value() {
    let dir = Dir::new();
    let known = secret(40);
    let token = secret(40);
    dir.write("known", &known);
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let leaks = [b64(&known), hex(&known), token.clone(), b64(&token)];
    dir.script(
        "failing",
        &format!("echo 'cannot fetch: {}' >&2\nexit 3\n", leaks.join(" ")),
    );
    dir.write(
        "reg.yaml",
        "known:\n  dev:\n    secret_ref: file://known\n    env: KNOWN\n\
         broken:\n  dev:\n    secret_ref: exec://./failing?x\n    env: BROKEN\n",
    );
    for args in [
        vec!["run", "--registry", "reg.yaml", "--", "true"],
        vec!["check", "--registry", "reg.yaml"],
    ] {
        let out = output(kw(&dir, &args).env("INTERNAL_API_TOKEN", &token));
        assert_eq!(out.status.code(), Some(69), "{args:?}: {}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(all.contains("cannot fetch"), "{args:?}: {all}");
        for leak in &leaks {
            assert!(
                !all.contains(leak.as_str()),
                "{args:?} leaked a form: {all}"
            );
        }
    }
}

#[test]
fn review_14_a_registry_env_naming_a_keywarden_variable_is_78() {
    let dir = Dir::new();
    dir.write("k", secret(32));
    dir.write(
        "reg.yaml",
        "a:\n  dev:\n    secret_ref: file://k\n    env: KEYWARDEN_TOKEN\n",
    );
    let out = output(&mut kw(
        &dir,
        &["run", "--registry", "reg.yaml", "--", "touch", "marker"],
    ));
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("reg.yaml:2: secret 'a' env 'dev': env: KEYWARDEN_TOKEN"),
        "{err}"
    );
    assert!(!dir.join("marker").exists(), "the child ran");
}

#[test]
fn review_16_a_source_over_1_mib_is_65_naming_the_ref() {
    let dir = Dir::new();
    let mib = 1 << 20;
    dir.write("big", vec![b'a'; mib + 1]);
    dir.write("edge", vec![b'a'; mib]);
    dir.write("big.env", format!("K={}\n", "a".repeat(mib)));
    dir.script("flood", "head -c 3000000 /dev/zero | tr '\\0' a\n");
    let cases = [
        ("file:///dev/zero", "file:///dev/zero"),
        ("file://big", "file://big"),
        ("dotenv://big.env#K", "dotenv://big.env#K"),
        ("exec://./flood?x", "exec://./flood?x"),
    ];
    for (reference, shown) in cases {
        let mut child = kw(&dir, &["check"])
            .env("HUGE", reference)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let status = wait_timeout(&mut child, Duration::from_secs(30));
        assert!(status.is_some(), "{reference}: check did not stop reading");
        let out = child.wait_with_output().expect("output");
        assert_eq!(out.status.code(), Some(65), "{reference}: {}", stderr(&out));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            all.contains(shown) && all.contains("larger than 1 MiB"),
            "{reference}: {all}"
        );
    }
    let out = output(kw(&dir, &["check"]).env("EDGE", "file://edge"));
    assert!(
        out.status.success(),
        "1 MiB exactly is fine: {}",
        stderr(&out)
    );
}

#[test]
fn review_20_a_value_execve_cannot_carry_is_65_naming_its_variable() {
    let dir = Dir::new();
    dir.write("nul", b"abc\0defghijk");
    dir.write("large", vec![b'a'; 200 * 1024]);
    for (var, reference, why) in [
        ("WITH_NUL", "file://nul", "NUL"),
        ("TOO_LARGE", "file://large", "KiB"),
    ] {
        let out =
            output(kw(&dir, &["run", "--no-socket", "--", "touch", "marker"]).env(var, reference));
        assert_eq!(out.status.code(), Some(65), "{var}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("variable {var}:")) && err.contains(why),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!dir.join("marker").exists(), "the child ran");
    }
}

#[test]
fn review_21_always_denied_names_match_in_any_case_and_bare_master_key() {
    let dir = Dir::new();
    let names = [
        "encryption_key",
        "Internal_Api_Token",
        "MASTER_KEY",
        "management_key",
        "Keywarden_Admin_Token",
    ];
    let mut cmd = kw(
        &dir,
        &["run", "--no-redact", "--no-socket", "--", "env", "-0"],
    );
    for name in names {
        cmd.env(name, secret(24));
    }
    cmd.env("MASTER_KEY_NOTES", "kept");
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let env = child_env(&out);
    for name in names {
        assert_eq!(get(&env, name), None, "{name} reached the child");
    }
    assert_eq!(get(&env, "MASTER_KEY_NOTES"), Some("kept"));
}

#[test]
fn review_22_provider_programs_run_within_a_bound_and_all_resolve() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.join("live")).expect("mkdir");
    // Each run marks itself live, records how many are live, and stays a
    // moment; the timeout (3 s) is shorter than the whole queue takes, so
    // it must count from each program's start.
    dir.script(
        "slow",
        &format!(
            "touch '{live}/'$$\nls '{live}' | wc -l >> '{counts}'\nsleep 0.08\nrm -f '{live}/'$$\necho \"value-$1-padding\"\n",
            live = dir.join("live").display(),
            counts = dir.join("counts").display()
        ),
    );
    let refs = 200;
    let registry: String = (0..refs)
        .map(|i| format!("s{i}:\n  dev:\n    secret_ref: exec://./slow?{i}\n"))
        .collect();
    dir.write("reg.yaml", registry);
    let bound = 3;
    let started = std::time::Instant::now();
    let out = output(
        kw(
            &dir,
            &["check", "--registry", "reg.yaml", "--format", "json"],
        )
        .env("KEYWARDEN_PROVIDER_JOBS", bound.to_string())
        .env("KEYWARDEN_RESOLVE_TIMEOUT", "3s"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the queue outlasts the timeout"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ok = report["secrets"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["status"] == "ok")
        .count();
    assert_eq!(ok, refs);
    let counts: Vec<usize> = dir
        .read("counts")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(counts.len(), refs);
    let most = counts.iter().copied().max().unwrap_or_default();
    assert!(most <= bound, "{most} provider programs ran at once");
}
