// The split advisor's report: layer dynamics and split scores as JSON and SVG.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "loopus/analysis/layer_dynamics.hpp"
#include "loopus/analysis/svg_plot.hpp"

namespace loopus::analysis {

inline nlohmann::json split_json(const SplitChoice& c) {
  const LayerSplit s = c.split();
  return {{"encoder", LayerSplit::range_text(s.encoder)},
          {"reasoning", LayerSplit::range_text(s.reasoning)},
          {"decoder", LayerSplit::range_text(s.decoder)},
          {"encoder_layers", c.encoder},
          {"reasoning_layers", c.reasoning()},
          {"decoder_layers", c.decoder},
          {"flags", c.flags()}};
}

inline nlohmann::json dynamics_json(const LayerDynamics& d, const SplitChoice& suggested) {
  nlohmann::json layers = nlohmann::json::array();
  for (int l = 0; l < d.n_layer; ++l)
    layers.push_back({{"layer", l},
                      {"cos_in_out", d.cos_in_out[size_t(l)]},
                      {"change", d.change[size_t(l)]},
                      {"change_rel", d.change_rel[size_t(l)]},
                      {"norm_in", d.norm[size_t(l)]},
                      {"norm_out", d.norm[size_t(l + 1)]}});
  return {{"n_layer", d.n_layer},
          {"tokens", d.tokens},
          {"layers", layers},
          {"suggested", split_json(suggested)},
          {"suggested_score", d.span_cos(suggested.encoder, d.n_layer - suggested.decoder)}};
}

/// Two panels against depth: cos(h_l, h_{l+1}) and ||h_{l+1} - h_l|| / ||h_l||,
/// with the suggested block's boundaries as vertical lines.
inline std::string dynamics_svg(const LayerDynamics& d, const SplitChoice& s, const std::string& model) {
  Series cs{"cos(h_in, h_out)", {}, {}}, ch{"||h_out - h_in|| / ||h_in||", {}, {}}, ab{"||h_out - h_in||", {}, {}};
  for (int l = 0; l < d.n_layer; ++l) {
    cs.x.push_back(l);
    cs.y.push_back(d.cos_in_out[size_t(l)]);
    ch.x.push_back(l);
    ch.y.push_back(d.change_rel[size_t(l)]);
    ab.x.push_back(l);
    ab.y.push_back(d.change[size_t(l)]);
  }
  const auto bounds = [&](double lo, double hi) {
    std::vector<Series> v;
    for (double x : {s.encoder - 0.5, d.n_layer - s.decoder - 0.5}) {
      Series b{x == s.encoder - 0.5 ? "suggested block start" : "suggested block end", {x, x}, {lo, hi}};
      b.markers = false;
      b.color = "#7f7f7f";
      v.push_back(std::move(b));
    }
    return v;
  };
  double cmin = 1, rmin = INFINITY, rmax = 0, amax = 0;
  for (int l = 0; l < d.n_layer; ++l) {
    cmin = std::min(cmin, d.cos_in_out[size_t(l)]);
    rmin = std::min(rmin, d.change_rel[size_t(l)]);
    rmax = std::max(rmax, d.change_rel[size_t(l)]);
    amax = std::max(amax, d.change[size_t(l)]);
  }
  Panel p1, p2, p3;
  p2.spec.log_y = true;
  p1.series = {cs};
  for (auto& b : bounds(cmin, 1.0)) p1.series.push_back(b);
  p1.spec.title = "cos(h_in, h_out) per layer";
  p1.spec.x_label = "layer";
  p1.spec.y_label = "mean cosine";
  p1.spec.zero_y = false;
  p2.series = {ch};
  for (auto& b : bounds(rmin, rmax)) p2.series.push_back(b);  // (a log axis: not from 0)
  p2.spec.title = "relative change per layer";
  p2.spec.x_label = "layer";
  p2.spec.y_label = "mean ||h_out - h_in|| / ||h_in|| (log)";
  p3.series = {ab};
  for (auto& b : bounds(0.0, amax)) p3.series.push_back(b);
  p3.spec.title = "size of the change per layer";
  p3.spec.x_label = "layer";
  p3.spec.y_label = "mean ||h_out - h_in||";
  for (Panel* p : {&p1, &p2, &p3}) {
    p->spec.width = 520;
    p->spec.height = 360;
    p->spec.legend = false;
    p->spec.note = "grey lines: the suggested reasoning block's boundaries";
  }
  return svg_panels({p1, p2, p3}, 3,
                    "Layer dynamics of " + model + " (" + std::to_string(d.tokens) + " tokens); suggested split " +
                        s.split().text());
}

/// Where the suggestion ranks among the scored splits (1 = best perplexity).
inline size_t rank_of(const std::vector<SplitScore>& scored, const SplitChoice& s) {
  for (size_t i = 0; i < scored.size(); ++i)
    if (scored[i].split.encoder == s.encoder && scored[i].split.decoder == s.decoder) return i + 1;
  return 0;
}

inline nlohmann::json splits_json(const std::vector<SplitScore>& scored, const SplitChoice& s, int loops,
                                  int64_t tokens, double plain_ppl) {
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < scored.size(); ++i) {
    nlohmann::json r = split_json(scored[i].split);
    r["rank"] = i + 1;
    r["ppl"] = scored[i].ppl;
    r["score"] = scored[i].score;
    rows.push_back(r);
  }
  const size_t rank = rank_of(scored, s);
  return {{"loops", loops},
          {"gate", "none"},
          {"tokens", tokens},
          {"plain_ppl", plain_ppl},
          {"suggested", split_json(s)},
          {"suggested_rank", rank},
          {"candidates", scored.size()},
          {"suggested_quantile", scored.empty() ? 0.0 : double(rank) / double(scored.size())},
          {"splits", rows}};
}

/// Held-out perplexity of every split against the advisor's score, the suggestion marked.
inline std::string splits_svg(const std::vector<SplitScore>& scored, const SplitChoice& s, int loops,
                              const std::string& model) {
  Series all{"every split", {}, {}}, sug{"suggested", {}, {}};
  all.line = false;
  sug.line = false;
  for (const SplitScore& r : scored) {
    const bool is = r.split.encoder == s.encoder && r.split.decoder == s.decoder;
    (is ? sug : all).x.push_back(r.score);
    (is ? sug : all).y.push_back(r.ppl);
  }
  PlotSpec spec;
  spec.title = "Untrained recast of " + model + ", B = " + std::to_string(loops) + ", no gate";
  spec.note = "every contiguous split with a reasoning block of at least the minimum; the suggestion " +
              s.split().text() + " ranks " + std::to_string(rank_of(scored, s)) + " of " +
              std::to_string(scored.size());
  spec.x_label = "advisor score: cos(state entering the block, state leaving it)";
  spec.y_label = "held-out perplexity (log)";
  spec.log_y = true;
  spec.width = 820;
  spec.height = 480;
  return svg_line_chart({all, sug}, spec);
}

}  // namespace loopus::analysis
