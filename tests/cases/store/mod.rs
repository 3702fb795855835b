//! The embedded store, end to end: `store` commands run with an env vector
//! (in process) or as real processes (crash safety, concurrent writers, the
//! terminal prompt, argv refusal). Keys and values are drawn at run time.

mod fixture;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fixture::*;
use keywarden::secret::providers::{Context, Request, Resolver};
use keywarden::secret::{SecretBytes, SecretRef};
use keywarden::store::format::{self, Entry, StoreFile};
use keywarden::store::key::KeyRing;
use keywarden::store::{open_backend, Store, StoreOptions};

const KEY: &str = "ENCRYPTION_KEY";
const VERSION: &str = "ENCRYPTION_KEY_VERSION";

/// A fixture with an initialised store under a fresh key.
fn initialised() -> (Fx, String) {
    let fx = Fx::new();
    let key = new_key();
    store(&fx, &["init"], &[(KEY, &key)], b"").ok();
    (fx, key)
}

fn set(fx: &Fx, reference: &str, value: &[u8], vars: &[(&str, &str)]) {
    store(fx, &["set", reference], vars, value).ok();
}

fn get(fx: &Fx, reference: &str, vars: &[(&str, &str)]) -> Out {
    store(fx, &["get", reference], vars, b"")
}

fn key_bytes(hex_key: &str) -> SecretBytes {
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex_key[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    SecretBytes::from_vec(bytes)
}

#[test]
fn round_trip_set_get() {
    let (fx, key) = initialised();
    let k = [(KEY, key.as_str())];
    let value = canary("roundtrip");
    set(
        &fx,
        "openai/dev/api_key",
        format!("{value}\n").as_bytes(),
        &k,
    );
    let out = get(&fx, "kv://openai/dev/api_key", &k);
    out.ok();
    assert_eq!(out.stdout, value.as_bytes(), "one trailing newline trimmed");

    // Binary values, and a value that ends in two newlines keeps one.
    let binary = [random_bytes(40), vec![0, 0xff, b'\n']].concat();
    set(
        &fx,
        "kv://bin/value",
        &[binary.as_slice(), b"\n"].concat(),
        &k,
    );
    assert_eq!(get(&fx, "bin/value", &k).ok().stdout, binary);

    // Both spellings name one entry.
    let second = canary("second");
    set(&fx, "kv://openai/dev/api_key", second.as_bytes(), &k);
    assert_eq!(get(&fx, "openai/dev/api_key", &k).stdout, second.as_bytes());
    let listed = store(&fx, &["list"], &[], b"");
    let text = String::from_utf8_lossy(&listed.ok().stdout).into_owned();
    assert_eq!(text.matches("kv://openai/dev/api_key").count(), 1, "{text}");
}

#[test]
fn store_file_never_holds_a_value_or_key_in_any_encoding() {
    let (fx, key) = initialised();
    let k = [(KEY, key.as_str())];
    let values: Vec<Vec<u8>> = vec![
        canary("file").into_bytes(),
        random_bytes(48),
        canary("multi\nline").into_bytes(),
    ];
    for (i, v) in values.iter().enumerate() {
        set(&fx, &format!("app/{i}"), v, &k);
    }
    // Rotate too: the rewritten file must be as clean.
    let new = new_key();
    store(
        &fx,
        &["rotate-key"],
        &[(KEY, &new), (VERSION, "2"), ("ENCRYPTION_KEY_V1", &key)],
        b"",
    )
    .ok();
    let folder = fx.store.parent().expect("folder");
    for entry in std::fs::read_dir(folder).expect("ls") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        let name = path.display().to_string();
        for v in &values {
            assert_absent(&bytes, v, &name);
        }
        for k in [&key, &new] {
            assert!(!contains(&bytes, k.as_bytes()), "{name} holds a key");
            assert_absent(&bytes, key_bytes(k).expose(), &name);
        }
    }
}

#[test]
fn bad_key_formats_exit_78_without_echo() {
    let fx = Fx::new();
    let good = new_key();
    let table: Vec<(String, &str)> = vec![
        (good[..63].to_string(), "too short (63 characters)"),
        (good[..32].to_string(), "too short (32 characters)"),
        (format!("{good}0"), "too long (65 characters)"),
        (format!("{good}{good}"), "too long (128 characters)"),
        (good.to_uppercase(), "uppercase"),
        (format!("{}zz", &good[..62]), "not a hex digit"),
        (String::new(), "is empty"),
        (format!("{good}\n"), "whitespace"),
    ];
    for (bad, says) in &table {
        for args in [&["init"][..], &["get", "a/b"], &["rotate-key"]] {
            let out = store(&fx, args, &[(KEY, bad)], b"");
            out.fails(78, says);
            assert!(out.stderr.contains("ENCRYPTION_KEY"), "{}", out.stderr);
            assert!(
                out.stderr.contains("64 lowercase hex"),
                "says what is expected: {}",
                out.stderr
            );
            if bad.len() >= 16 {
                for piece in [&bad[..16], &bad[bad.len() - 16..]] {
                    let lower = piece.to_lowercase();
                    assert!(!out.stderr.contains(&lower), "echoed: {}", out.stderr);
                    assert!(!out.stderr.to_lowercase().contains(&lower), "echoed");
                }
            }
        }
        assert!(!fx.store.exists(), "nothing created with a bad key");
    }
    // An old key in a bad format is named too.
    let out = store(
        &fx,
        &["init"],
        &[(KEY, &good), ("ENCRYPTION_KEY_V1", &good[..40])],
        b"",
    );
    out.fails(78, "ENCRYPTION_KEY_V1 is too short (40 characters)");
}

