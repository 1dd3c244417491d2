//! Files that appear whole or not at all: written under a temporary name in the same folder,
//! flushed to disk, then renamed over the destination. A crash at any instant leaves either
//! the previous file or the new one, never a torn one.
//!
//! The temporary file is created exclusively under a random name, so that nobody sharing the
//! folder can plant a file or a symbolic link there for bertcls to write through. Every live
//! temporary file is listed in a process-wide registry that the signal handler empties
//! ([`remove_registered`]) when it must end the process at once.

use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{BufWriter, ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};

/// What marks a temporary file's name: `.NAME.tmp-RANDOM` beside `NAME`.
pub const TEMP_MARKER: &str = ".tmp-";

/// A file being written; it replaces its destination only on [`AtomicFile::commit`].
/// Dropped without a commit, the temporary file is removed and the destination is untouched.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    /// The destination's permissions when it already existed: the new file keeps them.
    keep_mode: Option<u32>,
    writer: Option<BufWriter<File>>,
    registered: Option<usize>,
    committed: bool,
}

/// Names a random temporary file beside `name`; never the same twice in a process, and not
/// predictable by another user (std seeds `RandomState` from the operating system).
fn random_name(name: &str) -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!(".{name}{TEMP_MARKER}{:016x}", hasher.finish())
}

/// Creates a file that did not exist under the first free name of `names` in `dir`.
/// `create_new` (O_CREAT | O_EXCL) neither opens an existing file nor follows a symbolic link.
fn create_exclusive(
    dir: &Path,
    names: impl IntoIterator<Item = String>,
    mode: u32,
) -> std::io::Result<(PathBuf, File)> {
    let mut last = std::io::Error::new(ErrorKind::AlreadyExists, "no free temporary name");
    for name in names {
        let path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
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
        let existing = std::fs::metadata(&dest).ok();
        if existing.as_ref().is_some_and(|m| m.is_dir()) {
            bail!("{}: is a folder, not a file", dest.display());
        }
        let keep_mode = existing.map(|m| m.permissions().mode() & 0o777);
        // Until the rename the data is readable at most as the destination was (the umask
        // may only take bits away); a new file gets the usual 0666 less the umask.
        let mode = keep_mode.unwrap_or(0o666);
        let names = (0..64).map(|_| random_name(&name));
        let (tmp, file) = create_exclusive(&dir, names, mode)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        let registered = LIVE.register(&tmp);
        Ok(Self {
            dest,
            tmp,
            keep_mode,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            registered,
            committed: false,
        })
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer
            .as_mut()
            .expect("writer is present until commit")
    }

    /// Flushes, syncs and renames into place. On failure the temporary file is removed and
    /// the destination is untouched.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("commit runs once");
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", self.dest.display()))?;
        if let Some(mode) = self.keep_mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot write {}", self.dest.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("cannot write {}", self.dest.display()))?;
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!(
                "cannot move the new file into place at {}",
                self.dest.display()
            )
        })?;
        self.committed = true;
        // The rename is durable only once the folder is synced; a failure here loses nothing
        // that is not also lost by a crash a moment before the rename.
        if let Some(dir) = self.tmp.parent()
            && let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
        {
            let _ = d.sync_all();
        }
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
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
        // Unregistered only after the removal: a signal in between finds the name and
        // removes nothing, where the other order could leave the file behind.
        if let Some(slot) = self.registered.take() {
            LIVE.unregister(slot);
        }
    }
}

/// Live temporary files, as C strings the signal handler can pass to `unlink`. A slot is
/// taken by swapping its pointer out, so the handler and the owner never both free one.
/// More live files than slots go unregistered: they are still removed on every ordinary
/// exit path, only not by a second signal.
struct Registry([AtomicPtr<libc::c_char>; SLOTS]);

const SLOTS: usize = 64;

static LIVE: Registry = Registry::new();

impl Registry {
    const fn new() -> Self {
        Self([const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS])
    }

