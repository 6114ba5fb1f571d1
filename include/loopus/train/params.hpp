// TrainModel: master copies of a looped model's tensors, their gradients, and the way back to LoopedWeights.
// SPDX-License-Identifier: MIT
#pragma once
#include <cmath>
#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/core/quant.hpp"
#include "loopus/core/random.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/io/names.hpp"
#include "loopus/model/looped_weights.hpp"
#include "loopus/ops/concept.hpp"

namespace loopus::train {

/// Which parts of a looped model receive gradients. The default is the
/// official one (method spec section 5): reasoning layers, gate, q head,
/// decoder layers, final norm and lm_head; the encoder and the embeddings stay frozen.
struct TrainSelect {
  bool reasoning = true, gate = true, q_head = true, decoder = true, norm = true, lm_head = true;

  /// Comma list of reasoning, gate, q_head, decoder, norm, lm_head, or "all" (= the default).
  static TrainSelect parse(const std::string& list) {
    TrainSelect s{false, false, false, false, false, false};
    std::string item;
    auto take = [&](const std::string& raw) {
      std::string t;
      for (char c : raw)
        if (c != ' ') t += c;
      if (t.empty()) return;
      if (t == "all") s = TrainSelect{};
      else if (t == "reasoning") s.reasoning = true;
      else if (t == "gate") s.gate = true;
      else if (t == "q_head" || t == "q-head") s.q_head = true;
      else if (t == "decoder") s.decoder = true;
      else if (t == "norm") s.norm = true;
      else if (t == "lm_head" || t == "lm-head") s.lm_head = true;
      else if (t == "encoder" || t == "embeddings")
        throw UsageError("TrainSelect '" + list + "': the " + t +
                         " stays frozen (the method runs it without gradients)");
      else
        throw UsageError("TrainSelect '" + list + "': unknown part '" + t +
                         "' (expected reasoning, gate, q_head, decoder, norm, lm_head or all)");
    };
    size_t start = 0;
    for (size_t i = 0; i <= list.size(); ++i)
      if (i == list.size() || list[i] == ',') {
        take(list.substr(start, i - start));
        start = i + 1;
      }
    return s;
  }
  std::string text() const {
    std::string o;
    auto add = [&](bool on, const char* n) {
      if (on) o += (o.empty() ? "" : ",") + std::string(n);
    };
    add(reasoning, "reasoning");
    add(gate, "gate");
    add(q_head, "q_head");
    add(decoder, "decoder");
    add(norm, "norm");
    add(lm_head, "lm_head");
    return o.empty() ? "none" : o;
  }
};

/// One tensor of the model in Backend's memory: its value (the f32 master for
/// S = float) and, when trainable, its gradient. Matrices are [rows, cols] =
/// [out, in]. value() / grad() / set_value() move it through the host.
template <class Backend, class S = float>
struct Param {
  std::string name;  ///< LoopUS ("lds") checkpoint name, e.g. reasoning.layers.0.self_attn.q_proj.weight
  int64_t rows = 0, cols = 0;
  Tensor<Backend, S> w, g;  ///< g is empty when frozen
  bool trainable = false;
  bool decay = false;  ///< AdamW weight decay applies (Linear weights only, by default)
  double lr_mult = 1;  ///< this tensor's learning rate is the schedule's times this (a parameter group)

  int64_t numel() const { return rows * cols; }
  /// The value as host S (a download).
  std::vector<S> value() const { return host(w); }
  /// The gradient as host S (empty when frozen).
  std::vector<S> grad() const { return host(g); }
  /// Replaces the value with numel() host values.
  void set_value(const S* v) { TrainOps<Backend>::upload(v, w.span()); }
  void set_value(const std::vector<S>& v) {
    LOOPUS_ASSERT(int64_t(v.size()) == numel());
    set_value(v.data());
  }

