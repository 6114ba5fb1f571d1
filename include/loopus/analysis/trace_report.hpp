// Writes a thinking trace as trace.json, the raw states, and the Fig. 4 / Fig. 5 views (SVG and HTML).
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "loopus/analysis/pca.hpp"
#include "loopus/analysis/stats.hpp"
#include "loopus/analysis/svg_plot.hpp"
#include "loopus/analysis/token_grid.hpp"
#include "loopus/analysis/trace.hpp"
#include "loopus/io/file_util.hpp"
#include "loopus/tokenizer/tokenizer.hpp"

namespace loopus::analysis {

/// What trace.json records about the run besides the trace itself.
struct TraceInfo {
  std::string model, prompt, split, gate, cache, halting;
  std::vector<int> panel_tokens;  ///< tokens (indices into Trace::tokens) with a trajectory panel; empty: the first 6
};

namespace detail {

inline nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

inline nlohmann::json summary_json(const Summary& s) {
  return {{"mean", num(s.mean)},     {"std", num(s.std)}, {"min", num(s.min)}, {"q1", num(s.q1)},
          {"median", num(s.median)}, {"q3", num(s.q3)},   {"max", num(s.max)}};
}

/// A token's text for labels: the piece after `prev`.
inline std::string piece(const Tokenizer& tok, int32_t id, int32_t prev = -1) { return tok.token_to_piece(id, prev); }

/// Rows of all tokens' states, for PCA: each token's trajectory centred on its own mean.
inline std::vector<float> centred_states(const Trace& t) {
  std::vector<float> out;
  for (const TraceToken& k : t.tokens) {
    const int64_t n = k.loops + 1, d = t.d;
    std::vector<double> mu(size_t(d), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) mu[size_t(j)] += k.states[size_t(i * d + j)];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) out.push_back(float(k.states[size_t(i * d + j)] - mu[size_t(j)] / double(n)));
  }
  return out;
}

inline std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100 * v);
  return b;
}

}  // namespace detail

/// trace.json: the run, then per generated token and per iteration the norm,
/// gate statistics, distances, cosine to the final state, q and the top tokens.
inline nlohmann::json trace_json(const Trace& t, const Tokenizer& tok, const TraceInfo& info) {
  nlohmann::json toks = nlohmann::json::array();
  int32_t prev = t.prompt_ids.empty() ? -1 : t.prompt_ids.back();
  int64_t row = 0, arow = 0;
  for (size_t i = 0; i < t.tokens.size(); ++i) {
    const TraceToken& k = t.tokens[i];
    nlohmann::json its = nlohmann::json::array();
    for (const TraceIteration& it : k.iters) {
      nlohmann::json j = {{"r", it.r}, {"norm", detail::num(it.norm)}, {"cos_final", detail::num(it.cos_final)}};
      if (it.r > 0) {
        j["delta"] = detail::num(it.delta);
        j["delta_rel"] = detail::num(it.delta_rel);
        j["alpha"] = detail::summary_json(it.alpha);
        j["q"] = detail::num(it.q);
        j["halt_value"] = detail::num(it.halt_value);
        nlohmann::json top = nlohmann::json::array();
        for (const TopToken& c : it.top) top.push_back({{"id", c.id}, {"text", detail::piece(tok, c.id)}, {"p", c.p}});
        j["top"] = top;
      }
      its.push_back(j);
    }
    toks.push_back({{"index", i},
                    {"pos", k.pos},
                    {"id", k.id},
                    {"text", detail::piece(tok, k.id, prev)},
                    {"loops", k.loops},
                    {"state_row", row},
                    {"alpha_row", arow},
                    {"iterations", its}});
    prev = k.id;
    row += k.loops + 1;
    arow += k.loops;
  }
  return {{"model", info.model},
          {"prompt", info.prompt},
          {"prompt_ids", t.prompt_ids},
          {"split", info.split},
          {"gate", info.gate},
          {"cache", info.cache},
          {"halting", info.halting},
          {"max_loops", t.max_loops},
          {"d", t.d},
          {"top_k", t.top_k},
          {"states_file",
           {{"name", "states.f32"},
            {"dtype", "float32"},
            {"shape", {row, t.d}},
            {"rows", "per token: h_0 (encoder output) .. h_loops, from state_row"}}},
          {"alpha_file",
           {{"name", "alpha.f32"},
            {"dtype", "float32"},
            {"shape", {arow, t.d}},
            {"rows", "per token: the gate's a at iterations 1..loops, from alpha_row"}}},
          {"tokens", toks}};
}

