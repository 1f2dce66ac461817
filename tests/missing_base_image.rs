//! A new user's first `infra up` when the image the Dockerfile builds FROM is not on the
//! engine and cannot be pulled: the error names the image, the node, the engine's reason in
//! one line, and how to provide the image. The output is golden-tested (times, content
//! hashes and the engine's own reason filtered), nothing is built or started, and `doctor`
//! gives the same advice.

mod support;

use support::docker::{TestFleet, docker_status};
use support::{describe, golden};

/// Replaces what differs between runs and machines: `[  1.2s]` times, the 12-hex content
/// tags of the fleet's images, and the engine's reason after "could not be pulled: ".
fn filtered(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut line = line.to_string();
            if line.starts_with('[')
                && let Some(end) = line.find("s] ")
            {
                line.replace_range(..end + 2, "[TIME]");
            }
            for image in ["rivetos-agent:", "rivetos-datahub:"] {
                if let Some(at) = line.find(image) {
                    let start = at + image.len();
                    let hex = line[start..].chars().take_while(char::is_ascii_hexdigit).count();
                    if hex == 12 {
                        line.replace_range(start..start + hex, "HASH");
                    }
                }
            }
            let marker = "could not be pulled: ";
            if let Some(at) = line.find(marker) {
                line.replace_range(at + marker.len().., "[the engine's reason]");
            }
            line + "\n"
        })
        .collect()
}

/// Builds the fleet's agent FROM `base` and checks `infra up` against the golden file `name`.
fn check(name: &str, base: &str) {
    assert!(!docker_status(&["image", "inspect", base]).status.success(), "{base} must not exist for this test");
    let fleet = TestFleet::new(name);
    let dockerfile = fleet.dir.path().join("containers/agent/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let changed = text.replace("\nFROM rivetos-base:busybox\n", &format!("\nFROM {base}\n"));
    assert_ne!(text, changed, "the agent's Dockerfile builds FROM rivetos-base:busybox");
    std::fs::write(&dockerfile, changed).unwrap();

    let output = fleet.expect(&["infra", "up", "--yes"], 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = stderr.lines().find_map(|l| l.split_once("could not be pulled: ")).map(|(_, r)| r.trim());
    assert!(reason.is_some_and(|r| !r.is_empty()), "the engine's reason is given:\n{}", describe(&output));
    golden(&format!("tests/golden/missing-base-image/{name}.txt"), &filtered(&describe(&output)));
    assert!(fleet.containers().is_empty(), "nothing was started");

    // `doctor` reports the same image with the same advice.
    let doctor = fleet.expect(&["doctor"], 1);
    let stdout = String::from_utf8_lossy(&doctor.stdout);
    let hint = stderr.lines().find_map(|l| l.strip_prefix("hint: ")).expect("a hint");
    assert!(stdout.contains(&format!("FAIL base image {base} ")), "{}", describe(&doctor));
    assert!(stdout.contains(&format!("fix: {hint};")), "{}", describe(&doctor));
    assert!(!docker_status(&["image", "inspect", base]).status.success(), "{base} did not appear");
}

#[test]
fn an_unknown_base_image_says_how_to_pull_or_load_it() {
    check("unknown", "rivetctl-test-missing-base:1");
}

/// The examples' base image is recognised by name; another tag of it (the real
/// `rivetos-base:busybox` stays: other tests use it) points at the script with `IMAGE=`.
#[test]
fn the_examples_base_image_points_at_its_script() {
    check("examples", "rivetos-base:rivetctl-test-absent");
}

#[test]
fn filtering_keeps_the_message_and_drops_what_varies() {
    let text = "[  12.3s] image rivetos-agent:0123456789ab: checking\nerror: x could not be pulled: Get \"https://r/v2/\": no such host\n";
    assert_eq!(
        filtered(text),
        "[TIME] image rivetos-agent:HASH: checking\nerror: x could not be pulled: [the engine's reason]\n"
    );
}

/// The test command creates the base image when it is missing (here under a tag of its own,
/// from several threads at once: the file lock lets one of them run the script).
#[test]
fn the_tests_create_a_missing_base_image() {
    let image = format!("rivetos-base:rivetctl-test-{}", std::process::id());
    assert!(!docker_status(&["image", "inspect", &image]).status.success());
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let image = image.clone();
            std::thread::spawn(move || support::base_image::ensure_image(&image))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(std::thread::JoinHandle::join).collect();
    let label = docker_status(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"io.rivetos.base.rootfs-sha256\"}}",
        &image,
    ]);
    docker_status(&["image", "rm", &image]);
    assert!(results.iter().all(Result::is_ok), "every caller found the image");
    assert!(label.status.success(), "{image} was created");
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim().len(), 64, "by examples/base-image/build.sh");
}
