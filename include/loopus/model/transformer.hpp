// Transformer<Backend>: the building blocks every model path composes: embed, one layer, head.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "loopus/core/backend.hpp"
#include "loopus/core/error.hpp"
#include "loopus/core/kv_cache.hpp"
#include "loopus/core/memory.hpp"
#include "loopus/core/tensor.hpp"
#include "loopus/model/language_model.hpp"
#include "loopus/model/weights.hpp"
#include "loopus/ops/concept.hpp"

namespace loopus {

/// Stateless-over-tokens compute for a decoder-only transformer: the caller
/// owns the residual stream and the caches, this object owns only scratch.
/// Each call handles T <= max_tokens() tokens of one sequence.
/// @tparam Backend a backend tag with an Ops<Backend> specialisation (Reference, Cpu).
template <class Backend>
class Transformer {
  static_assert(OpsBackend<Backend>,
                "Backend needs an Ops<Backend> with every operation of ops/concept.hpp (include its ops header)");

 public:
  using Kernels = Ops<Backend>;

  explicit Transformer(std::shared_ptr<const ModelWeights> w, int64_t max_tokens = 512)
      : w_(std::move(w)), max_t_(max_tokens) {
    const HParams& hp = w_->hp;
    const int64_t widest = std::max<int64_t>({hp.n_embd, hp.q_dim(), hp.n_ff});
    if (max_t_ < 1)
      throw UsageError("ContextParams::n_ctx and n_batch must be >= 1 (forward chunk of " + std::to_string(max_t_) +
                       " tokens)");
    check_memory(4 * double(max_t_) * double(hp.n_embd + 2 * int64_t(hp.q_dim()) + 2 * int64_t(hp.n_ff) + widest),
                 "a forward pass of up to " + std::to_string(max_t_) + " tokens (ContextParams::n_batch)");
    xn_.reshape({max_t_, hp.n_embd});
    q_.reshape({max_t_, hp.q_dim()});
    att_.reshape({max_t_, hp.q_dim()});
    g_.reshape({max_t_, hp.n_ff});
    u_.reshape({max_t_, hp.n_ff});
    tmp_.reshape({max_t_, widest});
  }

  /// Lets the backend size its per-thread scratch for a context of n_ctx
  /// tokens up front (backends without the hook need nothing).
  void reserve_context(int64_t n_ctx) {
    if constexpr (requires { Kernels::reserve_context(n_ctx, 1, 1); })
      Kernels::reserve_context(n_ctx, w_->hp.n_head, w_->hp.head_dim);
  }

  const ModelWeights& weights() const { return *w_; }
  const HParams& hp() const { return w_->hp; }
  int64_t max_tokens() const { return max_t_; }

  /// x[T, d] = token_embd[ids] (ids on the host)
  void embed(const int32_t* ids, int64_t T, Span<Backend> x) const { Kernels::embed(w_->tok_embd, ids, T, x); }

  /// One pre-norm block in place on x[T, d]; the T tokens sit at positions
  /// pos0.. and write their keys/values into rows pos0.. of kv.
  void layer(int l, Span<Backend> x, int64_t T, int64_t pos0, LayerKv<Backend> kv) {
    const TokenRun run{T, pos0, pos0, kv.begin, 0};
    layer(l, x, std::span<const TokenRun>(&run, 1), kv);
  }

