// example_custom_gate: write your own gate policy and plug it into LoopedModel by type.
//
//   example_custom_gate [-m MODEL.gguf] [-p PROMPT] [--max-step S]
//
// The gate below is a damped, norm-clipped update: each token's state moves towards the reasoning
// block's proposal by a fraction alpha, and never by more than max_step (L2 norm) per iteration.
// The program generates the same prompt with built-in gates and with the custom one, prints both,
// and checks three things (exit code 0 only when all hold):
//   1. ClippedGate(alpha = 1, no clip)   gives exactly the ids of the built-in NoGate,
//   2. ClippedGate(alpha = 0.5, no clip) gives exactly the ids of the built-in FixedMixGate(0.5),
//   3. ClippedGate(alpha = 0.5, clipped) gives different ids: the clip is really applied.
// SPDX-License-Identifier: MIT
#include <cmath>
#include <concepts>
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

/// The custom gate. What LoopedModel needs from a gate (the GatePolicy concept in
/// include/loopus/policies/concepts.hpp) is five members:
///   kName                      a name for logs,
///   Weights                    its parameter type (an empty struct here: alpha and max_step are settings),
///   reserve<Backend>(T, d)     called once before decoding: T tokens per call at most, width d,
///   blend<Backend>(p, h, T)    h <- G(p, h) in place for T rows of width d; must not allocate,
///   last_mean_alpha()          the mean mixing coefficient of the last blend (reported to a LoopObserver).
/// p and h are spans in the backend's memory. A gate built from Ops<Backend> operations (as the
/// built-in gates are) runs on every backend; this one brings its own kernel, written for the Cpu
/// backend, whose memory is host memory (Ops<Cpu>::data gives the address), so it accepts Cpu only.
///
/// Per token:  s = min(1, max_step / ||p - h||),  a = alpha * s,  h <- a * p + (1 - a) * h.
/// With max_step = infinity this is FixedMixGate(alpha); with alpha = 1 as well, it is NoGate.
struct ClippedGate {
  static constexpr std::string_view kName = "clipped";
  float alpha = 1.f;
  float max_step = INFINITY;

  ClippedGate() = default;  // LoopedModel's default argument for its gate is Gate{}
  explicit ClippedGate(float alpha_, float max_step_ = INFINITY) : alpha(alpha_), max_step(max_step_) {}

  struct Weights {};

  template <class Backend>
  void reserve(int64_t /*T*/, int64_t d) {
    d_ = d;
  }

  // Backend is the backend tag; this kernel is a plain loop over host memory, so only Cpu qualifies.
  template <class Backend>
  requires std::same_as<Backend, loopus::Cpu>
  void blend(loopus::CSpan<Backend> ps, loopus::Span<Backend> hs, int64_t T) {
    const float* p = loopus::Ops<loopus::Cpu>::data(ps);
    float* h = loopus::Ops<loopus::Cpu>::data(hs);
    double a_sum = 0;
    for (int64_t t = 0; t < T; ++t) {
      const float* pt = p + t * d_;
      float* ht = h + t * d_;
      double ss = 0;  // ||p - h||^2 of this token
      for (int64_t c = 0; c < d_; ++c) ss += double(pt[c] - ht[c]) * double(pt[c] - ht[c]);
      const double norm = std::sqrt(ss);
      const float a = norm > max_step ? alpha * float(max_step / norm) : alpha;
      for (int64_t c = 0; c < d_; ++c) ht[c] = a * pt[c] + (1.f - a) * ht[c];
      a_sum += a;
    }
    mean_alpha_ = float(a_sum / double(T));
  }
  float last_mean_alpha() const { return mean_alpha_; }

 private:
  int64_t d_ = 0;
  float mean_alpha_ = 0.f;
};

// The same check LoopedModel makes with its own static_assert, here where the gate is written.
static_assert(loopus::GatePolicy<ClippedGate, loopus::Cpu>);
static_assert(!loopus::GatePolicy<ClippedGate, loopus::Reference>);  // its kernel is Cpu-only

