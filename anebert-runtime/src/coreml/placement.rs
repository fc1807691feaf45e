//! Where Core ML runs each op: the data of an `MLComputePlan` (macOS 14.4+ / iOS 17.4+) in plain
//! Rust — per op the preferred and supported compute devices and the estimated relative cost —
//! plus the summaries and the report `Model::placement()`, `cargo anebert inspect` and `bench`
//! print. Nothing here needs Apple's frameworks; the Core ML backend fills it in.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A compute device Core ML can place an op on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComputeDevice {
    /// The Neural Engine (`MLNeuralEngineComputeDevice`).
    NeuralEngine,
    /// The GPU (`MLGPUComputeDevice`).
    Gpu,
    /// The CPU (`MLCPUComputeDevice`).
    Cpu,
}

impl ComputeDevice {
    /// All devices, in report order.
    pub const ALL: [ComputeDevice; 3] = [
        ComputeDevice::NeuralEngine,
        ComputeDevice::Gpu,
        ComputeDevice::Cpu,
    ];

    /// Short name used in reports: `ane`, `gpu`, `cpu`.
    pub fn short(self) -> &'static str {
        match self {
            ComputeDevice::NeuralEngine => "ane",
            ComputeDevice::Gpu => "gpu",
            ComputeDevice::Cpu => "cpu",
        }
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// The MIL op type of an `MLComputePlan` operator name: Core ML names opset-versioned ops with
/// their opset (`ios17.cast`, `ios16.reduce_mean`); reports, the `const` exclusion and
/// `by_op_type` want the plain type.
pub fn mil_op_type(operator_name: &str) -> &str {
    match operator_name.split_once('.') {
        Some((opset, op)) if is_opset(opset) => op,
        _ => operator_name,
    }
}

/// `ios17`, `macos15`, …: lowercase letters, then digits.
fn is_opset(s: &str) -> bool {
    let digits = s.trim_start_matches(|c: char| c.is_ascii_lowercase());
    digits.len() < s.len() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// One ML Program operation and where Core ML placed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpPlacement {
    /// The program function the op belongs to.
    pub function: String,
    /// MIL operator name (`conv`, `softmax`, `const`, …).
    pub op_type: String,
    /// Names of the op's outputs (the first one names the op in reports).
    pub outputs: Vec<String>,
    /// The device Core ML will run the op on; `None` when the plan gives no usage for it (Core ML
    /// reports none for ops it folds away, such as most `const`s).
    pub preferred: Option<ComputeDevice>,
    /// Every device that could run the op.
    pub supported: Vec<ComputeDevice>,
    /// Estimated share of the model's compute (`MLComputePlanCost.weight`, 0..1), when given.
    pub cost: Option<f64>,
}

impl OpPlacement {
    /// The op's name in reports: its first output, or its type.
    pub fn name(&self) -> &str {
        self.outputs
            .first()
            .map(String::as_str)
            .unwrap_or(&self.op_type)
    }

    /// Does this op count in placement shares? Constants and ops without a device usage do not:
    /// they compute nothing at prediction time.
    pub fn counts(&self) -> bool {
        self.preferred.is_some() && self.op_type != "const"
    }
}

/// The placement of every op of a loaded model, for one compute-unit setting.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The compute units the model was loaded with (`all`, `cpu+ne`, `cpu+gpu`, `cpu`).
    pub compute_units: String,
    /// Every operation, in program order (nested blocks after their parent op).
    pub ops: Vec<OpPlacement>,
}

/// Why a model's placement fails a requirement.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "only {:.1}% of the model's {counted} ops run on the Neural Engine (required: {:.1}%) with compute units {units}; \
     off the ANE: {off}. Check `cargo anebert inspect` for ANE-rule violations, load with \
     ComputeUnits::CpuAndNeuralEngine, or lower Options::min_ane_share",
    100.0 * .share, 100.0 * .required
)]
pub struct PlacementShortfall {
    /// The measured share of ops preferring the Neural Engine.
    pub share: f64,
    /// The share required.
    pub required: f64,
    /// Ops counted.
    pub counted: usize,
    /// The compute units of the load.
    pub units: String,
    /// A summary of the ops off the ANE (`type × count`).
    pub off: String,
}

impl Placement {
    /// Ops that count in shares (see [`OpPlacement::counts`]).
    pub fn counted(&self) -> impl Iterator<Item = &OpPlacement> {
        self.ops.iter().filter(|o| o.counts())
    }

