//! The validator's scoring loop.
//!
//! For every task, from the ledger and the persisted secrets ([`scorer_plan`]):
//!
//! - **Join window**, a validator of the task's stake snapshot that has not attested:
//!   [`ScorerStep::Attest`]. The loop fetches the sealed held-out file (a content-addressed blob
//!   the creator serves; its sha256 is the spec's `heldout_cipher_sha256`, its size at most the
//!   chain's `max_artifact_bytes`) into the blob store and submits `AttestHeldout`. The file stays
//!   sealed: validators hold no readable held-out rows while trainers train.
//! - **Score-commit window** (the next block is above `reveal_deadline`, at most
//!   `score_commit_deadline`; every reveal is on the ledger by then), the held-out key on chain
//!   and no commitment of ours on the ledger: [`ScorerStep::Score`]. The loop opens the sealed
//!   file with the key ([`open_sealed`]; it checks `sha256(salt || rows)` against the spec's
//!   `heldout_commitment`, and a file that does not open is logged and never scored; a file of
//!   another size than the spec's `heldout_examples` is refused the same way), fetches the
//!   public training file (for
//!   the trivial baseline), the base model if any, the earlier champions the task recorded, and
//!   every revealed artifact by hash, each under a deadline ([`fetch_timeout`]; an artifact no
//!   provider served whole and matching in time is `Unavailable`; a provider announcing more
//!   bytes than the reveal's `size_bytes` is refused before a byte is written), into the blob
//!   store chunk by chunk, scores them from their files with [`validator::score::score_task`] on a blocking
//!   thread (an artifact is read by ranges, never whole), draws a random salt and **persists salt and verdict vector** before it submits
//!   `CommitScores`. Like every node, it re-provides each blob as soon as it has fetched it
//!   ([`super::fetch_file`]), so a validator the author stalls finds it elsewhere in time.
//! - The same window with a persisted secret but no commitment on the ledger yet (a dropped
//!   transaction, or a restart after persisting): [`ScorerStep::Commit`] again, same salt.
//! - **Score-reveal window** with our commitment on the ledger, unrevealed, and a persisted
//!   secret that opens it: [`ScorerStep::Reveal`] from the persisted file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use consensus::commitment::{Salt, scores_commitment};
use consensus::state::{Phase, State, Task};
use consensus::task::TaskSpec;
use consensus::tx::TxKind;
use consensus::types::{AccountId, Hash, TaskId};
use consensus::verdict::VerdictVector;
use serde::{Deserialize, Serialize};
use trainer::sealed::{self, Opened, SealedError};
use validator::artifact::Source;
use validator::check::Revealed;
use validator::eval::{self, EvalError};
use validator::score::{Reference, ScoreError, Submission, TaskInputs, score_task};

use super::persist::{PersistError, RoleStore};
use super::{
    Attempts, Background, FetchError, RoleLoop, Stopped, drive, fetch_bytes, fetch_file, now_ms,
    on_one_thread, plan_unless_lagging, submit,
};
use crate::runtime::{Metrics, NodeContext};

/// The folder under `DATA_DIR/roles/` that holds the scorer's secrets.
pub const SCORER_DIR: &str = "scorer";

/// Shortest deadline for fetching one blob while scoring.
pub const FETCH_TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Longest deadline for fetching one blob while scoring.
pub const FETCH_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// How long the scorer waits for each blob of a task: a third of the score-commit window's
/// expected duration, within [`FETCH_TIMEOUT_MIN`, `FETCH_TIMEOUT_MAX`], so fetching, scoring
/// and committing fit well within the window. Every blob is fetched at once, so this bounds the
/// whole fetch phase.
pub fn fetch_timeout(block_interval_ms: u64, score_commit_blocks: u64) -> Duration {
    let window = Duration::from_millis(block_interval_ms.saturating_mul(score_commit_blocks));
    (window / 3).clamp(FETCH_TIMEOUT_MIN, FETCH_TIMEOUT_MAX)
}

