//! The fake Proxmox VE API, through real HTTPS requests: authentication, the schema's
//! refusals, containers created, configured, started, stopped and destroyed through tasks,
//! and the faults it injects. A small hyper client trusts the fake's own certificate.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rivet_testkit::proxmox::schema::{Refused, Schema};
use rivet_testkit::proxmox::{Container, FakePve, Options, Runtime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use rivet_testkit::proxmox::raw::{Answer, Auth, send};

async fn call(pve: &FakePve, method: &str, path: &str, params: &[(&str, &str)]) -> Answer {
    send(pve, method, path, params, Auth::Token).await.unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

/// The UPID of a successful task call.
async fn start_task(pve: &FakePve, method: &str, path: &str, params: &[(&str, &str)]) -> String {
    let answer = call(pve, method, path, params).await;
    assert_eq!(answer.status, 200, "{method} {path}: {answer:?}");
    answer.body["data"].as_str().unwrap_or_else(|| panic!("no UPID: {answer:?}")).to_string()
}

/// Polls the task until it has stopped; its status and its log lines.
async fn wait(pve: &FakePve, node: &str, upid: &str) -> (Value, Vec<String>) {
    let encoded: String = form_urlencoded::byte_serialize(upid.as_bytes()).collect();
    for _ in 0..400 {
        let status = call(pve, "GET", &format!("/nodes/{node}/tasks/{encoded}/status"), &[]).await;
        assert_eq!(status.status, 200, "{status:?}");
        if status.body["data"]["status"] == "stopped" {
            let log = call(pve, "GET", &format!("/nodes/{node}/tasks/{encoded}/log"), &[("limit", "500")]).await;
            let lines = log.body["data"].as_array().unwrap().iter().map(|l| l["t"].as_str().unwrap().to_string());
            return (status.body["data"].clone(), lines.collect());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("task {upid} did not stop");
}

async fn fast(runtime: Option<Arc<dyn Runtime>>) -> FakePve {
    let options = Options { task_duration: Duration::from_millis(50), runtime, ..Options::default() };
    FakePve::start(options).await.expect("the fake starts")
}

/// A real public key (PVE checks them with `ssh-keygen -l`).
fn public_key(dir: &std::path::Path) -> String {
    rivet_testkit::proxmox::raw::keypair(dir, "id_ed25519").1
}

fn keygen_fingerprint(public: &std::path::Path) -> String {
    let out = std::process::Command::new("ssh-keygen").arg("-lf").arg(public).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_string()
}

/// Creates CT `vmid` on pve1 and waits for the task; its log.
async fn create(pve: &FakePve, vmid: &str, extra: &[(&str, &str)]) -> Vec<String> {
    let mut params = vec![
        ("vmid", vmid),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("hostname", "rivet-pve1"),
        ("rootfs", "local-lvm:8"),
        ("memory", "2048"),
    ];
    params.extend_from_slice(extra);
    let upid = start_task(pve, "POST", "/nodes/pve1/lxc", &params).await;
    let (status, log) = wait(pve, "pve1", &upid).await;
    assert_eq!(status["exitstatus"], "OK", "{log:#?}");
    log
}

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

type Call<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

impl Recorder {
    fn record(&self, call: String) -> Call<'_> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(call);
            Ok(())
        })
    }
}

impl Runtime for Recorder {
    fn start(&self, ct: &Container) -> Call<'_> {
        let keys = ct.host_keys.join("ssh_host_ed25519_key").exists();
        self.record(format!("start {} {} keys={keys}", ct.vmid, ct.config["hostname"]))
    }

    fn stop(&self, vmid: u32) -> Call<'_> {
        self.record(format!("stop {vmid}"))
    }

    fn destroy(&self, vmid: u32) -> Call<'_> {
        self.record(format!("destroy {vmid}"))
    }
}

