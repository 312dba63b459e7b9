//! Interop, not circular: an MLP trained and run by numpy (`interop/train_mlp.py`, committed
//! outputs) gets, sample by sample, the same predictions from our checks, preprocessing and the
//! trainer's forward pass. Needs no Python; regenerate the fixture with the script.

mod common;

use consensus::hash::sha256;
use consensus::verdict::Verdict;
use validator::check::{Architecture, Revealed, check_artifact};
use validator::eval::{EvalData, Metric, Model};
use validator::heldout::find_heldout;
use validator::score::{Judgement, judge};

#[test]
fn predictions_match_numpy_sample_by_sample() {
    let spec = common::wine_spec();
    let bytes = common::wine_model();
    let artifact = check_artifact(&bytes, &spec, None).expect("the numpy artifact passes");
    assert_eq!(artifact.architecture, Architecture::Mlp { widths: vec![13, 16, 8, 3] });

    let EvalData::Table(table) = common::wine_heldout(&spec) else { panic!("a table") };
    let numpy: Vec<u32> = String::from_utf8(common::read("predictions.csv"))
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
    let spec = common::wine_spec();
    let found = find_heldout(&common::wine_dir(), &spec.dataset.heldout_commitment).unwrap();
    assert_eq!(found.path.file_name().unwrap(), "heldout.csv");
    assert_eq!(sha256(&common::read("train.csv")), spec.dataset.train_sha256);
}

#[test]
fn the_majority_baseline_is_below_the_model() {
    let spec = common::wine_spec();
    let baseline =
        validator::eval::baseline(&common::wine_train(&spec), &common::wine_heldout(&spec))
            .unwrap();
    // Wine's largest class is about 40 % of the rows.
    assert!((0.3..0.5).contains(&baseline.value), "baseline {}", baseline.value);
    let bytes = common::wine_model();
    let verdict = judge(&bytes, &spec, None, &common::wine_heldout(&spec)).unwrap().verdict();
    let Verdict::Scored { score_ppm, .. } = verdict else { panic!("scored") };
    assert!(score_ppm > baseline.score_ppm);
}

#[test]
fn a_heldout_file_of_another_size_than_the_spec_says_is_refused() {
    let mut spec = common::wine_spec();
    spec.dataset.heldout_examples += 1;
    let err = validator::eval::prepare_heldout(&spec, &common::read("heldout.csv"), "heldout.csv")
        .unwrap_err();
    assert!(
        matches!(err, validator::eval::EvalError::HeldoutSize { expected: 54, found: 53, .. }),
        "{err}"
    );
}
