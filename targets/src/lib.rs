//! rivetctl's adapters: the Docker Engine (bollard), rendered artifacts (compose files,
//! Kubernetes manifests, Proxmox LXC parameters, systemd units), and later Kubernetes,
//! Proxmox and SSH-reached hosts.
//!
//! Each adapter turns the orchestrator's plans into real calls or files; none makes a
//! decision the plan did not make.

pub mod build;
pub mod cancel;
pub mod docker;
pub mod factory;
pub mod gate;
pub mod http;
pub mod kubernetes;
pub mod probe;
pub mod registry;
pub mod render;
pub mod ssh;