#[test]
fn key_file_and_systemd_credential() {
    let fx = Fx::new();
    let key = new_key();
    let key_file = fx.path().join("key");
    std::fs::write(&key_file, format!("{key}\n")).expect("key file");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let kf = key_file.to_str().expect("utf-8");
    store(&fx, &["--key-file", kf, "init"], &[], b"").ok();
    let value = canary("keyfile");
    store(
        &fx,
        &["--key-file", kf, "set", "a/b"],
        &[],
        value.as_bytes(),
    )
    .ok();
    // The same key through ENCRYPTION_KEY, KEYWARDEN_KEY_FILE, a credential.
    assert_eq!(
        get(&fx, "a/b", &[(KEY, &key)]).ok().stdout,
        value.as_bytes()
    );
    assert_eq!(
        get(&fx, "a/b", &[("KEYWARDEN_KEY_FILE", kf)]).ok().stdout,
        value.as_bytes()
    );
    let creds = fx.path().join("creds");
    std::fs::create_dir(&creds).expect("mkdir");
    std::fs::write(creds.join("encryption_key"), format!("{key}\n")).expect("cred");
    let creds_dir = creds.to_str().expect("utf-8");
    assert_eq!(
        get(&fx, "a/b", &[("CREDENTIALS_DIRECTORY", creds_dir)])
            .ok()
            .stdout,
        value.as_bytes()
    );

    std::fs::write(creds.join("store_key"), format!("{key}\n")).expect("cred");
    assert_eq!(
        store(
            &fx,
            &["--key-file", "cred://store_key", "get", "a/b"],
            &[("CREDENTIALS_DIRECTORY", creds_dir)],
            b""
        )
        .ok()
        .stdout,
        value.as_bytes()
    );
    store(
        &fx,
        &["--key-file", "cred://store_key", "get", "a/b"],
        &[],
        b"",
    )
    .fails(78, "CREDENTIALS_DIRECTORY is not set");

    // A key file in a bad format, or missing: 78 naming the file.
    std::fs::write(&key_file, key.to_uppercase()).expect("key file");
    let out = store(&fx, &["--key-file", kf, "get", "a/b"], &[], b"");
    out.fails(78, &format!("key file {kf} contains uppercase"));
    assert!(!out.stderr.to_lowercase().contains(&key[..16]));
    let missing = fx.path().join("nope");
    store(
        &fx,
        &["--key-file", missing.to_str().expect("utf-8"), "get", "a/b"],
        &[],
        b"",
    )
    .fails(78, "cannot read the key file");
}

#[test]
fn wrong_key_is_a_clear_error_and_reveals_nothing() {
    let (fx, key) = initialised();
    let value = canary("wrongkey");
    set(&fx, "a/b", value.as_bytes(), &[(KEY, &key)]);
    let before = fx.bytes();
    let other = new_key();
    let out = get(&fx, "a/b", &[(KEY, &other)]);
    out.fails(
        78,
        "ENCRYPTION_KEY is not the key this store was written with for key version 0",
    );
    assert!(out.stderr.contains("kv://a/b"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert_absent(&out.all(), value.as_bytes(), "output");
    // Writes with the wrong key are refused, and change nothing.
    store(&fx, &["set", "c/d"], &[(KEY, &other)], b"x").fails(78, "is not the key");
    store(&fx, &["rotate-key"], &[(KEY, &other)], b"").fails(78, "is not the key");
    store(&fx, &["init"], &[(KEY, &other)], b"").fails(78, "is not the key");
    assert_eq!(fx.bytes(), before);
}

#[test]
fn missing_key_version_names_the_version_and_the_ref() {
    let (fx, key) = initialised();
    set(&fx, "a/b", b"v", &[(KEY, &key)]);
    let other = new_key();
    let out = get(&fx, "a/b", &[(KEY, &other), (VERSION, "3")]);
    out.fails(78, "kv://a/b: encrypted with key version 0");
    assert!(out.stderr.contains("ENCRYPTION_KEY_V0"), "{}", out.stderr);
    // No key at all.
    get(&fx, "a/b", &[]).fails(78, "kv://a/b: encrypted with key version 0");
}

/// The key version of each ref, as `list` shows them.
fn versions(fx: &Fx) -> std::collections::BTreeMap<String, u32> {
    let out = store(fx, &["list"], &[], b"");
    String::from_utf8_lossy(&out.ok().stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[1].parse().expect("version"))
        })
        .collect()
}

fn rotation(old_version: u32, new_version: u32) {
    let fx = Fx::new();
    let (old, new) = (new_key(), new_key());
    let (ov, nv) = (old_version.to_string(), new_version.to_string());
    let old_only = [(KEY, old.as_str()), (VERSION, ov.as_str())];
    let old_var = format!("ENCRYPTION_KEY_V{old_version}");
    let both = [
        (KEY, new.as_str()),
        (VERSION, nv.as_str()),
        (old_var.as_str(), old.as_str()),
    ];
    let new_only = [(KEY, new.as_str()), (VERSION, nv.as_str())];
    store(&fx, &["init"], &old_only, b"").ok();
    let values: Vec<String> = (0..5).map(|i| canary(&format!("rot{i}"))).collect();
    for (i, v) in values.iter().enumerate() {
        set(&fx, &format!("svc/{i}"), v.as_bytes(), &old_only);
    }
    // Read-old / write-new before the rotation.
    assert_eq!(get(&fx, "svc/0", &both).ok().stdout, values[0].as_bytes());
    let fresh = canary("fresh");
    set(&fx, "svc/new", fresh.as_bytes(), &both);
    assert_eq!(versions(&fx)["kv://svc/new"], new_version);
    assert_eq!(versions(&fx)["kv://svc/0"], old_version);

    let out = store(&fx, &["rotate-key"], &both, b"");
    out.ok();
    assert!(
        out.stderr.contains(&format!(
            "re-encrypted 5 entries under key version {nv} (1 already were)"
        )),
        "{}",
        out.stderr
    );
    assert!(versions(&fx).values().all(|&v| v == new_version));
    // The new key alone reads everything.
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            get(&fx, &format!("svc/{i}"), &new_only).ok().stdout,
            v.as_bytes()
        );
    }
    // The old key alone fails, as its own version or posing as the new one.
    get(&fx, "svc/0", &old_only).fails(
        78,
        &format!("kv://svc/0: encrypted with key version {new_version}, but no key"),
    );
    get(&fx, "svc/0", &[(KEY, old.as_str()), (VERSION, nv.as_str())])
        .fails(78, "is not the key this store was written with");
    get(&fx, "svc/0", &[(old_var.as_str(), old.as_str())])
        .fails(78, &format!("encrypted with key version {new_version}"));
    // And it may no longer write: that would mix versions again.
    store(&fx, &["set", "svc/9"], &old_only, b"v")
        .fails(78, &format!("already uses key version {new_version}"));
}