/// A committed verdict vector with its salt: enough to reveal it after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreSecret {
    /// The task.
    pub task: TaskId,
    /// The verdict vector committed to.
    pub verdicts: VerdictVector,
    /// The commitment's salt.
    pub salt: Salt,
    /// [`scores_commitment`] of the vector with the salt, by this validator.
    pub commitment: Hash,
}

impl ScoreSecret {
    /// A secret for `verdicts` with `salt`, committed by `me` on chain `chain_id`.
    pub fn new(
        chain_id: &str,
        task: TaskId,
        me: &AccountId,
        verdicts: VerdictVector,
        salt: Salt,
    ) -> ScoreSecret {
        let commitment = scores_commitment(chain_id, task, me, &verdicts, &salt);
        ScoreSecret { task, verdicts, salt, commitment }
    }
}

/// One thing the scorer should do now.
#[derive(Clone, Debug, PartialEq)]
pub enum ScorerStep {
    /// Fetch the sealed held-out file and attest to holding it.
    Attest {
        /// The task.
        task: TaskId,
        /// sha256 of the sealed file (the spec's `heldout_cipher_sha256`).
        sealed: Hash,
    },
    /// Fetch, score, persist the secret and commit.
    Score {
        /// The task.
        task: TaskId,
    },
    /// Submit the commitment of a persisted secret.
    Commit {
        /// The task.
        task: TaskId,
        /// The commitment.
        commitment: Hash,
    },
    /// Reveal a persisted verdict vector.
    Reveal {
        /// The task.
        task: TaskId,
        /// The verdicts, as committed.
        verdicts: VerdictVector,
        /// The commitment's salt.
        salt: Salt,
    },
}

impl ScorerStep {
    /// The step's task.
    pub fn task(&self) -> TaskId {
        match self {
            ScorerStep::Attest { task, .. }
            | ScorerStep::Score { task }
            | ScorerStep::Commit { task, .. }
            | ScorerStep::Reveal { task, .. } => *task,
        }
    }

    /// The step's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ScorerStep::Attest { .. } => "attest_heldout",
            ScorerStep::Score { .. } => "score",
            ScorerStep::Commit { .. } => "commit_scores",
            ScorerStep::Reveal { .. } => "reveal_scores",
        }
    }
}

/// What validator `me` should do after the last committed block of `state`, given its persisted
/// `secrets`. Pure: the same inputs give the same steps, in task order.
pub fn scorer_plan(
    state: &State,
    me: &AccountId,
    secrets: &BTreeMap<TaskId, ScoreSecret>,
) -> Vec<ScorerStep> {
    if !state.is_validator(me) {
        return Vec::new();
    }
    let next = state.height().next();
    let mut steps = Vec::new();
    for (id, task) in state.tasks.iter() {
        let record = state.verdicts.get(&(*id, *me));
        match task.phase(next) {
            Phase::Join if task.stakes.contains_key(me) && !task.attested.contains(me) => {
                steps.push(ScorerStep::Attest {
                    task: *id,
                    sealed: task.spec.dataset.heldout_cipher_sha256,
                });
            }
            // Without the key on chain there is nothing to score with (and, on a sound ledger,
            // nothing revealed to score).
            Phase::ScoreCommit if record.is_none() && task.key.is_some() => match secrets.get(id) {
                Some(secret) => {
                    steps.push(ScorerStep::Commit { task: *id, commitment: secret.commitment })
                }
                None => steps.push(ScorerStep::Score { task: *id }),
            },
            Phase::ScoreReveal => {
                let Some(record) = record else { continue };
                if record.verdicts.is_some() {
                    continue;
                }
                if let Some(secret) = secrets.get(id).filter(|s| s.commitment == record.commitment)
                {
                    steps.push(ScorerStep::Reveal {
                        task: *id,
                        verdicts: secret.verdicts.clone(),
                        salt: secret.salt,
                    });
                }
            }
            _ => {}
        }
    }
    steps
}