 private:
  static std::vector<S> host(const Tensor<Backend, S>& t) {
    std::vector<S> v(static_cast<size_t>(t.numel()));
    TrainOps<Backend>::download(t.span(), v.data());
    return v;
  }
};

/// One transformer layer's parameters (q_norm/k_norm null unless Qwen3).
template <class Backend, class S = float>
struct LayerP {
  Param<Backend, S>*attn_norm = nullptr, *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
  Param<Backend, S>*q_norm = nullptr, *k_norm = nullptr;
  Param<Backend, S>*ffn_norm = nullptr, *w_gate = nullptr, *w_up = nullptr, *w_down = nullptr;
  bool trainable = false;
};
/// reasoning.gate: A_log [d], delta_proj.weight [d, r], .bias [d], dt_input_proj.weight [r, d].
template <class Backend, class S = float>
struct GateP {
  Param<Backend, S>*A_log = nullptr, *delta_w = nullptr, *delta_b = nullptr, *in_w = nullptr;
  int64_t r = 0;
};
/// q_head: LayerNorm (weight, bias [d], eps 1e-5) then Linear(d, 1) (weight [1, d], bias [1]).
template <class Backend, class S = float>
struct QHeadP {
  Param<Backend, S>*ln_w = nullptr, *ln_b = nullptr, *w = nullptr, *b = nullptr;
  double eps = 1e-5;
};

/// A looped model held as S tensors in Backend's memory for training. Every
/// layer (the frozen encoder too) is copied, widened from its stored dtype; the
/// token embedding stays in the source model (frozen, read by TrainOps::embed).
/// A tied source head becomes its own trainable copy of the embedding, as the
/// official format stores decoder.lm_head.weight separately.
template <class Backend, class S = float>
class TrainModel {
  static_assert(TrainOpsFor<Backend, S>,
                "Backend needs a TrainOps<Backend> with every training operation of ops/concept.hpp (include its "
                "ops/<backend>/train.hpp)");

 public:
  using Kernels = TrainOps<Backend>;

  /// init_seed seeds a fresh gate (official init) and q head (PyTorch default
  /// init) when the source has none.
  TrainModel(std::shared_ptr<const LoopedWeights> src, TrainSelect sel, uint64_t init_seed = 0)
      : src_(std::move(src)), sel_(sel) {
    const ModelWeights& w = *src_->base;
    hp_ = w.hp;
    const LayerSplit& s = src_->split;
    if (s.n_layer() != hp_.n_layer || s.reasoning.empty())
      throw UsageError("TrainModel: layer split " + s.text() + " does not cover the model's " +
                       std::to_string(hp_.n_layer) + " layers");
    const NameScheme names = loopus::detail::lds_names(s);
    layers_.resize(size_t(hp_.n_layer));
    for (int l = 0; l < hp_.n_layer; ++l) {
      const bool enc = std::find(s.encoder.begin(), s.encoder.end(), l) != s.encoder.end();
      const bool dec = std::find(s.decoder.begin(), s.decoder.end(), l) != s.decoder.end();
      const bool train = enc ? false : dec ? sel.decoder : sel.reasoning;
      const LayerWeights& L = w.layers[size_t(l)];
      const std::string p = names.layer_prefix(l);
      LayerP<Backend, S>& P = layers_[size_t(l)];
      P.trainable = train;
      P.attn_norm = &add(p + names.attn_norm, L.attn_norm, train, false);
      P.wq = &add(p + names.wq, L.wq, train, true);
      P.wk = &add(p + names.wk, L.wk, train, true);
      P.wv = &add(p + names.wv, L.wv, train, true);
      P.wo = &add(p + names.wo, L.wo, train, true);
      if (hp_.qk_norm) {
        P.q_norm = &add(p + names.q_norm, L.q_norm, train, false);
        P.k_norm = &add(p + names.k_norm, L.k_norm, train, false);
      }
      P.ffn_norm = &add(p + names.ffn_norm, L.ffn_norm, train, false);
      P.w_gate = &add(p + names.w_gate, L.w_gate, train, true);
      P.w_up = &add(p + names.w_up, L.w_up, train, true);
      P.w_down = &add(p + names.w_down, L.w_down, train, true);
    }
    out_norm_ = &add("decoder.norm.weight", w.out_norm, sel.norm, false);
    lm_head_ = &add("decoder.lm_head.weight", w.output, sel.lm_head, true);

    const int64_t d = hp_.n_embd;
    SplitMix64 rng(init_seed ^ 0x747261696e5eedull);
    auto uni = [&] { return rng.uniform(); };
    std::shared_ptr<const SelectiveGateWeights> gw = src_->gate;
    if (!gw) gw = std::make_shared<SelectiveGateWeights>(SelectiveGateWeights::official_init(d, uni));
    gw->check("reasoning.gate");
    gate_.r = gw->r;
    gw->for_each(
        [&](std::string_view name, const std::vector<int64_t>& shape, const std::vector<float>& v, bool decay) {
          const int64_t rows = shape.size() == 2 ? shape[0] : 1, cols = shape.back();
          add_vec(loopus::detail::kLdsGatePrefix + std::string(name), v.data(), rows, cols, sel.gate, decay);
        });
    const std::string gp = loopus::detail::kLdsGatePrefix;
    const auto& gn = SelectiveGateWeights::kTensorNames;
    gate_.A_log = find(gp + std::string(gn[0]));
    gate_.delta_w = find(gp + std::string(gn[1]));
    gate_.delta_b = find(gp + std::string(gn[2]));
    gate_.in_w = find(gp + std::string(gn[3]));
    std::shared_ptr<const ConfidenceHead> qh = src_->q_head;
    if (!qh) {  // torch defaults: LayerNorm (1, 0), Linear U(+-1/sqrt(d)) for weight and bias
      auto h = std::make_shared<ConfidenceHead>();
      h->d = d;
      h->ln_w.assign(size_t(d), 1.f);
      h->ln_b.assign(size_t(d), 0.f);
      const double bound = 1.0 / std::sqrt(double(d));
      for (int64_t i = 0; i < d; ++i) h->w.push_back(float((2 * uni() - 1) * bound));
      h->b = float((2 * uni() - 1) * bound);
      qh = h;
    }
    qh->check("q_head");
    q_.eps = qh->eps;
    q_.ln_w = &add_vec("q_head.0.weight", qh->ln_w.data(), 1, d, sel.q_head, false);
    q_.ln_b = &add_vec("q_head.0.bias", qh->ln_b.data(), 1, d, sel.q_head, false);
    q_.w = &add_vec("q_head.1.weight", qh->w.data(), 1, d, sel.q_head, true);
    q_.b = &add_vec("q_head.1.bias", &qh->b, 1, 1, sel.q_head, false);
    hp_.tied_output = false;
  }
  TrainModel(const TrainModel&) = delete;
  TrainModel& operator=(const TrainModel&) = delete;