#[test]
fn rotation_from_v1_to_a_new_key() {
    rotation(1, 2);
}

#[test]
fn rotation_from_v0_to_a_new_key() {
    rotation(0, 1);
}

/// `keywarden store ARGS` as a process, to the end.
fn cli(fx: &Fx, args: &[&str], vars: &[(&str, &str)], stdin: &[u8]) -> Out {
    run_process(store_process(fx, args, vars), stdin)
}

/// Every value still reads with `vars`, through the process.
fn assert_reads(fx: &Fx, values: &[(String, String)], vars: &[(&str, &str)]) {
    for (r, v) in values {
        assert_eq!(cli(fx, &["get", r], vars, b"").ok().stdout, v.as_bytes());
    }
}

/// The rotation the OCMT procedure runs, step by step with the CLI, from a
/// store written with no `ENCRYPTION_KEY_VERSION` (key version 0).
#[test]
fn review_19_key_rotation_runs_as_the_ocmt_procedure_describes() {
    let fx = Fx::new();
    let (old, new) = (new_key(), new_key());
    let before = [(KEY, old.as_str())];
    cli(&fx, &["init"], &before, b"").ok();
    let values: Vec<(String, String)> = (0..3)
        .map(|i| (format!("kv://svc/{i}"), canary(&format!("ocmt{i}"))))
        .collect();
    for (r, v) in &values {
        cli(&fx, &["set", r], &before, v.as_bytes()).ok();
    }
    assert!(
        versions(&fx).values().all(|&v| v == 0),
        "{:?}",
        versions(&fx)
    );

    // Keep the current key as V0, the new one as ENCRYPTION_KEY, version 1.
    let rotating = [
        ("ENCRYPTION_KEY_V0", old.as_str()),
        (KEY, new.as_str()),
        (VERSION, "1"),
    ];
    assert_reads(&fx, &values, &rotating);
    let out = cli(&fx, &["rotate-key"], &rotating, b"");
    out.ok();
    assert!(
        out.stderr
            .contains("re-encrypted 3 entries under key version 1"),
        "{}",
        out.stderr
    );
    assert!(versions(&fx).values().all(|&v| v == 1));
    // Drop V0.
    let after = [(KEY, new.as_str()), (VERSION, "1")];
    assert_reads(&fx, &values, &after);
    let more = canary("after");
    cli(&fx, &["set", "svc/more"], &after, more.as_bytes()).ok();
    assert_eq!(
        cli(&fx, &["get", "svc/more"], &after, b"").ok().stdout,
        more.as_bytes()
    );
    assert_absent(&fx.bytes(), old.as_bytes(), "store");
    assert_absent(&fx.bytes(), new.as_bytes(), "store");
}

/// A store as keywarden wrote it while an unversioned key was version 1:
/// every entry and its key check labelled 1.
fn store_with_the_old_default(fx: &Fx, key: &str, values: &[(String, String)]) {
    let old_default = || KeyRing::from_keys(Some((1, key_bytes(key))), Vec::new()).expect("ring");
    let (mut s, created) = Store::init(&fx.store, old_default()).expect("init");
    assert!(created);
    for (r, v) in values {
        s.set(r, &SecretBytes::copy_from(v.as_bytes()))
            .expect("set");
    }
    assert!(versions(fx).values().all(|&v| v == 1));
}

