//! The trainer's loop.
//!
//! For every task, from the ledger and the trainer's persisted records ([`trainer_plan`]):
//!
//! - **Join**: while the join window is open (the next block at most `join_deadline`), the task
//!   is not full, this account may train (not a validator, not the creator, bond, entry fee and
//!   fees affordable) and the recipe fits the task ([`recipe_fits`]), the trainer records the plan
//!   ([`Stage::Joining`]) and submits `JoinTask`. One task trains at a time: it joins another
//!   only once no joined task is still waiting to be trained.
//! - **Train** once the join is on the ledger: fetch the public training file by hash (and, when
//!   the task has a base model and the recipe fine-tunes, the base model), train with the recipe
//!   on a blocking thread (one compute thread, seeded by the recipe), write the artifact into the
//!   **withheld** store (`DATA_DIR/roles/trainer/withheld`, which the network does not serve),
//!   draw a salt and **persist salt and model hash** ([`Stage::Trained`]) before it submits
//!   `CommitModel`, at once. Training that ends after the commit deadline is logged and
//!   the task skipped ([`Stage::Abandoned`]); so is a recipe that fails on the task's data.
//! - **Reveal**: only once the task's held-out key is on chain (the creator reveals it after the
//!   commit deadline; the ledger refuses a reveal before it), **release** the artifact into the blob store (from then on any peer may fetch it),
//!   submit `RevealModel` from the persisted record, and **serve** it (`provide_blob`), also again
//!   after a restart. Before the key is on chain no peer can fetch our model, even one that knew
//!   its hash.
//!
//! A restart reloads the records: a joined task is not joined again, a trained one is committed
//! and revealed with the same salt.
//!
//! Where the models come from is the trainer's [`ModelSource`]: its candle recipe, or a folder of
//! models trained elsewhere ([`super::outside`]). With a folder, "train" means "take the task's
//! file from the folder and check it as a validator would", and the trainer joins only tasks whose
//! file is waiting there and passed those checks; everything after is the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use consensus::commitment::{Salt, model_commitment};
use consensus::state::State;
use consensus::task::{Dtype, TaskKind, TaskSpec};
use consensus::tx::TxKind;
use consensus::types::{AccountId, Hash, Height, ModelHash, TaskId};
use serde::{Deserialize, Serialize};
use trainer::recipe::Recipe;
use trainer::train::{self, Event, TrainData, TrainError};

use super::outside::{self, OutsideError};
use super::persist::RoleStore;
use super::{
    Attempts, Background, FetchError, RoleLoop, Stopped, drive, fetch_bytes, now_ms, on_one_thread,
    plan_unless_lagging, submit,
};
use crate::blobs::{BlobStore, BlobStoreError};
use crate::runtime::{Metrics, NodeContext};

/// The folder under `DATA_DIR/roles/` that holds the trainer's records.
pub const TRAINER_DIR: &str = "trainer";

/// The folder under the trainer's records that holds artifacts not yet revealed.
pub const WITHHELD_DIR: &str = "withheld";

/// Deadline for fetching the training file or the base model (a try; the loop tries again
/// every [`super::RETRY_BLOCKS`] while the commit window is open).
pub const DATA_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Deadline for publishing the provider record of our artifact (a try, as above).
pub const PROVIDE_TIMEOUT: Duration = Duration::from_secs(10);

/// Transactions a trainer pays fees for in one task: join, commit, reveal.
const TXS_PER_TASK: u64 = 3;

/// A trained model and the salt of its commitment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainedModel {
    /// sha256 of the artifact (its name in the withheld store, and in the blob store once revealed).
    pub model_hash: ModelHash,
    /// The artifact's size in bytes.
    pub size_bytes: u64,
    /// Its non-zero parameter count.
    pub params: u64,
    /// The commitment's salt.
    pub salt: Salt,
    /// [`model_commitment`] of the model hash with the salt, by this trainer.
    pub commitment: Hash,
}

