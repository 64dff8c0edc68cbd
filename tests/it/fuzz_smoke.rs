//! The fuzz targets of `fuzz/` on the stable toolchain, for a few seconds:
//! every file of the target's corpus as it is, then inputs mutated from
//! them by a seeded PRNG (bit flips, inserted tokens, splices, cuts), so
//! each run is the same run. It is a smoke test, not a fuzzer — the real
//! one is `cargo +nightly fuzz run <target>` (docs/reliability.md) — but it
//! keeps the target bodies compiling and their invariants true in every
//! `cargo test`.
//!
//! `BUCKETFTP_FUZZ_SMOKE_ITERATIONS` scales the number of mutated inputs,
//! `BUCKETFTP_FUZZ_SMOKE_SEED` picks another sequence. A failing input is
//! written to the temporary directory, ready for `cargo fuzz run <target>
//! <file>`.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// SplitMix64: tiny, fast, and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Tokens that matter to FTP paths: the resolver's and the refusals' cases.
const PATH_TOKENS: &[&[u8]] = &[
    b"..",
    b".",
    b"/",
    b"//",
    b"\\",
    b"\0",
    b"\n",
    b"\r",
    b"%2e",
    b"%",
    b"~",
    b" ",
    b"#",
    b"[",
    b"]",
    "ü".as_bytes(),
    "\u{2028}".as_bytes(),
    "\u{85}".as_bytes(),
    b"\xff",
    b"\xc3",
    b"../",
    b"/..",
    b"/./",
    b"...",
];

/// Tokens that matter to the configuration: sections, keys, TOML syntax,
/// and values at the edges of what validation accepts.
const CONFIG_TOKENS: &[&[u8]] = &[
    b"\n",
    b"[server]\n",
    b"[http]\n",
    b"[log]\n",
    b"[storage]\n",
    b"[storage.options]\n",
    b"[tls]\n",
    b"[auth]\n",
    b"[[users]]\n",
    b" = ",
    b"\"",
    b"'",
    b"\"\"\"",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b".",
    b"#",
    b"\\u0000",
    b"\\",
    b"0",
    b"-1",
    b"65535",
    b"65536",
    b"18446744073709551615",
    b"1e400",
    b"nan",
    b"inf",
    b"true",
    b"2024-01-01T00:00:00Z",
    b"listen",
    b"passive_ports",
    b"passive_host",
    b"idle_timeout",
    b"max_sessions",
    b"max_sessions_per_ip",
    b"max_uploads",
    b"shutdown_grace",
    b"greeting",
    b"format",
    b"level",
    b"url",
    b"part_size",
    b"upload_concurrency",
    b"rename_limit",
    b"engine",
    b"cert",
    b"key",
    b"required",
    b"anonymous",
    b"anonymous_home",
    b"anonymous_permissions",
    b"lockout_attempts",
    b"lockout_period",
    b"name",
    b"password_hash",
    b"home",
    b"permissions",
    b"enabled",
    b"storage",
    b"storage_options",
    b"allowed_ips",
    b"tls_required",
    b"\"1-65535\"",
    b"\"0-0\"",
    b"\"5MiB\"",
    b"\"5GiB\"",
    b"\"5121KiB\"",
    b"\"9999999999999999999h\"",
    b"\"0s\"",
    b"\"::1\"",
    b"\"10.0.0.0/33\"",
    b"\"s3://b/p\"",
    b"\"file:///\"",
    b"\"memory://\"",
    b"\"unftp-sbe-gcs\"",
    b"\"gs://b\"",
    b"\"/../..\"",
    b"\"a\\nb\"",
    b"\"$argon2id$\"",
    b"\"$pbkdf2-sha256$i=1\"",
    b"\"bucketftp=trace,[{a=1}]\"",
    b"\"[\"",
];

/// One mutation of `input`, in place.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, tokens: &[&[u8]], corpus: &[Vec<u8>]) {
    let at = |rng: &mut Rng, input: &Vec<u8>| rng.below(input.len() + 1);
    match rng.below(8) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = at(rng, input);
            input.insert(i, rng.next() as u8);
        }
        2 | 3 => {
            let i = at(rng, input);
            let token = tokens[rng.below(tokens.len())];
            input.splice(i..i, token.iter().copied());
        }
        4 if !input.is_empty() => {
            let start = rng.below(input.len());
            let end = (start + 1 + rng.below(16)).min(input.len());
            input.drain(start..end);
        }
        5 if !input.is_empty() => {
            // Repeat a slice: long names, deep paths, big arrays.
            let start = rng.below(input.len());
            let end = (start + 1 + rng.below(32)).min(input.len());
            let piece = input[start..end].to_vec();
            let i = at(rng, input);
            for _ in 0..1 + rng.below(40) {
                input.splice(i..i, piece.iter().copied());
            }
        }
        6 => {
            // Splice in part of another corpus entry.
            let other = &corpus[rng.below(corpus.len())];
            if !other.is_empty() {
                let start = rng.below(other.len());
                let end = start + rng.below(other.len() - start + 1);
                let i = at(rng, input);
                input.splice(i..i, other[start..end].iter().copied());
            }
        }
        _ => {
            let keep = at(rng, input);
            input.truncate(keep);
        }
    }
}

/// The files of a corpus directory, sorted (for a repeatable run).
fn read_corpus(dirs: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("read corpus file"))
        .collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `target` on every corpus entry, then on `iterations` mutants.
fn smoke(name: &str, target: fn(&[u8]), tokens: &[&[u8]], extra_seeds: &[&str], iterations: u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("fuzz/corpus").join(name)];
    dirs.extend(extra_seeds.iter().map(|d| root.join(d)));
    let corpus = read_corpus(&dirs);
    assert!(!corpus.is_empty(), "no seeds in fuzz/corpus/{name}");
    let iterations = env_number("BUCKETFTP_FUZZ_SMOKE_ITERATIONS", iterations);
    let mut rng = Rng(env_number("BUCKETFTP_FUZZ_SMOKE_SEED", 0x6275_636b_6574));
    let started = std::time::Instant::now();
    let run = |input: &[u8], what: &str| {
        if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            let file = std::env::temp_dir().join(format!("bucketftp-fuzz-{name}-{what}"));
            std::fs::write(&file, input).expect("save failing input");
            panic!(
                "{name} failed on {what}: {:?}\n(saved to {}; replay with `cargo +nightly fuzz run {name} {}`)",
                String::from_utf8_lossy(&input[..input.len().min(300)]),
                file.display(),
                file.display()
            );
        }
    };
    for (i, seed) in corpus.iter().enumerate() {
        run(seed, &format!("seed{i}"));
    }
    for n in 0..iterations {
        let mut input = if rng.below(16) == 0 {
            // Now and then plain random bytes.
            (0..rng.below(256)).map(|_| rng.next() as u8).collect()
        } else {
            corpus[rng.below(corpus.len())].clone()
        };
        for _ in 0..1 + rng.below(8) {
            mutate(&mut rng, &mut input, tokens, &corpus);
        }
        input.truncate(64 << 10);
        run(&input, &format!("mutant{n}"));
    }
    eprintln!(
        "{name}: {} seeds + {iterations} mutants in {:?}",
        corpus.len(),
        started.elapsed()
    );
}

#[test]
fn path_to_key_smoke() {
    smoke(
        "path_to_key",
        targets::path_to_key,
        PATH_TOKENS,
        &[],
        50_000,
    );
}

#[test]
fn config_parse_smoke() {
    smoke(
        "config_parse",
        targets::config_parse,
        CONFIG_TOKENS,
        &["docs/examples"],
        40_000,
    );
}