#[test]
fn review_19_a_store_written_with_the_old_default_version_opens_and_migrates() {
    let fx = Fx::new();
    let key = new_key();
    let values: Vec<(String, String)> = (0..3)
        .map(|i| (format!("kv://old/{i}"), canary(&format!("legacy{i}"))))
        .collect();
    store_with_the_old_default(&fx, &key, &values);
    let k = [(KEY, key.as_str())];
    // Read as it is (nothing written), by the CLI and by the kv:// backend.
    let untouched = fx.bytes();
    assert_reads(&fx, &values, &k);
    assert_eq!(fx.bytes(), untouched, "a read writes nothing");
    let opts = StoreOptions {
        store: Some(fx.store.clone()),
        key_file: None,
    };
    let backend = open_backend(&opts, &env(&k))
        .expect("open")
        .expect("a store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let got = rt
        .block_on(keywarden::secret::providers::KvBackend::get(
            &*backend, "old/0",
        ))
        .expect("get");
    assert_eq!(got.expose(), values[0].1.as_bytes());
    // The first write keeps the key's version as the ring numbers it now.
    let fresh = canary("fresh");
    cli(&fx, &["set", "old/new"], &k, fresh.as_bytes()).ok();
    assert!(
        versions(&fx).values().all(|&v| v == 0),
        "{:?}",
        versions(&fx)
    );
    assert_reads(&fx, &values, &k);
    // A wrong key is still named as such.
    cli(&fx, &["get", "old/0"], &[(KEY, &new_key())], b"").fails(
        78,
        "is not the key this store was written with for key version 0",
    );
}

#[test]
fn review_19_the_ocmt_rotation_of_a_store_written_with_the_old_default() {
    let fx = Fx::new();
    let (old, new) = (new_key(), new_key());
    let values: Vec<(String, String)> = (0..3)
        .map(|i| (format!("kv://old/{i}"), canary(&format!("legacy{i}"))))
        .collect();
    store_with_the_old_default(&fx, &old, &values);
    let rotating = [
        ("ENCRYPTION_KEY_V0", old.as_str()),
        (KEY, new.as_str()),
        (VERSION, "1"),
    ];
    assert_reads(&fx, &values, &rotating);
    cli(&fx, &["rotate-key"], &rotating, b"").ok();
    assert!(versions(&fx).values().all(|&v| v == 1));
    let after = [(KEY, new.as_str()), (VERSION, "1")];
    assert_reads(&fx, &values, &after);
    // The old key no longer opens anything.
    cli(&fx, &["get", "old/0"], &[(KEY, old.as_str())], b"")
        .fails(78, "encrypted with key version 1, but no key");
}

#[test]
fn rotation_stops_without_a_change_when_an_old_key_is_missing() {
    let (fx, old) = initialised();
    set(&fx, "a/b", b"v", &[(KEY, &old)]);
    let before = fx.bytes();
    let new = new_key();
    store(&fx, &["rotate-key"], &[(KEY, &new), (VERSION, "2")], b"")
        .fails(78, "kv://a/b: encrypted with key version 0, but no key");
    assert_eq!(fx.bytes(), before);
}

/// Rewrite the store through the format module (checksum recomputed), as
/// an attacker with write access could.
fn tamper(fx: &Fx, change: impl FnOnce(&mut StoreFile)) {
    let mut f = StoreFile::decode(&fx.bytes()).expect("parse");
    change(&mut f);
    std::fs::write(&fx.store, f.encode()).expect("write");
}

#[test]
fn swapped_or_relabelled_ciphertexts_fail() {
    let (fx, key) = initialised();
    let k = [(KEY, key.as_str())];
    let (va, vb) = (canary("a"), canary("b"));
    set(&fx, "x/a", va.as_bytes(), &k);
    set(&fx, "x/b", vb.as_bytes(), &k);
    tamper(&fx, |f| {
        let (a, b) = f.entries.split_at_mut(1);
        std::mem::swap(&mut a[0].sealed, &mut b[0].sealed);
        std::mem::swap(&mut a[0].nonce, &mut b[0].nonce);
    });
    for r in ["x/a", "x/b"] {
        let out = get(&fx, r, &k);
        out.fails(65, "failed authentication under key version 0");
        assert!(out.stderr.contains(&format!("kv://{r}")), "{}", out.stderr);
        assert_absent(&out.all(), va.as_bytes(), "output");
        assert_absent(&out.all(), vb.as_bytes(), "output");
    }
    // rotate-key refuses to carry a damaged entry over, and changes nothing.
    let before = fx.bytes();
    let new = new_key();
    store(
        &fx,
        &["rotate-key"],
        &[(KEY, &new), (VERSION, "2"), ("ENCRYPTION_KEY_V1", &key)],
        b"",
    )
    .fails(65, "failed authentication");
    assert_eq!(fx.bytes(), before);

    // Relabelled with another key version that the store has a key for.
    let (fx, key) = initialised();
    let new = new_key();
    let both = [
        (KEY, new.as_str()),
        (VERSION, "2"),
        ("ENCRYPTION_KEY_V1", key.as_str()),
    ];
    set(&fx, "x/a", va.as_bytes(), &[(KEY, &key)]);
    set(&fx, "x/b", vb.as_bytes(), &both);
    tamper(&fx, |f| f.entries[0].key_version = 2);
    get(&fx, "x/a", &both).fails(65, "failed authentication under key version 2");
    assert_eq!(get(&fx, "x/b", &both).ok().stdout, vb.as_bytes());
}

#[test]
fn damaged_store_exit_65_and_left_byte_identical() {
    let (fx, key) = initialised();
    let k = [(KEY, key.as_str())];
    set(&fx, "a/b", b"value one", &k);
    set(&fx, "c/d", b"value two", &k);
    let good = fx.bytes();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("cut by one byte", good[..good.len() - 1].to_vec()),
        ("one bit flipped", flipped),
        ("one byte appended", [good.as_slice(), b"\0"].concat()),
        ("empty", Vec::new()),
        ("text", b"not a store at all\n".to_vec()),
    ];
    let commands: [&[&str]; 6] = [
        &["init"],
        &["set", "e/f"],
        &["get", "a/b"],
        &["rm", "a/b"],
        &["list"],
        &["rotate-key"],
    ];
    let shown = fx.store.display().to_string();
    for (what, bytes) in &damages {
        std::fs::write(&fx.store, bytes).expect("write");
        for args in commands {
            let out = store(&fx, args, &k, b"new value");
            out.fails(65, &shown);
            assert!(
                out.stderr.contains("unreadable"),
                "{what} {args:?}: {}",
                out.stderr
            );
            assert_eq!(&fx.bytes(), bytes, "{what}: {args:?} changed the file");
        }
        let opts = StoreOptions {
            store: Some(fx.store.clone()),
            key_file: None,
        };
        let e = open_backend(&opts, &env(&k)).err().expect(what);
        assert_eq!(e.exit_code(), 65, "{e}");
    }
}

#[test]
fn set_refuses_empty_values() {
    let (fx, key) = initialised();
    for stdin in [&b""[..], b"\n"] {
        store(&fx, &["set", "a/b"], &[(KEY, &key)], stdin).fails(65, "empty");
    }
    store(&fx, &["get", "a/b"], &[(KEY, &key)], b"").fails(69, "no such entry");
}

