// Inspection statistics and PCA against NumPy (tests/reference/gen_analysis_golden.py) on states saved
// from a real trace of stories260K.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <span>
#include <vector>
#include <nlohmann/json.hpp>

#include "loopus/analysis/pca.hpp"
#include "loopus/analysis/stats.hpp"
#include "loopus/analysis/trace.hpp"
#include "loopus/analysis/trace_report.hpp"
#include "test_util.hpp"

using namespace loopus;

namespace {

std::vector<float> golden_floats(const std::string& name) {
  const std::string b = test::read_text(test::source_dir() / "tests/golden/analysis" / name);
  REQUIRE(!b.empty());
  REQUIRE(b.size() % 4 == 0);
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

/// Projections equal up to the sign of each component, within tol.
void check_projections(const std::vector<double>& got, int64_t k, const nlohmann::json& want, double tol) {
  REQUIRE(want.size() * size_t(k) == got.size());
  for (int64_t c = 0; c < k; ++c) {
    double same = 0, flip = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double w = want[i][size_t(c)].get<double>(), g = got[i * size_t(k) + size_t(c)];
      same = std::max(same, std::abs(g - w));
      flip = std::max(flip, std::abs(g + w));
    }
    CHECK(std::min(same, flip) < tol);
  }
}

}  // namespace

TEST_CASE("analysis: norms, distances, cosines, gate summaries and PCA equal NumPy's on saved trace states") {
  const auto g = nlohmann::json::parse(test::read_text(test::source_dir() / "tests/golden/analysis/golden.json"));
  const int64_t d = g["d"];
  const auto states = golden_floats("states.f32"), alpha = golden_floats("alpha.f32");
  analysis::Trace t;
  t.d = d;
  REQUIRE(g["tokens"].size() >= 4);
  for (const auto& gt : g["tokens"]) {
    analysis::TraceToken k;
    k.loops = gt["loops"];
    const size_t s0 = gt["state_row"].get<size_t>() * size_t(d), a0 = gt["alpha_row"].get<size_t>() * size_t(d);
    k.states.assign(states.begin() + std::ptrdiff_t(s0),
                    states.begin() + std::ptrdiff_t(s0 + size_t(k.loops + 1) * size_t(d)));
    k.alpha.assign(alpha.begin() + std::ptrdiff_t(a0),
                   alpha.begin() + std::ptrdiff_t(a0 + size_t(k.loops) * size_t(d)));
    k.iters.resize(size_t(k.loops + 1));
    analysis::TraceRecorder::fill_geometry(k, d);
    for (int r = 0; r <= k.loops; ++r) {
      const auto& w = gt["iterations"][size_t(r)];
      const auto& it = k.iters[size_t(r)];
      CHECK(it.norm == doctest::Approx(w["norm"].get<double>()).epsilon(1e-9));
      CHECK(it.cos_final == doctest::Approx(w["cos_final"].get<double>()).epsilon(1e-9));
      if (r == 0) continue;
      CHECK(it.delta == doctest::Approx(w["delta"].get<double>()).epsilon(1e-9));
      CHECK(it.delta_rel == doctest::Approx(w["delta_rel"].get<double>()).epsilon(1e-9));
      const auto s = analysis::summarize(std::span<const float>(k.alpha.data() + size_t(r - 1) * size_t(d), size_t(d)));
      const auto& ws = w["alpha"];
      CHECK(s.mean == doctest::Approx(ws["mean"].get<double>()).epsilon(1e-9));
      CHECK(s.std == doctest::Approx(ws["std"].get<double>()).epsilon(1e-9));
      CHECK(s.min == ws["min"].get<double>());
      CHECK(s.max == ws["max"].get<double>());
      CHECK(s.q1 == doctest::Approx(ws["q1"].get<double>()).epsilon(1e-12));
      CHECK(s.median == doctest::Approx(ws["median"].get<double>()).epsilon(1e-12));
      CHECK(s.q3 == doctest::Approx(ws["q3"].get<double>()).epsilon(1e-12));
    }
    const analysis::Pca p = analysis::pca(k.states.data(), k.loops + 1, d, 2);
    CHECK(p.k == 2);
    check_projections(p.projections, p.k, gt["pca"]["projections"], 1e-4);
    for (int c = 0; c < 2; ++c)
      CHECK(p.explained_ratio[size_t(c)] ==
            doctest::Approx(gt["pca"]["explained_ratio"][size_t(c)].get<double>()).epsilon(1e-6));
    t.tokens.push_back(std::move(k));
  }
  // all tokens at once, each trajectory centred on its own mean (trajectory_all.svg)
  const std::vector<float> X = analysis::detail::centred_states(t);
  const analysis::Pca p = analysis::pca(X.data(), int64_t(X.size()) / d, d, 2);
  check_projections(p.projections, p.k, g["overlay_pca"]["projections"], 1e-4);
  CHECK(p.explained_ratio[0] == doctest::Approx(g["overlay_pca"]["explained_ratio"][0].get<double>()).epsilon(1e-6));
}

TEST_CASE("analysis: summaries and PCA on small hand-checked inputs") {
  const std::vector<float> v = {4, 1, 3, 2};
  const auto s = analysis::summarize(v);
  CHECK(s.mean == 2.5);
  CHECK(s.std == doctest::Approx(std::sqrt(1.25)));
  CHECK(s.q1 == 1.75);  // numpy.percentile([1,2,3,4], 25), linear
  CHECK(s.median == 2.5);
  CHECK(s.q3 == 3.25);
  CHECK(std::isnan(analysis::summarize(std::span<const float>()).mean));
  CHECK(std::isnan(analysis::cosine(std::vector<float>{0, 0}, std::vector<float>{1, 0})));
  // points on a line: one component explains everything
  const std::vector<float> line = {0, 0, 1, 2, 2, 4, 3, 6};
  const auto p = analysis::pca(line.data(), 4, 2, 2);
  CHECK(p.explained_ratio[0] == doctest::Approx(1.0));
  CHECK(std::abs(p.projections[2] - p.projections[0]) == doctest::Approx(std::sqrt(5.0)));
  CHECK_THROWS_AS(analysis::pca(line.data(), 0, 2, 2), UsageError);
}