  /// One pre-norm block in place on x[T, d], T the runs' total length: the
  /// rows of x are the runs' tokens one run after the other (TokenRun). The
  /// projections run once for all T rows; RoPE, the cache writes and attention
  /// run run by run, in order, so a run sees the cache rows earlier runs wrote.
  void layer(int l, Span<Backend> x, std::span<const TokenRun> runs, LayerKv<Backend> kv) {
    const HParams& hp = w_->hp;
    int64_t T = 0;
    for (const TokenRun& r : runs) {
      T += r.n;
      if (hp.sliding_window > 0 && r.pos + r.n > hp.sliding_window) [[unlikely]]
        throw LimitError(w_->path + ": position " + std::to_string(r.pos + r.n - 1) +
                         " is outside the sliding window of " + std::to_string(hp.sliding_window) +
                         " tokens (sliding-window attention is not implemented; keep "
                         "sequences within the window)");
    }
    LOOPUS_ASSERT(T <= max_t_);
    const LayerWeights& L = w_->layers[size_t(l)];
    const int64_t d = hp.n_embd, kvd = hp.kv_dim(), qd = hp.q_dim();
    x = x.sub(0, T * d);
    const Span<Backend> xn = xn_.rows(0, T), q = q_.rows(0, T), att = att_.rows(0, T), g = g_.rows(0, T),
                        u = u_.rows(0, T), o = tmp_.span().sub(0, T * d);
    // One run writes its keys/values straight into the cache; several go through scratch rows
    // and are copied in run by run (runs may share cache rows).
    const bool direct = runs.size() == 1;
    if (!direct && kt_.numel() < max_t_ * kvd) {
      kt_.reshape({max_t_, kvd});
      vt_.reshape({max_t_, kvd});
    }
    const Span<Backend> kr = direct ? kv.k.rows(runs[0].row, T, kvd) : kt_.rows(0, T);  // [T, n_kv, hd]
    const Span<Backend> vr = direct ? kv.v.rows(runs[0].row, T, kvd) : vt_.rows(0, T);

    Kernels::rmsnorm(x, L.attn_norm, T, d, hp.rms_eps, xn);
    matmuls(xn, T,
            std::array{SharedProduct<Backend>{&L.wq, q}, SharedProduct<Backend>{&L.wk, kr},
                       SharedProduct<Backend>{&L.wv, vr}});
    if (hp.qk_norm) {  // Qwen3: RMSNorm over each head, before RoPE
      Kernels::rmsnorm(q, L.q_norm, T * hp.n_head, hp.head_dim, hp.rms_eps, q);
      Kernels::rmsnorm(kr, L.k_norm, T * hp.n_head_kv, hp.head_dim, hp.rms_eps, kr);
    }
    int64_t t0 = 0;
    for (const TokenRun& r : runs) {
      const Span<Backend> qr = q.sub(t0 * qd, r.n * qd), kn = kr.sub(t0 * kvd, r.n * kvd),
                          vn = vr.sub(t0 * kvd, r.n * kvd);
      // Phi-3 longrope: short or long factors by the length this run reaches, as transformers picks them.
      const float* rf = hp.rope_scaling.factors(r.pos + r.n);
      const float ms = hp.rope_scaling.mscale();
      Kernels::rope(qr, r.n, hp.n_head, hp.head_dim, hp.n_rot, r.pos, hp.rope_theta, hp.rope_style, rf, ms);
      Kernels::rope(kn, r.n, hp.n_head_kv, hp.head_dim, hp.n_rot, r.pos, hp.rope_theta, hp.rope_style, rf, ms);
      if (!direct) {
        Kernels::copy(kv.k.rows(r.row, r.n, kvd), kn);
        Kernels::copy(kv.v.rows(r.row, r.n, kvd), vn);
      }
      Kernels::attention(qr, kv.k, kv.v, r.n, r.row, r.begin, hp.n_head, hp.n_head_kv, hp.head_dim,
                         att.sub(t0 * qd, r.n * qd));
      t0 += r.n;
    }
    Kernels::matmul(L.wo, att, T, o);
    Kernels::add(x, o);

    Kernels::rmsnorm(x, L.ffn_norm, T, d, hp.rms_eps, xn);
    matmuls(xn, T, std::array{SharedProduct<Backend>{&L.w_gate, g}, SharedProduct<Backend>{&L.w_up, u}});
    Kernels::swiglu(g, u, g);
    Kernels::matmul(L.w_down, g, T, o);
    Kernels::add(x, o);
  }

  /// logits[T, V] = output(norm(x[T, d])). x is left untouched.
  void head(CSpan<Backend> x, int64_t T, Span<Backend> logits) {
    const HParams& hp = w_->hp;
    for (int64_t t0 = 0; t0 < T; t0 += max_t_) {
      const int64_t n = std::min(max_t_, T - t0);
      Kernels::rmsnorm(x.rows(t0, n, hp.n_embd), w_->out_norm, n, hp.n_embd, hp.rms_eps, xn_.rows(0, n));
      Kernels::matmul(w_->output, xn_.rows(0, n), n, logits.rows(t0, n, hp.n_vocab));
    }
  }

  /// Host logits[T, V] = output(norm(x[T, d])). A host backend writes them
  /// in place (Ops::borrow_host); any other stages at most kHeadRows rows at a
  /// time in its own memory and downloads them.
  void head_to_host(CSpan<Backend> x, int64_t T, float* logits) {
    const HParams& hp = w_->hp;
    const int64_t V = hp.n_vocab;
    if constexpr (requires { Kernels::borrow_host(logits, T * V); }) {
      head(x, T, Kernels::borrow_host(logits, T * V));
    } else {
      const int64_t rows = std::min(T, kHeadRows);
      if (logits_.numel() < rows * V) logits_.reshape({rows, V});
      for (int64_t t0 = 0; t0 < T; t0 += rows) {
        const int64_t n = std::min(rows, T - t0);
        head(x.rows(t0, n, hp.n_embd), n, logits_.span().sub(0, n * V));
        Kernels::download(logits_.span().sub(0, n * V), logits + t0 * V);
      }
    }
  }

 private:
  /// Several products of one x: together where the backend offers matmul_shared (ops/concept.hpp),
  /// else one matmul each.
  template <size_t N>
  static void matmuls(CSpan<Backend> x, int64_t T, const std::array<SharedProduct<Backend>, N>& ps) {
    if constexpr (requires { Kernels::matmul_shared(x, T, std::span<const SharedProduct<Backend>>(ps)); }) {
      Kernels::matmul_shared(x, T, std::span<const SharedProduct<Backend>>(ps));
    } else {
      for (const SharedProduct<Backend>& p : ps) Kernels::matmul(*p.W, x, T, p.y);
    }
  }

  static constexpr int64_t kHeadRows = 64;
  std::shared_ptr<const ModelWeights> w_;
  int64_t max_t_;
  Tensor<Backend> xn_, q_, att_, g_, u_, tmp_, logits_;
  Tensor<Backend> kt_, vt_;  ///< keys / values of several runs before they go into the cache
};

}  // namespace loopus
