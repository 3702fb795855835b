//! keywarden against a 3-node OpenBao raft cluster: reading through a
//! standby, and what happens when the active node is SIGKILLed.
//!
//! What OpenBao 2.7 does (seen with the raw probes these tests print):
//! * by default a standby serves KV reads from its own raft replica, so it
//!   keeps answering 200 while there is no leader (and may answer 404 for a
//!   secret written a moment ago: reads are eventually consistent);
//! * with `disable_standby_reads = true` a standby forwards reads to the
//!   active node; while there is no leader it answers 307 with a `Location`
//!   on the dead node's address, and `/v1/sys/health` still says 429.

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cluster::{http, Answer, Cluster, Reads};
use super::harness::rand_hex;
use crate::util::{kw, output, stderr, stdout, Dir};

const PATH: &str = "/v1/secret/data/app/db";
const REF: &str = "vault://secret/app/db#password";

/// A scratch folder with a registry holding one `dev` ref.
fn registry() -> Dir {
    let dir = Dir::new();
    dir.write(
        "reg.yaml",
        format!("db:\n  dev:\n    secret_ref: {REF}\n    env: DB_PASSWORD\n"),
    );
    dir
}

/// Write the secret through the active node; its value.
fn write_secret(cluster: &Cluster) -> String {
    let password = rand_hex(16);
    cluster.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "app/db",
        &format!("password={password}"),
    ]);
    password
}

/// Wait until node `i` reads the secret itself (a reading standby
/// catches up with the active node's log).
fn wait_replicated(cluster: &Cluster, i: usize) -> Duration {
    let started = Instant::now();
    let ok = crate::util::eventually(Duration::from_secs(10), || {
        cluster
            .raw(i, "GET", PATH, None)
            .is_ok_and(|a| a.status == 200)
    });
    assert!(ok, "node {} never served the secret", i + 1);
    started.elapsed()
}

/// One `keywarden run`: its output, how long it took, whether the child
/// started (its marker file, looked at right after the run).
struct Ran {
    out: Output,
    took: Duration,
    child_started: bool,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} in {} ms, child started: {}, stdout {:?}, stderr {:?}",
            self.out.status.code(),
            self.took.as_millis(),
            self.child_started,
            stdout(&self.out).trim(),
            stderr(&self.out).trim()
        )
    }
}

/// `keywarden run --env dev` with `VAULT_ADDR=addr`; the child touches a
/// marker and says whether it got the value.
fn run(dir: &Dir, addr: &str, token: &str, password: &str, timeout: &str) -> Ran {
    let marker = dir.join("marker");
    let _ = std::fs::remove_file(&marker);
    let started = Instant::now();
    let out = output(
        kw(
            dir,
            &[
                "run",
                "--env",
                "dev",
                "--registry",
                "reg.yaml",
                "--resolve-timeout",
                timeout,
                "--",
                "sh",
                "-c",
                "touch marker; [ \"$DB_PASSWORD\" = \"$1\" ] && echo same",
                "sh",
                password,
            ],
        )
        .env("VAULT_ADDR", addr)
        .env("VAULT_TOKEN", token),
    );
    let took = started.elapsed();
    let child_started = marker.exists();
    let _ = std::fs::remove_file(&marker);
    Ran {
        out,
        took,
        child_started,
    }
}

fn check(dir: &Dir, addr: &str, token: &str) -> Output {
    output(
        kw(
            dir,
            &[
                "check",
                "--env",
                "dev",
                "--registry",
                "reg.yaml",
                "--format",
                "json",
            ],
        )
        .env("VAULT_ADDR", addr)
        .env("VAULT_TOKEN", token),
    )
}

#[track_caller]
fn assert_resolved(ran: &Ran) {
    assert_eq!(stdout(&ran.out), "same\n", "the child got the value: {ran}");
    assert!(ran.out.status.success() && ran.child_started, "{ran}");
}

