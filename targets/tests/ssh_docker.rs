//! The Docker Engine of an SSH-reached host, through russh: this machine's engine
//! (/var/run/docker.sock) behind a real sshd on loopback.

mod sshd;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, EventsOptionsBuilder, ImportImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use hyper::body::Bytes;
use rivet_targets::ssh::{SshOptions, connect, connect_engine, docker_over_ssh};
use sshd::Sshd;

fn trusted(sshd: &Sshd) -> SshOptions {
    SshOptions {
        known_hosts: sshd.known_hosts(),
        identity_file: Some(sshd.client_key()),
        agent_socket: None,
        pinned: None,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(60),
    }
}

/// A name no other test run uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn engine_answers_through_ssh() {
    let sshd = Sshd::start();
    let (engine, session) = connect_engine("node-2", sshd.host(), sshd.port(), sshd.user(), &trusted(&sshd))
        .await
        .expect("engine over ssh");
    assert_eq!(engine.node, "node-2");
    assert_eq!(engine.address, format!("ssh://{}@127.0.0.1:{}", sshd.user(), sshd.port()));

    let local = Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let version = engine.call().version().await.expect("version through ssh");
    assert_eq!(version.api_version, local.version().await.unwrap().api_version);
    assert_eq!(engine.docker.client_version().to_string(), local.client_version().to_string(), "negotiated the same");

    let remote =
        engine.call().list_containers(Some(ListContainersOptionsBuilder::default().all(true).build())).await.unwrap();
    let here = local.list_containers(Some(ListContainersOptionsBuilder::default().all(true).build())).await.unwrap();
    let ids = |list: &[bollard::models::ContainerSummary]| {
        let mut ids: Vec<_> = list.iter().filter_map(|c| c.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&remote), ids(&here));
    assert_eq!(engine.calls(), 2);

    // The session stays usable for commands next to the engine.
    assert!(session.exec("true").await.unwrap().success());
}

#[tokio::test]
async fn wrong_socket_is_a_clear_error() {
    let sshd = Sshd::start();
    let session = Arc::new(connect(sshd.host(), sshd.port(), sshd.user(), &trusted(&sshd)).await.unwrap());
    let err = docker_over_ssh(session, "/nonexistent/docker.sock").await.expect_err("no engine there");
    let chain = format!("{:?}", error_chain(&err));
    assert!(chain.contains("/nonexistent/docker.sock"), "{chain}");
    // The hint is the one for the channel that could not be opened.
    assert!(err.hint().contains("AllowStreamLocalForwarding") && err.hint().contains("docker"), "{}", err.hint());
}

fn error_chain(err: &dyn std::error::Error) -> Vec<String> {
    let mut chain = vec![err.to_string()];
    let mut source = err.source();
    while let Some(next) = source {
        chain.push(next.to_string());
        source = next.source();
    }
    chain
}

/// A tar holding one file: the root filesystem of a tiny image.
fn rootfs_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let content = b"shipped over ssh\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "hello.txt", &content[..]).unwrap();
    builder.into_inner().unwrap()
}

/// `docker import` of a one-file tar on the local engine; returns the image ID.
async fn import_tiny_image(docker: &Docker, repo: &str) -> String {
    let options = CreateImageOptionsBuilder::default().from_src("-").repo(repo).tag("v1").build();
    docker
        .create_image(Some(options), Some(bollard::body_full(rootfs_tar().into())), None)
        .try_collect::<Vec<_>>()
        .await
        .expect("docker import");
    docker.inspect_image(&format!("{repo}:v1")).await.unwrap().id.unwrap()
}

