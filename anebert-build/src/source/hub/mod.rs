//! HuggingFace hub downloads into the HuggingFace cache, shared with Python.
//!
//! Protocol: `HEAD {endpoint}/{repo}/resolve/{revision}/{file}` without following redirects gives
//! the commit (`X-Repo-Commit`), the content id (`X-Linked-Etag` for LFS files — their sha256 —,
//! else `ETag`, the git blob sha1) and, for LFS files, a `Location` on a CDN. The body is then
//! fetched from there. Cache layout (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), as huggingface_hub writes it:
//!
//! ```text
//! models--{org}--{name}/blobs/{etag}                  file content
//! models--{org}--{name}/snapshots/{commit}/{file}     symlink → ../../blobs/{etag}
//! models--{org}--{name}/refs/{revision}               the commit a branch or tag resolved to
//! models--{org}--{name}/.no_exist/{commit}/{file}     the file does not exist at that commit
//! .locks/models--{org}--{name}/{etag}.lock            held while downloading that blob
//! ```
//!
//! Every download is checked against its content id (sha256 for LFS files, the git blob sha1
//! otherwise) before it enters `blobs/`; partial downloads stay in `{etag}.incomplete` and are
//! resumed with `Range`; a lock per blob makes concurrent build scripts download it once.

mod blobs;
mod error;
mod settings;

pub use error::HubError;
pub use settings::{HubConfig, DEFAULT_ENDPOINT, ENV_VARS};

use super::RepoId;
use blobs::{is_commit, link_snapshot, normalize_etag, valid_etag, verify, write_atomic};
use error::io_err;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which files of a repository to fetch.
#[derive(Clone, Debug)]
pub struct FileRequest {
    /// Path in the repository.
    pub name: String,
    /// Whether its absence is an error.
    pub required: bool,
}

/// A snapshot in the cache with the files that exist.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// `snapshots/{commit}`, usable as a checkpoint directory.
    pub dir: PathBuf,
    /// The commit.
    pub commit: String,
    /// Files present, with their content ids (sha256 for LFS files, git sha1 otherwise).
    pub files: Vec<(String, String)>,
}

/// What a HEAD on the resolve URL said.
struct Meta {
    commit: String,
    etag: String,
    url: String,
    size: Option<u64>,
}

/// A hub client over the HuggingFace cache.
pub struct Hub {
    config: HubConfig,
    head_agent: ureq::Agent,
    get_agent: ureq::Agent,
}

