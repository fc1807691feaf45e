//! The calls into `CoreML.framework` (Apple platforms only), through `objc2-core-ml`, written to
//! Apple's documented API: `MLModel` compile / load / predict, `MLModelConfiguration`
//! (`computeUnits`, `functionName`), `MLMultiArray` in and out, and `MLComputePlan` for the
//! placement report. Everything that can be done without Core ML is in the parent module and
//! tested on every platform; this file only moves data across the boundary.

use super::arrays::{decode_output, prepare_inputs, ArrayDType, ArrayInput, InputData, InputSpec};
use super::placement::{ComputeDevice, OpPlacement, Placement};
use crate::options::ComputeUnits;
use crate::tensor::Tensor;
use block2::{RcBlock, StackBlock};
use objc2::rc::{autoreleasepool, Retained};
use objc2::runtime::{AnyClass, AnyObject, NSObjectProtocol, ProtocolObject};
use objc2::{sel, AnyThread};
use objc2_core_ml::{
    MLComputeDeviceProtocol, MLComputePlan, MLComputeUnits, MLDictionaryFeatureProvider,
    MLFeatureProvider, MLFeatureValue, MLModel, MLModelConfiguration, MLModelStructureProgramBlock,
    MLMultiArray, MLMultiArrayDataType,
};
use objc2_foundation::{NSArray, NSDictionary, NSError, NSInteger, NSNumber, NSString, NSURL};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long to wait for Core ML's completion handlers (compiling a large model takes minutes).
const WAIT: Duration = Duration::from_secs(30 * 60);

/// An `NSError` in words: its description, domain and code, then its failure reason and the
/// underlying errors Core ML chains (which name the actual cause: a missing file, an unsupported
/// op, the ANE compiler's complaint).
fn ns_error(e: &NSError) -> String {
    let mut s = format!("{} ({} {})", e.localizedDescription(), e.domain(), e.code());
    if let Some(r) = e.localizedFailureReason() {
        s.push_str(&format!(": {r}"));
    }
    // `underlyingErrors` exists from macOS 11.3 / iOS 14.5.
    if e.respondsToSelector(sel!(underlyingErrors)) {
        for u in e.underlyingErrors().iter() {
            s.push_str(&format!("; caused by: {}", ns_error(&u)));
        }
    }
    s
}

/// Runs `f`, turning an Objective-C exception raised inside it into an error naming `what`. Core
/// ML and Foundation report most failures as `NSError`s, but some raise instead (a selector an
/// older OS lacks, an argument rejected by an assertion); an exception that unwinds into Rust
/// frames uncaught aborts the process. `objc2::exception::catch` stops it at a `@try` around the
/// call; Rust destructors on the way run, and no Rust panic is caught.
fn catching<R>(what: &str, f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    match objc2::exception::catch(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(Some(e)) => Err(format!("{what}: Core ML raised an Objective-C {e:?}")),
        Err(None) => Err(format!(
            "{what}: Core ML raised a nil Objective-C exception"
        )),
    }
}

fn file_url(path: &Path) -> Result<Retained<NSURL>, String> {
    let s = path
        .to_str()
        .ok_or_else(|| format!("{}: the path is not UTF-8", path.display()))?;
    Ok(NSURL::fileURLWithPath(&NSString::from_str(s)))
}

fn units(u: ComputeUnits) -> MLComputeUnits {
    match u {
        ComputeUnits::All => MLComputeUnits::All,
        ComputeUnits::CpuAndNeuralEngine => MLComputeUnits::CPUAndNeuralEngine,
        ComputeUnits::CpuAndGpu => MLComputeUnits::CPUAndGPU,
        ComputeUnits::CpuOnly => MLComputeUnits::CPUOnly,
    }
}

/// The running OS's version (`-[NSProcessInfo operatingSystemVersion]`, macOS 10.10 / iOS 8),
/// for the OS gate ([`super::os_gate`]).
pub(crate) fn os_version() -> super::os_gate::OsVersion {
    let v = objc2_foundation::NSProcessInfo::processInfo().operatingSystemVersion();
    super::os_gate::OsVersion {
        major: v.majorVersion.max(0) as u32,
        minor: v.minorVersion.max(0) as u32,
    }
}

/// Compile an `.mlpackage` with `+[MLModel compileModelAtURL:completionHandler:]` and return the
/// temporary `.mlmodelc` Core ML wrote (the caller moves it somewhere permanent, as Apple's
/// documentation asks).
pub(crate) fn compile(package: &Path) -> Result<PathBuf, String> {
    // Objects Core ML autoreleases on this thread are released here, not at thread exit.
    catching("compiling the model", || {
        autoreleasepool(|_| compile_in_pool(package))
    })
}

