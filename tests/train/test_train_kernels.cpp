// Training kernels: every backward pass against central differences in f64 (and the f32 path against f64).
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "loopus/ops/cpu/train.hpp"
#include "loopus/train/blocks.hpp"
#include "loopus/train/loopus_step.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;
using namespace loopus::train;
using namespace loopus::cpu;
using loopus::test::numeric_grad;
using loopus::test::ptr;
using loopus::test::rand_vec;
using loopus::test::rel_err;
using loopus::test::span_of;

namespace {

constexpr double kTol = 1e-6;  // f64 central differences agree to ~1e-9 here; the issue asks < 1e-3

/// Σ w ∘ y: the scalar every kernel check differentiates.
double dotv(const std::vector<double>& w, const double* y) {
  double s = 0;
  for (size_t i = 0; i < w.size(); ++i) s += w[i] * y[i];
  return s;
}

Param<Cpu, double> make_param(const std::string& name, int64_t rows, int64_t cols, uint64_t seed, double lo = -1,
                              double hi = 1) {
  Param<Cpu, double> p;
  p.name = name;
  p.rows = rows;
  p.cols = cols;
  p.trainable = true;
  p.w.reshape({rows, cols});
  p.g.reshape({rows, cols});
  p.set_value(rand_vec(size_t(rows * cols), seed, lo, hi));
  TrainOps<Cpu>::fill(p.g.span(), 0.0);
  return p;
}
std::vector<double> to_vec(const Tensor<Cpu, double>& b) { return test::host_vec(b); }

}  // namespace

TEST_CASE("[loopus] train kernels: linear backward (dx, dW) matches finite differences") {
  const int64_t N = 5, in = 7, out = 4;
  auto W = rand_vec(size_t(out * in), 1), x = rand_vec(size_t(N * in), 2), w = rand_vec(size_t(N * out), 3);
  std::vector<double> y(static_cast<size_t>(N * out)), dx(static_cast<size_t>(N * in)), dW(size_t(out * in), 0.0);
  auto loss = [&] {
    kern::linear(W.data(), out, in, x.data(), N, y.data());
    return dotv(w, y.data());
  };
  kern::linear_dx(W.data(), out, in, w.data(), N, dx.data(), false);
  kern::linear_dw(x.data(), in, w.data(), out, N, dW.data());
  CHECK_LT(rel_err(dx, numeric_grad(x.data(), x.size(), loss)), kTol);
  CHECK_LT(rel_err(dW, numeric_grad(W.data(), W.size(), loss)), kTol);
  // accumulate adds
  std::vector<double> dx2 = dx;
  kern::linear_dx(W.data(), out, in, w.data(), N, dx2.data(), true);
  for (size_t i = 0; i < dx.size(); ++i) CHECK_EQ(dx2[i], doctest::Approx(2 * dx[i]));
}

TEST_CASE("[loopus] train kernels: RMSNorm backward (dx, dgain) matches finite differences") {
  const int64_t N = 3, d = 9;
  auto x = rand_vec(size_t(N * d), 4), g = rand_vec(size_t(d), 5, 0.5, 1.5), w = rand_vec(size_t(N * d), 6);
  std::vector<double> y(x.size()), r(static_cast<size_t>(N)), dx(x.size(), 0.0), dg(g.size(), 0.0);
  auto loss = [&] {
    kern::rmsnorm(x.data(), g.data(), N, d, 1e-5, y.data(), r.data());
    return dotv(w, y.data());
  };
  loss();
  kern::rmsnorm_bwd(x.data(), g.data(), r.data(), w.data(), N, d, dx.data(), dg.data(), false);
  CHECK_LT(rel_err(dx, numeric_grad(x.data(), x.size(), loss)), kTol);
  CHECK_LT(rel_err(dg, numeric_grad(g.data(), g.size(), loss)), kTol);
}

