// SpmTokenizer: SentencePiece-style BPE over scored pieces (GGUF "llama" vocab, llama2.c tokenizer.bin).
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/tokenizer/tokenizer.hpp"

namespace loopus {

namespace detail::spm {

/// U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible stand-in for a space.
inline constexpr std::string_view kSpaceMark = "\xE2\x96\x81";

/// Bytes in the UTF-8 sequence a lead byte starts. Stray continuation bytes
/// count as one character so any byte string splits without error; bytes
/// 0xF8..0xFF count as four, as llama.cpp does (it only matters for invalid input).
inline size_t utf8_len(unsigned char lead) {
  static constexpr std::array<uint8_t, 16> kLen = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

inline void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (;;) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

/// "<0xNN>" with two uppercase hex digits -> NN, else -1.
inline int parse_byte_piece(std::string_view t) {
  if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int hi = hex(t[3]), lo = hex(t[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

/// Transparent hash so the piece map can be probed with string_view without
/// building a std::string per lookup (encode does one probe per candidate bigram).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

/// A readable rendering of a piece for error messages (control bytes escaped).
inline std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7F) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += char(c);
    }
  }
  return out;
}

}  // namespace detail::spm

/// SentencePiece BPE tokenizer with the exact behaviour of llama.cpp's
/// LLAMA_VOCAB_TYPE_SPM: spaces become U+2581, a space is prepended to each
/// run of raw text that follows the start or a special token
/// (add_space_prefix), adjacent pieces merge highest-score-first (ties: the
/// leftmost pair), and characters no piece covers fall back to <0xNN> byte
/// tokens. Control / user-defined / unknown token strings are split out of the
/// raw text first (control and unknown ones only when parse_special).
class SpmTokenizer final : public Tokenizer {
 public:
  /// Token kinds, numbered as GGUF `tokenizer.ggml.token_type` stores them.
  enum class TokenType : int32_t {
    kUndefined = 0,
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6,
  };

  /// Everything a vocabulary file provides. Ids are -1 when absent.
  struct Vocab {
    std::vector<std::string> tokens;  ///< piece text, spaces spelled U+2581
    std::vector<float> scores;        ///< merge priority: higher merges first
    std::vector<TokenType> types;     ///< same length as tokens
    int32_t bos = 1;
    int32_t eos = 2;
    int32_t unk = 0;
    int32_t pad = -1;
    bool add_bos = true;
    bool add_eos = false;
    bool add_space_prefix = true;
  };

  /// Validates and indexes a vocabulary. `source` names the file in errors.
  /// Throws Error on size mismatches, duplicate pieces, or ids out of range.
  SpmTokenizer(Vocab v, std::string source) : v_(std::move(v)), source_(std::move(source)) { build(); }

  /// From GGUF metadata as io::open_gguf returns it. Reads tokenizer.ggml.{model
  /// (must be "llama"), tokens, scores, token_type, bos/eos/unknown/padding_token_id,
  /// add_bos_token, add_eos_token, add_space_prefix}. tokens and scores are
  /// required; without token_type the kinds are inferred as for llama2.c files.
  /// Absent ids keep llama.cpp's llama defaults (bos 1, eos 2, unk 0, no pad);
  /// an id of -1 / 0xFFFFFFFF means "none".
  static SpmTokenizer from_gguf_meta(const nlohmann::json& meta, const std::string& path_for_errors);

  /// From a llama2.c `tokenizer.bin` (int32 max_token_length, then per token:
  /// f32 score, int32 byte length, bytes). The file spells spaces as ' ' and
  /// BOS/EOS as "\n<s>\n"/"\n</s>\n"; they are normalised to U+2581 and
  /// "<s>"/"</s>" so the result equals the same model's GGUF vocabulary.
  static SpmTokenizer from_llama2c(const std::string& tokenizer_bin_path, int bos = 1, int eos = 2);
  /// The same from the bytes of such a file held in memory; `path_for_errors` names it in errors.
  static SpmTokenizer from_llama2c_bytes(std::string_view data, const std::string& path_for_errors, int bos = 1,
                                         int eos = 2);

