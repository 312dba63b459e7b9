//! Interop, not circular: an MLP trained and run by numpy (`interop/train_mlp.py`, committed
//! outputs) gets, sample by sample, the same predictions from our checks, preprocessing and the
//! trainer's forward pass. Needs no Python; regenerate the fixture with the script.

use consensus::hash::sha256;
use consensus::verdict::Verdict;
use validator::check::{Architecture, Revealed, check_artifact};
use validator::eval::{EvalData, Metric, Model};
use validator::heldout::find_heldout;
use validator::score::{Judgement, judge};
use validator::testing;

#[test]
fn predictions_match_numpy_sample_by_sample() {
    let spec = testing::wine_spec();
    let bytes = testing::wine_model();
    let artifact = check_artifact(&bytes, &spec, None).expect("the numpy artifact passes");
    assert_eq!(artifact.architecture, Architecture::Mlp { widths: vec![13, 16, 8, 3] });

    let EvalData::Table(table) = testing::wine_heldout(&spec) else { panic!("a table") };
    let numpy: Vec<u32> = String::from_utf8(testing::read("predictions.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(numpy.len(), table.rows());

    let Model::Mlp(mlp) = Model::build(&spec.kind, &artifact.weights).unwrap() else {
        panic!("an MLP")
    };
    let x = table.features_tensor().unwrap();
    let ours = mlp.predict(&x).unwrap();
    for (i, (a, b)) in ours.iter().zip(&numpy).enumerate() {
        assert_eq!(a, b, "held-out row {i}: we predict {a}, numpy {b}");
    }

    // The scored accuracy is numpy's, and deliberately imperfect.
    let correct = numpy.iter().zip(&table.labels).filter(|(p, l)| p == l).count();
    let revealed = Revealed {
        model_hash: sha256(&bytes),
        params: artifact.params,
        size_bytes: Some(bytes.len() as u64),
    };
    let heldout = EvalData::Table(table.clone());
    let Judgement::Scored { evaluation, .. } =
        judge(&bytes, &spec, Some(&revealed), &heldout).unwrap()
    else {
        panic!("scored")
    };
    assert_eq!(evaluation.metric, Metric::Accuracy);
    assert_eq!(evaluation.score_ppm.0 as usize, correct * 1_000_000 / table.rows());
    assert!((0.5..=0.9).contains(&evaluation.value), "accuracy {}", evaluation.value);
}

#[test]
fn the_fixture_heldout_file_is_found_by_its_commitment() {
    let spec = testing::wine_spec();
    let found = find_heldout(&testing::wine_dir(), &spec.dataset.heldout_commitment).unwrap();
    assert_eq!(found.path.file_name().unwrap(), "heldout.csv");
    assert_eq!(sha256(&testing::read("train.csv")), spec.dataset.train_sha256);
}

#[test]
fn the_majority_baseline_is_below_the_model() {
    let spec = testing::wine_spec();
    let baseline =
        validator::eval::baseline(&testing::wine_train(&spec), &testing::wine_heldout(&spec))
            .unwrap();
    // Wine's largest class is about 40 % of the rows.
    assert!((0.3..0.5).contains(&baseline.value), "baseline {}", baseline.value);
    let bytes = testing::wine_model();
    let verdict = judge(&bytes, &spec, None, &testing::wine_heldout(&spec)).unwrap().verdict();
    let Verdict::Scored { score_ppm, .. } = verdict else { panic!("scored") };
    assert!(score_ppm > baseline.score_ppm);
}

#[test]
fn a_heldout_file_of_another_size_than_the_spec_says_is_refused() {
    let mut spec = testing::wine_spec();
    spec.dataset.heldout_examples += 1;
    let err = validator::eval::prepare_heldout(&spec, &testing::read("heldout.csv"), "heldout.csv")
        .unwrap_err();
    assert!(
        matches!(err, validator::eval::EvalError::HeldoutSize { expected: 54, found: 53, .. }),
        "{err}"
    );
}

/// An earlier champion recorded by the task is scored like any model, by its recorded hash and
/// parameter count, and laid out after the baseline; one no peer served is `Unavailable`.
#[test]
fn earlier_champions_are_scored_as_part_of_the_baseline() {
    use consensus::verdict::Subject;
    use validator::score::{Reference, TaskInputs, score_task};

    let spec = testing::wine_spec();
    let (train, heldout) = (testing::wine_train(&spec), testing::wine_heldout(&spec));
    let bytes = testing::wine_model();
    let params = check_artifact(&bytes, &spec, None).unwrap().params;
    let champion = Reference { model_hash: sha256(&bytes), params, artifact: Some(&bytes) };
    let gone = consensus::types::Hash([0xcc; 32]);
    let missing = Reference { model_hash: gone, params, artifact: None };
    let liar = Reference { params: params + 1, ..champion };
    let inputs = TaskInputs {
        spec: &spec,
        train: &train,
        heldout: &heldout,
        base_model: None,
        champions: &[champion, missing],
        submissions: &[],
    };
    let vector = score_task(&inputs).unwrap();
    let subjects: Vec<Subject> = vector.iter().map(|e| e.subject).collect();
    assert_eq!(
        subjects,
        [Subject::Baseline, Subject::Champion(champion.model_hash), Subject::Champion(gone)]
    );
    let alone = judge(&bytes, &spec, None, &heldout).unwrap().verdict();
    assert_eq!(vector[1].verdict, alone);
    assert_eq!(vector[2].verdict, Verdict::Unavailable);
    // A recorded count that differs from the artifact's is a rejection, as for a submission.
    let vector = score_task(&TaskInputs { champions: &[liar], ..inputs }).unwrap();
    assert!(matches!(vector[1].verdict, Verdict::Rejected { .. }), "{:?}", vector[1].verdict);
}
