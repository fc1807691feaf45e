//! The head: the final norm, pooling, the head's steps and the output (the fill-mask head's
//! position selection, when the last layer did not already make it).

use super::{err, Emitter};
use crate::ir::*;
use crate::mil::{MilError, Var};

impl Emitter<'_, '_> {
    /// Final norm, pooling, head steps and the output.
    pub fn head(&mut self, head: &Head) -> Result<Var, MilError> {
        self.scope = head.kind.name();
        let mut x = self
            .x
            .clone()
            .ok_or_else(|| err("the head comes after the layers"))?;
        if head.kind == HeadKind::FillMask && !self.selected {
            x = self.select_positions("masked_tokens", &x)?;
        }
        if let Some(n) = &head.final_norm {
            x = self.norm("final_norm", &x, n)?;
        }
        let s = self.opts.seq_len;
        let d = self.hidden;
        match head.pooling {
            Some(p) if self.packed.is_some() => x = self.pool_segments(&x, p)?,
            Some(Pooling::Cls) => {
                x = self
                    .f
                    .slice("pool_cls", &x, &[0, 0, 0, 0], &[1, d as i32, 1, 1])?;
            }
            Some(Pooling::Mean) => {
                let m = self.mask_f.clone();
                let m = self.f.reshape("pool_mask", &m, &[1, 1, 1, s as i32])?;
                let xm = self.f.binary("mul", "pool_masked", &x, &m)?;
                let num = self.f.reduce("reduce_sum", "pool_sum", &xm, &[3], true)?;
                let den = self.f.reduce("reduce_sum", "pool_count", &m, &[3], true)?;
                let one = self.scalar("pool_one", 1.0)?;
                let den = self.f.binary("maximum", "pool_count_min1", &den, &one)?;
                x = self.f.binary("real_div", "pool_mean", &num, &den)?;
            }
            None => {}
        }
        for (i, step) in head.steps.iter().enumerate() {
            let hint = format!("head{i}");
            x = match step {
                Step::Linear(lin) => self.conv(&hint, &x, lin)?,
                Step::Act(a) => self.act(&hint, &x, *a)?,
                Step::Norm(n) => self.norm(&hint, &x, n)?,
                Step::L2Normalize => {
                    let n =
                        self.f
                            .reduce("reduce_l2_norm", &format!("{hint}_l2"), &x, &[1], true)?;
                    let tiny = self.scalar(&format!("{hint}_tiny"), 1e-7)?;
                    let n = self
                        .f
                        .binary("maximum", &format!("{hint}_l2_min"), &n, &tiny)?;
                    self.f.binary("real_div", &hint, &x, &n)?
                }
            };
        }
        // Packed pooled outputs stay `(1, C, 1, T)`: a column per text slot.
        if head.pooling.is_some() && self.packed.is_none() {
            let c = x
                .shape()
                .map(|s| s[1])
                .ok_or_else(|| err("unknown head width"))?;
            x = self.f.reshape("pooled", &x, &[1, c as i32])?;
        }
        self.f.output(head.kind.output_name(), &x)?;
        Ok(x)
    }
}
