//! Sample-quality metrics on feature vectors: the Fréchet distance (FID's formula, Heusel et
//! al. 2017) and the kernel distance (KID's, Bińkowski et al. 2018).
//!
//! These are the formulas of FID and KID; the features are whatever network the caller runs
//! (in ember, its own classifier's pooled features, [`crate::classifier::Classifier::features`]),
//! so the numbers are comparable with each other, not with published Inception-v3 FIDs.

use ember_tensor::Tensor;
use ember_tensor::rng::Rng;

use crate::error::{Result, TrainError};

/// The mean and covariance of `n` feature vectors of dimension `dim`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    pub dim: usize,
    pub count: usize,
    pub mean: Vec<f64>,
    /// Row-major `dim × dim`, with the unbiased `1/(n − 1)` normalization (as NumPy's `np.cov`).
    pub covariance: Vec<f64>,
}

impl FeatureStats {
    /// The statistics of row-major `features [count, dim]`; needs at least 2 vectors.
    pub fn from_features(features: &[f64], dim: usize) -> Result<FeatureStats> {
        if dim == 0 || !features.len().is_multiple_of(dim) || features.len() / dim < 2 {
            return Err(TrainError::Config(format!(
                "feature statistics need at least 2 vectors of a dimension ≥ 1; got {} values for dimension {dim}",
                features.len()
            )));
        }
        let count = features.len() / dim;
        let mut mean = vec![0.0; dim];
        for row in features.chunks(dim) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= count as f64);
        let mut covariance = vec![0.0; dim * dim];
        for row in features.chunks(dim) {
            for i in 0..dim {
                let di = row[i] - mean[i];
                for j in i..dim {
                    covariance[i * dim + j] += di * (row[j] - mean[j]);
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let value = covariance[i * dim + j] / (count - 1) as f64;
                covariance[i * dim + j] = value;
                covariance[j * dim + i] = value;
            }
        }
        Ok(FeatureStats { dim, count, mean, covariance })
    }
}

/// The Fréchet distance between the Gaussians fitted to two feature sets:
/// `‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)`. The matrix square roots come from
/// symmetric eigendecompositions ([`symmetric_eigen`]), so the middle term needs no complex
/// arithmetic (`Tr (Σ₁Σ₂)^½` equals `Tr (Σ₁^½ Σ₂ Σ₁^½)^½`, a symmetric PSD matrix); eigenvalues
/// that rounding makes slightly negative count as 0.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim != b.dim {
        return Err(TrainError::Config(format!("feature dimensions differ: {} and {}", a.dim, b.dim)));
    }
    let d = a.dim;
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let (values, vectors) = symmetric_eigen(&a.covariance, d);
    // Σ₁^½ = V diag(√λ) Vᵀ
    let mut sqrt_a = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            sqrt_a[i * d + j] = (0..d).map(|k| vectors[i * d + k] * values[k].max(0.0).sqrt() * vectors[j * d + k]).sum();
        }
    }
    let middle = matmul(&matmul(&sqrt_a, &b.covariance, d), &sqrt_a, d);
    let symmetric: Vec<f64> = (0..d * d).map(|k| 0.5 * (middle[k] + middle[(k % d) * d + k / d])).collect();
    let (middle_values, _) = symmetric_eigen(&symmetric, d);
    let trace_sqrt: f64 = middle_values.iter().map(|v| v.max(0.0).sqrt()).sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    Ok((mean_term + trace(&a.covariance) + trace(&b.covariance) - 2.0 * trace_sqrt).max(0.0))
}