TEST_CASE("[loopus] train kernels: RoPE backward is the inverse rotation (both pair styles)") {
  for (RopeStyle style : {RopeStyle::kInterleaved, RopeStyle::kHalf}) {
    CAPTURE(int(style));
    const int64_t B = 2, T = 5, N = B * T;
    const int H = 3, hd = 8, n_rot = 6;  // partial rotary: last 2 dims of each head pass through
    std::vector<double> cs(static_cast<size_t>(T * n_rot / 2)), sn(cs.size());
    kern::rope_tables(T, n_rot, 10000.f, cs.data(), sn.data());
    auto x = rand_vec(size_t(N * H * hd), 7), w = rand_vec(x.size(), 8);
    std::vector<double> y(x.size());
    auto loss = [&] {
      y = x;
      kern::rope(y.data(), N, T, H, hd, n_rot, style, cs.data(), sn.data(), false);
      return dotv(w, y.data());
    };
    std::vector<double> dx = w;
    kern::rope(dx.data(), N, T, H, hd, n_rot, style, cs.data(), sn.data(), true);
    CHECK_LT(rel_err(dx, numeric_grad(x.data(), x.size(), loss)), kTol);
    // rotate then inverse-rotate is the identity
    loss();
    kern::rope(y.data(), N, T, H, hd, n_rot, style, cs.data(), sn.data(), true);
    CHECK_LT(rel_err(y, x), 1e-14);
  }
}

TEST_CASE("[loopus] train kernels: causal GQA attention backward (dq, dk, dv) matches finite differences") {
  const int64_t B = 2, T = 70, N = B * T;  // two query blocks of the causal kernel
  const int H = 4, KV = 2, hd = 3;
  auto q = rand_vec(size_t(N * H * hd), 9), k = rand_vec(size_t(N * KV * hd), 10), v = rand_vec(k.size(), 11);
  auto w = rand_vec(q.size(), 12);
  std::vector<double> out(q.size()), lse(static_cast<size_t>(B * H * T)), scratch(size_t(kern::attention_scratch(T, hd, kern::max_threads())));
  auto loss = [&] {
    kern::attention_fwd(q.data(), k.data(), v.data(), B, T, H, KV, hd, out.data(), lse.data(), scratch.data());
    return dotv(w, out.data());
  };
  loss();
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  kern::attention_bwd(q.data(), k.data(), v.data(), out.data(), lse.data(), w.data(), B, T, H, KV, hd, dq.data(),
                      dk.data(), dv.data(), scratch.data());
  CHECK_LT(rel_err(dq, numeric_grad(q.data(), q.size(), loss)), kTol);
  CHECK_LT(rel_err(dk, numeric_grad(k.data(), k.size(), loss)), kTol);
  CHECK_LT(rel_err(dv, numeric_grad(v.data(), v.size(), loss)), kTol);
  // causality: the first token of each sequence attends only to itself
  for (int h = 0; h < H; ++h)
    for (int e = 0; e < hd; ++e) CHECK_EQ(out[size_t(h * hd + e)], doctest::Approx(v[size_t((h / 2) * hd + e)]));
}