  // Tokenizer interface -----------------------------------------------------

  std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                              bool parse_special = true) const override;

  /// Streaming piece: control and unknown tokens give "" (llama.cpp's
  /// token_to_piece with special=false), user-defined ones their text, byte
  /// tokens the raw byte, normal pieces their text with U+2581 -> ' '. When
  /// `prev` is BOS and add_space_prefix is set, one leading space is dropped
  /// (the prefix encode added). Throws Error for an id outside the vocabulary.
  std::string token_to_piece(int32_t id, int32_t prev = -1) const override;

  /// skip_special = false: identical to llama.cpp's detokenize with
  /// unparse_special (control tokens as their text, e.g. "<s> Hello").
  /// skip_special = true: control and unknown tokens are dropped (as HF
  /// skip_special_tokens), e.g. [BOS, "▁Hello"] -> "Hello".
  /// In both, the first emitted piece loses one leading space when
  /// add_space_prefix is set.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;

  int32_t n_vocab() const override { return int32_t(v_.tokens.size()); }
  int32_t bos_id() const override { return v_.bos; }
  int32_t eos_id() const override { return v_.eos; }
  bool add_bos() const override { return v_.add_bos; }
  std::string_view kind() const override { return "spm"; }

  // SPM-specific accessors ----------------------------------------------------

  int32_t unk_id() const { return v_.unk; }
  int32_t pad_id() const { return v_.pad; }
  bool add_eos() const { return v_.add_eos; }
  bool add_space_prefix() const { return v_.add_space_prefix; }
  /// Raw piece text as stored (U+2581 for spaces). Throws Error when out of range.
  const std::string& token_text(int32_t id) const { return v_.tokens[check_id(id)]; }
  float token_score(int32_t id) const { return v_.scores[check_id(id)]; }
  TokenType token_type(int32_t id) const { return v_.types[check_id(id)]; }
  /// The id of an exact piece text, or -1.
  int32_t find_token(std::string_view piece) const {
    auto it = lookup(piece);
    return it == piece_to_id_.end() ? -1 : it->second;
  }
  /// The token encode() emits for a byte no piece covers (-1: none, then unk).
  int32_t byte_token(uint8_t b) const { return byte_to_id_[b]; }
  const std::string& source() const { return source_; }
  /// Whether encode merges word by word (no piece has U+2581 after another
  /// character); results are the same either way, only speed differs.
  bool merges_per_word() const { return split_words_; }

 private:
  using PieceMap = std::unordered_map<std::string, int32_t, detail::spm::StringHash, std::equal_to<>>;

  Vocab v_;
  std::string source_;
  PieceMap piece_to_id_;
  std::array<int32_t, 256> byte_to_id_{};
  /// Control, user-defined and unknown ids, longest text first, matched in raw text before BPE.
  std::vector<int32_t> specials_;
  /// No piece has U+2581 after another character, so words merge independently (see bpe()).
  bool split_words_ = false;

  PieceMap::const_iterator lookup(std::string_view s) const {
#if defined(__cpp_lib_generic_unordered_lookup) && __cpp_lib_generic_unordered_lookup >= 201811L
    return piece_to_id_.find(s);
#else
    return piece_to_id_.find(std::string(s));
#endif
  }

  size_t check_id(int32_t id) const {
    if (id < 0 || id >= n_vocab())
      throw UsageError(source_ + ": token id " + std::to_string(id) + " out of range [0, " + std::to_string(n_vocab()) +
                       ")");
    return size_t(id);
  }

  bool is_special(int32_t id) const {
    auto t = v_.types[size_t(id)];
    return t == TokenType::kControl || t == TokenType::kUnknown;
  }

