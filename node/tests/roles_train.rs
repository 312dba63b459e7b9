//! The trainer loop's compute step on real data: the artifact it stores is one a validator
//! scores (hash, size and non-zero parameter count as the trainer will reveal them).

use consensus::commitment::{HeldoutKey, Salt};
use consensus::types::{Hash, TaskId};
use consensus::verdict::{Subject, Verdict};
use node::blobs::BlobStore;
use node::roles::trainer::train_artifact;
use trainer::recipe::Recipe;
use trainer::task::{DataKind, TaskOptions, new_task};
use validator::check::Revealed;
use validator::score::{Submission, TaskInputs, score_task};

#[test]
fn a_trained_artifact_is_stored_and_scores_as_revealed() {
    let iris = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/iris.csv")).unwrap();
    let opts = TaskOptions::new("iris", DataKind::Classification, 7);
    let task = new_task(&iris, "iris.csv", &opts, Salt(Hash([5; 32])), &HeldoutKey(Hash([8; 32])))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let recipe = Recipe::from_toml("[model]\nhidden = [8]\n[train]\nepochs = 30\n", "t").unwrap();

    let artifact = train_artifact(TaskId(1), &task.spec, &task.train, &recipe, &store).unwrap();
    let bytes = store.get(&artifact.model_hash, u64::MAX).unwrap().expect("artifact stored");
    assert_eq!(bytes.len() as u64, artifact.size_bytes);
    assert_eq!(consensus::hash::sha256(&bytes), artifact.model_hash);
    // Seeded: the same recipe gives the same artifact.
    let again = train_artifact(TaskId(1), &task.spec, &task.train, &recipe, &store).unwrap();
    assert_eq!(again, artifact);

    let me = consensus::types::AccountId([9; 32]);
    let train = validator::eval::prepare(&task.spec, &task.train, "train").unwrap();
    let heldout = validator::eval::prepare_heldout(&task.spec, &task.heldout, "heldout").unwrap();
    let submissions = [Submission {
        trainer: me,
        revealed: Revealed {
            model_hash: artifact.model_hash,
            params: artifact.params,
            size_bytes: Some(artifact.size_bytes),
        },
        artifact: Some(&bytes),
    }];
    let verdicts = score_task(&TaskInputs {
        spec: &task.spec,
        train: &train,
        heldout: &heldout,
        base_model: None,
        champions: &[],
        submissions: &submissions,
    })
    .unwrap();
    let entry = verdicts.iter().find(|e| e.subject == Subject::Submission(me)).unwrap();
    let Verdict::Scored { score_ppm, .. } = entry.verdict else {
        panic!("expected a score, got {:?}", entry.verdict);
    };
    assert!(score_ppm.0 > 600_000, "iris accuracy {score_ppm} ppm");
}
