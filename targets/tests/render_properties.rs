//! Rendering is deterministic: the same generated config renders byte-identical compose
//! files and Kubernetes manifests every time.

mod support;

#[path = "../../orchestrator/tests/support/generate.rs"]
mod generate;

use generate::{render, shape};
use orchestrator::docker;
use proptest::prelude::*;
use rivet_targets::render::{compose, kubernetes};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn same_config_same_bytes(shape in shape()) {
        let yaml = render(&shape).replace("postgres: false", "postgres: true");
        let (fleet_a, fleet_b) = (support::fleet(&yaml), support::fleet(&yaml));
        let docker_a = compose::artifacts(&fleet_a, &docker::resources(&fleet_a), "rivet.config.yaml", &yaml).unwrap();
        let docker_b = compose::artifacts(&fleet_b, &docker::resources(&fleet_b), "rivet.config.yaml", &yaml).unwrap();
        prop_assert_eq!(docker_a, docker_b);
        if shape.nodes == 1 {
            let k8s = yaml.replace("target: docker", "target: kubernetes");
            let a = kubernetes::artifacts(&support::fleet(&k8s)).unwrap();
            let b = kubernetes::artifacts(&support::fleet(&k8s)).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
