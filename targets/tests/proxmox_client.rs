//! The Proxmox VE API client (`targets::proxmox::client`) against the fake API server of the
//! testkit, which refuses any request the official schema does not allow: trust by pinned
//! fingerprint, tasks and their logs, verification errors naming parameters, what is
//! retried (lock timeouts, 503s) and what is not (a write that got no answer), failed and
//! warning tasks, and an expired token.

use std::collections::BTreeMap;
use std::time::Duration;

use rivet_targets::proxmox::api;
use rivet_targets::proxmox::client::{ApiError, Client, Deadlines};
use rivet_targets::proxmox::task::Token;
use rivet_targets::proxmox::tls::{Trust, parse_fingerprint};
use testkit::proxmox::{FakePve, Options};

fn deadlines() -> Deadlines {
    Deadlines {
        retry: Duration::from_secs(10),
        task: Duration::from_secs(30),
        pause: Duration::from_millis(20),
        connect: Duration::from_secs(5),
    }
}

async fn fake() -> FakePve {
    let options = Options { task_duration: Duration::from_millis(50), ..Options::default() };
    FakePve::start(options).await.unwrap_or_else(|e| panic!("the fake PVE API starts: {e:#}"))
}

fn client(pve: &FakePve) -> Client {
    let pin = parse_fingerprint(&pve.fingerprint()).unwrap();
    let token = Token::new(pve.token_id(), pve.token_secret()).unwrap();
    Client::new(&pve.url(), &Trust::Fingerprint(pin), token, deadlines()).unwrap()
}

