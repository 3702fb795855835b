//! `vault://` against a real OpenBao dev server on loopback.

use std::time::{Duration, Instant};

use super::harness::*;
use keywarden::error::ErrorKind;
use keywarden::secret::providers::VaultOptions;

#[test]
fn fields_versions_only_field_and_not_found() {
    let Some(bao) = Bao::start("fields_versions_only_field_and_not_found") else {
        return;
    };
    let (user, old, new, only) = (rand_hex(8), rand_hex(12), rand_hex(12), rand_hex(12));
    bao.cli(
        &[
            "kv",
            "put",
            "-mount=secret",
            "app/db",
            &format!("user={user}"),
            &format!("password={old}"),
        ],
        None,
    );
    bao.cli(
        &[
            "kv",
            "put",
            "-mount=secret",
            "app/db",
            &format!("user={user}"),
            &format!("password={new}"),
        ],
        None,
    );
    bao.kv_put("app/single", "key", &only);
    let hidden = [bao.token.as_str(), &user, &old, &new, &only];
    let home = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[
        ("VAULT_ADDR", &bao.addr),
        ("VAULT_TOKEN", &bao.token),
        ("HOME", home.path().to_str().expect("utf8")),
    ]);
    let asked_before = bao.requests_for("sys/internal/ui/mounts/secret");
    let rt = runtime();
    let (resolver, leases) = resolver(env, fast());
    let refs = [
        "vault://secret/app/db#password",
        "vault://secret/app/db?version=1#password",
        "vault://secret/app/db?version=2#user",
        "vault://secret/app/single",
        "vault://secret/app/db",
        "vault://secret/app/db#nope",
        "vault://secret/app/missing#x",
        "vault://secret/app/db?version=9#password",
    ];
    let mut out: Vec<_> = rt
        .block_on(resolver.resolve_all(refs.iter().map(|r| request(r)).collect()))
        .into_iter()
        .map(|o| o.result)
        .collect();
    let mut next = || out.remove(0);
    assert_eq!(value(next()), new, "latest version");
    assert_eq!(value(next()), old, "version pin");
    assert_eq!(value(next()), user);
    assert_eq!(value(next()), only, "the only field is the default");
    let e = err_without(next(), &hidden);
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(e.kind.exit_code(), 78);
    assert!(
        e.reason.contains("password, user"),
        "lists the key names: {e}"
    );
    let e = err_without(next(), &hidden);
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.reason.contains("no field 'nope'"), "{e}");
    let e = err_without(next(), &hidden);
    assert_eq!(e.kind.exit_code(), 69);
    assert!(e.reason.contains("not found"), "{e}");
    assert_eq!(
        bao.requests_for("secret/data/app/missing"),
        1,
        "a 404 is never retried"
    );
    assert_eq!(
        bao.requests_for("sys/internal/ui/mounts/secret") - asked_before,
        1,
        "the mount is asked once"
    );
    let e = err_without(next(), &hidden);
    assert_eq!(e.kind.exit_code(), 69, "{e}");

    let book = leases.lock().expect("leases");
    let lease = &book["vault://secret/app/db?version=1#password"];
    assert_eq!(lease.version, Some(1));
    assert_eq!(lease.duration, Duration::ZERO, "KV v2 has no lease");
    assert_eq!(book["vault://secret/app/db#password"].version, Some(2));
}