impl TrainedModel {
    /// The `RevealModel` transaction that opens this model's commitment in `task`.
    pub fn reveal(&self, task: TaskId) -> TxKind {
        TxKind::RevealModel {
            task,
            model_hash: self.model_hash,
            salt: self.salt,
            size_bytes: self.size_bytes,
            params: self.params,
        }
    }
}

/// Where the trainer stands in a task, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// It decided to join at this (committed) height and submitted `JoinTask`; not trained yet.
    Joining {
        /// The height it decided at.
        at: Height,
    },
    /// It trained; the commitment may or may not be on the ledger yet.
    Trained(TrainedModel),
    /// It gave up on the task.
    Abandoned {
        /// Why.
        reason: String,
    },
}

/// The trainer's record of one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task.
    pub task: TaskId,
    /// Where the trainer stands.
    pub stage: Stage,
}

/// One thing the trainer should do now.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainerStep {
    /// Record the plan and submit `JoinTask` (again, when the first did not land).
    Join {
        /// The task.
        task: TaskId,
    },
    /// Fetch the data, train, persist and commit.
    Train {
        /// The task.
        task: TaskId,
    },
    /// Submit the commitment of a persisted model.
    Commit {
        /// The task.
        task: TaskId,
        /// The commitment.
        commitment: Hash,
    },
    /// Reveal a persisted model (the commit deadline has passed).
    Reveal {
        /// The task.
        task: TaskId,
        /// The model.
        model: TrainedModel,
    },
    /// Announce that this node serves the revealed artifact.
    Serve {
        /// The task.
        task: TaskId,
        /// The artifact.
        model_hash: ModelHash,
    },
    /// Give the task up and record why.
    Abandon {
        /// The task.
        task: TaskId,
        /// Why.
        reason: String,
    },
}

impl TrainerStep {
    /// The step's task.
    pub fn task(&self) -> TaskId {
        match self {
            TrainerStep::Join { task }
            | TrainerStep::Train { task }
            | TrainerStep::Commit { task, .. }
            | TrainerStep::Reveal { task, .. }
            | TrainerStep::Serve { task, .. }
            | TrainerStep::Abandon { task, .. } => *task,
        }
    }

    /// The step's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            TrainerStep::Join { .. } => "join_task",
            TrainerStep::Train { .. } => "train",
            TrainerStep::Commit { .. } => "commit_model",
            TrainerStep::Reveal { .. } => "reveal_model",
            TrainerStep::Serve { .. } => "serve",
            TrainerStep::Abandon { .. } => "abandon",
        }
    }
}

fn mlp_params(sizes: &[usize]) -> u64 {
    sizes.windows(2).map(|w| (w[0] as u64 + 1) * w[1] as u64).sum()
}

/// Where a trainer's models come from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// Trained here with this recipe.
    Recipe(Box<Recipe>),
    /// Trained elsewhere: `task-<ID>.safetensors` files in this folder ([`super::outside`]).
    Folder(PathBuf),
}

/// What the trainer can offer for tasks, as the planner sees it.
#[derive(Clone, Copy, Debug)]
pub enum Offer<'a> {
    /// A model trained with this recipe, for any task it fits.
    Recipe(&'a Recipe),
    /// A model trained elsewhere, for each of these tasks (its file is waiting in the folder).
    Files(&'a BTreeSet<TaskId>),
}

impl Offer<'_> {
    /// Whether the trainer can offer a model for `task` now.
    fn fits(&self, task: TaskId, spec: &TaskSpec) -> bool {
        match self {
            Offer::Recipe(recipe) => recipe_fits(recipe, spec).is_ok(),
            Offer::Files(ready) => ready.contains(&task),
        }
    }
}

