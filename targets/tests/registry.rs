//! The registry adapter: credential lookup as the Docker CLI does it (environment, config
//! file, credential helpers; no engine needed), and push, remote digest and pull through this
//! machine's engine against a real registry per test (Debian's `docker-registry`, started by
//! the testkit on a loopback port, with and without htpasswd authentication).
//!
//! Each engine test builds its own image (`FROM rivetos-base:busybox` plus a unique label,
//! so a unique digest) and removes every image it made on every path, also when it panics.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use orchestrator::config::rules::{Endpoint, TcpSecurity};
use proptest::prelude::*;
use rivet_targets::docker::{self, Engine};
use rivet_targets::registry::{
    CredentialSource, Credentials, PASSWORD_VAR, RegistryAuth, RegistryError, USERNAME_VAR, docker_config_json, pull,
    push, remote_digest,
};
use testkit::registry::{Registry, RegistryOptions};

/// The base image every test image starts from (examples/base-image/build.sh).
const BASE: &str = "rivetos-base:busybox";
const USER: &str = "alice";
const PASSWORD: &str = "pw-right-7f3a9c";
const WRONG_PASSWORD: &str = "pw-wrong-41d8e2";

// ---------------------------------------------------------------------------------------
// Credential lookup

/// An environment made of `vars`, for [`RegistryAuth::for_registry`].
fn env_of<'a>(vars: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
}

/// A Docker config directory holding `config` as its config.json.
fn config_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    dir
}

