// Principal component analysis of a set of states (latent trajectories), with Eigen's SVD.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"

// Eigen's dense solvers with GCC 12's false -W(maybe-)uninitialized reports in its AVX-512 packet code
// turned off for Eigen's headers alone (GCC bug 105593; see ops/cpu/eigen.hpp, which does the same for Core).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#include <Eigen/SVD>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace loopus::analysis {

/// The first k principal components of n points of dimension d.
struct Pca {
  int64_t n = 0, d = 0, k = 0;
  std::vector<double> mean;             ///< [d], subtracted before the projection
  std::vector<double> components;       ///< [k, d] row-major, unit rows, by falling variance
  std::vector<double> explained_ratio;  ///< [k] share of the total variance of each component
  std::vector<double> projections;      ///< [n, k] row-major: (x - mean) . component
};

/// PCA of the rows of X [n, d] (row-major). Components come from the thin SVD
/// of the centred data (Eigen::BDCSVD), as scikit-learn and NumPy's SVD do;
/// a component's sign is arbitrary, as everywhere. k is clipped to min(n, d).
/// Variance ratios are of the total variance (all components).
inline Pca pca(const float* X, int64_t n, int64_t d, int k) {
  if (n < 1 || d < 1 || k < 1) throw UsageError("pca: needs n >= 1 points, d >= 1 and k >= 1");
  Pca r;
  r.n = n;
  r.d = d;
  r.k = std::min<int64_t>(k, std::min(n, d));
  Eigen::MatrixXd A(n, d);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) A(i, j) = double(X[i * d + j]);
  const Eigen::RowVectorXd mu = A.colwise().mean();
  A.rowwise() -= mu;
  r.mean.assign(mu.data(), mu.data() + d);
  Eigen::BDCSVD<Eigen::MatrixXd> svd(A, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd sv = svd.singularValues();
  const double total = sv.squaredNorm();
  r.components.resize(size_t(r.k * d));
  r.explained_ratio.resize(size_t(r.k));
  r.projections.resize(size_t(n * r.k));
  for (int64_t c = 0; c < r.k; ++c) {
    for (int64_t j = 0; j < d; ++j) r.components[size_t(c * d + j)] = svd.matrixV()(j, c);
    r.explained_ratio[size_t(c)] = total > 0 ? sv(c) * sv(c) / total : 0.0;
    for (int64_t i = 0; i < n; ++i) r.projections[size_t(i * r.k + c)] = svd.matrixU()(i, c) * sv(c);
  }
  return r;
}

}  // namespace loopus::analysis
