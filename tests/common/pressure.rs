//! Fixture trees of the pressure sources (`tests/fixtures/pressure/`), copied so that a
//! test may change them.

use std::fs;
use std::path::{Path, PathBuf};

/// A writable copy of the fixture tree `name`, unique to `test`.
pub(crate) fn fixture_copy(name: &str, test: &str) -> PathBuf {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pressure")
        .join(name);
    let to = std::env::temp_dir().join(format!("tally-pressure-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&to);
    copy_tree(&from, &to);
    to
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes `text` to `path` whole, through a rename, so the monitor never reads half a file.
pub(crate) fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}