  /// The piece text a token renders to, without any leading-space stripping.
  std::string render(int32_t id, bool special_as_text) const {
    const std::string& t = v_.tokens[size_t(id)];
    switch (v_.types[size_t(id)]) {
      case TokenType::kControl:
      case TokenType::kUnknown:
        return special_as_text ? t : std::string();
      case TokenType::kUserDefined:
        return t;
      case TokenType::kNormal: {
        std::string s = t;
        detail::spm::replace_all(s, detail::spm::kSpaceMark, " ");
        return s;
      }
      case TokenType::kByte: {
        int b = detail::spm::parse_byte_piece(t);
        // A byte-typed token whose text is not <0xNN> (never seen in real
        // files) renders as its text rather than garbage.
        return b < 0 ? t : std::string(1, char(b));
      }
      default:
        return std::string();  // unused / undefined: suppressed like control tokens (llama.cpp)
    }
  }

  void build();
  void bpe(std::string_view text, std::vector<int32_t>& out) const;
  void push_bytes(std::string_view s, std::vector<int32_t>& out) const;
};

// ---------------------------------------------------------------------------

inline void SpmTokenizer::build() {
  const size_t n = v_.tokens.size();
  if (n == 0) throw FormatError(source_ + ": empty vocabulary");
  if (n > size_t(INT32_MAX)) throw FormatError(source_ + ": vocabulary too large");
  if (v_.scores.size() != n)
    throw FormatError(source_ + ": " + std::to_string(v_.scores.size()) + " scores for " + std::to_string(n) +
                      " tokens (expected one per token)");
  if (v_.types.size() != n)
    throw FormatError(source_ + ": " + std::to_string(v_.types.size()) + " token types for " + std::to_string(n) +
                      " tokens (expected one per token)");
  auto check_special = [&](int32_t id, const char* what) {
    if (id < -1 || id >= int32_t(n))
      throw FormatError(source_ + ": " + what + " id " + std::to_string(id) + " out of range [0, " + std::to_string(n) +
                        ")");
  };
  check_special(v_.bos, "BOS");
  check_special(v_.eos, "EOS");
  check_special(v_.unk, "unknown-token");
  check_special(v_.pad, "padding");
  if (v_.add_bos && v_.bos < 0) throw FormatError(source_ + ": add_bos_token is set but the vocabulary has no BOS id");
  if (v_.add_eos && v_.eos < 0) throw FormatError(source_ + ": add_eos_token is set but the vocabulary has no EOS id");

  piece_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // llama.cpp renames empty pieces so the text -> id map stays one-to-one.
    if (v_.tokens[i].empty()) v_.tokens[i] = "[EMPTY_" + std::to_string(i) + "]";
    auto [it, fresh] = piece_to_id_.emplace(v_.tokens[i], int32_t(i));
    if (!fresh)
      throw FormatError(source_ + ": duplicate token text '" + detail::spm::printable(v_.tokens[i]) + "' at ids " +
                        std::to_string(it->second) + " and " + std::to_string(i));
  }

  static constexpr char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char name[7] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>', 0};
    int32_t id = find_token(name);
    const char raw = char(b);  // llama.cpp's fallback: a piece that is the byte itself
    if (id < 0) id = find_token(std::string_view(&raw, 1));
    byte_to_id_[size_t(b)] = id;
  }

  split_words_ = true;
  for (const std::string& t : v_.tokens) {
    size_t lead = 0;
    while (t.compare(lead, detail::spm::kSpaceMark.size(), detail::spm::kSpaceMark) == 0)
      lead += detail::spm::kSpaceMark.size();
    if (t.find(detail::spm::kSpaceMark, lead) != std::string::npos) {
      split_words_ = false;
      break;
    }
  }

  for (size_t i = 0; i < n; ++i) {
    auto t = v_.types[i];
    if (t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown)
      specials_.push_back(int32_t(i));
  }
  // Longest first so "<|a|b|>" wins over a shorter special inside it; ties by id for determinism.
  std::stable_sort(specials_.begin(), specials_.end(), [&](int32_t a, int32_t b) {
    return v_.tokens[size_t(a)].size() > v_.tokens[size_t(b)].size();
  });
}

