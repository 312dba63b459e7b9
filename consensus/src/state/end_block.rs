//! The end of a block: tasks that fall due finalize (and are later pruned), and the validator
//! set two heights ahead is recorded.

use crate::finalize::{
    FinalizeInput, ReferenceInput, RevealInput, TrainerInput, ValidatorInput, finalize,
};
use crate::types::{AccountId, Amount, Height, TaskId};
use crate::validators::{ValidatorInfo, ValidatorSet};
use crate::verdict::Subject;

use super::{ChampionRecord, Due, State};

impl State {
    /// End of block `height`: finalizes every task that is due (cancelled at its join deadline
    /// without enough attestations, ended at its key deadline without the key, or at its score
    /// deadline), and records the
    /// validator set that will sign `height + 2` (so a slash changes voting power from there on).
    pub fn end_block(&mut self, height: Height) {
        // Only this height's entries (and, defensively, any earlier one left behind): the cost
        // is what falls due, never the number of tasks.
        let due: Vec<((Height, TaskId), Due)> = self
            .deadlines
            .range(..=(height, TaskId(u64::MAX)))
            .map(|(key, due)| (*key, *due))
            .collect();
        for (key, due) in due {
            self.deadlines.remove(&key);
            let id = key.1;
            match due {
                Due::Finalize => {
                    // A task already finalized has nothing left to fall due.
                    if self.tasks.get(&id).is_none_or(|t| t.report.is_some()) {
                        continue;
                    }
                    // At the join deadline the commit window may already have nobody left.
                    self.tasks.modify(&id, |t| t.close_exhausted_windows(height));
                    let Some(task) = self.tasks.get(&id) else { continue };
                    let Some(due_at) = task.due_at(height) else { continue };
                    if due_at > height {
                        self.schedule_due_check(id, height.next());
                        continue;
                    }
                    self.finalize_task(id);
                    match self.meta.params.task_retention {
                        0 => self.prune_task(id),
                        retention => {
                            self.deadlines.insert((height.plus(retention), id), Due::Prune);
                        }
                    }
                }
                Due::Prune => self.prune_task(id),
            }
        }
        let set = ValidatorSet::new(
            self.validators
                .iter()
                .filter(|(_, v)| v.stake.0 > 0)
                .map(|(a, v)| ValidatorInfo { account: *a, power: v.stake.0, name: v.name.clone() })
                .collect(),
        );
        self.validator_sets.insert(height.plus(2), set);
        // Keep the set of `height` (to check the next block's last commit) and the two after it.
        let stale: Vec<Height> = self.validator_sets.range(..height).map(|(h, _)| *h).collect();
        for h in stale {
            self.validator_sets.remove(&h);
        }
    }

    fn finalize_task(&mut self, id: TaskId) {
        let task = self.tasks.get(&id).expect("due tasks exist").clone();
        let range = (id, AccountId([0; 32]))..=(id, AccountId([0xff; 32]));
        let trainers: Vec<TrainerInput> = self
            .submissions
            .range(range.clone())
            .map(|((_, account), s)| TrainerInput {
                account: *account,
                bond: s.bond,
                entry_fee: s.entry_fee,
                committed_at: s.committed_at,
                reveal: s
                    .reveal
                    .map(|r| RevealInput { model_hash: r.model_hash, params: r.params }),
            })
            .collect();
        let validators: Vec<ValidatorInput<'_>> = task
            .stakes
            .iter()
            .map(|(account, stake)| ValidatorInput {
                account: *account,
                stake: *stake,
                verdicts: self.verdicts.get(&(id, *account)).and_then(|r| r.verdicts.as_deref()),
            })
            .collect();
        let references: Vec<ReferenceInput> = task
            .base
            .iter()
            .map(|b| (Subject::BaseModel, b))
            .chain(task.champions.iter().map(|c| (Subject::Champion(c.model_hash), c)))
            .map(|(subject, r)| ReferenceInput {
                subject,
                params: r.params,
                recorded_ppm: r.recorded_ppm,
            })
            .collect();
        let report = finalize(&FinalizeInput {
            escrow: task.reward,
            efficiency: &task.spec.efficiency,
            references: &references,
            trainers: &trainers,
            validators: &validators,
            trainer_share_ppm: self.meta.params.trainer_share_ppm,
            agreement_tolerance_ppm: self.meta.params.agreement_tolerance_ppm,
            min_improvement_ppm: task.spec.min_improvement_ppm,
            attested_stake: task.attested_stake,
            key_revealed_at: task.key.map(|(_, at)| at),
            cancellation_fee_ppm: self.meta.params.cancellation_fee_ppm,
        });
        for t in &report.trainers {
            self.credit(t.account, Amount(t.payout.0 + t.bond_refund.0 + t.entry_fee_refund.0));
        }
        for v in &report.validators {
            self.credit(v.account, v.payout);
        }
        self.credit(task.creator, report.creator_refund);
        self.burn(report.burned);
        if let Some(c) = &report.champion {
            // A model that was champion before (a byte-identical copy winning again) is indexed
            // under its latest task only, as the champions table records it.
            if let Some(old) = self.champions.get(&c.model_hash) {
                let old_key = (old.train_sha256, old.task);
                self.champion_index.remove(&old_key);
            }
            self.champion_index.insert((task.spec.dataset.train_sha256, id), c.model_hash);
            self.champions.insert(
                c.model_hash,
                ChampionRecord {
                    task: id,
                    train_sha256: task.spec.dataset.train_sha256,
                    trainer: c.trainer,
                    params: c.params,
                    effective_ppm: c.effective_ppm,
                },
            );
        }
        self.tasks.modify(&id, |t| t.report = Some(report));
    }

    /// Drops the bulky data of a task whose retention ended (`task_retention` heights after its
    /// finalization): the spec's preprocessing vectors and the validators' verdict records. The
    /// report, submissions, commitments and champion stay; the blocks keep everything for
    /// replay.
    fn prune_task(&mut self, id: TaskId) {
        self.tasks.modify(&id, |t| match &mut t.spec.preprocessing {
            crate::task::Preprocessing::Standardize { mean, std } => {
                *mean = Vec::new();
                *std = Vec::new();
            }
            crate::task::Preprocessing::Vocabulary { chars } => *chars = String::new(),
        });
        let scored: Vec<(TaskId, AccountId)> = self
            .verdicts
            .range((id, AccountId([0; 32]))..=(id, AccountId([0xff; 32])))
            .map(|(k, _)| *k)
            .collect();
        for key in scored {
            self.verdicts.remove(&key);
        }
    }
}