/// Why a task could not be scored now.
#[derive(Debug, thiserror::Error)]
pub enum ScoreTaskError {
    /// The held-out key is not on chain: the sealed file cannot be opened yet.
    #[error("task {0}'s held-out key is not on chain: its held-out file stays sealed")]
    KeyNotOnChain(TaskId),
    /// The sealed held-out file could not be fetched.
    #[error("sealed held-out file: {0}")]
    SealedData(FetchError),
    /// The sealed held-out file does not open with the key, or not to the committed rows.
    #[error(transparent)]
    Sealed(#[from] SealedError),
    /// The public training file (needed for the baseline) could not be fetched.
    #[error("public training file: {0}")]
    TrainData(FetchError),
    /// The data do not fit the task.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// Scoring failed.
    #[error(transparent)]
    Score(#[from] ScoreError),
    /// The OS random source failed.
    #[error("drawing a salt: {0}")]
    Salt(getrandom::Error),
    /// The secret could not be persisted.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// A blocking task panicked or was cancelled.
    #[error("{what}: {message}")]
    Join {
        /// What it was doing.
        what: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The task left the ledger (cannot happen on a sound ledger).
    #[error("task {0} is not on the ledger")]
    UnknownTask(TaskId),
}

impl ScoreTaskError {
    /// Whether trying again later cannot help (the held-out file does not open for the task).
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            ScoreTaskError::KeyNotOnChain(_)
                | ScoreTaskError::Sealed(_)
                | ScoreTaskError::Eval(_)
                | ScoreTaskError::UnknownTask(_)
        )
    }
}

fn joined(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> ScoreTaskError {
    move |e| ScoreTaskError::Join { what, message: e.to_string() }
}

/// What the scorer reads from the ledger to score a task.
#[derive(Clone, Debug)]
struct Job {
    task: TaskId,
    /// The task's record as it was read (its key, if on chain).
    record: Task,
    spec: TaskSpec,
    chain_id: String,
    fetch_timeout: Duration,
    /// Largest sealed held-out file fetched, in bytes (the chain's `max_artifact_bytes`).
    sealed_bytes_max: u64,
    /// The earlier champions the task recorded: hash and parameter count.
    champions: Vec<(Hash, u64)>,
    /// Revealed submissions.
    submissions: Vec<(AccountId, Revealed)>,
}

impl Job {
    fn read(state: &State, task: TaskId) -> Option<Job> {
        let t = state.tasks.get(&task)?;
        let params = state.params();
        let submissions = state
            .submissions
            .range((task, AccountId([0; 32]))..=(task, AccountId([0xff; 32])))
            .filter_map(|((_, trainer), s)| {
                let reveal = s.reveal?;
                let revealed = Revealed {
                    model_hash: reveal.model_hash,
                    params: reveal.params,
                    size_bytes: Some(reveal.size_bytes),
                };
                Some((*trainer, revealed))
            })
            .collect();
        Some(Job {
            task,
            record: t.clone(),
            spec: t.spec.clone(),
            chain_id: state.chain_id().to_owned(),
            fetch_timeout: fetch_timeout(params.block_interval_ms, t.spec.windows.score_commit),
            sealed_bytes_max: params.max_artifact_bytes,
            champions: t.champions.iter().map(|c| (c.model_hash, c.params)).collect(),
            submissions,
        })
    }
}

/// What a finished scoring job returns: the persisted secret.
type Scored = Result<ScoreSecret, ScoreTaskError>;

/// The scorer's loop state.
struct Scorer {
    ctx: NodeContext,
    me: AccountId,
    store: RoleStore,
    secrets: BTreeMap<TaskId, ScoreSecret>,
    attempts: Attempts,
    /// Tasks this validator cannot score (no held-out file): logged once, never committed.
    unscorable: BTreeSet<TaskId>,
    /// The task being scored, if any (one at a time).
    scoring: Option<Background<Scored>>,
}

/// Runs the validator's scoring loop until the node shuts down.
pub async fn run(ctx: NodeContext) -> anyhow::Result<()> {
    let mut events = ctx.events.subscribe();
    let store = RoleStore::open(&ctx.data_dir, SCORER_DIR)?;
    let secrets = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.load_all::<ScoreSecret>()).await??
    };
    tracing::info!(persisted = secrets.len(), "scorer started");
    let me = ctx.key.account();
    let mut scorer = Scorer {
        ctx,
        me,
        store,
        secrets,
        attempts: Attempts::default(),
        unscorable: BTreeSet::new(),
        scoring: None,
    };
    if drive(&mut scorer, &mut events).await.is_err() {
        tracing::info!("scorer stopped: the node is shutting down");
    }
    Ok(())
}