#[test]
fn round_trip_through_the_process() {
    let fx = Fx::new();
    let key = new_key();
    let k = [(KEY, key.as_str())];
    run_process(store_process(&fx, &["init"], &k), b"").ok();
    let value = canary("process");
    run_process(
        store_process(&fx, &["set", "kv://p/q"], &k),
        format!("{value}\n").as_bytes(),
    )
    .ok();
    let out = run_process(store_process(&fx, &["get", "p/q"], &k), b"");
    assert_eq!(out.ok().stdout, value.as_bytes(), "no newline on a pipe");
    assert_absent(out.stderr.as_bytes(), value.as_bytes(), "stderr");
    let out = run_process(store_process(&fx, &["list"], &[]), b"");
    assert!(String::from_utf8_lossy(&out.ok().stdout).contains("kv://p/q"));
    // Exit codes of the process match the in-process ones.
    run_process(store_process(&fx, &["get", "p/q"], &[(KEY, "00")]), b"")
        .fails(78, "ENCRYPTION_KEY is too short (2 characters)");
    run_process(store_process(&fx, &["get", "p/none"], &k), b"").fails(69, "no such entry");
}

#[test]
fn set_refuses_a_value_on_argv() {
    let (fx, key) = initialised();
    let before = fx.bytes();
    let value = canary("argv");
    for args in [
        vec!["set", "a/b", value.as_str()],
        vec!["set", "a/b", "--value", value.as_str()],
        vec!["set", "kv://a/b", "--", value.as_str()],
    ] {
        let out = run_process(store_process(&fx, &args, &[(KEY, &key)]), b"");
        out.fails(64, "pipe it on stdin");
        assert_absent(&out.all(), value.as_bytes(), "output");
    }
    assert_eq!(fx.bytes(), before);
}

#[test]
fn missing_store_missing_entry_and_bad_refs() {
    let fx = Fx::new();
    let key = new_key();
    let k = [(KEY, key.as_str())];
    for args in [
        &["get", "a/b"][..],
        &["set", "a/b"],
        &["list"],
        &["rm", "a/b"],
        &["rotate-key"],
    ] {
        store(&fx, args, &k, b"v").fails(69, "keywarden store init");
    }
    assert!(!fx.store.exists());
    let opts = StoreOptions {
        store: Some(fx.store.clone()),
        key_file: None,
    };
    assert!(open_backend(&opts, &env(&k)).expect("no store").is_none());

    store(&fx, &["init"], &k, b"").ok();
    get(&fx, "a/b", &k).fails(69, "kv://a/b: no such entry");
    store(&fx, &["rm", "a/b"], &k, b"").fails(69, "kv://a/b: no such entry");
    for bad in ["vault://x/y", "a//b", "a b", ""] {
        let out = store(&fx, &["set", bad], &k, b"v");
        out.fails(64, "invalid ref");
    }
    // Refs are not echoed when invalid (they may be a pasted value).
    let value = canary("pasted");
    let out = store(&fx, &["get", &format!("{value} x")], &k, b"");
    out.fails(64, "invalid ref");
    assert!(!out.stderr.contains(&value));
}

#[test]
fn rm_removes_only_that_entry() {
    let (fx, key) = initialised();
    let k = [(KEY, key.as_str())];
    set(&fx, "a/1", b"one", &k);
    set(&fx, "a/2", b"two", &k);
    // rm needs no key.
    store(&fx, &["rm", "kv://a/1"], &[], b"")
        .ok()
        .stderr
        .contains("removed kv://a/1")
        .then_some(())
        .expect("confirmation");
    get(&fx, "a/1", &k).fails(69, "no such entry");
    assert_eq!(get(&fx, "a/2", &k).ok().stdout, b"two");
}