/// Failed closed: 69, no child, the address named, no token.
#[track_caller]
fn assert_failed_closed(ran: &Ran, addr: &str, token: &str) {
    let err = stderr(&ran.out);
    assert_eq!(ran.out.status.code(), Some(69), "{ran}");
    assert!(!ran.child_started, "the child was started: {ran}");
    assert!(
        err.contains(addr.trim_start_matches("http://")),
        "names the address: {err}"
    );
    assert!(
        !err.contains(token) && !stdout(&ran.out).contains(token),
        "token shown"
    );
}

/// One line: a raw KV read and `/v1/sys/health`, as seen now.
fn probe_line(port: u16, token: &str, password: &str) -> String {
    let t = Duration::from_millis(1500);
    let kv = match http(port, "GET", PATH, Some(token), None, t) {
        Ok(a) => describe(&a, password),
        Err(e) => format!("no answer ({e})"),
    };
    let health = match http(port, "GET", "/v1/sys/health", None, None, t) {
        Ok(a) => format!("{} standby={}", a.status, a.json()["standby"]),
        Err(e) => format!("no answer ({e})"),
    };
    let leader = match http(port, "GET", "/v1/sys/leader", None, None, t) {
        Ok(a) => format!("{}", a.json()["leader_address"]),
        Err(e) => format!("no answer ({e})"),
    };
    format!("kv {kv} | health {health} | leader {leader}")
}

fn describe(a: &Answer, password: &str) -> String {
    let body = a.body.replace(password, "[value]");
    let body = if a.status == 200 {
        "{..data..}".to_string()
    } else {
        body.trim().chars().take(160).collect()
    };
    match a.header("Location") {
        Some(l) => format!("{} Location: {l} {body}", a.status),
        None => format!("{} {body}", a.status),
    }
}

/// Probe `ports` every 100 ms from now until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<String>>,
}

impl Prober {
    fn start(ports: Vec<(usize, u16)>, token: String, password: String, from: Instant) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut lines = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                for &(i, port) in &ports {
                    let at = from.elapsed().as_millis();
                    let line = probe_line(port, &token, &password);
                    lines.push(format!("  +{at:>5} ms node {}: {line}", i + 1));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            lines
        });
        Prober { stop, handle }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("prober")
    }
}

fn through_a_standby(test: &str, reads: Reads) {
    let Some(cluster) = Cluster::start_with(test, reads) else {
        return;
    };
    eprintln!(
        "{test}: cluster ({reads:?}) up in {} ms",
        cluster.started_in.as_millis()
    );
    let active = cluster.active().expect("active");
    let standby = cluster.standbys()[0];
    let dir = registry();
    let addr = cluster.addr(standby);
    let password = write_secret(&cluster);
    let first = cluster.raw(standby, "GET", PATH, None);
    let early = run(&dir, addr, cluster.token(), &password, "10s");
    let caught_up = wait_replicated(&cluster, standby);
    eprintln!(
        "{test}: node {} active, node {} standby; standby read right after the write: {}; \
         200 after {} ms; keywarden run right after the write: {early}",
        active + 1,
        standby + 1,
        first.map(|a| describe(&a, &password)).unwrap_or_else(|e| e),
        caught_up.as_millis()
    );
    // A reading standby may not have applied the write yet: its 404 is
    // reported as "not found" (69), never a wrong value or a started child.
    if !early.out.status.success() {
        assert_eq!(early.out.status.code(), Some(69), "{early}");
        assert!(!early.child_started, "{early}");
        assert!(stderr(&early.out).contains("not found"), "{early}");
    } else {
        assert_resolved(&early);
    }
    let out = check(&dir, addr, cluster.token());
    eprintln!("{test}: check via standby: exit {:?}", out.status.code());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"db\""), "{}", stdout(&out));
    assert!(!stdout(&out).contains(&password) && !stderr(&out).contains(&password));
    let ran = run(&dir, addr, cluster.token(), &password, "10s");
    eprintln!("{test}: run via standby: {ran}");
    assert_resolved(&ran);
}

