//! The Proxmox VE API (issue 10, being built): API tokens, task ids and outcomes ([`task`]),
//! and how the API's TLS certificate is trusted ([`tls`]). The client, the target behind
//! the port and provisioning over SSH follow.

pub mod task;
pub mod tls;
