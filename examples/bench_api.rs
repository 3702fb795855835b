//! `GET /v1/secrets/{id}` against a bare hyper server on a unix socket that
//! returns the same bytes with the same headers, in the same run: requests
//! per second and p50/p99 latency, one connection sequential and 16
//! keep-alive connections at once, plus each server thread's CPU time per
//! request (from `/proc/self/task/<tid>/schedstat`).
//!
//! The machine is shared, so the two servers are measured interleaved in
//! small chunks (bare, keywarden, bare, ...): both see the same load.
//!
//! With `--idle N`, N connections of this uid are first opened to
//! keywarden's socket and left idle (half of them with half a request
//! head), and the latency of a fresh connection's first call is measured
//! alongside (the per-uid cap evicts the oldest idle ones to serve it).
//!
//! cargo run --release --example bench_api [-- --audit] [-- --chunks N] [-- --idle N]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response};
use hyper_util::rt::TokioIo;
use keywarden::api::{self as kwapi, ApiOptions, Callbacks, ServedSecret};
use keywarden::audit::{hex, Auditor};
use keywarden::client::Connection;
use keywarden::config::{Approval, Environment};
use keywarden::error::Error;
use keywarden::secret::{SecretBytes, SecretRef};

const SEQ_CHUNK: usize = 1_000;
const CONNECTIONS: usize = 16;
const CONC_CHUNK_PER_CONNECTION: usize = 125;
const WARMUP: usize = 2_000;