/// Whether `recipe` can train a model for `spec`, judged before joining: the sections it uses
/// apply to the task's kind, the model it builds fits the task's limits (unless it prunes), and
/// the task accepts F32 artifacts (what training writes).
pub fn recipe_fits(recipe: &Recipe, spec: &TaskSpec) -> Result<(), String> {
    if !spec.limits.dtypes.contains(&Dtype::F32) {
        return Err("the task does not accept F32 artifacts".into());
    }
    let values = match spec.kind {
        TaskKind::Classification { features, classes } => {
            if let Some(a) = &recipe.augment
                && !(features as usize).is_multiple_of(a.width)
            {
                return Err(format!(
                    "augment.width {} does not divide the task's {features} features",
                    a.width
                ));
            }
            if recipe.base.is_some() {
                // The base artifact fixes the hidden sizes; training checks it.
                None
            } else {
                let mut sizes = vec![features as usize];
                sizes.extend(&recipe.model.hidden);
                sizes.push(classes as usize);
                Some(mlp_params(&sizes))
            }
        }
        TaskKind::CharLm { .. } => {
            if recipe.filter.is_some() || recipe.augment.is_some() {
                return Err("[filter] and [augment] apply to classification only".into());
            }
            let shapes = validator::eval::charlm_shapes(&spec.kind);
            Some(shapes.values().map(|s| s.iter().product::<usize>() as u64).sum())
        }
    };
    if let Some(values) = values {
        if recipe.prune.is_none() && values > spec.limits.max_params {
            return Err(format!(
                "the model has {values} parameters, over the task's {} (and the recipe does \
                 not prune)",
                spec.limits.max_params
            ));
        }
        if values.saturating_mul(4) > spec.limits.max_artifact_bytes {
            return Err(format!(
                "an F32 artifact of {values} values exceeds the task's {} bytes",
                spec.limits.max_artifact_bytes
            ));
        }
    }
    Ok(())
}

/// What trainer `me`, able to `offer` models, should do after the last committed block of
/// `state`, given its persisted `records` and the tasks whose artifact it already `served` since
/// it started. Pure: the same inputs give the same steps, in task order.
pub fn trainer_plan(
    state: &State,
    me: &AccountId,
    offer: Offer<'_>,
    records: &BTreeMap<TaskId, TaskRecord>,
    served: &BTreeSet<TaskId>,
) -> Vec<TrainerStep> {
    let next = state.height().next();
    let mut steps = Vec::new();
    let abandon = |task, reason: &str| TrainerStep::Abandon { task, reason: reason.into() };
    for (id, record) in records {
        let task = *id;
        let Some(t) = state.tasks.get(id) else { continue };
        let sub = state.submissions.get(&(task, *me));
        match (&record.stage, sub) {
            (Stage::Abandoned { .. }, _) => {}
            (Stage::Joining { .. } | Stage::Trained(_), None) => {
                if t.report.is_some() || next > t.join_deadline() {
                    steps.push(abandon(task, "our JoinTask did not land before the join deadline"));
                } else if t.joined >= t.spec.max_trainers {
                    steps.push(abandon(task, "the task filled up before our JoinTask landed"));
                } else {
                    steps.push(TrainerStep::Join { task });
                }
            }
            (Stage::Joining { .. }, Some(s)) => {
                if s.commitment.is_some() {
                    steps.push(abandon(task, "a commitment is on the ledger without our record"));
                } else if t.report.is_some() || next > t.commit_deadline() {
                    steps.push(abandon(task, "the commit deadline passed before we trained"));
                } else if offer.fits(task, &t.spec) {
                    steps.push(TrainerStep::Train { task });
                }
            }
            (Stage::Trained(model), Some(s)) => match (s.commitment, s.reveal) {
                (None, _) => {
                    if t.report.is_some() || next > t.commit_deadline() {
                        steps
                            .push(abandon(task, "our commitment did not land before the deadline"));
                    } else {
                        steps.push(TrainerStep::Commit { task, commitment: model.commitment });
                    }
                }
                (Some(c), None) => {
                    if c != model.commitment {
                        steps.push(abandon(task, "the commitment on the ledger is not ours"));
                    } else if t.report.is_some() || next > t.reveal_deadline() {
                        steps.push(abandon(task, "the reveal window closed before we revealed"));
                    } else if t.key.is_some() {
                        // The key comes only after the commit deadline; until it is on chain a
                        // reveal would be refused, and the artifact stays unserved.
                        steps.push(TrainerStep::Reveal { task, model: model.clone() });
                    }
                }
                (Some(_), Some(r)) => {
                    if !served.contains(&task) {
                        steps.push(TrainerStep::Serve { task, model_hash: r.model_hash });
                    }
                }
            },
        }
    }
    let busy = records.values().any(|r| matches!(r.stage, Stage::Joining { .. }));
    if !busy && let Some(task) = joinable(state, me, offer, records) {
        steps.push(TrainerStep::Join { task });
    }
    steps
}

