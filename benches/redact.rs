//! Throughput of redaction on log-like text (ASCII lines, a secret on about
//! one line in a thousand) for 0 to 10,000 secrets of 32–48 random
//! alphanumeric bytes, each with all its encoded forms, next to a plain copy
//! of the same bytes; and the time to build the matcher.
//!
//! "hot" redacts a 1 MiB buffer that stays in cache, as a relay's pipe
//! buffer does, one-shot and in 64 KiB pushes (criterion measures these);
//! "cold" a 32 MiB one, larger than the last-level cache, so memory bandwidth
//! counts too (best of 3, in the summary only, to keep the run short). The
//! summary gives each figure with its ratio to a plain copy of the same
//! buffer, plus two rows where one short secret (8 or 12 bytes) joins 1,000
//! long ones. Secrets are generated at run time from a fixed seed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use keywarden::redact::{Counts, Mask, Matcher, Secret, Stream};

const HOT_LEN: usize = 1 << 20;
const COLD_LEN: usize = 32 << 20;
/// Size of each push in the streaming case (a pipe read).
const PUSH_LEN: usize = 64 << 10;
const SECRET_COUNTS: [usize; 5] = [0, 10, 100, 1_000, 10_000];

/// splitmix64, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn alnum(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len())] as char)
            .collect()
    }
}

fn secrets(rng: &mut Rng, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let len = 32 + rng.below(17);
            (format!("secret_{i}"), rng.alnum(len))
        })
        .collect()
}

/// Log lines from a few templates, with timestamps, ids, paths and numbers;
/// about one line in a thousand carries one of `secrets` (raw or hex).
fn log_text(rng: &mut Rng, secrets: &[(String, String)], len: usize) -> Vec<u8> {
    const LEVELS: &[&str] = &["INFO ", "DEBUG", "WARN ", "INFO ", "TRACE"];
    const MODULES: &[&str] = &[
        "http::server",
        "db::pool",
        "worker::queue",
        "auth::session",
        "cache",
    ];
    const WORDS: &[&str] = &[
        "request",
        "completed",
        "connection",
        "accepted",
        "retrying",
        "upstream",
        "timeout",
        "user",
        "session",
        "refreshed",
        "queue",
        "depth",
        "flushed",
        "records",
        "to",
        "disk",
        "for",
        "tenant",
    ];
    const PATHS: &[&str] = &[
        "/api/v1/items",
        "/healthz",
        "/api/v1/users",
        "/metrics",
        "/api/v2/search",
    ];
    let mut text = String::with_capacity(len + 512);
    let mut line = 0u64;
    while text.len() < len {
        line += 1;
        let ms = line * 7 + rng.below(5) as u64;
        text.push_str(&format!(
            "2026-03-14T{:02}:{:02}:{:02}.{:03}Z {} {}: ",
            (ms / 3_600_000) % 24,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000,
            rng.pick(LEVELS),
            rng.pick(MODULES)
        ));
        for _ in 0..3 + rng.below(6) {
            text.push_str(rng.pick(WORDS));
            text.push(' ');
        }
        text.push_str(&format!(
            "method=GET path={}/{} status={} duration_ms={} request_id={:08x}-{:04x}-{:04x}",
            rng.pick(PATHS),
            rng.below(100_000),
            [200, 200, 200, 404, 500][rng.below(5)],
            rng.below(2000),
            rng.next() as u32,
            rng.next() as u16,
            rng.next() as u16,
        ));
        if !secrets.is_empty() && rng.below(1000) == 0 {
            let value = &secrets[rng.below(secrets.len())].1;
            if rng.below(2) == 0 {
                text.push_str(&format!(" token={value}"));
            } else {
                let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
                text.push_str(&format!(" dump={hex}"));
            }
        }
        text.push('\n');
    }
    text.into_bytes()
}

fn build(secrets: &[(String, String)]) -> Matcher {
    let list: Vec<Secret<'_>> = secrets
        .iter()
        .map(|(id, value)| Secret {
            id,
            value: value.as_bytes(),
        })
        .collect();
    Matcher::new(&list, &Mask::default())
}

fn copy(text: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(text);
}

fn one_shot(m: &Matcher, text: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut counts = Counts::default();
    m.redact_all(text, out, &mut counts);
}

