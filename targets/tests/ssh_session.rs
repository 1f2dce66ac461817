//! `targets::ssh` against a real sshd on loopback: host key checks, key and agent logins,
//! commands, timeouts, streams to Unix sockets and TCP addresses, an endpoint going down.

mod sshd;

use std::time::{Duration, Instant};

use rivet_targets::ssh::{Session, SshError, SshOptions, connect};
use sshd::Sshd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Options that trust `sshd` and log in with its client key.
fn trusted(sshd: &Sshd) -> SshOptions {
    SshOptions {
        known_hosts: sshd.known_hosts(),
        identity_file: Some(sshd.client_key()),
        agent_socket: None,
        pinned: None,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
    }
}

async fn login(sshd: &Sshd, options: &SshOptions) -> Result<Session, SshError> {
    connect(sshd.host(), sshd.port(), sshd.user(), options).await
}

#[tokio::test]
async fn exec_returns_status_stdout_and_stderr() {
    let sshd = Sshd::start();
    let session = login(&sshd, &trusted(&sshd)).await.expect("log in with the identity file");
    assert_eq!(session.address(), format!("{}@127.0.0.1:{}", sshd.user(), sshd.port()));

    let output = session.exec("printf out; printf err >&2; exit 3").await.unwrap();
    assert_eq!((output.status, &output.stdout[..], &output.stderr[..]), (3, &b"out"[..], &b"err"[..]));
    assert!(!output.success());

    // Channels are independent: several commands on one connection, also concurrently.
    let (a, b) = tokio::join!(session.exec("echo a"), session.exec("id -un"));
    assert_eq!(a.unwrap().stdout, b"a\n");
    assert_eq!(String::from_utf8(b.unwrap().stdout).unwrap().trim(), sshd.user());

    // Larger than one SSH window (2 MiB): flow control works.
    let big = session.exec("head -c 5000000 /dev/zero").await.unwrap();
    assert!(big.success());
    assert_eq!(big.stdout.len(), 5_000_000);
}