impl RoleLoop for Scorer {
    type Output = Scored;

    fn job(&mut self) -> &mut Option<Background<Scored>> {
        &mut self.scoring
    }

    /// Plans from the ledger and carries the plan out.
    async fn tick(&mut self) -> Result<(), Stopped> {
        let (height, steps) = plan_unless_lagging(&self.ctx, now_ms(), "scoring", |state| {
            scorer_plan(state, &self.me, &self.secrets)
        });
        for step in steps {
            let task = step.task();
            let busy = matches!(step, ScorerStep::Score { .. }) && self.scoring.is_some();
            if busy
                || self.unscorable.contains(&task)
                || !self.attempts.due(task, step.name(), height)
            {
                continue;
            }
            match step {
                ScorerStep::Attest { task, sealed } => self.attest(task, sealed).await?,
                ScorerStep::Score { task } => {
                    tracing::info!(task = %task, %height, "score-commit window open: scoring the task");
                    let job =
                        score_and_persist(self.ctx.clone(), self.store.clone(), self.me, task);
                    self.scoring = Some(Background::spawn(task, job));
                }
                ScorerStep::Commit { task, commitment } => {
                    tracing::info!(
                        task = %task, %height,
                        "score-commit window open and our persisted commitment is not on the \
                         ledger: submitting it again"
                    );
                    submit(&self.ctx, task, TxKind::CommitScores { task, commitment }).await?;
                }
                ScorerStep::Reveal { task, verdicts, salt } => {
                    tracing::info!(
                        task = %task, %height, entries = verdicts.len(),
                        "score-reveal window open: revealing our persisted verdict vector"
                    );
                    submit(&self.ctx, task, TxKind::RevealScores { task, verdicts, salt }).await?;
                }
            }
        }
        Ok(())
    }

    /// A scoring job ended: commits its (already persisted) secret.
    async fn job_ended(
        &mut self,
        task: TaskId,
        elapsed: Duration,
        result: Result<Scored, tokio::task::JoinError>,
    ) -> Result<(), Stopped> {
        let height = self.ctx.read(|l| l.height());
        let outcome = result.unwrap_or_else(|e| Err(joined("scoring")(e)));
        let secret = match outcome {
            Ok(done) => done,
            Err(error) if error.is_permanent() => {
                tracing::error!(
                    task = %task, %height, %error,
                    "cannot score this task; this validator will not commit scores for it"
                );
                self.unscorable.insert(task);
                return Ok(());
            }
            Err(error) => {
                tracing::warn!(
                    task = %task, %height, %error,
                    "scoring failed; trying again in {} blocks if the window is still open",
                    super::RETRY_BLOCKS
                );
                return Ok(());
            }
        };
        tracing::info!(
            task = %task, %height,
            verdicts = ?secret.verdicts.iter().map(|e| e.verdict).collect::<Vec<_>>(),
            elapsed_ms = elapsed.as_millis() as u64,
            "scored; secret persisted, committing"
        );
        let commitment = secret.commitment;
        self.secrets.insert(task, secret);
        self.attempts.tried(task, "commit_scores", height);
        submit(&self.ctx, task, TxKind::CommitScores { task, commitment }).await?;
        Ok(())
    }
}