    fn register(&self, path: &Path) -> Option<usize> {
        let c = CString::new(path.as_os_str().as_bytes()).ok()?.into_raw();
        for (i, slot) in self.0.iter().enumerate() {
            if slot
                .compare_exchange(std::ptr::null_mut(), c, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Some(i);
            }
        }
        // SAFETY: `c` came from `CString::into_raw` above and was published nowhere.
        drop(unsafe { CString::from_raw(c) });
        None
    }

    fn unregister(&self, slot: usize) {
        let c = self.0[slot].swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !c.is_null() {
            // SAFETY: only `register` stores pointers, from `CString::into_raw`, and the
            // swap made this the only owner.
            drop(unsafe { CString::from_raw(c) });
        }
    }

    /// Async-signal-safe: atomics and `unlink` only; the names are not freed.
    fn remove_all(&self) {
        for slot in &self.0 {
            let c = slot.swap(std::ptr::null_mut(), Ordering::SeqCst);
            if !c.is_null() {
                // SAFETY: a NUL-terminated string from `register`, now owned here alone.
                unsafe { libc::unlink(c) };
            }
        }
    }
}

/// Removes every live temporary file of the process. Async-signal-safe: for a signal
/// handler about to end the process.
pub fn remove_registered() {
    LIVE.remove_all();
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

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bertcls-atomic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_only_on_commit() {
        let dir = temp_dir("commit");
        let dest = dir.join("out.txt");
        write(&dest, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half-written").unwrap();
        }
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(entries(&dir), ["out.txt"], "the temporary file is removed");
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

    #[test]
    fn temporary_names_are_random_and_exclusive() {
        let dir = temp_dir("names");
        let dest = dir.join("out.csv");
        let a = AtomicFile::create(&dest).unwrap();
        let b = AtomicFile::create(&dest).unwrap();
        assert_ne!(
            a.tmp, b.tmp,
            "two writers of one file never share a temporary file"
        );
        let name = a.tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".out.csv.tmp-"), "{name}");
        drop((a, b));
        assert!(entries(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_planted_link_is_never_written_through() {
        let dir = temp_dir("planted");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".out.tmp-planted")).unwrap();
        std::fs::write(dir.join(".out.tmp-taken"), b"someone else's").unwrap();
        let names = ["planted", "taken", "free"].map(|s| format!(".out.tmp-{s}"));
        let (path, mut file) = create_exclusive(&dir, names, 0o600).unwrap();
        assert_eq!(path, dir.join(".out.tmp-free"), "taken names are skipped");
        file.write_all(b"new data").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            std::fs::read(dir.join(".out.tmp-taken")).unwrap(),
            b"someone else's"
        );
        let only_taken = create_exclusive(&dir, [".out.tmp-planted".to_string()], 0o600);
        assert_eq!(only_taken.unwrap_err().kind(), ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_is_refused_before_anything_is_written() {
        let dir = temp_dir("folder");
        std::fs::create_dir(dir.join("sub")).unwrap();
        let err = AtomicFile::create(dir.join("sub")).err().unwrap();
        assert!(err.to_string().contains("sub: is a folder"), "{err}");
        assert_eq!(entries(&dir), ["sub"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_existing_files_permissions_are_kept() {
        let dir = temp_dir("mode");
        let dest = dir.join("secret.csv");
        std::fs::write(&dest, b"old").unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        write(&dest, b"new").unwrap();
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_signal_path_removes_registered_files() {
        // A registry of its own: the process-wide one holds other tests' live files.
        let registry = Registry::new();
        let dir = temp_dir("registry");
        let (kept, gone) = (dir.join("kept"), dir.join("gone"));
        std::fs::write(&kept, b"").unwrap();
        std::fs::write(&gone, b"").unwrap();
        let slot = registry.register(&kept).unwrap();
        registry.unregister(slot);
        registry.register(&gone).unwrap();
        registry.remove_all();
        assert_eq!(entries(&dir), ["kept"]);
        registry.remove_all();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_atomic_file_is_registered_while_live() {
        let dir = temp_dir("live");
        let f = AtomicFile::create(dir.join("out.csv")).unwrap();
        assert!(f.registered.is_some());
        drop(f);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
