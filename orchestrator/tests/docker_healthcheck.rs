//! The agents' container health check: exec form, the configured path one argument of
//! `wget`, never text for a shell.

mod support;

use orchestrator::docker::DockerObject;
use orchestrator::resource::Component;
use support::docker_resources;

const CONFIG: &str = r#"
deployment:
  target: docker
  health:
    port: 3200
    live_path: /v1/live:probe@x,y=1
agents:
  opus: { provider: anthropic }
"#;

#[test]
fn agent_health_check_is_exec_form_with_the_path_as_one_argument() {
    let resources = docker_resources(CONFIG);
    let agent = resources.iter().find(|r| matches!(&r.component, Component::Agent(id) if id == "opus")).unwrap();
    let DockerObject::Container(spec) = &agent.payload else { panic!("the agent is a container") };
    let test = &spec.healthcheck.as_ref().expect("agents have a health check").test;
    assert_eq!(test, &["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3200/v1/live:probe@x,y=1"]);
    assert!(resources.iter().all(|r| match &r.payload {
        DockerObject::Container(spec) => spec.healthcheck.as_ref().is_none_or(|c| c.test[0] != "CMD-SHELL"),
        _ => true,
    }));
}
