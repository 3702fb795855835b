//! The socket API end to end through `keywarden run`: the child asks for
//! secrets with its token, the operator revokes and reloads through the
//! admin socket, and the audit log records it all without a value.

use std::process::Command;
use std::time::Duration;

use base64::Engine;

use crate::util::*;

fn setup(dir: &Dir) -> String {
    let value = secret(40);
    dir.write("secrets/openai", &value);
    dir.write("secrets/slack", secret(40));
    dir.write(
        "reg.yaml",
        "openai:\n  dev:\n    secret_ref: file://secrets/openai\n    scope: [pool]\n    env: OPENAI_API_KEY\nslack:\n  dev:\n    secret_ref: file://secrets/slack\n    scope: [\"slack:bot\"]\n",
    );
    value
}

#[test]
fn the_child_fetches_in_scope_secrets_with_its_token() {
    need("curl");
    let dir = Dir::new();
    setup(&dir);
    let script = format!(
        "[ \"$({kw} get openai)\" = \"$(cat secrets/openai)\" ] && echo get-ok; \
         {kw} get slack; echo slack-rc=$?; \
         curl -s -o /dev/null -w '%{{http_code}}\\n' --unix-socket \"$KEYWARDEN_SOCKET\" -H \"Authorization: Bearer $KEYWARDEN_TOKEN\" http://kw/v1/secrets/openai; \
         curl -s -o /dev/null -w '%{{http_code}}\\n' --unix-socket \"$KEYWARDEN_SOCKET\" -H 'Authorization: Bearer wrong' http://kw/v1/secrets/openai; \
         curl -s --unix-socket \"$KEYWARDEN_SOCKET\" http://kw/v1/health; echo; \
         stat -c '%a' \"$KEYWARDEN_SOCKET\" \"$(dirname \"$KEYWARDEN_SOCKET\")\"; echo \"$KEYWARDEN_SOCKET\" > socket.path",
        kw = bin()
    );
    let out = output(&mut kw(&dir, &run_sh(&[], &script)));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "get-ok\nslack-rc=77\n200\n401\n{\"status\":\"ok\"}\n600\n700\n",
        "{}",
        stderr(&out)
    );
    let socket = dir.read("socket.path");
    assert!(
        !std::path::Path::new(socket.trim()).exists(),
        "socket left behind"
    );
}

/// A TTL longer than the clock can count (the registry takes up to 2^63 −
/// 1 seconds) used to panic the socket API's thread on the first sweep or
/// read: the child's next request found no sidecar (69).
#[test]
fn a_ttl_past_what_the_clock_counts_is_served_and_never_expires() {
    let dir = Dir::new();
    dir.write("secrets/a", secret(40));
    dir.write(
        "reg.yaml",
        "a:\n  dev:\n    secret_ref: file://secrets/a\n    scope: [pool]\n    max_ttl_seconds: 9223372036854775807\n",
    );
    let script = format!(
        "for i in 1 2 3; do [ \"$({kw} get a)\" = \"$(cat secrets/a)\" ] && echo get-ok; sleep 0.6; done",
        kw = bin()
    );
    let out = output(&mut kw(&dir, &run_sh(&[], &script)));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "get-ok\nget-ok\nget-ok\n", "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn no_socket_means_no_socket_variables() {
    let dir = Dir::new();
    let out = output(&mut kw(
        &dir,
        &[
            "run",
            "--no-socket",
            "--",
            "sh",
            "-c",
            "echo ${KEYWARDEN_SOCKET:-none} ${KEYWARDEN_TOKEN:-none}",
        ],
    ));
    assert_eq!(stdout(&out), "none none\n");
}

#[test]
fn the_childs_token_is_masked_in_its_output() {
    let dir = Dir::new();
    let out = output(&mut kw(
        &dir,
        &["run", "--", "sh", "-c", "echo \"token=$KEYWARDEN_TOKEN\""],
    ));
    assert_eq!(stdout(&out), "token=[REDACTED:KEYWARDEN_TOKEN]\n");
}