inline void SpmTokenizer::push_bytes(std::string_view s, std::vector<int32_t>& out) const {
  for (unsigned char c : s) {
    int32_t id = byte_to_id_[c];
    if (id < 0) id = v_.unk;
    if (id < 0)
      throw FormatError(source_ + ": byte 0x" + std::string(1, "0123456789ABCDEF"[c >> 4]) +
                        std::string(1, "0123456789ABCDEF"[c & 15]) +
                        " has no piece, no <0xNN> byte token and the vocabulary has no unknown token");
    out.push_back(id);
  }
}

/// The merge loop over one already-escaped fragment. Symbols form a linked
/// list; a max-heap holds candidate pairs keyed by the score of the piece they
/// would form. A popped pair is stale when either side has since changed
/// length (lengths only grow, so a changed side never matches the recorded size).
///
/// When no piece has U+2581 after a non-U+2581 character (true of SentencePiece
/// vocabularies trained with split_by_whitespace, e.g. Llama 2), no merge can
/// cross the point before a word's leading U+2581, so each word is merged on
/// its own: same result, but a small, cache-resident heap.
inline void SpmTokenizer::bpe(std::string_view text, std::vector<int32_t>& out) const {
  struct Sym {
    int32_t prev, next;
    uint32_t off, n;
  };
  struct Pair {
    int32_t left, right;
    float score;
    uint32_t size;
  };
  struct Lower {  // heap order: higher score first, then the leftmost pair
    bool operator()(const Pair& a, const Pair& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };
  if (text.empty()) return;
  if (text.size() > UINT32_MAX) throw LimitError(source_ + ": text fragment too long to tokenize");
  const std::string_view mark = detail::spm::kSpaceMark;

  std::vector<Sym> sym;
  sym.reserve(text.size());
  std::vector<Pair> heap;
  auto try_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    std::string_view piece = text.substr(sym[size_t(l)].off, sym[size_t(l)].n + sym[size_t(r)].n);
    auto it = lookup(piece);
    if (it == piece_to_id_.end()) return;
    heap.push_back({l, r, v_.scores[size_t(it->second)], uint32_t(piece.size())});
    std::push_heap(heap.begin(), heap.end(), Lower{});
  };
  // Merges symbols [first, sym.size()) and emits their tokens.
  auto run_chunk = [&](int32_t first) {
    const int32_t end = int32_t(sym.size());
    if (first >= end) return;
    sym[size_t(first)].prev = -1;
    sym[size_t(end - 1)].next = -1;
    heap.clear();
    for (int32_t i = first + 1; i < end; ++i) try_pair(i - 1, i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), Lower{});
      const Pair p = heap.back();
      heap.pop_back();
      Sym& l = sym[size_t(p.left)];
      Sym& r = sym[size_t(p.right)];
      if (l.n == 0 || r.n == 0 || l.n + r.n != p.size) continue;
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) sym[size_t(r.next)].prev = p.left;
      try_pair(l.prev, p.left);
      try_pair(p.left, l.next);
    }
    // Every merged symbol is a vocabulary piece by construction, so only
    // unmerged single characters can miss; those become byte tokens. (llama.cpp
    // keeps a reverse-merge table for re-splitting, but it is never reached.)
    for (int32_t i = first; i != -1; i = sym[size_t(i)].next) {
      std::string_view s = text.substr(sym[size_t(i)].off, sym[size_t(i)].n);
      auto it = lookup(s);
      if (it != piece_to_id_.end())
        out.push_back(it->second);
      else
        push_bytes(s, out);
    }
  };

  int32_t first = 0;
  bool prev_is_mark = false;
  for (size_t off = 0; off < text.size();) {
    const size_t len = std::min(detail::spm::utf8_len(static_cast<unsigned char>(text[off])), text.size() - off);
    const bool is_mark = text.compare(off, len, mark) == 0;
    if (split_words_ && is_mark && !prev_is_mark && int32_t(sym.size()) > first) {
      run_chunk(first);
      sym.clear();  // indices restart per chunk; offsets stay absolute
      first = 0;
    }
    const int32_t idx = int32_t(sym.size());
    sym.push_back({idx - 1, idx + 1, uint32_t(off), uint32_t(len)});
    prev_is_mark = is_mark;
    off += len;
  }
  run_chunk(first);
}