/// The oldest task `me` may join now with what it can `offer`, if any.
fn joinable(
    state: &State,
    me: &AccountId,
    offer: Offer<'_>,
    records: &BTreeMap<TaskId, TaskRecord>,
) -> Option<TaskId> {
    if state.validators.contains(me) {
        return None;
    }
    let next = state.height().next();
    let balance = u128::from(state.account(me).balance.0);
    let fees = u128::from(state.params().tx_fee.0) * u128::from(TXS_PER_TASK);
    state
        .tasks
        .iter()
        .find(|(id, t)| {
            !records.contains_key(id)
                && t.report.is_none()
                && next > t.created_at
                && next <= t.join_deadline()
                && t.joined < t.spec.max_trainers
                && t.creator != *me
                && !state.submissions.contains(&(**id, *me))
                && balance >= u128::from(t.spec.bond.0) + u128::from(t.spec.entry_fee.0) + fees
                && offer.fits(**id, &t.spec)
        })
        .map(|(id, _)| *id)
}

/// Why a task could not be trained now.
#[derive(Debug, thiserror::Error)]
pub enum TrainTaskError {
    /// The training file or base model could not be fetched (tried again later).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Training failed: the recipe does not fit the data (not tried again).
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A model from the submit folder cannot be read, or fails a validator's check (the latter
    /// is not tried again).
    #[error(transparent)]
    Outside(#[from] OutsideError),
    /// The artifact could not be encoded or stored.
    #[error("writing the artifact: {0}")]
    Artifact(String),
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] BlobStoreError),
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

fn joined(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> TrainTaskError {
    move |e| TrainTaskError::Join { what, message: e.to_string() }
}

/// What came out of a training run: the artifact, stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// sha256 of the artifact.
    pub model_hash: ModelHash,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its non-zero parameters.
    pub params: u64,
}

/// Trains `recipe` on a task's training file `data` (blocking, one compute thread) and writes
/// the artifact into `store`.
pub fn train_artifact(
    task: TaskId,
    spec: &TaskSpec,
    data: &[u8],
    recipe: &Recipe,
    store: &BlobStore,
) -> Result<Artifact, TrainTaskError> {
    let data = TrainData::parse(spec, data, "public training file").map_err(TrainError::from)?;
    let mut log = |event: Event| match event {
        Event::Phase { name, total } => tracing::info!(task = %task, total, "training: {name}"),
        Event::Progress { done, loss, validation } => {
            tracing::debug!(task = %task, done, loss, ?validation, "training progress")
        }
        Event::Note(note) => tracing::info!(task = %task, "training: {note}"),
    };
    let trained = on_one_thread(|| train::train(spec, data, recipe, &mut log))?;
    let bytes = trainer::artifact::encode(&trained.tensors)
        .map_err(|e| TrainTaskError::Artifact(e.to_string()))?;
    let params = trainer::artifact::nonzero_params(&trained.tensors)
        .map_err(|e| TrainTaskError::Artifact(e.to_string()))?;
    let model_hash = store.put(&bytes)?;
    Ok(Artifact { model_hash, size_bytes: bytes.len() as u64, params })
}

