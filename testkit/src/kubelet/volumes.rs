//! A pod's volumes made real on the Docker host, and the mounts of one container.
//!
//! - `configMap`, `secret`, `downwardAPI`, `projected` (of those three): files written into a
//!   per-pod directory under the kubelet's own temp dir, bind-mounted read-only.
//! - `emptyDir`: a named Docker volume per pod (an anonymous volume could not be shared by two
//!   containers of the pod), removed with the pod.
//! - `persistentVolumeClaim`: the named Docker volume `rtk-pvc-<ns>-<claim>-<instance>`; it
//!   outlives pods, so a re-created StatefulSet pod finds its data, and is removed when the
//!   kubelet shuts down. (The instance suffix keeps two kubelets of parallel tests apart.)
//! - `hostPath`: bind-mounted as is.
//!
//! `fsGroup` is applied to Docker volumes the way the kubelet applies it (group ownership and
//! `g+rw`, setgid directories) through the volume's mount point, which exists on this host
//! because the engine is local. Any other volume type stops the pod with a message.

use super::Context;
use super::refs::{self, Keys, Source};
use bollard::models::{Mount, MountType, MountVolumeOptions};
use bollard::query_parameters::ListVolumesOptionsBuilder;
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume, VolumeMount};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where one pod volume lives on the host.
#[derive(Debug, Clone)]
pub(crate) enum Prepared {
    /// A host directory (kubelet-written files: always read-only; hostPath: as mounted).
    HostDir { path: PathBuf, read_only: bool },
    /// A named Docker volume and its mount point on this host.
    DockerVolume { name: String, mountpoint: PathBuf, read_only: bool },
}

/// The volumes of one pod, by volume name. (Its emptyDir volumes carry the pod uid label, by
/// which they are removed with the pod.)
#[derive(Debug, Default)]
pub(crate) struct PodVolumes {
    pub by_name: HashMap<String, Prepared>,
}

/// Makes every volume of `pod` (idempotent: files are rewritten, existing Docker volumes reused).
pub(crate) async fn prepare(ctx: &Context, pod: &Pod, pod_dir: &Path, pod_ip: &str) -> Result<PodVolumes, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let fs_group = spec.security_context.as_ref().and_then(|sc| sc.fs_group);
    let mut prepared = PodVolumes::default();
    for volume in spec.volumes.iter().flatten() {
        let failed = |message: String| format!("volume {:?}: {message}", volume.name);
        let dir = pod_dir.join("volumes").join(&volume.name);
        let result = if volume.config_map.is_some()
            || volume.secret.is_some()
            || volume.downward_api.is_some()
            || volume.projected.is_some()
        {
            let files = volume_files(ctx, &namespace, pod, volume, pod_ip).await.map_err(failed)?;
            write_files(&dir, &files, fs_group).map_err(failed)?;
            Prepared::HostDir { path: dir, read_only: true }
        } else if volume.empty_dir.is_some() {
            let name = format!("rtk-ed-{}-{}", short(&uid), volume.name);
            let mut labels = ctx.labels();
            labels.insert(super::LABEL_POD_UID.to_string(), uid.clone());
            docker_volume(ctx, &name, labels, fs_group, false).await.map_err(failed)?
        } else if let Some(claim) = &volume.persistent_volume_claim {
            let name = format!("rtk-pvc-{namespace}-{}-{}", claim.claim_name, ctx.instance);
            docker_volume(ctx, &name, ctx.labels(), fs_group, claim.read_only.unwrap_or(false)).await.map_err(failed)?
        } else if let Some(host) = &volume.host_path {
            let path = PathBuf::from(&host.path);
            if matches!(host.type_.as_deref(), Some("DirectoryOrCreate")) {
                std::fs::create_dir_all(&path).map_err(|err| failed(format!("creating {}: {err}", path.display())))?;
            }
            Prepared::HostDir { path, read_only: false }
        } else {
            return Err(failed("this volume type is not supported by the test kubelet".to_string()));
        };
        prepared.by_name.insert(volume.name.clone(), result);
    }
    Ok(prepared)
}

