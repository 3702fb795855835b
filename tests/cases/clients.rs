//! The client snippets of `examples/clients/README.md` and the helpers
//! beside it (`keywarden_client.py`, `keywarden_client.js`), each run as the
//! child of a live `keywarden run` with a real registry and policy: the
//! interpreter talks to the real socket and must get the real values.
//!
//! Output is not redacted here (`--no-redact`) so that the values printed
//! can be compared with the ones the registry's files hold.

use std::path::{Path, PathBuf};
use std::process::Output;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::util::{kw, need, output, secret, stderr, stdout, venv_bin, Dir};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clients")
}

/// The fenced blocks of examples/clients/README.md whose info string is
/// `lang`, in order.
fn snippets(lang: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(clients_dir().join("README.md")).expect("README");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match current.as_mut() {
            None if line == format!("```{lang}") => current = Some(String::new()),
            None => {}
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

fn snippet(lang: &str, containing: &str) -> String {
    snippets(lang)
        .into_iter()
        .find(|s| s.contains(containing))
        .unwrap_or_else(|| {
            panic!("no ```{lang} block with '{containing}' in examples/clients/README.md")
        })
}

/// A sidecar's configuration: `openai` (llm:chat) and `shared` (pool) for
/// the child, and the Slack signing secret, which the child may not read.
struct Sidecar {
    dir: Dir,
    openai: String,
    shared: String,
    signing: String,
}

impl Sidecar {
    fn new() -> Sidecar {
        let dir = Dir::new();
        let (openai, shared, signing) = (secret(40), secret(32), secret(32));
        dir.write("secrets/openai", &openai);
        dir.write("secrets/shared", &shared);
        dir.write("secrets/signing", &signing);
        dir.write(
            "reg.yaml",
            "openai:\n  dev:\n    secret_ref: \"file://secrets/openai\"\n    scope: [\"llm:chat\"]\n\
             shared:\n  dev:\n    secret_ref: \"file://secrets/shared\"\n    scope: [\"pool\"]\n\
             slack_signing:\n  dev:\n    secret_ref: \"file://secrets/signing\"\n    scope: [\"internal\"]\n",
        );
        dir.write(
            "pol.json",
            r#"{"allowed_secrets": ["openai", "shared", "slack_signing"],
                "allowed_schemes": ["file"],
                "max_ttl_seconds": {"dev": 3600},
                "child_scopes": ["pool", "llm:chat"],
                "slack_signing_secret": "slack_signing"}"#,
        );
        Sidecar {
            dir,
            openai,
            shared,
            signing,
        }
    }

    /// `keywarden run ... -- PROGRAM` with `env` added, to completion.
    fn run(&self, program: &[&str], env: &[(&str, &str)]) -> Output {
        let mut args = vec![
            "run",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--policy",
            "pol.json",
            "--no-redact",
            "--",
        ];
        args.extend_from_slice(program);
        let mut cmd = kw(&self.dir, &args);
        cmd.envs(env.iter().copied());
        let out = output(&mut cmd);
        assert!(
            out.status.success(),
            "{program:?}: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        out
    }

    /// Slack's documented signature of `body` at `timestamp`:
    /// `v0=` + hex(HMAC-SHA256(signing secret, "v0:{timestamp}:{body}")).
    fn slack_signature(&self, timestamp: &str, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.signing.as_bytes()).expect("key");
        mac.update(format!("v0:{timestamp}:{body}").as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("v0={hex}")
    }
}

fn now_unix() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string()
}

/// The `.venv` interpreter with httpx, installed on first use from PyPI
/// under a lock (tests run in parallel, and so may several test runs).
#[test]
fn issue14_05_shell_snippet_gets_a_secret_with_keywarden_get_and_curl() {
    need("curl");
    let s = Sidecar::new();
    // `keywarden get` on the child's PATH, as after an install.
    let bin_dir = Path::new(crate::util::bin()).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = s.run(
        &["sh", "-c", &snippet("sh", "keywarden get")],
        &[("PATH", &path)],
    );
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(s.openai.as_str()),
        "keywarden get: {text}"
    );
    let answer: serde_json::Value =
        serde_json::from_str(lines.next().unwrap_or_default()).expect("curl's answer is JSON");
    assert_eq!(answer["id"], "openai");
    assert_eq!(answer["value"], s.openai.as_str());
}

#[test]
fn issue14_05_python_stdlib_snippet_gets_a_secret() {
    need("python3");
    let s = Sidecar::new();
    let program = snippet("python", "http.client") + "\nprint(keywarden_get(\"openai\"))\n";
    let out = s.run(&["python3", "-c", &program], &[]);
    assert_eq!(stdout(&out), format!("{}\n", s.openai));
}

#[test]
fn issue14_05_httpx_snippet_gets_a_secret() {
    need("python3");
    let python = venv_bin("python");
    let s = Sidecar::new();
    let program = snippet("python", "import httpx") + "\nprint(keywarden_get(\"openai\"))\n";
    let out = s.run(&[python.to_str().expect("path"), "-c", &program], &[]);
    assert_eq!(stdout(&out), format!("{}\n", s.openai));
}

#[test]
fn issue14_05_node_snippet_gets_a_secret() {
    need("node");
    let s = Sidecar::new();
    let program = snippet("js", "socketPath")
        + "\nkeywardenGet(\"openai\").then((v) => console.log(v), (e) => { console.error(e.message); process.exit(1); });\n";
    let out = s.run(&["node", "-e", &program], &[]);
    assert_eq!(stdout(&out), format!("{}\n", s.openai));
}

