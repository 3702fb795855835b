//! The socket API end to end: a server started in-process, real clients
//! (`curl --unix-socket` and the hyper client), real sockets, files and
//! uids. Secrets and keys are generated at run time.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use hyper::Method;
use keywarden::api::conn::ConnLimits;
use keywarden::api::{self as kwapi, slack, ApiOptions, Callbacks, RunningApi, ServedSecret};
use keywarden::audit::{hex, parse_audit_key, Auditor, Event, EventKind, Outcome};
use keywarden::client::{self, Answer, Connection};
use keywarden::commands::clients as cli;
use keywarden::config::{Approval, Environment};
use keywarden::error::Error;
use keywarden::secret::{SecretBytes, SecretRef};

/// (id, scope, ttl, approval required)
const SECRETS: &[(&str, &[&str], Option<u64>, bool)] = &[
    ("openai", &["llm:chat"], Some(3600), false),
    ("shared", &["pool"], None, false),
    ("search", &["skill:web"], None, false),
    ("both", &["pool", "llm:chat"], None, false),
    ("gated", &["pool"], None, true),
    ("slack_signing", &["internal"], None, false),
    ("short", &["pool"], Some(1), false),
];
const CHILD_SCOPES: &[&str] = &["pool", "llm:chat", "skill:web", "slack:verify"];

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    keywarden::sys::random::fill(&mut b).expect("randomness");
    hex(&b)
}

/// A value shaped like an API key, with characters that every encoding
/// changes (`+`, `/`, `=`).
fn fresh_value(tag: &str) -> String {
    let mut b = [0u8; 24];
    keywarden::sys::random::fill(&mut b).expect("randomness");
    format!(
        "{tag}-{}",
        base64::engine::general_purpose::STANDARD.encode(b)
    )
}

#[derive(Default)]
struct Source {
    values: BTreeMap<String, String>,
    refs: BTreeMap<String, String>,
    resolves: Vec<String>,
    /// How long a resolution takes.
    delay: Duration,
}

struct Fixture {
    dir: tempfile::TempDir,
    source: Arc<Mutex<Source>>,
    reloads: Arc<AtomicUsize>,
    api: Option<RunningApi>,
    token: Vec<u8>,
    audit_path: PathBuf,
    list_path: PathBuf,
    socket_opt: Option<PathBuf>,
    child_uid: u32,
    limits: ConnLimits,
}

fn served_from(source: &Source) -> Vec<ServedSecret> {
    SECRETS
        .iter()
        .map(|(id, scope, ttl, approval)| ServedSecret {
            id: (*id).into(),
            reference: SecretRef::parse(&source.refs[*id]).expect("ref"),
            scope: scope.iter().map(|s| s.to_string()).collect(),
            ttl_seconds: *ttl,
            approval: if *approval {
                Approval::Required
            } else {
                Approval::None
            },
            env_var: None,
            value: Some(SecretBytes::copy_from(source.values[*id].as_bytes())),
            resolved_at: SystemTime::now(),
            dates: Default::default(),
            lease: None,
            proxied: false,
        })
        .collect()
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_limits(ConnLimits::default())
    }

    fn with_limits(limits: ConnLimits) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("kw-api-")
            .tempdir()
            .expect("tmp");
        // Open to other uids whatever the umask was when it was made (a
        // socket bound on another test's thread narrows it for a moment):
        // only the socket's own folder may keep them out.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mut source = Source::default();
        for (id, ..) in SECRETS {
            source.values.insert(id.to_string(), fresh_value(id));
            source.refs.insert(id.to_string(), format!("kv://{id}/dev"));
        }
        let mut f = Fixture {
            audit_path: dir.path().join("audit.jsonl"),
            list_path: dir.path().join("state/revocations.json"),
            dir,
            source: Arc::new(Mutex::new(source)),
            reloads: Arc::new(AtomicUsize::new(0)),
            api: None,
            token: Vec::new(),
            socket_opt: None,
            child_uid: nix::unistd::geteuid().as_raw(),
            limits,
        };
        f.start();
        f
    }

    fn start(&mut self) {
        self.try_start().expect("start");
    }

    fn try_start(&mut self) -> Result<(), Error> {
        let key = parse_audit_key(random_hex(32).as_bytes()).expect("key");
        let audit = Auditor::open(&self.audit_path, Environment::Dev, Some(key)).expect("audit");
        let opts = ApiOptions {
            socket: self.socket_opt.clone(),
            admin_socket: None,
            runtime_dir: self.dir.path().to_path_buf(),
            child_uid: self.child_uid,
            child_gid: self.child_uid,
            child_groups: Vec::new(),
            child_scopes: CHILD_SCOPES.iter().map(|s| s.to_string()).collect(),
            env: Environment::Dev,
            max_ttl_seconds: Some(900),
            slack_secret_id: Some("slack_signing".into()),
            revocation_list: self.list_path.clone(),
            audit,
            approval_key: None,
            limits: self.limits,
        };
        let (src, src2) = (self.source.clone(), self.source.clone());
        let reloads = self.reloads.clone();
        let callbacks = Callbacks {
            resolve: Arc::new(move |id: &str| {
                let delay = src.lock().expect("lock").delay;
                std::thread::sleep(delay);
                let mut s = src.lock().expect("lock");
                s.resolves.push(id.to_string());
                match s.values.get(id) {
                    Some(v) => Ok(kwapi::Fresh {
                        value: SecretBytes::copy_from(v.as_bytes()),
                        lease: None,
                    }),
                    None => Err(Error::config(format!("no secret '{id}'"))),
                }
            }),
            reload: Arc::new(move || {
                reloads.fetch_add(1, Ordering::SeqCst);
                Ok(served_from(&src2.lock().expect("lock")))
            }),
            mask_token: Arc::new(|_, _| {}),
        };
        let secrets = served_from(&self.source.lock().expect("lock"));
        let mut api = kwapi::start(opts, secrets, callbacks)?;
        self.token = api.take_child_token().expect("token").expose().to_vec();
        assert!(api.take_child_token().is_none(), "the token is given once");
        self.api = Some(api);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(api) = self.api.take() {
            api.shutdown();
        }
    }

    fn api(&self) -> &RunningApi {
        self.api.as_ref().expect("running")
    }

    fn socket(&self) -> PathBuf {
        self.api().socket_path().to_path_buf()
    }

    fn admin(&self) -> PathBuf {
        self.api().admin_path().to_path_buf()
    }

    fn value(&self, id: &str) -> String {
        self.source.lock().expect("lock").values[id].clone()
    }

    fn resolves(&self) -> Vec<String> {
        self.source.lock().expect("lock").resolves.clone()
    }

    fn call(&self, method: Method, path: &str, token: Option<&[u8]>, body: Option<&str>) -> Answer {
        client::call(
            &self.socket(),
            method,
            path,
            token,
            body.map(|b| b.as_bytes().to_vec()),
        )
        .expect("call")
    }

    fn get(&self, path: &str, token: &[u8]) -> Answer {
        self.call(Method::GET, path, Some(token), None)
    }

    fn admin_call(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        client::call(
            &self.admin(),
            method,
            path,
            None,
            body.map(|b| b.as_bytes().to_vec()),
        )
        .expect("admin call")
    }

    fn mint(&self, token: &[u8], scopes: &[&str], ttl: u64) -> Answer {
        let body = serde_json::json!({"scopes": scopes, "ttl_seconds": ttl}).to_string();
        self.call(Method::POST, "/v1/tokens", Some(token), Some(&body))
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `curl --unix-socket`, as `prefix` (e.g. setpriv) if given: (exit code,
/// HTTP status, body).
fn curl_as(
    prefix: &[&str],
    socket: &Path,
    method: &str,
    path: &str,
    token: Option<&[u8]>,
    body: Option<&str>,
) -> (i32, u16, String) {
    crate::util::need("curl");
    let mut args: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--unix-socket",
            &socket.to_string_lossy(),
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]
        .map(str::to_string),
    );
    if let Some(t) = token {
        args.push("-H".into());
        args.push(format!(
            "Authorization: Bearer {}",
            String::from_utf8_lossy(t)
        ));
    }
    if let Some(b) = body {
        args.push("-H".into());
        args.push("Content-Type: application/json".into());
        args.push("--data-binary".into());
        args.push(b.to_string());
    }
    args.push(format!("http://keywarden{path}"));
    let out = Command::new(&args[0])
        .args(&args[1..])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
    )
}

