//! A blocking client for the node's HTTP JSON API, only the parts the testnet reads and posts.
//!
//! Numbers that the API may send as JSON strings (amounts, large counters) are accepted either
//! way. Every request has a timeout; a node that does not answer is an error, never a hang.

use std::time::Duration;

use anyhow::{Context, bail};
use consensus::finalize::FinalizationReport;
use consensus::tx::SignedTx;
use consensus::types::{AccountId, Hash};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Longest wait for one HTTP request, in milliseconds.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Largest response body read, in bytes.
pub const RESPONSE_BYTES_MAX: u64 = 16 << 20;

/// `GET /status`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Status {
    /// The chain's id.
    pub chain_id: String,
    /// The genesis hash, hex.
    pub genesis_hash: String,
    /// The node's latest committed height.
    #[serde(deserialize_with = "number")]
    pub height: u64,
    /// Connected peers.
    #[serde(deserialize_with = "number", default)]
    pub peers: u64,
}

/// `GET /blocks/{height}`: the parts compared across nodes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct BlockInfo {
    /// The block's height.
    #[serde(deserialize_with = "number")]
    pub height: u64,
    /// The block's hash, hex.
    pub hash: String,
    /// The header's state root: the state after the previous block, hex.
    pub state_root: String,
}

/// An entry of `GET /blocks?from=&limit=`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct BlockSummary {
    /// The block's height.
    #[serde(deserialize_with = "number")]
    pub height: u64,
    /// Its header time, in ms since the Unix epoch.
    #[serde(deserialize_with = "number")]
    pub time_ms: u64,
    /// The transactions it holds.
    #[serde(deserialize_with = "number")]
    pub tx_count: u64,
}

/// A task's deadlines, as heights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Deadlines {
    /// Last height to join.
    #[serde(deserialize_with = "number")]
    pub join: u64,
    /// Last height to commit a model.
    #[serde(deserialize_with = "number")]
    pub commit: u64,
    /// Last height for the creator to reveal the held-out key.
    #[serde(deserialize_with = "number")]
    pub key: u64,
    /// Last height to reveal a model.
    #[serde(deserialize_with = "number")]
    pub reveal: u64,
    /// Last height to commit scores.
    #[serde(deserialize_with = "number")]
    pub score_commit: u64,
    /// The height at which the task finalizes.
    #[serde(deserialize_with = "number")]
    pub score: u64,
}

/// An entry of `GET /tasks`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TaskSummary {
    /// The task's id.
    #[serde(deserialize_with = "number")]
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Who opened it.
    pub creator: AccountId,
}

/// `GET /tasks/{id}`: the parts the testnet shows.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskView {
    /// The task's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its phase as the node names it.
    pub phase: String,
    /// Its deadlines.
    pub deadlines: Deadlines,
    /// Each joined trainer and how far it got.
    pub submissions: Vec<Submission>,
    /// The finalization report, once the task has finalized.
    pub report: Option<FinalizationReport>,
}

/// How far a joined trainer got in a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Joined; training until it commits.
    Joined,
    /// Committed to a model.
    Committed,
    /// Revealed its model.
    Revealed,
}

/// A joined trainer of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submission {
    /// The trainer.
    pub trainer: AccountId,
    /// How far it got.
    pub stage: Stage,
}

fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64().ok_or_else(|| serde::de::Error::custom("not a u64")),
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("expected a number, found {other}"))),
    }
}

