//! Crafted artifacts: each is rejected with the right reason, through the full `judge` path, and
//! nothing panics.

use std::collections::BTreeMap;

use consensus::hash::sha256;
use consensus::task::{Dtype, TaskSpec};
use consensus::types::Hash;
use consensus::verdict::{RejectReason, Verdict};
use validator::artifact::{decode_weights, parse_header};
use validator::check::{Revealed, check_artifact, nonzero_params};
use validator::eval::EvalData;
use validator::score::judge;
use validator::testing;

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The fixture task's shape: 13 features, 3 classes; a 13-4-3 MLP.
fn valid() -> Tensors {
    testing::mlp_tensors(&[13, 4, 3])
}

/// What an honest trainer reveals: the hash, the size and the non-zero count of the values (0
/// when the header cannot be read).
fn revealed_for(bytes: &[u8], spec: &TaskSpec) -> Revealed {
    let params = parse_header(bytes, &spec.limits.dtypes)
        .map(|h| nonzero_params(&decode_weights(bytes, &h)))
        .unwrap_or(0);
    Revealed { model_hash: sha256(bytes), params, size_bytes: Some(bytes.len() as u64) }
}

/// The verdict of `bytes`, revealed honestly (its own hash and count) unless `revealed` is given.
fn verdict(
    bytes: &[u8],
    spec: &TaskSpec,
    heldout: &EvalData,
    revealed: Option<Revealed>,
) -> Verdict {
    let revealed = revealed.unwrap_or_else(|| revealed_for(bytes, spec));
    judge(bytes, spec, Some(&revealed), heldout)
        .expect("judging never fails on bad artifacts")
        .verdict()
}

fn rejected(reason: RejectReason) -> Verdict {
    Verdict::Rejected { reason }
}

/// Asserts that every case, revealed honestly, is rejected for `reason`.
fn assert_rejected<'a>(
    cases: impl IntoIterator<Item = (&'a str, Vec<u8>)>,
    spec: &TaskSpec,
    heldout: &EvalData,
    reason: RejectReason,
) {
    for (what, bytes) in cases {
        assert_eq!(verdict(&bytes, spec, heldout, None), rejected(reason), "{what}");
    }
}

/// A safetensors file with a hand-written header.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn with(mut t: Tensors, f: impl FnOnce(&mut Tensors)) -> Vec<u8> {
    f(&mut t);
    testing::encode(&t)
}

#[test]
fn the_valid_artifact_scores() {
    let spec = testing::wine_spec();
    let heldout = testing::wine_heldout(&spec);
    assert!(matches!(
        verdict(&testing::encode(&valid()), &spec, &heldout, None),
        Verdict::Scored { .. }
    ));
}

