// The LoopUS training step: whole-step gradients vs finite differences, forward vs the inference LoopedModel, export.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <malloc.h>

#include <cmath>
#include <vector>

#include "loopus/io/load_model.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/cpu/train.hpp"
#include "loopus/train/loopus_step.hpp"
#include "test_util.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;
using namespace loopus::train;
using loopus::test::numeric_grad;
using loopus::test::ptr;
using loopus::test::rel_err;
using loopus::test::span_of;

namespace {

SynthParams tiny(Arch arch, uint64_t seed) { return test::tiny_params(seed, arch); }
std::vector<int32_t> ids_for(int64_t n, int vocab, uint64_t seed) { return test::random_ids(n, vocab, seed); }

/// Up to k distinct sampled indices of a tensor of n elements (all when n <= k).
std::vector<size_t> sample_idx(int64_t n, int k, uint64_t seed) {
  std::vector<size_t> v;
  if (n <= k) {
    for (int64_t i = 0; i < n; ++i) v.push_back(size_t(i));
    return v;
  }
  SplitMix64 r(seed);
  while (int(v.size()) < k) {
    const size_t i = size_t(r.next() % uint64_t(n));
    if (std::find(v.begin(), v.end(), i) == v.end()) v.push_back(i);
  }
  return v;
}

std::shared_ptr<const ModelWeights> stories() {
  static auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  return w;
}

}  // namespace

TEST_CASE("[loopus] train step: whole supervised-step gradients match finite differences (f64)") {
  for (Arch arch : {Arch::kLlama, Arch::kQwen3})
    for (int n_apply : {1, 2}) {
      CAPTURE(int(arch));
      CAPTURE(n_apply);
      auto sp = tiny(arch, 41 + uint64_t(arch));
      auto lw = test::synth_loopus(sp, "0..0", "3..3");
      if (arch == Arch::kLlama) std::const_pointer_cast<ModelWeights>(lw->base)->hp.rope_style = RopeStyle::kInterleaved;
      TrainModel<Cpu, double> m(lw, TrainSelect{});
      StepConfig cfg;
      cfg.n_apply = n_apply;
      cfg.beta = 0.7;
      LoopusTrainer<Cpu, double> tr(m, 2, 6, cfg);
      const Dims& D = tr.dims();
      auto ids = ids_for(D.N, sp.vocab, 7);
      // labels = ids except one target that is not the next input token and one ignored position
      std::vector<int32_t> labels = ids;
      labels[3] = (ids[3] + 1) % sp.vocab;
      labels[4] = -100;
      tr.set_labels(labels.data());
      std::vector<double> h0(size_t(D.N * D.d));
      tr.encode(ids.data(), span_of(h0));
      tr.apply_block(span_of(h0));  // start from a looped state, as after an unsupervised step
      std::vector<double> h = h0;
      const double prev = tr.decode_loss(span_of(h0));
      m.zero_grad();
      const StepLosses L = tr.supervised_step(span_of(h), 1.0);
      CHECK_EQ(L.prev, doctest::Approx(prev).epsilon(1e-14));
      CHECK_EQ(L.loss, doctest::Approx(L.lm + 0.7 * train::silu(L.lm - L.prev) + L.q).epsilon(1e-14));
      CHECK_EQ(L.tokens, 2 * 5 - 1);
      // h_new is G(M(G(M(h0)))) : compare with the no-grad path
      std::vector<double> hh = h0;
      for (int a = 0; a < n_apply; ++a) tr.apply_block(span_of(hh));
      CHECK_LT(rel_err(h, hh), 1e-14);

      std::vector<std::vector<double>> grads;
      for (auto& p : m.params()) grads.push_back(test::host_vec(p.g));
      // L_LM and the token accuracy against the labels (not the ids), recomputed from the decoded logits
      {
        const double* lg = TrainOps<Cpu>::data(tr.decode(span_of(hh)));
        double nll = 0;
        int64_t n = 0, correct = 0;
        for (int64_t b = 0; b < D.B; ++b)
          for (int64_t t = 0; t + 1 < D.T; ++t) {
            const int32_t y = labels[size_t(b * D.T + t + 1)];
            if (y < 0) continue;
            const double* row = lg + (b * D.T + t) * D.V;
            double mx = row[0], z = 0;
            int64_t arg = 0;
            for (int64_t v = 1; v < D.V; ++v)
              if (row[v] > mx) mx = row[v], arg = v;
            for (int64_t v = 0; v < D.V; ++v) z += std::exp(row[v] - mx);
            nll += mx + std::log(z) - row[y];
            correct += arg == y;
            ++n;
          }
        CHECK_EQ(n, L.tokens);
        CHECK_EQ(L.lm, doctest::Approx(nll / double(n)).epsilon(1e-13));
        CHECK_EQ(L.token_acc, doctest::Approx(double(correct) / double(n)).epsilon(1e-15));
      }
      auto loss = [&] {
        std::vector<double> hx = h0;
        return tr.supervised_step(span_of(hx), 1.0, &prev).loss;
      };
      int checked = 0;
      size_t pi = 0;
      for (auto& p : m.params()) {
        const auto& g = grads[pi++];
        if (!p.trainable) {
          CHECK(p.g.numel() == 0);
          continue;
        }
        CAPTURE(p.name);
        auto idx = sample_idx(p.numel(), 5, 100 + pi);
        std::vector<double> an;
        for (size_t i : idx) an.push_back(g[i]);
        auto num = numeric_grad(ptr(p.w), size_t(p.numel()), loss, idx);
        CHECK_LT(rel_err(an, num), 1e-6);
        ++checked;
      }
      // reasoning (2 layers) + decoder layer, with q/k norms for Qwen3, + norm, lm_head, gate 4, q head 4
      CHECK_EQ(checked, (arch == Arch::kQwen3 ? 11 : 9) * 3 + 2 + 4 + 4);
      // the encoder gets no gradient
      CHECK_FALSE(m.find("encoder.layers.0.self_attn.q_proj.weight")->trainable);
    }
}