/// What both helpers must print for the same driver (see below).
fn helper_transcript(s: &Sidecar) -> String {
    format!(
        "get openai {openai}\n\
         narrow scopes pool\n\
         narrow shared {shared}\n\
         narrow openai 403\n\
         signing secret 403\n\
         unknown 404\n\
         slack genuine true none\n\
         slack tampered false some\n\
         token hidden true\n",
        openai = s.openai,
        shared = s.shared
    )
}

/// Slack's request: timestamp, signature and body, for the child's env.
fn slack_request(s: &Sidecar) -> [(&'static str, String); 3] {
    let ts = now_unix();
    let body = "token=abc&team_id=T0001&command=%2Fweather&text=94070".to_string();
    let sig = s.slack_signature(&ts, &body);
    [("SLACK_TS", ts), ("SLACK_SIG", sig), ("SLACK_BODY", body)]
}

const PYTHON_DRIVER: &str = r#"
import os, sys
sys.path.insert(0, os.environ["CLIENTS"])
from keywarden_client import Keywarden, KeywardenError

def status(f):
    try:
        f()
        return "200"
    except KeywardenError as e:
        return str(e.status)

kw = Keywarden()
print("get openai", kw.get("openai"))
narrow = kw.mint(["pool"], 60)
print("narrow scopes", " ".join(narrow.scopes))
print("narrow shared", narrow.get("shared"))
print("narrow openai", status(lambda: narrow.get("openai")))
print("signing secret", status(lambda: kw.get("slack_signing")))
print("unknown", status(lambda: kw.get("no_such_secret")))
ts, sig, body = os.environ["SLACK_TS"], os.environ["SLACK_SIG"], os.environ["SLACK_BODY"]
v = kw.verify_slack(ts, sig, body.encode())
print("slack genuine", str(v.valid).lower(), "none" if v.reason is None else v.reason)
v = kw.verify_slack(ts, sig, body + "&admin=1")
print("slack tampered", str(v.valid).lower(), "some" if v.reason else "none")
print("token hidden", str(os.environ["KEYWARDEN_TOKEN"] not in repr(kw) + repr(narrow)).lower())
"#;

#[test]
fn issue14_05_python_helper_gets_mints_and_verifies_slack() {
    need("python3");
    let s = Sidecar::new();
    let slack = slack_request(&s);
    let clients = clients_dir();
    let mut env: Vec<(&str, &str)> = slack.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("CLIENTS", clients.to_str().expect("path")));
    let out = s.run(&["python3", "-c", PYTHON_DRIVER], &env);
    assert_eq!(stdout(&out), helper_transcript(&s));

    // The README's Slack snippet, on the same request.
    let program = snippet("python", "slack_request_is_genuine")
        + "\nimport os\nheaders = {\"X-Slack-Request-Timestamp\": os.environ[\"SLACK_TS\"], \"X-Slack-Signature\": os.environ[\"SLACK_SIG\"]}\n\
           print(slack_request_is_genuine(headers, os.environ[\"SLACK_BODY\"].encode()))\n\
           print(slack_request_is_genuine(headers, b\"forged\"))\n";
    env.push(("PYTHONPATH", clients.to_str().expect("path")));
    let out = s.run(&["python3", "-c", &program], &env);
    assert_eq!(stdout(&out), "True\nFalse\n");
}

const NODE_DRIVER: &str = r#"
const path = require("node:path");
const { Keywarden } = require(path.join(process.env.CLIENTS, "keywarden_client.js"));

async function status(p) {
  try {
    await p;
    return "200";
  } catch (e) {
    return String(e.status);
  }
}

(async () => {
  const kw = new Keywarden();
  console.log("get openai", await kw.get("openai"));
  const narrow = await kw.mint(["pool"], 60);
  console.log("narrow scopes", narrow.scopes.join(" "));
  console.log("narrow shared", await narrow.get("shared"));
  console.log("narrow openai", await status(narrow.get("openai")));
  console.log("signing secret", await status(kw.get("slack_signing")));
  console.log("unknown", await status(kw.get("no_such_secret")));
  const { SLACK_TS: ts, SLACK_SIG: sig, SLACK_BODY: body } = process.env;
  let v = await kw.verifySlack(ts, sig, Buffer.from(body));
  console.log("slack genuine", String(v.valid), v.reason === null ? "none" : v.reason);
  v = await kw.verifySlack(ts, sig, body + "&admin=1");
  console.log("slack tampered", String(v.valid), v.reason ? "some" : "none");
  const shown = require("node:util").inspect(kw) + JSON.stringify(narrow);
  console.log("token hidden", String(!shown.includes(process.env.KEYWARDEN_TOKEN)));
})().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
"#;

#[test]
fn issue14_05_node_helper_gets_mints_and_verifies_slack() {
    need("node");
    let s = Sidecar::new();
    let slack = slack_request(&s);
    let clients = clients_dir();
    let mut env: Vec<(&str, &str)> = slack.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("CLIENTS", clients.to_str().expect("path")));
    let out = s.run(&["node", "-e", NODE_DRIVER], &env);
    assert_eq!(stdout(&out), helper_transcript(&s));
}

#[test]
fn issue14_05_helpers_as_programs_print_a_secret_and_exit_like_keywarden_get() {
    need("python3");
    need("node");
    let s = Sidecar::new();
    let py = clients_dir().join("keywarden_client.py");
    let js = clients_dir().join("keywarden_client.js");
    let script = format!(
        "python3 {py} get openai; python3 {py} get no_such_secret; echo \"py $?\"; \
         node {js} get openai; node {js} get openai_not_here; echo \"js $?\"",
        py = py.display(),
        js = js.display()
    );
    let out = s.run(&["sh", "-c", &script], &[]);
    assert_eq!(
        stdout(&out),
        format!("{o}\npy 65\n{o}\njs 65\n", o = s.openai)
    );
}