impl Scorer {
    /// Fetches the sealed held-out file of `task` into the blob store (bounded by the chain's
    /// `max_artifact_bytes`, checked against its sha256 by the fetch) and attests to holding it.
    /// Waits at most the join window's [`fetch_timeout`]; a failure is retried by the planner.
    async fn attest(&mut self, task: TaskId, sealed: Hash) -> Result<(), Stopped> {
        let (max_bytes, timeout, creator) = self.ctx.read(|l| {
            let params = l.state().params();
            let t = l.state().tasks.get(&task);
            let join = t.map_or(0, |t| t.spec.windows.join);
            let creator = t.map(|t| t.creator);
            (params.max_artifact_bytes, fetch_timeout(params.block_interval_ms, join), creator)
        });
        match fetch_bytes(&self.ctx, sealed, max_bytes, creator, timeout).await {
            Ok(bytes) => {
                tracing::info!(
                    task = %task, sealed = %sealed.short(), size_bytes = bytes.len(),
                    "holding the sealed held-out file: attesting"
                );
                submit(&self.ctx, task, TxKind::AttestHeldout { task }).await?;
            }
            Err(error) => tracing::warn!(
                task = %task, sealed = %sealed.short(), %error,
                "sealed held-out file not fetched yet; trying again in {} blocks",
                super::RETRY_BLOCKS
            ),
        }
        Ok(())
    }
}

/// Opens the sealed held-out file of `task` with the key on chain, checking the rows against
/// the spec's `heldout_commitment`. Refuses while the key is not on chain: before it, a
/// validator holds only ciphertext.
pub fn open_sealed(task: &Task, sealed_bytes: &[u8]) -> Result<Opened, ScoreTaskError> {
    let key = task.heldout_key().ok_or(ScoreTaskError::KeyNotOnChain(task.id))?;
    Ok(sealed::open(&key, sealed_bytes, &task.spec.dataset.heldout_commitment)?)
}

/// Fetches, scores and persists the secret of `task`; returns it.
async fn score_and_persist(
    ctx: NodeContext,
    store: RoleStore,
    me: AccountId,
    task: TaskId,
) -> Scored {
    let job = ctx.read(|l| Job::read(l.state(), task)).ok_or(ScoreTaskError::UnknownTask(task))?;
    job.record.heldout_key().ok_or(ScoreTaskError::KeyNotOnChain(task))?;
    let sealed_hash = job.spec.dataset.heldout_cipher_sha256;
    let creator = Some(job.record.creator);
    let sealed = fetch_bytes(&ctx, sealed_hash, job.sealed_bytes_max, creator, job.fetch_timeout)
        .await
        .map_err(ScoreTaskError::SealedData)?;
    let record = job.record.clone();
    let heldout = tokio::task::spawn_blocking(move || open_sealed(&record, &sealed))
        .await
        .map_err(joined("opening the sealed held-out file"))??;
    tracing::info!(task = %task, size_bytes = heldout.bytes.len(), "opened the held-out file");

    let (train, base, champions, artifacts) = fetch_all(&ctx, &job).await;
    let train = train.map_err(ScoreTaskError::TrainData)?;
    let started = Instant::now();
    let scoring = job.clone();
    let verdicts = tokio::task::spawn_blocking(move || {
        on_one_thread(|| {
            score_job(&scoring, &train, &heldout, base.as_deref(), &champions, &artifacts)
        })
    })
    .await
    .map_err(joined("scoring"))??;
    Metrics::add(&ctx.metrics.scoring_ms, started.elapsed().as_millis() as u64);

    let salt = Salt::random().map_err(ScoreTaskError::Salt)?;
    let secret = ScoreSecret::new(&job.chain_id, task, &me, verdicts, salt);
    let saved = secret.clone();
    tokio::task::spawn_blocking(move || store.save(task, &saved))
        .await
        .map_err(joined("persisting the secret"))??;
    Ok(secret)
}

/// What [`fetch_all`] returns: the training file, and the paths in the blob store of the base
/// model, the earlier champions and the revealed artifacts (`None` for each model that could not
/// be fetched).
type Fetched =
    (Result<Vec<u8>, FetchError>, Option<PathBuf>, Vec<Option<PathBuf>>, Vec<Option<PathBuf>>);

