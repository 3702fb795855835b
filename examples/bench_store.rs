//! Timings for PERF.md: open the store and decrypt 1,000 entries, `set`
//! latency (lock, read, seal, write, fsync, rename, folder fsync), and a
//! 10,000-entry `rotate-key`. Keys are drawn at run time.
//!
//! `cargo run --release --example bench_store [-- DIR]` (DIR: where the store
//! goes, to measure a given file system; default: a temp folder).

use std::io::Read;
use std::time::{Duration, Instant};

use keywarden::secret::providers::{Context, Request, Resolver};
use keywarden::secret::{SecretBytes, SecretRef};
use keywarden::store::key::KeyRing;
use keywarden::store::{file, format, Store};

fn random_key() -> SecretBytes {
    let mut k = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .expect("urandom");
    SecretBytes::from_vec(k)
}

fn ring(current: &SecretBytes, version: u32, old: Option<(&SecretBytes, u32)>) -> KeyRing {
    KeyRing::from_keys(
        Some((version, current.duplicate())),
        old.map(|(k, v)| (v, k.duplicate())).into_iter().collect(),
    )
    .expect("ring")
}

/// A store of `n` entries built in one write (not `n` sets).
fn build(path: &std::path::Path, key: &SecretBytes, n: usize) {
    let mut f = format::StoreFile::default();
    f.put_key_check(
        format::make_key_check(key.expose(), 1, file::random_nonce().expect("nonce"))
            .expect("check"),
    );
    for i in 0..n {
        let reference = format!("kv://vendor{i:05}/prod/api_key");
        let value = format!("value-{i:05}-{}", "x".repeat(40));
        let nonce = file::random_nonce().expect("nonce");
        f.upsert(format::Entry {
            sealed: format::seal(key.expose(), 1, &reference, value.as_bytes(), nonce)
                .expect("seal"),
            reference,
            key_version: 1,
            created: 0,
            updated: 0,
            nonce,
        });
    }
    std::fs::write(path, f.encode()).expect("write");
}

fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    format!(
        "median {:.2} ms, p90 {:.2} ms, min {:.2} ms, max {:.2} ms (n={})",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.9).as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    )
}

fn main() {
    let base = std::env::args().nth(1).map(std::path::PathBuf::from);
    let tmp = tempfile::Builder::new()
        .prefix("kw-perf-")
        .tempdir_in(base.unwrap_or_else(std::env::temp_dir))
        .expect("tempdir");
    let key = random_key();

    // 1. Open + decrypt 1,000 entries.
    let path = tmp.path().join("store-1000");
    build(&path, &key, 1000);
    let mut open_all = Vec::new();
    let mut open_only = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let store = Store::open(&path, ring(&key, 1, None)).expect("open");
        store.verify_keys().expect("keys");
        open_only.push(t.elapsed());
        let refs: Vec<String> = store.list().into_iter().map(|m| m.reference).collect();
        let mut total = 0;
        for r in &refs {
            total += store.get(r).expect("get").len();
        }
        assert!(total > 0);
        open_all.push(t.elapsed());
    }
    println!(
        "open a 1,000-entry store ({} KiB): {}",
        std::fs::metadata(&path).expect("meta").len() / 1024,
        stats(open_only)
    );
    println!("open + decrypt all 1,000 entries: {}", stats(open_all));

    // 1b. What `check` costs for 1,000 kv:// refs, minus the config: open
    // the backend from the environment and resolve every ref concurrently.
    let hex: String = key.expose().iter().map(|b| format!("{b:02x}")).collect();
    let env = vec![(
        std::ffi::OsString::from("ENCRYPTION_KEY"),
        std::ffi::OsString::from(hex),
    )];
    let opts = keywarden::store::StoreOptions {
        store: Some(path.clone()),
        key_file: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut resolves = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let backend = keywarden::store::open_backend(&opts, &env)
            .expect("open")
            .expect("store");
        let resolver = Resolver::new(Context::default(), Duration::from_secs(10), Ok(backend));
        let requests: Vec<Request> = (0..1000)
            .map(|i| Request {
                label: format!("vendor{i:05}"),
                reference: SecretRef::parse(&format!("kv://vendor{i:05}/prod/api_key"))
                    .expect("ref"),
                base_dir: std::path::Path::new("/").into(),
            })
            .collect();
        let outcomes = rt.block_on(resolver.resolve_all(requests));
        assert!(outcomes.iter().all(|o| o.result.is_ok()));
        resolves.push(t.elapsed());
    }
    println!(
        "open_backend + resolve 1,000 kv:// refs through the resolver: {}",
        stats(resolves)
    );

    // 2. `set` latency, fsync included, on a store of 1,000 entries.
    let mut store = Store::open(&path, ring(&key, 1, None)).expect("open");
    let value = SecretBytes::copy_from(b"a-value-of-fifty-bytes-for-the-set-latency-bench");
    let mut sets = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        store.set(&format!("bench/set/{i}"), &value).expect("set");
        sets.push(t.elapsed());
    }
    println!(
        "set into a 1,000-entry store (lock, seal, write, fsync, rename, fsync dir): {}",
        stats(sets)
    );
    let small = tmp.path().join("store-small");
    let (mut s, _) = Store::init(&small, ring(&key, 1, None)).expect("init");
    let mut sets = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        s.set(&format!("bench/set/{i}"), &value).expect("set");
        sets.push(t.elapsed());
    }
    println!("set into a small store (up to 50 entries): {}", stats(sets));

    // 3. rotate-key of 10,000 entries.
    let big = tmp.path().join("store-10000");
    build(&big, &key, 10_000);
    let new = random_key();
    let mut store = Store::open(&big, ring(&new, 2, Some((&key, 1)))).expect("open");
    let t = Instant::now();
    let report = store.rotate_key().expect("rotate");
    println!(
        "rotate-key of 10,000 entries ({} KiB): {:.1} ms",
        std::fs::metadata(&big).expect("meta").len() / 1024,
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(report.reencrypted, 10_000);
}