fn compile_in_pool(package: &Path) -> Result<PathBuf, String> {
    let url = file_url(package)?;
    if objc2::MainThreadMarker::new().is_some() {
        // Apple does not say on which queue the completion handler runs; waiting for it on the
        // main thread could wait for the main queue itself. The synchronous call (deprecated in
        // favour of the handler, still available) cannot.
        // SAFETY: `url` is a file URL; errors come back as NSError.
        #[allow(deprecated)]
        let compiled =
            unsafe { MLModel::compileModelAtURL_error(&url) }.map_err(|e| ns_error(&e))?;
        return compiled
            .path()
            .map(|p| PathBuf::from(p.to_string()))
            .ok_or_else(|| "Core ML returned a compiled model URL without a path".to_string());
    }
    let (tx, rx) = mpsc::channel::<Result<PathBuf, String>>();
    let handler = RcBlock::new(move |compiled: *mut NSURL, error: *mut NSError| {
        // SAFETY: Core ML passes either a valid URL or a valid error, each live for the call.
        let r = match unsafe { (compiled.as_ref(), error.as_ref()) } {
            (Some(u), _) => u
                .path()
                .map(|p| PathBuf::from(p.to_string()))
                .ok_or_else(|| "Core ML returned a compiled model URL without a path".to_string()),
            (None, Some(e)) => Err(ns_error(e)),
            (None, None) => Err("Core ML returned neither a compiled model nor an error".into()),
        };
        let _ = tx.send(r);
    });
    // SAFETY: `url` is a file URL; the handler has the documented signature.
    unsafe { MLModel::compileModelAtURL_completionHandler(&url, &handler) };
    rx.recv_timeout(WAIT)
        .map_err(|_| "Core ML did not finish compiling the model".to_string())?
}

/// A model loaded by Core ML.
pub(crate) struct CoreMlModel {
    model: Retained<MLModel>,
    config: Retained<MLModelConfiguration>,
    compiled: PathBuf,
    units: ComputeUnits,
    function: Option<String>,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    /// Apple documents the asynchronous prediction API (macOS 14 / iOS 17) as safe to call
    /// concurrently, not the synchronous one; on older systems predictions on one model are
    /// serialized by this lock.
    predict_lock: Mutex<()>,
    /// The compute plan's placement, once read.
    placement: OnceLock<Placement>,
}

// SAFETY: `MLModel` and `MLModelConfiguration` are ordinary reference-counted Foundation objects
// with no thread or run-loop affinity (Core ML loads and predicts on background queues itself);
// neither is mutated after `load`. The one call not documented as thread-safe, synchronous
// prediction, is serialized by `predict_lock`, so sharing or moving the model across threads
// cannot race inside Core ML.
unsafe impl Send for CoreMlModel {}
// SAFETY: see `Send`.
unsafe impl Sync for CoreMlModel {}

impl CoreMlModel {
    /// The compute units it was loaded with.
    pub(crate) fn compute_units(&self) -> ComputeUnits {
        self.units
    }

    /// Load a compiled `.mlmodelc` with `+[MLModel modelWithContentsOfURL:configuration:error:]`.
    pub(crate) fn load(
        compiled: &Path,
        compute_units: ComputeUnits,
        function: Option<&str>,
        inputs: Vec<InputSpec>,
    ) -> Result<CoreMlModel, String> {
        catching("loading the model", || {
            autoreleasepool(|_| Self::load_in_pool(compiled, compute_units, function, inputs))
        })
    }

    fn load_in_pool(
        compiled: &Path,
        compute_units: ComputeUnits,
        function: Option<&str>,
        inputs: Vec<InputSpec>,
    ) -> Result<CoreMlModel, String> {
        let url = file_url(compiled)?;
        // SAFETY: plain configuration object setters on a fresh object.
        let config = unsafe { MLModelConfiguration::new() };
        unsafe { config.setComputeUnits(units(compute_units)) };
        if let Some(f) = function {
            // `functionName` exists from macOS 15 / iOS 18.
            if !config.respondsToSelector(sel!(setFunctionName:)) {
                return Err(format!(
                    "function `{f}`: choosing a function of a multifunction package needs macOS 15 / iOS 18"
                ));
            }
            unsafe { config.setFunctionName(Some(&NSString::from_str(f))) };
        }
        // SAFETY: documented initializer; errors come back as NSError.
        let model = unsafe { MLModel::modelWithContentsOfURL_configuration_error(&url, &config) }
            .map_err(|e| format!("{}: {}", compiled.display(), ns_error(&e)))?;
        // SAFETY: read-only accessors of the loaded model.
        let outputs = unsafe { model.modelDescription().outputDescriptionsByName() }
            .keys()
            .map(|k| k.to_string())
            .collect();
        Ok(CoreMlModel {
            model,
            config,
            compiled: compiled.to_path_buf(),
            units: compute_units,
            function: function.map(str::to_string),
            inputs,
            outputs,
            predict_lock: Mutex::new(()),
            placement: OnceLock::new(),
        })
    }