/// Fig. 4a: each selected token's trajectory in the plane of its first two
/// principal components (its own PCA over h_0..h_loops), points numbered by iteration.
inline std::string trajectory_panels_svg(const Trace& t, const Tokenizer& tok, std::vector<int> which) {
  if (which.empty())
    for (int i = 0; i < int(std::min<size_t>(6, t.tokens.size())); ++i) which.push_back(i);
  std::vector<Panel> panels;
  for (int w : which) {
    if (w < 0 || size_t(w) >= t.tokens.size())
      throw UsageError("trace: panel token " + std::to_string(w) + " is outside 0.." +
                       std::to_string(int(t.tokens.size()) - 1));
    const TraceToken& k = t.tokens[size_t(w)];
    const int32_t prev = w > 0 ? t.tokens[size_t(w - 1)].id : (t.prompt_ids.empty() ? -1 : t.prompt_ids.back());
    Panel pn;
    pn.spec.title = "token " + std::to_string(w) + ": '" + detail::piece(tok, k.id, prev) + "'";
    pn.spec.width = 400;
    pn.spec.height = 340;
    pn.spec.equal_aspect = true;
    pn.spec.zero_y = false;
    pn.spec.legend = false;
    Series s;
    s.label = "trajectory";
    s.arrows = true;
    if (k.loops >= 1) {
      const Pca p = pca(k.states.data(), k.loops + 1, t.d, 2);
      for (int i = 0; i <= k.loops; ++i) {
        s.x.push_back(p.projections[size_t(i * p.k)]);
        s.y.push_back(p.k > 1 ? p.projections[size_t(i * p.k + 1)] : 0.0);
        s.point_labels.push_back(std::to_string(i));
      }
      pn.spec.x_label = "PC1 (" + detail::pct(p.explained_ratio[0]) + ")";
      pn.spec.y_label = "PC2 (" + (p.k > 1 ? detail::pct(p.explained_ratio[1]) : std::string("0%")) + ")";
    }
    pn.series.push_back(std::move(s));
    panels.push_back(std::move(pn));
  }
  return svg_panels(panels, 3,
                    "Latent trajectories: PCA of h_0 (encoder output) .. h_B per token, points numbered by iteration");
}

/// Fig. 4a, all tokens at once: every token's trajectory centred on its own
/// mean, one PCA over all of them (the common direction of refinement).
inline std::string trajectory_overlay_svg(const Trace& t) {
  PlotSpec spec;
  spec.title = "Latent trajectories of all " + std::to_string(t.tokens.size()) +
               " tokens (per-token centred, joint PCA)";
  spec.equal_aspect = true;
  spec.zero_y = false;
  spec.legend = false;
  spec.width = 640;
  spec.height = 560;
  std::vector<Series> series;
  const std::vector<float> X = detail::centred_states(t);
  const int64_t n = t.d > 0 ? int64_t(X.size()) / t.d : 0;
  if (n >= 2) {
    const Pca p = pca(X.data(), n, t.d, 2);
    spec.x_label = "PC1 (" + detail::pct(p.explained_ratio[0]) + ")";
    spec.y_label = "PC2 (" + (p.k > 1 ? detail::pct(p.explained_ratio[1]) : std::string("0%")) + ")";
    int64_t row = 0;
    for (const TraceToken& k : t.tokens) {
      Series s;
      s.arrows = true;
      for (int i = 0; i <= k.loops; ++i, ++row) {
        s.x.push_back(p.projections[size_t(row * p.k)]);
        s.y.push_back(p.k > 1 ? p.projections[size_t(row * p.k + 1)] : 0.0);
        s.point_labels.push_back(i == 0 || i == k.loops ? std::to_string(i) : std::string());
      }
      series.push_back(std::move(s));
    }
  }
  return svg_line_chart(series, spec);
}

/// The gate's coefficient a against iteration: mean and quartiles over all
/// channels of all generated tokens (Fig. 4b).
inline std::string gate_svg(const Trace& t) {
  Series s{"mean a", {}, {}};
  for (int r = 1; r <= t.max_loops; ++r) {
    std::vector<float> v;
    for (const TraceToken& k : t.tokens)
      if (r <= k.loops) v.insert(v.end(), k.alpha.begin() + (r - 1) * t.d, k.alpha.begin() + r * t.d);
    if (v.empty()) continue;
    const Summary m = summarize(v);
    s.x.push_back(r);
    s.y.push_back(m.mean);
    s.lo.push_back(m.q1);
    s.hi.push_back(m.q3);
  }
  PlotSpec spec;
  spec.title = "Selective gate: share of the proposal a per iteration";
  spec.note = "mean over all channels of all generated tokens; band: quartiles";
  spec.x_label = "iteration r";
  spec.y_label = "gate coefficient a";
  return svg_line_chart({s}, spec);
}

