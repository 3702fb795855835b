//! Providers resolve for real, concurrently, and fail closed.

use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn dotenv_cred_and_exec_providers() {
    let dir = Dir::new();
    let a = secret(30);
    let b = secret(30);
    let c = secret(30);
    dir.write(
        "app.env",
        format!("# settings\nexport OTHER=x\nAPI_KEY=\"{a}\"\n"),
    );
    dir.write("creds/slack", format!("{b}\n"));
    dir.script(
        "provider",
        &format!("[ \"$1\" = \"prod/db\" ] || exit 9\nprintf '%s\\n' '{c}'\n"),
    );
    dir.write(
        "reg.yaml",
        "a:\n  dev:\n    secret_ref: dotenv://app.env#API_KEY\n    env: A\nb:\n  dev:\n    secret_ref: cred://slack\n    env: B\nc:\n  dev:\n    secret_ref: exec://./provider?prod/db\n    env: C\n",
    );
    let out = output(
        kw(
            &dir,
            &[
                "run",
                "--no-redact",
                "--registry",
                "reg.yaml",
                "--env",
                "dev",
                "--",
                "sh",
                "-c",
                "echo \"$A $B $C\"",
            ],
        )
        .env("CREDENTIALS_DIRECTORY", dir.join("creds")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{a} {b} {c}\n"));
}

#[test]
fn a_failing_ref_means_the_child_never_runs() {
    let dir = Dir::new();
    dir.write("ok", secret(20));
    dir.write("reg.yaml", "good:\n  dev:\n    secret_ref: file://ok\n    env: G\nbad:\n  dev:\n    secret_ref: file://missing\n    env: B\n");
    let out = output(&mut kw(
        &dir,
        &[
            "run",
            "--registry",
            "reg.yaml",
            "--env",
            "dev",
            "--",
            "touch",
            "marker",
        ],
    ));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(!dir.join("marker").exists(), "the child ran");
    let err = stderr(&out);
    assert!(
        err.contains("secret 'bad' (file://missing)") && err.contains("no such file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn exit_codes_of_resolution_failures() {
    let dir = Dir::new();
    dir.write("empty", "\n");
    let cases: &[(&str, &str, i32, &str)] = &[
        ("EMPTY", "file://empty", 65, "is empty"),
        ("KV", "kv://openai/dev/api_key", 69, "no kv backend"),
        (
            "ENVREF",
            "env://NOT_SET_ANYWHERE",
            69,
            "variable NOT_SET_ANYWHERE is not set",
        ),
        ("CRED", "cred://x", 69, "CREDENTIALS_DIRECTORY is not set"),
        (
            "MALFORMED",
            "dotenv://app.env",
            78,
            "variable MALFORMED: dotenv refs need a key",
        ),
        (
            "VAULT",
            "vault://secret/app#token",
            78,
            "VAULT_ADDR is not set",
        ),
    ];
    for (name, value, code, want) in cases {
        let out = output(kw(&dir, &["run", "--", "touch", "marker"]).env(name, value));
        assert_eq!(out.status.code(), Some(*code), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
        assert!(!dir.join("marker").exists());
    }
}

#[test]
fn exec_provider_failure_carries_its_stderr_without_the_value() {
    let dir = Dir::new();
    let value = secret(32);
    dir.script(
        "leaky",
        &format!("printf '%s' '{value}'\necho \"lookup failed near {value}\" >&2\nexit 3\n"),
    );
    let out = output(kw(&dir, &["run", "--", "true"]).env("K", "exec://./leaky?x"));
    assert_eq!(out.status.code(), Some(69));
    let err = stderr(&out);
    assert!(
        err.contains("exited with status 3: lookup failed near [REDACTED]"),
        "{err}"
    );
    assert!(!err.contains(&value), "{err}");
}

#[test]
fn slow_providers_time_out_and_resolve_concurrently() {
    let dir = Dir::new();
    dir.script("slow", "sleep 30\n");
    let started = Instant::now();
    let out = output(
        kw(
            &dir,
            &["run", "--resolve-timeout", "300ms", "--", "touch", "marker"],
        )
        .env("K", "exec://./slow?x"),
    );
    assert_eq!(out.status.code(), Some(69));
    assert!(
        stderr(&out).contains("timed out after 300ms"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!dir.join("marker").exists());

    // Four providers of 1.5 s each take about 1.5 s together, not 6 s
    // (with room for a loaded machine's start-ups).
    dir.script("half", "sleep 1.5; echo value-of-$1\n");
    let started = Instant::now();
    let out = output(
        kw(
            &dir,
            &["run", "--no-redact", "--", "sh", "-c", "echo $A $B $C $D"],
        )
        .env("A", "exec://./half?a")
        .env("B", "exec://./half?b")
        .env("C", "exec://./half?c")
        .env("D", "exec://./half?d"),
    );
    assert_eq!(
        stdout(&out),
        "value-of-a value-of-b value-of-c value-of-d\n",
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "{:?}",
        started.elapsed()
    );
}

/// A FIFO nobody writes: opening it to read never returns.
fn mkfifo(dir: &Dir, name: &str) {
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join(name))
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

/// `check` of `reg.yaml` in JSON, each ref bounded by `timeout`.
fn check_json(timeout: &str) -> [&str; 9] {
    [
        "check",
        "--registry",
        "reg.yaml",
        "--env",
        "dev",
        "--resolve-timeout",
        timeout,
        "--format",
        "json",
    ]
}

/// `file://` refs are read as one batch, with one timeout each: a file
/// whose open never returns (a FIFO nobody writes) times out alone, and the
/// refs after it, more than there are readers, resolve.
#[test]
fn a_hung_file_ref_times_out_alone() {
    let dir = Dir::new();
    mkfifo(&dir, "fifo");
    let mut reg = String::from("hung:\n  dev:\n    secret_ref: file://fifo\n");
    let values: Vec<String> = (0..20).map(|_| secret(32)).collect();
    for (i, v) in values.iter().enumerate() {
        dir.write(&format!("keys/k{i}"), v);
        reg += &format!("k{i}:\n  dev:\n    secret_ref: file://keys/k{i}\n");
    }
    dir.write("reg.yaml", reg);
    let started = Instant::now();
    let out = output(&mut kw(&dir, &check_json("2s")));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = json["secrets"].as_array().expect("rows");
    assert_eq!(rows.len(), 21);
    assert_eq!(rows[0]["id"], "hung");
    assert_eq!(rows[0]["status"], "error");
    assert_eq!(rows[0]["reason"], "timed out after 2s");
    for row in &rows[1..] {
        assert_eq!(row["status"], "ok", "{row}");
    }
    for v in &values {
        assert!(!stdout(&out).contains(v.as_str()));
    }
}

/// Hung `file://` reads (FIFOs nobody writes, more of them than the
/// resolver has threads) leave room for the refs read one by one in the
/// same pool: a `cred://` ref after them resolves at once instead of
/// waiting out its timeout behind them.
#[test]
fn hung_file_refs_do_not_hold_up_a_cred_ref() {
    let dir = Dir::new();
    let mut reg = String::new();
    for i in 0..10 {
        mkfifo(&dir, &format!("fifo{i}"));
        reg += &format!("f{i}:\n  dev:\n    secret_ref: file://fifo{i}\n");
    }
    reg += "c:\n  dev:\n    secret_ref: cred://c\n";
    dir.write("reg.yaml", reg);
    dir.write("creds/c", secret(32));
    let out = output(kw(&dir, &check_json("3s")).env("CREDENTIALS_DIRECTORY", dir.join("creds")));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = json["secrets"].as_array().expect("rows");
    let cred = rows.iter().find(|r| r["id"] == "c").expect("the cred row");
    assert_eq!(cred["status"], "ok", "{cred}");
    assert!(rows.iter().filter(|r| r["status"] == "error").count() == 10);
}
