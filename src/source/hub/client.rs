//! HTTP for the Hub, as `huggingface_hub` speaks it: `HEAD {endpoint}/{repo}/resolve/{revision}/{file}`
//! answers with the commit (`X-Repo-Commit`), the file's hash (`X-Linked-Etag` for LFS files,
//! else `ETag`) and size, and for LFS files a redirect to where the bytes are; `GET` fetches them.
//!
//! Redirects are followed here, not by ureq, so that the token goes only to the endpoint's own
//! origin (scheme, host and port) and never across hosts, and so that their number is bounded.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use url::{Origin, Url};

use super::cache::{Commit, Etag, shown};
use super::settings::Token;

pub const MAX_REDIRECTS: usize = 5;

/// The largest file bertcls downloads: several times the largest BERT-family checkpoint.
pub const MAX_FILE_BYTES: u64 = 32 << 30;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read may wait for bytes: a server that stalls is an error, not a hang.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the Hub says about one file of a revision.
pub struct Metadata {
    pub commit: Commit,
    pub etag: Etag,
    pub size: Option<u64>,
    /// Where to GET the bytes: the file's URL, or where the Hub redirects to for LFS files.
    pub location: Url,
}

pub struct Client<'a> {
    agent: ureq::Agent,
    /// The only origin the token is sent to.
    origin: Origin,
    token: Option<&'a Token>,
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

fn status_error(url: &Url, status: u16) -> anyhow::Error {
    let hint = match status {
        401 | 403 => " (a private or gated repository needs HF_TOKEN with access to it)",
        429 => " (rate limited; try again later)",
        _ => "",
    };
    anyhow::anyhow!("{url}: HTTP status {status}{hint}")
}

fn redirect_target(response: &ureq::Response, from: &Url) -> Result<Url> {
    let location = response.header("Location").with_context(|| {
        format!(
            "{from}: HTTP status {} without a Location header",
            response.status()
        )
    })?;
    from.join(location)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .with_context(|| {
            format!(
                "{from}: redirect to {}, not an http(s) URL",
                shown(location)
            )
        })
}

fn parse_size(text: &str, header: &str, url: &Url) -> Result<u64> {
    let size = text
        .trim()
        .parse::<u64>()
        .ok()
        .with_context(|| format!("{url}: {header} {} is not a size", shown(text)))?;
    if size > MAX_FILE_BYTES {
        bail!(
            "{url}: {header} announces {size} bytes, more than the {MAX_FILE_BYTES} bytes bertcls \
             downloads"
        );
    }
    Ok(size)
}

/// Reads the metadata from the Hub's answer. `direct` is false when that answer is a redirect
/// to another host, whose Content-Length is that of the redirect, not of the file.
fn parse_metadata(
    response: &ureq::Response,
    url: &Url,
    location: Url,
    direct: bool,
) -> Result<Metadata> {
    let commit_text = response
        .header("X-Repo-Commit")
        .with_context(|| format!("{url}: the server sent no X-Repo-Commit header"))?;
    let commit = Commit::parse(commit_text.trim()).with_context(|| {
        format!(
            "{url}: X-Repo-Commit {} is not a commit id (40 hex digits)",
            shown(commit_text)
        )
    })?;
    let (etag_header, etag_text) = match response.header("X-Linked-Etag") {
        Some(value) => ("X-Linked-Etag", value),
        None => (
            "ETag",
            response
                .header("ETag")
                .with_context(|| format!("{url}: the server sent no ETag header"))?,
        ),
    };
    let etag = Etag::parse(etag_text).with_context(|| {
        format!(
            "{url}: {etag_header} {} is not a file hash (40 or 64 hex digits)",
            shown(etag_text)
        )
    })?;
    let size = match response.header("X-Linked-Size") {
        Some(text) => Some(parse_size(text, "X-Linked-Size", url)?),
        None if direct => response
            .header("Content-Length")
            .map(|text| parse_size(text, "Content-Length", url))
            .transpose()?,
        None => None,
    };
    Ok(Metadata {
        commit,
        etag,
        size,
        location,
    })
}

