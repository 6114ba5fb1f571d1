// The CLI's flag_names(): library errors name parameters, the loopus CLI names the flags that set them.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../../tools/loopus/flag_names.hpp"
#include "loopus/model/layer_split.hpp"
#include "loopus/model/looped_dispatch.hpp"
#include "loopus/policies/gate/fixed_mix_gate.hpp"
#include "loopus/policies/halting/halting.hpp"
#include "loopus/train/adapt.hpp"
#include "loopus/train/data.hpp"
#include "loopus/train/loopus_step.hpp"
#include "loopus/train/params.hpp"

using namespace loopus;

namespace {

/// The message of what fn throws: the library's, and the CLI's rewrite of it.
template <class Fn>
std::pair<std::string, std::string> messages(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return {e.what(), cli::flag_names(e.what())};
  }
  FAIL("no Error thrown");
  return {};
}

}  // namespace

TEST_CASE("[cli] library errors name parameters, the CLI maps them to flags") {
  train::AdaptConfig ok;
  ok.max_steps = 10;
  auto check = [&](auto change, const std::string& lib, const std::string& cli) {
    train::AdaptConfig c = ok;
    change(c);
    const auto [m, f] = messages([&] { c.check(); });
    CHECK_EQ(m, lib);
    CHECK_EQ(f, cli);
  };
  check([](auto& c) { c.batch = 0; }, "AdaptConfig::batch must be >= 1", "--batch must be >= 1");
  check([](auto& c) { c.seq_len = 1; }, "AdaptConfig::seq_len must be >= 2", "--seq-len must be >= 2");
  check([](auto& c) { c.max_tokens = 5; },
        "give exactly one of AdaptConfig::max_tokens and AdaptConfig::max_steps (> 0)",
        "give exactly one of --tokens and --steps (> 0)");
  check([](auto& c) { c.warmup = 1; }, "AdaptConfig::warmup must be a fraction in [0, 1)",
        "--warmup must be a fraction in [0, 1)");
  check([](auto& c) { c.warmup_steps = -1; }, "AdaptConfig::warmup_steps must be >= 0", "--warmup-steps must be >= 0");
  check([](auto& c) { c.gate_lr_mult = 0; }, "AdaptConfig::gate_lr_mult must be > 0", "--gate-lr-mult must be > 0");

  LoopedWeights lw;
  LoopRunSpec spec;
  spec.halt = "fixed";
  spec.min_loops = 9;
  const auto [m, f] = messages([&] { spec.halting(lw); });
  CHECK_EQ(m, "LoopRunSpec::min_loops must be in 1..LoopRunSpec::loops (8), got 9");
  CHECK_EQ(f, "--min-loops must be in 1..--loops (8), got 9");

  const auto [sm, sf] = messages([] { LayerSplit::from_specs("0..3", "3..4", 5); });
  CHECK(sm.find("encoder spec '0..3' and decoder spec '3..4' overlap") != std::string::npos);
  CHECK(sf.find("--encoder-layers '0..3' and --decoder-layers '3..4' overlap") != std::string::npos);
  CHECK(cli::flag_names(messages([] { LayerSplit::from_specs("0..9", "none", 5); }).first)
            .starts_with("--encoder-layers '0..9': layer 9 does not exist"));

  CHECK_EQ(messages([] { train::parse_doc_split("para"); }).second, "--docs must be blank or line, got 'para'");
  CHECK(messages([] { train::TrainSelect::parse("encoder"); }).second.starts_with("--train 'encoder': the encoder"));
  CHECK(messages([] { train::PackedData({1, 2, 3}, 1); }).second.starts_with("--seq-len must be >= 2"));
  const train::PackedData pd(std::vector<int32_t>(64, 1), 8);
  CHECK(messages([&] { train::Batcher(pd, 1000, 0); }).second.ends_with("; --batch 1000 needs more"));
  CHECK_EQ(cli::flag_names("val_percent must be in [0, 100), got 100"), "--val-percent must be in [0, 100), got 100");
  // Text that is not one of the names stays as it is.
  CHECK_EQ(cli::flag_names("the selective gate of a batch"), "the selective gate of a batch");
}

TEST_CASE("[cli] the loop, halting and training-step parameters map to their flags") {
  const auto halt = messages([] { HaltingParams::parse("q:2", 8); });
  CHECK_EQ(halt.first.rfind("halting spec 'q:2'", 0), 0u);
  CHECK_EQ(halt.second.rfind("--halt 'q:2'", 0), 0u);
  train::StepConfig sc;
  sc.n_apply = 0;
  const auto step = messages([&] { sc.check(); });
  CHECK_EQ(step.first, "StepConfig::n_apply must be in 1..16, got 0");
  CHECK_EQ(step.second, "--n-apply must be in 1..16, got 0");
  sc.n_apply = 2;
  sc.n_supervision = 30;
  const auto sup = messages([&] { sc.check(); });
  CHECK_EQ(sup.second, "--n-supervision must be in 1..--n-steps (20), got 30");
  const auto mix = messages([] { FixedMixGate g(1.5f); });
  CHECK_EQ(mix.second.rfind("--gate mix:ALPHA needs 0 <= alpha <= 1", 0), 0u);
  CHECK_EQ(cli::flag_names("x.gguf: the GGUF has no vocabulary (tokenizer.ggml.*); give a tokenizer file "
                           "(OpenModelOptions::tokenizer)"),
           "x.gguf: the GGUF has no vocabulary (tokenizer.ggml.*); pass --tokenizer FILE");
}
