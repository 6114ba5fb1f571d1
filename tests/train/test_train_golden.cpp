// The LoopUS training step against the PyTorch reference (tests/golden/train/step.json, float64 torch).
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/train/loopus_step.hpp"
#include "test_util.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;
using namespace loopus::train;
using loopus::test::ptr;
using loopus::test::span_of;

namespace {

double num(const nlohmann::json& j) { return j.get<double>(); }

SynthParams synth_params(const nlohmann::json& s) {
  SynthParams p;
  p.arch = s.at("arch") == "qwen3" ? Arch::kQwen3 : Arch::kLlama;
  p.dim = s.at("dim");
  p.layers = s.at("layers");
  p.heads = s.at("heads");
  p.kv_heads = s.at("kv-heads");
  p.head_dim = s.value("head-dim", 0);
  p.ff = s.at("ff");
  p.vocab = s.at("vocab");
  p.rope_theta = s.at("rope-theta");
  p.rms_eps = s.at("rms-eps");
  p.seed = s.at("seed");
  return p;
}

/// Runs the golden's step with scalar S and compares within `tol` (relative).
template <class S>
void check_case(const std::string& name, const nlohmann::json& c, const nlohmann::json& top, double tol) {
  CAPTURE(name);
  const auto& s = c.at("synth");
  auto lw = test::synth_loopus(synth_params(s), s.at("encoder-layers"), s.at("decoder-layers"));
  TrainModel<Cpu, S> m(lw, TrainSelect{});
  // same weights as the checkpoint the reference read
  for (const auto& item : c.at("fingerprint").items()) {  // (clang 14 cannot capture structured bindings)
    const std::string tname = item.key();
    const auto& fp = item.value();
    CAPTURE(tname);
    Param<Cpu, S>* p = m.find(tname);
    REQUIRE(p);
    double sum = 0, sumsq = 0;
    for (int64_t i = 0; i < p->numel(); ++i) {
      sum += double(ptr(p->w)[i]);
      sumsq += double(ptr(p->w)[i]) * double(ptr(p->w)[i]);
    }
    REQUIRE_MESSAGE(std::abs(sumsq - num(fp.at("sumsq"))) <= 1e-9 * num(fp.at("sumsq")),
                    "synth weights changed: regenerate tests/golden/train/step.json");
    CHECK_EQ(sum, doctest::Approx(num(fp.at("sum"))).epsilon(1e-7));
  }
  const int64_t B = top.at("batch"), T = top.at("seq_len");
  StepConfig cfg;
  cfg.n_apply = top.at("n_apply");
  cfg.beta = top.at("beta");
  LoopusTrainer<Cpu, S> tr(m, B, T, cfg);
  std::vector<int32_t> ids, labels;
  for (const auto& row : c.at("ids"))
    for (int v : row) ids.push_back(v);
  for (const auto& row : c.at("labels"))
    for (int v : row) labels.push_back(v);
  tr.set_labels(labels.data());
  std::vector<S> h(size_t(B * T * m.hp().n_embd));
  tr.encode(ids.data(), span_of(h));
  for (int i = 0; i < top.at("n_pre").get<int>(); ++i) tr.apply_block(span_of(h));
  m.zero_grad();
  const StepLosses L = tr.supervised_step(span_of(h));
  const auto& g = c.at("losses");
  CHECK_EQ(L.loss, doctest::Approx(num(g.at("loss"))).epsilon(tol));
  CHECK_EQ(L.lm, doctest::Approx(num(g.at("lm"))).epsilon(tol));
  CHECK_EQ(L.prev, doctest::Approx(num(g.at("prev"))).epsilon(tol));
  CHECK_EQ(L.q, doctest::Approx(num(g.at("q"))).epsilon(tol));
  CHECK_EQ(L.q_prob, doctest::Approx(num(g.at("q_prob"))).epsilon(tol));
  CHECK_EQ(L.token_acc, doctest::Approx(num(g.at("token_acc"))).epsilon(1e-12));
  // the monotonicity term is a small difference of two losses: compare it absolutely
  CHECK_LT(std::abs(L.mono - num(g.at("mono"))), tol * num(g.at("lm")));
  double hn = 0;
  for (S v : h) hn += double(v) * double(v);
  CHECK_EQ(std::sqrt(hn), doctest::Approx(num(c.at("h_new_norm"))).epsilon(tol));
  int n = 0;
  double worst = 0;
  for (const auto& item : c.at("grads").items()) {
    const std::string pname = item.key();
    const auto& gr = item.value();
    CAPTURE(pname);
    Param<Cpu, S>* p = m.find(pname);
    REQUIRE(p);
    REQUIRE(p->trainable);
    double norm = 0;
    for (int64_t i = 0; i < p->numel(); ++i) norm += double(ptr(p->g)[i]) * double(ptr(p->g)[i]);
    norm = std::sqrt(norm);
    const double ref = gr.at("norm");
    CHECK_EQ(norm, doctest::Approx(ref).epsilon(tol));
    worst = std::max(worst, std::abs(norm - ref) / ref);
    const auto& idx = gr.at("idx");
    const auto& val = gr.at("val");
    for (size_t k = 0; k < idx.size(); ++k) {
      const double mine = double(ptr(p->g)[int64_t(num(idx[k]))]), want = num(val[k]);
      // entries relative to the tensor's gradient norm (single entries may be ~0)
      CHECK_LE(std::abs(mine - want), tol * ref);
      worst = std::max(worst, std::abs(mine - want) / ref);
    }
    ++n;
  }
  // the reference trains exactly the official set: everything outside encoder.*
  int trainable = 0;
  for (const auto& p : m.params()) trainable += p.trainable;
  CHECK_EQ(n, trainable);
  MESSAGE(name << " (" << (sizeof(S) == 8 ? "f64" : "f32") << "): worst relative gradient difference " << worst);
}

}  // namespace

TEST_CASE("[loopus] train golden: one supervised step matches the PyTorch float64 reference") {
  const auto path = test::source_dir() / "tests/golden/train/step.json";
  const auto j = nlohmann::json::parse(test::read_text(path));
  REQUIRE_EQ(j.at("cases").size(), 2u);
  for (const auto& item : j.at("cases").items()) {
    check_case<double>(item.key(), item.value(), j, 1e-9);
    check_case<float>(item.key(), item.value(), j, 1e-4);
  }
}