inline std::vector<int32_t> SpmTokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> out;
  if (add_special && v_.add_bos) out.push_back(v_.bos);

  // Split the text into raw runs and special tokens, special by special,
  // longest first (llama.cpp tokenizer_st_partition without lstrip/rstrip,
  // which llama.cpp only sets for a few named non-SPM models).
  struct Frag {
    size_t off, len;
    int32_t id;  // -1: raw text
  };
  std::vector<Frag> frags;
  if (!text.empty()) frags.push_back({0, text.size(), -1});
  std::vector<Frag> next;
  for (int32_t sid : specials_) {
    if (!parse_special && is_special(sid)) continue;  // user-defined ones are always split out
    const std::string& st = v_.tokens[size_t(sid)];
    bool any = false;
    next.clear();
    for (const Frag& f : frags) {
      if (f.id >= 0) {
        next.push_back(f);
        continue;
      }
      std::string_view raw = text.substr(f.off, f.len);
      size_t pos = 0;
      for (;;) {
        size_t hit = raw.find(st, pos);
        if (hit == std::string_view::npos) break;
        any = true;
        if (hit > pos) next.push_back({f.off + pos, hit - pos, -1});
        next.push_back({0, 0, sid});
        pos = hit + st.size();
      }
      if (pos < raw.size()) next.push_back({f.off + pos, raw.size() - pos, -1});
    }
    if (any) frags.swap(next);
  }

  bool prev_special = true;  // the start of the text counts as "after a special"
  std::string buf;
  for (const Frag& f : frags) {
    if (f.id >= 0) {
      out.push_back(f.id);
      prev_special = true;
      continue;
    }
    buf.clear();
    if (v_.add_space_prefix && prev_special) buf = " ";
    buf.append(text.substr(f.off, f.len));
    detail::spm::replace_all(buf, " ", detail::spm::kSpaceMark);
    bpe(buf, out);
    prev_special = false;
  }

  if (add_special && v_.add_eos) out.push_back(v_.eos);
  return out;
}

inline std::string SpmTokenizer::token_to_piece(int32_t id, int32_t prev) const {
  check_id(id);
  std::string s = render(id, /*special_as_text=*/false);
  if (v_.add_space_prefix && v_.bos >= 0 && prev == v_.bos && !s.empty() && s[0] == ' ') s.erase(0, 1);
  return s;
}

inline std::string SpmTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  bool strip = v_.add_space_prefix;
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && is_special(id)) continue;
    std::string s = render(id, /*special_as_text=*/true);
    if (strip && !s.empty() && s[0] == ' ') s.erase(0, 1);
    strip = false;
    out += s;
  }
  return out;
}

// ---------------------------------------------------------------------------