#[test]
fn raft_reading_standby_serves_check_and_run() {
    through_a_standby("raft_reading_standby_serves_check_and_run", Reads::Standby);
}

#[test]
fn raft_forwarding_standby_serves_check_and_run() {
    through_a_standby(
        "raft_forwarding_standby_serves_check_and_run",
        Reads::Forwarded,
    );
}

/// Kill the active node; run keywarden against a survivor at once and
/// after the election, probing the survivors all along. The outcomes,
/// for the caller to judge.
struct Failover {
    cluster: Cluster,
    password: String,
    during: Ran,
    after: Ran,
    election: Duration,
}

fn failover(test: &str, reads: Reads) -> Option<Failover> {
    let mut cluster = Cluster::start_with(test, reads)?;
    eprintln!(
        "{test}: cluster ({reads:?}) up in {} ms",
        cluster.started_in.as_millis()
    );
    let password = write_secret(&cluster);
    let killed = cluster.active().expect("active");
    let survivors = cluster.standbys();
    assert_eq!(survivors.len(), 2, "two standbys");
    for &i in &survivors {
        wait_replicated(&cluster, i);
    }
    let survivor = survivors[0];
    let dir = registry();
    let ports = survivors
        .iter()
        .map(|&i| (i, cluster.nodes[i].port))
        .collect();

    cluster.kill(killed);
    let killed_at = Instant::now();
    let prober = Prober::start(ports, cluster.token().into(), password.clone(), killed_at);
    let during = run(
        &dir,
        cluster.addr(survivor),
        cluster.token(),
        &password,
        "10s",
    );
    let (new_active, elected_at) = cluster.wait_active(Duration::from_secs(30));
    let election = elected_at - killed_at;
    // Keep probing a little past the election.
    std::thread::sleep(Duration::from_millis(500));
    let lines = prober.finish();
    let after = run(
        &dir,
        cluster.addr(survivor),
        cluster.token(),
        &password,
        "10s",
    );
    eprintln!(
        "{test}: killed node {} (pid {}); node {} active {} ms after the kill\n\
         raw answers of the survivors (ms after the kill):\n{}\n\
         keywarden run via node {} at once: {during}\n\
         keywarden run via node {} after the election: {after}",
        killed + 1,
        cluster.nodes[killed].pid,
        new_active + 1,
        election.as_millis(),
        lines.join("\n"),
        survivor + 1,
        survivor + 1,
    );
    Some(Failover {
        cluster,
        password,
        during,
        after,
        election,
    })
}

/// Reading standbys keep serving their replica while there is no leader:
/// keywarden resolves through a survivor at once and after the election.
#[test]
fn raft_active_killed_reading_survivor_resolves() {
    let Some(f) = failover(
        "raft_active_killed_reading_survivor_resolves",
        Reads::Standby,
    ) else {
        return;
    };
    assert_resolved(&f.during);
    assert_resolved(&f.after);
}

/// Forwarding standbys answer 307 (to the dead node) while there is no
/// leader: keywarden started in that window fails closed (69, "unexpected
/// answer 307", not retried, never "not found"); after the election it
/// resolves.
#[test]
fn raft_active_killed_forwarding_survivor_fails_closed_then_resolves() {
    let test = "raft_active_killed_forwarding_survivor_fails_closed_then_resolves";
    let Some(f) = failover(test, Reads::Forwarded) else {
        return;
    };
    let ran = &f.during;
    if ran.out.status.success() {
        // Only when the election beat keywarden's first request.
        eprintln!("{test}: the election was over before keywarden asked");
        assert_resolved(ran);
    } else {
        let err = stderr(&ran.out);
        assert_eq!(ran.out.status.code(), Some(69), "{ran}");
        assert!(!ran.child_started, "the child was started: {ran}");
        assert!(err.contains(REF), "names the ref: {err}");
        assert!(
            !err.contains("not found"),
            "a leaderless standby is not a missing secret: {err}"
        );
        assert!(!err.contains(f.cluster.token()) && !err.contains(&f.password));
        assert!(ran.took < f.election + Duration::from_secs(5), "{ran}");
    }
    assert_resolved(&f.after);
}

