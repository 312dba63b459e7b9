//! `GET /proof/{table}/{key}?height=H`: a state record, or its absence, with its Merkle proof
//! against the state root of the committed header at `H` and that header's commit certificate:
//! everything a light client needs besides the validator set it trusts.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use consensus::chain::{ProveError, StateProofBundle, record_json};
use consensus::state::parse_state_key;
use consensus::storage::Tree;
use consensus::types::Height;
use serde::{Deserialize, Serialize};

use super::read::{query, store_error};
use super::{Api, ApiError, ApiResult};

/// `?height=` of a proof: the committed header to prove against (default: the tip).
#[derive(Debug, Deserialize)]
pub struct ProofQuery {
    /// A committed height.
    pub height: Option<u64>,
}

/// The answer: the bundle a light client verifies, and the record decoded for people (the
/// verifier ignores it and decodes the proven bytes itself).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProofView {
    /// The proof bundle.
    #[serde(flatten)]
    pub bundle: StateProofBundle,
    /// The record as JSON, or `null` when absent.
    pub record: Option<serde_json::Value>,
}

pub(super) async fn proof(
    State(api): State<Api>,
    Path((table, key)): Path<(String, String)>,
    q: Result<Query<ProofQuery>, QueryRejection>,
) -> ApiResult<Json<ProofView>> {
    let q = query(q)?;
    let tree = Tree::state_tree(&table).ok_or_else(|| {
        let names: Vec<&str> = Tree::STATE.iter().map(|t| t.name()).collect();
        ApiError::bad_request(format!(
            "no state table {:?}; tables are {}",
            table.chars().take(40).collect::<String>(),
            names.join(", ")
        ))
    })?;
    let key = parse_state_key(tree, &key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let view = api
        .read(move |l| {
            let height = q.height.map_or(l.height(), Height);
            let bundle = l.prove(tree.name(), &key, height).map_err(|e| match e {
                ProveError::Key(_) | ProveError::UnknownTable(_) => {
                    ApiError::bad_request(e.to_string())
                }
                ProveError::NotCommitted { .. } | ProveError::TooOld { .. } => {
                    ApiError::not_found(e.to_string())
                }
                ProveError::Ledger(e) => store_error(e),
            })?;
            let record = bundle
                .value
                .as_deref()
                .map(|v| record_json(tree, v))
                .transpose()
                .map_err(store_error)?;
            Ok(ProofView { bundle, record })
        })
        .await?;
    Ok(Json(view))
}
