//! bertcls' own cache folder, where models unpacked from wheels are kept. Models found there are
//! loaded as they are, so the folder must be one that only the current user can write to: there
//! is no fallback to a shared place such as the temp folder, and a folder others can write to is
//! refused rather than used.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// bertcls' cache folder: `BERTCLS_CACHE`, else `XDG_CACHE_HOME/bertcls`, else
/// `HOME/.cache/bertcls`.
pub fn cache_dir() -> Result<PathBuf> {
    cache_dir_from(|name| std::env::var_os(name))
}

fn cache_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let set = |name| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("BERTCLS_CACHE") {
        return Ok(dir);
    }
    // The XDG spec says to ignore relative paths; a relative HOME would put the cache
    // wherever bertcls happens to be started.
    let base = set("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| {
            set("HOME")
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".cache"))
        });
    match base {
        Some(base) => Ok(base.join("bertcls")),
        None => bail!(
            "no cache folder: none of BERTCLS_CACHE, XDG_CACHE_HOME and HOME is set to a usable folder; set BERTCLS_CACHE (or HOME)"
        ),
    }
}

/// Creates `dir` (and missing parents) with mode 0700, or checks that the existing folder
/// belongs to the current user and that no one else can write to it.
pub fn private_dir(dir: &Path) -> Result<()> {
    create_private(dir).with_context(|| format!("cannot create cache folder {}", dir.display()))?;
    check_private(dir)
}

#[cfg(unix)]
fn create_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn check_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read cache folder {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "cache folder {} belongs to another user (uid {}, you are {me}): set BERTCLS_CACHE to a folder of your own",
            dir.display(),
            meta.uid()
        );
    }
    let writable_by = match (meta.mode() & 0o020 != 0, meta.mode() & 0o002 != 0) {
        (true, true) => "its group and all users",
        (true, false) => "its group",
        (false, true) => "all users",
        (false, false) => return Ok(()),
    };
    bail!(
        "cache folder {} can be written by {writable_by} (mode {:o}), who could plant models in it: run `chmod go-w` on it, or set BERTCLS_CACHE to a private folder",
        dir.display(),
        meta.mode() & 0o777
    )
}

#[cfg(not(unix))]
fn check_private(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<PathBuf> {
        cache_dir_from(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn cache_folder_follows_the_environment() {
        let dir = |vars| from(vars).unwrap();
        assert_eq!(
            dir(&[("BERTCLS_CACHE", "c"), ("HOME", "/h")]),
            PathBuf::from("c")
        );
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]),
            PathBuf::from("/x/bertcls")
        );
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "x"), ("HOME", "/h")]),
            PathBuf::from("/h/.cache/bertcls")
        );
        assert_eq!(
            dir(&[("BERTCLS_CACHE", ""), ("HOME", "/h")]),
            PathBuf::from("/h/.cache/bertcls")
        );
    }

    #[test]
    fn no_usable_variable_is_an_error_not_the_temp_folder() {
        for vars in [
            &[][..],
            &[("HOME", "")],
            &[("HOME", "rel"), ("XDG_CACHE_HOME", "")],
        ] {
            let e = from(vars).unwrap_err().to_string();
            assert!(e.contains("set BERTCLS_CACHE"), "{e}");
        }
    }
}