impl Hub {
    /// A client for `config`.
    pub fn new(config: HubConfig) -> Hub {
        let agent = |redirects: u32| -> ureq::Agent {
            let b = ureq::Agent::config_builder();
            // Apple platforms use the system TLS stack and its trust store (see Cargo.toml).
            #[cfg(target_vendor = "apple")]
            let b = b.tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::NativeTls)
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            );
            b.max_redirects(redirects)
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                .timeout_recv_body(Some(Duration::from_secs(60)))
                .user_agent(format!("anebert-build/{}", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        };
        Hub {
            head_agent: agent(0),
            get_agent: agent(10),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    fn repo_dir(&self, repo: &RepoId) -> PathBuf {
        self.config.cache.join(repo.cache_folder())
    }

    /// Make `files` of `repo` at `revision` available in the cache and return the snapshot.
    /// When the cache already holds every file (or knows it does not exist), no request is made.
    pub fn snapshot(
        &self,
        repo: &RepoId,
        revision: &str,
        files: &[FileRequest],
    ) -> Result<Snapshot, HubError> {
        let rdir = self.repo_dir(repo);
        if let Some(s) = self.cached(repo, revision, files)? {
            return Ok(s);
        }
        if let Some(why) = &self.config.offline {
            let commit = self.cached_commit(repo, revision);
            let missing = files
                .iter()
                .find(|f| {
                    f.required
                        && commit
                            .as_ref()
                            .is_none_or(|c| !rdir.join("snapshots").join(c).join(&f.name).is_file())
                })
                .map_or_else(|| files[0].name.clone(), |f| f.name.clone());
            return Err(HubError::Offline {
                repo: repo.to_string(),
                revision: revision.to_string(),
                file: missing,
                cache: self.config.cache.clone(),
                why: why.clone(),
            });
        }
        let mut commit: Option<String> = None;
        let mut present = Vec::new();
        for f in files {
            // Pin the commit the first file resolved to, so that every file is of one snapshot.
            let rev = commit.clone().unwrap_or_else(|| revision.to_string());
            let Some(meta) = self.head(repo, &rev, &f.name)? else {
                if f.required {
                    return Err(HubError::Status {
                        url: self.resolve_url(repo, &rev, &f.name),
                        status: 404,
                        hint: format!(
                            " — {repo} has no `{}` at {rev}; is it a model repository with safetensors weights?",
                            f.name
                        ),
                    });
                }
                if let Some(c) = &commit {
                    let p = rdir.join(".no_exist").join(c).join(&f.name);
                    if let Some(parent) = p.parent() {
                        fs::create_dir_all(parent).map_err(io_err(parent))?;
                    }
                    File::create(&p).map_err(io_err(&p))?;
                }
                continue;
            };
            if commit.is_none() {
                commit = Some(meta.commit.clone());
            }
            self.download(repo, &f.name, &meta)?;
            link_snapshot(&rdir, &meta.commit, &f.name, &meta.etag)?;
            present.push((f.name.clone(), meta.etag.clone()));
        }
        let commit = commit.unwrap_or_default();
        if commit != revision {
            let r = rdir.join("refs").join(revision);
            write_atomic(&r, commit.as_bytes())?;
        }
        Ok(Snapshot {
            dir: rdir.join("snapshots").join(&commit),
            commit,
            files: present,
        })
    }

    /// The commit `revision` resolved to earlier, from `refs/`, or `revision` itself when it is one.
    fn cached_commit(&self, repo: &RepoId, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let r = self.repo_dir(repo).join("refs").join(revision);
        let c = fs::read_to_string(r).ok()?;
        let c = c.trim().to_string();
        is_commit(&c).then_some(c)
    }

    /// The snapshot when every required file is cached and every optional one is cached or known
    /// absent.
    fn cached(
        &self,
        repo: &RepoId,
        revision: &str,
        files: &[FileRequest],
    ) -> Result<Option<Snapshot>, HubError> {
        let Some(commit) = self.cached_commit(repo, revision) else {
            return Ok(None);
        };
        let rdir = self.repo_dir(repo);
        let snap = rdir.join("snapshots").join(&commit);
        let mut present = Vec::new();
        for f in files {
            let p = snap.join(&f.name);
            if p.is_file() {
                let id = fs::read_link(&p)
                    .ok()
                    .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_default();
                present.push((f.name.clone(), id));
            } else if f.required || !rdir.join(".no_exist").join(&commit).join(&f.name).exists() {
                return Ok(None);
            }
        }
        Ok(Some(Snapshot {
            dir: snap,
            commit,
            files: present,
        }))
    }

    fn resolve_url(&self, repo: &RepoId, revision: &str, file: &str) -> String {
        // Revisions such as `refs/pr/1` keep their slashes percent-encoded, as the hub expects.
        format!(
            "{}/{}/resolve/{}/{}",
            self.config.endpoint,
            repo,
            revision.replace('/', "%2F"),
            file
        )
    }

    fn authorized<B>(&self, req: ureq::RequestBuilder<B>, url: &str) -> ureq::RequestBuilder<B> {
        // The token goes to the hub only, never to a CDN on another host.
        match &self.config.token {
            Some(t) if same_origin(url, &self.config.endpoint) => {
                req.header("Authorization", format!("Bearer {t}"))
            }
            _ => req,
        }
    }

    /// HEAD the resolve URL; `None` on 404.
    fn head(&self, repo: &RepoId, revision: &str, file: &str) -> Result<Option<Meta>, HubError> {
        let url = self.resolve_url(repo, revision, file);
        let resp = self
            .authorized(self.head_agent.head(&url), &url)
            .header("Accept-Encoding", "identity")
            .call()
            .map_err(|e| HubError::Http {
                url: url.clone(),
                msg: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if !(200..400).contains(&status) {
            return Err(status_error(&url, status, self.config.token.is_some()));
        }
        let h = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let commit = h("x-repo-commit").ok_or(HubError::Protocol {
            url: url.clone(),
            header: "X-Repo-Commit",
        })?;
        let etag = h("x-linked-etag")
            .or_else(|| h("etag"))
            .map(|e| normalize_etag(&e))
            .ok_or(HubError::Protocol {
                url: url.clone(),
                header: "ETag",
            })?;
        let size = h("x-linked-size")
            .or_else(|| h("content-length"))
            .and_then(|s| s.parse().ok());
        let target = match h("location") {
            Some(loc) if (300..400).contains(&status) => absolute(&loc, &self.config.endpoint),
            _ => url.clone(),
        };
        if !is_commit(&commit) || !valid_etag(&etag) {
            return Err(HubError::Protocol {
                url,
                header: "well-formed X-Repo-Commit / ETag",
            });
        }
        Ok(Some(Meta {
            commit,
            etag,
            url: target,
            size,
        }))
    }

    /// Fetch a blob into `blobs/{etag}` unless it is there: locked, resumable, verified, atomic.
    fn download(&self, repo: &RepoId, file: &str, meta: &Meta) -> Result<(), HubError> {
        let rdir = self.repo_dir(repo);
        let blobs = rdir.join("blobs");
        let blob = blobs.join(&meta.etag);
        if blob.is_file() {
            return Ok(());
        }
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let locks = self.config.cache.join(".locks").join(repo.cache_folder());
        fs::create_dir_all(&locks).map_err(io_err(&locks))?;
        let lock_path = locks.join(format!("{}.lock", meta.etag));
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        if blob.is_file() {
            // Another process downloaded it while we waited.
            return Ok(());
        }
        let part = blobs.join(format!("{}.incomplete", meta.etag));
        let mut last = None;
        for _attempt in 0..4 {
            match self.fetch_into(&part, meta, file) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e @ HubError::Http { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        if let Err(e) = verify(&part, &meta.etag, file) {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
        fs::rename(&part, &blob).map_err(io_err(&blob))?;
        Ok(())
    }

    /// Download (the rest of) the body into `part`, resuming from its current length.
    fn fetch_into(&self, part: &Path, meta: &Meta, file: &str) -> Result<(), HubError> {
        let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if meta.size.is_some_and(|s| have == s) {
            return Ok(());
        }
        let mut req = self
            .authorized(self.get_agent.get(&meta.url), &meta.url)
            .header("Accept-Encoding", "identity");
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let http = |e: &dyn std::fmt::Display| HubError::Http {
            url: meta.url.clone(),
            msg: e.to_string(),
        };
        let resp = req.call().map_err(|e| http(&e))?;
        let status = resp.status().as_u16();
        let append = match status {
            206 => true,
            200 => false,
            416 if have > 0 => {
                // Our partial file is longer than the content: start over.
                let _ = fs::remove_file(part);
                return Err(http(
                    &"the server refused to resume; retrying from the start",
                ));
            }
            _ => return Err(status_error(&meta.url, status, self.config.token.is_some())),
        };
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .map_err(io_err(part))?;
        let start = if append { have } else { 0 };
        let bar = self.config.progress.then(|| {
            let bar = indicatif::ProgressBar::new(meta.size.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:30!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(file.to_string());
            bar.set_position(start);
            bar
        });
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Keep what arrived (flushed) so that the retry resumes after it.
                    let _ = out.flush();
                    return Err(http(&format!("download interrupted: {e}")));
                }
            };
            out.write_all(&buf[..n]).map_err(io_err(part))?;
            if let Some(b) = &bar {
                b.inc(n as u64);
            }
        }
        out.sync_all().map_err(io_err(part))?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(())
    }
}

fn status_error(url: &str, status: u16, has_token: bool) -> HubError {
    let hint = match status {
        401 | 403 if has_token => " — the token in HF_TOKEN has no access to this repository (gated: accept its licence on the hub)".to_string(),
        401 | 403 => " — private or gated repository: set HF_TOKEN to a token with access".to_string(),
        404 => " — no such repository or revision".to_string(),
        429 => " — rate limited by the hub; retry later or set HF_TOKEN".to_string(),
        _ => String::new(),
    };
    HubError::Status {
        url: url.to_string(),
        status,
        hint,
    }
}

fn same_origin(url: &str, endpoint: &str) -> bool {
    let origin = |u: &str| {
        let rest = u.split_once("://").map_or(u, |(_, r)| r);
        u.split_once("://")
            .map(|(s, _)| s)
            .unwrap_or("")
            .to_string()
            + "://"
            + rest.split('/').next().unwrap_or("")
    };
    origin(url) == origin(endpoint)
}

fn absolute(loc: &str, endpoint: &str) -> String {
    if loc.contains("://") {
        loc.to_string()
    } else {
        format!(
            "{endpoint}{}{}",
            if loc.starts_with('/') { "" } else { "/" },
            loc
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_urls() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert!(valid_etag(&"a".repeat(64)));
        assert!(!valid_etag("../../etc"));
        assert!(same_origin(
            "http://127.0.0.1:8080/x/resolve/main/a",
            "http://127.0.0.1:8080"
        ));
        assert!(!same_origin(
            "https://cdn-lfs.hf.co/repos/x",
            "https://huggingface.co"
        ));
        assert_eq!(
            absolute("/api/x", "http://h:1"),
            "http://h:1/api/x".to_string()
        );
    }
}