#[test]
fn malformed_files_are_rejected_as_malformed() {
    let spec = testing::wine_spec();
    let heldout = testing::wine_heldout(&spec);
    let good = testing::encode(&valid());
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut past_end = good.clone();
    past_end[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    let mut huge_len = good.clone();
    huge_len[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", vec![]),
        ("shorter than the length prefix", good[..5].to_vec()),
        ("truncated in the header", good[..8 + header_len / 2].to_vec()),
        ("truncated in the data", good[..good.len() - 3].to_vec()),
        ("header length larger than the file", past_end),
        ("header length of 2^64 - 1", huge_len),
        (
            "a header claiming a multi-GB tensor",
            raw(
                r#"{"layers.0.weight":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,40000000000]}}"#,
                &[0; 16],
            ),
        ),
        (
            "a shape whose byte size overflows",
            raw(
                r#"{"layers.0.weight":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
        ("invalid JSON header", raw(r#"{"layers.0.weight": {"dtype": "F32", "sha"#, &[0; 8])),
        ("a header that is not an object", raw("[]", &[])),
        ("JSON nested deep", raw(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)), &[])),
        (
            "offsets outside the buffer",
            raw(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, &[0; 8]),
        ),
        (
            "a repeated tensor name",
            raw(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                &[0; 8],
            ),
        ),
    ];
    assert_rejected(cases, &spec, &heldout, RejectReason::Malformed);
}

#[test]
fn disallowed_dtypes_are_rejected() {
    let mut spec = testing::wine_spec();
    spec.limits.dtypes = vec![Dtype::F32];
    let heldout = testing::wine_heldout(&spec);
    let cases = ["F16", "BF16", "F64", "I64", "U8", "NONSENSE"].map(|dtype| {
        let header = format!(
            r#"{{"layers.0.weight":{{"dtype":"{dtype}","shape":[1],"data_offsets":[0,8]}}}}"#
        );
        (dtype, raw(&header, &[0; 8]))
    });
    assert_rejected(cases, &spec, &heldout, RejectReason::DisallowedDtype);
}

#[test]
fn wrong_architectures_are_rejected() {
    let spec = testing::wine_spec();
    let heldout = testing::wine_heldout(&spec);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "missing bias",
            with(valid(), |t| {
                t.remove("layers.1.bias");
            }),
        ),
        (
            "missing first layer",
            with(valid(), |t| {
                t.remove("layers.0.weight");
            }),
        ),
        (
            "renamed tensor",
            with(valid(), |t| {
                let w = t.remove("layers.1.weight").unwrap();
                t.insert("layer.1.weight".into(), w);
            }),
        ),
        (
            "extra tensor",
            with(valid(), |t| {
                t.insert("extra".into(), (vec![1], vec![1.0]));
            }),
        ),
        (
            "extra layer index with a leading zero",
            with(valid(), |t| {
                t.insert("layers.01.weight".into(), (vec![3, 4], vec![1.0; 12]));
            }),
        ),
        (
            "shapes that do not chain",
            testing::encode(&{
                let mut t = testing::mlp_tensors(&[13, 4, 3]);
                t.insert("layers.1.weight".into(), (vec![3, 5], vec![0.5; 15]));
                t
            }),
        ),
        ("wrong number of features", testing::encode(&testing::mlp_tensors(&[12, 4, 3]))),
        ("wrong number of classes", testing::encode(&testing::mlp_tensors(&[13, 4, 2]))),
        (
            "weight of rank 1",
            with(valid(), |t| {
                t.insert("layers.0.weight".into(), (vec![52], vec![0.5; 52]));
            }),
        ),
        (
            "bias of the wrong length",
            with(valid(), |t| {
                t.insert("layers.0.bias".into(), (vec![5], vec![0.5; 5]));
            }),
        ),
        ("zero-width hidden layer", testing::encode(&testing::mlp_tensors(&[13, 0, 3]))),
    ];
    assert_rejected(cases, &spec, &heldout, RejectReason::WrongArchitecture);
}

#[test]
fn char_lm_tensors_must_be_exactly_the_documented_ones() {
    let spec = testing::char_lm_spec();
    let text = testing::char_lm_text(200);
    let heldout = validator::eval::prepare(&spec, text.as_bytes(), "heldout.txt").unwrap();
    let shape = trainer::model::charlm::CharLmShape::from_kind(&spec.kind).unwrap();
    let mut rng = trainer::rng::stream(3, "crafted");
    let tensors = trainer::model::charlm::CharLm::init_tensors(shape, &mut rng).unwrap();
    let good = trainer::artifact::encode(&tensors).unwrap();
    assert!(matches!(verdict(&good, &spec, &heldout, None), Verdict::Scored { .. }));

    let mut missing = tensors.clone();
    missing.remove("blocks.1.ln2.bias");
    let mut extra = tensors.clone();
    extra.insert("blocks.2.ln1.weight".into(), tensors["ln_f.weight"].clone());
    let mut wrong = tensors.clone();
    wrong.insert("pos_emb.weight".into(), tensors["tok_emb.weight"].clone());
    let cases = [("missing", missing), ("extra", extra), ("wrong shape", wrong)]
        .map(|(what, t)| (what, trainer::artifact::encode(&t).unwrap()));
    assert_rejected(cases, &spec, &heldout, RejectReason::WrongArchitecture);
}

#[test]
fn parameter_counts_are_bounded_and_must_match_the_reveal() {
    let mut spec = testing::wine_spec();
    let heldout = testing::wine_heldout(&spec);
    let mut tensors = valid();
    // Prune a few weights: zeros (and negative zeros) do not count.
    let w = &mut tensors.get_mut("layers.0.weight").unwrap().1;
    w[0] = 0.0;
    w[1] = -0.0;
    let bytes = testing::encode(&tensors);
    let artifact = check_artifact(&bytes, &spec, None).unwrap();
    let total: usize = tensors.values().map(|(_, v)| v.len()).sum();
    let zeros = tensors.values().flat_map(|(_, v)| v).filter(|v| **v == 0.0).count();
    assert_eq!(artifact.params, (total - zeros) as u64);
    assert_eq!(nonzero_params(&artifact.weights), artifact.params);

    let honest = revealed_for(&bytes, &spec);
    let lying = Revealed { params: artifact.params - 1, ..honest };
    assert_eq!(
        verdict(&bytes, &spec, &heldout, Some(lying)),
        rejected(RejectReason::ParamsMismatch)
    );
    spec.limits.max_params = artifact.params - 1;
    assert_eq!(
        verdict(&bytes, &spec, &heldout, Some(honest)),
        rejected(RejectReason::TooManyParams)
    );
}

#[test]
fn non_finite_values_are_rejected() {
    let spec = testing::wine_spec();
    let heldout = testing::wine_heldout(&spec);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let bytes = with(valid(), |t| t.get_mut("layers.1.bias").unwrap().1[2] = bad);
        assert_eq!(
            verdict(&bytes, &spec, &heldout, None),
            rejected(RejectReason::NonFinite),
            "{bad}"
        );
    }
    // An F16 infinity (0x7c00) is caught after decoding too.
    let bytes = raw(
        r#"{"layers.0.weight":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#,
        &[0x00, 0x7c],
    );
    let header = parse_header(&bytes, &[Dtype::F16]).unwrap();
    let weights = decode_weights(&bytes, &header);
    assert!(weights["layers.0.weight"].values[0].is_infinite());
}

#[test]
fn hash_mismatch_and_size_are_checked_first() {
    let mut spec = testing::wine_spec();
    let heldout = testing::wine_heldout(&spec);
    let bytes = testing::encode(&valid());
    let honest = revealed_for(&bytes, &spec);
    let other = Revealed { model_hash: Hash([0xee; 32]), ..honest };
    assert_eq!(verdict(&bytes, &spec, &heldout, Some(other)), rejected(RejectReason::HashMismatch));
    // A single flipped bit in the data changes the hash.
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(
        verdict(&flipped, &spec, &heldout, Some(honest)),
        rejected(RejectReason::HashMismatch)
    );
    // A reveal that understates the size (to look small) or overstates it is rejected before
    // the hash is even computed.
    for size in [bytes.len() as u64 - 1, bytes.len() as u64 + 1] {
        let misstated = Revealed { size_bytes: Some(size), ..honest };
        assert_eq!(
            verdict(&bytes, &spec, &heldout, Some(misstated)),
            rejected(RejectReason::SizeMismatch)
        );
    }
    spec.limits.max_artifact_bytes = bytes.len() as u64 - 1;
    assert_eq!(verdict(&bytes, &spec, &heldout, Some(honest)), rejected(RejectReason::TooLarge));
}