    /// Run one prediction with named inputs; every multi-array output by name.
    pub(crate) fn predict(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        let arrays = prepare_inputs(&self.inputs, inputs).map_err(|e| e.to_string())?;
        catching("prediction", || {
            autoreleasepool(|_| self.predict_in_pool(arrays))
        })
    }

    fn predict_in_pool(&self, arrays: Vec<ArrayInput>) -> Result<BTreeMap<String, Tensor>, String> {
        let mut keys = Vec::with_capacity(arrays.len());
        let mut values = Vec::with_capacity(arrays.len());
        for a in arrays {
            keys.push(NSString::from_str(&a.name));
            let array = multi_array(a)?;
            // SAFETY: wraps a valid multi-array.
            values.push(unsafe { MLFeatureValue::featureValueWithMultiArray(&array) });
        }
        let key_refs: Vec<&NSString> = keys.iter().map(|k| &**k).collect();
        let value_refs: Vec<&AnyObject> = values.iter().map(|v| v.as_ref()).collect();
        let dict = NSDictionary::<NSString, AnyObject>::from_slices(&key_refs, &value_refs);
        // SAFETY: every value is an MLFeatureValue, as the initializer requires.
        let provider = unsafe {
            MLDictionaryFeatureProvider::initWithDictionary_error(
                MLDictionaryFeatureProvider::alloc(),
                &dict,
            )
        }
        .map_err(|e| ns_error(&e))?;
        let provider = ProtocolObject::from_ref(&*provider);
        // Apple does not say on which queue the handler runs; on the main thread, waiting for it
        // could wait for the main queue itself, so the main thread takes the synchronous call.
        let on_main = objc2::MainThreadMarker::new().is_some();
        if !on_main
            && self
                .model
                .respondsToSelector(sel!(predictionFromFeatures:completionHandler:))
        {
            // macOS 14 / iOS 17: the asynchronous prediction, which Apple documents as safe to
            // call concurrently: no lock. The outputs are read in the handler (the result object
            // is Core ML's, on Core ML's queue) and sent back as tensors.
            let (tx, rx) = mpsc::channel::<Result<BTreeMap<String, Tensor>, String>>();
            let names = self.outputs.clone();
            let handler = RcBlock::new(
                move |result: *mut ProtocolObject<dyn MLFeatureProvider>, error: *mut NSError| {
                    // SAFETY: Core ML passes either a valid result or a valid error, each live
                    // for the call.
                    let r = match unsafe { (result.as_ref(), error.as_ref()) } {
                        (Some(res), _) => catching("reading the prediction", || {
                            autoreleasepool(|_| read_outputs(res, &names))
                        }),
                        (None, Some(e)) => Err(ns_error(e)),
                        (None, None) => Err("Core ML returned neither outputs nor an error".into()),
                    };
                    let _ = tx.send(r);
                },
            );
            // SAFETY: documented asynchronous prediction; `provider` (and the input buffers it
            // owns) stays alive until the handler has answered below.
            unsafe {
                self.model
                    .predictionFromFeatures_completionHandler(provider, &handler)
            };
            return rx
                .recv_timeout(WAIT)
                .map_err(|_| "Core ML did not finish the prediction".to_string())?;
        }
        let result = {
            let _serial = self.predict_lock.lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY: documented synchronous prediction on a loaded model.
            unsafe { self.model.predictionFromFeatures_error(provider) }
        }
        .map_err(|e| ns_error(&e))?;
        read_outputs(&result, &self.outputs)
    }

