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
pub mod proxmox;
pub mod registry;
pub mod render;
pub mod ssh;

/// An error with its causes, `: `-joined (`cannot speak TLS …: … : invalid peer
/// certificate: UnknownIssuer`): a hint is only useful next to what actually went wrong. A
/// cause whose text already ends the message is not repeated.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