/// The Docker mounts of one container's `volumeMounts`.
pub(crate) fn mounts(volumes: &PodVolumes, volume_mounts: &[VolumeMount]) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for mount in volume_mounts {
        let volume = volumes
            .by_name
            .get(&mount.name)
            .ok_or_else(|| format!("volumeMount {:?} names no volume of the pod", mount.name))?;
        let sub_path = mount.sub_path.as_deref().filter(|p| !p.is_empty());
        let read_only = mount.read_only.unwrap_or(false);
        let bind = |root: &Path, volume_read_only: bool| -> Result<Mount, String> {
            let source = match sub_path {
                Some(sub) => {
                    let path = root.join(sub);
                    if !path.exists() {
                        std::fs::create_dir_all(&path)
                            .map_err(|err| format!("creating subPath {}: {err}", path.display()))?;
                    }
                    path
                }
                None => root.to_path_buf(),
            };
            Ok(Mount {
                target: Some(mount.mount_path.clone()),
                source: Some(source.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(read_only || volume_read_only),
                ..Default::default()
            })
        };
        mounts.push(match volume {
            Prepared::HostDir { path, read_only: ro } => bind(path, *ro)?,
            // A subPath of a named volume is a bind mount of a directory under its mount point
            // (Docker 20.10 has no volume subpaths).
            Prepared::DockerVolume { mountpoint, read_only: ro, .. } if sub_path.is_some() => bind(mountpoint, *ro)?,
            Prepared::DockerVolume { name, read_only: ro, .. } => Mount {
                target: Some(mount.mount_path.clone()),
                source: Some(name.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(read_only || *ro),
                // A Kubernetes volume starts empty: no copy of the image's files.
                volume_options: Some(MountVolumeOptions { no_copy: Some(true), ..Default::default() }),
                ..Default::default()
            },
        });
    }
    Ok(mounts)
}

/// One file of a kubelet-written volume: relative path, content, mode.
type File = (String, Vec<u8>, u32);

async fn volume_files(
    ctx: &Context,
    namespace: &str,
    pod: &Pod,
    volume: &Volume,
    pod_ip: &str,
) -> Result<Vec<File>, String> {
    let mut files = Vec::new();
    if let Some(source) = &volume.config_map {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        let optional = source.optional.unwrap_or(false);
        let keys = refs::required_keys(&ctx.client, namespace, Source::ConfigMap, &source.name, optional).await?;
        files.extend(key_files(&keys, source.items.as_deref(), mode, optional)?);
    }
    if let Some(source) = &volume.secret {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        let optional = source.optional.unwrap_or(false);
        let name = source.secret_name.as_deref().unwrap_or_default();
        let keys = refs::required_keys(&ctx.client, namespace, Source::Secret, name, optional).await?;
        files.extend(key_files(&keys, source.items.as_deref(), mode, optional)?);
    }
    if let Some(source) = &volume.downward_api {
        let mode = source.default_mode.unwrap_or(0o644) as u32;
        files.extend(downward_files(pod, source.items.as_deref().unwrap_or_default(), mode, pod_ip)?);
    }
    if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(0o644) as u32;
        for source in projected.sources.iter().flatten() {
            if let Some(map) = &source.config_map {
                let optional = map.optional.unwrap_or(false);
                let keys = refs::required_keys(&ctx.client, namespace, Source::ConfigMap, &map.name, optional).await?;
                files.extend(key_files(&keys, map.items.as_deref(), mode, optional)?);
            } else if let Some(secret) = &source.secret {
                let optional = secret.optional.unwrap_or(false);
                let keys = refs::required_keys(&ctx.client, namespace, Source::Secret, &secret.name, optional).await?;
                files.extend(key_files(&keys, secret.items.as_deref(), mode, optional)?);
            } else if let Some(downward) = &source.downward_api {
                files.extend(downward_files(pod, downward.items.as_deref().unwrap_or_default(), mode, pod_ip)?);
            } else {
                return Err("projected sources other than configMap, secret and downwardAPI are not supported".into());
            }
        }
    }
    Ok(files)
}

fn key_files(keys: &Keys, items: Option<&[KeyToPath]>, mode: u32, optional: bool) -> Result<Vec<File>, String> {
    let Some(items) = items else {
        return Ok(keys.iter().map(|(key, value)| (key.clone(), value.clone(), mode)).collect());
    };
    let mut files = Vec::new();
    for item in items {
        match keys.get(&item.key) {
            Some(value) => files.push((item.path.clone(), value.clone(), item.mode.map_or(mode, |m| m as u32))),
            None if optional => {}
            None => return Err(format!("references non-existent key {:?}", item.key)),
        }
    }
    Ok(files)
}

fn downward_files(pod: &Pod, items: &[DownwardAPIVolumeFile], mode: u32, pod_ip: &str) -> Result<Vec<File>, String> {
    let mut files = Vec::new();
    for item in items {
        let Some(field) = &item.field_ref else {
            return Err(format!("downwardAPI item {:?}: only fieldRef is supported", item.path));
        };
        let value = refs::field(pod, &field.field_path, pod_ip)?;
        files.push((item.path.clone(), value.into_bytes(), item.mode.map_or(mode, |m| m as u32)));
    }
    Ok(files)
}