/// Looks up `host` with `DOCKER_CONFIG` set to a directory holding `config`.
fn lookup(host: &str, config: &str) -> (Result<Option<Credentials>, RegistryError>, std::path::PathBuf) {
    let dir = config_dir(config);
    let vars = [("DOCKER_CONFIG", dir.path().display().to_string())];
    (RegistryAuth::for_registry(host, &env_of(&vars)), dir.path().join("config.json"))
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The password `credentials` carry, as the imagePullSecret body (its one entry) reveals it.
fn password_of(host: &str, credentials: &Credentials) -> String {
    let body: serde_json::Value = serde_json::from_str(&docker_config_json(host, credentials).unwrap()).unwrap();
    let auths = body["auths"].as_object().unwrap();
    assert_eq!(auths.len(), 1, "{body}");
    auths.values().next().unwrap()["password"].as_str().unwrap().to_string()
}

/// Every message of `error` and its sources, and its Debug form.
fn everything_said(error: &dyn std::error::Error) -> String {
    let mut text = format!("{error:?}\n");
    let mut next = Some(error);
    while let Some(e) = next {
        text.push_str(&format!("{e}\n"));
        next = e.source();
    }
    text
}

#[test]
fn the_environment_comes_first_and_wants_both_variables() {
    let dir = config_dir(&format!(r#"{{"auths":{{"reg.test":{{"auth":"{}"}}}}}}"#, b64("file-user:file-pw")));
    let docker_config = ("DOCKER_CONFIG", dir.path().display().to_string());
    let both = [(USERNAME_VAR, "env-user".to_string()), (PASSWORD_VAR, "env-pw".to_string()), docker_config.clone()];
    let found = RegistryAuth::for_registry("reg.test", &env_of(&both)).unwrap().unwrap();
    assert_eq!((found.user(), found.source()), ("env-user", &CredentialSource::Environment));
    assert_eq!(password_of("reg.test", &found), "env-pw");

    for (set, missing) in [(USERNAME_VAR, PASSWORD_VAR), (PASSWORD_VAR, USERNAME_VAR)] {
        let half = [(set, "x".to_string()), docker_config.clone()];
        let err = RegistryAuth::for_registry("reg.test", &env_of(&half)).unwrap_err();
        assert!(matches!(err, RegistryError::HalfCredentials { set: s, missing: m } if s == set && m == missing));
        assert!(err.to_string().contains(missing), "{err}");
    }
    // Empty variables count as unset: the file decides.
    let empty = [(USERNAME_VAR, String::new()), (PASSWORD_VAR, String::new()), docker_config];
    assert_eq!(RegistryAuth::for_registry("reg.test", &env_of(&empty)).unwrap().unwrap().user(), "file-user");
}

#[test]
fn auths_entries_are_matched_and_decoded_as_the_cli_does() {
    let auth = b64("bob:pw:with:colons");
    // (config.json, host, the user and password expected)
    type Case<'a> = (String, &'a str, Option<(&'a str, &'a str)>);
    let cases: &[Case] = &[
        (
            format!(r#"{{"auths":{{"reg.test:5000":{{"auth":"{auth}"}}}}}}"#),
            "reg.test:5000",
            Some(("bob", "pw:with:colons")),
        ),
        (
            format!(r#"{{"auths":{{"https://reg.test:5000":{{"auth":"{auth}"}}}}}}"#),
            "reg.test:5000",
            Some(("bob", "pw:with:colons")),
        ),
        (
            format!(r#"{{"auths":{{"http://reg.test/v1/":{{"auth":"{auth}"}}}}}}"#),
            "reg.test",
            Some(("bob", "pw:with:colons")),
        ),
        (r#"{"auths":{"reg.test":{"username":"carol","password":"pw2"}}}"#.into(), "reg.test", Some(("carol", "pw2"))),
        (
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}}}}}}"#),
            "docker.io",
            Some(("bob", "pw:with:colons")),
        ),
        // Unpadded base64, as some tools write it.
        (
            format!(r#"{{"auths":{{"reg.test":{{"auth":"{}"}}}}}}"#, b64("dan:pw3").trim_end_matches('=')),
            "reg.test",
            Some(("dan", "pw3")),
        ),
        // No entry for this host, an empty entry (what `docker login` leaves with a helper), no auths.
        (format!(r#"{{"auths":{{"other.test":{{"auth":"{auth}"}}}}}}"#), "reg.test", None),
        (format!(r#"{{"auths":{{"reg.test.evil":{{"auth":"{auth}"}}}}}}"#), "reg.test", None),
        (r#"{"auths":{"reg.test":{}}}"#.into(), "reg.test", None),
        ("{}".into(), "reg.test", None),
        ("  \n".into(), "reg.test", None),
    ];
    for (config, host, expected) in cases {
        let (found, path) = lookup(host, config);
        let found = found.unwrap_or_else(|e| panic!("{config}: {e}"));
        let got = found.as_ref().map(|c| (c.user().to_string(), password_of(host, c)));
        let want = expected.map(|(u, p)| (u.to_string(), p.to_string()));
        assert_eq!(got, want, "{config} for {host}");
        if let Some(found) = found {
            assert_eq!(found.source(), &CredentialSource::File { path }, "{config}");
        }
    }
}

#[test]
fn identity_tokens_are_kept_apart_and_refused_for_pull_secrets() {
    let (found, _) = lookup(
        "reg.test",
        &format!(r#"{{"auths":{{"reg.test":{{"auth":"{}","identitytoken":"tok-123"}}}}}}"#, b64("erin:")),
    );
    let found = found.unwrap().unwrap();
    assert_eq!(found.user(), "erin");
    assert!(!format!("{found:?}").contains("tok-123"), "{found:?}");
    let err = docker_config_json("reg.test", &found).unwrap_err();
    assert!(matches!(err, RegistryError::TokenInPullSecret { .. }), "{err}");
}

#[test]
fn broken_config_files_fail_naming_the_file_and_never_the_secret() {
    let secret_number = "918273645";
    let cases = [
        (r#"{"auths": "#.to_string(), "not valid JSON"),
        (r#"{"auths":{"reg.test":{"auth":"!!!not base64!!!"}}}"#.to_string(), "not base64"),
        (format!(r#"{{"auths":{{"reg.test":{{"auth":"{}"}}}}}}"#, b64("no-colon-secret")), "no user:password"),
        (format!(r#"{{"auths":{{"reg.test":{{"username":"frank","password":{secret_number}}}}}}}"#), "not a string"),
        (r#"{"auths":{"reg.test":{"username":"frank"}}}"#.to_string(), "no password"),
        (r#"{"auths":["reg.test"]}"#.to_string(), "not an object"),
    ];
    for (config, expected) in cases {
        let (found, path) = lookup("reg.test", &config);
        let err = found.expect_err(&config);
        let said = everything_said(&err);
        assert!(said.contains(expected), "{config}: {said}");
        assert!(said.contains(&path.display().to_string()), "{config}: {said}");
        for secret in [secret_number, "no-colon-secret"] {
            assert!(!said.contains(secret), "{config} leaked: {said}");
        }
    }
}

#[test]
fn home_is_the_fallback_and_a_missing_file_means_anonymous() {
    let home = tempfile::tempdir().unwrap();
    let vars = [("HOME", home.path().display().to_string())];
    assert!(RegistryAuth::for_registry("reg.test", &env_of(&vars)).unwrap().is_none());
    std::fs::create_dir(home.path().join(".docker")).unwrap();
    let config = format!(r#"{{"auths":{{"reg.test":{{"auth":"{}"}}}}}}"#, b64("gina:pw"));
    std::fs::write(home.path().join(".docker/config.json"), config).unwrap();
    let found = RegistryAuth::for_registry("reg.test", &env_of(&vars)).unwrap().unwrap();
    assert_eq!(found.user(), "gina");
    assert!(RegistryAuth::for_registry("reg.test", &env_of(&[])).unwrap().is_none());
}

/// Writes an executable `docker-credential-<name>` that answers `answer` (a shell snippet
/// run with the server read from stdin in `$server`).
fn helper(dir: &Path, name: &str, answer: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, format!("#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r server\n{answer}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn credential_helpers_are_asked_with_the_server_on_stdin() {
    let bin = tempfile::tempdir().unwrap();
    helper(
        bin.path(),
        "good",
        r#"if [ "$server" = reg.test:5000 ]; then printf '{"ServerURL":"%s","Username":"hank","Secret":"hs-1"}' "$server"; else echo "credentials not found in native keychain"; exit 1; fi"#,
    );
    helper(bin.path(), "token", r#"printf '{"Username":"<token>","Secret":"tk-9"}'"#);
    helper(bin.path(), "broken", r#"echo "keychain locked" >&2; exit 2"#);
    helper(bin.path(), "garbage", r#"echo "Secret=hs-leak""#);
    let path = bin.path().display().to_string();
    let check = |config: &str, host: &str| {
        let dir = config_dir(config);
        let vars = [("DOCKER_CONFIG", dir.path().display().to_string()), ("PATH", path.clone())];
        RegistryAuth::for_registry(host, &env_of(&vars))
    };
    // credHelpers beats credsStore, and beats the auths entry (which the CLI ignores then).
    let config = format!(
        r#"{{"auths":{{"reg.test:5000":{{"auth":"{}"}}}},"credsStore":"broken","credHelpers":{{"reg.test:5000":"good"}}}}"#,
        b64("file:pw")
    );
    let found = check(&config, "reg.test:5000").unwrap().unwrap();
    assert_eq!(found.user(), "hank");
    assert_eq!(password_of("reg.test:5000", &found), "hs-1");
    assert!(matches!(found.source(), CredentialSource::Helper { program, .. } if program == "docker-credential-good"));
    assert!(found.source().to_string().contains("docker-credential-good"), "{}", found.source());
    // The helper has nothing for this server: anonymous, as for the CLI.
    assert!(check(r#"{"credsStore":"good"}"#, "other.test").unwrap().is_none());
    let token = check(r#"{"credsStore":"token"}"#, "reg.test").unwrap().unwrap();
    assert!(matches!(docker_config_json("reg.test", &token), Err(RegistryError::TokenInPullSecret { .. })));

    let err = check(r#"{"credsStore":"broken"}"#, "reg.test").unwrap_err();
    assert!(matches!(&err, RegistryError::HelperFailed { message, .. } if message == "keychain locked"), "{err}");
    let err = check(r#"{"credsStore":"garbage"}"#, "reg.test").unwrap_err();
    assert!(matches!(err, RegistryError::HelperOutput { .. }), "{err}");
    assert!(!everything_said(&err).contains("hs-leak"), "{}", everything_said(&err));
    let err = check(r#"{"credHelpers":{"reg.test":"absent"}}"#, "reg.test").unwrap_err();
    assert!(matches!(&err, RegistryError::HelperMissing { program, .. } if program == "docker-credential-absent"));
}

#[test]
fn credentials_never_print_their_secret() {
    let credentials = Credentials::with_password("ivy", "sekrit-555", CredentialSource::Environment);
    let shown = format!("{credentials:?} {:#?}", credentials);
    assert!(shown.contains("ivy") && !shown.contains("sekrit-555"), "{shown}");
}

proptest! {
    /// The imagePullSecret body carries the credentials so that a Docker config reader (ours,
    /// and the base64 decoder of its `auth`) gets back exactly what went in.
    #[test]
    fn pull_secret_bodies_round_trip(user in "[a-zA-Z0-9._-]{1,20}", password in "[ -~]{1,40}") {
        let host = "reg.test:5000";
        let credentials = Credentials::with_password(user.clone(), password.clone(), CredentialSource::Environment);
        let body = docker_config_json(host, &credentials).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        let auth = parsed["auths"][host]["auth"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth).unwrap();
        prop_assert_eq!(String::from_utf8(decoded).unwrap(), format!("{user}:{password}"));
        let (back, _) = lookup(host, &body);
        let back = back.unwrap().unwrap();
        prop_assert_eq!(back.user(), user.as_str());
        prop_assert_eq!(docker_config_json(host, &back).unwrap(), body);
    }
}

// ---------------------------------------------------------------------------------------
// Push, remote digest, pull

/// Images this test made, removed (with every tag) when it goes out of scope.
struct Images(Vec<String>);

impl Images {
    /// Builds `FROM rivetos-base:busybox` with a unique label as `<name>:<tag>`; returns the
    /// local reference and the image ID.
    fn build(&mut self, what: &str) -> (String, String) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!("{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos());
        let reference = format!("rivet-registry-test-{what}:{unique}");
        let mut child = Command::new("docker")
            .args(["build", "-q", "-t", &reference, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the docker CLI runs");
        use std::io::Write;
        let dockerfile = format!("FROM {BASE}\nLABEL io.rivetctl.test.registry=\"{unique}\"\n");
        child.stdin.take().unwrap().write_all(dockerfile.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "docker build failed (is {BASE} there? examples/base-image/build.sh builds it): {stderr}"
        );
        let id = image_id(&reference).expect("the built image exists");
        self.0.push(id.clone());
        (reference, id)
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", id]).output();
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000
}

/// The ID of a local image, `None` when the engine has no such image.
fn image_id(reference: &str) -> Option<String> {
    let out = Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", reference]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn remove(id: &str) {
    let out = Command::new("docker").args(["rmi", "-f", id]).output().unwrap();
    assert!(out.status.success(), "docker rmi: {}", String::from_utf8_lossy(&out.stderr));
}

async fn engine() -> Engine {
    docker::connect("hub", &Endpoint::Local, &TcpSecurity::Unset)
        .await
        .unwrap_or_else(|err| panic!("these tests need the Docker Engine: {err}\nhint: {}", err.hint()))
}

fn start(options: RegistryOptions) -> Registry {
    Registry::start(options).unwrap_or_else(|e| panic!("the test registry starts: {e:#}"))
}

fn with_user() -> RegistryOptions {
    RegistryOptions { user: Some((USER.to_string(), PASSWORD.to_string())) }
}

/// `<repo>` and `<tag>` of `rivet-registry-test-x:tag` under the test prefix `rivetos`.
fn repo_and_tag(local: &str) -> (String, String) {
    let (name, tag) = local.split_once(':').unwrap();
    (format!("rivetos/{name}"), tag.to_string())
}

fn no_events(_: &str) {}

#[tokio::test]
async fn a_push_reports_the_registry_s_digest_and_the_image_pulls_back_by_it() {
    let registry = start(RegistryOptions::default());
    let engine = engine().await;
    let mut images = Images(Vec::new());
    let (local, id) = images.build("plain");
    let prefix = format!("{}/rivetos", registry.address());
    let (repo, tag) = repo_and_tag(&local);

    let events = Mutex::new(Vec::new());
    let record = |line: &str| events.lock().unwrap().push(line.to_string());
    let pushed = push(&engine, &local, &prefix, None, &record).await.unwrap_or_else(|e| panic!("{e}: {}", e.hint()));
    let expected = format!("{}/{repo}:{tag}", registry.address());
    assert_eq!(pushed.reference, expected);
    assert_eq!(pushed.pinned, format!("{expected}@{}", pushed.digest));
    let registry_digest = registry.manifest_digest(&repo, &tag).unwrap();
    assert_eq!(registry_digest.as_deref(), Some(pushed.digest.as_str()), "the registry's own digest");
    let events = events.into_inner().unwrap();
    assert!(events.iter().any(|e| e.contains(&pushed.digest)), "progress shows the digest: {events:?}");

    assert_eq!(remote_digest(&engine, &pushed.reference, None).await.unwrap(), Some(pushed.digest.clone()));
    let unknown_tag = format!("{}/{repo}:no-such-tag", registry.address());
    assert_eq!(remote_digest(&engine, &unknown_tag, None).await.unwrap(), None);
    let unknown_repo = format!("{}/rivetos/no-such-repo:v1", registry.address());
    assert_eq!(remote_digest(&engine, &unknown_repo, None).await.unwrap(), None);

    // Pushing again changes nothing.
    let again = push(&engine, &local, &prefix, None, &no_events).await.unwrap();
    assert_eq!(again, pushed);

    remove(&id);
    assert_eq!(image_id(&pushed.pinned), None, "the image is gone locally");
    pull(&engine, &pushed.pinned, None).await.unwrap_or_else(|e| panic!("{e}: {}", e.hint()));
    assert_eq!(image_id(&pushed.pinned).as_deref(), Some(id.as_str()), "the same image came back");
    assert_eq!(image_id(&pushed.reference).as_deref(), Some(id.as_str()), "and carries its tag");

    // A node that has the image asks the registry nothing: one inspect and one tag.
    let before = engine.calls();
    pull(&engine, &pushed.pinned, None).await.unwrap();
    assert_eq!(engine.calls() - before, 2);
}

#[tokio::test]
async fn credentials_from_a_docker_config_file_push_and_pull() {
    let registry = start(with_user());
    let engine = engine().await;
    let mut images = Images(Vec::new());
    let (local, id) = images.build("file");
    let (repo, tag) = repo_and_tag(&local);
    let config = config_dir(&format!(
        r#"{{"auths":{{"http://{}":{{"auth":"{}"}}}}}}"#,
        registry.address(),
        b64(&format!("{USER}:{PASSWORD}"))
    ));
    let vars = [("DOCKER_CONFIG", config.path().display().to_string())];
    let credentials = RegistryAuth::for_registry(&registry.address(), &env_of(&vars)).unwrap().expect("found");
    assert_eq!(credentials.source(), &CredentialSource::File { path: config.path().join("config.json") });

    let prefix = format!("{}/rivetos", registry.address());
    let pushed = push(&engine, &local, &prefix, Some(&credentials), &no_events)
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", e.hint()));
    assert_eq!(registry.manifest_digest(&repo, &tag).unwrap(), Some(pushed.digest.clone()));
    assert_eq!(
        remote_digest(&engine, &pushed.reference, Some(&credentials)).await.unwrap(),
        Some(pushed.digest.clone())
    );

    remove(&id);
    let err = pull(&engine, &pushed.pinned, None).await.unwrap_err();
    assert!(matches!(&err, RegistryError::Denied { user: None, .. }), "anonymous pull: {err}");
    pull(&engine, &pushed.pinned, Some(&credentials)).await.unwrap_or_else(|e| panic!("{e}: {}", e.hint()));
    assert_eq!(image_id(&pushed.pinned).as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn credentials_from_the_environment_push() {
    let registry = start(with_user());
    let engine = engine().await;
    let mut images = Images(Vec::new());
    let (local, _) = images.build("env");
    let (repo, tag) = repo_and_tag(&local);
    // The file holds a wrong password: the environment must win.
    let config = config_dir(&format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        registry.address(),
        b64(&format!("{USER}:{WRONG_PASSWORD}"))
    ));
    let vars = [
        (USERNAME_VAR, USER.to_string()),
        (PASSWORD_VAR, PASSWORD.to_string()),
        ("DOCKER_CONFIG", config.path().display().to_string()),
    ];
    let credentials = RegistryAuth::for_registry(&registry.address(), &env_of(&vars)).unwrap().expect("found");
    let prefix = format!("{}/rivetos", registry.address());
    let pushed = push(&engine, &local, &prefix, Some(&credentials), &no_events)
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", e.hint()));
    assert_eq!(registry.manifest_digest(&repo, &tag).unwrap(), Some(pushed.digest));
}

#[tokio::test]
async fn a_wrong_password_is_denied_naming_the_user_and_never_the_password() {
    let registry = start(with_user());
    let engine = engine().await;
    let mut images = Images(Vec::new());
    let (local, _) = images.build("denied");
    let (repo, tag) = repo_and_tag(&local);
    let prefix = format!("{}/rivetos", registry.address());
    let config = config_dir(&format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        registry.address(),
        b64(&format!("{USER}:{WRONG_PASSWORD}"))
    ));
    let vars = [("DOCKER_CONFIG", config.path().display().to_string())];
    let wrong = RegistryAuth::for_registry(&registry.address(), &env_of(&vars)).unwrap().expect("found");

    let err = push(&engine, &local, &prefix, Some(&wrong), &no_events).await.unwrap_err();
    let RegistryError::Denied { registry: denied_by, user, origin, .. } = &err else { panic!("not Denied: {err:?}") };
    assert_eq!((denied_by.as_str(), user.as_deref()), (registry.address().as_str(), Some(USER)));
    assert_eq!(origin.as_ref(), Some(wrong.source()));
    let said = format!("{}\nhint: {}", everything_said(&err), err.hint());
    assert!(said.contains(USER) && said.contains("config.json"), "names the user and the file: {said}");
    assert!(said.contains(&format!("docker login {}", registry.address())), "{said}");
    assert!(!said.contains(WRONG_PASSWORD) && !said.contains(PASSWORD), "leaks a password: {said}");
    assert_eq!(registry.manifest_digest(&repo, &tag).unwrap(), None, "nothing was stored");

    let err = remote_digest(&engine, &format!("{prefix}/x:y"), Some(&wrong)).await.unwrap_err();
    assert!(matches!(&err, RegistryError::Denied { user: Some(u), .. } if u == USER), "{err:?}");
    let err = push(&engine, &local, &prefix, None, &no_events).await.unwrap_err();
    assert!(matches!(&err, RegistryError::Denied { user: None, .. }), "{err:?}");
    assert!(err.hint().contains("docker login"), "{}", err.hint());
}

#[tokio::test]
async fn an_unreachable_registry_fails_naming_its_address() {
    let engine = engine().await;
    let mut images = Images(Vec::new());
    let (local, _) = images.build("unreachable");
    // A loopback port nothing listens on.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let prefix = format!("{address}/rivetos");

    let err = push(&engine, &local, &prefix, None, &no_events).await.unwrap_err();
    assert!(matches!(&err, RegistryError::Unreachable { registry, .. } if *registry == address), "{err:?}");
    assert!(err.to_string().contains(&address), "{err}");
    let err = remote_digest(&engine, &format!("{prefix}/x:y"), None).await.unwrap_err();
    assert!(matches!(&err, RegistryError::Unreachable { .. }), "{err:?}");
    let pinned = format!("{prefix}/x:y@sha256:{}", "0".repeat(64));
    let err = pull(&engine, &pinned, None).await.unwrap_err();
    assert!(matches!(&err, RegistryError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_missing_local_image_or_a_bad_reference_fails_before_any_push() {
    let engine = engine().await;
    let err =
        push(&engine, "rivet-registry-test-absent:nope", "127.0.0.1:9/rivetos", None, &no_events).await.unwrap_err();
    assert!(matches!(err, RegistryError::LocalMissing { .. }), "{err:?}");
    for bad in ["no-tag", "ghcr.io/org/agent:v1"] {
        let err = push(&engine, bad, "127.0.0.1:9/rivetos", None, &no_events).await.unwrap_err();
        assert!(matches!(err, RegistryError::Reference { .. }), "{bad}: {err:?}");
    }
}

/// A node told `images: pull` (`docker::ship::pull`) against a second, empty engine (a
/// dockerd of its own, `testkit::dockerd`): the image is pushed once from this machine's
/// engine, the node's engine pulls it by digest with the registry's credentials, tags it as
/// containers name it, and its image ID is the one built here. A second delivery moves
/// nothing; a node without credentials is denied, naming nobody's password.
#[tokio::test]
async fn a_node_without_the_image_pulls_it_by_digest_and_gets_the_same_image_id() {
    use rivet_targets::docker::ship::{self, Pulled, ShipError};
    use rivet_targets::registry::{Ensured, ensure_pushed};

    let registry = start(with_user());
    let control = engine().await;
    let mut images = Images(Vec::new());
    let (local, id) = images.build("pull");
    let node = testkit::dockerd::Dockerd::start().unwrap_or_else(|e| panic!("a second dockerd starts: {e:#}"));
    let socket = node.host().strip_prefix("unix://").unwrap().to_string();
    let node_engine = docker::connect("n2", &Endpoint::Unix(socket), &TcpSecurity::Unset)
        .await
        .unwrap_or_else(|err| panic!("the second engine answers: {err}\n{}", node.log()));
    assert!(node_engine.call().inspect_image(&local).await.is_err(), "the new engine starts without the image");

    let credentials = Credentials::with_password(USER, PASSWORD, CredentialSource::Environment);
    let prefix = format!("{}/rivetos", registry.address());
    let first = ensure_pushed(&control, &local, &prefix, Some(&credentials), &no_events)
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", e.hint()));
    let Ensured::Pushed(pushed) = &first else { panic!("the registry had no such tag: {first:?}") };
    let again = ensure_pushed(&control, &local, &prefix, Some(&credentials), &no_events).await.unwrap();
    assert_eq!(again, Ensured::Present(pushed.pinned.clone()), "a tag the registry has is not pushed again");
    assert!(again.detail().starts_with("in the registry already (sha256:"), "{}", again.detail());

    let denied = ship::pull(&control, &node_engine, &local, &pushed.pinned, None).await.unwrap_err();
    let said = everything_said(&denied);
    assert!(matches!(denied, ShipError::Pull { .. }) && said.contains("denied"), "{said}");
    assert!(!said.contains(PASSWORD), "{said}");

    let pulled = ship::pull(&control, &node_engine, &local, &pushed.pinned, Some(&credentials))
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", everything_said(&e), node.log()));
    assert_eq!(pulled, Pulled::Pulled);
    let on_node = node_engine.call().inspect_image(&local).await.expect("tagged as containers name it");
    assert_eq!(on_node.id.as_deref(), Some(id.as_str()), "the image ID built here");
    let digests = on_node.repo_digests.unwrap_or_default();
    assert!(digests.iter().any(|d| pushed.pinned.ends_with(d.rsplit_once('@').unwrap().1)), "{digests:?}");
    let twice = ship::pull(&control, &node_engine, &local, &pushed.pinned, Some(&credentials)).await.unwrap();
    assert_eq!(twice, Pulled::Present);
}
