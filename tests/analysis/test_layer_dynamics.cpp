// Layer dynamics and the split advisor: the fast backend against the scalar reference, the candidate set,
// the advisor's rule on constructed dynamics, split scores against perplexity() run directly, and the CLI.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <vector>
#include <nlohmann/json.hpp>

#include "loopus/analysis/layer_dynamics.hpp"
#include "loopus/io/discover.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "test_util.hpp"

using namespace loopus;

namespace {

std::shared_ptr<const ModelWeights> dyn_stories() {
  static auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  return w;
}

std::vector<int32_t> dyn_tokens(size_t n) {
  auto tok = io::open_tokenizer_file(test::data_file("models/stories260K/stories260K.gguf"));
  auto ids = tok->encode(test::read_text(test::data_file("text/tinystories/tinystories_validation_first1000.txt")),
                         false);
  REQUIRE(ids.size() >= n);
  ids.resize(n);
  return ids;
}

}  // namespace

TEST_CASE("layer_dynamics: the CPU backend agrees with the scalar reference, and the statistics are consistent") {
  const auto toks = dyn_tokens(200);
  const auto cpu = analysis::layer_dynamics<Cpu>(dyn_stories(), toks, 64);
  const auto ref = analysis::layer_dynamics<Reference>(dyn_stories(), toks, 64);
  REQUIRE(cpu.n_layer == 5);
  CHECK(cpu.tokens == 200 - 4);  // 4 windows (64, 64, 64, 8), each without its first token
  CHECK(ref.tokens == cpu.tokens);
  for (int l = 0; l < 5; ++l) {
    CHECK(cpu.cos_in_out[size_t(l)] == doctest::Approx(ref.cos_in_out[size_t(l)]).epsilon(1e-4));
    CHECK(cpu.change[size_t(l)] == doctest::Approx(ref.change[size_t(l)]).epsilon(1e-4));
    CHECK(cpu.change_rel[size_t(l)] == doctest::Approx(ref.change_rel[size_t(l)]).epsilon(1e-4));
    CHECK(cpu.span_cos(l, l + 1) == doctest::Approx(cpu.cos_in_out[size_t(l)]).epsilon(1e-12));
    CHECK(cpu.cos_in_out[size_t(l)] < 1.0);
    CHECK(cpu.cos_in_out[size_t(l)] > -1.0);
    CHECK(cpu.change[size_t(l)] > 0.0);
  }
  for (int a = 0; a <= 5; ++a) {
    CHECK(cpu.span_cos(a, a) == 1.0);
    for (int b = 0; b <= 5; ++b) CHECK(cpu.span_cos(a, b) == cpu.span_cos(b, a));
  }
  CHECK_THROWS_AS(analysis::layer_dynamics<Cpu>(dyn_stories(), std::vector<int32_t>{1, 99999}, 64), UsageError);
}

TEST_CASE("split advisor: candidates, and the rule picks the block that turns the state least") {
  CHECK(analysis::min_reasoning_layers(30) == 10);
  CHECK(analysis::min_reasoning_layers(5) == 2);
  CHECK(analysis::candidate_splits(30, 10).size() == 231);
  CHECK(analysis::candidate_splits(5, 2).size() == 10);
  for (const auto& c : analysis::candidate_splits(30, 10)) {
    CHECK(c.reasoning() >= 10);
    CHECK(c.split().n_layer() == 30);
  }
  // constructed dynamics of 9 layers: span cosines fall with the number of layers in between, except
  // that layers 4..6 barely change the state
  analysis::LayerDynamics d;
  d.n_layer = 9;
  d.cos_span.assign(100, 0.0);
  for (int a = 0; a <= 9; ++a)
    for (int b = 0; b <= 9; ++b) {
      double s = 0;
      for (int l = std::min(a, b); l < std::max(a, b); ++l) s += (l >= 4 && l <= 6) ? 0.01 : 0.2;
      d.cos_span[size_t(a * 10 + b)] = 1 - s;
    }
  const auto s = analysis::suggest_split(d, 3);
  CHECK(s.encoder == 4);
  CHECK(s.decoder == 2);
  CHECK(s.reasoning() == 3);
  CHECK(s.split().text() == "0..3 | 4..6 | 7..8");
  CHECK(s.flags() == "--encoder-layers 0..3 --decoder-layers 7..8");
  // the block may not swallow the encoder or the decoder
  const auto s2 = analysis::suggest_split(d, 7);
  CHECK(s2.encoder == 1);
  CHECK(s2.decoder == 1);
}

