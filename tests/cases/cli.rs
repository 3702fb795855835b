//! What users of op, doppler, infisical, envconsul and tini reach for
//! (issue 14, item 3): `--version`, shell completions and a man page,
//! `run --env-file`, `keywarden reload`, `run --watch`, `run
//! --signal-group`, and `scan --format json|sarif` with the error wording
//! of the other commands.

use std::process::Stdio;
use std::time::Duration;

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

#[test]
fn issue_14_3_version_completions_and_man_page() {
    let dir = Dir::new();
    let out = output(&mut kw(&dir, &["--version"]));
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("keywarden {}\n", env!("CARGO_PKG_VERSION"))
    );
    for (shell, marker) in [
        ("bash", "complete -F _keywarden"),
        ("zsh", "#compdef keywarden"),
        ("fish", "complete -c keywarden"),
    ] {
        let out = output(&mut kw(&dir, &["completions", shell]));
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        // Every subcommand and `run`'s new options are offered.
        for word in ["reload", "completions", "env-file", "signal-group"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
        if shell == "bash" && have("bash") {
            let path = dir.write("kw.bash", &script);
            let syntax = std::process::Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .expect("bash -n");
            assert!(syntax.status.success(), "{}", stderr(&syntax));
        }
    }
    let out = output(&mut kw(&dir, &["completions", "tcsh"]));
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let out = output(&mut kw(&dir, &["man"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH keywarden 1"), "{page}");
    assert!(page.contains("completions") && page.contains("reload"));
    // Hidden from the help: a packaging tool, not a user's command.
    let help = stdout(&output(&mut kw(&dir, &["--help"])));
    assert!(
        help.contains("completions") && !help.contains("\n  man "),
        "{help}"
    );
}

#[test]
fn issue_14_3_env_file_adds_variables_and_resolves_refs() {
    let dir = Dir::new();
    let token = secret(32);
    dir.write("secrets/token", &token);
    let denied = secret(24);
    dir.write(
        "app.env",
        format!(
            "# the app's settings\n\nexport PLAIN=one\nQUOTED=\"two words\" # note\nSINGLE='a $b'\n\
             TOKEN=file://secrets/token\nENCRYPTION_KEY={denied}\nOVERRIDE=from-file\n"
        ),
    );
    dir.write("later.env", "OVERRIDE=from-later\n");
    let out = output(
        kw(
            &dir,
            &[
                "run",
                "--env-file",
                "app.env",
                "--env-file",
                "later.env",
                "--",
                "sh",
                "-c",
                "printf '%s|%s|%s|%s|%s\\n' \"$PLAIN\" \"$QUOTED\" \"$SINGLE\" \"$OVERRIDE\" \"${ENCRYPTION_KEY-unset}\"; \
                 printf %s \"$TOKEN\" > token.out; echo \"$TOKEN\"",
            ],
        )
        .env("OVERRIDE", "from-env"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "one|two words|a $b|from-later|unset\n[REDACTED:TOKEN]\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(dir.read("token.out"), token, "the ref was resolved");
    assert!(!stderr(&out).contains(&token) && !stderr(&out).contains(&denied));

    // A bad line: 65, naming the file and line, never the line.
    let leaked = secret(24);
    dir.write("bad.env", format!("A=1\nexport {leaked}\n"));
    let out = output(&mut kw(
        &dir,
        &["run", "--env-file", "bad.env", "--", "true"],
    ));
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("bad.env:2: not a KEY=value line"), "{err}");
    assert!(!err.contains(&leaked), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = output(&mut kw(
        &dir,
        &["run", "--env-file", "none.env", "--", "true"],
    ));
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "keywarden: error: none.env: no such file or directory\n"
    );
}

#[test]
fn issue_14_3_reload_subcommand_reaches_the_sidecar() {
    let dir = Dir::new();
    setup(&dir);
    let new_value = secret(40);
    let admin = dir.join("custom/admin.sock");
    std::fs::create_dir_all(admin.parent().expect("parent")).expect("mkdir");
    let child = sidecar_until_go(&dir, &admin, &format!("{} get -n openai > got", bin()));
    dir.write("secrets/openai", &new_value);
    let reloaded = output(kw(&dir, &["reload", "--admin-socket"]).arg(&admin));
    // A reload that fails gives its own error: a registry gone bad is 78,
    // naming the file.
    let good = dir.read("reg.yaml");
    dir.write("reg.yaml", "openai: [unclosed\n");
    let failed = output(kw(&dir, &["reload"]).env("KEYWARDEN_ADMIN_SOCKET", &admin));
    dir.write("reg.yaml", good);
    dir.write("go", "");
    assert!(reloaded.status.success(), "{}", stderr(&reloaded));
    assert!(
        stdout(&reloaded).starts_with("reloaded the sidecar at "),
        "{}",
        stdout(&reloaded)
    );
    assert_eq!(failed.status.code(), Some(78), "{}", stderr(&failed));
    assert!(stderr(&failed).contains("reg.yaml"), "{}", stderr(&failed));
    assert_eq!(stderr(&failed).lines().count(), 1, "{}", stderr(&failed));
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        dir.read("got"),
        new_value,
        "the socket serves the new value"
    );
    // No sidecar: 69, said plainly.
    let out = output(&mut kw(&dir, &["reload"]));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no running keywarden sidecar found"),
        "{}",
        stderr(&out)
    );
}

/// `--watch 0` polled every source in a busy loop (a full core, and a
/// provider program started again and again): an interval under a
/// millisecond is a usage error, and nothing starts.
#[test]
fn watch_refuses_an_interval_of_zero() {
    let dir = Dir::new();
    setup(&dir);
    for zero in ["0", "0ms", "0.5ms"] {
        let out = output(&mut kw(&dir, &run_sh(&["--watch", zero], "touch started")));
        assert_eq!(out.status.code(), Some(64), "{zero}: {}", stderr(&out));
        assert!(stderr(&out).contains("--watch"), "{}", stderr(&out));
        assert!(!dir.join("started").exists(), "{zero}");
    }
}

#[test]
fn issue_14_3_watch_reloads_when_a_source_changes() {
    let dir = Dir::new();
    setup(&dir);
    let new_value = secret(40);
    let script = format!(
        "trap 'echo rotated >> rotated.log' HUP; echo ready > ready; \
         while [ ! -f go ]; do sleep 0.02; done; {kw} get -n openai > got; cat secrets/openai; echo",
        kw = bin()
    );
    let child = kw(
        &dir,
        &run_sh(&["--watch", "100ms", "--on-rotate", "signal:HUP"], &script),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    assert!(eventually(Duration::from_secs(10), || dir
        .join("ready")
        .exists()));
    // Rewritten in place (a new file renamed over the old one).
    dir.write("secrets/openai.new", &new_value);
    std::fs::rename(dir.join("secrets/openai.new"), dir.join("secrets/openai")).expect("rename");
    assert!(
        eventually(Duration::from_secs(10), || dir.read("rotated.log")
            == "rotated\n"),
        "--on-rotate signal:HUP was not delivered"
    );
    dir.write("go", "");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        dir.read("got"),
        new_value,
        "the socket serves the new value"
    );
    assert_eq!(
        stdout(&out),
        "[REDACTED:openai]\n",
        "the new value is masked"
    );
    let err = stderr(&out);
    assert!(!err.contains(&new_value), "{err}");
}

#[test]
fn issue_14_3_signal_group_reaches_a_grandchild() {
    for group in [false, true] {
        let dir = Dir::new();
        dir.script(
            "grandchild",
            // Stops once told to, or once the test's folder is gone
            // (never left running after the test).
            "trap 'echo grandchild >> sig.log; exit 0' TERM\necho > gc-ready\n\
             while [ ! -f stop ] && [ -f gc-ready ]; do sleep 0.02; done\n",
        );
        dir.script(
            "child",
            // The grandchild outlives keywarden and with it the relay's
            // pipes: the shell's "Terminated" on a closed stderr would kill
            // it with SIGPIPE before its trap runs.
            "./grandchild >/dev/null 2>&1 &\ntrap 'echo child >> sig.log; exit 0' TERM\n\
             while [ ! -f gc-ready ]; do sleep 0.02; done\necho > ready\nwhile :; do sleep 0.02; done\n",
        );
        let mut args = vec!["run", "--grace", "5s"];
        if group {
            args.push("--signal-group");
        }
        args.extend(["--", "./child"]);
        let mut kwp = kw_detached(&dir, &args).spawn().expect("spawn");
        assert!(eventually(Duration::from_secs(10), || dir
            .join("ready")
            .exists()));
        signal(kwp.id(), "TERM");
        let status = wait_timeout(&mut kwp, Duration::from_secs(15)).expect("keywarden exits");
        assert_eq!(status.code(), Some(0));
        let told = |who: &str| dir.read("sig.log").lines().any(|l| l == who);
        assert!(told("child"));
        if group {
            assert!(
                eventually(Duration::from_secs(5), || told("grandchild")),
                "--signal-group: the grandchild was not told"
            );
        } else {
            // Without it only the child is told.
            std::thread::sleep(Duration::from_millis(300));
            assert!(!told("grandchild"), "no --signal-group");
        }
        dir.write("stop", "");
    }
}

#[test]
fn issue_14_3_scan_formats_and_error_wording() {
    let dir = Dir::new();
    let value = setup(&dir);
    dir.write("logs/leaky.log", format!("first\nkey é {value}\n"));
    let scan = |format: &str| {
        output(&mut kw(
            &dir,
            &[
                "scan",
                "--env",
                "dev",
                "--registry",
                "reg.yaml",
                "--format",
                format,
                "logs",
            ],
        ))
    };
    let out = scan("json");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"findings": [
            {"path": "logs/leaky.log", "line": 2, "column": 8, "secret_id": "openai"}
        ]})
    );
    let out = scan("sarif");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains(&value));
    let v: serde_json::Value = serde_json::from_str(&text).expect("sarif");
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "keywarden");
    assert_eq!(run["tool"]["driver"]["rules"][0]["id"], "secret-leak");
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "secret-leak");
    assert!(result["message"]["text"]
        .as_str()
        .is_some_and(|m| m.contains("'openai'")));
    let location = &result["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "logs/leaky.log");
    assert_eq!(location["region"]["startLine"], 2);
    assert_eq!(
        location["region"]["startColumn"], 7,
        "code points: é is one"
    );
    // Nothing found: an empty result list, exit 0.
    dir.write("clean/a.txt", "nothing\n");
    let out = output(&mut kw(
        &dir,
        &[
            "scan",
            "--registry",
            "reg.yaml",
            "--format",
            "sarif",
            "clean",
        ],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A missing path: one line in the others' wording, the usage code.
    let out = output(&mut kw(
        &dir,
        &["scan", "--registry", "reg.yaml", "nothere"],
    ));
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(
        stderr(&out),
        "keywarden: error: nothere: no such file or directory\n"
    );
}
