//! The Hub settings read from the environment, with the names and defaults of Python's
//! `huggingface_hub`: `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN` (else the file
//! `HF_HOME/token`) and `HF_HUB_OFFLINE`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use url::Url;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A token file larger than this is not a token file.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// A Hub access token. It has no `Debug` or `Display`, so that it cannot be printed by accident.
pub struct Token(String);

impl Token {
    /// Cleans a token as `huggingface_hub` does (line breaks removed, surrounding whitespace
    /// trimmed, empty means none), then refuses one that could not be a token. `origin` names
    /// where it came from; the value itself never appears in an error.
    pub fn clean(raw: &str, origin: &str) -> Result<Option<Self>> {
        let token: String = raw.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        let token = token.trim();
        if token.is_empty() {
            return Ok(None);
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            bail!(
                "{origin} holds a space, control or non-ASCII character, which no Hub token has \
                 (its value is not shown)"
            );
        }
        Ok(Some(Self(token.to_string())))
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// `text` with every occurrence of the token masked.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "[HF_TOKEN]")
    }

    pub fn occurs_in(&self, text: &str) -> bool {
        text.contains(&self.0)
    }
}

pub struct Settings {
    /// Without a trailing slash: file URLs are this plus `/{repo}/resolve/...`.
    pub endpoint: Url,
    /// The Hub cache root (holds `models--ORG--NAME/`).
    pub cache: PathBuf,
    pub token: Option<Token>,
    pub offline: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `HF_HOME`, else `XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(cache.join("huggingface"))
}

fn endpoint() -> Result<Url> {
    let Some(text) = env("HF_ENDPOINT") else {
        return Ok(Url::parse(DEFAULT_ENDPOINT)?);
    };
    // Parse errors are not shown: the text may hold credentials.
    let url = Url::parse(text.trim_end_matches('/'))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .context("HF_ENDPOINT is not an http:// or https:// URL")?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!("HF_ENDPOINT holds a user name or password; give the token in HF_TOKEN instead");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("HF_ENDPOINT has a query or fragment; it must be the Hub's base URL");
    }
    Ok(url)
}

fn token_file(path: &Path) -> Result<Option<Token>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        bail!(
            "{}: larger than {MAX_TOKEN_FILE_BYTES} bytes, not a token file",
            path.display()
        );
    }
    let text = String::from_utf8(bytes)
        .ok()
        .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    Token::clean(&text, &path.display().to_string())
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let home = hf_home();
        let cache = match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => home.as_ref().map(|h| h.join("hub")).context(
                "cannot place the Hugging Face cache: HOME is not set; set HF_HOME or HF_HUB_CACHE",
            )?,
        };
        let token = match env("HF_TOKEN") {
            Some(raw) => Token::clean(&raw, "HF_TOKEN")?,
            None => None,
        };
        let token = match (token, &home) {
            (Some(t), _) => Some(t),
            (None, Some(home)) => token_file(&home.join("token"))?,
            (None, None) => None,
        };
        let offline = env("HF_HUB_OFFLINE").is_some_and(|v| !matches!(v.as_str(), "0" | "false"));
        Ok(Self {
            endpoint: endpoint()?,
            cache,
            token,
            offline,
        })
    }

    /// The error with the token masked wherever it occurs: a last line of defence, since no
    /// message is meant to hold it in the first place.
    pub fn redact(&self, error: anyhow::Error) -> anyhow::Error {
        match &self.token {
            Some(token) => {
                let text = format!("{error:#}");
                if token.occurs_in(&text) {
                    anyhow::anyhow!(token.redact(&text))
                } else {
                    error
                }
            }
            None => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_cleaned_as_huggingface_hub_does() {
        let t = Token::clean("hf_abc\r\n", "HF_TOKEN").unwrap().unwrap();
        assert_eq!(t.bearer(), "Bearer hf_abc");
        let t = Token::clean("  hf_a\nbc \n", "HF_TOKEN").unwrap().unwrap();
        assert_eq!(t.bearer(), "Bearer hf_abc");
        assert!(Token::clean(" \n", "HF_TOKEN").unwrap().is_none());
        for bad in ["hf_a\u{1b}[2Jb", "hf a", "hf_\u{e9}", "hf_\0"] {
            let e = Token::clean(bad, "HF_TOKEN").err().unwrap().to_string();
            assert!(e.contains("HF_TOKEN") && !e.contains("hf_"), "{e}");
        }
    }

    #[test]
    fn redaction_masks_every_occurrence() {
        let settings = Settings {
            endpoint: Url::parse(DEFAULT_ENDPOINT).unwrap(),
            cache: PathBuf::from("/nonexistent"),
            token: Token::clean("hf_secret", "HF_TOKEN").unwrap(),
            offline: false,
        };
        let e = anyhow::anyhow!("bad header: Bearer hf_secret").context("hf_secret again");
        let text = format!("{:#}", settings.redact(e));
        assert_eq!(text, "[HF_TOKEN] again: bad header: Bearer [HF_TOKEN]");
    }
}
