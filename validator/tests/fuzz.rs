//! Fuzzing the artifact loader with proptest: random bytes, random mutations of a valid file, and
//! random headers. Every input must give a verdict (a typed rejection or a score), never a panic,
//! an error or a huge allocation.
//!
//! `cargo test -p validator --test fuzz` runs each property for `VALIDATOR_FUZZ_CASES` cases
//! (default 1,000, a few seconds); for a longer run by hand:
//! `VALIDATOR_FUZZ_CASES=200000 cargo test --release -p validator --test fuzz`.

use consensus::task::TaskSpec;
use consensus::verdict::{RejectReason, Verdict};
use proptest::prelude::*;
use validator::eval::EvalData;
use validator::score::judge;
use validator::testing;

fn cases() -> u32 {
    std::env::var("VALIDATOR_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000)
}

struct Fixture {
    spec: TaskSpec,
    heldout: EvalData,
    valid: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(|| {
        let spec = testing::wine_spec();
        let heldout = testing::wine_heldout(&spec);
        // A small valid artifact so mutations often reach the later checks and the evaluation.
        let valid = testing::encode(&testing::mlp_tensors(&[13, 2, 3]));
        Fixture { spec, heldout, valid }
    })
}

/// Judges `bytes` with the fixture task: must not panic and must not fail.
fn judge_any(bytes: &[u8]) {
    let f = fixture();
    judge(bytes, &f.spec, None, &f.heldout).expect("a bad artifact is a verdict, never an error");
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..32usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Flip { at, mask } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= mask;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b = *byte;
            }
        }
        Mutation::Insert { at, bytes: new } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            bytes.drain(at.min(end)..end);
        }
        Mutation::Truncate { at } => bytes.truncate(at % n),
    }
}

fn dtype() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["F32", "F16", "BF16", "F64", "I8", "", "f32"])
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..4usize, prop::sample::select(vec!["weight", "bias", "w"]))
            .prop_map(|(i, p)| format!("layers.{i}.{p}")),
        Just("__metadata__".to_string()),
        "[a-z.0-9]{0,12}",
    ]
}

/// A header of random tensors with random dtypes, shapes and offsets, plus random data.
fn random_header() -> impl Strategy<Value = Vec<u8>> {
    let dims = || prop_oneof![0..20u64, Just(u64::MAX), Just(1u64 << 32), any::<u64>()];
    let tensor = (
        name(),
        dtype(),
        proptest::collection::vec(dims(), 0..4),
        prop_oneof![0..400u64, any::<u64>()],
        prop_oneof![0..400u64, any::<u64>()],
    );
    (proptest::collection::vec(tensor, 0..6), 0..400usize).prop_map(|(tensors, data)| {
        let entries: Vec<String> = tensors
            .iter()
            .map(|(name, dtype, shape, begin, end)| {
                format!(
                    r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{begin},{end}]}}"#
                )
            })
            .collect();
        let header = format!("{{{}}}", entries.join(","));
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend((0..data).map(|i| (i * 31 % 251) as u8));
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        judge_any(&bytes);
    }

    #[test]
    fn random_length_prefixes_never_panic(len in any::<u64>(), rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend(rest);
        judge_any(&bytes);
    }

    #[test]
    fn mutations_of_a_valid_file_never_panic(mutations in proptest::collection::vec(mutation(), 1..6)) {
        let mut bytes = fixture().valid.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        judge_any(&bytes);
    }

    #[test]
    fn data_mutations_give_a_score_or_non_finite(
        changes in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12),
    ) {
        let f = fixture();
        let mut bytes = f.valid.clone();
        let data_start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let data_len = bytes.len() - data_start;
        for (at, byte) in changes {
            bytes[data_start + at % data_len] = byte;
        }
        let verdict = judge(&bytes, &f.spec, None, &f.heldout).unwrap().verdict();
        let ok = matches!(
            verdict,
            Verdict::Scored { .. } | Verdict::Rejected { reason: RejectReason::NonFinite }
        );
        prop_assert!(ok, "{verdict:?}");
    }

    #[test]
    fn random_headers_never_panic(bytes in random_header()) {
        judge_any(&bytes);
    }
}
