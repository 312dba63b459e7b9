//! The validator reads what the trainer's `node task new` writes: it finds the held-out file by
//! its commitment, prepares it with the spec's preprocessing, computes the baseline, and scores a
//! model of the spec's architecture.

use std::path::{Path, PathBuf};

use consensus::commitment::{HeldoutKey, Salt};
use consensus::types::Hash;
use consensus::verdict::Verdict;
use trainer::task::{DataKind, LmArchitecture, TaskOptions, new_task, write};
use validator::eval::{self, Metric};
use validator::heldout::find_heldout;
use validator::score::judge;
use validator::testing;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data").join(name)
}

fn options(kind: DataKind) -> TaskOptions {
    let lm = LmArchitecture { context: 16, d_model: 16, layers: 1, heads: 2 };
    TaskOptions { lm, ..TaskOptions::new("t", kind, 3) }
}

/// Writes a task under `root/<sub>` and returns what the validator sees of it from `root`.
fn make(
    root: &Path,
    sub: &str,
    bytes: &[u8],
    kind: DataKind,
    salt: u8,
) -> (consensus::task::TaskSpec, eval::EvalData, eval::EvalData) {
    let task =
        new_task(bytes, sub, &options(kind), Salt(Hash([salt; 32])), &HeldoutKey(Hash([8; 32])))
            .unwrap();
    write(&root.join(sub), &task).unwrap();
    let found = find_heldout(root, &task.spec.dataset.heldout_commitment).unwrap();
    assert_eq!(found.path.parent().unwrap(), root.join(sub));
    let heldout = eval::prepare(&task.spec, &found.bytes, "heldout").unwrap();
    let train = eval::prepare(&task.spec, &task.train, "train").unwrap();
    (task.spec, train, heldout)
}

#[test]
fn classification_and_char_lm_tasks_are_found_and_scored() {
    let root = tempfile::tempdir().unwrap();
    let iris = std::fs::read(data("iris.csv")).unwrap();
    let (spec, train, heldout) = make(root.path(), "iris", &iris, DataKind::Classification, 1);
    let baseline = eval::baseline(&train, &heldout).unwrap();
    assert_eq!(baseline.metric, Metric::Accuracy);
    // Iris has three classes of equal size.
    assert!((0.3..0.4).contains(&baseline.value), "{}", baseline.value);
    let model = testing::encode(
        &[
            ("layers.0.bias".to_string(), (vec![3], vec![0.1, 0.2, 0.3])),
            ("layers.0.weight".to_string(), (vec![3, 4], vec![0.5; 12])),
        ]
        .into_iter()
        .collect(),
    );
    let verdict = judge(&model, &spec, None, &heldout).unwrap().verdict();
    assert!(matches!(verdict, Verdict::Scored { .. }), "{verdict:?}");

    let text = std::fs::read_to_string(data("shakespeare.txt")).unwrap();
    let excerpt: String = text.chars().take(5_000).collect();
    let (spec, train, heldout) = make(root.path(), "text", excerpt.as_bytes(), DataKind::CharLm, 2);
    let baseline = eval::baseline(&train, &heldout).unwrap();
    assert_eq!(baseline.metric, Metric::BitsPerChar);
    assert!((3.0..6.0).contains(&baseline.value), "unigram bits per char {}", baseline.value);
    assert!(baseline.score_ppm.0 > 0);
    let shape = trainer::model::charlm::CharLmShape::from_kind(&spec.kind).unwrap();
    let tensors =
        trainer::model::charlm::CharLm::init_tensors(shape, &mut trainer::rng::stream(1, "t"))
            .unwrap();
    let bytes = trainer::artifact::encode(&tensors).unwrap();
    let verdict = judge(&bytes, &spec, None, &heldout).unwrap().verdict();
    assert!(matches!(verdict, Verdict::Scored { .. }), "{verdict:?}");
}