fn progress_bar(size: Option<u64>, name: &str) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = match size {
        Some(size) => ProgressBar::new(size).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.with_message(name.to_string())
}

impl<'a> Client<'a> {
    pub fn new(endpoint: &Url, token: Option<&'a Token>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(READ_TIMEOUT)
            .user_agent(concat!("bertcls/", env!("CARGO_PKG_VERSION")))
            .try_proxy_from_env(true)
            .build();
        Self {
            agent,
            origin: endpoint.origin(),
            token,
        }
    }

    /// One request, whatever the status it answers with.
    fn send(&self, method: &str, url: &Url) -> Result<ureq::Response> {
        let mut request = self.agent.request_url(method, url);
        if let Some(token) = self.token.filter(|_| url.origin() == self.origin) {
            request = request.set("Authorization", &token.bearer());
        }
        match request.call() {
            Ok(response) | Err(ureq::Error::Status(_, response)) => Ok(response),
            Err(e) => Err(e.into()),
        }
    }

    /// The metadata of the file at `url`, or `None` if the repository has no such file.
    /// Redirects within the same origin are followed (a renamed repository); one to another
    /// host carries the metadata in its own headers, as the Hub answers for LFS files.
    pub fn metadata(&self, url: Url) -> Result<Option<Metadata>> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send("HEAD", &url)?;
            let status = response.status();
            if is_redirect(status) {
                let next = redirect_target(&response, &url)?;
                if next.origin() == url.origin() {
                    url = next;
                    continue;
                }
                return parse_metadata(&response, &url, next, false).map(Some);
            }
            return match status {
                200..=299 => parse_metadata(&response, &url, url.clone(), true).map(Some),
                404 => Ok(None),
                _ => Err(status_error(&url, status)),
            };
        }
        bail!("{url}: more than {MAX_REDIRECTS} redirects")
    }

    /// Streams the file at `url` into `out`, checking its length against the announced `size`
    /// and the response's Content-Length, and never writing more than [`MAX_FILE_BYTES`].
    pub fn download(
        &self,
        url: Url,
        size: Option<u64>,
        name: &str,
        out: &mut impl Write,
    ) -> Result<()> {
        let mut url = url;
        let mut redirects = 0;
        let response = loop {
            let response = self.send("GET", &url)?;
            match response.status() {
                s if is_redirect(s) => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        bail!("{url}: more than {MAX_REDIRECTS} redirects");
                    }
                    url = redirect_target(&response, &url)?;
                }
                200 => break response,
                // Some servers answer 206 to a plain GET; only a range from the start is the file.
                206 if response
                    .header("Content-Range")
                    .is_some_and(|r| r.trim().starts_with("bytes 0-")) =>
                {
                    break response;
                }
                s => return Err(status_error(&url, s)),
            }
        };
        let length = response
            .header("Content-Length")
            .map(|text| parse_size(text, "Content-Length", &url))
            .transpose()?;
        if let (Some(announced), Some(length)) = (size, length)
            && announced != length
        {
            bail!("{url}: Content-Length {length} differs from the announced size {announced}");
        }
        let expected = size.or(length);
        let limit = expected.unwrap_or(MAX_FILE_BYTES);
        let progress = progress_bar(expected, name);
        let mut body = response.into_reader().take(limit + 1);
        let mut buffer = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            crate::interrupt::check(|| format!("the partial download of {name} is removed"))?;
            let n = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("{url}: the download broke off after {written} bytes")
                    });
                }
            };
            written += n as u64;
            if written > limit {
                match expected {
                    Some(_) => {
                        bail!("{url}: the server sent more than the {limit} bytes announced")
                    }
                    None => bail!("{url}: larger than the {limit} bytes bertcls downloads"),
                }
            }
            out.write_all(&buffer[..n])
                .with_context(|| format!("cannot write the download of {name}"))?;
            progress.inc(n as u64);
        }
        progress.finish_and_clear();
        if let Some(expected) = expected
            && written != expected
        {
            bail!("{url}: the download ended after {written} of {expected} bytes");
        }
        Ok(())
    }
}