TEST_CASE("[loopus] train kernels: SwiGLU, softplus, SiLU, BCE-with-logits derivatives") {
  const int64_t n = 11;
  auto g = rand_vec(size_t(n), 13, -4, 4), u = rand_vec(size_t(n), 14), w = rand_vec(size_t(n), 15);
  std::vector<double> act(static_cast<size_t>(n)), dg(static_cast<size_t>(n)), du(static_cast<size_t>(n));
  auto loss = [&] {
    kern::swiglu(g.data(), u.data(), n, act.data());
    return dotv(w, act.data());
  };
  kern::swiglu_bwd(g.data(), u.data(), w.data(), n, dg.data(), du.data());
  CHECK_LT(rel_err(dg, numeric_grad(g.data(), g.size(), loss)), kTol);
  CHECK_LT(rel_err(du, numeric_grad(u.data(), u.size(), loss)), kTol);

  for (double z : {-30.0, -3.0, 0.0, 0.7, 19.0, 25.0}) {
    CAPTURE(z);
    double zz = z;
    auto sp = [&] { return kern::softplus(zz); };
    CHECK_EQ(kern::softplus_grad(z), doctest::Approx(numeric_grad(&zz, 1, sp)[0]).epsilon(1e-7));
    auto si = [&] { return train::silu(zz); };
    CHECK_EQ(train::silu_grad(z), doctest::Approx(numeric_grad(&zz, 1, si)[0]).epsilon(1e-7));
    for (double t : {0.0, 0.3, 1.0}) {
      auto bce = [&] { return train::bce_with_logits(zz, t); };
      CHECK_EQ(train::bce_with_logits_grad(z, t), doctest::Approx(numeric_grad(&zz, 1, bce)[0]).epsilon(1e-7));
    }
  }
  CHECK_EQ(kern::softplus(25.0), 25.0);  // torch threshold 20: linear above it
  CHECK_EQ(train::bce_with_logits(0.0, 0.5), doctest::Approx(std::log(2.0)));
  CHECK_LT(train::silu(-1.2784645), -0.2784);  // the SiLU minimum, about -0.278
}

TEST_CASE("[loopus] train kernels: cross-entropy with ignore index and its gradient") {
  const int64_t N = 6, V = 7;
  auto x = rand_vec(size_t(N * V), 16, -3, 3);
  std::vector<int32_t> tgt = {3, -1, 0, 6, -1, 2};
  std::vector<double> row(static_cast<size_t>(N)), buf(x.size());
  std::vector<int32_t> am(static_cast<size_t>(N));
  auto loss = [&] {
    buf = x;
    int64_t n = 0;
    return kern::cross_entropy(buf.data(), tgt.data(), N, V, 0.0, am.data(), row.data(), &n) / double(n);
  };
  const double l = loss();
  buf = x;
  int64_t n = 0;
  kern::cross_entropy(buf.data(), tgt.data(), N, V, 0.25, nullptr, row.data(), &n);
  CHECK_EQ(n, 4);
  // torch: mean over the 4 counted rows
  double ref = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (tgt[size_t(r)] < 0) continue;
    double z = 0;
    for (int64_t j = 0; j < V; ++j) z += std::exp(x[size_t(r * V + j)]);
    ref += std::log(z) - x[size_t(r * V + tgt[size_t(r)])];
  }
  CHECK_EQ(l, doctest::Approx(ref / 4).epsilon(1e-12));
  const std::vector<double> grad = buf;
  CHECK_LT(rel_err(grad, numeric_grad(x.data(), x.size(), loss)), kTol);
  for (int64_t j = 0; j < V; ++j) CHECK_EQ(grad[size_t(V + j)], 0.0);  // ignored row: no gradient
  for (int64_t r = 0; r < N; ++r) {
    int best = 0;
    for (int j = 1; j < V; ++j)
      if (x[size_t(r * V + j)] > x[size_t(r * V + best)]) best = j;
    CHECK_EQ(am[size_t(r)], best);
  }
}