/// Turns decimal strings (the API's form of amounts) into JSON numbers, throughout `value`.
/// Only strings of 1 to 20 digits change: hex ids and hashes are 64 characters long.
pub fn numbers_from_strings(value: &mut Value) {
    match value {
        Value::String(s)
            if (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            if let Ok(n) = s.parse::<u64>() {
                *value = Value::from(n);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(numbers_from_strings),
        Value::Object(map) => map.values_mut().for_each(numbers_from_strings),
        _ => {}
    }
}

/// Reads a task view from `GET /tasks/{id}`'s JSON.
pub fn parse_task(mut value: Value) -> anyhow::Result<TaskView> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(deserialize_with = "number")]
        id: u64,
        name: String,
        phase: Value,
        deadlines: Deadlines,
        #[serde(default)]
        submissions: Vec<Value>,
    }
    let report = match value.get_mut("report").map(Value::take) {
        None | Some(Value::Null) => None,
        Some(report) => {
            Some(parse_report(report).context("reading the task's finalization report")?)
        }
    };
    let raw: Raw = serde_json::from_value(value).context("reading a task")?;
    let phase = match raw.phase {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Ok(TaskView {
        id: raw.id,
        name: raw.name,
        phase,
        deadlines: raw.deadlines,
        submissions: raw.submissions.iter().filter_map(submission).collect(),
        report,
    })
}

/// Reads a finalization report from the API's view of it (verdicts flattened to
/// `{"verdict": "scored", "score_ppm": …}`, forfeit reasons as objects, amounts as
/// strings), or from the ledger's own JSON form of [`FinalizationReport`].
pub fn parse_report(mut value: Value) -> anyhow::Result<FinalizationReport> {
    numbers_from_strings(&mut value);
    if let Ok(report) = serde_json::from_value::<FinalizationReport>(value.clone()) {
        return Ok(report);
    }
    let view: view::Report = serde_json::from_value(value)?;
    view.into_report()
}

/// The API's JSON shapes of a finalization report (after [`numbers_from_strings`]).
mod view {
    use anyhow::{Context, bail};
    use consensus::finalize::{
        Champion, EntryReport, FinalizationReport, ForfeitReason, Outcome, TrainerReport,
        ValidatorReport,
    };
    use consensus::types::{AccountId, Amount, Height, ModelHash, ScorePpm};
    use consensus::verdict::{RejectReason, Subject, Verdict};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub(super) struct VerdictView {
        verdict: String,
        score_ppm: Option<u32>,
        reason: Option<RejectReason>,
    }

    impl VerdictView {
        fn into_verdict(self) -> anyhow::Result<Verdict> {
            Ok(match self.verdict.as_str() {
                "scored" => Verdict::Scored {
                    score_ppm: ScorePpm(self.score_ppm.context("a scored verdict has a score")?),
                },
                "unavailable" => Verdict::Unavailable,
                "rejected" => Verdict::Rejected {
                    reason: self.reason.context("a rejected verdict has a reason")?,
                },
                other => bail!("unknown verdict {other:?}"),
            })
        }
    }

    #[derive(Deserialize)]
    pub(super) struct Entry {
        subject: String,
        #[serde(flatten)]
        verdict: VerdictView,
    }

    #[derive(Deserialize)]
    pub(super) struct Forfeit {
        reason: ForfeitReason,
    }

    #[derive(Deserialize)]
    pub(super) struct Trainer {
        account: AccountId,
        consensus: Option<VerdictView>,
        params: Option<u64>,
        penalty_ppm: u32,
        effective_ppm: u32,
        forfeit: Option<Forfeit>,
        bond_refund: u64,
        bond_forfeit: u64,
        entry_fee_refund: u64,
        payout: u64,
        rank: Option<u32>,
    }

    #[derive(Deserialize)]
    pub(super) struct Validator {
        account: AccountId,
        stake: u64,
        revealed: bool,
        agreed_entries: u32,
        payout: u64,
    }

    #[derive(Deserialize)]
    pub(super) struct ChampionView {
        trainer: AccountId,
        model_hash: ModelHash,
        params: u64,
        effective_ppm: u32,
    }

    #[derive(Deserialize)]
    pub(super) struct Report {
        outcome: Outcome,
        attested_stake: u64,
        key_revealed_at: Option<u64>,
        cancellation_fee: u64,
        revealed_stake: u64,
        total_stake: u64,
        baseline_ppm: u32,
        min_improvement_ppm: u32,
        entries: Vec<Entry>,
        trainers: Vec<Trainer>,
        validators: Vec<Validator>,
        creator_refund: u64,
        burned: u64,
        champion: Option<ChampionView>,
    }

