//! Against a real moto server (`.venv/bin/moto_server`, or `MOTO_SERVER`),
//! with signatures enforced after a few free calls.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keywarden::error::ErrorKind;
use keywarden::secret::providers::{AwsSmOptions, AwsSmProvider};
use keywarden::secret::providers::{Context, Provider, Request, ResolveError};
use keywarden::secret::SecretRef;

/// Free (unauthenticated) calls: CreateUser, CreateAccessKey,
/// PutUserPolicy, three CreateSecret, and CreateUser + CreateAccessKey for
/// a user without any policy, CreateRole + PutRolePolicy for web identity,
/// and the provider's own AssumeRoleWithWebIdentity.
const FREE_CALLS: usize = 11;
const REGION: &str = "us-east-1";

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Stopped by its own pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_moto() -> Moto {
    start_moto_on(free_port(), Some(FREE_CALLS))
}

fn start_moto_on(port: u16, free_calls: Option<usize>) -> Moto {
    let bin = std::env::var_os("MOTO_SERVER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::util::venv_bin("moto_server"));
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(n) = free_calls {
        cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    moto
}

/// One raw HTTP/1.1 POST with a dummy (unchecked) signature naming
/// `service`: only valid during the free calls.
fn raw_post(
    port: u16,
    service: &str,
    extra: &[(&str, &str)],
    ctype: &str,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: {ctype}\r\nContent-Length: {}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=setup/20250101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=00\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body.as_bytes()))
        .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn xml_tag(body: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = body.find(&open).expect("tag in answer") + open.len();
    let end = body[start..].find("</").expect("closing tag") + start;
    body[start..end].to_string()
}

fn iam(port: u16, pairs: &[(&str, &str)]) -> String {
    let mut all = pairs.to_vec();
    all.push(("Version", "2010-05-08"));
    let (status, body) = raw_post(
        port,
        "iam",
        &[],
        "application/x-www-form-urlencoded",
        &form(&all),
    );
    assert_eq!(status, 200, "IAM {:?}", pairs.first());
    body
}

fn create_secret(port: u16, json: &serde_json::Value) {
    let (status, body) = raw_post(
        port,
        "secretsmanager",
        &[("X-Amz-Target", "secretsmanager.CreateSecret")],
        "application/x-amz-json-1.1",
        &json.to_string(),
    );
    assert_eq!(status, 200, "CreateSecret: {body}");
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{nanos:x}", std::process::id())
}

struct Fixture {
    moto: Moto,
    key_id: String,
    secret_key: String,
    bare_key_id: String,
    bare_secret_key: String,
    string_value: String,
    json_value: String,
    binary_value: Vec<u8>,
}

fn setup() -> Fixture {
    let moto = start_moto();
    let port = moto.port;
    iam(port, &[("Action", "CreateUser"), ("UserName", "reader")]);
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#;
    let key = iam(
        port,
        &[("Action", "CreateAccessKey"), ("UserName", "reader")],
    );
    iam(
        port,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "reader"),
            ("PolicyName", "read"),
            ("PolicyDocument", policy),
        ],
    );
    let string_value = unique("sv");
    let json_value = unique("jv");
    let binary_value: Vec<u8> = {
        let mut v = vec![0u8, 0xff, 0x10, b'\n'];
        v.extend_from_slice(unique("bv").as_bytes());
        v
    };
    use base64::Engine;
    create_secret(
        port,
        &serde_json::json!({"Name": "app/plain", "SecretString": string_value}),
    );
    create_secret(
        port,
        &serde_json::json!({"Name": "app/json",
            "SecretString": serde_json::json!({"user": "svc", "password": json_value, "port": 5432}).to_string()}),
    );
    create_secret(
        port,
        &serde_json::json!({"Name": "app/bin",
            "SecretBinary": base64::engine::general_purpose::STANDARD.encode(&binary_value)}),
    );
    iam(port, &[("Action", "CreateUser"), ("UserName", "bare")]);
    let bare = iam(port, &[("Action", "CreateAccessKey"), ("UserName", "bare")]);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"accounts.example.com"},"Action":"sts:AssumeRoleWithWebIdentity"}]}"#;
    iam(
        port,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "reader-role"),
            ("AssumeRolePolicyDocument", trust),
        ],
    );
    iam(
        port,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "reader-role"),
            ("PolicyName", "read"),
            ("PolicyDocument", policy),
        ],
    );
    Fixture {
        bare_key_id: xml_tag(&bare, "AccessKeyId"),
        bare_secret_key: xml_tag(&bare, "SecretAccessKey"),
        key_id: xml_tag(&key, "AccessKeyId"),
        secret_key: xml_tag(&key, "SecretAccessKey"),
        moto,
        string_value,
        json_value,
        binary_value,
    }
}