/// Takes the model for `task` from the submit folder `dir`: reads it (bounded by the task's
/// artifact limit), checks it as a validator would, and writes it into `store` (blocking).
pub fn take_outside_model(
    dir: &Path,
    task: TaskId,
    spec: &TaskSpec,
    store: &BlobStore,
) -> Result<Artifact, TrainTaskError> {
    let (bytes, checked) = outside::read_checked(&dir.join(outside::model_file_name(task)), spec)?;
    let model_hash = store.put(&bytes)?;
    debug_assert_eq!(model_hash, checked.sha256);
    Ok(Artifact { model_hash, size_bytes: checked.size_bytes, params: checked.params })
}

/// The trainer's loop state.
struct Trainer {
    ctx: NodeContext,
    me: AccountId,
    source: ModelSource,
    store: RoleStore,
    /// Our artifacts until their reveal: a blob store the network does not serve.
    withheld: BlobStore,
    records: BTreeMap<TaskId, TaskRecord>,
    served: BTreeSet<TaskId>,
    attempts: Attempts,
    /// The task being trained, if any (one at a time).
    training: Option<Background<Result<Artifact, TrainTaskError>>>,
}

/// Runs the trainer's loop until the node shuts down, with its models from `source`.
pub async fn run(ctx: NodeContext, source: ModelSource) -> anyhow::Result<()> {
    let mut events = ctx.events.subscribe();
    let store = RoleStore::open(&ctx.data_dir, TRAINER_DIR)?;
    let withheld = BlobStore::open(&store.dir().join(WITHHELD_DIR))?;
    let records = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.load_all::<TaskRecord>()).await??
    };
    match &source {
        ModelSource::Recipe(recipe) => {
            recipe.validate()?;
            outside::record_source(ctx.data_dir.root(), None)?;
            tracing::info!(persisted = records.len(), seed = recipe.seed, "trainer started");
        }
        ModelSource::Folder(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("creating the submit folder {}: {e}", dir.display())
            })?;
            let dir = std::path::absolute(dir)?;
            outside::record_source(ctx.data_dir.root(), Some(&dir))?;
            tracing::info!(
                persisted = records.len(), submit_dir = %dir.display(),
                "trainer started: taking models trained elsewhere from the submit folder"
            );
        }
    }
    let me = ctx.key.account();
    let mut trainer = Trainer {
        ctx,
        me,
        source,
        store,
        withheld,
        records,
        served: BTreeSet::new(),
        attempts: Attempts::default(),
        training: None,
    };
    if drive(&mut trainer, &mut events).await.is_err() {
        tracing::info!("trainer stopped: the node is shutting down");
    }
    Ok(())
}

impl RoleLoop for Trainer {
    type Output = Result<Artifact, TrainTaskError>;

    fn job(&mut self) -> &mut Option<Background<Result<Artifact, TrainTaskError>>> {
        &mut self.training
    }

