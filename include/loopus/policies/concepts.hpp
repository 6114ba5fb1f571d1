// Concepts every loop policy satisfies (checked with static_assert in LoopedModel).
// SPDX-License-Identifier: MIT
#pragma once
#include <concepts>
#include <cstdint>
#include <string_view>

#include "loopus/core/kv_cache.hpp"
#include "loopus/core/tensor.hpp"

namespace loopus {

/// A gate mixes the reasoning block's proposal p into the loop state h, in
/// place: h <- G(p, h), for T tokens of width d, in Backend's memory (it may
/// only use Ops<Backend> on them). reserve<Backend>(T, d) is called once
/// before the hot loop so blend() never allocates. last_mean_alpha() is the
/// mean mixing coefficient of the last blend (the share of the proposal; 1 for
/// h <- p), which the model passes to its observer. Weights names the gate's
/// own parameter type (an empty struct for a gate without parameters).
/// A gate whose coefficient varies by token and channel also provides
/// alpha_rows<Backend>(first, count, out) (see SelectiveGate) for observers;
/// without it they see last_mean_alpha() on every channel.
template <class G, class Backend>
concept GatePolicy = requires(G& g, const G& cg, CSpan<Backend> proposal, Span<Backend> state, int64_t T, int64_t d) {
  { G::kName } -> std::convertible_to<std::string_view>;
  typename G::Weights;
  g.template reserve<Backend>(T, d);
  g.template blend<Backend>(proposal, state, T);
  { cg.last_mean_alpha() } -> std::convertible_to<float>;
};

/// A cache policy decides where the reasoning block's keys/values live for
/// each (layer, depth), and what a token that exited early leaves behind
/// (after_exit, run on the reasoning caches after every call's loop).
template <class C, class Backend>
concept CachePolicy = requires(const C& c, int j, int r, int n_reason, int n_loop, KvCache<Backend>& kv, int64_t pos0,
                               int64_t T) {
  { C::kName } -> std::convertible_to<std::string_view>;
  { C::kRecompute } -> std::convertible_to<bool>;
  { c.reasoning_slots(n_reason, n_loop) } -> std::convertible_to<int>;
  { c.slot(j, r, n_reason) } -> std::convertible_to<int>;
  c.after_exit(kv, r, n_loop, n_reason, pos0, T);
};

}  // namespace loopus
