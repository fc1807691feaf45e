//! Which models a command works on: a package path, a checkpoint converted on the fly (through the
//! artifact cache), or the models the current crate declares in `[package.metadata.anebert]`.

use anebert_build::{Config, Head, WeightPrecision};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone, Debug)]
pub struct Select {
    /// An `.mlpackage` directory.
    #[arg(long, conflicts_with_all = ["model", "manifest_path", "package"])]
    pub mlpackage: Option<PathBuf>,
    /// A checkpoint: HuggingFace repo id (`org/name[@revision]`) or directory; converted (and cached).
    #[arg(long)]
    pub model: Option<String>,
    /// Head for `--model`, or a filter on declared models.
    #[arg(long)]
    pub head: Option<Head>,
    /// Sequence length for `--model`, or a filter on declared models.
    #[arg(long)]
    pub seq: Option<usize>,
    /// Weights for `--model`.
    #[arg(long, default_value = "fp16")]
    pub weights: WeightPrecision,
    /// Convert `--model` without rotation.
    #[arg(long)]
    pub no_rotate: bool,
    /// Only the declared model of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Cargo.toml of the crate whose `[package.metadata.anebert]` models to use (default ./Cargo.toml).
    #[arg(long)]
    pub manifest_path: Option<PathBuf>,
    /// The workspace member whose declared models to use.
    #[arg(short = 'p', long)]
    pub package: Option<String>,
}

/// A selected model: a label and its package, and for a function of a multifunction package,
/// which one (and its head).
#[derive(Clone, Debug)]
pub struct Selected {
    pub label: String,
    pub package: PathBuf,
    pub function: Option<String>,
    pub head: Option<Head>,
}

