//! The Proxmox VE API (issue 10, being built): typed requests ([`api`]), the HTTPS client
//! with its retries and tasks ([`client`]), API tokens, task ids and outcomes ([`task`]), and
//! how the API's TLS certificate is trusted ([`tls`]). The target behind the port and
//! provisioning over SSH follow.

pub mod api;
pub mod client;
pub mod containers;
pub mod doctor;
pub mod port;
pub mod provision;
pub mod release;
pub mod store;
pub mod target;
pub mod task;
pub mod tls;
