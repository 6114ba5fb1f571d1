// The whole LoopUS training step (random deep supervision, plain control, AdamW) on every backend, against the
// Reference backend's f64 oracle: the trainer touches memory only through TrainOps<Backend>.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "loopus/ops/cpu/train.hpp"
#include "loopus/ops/reference/train.hpp"
#include "loopus/train/adapt.hpp"
#include "loopus/train/loopus_step.hpp"
#include "loopus/train/optim.hpp"
#include "test_util.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;
using namespace loopus::train;
using loopus::test::rel_err;

namespace {

/// What one run leaves behind, widened to double: the losses of every
/// supervised step and of the plain step, every gradient right after each
/// backward (before the optimizer clears it), the gradient norms AdamW saw,
/// and every parameter after the updates.
struct Run {
  std::vector<StepLosses> losses;
  std::vector<std::vector<double>> grads;  // per micro-step, all trainable tensors concatenated
  std::vector<double> grad_norms;
  std::vector<double> params;           // every trainable tensor after the last update
  std::vector<double> exported_q_head;  // the q head as export_looped() gives it (a download on any backend)
};

template <class Backend, class S>
Run run(Arch arch) {
  auto lw = test::synth_loopus(test::tiny_params(61 + uint64_t(arch), arch), "0..0", "3..3");
  if (arch == Arch::kLlama) std::const_pointer_cast<ModelWeights>(lw->base)->hp.rope_style = RopeStyle::kInterleaved;
  TrainModel<Backend, S> m(lw, TrainSelect{}, 5);
  m.set_gate_lr_mult(10);
  StepConfig cfg;
  cfg.n_steps = 4;
  cfg.n_supervision = 2;
  cfg.n_apply = 2;
  cfg.beta = 0.7;
  LoopusTrainer<Backend, S> tr(m, 2, 7, cfg);
  AdamWConfig ac;
  ac.weight_decay = 0.05;
  ac.clip = 0.5;  // the tiny model's gradients exceed it: the clip path runs
  AdamW<Backend, S> opt(m, ac);
  auto ids = test::random_ids(tr.dims().N, 32, 62);
  std::vector<int32_t> labels = ids;
  labels[4] = -100;                        // an ignored target
  labels[size_t(tr.dims().T) + 6] = -100;  // sequence 1's last position: the q head reads position 5
  Run out;
  auto grads = [&] {
    std::vector<double> g;
    for (const auto& p : m.params())
      if (p.trainable) {
        const auto v = p.grad();
        g.insert(g.end(), v.begin(), v.end());
      }
    return g;
  };
  const int sup[] = {1, 3};
  for (int batch = 0; batch < 2; ++batch)
    tr.train_batch(ids.data(), labels.data(), sup, 0.5, [&](const StepLosses& L) {
      out.losses.push_back(L);
      out.grads.push_back(grads());
      out.grad_norms.push_back(opt.step(1e-3));
    });
  out.losses.push_back(tr.plain_step(ids.data(), labels.data(), 1.0));
  out.grads.push_back(grads());
  for (const auto& p : m.params())
    if (p.trainable) {
      const auto v = p.value();
      out.params.insert(out.params.end(), v.begin(), v.end());
    }
  const auto ex = m.export_looped();
  out.exported_q_head.assign(ex->q_head->w.begin(), ex->q_head->w.end());
  out.exported_q_head.push_back(ex->q_head->b);
  return out;
}

/// Checks b against the oracle a: losses to rel_loss, each micro-step's gradient vector and the parameters to
/// rel (norm-wise relative error). Returns the worst gradient error seen.
double compare(const Run& a, const Run& b, double rel_loss, double rel) {
  REQUIRE_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) {
    CAPTURE(i);
    const StepLosses &x = a.losses[i], &y = b.losses[i];
    CHECK_EQ(y.loss, doctest::Approx(x.loss).epsilon(rel_loss));
    CHECK_EQ(y.lm, doctest::Approx(x.lm).epsilon(rel_loss));
    CHECK_EQ(y.prev, doctest::Approx(x.prev).epsilon(rel_loss));
    CHECK_EQ(y.q, doctest::Approx(x.q).epsilon(rel_loss));
    CHECK_EQ(y.q_prob, doctest::Approx(x.q_prob).epsilon(rel_loss));
    CHECK_EQ(y.token_acc, x.token_acc);
    CHECK_EQ(y.tokens, x.tokens);
  }
  double worst = 0;
  REQUIRE_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    CAPTURE(i);
    const double e = rel_err(a.grads[i], b.grads[i]);
    CHECK_LT(e, rel);
    worst = std::max(worst, e);
  }
  for (size_t i = 0; i < a.grad_norms.size(); ++i)
    CHECK_EQ(b.grad_norms[i], doctest::Approx(a.grad_norms[i]).epsilon(rel));
  CHECK_LT(rel_err(a.params, b.params), rel_loss);
  CHECK_LT(rel_err(a.exported_q_head, b.exported_q_head), rel_loss);
  return worst;
}

}  // namespace