    /// The placement of every op under this model's configuration, from `MLComputePlan`
    /// (macOS 14.4 / iOS 17.4). The plan exists only behind a completion handler, which this
    /// waits for: in an app, read it off the main thread (as loads, which may read it for
    /// `min_ane_share`, should be).
    pub(crate) fn placement(&self) -> Result<Placement, String> {
        // The plan does not change for a loaded model: read it once.
        if let Some(p) = self.placement.get() {
            return Ok(p.clone());
        }
        let p = catching("the compute plan", || {
            autoreleasepool(|_| self.load_placement())
        })?;
        Ok(self.placement.get_or_init(|| p).clone())
    }

    fn load_placement(&self) -> Result<Placement, String> {
        if AnyClass::get(c"MLComputePlan").is_none() {
            return Err(
                "placement reports need MLComputePlan (macOS 14.4 / iOS 17.4 or later)".into(),
            );
        }
        let url = file_url(&self.compiled)?;
        let label = self.units.to_string();
        let function = self.function.clone();
        let (tx, rx) = mpsc::channel::<Result<Placement, String>>();
        let handler = RcBlock::new(move |plan: *mut MLComputePlan, error: *mut NSError| {
            // SAFETY: Core ML passes either a valid plan or a valid error, live for the call.
            let r = match unsafe { (plan.as_ref(), error.as_ref()) } {
                (Some(p), _) => Ok(autoreleasepool(|_| {
                    read_plan(p, &label, function.as_deref())
                })),
                (None, Some(e)) => Err(ns_error(e)),
                (None, None) => Err("Core ML returned neither a compute plan nor an error".into()),
            };
            let _ = tx.send(r);
        });
        // SAFETY: documented loader with the model's own configuration.
        unsafe {
            MLComputePlan::loadContentsOfURL_configuration_completionHandler(
                &url,
                &self.config,
                &handler,
            )
        };
        rx.recv_timeout(WAIT)
            .map_err(|_| "Core ML did not finish loading the compute plan".to_string())?
    }
}

/// An `MLMultiArray` that owns `a`'s buffer: Core ML reads it in place and frees it through the
/// deallocator whenever it releases the array, so no copy is made and none can dangle; if the
/// array cannot be made, the buffer is freed here.
fn multi_array(a: ArrayInput) -> Result<Retained<MLMultiArray>, String> {
    let numbers = |v: &[usize]| {
        let n: Vec<Retained<NSNumber>> =
            v.iter().map(|&d| NSNumber::new_isize(d as isize)).collect();
        NSArray::from_retained_slice(&n)
    };
    let (shape, strides) = (numbers(&a.shape), numbers(&a.strides));
    let (ptr, (free, buffer)) = match a.data {
        InputData::I32(v) => owned(v),
        InputData::F32(v) => owned(v),
        InputData::F16(v) => owned(v),
    };
    // SAFETY: `ptr` points at `count` elements of the declared type laid out by `strides`, and
    // stays valid until the buffer is released (by Core ML's call of `free`, or below).
    let made = unsafe {
        MLMultiArray::initWithDataPointer_shape_dataType_strides_deallocator_error(
            MLMultiArray::alloc(),
            ptr,
            &shape,
            MLMultiArrayDataType(a.dtype.code()),
            &strides,
            Some(&free),
        )
    };
    // On failure Core ML may never call the deallocator: release the buffer here (whichever side
    // comes first frees it; the other finds it gone).
    made.map_err(|e| {
        buffer();
        format!("input `{}`: {}", a.name, ns_error(&e))
    })
}

type Deallocator = RcBlock<dyn Fn(NonNull<c_void>)>;

/// A buffer handed to Core ML: its address, the deallocator block Core ML calls, and the caller's
/// own release (for when Core ML never took it).
type Handed = (NonNull<c_void>, (Deallocator, Box<dyn Fn()>));

/// `v` behind a raw pointer, with the block Core ML calls to free it and a closure that frees it
/// on the caller's side; whichever runs first drops the buffer, the other does nothing.
fn owned<T: Send + 'static>(v: Vec<T>) -> Handed {
    let mut boxed = v.into_boxed_slice();
    let ptr = NonNull::from(&mut *boxed).cast::<c_void>();
    // The box's heap block does not move when the box does.
    let slot = Arc::new(Mutex::new(Some(boxed)));
    let release = move |s: &Mutex<Option<Box<[T]>>>| {
        drop(s.lock().unwrap_or_else(|e| e.into_inner()).take());
    };
    let theirs = slot.clone();
    let free = RcBlock::new(move |_: NonNull<c_void>| release(&theirs));
    (ptr, (free, Box::new(move || release(&slot))))
}

