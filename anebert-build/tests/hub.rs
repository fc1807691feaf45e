//! The hub path against a local HTTP server on 127.0.0.1 that speaks HuggingFace's resolve API
//! (HEAD with X-Repo-Commit / ETag / X-Linked-Etag, 302 to a CDN path for LFS files, Range):
//! cold fetch, warm (no request), corrupted body, interrupted body, concurrent builds, offline.

use anebert_build::source::hub::{HubConfig, HubError};
use anebert_build::source::SourceError;
use anebert_build::{BuildError, Config, Head};
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_secret_token";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct File {
    bytes: Vec<u8>,
    /// sha256 for LFS files, git blob sha1 otherwise.
    etag: String,
    lfs: bool,
}

#[derive(Clone, Debug)]
struct Logged {
    method: String,
    path: String,
    range: Option<String>,
    auth: bool,
}

struct Server {
    addr: String,
    files: BTreeMap<String, File>,
    log: Mutex<Vec<Logged>>,
    corrupt_next: AtomicBool,
    truncate_next: AtomicBool,
}

impl Server {
    fn start() -> Arc<Server> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/modernbert-tiny");
        let mut files = BTreeMap::new();
        for name in ["config.json", "model.safetensors", "tokenizer.json"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let lfs = name.ends_with(".safetensors");
            let etag = if lfs {
                hex(&Sha256::digest(&bytes))
            } else {
                let mut h = Sha1::new();
                h.update(format!("blob {}\0", bytes.len()).as_bytes());
                h.update(&bytes);
                hex(&h.finalize())
            };
            files.insert(name.to_string(), File { bytes, etag, lfs });
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Arc::new(Server {
            addr: format!("http://{}", listener.local_addr().unwrap()),
            files,
            log: Mutex::new(Vec::new()),
            corrupt_next: AtomicBool::new(false),
            truncate_next: AtomicBool::new(false),
        });
        let s = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = s.handle(stream);
                });
            }
        });
        server
    }

    fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    fn body_gets(&self, file: &str) -> usize {
        let etag = &self.files[file].etag;
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(etag.as_str()))
            .count()
    }

    fn handle(&self, stream: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let range = headers.get("range").cloned();
        self.log.lock().unwrap().push(Logged {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
            auth: headers.get("authorization") == Some(&format!("Bearer {TOKEN}")),
        });
        let mut out = stream;
        let send = |out: &mut TcpStream, status: &str, hdrs: &[(String, String)], body: &[u8]| {
            let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
            for (k, v) in hdrs {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            out.write_all(head.as_bytes())?;
            if method != "HEAD" {
                out.write_all(body)?;
            }
            out.flush()
        };
        // /org/tiny/resolve/{rev}/{file}
        if let Some(rest) = path.strip_prefix("/org/tiny/resolve/") {
            let (_rev, file) = rest.split_once('/').unwrap_or((rest, ""));
            let Some(f) = self.files.get(file) else {
                return send(
                    &mut out,
                    "404 Not Found",
                    &[("Content-Length".into(), "0".into())],
                    b"",
                );
            };
            let mut h = vec![("X-Repo-Commit".to_string(), COMMIT.to_string())];
            if f.lfs {
                h.push(("X-Linked-Etag".into(), format!("\"{}\"", f.etag)));
                h.push(("X-Linked-Size".into(), f.bytes.len().to_string()));
                h.push(("ETag".into(), "\"not-the-content-id\"".into()));
                h.push(("Location".into(), format!("/cdn/{}", f.etag)));
                h.push(("Content-Length".into(), "0".into()));
                return send(&mut out, "302 Found", &h, b"");
            }
            h.push(("ETag".into(), format!("\"{}\"", f.etag)));
            h.push(("Content-Length".into(), f.bytes.len().to_string()));
            return send(&mut out, "200 OK", &h, &f.bytes);
        }
        if let Some(etag) = path.strip_prefix("/cdn/") {
            let Some(f) = self.files.values().find(|f| f.etag == etag) else {
                return send(
                    &mut out,
                    "404 Not Found",
                    &[("Content-Length".into(), "0".into())],
                    b"",
                );
            };
            let mut body = f.bytes.clone();
            if self.corrupt_next.swap(false, Ordering::SeqCst) {
                let n = body.len() / 2;
                body[n] ^= 0xff;
            }
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
            let (status, slice) = match start {
                Some(s) if s < body.len() => ("206 Partial Content", &body[s..]),
                _ => ("200 OK", &body[..]),
            };
            let h = vec![("Content-Length".to_string(), slice.len().to_string())];
            if self.truncate_next.swap(false, Ordering::SeqCst) {
                // Announce the full length, send half, hang up.
                let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
                head.push_str(&format!("Content-Length: {}\r\n\r\n", slice.len()));
                out.write_all(head.as_bytes())?;
                out.write_all(&slice[..slice.len() / 2])?;
                out.flush()?;
                return out.shutdown(std::net::Shutdown::Both);
            }
            return send(&mut out, status, &h, slice);
        }
        send(
            &mut out,
            "404 Not Found",
            &[("Content-Length".into(), "0".into())],
            b"",
        )
    }
}

