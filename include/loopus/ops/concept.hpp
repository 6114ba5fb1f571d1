// OpsBackend: every operation the model, the loop policies and decoding ask of a backend's Ops<B>.
// SPDX-License-Identifier: MIT
#pragma once
#include <concepts>
#include <cstdint>

#include "loopus/core/backend.hpp"
#include "loopus/core/rope.hpp"
#include "loopus/core/tensor.hpp"

namespace loopus {

/// A backend B is usable by Transformer, CausalLM, LoopedModel and the loop
/// policies when Ops<B> has these static functions on its own storage
/// (Span<B>, CSpan<B>). Weights are `Weight` views; ids and RoPE factors are
/// host arrays; scalars come back to the host as return values. Shapes are
/// row-major, T tokens of one sequence. Contracts (Ops<Reference> is the
/// executable definition):
///
/// | operation | contract |
/// |---|---|
/// | upload(src, dst) / download(src, dst) | host floats <-> backend memory, dst.size() / src.size() values |
/// | copy(dst, src), fill(x, v) | dst <- src (same size); x <- v |
/// | embed(E, ids, T, out) | out[T, E.cols] = rows ids[t] of E |
/// | matmul(W, x, T, y) | y[T, W.rows] = x[T, W.cols] · Wᵀ (x, y disjoint) |
/// | rmsnorm(x, g, T, d, eps, y) | y = x / rms(x) · g per row of d; y may alias x |
/// | rope(x, T, n_head, hd, n_rot, pos0, theta, style, factors, mscale) | rotary embedding in place, token t at pos0 + t |
/// | attention(q, k, v, T, pos0, kv_begin, n_head, n_kv, hd, out) | causal GQA over cache rows kv_begin .. pos0 + t |
/// | swiglu(gate, up, out) | out = silu(gate) · up; out may alias gate |
/// | add(y, x) | y += x |
/// | softmax(x), log_softmax(x) | in place over the whole span |
/// | sub(a, b, out) | out = a − b |
/// | mix(h, p, alpha) | h <- alpha·p + (1 − alpha)·h (FixedMixGate) |
/// | selective_mix(z, bias, A, p, h, T, d) -> mean a | a = exp(−softplus(z + bias)·A), h <- a·p + (1 − a)·h (SelectiveGate) |
/// | layernorm_dot(x, ln_w, ln_b, w, b, eps) -> logit | w · LayerNorm(x) + b for one row (confidence head) |
/// | distance(a, b) -> ‖a − b‖₂ | convergence halting |
/// | kl_div(logp, logq) -> KL(P‖Q) | KL halting, of two log-distributions |
/// | argmax(x) -> index | greedy choice |
///
/// Optional: borrow_host(p, n) -> Span<B> over caller host memory, which a
/// backend whose memory is host memory may provide (Cpu does); Transformer::
/// head_to_host then writes logits in place instead of staging and
/// downloading them. Reference leaves it out on purpose, so its tests run the
/// staging path a device backend takes.
///
/// Optional: matmul_shared(x, T, products) -> several matmuls of one x (a
/// layer's q, k and v; its gate and up), each product's y equal to what
/// matmul(W, x, T, y) writes, which a backend may provide to run them
/// together (Cpu: one parallel region and one rounding of x in decode).
/// Transformer falls back to one matmul each (Ops<Reference> leaves it out).
template <class B>
struct SharedProduct {
  const Weight* W = nullptr;
  Span<B> y;  ///< [T, W->rows]
};

template <class B>
concept OpsBackend = requires(const Weight& W, const int32_t* ids, const float* host_in, float* host_out, int64_t n,
                              int i, float f, RopeStyle style, Span<B> y, CSpan<B> x) {
  Ops<B>::upload(host_in, y);
  Ops<B>::download(x, host_out);
  Ops<B>::copy(y, x);
  Ops<B>::fill(y, f);
  Ops<B>::embed(W, ids, n, y);
  Ops<B>::matmul(W, x, n, y);
  Ops<B>::rmsnorm(x, W, n, n, f, y);
  Ops<B>::rope(y, n, i, i, i, n, f, style, host_in, f);
  Ops<B>::attention(x, x, x, n, n, n, i, i, i, y);
  Ops<B>::swiglu(x, x, y);
  Ops<B>::add(y, x);
  Ops<B>::softmax(y);
  Ops<B>::log_softmax(y);
  Ops<B>::sub(x, x, y);
  Ops<B>::mix(y, x, f);
  { Ops<B>::selective_mix(x, W, W, x, y, n, n) } -> std::convertible_to<float>;
  { Ops<B>::layernorm_dot(x, W, W, W, f, f) } -> std::convertible_to<float>;
  { Ops<B>::distance(x, x) } -> std::convertible_to<double>;
  { Ops<B>::kl_div(x, x) } -> std::convertible_to<double>;
  { Ops<B>::argmax(x) } -> std::convertible_to<int64_t>;
};

/// The scalars of one AdamW update of one tensor (torch semantics, decoupled
/// weight decay), computed once per step on the host: TrainOps::adamw applies
///   g' = g·scale; w *= keep (when decay); m = β1·m + (1 − β1)·g';
///   v = β2·v + (1 − β2)·g'²; w −= step_size·m / (sqrt(v)/bc2_sqrt + eps); g = 0.
struct AdamWStep {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double step_size = 0;  ///< lr / (1 − β1^t)
  double bc2_sqrt = 1;   ///< sqrt(1 − β2^t)
  bool decay = false;
  double keep = 1;   ///< 1 − lr·weight_decay
  double scale = 1;  ///< gradient-clipping factor
};

/// A backend B can run the training path (LoopusTrainer, TrainModel, AdamW)
/// in scalar S (float; double for the gradient checks) when TrainOps<B> has
/// these static functions on Span<B, S>. N counts rows (B sequences of T
/// tokens, each from position 0); ids, targets, row indices, argmax and row
/// losses are host arrays. An empty gradient span means a frozen tensor (no
/// gradient). Contracts (TrainOps<Reference>, over the scalar oracle in
/// ops/reference/train_ops.hpp, is the executable definition):
///
/// | operation | contract |
/// |---|---|
/// | threads() -> count | threads the kernels run on (reported in run summaries) |
/// | upload / download / copy / fill | as in Ops, for S |
/// | embed(E, ids, N, out) | out[N, E.cols] = rows ids[t] of E, widened to S |
/// | linear(W, out, in, x, N, y) | y[N, out] = x[N, in] · Wᵀ, W [out, in] |
/// | rmsnorm(x, g, N, d, eps, y, rstd) | y = x·rstd·g per row; rstd[N] = 1/rms (the tape) |
/// | rope_tables(T, n_rot, theta, cs, sn, factors, mscale) | cos/sin [T, n_rot/2] of positions 0..T−1 |
/// | rope(x, N, T, H, hd, n_rot, style, cs, sn, inverse) | rotate in place, row r at position r % T; inverse = backward |
/// | attention_scratch(T, hd) -> elements | scratch the two attention calls need |
/// | attention_fwd(q, k, v, B, T, H, KV, hd, out, lse, scratch) | causal GQA per sequence; lse[B, H, T] |
/// | swiglu(g, u, act) / swiglu_bwd(g, u, dact, dg, du) | act = silu(g)·u and its backward |
/// | add(y, x), sub(a, b, out), scale(x, c) | y += x; out = a − b; x *= c |
/// | gate_mix(A_log, bias, z, p, h, a, out, N, d) | z += bias; a = exp(−softplus(z)·e^A_log); out = a·p + (1 − a)·h |
/// | gate_mix_bwd(dout, p, h, z, a, A_log, dp, dh, dz, gA, N, d) | its backward; gA += dL/dA_log |
/// | layernorm(x, w, b, N, d, eps, y, xhat, rstd) / layernorm_bwd | torch LayerNorm with its tape; dw, db += |
/// | row_dot(y, w, bias, N, d, out) / row_dot_bwd(dout, w, y, N, d, dy, gw, gb) | out[n] = w·y[n] + bias; backward |
/// | gather_rows_diff(a, b, rows, n, d, out) / scatter_rows_add(x, rows, n, d, src, sign) | row gather of a − b; x[rows] += sign·src |
/// | cross_entropy(logits, target, N, V, scale, argmax, row_loss, n) -> Σ loss | logits become scale·(softmax − onehot) |
/// | linear_dx(W, out, in, dy, N, dx, acc) / linear_dw(x, in, dy, out, N, dW) | dx (+)= dy·W; dW += dyᵀ·x |
/// | rmsnorm_bwd(x, g, rstd, dy, N, d, dx, dg, acc) | dx (+)=, dg += |
/// | attention_bwd(q, k, v, out, lse, dout, B, T, H, KV, hd, dq, dk, dv, scratch) | dq, dk, dv overwritten |
/// | col_sum_add(x, N, d, acc) | acc[c] += Σ_n x[n, c] |
/// | sum_squares(x) -> Σ x² | double, for the global gradient norm |
/// | adamw(w, g, m, v, step) | one AdamWStep update; g zeroed |
///
/// Optional: data(CSpan<B, S>) -> const S*, which only backends whose memory is
/// host memory provide; TrainModel::export_looped then shares f32 master
/// weights instead of copying them.
template <class B, class S>
concept TrainOpsFor = requires(const Weight& W, const int32_t* ids, int32_t* ids_out, const int64_t* rows,
                               const S* host_in, S* host_out, const float* factors, double* dbl, int64_t* count,
                               int64_t n, int i, float f, double e, S s, bool flag, RopeStyle style,
                               const AdamWStep& step, Span<B, S> y, CSpan<B, S> x) {
  { TrainOps<B>::threads() } -> std::convertible_to<int>;
  TrainOps<B>::upload(host_in, y);
  TrainOps<B>::download(x, host_out);
  TrainOps<B>::copy(y, x);
  TrainOps<B>::fill(y, s);
  TrainOps<B>::embed(W, ids, n, y);
  TrainOps<B>::linear(x, n, n, x, n, y);
  TrainOps<B>::rmsnorm(x, x, n, n, e, y, y);
  TrainOps<B>::rope_tables(n, i, f, y, y, factors, f);
  TrainOps<B>::rope(y, n, n, i, i, i, style, x, x, flag);
  { TrainOps<B>::attention_scratch(n, i) } -> std::convertible_to<int64_t>;
  TrainOps<B>::attention_fwd(x, x, x, n, n, i, i, i, y, y, y);
  TrainOps<B>::swiglu(x, x, y);
  TrainOps<B>::add(y, x);
  TrainOps<B>::sub(x, x, y);
  TrainOps<B>::scale(y, s);
  TrainOps<B>::gate_mix(x, x, y, x, x, y, y, n, n);
  TrainOps<B>::layernorm(x, x, x, n, n, e, y, y, y);
  TrainOps<B>::row_dot(x, x, x, n, n, y);
  TrainOps<B>::gather_rows_diff(x, x, rows, n, n, y);
  TrainOps<B>::scatter_rows_add(y, rows, n, n, x, s);
  { TrainOps<B>::cross_entropy(y, ids, n, n, e, ids_out, dbl, count) } -> std::convertible_to<double>;
  TrainOps<B>::linear_dx(x, n, n, x, n, y, flag);
  TrainOps<B>::linear_dw(x, n, x, n, n, y);
  TrainOps<B>::rmsnorm_bwd(x, x, x, x, n, n, y, y, flag);
  TrainOps<B>::attention_bwd(x, x, x, x, x, x, n, n, i, i, i, y, y, y, y);
  TrainOps<B>::swiglu_bwd(x, x, x, y, y);
  TrainOps<B>::gate_mix_bwd(x, x, x, x, x, x, y, y, y, y, n, n);
  TrainOps<B>::col_sum_add(x, n, n, y);
  TrainOps<B>::layernorm_bwd(x, x, x, x, n, n, y, y, y);
  TrainOps<B>::row_dot_bwd(x, x, x, n, n, y, y, y);
  { TrainOps<B>::sum_squares(x) } -> std::convertible_to<double>;
  TrainOps<B>::adamw(y, y, y, y, step);
};

/// A backend that runs inference (OpsBackend) and trains in f32.
template <class B>
concept TrainBackend = OpsBackend<B> && TrainOpsFor<B, float>;

}  // namespace loopus
