//! `cargo anebert prepare [--check]`: fetch and convert every model the crate declares into
//! `.anebert/` beside its Cargo.toml (commit it, like sqlx's `.sqlx/`), so that offline builds
//! (`ANEBERT_OFFLINE=1`, `HF_HUB_OFFLINE=1`) and docs.rs use it. `--check` converts nothing and
//! exits 1 when anything there is missing or stale.

use crate::select::Select;
use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    select: Select,
    /// Only check that `.anebert/` is complete and current.
    #[arg(long)]
    check: bool,
}

pub fn run(a: PrepareArgs) -> Result<()> {
    let report = |e: anebert_build::BuildError| anyhow::anyhow!(anebert_build::report(&e));
    let mut stale = Vec::new();
    for (label, c) in a.select.declared()? {
        if a.check {
            let current = c.current_keys().map_err(report)?;
            for ((dir, prepared), (_, key)) in c
                .prepared_status()
                .map_err(report)?
                .into_iter()
                .zip(current)
            {
                let ok = prepared.is_some()
                    && anebert_build::artifact::Artifact::open(&dir)
                        .is_some_and(|p| p.info.key == key);
                println!(
                    "{} {label} → {}",
                    if ok { "ok   " } else { "stale" },
                    dir.display()
                );
                if !ok {
                    stale.push(label.clone());
                }
            }
        } else {
            for dir in c.prepare().map_err(report)? {
                println!("prepared {label} → {}", dir.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "{} prepared model(s) missing or stale: {}; run `cargo anebert prepare` and commit .anebert/",
            stale.len(),
            stale.join(", ")
        );
    }
    Ok(())
}
