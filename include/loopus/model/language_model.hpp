// LanguageModel: what generate() and the evaluators accept (CausalLM, every LoopedModel, a host project's own model).
// SPDX-License-Identifier: MIT
#pragma once
#include <concepts>
#include <cstdint>
#include <span>

namespace loopus {

/// A run of consecutive tokens of one sequence inside a forward call (the
/// rows of a batch, one run after the other): n tokens at positions pos..
/// (RoPE) whose keys and values go to cache rows row.. and which attend to
/// cache rows begin .. row + t, causally. A plain call is one run with
/// row == pos. Several sequences share one cache by living in separate row
/// ranges (begin = the range's first row, row = begin + pos); runs that
/// continue the same prefix may reuse the same rows, one after the other.
struct TokenRun {
  int64_t n = 0;
  int64_t pos = 0;
  int64_t row = 0;
  int64_t begin = 0;
  int64_t n_logits = 0;  ///< logits wanted for the run's last n_logits tokens (models' eval_runs)
};

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

/// A LanguageModel that scores several runs of tokens in one forward pass
/// (batched scoring): eval_runs(ids, runs, logits) as CausalLM::eval_runs,
/// n_batch() the most tokens one call takes.
template <class M>
concept BatchScorable = LanguageModel<M> &&
    requires(M& m, const M& cm, std::span<const int32_t> ids, std::span<const TokenRun> runs, float* logits) {
  m.eval_runs(ids, runs, logits);
  { cm.n_batch() } -> std::convertible_to<int64_t>;
};

}  // namespace loopus