/// Every output of a prediction `result` by name, each a multi-array.
fn read_outputs(
    result: &ProtocolObject<dyn MLFeatureProvider>,
    names: &[String],
) -> Result<BTreeMap<String, Tensor>, String> {
    let mut out = BTreeMap::new();
    for name in names {
        // SAFETY: read-only accessors of the prediction result.
        let array = unsafe { result.featureValueForName(&NSString::from_str(name)) }
            .and_then(|v| unsafe { v.multiArrayValue() })
            .ok_or_else(|| format!("output `{name}` is not a multi-array"))?;
        out.insert(name.clone(), read_array(name, &array)?);
    }
    Ok(out)
}

/// Read an output array with its own shape and strides (`getBytesWithHandler:`, which hands over
/// the storage synchronously).
fn read_array(name: &str, array: &MLMultiArray) -> Result<Tensor, String> {
    // SAFETY: read-only accessors.
    let code = unsafe { array.dataType() }.0;
    let dtype = ArrayDType::from_code(code)
        .ok_or_else(|| format!("output `{name}`: unsupported MLMultiArrayDataType {code:#x}"))?;
    let shape: Vec<usize> = unsafe { array.shape() }
        .iter()
        .map(|n| n.as_isize().max(0) as usize)
        .collect();
    let strides: Vec<isize> = unsafe { array.strides() }
        .iter()
        .map(|n| n.as_isize())
        .collect();
    let decoded = RefCell::new(None);
    let handler = StackBlock::new(|bytes: NonNull<c_void>, size: NSInteger| {
        // SAFETY: Core ML hands over `size` readable bytes for the duration of the call.
        let bytes = unsafe {
            std::slice::from_raw_parts(bytes.cast::<u8>().as_ptr(), size.max(0) as usize)
        };
        *decoded.borrow_mut() = Some(decode_output(name, dtype, &shape, &strides, bytes));
    });
    // SAFETY: the handler only reads within `size`.
    unsafe { array.getBytesWithHandler(&handler) };
    decoded
        .into_inner()
        .ok_or_else(|| format!("output `{name}`: Core ML did not hand over the array's storage"))?
        .map_err(|e| e.to_string())
}

fn device(d: &ProtocolObject<dyn MLComputeDeviceProtocol>) -> Option<ComputeDevice> {
    [
        (c"MLNeuralEngineComputeDevice", ComputeDevice::NeuralEngine),
        (c"MLGPUComputeDevice", ComputeDevice::Gpu),
        (c"MLCPUComputeDevice", ComputeDevice::Cpu),
    ]
    .into_iter()
    .find(|(class, _)| AnyClass::get(class).is_some_and(|c| d.isKindOfClass(c)))
    .map(|(_, dev)| dev)
}

fn read_plan(plan: &MLComputePlan, units: &str, function: Option<&str>) -> Placement {
    let mut ops = Vec::new();
    // SAFETY: read-only accessors of a loaded plan.
    if let Some(program) = unsafe { plan.modelStructure().program() } {
        let (names, functions) = unsafe { program.functions() }.to_vecs();
        for (name, f) in names.iter().zip(&functions) {
            let name = name.to_string();
            if function.is_some_and(|want| want != name) {
                continue;
            }
            walk(plan, &*unsafe { f.block() }, &name, &mut ops);
        }
    }
    Placement {
        compute_units: units.to_string(),
        ops,
    }
}

fn walk(
    plan: &MLComputePlan,
    block: &MLModelStructureProgramBlock,
    function: &str,
    ops: &mut Vec<OpPlacement>,
) {
    // SAFETY (whole function): read-only accessors of the plan's model structure.
    for op in unsafe { block.operations() }.iter() {
        let usage = unsafe { plan.computeDeviceUsageForMLProgramOperation(&op) };
        let (preferred, supported) = match &usage {
            Some(u) => (
                device(&*unsafe { u.preferredComputeDevice() }),
                unsafe { u.supportedComputeDevices() }
                    .iter()
                    .filter_map(|d| device(&d))
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        ops.push(OpPlacement {
            function: function.to_string(),
            op_type: super::placement::mil_op_type(&unsafe { op.operatorName() }.to_string())
                .to_string(),
            outputs: unsafe { op.outputs() }
                .iter()
                .map(|o| unsafe { o.name() }.to_string())
                .collect(),
            preferred,
            supported,
            cost: unsafe { plan.estimatedCostOfMLProgramOperation(&op) }
                .map(|c| unsafe { c.weight() }),
        });
        for b in unsafe { op.blocks() }.iter() {
            walk(plan, &b, function, ops);
        }
    }
}