    /// Fraction of counted ops whose preferred device is `device` (0 when none count).
    pub fn share(&self, device: ComputeDevice) -> f64 {
        let (mut on, mut all) = (0usize, 0usize);
        for o in self.counted() {
            all += 1;
            on += usize::from(o.preferred == Some(device));
        }
        if all == 0 {
            0.0
        } else {
            on as f64 / all as f64
        }
    }

    /// Fraction of the estimated cost that runs on `device`, when the plan gave costs.
    pub fn cost_share(&self, device: ComputeDevice) -> Option<f64> {
        let (mut on, mut all) = (0.0, 0.0);
        for o in self.counted() {
            let c = o.cost?;
            all += c;
            if o.preferred == Some(device) {
                on += c;
            }
        }
        (all > 0.0).then(|| on / all)
    }

    /// Counted ops per op type and preferred device: `type → [ane, gpu, cpu]`.
    pub fn by_op_type(&self) -> BTreeMap<&str, [usize; 3]> {
        let mut m: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
        for o in self.counted() {
            let i = ComputeDevice::ALL
                .iter()
                .position(|d| Some(*d) == o.preferred)
                .unwrap_or(2);
            m.entry(o.op_type.as_str()).or_default()[i] += 1;
        }
        m
    }

    /// Counted ops not preferring `device`.
    pub fn off(&self, device: ComputeDevice) -> impl Iterator<Item = &OpPlacement> {
        self.counted().filter(move |o| o.preferred != Some(device))
    }