#[test]
fn revocation_is_immediate_and_survives_a_restart() {
    let dir = Dir::new();
    let value = setup(&dir);
    let admin = dir.join("admin.sock");
    let child = sidecar_until_go(
        &dir,
        &admin,
        &format!("{} get openai >/dev/null 2>&1; echo rc=$?", bin()),
    );
    let out = output(
        kw(
            &dir,
            &[
                "revoke",
                "openai",
                "--reason",
                "leaked in a ticket",
                "--registry",
                "reg.yaml",
                "--env",
                "dev",
            ],
        )
        .env("KEYWARDEN_ADMIN_SOCKET", &admin),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    dir.write("go", "");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(stdout(&out), "rc=77\n", "410 Gone maps to 77");
    let list = dir.read("revocations.json");
    assert!(
        list.contains("openai") && list.contains("file://secrets/openai"),
        "{list}"
    );
    assert!(!list.contains(&value));

    // The next run neither resolves nor injects it.
    let out = output(&mut kw(
        &dir,
        &run_sh(&[], "echo ${OPENAI_API_KEY:-absent}"),
    ));
    assert_eq!(stdout(&out), "absent\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains("secret 'openai' is revoked"),
        "{}",
        stderr(&out)
    );

    // Until its ref changes.
    dir.write("secrets/openai2", secret(40));
    let reg = dir
        .read("reg.yaml")
        .replace("file://secrets/openai", "file://secrets/openai2");
    dir.write("reg.yaml", reg);
    let out = output(&mut kw(&dir, &run_sh(&[], "echo ${#OPENAI_API_KEY}")));
    assert_eq!(stdout(&out), "40\n", "{}", stderr(&out));
}

#[test]
fn the_reload_signal_re_resolves_changed_values() {
    let dir = Dir::new();
    setup(&dir);
    let new_value = secret(40);
    dir.write("new", &new_value);
    let script = format!(
        "echo ready > ready; while [ ! -f go ]; do sleep 0.02; done; [ \"$({kw} get openai)\" = \"$(cat new)\" ] && echo reloaded",
        kw = bin()
    );
    let child = kw(&dir, &run_sh(&["--reload-signal", "HUP"], &script))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(eventually(Duration::from_secs(10), || dir
        .join("ready")
        .exists()));
    std::fs::copy(dir.join("new"), dir.join("secrets/openai")).expect("rotate");
    signal(child.id(), "HUP");
    std::thread::sleep(Duration::from_millis(300));
    dir.write("go", "");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(stdout(&out), "reloaded\n", "{}", stderr(&out));
}

#[test]
fn the_audit_log_of_a_full_run_has_every_event_and_no_secret() {
    let dir = Dir::new();
    let value = setup(&dir);
    let audit = dir.join("audit.jsonl");
    let script = format!(
        "{kw} get openai >/dev/null; {kw} get slack 2>/dev/null; KEYWARDEN_TOKEN=wrong {kw} get openai 2>/dev/null; echo $OPENAI_API_KEY",
        kw = bin()
    );
    let out = output(
        kw(
            &dir,
            &["run", "--env", "dev", "--registry", "reg.yaml", "--audit"],
        )
        .arg(&audit)
        .args(["--", "sh", "-c", &script]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "[REDACTED:openai]\n");
    let text = std::fs::read_to_string(&audit).expect("audit log");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&audit).expect("meta").permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for want in [
        "run_start",
        "resolve",
        "inject",
        "child_start",
        "api_call",
        "auth_failure",
        "child_exit",
        "redaction_counts",
        "run_stop",
    ] {
        assert!(kinds.contains(&want), "{want} missing: {kinds:?}");
    }
    assert!(events.iter().all(|e| e["ts"].is_string()));
    let api_call = events
        .iter()
        .find(|e| e["event"] == "api_call")
        .expect("api_call");
    assert!(
        api_call["actor"]["pid"].is_number() && api_call["actor"]["uid"].is_number(),
        "{api_call}"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    for form in [value.clone(), b64.encode(&value), hex] {
        assert!(!text.contains(&form), "the audit log holds a secret");
    }
}

#[test]
fn inventory_shows_metadata_with_store_dates_and_no_value() {
    let dir = Dir::new();
    let value = setup(&dir);
    let key = store_key();
    let store = dir.join("store.kw");
    let kv_value = secret(40);
    for (args, input) in [
        (&["store", "init"][..], ""),
        (
            &["store", "set", "kv://billing/dev/key"][..],
            kv_value.as_str(),
        ),
    ] {
        let out = feed(
            kw(&dir, args)
                .env("ENCRYPTION_KEY", &key)
                .env("KEYWARDEN_STORE", &store),
            input.as_bytes(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let reg = format!(
        "{}billing_master:\n  dev:\n    secret_ref: kv://billing/dev/key\n    scope: [finance]\n",
        dir.read("reg.yaml")
    );
    dir.write("reg.yaml", reg);
    // A file's rotation date is its mtime, as the read saw it.
    let touched = std::process::Command::new("touch")
        .args(["-d", "@981173106"])
        .arg(dir.join("secrets/openai"))
        .status()
        .expect("touch");
    assert!(touched.success());
    let admin = dir.join("admin.sock");
    let child = kw(
        &dir,
        &[
            "run",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--admin-socket",
        ],
    )
    .arg(&admin)
    .args([
        "--",
        "sh",
        "-c",
        "echo ready > ready; while [ ! -f go ]; do sleep 0.02; done",
    ])
    .env("ENCRYPTION_KEY", &key)
    .env("KEYWARDEN_STORE", &store)
    .spawn()
    .expect("spawn");
    assert!(eventually(Duration::from_secs(10), || dir
        .join("ready")
        .exists()));
    let out =
        output(kw(&dir, &["inventory", "--format", "json"]).env("KEYWARDEN_ADMIN_SOCKET", &admin));
    dir.write("go", "");
    let _ = child.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains(&value) && !text.contains(&kv_value),
        "inventory shows a value"
    );
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let items = json
        .as_array()
        .or_else(|| json["secrets"].as_array())
        .expect("a list");
    let billing = items
        .iter()
        .find(|i| i["id"] == "billing_master")
        .expect("billing_master");
    assert_eq!(billing["vendor"], "billing");
    assert_eq!(billing["ref"], "kv://billing/dev/key");
    assert!(
        billing["created"].is_string() && billing["rotated"].is_string(),
        "{billing}"
    );
    let openai = items.iter().find(|i| i["id"] == "openai").expect("openai");
    assert!(
        openai["rotated"].is_string() && openai["resolved_at"].is_string(),
        "{openai}"
    );
    assert_eq!(openai["rotated"], "2001-02-03T04:05:06Z", "{openai}");
}

#[test]
fn after_a_reload_new_values_are_masked_and_on_rotate_signals_the_child() {
    let dir = Dir::new();
    setup(&dir);
    let new_value = secret(40);
    let script = format!(
        "trap 'echo rotated' USR1; echo ready > ready; while [ ! -f go ]; do sleep 0.02; done; {kw} get openai",
        kw = bin()
    );
    let child = kw(
        &dir,
        &run_sh(
            &["--reload-signal", "HUP", "--on-rotate", "signal:USR1"],
            &script,
        ),
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("spawn");
    assert!(eventually(Duration::from_secs(10), || dir
        .join("ready")
        .exists()));
    dir.write("secrets/openai", &new_value);
    signal(child.id(), "HUP");
    std::thread::sleep(Duration::from_millis(300));
    dir.write("go", "");
    let out = child.wait_with_output().expect("wait");
    let text = stdout(&out);
    assert!(
        !text.contains(&new_value),
        "the rotated value leaked: {text}"
    );
    assert_eq!(text, "rotated\n[REDACTED:openai]\n", "{}", stderr(&out));
}

/// `--on-rotate restart`: a reload that changes an injected value stops
/// the child (SIGTERM; SIGKILL after `--grace` when it ignores it) and
/// starts it again with the new value; stopping keywarden does not restart.
#[test]
fn on_rotate_restart_starts_the_child_again_with_the_new_value() {
    for ignores_term in [false, true] {
        let dir = Dir::new();
        let first = setup(&dir);
        let second = secret(40);
        // Each start appends its value; the first one may ignore SIGTERM.
        let trap = if ignores_term {
            "[ -f started ] || trap '' TERM"
        } else {
            "trap 'exit 0' TERM"
        };
        let script = format!(
            "{trap}; touch started; printf '%s\\n' \"$OPENAI_API_KEY\" >> seen; \
             while :; do sleep 0.05; done"
        );
        let mut child = kw(
            &dir,
            &run_sh(
                &[
                    "--reload-signal",
                    "HUP",
                    "-v",
                    "--on-rotate",
                    "restart",
                    "--grace",
                    "1s",
                    "--audit",
                    "audit.jsonl",
                ],
                &script,
            ),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
        assert!(eventually(Duration::from_secs(10), || dir
            .read("seen")
            .lines()
            .count()
            == 1));
        // A reload that changes nothing does not restart.
        signal(child.id(), "HUP");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(dir.read("seen").lines().count(), 1);
        dir.write("secrets/openai", &second);
        let asked = std::time::Instant::now();
        signal(child.id(), "HUP");
        assert!(eventually(Duration::from_secs(10), || dir
            .read("seen")
            .lines()
            .count()
            == 2));
        let took = asked.elapsed();
        if ignores_term {
            assert!(took >= Duration::from_millis(900), "no grace: {took:?}");
        }
        assert_eq!(dir.read("seen"), format!("{first}\n{second}\n"));
        // Stopping keywarden stops the child and does not restart it.
        signal(child.id(), "TERM");
        let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("keywarden exits");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(dir.read("seen").lines().count(), 2);
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
            .expect("stderr");
        assert!(err.contains("restarting the command"), "{err}");
        assert!(!err.contains(&second) && !err.contains(&first), "{err}");
        let audit = dir.read("audit.jsonl");
        assert_eq!(
            audit.matches("\"event\":\"child_start\"").count(),
            2,
            "{audit}"
        );
        assert_eq!(
            audit.matches("\"event\":\"child_exit\"").count(),
            2,
            "{audit}"
        );
        let _ = status;
    }
}

/// With both sockets in their default place, the admin socket is not in
/// the child's socket folder and `inventory` finds it on its own, the child
/// gets keywarden's umask unchanged (the sockets are made under a
/// temporary one), and the folder is gone after the run.
#[test]
fn default_sockets_are_found_and_leave_the_umask_alone() {
    let dir = Dir::new();
    setup(&dir);
    let script = "umask > umask.txt; echo \"$KEYWARDEN_SOCKET\" > socket.path; \
                  while [ ! -f go ]; do sleep 0.02; done";
    let mut child = Command::new("sh");
    child
        .arg("-c")
        .arg("umask 027; exec \"$0\" \"$@\"")
        .arg(bin())
        .args(run_sh(&[], script));
    let env_of = kw(&dir, &[]);
    for (k, v) in env_of.get_envs() {
        match v {
            Some(v) => child.env(k, v),
            None => child.env_remove(k),
        };
    }
    let mut child = child
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(eventually(Duration::from_secs(10), || dir
        .join("socket.path")
        .exists()
        && !dir.read("socket.path").is_empty()));
    let socket = std::path::PathBuf::from(dir.read("socket.path").trim());
    let folder = socket.parent().expect("folder").to_path_buf();
    let listed: Vec<_> = std::fs::read_dir(&folder)
        .expect("socket folder")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        listed,
        ["api.sock"],
        "the child's folder holds its socket only"
    );
    let out = output(&mut kw(&dir, &["inventory", "--format", "json"]));
    dir.write("go", "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"openai\""), "{}", stdout(&out));
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits");
    assert!(status.success());
    assert_eq!(dir.read("umask.txt").trim(), "0027");
    assert!(!folder.exists(), "socket folder left behind");
}

/// A value resolved again after its TTL (here: rotated at the source in
/// between) is masked in the child's output like the first one: the relay
/// learns it before the socket hands it out.
#[test]
fn a_value_resolved_again_after_its_ttl_is_masked_too() {
    need("curl");
    let dir = Dir::new();
    dir.write("secrets/openai", secret(40));
    dir.write(
        "reg.yaml",
        "openai:\n  dev:\n    secret_ref: file://secrets/openai\n    scope: [pool]\n    max_ttl_seconds: 1\n",
    );
    let fetch = "curl -s --unix-socket \"$KEYWARDEN_SOCKET\" -H \"Authorization: Bearer $KEYWARDEN_TOKEN\" http://kw/v1/secrets/openai";
    let script = format!(
        "{fetch} > /dev/null; \
         head -c 30 /dev/urandom | base64 | tr -d '/+=\\n' > secrets/next; \
         mv secrets/next secrets/openai; sleep 1.5; {fetch}; echo"
    );
    let out = output(&mut kw(&dir, &run_sh(&[], &script)));
    assert!(out.status.success(), "{}", stderr(&out));
    let rotated = dir.read("secrets/openai");
    assert!(rotated.len() >= 30, "{rotated}");
    let shown = stdout(&out);
    assert!(
        !shown.contains(&rotated),
        "the rotated value leaked: {shown}"
    );
    assert!(shown.contains("[REDACTED:openai]"), "{shown}");
}

/// With no sidecar running, `inventory` lists the registry's secrets for
/// the env (SPEC's fields: id, ref, vendor, scope, created, rotated,
/// policy) without resolving anything.
#[test]
fn inventory_without_a_sidecar_reads_the_registry() {
    let dir = Dir::new();
    let value = setup(&dir);
    let out = output(&mut kw(
        &dir,
        &["inventory", "--env", "dev", "--registry", "reg.yaml"],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header = text.lines().next().unwrap_or_default();
    for column in [
        "ID", "REF", "VENDOR", "SCOPE", "CREATED", "ROTATED", "POLICY",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("openai") && l.contains("file://secrets/openai")),
        "{text}"
    );
    assert!(!text.contains(&value));
    let out = output(&mut kw(
        &dir,
        &[
            "inventory",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--format",
            "json",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let secrets = v["secrets"].as_array().expect("secrets");
    assert_eq!(secrets.len(), 2, "{v}");
    let openai = secrets
        .iter()
        .find(|s| s["id"] == "openai")
        .expect("openai");
    assert_eq!(openai["ref"], "file://secrets/openai");
    assert_eq!(openai["scope"], serde_json::json!(["pool"]));
    assert_eq!(openai["cached"], false);
    assert!(openai["rotated"].is_string(), "a file's mtime: {openai}");
    assert!(openai.get("created").is_some() && openai["policy"].is_object());
    assert!(!stdout(&out).contains(&value));
}

/// With two sidecars running, `revoke` without `--admin-socket` revokes in
/// both (a revocation is meant to hold everywhere).
#[test]
fn revoke_reaches_every_running_sidecar() {
    let dir = Dir::new();
    setup(&dir);
    let script = |n: u32| {
        format!(
            "echo ready > ready{n}; while [ ! -f go ]; do sleep 0.02; done; {kw} get openai >/dev/null 2>&1; echo rc=$?",
            kw = bin()
        )
    };
    let (s1, s2) = (script(1), script(2));
    let start = |s: &str| {
        kw(&dir, &run_sh(&[], s))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (start(&s1), start(&s2));
    assert!(eventually(Duration::from_secs(10), || dir
        .join("ready1")
        .exists()
        && dir.join("ready2").exists()));
    let out = output(&mut kw(
        &dir,
        &["revoke", "openai", "--registry", "reg.yaml", "--env", "dev"],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out)
            .matches("revoked 'openai' in the sidecar")
            .count(),
        2,
        "{}",
        stdout(&out)
    );
    // `approve` asks each for the challenge before reading a code: one
    // that none holds is bad input, and no code is read.
    let out = output(&mut kw(&dir, &["approve", "0123456789abcdef"]));
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no single running sidecar holds it"),
        "{}",
        stderr(&out)
    );
    dir.write("go", "");
    for child in [a, b] {
        let out = child.wait_with_output().expect("wait");
        assert_eq!(stdout(&out), "rc=77\n");
    }
}