TEST_CASE("[loopus] train step: plain fine-tune (the --no-loop control) gradients match finite differences") {
  auto sp = tiny(Arch::kQwen3, 43);
  auto lw = test::synth_loopus(sp, "0..0", "3..3");
  TrainSelect sel;
  sel.gate = sel.q_head = false;
  TrainModel<Cpu, double> m(lw, sel);
  LoopusTrainer<Cpu, double> tr(m, 2, 5);
  auto ids = ids_for(tr.dims().N, sp.vocab, 8);
  m.zero_grad();
  const StepLosses L = tr.plain_step(ids.data(), nullptr);
  CHECK_GT(L.lm, 0);
  std::vector<std::vector<double>> grads;
  for (auto& p : m.params()) grads.push_back(test::host_vec(p.g));
  auto loss = [&] { return tr.plain_step(ids.data(), nullptr).loss; };
  size_t pi = 0;
  for (auto& p : m.params()) {
    const auto& g = grads[pi++];
    if (!p.trainable) continue;
    CAPTURE(p.name);
    auto idx = sample_idx(p.numel(), 5, 200 + pi);
    std::vector<double> an;
    for (size_t i : idx) an.push_back(g[i]);
    CHECK_LT(rel_err(an, numeric_grad(ptr(p.w), size_t(p.numel()), loss, idx)), 1e-6);
  }
  // the plain path with the same parameters equals the non-looped original model
  int64_t n = 0;
  const double sum = tr.eval_batch(ids.data(), nullptr, 1, false, &n);
  CHECK_EQ(sum / double(n), doctest::Approx(L.lm).epsilon(1e-12));
}

TEST_CASE("[loopus] train step: the training forward equals the inference LoopedModel (stories260K, f32)") {
  auto lw = recast(stories(), LayerSplit::from_specs("0..0", "4..4", 5));
  SplitMix64 rng(5);
  lw->gate = std::make_shared<SelectiveGateWeights>(
      SelectiveGateWeights::official_init(lw->base->hp.n_embd, [&] { return rng.uniform(); }));
  TrainModel<Cpu, float> m(lw, TrainSelect{});
  const int64_t T = 40;
  LoopusTrainer<Cpu, float> tr(m, 1, T);
  std::vector<int32_t> ids = ids_for(T, 512, 9);
  ids[0] = 1;
  auto ex = m.export_looped();
  for (int B : {1, 3}) {
    CAPTURE(B);
    // trainer: encode, B gated applications, decode
    tr.set_labels(ids.data());
    std::vector<float> h(static_cast<size_t>(T * 64));
    tr.encode(ids.data(), span_of(h));
    for (int r = 0; r < B; ++r) tr.apply_block(span_of(h));
    const float* lt = TrainOps<Cpu>::data(tr.decode(span_of(h)));
    std::vector<float> mine(lt, lt + T * 512);
    LoopParams lp;
    lp.halting.max_loops = B;
    LoopedModel<Cpu, SelectiveGate, NoCache> lm(ex, lp, ContextParams{T, T}, SelectiveGate(ex->gate));
    std::vector<float> ref(static_cast<size_t>(T * 512));
    lm.eval(ids, ref.data(), true);
    double md = 0, mx = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      md = std::max(md, double(std::abs(mine[i] - ref[i])));
      mx = std::max(mx, double(std::abs(ref[i])));
    }
    CHECK_LT(md, 2e-4 * mx);
  }
}

