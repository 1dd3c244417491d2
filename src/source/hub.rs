//! Models from the Hugging Face Hub (`org/name[@revision]`), downloaded into the Hub's own
//! cache, shared with Python. The client is bertcls' own, small and strict: whatever a server
//! sends back is checked before it names a path or a size, and the token goes to the endpoint's
//! origin only and into no message.

mod cache;
mod client;
mod settings;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use url::Url;

use cache::{Commit, RepoCache, Revision, shown};
use client::Client;
use settings::Settings;

/// The files a model folder needs: of each list, the first the repository has.
const CONFIG: &[&str] = &["config.json"];
const WEIGHTS: &[&str] = &["model.safetensors", "pytorch_model.bin"];
const TOKENIZER: &[&str] = &["tokenizer.json", "vocab.txt"];
/// The tokenizer's settings: casing for one built from vocab.txt, the names of its special
/// tokens; many repositories have none.
const TOKENIZER_SETTINGS: &[&str] = &["tokenizer_config.json", "special_tokens_map.json"];

/// The snapshot folder of `revision` if the cache already holds a whole model for it, else the
/// first list of files it has none of.
fn cached(repo: &RepoCache, revision: &Revision) -> Result<PathBuf, &'static [&'static str]> {
    let commit = repo.commit(revision).ok_or(CONFIG)?;
    let dir = repo.snapshot(&commit);
    for names in [CONFIG, WEIGHTS, TOKENIZER] {
        if !names.iter().any(|name| dir.join(name).is_file()) {
            return Err(names);
        }
    }
    Ok(dir)
}

/// Files of one revision being downloaded; all must come from the same commit.
struct Download<'a> {
    endpoint: &'a Url,
    client: Client<'a>,
    repo: &'a RepoCache,
    repo_id: &'a str,
    revision: &'a Revision,
    commit: Option<Commit>,
}

impl Download<'_> {
    /// Downloads `name` unless its blob is already cached; false if the repository has no
    /// such file.
    fn file(&mut self, name: &str) -> Result<bool> {
        let url = self.url(name)?;
        let Some(meta) = self.client.metadata(url)? else {
            return Ok(false);
        };
        match &self.commit {
            Some(commit) if *commit != meta.commit => bail!(
                "the repository moved from commit {commit} to {} during the download; run again",
                meta.commit
            ),
            _ => self.commit = Some(meta.commit.clone()),
        }
        if !self.repo.has_blob(&meta.etag, meta.size) {
            self.repo.store_blob(&meta.etag, |file| {
                self.client
                    .download(meta.location.clone(), meta.size, name, file)
            })?;
        }
        self.repo.link(&meta.commit, name, &meta.etag)?;
        Ok(true)
    }

    /// Whether the repository has `name`, without downloading it.
    fn exists(&mut self, name: &str) -> Result<bool> {
        let url = self.url(name)?;
        Ok(self.client.metadata(url)?.is_some())
    }

    fn url(&self, name: &str) -> Result<Url> {
        let base = self.endpoint.as_str().trim_end_matches('/');
        let url = format!(
            "{base}/{}/resolve/{}/{name}",
            self.repo_id,
            self.revision.url_segment()
        );
        Url::parse(&url).with_context(|| format!("invalid file URL {}", shown(&url)))
    }

    /// Downloads the first of `names` that the repository has.
    fn first_of(&mut self, names: &[&'static str]) -> Result<&'static str> {
        for &name in names {
            if self
                .file(name)
                .with_context(|| format!("cannot download {name}"))?
            {
                return Ok(name);
            }
        }
        bail!("none of {} in the repository", names.join(", "))
    }
}

fn fetch_with(settings: &Settings, repo_id: &str, revision: &str) -> Result<PathBuf> {
    let valid_id = match repo_id.split('/').collect::<Vec<_>>().as_slice() {
        [name] => super::valid_hub_part(name),
        [org, name] => super::valid_hub_part(org) && super::valid_hub_part(name),
        _ => false,
    };
    if !valid_id {
        bail!("invalid Hub id {}: expected org/name", shown(repo_id));
    }
    let revision = Revision::parse(revision)?;
    let repo = RepoCache::new(&settings.cache, repo_id);
    match cached(&repo, &revision) {
        Ok(dir) => return Ok(dir),
        Err(names) if settings.offline => bail!(
            "none of {} in the cache (HF_HUB_OFFLINE is set)",
            names.join(", ")
        ),
        Err(_) => {}
    }
    let mut download = Download {
        endpoint: &settings.endpoint,
        client: Client::new(&settings.endpoint, settings.token.as_ref()),
        repo: &repo,
        repo_id,
        revision: &revision,
        commit: None,
    };
    download.first_of(CONFIG)?;
    let commit = download
        .commit
        .clone()
        .context("no file was downloaded, so no commit is known")?;
    // An architecture bertcls cannot build is refused before gigabytes of weights come.
    crate::model::ModelConfig::load(&repo.snapshot(&commit))?;
    if let Err(e) = download.first_of(TOKENIZER) {
        // A failed probe keeps the first error, which says what went wrong.
        for name in crate::tokenize::SENTENCEPIECE_FILES {
            if download.exists(name).unwrap_or(false) {
                bail!(
                    "the repository has {name} but no tokenizer.json: {}",
                    crate::tokenize::CONVERT_SENTENCEPIECE
                );
            }
        }
        return Err(e);
    }
    for name in TOKENIZER_SETTINGS {
        download
            .file(name)
            .with_context(|| format!("cannot download {name}"))?;
    }
    download.first_of(WEIGHTS)?;
    repo.set_ref(&revision, &commit)?;
    Ok(repo.snapshot(&commit))
}

/// The local folder of a Hub model, downloading what the cache lacks (nothing when
/// `HF_HUB_OFFLINE` is set).
pub fn fetch(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    let settings = Settings::from_env().with_context(|| format!("Hub model {repo_id}"))?;
    fetch_with(&settings, repo_id, revision.unwrap_or("main"))
        .with_context(|| format!("Hub model {repo_id}"))
        .map_err(|e| settings.redact(e))
}