TEST_CASE_TEMPLATE("[loopus] train backends: the LoopUS step, the plain control and AdamW equal the f64 oracle",
                   Backend, Cpu, Reference) {
  static_assert(TrainBackend<Backend>);
  for (Arch arch : {Arch::kLlama, Arch::kQwen3}) {
    CAPTURE(int(arch));
    const Run oracle = run<Reference, double>(arch);
    REQUIRE_EQ(oracle.losses.size(), 5u);  // 2 batches × 2 supervised steps + the plain step
    CHECK_GT(oracle.grad_norms[0], 0.5);   // clipping ran
    // the same maths in f64 on this backend: only summation order differs (seen: <= 1.4e-15)
    const double e64 = compare(oracle, run<Backend, double>(arch), 1e-12, 1e-12);
    // f32 on this backend: f32 rounding (seen on an AVX-512 Xeon: Cpu 2.4e-6, Reference 3.7e-7)
    const double e32 = compare(oracle, run<Backend, float>(arch), 1e-5, 2e-5);
    MESSAGE(std::string(Backend::kName) << " arch " << int(arch) << ": worst gradient error f64 " << e64 << ", f32 "
                                        << e32);
  }
}

TEST_CASE("[loopus] train backends: Cpu f32 training equals Reference f32 training") {
  for (Arch arch : {Arch::kLlama, Arch::kQwen3}) {
    CAPTURE(int(arch));
    compare(run<Reference, float>(arch), run<Cpu, float>(arch), 1e-5, 2e-5);
  }
}

TEST_CASE("[loopus] train backends: Reference adaptation resumes bit for bit (checkpoint through download / upload)") {
  // Reference has no host address (TrainOps::data): Adapter::save downloads and load uploads every tensor.
  auto lw = test::synth_loopus(test::tiny_params(63), "0..0", "3..3");
  PackedData data(test::random_ids(12 * 10, 32, 3), 10);
  AdaptConfig cfg;
  cfg.batch = 2;
  cfg.seq_len = 10;
  cfg.accum = 3;  // an update straddles the checkpoint: pending gradients must survive it
  cfg.max_steps = 4;
  cfg.lr = 3e-3;
  cfg.step.n_steps = 3;
  cfg.step.n_supervision = 2;
  cfg.step.n_apply = 2;
  cfg.seed = 4;
  const auto path = (test::temp_dir("train_backends_resume") / "state.bin").string();
  auto run = [&](int steps, const std::string& from, const std::string& to) {
    TrainModel<Reference> m(lw, TrainSelect{}, 9);
    Adapter<Reference> a(m, data, cfg);
    if (!from.empty()) a.load(from);
    for (int i = 0; i < steps; ++i) a.step();
    if (!to.empty()) a.save(to);
    std::vector<float> out;
    for (const auto& p : m.params())
      if (p.trainable)
        for (const auto& v : {p.value(), p.grad()}) out.insert(out.end(), v.begin(), v.end());
    return out;
  };
  const auto straight = run(4, "", "");
  run(2, "", path);
  const auto resumed = run(2, path, "");
  REQUIRE_EQ(straight.size(), resumed.size());
  CHECK_EQ(std::memcmp(straight.data(), resumed.data(), straight.size() * sizeof(float)), 0);
  CHECK_NE(std::memcmp(straight.data(), run(0, "", "").data(), straight.size() * sizeof(float)), 0);
}