TEST_CASE("[loopus] train kernels: selective gate backward (inputs, A_log, delta_proj w+b, dt_input_proj)") {
  Dims D;
  D.B = 2;
  D.T = 3;
  D.N = 6;
  D.d = 8;
  const int64_t r = 2;
  // biases spread so that some z cross the softplus threshold region and some not
  auto A_log = make_param("A_log", 1, D.d, 17, -1, 1.5);
  auto dw = make_param("delta_w", D.d, r, 18, -1, 1);
  auto db = make_param("delta_b", 1, D.d, 19, -3, 2);
  auto iw = make_param("in_w", r, D.d, 20, -1, 1);
  GateP<Cpu, double> G{&A_log, &dw, &db, &iw, r};
  auto p = rand_vec(size_t(D.N * D.d), 21), h = rand_vec(p.size(), 22), w = rand_vec(p.size(), 23);
  GateTape<Cpu, double> tape;
  tape.allocate(D, r);
  Workspace<Cpu, double> ws;
  D.T = 3;
  D.n_rot = 2;
  D.H = D.KV = 1;
  D.hd = 2;
  D.qd = D.kvd = 2;
  D.ff = 2;
  ws.allocate(D, r);
  std::vector<double> out(p.size());
  auto loss = [&] {
    gate_fwd(G, D, span_of(p), span_of(h), span_of(out), tape);
    return dotv(w, out.data());
  };
  loss();
  for (auto* q : {&A_log, &dw, &db, &iw}) TrainOps<Cpu>::fill(q->g.span(), 0.0);
  std::vector<double> dp(p.size()), dh(p.size());
  gate_bwd(G, D, ws, tape, span_of(w), span_of(dp), span_of(dh));
  CHECK_LT(rel_err(dp, numeric_grad(p.data(), p.size(), loss)), kTol);
  CHECK_LT(rel_err(dh, numeric_grad(h.data(), h.size(), loss)), kTol);
  for (auto* q : {&A_log, &dw, &db, &iw}) {
    CAPTURE(q->name);
    CHECK_LT(rel_err(to_vec(q->g), numeric_grad(ptr(q->w), size_t(q->numel()), loss)), kTol);
  }
  // a in (0, 1): the output lies between p and h
  loss();
  for (size_t i = 0; i < out.size(); ++i) {
    CHECK_LE(out[i], std::max(p[i], h[i]) + 1e-12);
    CHECK_GE(out[i], std::min(p[i], h[i]) - 1e-12);
  }
}

TEST_CASE("[loopus] train kernels: confidence head (LayerNorm + Linear) and BCE backward") {
  Dims D;
  D.B = 3;
  D.d = 10;
  D.N = 3;
  auto lw = make_param("ln_w", 1, D.d, 24, 0.5, 1.5), lb = make_param("ln_b", 1, D.d, 25);
  auto w = make_param("w", 1, D.d, 26), b = make_param("b", 1, 1, 27);
  QHeadP<Cpu, double> Q{&lw, &lb, &w, &b, 1e-5};
  auto x = rand_vec(size_t(D.B * D.d), 28, -2, 2);
  const std::vector<double> target = {0.25, 0.9, 0.0};
  QTape<Cpu, double> tape;
  tape.allocate(D);
  Workspace<Cpu, double> ws;
  D.T = 1;
  D.n_rot = 2;
  D.H = D.KV = 1;
  D.hd = 2;
  D.qd = D.kvd = 2;
  D.ff = 2;
  ws.allocate(D, 1);
  auto loss = [&] {
    qhead_fwd(Q, D, span_of(x), tape);
    double l = 0;
    for (int64_t i = 0; i < D.B; ++i) l += train::bce_with_logits(ptr(tape.logit)[i], target[size_t(i)]);
    return l / double(D.B);
  };
  loss();
  std::vector<double> dlogit(static_cast<size_t>(D.B)), dx(x.size());
  for (int64_t i = 0; i < D.B; ++i)
    dlogit[size_t(i)] = train::bce_with_logits_grad(ptr(tape.logit)[i], target[size_t(i)]) / double(D.B);
  for (auto* q : {&lw, &lb, &w, &b}) TrainOps<Cpu>::fill(q->g.span(), 0.0);
  qhead_bwd(Q, D, ws, tape, span_of(dlogit), span_of(dx));
  CHECK_LT(rel_err(dx, numeric_grad(x.data(), x.size(), loss)), kTol);
  for (auto* q : {&lw, &lb, &w, &b}) {
    CAPTURE(q->name);
    CHECK_LT(rel_err(to_vec(q->g), numeric_grad(ptr(q->w), size_t(q->numel()), loss)), kTol);
  }
}