#[test]
fn policy_excluding_the_path_is_77_and_not_retried() {
    let Some(bao) = Bao::start("policy_excluding_the_path_is_77_and_not_retried") else {
        return;
    };
    let secret = rand_hex(12);
    bao.kv_put("team-a/api", "key", &secret);
    bao.kv_put("team-b/api", "key", &secret);
    bao.cli(
        &["policy", "write", "team-b-only", "-"],
        Some("path \"secret/data/team-b/*\" { capabilities = [\"read\"] }\n"),
    );
    let limited = bao.cli(
        &["token", "create", "-policy=team-b-only", "-field=token"],
        None,
    );
    let proxy = Proxy::start(bao.socket(), 0);
    let env = env_of(&[("VAULT_ADDR", &proxy.addr), ("VAULT_TOKEN", &limited)]);
    let mut out = resolve_all(env, fast(), &["vault://secret/team-a/api#key"]);
    let e = err_without(out.remove(0), &[&limited, &bao.token, &secret]);
    assert_eq!(e.kind, ErrorKind::Permission);
    assert_eq!(e.kind.exit_code(), 77);
    assert!(e.reason.contains("permission denied by the server"), "{e}");
    assert_eq!(proxy.count(), 1);
    // The server's audit log: exactly one request for the path.
    assert_eq!(
        bao.requests_for("secret/data/team-a/api"),
        1,
        "a 403 is never retried"
    );
    // The same token reads what its policy allows.
    let env = env_of(&[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", &limited)]);
    assert_eq!(
        value(resolve_all(env, fast(), &["vault://secret/team-b/api#key"]).remove(0)),
        secret
    );
}

#[test]
fn transient_503_is_retried_and_connections_are_reused() {
    let Some(bao) = Bao::start("transient_503_is_retried_and_connections_are_reused") else {
        return;
    };
    let secret = rand_hex(12);
    bao.kv_put("svc", "key", &secret);
    // First connection answers 503, then the proxy forwards.
    let proxy = Proxy::start(bao.socket(), 1);
    let env = env_of(&[("VAULT_ADDR", &proxy.addr), ("VAULT_TOKEN", &bao.token)]);
    let rt = runtime();
    let (resolver, _) = resolver(env, fast());
    let started = Instant::now();
    for _ in 0..5 {
        let v = rt.block_on(resolver.resolve(&request("vault://secret/svc#key")));
        assert_eq!(value(v), secret);
    }
    eprintln!(
        "5 sequential resolves (one retried) in {:?}",
        started.elapsed()
    );
    assert_eq!(
        proxy.count(),
        2,
        "one 503 connection, then one reused connection"
    );

    // 100 refs at once: all resolve, over at most max_in_flight (8)
    // connections, the pooled one included.
    let refs: Vec<String> = (0..100)
        .map(|_| "vault://secret/svc#key".to_string())
        .collect();
    let before = proxy.count();
    let started = Instant::now();
    let out = rt.block_on(resolver.resolve_all(refs.iter().map(|r| request(r)).collect()));
    let took = started.elapsed();
    assert!(out.into_iter().all(|o| o.result.is_ok()));
    let opened = proxy.count() - before;
    eprintln!("100 concurrent refs: {took:?}, {opened} new connections");
    assert!(opened <= 8, "{opened}");
}

#[test]
fn retries_give_up_on_persistent_5xx() {
    let Some(bao) = Bao::start("retries_give_up_on_persistent_5xx") else {
        return;
    };
    let proxy = Proxy::start(bao.socket(), 100);
    let env = env_of(&[("VAULT_ADDR", &proxy.addr), ("VAULT_TOKEN", &bao.token)]);
    let e = err_without(
        resolve_all(env, fast(), &["vault://secret/x#k"]).remove(0),
        &[&bao.token],
    );
    assert_eq!(e.kind.exit_code(), 69);
    assert!(
        e.reason.contains("503") && e.reason.contains("3 attempts"),
        "{e}"
    );
    assert_eq!(proxy.count(), 3);
}

#[test]
fn server_coming_up_late_is_reached_by_a_retry() {
    let Some(bao) = Bao::start("server_coming_up_late_is_reached_by_a_retry") else {
        return;
    };
    let secret = rand_hex(12);
    bao.kv_put("late", "key", &secret);
    // Nothing listens on `port` for the first 400 ms: the first attempt is
    // refused, a later one gets through.
    let port = free_port();
    let proxy = Proxy::start_late(port, bao.socket(), Duration::from_millis(400));
    let env = env_of(&[("VAULT_ADDR", &proxy.addr), ("VAULT_TOKEN", &bao.token)]);
    let options = VaultOptions {
        request_timeout: Duration::from_secs(2),
        attempts: 5,
        backoff: Duration::from_millis(150),
        ..VaultOptions::default()
    };
    let started = Instant::now();
    assert_eq!(
        value(resolve_all(env, options, &["vault://secret/late#key"]).remove(0)),
        secret
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(proxy.count(), 1);
}

#[test]
fn server_down_is_69_within_the_timeout() {
    // A closed port: refused at once, three attempts with backoff.
    let port = free_port();
    let token = rand_hex(16);
    let env = env_of(&[
        ("VAULT_ADDR", &format!("http://127.0.0.1:{port}")),
        ("VAULT_TOKEN", &token),
    ]);
    let started = Instant::now();
    let e = err_without(
        resolve_all(env, fast(), &["vault://secret/a#b"]).remove(0),
        &[&token],
    );
    assert_eq!(e.kind.exit_code(), 69);
    assert!(e.reason.contains("cannot reach"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A server that accepts and never answers: each attempt times out.
    let hole = black_hole();
    let env = env_of(&[("VAULT_ADDR", &hole), ("VAULT_TOKEN", &token)]);
    let options = VaultOptions {
        request_timeout: Duration::from_millis(300),
        attempts: 2,
        backoff: Duration::from_millis(50),
        ..VaultOptions::default()
    };
    let started = Instant::now();
    let e = err_without(
        resolve_all(env, options, &["vault://secret/a#b"]).remove(0),
        &[&token],
    );
    let took = started.elapsed();
    assert_eq!(e.kind.exit_code(), 69);
    assert!(e.reason.contains("no answer"), "{e}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn token_sources_and_config_errors() {
    let Some(bao) = Bao::start("token_sources_and_config_errors") else {
        return;
    };
    let secret = rand_hex(12);
    bao.kv_put("t", "key", &secret);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{}\n", bao.token)).expect("write");
    let r = "vault://secret/t#key";
    let env = env_of(&[
        ("VAULT_ADDR", &bao.addr),
        ("VAULT_TOKEN_FILE", file.to_str().expect("utf8")),
    ]);
    assert_eq!(
        value(resolve_all(env, fast(), &[r]).remove(0)),
        secret,
        "VAULT_TOKEN_FILE"
    );
    std::fs::write(dir.path().join(".vault-token"), &bao.token).expect("write");
    let env = env_of(&[
        ("VAULT_ADDR", &bao.addr),
        ("HOME", dir.path().to_str().expect("utf8")),
    ]);
    assert_eq!(
        value(resolve_all(env, fast(), &[r]).remove(0)),
        secret,
        "~/.vault-token"
    );

    let empty = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[
        ("VAULT_ADDR", &bao.addr),
        ("HOME", empty.path().to_str().expect("utf8")),
    ]);
    let e = err_without(resolve_all(env, fast(), &[r]).remove(0), &[&bao.token]);
    assert_eq!(e.kind.exit_code(), 78, "{e}");

    let wrong = rand_hex(16);
    let env = env_of(&[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", &wrong)]);
    let e = err_without(resolve_all(env, fast(), &[r]).remove(0), &[&wrong, &secret]);
    assert_eq!(e.kind.exit_code(), 77, "{e}");

    let env = env_of(&[("VAULT_TOKEN", &wrong)]);
    let e = err_without(resolve_all(env, fast(), &[r]).remove(0), &[&wrong]);
    assert_eq!(e.kind.exit_code(), 78);
}

#[test]
fn approle_with_secret_id_from_a_cred_ref() {
    let Some(bao) = Bao::start("approle_with_secret_id_from_a_cred_ref") else {
        return;
    };
    let secret = rand_hex(12);
    bao.kv_put("ci/deploy", "key", &secret);
    bao.cli(
        &["policy", "write", "ci", "-"],
        Some("path \"secret/data/ci/*\" { capabilities = [\"read\"] }\n"),
    );
    let (role_id, secret_id) = bao.approle("ci", &["token_policies=ci", "token_ttl=10m"]);
    let creds = tempfile::tempdir().expect("tempdir");
    std::fs::write(creds.path().join("approle-secret-id"), &secret_id).expect("write");
    let home = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[
        ("VAULT_ADDR", &bao.addr),
        ("VAULT_ROLE_ID", &role_id),
        ("VAULT_SECRET_ID", "cred://approle-secret-id"),
        (
            "CREDENTIALS_DIRECTORY",
            creds.path().to_str().expect("utf8"),
        ),
        ("HOME", home.path().to_str().expect("utf8")),
    ]);
    let proxy = Proxy::start(bao.socket(), 0);
    let mut via_proxy = env.clone();
    via_proxy.insert("VAULT_ADDR".into(), proxy.addr.clone().into());
    let rt = runtime();
    let (resolver, _) = resolver(via_proxy, fast());
    for _ in 0..3 {
        let v = rt.block_on(resolver.resolve(&request("vault://secret/ci/deploy#key")));
        assert_eq!(value(v), secret);
    }
    // One login, then the KV reads, over one connection.
    assert_eq!(proxy.count(), 1);
    // Outside the role's policy: 77.
    let e = err_without(
        rt.block_on(resolver.resolve(&request("vault://secret/other#key"))),
        &[&secret_id, &secret],
    );
    assert_eq!(e.kind.exit_code(), 77, "{e}");

    // A wrong secret id: the login is refused (77), nothing shown.
    let wrong = rand_hex(16);
    let mut env2 = env.clone();
    env2.insert("VAULT_SECRET_ID".into(), wrong.clone().into());
    let e = err_without(
        resolve_all(env2, fast(), &["vault://secret/ci/deploy#key"]).remove(0),
        &[&wrong, &role_id],
    );
    assert_eq!(e.kind.exit_code(), 77, "{e}");
    assert!(e.reason.contains("AppRole login refused"), "{e}");
}

#[test]
fn kv_v1_mount_is_detected() {
    let Some(bao) = Bao::start("kv_v1_mount_is_detected") else {
        return;
    };
    let secret = rand_hex(12);
    bao.cli(
        &["secrets", "enable", "-path=legacy", "-version=1", "kv"],
        None,
    );
    bao.cli(
        &[
            "kv",
            "put",
            "-mount=legacy",
            "app",
            &format!("key={secret}"),
        ],
        None,
    );
    let env = env_of(&[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", &bao.token)]);
    let rt = runtime();
    let (resolver, leases) = resolver(env, fast());
    let out = rt.block_on(
        resolver.resolve_all(
            [
                "vault://legacy/app#key",
                "vault://legacy/app",
                "vault://legacy/app?version=1#key",
                "vault://legacy/none#key",
            ]
            .iter()
            .map(|r| request(r))
            .collect(),
        ),
    );
    let mut out: Vec<_> = out.into_iter().map(|o| o.result).collect();
    assert_eq!(value(out.remove(0)), secret);
    assert_eq!(value(out.remove(0)), secret, "the only field");
    let e = err_without(out.remove(0), &[&secret, &bao.token]);
    assert_eq!(e.kind.exit_code(), 78);
    assert!(e.reason.contains("KV v1"), "{e}");
    let e = err_without(out.remove(0), &[&secret, &bao.token]);
    assert_eq!(e.kind.exit_code(), 69);
    // KV v1 answers carry a lease (the mount's default TTL).
    let book = leases.lock().expect("leases");
    let lease = &book["vault://legacy/app#key"];
    assert!(
        lease.duration > Duration::ZERO && lease.version.is_none(),
        "{lease:?}"
    );
}

#[test]
fn namespace_header_selects_the_namespace() {
    let Some(bao) = Bao::start("namespace_header_selects_the_namespace") else {
        return;
    };
    let secret = rand_hex(12);
    bao.cli(&["namespace", "create", "team"], None);
    bao.cli(
        &[
            "secrets",
            "enable",
            "-ns=team",
            "-path=kv",
            "-version=2",
            "kv",
        ],
        None,
    );
    bao.cli(
        &[
            "kv",
            "put",
            "-ns=team",
            "-mount=kv",
            "app",
            &format!("key={secret}"),
        ],
        None,
    );
    let env = env_of(&[
        ("VAULT_ADDR", &bao.addr),
        ("VAULT_TOKEN", &bao.token),
        ("VAULT_NAMESPACE", "team"),
    ]);
    assert_eq!(
        value(resolve_all(env, fast(), &["vault://kv/app#key"]).remove(0)),
        secret
    );
    let env = env_of(&[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", &bao.token)]);
    let e = err_without(
        resolve_all(env, fast(), &["vault://kv/app#key"]).remove(0),
        &[&secret, &bao.token],
    );
    assert_eq!(e.kind.exit_code(), 69, "{e}");
}

#[test]
fn https_with_vault_cacert() {
    let Some(bao) = Bao::start_tls("https_with_vault_cacert") else {
        return;
    };
    let secret = rand_hex(12);
    bao.kv_put("tls", "key", &secret);
    let ca = bao.ca_file().display().to_string();
    let r = "vault://secret/tls#key";
    let env = env_of(&[
        ("VAULT_ADDR", &bao.addr),
        ("VAULT_TOKEN", &bao.token),
        ("VAULT_CACERT", &ca),
    ]);
    assert_eq!(
        value(resolve_all(env, fast(), &[r]).remove(0)),
        secret,
        "VAULT_CACERT"
    );
    let capath = bao.dir.path().join("capath");
    std::fs::create_dir(&capath).expect("mkdir");
    std::fs::copy(bao.ca_file(), capath.join("ca.pem")).expect("copy");
    let env = env_of(&[
        ("VAULT_ADDR", &bao.addr),
        ("VAULT_TOKEN", &bao.token),
        ("VAULT_CAPATH", capath.to_str().expect("utf8")),
    ]);
    assert_eq!(
        value(resolve_all(env, fast(), &[r]).remove(0)),
        secret,
        "VAULT_CAPATH"
    );

    // Without the CA: the system roots do not know it; not retried.
    let env = env_of(&[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", &bao.token)]);
    let e = err_without(
        resolve_all(env, fast(), &[r]).remove(0),
        &[&bao.token, &secret],
    );
    assert_eq!(e.kind.exit_code(), 69);
    assert!(
        e.reason.contains("TLS") && !e.reason.contains("attempts"),
        "{e}"
    );

    // Refused outright.
    let env = env_of(&[
        ("VAULT_ADDR", &bao.addr),
        ("VAULT_TOKEN", &bao.token),
        ("VAULT_SKIP_VERIFY", "1"),
    ]);
    let e = err_without(resolve_all(env, fast(), &[r]).remove(0), &[&bao.token]);
    assert_eq!(e.kind.exit_code(), 78, "{e}");

    // Plain http to a TLS listener fails (no silent downgrade).
    let plain = bao.addr.replace("https://", "http://");
    let env = env_of(&[("VAULT_ADDR", &plain), ("VAULT_TOKEN", &bao.token)]);
    let e = err_without(
        resolve_all(env, fast(), &[r]).remove(0),
        &[&bao.token, &secret],
    );
    assert_ne!(e.kind.exit_code(), 0);
}

#[test]
fn vault_refs_reach_the_child_through_run_and_check() {
    let Some(bao) = Bao::start("vault_refs_reach_the_child_through_run_and_check") else {
        return;
    };
    let password = rand_hex(16);
    bao.kv_put("agent/db", "password", &password);
    let dir = crate::util::Dir::new();
    dir.write(
        "reg.yaml",
        "db:\n  dev:\n    secret_ref: vault://secret/agent/db#password\n    env: DB_PASSWORD\nmissing:\n  ci:\n    secret_ref: vault://secret/agent/none#password\n",
    );
    let run = |args: &[&str]| {
        crate::util::output(
            crate::util::kw(&dir, args)
                .env("VAULT_ADDR", &bao.addr)
                .env("VAULT_TOKEN", &bao.token),
        )
    };
    let out = run(&[
        "run",
        "--env",
        "dev",
        "--registry",
        "reg.yaml",
        "--",
        "sh",
        "-c",
        "[ \"$DB_PASSWORD\" = \"$1\" ] && echo same; echo $DB_PASSWORD",
        "sh",
        &password,
    ]);
    assert_eq!(
        crate::util::stdout(&out),
        "same\n[REDACTED:db]\n",
        "{}",
        crate::util::stderr(&out)
    );
    let out = run(&[
        "check",
        "--env",
        "dev",
        "--registry",
        "reg.yaml",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    let out = run(&[
        "run",
        "--env",
        "ci",
        "--registry",
        "reg.yaml",
        "--",
        "touch",
        "marker",
    ]);
    assert_eq!(out.status.code(), Some(69));
    let err = crate::util::stderr(&out);
    assert!(
        err.contains("vault://secret/agent/none#password") && err.contains("not found"),
        "{err}"
    );
    assert!(!err.contains(&bao.token) && !dir.join("marker").exists());
}

#[test]
fn policy_kv_backend_vault_serves_kv_refs() {
    let Some(bao) = Bao::start("policy_kv_backend_vault_serves_kv_refs") else {
        return;
    };
    let key = rand_hex(16);
    bao.kv_put("openai/prod/api_key", "value", &key);
    let dir = crate::util::Dir::new();
    dir.write(
        "reg.yaml",
        "openai:\n  prod:\n    secret_ref: kv://openai/prod/api_key\n    env: OPENAI_API_KEY\n",
    );
    dir.write(
        "policy.json",
        r#"{"kv_backend": {"type": "vault", "mount": "secret"}}"#,
    );
    let run = |args: &[&str]| {
        crate::util::output(
            crate::util::kw(&dir, args)
                .env("VAULT_ADDR", &bao.addr)
                .env("VAULT_TOKEN", &bao.token),
        )
    };
    let out = run(&[
        "run",
        "--env",
        "prod",
        "--registry",
        "reg.yaml",
        "--policy",
        "policy.json",
        "--",
        "sh",
        "-c",
        "[ \"$OPENAI_API_KEY\" = \"$1\" ] && echo same",
        "sh",
        &key,
    ]);
    assert_eq!(
        crate::util::stdout(&out),
        "same\n",
        "{}",
        crate::util::stderr(&out)
    );
    let out = run(&[
        "check",
        "--env",
        "prod",
        "--registry",
        "reg.yaml",
        "--policy",
        "policy.json",
        "--format",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["secrets"][0]["backend"], "vault");
    assert_eq!(json["secrets"][0]["status"], "ok");
    assert!(json["secrets"][0]["elapsed_ms"].is_number());
}
