//! The training loss of each task, as differentiable candle expressions with the semantics of
//! PyTorch's loss modules (which transformers' heads call): `CrossEntropyLoss(weight,
//! label_smoothing)`, `BCEWithLogitsLoss(pos_weight)` and `MSELoss`, each a mean over the
//! batch (and, for BCE, over the labels).

use candle_core::{D, DType, Result, Tensor};

/// The loss a task trains with.
#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    /// Single-label: the targets are class ids (u32, one per row).
    CrossEntropy {
        /// One weight per class; the weighted mean divides by the targets' weights, as
        /// PyTorch does.
        weights: Option<Vec<f32>>,
        /// Trainer's `label_smoothing_factor`: the target distribution puts ε/K on every
        /// class and 1 − ε on top of that on the true one.
        label_smoothing: f64,
    },
    /// Multi-label: the targets are 0/1 per label (f32, rows × labels).
    BinaryCrossEntropy {
        /// Per label, the factor on the loss of its positive examples.
        pos_weight: Option<Vec<f32>>,
    },
    /// Regression with one output: the targets are the values (f32, one per row).
    MeanSquaredError,
}

impl Loss {
    /// The mean loss of `logits` (rows × outputs, any float dtype: computed in f32) against
    /// `targets`.
    pub fn compute(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = logits.to_dtype(DType::F32)?;
        match self {
            Self::CrossEntropy {
                weights: None,
                label_smoothing,
            } if *label_smoothing == 0.0 => candle_nn::loss::cross_entropy(&logits, targets),
            Self::CrossEntropy {
                weights,
                label_smoothing,
            } => cross_entropy(&logits, targets, weights.as_deref(), *label_smoothing),
            Self::BinaryCrossEntropy { pos_weight } => {
                binary_cross_entropy(&logits, targets, pos_weight.as_deref())
            }
            Self::MeanSquaredError => {
                let predicted = logits.flatten_all()?;
                predicted.sub(&targets.flatten_all()?)?.sqr()?.mean_all()
            }
        }
    }
}

fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&[f32]>,
    smoothing: f64,
) -> Result<Tensor> {
    let (rows, classes) = logits.dims2()?;
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_p.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let (nll, spread) = match weights {
        Some(w) => {
            let w = Tensor::new(w, logits.device())?;
            let row_weights = w.index_select(targets, 0)?;
            let total = row_weights.sum_all()?;
            let nll = picked.mul(&row_weights)?.sum_all()?.div(&total)?;
            let spread = log_p.broadcast_mul(&w)?.sum_all()?.neg()?.div(&total)?;
            (nll, spread)
        }
        None => (picked.mean_all()?, (log_p.sum_all()?.neg()? / rows as f64)?),
    };
    if smoothing == 0.0 {
        return Ok(nll);
    }
    (nll * (1.0 - smoothing))? + (spread * (smoothing / classes as f64))?
}

