//! Translating the orchestrator's container, network and volume specs into Engine API
//! requests. Nothing is decided here: every value comes from the spec.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType, NetworkCreateRequest,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use orchestrator::docker::{ContainerSpec, MountSource, NetworkSpec, Restart, VolumeSpec, labels};
use orchestrator::resource::{Fields, encode_record, spec_hash};

const MS: i64 = 1_000_000;

/// The labels an object carries: ownership plus the record of its spec.
pub fn labels_with_record(
    base: &std::collections::BTreeMap<String, String>,
    fields: &Fields,
) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = base.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    out.insert(labels::SPEC_HASH.to_string(), spec_hash(fields));
    out.insert(labels::SPEC.to_string(), encode_record(fields));
    out
}

pub fn network_request(spec: &NetworkSpec, fields: &Fields) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some("bridge".into()),
        internal: Some(spec.internal),
        attachable: Some(false),
        labels: Some(labels_with_record(&spec.labels, fields)),
        ..Default::default()
    }
}

pub fn volume_request(spec: &VolumeSpec, fields: &Fields) -> VolumeCreateRequest {
    VolumeCreateRequest {
        name: Some(spec.name.clone()),
        driver: Some("local".into()),
        labels: Some(labels_with_record(&spec.labels, fields)),
        ..Default::default()
    }
}

/// The create request of a container. The first network is joined at creation; the others
/// are connected before start (API 1.41 takes one network in a create request).
pub fn container_request(spec: &ContainerSpec, fields: &Fields) -> ContainerCreateBody {
    let env: Vec<String> = spec.environment().map(|(k, v)| format!("{k}={}", v.value)).collect();
    let mounts = spec
        .mounts
        .iter()
        .map(|m| {
            let (typ, source) = match &m.source {
                MountSource::Volume(name) => (MountType::VOLUME, name.clone()),
                MountSource::Bind(path) => (MountType::BIND, path.clone()),
            };
            Mount {
                target: Some(m.target.clone()),
                source: Some(source),
                typ: Some(typ),
                read_only: Some(m.read_only),
                ..Default::default()
            }
        })
        .collect();
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
        .ports
        .iter()
        .map(|p| {
            (
                format!("{}/tcp", p.container_port),
                Some(vec![PortBinding { host_ip: Some(p.host_ip.clone()), host_port: Some(p.host_port.to_string()) }]),
            )
        })
        .collect();
    let exposed: Vec<String> = spec.ports.iter().map(|p| format!("{}/tcp", p.container_port)).collect();
    let healthcheck = spec.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: Some(h.interval_ms as i64 * MS),
        timeout: Some(h.timeout_ms as i64 * MS),
        retries: Some(i64::from(h.retries)),
        start_period: Some(h.start_period_ms as i64 * MS),
        start_interval: None,
    });
    let mut security_opt = Vec::new();
    if spec.no_new_privileges {
        security_opt.push("no-new-privileges:true".to_string());
    }
    let first_network = spec.networks.first().map(|(name, aliases)| {
        (name.clone(), EndpointSettings { aliases: Some(aliases.clone()), ..Default::default() })
    });
    ContainerCreateBody {
        hostname: Some(spec.hostname.clone()),
        user: spec.user.clone(),
        env: Some(env),
        image: Some(spec.image.clone()),
        labels: Some(labels_with_record(&spec.labels, fields)),
        healthcheck,
        stop_timeout: Some(spec.stop_grace_secs as i64),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            memory: Some(spec.limits.memory as i64),
            nano_cpus: Some((spec.limits.cpus * 1e9) as i64),
            pids_limit: Some(i64::from(spec.limits.pids)),
            cap_drop: Some(spec.cap_drop.clone()),
            security_opt: Some(security_opt),
            restart_policy: Some(RestartPolicy {
                name: Some(match spec.restart {
                    Restart::No => RestartPolicyNameEnum::NO,
                    Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
                }),
                maximum_retry_count: None,
            }),
            mounts: Some(mounts),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            network_mode: first_network.as_ref().map(|(name, _)| name.clone()),
            ..Default::default()
        }),
        networking_config: first_network
            .map(|(name, endpoint)| NetworkingConfig { endpoints_config: Some(HashMap::from([(name, endpoint)])) }),
        ..Default::default()
    }
}
