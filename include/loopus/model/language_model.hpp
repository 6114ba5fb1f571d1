// LanguageModel: what generate() and the evaluators accept (CausalLM, every LoopedModel, a host project's own model).
// SPDX-License-Identifier: MIT
#pragma once
#include <concepts>
#include <cstdint>
#include <span>

namespace loopus {

/// One sequence that grows by eval(). eval(ids, logits, all_logits) appends
/// ids and writes host logits: the last token's [V], or every appended
/// token's [n, V] when all_logits. reset() empties the sequence; n_past() is
/// its length, n_ctx() the most it may hold.
template <class M>
concept LanguageModel = requires(M& m, const M& cm, std::span<const int32_t> ids, float* logits, bool all_logits) {
  m.reset();
  m.eval(ids, logits, all_logits);
  { cm.n_past() } -> std::convertible_to<int64_t>;
  { cm.n_ctx() } -> std::convertible_to<int64_t>;
  { cm.n_vocab() } -> std::convertible_to<int64_t>;
};

/// A LanguageModel that can drop its last tokens: rewind(n) keeps the first n
/// (n <= n_past()), so the next eval() continues from position n exactly as if
/// the dropped tokens had never been fed (shared-prefix scoring). can_rewind()
/// says whether that holds now (a looped model that exited early and dropped
/// its deeper caches cannot).
template <class M>
concept Rewindable = LanguageModel<M> && requires(M& m, const M& cm, int64_t n) {
  m.rewind(n);
  { cm.can_rewind() } -> std::convertible_to<bool>;
};

}  // namespace loopus
