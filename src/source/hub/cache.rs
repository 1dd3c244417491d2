//! The Hub cache as Python's `huggingface_hub` lays it out, so that both share it:
//! `models--ORG--NAME/blobs/ETAG` holds each file once, `snapshots/COMMIT/FILE` links to
//! `../../blobs/ETAG`, and `refs/REVISION` holds the commit a branch or tag pointed to.
//!
//! Commits, ETags and revisions come from the network or the command line; each is a type
//! that can only be built by a check, so that nothing unchecked names a path.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::atomic::AtomicFile;

/// A header value as it may appear in a message: control characters escaped, long values cut.
pub fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut text: String = value.chars().take(MAX_CHARS).collect();
    if value.chars().count() > MAX_CHARS {
        text.push_str("...");
    }
    format!("{text:?}")
}

fn is_hex(s: &str, lengths: &[usize]) -> bool {
    lengths.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A git commit id: 40 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit(String);

impl Commit {
    pub fn parse(value: &str) -> Option<Self> {
        is_hex(value, &[40]).then(|| Self(value.to_string()))
    }
}

impl fmt::Display for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file's ETag as the Hub sends it: the git blob sha1 (40 hex digits) or, for LFS files,
/// the sha256 of the content (64 hex digits). A weak `W/` prefix and quotes are dropped, as
/// `huggingface_hub` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etag(String);

impl Etag {
    pub fn parse(value: &str) -> Option<Self> {
        let bare = value.trim();
        let bare = bare.strip_prefix("W/").unwrap_or(bare).trim_matches('"');
        is_hex(bare, &[40, 64]).then(|| Self(bare.to_string()))
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A branch, tag or commit to download (`main` when none is given). Git allows more characters
/// than these, but Hub revisions use only these, and none of them can climb out of `refs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision(String);

impl Revision {
    pub fn parse(value: &str) -> Result<Self> {
        let valid_part = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !value.split('/').all(valid_part) {
            bail!(
                "invalid revision {}: expected a branch, tag or commit made of letters, digits, \
                 `-`, `_`, `.` and `/`",
                shown(value)
            );
        }
        Ok(Self(value.to_string()))
    }

    /// As a URL path segment: `/` escaped, as in `huggingface_hub`.
    pub fn url_segment(&self) -> String {
        self.0.replace('/', "%2F")
    }
}

/// One repository's folder in the cache.
pub struct RepoCache {
    dir: PathBuf,
}

impl RepoCache {
    /// `repo_id` must already be checked (`org/name` of letters, digits, `-_.`).
    pub fn new(root: &Path, repo_id: &str) -> Self {
        Self {
            dir: root.join(format!("models--{}", repo_id.replace('/', "--"))),
        }
    }

    fn ref_path(&self, revision: &Revision) -> PathBuf {
        self.dir.join("refs").join(&revision.0)
    }

    /// The commit a revision stands for in the cache: what `refs/REVISION` holds, or the
    /// revision itself when it is a commit id. A ref that does not hold a commit id is ignored
    /// (and rewritten by the next download).
    pub fn commit(&self, revision: &Revision) -> Option<Commit> {
        match std::fs::read_to_string(self.ref_path(revision)) {
            Ok(text) => Commit::parse(text.trim()),
            Err(_) => Commit::parse(&revision.0),
        }
    }

    pub fn snapshot(&self, commit: &Commit) -> PathBuf {
        self.dir.join("snapshots").join(&commit.0)
    }

    fn blob(&self, etag: &Etag) -> PathBuf {
        self.dir.join("blobs").join(&etag.0)
    }

    /// Whether the blob is there, whole: blobs appear only by rename once complete, and a size
    /// that differs from the announced one means it is not this file.
    pub fn has_blob(&self, etag: &Etag, size: Option<u64>) -> bool {
        std::fs::metadata(self.blob(etag))
            .is_ok_and(|m| m.is_file() && size.is_none_or(|s| m.len() == s))
    }

    /// Writes a blob through `fill`, into a temporary file created exclusively under a random
    /// name beside it (see [`crate::atomic`]), renamed into place only once `fill` succeeds.
    /// On any failure the temporary file is removed and no blob appears.
    pub fn store_blob(
        &self,
        etag: &Etag,
        fill: impl FnOnce(&mut AtomicFile) -> Result<()>,
    ) -> Result<()> {
        let dir = self.dir.join("blobs");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut file = AtomicFile::create(self.blob(etag))?;
        fill(&mut file)?;
        file.commit()
    }

    /// Links `snapshots/COMMIT/FILE` to its blob with the relative link Python writes.
    pub fn link(&self, commit: &Commit, file: &str, etag: &Etag) -> Result<()> {
        let dir = self.snapshot(commit);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let link = dir.join(file);
        let target = Path::new("../../blobs").join(&etag.0);
        if std::fs::read_link(&link).is_ok_and(|t| t == target) {
            return Ok(());
        }
        match std::fs::remove_file(&link) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot replace {}", link.display()));
            }
            _ => {}
        }
        match std::os::unix::fs::symlink(&target, &link) {
            // Another download of the same file got there first.
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && std::fs::read_link(&link).is_ok_and(|t| t == target) =>
            {
                Ok(())
            }
            result => result.with_context(|| format!("cannot create the link {}", link.display())),
        }
    }

    /// Records which commit `revision` pointed to, unless it is itself that commit.
    pub fn set_ref(&self, revision: &Revision, commit: &Commit) -> Result<()> {
        if revision.0 == commit.0 {
            return Ok(());
        }
        let path = self.ref_path(revision);
        let dir = path.parent().context("a ref path has a parent")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::atomic::write(&path, commit.0.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hex_hashes_are_commits_and_etags() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        let sha256 = "a".repeat(64);
        assert!(Commit::parse(sha1).is_some());
        assert!(Commit::parse(&sha256).is_none(), "a commit is a sha1");
        for bad in [
            "",
            "../../x",
            "/tmp/x",
            &format!("{}/", &sha1[..39]),
            "main",
        ] {
            assert!(Commit::parse(bad).is_none(), "{bad}");
            assert!(Etag::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Etag::parse(&format!("\"{sha1}\"")).unwrap().0, sha1);
        assert_eq!(Etag::parse(&format!("W/\"{sha256}\"")).unwrap().0, sha256);
        assert!(Etag::parse("\"/tmp/0123456789abcdef0123456789abcdef0123\"").is_none());
    }

    #[test]
    fn revisions_cannot_leave_refs() {
        for good in [
            "main",
            "v1.0",
            "refs/pr/1",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(Revision::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "a/../../b",
            "/abs",
            "a//b",
            "a\\b",
            "a b",
            "a\nb",
        ] {
            assert!(Revision::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Revision::parse("refs/pr/1").unwrap().url_segment(),
            "refs%2Fpr%2F1"
        );
    }

    #[test]
    fn shown_values_are_escaped_and_cut() {
        assert_eq!(shown("a\u{1b}[2J"), "\"a\\u{1b}[2J\"");
        assert_eq!(shown(&"x".repeat(100)).len(), 80 + 3 + 2);
    }
}