namespace detail::spm {

inline const nlohmann::json* find_key(const nlohmann::json& meta, const char* key) {
  auto it = meta.find(key);
  return it == meta.end() ? nullptr : &*it;
}

inline const nlohmann::json& require_array(const nlohmann::json& meta, const char* key, const std::string& path) {
  const nlohmann::json* j = find_key(meta, key);
  if (!j) throw FormatError(path + ": GGUF key '" + key + "' missing (needed for the SentencePiece vocabulary)");
  if (!j->is_array()) throw FormatError(path + ": GGUF key '" + key + "' is not an array");
  return *j;
}

/// A token id key: absent -> fallback, -1 or 0xFFFFFFFF (how converters write "none") -> -1.
inline int32_t read_id(const nlohmann::json& meta, const char* key, int32_t fallback, size_t n_tokens,
                       const std::string& path) {
  const nlohmann::json* j = find_key(meta, key);
  if (!j) return fallback;
  if (!j->is_number_integer()) throw FormatError(path + ": GGUF key '" + key + "' is not an integer");
  int64_t v = j->is_number_unsigned() ? int64_t(std::min<uint64_t>(j->get<uint64_t>(), uint64_t(INT64_MAX)))
                                      : j->get<int64_t>();
  if (v == -1 || v == int64_t(UINT32_MAX)) return -1;
  if (v < 0 || v >= int64_t(n_tokens))
    throw FormatError(path + ": GGUF key '" + key + "' = " + std::to_string(v) + " is outside the vocabulary [0, " +
                      std::to_string(n_tokens) + ")");
  return int32_t(v);
}

inline bool read_bool(const nlohmann::json& meta, const char* key, bool fallback, const std::string& path) {
  const nlohmann::json* j = find_key(meta, key);
  if (!j) return fallback;
  if (j->is_boolean()) return j->get<bool>();
  if (j->is_number_integer()) return j->get<int64_t>() != 0;
  throw FormatError(path + ": GGUF key '" + key + "' is not a boolean");
}

/// Token kinds for files that store none (llama2.c): by the conventions of
/// SentencePiece's own export.
inline SpmTokenizer::TokenType infer_type(std::string_view text, int32_t id, int32_t bos, int32_t eos) {
  using T = SpmTokenizer::TokenType;
  if (id == bos || id == eos) return T::kControl;
  if (text == "<unk>") return T::kUnknown;
  if (parse_byte_piece(text) >= 0) return T::kByte;
  return T::kNormal;
}

}  // namespace detail::spm

inline SpmTokenizer SpmTokenizer::from_gguf_meta(const nlohmann::json& meta, const std::string& path) {
  using namespace detail::spm;
  if (!meta.is_object()) throw FormatError(path + ": GGUF metadata is not a key/value object");
  const nlohmann::json* model = find_key(meta, "tokenizer.ggml.model");
  if (!model) throw FormatError(path + ": GGUF key 'tokenizer.ggml.model' missing (file has no tokenizer)");
  if (!model->is_string() || model->get<std::string>() != "llama")
    throw UnsupportedError(path + ": tokenizer.ggml.model is " + model->dump() +
                           ", expected \"llama\" for a SentencePiece vocabulary");

  const auto& toks = require_array(meta, "tokenizer.ggml.tokens", path);
  const auto& scores = require_array(meta, "tokenizer.ggml.scores", path);
  const nlohmann::json* types = find_key(meta, "tokenizer.ggml.token_type");
  if (types && !types->is_array()) throw FormatError(path + ": GGUF key 'tokenizer.ggml.token_type' is not an array");
  const size_t n = toks.size();
  if (n == 0) throw FormatError(path + ": GGUF key 'tokenizer.ggml.tokens' is empty");
  if (scores.size() != n)
    throw FormatError(path + ": 'tokenizer.ggml.scores' has " + std::to_string(scores.size()) +
                      " entries but 'tokenizer.ggml.tokens' has " + std::to_string(n));
  if (types && types->size() != n)
    throw FormatError(path + ": 'tokenizer.ggml.token_type' has " + std::to_string(types->size()) +
                      " entries but 'tokenizer.ggml.tokens' has " + std::to_string(n));

  Vocab v;
  v.bos = read_id(meta, "tokenizer.ggml.bos_token_id", n > 1 ? 1 : -1, n, path);
  v.eos = read_id(meta, "tokenizer.ggml.eos_token_id", n > 2 ? 2 : -1, n, path);
  v.unk = read_id(meta, "tokenizer.ggml.unknown_token_id", 0, n, path);
  v.pad = read_id(meta, "tokenizer.ggml.padding_token_id", -1, n, path);
  v.add_bos = read_bool(meta, "tokenizer.ggml.add_bos_token", true, path);
  v.add_eos = read_bool(meta, "tokenizer.ggml.add_eos_token", false, path);
  v.add_space_prefix = read_bool(meta, "tokenizer.ggml.add_space_prefix", true, path);

  v.tokens.reserve(n);
  v.scores.reserve(n);
  v.types.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& t = toks[i];
    if (!t.is_string())
      throw FormatError(path + ": 'tokenizer.ggml.tokens'[" + std::to_string(i) + "] is not a string");
    v.tokens.push_back(t.get<std::string>());
    const auto& s = scores[i];
    if (!s.is_number())
      throw FormatError(path + ": 'tokenizer.ggml.scores'[" + std::to_string(i) + "] is not a number");
    v.scores.push_back(s.get<float>());
    if (types) {
      const auto& ty = (*types)[i];
      if (!ty.is_number_integer())
        throw FormatError(path + ": 'tokenizer.ggml.token_type'[" + std::to_string(i) + "] is not an integer");
      int64_t k = ty.get<int64_t>();
      // Out-of-range kinds are "undefined", as llama.cpp maps them.
      v.types.push_back(k >= 0 && k <= 6 ? TokenType(int32_t(k)) : TokenType::kUndefined);
    } else {
      v.types.push_back(infer_type(v.tokens.back(), int32_t(i), v.bos, v.eos));
    }
  }
  return SpmTokenizer(std::move(v), path);
}

