//! Test support shared by the workspace's tests (never part of the `rivetctl` binary).

pub mod apiserver;
pub mod dockerd;
pub mod kubelet;
pub mod proxmox;
pub mod registry;