/// The manifest of workspace member `name`, from `cargo metadata`.
fn member_manifest(name: &str, manifest: Option<&Path>) -> Result<PathBuf> {
    let mut cmd = cargo_metadata::MetadataCommand::new();
    cmd.no_deps();
    if let Some(m) = manifest {
        cmd.manifest_path(m);
    }
    let meta = cmd.exec().context("running `cargo metadata`")?;
    let members = meta.workspace_packages();
    members
        .iter()
        .find(|p| p.name.as_str() == name)
        .map(|p| p.manifest_path.clone().into_std_path_buf())
        .with_context(|| {
            format!(
                "no package {name:?} in this workspace (members: {})",
                members
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

impl Select {
    /// Conversion settings for `--model`: the build's defaults (the treatment chosen by
    /// measurement), or no rotation with `--no-rotate`.
    pub fn config_for(&self, model: &str, head: Head, seq: usize, rotate: bool) -> Config {
        let mut c = Config::new();
        c.model(model)
            .head(head)
            .seq_len(seq)
            .weights(self.weights)
            .manifest_dir(std::env::current_dir().unwrap_or_default());
        if !rotate {
            c.rotate(false);
        }
        c
    }

    /// The selected models as conversion settings, one per (model, sequence length) — for
    /// commands that convert variants of them (diff, bench). `--mlpackage` does not qualify.
    pub fn configs(&self) -> Result<Vec<(String, Config)>> {
        if self.mlpackage.is_some() {
            bail!("this command converts reference variants of the checkpoint: select it with --model SRC (and --head, --seq) or by the crate's declared models, not --mlpackage");
        }
        let rotate = !self.no_rotate;
        if let Some(m) = &self.model {
            let head = self.head.unwrap_or(Head::MaskedLm);
            let seq = self.seq.unwrap_or(128);
            return Ok(vec![(
                format!("{m} {} S={seq}", head.name()),
                self.config_for(m, head, seq, rotate),
            )]);
        }
        let manifest = self.manifest()?;
        let mut out = Vec::new();
        for (name, c) in self.named(&manifest)? {
            // One head and length each: the commands that convert variants compare per function.
            for &head in c.get_heads() {
                if self.head.is_some_and(|h| h != head) {
                    continue;
                }
                for seq in c.get_seq_lens() {
                    if self.seq.is_some_and(|s| s != seq) {
                        continue;
                    }
                    let mut c = c.clone();
                    c.head(head).seq_len(seq);
                    if self.no_rotate {
                        c.rotate(false);
                    }
                    out.push((format!("{name} {} S={seq}", head.name()), c));
                }
            }
        }
        if out.is_empty() {
            bail!(
                "no declared model in {} matches the filters (--name/--head/--seq)",
                manifest.display()
            );
        }
        Ok(out)
    }

    /// The declared models as declared (every head and length in one config: what the build
    /// makes), filtered by `--name` — for `prepare`.
    pub fn declared(&self) -> Result<Vec<(String, Config)>> {
        if self.mlpackage.is_some() || self.model.is_some() {
            bail!("this command works on the models the crate declares ([package.metadata.anebert]); drop --mlpackage / --model");
        }
        let manifest = self.manifest()?;
        let out = self.named(&manifest)?;
        if out.is_empty() {
            bail!("no declared model in {} matches --name", manifest.display());
        }
        Ok(out)
    }

    /// The models `manifest` declares, by name, those `--name` selects.
    fn named(&self, manifest: &Path) -> Result<Vec<(String, Config)>> {
        let report = |e: anebert_build::BuildError| anyhow::anyhow!(anebert_build::report(&e));
        let mut out = Vec::new();
        for c in anebert_build::configs_from_manifest(manifest).map_err(report)? {
            let name = c.model_name().map_err(report)?;
            if self.name.as_ref().is_none_or(|n| n == &name) {
                out.push((name, c));
            }
        }
        Ok(out)
    }

    fn manifest(&self) -> Result<PathBuf> {
        let manifest = match (&self.package, &self.manifest_path) {
            (Some(p), m) => member_manifest(p, m.as_deref())?,
            (None, Some(m)) => m.clone(),
            (None, None) => PathBuf::from("Cargo.toml"),
        };
        if !manifest.is_file() {
            bail!(
                "{} not found: pass --mlpackage PATH, --model SRC --head H --seq N, or run in a crate that declares models in [package.metadata.anebert]",
                manifest.display()
            );
        }
        Ok(manifest)
    }

    /// The selected packages (converting through the cache when needed).
    pub fn resolve(&self) -> Result<Vec<Selected>> {
        if let Some(p) = &self.mlpackage {
            return Ok(vec![Selected {
                label: p.display().to_string(),
                package: p.clone(),
                function: None,
                head: None,
            }]);
        }
        if let Some(m) = &self.model {
            let head = self.head.unwrap_or(Head::MaskedLm);
            let seq = self.seq.unwrap_or(128);
            let c = self.config_for(m, head, seq, !self.no_rotate);
            let (arts, _) = c
                .artifacts()
                .map_err(|e| anyhow::anyhow!(anebert_build::report(&e)))?;
            return Ok(arts
                .into_iter()
                .map(|a| Selected {
                    label: format!("{m} {} S={}", head.name(), a.info.seq_len()),
                    package: a.package(),
                    function: None,
                    head: Some(head),
                })
                .collect());
        }
        let manifest = self.manifest()?;
        let mut out = Vec::new();
        for (name, c) in self.named(&manifest)? {
            let (arts, _) = c
                .artifacts()
                .map_err(|e| anyhow::anyhow!(anebert_build::report(&e)))?;
            for a in arts {
                let multi = a.info.is_multifunction();
                for f in &a.info.metadata.functions {
                    let head: Option<Head> = f.head.parse().ok();
                    if self.head.is_some_and(|h| Some(h) != head)
                        || self.seq.is_some_and(|s| s != f.seq_len)
                    {
                        continue;
                    }
                    out.push(Selected {
                        label: format!("{name} {} S={}", f.head, f.seq_len),
                        package: a.package(),
                        function: multi.then(|| f.name.clone()),
                        head,
                    });
                }
            }
        }
        if out.is_empty() {
            bail!(
                "no declared model in {} matches the filters (--name/--head/--seq)",
                manifest.display()
            );
        }
        Ok(out)
    }
}