inline SpmTokenizer SpmTokenizer::from_llama2c(const std::string& path, int bos, int eos) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw IoError(path + ": cannot open llama2.c tokenizer file");
  std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw IoError(path + ": read error");
  return from_llama2c_bytes(data, path, bos, eos);
}

inline SpmTokenizer SpmTokenizer::from_llama2c_bytes(std::string_view data, const std::string& path, int bos, int eos) {
  using namespace detail::spm;
  size_t pos = 0;
  auto read_i32 = [&](const char* what) {
    if (data.size() - pos < 4)
      throw FormatError(path + ": truncated llama2.c tokenizer file (EOF while reading " + std::string(what) +
                        " at byte " + std::to_string(pos) + ")");
    int32_t v;
    std::memcpy(&v, data.data() + pos, 4);
    pos += 4;
    return v;
  };
  int32_t max_len = read_i32("max_token_length");
  if (max_len <= 0 || max_len > (1 << 20))
    throw FormatError(path + ": max_token_length " + std::to_string(max_len) +
                      " is implausible (not a llama2.c tokenizer.bin?)");

  Vocab v;
  while (pos < data.size()) {
    const size_t i = v.tokens.size();
    int32_t bits = read_i32("a token score");
    float score;
    std::memcpy(&score, &bits, 4);
    int32_t len = read_i32("a token length");
    if (len < 0 || size_t(len) > data.size() - pos)
      throw FormatError(path + ": token " + std::to_string(i) + " has length " + std::to_string(len) + " but only " +
                        std::to_string(data.size() - pos) + " bytes remain (truncated or corrupt file)");
    v.tokens.emplace_back(data, pos, size_t(len));
    v.scores.push_back(score);
    pos += size_t(len);
  }
  const int64_t n = int64_t(v.tokens.size());
  if (n == 0) throw FormatError(path + ": llama2.c tokenizer file holds no tokens");
  if (bos < -1 || bos >= n || eos < -1 || eos >= n)
    throw FormatError(path + ": BOS id " + std::to_string(bos) + " / EOS id " + std::to_string(eos) + " outside the " +
                      std::to_string(n) + "-token vocabulary");

  v.bos = bos;
  v.eos = eos;
  v.unk = -1;
  v.types.reserve(size_t(n));
  for (int32_t i = 0; i < int32_t(n); ++i) {
    std::string& t = v.tokens[size_t(i)];
    if (i == bos || i == eos) {
      // llama2.c's export wraps them in newlines for its printer: "\n<s>\n".
      size_t a = t.find_first_not_of('\n');
      size_t b = t.find_last_not_of('\n');
      t = a == std::string::npos ? std::string() : t.substr(a, b - a + 1);
    }
    TokenType ty = infer_type(t, i, bos, eos);
    if (ty == TokenType::kNormal) replace_all(t, " ", kSpaceMark);  // the export turned U+2581 into ' '
    if (ty == TokenType::kUnknown && v.unk < 0) v.unk = i;
    v.types.push_back(ty);
  }
  v.add_bos = bos >= 0;
  v.add_eos = false;
  v.add_space_prefix = true;
  return SpmTokenizer(std::move(v), path);
}

}  // namespace loopus