struct Env {
    _tmp: tempfile::TempDir,
    hub_cache: PathBuf,
    art_cache: PathBuf,
    out: PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    Env {
        hub_cache: tmp.path().join("hf/hub"),
        art_cache: tmp.path().join("anebert"),
        out: tmp.path().join("out"),
        _tmp: tmp,
    }
}

fn config(server: &Server, e: &Env, offline: Option<&str>) -> Config {
    let mut c = Config::new();
    c.model("org/tiny")
        .head(Head::Hidden)
        .seq_len(16)
        .cache_dir(&e.art_cache)
        .out_dir(&e.out)
        .hub(HubConfig {
            endpoint: server.addr.clone(),
            token: Some(TOKEN.into()),
            cache: e.hub_cache.clone(),
            offline: offline.map(str::to_string),
            progress: false,
        });
    c
}

fn repo(e: &Env) -> PathBuf {
    e.hub_cache.join("models--org--tiny")
}

#[test]
fn cold_then_warm_fetch_uses_the_python_cache_layout() {
    let server = Server::start();
    let e = env();
    let (arts, _) = config(&server, &e, None).artifacts().unwrap();
    assert!(arts[0].converted);
    assert_eq!(arts[0].info.source, format!("org/tiny@{COMMIT}"));
    let r = repo(&e);
    assert_eq!(
        std::fs::read_to_string(r.join("refs/main")).unwrap(),
        COMMIT
    );
    let snap = r.join("snapshots").join(COMMIT);
    for (name, f) in &server.files {
        let link = std::fs::read_link(snap.join(name)).unwrap();
        assert_eq!(link, Path::new("../../blobs").join(&f.etag), "{name}");
        assert_eq!(std::fs::read(snap.join(name)).unwrap(), f.bytes);
    }
    assert!(r
        .join(".no_exist")
        .join(COMMIT)
        .join("modules.json")
        .exists());
    assert_eq!(server.body_gets("model.safetensors"), 1);
    // The token goes to the hub on every request (same origin here).
    assert!(server.requests().iter().all(|q| q.auth));

    // Warm: same inputs → no request at all, no conversion.
    let before = server.requests().len();
    let mut c = config(&server, &e, None);
    let (arts, _) = c.artifacts().unwrap();
    assert!(!arts[0].converted);
    let entries = c.convert().unwrap();
    assert_eq!(
        server.requests().len(),
        before,
        "a warm build made requests"
    );
    assert!(entries[0].spec_file().is_file());
    // Placing again rewrites nothing under OUT_DIR.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let index = e.out.join("anebert/index.json");
    let stamp = (mtime(&index), mtime(&entries[0].spec_file()));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(c.convert().unwrap(), entries);
    assert_eq!(stamp, (mtime(&index), mtime(&entries[0].spec_file())));
}

#[test]
fn corrupted_body_is_an_error_and_leaves_nothing_in_the_cache() {
    let server = Server::start();
    let e = env();
    server.corrupt_next.store(true, Ordering::SeqCst);
    let err = config(&server, &e, None).artifacts().unwrap_err();
    let msg = anebert_build::report(&err);
    assert!(msg.contains("sha256") && msg.contains("discarded"), "{msg}");
    assert!(msg.contains("help:"), "{msg}");
    let blobs: Vec<_> = std::fs::read_dir(repo(&e).join("blobs"))
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    let etag = &server.files["model.safetensors"].etag;
    assert!(
        blobs.iter().all(|b| !b.starts_with(etag.as_str())),
        "corrupt bytes left in the cache: {blobs:?}"
    );
    assert!(!repo(&e)
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .exists());
    // The next build succeeds.
    config(&server, &e, None).artifacts().unwrap();
}