#[test]
fn list_shows_metadata_and_never_values() {
    let (fx, key) = initialised();
    let k = [(KEY, key.as_str())];
    let (v1, v2) = (canary("l1"), canary("l2"));
    set(&fx, "openai/dev/api_key", v1.as_bytes(), &k);
    set(&fx, "slack/prod/bot", v2.as_bytes(), &k);
    let table = store(&fx, &["list"], &[], b"");
    let text = String::from_utf8_lossy(&table.ok().stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("REF"), "{text}");
    assert!(lines[1].starts_with("kv://openai/dev/api_key  0"), "{text}");
    assert!(lines[2].starts_with("kv://slack/prod/bot"), "{text}");
    let json = store(&fx, &["list", "--format", "json"], &[], b"");
    let doc: serde_json::Value = serde_json::from_slice(&json.ok().stdout).expect("json");
    let entries = doc["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["ref"], "kv://openai/dev/api_key");
    assert_eq!(entries[0]["key_version"], 0);
    let created = entries[0]["created"].as_str().expect("created");
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");
    assert_eq!(doc["store"], fx.store.display().to_string());
    for out in [&table, &json] {
        assert_absent(&out.all(), v1.as_bytes(), "list");
        assert_absent(&out.all(), v2.as_bytes(), "list");
    }
}

#[test]
fn setting_the_same_value_keeps_its_rotation_date() {
    let (fx, key) = initialised();
    let k = [(KEY, key.as_str())];
    set(&fx, "a/b", b"same", &k);
    let first = Store::open(&fx.store, KeyRing::default())
        .expect("open")
        .list();
    // Backdate it so a change would show.
    tamper(&fx, |f| {
        f.entries[0].created -= 1000;
        f.entries[0].updated -= 1000;
    });
    let out = store(&fx, &["set", "a/b"], &k, b"same\n");
    assert!(out.ok().stderr.contains("same value"), "{}", out.stderr);
    let after = Store::open(&fx.store, KeyRing::default())
        .expect("open")
        .list();
    assert_eq!(after[0].updated, first[0].updated - 1000);
    store(&fx, &["set", "a/b"], &k, b"other").ok();
    let changed = Store::open(&fx.store, KeyRing::default())
        .expect("open")
        .list();
    assert!(changed[0].updated >= first[0].updated);
    assert_eq!(changed[0].created, first[0].created - 1000);
}

#[test]
fn init_is_idempotent_and_makes_private_files() {
    let fx = Fx::new();
    let key = new_key();
    let out = store(&fx, &["init"], &[(KEY, &key)], b"");
    assert!(
        out.ok().stderr.contains("created the store"),
        "{}",
        out.stderr
    );
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    let folder = fx.store.parent().expect("folder");
    assert_eq!(mode(folder), 0o700);
    assert_eq!(mode(folder.parent().expect("data")), 0o700);
    assert_eq!(mode(&fx.store), 0o600);
    set(&fx, "a/b", b"v", &[(KEY, &key)]);
    assert_eq!(mode(&fx.store), 0o600);
    assert_eq!(mode(&folder.join("store.lock")), 0o600);
    let out = store(&fx, &["init"], &[(KEY, &key)], b"");
    assert!(
        out.ok()
            .stderr
            .contains("already exists (1 entry); nothing to do"),
        "{}",
        out.stderr
    );
    store(&fx, &["init"], &[], b"").fails(78, "no encryption key");
}

#[test]
fn default_path_follows_xdg_data_home() {
    let fx = Fx::new();
    let key = new_key();
    let data = fx.path().join("xdg");
    let data_s = data.to_str().expect("utf-8");
    let opts = StoreOptions::default();
    let cmd = |c: keywarden::commands::store::StoreCommand, stdin: &[u8]| {
        let mut input = stdin;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = keywarden::commands::store::StoreIo {
            input: keywarden::commands::store::Input::Stream(&mut input),
            stdout: &mut out,
            stdout_is_terminal: false,
            stderr: &mut err,
        };
        let vars = env(&[
            (KEY, &key),
            ("XDG_DATA_HOME", data_s),
            ("HOME", "/nonexistent"),
        ]);
        keywarden::commands::store::run_store_with(&c, &opts, &vars, &mut io).map(|_| out)
    };
    cmd(keywarden::commands::store::StoreCommand::Init, b"").expect("init");
    assert!(data.join("keywarden/store").is_file());
    cmd(
        keywarden::commands::store::StoreCommand::Set {
            reference: "a/b".into(),
            value_on_argv: Vec::new(),
        },
        b"xdg value",
    )
    .expect("set");
    let out = cmd(
        keywarden::commands::store::StoreCommand::Get {
            reference: "a/b".into(),
        },
        b"",
    )
    .expect("get");
    assert_eq!(out, b"xdg value");
}

#[test]
fn backend_resolves_kv_refs() {
    let (fx, key) = initialised();
    let k = [(KEY, key.as_str())];
    let value = canary("backend");
    set(&fx, "openai/dev/api_key", value.as_bytes(), &k);
    let opts = StoreOptions {
        store: Some(fx.store.clone()),
        key_file: None,
    };
    let backend = open_backend(&opts, &env(&k))
        .expect("open")
        .expect("a store");
    let resolver = Resolver::new(Context::default(), Duration::from_secs(5), Ok(backend));
    let request = |r: &str| Request {
        label: "openai".into(),
        reference: SecretRef::parse(r).expect("ref"),
        base_dir: fx.path().into(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let got = rt
        .block_on(resolver.resolve(&request("kv://openai/dev/api_key")))
        .expect("resolves");
    assert_eq!(got.expose(), value.as_bytes());
    let missing = rt
        .block_on(resolver.resolve(&request("kv://openai/prod/api_key")))
        .expect_err("missing");
    assert_eq!(missing.kind.exit_code(), 69);
    let e = missing.for_request(&request("kv://openai/prod/api_key"));
    assert!(
        e.to_string()
            .starts_with("cannot resolve openai (kv://openai/prod/api_key): no such entry"),
        "{e}"
    );

    // The file exists, but no key or a wrong key: an error, not None.
    let e = open_backend(&opts, &[]).err().expect("no key");
    assert_eq!(e.exit_code(), 78);
    assert!(
        e.to_string().contains("exists but no encryption key"),
        "{e}"
    );
    let e = open_backend(&opts, &env(&[(KEY, &new_key())]))
        .err()
        .expect("wrong key");
    assert_eq!(e.exit_code(), 78);
    assert!(e.to_string().contains("is not the key"), "{e}");
}

#[test]
fn canary_keys_and_values_never_appear_in_messages() {
    let (fx, key) = initialised();
    let value = canary("msg");
    set(&fx, "a/b", value.as_bytes(), &[(KEY, &key)]);
    let other = new_key();
    let mut outputs: Vec<Out> = Vec::new();
    type Run<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a [u8]);
    let runs: Vec<Run> = vec![
        (vec!["get", "a/b"], vec![(KEY, &other)], b""),
        (vec!["get", "a/b"], vec![(KEY, &key[..60])], b""),
        (vec!["get", "a/b"], vec![("ENCRYPTION_KEY_V1", &other)], b""),
        (
            vec!["get", "a/b"],
            vec![(KEY, &key), ("ENCRYPTION_KEY_V0", &other)],
            b"",
        ),
        (vec!["get", "a/b"], vec![(KEY, &key), (VERSION, &key)], b""),
        (vec!["set", "a/b"], vec![(KEY, &other)], value.as_bytes()),
        (
            vec!["set", "a/c"],
            vec![(KEY, &key), (VERSION, "0")],
            value.as_bytes(),
        ),
        (vec!["rotate-key"], vec![(KEY, &other), (VERSION, "2")], b""),
        (vec!["get", "a/missing"], vec![(KEY, &key)], b""),
        (vec!["list"], vec![(KEY, &key)], b""),
        (vec!["set", "a/b"], vec![(KEY, &key)], value.as_bytes()),
    ];
    for (args, vars, stdin) in &runs {
        outputs.push(store(&fx, args, vars, stdin));
    }
    tamper(&fx, |f| f.entries[0].sealed[0] ^= 1);
    outputs.push(get(&fx, "a/b", &[(KEY, &key)]));
    std::fs::write(&fx.store, b"garbage").expect("write");
    outputs.push(get(&fx, "a/b", &[(KEY, &key)]));
    for out in &outputs {
        let all = out.all();
        assert_absent(&all, value.as_bytes(), "output");
        for k in [&key, &other] {
            assert!(
                !contains(&all.to_ascii_lowercase(), &k.as_bytes()[..16]),
                "{out:?}"
            );
            assert_absent(&all, key_bytes(k).expose(), "output");
        }
    }
    assert!(outputs.iter().filter(|o| o.code != 0).count() >= 10);
}

/// A store of `n` entries sealed under `key` as version 1, built directly
/// through the format module (one write instead of `n`).
fn big_store(path: &Path, key: &str, n: usize) -> Vec<u8> {
    let k = key_bytes(key);
    let mut f = StoreFile::default();
    let nonce = |i: usize| {
        let mut n = [0u8; format::NONCE_LEN];
        n[..8].copy_from_slice(&(i as u64).to_be_bytes());
        n[8..].copy_from_slice(&random_bytes(4));
        n
    };
    f.put_key_check(format::make_key_check(k.expose(), 1, nonce(usize::MAX)).expect("check"));
    for i in 0..n {
        let reference = format!("kv://svc{:05}/api_key", i);
        let value = format!("value-{i}");
        let nonce = nonce(i);
        f.upsert(Entry {
            sealed: format::seal(k.expose(), 1, &reference, value.as_bytes(), nonce).expect("seal"),
            reference,
            key_version: 1,
            created: 1_700_000_000,
            updated: 1_700_000_000,
            nonce,
        });
    }
    let bytes = f.encode();
    std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
    std::fs::write(path, &bytes).expect("write");
    bytes
}

/// Open with both keys; every entry must decrypt to its value, and all must
/// be under one version (the rotation is one atomic write).
fn assert_whole(path: &Path, old: &str, new: &str, n: usize) -> u32 {
    let keys =
        KeyRing::from_keys(Some((2, key_bytes(new))), vec![(1, key_bytes(old))]).expect("ring");
    let store = Store::open(path, keys).expect("the store opens after a crash");
    let list = store.list();
    assert_eq!(list.len(), n);
    let version = list[0].key_version;
    assert!(
        list.iter().all(|m| m.key_version == version),
        "mixed versions"
    );
    for (i, m) in list.iter().enumerate() {
        let v = store.get(&m.reference).expect("readable");
        assert_eq!(v.expose(), format!("value-{i}").as_bytes());
    }
    version
}

#[test]
fn crash_safety_kill9_during_rotate_key() {
    const N: usize = 10_000;
    const ROUNDS: usize = 36;
    let fx = Fx::new();
    let (old, new) = (new_key(), new_key());
    let master = fx.path().join("master");
    let pristine = big_store(&master, &old, N);
    let vars = [
        (KEY, new.as_str()),
        (VERSION, "2"),
        ("ENCRYPTION_KEY_V1", old.as_str()),
    ];

    // One full run tells how long a rotation takes here.
    let calibrate = Fx::new();
    std::fs::create_dir_all(calibrate.store.parent().expect("folder")).expect("mkdir");
    std::fs::write(&calibrate.store, &pristine).expect("copy");
    let started = Instant::now();
    run_process(store_process(&calibrate, &["rotate-key"], &vars), b"").ok();
    let full = started.elapsed();
    assert_eq!(assert_whole(&calibrate.store, &old, &new, N), 2);
    assert_eq!(assert_whole(&master, &old, &new, N), 1);

    let mut outcomes = [0usize; 3];
    // The estimate follows how long runs really take now (other tests share
    // the cores), so the kills keep landing inside the run.
    let mut estimate = full;
    for round in 0..ROUNDS {
        let fx = Fx::new();
        std::fs::create_dir_all(fx.store.parent().expect("folder")).expect("mkdir");
        std::fs::write(&fx.store, &pristine).expect("copy");
        // Random instants over the whole run, every other round weighted
        // toward its end, where the write, fsync and rename happen.
        let r = u32::from_le_bytes(random_bytes(4).try_into().expect("4 bytes"));
        let frac = f64::from(r) / f64::from(u32::MAX);
        let frac = if round % 2 == 0 {
            frac * 1.1
        } else {
            0.6 + frac * 0.5
        };
        let delay = estimate.mul_f64(frac);
        let started = Instant::now();
        let mut child = store_process(&fx, &["rotate-key"], &vars)
            .spawn()
            .expect("spawn");
        while started.elapsed() < delay {
            if child.try_wait().expect("try_wait").is_some() {
                estimate = started.elapsed();
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let _ = child.kill();
        let status = child.wait().expect("wait");
        outcomes[usize::from(status.success())] += 1;
        // Byte-identical to the original (proven readable above), or else a
        // complete, readable rotation: never anything in between.
        if std::fs::read(&fx.store).expect("the store is still there") != pristine {
            assert_eq!(assert_whole(&fx.store, &old, &new, N), 2);
            outcomes[2] += 1;
        }
        // Whatever the crash left behind, the next writer cleans up and completes.
        if round % 12 == 0 {
            run_process(store_process(&fx, &["rotate-key"], &vars), b"").ok();
            assert_eq!(assert_whole(&fx.store, &old, &new, N), 2);
            let names: Vec<String> = std::fs::read_dir(fx.store.parent().expect("folder"))
                .expect("ls")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| n == "store" || n == "store.lock"),
                "{names:?}"
            );
        }
    }
    eprintln!(
        "rotate-key of {N} entries: {full:?} per run; {} killed, {} finished, {} rounds ended rotated",
        outcomes[0], outcomes[1], outcomes[2]
    );
    assert!(
        outcomes[0] > ROUNDS / 3,
        "most rounds must really be killed"
    );
}

#[test]
fn concurrent_sets_all_survive() {
    let (fx, key) = initialised();
    let vars = [(KEY, key.as_str())];
    // Pairs started together, many times.
    for round in 0..12 {
        let refs = [format!("pair{round}/a"), format!("pair{round}/b")];
        let children: Vec<_> = refs
            .iter()
            .map(|r| {
                let mut c = store_process(&fx, &["set", r], &vars);
                c.stdin(std::process::Stdio::piped());
                c.spawn().expect("spawn")
            })
            .collect();
        for (mut child, r) in children.into_iter().zip(&refs) {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(format!("value of {r}").as_bytes())
                .expect("write");
            drop(stdin);
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // And a burst.
    let burst: Vec<_> = (0..12)
        .map(|i| {
            let r = format!("burst/{i}");
            let mut c = store_process(&fx, &["set", &r], &vars);
            c.stdin(std::process::Stdio::piped());
            let mut child = c.spawn().expect("spawn");
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(format!("value of {r}").as_bytes())
                .expect("write");
            (child, stdin)
        })
        .collect();
    for (child, stdin) in burst {
        drop(stdin);
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = Store::open(
        &fx.store,
        KeyRing::from_keys(Some((1, key_bytes(&key))), Vec::new()).expect("ring"),
    )
    .expect("open");
    let list = store.list();
    assert_eq!(list.len(), 12 * 2 + 12);
    for m in list {
        let path = m.reference.trim_start_matches("kv://");
        assert_eq!(
            store.get(&m.reference).expect("get").expose(),
            format!("value of {path}").as_bytes()
        );
    }
}

mod prompt {
    //! `store set` on a terminal: a pseudo-terminal stands in for a person.

    use super::*;
    use nix::pty::openpty;
    use nix::sys::termios::{tcgetattr, LocalFlags};
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::process::Stdio;
    use std::sync::Mutex;

    struct Session {
        child: std::process::Child,
        master: std::fs::File,
        slave: OwnedFd,
        stderr: Arc<Mutex<Vec<u8>>>,
        reader: Option<std::thread::JoinHandle<()>>,
    }

    fn start(fx: &Fx, key: &str, reference: &str) -> Session {
        let pty = openpty(None, None).expect("openpty");
        let mut cmd = store_process(fx, &["set", reference], &[(KEY, key)]);
        cmd.stdin(Stdio::from(pty.slave.try_clone().expect("dup")));
        let mut child = cmd.spawn().expect("spawn");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Session {
            child,
            master: std::fs::File::from(pty.master),
            slave: pty.slave,
            stderr,
            reader: Some(reader),
        }
    }

    impl Session {
        fn wait_for_prompt(&self) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !String::from_utf8_lossy(&self.stderr.lock().expect("lock")).contains("Value for")
            {
                assert!(Instant::now() < deadline, "no prompt");
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        fn finish(mut self) -> (u8, String, Vec<u8>) {
            let deadline = Instant::now() + Duration::from_secs(20);
            let status = loop {
                if let Some(s) = self.child.try_wait().expect("wait") {
                    break s;
                }
                assert!(Instant::now() < deadline, "still running");
                std::thread::sleep(Duration::from_millis(5));
            };
            // Whatever the terminal echoed is waiting on the master side.
            nix::fcntl::fcntl(
                &self.master,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .expect("nonblock");
            let mut echoed = Vec::new();
            let _ = self.master.read_to_end(&mut echoed);
            let attrs = tcgetattr(&self.slave).expect("tcgetattr");
            assert!(
                attrs
                    .local_flags
                    .contains(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG),
                "terminal mode not restored: {:?}",
                attrs.local_flags
            );
            // The process is gone: read its stderr to the end before looking.
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
            let stderr = String::from_utf8_lossy(&self.stderr.lock().expect("lock")).into_owned();
            (status.code().map_or(255, |c| c as u8), stderr, echoed)
        }
    }

    #[test]
    fn typed_value_is_not_echoed_and_mode_is_restored() {
        let (fx, key) = initialised();
        let value = canary("typed");
        let mut s = start(&fx, &key, "tty/value");
        s.wait_for_prompt();
        // A typo fixed with backspace, then Enter.
        s.master
            .write_all(format!("{value}X\x7f\r").as_bytes())
            .expect("type");
        let (code, stderr, echoed) = s.finish();
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("Value for kv://tty/value: "), "{stderr}");
        assert_absent(&echoed, value.as_bytes(), "the terminal");
        assert_absent(stderr.as_bytes(), value.as_bytes(), "stderr");
        assert_eq!(
            get(&fx, "tty/value", &[(KEY, &key)]).ok().stdout,
            value.as_bytes()
        );
    }

    #[test]
    fn ctrl_c_cancels_and_restores_the_mode() {
        let (fx, key) = initialised();
        let before = fx.bytes();
        let mut s = start(&fx, &key, "tty/cancel");
        s.wait_for_prompt();
        s.master.write_all(b"partial\x03").expect("type");
        let (code, stderr, echoed) = s.finish();
        assert_eq!(code, 130, "{stderr}");
        assert!(stderr.contains("cancelled"), "{stderr}");
        assert!(!contains(&echoed, b"partial"));
        assert_eq!(fx.bytes(), before, "nothing stored");
    }
}
