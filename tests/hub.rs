//! The Hub client against stand-in Hubs on loopback, honest and hostile: the token is cleaned,
//! goes to the endpoint's host only and appears in no output or file; whatever a server sends
//! back is checked before it names a path; downloads are bounded and leave no partial file.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use common::{Fixture, bertcls, fails_with, ok, s, stderr, stdout};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_StandInSecret4242";

/// A stand-in's answer.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Sent without Content-Length (chunked), so that it can differ from what was announced.
    chunked: bool,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
        }
    }

    /// Sets a header, replacing one of the same name.
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A request as a stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// A server on 127.0.0.1 that answers `answer(method, path)` and records each request.
struct StandIn {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    fn new(answer: impl Fn(&str, &str) -> Reply + Send + 'static) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let method = request.method().as_str().to_string();
                let path = request.url().to_string();
                let authorization = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string());
                log.lock().unwrap().push(Seen {
                    method: method.clone(),
                    path: path.clone(),
                    authorization,
                });
                let reply = answer(&method, &path);
                let headers = reply
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap()
                    })
                    .collect();
                let length = (!reply.chunked).then_some(reply.body.len());
                let response = tiny_http::Response::new(
                    reply.status.into(),
                    headers,
                    Cursor::new(reply.body),
                    length,
                    None,
                );
                let _ = request.respond(response);
            }
        });
        Self { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The honest answer for `/org/NAME/resolve/REV/FILE`: the file from `model`, with the headers
/// the Hub sends (and the Content-Range hf-hub 0.4 wanted, so that the old client went as far
/// as it could).
fn file_reply(model: &Path, path: &str) -> Reply {
    let file = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "org", _, "resolve", _, file] => model.join(file),
        _ => return Reply::status(404),
    };
    let Ok(body) = std::fs::read(&file) else {
        return Reply::status(404);
    };
    Reply {
        body: body.clone(),
        ..Reply::status(200)
    }
    .header("ETag", &format!("\"{:040x}\"", hash(&body)))
    .header("X-Repo-Commit", COMMIT)
    .header(
        "Content-Range",
        &format!("bytes 0-{}/{}", body.len().saturating_sub(1), body.len()),
    )
}

/// Every file under `dir`, following no links.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The token is in neither output nor any file under `dir`.
fn assert_token_unseen(out: &Output, dir: &Path) {
    assert!(!stdout(out).contains(TOKEN), "token in stdout");
    assert!(
        !stderr(out).contains(TOKEN),
        "token in stderr: {}",
        stderr(out)
    );
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "token in {}",
            file.display()
        );
    }
}

fn no_partial_files(cache: &Path) {
    let partial: Vec<PathBuf> = files_under(cache)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(bertcls::atomic::TEMP_MARKER))
        .collect();
    assert!(partial.is_empty(), "left behind: {partial:?}");
}

fn fetch(cache: &Path, endpoint: &str, token: Option<&str>, sources: &[&str]) -> Output {
    let mut cmd = bertcls(cache);
    cmd.env("HF_ENDPOINT", endpoint);
    if let Some(token) = token {
        cmd.env("HF_TOKEN", token);
    }
    cmd.arg("fetch").args(sources).output().unwrap()
}