    /// Plans from the ledger and carries the plan out.
    async fn tick(&mut self) -> Result<(), Stopped> {
        let now = now_ms();
        let waiting = match &self.source {
            ModelSource::Recipe(_) => BTreeSet::new(),
            ModelSource::Folder(dir) => {
                let dir = dir.clone();
                match tokio::task::spawn_blocking(move || outside::waiting_models(&dir)).await {
                    Ok(Ok(waiting)) => waiting,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot list the submit folder");
                        BTreeSet::new()
                    }
                    Err(error) => {
                        tracing::warn!(%error, "listing the submit folder failed");
                        BTreeSet::new()
                    }
                }
            }
        };
        let offer = match &self.source {
            ModelSource::Recipe(recipe) => Offer::Recipe(recipe),
            ModelSource::Folder(_) => Offer::Files(&waiting),
        };
        let (height, steps) = plan_unless_lagging(&self.ctx, now, "acting", |state| {
            trainer_plan(state, &self.me, offer, &self.records, &self.served)
        });
        for step in steps {
            let task = step.task();
            let busy = matches!(step, TrainerStep::Train { .. }) && self.training.is_some();
            if busy || !self.attempts.due(task, step.name(), height) {
                continue;
            }
            match step {
                TrainerStep::Join { task } => {
                    if !self.records.contains_key(&task) && !self.outside_model_passes(task).await {
                        continue;
                    }
                    tracing::info!(
                        task = %task, %height,
                        "join window open, the task has room and we have a model for it: joining"
                    );
                    if self.persist(task, Stage::Joining { at: height }).await {
                        submit(&self.ctx, task, TxKind::JoinTask { task }).await?;
                    }
                }
                TrainerStep::Train { task } => match &self.source {
                    ModelSource::Recipe(recipe) => {
                        tracing::info!(
                            task = %task, %height,
                            "joined: fetching the training data and training"
                        );
                        let job = fetch_and_train(
                            self.ctx.clone(),
                            (**recipe).clone(),
                            self.withheld.clone(),
                            task,
                        );
                        self.training = Some(Background::spawn(task, job));
                    }
                    ModelSource::Folder(dir) => {
                        tracing::info!(
                            task = %task, %height,
                            "joined: taking the model from the submit folder"
                        );
                        let job = take_from_folder(
                            self.ctx.clone(),
                            dir.clone(),
                            self.withheld.clone(),
                            task,
                        );
                        self.training = Some(Background::spawn(task, job));
                    }
                },
                TrainerStep::Commit { task, commitment } => {
                    tracing::info!(
                        task = %task, %height,
                        "our persisted commitment is not on the ledger: submitting it again"
                    );
                    submit(&self.ctx, task, TxKind::CommitModel { task, commitment }).await?;
                }
                TrainerStep::Reveal { task, model } => {
                    tracing::info!(
                        task = %task, %height, model = %model.model_hash,
                        "commit deadline passed: revealing our model"
                    );
                    if !self.release(task, model.model_hash).await {
                        continue;
                    }
                    if submit(&self.ctx, task, model.reveal(task)).await? {
                        self.attempts.tried(task, "serve", height);
                        self.serve(task, model.model_hash).await;
                    }
                }
                TrainerStep::Serve { task, model_hash } => {
                    if self.release(task, model_hash).await {
                        self.serve(task, model_hash).await;
                    }
                }
                TrainerStep::Abandon { task, reason } => {
                    tracing::warn!(task = %task, %height, %reason, "skipping the task");
                    self.persist(task, Stage::Abandoned { reason }).await;
                }
            }
        }
        Ok(())
    }

    /// A training run ended: persists the model with a fresh salt and commits it, or skips the
    /// task when training failed or ended after the commit deadline.
    async fn job_ended(
        &mut self,
        task: TaskId,
        elapsed: Duration,
        result: Result<Result<Artifact, TrainTaskError>, tokio::task::JoinError>,
    ) -> Result<(), Stopped> {
        let outcome = result.unwrap_or_else(|e| Err(joined("training")(e)));
        let artifact = match outcome {
            Ok(artifact) => artifact,
            Err(
                error @ (TrainTaskError::Train(_)
                | TrainTaskError::UnknownTask(_)
                | TrainTaskError::Outside(OutsideError::Rejected { .. })),
            ) => {
                tracing::warn!(task = %task, %error, "training failed; skipping the task");
                self.persist(task, Stage::Abandoned { reason: error.to_string() }).await;
                return Ok(());
            }
            Err(error) => {
                tracing::warn!(
                    task = %task, %error,
                    "could not train now; trying again in {} blocks if the window is open",
                    super::RETRY_BLOCKS
                );
                return Ok(());
            }
        };
        let (now, deadline, chain_id) = self.ctx.read(|l| {
            let deadline = l.state().tasks.get(&task).map(|t| t.commit_deadline());
            (l.height(), deadline, l.state().chain_id().to_owned())
        });
        let Some(deadline) = deadline.filter(|d| now.next() <= *d) else {
            let reason = format!(
                "training took {:.1} s and ended at height {now}, after the commit deadline",
                elapsed.as_secs_f64()
            );
            tracing::warn!(task = %task, %reason, "too late to commit; skipping the task");
            self.persist(task, Stage::Abandoned { reason }).await;
            return Ok(());
        };
        let salt = match Salt::random() {
            Ok(salt) => salt,
            Err(error) => {
                tracing::error!(task = %task, %error, "no salt from the OS random source");
                return Ok(());
            }
        };
        let commitment = model_commitment(&chain_id, task, &self.me, &artifact.model_hash, &salt);
        let model = TrainedModel {
            model_hash: artifact.model_hash,
            size_bytes: artifact.size_bytes,
            params: artifact.params,
            salt,
            commitment,
        };
        tracing::info!(
            task = %task, height = %now, commit_deadline = %deadline,
            model = %model.model_hash, params = model.params, bytes = model.size_bytes,
            elapsed_ms = elapsed.as_millis() as u64,
            "trained; persisting the salt and committing"
        );
        if self.persist(task, Stage::Trained(model)).await {
            self.attempts.tried(task, "commit_model", now);
            submit(&self.ctx, task, TxKind::CommitModel { task, commitment }).await?;
        }
        Ok(())
    }
}