/// Fetches the training file, the base model, the earlier champions and every revealed artifact
/// at once, each within the job's deadline; the models go to the blob store, never into memory. A
/// revealed artifact is fetched with its reveal's `size_bytes` as the limit. A missing model is
/// `None`.
async fn fetch_all(ctx: &NodeContext, job: &Job) -> Fetched {
    let timeout = job.fetch_timeout;
    let max_artifact = job.spec.limits.max_artifact_bytes;
    let creator = Some(job.record.creator);
    let train = fetch_bytes(
        ctx,
        job.spec.dataset.train_sha256,
        trainer::data::DATA_BYTES_MAX,
        creator,
        timeout,
    );
    let base = async {
        let base = job.spec.base_model.as_ref()?;
        match fetch_file(ctx, base.model_hash, max_artifact, None, timeout).await {
            Ok(path) => Some(path),
            Err(error) => {
                tracing::warn!(task = %job.task, %error, "base model unavailable");
                None
            }
        }
    };
    let champions = futures::future::join_all(job.champions.iter().map(|(hash, _)| async move {
        match fetch_file(ctx, *hash, max_artifact, None, timeout).await {
            Ok(path) => Some(path),
            Err(error) => {
                tracing::warn!(task = %job.task, champion = %hash.short(), %error, "earlier champion unavailable");
                None
            }
        }
    }));
    let artifacts =
        futures::future::join_all(job.submissions.iter().map(|(trainer, revealed)| async move {
            let limit = revealed.size_bytes.map_or(max_artifact, |size| size.min(max_artifact));
            match fetch_file(ctx, revealed.model_hash, limit, Some(*trainer), timeout).await {
                Ok(path) => Some(path),
                Err(error) => {
                    tracing::warn!(
                        task = %job.task, trainer = %trainer.short(), %error,
                        "artifact unavailable: verdict Unavailable"
                    );
                    None
                }
            }
        }));
    tokio::join!(train, base, champions, artifacts)
}

/// Opens a fetched model's file; one that cannot be opened (deleted since) counts as unavailable.
fn open_model(task: TaskId, path: Option<&Path>) -> Option<File> {
    let path = path?;
    File::open(path)
        .inspect_err(|error| {
            tracing::warn!(task = %task, file = %path.display(), %error, "fetched model unreadable: verdict Unavailable");
        })
        .ok()
}

/// Scores a job (blocking): prepares the data, opens the fetched models and runs [`score_task`],
/// which reads each model by ranges.
fn score_job(
    job: &Job,
    train: &[u8],
    heldout: &Opened,
    base: Option<&Path>,
    champions: &[Option<PathBuf>],
    artifacts: &[Option<PathBuf>],
) -> Result<VerdictVector, ScoreTaskError> {
    let train = eval::prepare(&job.spec, train, "public training file")?;
    let heldout = eval::prepare_heldout(&job.spec, &heldout.bytes, "held-out file")?;
    let base = open_model(job.task, base);
    let champion_files: Vec<Option<File>> =
        champions.iter().map(|path| open_model(job.task, path.as_deref())).collect();
    let artifact_files: Vec<Option<File>> =
        artifacts.iter().map(|path| open_model(job.task, path.as_deref())).collect();
    let champions: Vec<Reference<'_>> = job
        .champions
        .iter()
        .zip(&champion_files)
        .map(|((model_hash, params), file)| Reference {
            model_hash: *model_hash,
            params: *params,
            artifact: file.as_ref().map(|f| f as &dyn Source),
        })
        .collect();
    let submissions: Vec<Submission<'_>> = job
        .submissions
        .iter()
        .zip(&artifact_files)
        .map(|((trainer, revealed), file)| Submission {
            trainer: *trainer,
            revealed: *revealed,
            artifact: file.as_ref().map(|f| f as &dyn Source),
        })
        .collect();
    let inputs = TaskInputs {
        spec: &job.spec,
        train: &train,
        heldout: &heldout,
        base_model: base.as_ref().map(|f| f as &dyn Source),
        champions: &champions,
        submissions: &submissions,
    };
    Ok(score_task(&inputs)?)
}
