//! Regression metrics: errors, correlations and the coefficient of determination, as
//! scikit-learn and SciPy compute them (Spearman's rank correlation with tied values given
//! their mean rank).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegressionReport {
    pub examples: usize,
    pub mse: f64,
    pub rmse: f64,
    pub mae: f64,
    pub pearson: f64,
    pub spearman: f64,
    /// 1 − residual sum of squares / total sum of squares.
    pub r2: f64,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Pearson's correlation; 0 when either side is constant (SciPy returns NaN and warns).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Ranks from 1, ties sharing their mean rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

impl RegressionReport {
    pub fn compute(truth: &[f64], predicted: &[f64]) -> Self {
        let n = truth.len();
        let errors: Vec<f64> = truth.iter().zip(predicted).map(|(t, p)| p - t).collect();
        let mse = mean(&errors.iter().map(|e| e * e).collect::<Vec<_>>());
        let mt = mean(truth);
        let total: f64 = truth.iter().map(|t| (t - mt) * (t - mt)).sum();
        let residual: f64 = errors.iter().map(|e| e * e).sum();
        Self {
            examples: n,
            mse,
            rmse: mse.sqrt(),
            mae: mean(&errors.iter().map(|e| e.abs()).collect::<Vec<_>>()),
            pearson: pearson(truth, predicted),
            spearman: spearman(truth, predicted),
            // scikit-learn's r2_score for a constant truth: 1 if predicted exactly, else 0.
            r2: if total == 0.0 {
                if residual == 0.0 { 1.0 } else { 0.0 }
            } else {
                1.0 - residual / total
            },
        }
    }
}

impl std::fmt::Display for RegressionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "examples     {}", self.examples)?;
        writeln!(f, "pearson      {:.4}", self.pearson)?;
        writeln!(f, "spearman     {:.4}", self.spearman)?;
        writeln!(f, "r2           {:.4}", self.r2)?;
        writeln!(f, "mse          {:.4}", self.mse)?;
        writeln!(f, "rmse         {:.4}", self.rmse)?;
        write!(f, "mae          {:.4}", self.mae)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SciPy 1.17 / scikit-learn 1.9 on truth = [1, 2, 3, 4, 5], predicted = [1.5, 2, 2, 5, 4]:
    /// pearsonr 0.8340576562282992, spearmanr 0.8720815992723809 (a tie at 2),
    /// mean_squared_error 0.65, mean_absolute_error 0.7, r2_score 0.675.
    #[test]
    fn matches_scipy_and_scikit_learn() {
        let r = RegressionReport::compute(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.5, 2.0, 2.0, 5.0, 4.0]);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(r.mse, 0.65), "{}", r.mse);
        assert!(close(r.mae, 0.7), "{}", r.mae);
        assert!(close(r.rmse, 0.65f64.sqrt()));
        assert!(close(r.r2, 1.0 - 3.25 / 10.0), "{}", r.r2);
        assert!(close(r.pearson, 0.8340576562282992), "{}", r.pearson);
        assert!(close(r.spearman, 0.8720815992723809), "{}", r.spearman);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
    }
}
