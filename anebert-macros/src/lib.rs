//! `#[anebert::model]`: a thin attribute macro over anebert-build's code generator.
//!
//! The attribute itself lands with the build-time integration (model fetch, conversion cache and
//! typed wrapper generation); this crate already exists so the workspace layout and the facade's
//! dependency graph are final.