#[test]
fn interrupted_body_is_resumed_with_range() {
    let server = Server::start();
    let e = env();
    server.truncate_next.store(true, Ordering::SeqCst);
    let (arts, _) = config(&server, &e, None).artifacts().unwrap();
    assert!(arts[0].converted);
    let etag = server.files["model.safetensors"].etag.clone();
    let gets: Vec<Logged> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&etag))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let half = server.files["model.safetensors"].bytes.len() / 2;
    assert_eq!(
        gets[1].range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
}

#[test]
fn concurrent_builds_download_once_and_convert_once() {
    let server = Server::start();
    let e = Arc::new(env());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (s, e) = (server.clone(), e.clone());
            std::thread::spawn(move || config(&s, &e, None).artifacts().unwrap().0[0].converted)
        })
        .collect();
    let converted: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(converted.iter().filter(|c| **c).count(), 1, "{converted:?}");
    assert_eq!(server.body_gets("model.safetensors"), 1);
}

#[test]
fn offline_uses_the_cache_or_names_prepare() {
    let server = Server::start();
    let e = env();
    let err = config(&server, &e, Some("ANEBERT_OFFLINE is set"))
        .artifacts()
        .unwrap_err();
    let BuildError::Model { error, .. } = &err else {
        panic!("{err:?}")
    };
    let BuildError::Source(s) = error.as_ref() else {
        panic!("{err:?}")
    };
    assert!(matches!(
        s.as_ref(),
        SourceError::Hub(HubError::Offline { .. })
    ));
    let msg = anebert_build::report(&err);
    assert!(
        msg.contains("cargo anebert prepare") && msg.contains("ANEBERT_OFFLINE"),
        "{msg}"
    );
    assert!(server.requests().is_empty());
    assert!(!msg.contains(TOKEN));

    config(&server, &e, None).artifacts().unwrap();
    let n = server.requests().len();
    let (arts, _) = config(&server, &e, Some("HF_HUB_OFFLINE is set"))
        .artifacts()
        .unwrap();
    assert!(!arts[0].converted);
    assert_eq!(server.requests().len(), n);
}

#[test]
fn bad_repo_ids_never_reach_the_network() {
    let server = Server::start();
    let e = env();
    for bad in ["org/../../etc", "a/b/c", "org/tiny@../x"] {
        let mut c = config(&server, &e, None);
        c.model(bad);
        let msg = c.artifacts().unwrap_err().to_string();
        assert!(
            msg.contains("not a") || msg.contains("not valid"),
            "{bad}: {msg}"
        );
    }
    assert!(server.requests().is_empty());
    let mut c = config(&server, &e, None);
    c.model("org/missing");
    let msg = anebert_build::report(&c.artifacts().unwrap_err());
    assert!(msg.contains("404"), "{msg}");
}

#[test]
fn prepared_artifacts_serve_offline_builds() {
    let server = Server::start();
    let e = env();
    let krate = e.out.parent().unwrap().join("crate");
    std::fs::create_dir_all(&krate).unwrap();
    let mut c = config(&server, &e, None);
    c.manifest_dir(&krate).name("tiny");
    let dirs = c.prepare().unwrap();
    assert_eq!(dirs, [krate.join(".anebert/tiny-s16")]);
    assert!(dirs[0].join("model.mlpackage/Manifest.json").is_file());
    assert_eq!(
        c.prepared_status().unwrap()[0].1.as_deref(),
        Some(dirs[0].as_path())
    );
    let prepared_key = anebert_build::artifact::Artifact::open(&dirs[0])
        .unwrap()
        .info
        .key;
    assert_eq!(
        c.current_keys().unwrap()[0],
        (dirs[0].clone(), prepared_key.clone())
    );

    // Another machine: empty caches, offline (docs.rs) → the prepared artifact, no request.
    let e2 = env();
    let n = server.requests().len();
    let mut offline = config(
        &server,
        &e2,
        Some("DOCS_RS is set: docs.rs builds have no network"),
    );
    offline.manifest_dir(&krate).name("tiny");
    let entries = offline.convert().unwrap();
    assert_eq!(server.requests().len(), n);
    assert_eq!(entries[0].info.key, prepared_key);
    // A different request (another sequence length) is not served by it.
    offline.seq_len(32);
    let msg = anebert_build::report(&offline.artifacts().unwrap_err());
    assert!(msg.contains("cargo anebert prepare"), "{msg}");
}