#[test]
fn a_token_with_a_line_break_is_cleaned_and_never_shown() {
    let fx = Fixture::new("hub-token");
    let model = fx.model.clone();
    let hub = StandIn::new(move |_, path| file_reply(&model, path));
    let bearer = format!("Bearer {TOKEN}");

    // As a secret mounted from a file carries it: used without the line break.
    let cache = fx.path("cache-env");
    let out = ok(fetch(
        &cache,
        &hub.url(),
        Some(&format!("{TOKEN}\n")),
        &["org/tiny"],
    ));
    let seen = hub.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|r| r.authorization.as_deref() == Some(&bearer)),
        "{seen:?}"
    );
    assert_token_unseen(&out, &cache);

    // The token file of `huggingface-cli login`, written with a Windows line break.
    let cache = fx.path("cache-file");
    std::fs::create_dir_all(cache.join("hf")).unwrap();
    std::fs::write(cache.join("hf/token"), format!("{TOKEN}\r\n")).unwrap();
    let before = hub.seen().len();
    ok(fetch(&cache, &hub.url(), None, &["org/tiny"]));
    let seen = hub.seen();
    assert!(
        seen[before..]
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&bearer)),
        "{seen:?}"
    );

    // A Hub that fails: the error says so and never shows the token.
    let broken = StandIn::new(|_, _| Reply::status(500));
    let cache = fx.path("cache-broken");
    let out = fetch(
        &cache,
        &broken.url(),
        Some(&format!("{TOKEN}\n")),
        &["org/tiny"],
    );
    assert_token_unseen(&out, &cache);
    fails_with(out, &["org/tiny", "500"]);

    // Another source succeeds afterwards: the failure reported on the way hides it as well.
    let out = ok(fetch(
        &cache,
        &broken.url(),
        Some(&format!("{TOKEN}\r\n")),
        &["org/tiny", s(&fx.model)],
    ));
    assert!(stderr(&out).contains("model source org/tiny failed"));
    assert_eq!(stdout(&out).lines().last(), Some(s(&fx.model)));
    assert_token_unseen(&out, &cache);

    // A control character inside is no token: refused, without printing it.
    let out = fetch(
        &cache,
        &hub.url(),
        Some(&format!("{TOKEN}\u{1b}[2J")),
        &["org/tiny"],
    );
    assert_token_unseen(&out, &cache);
    fails_with(out, &["HF_TOKEN", "value is not shown"]);
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn credentials_in_hf_endpoint_are_refused_unshown() {
    let fx = Fixture::new("hub-endpoint");
    let out = fetch(
        &fx.cache,
        &format!("http://user:{TOKEN}@127.0.0.1:9"),
        None,
        &["org/tiny"],
    );
    assert_token_unseen(&out, &fx.cache);
    fails_with(out, &["HF_ENDPOINT", "user name or password"]);
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn the_token_follows_redirects_on_the_same_host_only() {
    let fx = Fixture::new("hub-redirect");
    let weights = std::fs::read(fx.model.join("model.safetensors")).unwrap();
    // The second host, where the Hub sends LFS files (a CDN): loopback under another name.
    let cdn = {
        let weights = weights.clone();
        StandIn::new(move |_, path| match path {
            "/lfs/model.safetensors" => Reply {
                body: weights.clone(),
                ..Reply::status(200)
            }
            .header(
                "Content-Range",
                &format!("bytes 0-{}/{}", weights.len() - 1, weights.len()),
            ),
            _ => Reply::status(404),
        })
    };
    let cdn_url = format!("http://localhost:{}/lfs/model.safetensors", cdn.port);
    let sha256 = format!("{:064x}", hash(&weights));
    let model = fx.model.clone();
    let size = weights.len().to_string();
    let lfs_etag = sha256.clone();
    let hub = StandIn::new(move |_, path| {
        if path == "/org/tiny/resolve/main/model.safetensors" {
            return Reply::status(302)
                .header("Location", &cdn_url)
                .header("X-Repo-Commit", COMMIT)
                .header("X-Linked-Etag", &format!("\"{lfs_etag}\""))
                .header("X-Linked-Size", &size);
        }
        // A renamed repository: the Hub redirects to the new name on the same host.
        if let Some(rest) = path.strip_prefix("/org/tiny/") {
            return Reply::status(307).header("Location", &format!("/org/renamed/{rest}"));
        }
        file_reply(&model, path)
    });
    let out = ok(fetch(&fx.cache, &hub.url(), Some(TOKEN), &["org/tiny"]));
    let folder = PathBuf::from(stdout(&out).lines().last().unwrap());

    let to_cdn = cdn.seen();
    assert!(!to_cdn.is_empty(), "the weights came from the second host");
    assert!(
        to_cdn.iter().all(|r| r.authorization.is_none()),
        "token sent across hosts: {to_cdn:?}"
    );
    let to_hub = hub.seen();
    assert!(
        to_hub.iter().any(|r| r.path.starts_with("/org/renamed/")),
        "{to_hub:?}"
    );
    assert!(
        to_hub
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "token kept on the same host: {to_hub:?}"
    );

    // huggingface_hub's layout: refs, snapshots linking to blobs named by their hash.
    let repo = fx.cache.join("hf/hub/models--org--tiny");
    assert_eq!(folder, repo.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(
        std::fs::read_link(folder.join("model.safetensors")).unwrap(),
        Path::new("../../blobs").join(&sha256)
    );
    assert_eq!(
        std::fs::read(folder.join("model.safetensors")).unwrap(),
        weights
    );
    assert!(folder.join("config.json").is_file() && folder.join("vocab.txt").is_file());
    assert!(to_hub.iter().any(|r| r.method == "HEAD"));
    no_partial_files(&fx.cache);
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn hostile_commits_and_etags_are_refused_before_they_name_a_path() {
    let fx = Fixture::new("hub-hostile");
    let absolute = fx.path("absolute-etag");
    // From a cache's blobs/ (or snapshots/) folder, five levels up is the fixture's folder.
    let climb = "../../../../..";
    let cases: Vec<(&str, String, PathBuf)> = vec![
        (
            "ETag",
            format!("\"{}\"", absolute.display()),
            absolute.clone(),
        ),
        (
            "ETag",
            format!("\"{climb}/escaped-etag\""),
            fx.path("escaped-etag"),
        ),
        ("ETag", "\"ab/cd\"".into(), fx.path("unused")),
        (
            "X-Linked-Etag",
            format!("{climb}/escaped-linked"),
            fx.path("escaped-linked"),
        ),
        (
            "X-Repo-Commit",
            format!("{climb}/escaped-commit"),
            fx.path("escaped-commit"),
        ),
        ("X-Repo-Commit", "main".into(), fx.path("unused")),
        (
            "X-Repo-Commit",
            format!("{}g", &COMMIT[..39]),
            fx.path("unused"),
        ),
    ];
    for (i, (header, value, escape)) in cases.into_iter().enumerate() {
        let model = fx.model.clone();
        let hostile = value.clone();
        let hub = StandIn::new(move |_, path| file_reply(&model, path).header(header, &hostile));
        let cache = fx.path(&format!("cache{i}"));
        let out = fetch(&cache, &hub.url(), None, &["org/tiny"]);
        let line = fails_with(out, &["org/tiny", "config.json", header]);
        assert!(!line.contains('\u{1b}'), "{line}");
        assert!(
            std::fs::symlink_metadata(&escape).is_err(),
            "{header} {value}: wrote {}",
            escape.display()
        );
        assert!(
            files_under(&cache).is_empty(),
            "{header} {value}: nothing is written: {:?}",
            files_under(&cache)
        );
    }
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn downloads_are_bounded_and_leave_no_partial_file() {
    let fx = Fixture::new("hub-bounded");
    let model = fx.model.clone();
    // Announces more than bertcls downloads.
    let huge = StandIn::new(move |_, path| {
        file_reply(&model, path).header("X-Linked-Size", &(1u64 << 40).to_string())
    });
    fails_with(
        fetch(&fx.cache, &huge.url(), None, &["org/tiny"]),
        &["config.json", "X-Linked-Size", "more than"],
    );
    no_partial_files(&fx.cache);

    // Announces more than it then sends.
    let model = fx.model.clone();
    let short = StandIn::new(move |method, path| {
        let reply = file_reply(&model, path);
        let announced = (reply.body.len() + 1000).to_string();
        match method {
            "HEAD" => reply.header("X-Linked-Size", &announced),
            _ => Reply {
                chunked: true,
                ..reply
            },
        }
    });
    fails_with(
        fetch(&fx.cache, &short.url(), None, &["org/tiny"]),
        &["config.json", "ended after"],
    );
    no_partial_files(&fx.cache);
    assert!(
        files_under(&fx.cache.join("hf/hub/models--org--tiny/blobs")).is_empty(),
        "no blob from a short download"
    );

    // Redirects without end, bounded in this stand-in only so that an unbounded client ends.
    let count = Arc::new(Mutex::new(0));
    let looping = StandIn::new(move |_, path| {
        let mut n = count.lock().unwrap();
        *n += 1;
        if *n > 50 {
            return Reply::status(404);
        }
        let base = path.split('?').next().unwrap_or(path);
        Reply::status(302).header("Location", &format!("{base}?n={n}"))
    });
    fails_with(
        fetch(&fx.cache, &looping.url(), None, &["org/tiny"]),
        &["config.json", "more than 5 redirects"],
    );
    assert!(looping.seen().len() <= 6, "{:?}", looping.seen());

    // A redirect out of HTTP.
    let elsewhere =
        StandIn::new(|_, _| Reply::status(302).header("Location", "file:///etc/passwd"));
    fails_with(
        fetch(&fx.cache, &elsewhere.url(), None, &["org/tiny"]),
        &["config.json", "not an http(s) URL"],
    );
    std::fs::remove_dir_all(&fx.dir).unwrap();
}

#[test]
fn other_architectures_fetch_with_their_tokenizer_settings_and_unsupported_ones_stop_early() {
    let fx = Fixture::new("hub-architectures");
    let arch = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arch");
    let roberta = arch.join("roberta");
    let hub = StandIn::new(move |_, path| file_reply(&roberta, path));
    let cache = fx.path("cache");
    let out = ok(fetch(&cache, &hub.url(), None, &["org/roberta"]));
    let dir = PathBuf::from(stdout(&out).lines().last().unwrap());
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        assert!(dir.join(file).is_file(), "{file} fetched");
    }

    // model_type gpt2: refused once config.json is read, before the weights are asked for.
    let gpt2 = fx.path("gpt2");
    std::fs::create_dir_all(&gpt2).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(arch.join("roberta/config.json")).unwrap()).unwrap();
    config["model_type"] = "gpt2".into();
    std::fs::write(gpt2.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        arch.join("roberta/model.safetensors"),
        gpt2.join("model.safetensors"),
    )
    .unwrap();
    let hub = StandIn::new(move |_, path| file_reply(&gpt2, path));
    fails_with(
        fetch(&fx.path("cache-gpt2"), &hub.url(), None, &["org/gpt2"]),
        &[
            "org/gpt2",
            "model_type `gpt2` is not supported (supported: bert, roberta",
        ],
    );
    assert!(
        hub.seen()
            .iter()
            .all(|r| !r.path.contains("model.safetensors")),
        "{:?}",
        hub.seen()
    );

    // A SentencePiece model and no tokenizer.json: the error names the file.
    let spm = fx.path("spm");
    std::fs::create_dir_all(&spm).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(arch.join("deberta-v2").join(file), spm.join(file)).unwrap();
    }
    std::fs::write(spm.join("spm.model"), b"sentencepiece").unwrap();
    let hub = StandIn::new(move |_, path| file_reply(&spm, path));
    fails_with(
        fetch(&fx.path("cache-spm"), &hub.url(), None, &["org/deberta"]),
        &["has spm.model but no tokenizer.json", "save_pretrained"],
    );
    std::fs::remove_dir_all(&fx.dir).unwrap();
}
