//! Files that appear whole or not at all: written under a temporary name in the same folder,
//! flushed to disk, then renamed over the destination. A crash at any instant leaves either
//! the previous file or the new one, never a torn one.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written; it replaces its destination only on [`AtomicFile::commit`].
/// Dropped without a commit, the temporary file is removed and the destination is untouched.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .with_context(|| format!("{}: not a file path", dest.display()))?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file =
            File::create(&tmp).with_context(|| format!("cannot write {}", dest.display()))?;
        Ok(Self {
            dest,
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer
            .as_mut()
            .expect("writer is present until commit")
    }

    /// Flushes, syncs and renames into place.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("commit runs once");
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", self.dest.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", self.dest.display()))?;
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!(
                "cannot move the new file into place at {}",
                self.dest.display()
            )
        })?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write(dest: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let dest = dest.as_ref();
    let mut file = AtomicFile::create(dest)?;
    file.writer()
        .write_all(bytes)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    file.commit()
}

/// Writes `value` as pretty JSON to `dest` atomically.
pub fn write_json<T: serde::Serialize>(dest: impl AsRef<Path>, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write(dest, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_on_commit() {
        let dir = std::env::temp_dir().join(format!("bertcls-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("out.txt");
        write(&dest, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half-written").unwrap();
        }
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "the temporary file is removed");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_destination_is_an_error() {
        let err = write("/nonexistent-dir/x/y.json", b"{}").unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent-dir/x/y.json"));
    }
}
