//! [`HubConfig`]: the endpoint, token, cache and offline switch, from the environment as
//! huggingface_hub reads it.

use std::io::{self, IsTerminal};
use std::path::PathBuf;

/// Hub endpoint unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How to reach the hub and where its cache is. `Debug` redacts the token.
#[derive(Clone)]
pub struct HubConfig {
    /// Base URL, no trailing slash.
    pub endpoint: String,
    /// Bearer token for private or gated repos (never printed).
    pub token: Option<String>,
    /// The HuggingFace hub cache directory.
    pub cache: PathBuf,
    /// `Some(reason)` when downloads are off.
    pub offline: Option<String>,
    /// Show a progress bar.
    pub progress: bool,
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache", &self.cache)
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn truthy(name: &str) -> bool {
    env(name).is_some_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        )
    })
}

/// The environment variables the hub client reads (for `rerun-if-env-changed`).
pub const ENV_VARS: &[&str] = &[
    "HF_ENDPOINT",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "ANEBERT_OFFLINE",
    "DOCS_RS",
    "XDG_CACHE_HOME",
];

impl HubConfig {
    /// From the environment: `HF_ENDPOINT`, `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), `HF_HUB_CACHE`
    /// / `HF_HOME`, and offline when `ANEBERT_OFFLINE`, `HF_HUB_OFFLINE` or `DOCS_RS` is set.
    pub fn from_env() -> HubConfig {
        let home = env("HOME").map(PathBuf::from).unwrap_or_default();
        let xdg = env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache"));
        let cache = env("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            env("HF_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| xdg.join("huggingface"))
                .join("hub")
        });
        let offline = if env("DOCS_RS").is_some() {
            Some("DOCS_RS is set: docs.rs builds have no network".to_string())
        } else if truthy("ANEBERT_OFFLINE") {
            Some("ANEBERT_OFFLINE is set".to_string())
        } else if truthy("HF_HUB_OFFLINE") {
            Some("HF_HUB_OFFLINE is set".to_string())
        } else {
            None
        };
        HubConfig {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            token: env("HF_TOKEN").or_else(|| env("HUGGING_FACE_HUB_TOKEN")),
            cache,
            offline,
            // Build scripts never have a terminal; CI logs do not want bars either.
            progress: io::stderr().is_terminal()
                && env("CI").is_none()
                && env("CARGO_TERM_PROGRESS_WHEN").as_deref() != Some("never"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_token() {
        let secret = "hf_SECRETsecretSECRET";
        let hub = HubConfig {
            endpoint: "http://127.0.0.1:1".into(),
            token: Some(secret.into()),
            cache: PathBuf::from("/tmp/c"),
            offline: None,
            progress: false,
        };
        let mut config = crate::Config::new();
        config.hub(hub.clone());
        for shown in [
            format!("{hub:?}"),
            format!("{hub:#?}"),
            format!("{config:?}"),
        ] {
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }
}
