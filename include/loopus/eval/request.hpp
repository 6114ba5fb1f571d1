// Log-likelihood requests as lm-evaluation-harness builds them: a (context, continuation) pair of
// strings, tokenized the way lm-eval's Hugging Face model does, and its truncated model input.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/tokenizer/tokenizer.hpp"

namespace loopus::eval {

/// One scoring request: log P(continuation | context).
struct Request {
  std::string context;
  std::string continuation;
};

/// A request in tokens: the model is fed context + continuation (minus its last
/// token) and scores the continuation's tokens.
struct TokenRequest {
  std::vector<int32_t> context;
  std::vector<int32_t> continuation;
};

/// How a (context, continuation) pair becomes tokens.
enum class PairEncoding {
  /// lm-eval's HFLM._encode_pair (0.4.x): trailing whitespace of the context
  /// moves to the continuation; the whole string is encoded and split at the
  /// length of the context's own encoding (so a token spanning the boundary
  /// belongs to the continuation). Special tokens as the tokenizer adds them
  /// by default (BOS for Llama / SentencePiece vocabularies, none for GPT-2 style).
  kWhole,
  /// The official LoopUS adapter: context and continuation encoded separately,
  /// without special tokens, and concatenated.
  kSeparate,
};

/// lm-eval's prefix token (HFLM.prefix_token_id) before an empty context or a rolling window:
/// the vocabulary's BOS whether or not the tokenizer adds it, else EOS.
inline int32_t prefix_token(const Tokenizer& tok) {
  if (tok.bos_id() >= 0) return tok.bos_id();
  if (tok.eos_id() >= 0) return tok.eos_id();
  throw UnsupportedError("tokenizer has neither BOS nor EOS: an empty context has no prefix token");
}

/// Tokenizes a request. An empty context becomes the prefix token alone (lm-eval:
/// the EOS token, or BOS when the tokenizer adds one), as for rolling windows.
inline TokenRequest encode_request(const Tokenizer& tok, const Request& r, PairEncoding how = PairEncoding::kWhole) {
  TokenRequest out;
  if (how == PairEncoding::kSeparate) {
    out.context = tok.encode(r.context, /*add_special=*/false);
    out.continuation = tok.encode(r.continuation, /*add_special=*/false);
    if (out.context.empty()) out.context.push_back(prefix_token(tok));
    return out;
  }
  if (r.context.empty()) {
    out.context = {prefix_token(tok)};
    out.continuation = tok.encode(r.continuation, /*add_special=*/false);
    return out;
  }
  std::string_view ctx = r.context;
  std::string cont = r.continuation;
  // Python's str.rstrip(): trailing whitespace, here the ASCII kinds prompts end with.
  size_t end = ctx.size();
  while (end > 0 && (ctx[end - 1] == ' ' || ctx[end - 1] == '\t' || ctx[end - 1] == '\n' || ctx[end - 1] == '\r' ||
                     ctx[end - 1] == '\v' || ctx[end - 1] == '\f'))
    --end;
  if (end < ctx.size()) {
    cont = std::string(ctx.substr(end)) + cont;
    ctx = ctx.substr(0, end);
  }
  std::vector<int32_t> whole = tok.encode(std::string(ctx) + cont, /*add_special=*/true);
  out.context = tok.encode(ctx, /*add_special=*/true);
  const size_t n_ctx = std::min(out.context.size(), whole.size());
  out.continuation.assign(whole.begin() + std::ptrdiff_t(n_ctx), whole.end());
  return out;
}

/// What the model is fed for a request: (context + continuation) cut to its last
/// max_length + 1 tokens, without the final one (lm-eval's left truncation).
/// The logits of the last continuation.size() positions predict the
/// continuation; the first `prefix` tokens are the context's (its tail when cut).
struct ModelInput {
  std::vector<int32_t> tokens;  ///< fed to the model
  size_t prefix = 0;            ///< context tokens at the start of `tokens` (>= 1)
};

inline ModelInput model_input(const TokenRequest& r, int64_t max_length) {
  if (r.context.empty()) throw UsageError("a request's context encodes to no tokens (encode_request adds a prefix)");
  if (r.continuation.empty()) throw UsageError("a request's continuation encodes to no tokens");
  const size_t cont = r.continuation.size();
  if (max_length < 1 || cont > size_t(max_length))
    throw LimitError("a continuation of " + std::to_string(cont) + " tokens does not fit the model's max_length " +
                     std::to_string(max_length));
  std::vector<int32_t> all(r.context);
  all.insert(all.end(), r.continuation.begin(), r.continuation.end());
  const size_t keep = std::min(all.size(), size_t(max_length) + 1);
  ModelInput in;
  in.tokens.assign(all.end() - std::ptrdiff_t(keep), all.end() - 1);
  in.prefix = in.tokens.size() + 1 - cont;
  return in;
}

}  // namespace loopus::eval
