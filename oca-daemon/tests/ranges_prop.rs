//! Property: random single and multiple ranges over random files return exactly the file's bytes
//! (overlapping and adjacent ranges merged, ranges adding up to more than the file answered with
//! the whole file once), on both engines.

mod common;

use common::*;
use proptest::prelude::*;
use std::sync::OnceLock;

struct World {
    _dir: tempfile::TempDir,
    files: Vec<(String, Vec<u8>)>,
    servers: Vec<Server>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [
            0usize, 1, 2, 7, 4095, 4096, 4097, 65_536, 300_001, 2_000_003,
        ];
        let files: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let id = format!("f{i}_{n}.bin");
                let body = pattern(i as u64 + 11, n);
                put(dir.path(), &id, &body);
                (id, body)
            })
            .collect();
        let servers = ENGINES
            .iter()
            .map(|e| Server::start(e, &[dir.path()], &["--max-ranges", "8"]))
            .collect();
        World {
            _dir: dir,
            files,
            servers,
        }
    })
}

/// A range spec as a client writes it, and what it means for a file of `size` bytes.
#[derive(Clone, Debug)]
enum Spec {
    FromTo(u64, u64),
    From(u64),
    Suffix(u64),
}

impl Spec {
    fn text(&self) -> String {
        match self {
            Spec::FromTo(a, b) => format!("{a}-{b}"),
            Spec::From(a) => format!("{a}-"),
            Spec::Suffix(n) => format!("-{n}"),
        }
    }

    fn resolve(&self, size: u64) -> Option<(u64, u64)> {
        match *self {
            Spec::FromTo(a, b) if a < size => Some((a, b.min(size - 1))),
            Spec::From(a) if a < size => Some((a, size - 1)),
            Spec::Suffix(n) if n > 0 && size > 0 => Some((size.saturating_sub(n), size - 1)),
            _ => None,
        }
    }
}

fn spec(max: u64) -> impl Strategy<Value = Spec> {
    prop_oneof![
        (0..max, 0..max).prop_map(|(a, len)| Spec::FromTo(a, a + len)),
        (0..max).prop_map(Spec::From),
        (0..max).prop_map(Spec::Suffix),
    ]
}

/// The ranges as the server sends them: ascending, overlapping and adjacent ones merged.
fn merged(asked: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sorted = asked.to_vec();
    sorted.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in sorted {
        match out.last_mut() {
            Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn ranges_return_exactly_the_files_bytes(file in 0usize..10, specs in prop::collection::vec(spec(2_100_000), 1..6), server in 0..ENGINES.len()) {
        let w = world();
        let (id, body) = &w.files[file];
        let s = &w.servers[server];
        let size = body.len() as u64;
        let header = format!("bytes={}", specs.iter().map(Spec::text).collect::<Vec<_>>().join(","));
        let r = client().get(s.url(&format!("/c/{id}"))).header("range", &header).send().unwrap();
        let asked: Vec<(u64, u64)> = specs.iter().filter_map(|sp| sp.resolve(size)).collect();
        let want = merged(&asked);
        let status = r.status().as_u16();
        let ctype = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let content_range = r.headers().get("content-range").map(|v| v.to_str().unwrap().to_string());
        let got = r.bytes().unwrap();
        if asked.iter().map(|(a, b)| b - a + 1).sum::<u64>() > size {
            // More bytes asked for than the file has: the whole file, once.
            prop_assert_eq!(status, 200);
            prop_assert!(got[..] == body[..]);
            return Ok(());
        }
        match want.len() {
            0 => {
                prop_assert_eq!(status, 416);
                prop_assert_eq!(content_range, Some(format!("bytes */{size}")));
            }
            1 => {
                let (a, b) = want[0];
                prop_assert_eq!(status, 206);
                prop_assert_eq!(content_range, Some(format!("bytes {a}-{b}/{size}")));
                prop_assert!(got[..] == body[a as usize..=b as usize]);
            }
            _ => {
                prop_assert_eq!(status, 206);
                let parts = multipart_parts(&ctype, &got);
                prop_assert_eq!(parts.len(), want.len());
                for ((cr, bytes), (a, b)) in parts.iter().zip(&want) {
                    prop_assert_eq!(cr, &format!("bytes {a}-{b}/{size}"));
                    prop_assert!(bytes[..] == body[*a as usize..=*b as usize]);
                }
            }
        }
    }

    #[test]
    fn path_ranges_return_exactly_the_files_bytes(file in 0usize..10, a in 0u64..2_100_000, len in 0u64..300_000, server in 0..ENGINES.len()) {
        let w = world();
        let (id, body) = &w.files[file];
        let size = body.len() as u64;
        let r = client().get(w.servers[server].url(&format!("/c/{id}/range/{a}-{}", a + len))).send().unwrap();
        if a >= size {
            prop_assert_eq!(r.status().as_u16(), 416);
        } else {
            prop_assert_eq!(r.status().as_u16(), 206);
            let b = (a + len).min(size - 1);
            prop_assert!(r.bytes().unwrap()[..] == body[a as usize..=b as usize]);
        }
    }
}
