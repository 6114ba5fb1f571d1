// example_compile_time: a looped model configured entirely at compile time.
//
//   example_compile_time [-m MODEL.gguf] [-p PROMPT]
//
// LoopedModel takes its gate and its KV-cache policy as template arguments; the loop count and the
// halting rule are runtime values (LoopParams). FixedLoops<Gate, Cache, Loops> below, a few lines
// around LoopedModel, also makes the loop count a template argument, with fixed halting, so one
// `using` line names a whole configuration and the compiler checks it. The program runs four
// configurations on the same prompt and checks (exit code 0 only when all hold):
//   1. <NoGate, PerDepthCache, 1> generates exactly what the original model (CausalLM) generates,
//   2. <FixedMixGate, PerDepthCache, 4> generates exactly what <FixedMixGate, NoCache, 4> does
//      (with fixed halting the per-depth KV cache is exact; NoCache recomputes everything),
//   3. every token ran exactly `Loops` iterations,
//   4. <FixedMixGate, SharedCache, 4> holds less KV cache per token than the per-depth layout.
// SPDX-License-Identifier: MIT
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <loopus/io/looped_io.hpp>
#include <loopus/loopus.hpp>
#include <loopus/ops/cpu/ops.hpp>
#include <loopus/tokenizer/load.hpp>

/// A LoopedModel on the CPU whose every token runs the reasoning block exactly `Loops` times.
/// Gate and Cache are checked here, with messages that name this wrapper; LoopedModel checks them too.
template <class Gate, class Cache, int Loops>
class FixedLoops : public loopus::LoopedModel<loopus::Cpu, Gate, Cache> {
  static_assert(loopus::GatePolicy<Gate, loopus::Cpu>, "FixedLoops: Gate is not a gate policy (policies/concepts.hpp)");
  static_assert(loopus::CachePolicy<Cache, loopus::Cpu>,
                "FixedLoops: Cache is not a cache policy (policies/concepts.hpp)");
  static_assert(Loops >= 1 && Loops <= 1024, "FixedLoops: Loops must be in 1..1024");
  using Base = loopus::LoopedModel<loopus::Cpu, Gate, Cache>;

 public:
  static constexpr int kLoops = Loops;
  static constexpr std::string_view kGate = Gate::kName;
  static constexpr std::string_view kCache = Cache::kName;

  explicit FixedLoops(std::shared_ptr<const loopus::LoopedWeights> w, loopus::ContextParams cp = {}, Gate gate = {},
                      Cache cache = {})
      : Base(std::move(w), params(), cp, std::move(gate), cache) {}

 private:
  static loopus::LoopParams params() {
    loopus::LoopParams lp;
    lp.halting.rule = loopus::HaltRule::kFixed;  // never stop early: always max_loops
    lp.halting.max_loops = Loops;
    return lp;
  }
};

// Whole configurations, one line each. FixedMixGate{} mixes with alpha = 0.5.
using Plain = FixedLoops<loopus::NoGate, loopus::PerDepthCache, 1>;           // the original model, recast
using Mix4 = FixedLoops<loopus::FixedMixGate, loopus::PerDepthCache, 4>;      // one KV cache per loop depth
using Mix4Redo = FixedLoops<loopus::FixedMixGate, loopus::NoCache, 4>;        // no KV reuse: recompute all
using Mix4Shared = FixedLoops<loopus::FixedMixGate, loopus::SharedCache, 4>;  // one KV cache for all depths

// The configuration is data the compiler can reason about.
static_assert(Mix4::kLoops == 4 && Mix4::kGate == "mix" && Mix4::kCache == "per-depth");
static_assert(loopus::CachePolicy<loopus::SharedCache, loopus::Cpu> &&
              !loopus::CachePolicy<loopus::NoGate, loopus::Cpu>);
// FixedLoops<loopus::NoGate, loopus::NoGate, 4> would stop the build: "Cache is not a cache policy".

namespace {

std::string default_model() {
  const char* env = std::getenv("LOOPUS_DATA_DIR");
  const std::filesystem::path dir = env && *env ? env : "../shared/data";
  return (dir / "models/stories260K/stories260K.gguf").string();
}

constexpr int kNPredict = 32;

/// Greedy continuation through any model generate() accepts (a LoopedModel, or the plain CausalLM).
template <class Model>
loopus::GenerateResult greedy(Model& model, const std::vector<int32_t>& prompt) {
  loopus::Sampler s(loopus::SamplerParams{.temperature = 0.f});
  return loopus::generate(model, prompt, loopus::GenerateParams{.n_predict = kNPredict}, s, [](int32_t) {});
}

}  // namespace

int main(int argc, char** argv) try {
  std::string model_path = default_model(), prompt_text = "Once upon a time";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "-m") model_path = argv[i + 1];
    else if (flag == "-p") prompt_text = argv[i + 1];
    else throw loopus::UsageError("unknown option " + flag);
  }
  auto lw = loopus::load_looped(model_path, "0..0", "4..4");
  auto tok = loopus::load_tokenizer_from_gguf_meta(lw->base->source->meta, model_path);
  const std::vector<int32_t> prompt = tok->encode(prompt_text);
  const loopus::ContextParams cp{.n_ctx = int64_t(prompt.size()) + kNPredict};

  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what.c_str());
    failures += ok ? 0 : 1;
  };

  // Runs one configuration (a type), prints it, checks its loop counts; returns its ids.
  auto run = [&]<class Model>(const char* label, Model& model) {
    const loopus::GenerateResult r = greedy(model, prompt);
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), r.ids.begin(), r.ids.end());
    std::printf("%-10s gate %-4s cache %-9s loops %d  KV %4zu B/token: %s\n", label, Model::kGate.data(),
                Model::kCache.data(), Model::kLoops, model.cache_bytes_per_token(),
                tok->decode(all, /*skip_special=*/true).c_str());
    check(r.loops_per_token == std::vector<int>(r.ids.size(), Model::kLoops),
          std::string(label) + ": every token ran " + std::to_string(Model::kLoops) + " loops");
    return r.ids;
  };

  Plain plain(lw, cp);
  Mix4 mix4(lw, cp);
  Mix4Redo mix4_redo(lw, cp);
  Mix4Shared mix4_shared(lw, cp);
  const auto plain_ids = run("Plain", plain);
  const auto mix4_ids = run("Mix4", mix4);
  const auto redo_ids = run("Mix4Redo", mix4_redo);
  run("Mix4Shared", mix4_shared);

  loopus::CausalLM<loopus::Cpu> original(lw->base, cp);  // the model as it was trained, no loop
  check(plain_ids == greedy(original, prompt).ids, "Plain == the original model (CausalLM)");
  check(mix4_ids == redo_ids, "Mix4 (per-depth cache) == Mix4Redo (no cache)");
  check(mix4_shared.cache_bytes_per_token() < mix4.cache_bytes_per_token(), "Mix4Shared holds less KV per token");
  return failures == 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "example_compile_time: %s\n", e.what());
  return 1;
}
