//! `.anebert/`: artifacts prepared by `cargo anebert prepare` beside the crate's Cargo.toml, for
//! offline and docs.rs builds, each tagged with the request it was made for.

use super::error::{io_err, BuildError};
use super::{Config, PREPARED_DIR};
use crate::artifact::{self, Artifact};
use crate::convert::ConvertOptions;
use crate::source::hub::HubConfig;
use std::fs;
use std::path::PathBuf;

impl Config {
    /// What identifies a conversion request independently of the machine: the model as
    /// declared, the options and the converter version.
    fn request_id(&self, o: &ConvertOptions) -> String {
        use sha2::{Digest, Sha256};
        let text = format!(
            "{} | {o:?} | anebert {}",
            self.spec.model.as_deref().unwrap_or_default(),
            crate::convert::CONVERTER_KEY
        );
        crate::checkpoint::hex(&Sha256::digest(text.as_bytes()))[..32].to_string()
    }

    /// `.anebert/{dir name}` beside the crate's Cargo.toml: where `cargo anebert prepare` puts
    /// the artifact of `o` for offline and docs.rs builds.
    pub(super) fn prepared_dir(&self, o: &ConvertOptions) -> PathBuf {
        self.base_dir().join(PREPARED_DIR).join(self.dir_name(o))
    }

    /// The prepared artifact for `o`, when present and made for exactly this request.
    pub(super) fn prepared(&self, o: &ConvertOptions) -> Option<Artifact> {
        let dir = self.prepared_dir(o);
        let req = fs::read_to_string(dir.join("request")).ok()?;
        (req.trim() == self.request_id(o))
            .then(|| Artifact::open(&dir))
            .flatten()
    }

    /// Fetch and convert every package (online), and copy the artifacts into `.anebert/`
    /// (atomically, replacing stale ones). Returns the prepared directories.
    pub fn prepare(&self) -> Result<Vec<PathBuf>, BuildError> {
        let (arts, _) = self.artifacts()?;
        let mut out = Vec::new();
        for (a, o) in arts.iter().zip(self.plan()?) {
            let dir = self.prepared_dir(&o);
            if let Some(p) = dir.parent() {
                fs::create_dir_all(p).map_err(io_err(p))?;
            }
            let tmp = crate::fsx::tmp_dir(&dir).map_err(io_err(&dir))?;
            let res = (|| {
                for rel in artifact::list_files(&a.dir)? {
                    if rel.ends_with(".lock")
                        || rel
                            .split('/')
                            .next()
                            .is_some_and(|d| d.ends_with(".mlmodelc"))
                        || rel.starts_with("mlmodelc")
                    {
                        continue;
                    }
                    let to = tmp.join(&rel);
                    if let Some(p) = to.parent() {
                        fs::create_dir_all(p).map_err(io_err(p))?;
                    }
                    fs::copy(a.dir.join(&rel), &to).map_err(io_err(&to))?;
                }
                let r = tmp.join("request");
                fs::write(&r, format!("{}\n", self.request_id(&o))).map_err(io_err(&r))?;
                // Atomic: a reader sees the old artifact or the new one, never neither.
                crate::fsx::publish_dir(&tmp, &dir).map_err(io_err(&dir))
            })();
            if res.is_err() {
                let _ = fs::remove_dir_all(&tmp);
            }
            res?;
            out.push(dir);
        }
        Ok(out)
    }

    /// For each package: its prepared directory and the artifact key it would have now
    /// (resolving the source: the hub cache, or a download when not cached) — to tell whether a
    /// prepared artifact is stale.
    pub fn current_keys(&self) -> Result<Vec<(PathBuf, String)>, BuildError> {
        let (_, source) = self.source()?;
        let resolved = self.resolve(
            &source,
            self.hub.clone().unwrap_or_else(HubConfig::from_env),
        )?;
        Ok(self
            .plan()?
            .iter()
            .map(|o| {
                (
                    self.prepared_dir(o),
                    artifact::key(&resolved.fingerprint, o),
                )
            })
            .collect())
    }

    /// For each package: its prepared directory, and whether `.anebert/` holds an up-to-date
    /// artifact there (`None`: missing or made for another request or converter version).
    pub fn prepared_status(&self) -> Result<Vec<(PathBuf, Option<PathBuf>)>, BuildError> {
        Ok(self
            .plan()?
            .iter()
            .map(|o| (self.prepared_dir(o), self.prepared(o).map(|a| a.dir)))
            .collect())
    }
}
