//! Committed blocks from peers, by gossip or sync: through the engine when it is at their
//! height, else straight into the ledger.

use consensus::bft::{Action, Event};
use consensus::chain::LedgerError;

use super::Driver;
use crate::network::CommittedBlock;
use crate::runtime::error::DriverError;

impl Driver {
    /// Takes a committed block from a peer (gossip or sync): through the engine when it is at
    /// that height, else straight into the ledger, restarting the engine at the new height.
    /// Returns whether it was committed, or why the ledger refused it.
    pub(super) async fn catch_up(
        &mut self,
        committed: CommittedBlock,
    ) -> Result<bool, CatchUpError> {
        let height = committed.height();
        if self.ledger_height().next() != height {
            return Ok(false);
        }
        self.catching_up = true;
        let result = self.catch_up_inner(committed).await;
        self.catching_up = false;
        result
    }

    async fn catch_up_inner(&mut self, committed: CommittedBlock) -> Result<bool, CatchUpError> {
        let height = committed.height();
        if let Some(engine) = self.engine.as_mut()
            && engine.height() == height
        {
            let actions = engine
                .handle(Event::CommitReceived {
                    block: committed.block.clone(),
                    certificate: committed.commit.clone(),
                })
                .map_err(DriverError::from)?;
            let decided = actions.iter().any(|a| matches!(a, Action::Commit { .. }));
            self.execute(actions).await?;
            if decided {
                return Ok(true);
            }
        }
        let applied =
            self.try_commit(&committed.block, &committed.commit).map_err(|e| match e {
                LedgerError::Block(_) | LedgerError::Certificate(_) => CatchUpError::Refused(e),
                other => CatchUpError::Fatal(other.into()),
            })?;
        if !applied {
            return Ok(false);
        }
        let actions = self.restart_engine()?;
        self.execute(actions).await?;
        Ok(true)
    }
}

/// Why a block from a peer was not committed.
#[derive(Debug)]
pub(super) enum CatchUpError {
    /// The ledger refused it (bad certificate, invalid block): the peer's fault.
    Refused(LedgerError),
    /// The node failed.
    Fatal(DriverError),
}

impl From<DriverError> for CatchUpError {
    fn from(error: DriverError) -> Self {
        CatchUpError::Fatal(error)
    }
}