impl Trainer {
    /// With a submit folder, whether the model waiting for `task` passes a validator's checks,
    /// checked before joining so a bad file costs nothing; a failing file is renamed
    /// `task-<ID>.safetensors.rejected` (and the reason logged), so it is not tried again. Always
    /// true for a recipe.
    async fn outside_model_passes(&self, task: TaskId) -> bool {
        let ModelSource::Folder(dir) = &self.source else { return true };
        let Some(spec) = self.ctx.read(|l| l.state().tasks.get(&task).map(|t| t.spec.clone()))
        else {
            return false;
        };
        let path = dir.join(outside::model_file_name(task));
        let checked = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || outside::read_checked(&path, &spec)).await
        };
        match checked {
            Ok(Ok(_)) => true,
            Ok(Err(error @ OutsideError::Rejected { .. })) => {
                let mut moved = path.clone().into_os_string();
                moved.push(".rejected");
                let renamed = std::fs::rename(&path, &moved);
                tracing::warn!(
                    task = %task, %error, renamed = renamed.is_ok(),
                    "the model in the submit folder fails a validator's check: not joining"
                );
                false
            }
            Ok(Err(error)) => {
                tracing::warn!(task = %task, %error, "cannot read the model in the submit folder");
                false
            }
            Err(error) => {
                tracing::warn!(task = %task, %error, "checking the submitted model failed");
                false
            }
        }
    }

    /// Persists `task`'s stage (on a blocking thread) and keeps it in memory; logs a failure.
    async fn persist(&mut self, task: TaskId, stage: Stage) -> bool {
        let record = TaskRecord { task, stage };
        let store = self.store.clone();
        let saved = record.clone();
        match tokio::task::spawn_blocking(move || store.save(task, &saved)).await {
            Ok(Ok(())) => {
                self.records.insert(task, record);
                true
            }
            Ok(Err(error)) => {
                tracing::error!(task = %task, %error, "could not persist the task's record");
                false
            }
            Err(error) => {
                tracing::error!(task = %task, %error, "persisting the task's record failed");
                false
            }
        }
    }

    /// Copies our artifact from the withheld store into the blob store the network serves (once
    /// is enough; a restart finds it there). Only ever called after the commit deadline.
    async fn release(&self, task: TaskId, model_hash: ModelHash) -> bool {
        let (withheld, public) = (self.withheld.clone(), self.ctx.network.blob_store().clone());
        let limit = self
            .ctx
            .read(|l| l.state().tasks.get(&task).map_or(0, |t| t.spec.limits.max_artifact_bytes));
        let released = tokio::task::spawn_blocking(move || {
            if public.contains(&model_hash) {
                return Ok(());
            }
            let bytes = withheld.get(&model_hash, limit)?.ok_or_else(|| BlobStoreError::Io {
                action: "finding our withheld artifact",
                path: withheld.path(&model_hash),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            public.put(&bytes).map(|_| ())
        })
        .await;
        match released {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::error!(task = %task, model = %model_hash, %error, "cannot release our artifact");
                false
            }
            Err(error) => {
                tracing::error!(task = %task, model = %model_hash, %error, "releasing our artifact failed");
                false
            }
        }
    }

    /// Announces that this node serves `model_hash`.
    async fn serve(&mut self, task: TaskId, model_hash: ModelHash) {
        match tokio::time::timeout(PROVIDE_TIMEOUT, self.ctx.network.provide_blob(model_hash)).await
        {
            Ok(Ok(())) => {
                tracing::info!(task = %task, model = %model_hash, "serving our artifact");
                self.served.insert(task);
            }
            Ok(Err(error)) => {
                tracing::warn!(task = %task, model = %model_hash, %error, "could not provide our artifact")
            }
            Err(_) => tracing::warn!(
                task = %task, model = %model_hash,
                "publishing the provider record timed out; trying again"
            ),
        }
    }
}