  const HParams& hp() const { return hp_; }
  const LayerSplit& split() const { return src_->split; }
  const TrainSelect& select() const { return sel_; }
  const LoopedWeights& source() const { return *src_; }
  std::deque<Param<Backend, S>>& params() { return params_; }
  const std::deque<Param<Backend, S>>& params() const { return params_; }
  const LayerP<Backend, S>& layer(int l) const { return layers_[size_t(l)]; }
  const GateP<Backend, S>& gate() const { return gate_; }
  const QHeadP<Backend, S>& q_head() const { return q_; }
  Param<Backend, S>& out_norm() const { return *out_norm_; }
  Param<Backend, S>& lm_head() const { return *lm_head_; }
  Param<Backend, S>* find(const std::string& name) {
    for (auto& p : params_)
      if (p.name == name) return &p;
    return nullptr;
  }
  const Param<Backend, S>* find(const std::string& name) const {
    for (const auto& p : params_)
      if (p.name == name) return &p;
    return nullptr;
  }

  /// Scales the learning rate of the gate's four tensors (a parameter group).
  void set_gate_lr_mult(double m) {
    for (Param<Backend, S>* p : {gate_.A_log, gate_.delta_w, gate_.delta_b, gate_.in_w}) p->lr_mult = m;
  }

  /// Number of trainable scalars.
  int64_t n_trainable() const {
    int64_t n = 0;
    for (const auto& p : params_)
      if (p.trainable) n += p.numel();
    return n;
  }
  void zero_grad() {
    for (auto& p : params_)
      if (p.trainable) Kernels::fill(p.g.span(), S(0));
  }