fn curl(
    socket: &Path,
    method: &str,
    path: &str,
    token: Option<&[u8]>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (rc, status, body) = curl_as(&[], socket, method, path, token, body);
    assert_eq!(rc, 0, "curl failed: {body}");
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Wait for `cond`, up to `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn every_status_code_with_curl() {
    let f = Fixture::new();
    let s = f.socket();
    let t = f.token.clone();
    let (st, v) = curl(&s, "GET", "/v1/health", None, None);
    assert_eq!((st, v), (200, serde_json::json!({"status": "ok"})));

    let (st, v) = curl(&s, "GET", "/v1/secrets/openai", Some(&t), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], "openai");
    assert_eq!(v["value"], f.value("openai"));
    assert_eq!(v["scope"], serde_json::json!(["llm:chat"]));
    assert!(
        v["expires_at"].as_str().is_some_and(|e| e.ends_with('Z')),
        "{v}"
    );

    let mut wrong = t.clone();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'x' { b'y' } else { b'x' };
    let pool = f.mint(&t, &["pool"], 60).json()["token"]
        .as_str()
        .expect("token")
        .as_bytes()
        .to_vec();
    type Row<'a> = (&'a str, &'a str, Option<&'a [u8]>, Option<&'a str>, u16);
    let table: Vec<Row<'_>> = vec![
        ("GET", "/v1/secrets/openai", None, None, 401),
        ("GET", "/v1/secrets/openai", Some(&wrong), None, 401),
        ("GET", "/v1/secrets/openai", Some(&pool), None, 403),
        ("GET", "/v1/secrets/nope", Some(&t), None, 404),
        ("GET", "/v1/secrets/gated", Some(&t), None, 202),
        ("DELETE", "/v1/secrets/openai", Some(&t), None, 405),
        ("GET", "/v1/elsewhere", Some(&t), None, 404),
        ("POST", "/v1/tokens", Some(&t), Some("{\"scopes\":[]}"), 400),
        (
            "POST",
            "/v1/tokens",
            Some(&pool),
            Some("{\"scopes\":[\"llm:chat\"],\"ttl_seconds\":5}"),
            403,
        ),
        (
            "POST",
            "/v1/tokens",
            Some(&t),
            Some("{\"scopes\":[\"pool\"],\"ttl_seconds\":5}"),
            200,
        ),
        ("GET", "/v1/skills/web/secrets", Some(&t), None, 200),
    ];
    for (method, path, token, body, want) in table {
        let (st, v) = curl(&s, method, path, token, body);
        assert_eq!(st, want, "{method} {path}: {v}");
        if want >= 400 {
            assert!(v["error"].is_string(), "{method} {path}: {v}");
        }
    }
    let (_, v) = curl(&s, "GET", "/v1/secrets/gated", Some(&t), None);
    assert!(
        v["challenge_id"].as_str().is_some_and(|c| c.len() == 32) && v["expires_at"].is_string(),
        "{v}"
    );
    let (st, _) = curl(
        &f.admin(),
        "POST",
        "/v1/admin/revoke",
        None,
        Some("{\"id\":\"shared\",\"reason\":\"test\"}"),
    );
    assert_eq!(st, 200);
    let (st, v) = curl(&s, "GET", "/v1/secrets/shared", Some(&t), None);
    assert_eq!(st, 410, "{v}");
    // A body over the limit.
    let big = format!(
        "{{\"scopes\":[\"pool\"],\"ttl_seconds\":5,\"pad\":\"{}\"}}",
        "x".repeat(1 << 20)
    );
    let a = f.call(Method::POST, "/v1/tokens", Some(&t), Some(&big));
    assert_eq!(a.status, 413);
    // 429 and 503 have their own tests (rate limiting, re-resolution).
}

#[test]
fn scope_narrowing_with_the_rust_client() {
    let f = Fixture::new();
    let root = f.token.clone();
    let minted = f.mint(&root, &["pool"], 30);
    assert_eq!(minted.status, 200);
    let m = minted.json();
    assert_eq!(m["scopes"], serde_json::json!(["pool"]));
    assert!(m["ttl_seconds"].as_u64().is_some_and(|t| t <= 30));
    assert!(m["token_id"].is_string());
    let pool = m["token"].as_str().expect("token").as_bytes().to_vec();

    assert_eq!(f.get("/v1/secrets/shared", &pool).status, 200);
    assert_eq!(f.get("/v1/secrets/both", &pool).status, 200);
    assert_eq!(
        f.get("/v1/secrets/openai", &pool).status,
        403,
        "pool cannot read llm:chat"
    );
    assert_eq!(f.get("/v1/secrets/search", &pool).status, 403);
    // Never wider.
    assert_eq!(f.mint(&pool, &["llm:chat"], 5).status, 403);
    assert_eq!(f.mint(&pool, &["pool", "slack:verify"], 5).status, 403);
    // Never longer: the grandchild is clamped to its parent's lifetime.
    let child = f.mint(&pool, &["pool"], 3600).json();
    assert!(
        child["ttl_seconds"].as_u64().is_some_and(|t| t <= 30),
        "{child}"
    );
    // And never longer than the policy (900 s here) for the root token.
    let long = f.mint(&root, &["pool"], 100_000).json();
    assert_eq!(long["ttl_seconds"], 900);
    // The skill route returns what the token allows and the skill names.
    let skills = f.get("/v1/skills/web/secrets", &pool).json();
    let keys: Vec<&String> = skills["secrets"].as_object().expect("map").keys().collect();
    assert_eq!(keys, ["both", "shared", "short"]);
    let skills = f.get("/v1/skills/web/secrets", &root).json();
    assert!(skills["secrets"]["search"].is_string());
    assert!(
        skills["secrets"].get("openai").is_none(),
        "openai is not scoped for skills"
    );
    assert!(skills["secrets"].get("gated").is_none());
    assert_eq!(skills["secrets"]["shared"], f.value("shared"));
    // Minted tokens expire.
    let brief = f.mint(&root, &["pool"], 1).json();
    let brief = brief["token"].as_str().expect("token").as_bytes().to_vec();
    assert_eq!(f.get("/v1/secrets/shared", &brief).status, 200);
    assert!(eventually(Duration::from_secs(10), || f
        .get("/v1/secrets/shared", &brief)
        .status
        == 401));
}

#[test]
fn ttl_expiry_wipes_and_resolves_once() {
    let f = Fixture::new();
    let t = f.token.clone();
    let first = f.get("/v1/secrets/short", &t).json();
    assert_eq!(first["value"], f.value("short"));
    assert!(
        f.resolves().is_empty(),
        "served from the value run resolved"
    );
    // The sweep wipes the value once its second is up, with nobody asking.
    let cached = || {
        let inv = client::call(&f.admin(), Method::GET, "/v1/admin/inventory", None, None)
            .expect("inventory")
            .json();
        inv["secrets"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == "short").cloned())
            .map(|s| s["cached"] == true)
            .unwrap_or(false)
    };
    assert!(eventually(Duration::from_secs(5), || !cached()));
    // Rotated at the source meanwhile: 16 concurrent readers, one resolve.
    let rotated = fresh_value("short");
    f.source
        .lock()
        .expect("lock")
        .values
        .insert("short".into(), rotated.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let socket = f.socket();
    let values: Vec<String> = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let socket = socket.clone();
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Connection::open(&socket).await.expect("connect");
                let a = c
                    .send(Method::GET, "/v1/secrets/short", Some(&t), None)
                    .await
                    .expect("send");
                assert_eq!(a.status, 200);
                a.json()["value"].as_str().expect("value").to_string()
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    });
    assert!(values.iter().all(|v| *v == rotated));
    assert_eq!(f.resolves(), vec!["short".to_string()]);
    let resolve_events: Vec<_> = f
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "resolve" && e["secret_id"] == "short")
        .collect();
    assert_eq!(resolve_events.len(), 1);
    assert_eq!(resolve_events[0]["ref"], "kv://short/dev");
    assert!(resolve_events[0]["fingerprint"]
        .as_str()
        .is_some_and(|f| f.len() == 16));
    // A value that cannot be resolved again: 503, and the reason is audited.
    f.source.lock().expect("lock").values.remove("short");
    assert!(eventually(Duration::from_secs(5), || !cached()));
    let a = f.get("/v1/secrets/short", &t);
    assert_eq!(a.status, 503, "{:?}", a.error());
    assert!(a
        .error()
        .is_some_and(|e| e.contains("cannot resolve 'short' again")));
}

#[test]
fn revocation_is_immediate_and_survives_restarts_until_the_ref_changes() {
    let mut f = Fixture::new();
    let t = f.token.clone();
    assert_eq!(f.get("/v1/secrets/openai", &t).status, 200);
    // Through the CLI function, against the admin socket.
    let args = cli::RevokeArgs {
        id: "openai".into(),
        reason: Some("key posted in a chat".into()),
        admin_socket: Some(f.admin()),
        revocation_list: Some(f.list_path.clone()),
    };
    let mut out = Vec::new();
    let no_registry =
        |_: &str| -> keywarden::error::Result<String> { panic!("the sidecar knows the ref") };
    assert_eq!(
        cli::revoke(&args, no_registry, &mut out).expect("revoke"),
        0
    );
    let said = String::from_utf8_lossy(&out);
    assert!(said.contains("kv://openai/dev"), "{said}");
    let a = f.get("/v1/secrets/openai", &t);
    assert_eq!(a.status, 410);
    assert!(a.error().is_some_and(|e| e.contains("revoked")));
    let inv = f
        .admin_call(Method::GET, "/v1/admin/inventory", None)
        .json();
    let row = inv["secrets"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == "openai").cloned())
        .expect("row");
    assert_eq!(row["revoked"], "key posted in a chat");
    assert_eq!(row["cached"], false);
    let list = std::fs::read_to_string(&f.list_path).expect("list");
    assert!(list.contains("\"openai\"") && list.contains("kv://openai/dev"));
    assert!(!list.contains(&f.value("openai")));
    assert_eq!(mode(&f.list_path), 0o600);
    // Reload keeps it revoked (same ref).
    assert_eq!(
        f.admin_call(Method::POST, "/v1/admin/reload", None).status,
        200
    );
    assert_eq!(f.reloads.load(Ordering::SeqCst), 1);
    assert_eq!(f.get("/v1/secrets/openai", &t).status, 410);

    // A later run with the same ref: still refused.
    f.stop();
    f.start();
    let t = f.token.clone();
    assert_eq!(f.get("/v1/secrets/openai", &t).status, 410);
    assert_eq!(f.get("/v1/secrets/shared", &t).status, 200);
    // Rotated to a new ref: served again.
    f.stop();
    f.source
        .lock()
        .expect("lock")
        .refs
        .insert("openai".into(), "kv://openai/dev-v2".into());
    f.start();
    let t = f.token.clone();
    assert_eq!(f.get("/v1/secrets/openai", &t).status, 200);
    // Unknown ids are 404 on the admin socket too.
    let a = f.admin_call(Method::POST, "/v1/admin/revoke", Some("{\"id\":\"nope\"}"));
    assert_eq!(a.status, 404);
    let revoke_events = f
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "revoke")
        .count();
    assert_eq!(revoke_events, 1);
}

#[test]
fn revoke_without_a_sidecar_writes_the_list_from_the_registry() {
    let dir = tempfile::tempdir().expect("tmp");
    let reg = dir.path().join("reg.yaml");
    std::fs::write(&reg, "openai:\n  dev:\n    secret_ref: kv://openai/dev\n").expect("write");
    let list = dir.path().join("revocations.json");
    let lookup = |id: &str| cli::registry_ref(Some(&reg), None, Environment::Dev, id);
    let args = cli::RevokeArgs {
        id: "openai".into(),
        reason: None,
        admin_socket: Some(dir.path().join("no-such.sock")),
        revocation_list: Some(list.clone()),
    };
    let mut out = Vec::new();
    let err = cli::revoke(&args, lookup, &mut out).expect_err("sidecar unreachable");
    assert_eq!(err.exit_code(), 69, "{err}");
    let l = keywarden::api::revocations::RevocationList::load(&list).expect("list");
    assert!(
        l.find("openai", "kv://openai/dev").is_some(),
        "recorded anyway"
    );
    let args = cli::RevokeArgs {
        id: "missing".into(),
        ..args
    };
    // The sidecar named does not answer: that is the news (69), not that
    // the registry lacks the id.
    let err = cli::revoke(&args, lookup, &mut out).expect_err("unknown id");
    assert_eq!(err.exit_code(), 69, "{err}");
    assert!(err.to_string().contains("no-such.sock"), "{err}");
}

#[test]
fn another_uid_is_refused_by_modes_and_by_peer_credentials() {
    let f = Fixture::new();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let s = f.socket();
    // The 0700 folder alone keeps it out.
    let (rc, _, _) = curl_as(&nobody, &s, "GET", "/v1/health", None, None);
    assert_eq!(rc, 7, "curl could not connect");
    let (rc, _, _) = curl_as(
        &nobody,
        &f.admin(),
        "GET",
        "/v1/admin/inventory",
        None,
        None,
    );
    assert_eq!(rc, 7);
    // Opened up by hand, SO_PEERCRED still refuses it.
    for p in [s.parent().expect("dir"), f.admin().parent().expect("dir")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    for p in [s.clone(), f.admin()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    }
    let t = f.token.clone();
    let (rc, st, body) = curl_as(&nobody, &s, "GET", "/v1/secrets/openai", Some(&t), None);
    assert_eq!((rc, st), (0, 403), "{body}");
    assert!(body.contains("peer uid 65534"), "{body}");
    assert!(!body.contains(&f.value("openai")));
    let (rc, st, _) = curl_as(
        &nobody,
        &f.admin(),
        "POST",
        "/v1/admin/revoke",
        None,
        Some("{\"id\":\"openai\"}"),
    );
    assert_eq!((rc, st), (0, 403));
    assert_eq!(f.get("/v1/secrets/openai", &t).status, 200, "not revoked");
    let refusals: Vec<_> = f
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "auth_failure" && e["actor"]["uid"] == 65534)
        .collect();
    assert_eq!(refusals.len(), 2);
    assert!(refusals[0]["actor"]["pid"].as_i64().is_some_and(|p| p > 0));
    assert!(refusals[0]["actor"]["exe"]
        .as_str()
        .is_some_and(|e| e.ends_with("curl")));
    // And the child's own uid is served (root here; the check is uid-based).
    assert_eq!(f.get("/v1/health", &t).status, 200);
}

#[test]
fn separate_uid_mode_gives_the_socket_to_the_child() {
    let mut f = Fixture::new();
    f.stop();
    f.child_uid = 65534;
    f.start();
    let s = f.socket();
    let meta = std::fs::metadata(&s).expect("meta");
    let dir_meta = std::fs::metadata(s.parent().expect("dir")).expect("meta");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), dir_meta.uid()), (65534, 65534));
    assert_eq!((mode(&s), mode(s.parent().expect("dir"))), (0o600, 0o700));
    let admin_meta = std::fs::metadata(f.admin()).expect("meta");
    assert_eq!(admin_meta.uid(), 0, "the admin socket stays keywarden's");
    assert_ne!(
        f.admin().parent(),
        s.parent(),
        "the admin socket has a folder of its own"
    );
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    // The test folder above the socket folder must be passable for nobody.
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let t = f.token.clone();
    let (rc, st, body) = curl_as(&nobody, &s, "GET", "/v1/secrets/shared", Some(&t), None);
    assert_eq!((rc, st), (0, 200), "{body}");
    assert!(body.contains(&f.value("shared")));
    let (rc, _, _) = curl_as(
        &nobody,
        &f.admin(),
        "GET",
        "/v1/admin/inventory",
        None,
        None,
    );
    assert_eq!(rc, 7, "the child cannot open the admin socket");
}

#[test]
fn brute_force_is_slowed_and_audited() {
    let f = Fixture::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let socket = f.socket();
    let good = f.token.clone();
    let (counts, locked_good, retry) = rt.block_on(async {
        let mut c = Connection::open(&socket).await.expect("connect");
        let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
        let mut retry = None;
        for _ in 0..40 {
            let guess = format!("kw_{}_{}", random_hex(8), "A".repeat(43));
            let a = c
                .send(
                    Method::GET,
                    "/v1/secrets/openai",
                    Some(guess.as_bytes()),
                    None,
                )
                .await
                .expect("send");
            *counts.entry(a.status).or_default() += 1;
            retry = retry.or(a.retry_after);
        }
        let locked_good = c
            .send(Method::GET, "/v1/secrets/openai", Some(&good), None)
            .await
            .expect("send");
        (counts, locked_good.status, retry)
    });
    let checked = counts.get(&401).copied().unwrap_or(0);
    assert!(
        checked <= 10,
        "at most a handful of guesses are checked: {counts:?}"
    );
    assert!(counts.get(&429).copied().unwrap_or(0) >= 28, "{counts:?}");
    assert_eq!(retry, Some(1));
    assert_eq!(
        locked_good, 200,
        "the right token passes a lock (the child is not shut out)"
    );
    assert!(eventually(Duration::from_secs(10), || f
        .get("/v1/secrets/openai", &good)
        .status
        == 200));
    let failures: Vec<_> = f
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "auth_failure")
        .collect();
    assert!(failures.len() >= checked, "every checked guess is audited");
    assert!(
        failures.len() <= checked + 3,
        "refusals under a lock are coalesced: {}",
        failures.len()
    );
    assert!(failures.iter().any(|e| e["status"] == 429));
    let logged_429 = f.audit().into_iter().filter(|e| e["status"] == 429).count();
    assert!(
        logged_429 <= 3,
        "one line per lock, not per refusal: {logged_429}"
    );
    // A guessed token's id is what the request sent: not recorded (a
    // refused token of this run is recorded by its id).
    assert!(failures
        .iter()
        .all(|e| e["actor"]["uid"] == 0 && e["actor"]["token_id"].is_null()));
}

#[test]
fn socket_modes_and_removal_on_shutdown_and_drop() {
    let mut f = Fixture::new();
    let (s, a) = (f.socket(), f.admin());
    assert_eq!(mode(&s), 0o600);
    assert_eq!(mode(s.parent().expect("dir")), 0o700);
    assert_eq!(mode(&a), 0o600);
    assert_eq!(mode(a.parent().expect("dir")), 0o700);
    assert_ne!(s.parent(), a.parent(), "separate folders");
    f.stop();
    for p in [&s, &a] {
        assert!(!p.exists(), "{} left behind", p.display());
        assert!(!p.parent().expect("dir").exists());
    }
    // A chosen path, a stale socket there from a crashed run, and drop.
    let chosen = f.dir.path().join("chosen.sock");
    let stale = std::os::unix::net::UnixListener::bind(&chosen).expect("stale");
    drop(stale);
    f.socket_opt = Some(chosen.clone());
    f.start();
    assert_eq!(f.socket(), chosen);
    assert_eq!(mode(&chosen), 0o600);
    let t = f.token.clone();
    assert_eq!(f.get("/v1/secrets/shared", &t).status, 200);
    // A second sidecar on the same path is refused while this one lives.
    let mut g = Fixture::new();
    g.stop();
    g.socket_opt = Some(chosen.clone());
    let err = g.try_start().expect_err("a live socket is never replaced");
    assert_eq!(err.exit_code(), 69);
    assert!(
        err.to_string().contains("another process is listening"),
        "{err}"
    );
    assert!(chosen.exists());
    let api = f.api.take().expect("api");
    drop(api);
    assert!(!chosen.exists());
}

#[test]
fn no_socket_file_after_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let chosen = dir.path().join("kw.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keywarden"))
        .args(["run", "--env", "dev", "--socket"])
        .arg(&chosen)
        .args([
            "--",
            "sh",
            "-c",
            "echo socket=$KEYWARDEN_SOCKET; exec sleep 60",
        ])
        .env_remove("CI")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("read");
    assert_eq!(line.trim(), format!("socket={}", chosen.display()));
    let (st, _) = curl(&chosen, "GET", "/v1/health", None, None);
    assert_eq!(st, 200);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(143));
    assert!(!chosen.exists());
}

#[test]
fn slack_verify() {
    let f = Fixture::new();
    let t = f.token.clone();
    let secret = f.value("slack_signing");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let body = "token=abc&team_id=T1&command=%2Fdeploy&text=prod";
    let ts = now.to_string();
    let sig = slack::sign(secret.as_bytes(), &ts, body.as_bytes());
    let verify = |ts: &str, sig: &str, body: &str| {
        let req = serde_json::json!({"timestamp": ts, "signature": sig, "body": body}).to_string();
        curl(
            &f.socket(),
            "POST",
            "/v1/slack/verify",
            Some(&t),
            Some(&req),
        )
    };
    let (st, v) = verify(&ts, &sig, body);
    assert_eq!(
        (st, v),
        (200, serde_json::json!({"valid": true, "reason": null}))
    );
    // A bad signature.
    let bad = slack::sign(b"another secret", &ts, body.as_bytes());
    let (_, v) = verify(&ts, &bad, body);
    assert_eq!(v["valid"], false);
    assert_eq!(v["reason"], "signature does not match");
    // A stale timestamp, correctly signed.
    let old = (now - 301).to_string();
    let (_, v) = verify(
        &old,
        &slack::sign(secret.as_bytes(), &old, body.as_bytes()),
        body,
    );
    assert_eq!(v["reason"], "timestamp is outside the 5-minute window");
    // The body changed after signing (a replay with an edited body).
    let (_, v) = verify(&ts, &sig, "token=abc&team_id=T1&command=%2Fdeploy&text=dev");
    assert_eq!(v["valid"], false);
    let (_, v) = verify(&ts, "v0=nothex", body);
    assert_eq!(v["valid"], false);
    // Numeric timestamps are accepted too.
    let req = serde_json::json!({"timestamp": now, "signature": sig, "body": body}).to_string();
    let (_, v) = curl(
        &f.socket(),
        "POST",
        "/v1/slack/verify",
        Some(&t),
        Some(&req),
    );
    assert_eq!(v["valid"], true);
    // Any valid token may ask (SPEC names no scope), a wrong one may not.
    let pool = f.mint(&t, &["pool"], 60).json();
    let pool = pool["token"].as_str().expect("token").as_bytes().to_vec();
    let req = serde_json::json!({"timestamp": ts, "signature": sig, "body": body}).to_string();
    let (st, answer) = curl(
        &f.socket(),
        "POST",
        "/v1/slack/verify",
        Some(&pool),
        Some(&req),
    );
    assert_eq!(st, 200, "{answer}");
    let (st, _) = curl(
        &f.socket(),
        "POST",
        "/v1/slack/verify",
        Some(b"kw_wrong_token"),
        Some(&req),
    );
    assert_eq!(st, 401);
}

#[test]
fn get_and_inventory_commands() {
    let f = Fixture::new();
    let args = |id: &str| cli::GetArgs {
        id: id.into(),
        no_newline: false,
        socket: Some(f.socket()),
    };
    let token = Some(std::ffi::OsString::from(
        String::from_utf8(f.token.clone()).expect("text"),
    ));
    let mut out = Vec::new();
    assert_eq!(
        cli::get(&args("openai"), token.clone(), &mut out).expect("get"),
        0
    );
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        format!("{}\n", f.value("openai"))
    );
    let mut out = Vec::new();
    let quiet = cli::GetArgs {
        no_newline: true,
        ..args("shared")
    };
    cli::get(&quiet, token.clone(), &mut out).expect("get");
    assert_eq!(String::from_utf8(out).expect("utf8"), f.value("shared"));
    let mut out = Vec::new();
    for (id, code) in [("nope", 65), ("gated", 77), ("slack_signing", 77)] {
        let e = cli::get(&args(id), token.clone(), &mut out).expect_err(id);
        assert_eq!(e.exit_code(), code, "{id}: {e}");
    }
    let e = cli::get(&args("openai"), Some("kw_wrong".into()), &mut out).expect_err("bad token");
    assert_eq!(e.exit_code(), 77);
    assert!(out.is_empty());

    let inv = cli::InventoryArgs {
        admin_socket: Some(f.admin()),
        format: cli::InventoryFormat::Table,
    };
    let mut out = Vec::new();
    let offline = || -> keywarden::error::Result<serde_json::Value> {
        panic!("a sidecar runs: no offline inventory")
    };
    assert_eq!(
        cli::inventory(&inv, offline, &mut out).expect("inventory"),
        0
    );
    let text = String::from_utf8(out).expect("utf8");
    assert!(
        text.lines()
            .any(|l| l.starts_with("openai") && l.contains("kv://openai/dev")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("slack_signing") && l.contains(" slack ")),
        "{text}"
    );
    for (id, ..) in SECRETS {
        assert!(!text.contains(&f.value(id)));
    }
    let mut out = Vec::new();
    let json = cli::InventoryArgs {
        format: cli::InventoryFormat::Json,
        ..inv
    };
    cli::inventory(&json, offline, &mut out).expect("inventory");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["env"], "dev");
    for s in v["secrets"].as_array().expect("secrets") {
        for key in [
            "id", "ref", "vendor", "scope", "created", "rotated", "policy",
        ] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
    }
    assert_eq!(v["secrets"].as_array().map(Vec::len), Some(SECRETS.len()));
}

/// Every form invariant 1 names, of `value`.
fn encodings(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let b = value.as_bytes();
    let url: String = b
        .iter()
        .map(|&c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect();
    let json = serde_json::to_string(value).expect("json");
    vec![
        value.to_string(),
        STANDARD.encode(b),
        STANDARD_NO_PAD.encode(b),
        URL_SAFE.encode(b),
        URL_SAFE_NO_PAD.encode(b),
        hex(b),
        hex(b).to_uppercase(),
        url.clone(),
        url.to_lowercase(),
        json[1..json.len() - 1].to_string(),
    ]
}

#[test]
fn the_audit_log_has_every_event_and_no_secret() {
    let mut f = Fixture::new();
    let t = f.token.clone();
    // What run.rs records around the API, through the same handle type.
    let key = parse_audit_key(random_hex(32).as_bytes()).expect("key");
    let run_audit = Auditor::open(&f.audit_path, Environment::Dev, Some(key)).expect("audit");
    let openai = SecretRef::parse("kv://openai/dev").expect("ref");
    let value = f.value("openai");
    run_audit
        .record(Event::new(EventKind::RunStart).result(Outcome::Ok))
        .expect("record");
    run_audit
        .record(
            Event::new(EventKind::Resolve)
                .secret("openai", &openai, &["llm:chat".into()])
                .fingerprint(run_audit.fingerprint(value.as_bytes()))
                .result(Outcome::Ok),
        )
        .expect("record");
    run_audit
        .record(
            Event::new(EventKind::Inject)
                .secret("openai", &openai, &[])
                .reason("as OPENAI_API_KEY"),
        )
        .expect("record");
    run_audit
        .record(Event::new(EventKind::ChildStart).child_pid(4242))
        .expect("record");

    // The API's own events.
    assert_eq!(f.get("/v1/secrets/openai", &t).status, 200);
    assert_eq!(f.get("/v1/skills/web/secrets", &t).status, 200);
    let minted = f.mint(&t, &["pool"], 60).json();
    let minted_token = minted["token"].as_str().expect("token").to_string();
    assert_eq!(
        f.get("/v1/secrets/openai", minted_token.as_bytes()).status,
        403
    );
    assert_eq!(
        f.get(
            "/v1/secrets/openai",
            b"kw_0000000000000000_nottherightlength"
        )
        .status,
        401
    );
    assert!(eventually(Duration::from_secs(5), || f
        .get("/v1/secrets/short", &t)
        .status
        == 200
        && !f.resolves().is_empty()));
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("t")
        .as_secs()
        .to_string();
    let sig = slack::sign(f.value("slack_signing").as_bytes(), &ts, b"x=1");
    let req = serde_json::json!({"timestamp": ts, "signature": sig, "body": "x=1"}).to_string();
    assert_eq!(
        f.call(Method::POST, "/v1/slack/verify", Some(&t), Some(&req))
            .json()["valid"],
        true
    );
    assert_eq!(
        f.admin_call(
            Method::POST,
            "/v1/admin/revoke",
            Some("{\"id\":\"both\",\"reason\":\"r\"}")
        )
        .status,
        200
    );
    assert_eq!(
        f.admin_call(Method::POST, "/v1/admin/reload", None).status,
        200
    );
    assert_eq!(
        f.admin_call(Method::GET, "/v1/admin/inventory", None)
            .status,
        200
    );
    f.stop();

    run_audit
        .record(
            Event::new(EventKind::ChildExit)
                .status(143)
                .signal("SIGTERM")
                .result(Outcome::Ok),
        )
        .expect("record");
    run_audit
        .record(
            Event::new(EventKind::RedactionCounts)
                .counts(BTreeMap::from([("openai".to_string(), 2)])),
        )
        .expect("record");
    run_audit
        .record(Event::new(EventKind::RunStop).result(Outcome::Ok))
        .expect("record");

    let raw = std::fs::read_to_string(&f.audit_path).expect("audit");
    let events = f.audit();
    for kind in [
        "run_start",
        "run_stop",
        "resolve",
        "inject",
        "child_start",
        "child_exit",
        "api_call",
        "token_mint",
        "auth_failure",
        "revoke",
        "reload",
        "redaction_counts",
    ] {
        assert!(
            events.iter().any(|e| e["event"] == kind),
            "no {kind} event in\n{raw}"
        );
    }
    for e in &events {
        for field in [
            "ts",
            "event",
            "secret_id",
            "ref",
            "scope",
            "env",
            "actor",
            "result",
            "reason",
        ] {
            assert!(e.get(field).is_some(), "{field} missing: {e}");
        }
    }
    let api_call = events
        .iter()
        .find(|e| e["event"] == "api_call" && e["call"] == "GET /v1/secrets/openai")
        .expect("api_call");
    assert_eq!(api_call["ref"], "kv://openai/dev");
    assert_eq!(api_call["actor"]["uid"], 0);
    assert!(api_call["actor"]["token_id"].is_string());
    assert!(api_call["actor"]["exe"].is_string());
    assert_eq!(mode(&f.audit_path), 0o600);
    // Where a leak is, by secret and encoding: never the value itself.
    let mut leaks: Vec<String> = Vec::new();
    let mut secrets: Vec<(String, String)> = SECRETS
        .iter()
        .map(|(id, ..)| (id.to_string(), f.value(id)))
        .collect();
    secrets.push((
        "child token".into(),
        String::from_utf8(t.clone()).expect("token"),
    ));
    secrets.push(("minted token".into(), minted_token));
    for (name, s) in &secrets {
        for (i, form) in encodings(s).iter().enumerate() {
            if raw.contains(form.as_str()) {
                leaks.push(format!("{name} (encoding #{i})"));
            }
        }
        // The secret part of a token alone: its last 43 characters.
        if s.starts_with("kw_") && raw.contains(&s[s.len() - 43..]) {
            leaks.push(format!("{name} (secret part)"));
        }
    }
    assert!(leaks.is_empty(), "secrets in the audit log: {leaks:?}");
}

#[test]
fn reload_replaces_the_secrets() {
    let f = Fixture::new();
    let t = f.token.clone();
    let old = f.value("shared");
    let new = fresh_value("shared");
    f.source
        .lock()
        .expect("lock")
        .values
        .insert("shared".into(), new.clone());
    assert_eq!(f.get("/v1/secrets/shared", &t).json()["value"], old);
    let a = f.admin_call(Method::POST, "/v1/admin/reload", None);
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["secrets"], SECRETS.len());
    assert_eq!(f.get("/v1/secrets/shared", &t).json()["value"], new);
    assert_eq!(
        f.admin_call(Method::GET, "/v1/admin/reload", None).status,
        405
    );
}

/// Raise the soft limit on open files to `want` (within the hard limit).
fn allow_open_files(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).expect("setrlimit");
    }
}

/// Whether the server closed `s` (EOF or reset) within `limit`.
fn closed_within(s: &mut std::os::unix::net::UnixStream, limit: Duration) -> bool {
    use std::io::{ErrorKind, Read};
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => {
                eprintln!("closed: end of file");
                return true;
            }
            Ok(_) => continue, // a reply to an earlier request
            // A read with a timeout is not restarted after a signal
            // handler runs: not a close.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => {
                eprintln!("closed: {e}");
                return true;
            }
        }
    }
}

/// One request on `s`, returning the status line.
fn request_on(s: &mut std::os::unix::net::UnixStream, token: &[u8]) -> String {
    use std::io::{Read, Write};
    let req = format!(
        "GET /v1/secrets/openai HTTP/1.1\r\nHost: kw\r\nAuthorization: Bearer {}\r\n\r\n",
        String::from_utf8_lossy(token)
    );
    s.write_all(req.as_bytes()).expect("write");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).expect("read reply");
        assert!(n > 0, "closed instead of answering");
        got.extend_from_slice(&buf[..n]);
    }
    // The whole body (Content-Length) before the next request.
    let text = String::from_utf8_lossy(&got).into_owned();
    let head_end = text.find("\r\n\r\n").expect("head") + 4;
    let len: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().expect("length"))
        })
        .expect("content-length");
    while got.len() < head_end + len {
        let n = s.read(&mut buf).expect("read body");
        assert!(n > 0, "closed mid-body");
        got.extend_from_slice(&buf[..n]);
    }
    text.lines().next().unwrap_or_default().to_string()
}

/// A call through the hyper client on a thread of its own: its status, or
/// `None` when it did not answer within `limit`.
fn call_within(f: &Fixture, limit: Duration) -> Option<u16> {
    let (socket, token) = (f.socket(), f.token.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let a = client::call(
            &socket,
            Method::GET,
            "/v1/secrets/openai",
            Some(&token),
            None,
        );
        let _ = tx.send(a.map(|a| a.status).unwrap_or(0));
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn review_09_a_thousand_idle_connections_never_lock_the_child_out() {
    allow_open_files(4096);
    let f = Fixture::new();
    let socket = f.socket();
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        if i % 2 == 1 {
            // Half of them start a head and never finish it.
            use std::io::Write;
            s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: kw\r\n")
                .expect("write");
        }
        idle.push(s);
    }
    let started = Instant::now();
    assert_eq!(
        call_within(&f, Duration::from_secs(5)),
        Some(200),
        "the child's call is served while 1,000 connections of its uid idle"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The oldest of them made room: closed by the server.
    assert!(closed_within(&mut idle[0], Duration::from_secs(5)));
    // A newer connection that sends a request is served too.
    let mut fresh = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    assert!(request_on(&mut fresh, &f.token).starts_with("HTTP/1.1 200"));
}

#[test]
fn review_09_headerless_and_idle_connections_are_closed() {
    let head = Duration::from_millis(400);
    let idle = Duration::from_millis(1200);
    let f = Fixture::with_limits(ConnLimits {
        head,
        idle,
        ..ConnLimits::default()
    });
    let socket = f.socket();
    let connect = || std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    // Nothing sent: closed after the head timeout.
    let mut silent = connect();
    let t = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)));
    assert!(
        t.elapsed() >= head - Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );
    // Half a head: closed too.
    let mut partial = connect();
    {
        use std::io::Write;
        partial
            .write_all(b"GET /v1/health HTTP/1.1\r\n")
            .expect("write");
    }
    assert!(closed_within(&mut partial, Duration::from_secs(5)));
    // Between requests a connection may idle longer than the head
    // timeout, not longer than the idle one.
    let mut keep = connect();
    assert!(request_on(&mut keep, &f.token).starts_with("HTTP/1.1 200"));
    std::thread::sleep(head + Duration::from_millis(300));
    assert!(request_on(&mut keep, &f.token).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    assert!(closed_within(&mut keep, Duration::from_secs(5)));
    assert!(
        t.elapsed() >= idle - Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    // The API still answers.
    assert_eq!(call_within(&f, Duration::from_secs(5)), Some(200));
}

/// A client that shuts its side of the socket down once its request is
/// sent (as `nc -N` and `socat` do) still gets the reply: at once, and
/// when the reply waits for a resolution (a value past its TTL), which
/// the end of the client's input used to cut short.
#[test]
fn a_client_that_half_closes_after_its_request_gets_the_reply() {
    use std::io::{Read, Write};
    let f = Fixture::new();
    let ask = |id: &str| -> String {
        let mut s = std::os::unix::net::UnixStream::connect(f.socket()).expect("connect");
        let req = format!(
            "GET /v1/secrets/{id} HTTP/1.1\r\nHost: kw\r\nAuthorization: Bearer {}\r\n\r\n",
            String::from_utf8_lossy(&f.token)
        );
        s.write_all(req.as_bytes()).expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        reply.get(..reply.len().min(40)).unwrap_or("").to_string()
    };
    for i in 0..20 {
        let reply = ask("openai");
        assert!(reply.starts_with("HTTP/1.1 200"), "request {i}: {reply:?}");
    }
    f.source.lock().expect("lock").delay = Duration::from_millis(300);
    for i in 0..2 {
        // "short" lives 1 s: the next call resolves it again.
        std::thread::sleep(Duration::from_millis(1100));
        let reply = ask("short");
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "slow request {i}: {reply:?}"
        );
    }
    assert!(f.resolves().iter().filter(|id| *id == "short").count() >= 2);
}

#[test]
fn review_09_default_head_timeout_is_ten_seconds() {
    let f = Fixture::new();
    let mut s = std::os::unix::net::UnixStream::connect(f.socket()).expect("connect");
    let t = Instant::now();
    // Closed at 10 s: not before, and not much later (a loaded machine
    // may be a few seconds late).
    assert!(closed_within(&mut s, Duration::from_secs(30)));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(9_500) && took < Duration::from_secs(25),
        "{took:?}"
    );
    assert_eq!(ConnLimits::default().idle, Duration::from_secs(60));
}
