//! Shared by the property tests (`props` modules beside each parser of outside input).

use proptest::prelude::*;
use proptest::test_runner::Config;

/// `ci` cases per property in `cargo test`; `PROPTEST_CASES` (the long runs in
/// docs/reliability.md, e.g. 1,000,000) overrides it.
pub(crate) fn cases(ci: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = ci;
    }
    // Shrinking a failure of a million-case run must not take longer than the run.
    c.max_shrink_iters = 4096;
    c
}

/// Mutations of a valid message: what a corrupt or hostile sender does to one.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    /// Cut it at this fraction (0–255 of 256) of its length.
    Truncate(u8),
    /// XOR one byte (position as a fraction of the length).
    Flip(u8, u8),
    /// Overwrite two bytes at a position with a hostile 16-bit value (a length or a type).
    Word(u8, u16),
    /// Overwrite four bytes with a hostile 32-bit value.
    Dword(u8, u32),
    /// Append bytes.
    Append(Vec<u8>),
    /// Repeat a slice of the message (a duplicated attribute).
    Repeat(u8, u8),
}

/// Any [`Mutation`], the hostile lengths weighted up.
pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    let word = prop_oneof![
        Just(0u16),
        Just(1),
        Just(3),
        Just(4),
        Just(5),
        Just(0x7fff),
        Just(0xffff),
        any::<u16>()
    ];
    let dword = prop_oneof![Just(0u32), Just(u32::MAX), Just(0x8000_0000), any::<u32>()];
    prop_oneof![
        any::<u8>().prop_map(Mutation::Truncate),
        (any::<u8>(), 1..=255u8).prop_map(|(at, x)| Mutation::Flip(at, x)),
        (any::<u8>(), word).prop_map(|(at, v)| Mutation::Word(at, v)),
        (any::<u8>(), dword).prop_map(|(at, v)| Mutation::Dword(at, v)),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Mutation::Repeat(a, b)),
    ]
}

fn at(len: usize, frac: u8) -> usize {
    len * usize::from(frac) / 256
}

/// Apply mutations in order.
pub(crate) fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Truncate(f) => bytes.truncate(at(len, *f)),
            Mutation::Flip(f, x) if len > 0 => bytes[at(len, *f)] ^= x,
            Mutation::Word(f, v) if len >= 2 => {
                let i = at(len - 1, *f);
                bytes[i..i + 2].copy_from_slice(&v.to_ne_bytes());
            }
            Mutation::Dword(f, v) if len >= 4 => {
                let i = at(len - 3, *f);
                bytes[i..i + 4].copy_from_slice(&v.to_ne_bytes());
            }
            Mutation::Append(extra) => bytes.extend_from_slice(extra),
            Mutation::Repeat(a, b) => {
                let (a, b) = (at(len, *a), at(len, *b));
                let (a, b) = (a.min(b), a.max(b));
                let copy = bytes[a..b].to_vec();
                bytes.splice(b..b, copy);
            }
            _ => {}
        }
    }
    bytes
}

/// Strings a tenant or a broken peer might send: empty, huge, non-ASCII, control bytes,
/// quotes and escapes, lookalikes of the fields around them.
pub(crate) fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,40}",
        2 => "[a-z0-9.-]{1,63}",
        1 => Just(String::new()),
        1 => Just("\"}]{[\\\\\n\r\t\0".to_owned()),
        1 => (1usize..20_000).prop_map(|n| "x".repeat(n)),
        1 => "[\\PC\u{0}-\u{1f}\u{7f}\u{202e}\u{feff}]{0,30}",
    ]
}
