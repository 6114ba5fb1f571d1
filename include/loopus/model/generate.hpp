// generate(): prompt -> sampled continuation for any LanguageModel (plain or looped), with timings.
// SPDX-License-Identifier: MIT
#pragma once
#include <chrono>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/model/language_model.hpp"
#include "loopus/sample/sampler.hpp"

namespace loopus {

struct GenerateParams {
  int n_predict = 128;          ///< tokens to generate (prompt excluded)
  int32_t stop_id = -1;         ///< stop after emitting this id (EOS); -1: never stop early
};

struct GenerateResult {
  std::vector<int32_t> ids;             ///< generated ids, prompt excluded
  std::vector<int> loops_per_token;     ///< loop iterations per generated token (looped models)
  double prompt_ms = 0, gen_ms = 0;     ///< prefill time; time of the single-token forwards
  int n_decode = 0;                     ///< single-token forwards run (ids.size() - 1)
  double ms_per_token() const { return n_decode ? gen_ms / double(n_decode) : 0.0; }
  double prompt_tokens_per_s(size_t n_prompt) const { return prompt_ms > 0 ? 1e3 * double(n_prompt) / prompt_ms : 0; }
};

/// Models that can report how many loops their last token used.
template <class M>
concept ReportsLoops = requires(const M& m) {
  { m.last_loops() } -> std::convertible_to<int>;
};

namespace detail {
/// Weights holding NaN or Inf (a corrupt or badly converted file) show up as
/// non-finite logits; stop with an error instead of sampling garbage.
inline void require_finite_logits(const float* logits, int n_vocab, size_t position) {
  for (int i = 0; i < n_vocab; ++i)
    if (!std::isfinite(logits[i]))
      throw FormatError("the model produced a non-finite logit (" + std::to_string(logits[i]) + " for token " +
                        std::to_string(i) + ") at position " + std::to_string(position) +
                        ": its weights hold NaN or Inf values");
}
}  // namespace detail

/// Feeds the prompt, then samples n_predict tokens. on_token(id) is called as
/// soon as each id is chosen (for streaming). The model is reset first.
template <LanguageModel Model, class OnToken>
GenerateResult generate(Model& model, std::span<const int32_t> prompt, const GenerateParams& gp, Sampler& sampler,
                        OnToken&& on_token) {
  using clock = std::chrono::steady_clock;
  GenerateResult r;
  model.reset();
  std::vector<float> logits(size_t(model.n_vocab()));
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  history.reserve(history.size() + size_t(gp.n_predict));
  r.ids.reserve(size_t(gp.n_predict));
  if (prompt.empty()) return r;
  auto t0 = clock::now();
  model.eval(prompt, logits.data());
  r.prompt_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  if constexpr (ReportsLoops<Model>) r.loops_per_token.push_back(model.last_loops());
  for (int i = 0; i < gp.n_predict; ++i) {
    detail::require_finite_logits(logits.data(), model.n_vocab(), history.size() - 1);
    const int32_t id = sampler.sample(logits.data(), model.n_vocab(), history);
    r.ids.push_back(id);
    history.push_back(id);
    on_token(id);
    if (id == gp.stop_id || i + 1 == gp.n_predict) break;
    auto t1 = clock::now();
    model.eval(std::span<const int32_t>(&r.ids.back(), 1), logits.data());
    r.gen_ms += std::chrono::duration<double, std::milli>(clock::now() - t1).count();
    ++r.n_decode;
    if constexpr (ReportsLoops<Model>) r.loops_per_token.push_back(model.last_loops());
  }
  return r;
}

}  // namespace loopus
