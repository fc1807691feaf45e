//! Several heads of one multifunction package, loaded together: on the CPU backend they share
//! one decoded copy of every weight.

use super::{Backend, EmbeddedModel, Engine, Error, Model, ModelInfo, Options};
use crate::contract::HeadKind;
use crate::cpu::CpuModel;
use crate::package::Package;

impl Model {
    /// Load several heads of an embedded (multifunction) package: one `Model` per head, each
    /// running its lengths as buckets. On the CPU backend the package is read once and every
    /// weight the heads' functions share is decoded and held once for all of them.
    pub fn load_embedded_heads(
        model: &EmbeddedModel,
        heads: &[HeadKind],
        options: &Options,
    ) -> Result<Vec<Model>, Error> {
        if Self::load_backend(options)? == Backend::CoreMl {
            return heads
                .iter()
                .map(|&h| Self::load_embedded(model, &options.clone().head(h)))
                .collect();
        }
        let package = super::embedded_package(model, &super::embedded_label(model))?;
        Self::from_package_heads(&package, model.tokenizer, heads, options)
    }

    /// [`Model::from_package`] for several heads at once; on the CPU backend the heads share
    /// their decoded weights (see [`Model::load_embedded_heads`]).
    pub fn from_package_heads(
        package: &Package,
        tokenizer: Option<&[u8]>,
        heads: &[HeadKind],
        options: &Options,
    ) -> Result<Vec<Model>, Error> {
        if Self::load_backend(options)? == Backend::CoreMl {
            return heads
                .iter()
                .map(|&h| Self::from_package(package, tokenizer, &options.clone().head(h)))
                .collect();
        }
        let md = crate::package::user_metadata(&package.spec);
        let infos = heads
            .iter()
            .map(|&h| ModelInfo::labelled_select(md.clone(), &package.path, Some(h), None))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<&str> = infos
            .iter()
            .flat_map(|i| i.functions.iter().map(|f| f.name.as_str()))
            .collect();
        let mut cpus = CpuModel::load_functions(package, &names, options.precision)?.into_iter();
        infos
            .into_iter()
            .map(|info| {
                let engines = cpus
                    .by_ref()
                    .take(info.functions.len())
                    .map(Engine::Cpu)
                    .collect();
                Self::assemble(info, engines, tokenizer, options)
            })
            .collect()
    }
}
