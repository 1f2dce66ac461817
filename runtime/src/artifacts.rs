//! Writing rendered artifacts to a directory: secret-bearing files 0600, the rest 0644.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use targets::render::compose::Sink;

/// A file being written: its final path, and the partial file its text goes to first.
struct Open {
    path: PathBuf,
    partial: PathBuf,
    file: BufWriter<fs::File>,
}

/// Writes files under a directory as their text arrives (a renderer's [`Sink`]): each to
/// a partial file, renamed into place when the next one starts or at [`Directory::finish`]
/// (atomic replacement; not fsynced: they are rendered again at will, unlike the rollout
/// journal).
pub struct Directory<'a> {
    dir: &'a Path,
    open: Option<Open>,
    /// Files written, and how many of them hold secrets.
    pub written: usize,
    pub secret: usize,
}

impl<'a> Directory<'a> {
    pub fn new(dir: &'a Path) -> Self {
        Directory { dir, open: None, written: 0, secret: 0 }
    }

    fn close(&mut self) -> anyhow::Result<()> {
        if let Some(Open { path, partial, file }) = self.open.take() {
            file.into_inner()
                .map_err(|err| err.into_error())
                .with_context(|| format!("cannot write {}", partial.display()))?;
            fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Puts the last file in place.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.close()
    }
}

impl Sink for Directory<'_> {
    type Error = anyhow::Error;

    fn start(&mut self, relative: &str, secret: bool) -> anyhow::Result<()> {
        self.close()?;
        let path = self.dir.join(relative);
        let parent = path.parent().unwrap_or(self.dir);
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let mode = if secret { 0o600 } else { 0o644 };
        let partial = path.with_extension("rivetctl-partial");
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        // The mode given to open() only applies to new files.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        self.open = Some(Open { path, partial, file: BufWriter::with_capacity(64 * 1024, file) });
        self.written += 1;
        self.secret += usize::from(secret);
        Ok(())
    }

    fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let open = self.open.as_mut().expect("a file was started");
        open.file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", open.partial.display()))
    }
}