fn streamed(m: &Matcher, text: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut stream = Stream::new(m);
    for chunk in text.chunks(PUSH_LEN) {
        stream.push(chunk, out);
    }
    stream.finish(out);
}

/// Best of `runs` timings of `f`, in GB/s of `bytes`.
fn best_gbps(bytes: usize, runs: usize, mut f: impl FnMut()) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        f();
        best = best.min(start.elapsed());
    }
    bytes as f64 / best.as_secs_f64() / 1e9
}

struct Row {
    label: String,
    patterns: usize,
    heap: usize,
    build: Duration,
    hot: f64,
    hot_stream: f64,
    cold: f64,
}

fn measure(
    c: &mut Criterion,
    label: &str,
    secrets: &[(String, String)],
    cold: &[u8],
    out: &mut Vec<u8>,
) -> Row {
    let start = Instant::now();
    let m = build(secrets);
    let build_time = start.elapsed();
    let hot = log_text(&mut Rng(1), secrets, HOT_LEN);
    let mut group = c.benchmark_group("redact");
    group.throughput(Throughput::Bytes(hot.len() as u64));
    group.bench_with_input(BenchmarkId::new("hot_one_shot", label), &hot, |b, t| {
        b.iter(|| one_shot(&m, black_box(t), out))
    });
    group.bench_with_input(BenchmarkId::new("hot_stream_64k", label), &hot, |b, t| {
        b.iter(|| streamed(&m, black_box(t), out))
    });
    group.finish();
    Row {
        label: label.to_owned(),
        patterns: m.pattern_count(),
        heap: m.heap_size(),
        build: build_time,
        hot: best_gbps(hot.len(), 50, || one_shot(&m, black_box(&hot), out)),
        hot_stream: best_gbps(hot.len(), 50, || streamed(&m, black_box(&hot), out)),
        cold: best_gbps(cold.len(), 3, || one_shot(&m, black_box(cold), out)),
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
        .configure_from_args();

    let mut rng = Rng(0x5EED);
    let all = secrets(&mut rng, *SECRET_COUNTS.iter().max().unwrap_or(&0));
    let mut out = Vec::with_capacity(2 * COLD_LEN);

    let hot = log_text(&mut Rng(1), &[], HOT_LEN);
    let mut group = c.benchmark_group("redact");
    group.throughput(Throughput::Bytes(hot.len() as u64));
    group.bench_function("hot_memcpy", |b| b.iter(|| copy(black_box(&hot), &mut out)));
    group.finish();
    let hot_copy = best_gbps(hot.len(), 50, || copy(black_box(&hot), &mut out));
    // One cold text for every case; it carries the first 10 secrets.
    let cold = log_text(&mut Rng(2), &all[..10], COLD_LEN);
    let cold_copy = best_gbps(cold.len(), 3, || copy(black_box(&cold), &mut out));

    let mut rows = Vec::new();
    for n in SECRET_COUNTS {
        rows.push(measure(&mut c, &n.to_string(), &all[..n], &cold, &mut out));
    }
    for short in [8, 12] {
        let mut mixed = all[..1000].to_vec();
        mixed.push(("short".to_owned(), rng.alnum(short)));
        rows.push(measure(
            &mut c,
            &format!("1000+{short}B"),
            &mixed,
            &cold,
            &mut out,
        ));
    }

    println!();
    println!(
        "memcpy: hot {hot_copy:.2} GB/s, cold {cold_copy:.2} GB/s; stream pushes of {} KiB",
        PUSH_LEN >> 10
    );
    println!(
        "{:>9} {:>9} {:>8} {:>9} {:>16} {:>16} {:>16}",
        "secrets", "patterns", "heap", "build", "hot one-shot", "hot stream", "cold one-shot"
    );
    for r in &rows {
        println!(
            "{:>9} {:>9} {:>6.1}MB {:>7.1}ms {:>6.2} GB/s {:>4.2} {:>6.2} GB/s {:>4.2} {:>6.2} GB/s {:>4.2}",
            r.label,
            r.patterns,
            r.heap as f64 / 1e6,
            r.build.as_secs_f64() * 1e3,
            r.hot,
            r.hot / hot_copy,
            r.hot_stream,
            r.hot_stream / hot_copy,
            r.cold,
            r.cold / cold_copy,
        );
    }
    println!("(each GB/s is followed by its ratio to memcpy of the same buffer)");
    c.final_summary();
}
