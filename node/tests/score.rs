//! `node score` end to end: the JSON it prints and its exit codes.

use std::path::PathBuf;
use std::process::Command;

fn wine(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../validator/tests/interop/wine").join(name)
}

fn score(model: &PathBuf) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_node"))
        .arg("score")
        .arg("--task")
        .arg(wine("task.json"))
        .arg("--heldout")
        .arg(wine("heldout.csv"))
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap(), json)
}

#[test]
fn prints_a_scored_verdict() {
    let (code, json) = score(&wine("model.safetensors"));
    assert_eq!(code, 0);
    assert_eq!(json["verdict"], "scored");
    assert_eq!(json["metric"], "accuracy");
    assert_eq!(json["score_ppm"], 754_716, "40 of 53 held-out rows, as numpy predicts");
    assert_eq!(json["params"], 387);
    assert_eq!(json["reason"], serde_json::Value::Null);
    let bytes = std::fs::read(wine("model.safetensors")).unwrap();
    assert_eq!(json["sha256"], consensus::hash::sha256(&bytes).to_hex());
}

#[test]
fn a_rejected_model_exits_zero_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, b"\x10\0\0\0\0\0\0\0{\"a\":").unwrap();
    let (code, json) = score(&path);
    assert_eq!(code, 0);
    assert_eq!(json["verdict"], "rejected");
    assert_eq!(json["score_ppm"], 0);
    assert_eq!(json["reason"], "malformed");
    assert_eq!(json["value"], serde_json::Value::Null);
}

#[test]
fn missing_files_and_bad_arguments_fail() {
    let (code, json) = score(&PathBuf::from("/nonexistent/model.safetensors"));
    assert_ne!(code, 0);
    assert_eq!(json, serde_json::Value::Null);
    let out = Command::new(env!("CARGO_BIN_EXE_node")).args(["score", "--task"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
}
