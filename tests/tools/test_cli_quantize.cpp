// loopus quantize: the CLI over io/quantize_model.hpp: summaries, fallbacks on stories260K, exit codes and messages.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_util.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using loopus::DType;
using loopus::test::CliRun;

namespace {

CliRun quantize_cli(const std::vector<std::string>& args, const fs::path& dir) {
  std::vector<std::string> all = {"quantize"};
  all.insert(all.end(), args.begin(), args.end());
  return loopus::test::run_cli_timed(all, dir, 120);
}

}  // namespace

TEST_CASE("[loopus] CLI quantize: stories260K to Q4_K falls back per row length, the result runs") {
  const fs::path dir = loopus::test::temp_dir("cli_quantize_stories");
  const std::string model = loopus::test::data_file("models/stories260K/stories260K.gguf");
  const std::string out = (dir / "s260k_q4k.gguf").string();
  const CliRun r = quantize_cli({"-m", model, "--type", "q4_k", "--out", out, "--json", "-t", "2"}, dir);
  CAPTURE(r.err);
  REQUIRE(r.exited);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j.at("type") == "q4_K");
  CHECK(j.at("vocab") == true);
  CHECK(j.at("looped") == false);
  int n_q8 = 0, n_f16 = 0;
  for (const auto& m : j.at("matrices")) {
    CAPTURE(m.dump());
    // dim 64 = 2 x 32: q8_0; ffn_down's rows of 172 are not whole 32-blocks: f16.
    const bool down = m.at("name").get<std::string>().find("ffn_down") != std::string::npos;
    CHECK(m.at("to") == (down ? "f16" : "q8_0"));
    CHECK(m.at("fallback") == true);
    n_q8 += m.at("to") == "q8_0";
    n_f16 += m.at("to") == "f16";
  }
  CHECK(n_f16 == 5);
  CHECK(n_q8 == 2 + 5 * 6);  // token_embd, output, and six matrices in each of 5 layers
  // It loads and generates like any GGUF (vocabulary copied).
  const CliRun g = loopus::test::run_cli_timed({"generate", "-m", out, "-p", "Once upon a time", "-n", "4", "--backend",
                                                "reference"},
                                               dir, 120);
  CAPTURE(g.err);
  CHECK(g.code == 0);

  // Text summary, F16 of the same model: no fallback, every matrix f16.
  const CliRun t = quantize_cli({"-m", model, "--type", "F16", "--out", (dir / "f16.gguf").string()}, dir);
  CAPTURE(t.err);
  CHECK(t.code == 0);
  CHECK(t.out.find("37 f16; 0 kept") != std::string::npos);
}

TEST_CASE("[loopus] CLI quantize: a looped checkpoint with --keep reasoning") {
  const fs::path dir = loopus::test::temp_dir("cli_quantize_looped");
  loopus::SynthParams p;
  p.dim = 64;
  p.layers = 3;
  p.ff = 128;
  p.vocab = 300;
  auto lw = loopus::recast(loopus::synth_weights(p), loopus::LayerSplit::from_specs("0..0", "2..2", 3));
  loopus::synth_loop_parts(*lw, 3);
  const std::string in = (dir / "looped.gguf").string(), out = (dir / "looped_q8.gguf").string();
  loopus::save_looped_gguf(*lw, in);
  const CliRun r = quantize_cli({"-m", in, "--type", "Q8_0", "--keep", "reasoning,token_embd.weight", "--out", out},
                                dir);
  CAPTURE(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("loop metadata, f32 gate and q head") != std::string::npos);
  CHECK(r.out.find("8 kept") != std::string::npos);  // blk.1's seven matrices and token_embd
  const loopus::io::TensorFile f = loopus::io::open_gguf(out);
  CHECK(f.get("blk.1.ffn_up.weight").dtype == DType::kF32);
  CHECK(f.get("blk.0.ffn_up.weight").dtype == DType::kQ8_0);
  CHECK(f.get("token_embd.weight").dtype == DType::kF32);
  CHECK(f.get("output.weight").dtype == DType::kQ8_0);
  CHECK(f.get("loopus.q_head.norm.weight").dtype == DType::kF32);
}

TEST_CASE("[loopus] CLI quantize: bad type, missing file, output == input and bad --keep are clear errors") {
  const fs::path dir = loopus::test::temp_dir("cli_quantize_errors");
  const std::string model = loopus::test::data_file("models/stories260K/stories260K.gguf");
  const std::string out = (dir / "o.gguf").string();
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"-m", model, "--type", "Q3_K", "--out", out}, 2, "--type 'Q3_K': not a type loopus writes"},
      {{"-m", model, "--type", "Q8_0", "--fallback", "Q6_K", "--out", out}, 2, "--fallback q6_K"},
      {{"-m", (dir / "nope.gguf").string(), "--type", "Q8_0", "--out", out}, 3, "nope.gguf: no such file"},
      {{"-m", model, "--type", "Q8_0", "--out", model}, 2, "is the input model"},
      {{"-m", model, "--type", "Q8_0", "--out", dir.string()}, 2, "is a folder"},
      {{"-m", model, "--type", "Q8_0", "--keep", "reasoning", "--out", out},
       2,
       "--keep entry 'reasoning': " + model + " is not a LoopUS checkpoint"},
      {{"-m", model, "--type", "Q8_0", "--keep", "blk.7.*", "--out", out},
       2,
       "--keep entry 'blk.7.*' matches no tensor"},
      {{"-m", model, "--type", "Q8_0", "--keep", ",", "--out", out}, 2, "--keep ',' names no tensor"},
      {{"-m", model, "--out", out}, 2, "--type is required"},
  };
  for (const auto& c : cases) {
    const CliRun r = quantize_cli(c.args, dir);
    CAPTURE(c.says);
    CAPTURE(r.err);
    REQUIRE(r.exited);
    CHECK(r.code == c.code);
    CHECK(r.err.find(c.says) != std::string::npos);
  }
  CHECK_FALSE(fs::exists(out));
  CHECK(loopus::test::temp_files_in(dir).empty());
}