fn write_files(dir: &Path, files: &[File], fs_group: Option<i64>) -> Result<(), String> {
    let io = |path: &Path, err: std::io::Error| format!("writing {}: {err}", path.display());
    std::fs::create_dir_all(dir).map_err(|err| io(dir, err))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(|err| io(dir, err))?;
    for (relative, content, mode) in files {
        if Path::new(relative).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            return Err(format!("file path {relative:?} leaves the volume"));
        }
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| io(parent, err))?;
        }
        std::fs::write(&path, content).map_err(|err| io(&path, err))?;
        let mut mode = *mode & 0o7777;
        if let Some(gid) = fs_group {
            std::os::unix::fs::chown(&path, Some(0), Some(gid as u32)).map_err(|err| io(&path, err))?;
            mode |= 0o040;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|err| io(&path, err))?;
    }
    Ok(())
}

/// Creates the named volume unless it exists, labelled as this kubelet's, and applies `fsGroup`.
async fn docker_volume(
    ctx: &Context,
    name: &str,
    labels: HashMap<String, String>,
    fs_group: Option<i64>,
    read_only: bool,
) -> Result<Prepared, String> {
    let existing = ctx.docker.inspect_volume(name).await.ok();
    let volume = match existing {
        Some(volume) => volume,
        None => {
            let options = bollard::models::VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(labels),
                ..Default::default()
            };
            ctx.docker.create_volume(options).await.map_err(|err| format!("creating Docker volume {name}: {err}"))?
        }
    };
    let mountpoint = PathBuf::from(&volume.mountpoint);
    if let Some(gid) = fs_group {
        apply_fs_group(&mountpoint, gid as u32).map_err(|err| {
            format!("applying fsGroup {gid} to Docker volume {name} at {}: {err}", mountpoint.display())
        })?;
    }
    Ok(Prepared::DockerVolume { name: name.to_string(), mountpoint, read_only })
}

/// Group-owns everything under `root` by `gid` with `g+rw` (and `g+xs` on directories), like
/// the kubelet's `fsGroupChangePolicy: OnRootMismatch`: nothing is done when the root already
/// has that group.
fn apply_fs_group(root: &Path, gid: u32) -> std::io::Result<()> {
    if std::fs::metadata(root)?.gid() == gid {
        return Ok(());
    }
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        std::os::unix::fs::chown(&path, None, Some(gid))?;
        let mut mode = meta.mode() & 0o7777 | 0o060;
        if meta.is_dir() {
            mode |= 0o2010;
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Names of the Docker volumes that carry `label` (`key=value`).
pub(crate) async fn labelled_volumes(ctx: &Context, label: &str) -> Result<Vec<String>, bollard::errors::Error> {
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let list = ctx.docker.list_volumes(Some(ListVolumesOptionsBuilder::default().filters(&filters).build())).await?;
    Ok(list.volumes.unwrap_or_default().into_iter().map(|volume| volume.name).collect())
}

/// The first 8 characters of a uid, for names.
pub(crate) fn short(uid: &str) -> &str {
    uid.get(..8).unwrap_or(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_select_and_rename_keys() {
        let keys: Keys = [("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())].into();
        let all = key_files(&keys, None, 0o644, false).expect("all keys");
        assert_eq!(all, [("a".to_string(), b"1".to_vec(), 0o644), ("b".to_string(), b"2".to_vec(), 0o644)]);
        let items = [KeyToPath { key: "b".into(), path: "dir/b.txt".into(), mode: Some(0o400) }];
        let some = key_files(&keys, Some(&items), 0o644, false).expect("items");
        assert_eq!(some, [("dir/b.txt".to_string(), b"2".to_vec(), 0o400)]);
        let missing = [KeyToPath { key: "c".into(), path: "c".into(), mode: None }];
        assert!(key_files(&keys, Some(&missing), 0o644, false).is_err());
        assert_eq!(key_files(&keys, Some(&missing), 0o644, true), Ok(vec![]));
    }

    #[test]
    fn written_files_have_their_modes_and_stay_inside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("vol");
        write_files(&target, &[("x/y".into(), b"hi".to_vec(), 0o600)], None).expect("write");
        let meta = std::fs::metadata(target.join("x/y")).expect("written");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(target.join("x/y")).expect("read"), b"hi");
        assert!(write_files(&target, &[("../escape".into(), vec![], 0o644)], None).is_err());
    }

    #[test]
    fn fs_group_is_applied_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/f"), b"x").expect("write");
        apply_fs_group(dir.path(), 4321).expect("apply");
        let meta = std::fs::metadata(dir.path().join("sub/f")).expect("stat");
        assert_eq!(meta.gid(), 4321);
        assert_eq!(meta.mode() & 0o060, 0o060);
        assert_eq!(std::fs::metadata(dir.path().join("sub")).expect("stat").mode() & 0o2000, 0o2000);
    }
}
