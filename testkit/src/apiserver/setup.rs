//! What a server's processes are given: the PKI and the token file, the kubeconfigs, the
//! command lines (those of a recipe measured to work with Kubernetes 1.20 and etcd 3.4).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use super::Ports;

/// A user of the server's token file.
pub(super) struct User {
    pub(super) name: &'static str,
    token: &'static str,
    /// Comma-separated groups.
    groups: &'static str,
}

/// `admin` may do anything (group `system:masters`); `limited` is in no group, so RBAC denies it
/// almost everything (the doctor tests check permissions with SelfSubjectAccessReview).
pub(super) const USERS: [User; 2] = [
    User { name: "admin", token: "rivet-test-admin-token", groups: "system:masters" },
    User { name: "limited", token: "rivet-test-limited-token", groups: "" },
];

/// Generates, in `pki` (created), the CA, the apiserver's certificate for 127.0.0.1 and the
/// in-cluster names, the service-account key pair and the token file. Fresh per server: the
/// ~1 s it takes runs while etcd starts, and under cargo-nextest every test is its own process,
/// so sharing them within a process would save nothing.
pub(super) fn write_pki(openssl: &Path, pki: &Path) -> Result<(), String> {
    fs::create_dir_all(pki).map_err(|err| format!("cannot create {}: {err}", pki.display()))?;
    let extensions = "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
                      DNS:kubernetes.default.svc,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n";
    fs::write(pki.join("apiserver.ext"), extensions).map_err(|err| format!("cannot write apiserver.ext: {err}"))?;
    let steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=rivet-test-ca",
        "req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver",
        "x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 \
         -extfile apiserver.ext",
        "genrsa -out sa.key 2048",
        "rsa -in sa.key -pubout -out sa.pub",
    ];
    for step in steps {
        let output = Command::new(openssl)
            .args(step.split_whitespace())
            .current_dir(pki)
            .output()
            .map_err(|err| format!("cannot run {}: {err}", openssl.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("openssl {step} failed ({}): {}", output.status, stderr.trim()));
        }
    }
    let tokens: String = USERS
        .iter()
        .map(|user| match user.groups {
            "" => format!("{},{},{}-uid\n", user.token, user.name, user.name),
            groups => format!("{},{},{}-uid,\"{groups}\"\n", user.token, user.name, user.name),
        })
        .collect();
    fs::write(pki.join("tokens.csv"), tokens).map_err(|err| format!("cannot write tokens.csv: {err}"))
}

/// `kubeconfig-USER` for every user: cluster, context and user names as in the admin one.
pub(super) fn write_kubeconfigs(dir: &Path, ports: Ports) -> Result<(), String> {
    for user in &USERS {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: rivet-test\n  cluster:\n    server: \
             https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: {name}\n  user:\n    token: \
             {token}\ncontexts:\n- name: rivet-test\n  context:\n    cluster: rivet-test\n    user: {name}\n    \
             namespace: default\ncurrent-context: rivet-test\n",
            port = ports.apiserver,
            ca = dir.join("pki/ca.crt").display(),
            name = user.name,
            token = user.token,
        );
        let path = kubeconfig_path(dir, user.name);
        fs::write(&path, kubeconfig).map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    }
    Ok(())
}

/// Where `write_kubeconfigs` puts `user`'s kubeconfig.
pub(super) fn kubeconfig_path(dir: &Path, user: &str) -> PathBuf {
    dir.join(format!("kubeconfig-{user}"))
}

/// `--flag=value` for every pair.
fn flags(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().map(|(flag, value)| format!("--{flag}={value}")).collect()
}

pub(super) fn etcd_args(dir: &Path, ports: Ports) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    let data = dir.join("etcd-data").display().to_string();
    flags(&[
        ("name", "rivet-test"),
        ("data-dir", &data),
        ("listen-client-urls", &client),
        ("advertise-client-urls", &client),
        ("listen-peer-urls", &peer),
        ("initial-advertise-peer-urls", &peer),
        ("initial-cluster", &format!("rivet-test={peer}")),
        ("listen-metrics-urls", ""),
        ("quota-backend-bytes", "2147483648"),
    ])
}

/// Flags measured to work with 1.20: no endpoint reconciler (nothing could reach the
/// `kubernetes` Service's endpoints anyway), privileged pods allowed (RivetOS needs them),
/// service-account tokens signed with the server's own key.
pub(super) fn apiserver_args(dir: &Path, ports: Ports) -> Vec<String> {
    let pki = |file: &str| dir.join("pki").join(file).display().to_string();
    flags(&[
        ("etcd-servers", &format!("http://127.0.0.1:{}", ports.etcd_client)),
        ("bind-address", "127.0.0.1"),
        ("advertise-address", "127.0.0.1"),
        ("secure-port", &ports.apiserver.to_string()),
        ("insecure-port", "0"),
        ("tls-cert-file", &pki("apiserver.crt")),
        ("tls-private-key-file", &pki("apiserver.key")),
        ("client-ca-file", &pki("ca.crt")),
        ("token-auth-file", &pki("tokens.csv")),
        ("authorization-mode", "RBAC"),
        ("anonymous-auth", "false"),
        ("service-account-key-file", &pki("sa.pub")),
        ("service-account-signing-key-file", &pki("sa.key")),
        ("service-account-issuer", "https://kubernetes.default.svc"),
        ("api-audiences", "https://kubernetes.default.svc"),
        ("service-cluster-ip-range", "10.96.0.0/12"),
        ("endpoint-reconciler-type", "none"),
        ("allow-privileged", "true"),
        ("profiling", "false"),
        ("v", "1"),
    ])
}

/// The controller manager as admin, serving nothing, with every controller but those that need
/// nodes, a cloud or volumes (there are none).
pub(super) fn controller_manager_args(dir: &Path) -> Vec<String> {
    let pki = |file: &str| dir.join("pki").join(file).display().to_string();
    flags(&[
        ("kubeconfig", &kubeconfig_path(dir, "admin").display().to_string()),
        ("bind-address", "127.0.0.1"),
        ("secure-port", "0"),
        ("port", "0"),
        ("service-account-private-key-file", &pki("sa.key")),
        ("root-ca-file", &pki("ca.crt")),
        ("cluster-signing-cert-file", &pki("ca.crt")),
        ("cluster-signing-key-file", &pki("ca.key")),
        ("use-service-account-credentials", "false"),
        ("leader-elect", "false"),
        (
            "controllers",
            "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service,-attachdetach,\
             -persistentvolume-binder,-persistentvolume-expander,-ttl",
        ),
        ("v", "1"),
    ])
}
