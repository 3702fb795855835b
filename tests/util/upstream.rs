//! A real HTTPS upstream for the credential proxy's tests
//! (`tests/util/upstream.py` under python3), with a throwaway CA and a
//! certificate for 127.0.0.1 made by the `openssl` command at test time,
//! and a `Live` run of keywarden whose child waits while the test calls
//! the proxy with the child's own placeholder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{eventually, Dir};

/// The CA and the server's certificate, made once per test run.
pub struct Certs {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("kw-ca-")
            .tempdir()
            .expect("tmp");
        let d = dir.path();
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("ext");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let run = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl");
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=keywarden test CA",
        ]);
        run(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(&csr);
        run(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Certs {
            ca: d.join("ca.pem"),
            cert: d.join("srv.pem"),
            key: d.join("srv.key"),
            _dir: dir,
        }
    })
}

/// The upstream process; killed on drop.
pub struct Upstream {
    pub port: u16,
    pub state: PathBuf,
    child: Child,
}

impl Upstream {
    /// Serve HTTPS (or plain HTTP) accepting the key in `key_file`.
    pub fn start(dir: &Dir, key_file: &Path, tls: bool) -> Upstream {
        let state = dir.join("upstream");
        std::fs::create_dir_all(&state).expect("state");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/util/upstream.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(&state).arg(key_file);
        if tls {
            let c = certs();
            cmd.arg(&c.cert).arg(&c.key);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        let port_file = state.join("port");
        assert!(
            eventually(Duration::from_secs(20), || port_file.exists()),
            "the upstream did not start"
        );
        let port = std::fs::read_to_string(&port_file)
            .expect("port")
            .trim()
            .parse()
            .expect("port number");
        Upstream { port, state, child }
    }

    /// The base URL with `path` (e.g. `/v1`).
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Every request it got: (method, path, key_ok).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("requests.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Stop it now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running keywarden whose child wrote its environment to `child.env`
/// and waits for `stop` to appear.
pub struct Live {
    pub kw: Child,
    pub env: Vec<(String, String)>,
    stop: PathBuf,
}

impl Live {
    /// `keywarden run --env dev --registry reg.yaml OPTS -- sh -c ...` in
    /// `dir`, waiting until the child has written its environment.
    pub fn start(dir: &Dir, opts: &[&str]) -> Live {
        let script = "echo $$ > child.pid; cat /proc/self/environ > child.environ; env > child.env.tmp; mv child.env.tmp child.env; while [ ! -f stop ]; do sleep 0.02; done";
        let mut args = vec!["run", "--env", "dev", "--registry", "reg.yaml"];
        args.extend_from_slice(opts);
        args.extend(["--", "sh", "-c", script]);
        let kw = super::kw(dir, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keywarden");
        let env_file = dir.join("child.env");
        let mut live = Live {
            kw,
            env: Vec::new(),
            stop: dir.join("stop"),
        };
        if !eventually(Duration::from_secs(20), || env_file.exists()) {
            let _ = live.kw.kill();
            let out = live.kw.wait_with_output_ref();
            panic!("the child did not start: {out}");
        }
        live.env = std::fs::read_to_string(&env_file)
            .expect("env")
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        live
    }

    /// A variable of the child's environment.
    pub fn var(&self, name: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the child has no {name}"))
    }

    /// Let the child end; keywarden's exit status and output.
    pub fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        std::fs::write(&self.stop, "").expect("stop");
        let status =
            super::wait_timeout(&mut self.kw, Duration::from_secs(20)).expect("keywarden ended");
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read;
        if let Some(mut o) = self.kw.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.kw.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, out, err)
    }
}

trait OutputRef {
    fn wait_with_output_ref(&mut self) -> String;
}

impl OutputRef for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

/// `curl` with `args`: (HTTP status, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "-S", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Send raw bytes to `addr` and read the answer until the server closes
/// the connection (or 10 s pass).
pub fn raw(addr: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