    /// `type × n` for the counted ops off `device`, most frequent first.
    fn off_summary(&self, device: ComputeDevice) -> String {
        let mut n: BTreeMap<&str, usize> = BTreeMap::new();
        for o in self.off(device) {
            *n.entry(&o.op_type).or_default() += 1;
        }
        let mut v: Vec<_> = n.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        if v.is_empty() {
            return "none".into();
        }
        v.iter()
            .map(|(t, n)| format!("{t} × {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `Ok` when at least `min` (0..=1) of the counted ops prefer the Neural Engine.
    pub fn require_ane_share(&self, min: f64) -> Result<(), PlacementShortfall> {
        let share = self.share(ComputeDevice::NeuralEngine);
        if share + 1e-12 >= min {
            return Ok(());
        }
        Err(PlacementShortfall {
            share,
            required: min,
            counted: self.counted().count(),
            units: self.compute_units.clone(),
            off: self.off_summary(ComputeDevice::NeuralEngine),
        })
    }
}

/// The report: shares per device, a table of op types by device, and the ops off the ANE.
///
/// ```
/// use anebert_runtime::coreml::placement::{ComputeDevice, OpPlacement, Placement};
/// let op = |t: &str, d| OpPlacement {
///     function: "main".into(), op_type: t.into(), outputs: vec![format!("{t}_0")],
///     preferred: Some(d), supported: vec![d], cost: None,
/// };
/// let p = Placement {
///     compute_units: "cpu+ne".into(),
///     ops: vec![op("gather", ComputeDevice::Cpu), op("conv", ComputeDevice::NeuralEngine)],
/// };
/// let text = p.to_string();
/// assert!(text.contains("ane 50.0%"), "{text}");
/// assert!(text.contains("gather_0"), "{text}");
/// ```
impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counted = self.counted().count();
        write!(
            f,
            "placement (compute units {}): {counted} ops",
            self.compute_units
        )?;
        for d in ComputeDevice::ALL {
            write!(f, ", {d} {:.1}%", 100.0 * self.share(d))?;
        }
        if let Some(c) = self.cost_share(ComputeDevice::NeuralEngine) {
            write!(f, "; estimated cost on the ANE {:.1}%", 100.0 * c)?;
        }
        writeln!(f)?;
        let table = self.by_op_type();
        if !table.is_empty() {
            let w = table.keys().map(|k| k.len()).max().unwrap_or(0).max(7);
            writeln!(f, "  {:<w$} {:>6} {:>6} {:>6}", "op", "ane", "gpu", "cpu")?;
            for (t, [a, g, c]) in &table {
                writeln!(f, "  {t:<w$} {a:>6} {g:>6} {c:>6}")?;
            }
        }
        let off: Vec<_> = self.off(ComputeDevice::NeuralEngine).collect();
        if off.is_empty() {
            writeln!(f, "  every op runs on the Neural Engine")?;
        } else {
            writeln!(f, "  off the Neural Engine ({}):", off.len())?;
            const SHOWN: usize = 20;
            for o in off.iter().take(SHOWN) {
                let supported: Vec<&str> = o.supported.iter().map(|d| d.short()).collect();
                let can = if o.supported.contains(&ComputeDevice::NeuralEngine) {
                    " (the ANE could run it)"
                } else {
                    ""
                };
                writeln!(
                    f,
                    "    {} {} on {} [supported: {}]{can}",
                    o.op_type,
                    o.name(),
                    o.preferred.map(|d| d.short()).unwrap_or("?"),
                    supported.join(", "),
                )?;
            }
            if off.len() > SHOWN {
                writeln!(f, "    … and {} more", off.len() - SHOWN)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn opset_prefixes_are_stripped() {
        assert_eq!(mil_op_type("ios17.cast"), "cast");
        assert_eq!(mil_op_type("ios16.reduce_mean"), "reduce_mean");
        assert_eq!(mil_op_type("ios17.const"), "const");
        assert_eq!(mil_op_type("conv"), "conv");
        assert_eq!(mil_op_type("custom.op"), "custom.op");
        assert_eq!(mil_op_type("ios.x"), "ios.x");
    }

    use super::*;
    use ComputeDevice::{Cpu, Gpu, NeuralEngine};

    fn op(t: &str, d: Option<ComputeDevice>, cost: Option<f64>) -> OpPlacement {
        OpPlacement {
            function: "main".into(),
            op_type: t.into(),
            outputs: vec![format!("{t}_out")],
            preferred: d,
            supported: d.into_iter().chain([Cpu]).collect(),
            cost,
        }
    }

    #[test]
    fn shares_skip_constants_and_weigh_costs() {
        let p = Placement {
            compute_units: "all".into(),
            ops: vec![
                op("const", None, None),
                op("const", Some(Cpu), None),
                op("conv", Some(NeuralEngine), Some(0.6)),
                op("conv", Some(NeuralEngine), Some(0.2)),
                op("softmax", Some(Gpu), Some(0.15)),
                op("gather", Some(Cpu), Some(0.05)),
            ],
        };
        assert_eq!(p.counted().count(), 4);
        assert_eq!(p.share(NeuralEngine), 0.5);
        assert_eq!(p.share(Gpu), 0.25);
        assert!((p.cost_share(NeuralEngine).unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(p.by_op_type()["conv"], [2, 0, 0]);
        assert_eq!(p.by_op_type()["gather"], [0, 0, 1]);
        assert!(p.require_ane_share(0.5).is_ok());
        let e = p.require_ane_share(0.75).unwrap_err();
        assert_eq!((e.counted, e.required), (4, 0.75));
        let msg = e.to_string();
        assert!(
            msg.contains("only 50.0%") && msg.contains("required: 75.0%"),
            "{msg}"
        );
        assert!(
            msg.contains("gather × 1") && msg.contains("softmax × 1"),
            "{msg}"
        );
        assert!(msg.contains("min_ane_share"), "{msg}");
        // A missing cost anywhere means no cost share; nothing counted means share 0.
        let mut q = p.clone();
        q.ops[2].cost = None;
        assert_eq!(q.cost_share(NeuralEngine), None);
        assert_eq!(Placement::default().share(NeuralEngine), 0.0);
        assert!(Placement::default().require_ane_share(0.1).is_err());
    }

    #[test]
    fn report_lists_devices_op_types_and_what_is_off_the_ane() {
        // 25 adds on the ANE, 5 the ANE could run but Core ML put on the CPU, and the gather.
        let mut ops: Vec<OpPlacement> = (0..30)
            .map(|i| {
                let mut o = op("add", Some(if i < 25 { NeuralEngine } else { Cpu }), None);
                o.supported = vec![NeuralEngine, Cpu];
                o
            })
            .collect();
        let mut gather = op("gather", Some(Cpu), None);
        gather.supported = vec![Gpu, Cpu];
        ops.push(gather);
        let p = Placement {
            compute_units: "cpu+ne".into(),
            ops,
        };
        let text = p.to_string();
        assert!(
            text.starts_with(
                "placement (compute units cpu+ne): 31 ops, ane 80.6%, gpu 0.0%, cpu 19.4%\n"
            ),
            "{text}"
        );
        assert!(text.contains("off the Neural Engine (6):"), "{text}");
        assert!(
            text.contains("    add add_out on cpu [supported: ane, cpu] (the ANE could run it)\n"),
            "{text}"
        );
        assert!(
            text.contains("    gather gather_out on cpu [supported: gpu, cpu]\n"),
            "{text}"
        );
        let all_ane = Placement {
            compute_units: "cpu+ne".into(),
            ops: vec![op("conv", Some(NeuralEngine), None)],
        };
        assert!(all_ane
            .to_string()
            .contains("every op runs on the Neural Engine"));
        // JSON round trip, as `inspect --json` writes it.
        let back: Placement = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert!(serde_json::to_string(&p)
            .unwrap()
            .contains("\"neural-engine\""));
    }
}
