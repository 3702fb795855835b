//! Token and value lifetimes against a real OpenBao dev server, through
//! `keywarden run`: a `VAULT_TOKEN` renewed while the run lasts, an AppRole
//! login done again when it reaches its maximum TTL, KV leases shortening
//! the socket's cache, and `VAULT_ADDR` lists of addresses.

use std::time::Duration;

use super::harness::*;
use crate::util::{bin, kw, output, stderr, stdout, Dir};

const READER: &str = "path \"secret/data/agent/*\" { capabilities = [\"read\"] }\n\
                      path \"kv1/*\" { capabilities = [\"read\"] }\n";

/// A registry with one `vault://` secret served for at most `ttl` seconds,
/// injected as `DB_PASSWORD` and readable by the child's default scopes.
fn registry(dir: &Dir, reference: &str, ttl: u64) {
    dir.write(
        "reg.yaml",
        format!(
            "db:\n  dev:\n    secret_ref: {reference}\n    scope: [pool]\n    env: DB_PASSWORD\n    max_ttl_seconds: {ttl}\n"
        ),
    );
}

/// `keywarden run --env dev` of `script` with `vars` added.
fn run_script(dir: &Dir, vars: &[(&str, &str)], script: &str) -> std::process::Output {
    let mut cmd = kw(dir, &crate::util::run_sh(&[], script));
    for (k, v) in vars {
        cmd.env(k, v);
    }
    output(&mut cmd)
}

/// The child sleeps `wait` seconds (past the token's TTL), then asks the
/// socket for the secret (expired from the cache after 1 s, so resolved
/// again with the run's token).
fn late_get(wait: u64) -> String {
    format!(
        "sleep {wait}; v=$({kw} get db); rc=$?; [ \"$v\" = \"$DB_PASSWORD\" ] && echo late-get-ok; echo rc=$rc",
        kw = bin()
    )
}

