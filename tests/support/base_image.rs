//! The examples' base image `rivetos-base:busybox`, created by the test command when it is
//! missing (it is not a system package: `examples/base-image/build.sh` makes it offline).
//!
//! nextest runs every test in its own process, many at once: the first process that finds
//! the image missing runs the script while holding an exclusive lock on a file in the target
//! directory; the others wait on the lock, then find the image there. Shared by the
//! end-to-end tests and the benchmarks through `#[path]`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The image the examples build FROM.
pub const BASE_IMAGE: &str = "rivetos-base:busybox";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn present(image: &str) -> bool {
    let output = Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", image]).output();
    let output = output
        .unwrap_or_else(|err| panic!("cannot run the docker CLI ({err}); these tests need it and a running engine"));
    output.status.success()
}

/// Makes sure the base image is on the local engine, running `examples/base-image/build.sh`
/// (under a file lock) when it is not; once per process. Panics with the script's output if
/// it fails.
pub fn ensure_base_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| ensure_image(BASE_IMAGE));
}

/// Makes sure `image` is on the local engine, creating it with `examples/base-image/build.sh`
/// (its `IMAGE` variable names the tag) under an exclusive lock when it is missing.
pub fn ensure_image(image: &str) {
    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rivetos-base-image.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|err| panic!("cannot open the lock file {}: {err}", lock_path.display()));
    file.lock().unwrap_or_else(|err| panic!("cannot lock {}: {err}", lock_path.display()));
    if !present(image) {
        let script = repo().join("examples/base-image/build.sh");
        let output = Command::new(&script)
            .env("IMAGE", image)
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
        assert!(
            output.status.success() && present(image),
            "{} did not create {image} (exit {:?}):\n{}{}",
            script.display(),
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Dropping the file releases the lock.
}