/// The kernel distance (KID): the unbiased estimate of the squared maximum mean discrepancy
/// with the kernel `k(x, y) = (x·y/d + 1)³`, averaged over `subsets` random subsets of
/// `subset_size` vectors from each set (drawn from `rng`, without replacement within a
/// subset). Returns the mean and the standard deviation over the subsets.
pub fn kernel_distance(a: &[f64], b: &[f64], dim: usize, subsets: usize, subset_size: usize, rng: &mut Rng) -> Result<(f64, f64)> {
    let (na, nb) = (a.len() / dim.max(1), b.len() / dim.max(1));
    if dim == 0 || !a.len().is_multiple_of(dim) || !b.len().is_multiple_of(dim) || subset_size < 2 || subset_size > na.min(nb) || subsets == 0 {
        return Err(TrainError::Config(format!(
            "the kernel distance needs subsets of 2 ≤ m ≤ {} vectors (the smaller set) and at least one subset; got m = {subset_size}, {subsets} subsets",
            na.min(nb)
        )));
    }
    let kernel = |x: &[f64], y: &[f64]| (x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>() / dim as f64 + 1.0).powi(3);
    let m = subset_size;
    let mut estimates = Vec::with_capacity(subsets);
    for _ in 0..subsets {
        let pick = |n: usize, rng: &mut Rng| -> Vec<usize> {
            let mut order: Vec<usize> = (0..n).collect();
            let draws = rng.uniform_values(m);
            for (i, u) in draws.into_iter().enumerate() {
                let j = i + ((u * (n - i) as f64) as usize).min(n - i - 1);
                order.swap(i, j);
            }
            order.truncate(m);
            order
        };
        let (ia, ib) = (pick(na, rng), pick(nb, rng));
        let (mut kxx, mut kyy, mut kxy) = (0.0, 0.0, 0.0);
        for i in 0..m {
            for j in 0..m {
                if i != j {
                    kxx += kernel(row(a, dim, ia[i]), row(a, dim, ia[j]));
                    kyy += kernel(row(b, dim, ib[i]), row(b, dim, ib[j]));
                }
                kxy += kernel(row(a, dim, ia[i]), row(b, dim, ib[j]));
            }
        }
        let pairs = (m * (m - 1)) as f64;
        estimates.push(kxx / pairs + kyy / pairs - 2.0 * kxy / (m * m) as f64);
    }
    let mean = estimates.iter().sum::<f64>() / subsets as f64;
    let variance = estimates.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / subsets as f64;
    Ok((mean, variance.sqrt()))
}

/// Row `i` of row-major vectors of dimension `dim`.
fn row(set: &[f64], dim: usize, i: usize) -> &[f64] {
    &set[i * dim..(i + 1) * dim]
}

fn matmul(x: &[f64], y: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let xik = x[i * d + k];
            for j in 0..d {
                out[i * d + j] += xik * y[k * d + j];
            }
        }
    }
    out
}

/// The eigenvalues and eigenvectors (the columns of row-major `d × d` `V`) of the symmetric
/// row-major `matrix`, by cyclic Jacobi rotations until the off-diagonal part is below 1e-14
/// of the matrix's norm (or 100 sweeps): `matrix = V diag(values) Vᵀ`.
pub fn symmetric_eigen(matrix: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = matrix.to_vec();
    let mut v: Vec<f64> = (0..d * d).map(|k| if k / d == k % d { 1.0 } else { 0.0 }).collect();
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..d).flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i * d + j] * a[i * d + j]).sum::<f64>().sqrt();
        if off <= 1e-14 * norm.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // the rotation that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.4.1)
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// The FID a training run logs as it goes (`eval_every`): the classifier, and the feature
/// statistics of the first `n` test images, computed once.
pub struct FidProbe {
    pub classifier: crate::classifier::Classifier,
    pub test_stats: FeatureStats,
    pub n: usize,
}

impl FidProbe {
    /// Reads the classifier at `classifier` and the first `n` test images of `data`.
    pub fn new(classifier: &std::path::Path, data: &str, channels: usize, n: usize) -> Result<FidProbe> {
        let classifier = crate::classifier::Classifier::load(classifier)?.classifier;
        let test = crate::data::Dataset::from_name(data, crate::data::Split::Test, channels)?;
        let n = n.min(test.len());
        let images = test.batch(&(0..n).collect::<Vec<_>>(), &vec![false; n])?;
        let test_stats = FeatureStats::from_features(&classifier.features_of(&images, 256)?, classifier.feature_dim())?;
        Ok(FidProbe { classifier, test_stats, n })
    }