#[test]
fn vault_token_is_renewed_while_the_run_lasts() {
    let Some(bao) = Bao::start("vault_token_is_renewed_while_the_run_lasts") else {
        return;
    };
    let password = rand_hex(16);
    bao.kv_put("agent/renew", "password", &password);
    bao.cli(&["policy", "write", "reader", "-"], Some(READER));
    let dir = Dir::new();
    registry(&dir, "vault://secret/agent/renew#password", 1);
    let token = |renewable: &str| {
        bao.cli(
            &[
                "token",
                "create",
                "-policy=reader",
                "-ttl=6s",
                "-explicit-max-ttl=120s",
                &format!("-renewable={renewable}"),
                "-field=token",
            ],
            None,
        )
    };

    // Renewable: still valid 9 s later, so the socket resolves again.
    let renewable = token("true");
    let out = run_script(
        &dir,
        &[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", &renewable)],
        &late_get(9),
    );
    let err = stderr(&out);
    assert_eq!(stdout(&out), "late-get-ok\nrc=0\n", "{err}");
    assert!(
        !err.contains(&renewable) && !err.contains(&password),
        "{err}"
    );

    // The control: a token that cannot be renewed has expired by then; the
    // run says so at start-up, and the late read fails.
    let fixed = token("false");
    let out = run_script(
        &dir,
        &[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", &fixed)],
        &late_get(9),
    );
    let err = stderr(&out);
    let text = stdout(&out);
    assert!(
        !text.contains("late-get-ok") && !text.contains("rc=0"),
        "{text} / {err}"
    );
    assert!(err.contains("cannot be renewed"), "{err}");
    assert!(!err.contains(&fixed) && !err.contains(&password), "{err}");
}

#[test]
fn approle_login_is_done_again_at_its_maximum_ttl() {
    let Some(bao) = Bao::start("approle_login_is_done_again_at_its_maximum_ttl") else {
        return;
    };
    let password = rand_hex(16);
    bao.kv_put("agent/login", "password", &password);
    bao.cli(&["policy", "write", "reader", "-"], Some(READER));
    let (role_id, secret_id) = bao.approle(
        "agent",
        &["token_policies=reader", "token_ttl=2s", "token_max_ttl=3s"],
    );
    let dir = Dir::new();
    dir.write("secret-id", &secret_id);
    registry(&dir, "vault://secret/agent/login#password", 1);
    let out = run_script(
        &dir,
        &[
            ("VAULT_ADDR", &bao.addr),
            ("VAULT_ROLE_ID", &role_id),
            ("VAULT_SECRET_ID", "file://secret-id"),
        ],
        &late_get(6),
    );
    let err = stderr(&out);
    assert_eq!(stdout(&out), "late-get-ok\nrc=0\n", "{err}");
    assert!(
        !err.contains(&secret_id) && !err.contains(&password),
        "{err}"
    );
    // Logged in at start-up and again as each token reached its maximum
    // TTL — a few logins, not one per read.
    let logins = bao.requests_for_op("auth/approle/login", "update");
    assert!((2..=6).contains(&logins), "{logins} logins");
}

#[test]
fn a_kv_lease_shortens_the_sockets_cache() {
    let Some(bao) = Bao::start("a_kv_lease_shortens_the_sockets_cache") else {
        return;
    };
    bao.cli(
        &["secrets", "enable", "-path=kv1", "-version=1", "kv"],
        None,
    );
    let first = rand_hex(16);
    let second = rand_hex(16);
    bao.cli(
        &["write", "kv1/app", &format!("value={first}"), "ttl=2s"],
        None,
    );
    let dir = Dir::new();
    // The registry allows an hour; the lease says two seconds.
    registry(&dir, "vault://kv1/app#value", 3600);
    let script = format!(
        "{kw} get db > first; sleep 4; {kw} get db > second",
        kw = bin()
    );
    let changer = {
        let (bin, env, second) = (
            bao_bin().expect("bao"),
            [
                ("VAULT_ADDR", bao.addr.clone()),
                ("VAULT_TOKEN", bao.token.clone()),
            ],
            second.clone(),
        );
        let first_read = dir.join("first");
        std::thread::spawn(move || {
            // After the child's first read (the lease runs from start-up).
            while std::fs::metadata(&first_read).map_or(true, |m| m.len() == 0) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let status = std::process::Command::new(bin)
                .args(["write", "kv1/app", &format!("value={second}"), "ttl=2s"])
                .envs(env)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("bao write");
            assert!(status.success());
        })
    };
    let out = run_script(
        &dir,
        &[("VAULT_ADDR", &bao.addr), ("VAULT_TOKEN", &bao.token)],
        &script,
    );
    changer.join().expect("changer");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dir.read("first").trim(), first);
    assert_eq!(
        dir.read("second").trim(),
        second,
        "the lease was not honoured"
    );
}

#[test]
fn vault_addr_lists_fail_over_and_remember_the_node_that_answered() {
    let Some(bao) = Bao::start("vault_addr_lists_fail_over") else {
        return;
    };
    let password = rand_hex(16);
    bao.kv_put("agent/list", "password", &password);
    // A node that always answers 503, then the real one.
    let sick = Proxy::start(bao.socket(), usize::MAX);
    let list = format!("{}, {}", sick.addr, bao.addr);
    let env = env_of(&[("VAULT_ADDR", &list), ("VAULT_TOKEN", &bao.token)]);
    let rt = runtime();
    let (resolver, _) = resolver(env, fast());
    for _ in 0..3 {
        let v = rt.block_on(resolver.resolve(&request("vault://secret/agent/list#password")));
        assert_eq!(value(v), password);
    }
    // Asked once; every later call went straight to the node that answered.
    assert_eq!(sick.count(), 1);

    // Every node down: 69, each address named with its own failure.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let env = env_of(&[
        ("VAULT_ADDR", &format!("{closed},{}", sick.addr)),
        ("VAULT_TOKEN", &bao.token),
    ]);
    let e = err_without(
        resolve_all(env, fast(), &["vault://secret/agent/list#password"]).remove(0),
        &[&bao.token, &password],
    );
    assert_eq!(e.kind.exit_code(), 69, "{e}");
    let shown = |a: &str| a.trim_start_matches("http://").to_string();
    assert!(
        e.reason
            .contains(&format!("cannot reach {}", shown(&closed)))
            && e.reason
                .contains(&format!("server error 503 from {}", shown(&sick.addr))),
        "{e}"
    );

    // Through `run`: the first address refuses connections.
    let dir = Dir::new();
    registry(&dir, "vault://secret/agent/list#password", 60);
    let out = run_script(
        &dir,
        &[
            ("VAULT_ADDR", &format!("{closed},{}", bao.addr)),
            ("VAULT_TOKEN", &bao.token),
        ],
        &format!("[ \"$DB_PASSWORD\" = {password} ] && echo same"),
    );
    assert_eq!(stdout(&out), "same\n", "{}", stderr(&out));

    // An empty entry is a configuration error.
    let env = env_of(&[
        ("VAULT_ADDR", &format!("{},", bao.addr)),
        ("VAULT_TOKEN", &bao.token),
    ]);
    let e = resolve_all(env, fast(), &["vault://secret/agent/list#password"]).remove(0);
    assert_eq!(e.expect_err("empty entry").kind.exit_code(), 78);
}
