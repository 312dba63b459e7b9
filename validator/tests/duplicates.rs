//! Near-duplicates: a copy with a few weights nudged is flagged `duplicate_of` the original;
//! models trained from different seeds are not. Checked on the distance and through the whole
//! verdict vector of a task.

mod common;

use std::collections::BTreeMap;

use consensus::hash::sha256;
use consensus::task::TaskSpec;
use consensus::types::AccountId;
use consensus::verdict::{RejectReason, Subject, Verdict};
use validator::artifact::Weights;
use validator::check::{Revealed, check_artifact};
use validator::duplicate::relative_distance_ppm;
use validator::score::{Submission, TaskInputs, score_task};

/// 1 % relative L2 distance.
const THRESHOLD_PPM: u32 = 10_000;

fn weights(bytes: &[u8], spec: &TaskSpec) -> Weights {
    check_artifact(bytes, spec, None).unwrap().weights
}

/// The artifact with a few weights nudged by 1e-3.
fn nudged(original: &Weights) -> Vec<u8> {
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> =
        original.iter().map(|(n, t)| (n.clone(), (t.shape.clone(), t.values.clone()))).collect();
    let w = &mut tensors.get_mut("layers.0.weight").unwrap().1;
    for i in [0, 7, 42, 99, 150] {
        w[i] += 1e-3;
    }
    common::encode(&tensors)
}

fn revealed(bytes: &[u8], spec: &TaskSpec) -> Revealed {
    Revealed {
        model_hash: sha256(bytes),
        params: check_artifact(bytes, spec, None).unwrap().params,
    }
}

#[test]
fn nudged_copies_are_near_and_independent_models_far() {
    let spec = common::wine_spec();
    let original = weights(&common::wine_model(), &spec);
    let copy = weights(&nudged(&original), &spec);
    let other = weights(&common::read("model_other_seed.safetensors"), &spec);

    let near = relative_distance_ppm(&original, &copy).unwrap();
    let far = relative_distance_ppm(&original, &other).unwrap();
    println!("nudged copy: {near} ppm; other seed: {far} ppm");
    assert!(near < THRESHOLD_PPM / 10, "nudged copy at {near} ppm");
    assert!(far > THRESHOLD_PPM * 10, "independent model at {far} ppm");
    // A different architecture is not comparable.
    let small = check_artifact(&common::encode(&common::mlp_tensors(&[13, 4, 3])), &spec, None)
        .unwrap()
        .weights;
    assert_eq!(relative_distance_ppm(&original, &small), None);
}

#[test]
fn the_verdict_vector_flags_the_later_copy_only() {
    let spec = common::wine_spec();
    let original = common::wine_model();
    let copy = nudged(&weights(&original, &spec));
    let other = common::read("model_other_seed.safetensors");
    let garbage = b"not an artifact".to_vec();
    let (first, copier, independent, absent, broken) = (
        AccountId([0x50; 32]),
        AccountId([0x10; 32]),
        AccountId([0x30; 32]),
        AccountId([0x20; 32]),
        AccountId([0x40; 32]),
    );
    fn submission(trainer: AccountId, bytes: &[u8]) -> Submission<'_> {
        let revealed = Revealed { model_hash: sha256(bytes), params: 0 };
        Submission { trainer, revealed, artifact: Some(bytes) }
    }
    // Commit order: the original first, the copier after it; account ids sort otherwise.
    let submissions = [
        Submission { revealed: revealed(&original, &spec), ..submission(first, &original) },
        Submission { revealed: revealed(&copy, &spec), ..submission(copier, &copy) },
        Submission { revealed: revealed(&other, &spec), ..submission(independent, &other) },
        Submission { artifact: None, ..submission(absent, &garbage) },
        submission(broken, &garbage),
    ];
    let train = common::wine_train(&spec);
    let heldout = common::wine_heldout(&spec);
    let inputs = TaskInputs {
        spec: &spec,
        train: &train,
        heldout: &heldout,
        base_model: None,
        submissions_in_commit_order: &submissions,
        duplicate_distance_ppm: THRESHOLD_PPM,
    };
    let vector = score_task(&inputs).unwrap();
    let subjects: Vec<Subject> = vector.iter().map(|e| e.subject).collect();
    assert_eq!(
        subjects,
        consensus::verdict::expected_layout(false, [first, copier, independent, absent, broken])
    );
    let by_subject: BTreeMap<Subject, Verdict> =
        vector.iter().map(|e| (e.subject, e.verdict)).collect();
    assert!(matches!(by_subject[&Subject::Baseline], Verdict::Scored { duplicate_of: None, .. }));
    assert!(matches!(
        by_subject[&Subject::Submission(first)],
        Verdict::Scored { duplicate_of: None, .. }
    ));
    assert!(matches!(
        by_subject[&Subject::Submission(copier)],
        Verdict::Scored { duplicate_of: Some(a), .. } if a == first
    ));
    assert!(matches!(
        by_subject[&Subject::Submission(independent)],
        Verdict::Scored { duplicate_of: None, .. }
    ));
    assert_eq!(by_subject[&Subject::Submission(absent)], Verdict::Unavailable);
    assert_eq!(
        by_subject[&Subject::Submission(broken)],
        Verdict::Rejected { reason: RejectReason::Malformed }
    );
}
