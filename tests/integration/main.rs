//! Integration tests: one binary (one link on 2 cores), a module per concern.

mod agent;
mod agent_local;
mod agent_service;
mod backends;
mod cache;
mod cli;
mod crash;
mod durable;
mod hostile;
mod isolation;
mod leases;
mod load_errors;
mod mcp;
mod mcp_multihost;
mod memory_store;
mod model_faults;
mod model_local;
mod multihost;
mod policy;
mod policy_fuzz;
mod provider_fuzz;
mod snapshots;
mod state;
mod support;
mod tools;