#[tokio::test]
async fn image_ships_over_ssh_and_comes_back_identical() {
    let sshd = Sshd::start();
    let local = Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let repo = unique("rivet-ssh-ship");
    let image = format!("{repo}:v1");
    let id = import_tiny_image(&local, &repo).await;

    let (engine, _session) =
        connect_engine("node", sshd.host(), sshd.port(), sshd.user(), &trusted(&sshd)).await.unwrap();
    let remote = engine.call();

    // `docker save` through SSH, as a stream of chunks.
    let mut chunks = 0;
    let mut saved = Vec::new();
    let mut export = remote.export_image(&image);
    while let Some(chunk) = export.next().await {
        saved.extend_from_slice(&chunk.expect("export chunk"));
        chunks += 1;
    }
    assert!(saved.len() > 1024 && chunks >= 1, "{} bytes in {chunks} chunks", saved.len());

    remote.remove_image(&image, Some(RemoveImageOptionsBuilder::default().force(true).build()), None).await.unwrap();
    assert!(local.inspect_image(&image).await.is_err(), "removed through ssh");

    // `docker load` through SSH from a stream of small chunks (a chunked request body).
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        saved.chunks(7_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let load = remote.import_image_stream(
        ImportImageOptionsBuilder::default().quiet(true).build(),
        futures_util::stream::iter(pieces),
        None,
    );
    load.try_collect::<Vec<_>>().await.expect("docker load through ssh");

    let loaded = remote.inspect_image(&image).await.expect("the image is back");
    assert_eq!(loaded.id.unwrap(), id, "same image ID after the round trip");
    local.remove_image(&image, Some(RemoveImageOptionsBuilder::default().force(true).build()), None).await.unwrap();
}

#[tokio::test]
async fn events_stream_while_they_happen() {
    let sshd = Sshd::start();
    let local = Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let repo = unique("rivet-ssh-events");
    import_tiny_image(&local, &repo).await;

    let (engine, _session) =
        connect_engine("node", sshd.host(), sshd.port(), sshd.user(), &trusted(&sshd)).await.unwrap();
    let filters = HashMap::from([
        ("type".to_string(), vec!["image".to_string()]),
        ("event".to_string(), vec!["tag".to_string()]),
    ]);
    let mut events = engine.call().events(Some(EventsOptionsBuilder::default().filters(&filters).build()));

    // The events response never ends: an event can only arrive if the body streams.
    let tagger = local.clone();
    let source = format!("{repo}:v1");
    let tag = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tagger
            .tag_image(
                &source,
                Some(TagImageOptionsBuilder::default().repo(&source.replace(":v1", "")).tag("v2").build()),
            )
            .await
            .unwrap();
    });
    let event = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("the tag event arrives while the stream is open")
        .expect("a stream item")
        .expect("an event");
    assert_eq!(event.action.as_deref(), Some("tag"));
    tag.await.unwrap();
    drop(events);

    for tag in ["v1", "v2"] {
        local
            .remove_image(
                &format!("{repo}:{tag}"),
                Some(RemoveImageOptionsBuilder::default().force(true).build()),
                None,
            )
            .await
            .unwrap();
    }
}

/// An interrupted ship (the stream breaks half-way, as when rivetctl is aborted or the
/// SSH connection drops) leaves no image on the node: `docker load` is all or nothing.
#[tokio::test]
async fn a_ship_cut_half_way_loads_nothing() {
    let sshd = Sshd::start();
    let local = Docker::connect_with_local_defaults().unwrap().negotiate_version().await.unwrap();
    let repo = unique("rivet-ssh-cut");
    let image = format!("{repo}:v1");
    let id = import_tiny_image(&local, &repo).await;
    let saved: Vec<u8> =
        local.export_image(&image).try_collect::<Vec<_>>().await.unwrap().into_iter().flatten().collect();
    local.remove_image(&image, Some(RemoveImageOptionsBuilder::default().force(true).build()), None).await.unwrap();

    let (engine, _session) =
        connect_engine("node", sshd.host(), sshd.port(), sshd.user(), &trusted(&sshd)).await.unwrap();
    let half = saved.len() / 2;
    let broken: Vec<Result<Bytes, std::io::Error>> =
        vec![Ok(Bytes::copy_from_slice(&saved[..half])), Err(std::io::Error::other("the sender went away"))];
    let load = engine.call().import_image_stream(
        ImportImageOptionsBuilder::default().quiet(true).build(),
        futures_util::stream::iter(broken),
        None,
    );
    assert!(load.try_collect::<Vec<_>>().await.is_err(), "a broken stream is an error");
    assert!(local.inspect_image(&image).await.is_err(), "no partial image was tagged");
    assert!(local.inspect_image(&id).await.is_err(), "no partial image exists under its ID");

    // The whole stream then loads, with the same ID.
    let whole: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from(saved))];
    engine
        .call()
        .import_image_stream(
            ImportImageOptionsBuilder::default().quiet(true).build(),
            futures_util::stream::iter(whole),
            None,
        )
        .try_collect::<Vec<_>>()
        .await
        .expect("docker load");
    assert_eq!(local.inspect_image(&image).await.unwrap().id.unwrap(), id);
    local.remove_image(&image, Some(RemoveImageOptionsBuilder::default().force(true).build()), None).await.unwrap();
}
