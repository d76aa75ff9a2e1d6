//! What a tool requests against what it is granted: the table `toolhost inspect --policy`
//! prints, and the list the [`super::OnUngranted`] switch acts on. Each capability makes its
//! own rows; this is the order they come in.

use super::ToolGrants;
use crate::capability::{env, filesystem, model, network, state, workspace};
use crate::contract::{Capabilities, CapabilityRow};

/// Compares `requested` (a tool's descriptor) with `grants`, capability by capability:
/// every request, then every grant nobody requested.
pub fn compare(requested: &Capabilities, grants: &ToolGrants) -> Vec<CapabilityRow> {
    let mut rows = Vec::new();
    state::compare(&requested.state, &grants.state, &mut rows);
    model::compare(&requested.models, &grants.models, &mut rows);
    filesystem::compare(&requested.filesystem, &grants.filesystem, grants.workspace.as_ref(), &mut rows);
    workspace::compare(&requested.filesystem, grants.workspace.as_ref(), &mut rows);
    network::compare(&requested.network, &grants.network, &mut rows);
    env::compare(&requested.env, &grants.env, &mut rows);
    rows
}
