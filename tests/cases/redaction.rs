//! The child's output is redacted on the way through: raw values, each
//! line of a multi-line value, every encoding, split writes, stderr and the
//! pty — and nothing else is touched.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::util::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn percent(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// A registry with one secret per value, read from files.
fn registry(dir: &Dir, values: &[(&str, &[u8])]) {
    let mut reg = String::new();
    for (id, value) in values {
        dir.write(&format!("secrets/{id}"), value);
        reg.push_str(&format!(
            "{id}:\n  dev:\n    secret_ref: file://secrets/{id}\n"
        ));
    }
    dir.write("reg.yaml", reg);
}

/// Runs `child` under `keywarden run` with the registry in `dir`.
fn run_child(dir: &Dir, child: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--env", "dev", "--registry", "reg.yaml", "--"];
    args.extend_from_slice(child);
    output(&mut kw(dir, &args))
}

fn run_cat(dir: &Dir, file: &str) -> std::process::Output {
    run_child(dir, &["cat", file])
}

/// Runs `script` (Python) as the child, with the registry in `dir`.
fn run_python(dir: &Dir, script: &str) -> std::process::Output {
    dir.write("drip.py", script);
    run_child(dir, &["python3", "drip.py"])
}

#[test]
fn raw_values_and_every_encoding_are_masked_on_stdout_and_stderr() {
    let dir = Dir::new();
    // Characters that every encoding changes: space, quote, slash, plus.
    let value = format!("{}/+ \"{}\"", secret(20), secret(12));
    let v = value.as_bytes();
    registry(&dir, &[("api", v)]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forms = [
        value.clone(),
        b64.encode(v),
        b64url.encode(v),
        hex(v),
        hex(v).to_uppercase(),
        percent(v),
        serde_json::to_string(&value).expect("json"),
    ];
    let text: String = forms
        .iter()
        .map(|f| format!("before {f} after\n"))
        .collect();
    dir.write("out.txt", &text);
    let out = output(&mut kw(&dir, &run_sh(&[], "cat out.txt; cat out.txt >&2")));
    assert!(out.status.success(), "{}", stderr(&out));
    for stream in [stdout(&out), stderr(&out)] {
        for f in &forms {
            assert!(
                !stream.contains(f.trim_matches('"')),
                "{f} leaked:\n{stream}"
            );
        }
        assert_eq!(
            stream.matches("[REDACTED:api]").count(),
            forms.len(),
            "{stream}"
        );
        assert_eq!(stream.lines().count(), forms.len());
        assert!(
            stream
                .lines()
                .all(|l| l.starts_with("before ") && l.ends_with(" after")),
            "{stream}"
        );
    }
}

#[test]
fn a_secret_inside_a_larger_base64_blob_is_caught_at_every_alignment() {
    let dir = Dir::new();
    let value = secret(30);
    registry(&dir, &[("k", value.as_bytes())]);
    let mut text = String::new();
    for pad in 0..3 {
        let mut blob = b"x".repeat(pad + 3);
        blob.extend_from_slice(value.as_bytes());
        blob.extend_from_slice(b"trailing bytes");
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(&blob));
        text.push('\n');
    }
    dir.write("blob.txt", &text);
    let out = run_cat(&dir, "blob.txt");
    let shown = stdout(&out);
    assert_eq!(shown.matches("[REDACTED:k]").count(), 3, "{shown}");
    for line in text.lines() {
        // The middle of each encoded blob (the secret's part) is gone.
        let middle = &line[8..line.len() - 8];
        assert!(!shown.contains(middle), "{middle} leaked");
    }
}

#[test]
fn each_line_of_a_multi_line_secret_is_masked() {
    let dir = Dir::new();
    let body: Vec<String> = (0..4).map(|_| secret(48)).collect();
    let pem = format!(
        "-----BEGIN TEST BLOCK-----\n{}\n-----END TEST BLOCK-----\n",
        body.join("\n")
    );
    registry(&dir, &[("cert", pem.as_bytes())]);
    // The whole block, then its lines one by one in unrelated output.
    let text = format!("{pem}log: {}\nlog: {}\n", body[2], body[0]);
    dir.write("out.txt", &text);
    let out = run_cat(&dir, "out.txt");
    let shown = stdout(&out);
    for line in &body {
        assert!(!shown.contains(line.as_str()), "line leaked: {shown}");
    }
    assert!(shown.contains("log: [REDACTED:cert]"), "{shown}");
}

#[test]
fn a_secret_written_one_byte_at_a_time_is_masked() {
    let dir = Dir::new();
    let value = secret(32);
    registry(&dir, &[("slow", value.as_bytes())]);
    let script = format!(
        "import sys, time\nfor c in 'token={value};\\n':\n    sys.stdout.write(c); sys.stdout.flush(); time.sleep(0.002)\n"
    );
    let out = run_python(&dir, &script);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "token=[REDACTED:slow];\n");
}