#[tokio::test]
async fn tokens_are_checked_before_anything_else() {
    let pve = fast(None).await;
    assert_eq!(pve.token_id(), "rivetctl@pve!deploy");
    assert_eq!(pve.token_secret().len(), 36);
    assert_eq!(pve.token_secret().matches('-').count(), 4);

    let none = send(&pve, "GET", "/version", &[], Auth::None).await.unwrap();
    assert_eq!((none.status, none.reason.as_str()), (401, "No ticket"));
    assert_eq!(none.body, json!({"data": null, "message": "No ticket\n"}));
    let wrong = format!("PVEAPIToken={}=00000000-0000-0000-0000-000000000000", pve.token_id());
    let wrong = send(&pve, "GET", "/version", &[], Auth::Header(wrong)).await.unwrap();
    assert_eq!((wrong.status, wrong.reason.as_str()), (401, "invalid token value!"));
    let other = format!("PVEAPIToken=root@pam!deploy={}", pve.token_secret());
    assert_eq!(send(&pve, "GET", "/version", &[], Auth::Header(other)).await.unwrap().status, 401);
    // Unauthenticated requests learn nothing about paths: auth comes first.
    let unknown = send(&pve, "GET", "/nodes/pve1/qemu", &[], Auth::None).await.unwrap();
    assert_eq!(unknown.status, 401);

    let version = call(&pve, "GET", "/version", &[]).await;
    assert_eq!(version.body["data"], json!({"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"}));

    pve.expire_token();
    let expired = call(&pve, "GET", "/version", &[]).await;
    assert_eq!((expired.status, expired.reason.as_str()), (401, "token expired"));
    let statuses: Vec<(String, u16)> = pve.requests().into_iter().map(|r| (r.path, r.status)).collect();
    let expected = [("/version", 401), ("/version", 401), ("/version", 401), ("/nodes/pve1/qemu", 401)];
    assert_eq!(statuses[..4], expected.map(|(p, s)| (p.to_string(), s)));
    assert_eq!(statuses[4..], [("/version".to_string(), 200), ("/version".to_string(), 401)]);
}

