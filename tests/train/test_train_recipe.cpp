// Adaptation recipes: the small-run defaults, the official recipe and its schedule, N in the checkpoint.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "loopus/train/adapt.hpp"
#include "test_util.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;
using namespace loopus::train;
using loopus::test::ptr;
using loopus::test::span_of;

namespace {

/// transformers.get_cosine_schedule_with_warmup's lr_lambda (num_cycles 0.5), written out.
double hf_cosine(double step, double warmup, double total) {
  if (step < warmup) return step / std::max(1.0, warmup);
  const double progress = (step - warmup) / std::max(1.0, total - warmup);
  return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress)));
}

}  // namespace

TEST_CASE("[loopus] train recipe: the official recipe's values (script/train.sh, training_runtime.py)") {
  const AdaptConfig o = AdaptConfig::official();
  CHECK_EQ(o.lr, 5e-5);
  CHECK_EQ(o.batch, 2);
  CHECK_EQ(o.accum, 64);
  CHECK_EQ(o.seq_len, 1024);
  CHECK_EQ(o.gate_lr_mult, 1.0);
  CHECK(o.adam.decay_all);
  CHECK_EQ(o.adam.weight_decay, 0.01);
  CHECK_EQ(o.adam.clip, 0.0);
  CHECK(o.pad);
  CHECK_EQ(o.schedule, "official");
  CHECK_EQ(o.warmup_steps, 300);
  CHECK_EQ(o.step.n_steps, 20);
  CHECK_EQ(o.step.n_supervision, 5);
  CHECK_EQ(o.step.n_apply, 2);
  // the defaults are the small-run recipe, not the official one
  const AdaptConfig d;
  CHECK_EQ(d.step.n_steps, 2);
  CHECK_EQ(d.step.n_supervision, 2);
  CHECK_EQ(d.step.n_apply, 4);
  CHECK_EQ(d.gate_lr_mult, 100.0);
  CHECK_EQ(d.lr, 3e-4);
  CHECK_EQ(d.schedule, "cosine");
  CHECK_EQ(d.batch, 4);
  CHECK_EQ(d.seq_len, 128);
  AdaptConfig with_budget = o;  // official() leaves the budget to the caller
  with_budget.max_tokens = 1 << 20;
  CHECK_NOTHROW(with_budget.check());
  AdaptConfig bad = d;
  bad.schedule = "linear";
  bad.max_steps = 1;
  CHECK_THROWS_WITH_AS(bad.check(), doctest::Contains("AdaptConfig::schedule"), Error);
}

TEST_CASE("[loopus] train recipe: the official schedule is HF cosine-with-warmup per micro-step, oscillating past its horizon") {
  AdaptConfig c;
  c.max_steps = 10;  // horizon: one scheduler step per batch
  c.warmup_steps = 3;
  for (int k = 0; k < 40; ++k) CHECK_EQ(c.official_lr_factor(k), doctest::Approx(hf_cosine(k, 3, 10)).epsilon(1e-12));
  CHECK_EQ(c.official_lr_factor(0), 0.0);
  CHECK_EQ(c.official_lr_factor(3), doctest::Approx(1.0));
  CHECK_EQ(c.official_lr_factor(10), doctest::Approx(0.0).epsilon(1e-12));  // horizon reached after 1/5 of 5 sup./batch
  CHECK_EQ(c.official_lr_factor(17), doctest::Approx(1.0));                 // ... and the cosine comes back up
}

TEST_CASE(
    "[loopus] train recipe: updates use the official schedule at their micro-step, N = n_steps in the checkpoint") {
  auto lw = test::synth_loopus(test::tiny_params(61), "0..0", "3..3");
  const auto ids = test::random_ids(8 * 6 * 12, 32, 5);
  PackedData data(ids, 12);
  AdaptConfig c;
  c.batch = 2;
  c.seq_len = 12;
  c.max_steps = 6;
  c.accum = 3;
  c.lr = 1e-3;
  c.gate_lr_mult = 1;
  c.schedule = "official";
  c.warmup_steps = 4;
  c.step.n_steps = 3;
  c.step.n_supervision = 2;
  c.step.n_apply = 1;
  TrainModel<Cpu, float> m(lw, TrainSelect{}, 4);
  Adapter<Cpu, float> a(m, data, c);
  int64_t micro = 0;
  int updates = 0;
  while (!a.done()) {
    const BatchRecord r = a.step();
    // two supervised micro-steps per batch; an update after every third (accum 3)
    int64_t last_update_k = -1;
    for (int i = 0; i < 2; ++i, ++micro)
      if ((micro + 1) % 3 == 0) last_update_k = micro;
    if (last_update_k >= 0) {
      ++updates;
      CHECK_EQ(r.lr, doctest::Approx(1e-3 * hf_cosine(double(last_update_k), 4, 6)).epsilon(1e-12));
    } else {
      CHECK_EQ(r.updates, 0);
    }
  }
  CHECK_EQ(updates, 4);
  CHECK_EQ(a.export_looped()->defaults.n_loops, 3);  // the official trainer writes N = n_reasoning_steps
  AdaptConfig plain = c;
  plain.no_loop = true;
  TrainModel<Cpu, float> m2(lw, TrainSelect{}, 4);
  Adapter<Cpu, float> a2(m2, data, plain);
  CHECK_EQ(a2.export_looped()->defaults.n_loops, 1);
}
