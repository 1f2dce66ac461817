//! The Proxmox VE target (docs/proxmox.md): typed requests ([`api`]), the HTTPS client with
//! its retries and tasks ([`client`]), API tokens, task ids and outcomes ([`task`]), how the
//! API's certificate is trusted ([`tls`]); the deployment's containers by their tags
//! ([`containers`]); the target behind the port ([`target`], [`port`]) with its state
//! documents ([`store`]) and `doctor` checks ([`doctor`]); and what runs inside the
//! containers, over SSH ([`release`], [`provision`]: built and tested, not yet called by
//! `infra up` or the rollout).

pub mod agents;
pub mod api;
pub mod client;
pub mod containers;
pub mod datahub;
pub mod doctor;
mod hub;
pub mod port;
pub mod provision;
pub mod release;
pub mod store;
pub mod target;
pub mod task;
pub mod tls;