fn ctx(vars: &[(&str, &str)]) -> Context {
    let env: HashMap<OsString, OsString> = vars.iter().map(|(k, v)| (k.into(), v.into())).collect();
    Context::new(env, &[])
}

fn request(r: &str) -> Request {
    Request {
        label: "t".into(),
        reference: SecretRef::parse(r).expect("a ref"),
        base_dir: std::path::Path::new(".").into(),
    }
}

fn provider() -> AwsSmProvider {
    AwsSmProvider::with_options(AwsSmOptions {
        request_timeout: Duration::from_secs(3),
        attempts: 3,
        backoff: Duration::from_millis(50),
    })
}

fn assert_clean(e: &ResolveError, f: &Fixture) {
    let text = format!("{e} {e:?}");
    for s in [
        &f.key_id,
        &f.secret_key,
        &f.bare_key_id,
        &f.bare_secret_key,
        &f.string_value,
        &f.json_value,
    ] {
        assert!(
            !text.contains(s.as_str()),
            "an error leaks a key or value: {text}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn against_moto() {
    let f = setup();
    let endpoint = format!("http://127.0.0.1:{}", f.moto.port);
    let good = ctx(&[
        ("AWS_ACCESS_KEY_ID", &f.key_id),
        ("AWS_SECRET_ACCESS_KEY", &f.secret_key),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL_SECRETSMANAGER", &endpoint),
    ]);
    let p = provider();

    // Web identity, first: moto answers an unsigned AssumeRoleWithWebIdentity
    // only as a free call (with checks on it fails with a 500 for want of an
    // Authorization header), so the login is free call 11. The temporary
    // credentials (with a session token) then sign GetSecretValue, checked.
    let token_path = std::env::temp_dir().join(unique("web-identity"));
    std::fs::write(&token_path, format!("{}\n", unique("jwt"))).expect("token file");
    let web = ctx(&[
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_path.to_str().expect("utf-8"),
        ),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/reader-role"),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL", &endpoint),
    ]);
    let pw = provider();
    let v = pw
        .resolve(&request("aws-sm://app/json#password"), &web)
        .await;
    let _ = std::fs::remove_file(&token_path);
    let v = v.expect("web identity");
    assert_eq!(v.expose(), f.json_value.as_bytes());

    // A string secret.
    let v = p
        .resolve(&request("aws-sm://app/plain"), &good)
        .await
        .expect("string");
    assert_eq!(v.expose(), f.string_value.as_bytes());

    // A JSON key, string and non-string; a missing key lists key names only.
    let v = p
        .resolve(&request("aws-sm://app/json#password"), &good)
        .await
        .expect("key");
    assert_eq!(v.expose(), f.json_value.as_bytes());
    let v = p
        .resolve(&request("aws-sm://app/json#port"), &good)
        .await
        .expect("port");
    assert_eq!(v.expose(), b"5432");
    let e = p
        .resolve(&request("aws-sm://app/json#nope"), &good)
        .await
        .expect_err("no key");
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(
        e.reason.contains("password") && e.reason.contains("user"),
        "{e}"
    );
    assert_clean(&e, &f);

    // A binary secret, decoded.
    let v = p
        .resolve(&request("aws-sm://app/bin"), &good)
        .await
        .expect("binary");
    assert_eq!(v.expose(), f.binary_value.as_slice());

    // Not found → 69.
    let e = p
        .resolve(&request("aws-sm://app/missing"), &good)
        .await
        .expect_err("missing");
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.reason.contains("not found"), "{e}");
    assert_clean(&e, &f);

    // AWS_ENDPOINT_URL and AWS_DEFAULT_REGION are read too.
    let other = ctx(&[
        ("AWS_ACCESS_KEY_ID", &f.key_id),
        ("AWS_SECRET_ACCESS_KEY", &f.secret_key),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_ENDPOINT_URL", &endpoint),
    ]);
    let v = p
        .resolve(&request("aws-sm://app/plain"), &other)
        .await
        .expect("fallbacks");
    assert_eq!(v.expose(), f.string_value.as_bytes());

    // A wrong secret key → 77, and the error names neither key.
    let wrong_secret: String = f.secret_key.chars().rev().collect();
    let bad = ctx(&[
        ("AWS_ACCESS_KEY_ID", &f.key_id),
        ("AWS_SECRET_ACCESS_KEY", &wrong_secret),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL_SECRETSMANAGER", &endpoint),
    ]);
    let e = p
        .resolve(&request("aws-sm://app/plain"), &bad)
        .await
        .expect_err("wrong key");
    assert_eq!(e.kind, ErrorKind::Permission, "{e}");
    assert!(!e.reason.contains(&wrong_secret), "{e}");
    assert_clean(&e, &f);
    assert!(e.reason.contains("SignatureDoesNotMatch"), "{e}");
    eprintln!("wrong key: {e}");

    // An unknown key id → 77.
    let unknown = ctx(&[
        (
            "AWS_ACCESS_KEY_ID",
            &unique("KEYID").to_uppercase().replace('-', ""),
        ),
        ("AWS_SECRET_ACCESS_KEY", &wrong_secret),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL_SECRETSMANAGER", &endpoint),
    ]);
    let e = p
        .resolve(&request("aws-sm://app/plain"), &unknown)
        .await
        .expect_err("unknown key");
    assert_eq!(e.kind, ErrorKind::Permission, "{e}");
    assert_clean(&e, &f);
    assert!(e.reason.contains("InvalidClientTokenId"), "{e}");
    eprintln!("unknown key id: {e}");

    // A valid key whose user has no policy → 77 (AccessDenied).
    let bare = ctx(&[
        ("AWS_ACCESS_KEY_ID", &f.bare_key_id),
        ("AWS_SECRET_ACCESS_KEY", &f.bare_secret_key),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL_SECRETSMANAGER", &endpoint),
    ]);
    let e = p
        .resolve(&request("aws-sm://app/plain"), &bare)
        .await
        .expect_err("no policy");
    assert_eq!(e.kind, ErrorKind::Permission, "{e}");
    assert_clean(&e, &f);
    eprintln!("no policy: {e}");

    // No region → 78.
    let noregion = ctx(&[
        ("AWS_ACCESS_KEY_ID", &f.key_id),
        ("AWS_SECRET_ACCESS_KEY", &f.secret_key),
    ]);
    let e = p
        .resolve(&request("aws-sm://app/plain"), &noregion)
        .await
        .expect_err("region");
    assert_eq!(e.kind, ErrorKind::Config, "{e}");

    // Server down → 69, quickly, after the retries.
    let port = f.moto.port;
    drop(f.moto);
    let _ = port;
    let down = ctx(&[
        ("AWS_ACCESS_KEY_ID", &f.key_id),
        ("AWS_SECRET_ACCESS_KEY", &f.secret_key),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL_SECRETSMANAGER", &endpoint),
    ]);
    let started = Instant::now();
    let e = provider()
        .resolve(&request("aws-sm://app/plain"), &down)
        .await
        .expect_err("down");
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.reason.contains("3 attempts"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    eprintln!("down: {e} in {:?}", started.elapsed());
}

