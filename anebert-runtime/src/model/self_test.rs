//! The check at load: the converter's golden input through the loaded model, its output
//! correlated with the converter's reference sample ([`crate::model_info::SelfTest`]).

use super::{Engine, Model};
use crate::contract;
use crate::error::Error;

impl Model {
    /// Run the package's self-test (if it has one, for a function this model loaded): the
    /// Pearson correlation of the output sample with the converter's reference, or an
    /// [`Error::SelfTest`] below its minimum or on any non-finite value. `Ok(None)`: nothing to
    /// run.
    pub fn self_test(&self) -> Result<Option<f64>, Error> {
        let Some(g) = self.info.package.self_test.clone() else {
            return Ok(None);
        };
        let Some(f) = self.info.functions.iter().find(|f| f.name == g.function) else {
            return Ok(None);
        };
        // As the converter's gate runner made the reference: padded with 0.
        let (inputs, rows) = contract::one_text_inputs(&g.input_ids, f.seq_len, 0, f.mask_slots)?;
        let mut out = self.predict(&inputs)?;
        let t = out.remove(self.info.head.output_name()).ok_or_else(|| {
            Error::Metadata(format!(
                "self-test: no `{}` output",
                self.info.head.output_name()
            ))
        })?;
        let values = contract::output_rows(&t, self.info.head.pooled(), rows)?.concat();
        let sample: Vec<f32> = values.iter().step_by(g.stride.max(1)).copied().collect();
        let backend = self.describe_backend();
        let fail = |detail: String| Error::SelfTest {
            function: g.function.clone(),
            backend: backend.clone(),
            detail,
        };
        if sample.len() != g.reference.len() {
            return Err(fail(format!(
                "{} output values sampled, the reference has {}",
                sample.len(),
                g.reference.len()
            )));
        }
        let bad = sample.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(fail(format!(
                "{bad} of {} sampled outputs are NaN or infinite",
                sample.len()
            )));
        }
        let r = pearson(&sample, &g.reference);
        if r.is_nan() || r < g.min_correlation {
            return Err(fail(format!(
                "the output correlates {r:.6} with the converter's reference (at least {} expected)",
                g.min_correlation
            )));
        }
        Ok(Some(r))
    }

    /// The backend, for messages: `CPU backend (f32)`, `Core ML (cpu+ne)`.
    fn describe_backend(&self) -> String {
        match self.engines.first() {
            Some(Engine::Cpu(m)) => format!("the CPU backend ({})", m.precision()),
            #[cfg(target_vendor = "apple")]
            Some(Engine::CoreMl(m)) => format!("Core ML ({})", m.compute_units()),
            None => "no backend".into(),
        }
    }
}

/// Pearson correlation (NaN when either side is constant or anything is not finite).
fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (
        a.iter().map(|&x| x as f64).sum::<f64>() / n,
        b.iter().map(|&x| x as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pearson_fails_on_nan_and_constants() {
        use super::pearson;
        assert!((pearson(&[1., 2., 3.], &[2., 4., 6.]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1., 2., 3.], &[3., 2., 1.]) + 1.0).abs() < 1e-12);
        assert!(pearson(&[1., f32::NAN, 3.], &[1., 2., 3.]).is_nan());
        assert!(pearson(&[1., 1., 1.], &[1., 2., 3.]).is_nan());
    }
}