    impl Report {
        pub(super) fn into_report(self) -> anyhow::Result<FinalizationReport> {
            let entries = self
                .entries
                .into_iter()
                .map(|e| {
                    let subject = match e.subject.as_str() {
                        "baseline" => Subject::Baseline,
                        "base_model" => Subject::BaseModel,
                        other => match other.strip_prefix("champion:") {
                            Some(hex) => Subject::Champion(hex.parse()?),
                            None => Subject::Submission(other.parse()?),
                        },
                    };
                    Ok(EntryReport { subject, consensus: e.verdict.into_verdict()? })
                })
                .collect::<anyhow::Result<_>>()?;
            let trainers = self
                .trainers
                .into_iter()
                .map(|t| {
                    Ok(TrainerReport {
                        account: t.account,
                        consensus: t.consensus.map(VerdictView::into_verdict).transpose()?,
                        params: t.params,
                        penalty_ppm: t.penalty_ppm,
                        effective_ppm: t.effective_ppm,
                        forfeit: t.forfeit.map(|f| f.reason),
                        bond_refund: Amount(t.bond_refund),
                        bond_forfeit: Amount(t.bond_forfeit),
                        entry_fee_refund: Amount(t.entry_fee_refund),
                        payout: Amount(t.payout),
                        rank: t.rank,
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let validators = self
                .validators
                .into_iter()
                .map(|v| ValidatorReport {
                    account: v.account,
                    stake: v.stake,
                    revealed: v.revealed,
                    agreed_entries: v.agreed_entries,
                    payout: Amount(v.payout),
                })
                .collect();
            Ok(FinalizationReport {
                outcome: self.outcome,
                attested_stake: self.attested_stake,
                key_revealed_at: self.key_revealed_at.map(Height),
                cancellation_fee: Amount(self.cancellation_fee),
                revealed_stake: self.revealed_stake,
                total_stake: self.total_stake,
                baseline_ppm: self.baseline_ppm,
                min_improvement_ppm: self.min_improvement_ppm,
                entries,
                trainers,
                validators,
                creator_refund: Amount(self.creator_refund),
                burned: Amount(self.burned),
                champion: self.champion.map(|c| Champion {
                    trainer: c.trainer,
                    model_hash: c.model_hash,
                    params: c.params,
                    effective_ppm: c.effective_ppm,
                }),
            })
        }
    }
}

/// A submission entry: its trainer, and the furthest step its fields show.
fn submission(value: &Value) -> Option<Submission> {
    let trainer = ["trainer", "account"]
        .iter()
        .find_map(|k| value.get(k).and_then(Value::as_str))
        .and_then(|s| s.parse().ok())?;
    let present = |keys: &[&str]| {
        keys.iter().any(|k| match value.get(k) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(_) => true,
        })
    };
    let stage = if present(&["model_hash", "revealed", "reveal"]) {
        Stage::Revealed
    } else if present(&["commitment", "committed", "committed_at"]) {
        Stage::Committed
    } else {
        Stage::Joined
    };
    Some(Submission { trainer, stage })
}

/// A client of one node's API.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:8081`).
    pub fn new(base: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
            .http_status_as_error(false)
            // Loopback only: never through a proxy from the environment.
            .proxy(None)
            .build()
            .into();
        Client { base: base.trim_end_matches('/').to_owned(), agent }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn read(
        &self,
        what: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut response = response.with_context(|| format!("{what} at {}", self.base))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_string()
            .with_context(|| format!("reading the answer to {what} from {}", self.base))?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(body);
            bail!("{what} at {}: HTTP {status}: {message}", self.base);
        }
        serde_json::from_str(&body).with_context(|| format!("{what} at {}: not JSON", self.base))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let what = format!("GET {path}");
        let value = self.read(&what, self.agent.get(&format!("{}{path}", self.base)).call())?;
        serde_json::from_value(value).with_context(|| format!("{what} at {}", self.base))
    }

    /// `GET /status`.
    pub fn status(&self) -> anyhow::Result<Status> {
        self.get("/status")
    }

    /// `GET /blocks/{height}`.
    pub fn block(&self, height: u64) -> anyhow::Result<BlockInfo> {
        self.get(&format!("/blocks/{height}"))
    }

    /// The round in which the block at `height` was committed, from `GET /blocks/{height}`
    /// (`None` while the node holds no certificate for it).
    pub fn commit_round(&self, height: u64) -> anyhow::Result<Option<u32>> {
        #[derive(Deserialize)]
        struct Commit {
            round: u32,
        }
        #[derive(Deserialize)]
        struct Detail {
            commit: Option<Commit>,
        }
        let detail: Detail = self.get(&format!("/blocks/{height}"))?;
        Ok(detail.commit.map(|c| c.round))
    }

    /// `GET /blocks?from=&limit=`: up to `limit` (at most 100) block summaries from `from` on.
    pub fn blocks(&self, from: u64, limit: u32) -> anyhow::Result<Vec<BlockSummary>> {
        self.get(&format!("/blocks?from={from}&limit={limit}"))
    }

    /// `GET /tasks`.
    pub fn tasks(&self) -> anyhow::Result<Vec<TaskSummary>> {
        self.get("/tasks")
    }

    /// `GET /tasks/{id}`.
    pub fn task(&self, id: u64) -> anyhow::Result<TaskView> {
        parse_task(self.get(&format!("/tasks/{id}"))?)
    }

    /// The next nonce of `account` (`GET /accounts/{id}`).
    pub fn nonce(&self, account: &AccountId) -> anyhow::Result<u64> {
        #[derive(Deserialize)]
        struct Account {
            #[serde(deserialize_with = "number")]
            nonce: u64,
        }
        let account: Account = self.get(&format!("/accounts/{account}"))?;
        Ok(account.nonce)
    }

    /// `POST /blobs?sha256=…`: stores `bytes` on the node, which provides it to the network.
    pub fn post_blob(&self, bytes: &[u8]) -> anyhow::Result<Hash> {
        let sha = consensus::hash::sha256(bytes);
        let url = format!("{}/blobs?sha256={sha}", self.base);
        self.read(
            "POST /blobs",
            self.agent.post(&url).content_type("application/octet-stream").send(bytes),
        )?;
        Ok(sha)
    }

    /// `POST /txs`: submits a signed transaction; returns its hash as the node reports it.
    pub fn post_tx(&self, tx: &SignedTx) -> anyhow::Result<String> {
        let body = serde_json::json!({ "tx": hex::encode(tx.encode()) }).to_string();
        let url = format!("{}/txs", self.base);
        let answer = self.read(
            &format!("POST /txs ({})", tx.tx.kind.name()),
            self.agent.post(&url).content_type("application/json").send(body.as_bytes()),
        )?;
        Ok(answer.get("hash").and_then(Value::as_str).unwrap_or_default().to_owned())
    }

    /// `POST /txs` with a batch: submits signed transactions in one request; returns, in order,
    /// each one's hash or the node's reason for refusing it.
    pub fn post_txs(&self, txs: &[SignedTx]) -> anyhow::Result<Vec<Result<String, String>>> {
        let hexes: Vec<String> = txs.iter().map(|tx| hex::encode(tx.encode())).collect();
        let body = serde_json::json!({ "txs": hexes }).to_string();
        let url = format!("{}/txs", self.base);
        let answer = self.read(
            &format!("POST /txs ({} txs)", txs.len()),
            self.agent.post(&url).content_type("application/json").send(body.as_bytes()),
        )?;
        let results = answer
            .get("results")
            .and_then(Value::as_array)
            .filter(|r| r.len() == txs.len())
            .with_context(|| format!("POST /txs answered {answer} for {} txs", txs.len()))?;
        Ok(results
            .iter()
            .map(|r| match r.get("error").and_then(Value::as_str) {
                Some(error) => Err(error.to_owned()),
                None => Ok(r.get("hash").and_then(Value::as_str).unwrap_or_default().to_owned()),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::finalize::ForfeitReason;
    use consensus::types::{Amount, Height};
    use consensus::verdict::Verdict;
    use serde_json::json;

    #[test]
    fn numbers_may_come_as_strings() {
        let status: Status = serde_json::from_value(json!({
            "chain_id": "c", "genesis_hash": "ab", "height": "12", "block_hash": "x",
            "state_root": "y", "role": "validator", "account": "z", "peers": 3
        }))
        .unwrap();
        assert_eq!((status.height, status.peers), (12, 3));
        let mut v = json!({"a": "123", "b": ["7", "x1"], "c": "0".repeat(64)});
        numbers_from_strings(&mut v);
        assert_eq!(v, json!({"a": 123, "b": [7, "x1"], "c": "0".repeat(64)}));
    }

    #[test]
    fn the_api_view_of_a_report_reads_back() {
        let a = "11".repeat(32);
        let report = parse_report(json!({
            "outcome": "finalized", "attested_stake": "2000", "key_revealed_at": 90,
            "cancellation_fee": "0", "revealed_stake": "2000", "total_stake": "2000",
            "baseline_ppm": 101000, "min_improvement_ppm": 0,
            "entries": [
                {"subject": "baseline", "verdict": "scored", "score_ppm": 101000,
                 "reason": null, "reason_text": null},
                {"subject": a, "verdict": "rejected", "score_ppm": null,
                 "reason": "malformed", "reason_text": "artifact is not well-formed safetensors"}
            ],
            "trainers": [{
                "account": a,
                "consensus": {"verdict": "rejected", "score_ppm": null,
                              "reason": "malformed", "reason_text": "x"},
                "params": "2410", "penalty_ppm": 0, "effective_ppm": 0,
                "forfeit": {"reason": "rejected", "text": "x"},
                "bond_refund": "0", "bond_forfeit": "100", "entry_fee_refund": "0", "payout": "0",
                "rank": null
            }],
            "validators": [{"account": "22".repeat(32), "stake": "2000", "revealed": true,
                            "agreed_entries": 2, "payout": "300000"}],
            "creator_refund": "700000", "burned": "110", "champion": null
        }))
        .unwrap();
        assert_eq!(report.trainers[0].forfeit, Some(ForfeitReason::Rejected));
        assert_eq!(report.trainers[0].bond_forfeit, Amount(100));
        assert_eq!(report.entries[0].consensus, Verdict::scored(101_000));
        assert_eq!(report.validators[0].payout, Amount(300_000));
        assert_eq!(report.key_revealed_at, Some(Height(90)));
        // The burn holds the trainer's entry fee of 10.
        let owed = crate::report::check_conservation(&report, Amount(1_000_000), Amount(10));
        assert_eq!(owed, Ok(1_000_110));
    }

    #[test]
    fn a_task_view_reads_stages_and_an_absent_report() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        let c = "33".repeat(32);
        let task = parse_task(json!({
            "id": 1, "name": "digits", "phase": "commit", "windows": {},
            "deadlines": {
                "join": 8, "commit": "88", "key": 90, "reveal": 96, "score_commit": 120, "score": 128
            },
            "submissions": [
                {"trainer": a, "commitment": null},
                {"trainer": b, "commitment": "ff", "model_hash": null},
                {"trainer": c, "commitment": "ff", "model_hash": "ee"}
            ],
            "verdicts": [], "report": null, "champion": null
        }))
        .unwrap();
        assert_eq!(task.deadlines.commit, 88);
        let stages: Vec<Stage> = task.submissions.iter().map(|s| s.stage).collect();
        assert_eq!(stages, [Stage::Joined, Stage::Committed, Stage::Revealed]);
        assert!(task.report.is_none());
    }
}