/// A server that comes up while the provider is retrying is reached: the
/// answer is the server's ("not found"), not "cannot reach".
#[tokio::test(flavor = "current_thread")]
async fn retries_until_the_server_is_up() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        start_moto_on(port, None)
    });
    let c = ctx(&[
        ("AWS_ACCESS_KEY_ID", "setup"),
        ("AWS_SECRET_ACCESS_KEY", "setup"),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL_SECRETSMANAGER", &endpoint),
    ]);
    let p = AwsSmProvider::with_options(AwsSmOptions {
        request_timeout: Duration::from_secs(3),
        attempts: 8,
        backoff: Duration::from_millis(500),
    });
    let e = p
        .resolve(&request("aws-sm://absent"), &c)
        .await
        .expect_err("absent");
    let moto = starter.join().expect("moto started");
    drop(moto);
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.reason.contains("not found"), "{e}");
}

/// `aws-sm://` through `run` and `check`, against moto with signatures
/// checked from the fifth call on: the child gets the value, a 503 in
/// front of moto is retried, a wrong key is 77 and a dead endpoint 69 —
/// both before the child starts.
#[test]
fn aws_refs_through_run_and_check() {
    use crate::util::{kw, output, stderr, stdout, Dir};
    // CreateUser, CreateAccessKey, PutUserPolicy, CreateSecret.
    let moto = start_moto_on(free_port(), Some(4));
    let port = moto.port;
    iam(port, &[("Action", "CreateUser"), ("UserName", "agent")]);
    let key = iam(
        port,
        &[("Action", "CreateAccessKey"), ("UserName", "agent")],
    );
    iam(
        port,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "agent"),
            ("PolicyName", "read"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["secretsmanager:GetSecretValue","secretsmanager:PutSecretValue"],"Resource":"*"}]}"#,
            ),
        ],
    );
    let password = unique("pw");
    create_secret(
        port,
        &serde_json::json!({"Name": "agent/db",
            "SecretString": serde_json::json!({"user": "svc", "password": password}).to_string()}),
    );
    let (key_id, secret_key) = (
        xml_tag(&key, "AccessKeyId"),
        xml_tag(&key, "SecretAccessKey"),
    );
    let dir = Dir::new();
    dir.write(
        "reg.yaml",
        "db:\n  dev:\n    secret_ref: aws-sm://agent/db#password\n    env: DB_PASSWORD\n",
    );
    let kw_with = |endpoint: &str, secret: &str, args: &[&str]| {
        let mut cmd = kw(&dir, args);
        cmd.env("AWS_ACCESS_KEY_ID", &key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", REGION)
            .env("AWS_ENDPOINT_URL_SECRETSMANAGER", endpoint);
        output(&mut cmd)
    };
    let run_args = |check: &str| -> Vec<String> {
        [
            "run",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--resolve-timeout",
            "5s",
            "--",
            "sh",
            "-c",
            check,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let same = format!("[ \"$DB_PASSWORD\" = {password} ] && echo same; touch ran");
    let endpoint = format!("http://127.0.0.1:{port}");
    let assert_clean = |text: &str| {
        for hidden in [&secret_key, &password] {
            assert!(!text.contains(hidden.as_str()), "{text}");
        }
    };

    // check: resolved, by the aws-sm backend, no value shown.
    let out = kw_with(
        &endpoint,
        &secret_key,
        &[
            "check",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let row = &report["secrets"][0];
    assert_eq!(row["status"], "ok", "{report}");
    assert_eq!(row["backend"], "aws-sm", "{report}");
    assert_clean(&stdout(&out));

    // run: the child gets the value.
    let args = run_args(&same);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kw_with(&endpoint, &secret_key, &args);
    assert_eq!(stdout(&out), "same\n", "{}", stderr(&out));

    // A 503 in front of moto is retried.
    let proxy = super::harness::Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port)), 1);
    let out = kw_with(&proxy.addr, &secret_key, &args);
    assert_eq!(stdout(&out), "same\n", "{}", stderr(&out));
    assert!(proxy.count() >= 2, "{} connections", proxy.count());

    // A wrong secret key: 77, the child never starts.
    std::fs::remove_file(dir.join("ran")).expect("marker");
    let wrong: String = secret_key.chars().rev().collect();
    let out = kw_with(&endpoint, &wrong, &args);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(!dir.join("ran").exists());
    let err = stderr(&out);
    assert!(
        err.contains("aws-sm://agent/db#password") && !err.contains(&wrong),
        "{err}"
    );
    assert_clean(&err);

    // The socket's TTL is honoured: the value is rotated in Secrets Manager
    // (a signed PutSecretValue through boto3, which moto ships with) while
    // the child runs; after the 1 s TTL the child reads the new one.
    dir.write(
        "ttl.yaml",
        "db:\n  dev:\n    secret_ref: aws-sm://agent/db#password\n    scope: [pool]\n    max_ttl_seconds: 1\n",
    );
    let rotated = unique("pw2");
    let rotate = format!(
        "import boto3, json, sys\n\
         c = boto3.client('secretsmanager', endpoint_url='{endpoint}', region_name='{REGION}',\n\
             aws_access_key_id=sys.argv[1], aws_secret_access_key=sys.argv[2])\n\
         c.put_secret_value(SecretId='agent/db', SecretString=json.dumps({{'password': sys.argv[3]}}))\n"
    );
    let python = crate::util::venv_bin("python").display().to_string();
    let script = format!(
        "{kw} get db > first; {python} -c \"$1\" \"$2\" \"$3\" \"$4\" || echo rotate-failed; sleep 1.5; {kw} get db > second",
        kw = crate::util::bin()
    );
    let out = kw_with(
        &endpoint,
        &secret_key,
        &[
            "run",
            "--env",
            "dev",
            "--registry",
            "ttl.yaml",
            "--",
            "sh",
            "-c",
            &script,
            "sh",
            &rotate,
            &key_id,
            &secret_key,
            &rotated,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "{}", stderr(&out));
    assert_eq!(dir.read("first").trim(), password);
    assert_eq!(
        dir.read("second").trim(),
        rotated,
        "the TTL was not honoured"
    );

    // The endpoint down: 69 within the timeout, the child never starts.
    drop(moto);
    let started = Instant::now();
    let out = kw_with(&endpoint, &secret_key, &args);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(!dir.join("ran").exists());
    assert_clean(&stderr(&out));
}
