// Layer-wise representation dynamics of a plain model and the block-split advisor built on them.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "loopus/analysis/stats.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/kv_cache.hpp"
#include "loopus/eval/perplexity.hpp"
#include "loopus/model/layer_split.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/model/transformer.hpp"
#include "loopus/model/weights.hpp"
#include "loopus/policies/gate/no_gate.hpp"

namespace loopus::analysis {

/// How hidden states change through the layers, averaged over tokens.
/// Layer l maps h_l (entering) to h_{l+1} (leaving); h_0 is the embedding.
struct LayerDynamics {
  int n_layer = 0;
  int64_t tokens = 0;              ///< tokens averaged over (each window's first token left out)
  std::vector<double> cos_in_out;  ///< [n_layer] mean cos(h_l, h_{l+1})
  std::vector<double> change;      ///< [n_layer] mean ||h_{l+1} - h_l||
  std::vector<double> change_rel;  ///< [n_layer] mean ||h_{l+1} - h_l|| / ||h_l||
  std::vector<double> norm;        ///< [n_layer + 1] mean ||h_l||
  /// [n_layer + 1][n_layer + 1] mean cos(h_a, h_b) for a < b: how far a block of
  /// layers a..b-1 turns the state (the advisor's score); symmetric, 1 on the diagonal.
  std::vector<double> cos_span;
  double span_cos(int a, int b) const { return cos_span[size_t(a) * size_t(n_layer + 1) + size_t(b)]; }
};

/// Runs the plain model over `toks` in windows of `window` tokens (each from a
/// fresh context) and measures every layer. The first token of each window is
/// left out of the averages: its state (an attention sink with outsized norms
/// in most models) says little about the others.
template <class Backend>
LayerDynamics layer_dynamics(std::shared_ptr<const ModelWeights> w, std::span<const int32_t> toks, int64_t window) {
  if (window < 2) throw UsageError("layer dynamics: the window must be at least 2 tokens");
  const HParams& hp = w->hp;
  const int L = hp.n_layer;
  const int64_t d = hp.n_embd, V = hp.n_vocab;
  for (size_t i = 0; i < toks.size(); ++i)
    if (toks[i] < 0 || toks[i] >= V)
      throw UsageError("layer dynamics: token " + std::to_string(i) + " has id " + std::to_string(toks[i]) +
                       ", outside the model's vocabulary");
  if (toks.size() < 2) throw UsageError("layer dynamics: needs at least 2 tokens of text");
  const int64_t W = std::min<int64_t>(window, int64_t(toks.size()));
  Transformer<Backend> tf(w, W);
  KvCache<Backend> kv(L, W, hp.kv_dim());
  tf.reserve_context(W);
  Tensor<Backend> x({W, d});
  std::vector<float> states(size_t(L + 1) * size_t(W * d));  // h_0..h_L of one window, host
  LayerDynamics r;
  r.n_layer = L;
  r.cos_in_out.assign(size_t(L), 0.0);
  r.change.assign(size_t(L), 0.0);
  r.change_rel.assign(size_t(L), 0.0);
  r.norm.assign(size_t(L + 1), 0.0);
  r.cos_span.assign(size_t(L + 1) * size_t(L + 1), 0.0);
  const auto st = [&](int l, int64_t t) {
    return std::span<const float>(states.data() + size_t(l) * size_t(W * d) + size_t(t * d), size_t(d));
  };
  for (size_t w0 = 0; w0 < toks.size(); w0 += size_t(W)) {
    const int64_t T = std::min<int64_t>(W, int64_t(toks.size() - w0));
    if (T < 2) break;
    const Span<Backend> h = x.rows(0, T);
    tf.embed(toks.data() + w0, T, h);
    Ops<Backend>::download(h, states.data());
    for (int l = 0; l < L; ++l) {
      tf.layer(l, h, T, 0, kv.slot(l));
      Ops<Backend>::download(h, states.data() + size_t(l + 1) * size_t(W * d));
    }
    for (int64_t t = 1; t < T; ++t) {
      for (int l = 0; l <= L; ++l) r.norm[size_t(l)] += l2_norm(st(l, t));
      for (int l = 0; l < L; ++l) {
        const double ch = l2_distance(st(l + 1, t), st(l, t)), n0 = l2_norm(st(l, t));
        r.cos_in_out[size_t(l)] += cosine(st(l, t), st(l + 1, t));
        r.change[size_t(l)] += ch;
        r.change_rel[size_t(l)] += n0 > 0 ? ch / n0 : 0.0;
      }
      for (int a = 0; a <= L; ++a)
        for (int b = a + 1; b <= L; ++b)
          r.cos_span[size_t(a) * size_t(L + 1) + size_t(b)] += cosine(st(a, t), st(b, t));
    }
    r.tokens += T - 1;
  }
  const double n = double(std::max<int64_t>(r.tokens, 1));
  for (auto* v : {&r.cos_in_out, &r.change, &r.change_rel, &r.norm, &r.cos_span})
    for (double& e : *v) e /= n;
  for (int a = 0; a <= L; ++a) {
    r.cos_span[size_t(a) * size_t(L + 1) + size_t(a)] = 1.0;
    for (int b = 0; b < a; ++b)
      r.cos_span[size_t(a) * size_t(L + 1) + size_t(b)] = r.cos_span[size_t(b) * size_t(L + 1) + size_t(a)];
  }
  return r;
}

/// A contiguous split: encoder 0..e-1, reasoning e..n-d-1, decoder n-d..n-1.
struct SplitChoice {
  int encoder = 0, decoder = 0, n_layer = 0;
  int reasoning() const { return n_layer - encoder - decoder; }
  LayerSplit split() const {
    return LayerSplit::from_specs(encoder ? "0.." + std::to_string(encoder - 1) : "none",
                                  decoder ? std::to_string(n_layer - decoder) + ".." + std::to_string(n_layer - 1)
                                          : "none",
                                  n_layer);
  }
  /// The CLI flags that select it.
  std::string flags() const {
    const LayerSplit s = split();
    return "--encoder-layers " + LayerSplit::range_text(s.encoder) + " --decoder-layers " +
           LayerSplit::range_text(s.decoder);
  }
};

/// The smallest reasoning block worth looping: a third of the layers, rounded up.
inline int min_reasoning_layers(int n_layer) { return (n_layer + 2) / 3; }

/// Every contiguous split whose reasoning block has at least min_reasoning
/// layers (encoder and decoder may be empty).
inline std::vector<SplitChoice> candidate_splits(int n_layer, int min_reasoning) {
  std::vector<SplitChoice> out;
  for (int e = 0; e < n_layer; ++e)
    for (int dd = 0; e + dd < n_layer; ++dd)
      if (n_layer - e - dd >= min_reasoning) out.push_back({e, dd, n_layer});
  return out;
}

/// The advisor (docs/analysis.md). The reasoning block is the run of layers
/// that turns the state least, from the state entering it to the state leaving
/// it: among splits with an encoder and a decoder of at least one layer and a
/// block of at least min_reasoning layers, the one with the highest token-mean
/// cos(h_e, h_{n-d}). Ties go to the longer block, then the earlier one.
inline SplitChoice suggest_split(const LayerDynamics& dyn, int min_reasoning) {
  const int L = dyn.n_layer;
  if (L < 3) throw UsageError("split advisor: a model needs at least 3 layers for an encoder, a block and a decoder");
  min_reasoning = std::clamp(min_reasoning, 1, L - 2);
  SplitChoice best{-1, -1, L};
  double best_cos = -2;
  for (const SplitChoice& c : candidate_splits(L, min_reasoning)) {
    if (c.encoder < 1 || c.decoder < 1) continue;
    const double s = dyn.span_cos(c.encoder, L - c.decoder);
    if (s > best_cos + 1e-12 || (std::abs(s - best_cos) <= 1e-12 && c.reasoning() > best.reasoning())) {
      best = c;
      best_cos = s;
    }
  }
  return best;
}

/// One split's held-out perplexity as an untrained recast (no gate) at B loops.
struct SplitScore {
  SplitChoice split;
  double ppl = NAN;
  double score = NAN;  ///< the advisor's score, cos(h_e, h_{n-d})
};

/// Held-out perplexity of every candidate split as an untrained recast (no
/// gate, per-depth cache, fixed `loops`), windows of `window` tokens; sorted
/// from best to worst. `progress(done, total)` after each split.
template <class Backend>
std::vector<SplitScore> score_splits(std::shared_ptr<const ModelWeights> w, const LayerDynamics& dyn,
                                     std::span<const int32_t> toks, int64_t window, int loops, int min_reasoning,
                                     const std::function<void(size_t, size_t)>& progress = {}) {
  const std::vector<SplitChoice> cands = candidate_splits(w->hp.n_layer, min_reasoning);
  std::vector<SplitScore> out;
  LoopParams lp;
  lp.halting.max_loops = loops;
  ContextParams cp;
  cp.n_ctx = window;
  cp.n_batch = window;
  eval::PerplexityOptions po;
  po.window = window;
  po.report_every = 0;
  for (size_t i = 0; i < cands.size(); ++i) {
    LoopedModel<Backend, NoGate, PerDepthCache> m(recast(w, cands[i].split()), lp, cp);
    const eval::PerplexityResult pr = eval::perplexity(m, toks, po);
    out.push_back({cands[i], pr.ppl(), dyn.span_cos(cands[i].encoder, w->hp.n_layer - cands[i].decoder)});
    if (progress) progress(i + 1, cands.size());
  }
  std::stable_sort(out.begin(), out.end(), [](const SplitScore& a, const SplitScore& b) { return a.ppl < b.ppl; });
  return out;
}

}  // namespace loopus::analysis