#[tokio::test]
async fn the_schema_refuses_what_pve_would() {
    let pve = fast(None).await;
    let good = [
        ("vmid", "101"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("net0", "name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1"),
    ];
    let refused = |answer: &Answer| answer.body["errors"].as_object().cloned().unwrap_or_default();
    let with = |key: &'static str, value: &'static str| {
        let mut params: Vec<(&str, &str)> = good.iter().copied().filter(|(k, _)| *k != key).collect();
        params.push((key, value));
        params
    };

    let unknown = call(&pve, "POST", "/nodes/pve1/lxc", &with("sshkeys", "x")).await;
    assert_eq!((unknown.status, unknown.reason.as_str()), (400, "Parameter verification failed."));
    assert_eq!(unknown.body["message"], "Parameter verification failed.\n");
    assert_eq!(
        refused(&unknown)["sshkeys"],
        "property is not defined in schema and the schema does not allow additional properties"
    );

    let no_prefix = call(&pve, "POST", "/nodes/pve1/lxc", &with("net0", "name=eth0,bridge=vmbr0,ip=10.0.0.5")).await;
    assert_eq!(no_prefix.status, 400);
    assert_eq!(
        refused(&no_prefix)["net0"],
        "invalid format - format error\nnet0.ip: invalid format - value does not look like a valid ipv4 network configuration\n"
    );
    let no_name = call(&pve, "POST", "/nodes/pve1/lxc", &with("net0", "bridge=vmbr0,ip=dhcp")).await;
    assert_eq!(
        refused(&no_name)["net0"],
        "invalid format - format error\nnet0.name: property is missing and it is not optional\n"
    );

    let windows = call(&pve, "POST", "/nodes/pve1/lxc", &with("ostype", "windows")).await;
    let message = refused(&windows)["ostype"].as_str().unwrap().to_string();
    assert!(message.starts_with("value 'windows' does not have a value in the enumeration 'debian, devuan, ubuntu,"));

    let missing = call(&pve, "POST", "/nodes/pve1/lxc", &[("vmid", "101")]).await;
    assert_eq!(refused(&missing)["ostemplate"], "property is missing and it is not optional");
    let word = call(&pve, "POST", "/nodes/pve1/lxc", &with("unprivileged", "true")).await;
    assert_eq!(refused(&word)["unprivileged"], "type check ('boolean') failed - got 'true'");
    let low = call(&pve, "POST", "/nodes/pve1/lxc", &with("vmid", "99")).await;
    // PVE checks the format before the range.
    assert_eq!(refused(&low)["vmid"], "invalid format - value does not look like a valid VM ID\n");
    let cores = call(&pve, "POST", "/nodes/pve1/lxc", &with("cores", "0")).await;
    assert_eq!(refused(&cores)["cores"], "value must have a minimum value of 1");
    let path = call(&pve, "GET", "/nodes/pve1/lxc/abc/config", &[]).await;
    assert_eq!(refused(&path)["vmid"], "type check ('integer') failed - got 'abc'");
    let net32 = call(&pve, "POST", "/nodes/pve1/lxc", &with("net32", "name=eth32")).await;
    assert!(refused(&net32).contains_key("net32"), "PVE has net0..net31: {net32:?}");

    let qemu = call(&pve, "GET", "/nodes/pve1/qemu", &[]).await;
    assert_eq!((qemu.status, qemu.reason.as_str()), (501, "Method 'GET /nodes/pve1/qemu' not implemented"));
    let method = call(&pve, "PUT", "/version", &[]).await;
    assert_eq!(method.status, 501);
    let node = call(&pve, "POST", "/nodes/pve9/lxc", &good).await;
    assert_eq!((node.status, node.reason.as_str()), (500, "no such cluster node 'pve9'"));

    assert!(pve.containers().is_empty(), "nothing refused was created");
    let logged = pve.requests();
    assert_eq!(logged[0].method, "POST");
    assert_eq!(logged[0].params["sshkeys"], "x");
    assert_eq!((logged[0].status, logged[0].is_write()), (400, true));
}

#[tokio::test]
async fn a_create_task_writes_the_config_and_real_host_keys() {
    let pve = fast(None).await;
    let home = tempfile::tempdir().unwrap();
    let key = public_key(home.path());
    assert_eq!(call(&pve, "GET", "/cluster/nextid", &[]).await.body["data"], "100");

    let params = [
        ("vmid", "310"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("hostname", "rivet-pve1"),
        ("rootfs", "local-lvm:8"),
        ("cores", "2"),
        ("memory", "2048"),
        ("tags", "rivetctl;rivet-rivetos;alpha"),
        ("net0", "name=eth0,bridge=vmbr1,ip=10.4.0.10/24,gw=10.4.0.1"),
        ("features", "nesting=1"),
        ("unprivileged", "1"),
        ("onboot", "1"),
        ("ssh-public-keys", key.as_str()),
    ];
    let upid = start_task(&pve, "POST", "/nodes/pve1/lxc", &params).await;
    let fields: Vec<&str> = upid.split(':').collect();
    assert_eq!(
        (fields[0], fields[1], fields[5], fields[6], fields[7]),
        ("UPID", "pve1", "vzcreate", "310", "rivetctl@pve!deploy")
    );
    assert!(fields[2..5].iter().all(|f| f.len() == 8 && f.chars().all(|c| c.is_ascii_hexdigit() && !c.is_lowercase())));
    assert_eq!((fields.len(), fields[8]), (9, ""));

    // Locked while the task runs: reads work, writes are refused.
    let current = call(&pve, "GET", "/nodes/pve1/lxc/310/status/current", &[]).await;
    assert_eq!(
        (current.body["data"]["lock"].as_str(), current.body["data"]["status"].as_str()),
        (Some("create"), Some("stopped"))
    );
    let locked = call(&pve, "POST", "/nodes/pve1/lxc/310/status/start", &[]).await;
    assert_eq!((locked.status, locked.reason.as_str()), (500, "CT is locked (create)"));
    let again = call(&pve, "POST", "/nodes/pve1/lxc", &params).await;
    assert_eq!(again.reason, "CT 310 already exists on node 'pve1'");

    let (status, log) = wait(&pve, "pve1", &upid).await;
    assert_eq!(
        (status["exitstatus"].as_str(), status["type"].as_str(), status["upid"].as_str()),
        (Some("OK"), Some("vzcreate"), Some(upid.as_str()))
    );
    assert_eq!(log[0], "extracting archive 'local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst'");
    assert!(log[1].starts_with("Total bytes read: "));
    assert_eq!(log[2], "Detected container architecture: amd64");
    let ct = pve.container(310).expect("created");
    for (i, kind) in ["ed25519", "rsa"].iter().enumerate() {
        assert_eq!(
            log[3 + 2 * i],
            format!("Creating SSH host key 'ssh_host_{kind}_key' - this may take some time ...")
        );
        let public = ct.host_keys.join(format!("ssh_host_{kind}_key.pub"));
        assert!(ct.host_keys.join(format!("ssh_host_{kind}_key")).is_file());
        assert_eq!(log[4 + 2 * i], format!("done: {} root@rivet-pve1", keygen_fingerprint(&public)));
    }
    assert_eq!(log.last().unwrap(), "TASK OK");
    assert_eq!(std::fs::read_to_string(ct.host_keys.join("authorized_keys")).unwrap(), format!("{key}\n"));

    let expected: BTreeMap<String, String> = [
        ("arch", "amd64"),
        ("cores", "2"),
        ("features", "nesting=1"),
        ("hostname", "rivet-pve1"),
        ("memory", "2048"),
        ("net0", "name=eth0,bridge=vmbr1,ip=10.4.0.10/24,gw=10.4.0.1"),
        ("onboot", "1"),
        ("ostype", "debian"),
        ("rootfs", "local-lvm:vm-310-disk-0,size=8G"),
        ("tags", "alpha;rivet-rivetos;rivetctl"),
        ("unprivileged", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(ct.config, expected);
    assert_eq!((ct.vmid, ct.node.as_str(), ct.running), (310, "pve1", false));

    let config = call(&pve, "GET", "/nodes/pve1/lxc/310/config", &[]).await.body["data"].clone();
    assert_eq!(
        (config["cores"].clone(), config["memory"].clone(), config["onboot"].clone()),
        (json!(2), json!(2048), json!(1))
    );
    assert_eq!(config["rootfs"], "local-lvm:vm-310-disk-0,size=8G");
    assert_eq!(config["digest"].as_str().unwrap().len(), 40);
    assert!(config.get("lock").is_none());

    let resources = call(&pve, "GET", "/cluster/resources", &[("type", "vm")]).await.body["data"].clone();
    assert_eq!(resources.as_array().unwrap().len(), 1);
    let entry = &resources[0];
    assert_eq!(
        (entry["id"].as_str(), entry["vmid"].as_u64(), entry["name"].as_str()),
        (Some("lxc/310"), Some(310), Some("rivet-pve1"))
    );
    assert_eq!(
        (entry["status"].as_str(), entry["tags"].as_str()),
        (Some("stopped"), Some("alpha;rivet-rivetos;rivetctl"))
    );
    assert_eq!((entry["maxdisk"].as_u64(), entry["maxmem"].as_u64()), (Some(8 << 30), Some(2048 << 20)));
    let taken = call(&pve, "GET", "/cluster/nextid", &[("vmid", "310")]).await;
    assert_eq!((taken.status, taken.body["errors"]["vmid"].as_str()), (400, Some("VM 310 already exists")));
    assert_eq!(call(&pve, "GET", "/cluster/nextid", &[("vmid", "311")]).await.body["data"], "311");
    let nodes = call(&pve, "GET", "/nodes", &[]).await.body["data"].clone();
    assert_eq!(
        nodes.as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect::<Vec<_>>(),
        ["pve1", "pve2"]
    );
    assert_eq!(nodes[0]["id"], "node/pve1");

    // The same container is not on the other node.
    let elsewhere = call(&pve, "GET", "/nodes/pve2/lxc/310/config", &[]).await;
    assert_eq!(
        (elsewhere.status, elsewhere.reason.as_str()),
        (500, "Configuration file 'nodes/pve2/lxc/310.conf' does not exist")
    );
}

#[tokio::test]
async fn start_stop_and_destroy_go_through_the_runtime() {
    let recorder = Arc::new(Recorder::default());
    let pve = fast(Some(recorder.clone())).await;
    create(&pve, "101", &[("start", "1")]).await;
    assert_eq!(recorder.calls(), ["start 101 rivet-pve1 keys=true"]);
    assert!(pve.container(101).unwrap().running);

    let upid = start_task(&pve, "POST", "/nodes/pve1/lxc/101/status/start", &[]).await;
    let (status, log) = wait(&pve, "pve1", &upid).await;
    assert_eq!(status["exitstatus"], "CT 101 already running");
    assert_eq!(log.last().unwrap(), "TASK ERROR: CT 101 already running");

    let upid = start_task(&pve, "DELETE", "/nodes/pve1/lxc/101", &[("purge", "1")]).await;
    assert_eq!(wait(&pve, "pve1", &upid).await.0["exitstatus"], "CT 101 is running - destroy failed");
    assert!(pve.container(101).is_some());

    let upid =
        start_task(&pve, "POST", "/nodes/pve1/lxc/101/status/shutdown", &[("timeout", "30"), ("forceStop", "1")]).await;
    assert!(upid.contains(":vzshutdown:101:"));
    assert_eq!(wait(&pve, "pve1", &upid).await.0["exitstatus"], "OK");
    let current = call(&pve, "GET", "/nodes/pve1/lxc/101/status/current", &[]).await.body["data"].clone();
    assert_eq!((current["status"].as_str(), current["name"].as_str()), (Some("stopped"), Some("rivet-pve1")));

    let upid = start_task(&pve, "POST", "/nodes/pve1/lxc/101/status/start", &[]).await;
    assert_eq!(wait(&pve, "pve1", &upid).await.0["exitstatus"], "OK");
    let upid = start_task(&pve, "POST", "/nodes/pve1/lxc/101/status/stop", &[]).await;
    assert!(upid.contains(":vzstop:"));
    assert_eq!(wait(&pve, "pve1", &upid).await.0["exitstatus"], "OK");
    let upid = start_task(&pve, "DELETE", "/nodes/pve1/lxc/101", &[("destroy-unreferenced-disks", "1")]).await;
    assert_eq!(wait(&pve, "pve1", &upid).await.0["exitstatus"], "OK");
    assert_eq!(
        recorder.calls(),
        ["start 101 rivet-pve1 keys=true", "stop 101", "start 101 rivet-pve1 keys=true", "stop 101", "destroy 101"]
    );
    assert!(pve.containers().is_empty());
    let gone = call(&pve, "GET", "/nodes/pve1/lxc/101/config", &[]).await;
    assert_eq!(
        (gone.status, gone.reason.as_str()),
        (500, "Configuration file 'nodes/pve1/lxc/101.conf' does not exist")
    );
    let unknown =
        call(&pve, "GET", "/nodes/pve1/tasks/UPID:pve1:00000001:00000001:00000001:vzstart:1:x@pve:/status", &[]).await;
    assert_eq!((unknown.status, unknown.reason.as_str()), (500, "no such task"));
}

#[tokio::test]
async fn config_updates_check_digest_lock_and_read_only_options() {
    let pve = fast(None).await;
    create(&pve, "102", &[]).await;
    let digest =
        call(&pve, "GET", "/nodes/pve1/lxc/102/config", &[]).await.body["data"]["digest"].as_str().unwrap().to_string();
    let set = call(&pve, "PUT", "/nodes/pve1/lxc/102/config", &[("memory", "4096"), ("digest", &digest)]).await;
    assert_eq!(set.body, json!({"data": null}));
    let stale = call(&pve, "PUT", "/nodes/pve1/lxc/102/config", &[("memory", "1024"), ("digest", &digest)]).await;
    assert_eq!(
        (stale.status, stale.reason.as_str()),
        (500, "detected modified configuration - file changed by other user? Try again.")
    );
    let delete =
        call(&pve, "PUT", "/nodes/pve1/lxc/102/config", &[("delete", "hostname,onboot"), ("cores", "4")]).await;
    assert_eq!(delete.status, 200);
    let config = pve.container(102).unwrap().config;
    assert_eq!((config["memory"].as_str(), config["cores"].as_str(), config.get("hostname")), ("4096", "4", None));
    let bad_delete = call(&pve, "PUT", "/nodes/pve1/lxc/102/config", &[("delete", "no-such-key")]).await;
    assert_eq!(bad_delete.body["errors"]["delete"], "unknown option 'no-such-key'");
    let grow = call(&pve, "PUT", "/nodes/pve1/lxc/102/config", &[("rootfs", "local-lvm:vm-102-disk-0,size=20G")]).await;
    assert_eq!(grow.status, 500);
    assert!(grow.reason.starts_with("unable to modify read-only option: 'rootfs'"), "{grow:?}");
    let privileged = call(&pve, "PUT", "/nodes/pve1/lxc/102/config", &[("unprivileged", "0")]).await;
    assert_eq!(privileged.reason, "unable to modify read-only option: 'unprivileged'");

    pve.lock_timeout_next(2);
    for _ in 0..2 {
        let timeout = call(&pve, "PUT", "/nodes/pve1/lxc/102/config", &[("memory", "8192")]).await;
        assert_eq!(
            (timeout.status, timeout.reason.as_str()),
            (500, "can't lock file '/run/lock/lxc/pve-config-102.conf' - got timeout")
        );
        assert_eq!(pve.container(102).unwrap().config["memory"], "4096", "no effect");
        assert_eq!(call(&pve, "GET", "/nodes/pve1/lxc/102/config", &[]).await.status, 200, "reads take no lock");
    }
    assert_eq!(call(&pve, "PUT", "/nodes/pve1/lxc/102/config", &[("memory", "8192")]).await.status, 200);
    assert_eq!(pve.container(102).unwrap().config["memory"], "8192");

    pve.edit_config(102, "lock", Some("backup"));
    let locked = call(&pve, "PUT", "/nodes/pve1/lxc/102/config", &[("memory", "512")]).await;
    assert_eq!(locked.reason, "CT is locked (backup)");
    pve.edit_config(102, "lock", None);

    let upid = start_task(&pve, "PUT", "/nodes/pve1/lxc/102/resize", &[("disk", "rootfs"), ("size", "+2G")]).await;
    assert_eq!(wait(&pve, "pve1", &upid).await.0["exitstatus"], "OK");
    assert_eq!(pve.container(102).unwrap().config["rootfs"], "local-lvm:vm-102-disk-0,size=10G");
    let upid = start_task(&pve, "PUT", "/nodes/pve1/lxc/102/resize", &[("disk", "rootfs"), ("size", "4G")]).await;
    let (status, log) = wait(&pve, "pve1", &upid).await;
    assert_eq!(
        (status["exitstatus"].as_str(), log.last().map(String::as_str)),
        (Some("unable to shrink disk size"), Some("TASK ERROR: unable to shrink disk size"))
    );
    assert_eq!(pve.container(102).unwrap().config["rootfs"], "local-lvm:vm-102-disk-0,size=10G");
}

#[tokio::test]
async fn injected_task_faults_and_lost_answers() {
    let recorder = Arc::new(Recorder::default());
    let pve = fast(Some(recorder.clone())).await;
    create(&pve, "103", &[]).await;

    pve.fail_next_task("vzstart", "startup for container '103' failed");
    let upid = start_task(&pve, "POST", "/nodes/pve1/lxc/103/status/start", &[]).await;
    let (status, log) = wait(&pve, "pve1", &upid).await;
    assert_eq!(status["exitstatus"], "startup for container '103' failed");
    assert_eq!(log.last().unwrap(), "TASK ERROR: startup for container '103' failed");
    assert!(!pve.container(103).unwrap().running);
    assert!(recorder.calls().is_empty(), "a failed task has no effect");

    pve.warn_next_task("vzstart", "systemd 252 detected, consider upgrading");
    let upid = start_task(&pve, "POST", "/nodes/pve1/lxc/103/status/start", &[]).await;
    let (status, log) = wait(&pve, "pve1", &upid).await;
    assert_eq!(status["exitstatus"], "WARNINGS: 1");
    assert_eq!(log[log.len() - 2..], ["WARN: systemd 252 detected, consider upgrading", "TASK WARNINGS: 1"]);
    assert!(pve.container(103).unwrap().running);

    pve.fail_next_task("vzcreate", "unable to create CT 104 - no space left");
    let params = [("vmid", "104"), ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")];
    let upid = start_task(&pve, "POST", "/nodes/pve1/lxc", &params).await;
    assert_eq!(wait(&pve, "pve1", &upid).await.0["exitstatus"], "unable to create CT 104 - no space left");
    assert!(pve.container(104).is_none(), "a failed create leaves no container");

    pve.server_error_next(1);
    let busy = call(&pve, "GET", "/version", &[]).await;
    assert_eq!((busy.status, busy.reason.as_str()), (503, "service unavailable"));
    assert_eq!(call(&pve, "GET", "/version", &[]).await.status, 200);

    pve.complete_but_drop_next_create();
    let lost = send(&pve, "POST", "/nodes/pve1/lxc", &params, Auth::Token).await;
    assert!(lost.is_err(), "the answer is lost: {lost:?}");
    assert_eq!(pve.container(104).unwrap().config["lock"], "create", "but the container exists");
    let logged = pve.requests().into_iter().rfind(|r| r.method == "POST").unwrap();
    assert_eq!((logged.path.as_str(), logged.status), ("/nodes/pve1/lxc", 0));

    pve.set_status(103, false);
    assert!(!pve.container(103).unwrap().running);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(recorder.calls().last().unwrap(), "stop 103");
}

#[tokio::test]
async fn the_fingerprint_is_that_of_the_certificate() {
    let pve = fast(None).await;
    let der = CertificateDer::from_pem_slice(pve.ca_pem().as_bytes()).unwrap();
    let expected: Vec<String> = Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(pve.fingerprint(), expected.join(":"));
    assert_eq!(pve.fingerprint().len(), 32 * 3 - 1);
    assert!(pve.url().starts_with("https://127.0.0.1:"));
}

/// The validator by itself, on what the HTTP tests do not reach.
#[test]
fn the_validator_knows_lists_aliases_and_unknown_formats() {
    let schema = Schema::official();
    let check = |method: &str, path: &str, params: &[(&str, &str)]| {
        let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        schema.check(method, path, &params)
    };
    let route = check("PUT", "/nodes/pve1/lxc/101/config", &[("delete", "net1;mp0 hostname")]).unwrap();
    assert_eq!(route.template, "/nodes/{node}/lxc/{vmid}/config");
    assert_eq!(route.path_params["vmid"], "101");
    assert!(check("PUT", "/nodes/pve1/lxc/101/config", &[("delete", "9bad")]).is_err());
    assert!(check("POST", "/nodes/pve1/lxc/101/status/start", &[("skiplock", "1")]).is_ok());
    let upid = "UPID:pve1:0000A1B2:0012C3D4:6754F0A1:vzcreate:101:rivetctl@pve!deploy:";
    assert!(check("GET", &format!("/nodes/pve1/tasks/{upid}/log"), &[("start", "0"), ("limit", "10")]).is_ok());
    let Err(Refused::Invalid(errors)) = check(
        "POST",
        "/nodes/pve1/lxc",
        &[
            ("vmid", "101"),
            ("ostemplate", "local:vztmpl/x.tar.zst"),
            ("features", "nesting=true"),
            ("startup", "order=2,later=1"),
            ("unique", "1"),
        ],
    ) else {
        panic!("refused")
    };
    assert!(errors["features"].contains("features.nesting: type check ('boolean') failed - got 'true'"), "{errors:?}");
    assert_eq!(errors["startup"], "invalid format - unable to parse startup options\n");
    assert_eq!(errors["restore"], "missing property required by 'unique'");

    let custom = r#"{"paths": {"/x": {"GET": {"parameters": {"additionalProperties": 0, "properties": {
        "a": {"type": "string", "optional": 1, "format": "no-such-format"},
        "b": {"type": "string", "optional": 1, "format": {"volume": {"type": "string", "default_key": 1},
                                                         "vol": {"alias": "volume"}}}}}}}}}"#;
    let custom = Schema::from_json(custom).unwrap();
    let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let Err(Refused::Invalid(errors)) = custom.check("GET", "/x", &one("a", "anything")) else { panic!() };
    assert_eq!(errors["a"], "invalid format - undefined format 'no-such-format'\n");
    assert!(custom.check("GET", "/x", &one("b", "vol=local:1")).is_ok(), "an alias member");
    assert!(custom.check("GET", "/x", &one("b", "local:1,vol=local:2")).is_err(), "alias and target");
}