#[tokio::test]
async fn command_timeout_names_the_command_and_stops_it() {
    let sshd = Sshd::start();
    let options = SshOptions { command_timeout: Duration::from_millis(500), ..trusted(&sshd) };
    let session = login(&sshd, &options).await.unwrap();

    // Writes every 100 ms, so it notices its channel closing even where sshd refuses the
    // SIGTERM request (OpenSSH does for root logins: no privilege separation after login).
    let command = "while :; do echo tick-4711; sleep 0.1; done";
    let started = Instant::now();
    let err = session.exec(command).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    match &err {
        SshError::Timeout { command: named, timeout, .. } => {
            assert_eq!(named, command);
            assert_eq!(*timeout, Duration::from_millis(500));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.to_string().contains(&format!("`{command}`")) && err.to_string().contains("500ms"), "{err}");

    // The connection survives, and the remote command ends.
    let mut gone = false;
    for _ in 0..50 {
        let check = session.exec_with_timeout("pgrep -f 'tick-[4]711' || true", Duration::from_secs(5)).await.unwrap();
        if check.stdout.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the timed-out command is still running\n{}", sshd.log());
}

#[tokio::test]
async fn unknown_host_key_is_refused_with_its_fingerprint() {
    let sshd = Sshd::start();
    let expected = sshd.fingerprint(&sshd.host_key_pub());
    let missing = sshd.dir().join("no-such-known_hosts");
    for known_hosts in [sshd.empty_known_hosts(), missing] {
        let options = SshOptions { known_hosts: known_hosts.clone(), ..trusted(&sshd) };
        let err = login(&sshd, &options).await.expect_err("an unknown host must be refused");
        match &err {
            SshError::UnknownHostKey { host, port, fingerprint, key_type, .. } => {
                assert_eq!((host.as_str(), *port), ("127.0.0.1", sshd.port()));
                assert_eq!(fingerprint, &expected);
                assert_eq!(key_type, "ssh-ed25519");
            }
            other => panic!("expected UnknownHostKey, got {other:?}"),
        }
        let hint = err.hint();
        let keyscan = format!("ssh-keyscan -p {} -t ed25519 127.0.0.1 >> {}", sshd.port(), known_hosts.display());
        assert!(hint.contains(&keyscan), "{hint}");
        assert!(hint.contains(&expected), "{hint}");
    }
}

#[tokio::test]
async fn key_recorded_for_another_port_does_not_count() {
    let sshd = Sshd::start();
    let known_hosts = sshd.dir().join("known_hosts_port22");
    let line =
        sshd.known_hosts_line(&sshd.host_key_pub()).replace(&format!("[127.0.0.1]:{}", sshd.port()), "127.0.0.1");
    std::fs::write(&known_hosts, line + "\n").unwrap();
    let options = SshOptions { known_hosts, ..trusted(&sshd) };
    let err = login(&sshd, &options).await.expect_err("refused");
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{err:?}");
}

#[tokio::test]
async fn changed_host_key_is_refused_loudly() {
    let sshd = Sshd::start();
    let impostor = sshd.new_key("impostor", "");
    let known_hosts = sshd.dir().join("known_hosts_changed");
    let content = format!(
        "# a comment\nother.example ssh-ed25519 {}\n{}\n",
        std::fs::read_to_string(impostor.with_extension("pub")).unwrap().split_whitespace().nth(1).unwrap(),
        sshd.known_hosts_line(&impostor.with_extension("pub")),
    );
    std::fs::write(&known_hosts, content).unwrap();
    let options = SshOptions { known_hosts: known_hosts.clone(), ..trusted(&sshd) };
    let err = login(&sshd, &options).await.expect_err("a changed key must be refused");
    match &err {
        SshError::HostKeyChanged { line, fingerprint, port, .. } => {
            assert_eq!(*line, 3);
            assert_eq!(*port, sshd.port());
            assert_eq!(fingerprint, &sshd.fingerprint(&sshd.host_key_pub()));
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
    assert!(err.to_string().contains("HAS CHANGED"), "{err}");
    assert!(err.hint().contains(&format!("ssh-keygen -R '[127.0.0.1]:{}' -f {}", sshd.port(), known_hosts.display())));

    // The right key anywhere for this host wins over a stale one (as in OpenSSH).
    let both = format!(
        "{}\n{}\n",
        sshd.known_hosts_line(&impostor.with_extension("pub")),
        sshd.known_hosts_line(&sshd.host_key_pub())
    );
    std::fs::write(&known_hosts, both).unwrap();
    login(&sshd, &options).await.expect("the recorded key matches");
}

#[tokio::test]
async fn hashed_known_hosts_entries_are_understood() {
    let sshd = Sshd::start();
    let known_hosts = sshd.known_hosts();
    let status = std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&known_hosts).output().unwrap();
    assert!(status.status.success());
    assert!(std::fs::read_to_string(&known_hosts).unwrap().starts_with("|1|"));
    let options = SshOptions { known_hosts, ..trusted(&sshd) };
    login(&sshd, &options).await.expect("a hashed entry trusts the host");
}

#[tokio::test]
async fn wrong_key_fails_with_auth_failed() {
    let sshd = Sshd::start();
    let wrong = sshd.new_key("wrong", "");
    let options = SshOptions { identity_file: Some(wrong.clone()), ..trusted(&sshd) };
    let err = login(&sshd, &options).await.expect_err("an unauthorized key must fail");
    match &err {
        SshError::AuthFailed { user, host, tried, .. } => {
            assert_eq!((user.as_str(), host.as_str()), (sshd.user(), "127.0.0.1"));
            assert_eq!(tried.len(), 1);
            assert!(tried[0].contains(&sshd.fingerprint(&wrong)), "{tried:?}");
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    assert!(err.hint().contains("authorized_keys"));
}

#[tokio::test]
async fn passphrase_protected_key_points_to_the_agent() {
    let sshd = Sshd::start();
    let locked = sshd.new_key("locked", "correct horse");
    let options = SshOptions { identity_file: Some(locked.clone()), ..trusted(&sshd) };
    let err = login(&sshd, &options).await.expect_err("no passphrase prompt");
    assert!(matches!(&err, SshError::IdentityEncrypted { path } if *path == locked), "{err:?}");
    assert!(err.hint().contains(&format!("ssh-add {}", locked.display())), "{}", err.hint());
}

#[tokio::test]
async fn agent_keys_are_tried_in_turn() {
    let sshd = Sshd::start();
    let agent = sshd.start_agent("agent");
    let wrong = sshd.new_key("wrong", "");
    agent.add(&wrong);
    let options =
        SshOptions { identity_file: None, agent_socket: Some(agent.socket().to_path_buf()), ..trusted(&sshd) };

    let err = login(&sshd, &options).await.expect_err("the agent holds no authorized key");
    match &err {
        SshError::AuthFailed { tried, .. } => {
            assert_eq!(tried.len(), 1, "{tried:?}");
            assert!(tried[0].contains(&sshd.fingerprint(&wrong)) && tried[0].contains("agent"), "{tried:?}");
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }

    agent.add(&sshd.client_key());
    let session = login(&sshd, &options).await.expect("the second agent key is authorized");
    assert_eq!(session.exec("echo via-agent").await.unwrap().stdout, b"via-agent\n");
}

#[tokio::test]
async fn missing_agent_and_identity_are_clear_errors() {
    let sshd = Sshd::start();
    let options =
        SshOptions { identity_file: None, agent_socket: Some(sshd.dir().join("no-agent.sock")), ..trusted(&sshd) };
    let err = login(&sshd, &options).await.expect_err("no agent");
    assert!(matches!(err, SshError::Agent { .. }), "{err:?}");
}

#[tokio::test]
async fn refused_and_silent_endpoints_name_the_address() {
    let sshd = Sshd::start();
    let options = SshOptions { connect_timeout: Duration::from_millis(700), ..trusted(&sshd) };

    let closed = sshd::free_port();
    let err = connect("127.0.0.1", closed, "nobody", &options).await.expect_err("nothing listens");
    assert!(matches!(err, SshError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{closed}")), "{err}");

    // Accepts TCP, never speaks SSH.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let err = connect("127.0.0.1", port, "nobody", &options).await.expect_err("silence times out");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(err, SshError::ConnectTimeout { timeout, .. } if timeout == Duration::from_millis(700)),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")) && err.to_string().contains("700ms"), "{err}");
    drop(silent);
}

#[tokio::test]
async fn unix_and_tcp_streams_reach_the_remote_side() {
    let sshd = Sshd::start();
    let session = login(&sshd, &trusted(&sshd)).await.unwrap();

    let socket = sshd.dir().join("echo.sock");
    let unix = tokio::net::UnixListener::bind(&socket).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let echo_unix = tokio::spawn(async move {
        let (mut stream, _) = unix.accept().await.unwrap();
        let (mut read, mut write) = stream.split();
        tokio::io::copy(&mut read, &mut write).await.unwrap();
    });
    let echo_tcp = tokio::spawn(async move {
        let (mut stream, _) = tcp.accept().await.unwrap();
        let (mut read, mut write) = stream.split();
        tokio::io::copy(&mut read, &mut write).await.unwrap();
    });

    for mut stream in [
        session.open_unix_stream(socket.to_str().unwrap()).await.unwrap(),
        session.open_tcp_stream("127.0.0.1", tcp_port).await.unwrap(),
    ] {
        stream.write_all(b"ping through ssh").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"ping through ssh");
    }
    echo_unix.await.unwrap();
    echo_tcp.await.unwrap();

    let err = session.open_unix_stream("/nonexistent/docker.sock").await.err().expect("no such socket");
    assert!(matches!(err, SshError::ChannelOpen { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/docker.sock"), "{err}");
}

#[tokio::test]
async fn http_get_goes_through_the_remote_host() {
    let sshd = Sshd::start();
    let session = login(&sshd, &trusted(&sshd)).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        let body = br#"{"status":"healthy","version":"1.2.3"}"#;
        let head =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        String::from_utf8(request).unwrap()
    });

    let (status, body) = session.http_get("127.0.0.1", port, "/health", Duration::from_secs(5)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, br#"{"status":"healthy","version":"1.2.3"}"#);
    let request = server.await.unwrap();
    assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
    assert!(request.to_ascii_lowercase().contains(&format!("host: 127.0.0.1:{port}")), "{request}");

    // A service that accepts and never answers: the probe's own timeout, naming the request.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let err = session.http_get("127.0.0.1", mute_port, "/health", Duration::from_millis(300)).await.unwrap_err();
    assert!(
        matches!(&err, SshError::Timeout { command, .. } if command == &format!("GET http://127.0.0.1:{mute_port}/health")),
        "{err:?}"
    );
}

#[tokio::test]
async fn endpoint_going_down_and_coming_back() {
    let mut sshd = Sshd::start();
    let options = trusted(&sshd);
    let session = std::sync::Arc::new(login(&sshd, &options).await.unwrap());
    assert!(session.exec("true").await.unwrap().success());

    // A command is running when the host goes down.
    let busy = {
        let session = std::sync::Arc::clone(&session);
        tokio::spawn(async move { session.exec("sleep 21").await })
    };
    loop {
        let running = session.exec("pgrep -f 'sleep 2[1]' || true").await.unwrap();
        if !running.stdout.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sshd.stop();
    let err = busy.await.unwrap().expect_err("the connection broke under the command");
    assert!(matches!(&err, SshError::Command { command, .. } if command == "sleep 21"), "{err:?}");

    let err = session.exec("true").await.expect_err("the host is down");
    assert!(matches!(err, SshError::ChannelOpen { .. } | SshError::Command { .. }), "{err:?}");
    let err = login(&sshd, &options).await.expect_err("nothing listens");
    assert!(matches!(err, SshError::Connect { .. }), "{err:?}");

    sshd.restart();
    let session = login(&sshd, &options).await.expect("same port, same host key");
    assert!(session.exec("true").await.unwrap().success());
    assert!(!session.is_closed());
    session.close().await.unwrap();
}