/// Creation parameters as the lowering renders them for one container.
fn params(vmid: u32, hostname: &str) -> BTreeMap<String, String> {
    [
        ("vmid", vmid.to_string()),
        ("hostname", hostname.to_string()),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".to_string()),
        ("storage", "local-lvm".to_string()),
        ("rootfs", "local-lvm:8".to_string()),
        ("memory", "1024".to_string()),
        ("swap", "512".to_string()),
        ("cores", "2".to_string()),
        ("unprivileged", "1".to_string()),
        ("features", "nesting=1".to_string()),
        ("net0", "name=eth0,bridge=vmbr0,ip=10.4.0.10/24,gw=10.4.0.1".to_string()),
        ("tags", "rivetctl;rivet-d-test".to_string()),
        (
            "ssh-public-keys",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDBz8k0yFyVdKlnxBf4nT1vCEqg3b8hHhT0xlQGfTtYk ops@x\n".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_created_configured_started_and_destroyed_through_tasks() {
    let pve = fake().await;
    let api_client = client(&pve);
    let version: api::VersionInfo = api_client.call(&api::version()).await.unwrap();
    assert!(version.version.starts_with('8'), "{version:?}");
    let nodes: Vec<api::NodeInfo> = api_client.call(&api::nodes()).await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), ["pve1", "pve2"]);
    let next: String = api_client.call(&api::next_id(None)).await.unwrap();
    assert_eq!(next, "100");

    let created = api_client.run_task(&api::create("pve1", &params(310, "rivet-pve1")), "creating rivet-pve1").await;
    let created = created.unwrap_or_else(|e| panic!("{e}"));
    assert!(created.upid.starts_with("UPID:pve1:") && created.upid.contains(":vzcreate:310:"), "{}", created.upid);
    let log = api_client.task_log("pve1", &created.upid, 100).await.unwrap();
    assert_eq!(log.iter().filter(|l| l.starts_with("done: SHA256:")).count(), 2, "{log:#?}");

    let guests: Vec<api::Guest> = api_client.call(&api::guests()).await.unwrap();
    let guest = guests.iter().find(|g| g.vmid == 310).expect("listed");
    assert_eq!((guest.node.as_str(), guest.kind.as_str()), ("pve1", "lxc"));
    assert_eq!(guest.tag_list(), ["rivet-d-test", "rivetctl"]);

    let config = api::config_text(&api_client.call_value(&api::config("pve1", 310)).await.unwrap());
    assert_eq!(config["memory"], "1024");
    assert!(config["rootfs"].starts_with("local-lvm:vm-310-disk-0,size=8G"), "{config:?}");
    let set = BTreeMap::from([("memory".to_string(), "2048".to_string())]);
    let digest = config["digest"].clone();
    let _: serde_json::Value = api_client.call(&api::set_config("pve1", 310, &set, &[], Some(&digest))).await.unwrap();
    // The same digest again: the config changed since, so the API refuses.
    let stale = api_client.call_value(&api::set_config("pve1", 310, &set, &[], Some(&digest))).await.unwrap_err();
    assert!(
        matches!(&stale, ApiError::Refused { message, .. } if message.contains("file changed by other user")),
        "{stale}"
    );

    api_client.run_task(&api::resize("pve1", 310, "rootfs", 12), "growing the root disk").await.unwrap();
    let config = api::config_text(&api_client.call_value(&api::config("pve1", 310)).await.unwrap());
    assert!(config["rootfs"].contains("size=12G"), "{config:?}");

    api_client.run_task(&api::start("pve1", 310), "starting").await.unwrap();
    let status: api::CurrentStatus = api_client.call(&api::status("pve1", 310)).await.unwrap();
    assert_eq!(status.status, "running");
    api_client.run_task(&api::shutdown("pve1", 310, 10), "shutting down").await.unwrap();
    api_client.run_task(&api::destroy("pve1", 310), "destroying").await.unwrap();
    assert!(pve.container(310).is_none());
    let (calls, writes) = api_client.counts();
    assert_eq!(writes, pve.requests().iter().filter(|r| r.is_write()).count());
    assert_eq!(calls, pve.requests().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_errors_name_the_parameter_and_nothing_is_retried() {
    let pve = fake().await;
    let api_client = client(&pve);
    let mut bad = params(311, "rivet-bad");
    bad.insert("net0".into(), "name=eth0,bridge=vmbr0,ip=10.4.0.11".into());
    let err = api_client.run_task(&api::create("pve1", &bad), "creating").await.unwrap_err();
    let ApiError::Refused { status, errors, .. } = &err else { panic!("{err}") };
    assert_eq!(*status, 400);
    assert!(errors.contains_key("net0"), "{errors:?}");
    assert!(err.to_string().contains("net0"), "{err}");
    assert_eq!(pve.requests().len(), 1, "a 400 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeouts_and_503s_are_retried_and_a_write_without_answer_is_not() {
    let pve = fake().await;
    let api_client = client(&pve);
    api_client.run_task(&api::create("pve1", &params(312, "rivet-lock")), "creating").await.unwrap();

    pve.lock_timeout_next(2);
    let set = BTreeMap::from([("cores".to_string(), "3".to_string())]);
    let before = pve.requests().len();
    let _: serde_json::Value = api_client.call(&api::set_config("pve1", 312, &set, &[], None)).await.unwrap();
    let tries: Vec<u16> = pve.requests()[before..].iter().map(|r| r.status).collect();
    assert_eq!(tries, [500, 500, 200]);
    assert_eq!(pve.container(312).unwrap().config["cores"], "3");

    pve.server_error_next(1);
    let _: Vec<api::NodeInfo> = api_client.call(&api::nodes()).await.unwrap();

    pve.complete_but_drop_next_create();
    let err = api_client.run_task(&api::create("pve2", &params(313, "rivet-drop")), "creating").await.unwrap_err();
    assert!(matches!(err, ApiError::NoAnswer { .. }), "{err}");
    let creates = pve.requests().iter().filter(|r| r.method == "POST" && r.path == "/nodes/pve2/lxc").count();
    assert_eq!(creates, 1, "a create without answer is not sent again");
    let guests: Vec<api::Guest> = api_client.call(&api::guests()).await.unwrap();
    assert!(guests.iter().any(|g| g.vmid == 313), "it did happen, and is found by listing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_shows_its_log_and_warnings_are_kept() {
    let pve = fake().await;
    let api_client = client(&pve);
    api_client.run_task(&api::create("pve1", &params(314, "rivet-fail")), "creating").await.unwrap();
    pve.fail_next_task("vzstart", "startup for container '314' failed");
    let err = api_client.run_task(&api::start("pve1", 314), "starting rivet-fail").await.unwrap_err();
    let ApiError::Task { status, log, .. } = &err else { panic!("{err}") };
    assert_eq!(status, "startup for container '314' failed");
    assert_eq!(log.last().map(String::as_str), Some("TASK ERROR: startup for container '314' failed"));
    assert!(err.to_string().contains("starting rivet-fail failed") && err.to_string().contains("--- task log ---"));

    pve.warn_next_task("vzstart", "systemd 252 detected, nesting recommended");
    let done = api_client.run_task(&api::start("pve1", 314), "starting").await.unwrap();
    assert!(done.warnings.iter().any(|w| w.contains("nesting recommended")), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_and_a_wrong_pin_are_clear_errors() {
    let pve = fake().await;
    let api_client = client(&pve);
    pve.expire_token();
    let err = api_client.call_value(&api::version()).await.unwrap_err();
    let said = format!("{err} {:?}", err.hint());
    assert!(said.contains(&format!("the Proxmox VE API token {} has expired", pve.token_id())), "{said}");
    assert!(!said.contains(pve.token_secret()), "{said}");

    let wrong = Token::new(pve.token_id(), "not-the-secret").unwrap();
    let pin = parse_fingerprint(&pve.fingerprint()).unwrap();
    let other = Client::new(&pve.url(), &Trust::Fingerprint(pin), wrong, deadlines()).unwrap();
    let err = other.call_value(&api::version()).await.unwrap_err();
    assert!(matches!(err, ApiError::Token { .. }), "{err}");

    let pinned_elsewhere = Client::new(
        &pve.url(),
        &Trust::Fingerprint([7; 32]),
        Token::new(pve.token_id(), pve.token_secret()).unwrap(),
        deadlines(),
    )
    .unwrap();
    let err = pinned_elsewhere.call_value(&api::version()).await.unwrap_err();
    assert!(err.to_string().contains(&format!("has fingerprint {}", pve.fingerprint())), "{err}");
    assert!(pve.requests().iter().all(|r| r.path == "/version"));
}

/// `containers::create`: a create whose answer is lost is found again by its tags once its
/// task has finished, and not sent a second time; the deployment's containers are found by
/// their tags, and destroy takes the container down first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_is_lost_is_found_again_by_its_tags() {
    use rivet_targets::proxmox::containers::{self, Created};

    let pve = fake().await;
    let api_client = client(&pve);
    let mut wanted = params(320, "rivet-agents-pve2");
    wanted.insert("tags".into(), containers::tags("home", "agents-pve2", "0123abcd"));
    pve.complete_but_drop_next_create();
    let created = containers::create(&api_client, "home", "agents-pve2", "pve2", &wanted).await.unwrap();
    assert_eq!(created, Created::FoundAgain { vmid: 320 });
    let creates = pve.requests().iter().filter(|r| r.method == "POST" && r.path == "/nodes/pve2/lxc").count();
    assert_eq!(creates, 1);
    assert!(!pve.container(320).unwrap().config.contains_key("lock"), "found once its create task ended");

    let (found, _) = containers::find(&api_client, "home").await.unwrap();
    assert_eq!(found["agents-pve2"].vmid, 320);
    assert_eq!(found["agents-pve2"].hash.as_deref(), Some("0123abcd"));
    assert!(containers::find(&api_client, "elsewhere").await.unwrap().0.is_empty());

    assert!(containers::ensure_running(&api_client, "pve2", 320, "agents-pve2").await.unwrap());
    assert!(!containers::ensure_running(&api_client, "pve2", 320, "agents-pve2").await.unwrap());
    containers::destroy(&api_client, "pve2", 320, "agents-pve2", 10).await.unwrap();
    assert!(pve.container(320).is_none());
}