namespace {

constexpr int kLoops = 8;      // B: every token runs the reasoning block 8 times (fixed halting)
constexpr int kNPredict = 32;  // tokens to generate

/// Greedy continuation of `prompt` through a LoopedModel whose gate is `Gate` (a type) set to
/// `gate` (a value). Also returns the mean gate coefficient seen on the last loop of the last token.
template <class Gate>
std::vector<int32_t> run(const std::shared_ptr<const loopus::LoopedWeights>& lw, const std::vector<int32_t>& prompt,
                         Gate gate, float* mean_alpha = nullptr) {
  loopus::LoopParams lp;
  lp.halting.max_loops = kLoops;  // rule: HaltRule::kFixed (the default)
  const loopus::ContextParams cp{.n_ctx = int64_t(prompt.size()) + kNPredict};
  loopus::LoopedModel<loopus::Cpu, Gate, loopus::PerDepthCache> model(lw, lp, cp, gate);
  loopus::Sampler greedy(loopus::SamplerParams{.temperature = 0.f});
  auto r = loopus::generate(model, prompt, loopus::GenerateParams{.n_predict = kNPredict}, greedy, [](int32_t) {});
  if (mean_alpha) *mean_alpha = model.gate().last_mean_alpha();
  return r.ids;
}

std::string default_model() {
  const char* env = std::getenv("LOOPUS_DATA_DIR");
  const std::filesystem::path dir = env && *env ? env : "../shared/data";
  return (dir / "models/stories260K/stories260K.gguf").string();
}

}  // namespace

int main(int argc, char** argv) try {
  std::string model_path = default_model(), prompt_text = "Once upon a time";
  float max_step = 2.0f;  // per-iteration step limit for the clipped run (stories260K: dim 64)
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "-m") model_path = value;
    else if (flag == "-p") prompt_text = value;
    else if (flag == "--max-step") max_step = std::stof(value);
    else throw loopus::UsageError("unknown option " + flag);
  }

  auto lw = loopus::load_looped(model_path, "0..0", "4..4");
  auto tok = loopus::load_tokenizer_from_gguf_meta(lw->base->source->meta, model_path);
  const std::vector<int32_t> prompt = tok->encode(prompt_text);
  auto text = [&](const std::vector<int32_t>& ids) {
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), ids.begin(), ids.end());
    return tok->decode(all, /*skip_special=*/true);
  };

  // Built-in gates, then the custom one: the gate is a template argument of LoopedModel, so each
  // run() below instantiates its own model type; nothing is virtual.
  const auto none = run(lw, prompt, loopus::NoGate{});
  const auto mix = run(lw, prompt, loopus::FixedMixGate(0.5f));
  const auto clip_as_none = run(lw, prompt, ClippedGate(1.f));
  const auto clip_as_mix = run(lw, prompt, ClippedGate(0.5f));
  float clipped_alpha = 0.f;
  const auto clipped = run(lw, prompt, ClippedGate(0.5f, max_step), &clipped_alpha);

  std::printf("B = %d loops per token, split %s\n", kLoops, lw->split.text().c_str());
  std::printf("[%s]            %s\n", loopus::FixedMixGate::kName.data(), text(mix).c_str());
  std::printf("[%s, max %.2f] %s\n", ClippedGate::kName.data(), double(max_step), text(clipped).c_str());
  std::printf("clipped gate: mean coefficient on the last loop %.3f (0.5 without the clip)\n", double(clipped_alpha));

  int failures = 0;
  auto check = [&](bool ok, const char* what) {
    std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    failures += ok ? 0 : 1;
  };
  check(clip_as_none == none, "ClippedGate(alpha = 1, no clip) == NoGate");
  check(clip_as_mix == mix, "ClippedGate(alpha = 0.5, no clip) == FixedMixGate(0.5)");
  check(clipped != mix, "ClippedGate(alpha = 0.5, clipped) != FixedMixGate(0.5)");
  return failures == 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "example_custom_gate: %s\n", e.what());
  return 1;
}