/// Nanoseconds the named thread of this process has run on a CPU.
fn thread_cpu_ns(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            return stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

#[derive(Default)]
struct Sample {
    lat: Vec<Duration>,
    wall: Duration,
    cpu_ns: u64,
}

impl Sample {
    fn report(&mut self) -> (f64, Duration, Duration, f64) {
        self.lat.sort_unstable();
        let n = self.lat.len();
        let at = |q: f64| self.lat[((n as f64 * q) as usize).min(n - 1)];
        (
            n as f64 / self.wall.as_secs_f64(),
            at(0.50),
            at(0.99),
            self.cpu_ns as f64 / n as f64 / 1000.0,
        )
    }
}

/// The same bytes, with the same headers, and nothing else.
fn start_bare(path: &Path, body: Bytes) {
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let spawned = std::thread::Builder::new()
        .name("bare-hyper".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let body = body.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |_req| {
                            let mut r = Response::new(Full::new(body.clone()));
                            let h = r.headers_mut();
                            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                            async move { Ok::<_, Infallible>(r) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
    spawned.expect("thread");
}

async fn get(c: &mut Connection, token: &[u8]) {
    let a = c
        .send(Method::GET, "/v1/secrets/bench", Some(token), None)
        .await
        .expect("send");
    assert_eq!(a.status, 200);
}

async fn sequential_chunk(c: &mut Connection, token: &[u8], thread: &str, s: &mut Sample) {
    let cpu = thread_cpu_ns(thread);
    let start = Instant::now();
    for _ in 0..SEQ_CHUNK {
        let t = Instant::now();
        get(c, token).await;
        s.lat.push(t.elapsed());
    }
    s.wall += start.elapsed();
    s.cpu_ns += thread_cpu_ns(thread) - cpu;
}

async fn concurrent_chunk(
    conns: Vec<Connection>,
    token: &[u8],
    thread: &str,
    s: &mut Sample,
) -> Vec<Connection> {
    let cpu = thread_cpu_ns(thread);
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let token = token.to_vec();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(CONC_CHUNK_PER_CONNECTION);
                for _ in 0..CONC_CHUNK_PER_CONNECTION {
                    let t = Instant::now();
                    get(&mut c, &token).await;
                    lat.push(t.elapsed());
                }
                (c, lat)
            })
        })
        .collect();
    let mut back = Vec::with_capacity(CONNECTIONS);
    for t in tasks {
        let (c, lat) = t.await.expect("task");
        s.lat.extend(lat);
        back.push(c);
    }
    s.wall += start.elapsed();
    s.cpu_ns += thread_cpu_ns(thread) - cpu;
    back
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let audit_on = args.iter().any(|a| a == "--audit");
    let number = |flag: &str| -> Option<usize> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
    };
    let chunks = number("--chunks").unwrap_or(20);
    let idle_count = number("--idle").unwrap_or(0);
    let dir: PathBuf = std::env::temp_dir().join(format!("kw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut raw = [0u8; 20];
    keywarden::sys::random::fill(&mut raw).expect("randomness");
    let secret = ServedSecret {
        id: "bench".into(),
        reference: SecretRef::parse("kv://bench/dev").expect("ref"),
        scope: Box::new(["pool".into()]),
        ttl_seconds: Some(3600),
        approval: Approval::None,
        env_var: None,
        value: Some(SecretBytes::copy_from(hex(&raw).as_bytes())),
        resolved_at: SystemTime::now(),
        dates: Default::default(),
        lease: None,
        proxied: false,
    };
    let audit = if audit_on {
        Auditor::open(&dir.join("audit.jsonl"), Environment::Dev, None).expect("audit")
    } else {
        Auditor::disabled()
    };
    let opts = ApiOptions {
        socket: None,
        admin_socket: None,
        runtime_dir: dir.clone(),
        child_uid: nix::unistd::geteuid().as_raw(),
        child_gid: nix::unistd::getegid().as_raw(),
        child_groups: Vec::new(),
        child_scopes: vec!["pool".into()],
        env: Environment::Dev,
        max_ttl_seconds: None,
        slack_secret_id: None,
        revocation_list: dir.join("revocations.json"),
        audit,
        approval_key: None,
        limits: kwapi::conn::ConnLimits::default(),
    };
    let callbacks = Callbacks {
        resolve: Arc::new(|_| Err(Error::config("bench: no provider"))),
        reload: Arc::new(|| Err(Error::config("bench: no reload"))),
        mask_token: Arc::new(|_, _| {}),
    };
    let mut api = kwapi::start(opts, vec![secret], callbacks).expect("start");
    let token = api.take_child_token().expect("token").expose().to_vec();
    let socket = api.socket_path().to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let body = rt.block_on(async {
        let mut c = Connection::open(&socket).await.expect("connect");
        let a = c
            .send(Method::GET, "/v1/secrets/bench", Some(&token), None)
            .await
            .expect("send");
        assert_eq!(a.status, 200);
        Bytes::copy_from_slice(&a.body)
    });
    let bare = dir.join("bare.sock");
    start_bare(&bare, body.clone());
    let mut idle = Vec::with_capacity(idle_count);
    for i in 0..idle_count {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("idle connect");
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: kw\r\n");
        }
        idle.push(s);
    }
    let mut fresh = Vec::new();
    if idle_count > 0 {
        // A fresh connection's first call, while they idle.
        rt.block_on(async {
            for _ in 0..200 {
                let t = Instant::now();
                let mut c = Connection::open(&socket).await.expect("connect");
                get(&mut c, &token).await;
                fresh.push(t.elapsed());
            }
        });
        fresh.sort_unstable();
    }

    let servers = [(&bare, "bare-hyper"), (&socket, "keywarden-api")];
    let mut seq: [Sample; 2] = Default::default();
    let mut conc: [Sample; 2] = Default::default();
    rt.block_on(async {
        // One connection each, interleaved chunks.
        let mut one = Vec::new();
        for (path, _) in servers {
            let mut c = Connection::open(path).await.expect("connect");
            for _ in 0..WARMUP {
                get(&mut c, &token).await;
            }
            one.push(c);
        }
        for _ in 0..chunks {
            for (i, (_, thread)) in servers.iter().enumerate() {
                sequential_chunk(&mut one[i], &token, thread, &mut seq[i]).await;
            }
        }
        // Sixteen each, interleaved chunks.
        let mut many: Vec<Vec<Connection>> = Vec::new();
        for (path, _) in servers {
            let mut v = Vec::new();
            for _ in 0..CONNECTIONS {
                let mut c = Connection::open(path).await.expect("connect");
                for _ in 0..WARMUP / CONNECTIONS {
                    get(&mut c, &token).await;
                }
                v.push(c);
            }
            many.push(v);
        }
        for _ in 0..chunks {
            for (i, (_, thread)) in servers.iter().enumerate() {
                let conns = std::mem::take(&mut many[i]);
                many[i] = concurrent_chunk(conns, &token, thread, &mut conc[i]).await;
            }
        }
    });
    println!(
        "GET /v1/secrets/bench, {}-byte body, audit {}, {chunks} interleaved chunks per mode",
        body.len(),
        if audit_on { "on" } else { "off" }
    );
    println!(
        "| mode | server | requests | req/s | p50 µs | p99 µs | server CPU µs/req | req/s ratio |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, samples) in [
        ("1 connection, sequential", &mut seq),
        ("16 connections, keep-alive", &mut conc),
    ] {
        let n = samples[0].lat.len();
        let bare_r = samples[0].report();
        let api_r = samples[1].report();
        for (who, r) in [("bare hyper", bare_r), ("keywarden", api_r)] {
            println!(
                "| {name} | {who} | {n} | {:.0} | {} | {} | {:.2} | {:.2} |",
                r.0,
                us(r.1),
                us(r.2),
                r.3,
                r.0 / bare_r.0
            );
        }
    }
    if !fresh.is_empty() {
        println!(
            "with {idle_count} idle connections open: a fresh connection's first call p50 {} µs, p99 {} µs, max {} µs ({} calls)",
            us(fresh[fresh.len() / 2]),
            us(fresh[fresh.len() * 99 / 100]),
            us(fresh[fresh.len() - 1]),
            fresh.len()
        );
    }
    drop(idle);
    api.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