/// `VAULT_ADDR` on the killed node: connection refused, retried, then 69
/// naming the address, within the resolve timeout, no child, no token.
#[test]
fn raft_killed_node_address_fails_closed() {
    let test = "raft_killed_node_address_fails_closed";
    let Some(mut cluster) = Cluster::start(test) else {
        return;
    };
    let password = write_secret(&cluster);
    let killed = cluster.active().expect("active");
    cluster.kill(killed);
    let dir = registry();
    let addr = cluster.addr(killed).to_string();
    let ran = run(&dir, &addr, cluster.token(), &password, "5s");
    eprintln!("{test}: run via the killed node {addr}: {ran}");
    assert_failed_closed(&ran, &addr, cluster.token());
    assert!(ran.took < Duration::from_secs(5), "{ran}");
    let out = check(&dir, &addr, cluster.token());
    eprintln!(
        "{test}: check via the killed node: exit {:?}, stdout {:?}, stderr {:?}",
        out.status.code(),
        stdout(&out).trim(),
        stderr(&out).trim()
    );
    assert_eq!(out.status.code(), Some(69));
    assert!(!stderr(&out).contains(cluster.token()) && !stdout(&out).contains(cluster.token()));
}

/// `VAULT_ADDR=killed,survivor,survivor`: the first address that answers
/// wins, at once after the kill and after the election.
#[test]
fn raft_vault_addr_list_skips_the_killed_node() {
    let test = "raft_vault_addr_list_skips_the_killed_node";
    let Some(mut cluster) = Cluster::start(test) else {
        return;
    };
    let password = write_secret(&cluster);
    let killed = cluster.active().expect("active");
    let survivors = cluster.standbys();
    for &i in &survivors {
        wait_replicated(&cluster, i);
    }
    cluster.kill(killed);
    let list = std::iter::once(killed)
        .chain(survivors.iter().copied())
        .map(|i| cluster.addr(i).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let dir = registry();
    let ran = run(&dir, &list, cluster.token(), &password, "10s");
    eprintln!("{test}: run at once with {list}: {ran}");
    assert_resolved(&ran);
    let out = check(&dir, &list, cluster.token());
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.wait_active(Duration::from_secs(30));
    let ran = run(&dir, &list, cluster.token(), &password, "10s");
    eprintln!("{test}: run after the election: {ran}");
    assert_resolved(&ran);
}

/// A list of only dead addresses fails closed naming every one of them.
#[test]
fn raft_vault_addr_list_of_dead_nodes_fails_closed_naming_each() {
    let test = "raft_vault_addr_list_of_dead_nodes_fails_closed_naming_each";
    let Some(mut cluster) = Cluster::start(test) else {
        return;
    };
    let password = write_secret(&cluster);
    cluster.kill(0);
    cluster.kill(1);
    let list = format!("{},{}", cluster.addr(0), cluster.addr(1));
    let dir = registry();
    let ran = run(&dir, &list, cluster.token(), &password, "5s");
    eprintln!("{test}: run with {list}: {ran}");
    assert_failed_closed(&ran, cluster.addr(0), cluster.token());
    assert_failed_closed(&ran, cluster.addr(1), cluster.token());
    assert!(ran.took < Duration::from_secs(5), "{ran}");
}

/// With forwarding standbys, keywarden started right after the kill
/// resolves once the new leader is elected (a 307 from a leaderless standby
/// is retried, like a 5xx, until `--resolve-timeout`).
#[test]
fn raft_forwarding_survivor_resolves_across_the_election() {
    let test = "raft_forwarding_survivor_resolves_across_the_election";
    let Some(f) = failover(test, Reads::Forwarded) else {
        return;
    };
    assert_resolved(&f.during);
    assert!(f.during.took < Duration::from_secs(10), "{}", f.during);
}