/// ||h_r - h_{r-1}|| against iteration, log scale: median over tokens with the
/// quartile band, absolute and relative to ||h_{r-1}|| (Fig. 4c).
inline std::string distance_svg(const Trace& t) {
  Series ab{"absolute", {}, {}}, rel{"relative (/ ||h_(r-1)||)", {}, {}};
  for (int r = 1; r <= t.max_loops; ++r) {
    std::vector<float> va, vr;
    for (const TraceToken& k : t.tokens)
      if (r <= k.loops) {
        va.push_back(float(k.iters[size_t(r)].delta));
        vr.push_back(float(k.iters[size_t(r)].delta_rel));
      }
    if (va.empty()) continue;
    const Summary a = summarize(va), b = summarize(vr);
    ab.x.push_back(r);
    ab.y.push_back(a.median);
    ab.lo.push_back(a.q1);
    ab.hi.push_back(a.q3);
    rel.x.push_back(r);
    rel.y.push_back(b.median);
    rel.lo.push_back(b.q1);
    rel.hi.push_back(b.q3);
  }
  PlotSpec spec;
  spec.title = "Distance between successive states";
  spec.note = "median over generated tokens; band: quartiles";
  spec.x_label = "iteration r";
  spec.y_label = "||h_r - h_(r-1)|| (log)";
  spec.log_y = true;
  return svg_line_chart({ab, rel}, spec);
}

/// Fig. 5: generated tokens x iterations, the top token and its probability at
/// each iteration; cells whose top token is the one finally chosen are marked.
inline TokenGrid thinking_grid(const Trace& t, const Tokenizer& tok, const std::string& title) {
  TokenGrid g;
  g.title = title;
  g.note =
      "each cell: the token the decoder would emit from that iteration's state, with its probability; "
      "outlined: equal to the token finally chosen";
  for (int r = 1; r <= t.max_loops; ++r) g.col_labels.push_back("r=" + std::to_string(r));
  int32_t prev = t.prompt_ids.empty() ? -1 : t.prompt_ids.back();
  for (size_t i = 0; i < t.tokens.size(); ++i) {
    const TraceToken& k = t.tokens[i];
    std::string label = "#";
    label.append(std::to_string(i)).append(" '").append(detail::piece(tok, k.id, prev)).append(1, '\'');
    g.row_labels.push_back(std::move(label));
    prev = k.id;
    std::vector<GridCell> row;
    for (int r = 1; r <= k.loops; ++r) {
      const TraceIteration& it = k.iters[size_t(r)];
      GridCell c;
      if (!it.top.empty()) {
        c.text = detail::piece(tok, it.top[0].id);
        c.prob = it.top[0].p;
        c.chosen = it.top[0].id == k.id;
        for (const TopToken& o : it.top) {
          char b[32];
          std::snprintf(b, sizeof b, " %.3f", double(o.p));
          c.tooltip.append(1, '\'').append(detail::piece(tok, o.id)).append(1, '\'').append(b).append(1, '\n');
        }
      }
      row.push_back(std::move(c));
    }
    g.cells.push_back(std::move(row));
  }
  return g;
}

/// Writes trace.json, states.f32, alpha.f32, trajectory.svg, trajectory_all.svg,
/// gate.svg, distance.svg, thinking.svg and thinking.html into dir (each
/// written to a temporary name and renamed). Returns the file names.
inline std::vector<std::string> write_trace_report(const std::string& dir, const Trace& t, const Tokenizer& tok,
                                                   const TraceInfo& info) {
  io::make_dirs(dir);
  std::vector<float> states, alpha;
  for (const TraceToken& k : t.tokens) {
    states.insert(states.end(), k.states.begin(), k.states.end());
    alpha.insert(alpha.end(), k.alpha.begin(), k.alpha.end());
  }
  const auto bytes = [](const std::vector<float>& v) {
    return std::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  };
  const std::string title = "Thinking trace: " + std::filesystem::path(info.model).filename().string() + ", split " +
                            info.split + ", B = " + std::to_string(t.max_loops);
  const std::vector<std::pair<std::string, std::string>> files = {
      {"trace.json", trace_json(t, tok, info).dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"},
      {"trajectory.svg", trajectory_panels_svg(t, tok, info.panel_tokens)},
      {"trajectory_all.svg", trajectory_overlay_svg(t)},
      {"gate.svg", gate_svg(t)},
      {"distance.svg", distance_svg(t)},
      {"thinking.svg", svg_token_grid(thinking_grid(t, tok, title))},
      {"thinking.html", html_token_grid(thinking_grid(t, tok, title))}};
  std::vector<std::string> names;
  io::write_file_atomic(dir + "/states.f32", bytes(states));
  io::write_file_atomic(dir + "/alpha.f32", bytes(alpha));
  names = {"states.f32", "alpha.f32"};
  for (const auto& [name, text] : files) {
    io::write_file_atomic(dir + "/" + name, text);
    names.push_back(name);
  }
  return names;
}

}  // namespace loopus::analysis
