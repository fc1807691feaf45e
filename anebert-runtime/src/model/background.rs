//! Loading off the caller's thread. Core ML's first load compiles and specializes the model for
//! the Neural Engine, which can take minutes, and Apple asks apps not to do that on the main
//! thread; the CPU backend's load reads the weights and decodes the small ones. [`Loading`] runs [`Model::load_embedded`]
//! or [`Model::open`] on a thread of its own; the caller polls it or waits for it.
//!
//! Which thread may call what: any thread may start a load, poll and wait; a `Model` is `Send +
//! Sync`, so the loaded model may be used from any thread, the main thread included (predictions
//! are short; a first prediction on Core ML may still take longer than later ones).

use super::{EmbeddedModel, Error, Model, Options};
use std::path::PathBuf;
use std::thread::JoinHandle;

/// A model being loaded on a background thread.
#[derive(Debug)]
pub struct Loading(State);

#[derive(Debug)]
enum State {
    Running(JoinHandle<Result<Model, Error>>),
    /// The thread could not be started.
    Failed(Error),
}

impl Loading {
    fn spawn(name: String, load: impl FnOnce() -> Result<Model, Error> + Send + 'static) -> Self {
        let handle = std::thread::Builder::new()
            .name(format!("anebert-load {name}"))
            .spawn(load);
        Loading(match handle {
            Ok(h) => State::Running(h),
            Err(source) => State::Failed(Error::Io {
                path: PathBuf::from(format!("<loading thread for {name}>")),
                source,
            }),
        })
    }

    /// Whether the load has finished (successfully or not): [`Loading::wait`] will not block.
    pub fn is_finished(&self) -> bool {
        match &self.0 {
            State::Running(h) => h.is_finished(),
            State::Failed(_) => true,
        }
    }

    /// Wait for the model. A panic on the loading thread is returned as an error.
    pub fn wait(self) -> Result<Model, Error> {
        let h = match self.0 {
            State::Running(h) => h,
            State::Failed(e) => return Err(e),
        };
        h.join().unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(Error::Metadata(format!(
                "the loading thread panicked: {what}"
            )))
        })
    }
}

impl Model {
    /// [`Model::load_embedded`] on a background thread.
    pub fn load_embedded_in_background(model: &EmbeddedModel, options: &Options) -> Loading {
        let (model, options) = (*model, options.clone());
        Loading::spawn(model.name.to_string(), move || {
            Model::load_embedded(&model, &options)
        })
    }

    /// [`Model::open`] on a background thread.
    pub fn open_in_background(path: impl Into<PathBuf>, options: &Options) -> Loading {
        let (path, options) = (path.into(), options.clone());
        Loading::spawn(path.display().to_string(), move || {
            Model::open(&path, &options)
        })
    }
}