TEST_CASE("[loopus] train kernels: a full transformer layer backward (Llama interleaved, Qwen3 q/k norm)") {
  for (Arch arch : {Arch::kLlama, Arch::kQwen3}) {
    CAPTURE(int(arch));
    SynthParams sp = test::tiny_params(31, arch, 16);  // Qwen3: head_dim independent of dim / heads
    sp.layers = 1;
    sp.ff = 10;  // smaller than the shared shape: fewer finite differences
    auto w = synth_weights(sp);
    if (arch == Arch::kLlama) w->hp.rope_style = RopeStyle::kInterleaved;
    auto lw = recast(w, LayerSplit::all_reasoning(1));
    TrainModel<Cpu, double> m(lw, TrainSelect{});
    const LayerP<Cpu, double>& P = m.layer(0);
    const Dims D = Dims::of(m.hp(), 2, 4);
    Workspace<Cpu, double> ws;
    ws.allocate(D, 1);
    LayerTape<Cpu, double> tape;
    tape.allocate(D);
    auto x = rand_vec(size_t(D.N * D.d), 32), wv = rand_vec(x.size(), 33);
    std::vector<double> y(x.size());
    auto loss = [&] {
      y = x;
      layer_fwd(P, D, ws, span_of(y), tape);
      return dotv(wv, y.data());
    };
    loss();
    m.zero_grad();
    std::vector<double> dx = wv;
    layer_bwd(P, D, ws, tape, span_of(dx));
    CHECK_LT(rel_err(dx, numeric_grad(x.data(), x.size(), loss)), kTol);
    int checked = 0;
    for (auto& p : m.params()) {
      if (!p.trainable || p.name.find("layers.0.") == std::string::npos) continue;
      CAPTURE(p.name);
      CHECK_LT(rel_err(to_vec(p.g), numeric_grad(ptr(p.w), size_t(p.numel()), loss)), kTol);
      ++checked;
    }
    CHECK_EQ(checked, arch == Arch::kQwen3 ? 11 : 9);
  }
}

TEST_CASE("[loopus] train kernels: the f32 layer path agrees with f64") {
  SynthParams sp;
  sp.dim = 32;
  sp.layers = 1;
  sp.heads = 4;
  sp.kv_heads = 2;
  sp.ff = 48;
  sp.vocab = 16;
  sp.seed = 34;
  auto lw = recast(synth_weights(sp), LayerSplit::all_reasoning(1));
  TrainModel<Cpu, double> md(lw, TrainSelect{});
  TrainModel<Cpu, float> mf(lw, TrainSelect{});
  const Dims D = Dims::of(md.hp(), 2, 20);
  Workspace<Cpu, double> wsd;
  Workspace<Cpu, float> wsf;
  wsd.allocate(D, 1);
  wsf.allocate(D, 1);
  LayerTape<Cpu, double> td;
  LayerTape<Cpu, float> tf;
  td.allocate(D);
  tf.allocate(D);
  auto x = rand_vec(size_t(D.N * D.d), 35), wv = rand_vec(x.size(), 36);
  std::vector<float> xf(x.begin(), x.end()), wf(wv.begin(), wv.end());
  layer_fwd(md.layer(0), D, wsd, span_of(x), td);
  layer_fwd(mf.layer(0), D, wsf, span_of(xf), tf);
  CHECK_LT(rel_err(x, std::vector<double>(xf.begin(), xf.end())), 1e-5);
  md.zero_grad();
  mf.zero_grad();
  std::vector<double> dx = wv;
  layer_bwd(md.layer(0), D, wsd, td, span_of(dx));
  layer_bwd(mf.layer(0), D, wsf, tf, span_of(wf));
  CHECK_LT(rel_err(dx, std::vector<double>(wf.begin(), wf.end())), 1e-4);
  for (size_t i = 0; i < md.params().size(); ++i) {
    const auto& pd = md.params()[i];
    const auto& pf = mf.params()[i];
    if (!pd.trainable || pd.name.find("layers.0.") == std::string::npos) continue;
    CAPTURE(pd.name);
    CHECK_LT(rel_err(to_vec(pd.g), test::host_vec(pf.g)), 1e-4);
  }
}