TEST_CASE("[loopus] train step: supervised loop indices are sorted, distinct, seeded") {
  SplitMix64 a(3), b(3);
  std::vector<int> hist(20, 0);
  for (int rep = 0; rep < 200; ++rep) {
    auto s = LoopusTrainer<Cpu, float>::sample_supervised(a, 20, 5);
    CHECK_EQ(s, LoopusTrainer<Cpu, float>::sample_supervised(b, 20, 5));
    REQUIRE_EQ(s.size(), 5u);
    for (size_t i = 1; i < s.size(); ++i) CHECK_LT(s[i - 1], s[i]);
    for (int v : s) {
      REQUIRE(v >= 0);
      REQUIRE(v < 20);
      ++hist[size_t(v)];
    }
  }
  for (int c : hist) CHECK_GT(c, 20);  // every index gets picked (expected 50 each)
  SplitMix64 c(4);
  CHECK_EQ(LoopusTrainer<Cpu, float>::sample_supervised(c, 5, 5), std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("[loopus] train step: export views see updates, save_lds round-trips the adapted model") {
  auto lw = test::synth_loopus(tiny(Arch::kLlama, 44), "0..0", "3..3");
  TrainModel<Cpu, float> m(lw, TrainSelect{});
  auto view = m.export_looped();
  Param<Cpu, float>* wq = m.find("reasoning.layers.0.self_attn.q_proj.weight");
  REQUIRE(wq);
  ptr(wq->w)[5] = 42.f;
  CHECK_EQ(view->base->layers[1].wq.f32()[5], 42.f);
  ptr(m.lm_head().w)[3] = -7.f;
  CHECK_EQ(view->base->output.f32()[3], -7.f);
  CHECK_NE(view->base->output.data, view->base->tok_embd.data);
  CHECK_FALSE(view->base->hp.tied_output);
  auto copy = m.export_looped(true);
  ptr(wq->w)[5] = 1.f;
  CHECK_EQ(copy->base->layers[1].wq.f32()[5], 42.f);
  const auto dir = test::temp_dir("train_export");
  save_lds(*view, dir.string());
  auto back = load_looped(dir.string(), "", "");
  CHECK_EQ(back->split.text(), lw->split.text());
  CHECK_EQ(back->base->layers[1].wq.at(0, 5), 1.f);
  CHECK_EQ(back->base->output.at(0, 3), -7.f);
  REQUIRE(back->gate);
  CHECK_EQ(back->gate->A_log, view->gate->A_log);
  REQUIRE(back->q_head);
  CHECK_EQ(back->q_head->w, view->q_head->w);
}

TEST_CASE("[loopus] train step: a tied base gets its own lm_head, activation memory does not grow per step") {
  SynthParams sp = tiny(Arch::kLlama, 45);
  sp.tied = true;
  auto w = synth_weights(sp);
  auto lw = recast(w, LayerSplit::from_specs("0..0", "3..3", 4));
  TrainModel<Cpu, float> m(lw, TrainSelect{});
  CHECK(m.lm_head().trainable);
  auto ex = m.export_looped();
  CHECK_NE(ex->base->output.data, ex->base->tok_embd.data);
  CHECK_EQ(ex->base->output.at(2, 3), w->tok_embd.at(2, 3));

  StepConfig cfg;
  cfg.n_steps = 6;
  cfg.n_supervision = 2;
  LoopusTrainer<Cpu, float> tr(m, 2, 16, cfg);
  auto ids = ids_for(32, sp.vocab, 10);
  const std::vector<int> sup = {1, 4};
  int micro = 0;
  tr.train_batch(ids.data(), nullptr, sup, 1.0, [&](const StepLosses&) { ++micro; });  // warm-up
  const size_t before = mallinfo2().uordblks;
  for (int rep = 0; rep < 3; ++rep)
    tr.train_batch(ids.data(), nullptr, sup, 1.0, [&](const StepLosses& L) {
      ++micro;
      CHECK(std::isfinite(L.loss));
    });
  CHECK_EQ(micro, 8);
  CHECK_LE(mallinfo2().uordblks, before);  // nothing retained per step
}

TEST_CASE("[loopus] train step: right padding changes nothing (losses, q target, every gradient, f64)") {
  // One 10-token document alone (T = 10) vs the same document padded to T = 16
  // with labels -100: causal attention keeps padding out of the valid rows, the
  // CE and token accuracy skip it, and the q head reads the last valid token.
  auto sp = tiny(Arch::kLlama, 77);
  auto lw = test::synth_loopus(sp, "0..0", "3..3");
  const auto doc = ids_for(10, sp.vocab, 12);
  auto run = [&](int64_t T, bool plain) {
    TrainModel<Cpu, double> m(lw, TrainSelect{});
    StepConfig cfg;
    cfg.n_steps = 2;
    cfg.n_supervision = 1;
    LoopusTrainer<Cpu, double> tr(m, 1, T, cfg);
    std::vector<int32_t> ids(size_t(T), 5), labels(size_t(T), -100);  // padding id 5: any id will do
    for (size_t t = 0; t < doc.size(); ++t) ids[t] = labels[t] = doc[t];
    m.zero_grad();
    StepLosses L;
    if (plain) {
      L = tr.plain_step(ids.data(), labels.data());
    } else {
      const int sup[] = {1};
      tr.train_batch(ids.data(), labels.data(), sup, 1.0, [&](const StepLosses& x) { L = x; });
    }
    std::vector<std::vector<double>> g;
    for (auto& p : m.params())
      if (p.trainable) g.push_back(test::host_vec(p.g));
    return std::make_pair(L, g);
  };
  for (bool plain : {false, true}) {
    CAPTURE(plain);
    const auto [a, ga] = run(10, plain);
    const auto [b, gb] = run(16, plain);
    CHECK_EQ(a.tokens, 9);
    CHECK_EQ(b.tokens, 9);
    CHECK_EQ(b.lm, doctest::Approx(a.lm).epsilon(1e-13));
    CHECK_EQ(b.prev, doctest::Approx(a.prev).epsilon(1e-13));
    CHECK_EQ(b.q, doctest::Approx(a.q).epsilon(1e-13));
    CHECK_EQ(b.token_acc, a.token_acc);
    REQUIRE(ga.size() == gb.size());
    for (size_t i = 0; i < ga.size(); ++i) CHECK_LT(rel_err(ga[i], gb[i]), 1e-12);
  }
  // and the q head does read the last valid token: with it at T - 1 instead, the q loss differs
  TrainModel<Cpu, double> m(lw, TrainSelect{});
  StepConfig cfg;
  cfg.n_steps = 1;
  cfg.n_supervision = 1;
  LoopusTrainer<Cpu, double> tr(m, 1, 16, cfg);
  std::vector<int32_t> ids(16, 5), lab_valid(16, -100);
  for (size_t t = 0; t < doc.size(); ++t) ids[t] = lab_valid[t] = doc[t];
  std::vector<int32_t> lab_last = lab_valid;
  lab_last[15] = 5;  // now position 15 is "valid": q reads there
  const int sup[] = {0};
  StepLosses x, y;
  tr.train_batch(ids.data(), lab_valid.data(), sup, 1.0, [&](const StepLosses& L) { x = L; });
  tr.train_batch(ids.data(), lab_last.data(), sup, 1.0, [&](const StepLosses& L) { y = L; });
  CHECK(x.q_prob != doctest::Approx(y.q_prob).epsilon(1e-9));
}

TEST_CASE("[loopus] train step: a plain batch without a counted label, or with grad_scale 0, adds no gradient") {
  auto sp = tiny(Arch::kLlama, 78);
  auto lw = test::synth_loopus(sp, "0..0", "3..3");
  const int64_t T = 8;
  const auto ids = ids_for(T, sp.vocab, 13);
  for (int mode = 0; mode < 2; ++mode) {
    CAPTURE(mode);
    TrainModel<Cpu, double> m(lw, TrainSelect{});
    StepConfig cfg;
    cfg.n_steps = 2;
    cfg.n_supervision = 1;
    LoopusTrainer<Cpu, double> tr(m, 1, T, cfg);
    std::vector<int32_t> labels(ids.begin(), ids.end());
    if (mode == 0) std::fill(labels.begin(), labels.end(), -100);  // every label ignored
    m.zero_grad();
    const StepLosses L = tr.plain_step(ids.data(), labels.data(), mode == 0 ? 1.0 : 0.0);
    CHECK_EQ(L.tokens, mode == 0 ? 0 : T - 1);
    double gmax = 0;
    for (auto& p : m.params())
      for (int64_t i = 0; i < p.g.numel(); ++i) gmax = std::max(gmax, std::abs(ptr(p.g)[i]));
    CHECK_EQ(gmax, 0.0);
  }
}