    /// The FID of `samples` (`[n, C, H, W]`) against the test images.
    pub fn fid(&self, samples: &Tensor) -> Result<f64> {
        let features = self.classifier.features_of(samples, 256)?;
        frechet_distance(&FeatureStats::from_features(&features, self.classifier.feature_dim())?, &self.test_stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_features(n: usize, dim: usize, shift: f64, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let base = rng.normal_values(n * dim);
        // correlated features: x_j = z_j + 0.5 z_{j−1} + shift
        (0..n * dim).map(|k| base[k] + if k % dim > 0 { 0.5 * base[k - 1] } else { 0.0 } + shift).collect()
    }

    #[test]
    fn the_eigendecomposition_rebuilds_the_matrix() {
        let d = 7;
        let x = random_features(20, d, 0.0, 1);
        let stats = FeatureStats::from_features(&x, d).unwrap();
        let (values, vectors) = symmetric_eigen(&stats.covariance, d);
        for i in 0..d {
            for j in 0..d {
                let rebuilt: f64 = (0..d).map(|k| vectors[i * d + k] * values[k] * vectors[j * d + k]).sum();
                assert!((rebuilt - stats.covariance[i * d + j]).abs() < 1e-12, "({i}, {j})");
                let dot: f64 = (0..d).map(|k| vectors[k * d + i] * vectors[k * d + j]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12, "orthonormal columns");
            }
        }
    }

    #[test]
    fn covariance_is_numpys_unbiased_one() {
        // np.cov([[1, 2, 4], [2, 0, 1]]) = [[2.3333, -0.5], [-0.5, 1]] (variables in rows there)
        let stats = FeatureStats::from_features(&[1.0, 2.0, 2.0, 0.0, 4.0, 1.0], 2).unwrap();
        let want = [7.0 / 3.0, -0.5, -0.5, 1.0];
        assert!(stats.covariance.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-14), "{:?}", stats.covariance);
        assert_eq!(stats.mean, vec![7.0 / 3.0, 1.0]);
        assert!(FeatureStats::from_features(&[1.0, 2.0], 2).is_err(), "one vector has no covariance");
    }

    #[test]
    fn frechet_distance_is_zero_for_equal_sets_and_has_the_2x2_closed_form() {
        let x = random_features(50, 6, 0.0, 2);
        let s = FeatureStats::from_features(&x, 6).unwrap();
        assert!(frechet_distance(&s, &s).unwrap() < 1e-9);
        // 2×2: Tr √(Σ₁Σ₂) = √(tr(Σ₁Σ₂) + 2√(det Σ₁ det Σ₂)), with non-commuting covariances
        let a = FeatureStats { dim: 2, count: 0, mean: vec![1.0, -2.0], covariance: vec![2.0, 0.7, 0.7, 1.0] };
        let b = FeatureStats { dim: 2, count: 0, mean: vec![0.5, 0.0], covariance: vec![0.5, -0.3, -0.3, 3.0] };
        let product_trace = 2.0 * 0.5 + 0.7 * -0.3 + 0.7 * -0.3 + 1.0 * 3.0;
        let dets = (2.0 * 1.0 - 0.7 * 0.7) * (0.5 * 3.0 - 0.3 * 0.3);
        let want = 0.25 + 4.0 + 3.0 + 3.5 - 2.0 * (product_trace + 2.0 * f64::sqrt(dets)).sqrt();
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!((frechet_distance(&b, &a).unwrap() - want).abs() < 1e-12, "symmetric");
    }

    #[test]
    fn the_kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift() {
        let (x, y, z) = (random_features(200, 4, 0.0, 3), random_features(200, 4, 0.0, 4), random_features(200, 4, 1.0, 5));
        let (same, same_sd) = kernel_distance(&x, &y, 4, 10, 100, &mut Rng::new(0)).unwrap();
        let (shifted, _) = kernel_distance(&x, &z, 4, 10, 100, &mut Rng::new(0)).unwrap();
        assert!(same.abs() < 3.0 * same_sd.max(0.01), "{same} ± {same_sd}");
        assert!(shifted > 10.0 * same.abs().max(0.01), "{shifted} vs {same}");
        assert!(kernel_distance(&x, &y, 4, 10, 201, &mut Rng::new(0)).is_err());
    }
}
