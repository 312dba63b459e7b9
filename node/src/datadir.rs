//! The layout of a node's data directory.
//!
//! ```text
//! DATA_DIR/
//!   node_key.json   the node's ed25519 key (mode 0600)
//!   genesis.json    the chain's genesis document
//!   chain/          the sled store: ledger state, blocks, commit certificates, tx index, WAL
//!   blobs/          content-addressed files (model artifacts, training data) by sha256
//! ```

use std::path::{Path, PathBuf};

/// A node's data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The genesis document.
    pub fn genesis(&self) -> PathBuf {
        self.root.join("genesis.json")
    }

    /// The ledger's sled store.
    pub fn chain(&self) -> PathBuf {
        self.root.join("chain")
    }

    /// The blob store.
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
}
