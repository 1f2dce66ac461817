//! Golden files: compare output with a file checked into the repository; with
//! `UPDATE_GOLDEN=1`, write the file instead. Shared by every crate's tests through
//! `#[path]`.

use std::path::Path;

/// Compares `actual` with the file at `path`.
pub fn compare(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("golden files live in a directory")).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("missing golden file {}; run with UPDATE_GOLDEN=1", path.display()));
    assert!(
        expected == actual,
        "golden file {} differs (run with UPDATE_GOLDEN=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}
