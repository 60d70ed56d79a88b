//! A transform for the host's test suite. Its behaviour is chosen by the
//! connector's `config.mode`:
//!
//! | mode | does |
//! |---|---|
//! | `echo` (default) | outputs the input unchanged; `copies = "N"` outputs N records (numbered in a `Copy` header); `delay_ms = "N"` sleeps first |
//! | `fail` | always fails: `retryable = "true"` for a retryable error, else permanent |
//! | `fail-every-nth` | fails permanently when the record key, read as a number, is a multiple of `n` |
//! | `loop` | never returns (an infinite loop) |
//! | `grow` | allocates memory until the host's cap stops it |
//! | `panic` | panics on payloads containing `panic`, echoes the rest |
//! | `kv-count` | counts records per key in kv with compare-and-swap, outputs the count |
//! | `recurse` | recurses until the stack runs out |
//! | `huge` | outputs one record of `bytes` bytes (default 8 MiB) |
//!
//! Every output carries a `Testkit-Tag` header with `config.tag`, so tests can see
//! which version of a connector produced a record across a hot swap.

use plexus_sdk::{Error, Record, Transform, config, kv};

struct Testkit;

impl Transform for Testkit {
    fn transform(input: Record) -> Result<Vec<Record>, Error> {
        let mode = config::get("mode").unwrap_or_else(|| "echo".into());
        let output = match mode.as_str() {
            "echo" => return echo(input),
            "fail" => {
                let reason = format!("testkit refuses record {}", input.key);
                return Err(match config::get("retryable").as_deref() {
                    Some("true") => Error::Retryable(reason),
                    _ => Error::Permanent(reason),
                });
            }
            "fail-every-nth" => {
                let n: u64 = config::get("n").and_then(|n| n.parse().ok()).unwrap_or(10);
                match input.key.parse::<u64>() {
                    Ok(k) if n > 0 && k % n == 0 => {
                        return Err(Error::Permanent(format!("record {k} is a multiple of {n}")));
                    }
                    _ => input,
                }
            }
            "loop" => spin_forever(),
            "grow" => grow_forever(),
            "panic" => {
                if input.payload.windows(5).any(|w| w == b"panic") {
                    panic!("testkit was asked to panic on record {}", input.key);
                }
                input
            }
            "recurse" => Record::new(input.key, depth(0).to_string()),
            "huge" => {
                let bytes: usize = config::get("bytes")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(8 << 20);
                Record::new(input.key, vec![b'x'; bytes])
            }
            "kv-count" => {
                let count = increment(&input.key)?;
                Record::new(input.key, count.to_string())
            }
            other => return Err(Error::Permanent(format!("unknown testkit mode {other:?}"))),
        };
        Ok(vec![tagged(output)])
    }
}

fn echo(input: Record) -> Result<Vec<Record>, Error> {
    if let Some(ms) = config::get("delay_ms").and_then(|n| n.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let copies: usize = config::get("copies")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    if copies == 1 {
        return Ok(vec![tagged(input)]);
    }
    Ok((0..copies)
        .map(|i| tagged(input.clone().with_header("Copy", i.to_string())))
        .collect())
}

fn tagged(record: Record) -> Record {
    match config::get("tag") {
        Some(tag) => record.with_header("Testkit-Tag", tag),
        None => record,
    }
}

fn increment(key: &str) -> Result<u64, Error> {
    let unavailable = |e: kv::KvError| Error::Retryable(format!("kv: {e:?}"));
    loop {
        let current = kv::get(key).map_err(unavailable)?;
        let (count, revision) = match current {
            Some(entry) => {
                let n = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
                (n + 1, Some(entry.revision))
            }
            None => (1, None),
        };
        match kv::compare_and_swap(key, count.to_string().as_bytes(), revision) {
            Ok(_) => return Ok(count),
            Err(kv::KvError::RevisionMismatch) => continue,
            Err(e) => return Err(unavailable(e)),
        }
    }
}

/// Unbounded recursion the optimiser cannot turn into a loop.
#[allow(unconditional_recursion)]
fn depth(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 16]);
    depth(frame[n as usize % 16] + 1) + frame[0]
}

fn spin_forever() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

fn grow_forever() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

plexus_sdk::export_transform!(Testkit);