  /// out[N, d] = the frozen token embedding rows of ids (host ids, checked).
  void embed(const int32_t* ids, int64_t N, Span<Backend, S> out) const {
    const Weight& E = src_->base->tok_embd;
    for (int64_t t = 0; t < N; ++t)
      if (ids[t] < 0 || ids[t] >= E.rows)
        throw UsageError("token id " + std::to_string(ids[t]) + " outside the vocabulary (0.." +
                         std::to_string(E.rows - 1) + ")");
    Kernels::embed(E, ids, N, out);
  }
  /// The model as LoopedWeights for every inference path (LoopedModel,
  /// save_lds, save_looped_gguf). With S = float, a backend whose memory is
  /// host memory (TrainOps::data) and copy = false, the layer, norm and head
  /// Weights are f32 views of the master tensors: they see later updates and
  /// are valid while this TrainModel lives. The gate and q head are copies
  /// taken now (their weight types own their storage). Otherwise (copy = true,
  /// S = double, a device backend) the model owns f32 copies of everything.
  std::shared_ptr<LoopedWeights> export_looped(bool copy = false) const {
    struct Holder {
      std::shared_ptr<const ModelWeights> base;
      ModelWeights w;
    };
    auto holder = std::make_shared<Holder>();
    holder->base = src_->base;
    ModelWeights& w = holder->w;
    w.hp = hp_;
    w.path = src_->base->path;
    w.tok_embd = src_->base->tok_embd;
    auto view = [&](const Param<Backend, S>* p) -> Weight {
      if (!p) return {};
      if constexpr (std::is_same_v<S, float> && requires { Kernels::data(p->w.span()); })
        if (!copy) return Weight{Kernels::data(p->w.span()), DType::kF32, p->rows, p->cols};
      AlignedBuffer b(size_t(p->numel()) * sizeof(float));
      const std::vector<S> v = p->value();
      for (int64_t i = 0; i < p->numel(); ++i) b.as<float>()[i] = float(v[size_t(i)]);
      w.owned.push_back(std::move(b));
      return Weight{w.owned.back().data(), DType::kF32, p->rows, p->cols};
    };
    w.layers.resize(layers_.size());
    for (size_t l = 0; l < layers_.size(); ++l) {
      const LayerP<Backend, S>& P = layers_[l];
      LayerWeights& L = w.layers[l];
      L.attn_norm = view(P.attn_norm);
      L.wq = view(P.wq);
      L.wk = view(P.wk);
      L.wv = view(P.wv);
      L.wo = view(P.wo);
      L.q_norm = view(P.q_norm);
      L.k_norm = view(P.k_norm);
      L.ffn_norm = view(P.ffn_norm);
      L.w_gate = view(P.w_gate);
      L.w_up = view(P.w_up);
      L.w_down = view(P.w_down);
    }
    w.out_norm = view(out_norm_);
    w.output = view(lm_head_);
    auto out = std::make_shared<LoopedWeights>();
    out->base = std::shared_ptr<const ModelWeights>(holder, &holder->w);
    out->split = src_->split;
    out->defaults = src_->defaults;
    auto vec = [](const Param<Backend, S>* p) {
      const std::vector<S> h = p->value();
      return std::vector<float>(h.begin(), h.end());
    };
    auto g = std::make_shared<SelectiveGateWeights>();
    g->d = hp_.n_embd;
    g->r = gate_.r;
    g->for_each([&](std::string_view name, const std::vector<int64_t>&, std::vector<float>& v, bool) {
      v = vec(find(loopus::detail::kLdsGatePrefix + std::string(name)));
    });
    out->gate = g;
    auto q = std::make_shared<ConfidenceHead>();
    q->d = hp_.n_embd;
    q->eps = float(q_.eps);
    q->ln_w = vec(q_.ln_w);
    q->ln_b = vec(q_.ln_b);
    q->w = vec(q_.w);
    q->b = float(q_.b->value()[0]);
    out->q_head = q;
    return out;
  }

 private:
  Param<Backend, S>& add(const std::string& name, const Weight& src, bool train, bool decay) {
    if (src.empty()) throw FormatError("TrainModel: tensor '" + name + "' is missing from the source model");
    if (src.dtype != DType::kF32 && src.dtype != DType::kF16 && src.dtype != DType::kBF16 && !src.quantized())
      throw FormatError("TrainModel: tensor '" + name + "' has dtype " + std::string(dtype_name(src.dtype)) +
                        " (expected f32, f16, bf16 or a quantized type)");
    Param<Backend, S>& p = new_param(name, src.rows, src.cols, train, decay);
    std::vector<S> v(static_cast<size_t>(p.numel()));
    std::vector<float> row(static_cast<size_t>(src.cols));
    for (int64_t r = 0; r < src.rows; ++r) {
      dequantize_rows(src, r, 1, row.data());  // trained in f32 (f64 for gradient checks) whatever the storage
      for (int64_t c = 0; c < src.cols; ++c) v[size_t(r * src.cols + c)] = S(row[size_t(c)]);
    }
    p.set_value(v);
    return p;
  }
  Param<Backend, S>& add_vec(const std::string& name, const float* v, int64_t rows, int64_t cols, bool train,
                             bool decay) {
    Param<Backend, S>& p = new_param(name, rows, cols, train, decay);
    const std::vector<S> h(v, v + rows * cols);
    p.set_value(h);
    return p;
  }
  Param<Backend, S>& new_param(const std::string& name, int64_t rows, int64_t cols, bool train, bool decay) {
    Param<Backend, S>& p = params_.emplace_back();
    p.name = name;
    p.rows = rows;
    p.cols = cols;
    p.trainable = train;
    p.decay = decay;
    p.w.reshape({rows, cols});
    Kernels::fill(p.w.span(), S(0));
    if (train) {
      p.g.reshape({rows, cols});
      Kernels::fill(p.g.span(), S(0));
    }
    return p;
  }

  std::shared_ptr<const LoopedWeights> src_;
  TrainSelect sel_;
  HParams hp_;
  std::deque<Param<Backend, S>> params_;
  std::vector<LayerP<Backend, S>> layers_;
  Param<Backend, S>*out_norm_ = nullptr, *lm_head_ = nullptr;
  GateP<Backend, S> gate_;
  QHeadP<Backend, S> q_;
};

}  // namespace loopus::train
