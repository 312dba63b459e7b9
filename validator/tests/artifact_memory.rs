//! Peak memory of judging a large artifact from its file, as a validator does: a junk artifact
//! (here, one over the parameter cap) costs about one read chunk whatever its size, and a model
//! that passes costs its decoded weights and the model built from them, never the file on top.
//!
//! The peak is the process's `VmHWM`, reset before each case through `/proc/self/clear_refs`, so
//! both cases live in one test (tests of one binary share the process).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use consensus::types::ModelHash;
use validator::check::Revealed;
use validator::score::{Judgement, judge};
use validator::testing;

/// Hidden width of the large MLP: 13 → 6144 → 6144 → 3 is about 37.9 million F32 values
/// (151 MiB).
const WIDTH: usize = 6_144;

/// The process's peak resident memory since the last reset, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a VmHWM line")
}

/// Resets the peak to the current resident memory.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak (clear_refs)");
}

/// Writes a safetensors MLP `13 → WIDTH → WIDTH → 3` of F32 ones to `path` in 1 MiB pieces (so
/// the test itself never holds it); returns its size, non-zero parameter count and sha256.
fn write_large_mlp(path: &Path) -> (u64, u64, ModelHash) {
    use sha2::{Digest, Sha256};
    let shapes: [(&str, Vec<usize>); 6] = [
        ("layers.0.weight", vec![WIDTH, 13]),
        ("layers.0.bias", vec![WIDTH]),
        ("layers.1.weight", vec![WIDTH, WIDTH]),
        ("layers.1.bias", vec![WIDTH]),
        ("layers.2.weight", vec![3, WIDTH]),
        ("layers.2.bias", vec![3]),
    ];
    let mut offset = 0usize;
    let mut entries = Vec::new();
    for (name, shape) in &shapes {
        let bytes = shape.iter().product::<usize>() * 4;
        entries.push(format!(
            r#""{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{offset},{}]}}"#,
            offset + bytes
        ));
        offset += bytes;
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut out = BufWriter::new(File::create(path).expect("creating the artifact"));
    let mut hasher = Sha256::new();
    let mut put = |bytes: &[u8]| {
        out.write_all(bytes).expect("writing the artifact");
        hasher.update(bytes);
    };
    put(&(header.len() as u64).to_le_bytes());
    put(header.as_bytes());
    let piece: Vec<u8> = std::iter::repeat_n(1f32.to_le_bytes(), 1 << 18).flatten().collect();
    let mut left = offset;
    while left > 0 {
        let n = left.min(piece.len());
        put(&piece[..n]);
        left -= n;
    }
    out.flush().expect("flushing the artifact");
    let size = (8 + header.len() + offset) as u64;
    (size, (offset / 4) as u64, consensus::types::Hash(hasher.finalize().into()))
}

#[test]
fn judging_a_large_artifact_from_its_file_holds_at_most_its_decoded_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.safetensors");
    let (size_bytes, params, model_hash) = write_large_mlp(&path);
    let mut spec = testing::wine_spec();
    spec.limits.max_artifact_bytes = size_bytes;
    let heldout = testing::wine_heldout(&spec);
    let revealed = Revealed { model_hash, params, size_bytes: Some(size_bytes) };
    let file = File::open(&path).unwrap();
    let size_mib = size_bytes >> 20;

    // Over the parameter cap: refused after counting from the file, nothing decoded.
    spec.limits.max_params = params - 1;
    reset_peak();
    let base = peak_kib();
    let junk = judge(&file, &spec, Some(&revealed), &heldout).unwrap();
    let junk_mib = peak_kib().saturating_sub(base) >> 10;
    println!("a {size_mib} MiB artifact over the parameter cap: peak +{junk_mib} MiB");
    assert!(
        matches!(junk, Judgement::Rejected(ref e) if e.params() == Some(params)),
        "expected TooManyParams, got {:?}",
        junk.verdict()
    );
    assert!(junk_mib <= 16, "refusing a junk artifact took {junk_mib} MiB of peak memory");

    // Within the cap: decoded and scored; the peak is the weights and the model built from them.
    spec.limits.max_params = params;
    reset_peak();
    let base = peak_kib();
    let scored = judge(&file, &spec, Some(&revealed), &heldout).unwrap();
    let scored_mib = peak_kib().saturating_sub(base) >> 10;
    println!("a {size_mib} MiB artifact scored: peak +{scored_mib} MiB");
    assert!(matches!(scored, Judgement::Scored { .. }), "expected a score: {:?}", scored.verdict());
    assert!(
        scored_mib <= size_mib * 5 / 2,
        "scoring a {size_mib} MiB artifact took {scored_mib} MiB of peak memory"
    );
}