#[test]
fn binary_output_without_secrets_passes_byte_identical() {
    let dir = Dir::new();
    registry(
        &dir,
        &[("a", secret(32).as_bytes()), ("b", secret(40).as_bytes())],
    );
    let mut data = vec![0u8; 2 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("urandom");
    dir.write("blob.bin", &data);
    let out = run_cat(&dir, "blob.bin");
    assert!(out.status.success());
    assert!(out.stdout == data, "binary output changed");
}

#[test]
fn output_is_visible_at_once_while_the_child_sleeps() {
    let dir = Dir::new();
    registry(&dir, &[("a", secret(32).as_bytes())]);
    let mut child = kw(&dir, &["run", "--env", "dev", "--registry", "reg.yaml", "--", "python3", "-c",
        "import sys, time\nsys.stdout.write('line one\\n'); sys.stdout.flush()\nsys.stdout.write('Password: '); sys.stdout.flush()\ntime.sleep(5)"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    let started = Instant::now();
    while !seen.ends_with(b"Password: ") {
        let n = out.read(&mut buf).expect("read");
        assert!(n > 0, "EOF before the prompt");
        seen.extend_from_slice(&buf[..n]);
    }
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen, b"line one\nPassword: ");
    assert!(
        took < Duration::from_secs(3),
        "held back until the child exited: {took:?}"
    );
}

#[test]
fn a_line_reaches_the_reader_well_under_100_ms() {
    let dir = Dir::new();
    registry(&dir, &[("a", secret(32).as_bytes())]);
    let mut child = kw(&dir, &["run", "--env", "dev", "--registry", "reg.yaml", "--", "python3", "-u", "-c",
        "import sys, time\nfor i in range(5):\n    time.sleep(0.2); print(repr(time.time()))\ntime.sleep(1)"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut lags = Vec::new();
    let mut pending = String::new();
    let mut buf = [0u8; 256];
    while lags.len() < 5 {
        let n = out.read(&mut buf).expect("read");
        assert!(n > 0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(i) = pending.find('\n') {
            let written: f64 = pending[..i].trim().parse().expect("timestamp");
            lags.push(now - written);
            pending.drain(..=i);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lags.sort_by(f64::total_cmp);
    assert!(lags[2] < 0.05, "median lag {:.1} ms", lags[2] * 1000.0);
}

#[test]
fn two_hundred_secrets_over_thirty_megabytes_are_all_masked() {
    let dir = Dir::new();
    let values: Vec<String> = (0..200).map(|i| secret(32 + i % 17)).collect();
    let ids: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    let pairs: Vec<(&str, &[u8])> = ids
        .iter()
        .map(String::as_str)
        .zip(values.iter().map(|v| v.as_bytes()))
        .collect();
    registry(&dir, &pairs);
    let filler =
        "2026-11-23T12:00:00Z INFO gateway request completed user=42 dur=12ms\n".repeat(100);
    let mut text = String::with_capacity(31 << 20);
    let mut i = 0;
    while text.len() < 30 << 20 {
        text.push_str(&filler);
        text.push_str(&format!("leak {} here\n", values[i % 200]));
        i += 1;
    }
    dir.write("big.log", &text);
    let out = run_cat(&dir, "big.log");
    assert!(out.status.success());
    let shown = stdout(&out);
    for v in &values {
        assert!(!shown.contains(v.as_str()), "a secret leaked");
    }
    assert_eq!(shown.matches("[REDACTED:s").count(), i);
}

#[test]
fn mask_format_no_redact_and_counts() {
    let dir = Dir::new();
    let value = secret(32);
    registry(&dir, &[("openai", value.as_bytes())]);
    dir.write("out.txt", format!("{value} {value}\n"));
    let out = output(&mut kw(
        &dir,
        &[
            "-v",
            "run",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--mask",
            "<{id} hidden>",
            "--",
            "cat",
            "out.txt",
        ],
    ));
    assert_eq!(stdout(&out), "<openai hidden> <openai hidden>\n");
    assert!(
        stderr(&out).contains("masked openai 2 times"),
        "{}",
        stderr(&out)
    );

    let out = output(&mut kw(
        &dir,
        &[
            "run",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "--no-redact",
            "--",
            "cat",
            "out.txt",
        ],
    ));
    assert_eq!(stdout(&out), format!("{value} {value}\n"));
    assert!(stderr(&out).contains("--no-redact"), "{}", stderr(&out));
}

#[test]
fn denied_variables_values_are_masked_too() {
    let dir = Dir::new();
    let internal = secret(32);
    dir.write("out.txt", format!("found {internal}\n"));
    let out =
        output(kw(&dir, &["run", "--", "cat", "out.txt"]).env("INTERNAL_API_TOKEN", &internal));
    assert_eq!(stdout(&out), "found [REDACTED:INTERNAL_API_TOKEN]\n");
}

#[test]
fn redact_filters_stdin_to_stdout() {
    let dir = Dir::new();
    let value = secret(32);
    registry(&dir, &[("ci_token", value.as_bytes())]);
    let env_value = secret(24);
    dir.write("e", &env_value);
    let mut child = kw(&dir, &["redact", "--env", "dev", "--registry", "reg.yaml"])
        .env("OTHER", "file://e")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let input = format!(
        "a {value} b {env_value} c\n{}\n",
        base64::engine::general_purpose::STANDARD.encode(&value)
    );
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "a [REDACTED:ci_token] b [REDACTED:OTHER] c\n[REDACTED:ci_token]\n"
    );
}

#[test]
fn scan_reports_where_secrets_are_and_exits_1() {
    let dir = Dir::new();
    let value = secret(32);
    registry(&dir, &[("api", value.as_bytes())]);
    dir.write("logs/clean.log", "nothing here\n");
    dir.write(
        "logs/leaky.log",
        format!(
            "line one\nkey={value}\n{}\n",
            base64::engine::general_purpose::STANDARD.encode(&value)
        ),
    );
    let out = output(&mut kw(
        &dir,
        &["scan", "--env", "dev", "--registry", "reg.yaml", "logs"],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "logs/leaky.log:2:5: secret 'api'\nlogs/leaky.log:3:1: secret 'api'\n"
    );
    assert!(!format!("{}{}", stdout(&out), stderr(&out)).contains(&value));
    let out = output(&mut kw(
        &dir,
        &[
            "scan",
            "--env",
            "dev",
            "--registry",
            "reg.yaml",
            "logs/clean.log",
        ],
    ));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
}

/// Runs `cat out.txt` under keywarden with the registry in `dir`; returns
/// stdout.
fn cat_through(dir: &Dir, text: &[u8]) -> String {
    dir.write("out.txt", text);
    let out = run_cat(dir, "out.txt");
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

fn percent_keeping(b: &[u8], keep: &[u8], plus: bool) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || keep.contains(&c) {
                (c as char).to_string()
            } else if plus && c == b' ' {
                "+".to_owned()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

#[test]
fn review_06_percent_encoding_of_an_aws_style_secret_is_masked() {
    let dir = Dir::new();
    let value = format!("{}/{}+{} !'()*~", secret(14), secret(10), secret(8));
    let v = value.as_bytes();
    registry(&dir, &[("aws", v)]);
    let forms = [
        percent_keeping(v, b"-._~/", false),     // Python quote()
        percent_keeping(v, b"-._~", false),      // quote(s, safe=''), RFC 3986
        percent_keeping(v, b"-._~", true),       // quote_plus
        percent_keeping(v, b"-._~!'()*", false), // encodeURIComponent
        percent_keeping(v, b"-._*", true),       // form encoding
    ];
    let text: String = forms.iter().map(|f| format!("<{f}>\n")).collect();
    let shown = cat_through(&dir, text.as_bytes());
    assert_eq!(shown, "<[REDACTED:aws]>\n".repeat(forms.len()), "{shown}");
}

#[test]
fn review_07_secret_file_with_trailing_whitespace_masks_the_stripped_value() {
    let dir = Dir::new();
    let values: Vec<String> = [" ", "  \t", "\r", "\t \r"]
        .iter()
        .map(|end| format!("{}{end}", secret(24)))
        .collect();
    let ids = ["a", "b", "c", "d"];
    let pairs: Vec<(&str, &[u8])> = ids
        .iter()
        .copied()
        .zip(values.iter().map(|v| v.as_bytes()))
        .collect();
    registry(&dir, &pairs);
    // What a child that strip()s each value prints.
    let text: String = values.iter().map(|v| format!("<{}>\n", v.trim())).collect();
    let shown = cat_through(&dir, text.as_bytes());
    let want: String = ids
        .iter()
        .map(|id| format!("<[REDACTED:{id}]>\n"))
        .collect();
    assert_eq!(shown, want);
}

#[test]
fn review_10_base64_wrapped_at_64_and_76_columns_is_masked() {
    let dir = Dir::new();
    let value = secret(120);
    registry(&dir, &[("key", value.as_bytes())]);
    let flat = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
    let wrap = |width: usize, eol: &str| -> String {
        flat.as_bytes()
            .chunks(width)
            .map(|c| std::str::from_utf8(c).expect("ASCII"))
            .collect::<Vec<_>>()
            .join(eol)
    };
    // PEM (64, LF), MIME (76, CRLF), the base64 tool (76, LF).
    let text = format!(
        "-----BEGIN X-----\n{}\n-----END X-----\n{}\r\n{}\n",
        wrap(64, "\n"),
        wrap(76, "\r\n"),
        wrap(76, "\n")
    );
    let shown = cat_through(&dir, text.as_bytes());
    assert_eq!(
        shown,
        "-----BEGIN X-----\n[REDACTED:key]\n-----END X-----\n[REDACTED:key]\r\n[REDACTED:key]\n"
    );
}

#[test]
fn review_11_encoded_forms_of_short_values_are_masked() {
    let dir = Dir::new();
    let eight = secret(8);
    let nine = secret(9);
    registry(
        &dir,
        &[("eight", eight.as_bytes()), ("nine", nine.as_bytes())],
    );
    let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(eight.as_bytes());
    assert_eq!(unpadded.len(), 11);
    let mut text = format!("<{unpadded}>\n");
    for pad in 0..3 {
        let blob = format!("{}{nine}{}", "x".repeat(3 + pad), "tail");
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(blob));
        text.push('\n');
    }
    let shown = cat_through(&dir, text.as_bytes());
    assert!(shown.starts_with("<[REDACTED:eight]>\n"), "{shown}");
    assert_eq!(shown.matches("[REDACTED:nine]").count(), 3, "{shown}");
}

#[test]
fn review_12_json_nested_in_a_json_string_is_masked() {
    let dir = Dir::new();
    let value = format!("{}\"q\\{}", secret(12), secret(12));
    registry(&dir, &[("k", value.as_bytes())]);
    let inner = serde_json::json!({ "k": value }).to_string();
    let outer = serde_json::json!({ "a": inner }).to_string();
    let shown = cat_through(&dir, format!("{outer}\n").as_bytes());
    assert_eq!(shown, "{\"a\":\"{\\\"k\\\":\\\"[REDACTED:k]\\\"}\"}\n");
}

#[test]
fn review_17_forms_the_github_runner_masks_are_masked() {
    let dir = Dir::new();
    let (a, b) = (secret(8), secret(8));
    let value = format!("{a}\"{b}'<x>&+{a}{b}");
    registry(&dir, &[("s", value.as_bytes())]);
    let forms = [
        value.replace('"', "\\\""), // command line
        value.replace('\'', "''"),  // expression string
        value
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;"), // XmlDataEscape
        format!("{a}\"{b}'<x>&+"),  // PowerShell, before &+
    ];
    let text: String = forms.iter().map(|f| format!("({f})\n")).collect();
    let shown = cat_through(&dir, text.as_bytes());
    assert_eq!(shown, "([REDACTED:s])\n".repeat(forms.len()), "{shown}");
}

#[test]
fn review_23_truncated_copies_are_masked_even_split_across_writes() {
    let dir = Dir::new();
    let value = secret(40);
    registry(&dir, &[("t", value.as_bytes())]);
    // A debug key[:24], and a log line cut at N characters, each written a
    // few bytes at a time.
    let script = format!(
        "import sys, time\nfor s in ['key={p}\\n', 'tail={s}\\n']:\n    for i in range(0, len(s), 5):\n        sys.stdout.write(s[i:i+5]); sys.stdout.flush(); time.sleep(0.001)\n",
        p = &value[..24],
        s = &value[14..]
    );
    let out = run_python(&dir, &script);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "key=[REDACTED:t]\ntail=[REDACTED:t]\n");
}

/// A value of 48 KiB printed whole, cut short at either end, each written
/// in pieces of a few KiB: every copy is masked, and the text after each
/// one comes out (the hold rule decides long tails from their end, so a
/// chunk ending inside a long value costs its length, not its square).
#[test]
fn a_long_value_printed_in_pieces_is_masked_whole_and_cut_short() {
    let dir = Dir::new();
    let value = secret(48 * 1024);
    registry(&dir, &[("big", value.as_bytes())]);
    let script = "import sys, time\nv = open('secrets/big').read()\n\
         for s in ['a=' + v + '\\n', 'b=' + v[2000:] + '\\n', 'c=' + v[:30000] + '\\n', 'done\\n']:\n\
         \x20   for i in range(0, len(s), 4093):\n\
         \x20       sys.stdout.write(s[i:i+4093]); sys.stdout.flush(); time.sleep(0.001)\n";
    let out = run_python(&dir, script);
    assert!(out.status.success(), "{}", stderr(&out));
    // On failure, say how much came out and whether the value's middle
    // leaked, rather than print 100 KB of it.
    let got = stdout(&out);
    assert!(
        got == "a=[REDACTED:big]\nb=[REDACTED:big]\nc=[REDACTED:big]\ndone\n",
        "{} bytes out; the value's middle {}",
        got.len(),
        if got.contains(&value[24_000..24_064]) {
            "leaked"
        } else {
            "did not leak"
        }
    );
}
