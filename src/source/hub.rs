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
