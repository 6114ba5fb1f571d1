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
/// Optional: borrow_host(p, n) -> Span<B> over caller host memory, which only
/// backends whose memory is host memory provide; Transformer::head_to_host
/// then writes logits in place instead of staging and downloading them.
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

}  // namespace loopus
