//! A release for LXC containers, from the agent image built from source as for Docker
//! (content-hash tags, `docker::build`): the image's `/opt/rivetos` tree as a tarball whose
//! paths are relative to it, what `provision::install_release` unpacks into
//! `/opt/rivetos/releases/<rev>`. Built once per rollout on this machine's engine, shipped to
//! every container: the containers need no compiler, no Docker and no registry.

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::TryStreamExt;

use crate::docker::Engine;

/// The tree a release is made of, in the agent image (the RivetOS checkout).
pub const TREE: &str = "/opt/rivetos";

/// Why a release could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot read {TREE} from image {image} on {engine}")]
    Engine {
        image: String,
        engine: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("the archive of {TREE} from image {image} is not a tar archive: {problem}")]
    Archive { image: String, problem: String },
}

/// `image`'s [`TREE`] as a tarball with paths relative to it: read from a created (never
/// started) container, which is removed again on every path.
pub async fn from_image(engine: &Engine, image: &str) -> Result<Vec<u8>, ReleaseError> {
    let failed = |source| ReleaseError::Engine { image: image.to_string(), engine: engine.address.clone(), source };
    let body = ContainerCreateBody { image: Some(image.to_string()), ..ContainerCreateBody::default() };
    let name = format!("rivetctl-release-{}-{}", std::process::id(), image_tag(image));
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = engine.call().create_container(Some(options), body).await.map_err(failed)?;
    let download = DownloadFromContainerOptionsBuilder::default().path(TREE).build();
    let archive: Result<Vec<u8>, _> = engine
        .call()
        .download_from_container(&created.id, Some(download))
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await;
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = engine.call().remove_container(&created.id, Some(remove)).await;
    relative(&archive.map_err(failed)?).map_err(|problem| ReleaseError::Archive { image: image.to_string(), problem })
}

/// The tag part of an image reference, safe in a container name.
fn image_tag(image: &str) -> String {
    let tag = image.rsplit(':').next().unwrap_or(image);
    tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect()
}

/// The engine's archive of a directory (`rivetos/…`, the directory itself first) made
/// relative to that directory: its own entry dropped, the first path component stripped.
fn relative(archive: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = tar::Builder::new(Vec::new());
    out.follow_symlinks(false);
    let mut input = tar::Archive::new(archive);
    for entry in input.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let mut parts = path.components();
        parts.next();
        let rest = parts.as_path().to_path_buf();
        if rest.as_os_str().is_empty() {
            continue;
        }
        let mut header = entry.header().clone();
        let link = entry.link_name().map_err(|e| e.to_string())?.map(|l| l.into_owned());
        match link {
            Some(target) => out.append_link(&mut header, &rest, target).map_err(|e| e.to_string())?,
            None => out.append_data(&mut header, &rest, &mut entry).map_err(|e| e.to_string())?,
        }
    }
    out.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_becomes_relative_to_the_tree() {
        let mut engine_archive = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        dir.set_cksum();
        engine_archive.append_data(&mut dir.clone(), "rivetos/", std::io::empty()).unwrap();
        engine_archive.append_data(&mut dir, "rivetos/bin/", std::io::empty()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o755);
        file.set_size(5);
        file.set_cksum();
        engine_archive.append_data(&mut file, "rivetos/bin/rivetos", &b"#!/sh"[..]).unwrap();
        let relative = relative(&engine_archive.into_inner().unwrap()).unwrap();
        let mut archive = tar::Archive::new(relative.as_slice());
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["bin", "bin/rivetos"]);
        assert_eq!(image_tag("rivetos-agent:81e41e8bfc76"), "81e41e8bfc76");
    }
}
