// Tokenizer: the interface every vocabulary type implements (SentencePiece-style BPE, byte-level BPE).
// SPDX-License-Identifier: MIT
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace loopus {

/// Text <-> token ids. Implementations are immutable after construction and
/// safe to call from several threads.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Encodes text. add_special: prepend BOS / apply the post-processor as the
  /// model's own config says (llama.cpp `add_bos`, HF `add_special_tokens=True`).
  /// Special-token strings inside the text (e.g. "<|im_start|>") encode as their
  /// single ids when parse_special is true.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                                      bool parse_special = true) const = 0;

  /// The bytes one token contributes when it follows `prev` (-1: none). This
  /// is what a streaming printer emits: SentencePiece drops the leading space
  /// of the first piece after BOS, byte tokens become raw bytes.
  virtual std::string token_to_piece(int32_t id, int32_t prev = -1) const = 0;

  /// Whole-sequence decode (special tokens rendered as text unless skip_special).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

  virtual int32_t n_vocab() const = 0;
  virtual int32_t bos_id() const = 0;   ///< -1 when the vocabulary has none
  virtual int32_t eos_id() const = 0;   ///< -1 when the vocabulary has none
  virtual bool add_bos() const = 0;     ///< whether encode(add_special=true) prepends BOS
  virtual std::string_view kind() const = 0;  ///< "spm", "bpe", ...
};

}  // namespace loopus