TEST_CASE("score_splits: each split's perplexity is the recast model's, sorted from best") {
  const auto toks = dyn_tokens(300);
  const std::span<const int32_t> dyn_part(toks.data(), 200), held(toks.data() + 200, 100);
  const auto dyn = analysis::layer_dynamics<Cpu>(dyn_stories(), dyn_part, 64);
  const auto scored = analysis::score_splits<Cpu>(dyn_stories(), dyn, held, 50, 2, 2);
  REQUIRE(scored.size() == 10);
  for (size_t i = 1; i < scored.size(); ++i) CHECK(scored[i - 1].ppl <= scored[i].ppl);
  LoopParams lp;
  lp.halting.max_loops = 2;
  eval::PerplexityOptions po;
  po.window = 50;
  for (const auto& r : scored) {
    LoopedModel<Cpu, NoGate, PerDepthCache> m(recast(dyn_stories(), r.split.split()), lp, {.n_ctx = 50, .n_batch = 50});
    CHECK(r.ppl == doctest::Approx(eval::perplexity(m, held, po).ppl()).epsilon(1e-9));
    CHECK(r.score == dyn.span_cos(r.split.encoder, 5 - r.split.decoder));
    CHECK(std::isfinite(r.ppl));
  }
}

TEST_CASE("loopus split and loopus trace on stories260K") {
  const std::string cli = test::cli_path();
  if (cli.empty()) return;
  const auto dir = test::temp_dir("cli_split");
  const std::string model = test::data_file("models/stories260K/stories260K.gguf");
  const std::string text = test::data_file("text/tinystories/tinystories_validation_first1000.txt");
  auto r = test::run_cli(cli, {"split", "-m", model, "--data", text, "--tokens", "300", "--window", "64", "--check",
                               "--check-tokens", "200", "--check-window", "100", "--out", (dir / "split").string()});
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.out.find("encoder") != std::string::npos);
  CHECK(r.out.find("decoder") != std::string::npos);
  CHECK(r.out.find("--encoder-layers") != std::string::npos);
  const auto js = nlohmann::json::parse(test::read_text(dir / "split" / "splits.json"));
  CHECK(js["candidates"] == 10);
  CHECK(js["suggested_rank"] >= 1);
  for (const char* f : {"dynamics.json", "dynamics.svg", "splits.svg"})
    CHECK(std::filesystem::exists(dir / "split" / f));
  const std::string flags = js["suggested"]["flags"];
  // trace the suggested recast (fresh gate) with the flags the advisor printed
  std::vector<std::string> args = {
      "trace", "-m",     model,       "-p",    "Once upon a time",      "-n", "5", "--loops",
      "3",     "--gate", "selective", "--out", (dir / "trace").string()};
  const auto enc = js["suggested"]["encoder"].get<std::string>(), dec = js["suggested"]["decoder"].get<std::string>();
  args.insert(args.end(), {"--encoder-layers", enc, "--decoder-layers", dec});
  r = test::run_cli(cli, args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto jt = nlohmann::json::parse(test::read_text(dir / "trace" / "trace.json"));
  CHECK(jt["max_loops"] == 3);
  CHECK(jt["tokens"].size() == 5);
  CHECK(jt["tokens"][0]["iterations"].size() == 4);
  CHECK(jt["tokens"][0]["iterations"][1]["top"].size() == 5);
  for (const char* f : {"trajectory.svg", "trajectory_all.svg", "gate.svg", "distance.svg", "thinking.svg",
                        "thinking.html", "states.f32", "alpha.f32"})
    CHECK(std::filesystem::exists(dir / "trace" / f));
  // a plain model without a split is refused with a hint, not traced
  r = test::run_cli(cli, {"trace", "-m", model, "-p", "Once", "--out", (dir / "t2").string()});
  CHECK(r.code != 0);
  CHECK(r.err.find("loopus split") != std::string::npos);
}