/// Takes the model for `task` from the submit folder `dir` on a blocking thread
/// ([`take_outside_model`]).
async fn take_from_folder(
    ctx: NodeContext,
    dir: PathBuf,
    withheld: BlobStore,
    task: TaskId,
) -> Result<Artifact, TrainTaskError> {
    let spec = ctx
        .read(|l| l.state().tasks.get(&task).map(|t| t.spec.clone()))
        .ok_or(TrainTaskError::UnknownTask(task))?;
    tokio::task::spawn_blocking(move || take_outside_model(&dir, task, &spec, &withheld))
        .await
        .map_err(joined("taking the submitted model"))?
}

/// Fetches the task's training file (and base model), trains with `recipe` on a blocking thread
/// and stores the artifact.
async fn fetch_and_train(
    ctx: NodeContext,
    mut recipe: Recipe,
    withheld: BlobStore,
    task: TaskId,
) -> Result<Artifact, TrainTaskError> {
    let (spec, creator) = ctx
        .read(|l| l.state().tasks.get(&task).map(|t| (t.spec.clone(), t.creator)))
        .ok_or(TrainTaskError::UnknownTask(task))?;
    let data = fetch_bytes(
        &ctx,
        spec.dataset.train_sha256,
        trainer::data::DATA_BYTES_MAX,
        Some(creator),
        DATA_FETCH_TIMEOUT,
    )
    .await?;
    if let (Some(base), Some(recipe_base)) = (&spec.base_model, &mut recipe.base) {
        // Fine-tune from the task's base model (the champion), fetched by hash from the
        // validators that scored it.
        let limit = spec.limits.max_artifact_bytes;
        fetch_bytes(&ctx, base.model_hash, limit, None, DATA_FETCH_TIMEOUT).await?;
        tracing::info!(task = %task, base = %base.model_hash, "fine-tuning from the task's base model");
        recipe_base.path = ctx.network.blob_store().path(&base.model_hash);
    }
    let started = std::time::Instant::now();
    let artifact =
        tokio::task::spawn_blocking(move || train_artifact(task, &spec, &data, &recipe, &withheld))
            .await
            .map_err(joined("training"))?;
    Metrics::add(&ctx.metrics.training_ms, started.elapsed().as_millis() as u64);
    artifact
}