/// PyTorch's `binary_cross_entropy_with_logits`, value and gradient alike. The value is
/// `(1 − y)·x + l·(ln(e^−m + e^(−x−m)) + m)` with `l = 1 + (p − 1)·y` and `m = max(−x, 0)`, so
/// no exponent overflows; the gradient is PyTorch's closed form `l·σ(x) − p·y` (per element,
/// over the element count). Autograd through the value's own expression would give the same
/// gradient in exact arithmetic but round differently, and Adam's first steps, which divide
/// each gradient by its own size, turn that rounding into visible parameter differences. So
/// the value is detached and the gradient enters through `(x − x̂)·ĝ`, which is exactly 0
/// forward and exactly `ĝ` backward, on any device.
fn binary_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<&[f32]>,
) -> Result<Tensor> {
    let x = logits.detach();
    let (log_weight, positive_weight) = match pos_weight {
        Some(p) => {
            let p = Tensor::new(p, logits.device())?;
            let lw = (targets.broadcast_mul(&(&p - 1.0)?)? + 1.0)?;
            (lw, targets.broadcast_mul(&p)?)
        }
        None => (targets.ones_like()?, targets.clone()),
    };
    let m = x.neg()?.relu()?;
    let softplus_neg = (m.neg()?.exp()? + x.neg()?.sub(&m)?.exp()?)?
        .log()?
        .add(&m)?;
    let value = targets
        .affine(-1.0, 1.0)?
        .mul(&x)?
        .add(&log_weight.mul(&softplus_neg)?)?
        .mean_all()?;
    let sigmoid = (x.neg()?.exp()? + 1.0)?.recip()?;
    let gradient = log_weight.mul(&sigmoid)?.sub(&positive_weight)?;
    let surrogate = logits.sub(&x)?.mul(&gradient)?.mean_all()?;
    value.add(&surrogate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scalar(t: Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    fn logits() -> Tensor {
        Tensor::new(&[[1.0f32, -2.0, 0.5], [0.3, 0.2, -0.1]], &Device::Cpu).unwrap()
    }

    /// The weighted, smoothed cross-entropy written out in f64 for two rows.
    #[test]
    fn weighted_smoothed_cross_entropy_follows_pytorch_formula() {
        let rows = [[1.0f64, -2.0, 0.5], [0.3, 0.2, -0.1]];
        let targets = [2usize, 0];
        let w = [0.5f64, 2.0, 1.0];
        let eps = 0.1;
        let log_p = |r: &[f64; 3]| {
            let m = r.iter().copied().fold(f64::MIN, f64::max);
            let z = r.iter().map(|x| (x - m).exp()).sum::<f64>().ln() + m;
            r.map(|x| x - z)
        };
        let (mut nll, mut spread, mut total) = (0.0, 0.0, 0.0);
        for (r, &t) in rows.iter().zip(&targets) {
            let lp = log_p(r);
            nll -= w[t] * lp[t];
            spread -= (0..3).map(|c| w[c] * lp[c]).sum::<f64>();
            total += w[t];
        }
        let expected = (1.0 - eps) * nll / total + eps / 3.0 * spread / total;
        let loss = Loss::CrossEntropy {
            weights: Some(w.map(|x| x as f32).to_vec()),
            label_smoothing: eps,
        };
        let t = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let got = scalar(loss.compute(&logits(), &t).unwrap());
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");

        // Unit weights and no smoothing: the plain mean, on either code path.
        let plain = Loss::CrossEntropy {
            weights: Some(vec![1.0; 3]),
            label_smoothing: 0.0,
        };
        let reference = Loss::CrossEntropy {
            weights: None,
            label_smoothing: 0.0,
        };
        let a = scalar(plain.compute(&logits(), &t).unwrap());
        let b = scalar(reference.compute(&logits(), &t).unwrap());
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn binary_cross_entropy_with_pos_weight_is_stable_and_exact() {
        let x = Tensor::new(&[[80.0f32, -80.0], [0.0, 2.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[[0.0f32, 1.0], [1.0, 0.0]], &Device::Cpu).unwrap();
        let sp = |v: f64| (1.0 + v.exp()).ln();
        let p = [3.0f64, 0.5];
        // Per element: (1 − y)·x + w·softplus(−x), w = 1 + (p − 1)·y.
        let expected = (80.0 + sp(-80.0)) + p[1] * sp(80.0) + p[0] * sp(0.0) + (2.0 + sp(-2.0));
        let loss = Loss::BinaryCrossEntropy {
            pos_weight: Some(p.map(|v| v as f32).to_vec()),
        };
        let got = scalar(loss.compute(&x, &y).unwrap());
        assert!((got - expected / 4.0).abs() < 1e-4, "{got}");
        let plain = Loss::BinaryCrossEntropy { pos_weight: None };
        let got = scalar(plain.compute(&x, &y).unwrap());
        let expected = (80.0 + sp(-80.0)) + sp(80.0) + sp(0.0) + (2.0 + sp(-2.0));
        assert!((got - expected / 4.0).abs() < 1e-4, "{got}");
    }

    /// The gradient is PyTorch's `(l·σ(x) − p·y) / n`.
    #[test]
    fn binary_cross_entropy_gradient_is_pytorchs_closed_form() {
        let x = candle_core::Var::new(&[[0.3f32, -1.2], [2.0, 0.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[[1.0f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let p = [2.0f32, 0.5];
        let loss = Loss::BinaryCrossEntropy {
            pos_weight: Some(p.to_vec()),
        };
        let grads = loss.compute(x.as_tensor(), &y).unwrap().backward().unwrap();
        let got = grads.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        let xs = [[0.3f32, -1.2], [2.0, 0.0]];
        let ys = [[1.0f32, 0.0], [0.0, 1.0]];
        for r in 0..2 {
            for c in 0..2 {
                let l = 1.0 + (p[c] - 1.0) * ys[r][c];
                let expected = (l * sigmoid(xs[r][c]) - p[c] * ys[r][c]) / 4.0;
                assert!(
                    (got[r][c] - expected).abs() < 1e-7,
                    "{r},{c}: {} vs {expected}",
                    got[r][c]
                );
            }
        }
    }

    #[test]
    fn mean_squared_error_of_one_output() {
        let x = Tensor::new(&[[1.0f32], [3.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[2.0f32, 0.0], &Device::Cpu).unwrap();
        assert_eq!(scalar(Loss::MeanSquaredError.compute(&x, &y).unwrap()), 5.0);
    }
}
