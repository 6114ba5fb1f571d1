// Byte-level BPE tokenizer read from HF tokenizer.json or GGUF "gpt2" metadata (Qwen2/3, Llama 3, GPT-2, SmolLM).
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/core/json_check.hpp"
#include "loopus/core/read_file.hpp"
#include "loopus/tokenizer/detail/regex.hpp"
#include "loopus/tokenizer/tokenizer.hpp"
#include "loopus/tokenizer/unicode.hpp"

namespace loopus {

namespace bpe_detail {


/// Fast hash for short byte strings (tokens are a few bytes long).
inline uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xFF51AFD7ED558CCDull);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  if (i < s.size()) {
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
  }
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 32);
}

/// String -> id map with the keys packed in one arena and an open-addressing index: a vocabulary
/// of 150k tokens loads and probes several times faster than with std::unordered_map.
class StrIdMap {
 public:
  void reserve(size_t n) {
    entries_.reserve(n);
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    if (cap > slots_.size()) rehash(cap);
  }
  /// Inserts key -> id and returns true; when the key exists, replaces the id only if
  /// `overwrite` and returns false.
  bool insert(std::string_view key, int32_t id, bool overwrite) {
    if (2 * (entries_.size() + 1) > slots_.size()) rehash(slots_.empty() ? 16 : slots_.size() * 2);
    const uint64_t h = hash_bytes(key);
    size_t i = h & mask_;
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    while (slots_[i].entry >= 0) {
      if (slots_[i].tag == tag && this->key(slots_[i].entry) == key) {
        if (overwrite) entries_[static_cast<size_t>(slots_[i].entry)].id = id;
        return false;
      }
      i = (i + 1) & mask_;
    }
    slots_[i] = Slot{tag, static_cast<int32_t>(entries_.size())};
    entries_.push_back(Entry{arena_.size(), static_cast<uint32_t>(key.size()), id});
    arena_.append(key);
    return true;
  }
  /// The id of `key`, or -1.
  int32_t find(std::string_view key) const {
    if (slots_.empty()) return -1;
    const uint64_t h = hash_bytes(key);
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& sl = slots_[i];
      if (sl.entry < 0) return -1;
      if (sl.tag == tag && this->key(sl.entry) == key) return entries_[static_cast<size_t>(sl.entry)].id;
    }
  }
  size_t size() const { return entries_.size(); }
  /// Calls f(key, id) for every entry in insertion order.
  template <class F>
  void for_each(F&& f) const {
    for (size_t e = 0; e < entries_.size(); ++e) f(key(static_cast<int32_t>(e)), entries_[e].id);
  }

 private:
  struct Slot {
    uint32_t tag = 0;
    int32_t entry = -1;
  };
  struct Entry {
    size_t off;
    uint32_t len;
    int32_t id;
  };
  std::string_view key(int32_t e) const {
    const Entry& en = entries_[static_cast<size_t>(e)];
    return std::string_view(arena_).substr(en.off, en.len);
  }
  void rehash(size_t cap) {
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    for (size_t e = 0; e < entries_.size(); ++e) {
      const uint64_t h = hash_bytes(key(static_cast<int32_t>(e)));
      size_t i = h & mask_;
      while (slots_[i].entry >= 0) i = (i + 1) & mask_;
      slots_[i] = Slot{static_cast<uint32_t>(h >> 32), static_cast<int32_t>(e)};
    }
  }
  std::vector<Slot> slots_;
  std::vector<Entry> entries_;
  std::string arena_;
  size_t mask_ = 0;
};

/// Open-addressing hash map (id_a, id_b) -> (rank, merged id). The merge loop probes it once per
/// adjacent pair, so it is kept flat: key and value side by side (one cache line per probe),
/// linear probing, load <= 1/2.
class PairMap {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    if (cap > slots_.size()) rehash(cap);
  }
  /// Inserts; when the pair exists, replaces it only if `overwrite`.
  void insert(int32_t a, int32_t b, uint32_t rank, int32_t id, bool overwrite) {
    if (2 * (size_ + 1) > slots_.size()) rehash(slots_.empty() ? 16 : slots_.size() * 2);
    const uint64_t k = key(a, b);
    size_t i = slot(k);
    while (slots_[i].key != kEmpty) {
      if (slots_[i].key == k) {
        if (overwrite) slots_[i].val = pack(rank, id);
        return;
      }
      i = (i + 1) & mask_;
    }
    slots_[i] = Slot{k, pack(rank, id)};
    ++size_;
  }
  bool find(int32_t a, int32_t b, uint32_t& rank, int32_t& id) const {
    if (slots_.empty()) return false;
    const uint64_t k = key(a, b);
    for (size_t i = slot(k);; i = (i + 1) & mask_) {
      const Slot& sl = slots_[i];
      if (sl.key == k) {
        rank = static_cast<uint32_t>(sl.val >> 32);
        id = static_cast<int32_t>(static_cast<uint32_t>(sl.val));
        return true;
      }
      if (sl.key == kEmpty) return false;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key = kEmpty;
    uint64_t val = 0;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b);
  }
  static uint64_t pack(uint32_t rank, int32_t id) {
    return (uint64_t{rank} << 32) | static_cast<uint32_t>(id);
  }
  size_t slot(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift_); }
  void rehash(size_t cap) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    shift_ = 64;
    for (size_t c = cap; c > 1; c >>= 1) --shift_;
    size_ = 0;
    for (const Slot& o : old) {
      if (o.key == kEmpty) continue;
      size_t i = slot(o.key);
      while (slots_[i].key != kEmpty) i = (i + 1) & mask_;
      slots_[i] = o;
      ++size_;
    }
  }
  std::vector<Slot> slots_;
  size_t size_ = 0, mask_ = 0;
  int shift_ = 64;
};

/// Bounded pre-token -> ids cache shared by all threads using one tokenizer (one lock per
/// probe). Keys and ids live in flat arenas; when full the cache is emptied, so a long run keeps
/// adapting to the text's current vocabulary.
class WordCache {
 public:
  explicit WordCache(size_t capacity) { set_capacity(capacity); }
  /// Appends the cached ids of `word` to `out`; false on a miss.
  bool get(std::string_view word, std::vector<int32_t>& out) const {
    std::lock_guard<std::mutex> lock(mu_);
    const int32_t e = index_.find(word);
    if (e < 0) return false;
    const auto [off, len] = spans_[static_cast<size_t>(e)];
    out.insert(out.end(), ids_.begin() + off, ids_.begin() + off + len);
    return true;
  }
  void put(std::string_view word, const int32_t* ids, size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    if (capacity_ == 0) return;
    if (spans_.size() >= capacity_) clear_locked();
    if (!index_.insert(word, static_cast<int32_t>(spans_.size()), false)) return;
    spans_.emplace_back(static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(n));
    ids_.insert(ids_.end(), ids, ids + n);
  }
  void set_capacity(size_t c) {
    std::lock_guard<std::mutex> lock(mu_);
    capacity_ = std::min<size_t>(c, size_t{1} << 30);
    clear_locked();
  }
  size_t capacity() const {
    std::lock_guard<std::mutex> lock(mu_);
    return capacity_;
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return spans_.size();
  }

 private:
  void clear_locked() {
    index_ = StrIdMap();
    if (capacity_ > 0) index_.reserve(capacity_);
    spans_.clear();
    ids_.clear();
  }
  mutable std::mutex mu_;
  size_t capacity_ = 0;
  StrIdMap index_;                                  // word -> entry
  std::vector<std::pair<uint32_t, uint32_t>> spans_;  // entry -> (offset, count) in ids_
  std::vector<int32_t> ids_;
};

/// How a Split pre-tokenizer treats its matches (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreStep {
  enum class Kind { kSplit, kByteLevel } kind = Kind::kSplit;
  tokenizer_detail::Regex regex;  ///< Split pattern, or GPT-2's pattern for ByteLevel(use_regex)
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  ///< ByteLevel only
  bool use_regex = false;         ///< ByteLevel only
};

/// GPT-2's pre-tokenizer regex (HF ByteLevel with use_regex=true).
inline constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/// Reused buffers for one encode() call.
struct Scratch {
  struct Sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  struct Cand {
    uint32_t rank;
    int32_t pos;
    int32_t left, right, merged;
  };
  std::vector<Sym> syms;
  std::vector<Cand> heap;
  std::vector<uint32_t> rank;   // small words: rank of the pair starting at each symbol
  std::vector<int32_t> merged;  // ... and the id it merges into
  std::vector<std::string_view> pieces, next_pieces;
  std::deque<std::string> arena;  // owns pieces that had a prefix space added
};

inline std::string read_file(const std::string& path) { return read_file_bytes(path, "tokenizer file"); }

/// tokenizer.json with model.vocab and model.merges held as plain vectors: a DOM for the 150k
/// vocabulary and merges costs more than the rest of loading together.
struct TokenizerJson {
  nlohmann::json rest;  ///< the document (its model.vocab / model.merges are not used)
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  bool has_vocab = false;
};

/// Splits a merge written "a b" (llama.cpp and HF both cut at the first space after byte 0).
inline std::pair<std::string, std::string> split_merge(const std::string& s, size_t rank, const std::string& where) {
  const size_t sp = s.find(' ', 1);
  if (sp == std::string::npos)
    throw FormatError(where + ": merge " + std::to_string(rank) + " '" + s + "' is not \"a b\"");
  return {s.substr(0, sp), s.substr(sp + 1)};
}

/// SAX handler building TokenizerJson: a DOM for everything but model.vocab / model.merges.
class TokenizerJsonSax {
 public:
  using json = nlohmann::json;
  /// dom_budget: the most arrays and objects the DOM of everything but the vocabulary and merges may hold.
  TokenizerJsonSax(TokenizerJson& out, const std::string& where, size_t dom_budget = SIZE_MAX)
      : out_(out), where_(where), dom_budget_(dom_budget) {}

  bool null() { return scalar(json()); }
  bool boolean(bool v) { return scalar(json(v)); }
  bool number_integer(json::number_integer_t v) {
    if (mode_ == Mode::kVocab) {
      out_.vocab.emplace_back(std::move(vocab_key_), v);
      return true;
    }
    return scalar(json(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (mode_ == Mode::kVocab) {
      out_.vocab.emplace_back(std::move(vocab_key_), v > uint64_t{INT64_MAX} ? int64_t{-1} : static_cast<int64_t>(v));
      return true;
    }
    return scalar(json(v));
  }
  bool number_float(json::number_float_t v, const json::string_t&) { return scalar(json(v)); }
  bool string(json::string_t& v) {
    if (mode_ == Mode::kMerges) {
      out_.merges.push_back(split_merge(v, out_.merges.size(), where_));
      return true;
    }
    if (mode_ == Mode::kMergePair) {
      pair_.push_back(std::move(v));
      return true;
    }
    return scalar(json(std::move(v)));
  }
  bool binary(json::binary_t&) { return bad("binary value"); }
  bool start_object(std::size_t) {
    if (mode_ != Mode::kDom) return bad("object");
    if (stack_.size() == 2 && stack_[1] == model_ && key_ == "vocab") {
      mode_ = Mode::kVocab;
      out_.has_vocab = true;
      return true;
    }
    const bool is_model = stack_.size() == 1 && key_ == "model";
    count_container();
    json* p = put(json::object());
    if (is_model) model_ = p;
    stack_.push_back(p);
    return true;
  }
  bool key(json::string_t& k) {
    if (mode_ == Mode::kVocab) vocab_key_ = std::move(k);
    else key_ = std::move(k);
    return true;
  }
  bool end_object() {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kDom;
      return true;
    }
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    if (mode_ == Mode::kMerges) {
      mode_ = Mode::kMergePair;
      pair_.clear();
      return true;
    }
    if (mode_ != Mode::kDom) return bad("array");
    if (stack_.size() == 2 && stack_[1] == model_ && key_ == "merges") {
      mode_ = Mode::kMerges;
      return true;
    }
    count_container();
    stack_.push_back(put(json::array()));
    return true;
  }
  bool end_array() {
    if (mode_ == Mode::kMergePair) {
      if (pair_.size() != 2)
        throw FormatError(where_ + ": merge " + std::to_string(out_.merges.size()) + " is not a pair of strings");
      out_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      mode_ = Mode::kMerges;
      return true;
    }
    if (mode_ == Mode::kMerges) {
      mode_ = Mode::kDom;
      return true;
    }
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::json::exception& e) {
    throw FormatError(where_ + ": not valid JSON (byte " + std::to_string(pos) + "): " + e.what());
  }

 private:
  enum class Mode { kDom, kVocab, kMerges, kMergePair };
  bool bad(const char* what) {
    const char* where = mode_ == Mode::kVocab ? "model.vocab" : "model.merges";
    throw FormatError(where_ + ": unexpected " + what + " in " + where);
  }
  void count_container() {
    if (++dom_containers_ > dom_budget_)
      throw LimitError(where_ + ": more than " + std::to_string(dom_budget_) +
                       " JSON arrays and objects outside model.vocab and model.merges (loopus allows one per " +
                       std::to_string(kJsonBytesPerContainer) + " bytes of the file)");
  }
  bool scalar(json&& v) {
    if (mode_ != Mode::kDom) return bad("value");
    put(std::move(v));
    return true;
  }
  json* put(json&& v) {
    if (stack_.empty()) {
      out_.rest = std::move(v);
      return &out_.rest;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }
  TokenizerJson& out_;
  const std::string& where_;
  Mode mode_ = Mode::kDom;
  std::vector<json*> stack_;
  json* model_ = nullptr;
  std::string key_, vocab_key_;
  std::vector<std::string> pair_;
  size_t dom_budget_, dom_containers_ = 0;
};

inline TokenizerJson parse_tokenizer_json(const std::string& text, const std::string& where) {
  TokenizerJson out;
  check_json_text(text, where, /*dom=*/false);  // vocab and merges become vectors, the rest a DOM:
  TokenizerJsonSax sax(out, where, json_container_budget(text.size()));  // the handler counts its containers
  nlohmann::json::sax_parse(text, &sax);
  return out;
}

/// The same from an already parsed document (copies only the vocabulary and merges).
inline TokenizerJson tokenizer_json_from_dom(const nlohmann::json& tok, const std::string& where) {
  TokenizerJson out;
  out.rest = nlohmann::json::object();
  if (!tok.is_object()) throw FormatError(where + ": tokenizer.json is not a JSON object");
  for (auto it = tok.begin(); it != tok.end(); ++it) {
    if (it.key() != "model" || !it->is_object()) {
      out.rest[it.key()] = *it;
      continue;
    }
    nlohmann::json& model = out.rest["model"] = nlohmann::json::object();
    for (auto m = it->begin(); m != it->end(); ++m) {
      if (m.key() == "vocab") {
        if (!m->is_object()) throw FormatError(where + ": model.vocab is not an object");
        out.has_vocab = true;
        out.vocab.reserve(m->size());
        for (auto v = m->begin(); v != m->end(); ++v) {
          if (!v->is_number_integer()) throw FormatError(where + ": vocab entry '" + v.key() + "' has no integer id");
          out.vocab.emplace_back(v.key(), v->get<int64_t>());
        }
      } else if (m.key() == "merges") {
        if (!m->is_array()) throw FormatError(where + ": model.merges is not an array");
        out.merges.reserve(m->size());
        for (const auto& x : *m) {
          if (x.is_string()) {
            out.merges.push_back(split_merge(x.get<std::string>(), out.merges.size(), where));
          } else if (x.is_array() && x.size() == 2 && x[0].is_string() && x[1].is_string()) {
            out.merges.emplace_back(x[0].get<std::string>(), x[1].get<std::string>());
          } else {
            throw FormatError(where + ": merge " + std::to_string(out.merges.size()) +
                              " is neither \"a b\" nor [\"a\", \"b\"]");
          }
        }
      } else {
        model[m.key()] = *m;
      }
    }
  }
  return out;
}

}  // namespace bpe_detail

/// Byte-level BPE as HF `tokenizers` runs it: added tokens are cut out first, then the normalizer
/// (NFC), the pre-tokenizer chain (Split regexes, ByteLevel) and the BPE merges, with ranks,
/// `ignore_merges` and a bounded word cache. Immutable after construction except for the cache,
/// which is internally locked, so encode/decode may be called from several threads.
class BpeTokenizer final : public Tokenizer {
 public:
  /// One entry of tokenizer.json's "added_tokens" (or a GGUF control / user-defined token).
  struct AddedToken {
    std::string content;
    int32_t id = -1;
    bool special = false;      ///< skipped by decode(skip_special) and by encode(parse_special=false)
    bool lstrip = false;       ///< the match swallows whitespace on its left
    bool rstrip = false;       ///< ... and on its right
    bool single_word = false;  ///< only matches when not inside a word
    bool normalized = false;   ///< matched on the normalized text instead of the raw text
  };

  /// Default capacity of the word cache (entries).
  static constexpr size_t kDefaultCacheCapacity = 1 << 16;
  /// Pre-tokens longer than this (bytes) are not cached.
  static constexpr size_t kMaxCachedWordBytes = 128;

  BpeTokenizer(BpeTokenizer&&) noexcept = default;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept = default;

  /// Loads an HF tokenizer.json (model type "BPE"). A tokenizer_config.json in the same folder,
  /// when present, supplies bos/eos tokens, add_bos_token / add_eos_token and
  /// clean_up_tokenization_spaces.
  static BpeTokenizer from_json_file(const std::string& tokenizer_json_path) {
    const bpe_detail::TokenizerJson tj =
        bpe_detail::parse_tokenizer_json(bpe_detail::read_file(tokenizer_json_path), tokenizer_json_path);
    nlohmann::json cfg;
    const auto cfg_path = std::filesystem::path(tokenizer_json_path).parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (std::filesystem::exists(cfg_path, ec)) {
      try {
        const std::string cfg_text = bpe_detail::read_file(cfg_path.string());
        check_json_text(cfg_text, cfg_path.string());
        cfg = nlohmann::json::parse(cfg_text);
      } catch (const nlohmann::json::exception& e) {
        throw FormatError(cfg_path.string() + ": not valid JSON: " + e.what());
      }
    }
    BpeTokenizer t;
    t.load_json(tj, cfg, tokenizer_json_path);
    return t;
  }

  /// Builds from the text of a tokenizer.json held in memory (and tokenizer_config.json, or
  /// null), as from_json_file does. `path_for_errors` names the source in error messages.
  static BpeTokenizer from_json_text(const std::string& tokenizer_json, const nlohmann::json& config,
                                     const std::string& path_for_errors) {
    const bpe_detail::TokenizerJson tj = bpe_detail::parse_tokenizer_json(tokenizer_json, path_for_errors);
    BpeTokenizer t;
    t.load_json(tj, config, path_for_errors);
    return t;
  }

  /// Builds from parsed tokenizer.json (and tokenizer_config.json, or null). `path_for_errors`
  /// names the source in error messages. (from_json_file is faster: it never builds a DOM for
  /// the vocabulary and merges.)
  static BpeTokenizer from_json(const nlohmann::json& tok, const nlohmann::json& config,
                                const std::string& path_for_errors) {
    BpeTokenizer t;
    t.load_json(bpe_detail::tokenizer_json_from_dom(tok, path_for_errors), config, path_for_errors);
    return t;
  }

  /// Builds from GGUF metadata (key -> JSON value, as io::open_gguf returns) with
  /// tokenizer.ggml.model == "gpt2". The pre-tokenizer comes from tokenizer.ggml.pre.
  static BpeTokenizer from_gguf_meta(const nlohmann::json& meta, const std::string& path_for_errors) {
    BpeTokenizer t;
    t.load_gguf(meta, path_for_errors);
    return t;
  }

  // ---- Tokenizer ------------------------------------------------------------------------------

  std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                              bool parse_special = true) const override {
    std::vector<int32_t> ids;
    if (add_special) ids = prefix_ids_;
    ids.reserve(ids.size() + text.size() / 3 + 8);
    std::string repaired;
    if (!unicode::is_valid_utf8(text)) {
      // HF only ever sees valid Unicode; treat bad bytes as Python's errors="replace" would.
      repaired = unicode::to_valid_utf8(text);
      text = repaired;
    }
    // Per-thread buffers: encode() is const and called from many threads; nothing in it
    // re-enters encode(), so one Scratch per thread is enough and saves the allocations.
    thread_local bpe_detail::Scratch sc;
    split_added(text, /*normalized_tokens=*/false, parse_special,
                [&](std::string_view seg) { encode_segment(seg, parse_special, sc, ids); },
                [&](int32_t id) { ids.push_back(id); });
    if (add_special) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
  }

  std::string token_to_piece(int32_t id, int32_t /*prev*/ = -1) const override {
    if (id < 0 || id >= n_vocab()) {
      throw UsageError("BpeTokenizer::token_to_piece: token id " + std::to_string(id) +
                       " is outside the vocabulary [0, " + std::to_string(n_vocab()) + ")");
    }
    return id_to_bytes_[static_cast<size_t>(id)];
  }

  /// Concatenated token bytes (ids outside the vocabulary are dropped, as HF does), repaired to
  /// valid UTF-8 with U+FFFD, then cleaned of spaces before punctuation when the config asks
  /// for clean_up_tokenization_spaces (transformers 4.x behaviour; see clean_up_spaces()).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override {
    std::string bytes;
    bool first = true;
    for (int32_t id : ids) {
      if (id < 0 || id >= n_vocab()) continue;
      const size_t u = static_cast<size_t>(id);
      if (skip_special && is_special_[u]) continue;
      if (id_to_token_[u].empty() && id_to_bytes_[u].empty()) continue;  // hole in the id space
      if (!decode_byte_level_ && !first) bytes += ' ';  // no decoder: HF joins tokens with spaces
      bytes += id_to_bytes_[u];
      first = false;
    }
    std::string text = unicode::is_valid_utf8(bytes) ? std::move(bytes) : unicode::to_valid_utf8(bytes);
    if (clean_up_spaces_) text = clean_up_tokenization(text);
    return text;
  }

  int32_t n_vocab() const override { return static_cast<int32_t>(id_to_token_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  bool add_bos() const override { return !prefix_ids_.empty() && bos_id_ >= 0 && prefix_ids_[0] == bos_id_; }
  std::string_view kind() const override { return "bpe"; }

  // ---- extras ---------------------------------------------------------------------------------

  /// Id of a token given in vocabulary spelling ("Ġthe", "<|im_start|>"); -1 when absent.
  /// Added tokens take precedence, as in HF.
  int32_t token_to_id(std::string_view token) const {
    const int32_t a = added_by_content_.find(token);
    return a >= 0 ? a : vocab_.find(token);
  }
  /// Vocabulary spelling of `id` ("" for ids that no token uses).
  const std::string& id_to_token(int32_t id) const {
    if (id < 0 || id >= n_vocab()) {
      throw UsageError("BpeTokenizer::id_to_token: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                       std::to_string(n_vocab()) + ")");
    }
    return id_to_token_[static_cast<size_t>(id)];
  }
  /// True for added tokens flagged special (HF) / control tokens (GGUF).
  bool is_special(int32_t id) const { return id >= 0 && id < n_vocab() && is_special_[static_cast<size_t>(id)]; }
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  size_t n_merges() const { return merges_.size(); }
  /// Token ids encode(add_special=true) puts before / after the text.
  const std::vector<int32_t>& special_prefix() const { return prefix_ids_; }
  const std::vector<int32_t>& special_suffix() const { return suffix_ids_; }
  /// Whether decode() removes spaces before punctuation (tokenizer_config.json
  /// clean_up_tokenization_spaces, or llama.cpp's per-pre-tokenizer default for GGUF).
  /// transformers >= 5 ignores that setting for BPE; set false to get its output. Configure
  /// before sharing the tokenizer between threads.
  bool clean_up_spaces() const { return clean_up_spaces_; }
  void set_clean_up_spaces(bool on) { clean_up_spaces_ = on; }
  /// Word cache capacity in entries (0 disables the cache). Clears the cache.
  void set_cache_capacity(size_t entries) { cache_->set_capacity(entries); }
  size_t cache_capacity() const { return cache_->capacity(); }
  size_t cache_size() const { return cache_->size(); }
  /// Pre-tokens of `text` (raw bytes, before the byte-level mapping), after added-token
  /// extraction, normalization and the pre-tokenizer chain; added tokens appear as their content.
  std::vector<std::string> pre_tokenize(std::string_view text, bool parse_special = true) const {
    std::vector<std::string> out;
    std::string repaired;
    if (!unicode::is_valid_utf8(text)) {
      repaired = unicode::to_valid_utf8(text);
      text = repaired;
    }
    bpe_detail::Scratch sc;
    auto on_text = [&](std::string_view seg) {
      std::string norm;
      if (nfc_ && !unicode::is_nfc_quick(seg)) {
        norm = unicode::nfc(seg);
        seg = norm;
      }
      split_added(seg, true, parse_special,
                  [&](std::string_view s) {
                    run_pre_tokenizers(s, sc);
                    for (auto p : sc.pieces) out.emplace_back(p);
                  },
                  [&](int32_t id) { out.push_back(id_to_token_[static_cast<size_t>(id)]); });
    };
    split_added(text, false, parse_special, on_text,
                [&](int32_t id) { out.push_back(id_to_token_[static_cast<size_t>(id)]); });
    return out;
  }

  /// transformers' clean_up_tokenization: drops the space before . ? ! , and English
  /// contractions, applied in the same order.
  static std::string clean_up_tokenization(std::string s) {
    static const std::pair<std::string_view, std::string_view> kRules[] = {
        {" .", "."},     {" ?", "?"},     {" !", "!"},     {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"},   {" 's", "'s"},   {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : kRules) {
      std::string out;
      out.reserve(s.size());
      size_t pos = 0;
      while (true) {
        const size_t hit = s.find(from, pos);
        if (hit == std::string::npos) break;
        out.append(s, pos, hit - pos);
        out += to;
        pos = hit + from.size();
      }
      out.append(s, pos, std::string::npos);
      s = std::move(out);
    }
    return s;
  }

 private:
  BpeTokenizer() : cache_(std::make_unique<bpe_detail::WordCache>(kDefaultCacheCapacity)) {}

  // ---- encoding -------------------------------------------------------------------------------

  struct TrieNode {
    std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
    int32_t added = -1;                                   // index into added_ when a token ends here
  };

  /// Cuts `text` at added tokens (the normalized or the non-normalized set): calls on_text for
  /// the text between matches and on_token for each matched id. Leftmost-longest matching;
  /// lstrip/rstrip/single_word as HF applies them.
  template <class OnText, class OnToken>
  void split_added(std::string_view text, bool normalized_tokens, bool parse_special,
                   OnText&& on_text, OnToken&& on_token) const {
    const std::vector<TrieNode>& trie = normalized_tokens ? trie_norm_ : trie_raw_;
    if (trie.size() <= 1) {
      if (!text.empty()) on_text(text);
      return;
    }
    const auto& first = normalized_tokens ? first_norm_ : first_raw_;
    size_t emitted = 0;  // text before this offset has been passed on
    size_t i = 0;
    while (i < text.size()) {
      if (!first[static_cast<unsigned char>(text[i])]) {  // no added token starts with this byte
        ++i;
        continue;
      }
      // Longest added token starting at i.
      int32_t best = -1;
      size_t best_len = 0;
      int32_t node = 0;
      for (size_t k = i; k < text.size(); ++k) {
        const auto& nx = trie[static_cast<size_t>(node)].next;
        const unsigned char c = static_cast<unsigned char>(text[k]);
        auto it = std::lower_bound(nx.begin(), nx.end(), c,
                                   [](const std::pair<unsigned char, int32_t>& p, unsigned char v) { return p.first < v; });
        if (it == nx.end() || it->first != c) break;
        node = it->second;
        const int32_t a = trie[static_cast<size_t>(node)].added;
        if (a >= 0) {
          best = a;
          best_len = k + 1 - i;
        }
      }
      if (best < 0) {
        ++i;
        continue;
      }
      const AddedToken& tok = added_[static_cast<size_t>(best)];
      size_t start = i, stop = i + best_len;
      // Like HF's matcher (non-overlapping leftmost-longest), a rejected match is stepped over
      // as a whole and stays plain text: a special token when specials are not parsed, or a
      // single_word token touching a word.
      if (!parse_special && tok.special) {
        i = stop;
        continue;
      }
      if (tok.single_word) {
        const bool left_ok = start == 0 || !ends_with_word_char(text.substr(0, start));
        const bool right_ok = stop == text.size() || !starts_with_word_char(text.substr(stop));
        if (!left_ok || !right_ok) {
          i = stop;
          continue;
        }
      }
      if (tok.lstrip) {
        while (start > emitted) {
          size_t p = start - 1;
          while (p > emitted && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
          size_t q = p;
          if (!unicode::is_white_space(unicode::next_code_point(text, q))) break;
          start = p;
        }
      }
      if (tok.rstrip) {
        while (stop < text.size()) {
          size_t q = stop;
          if (!unicode::is_white_space(unicode::next_code_point(text, q))) break;
          stop = q;
        }
      }
      if (start > emitted) on_text(text.substr(emitted, start - emitted));
      on_token(tok.id);
      emitted = stop;
      i = stop;
    }
    if (emitted < text.size()) on_text(text.substr(emitted));
  }

  bool is_word_char_at(std::string_view s, size_t i) const {
    size_t q = i;
    const uint32_t cp = unicode::next_code_point(s, q);
    if (cp == '_') return true;
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
    // Beyond ASCII, ask PCRE2's Unicode tables.
    bool hit = false;
    word_char_re_.for_each_match(s.substr(i, q - i), [&](size_t, size_t) { hit = true; });
    return hit;
  }
  bool ends_with_word_char(std::string_view s) const {
    if (s.empty()) return false;
    size_t p = s.size() - 1;
    while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
    return is_word_char_at(s, p);
  }
  bool starts_with_word_char(std::string_view s) const { return !s.empty() && is_word_char_at(s, 0); }

  void encode_segment(std::string_view seg, bool parse_special, bpe_detail::Scratch& sc,
                      std::vector<int32_t>& ids) const {
    std::string norm;
    if (nfc_ && !unicode::is_nfc_quick(seg)) {
      norm = unicode::nfc(seg);
      seg = norm;
    }
    split_added(seg, /*normalized_tokens=*/true, parse_special,
                [&](std::string_view s) {
                  run_pre_tokenizers(s, sc);
                  for (std::string_view p : sc.pieces) encode_word(p, sc, ids);
                },
                [&](int32_t id) { ids.push_back(id); });
  }

  /// Applies the pre-tokenizer chain to `text`; the result is left in sc.pieces.
  void run_pre_tokenizers(std::string_view text, bpe_detail::Scratch& sc) const {
    using bpe_detail::PreStep;
    sc.pieces.clear();
    sc.arena.clear();
    sc.pieces.push_back(text);
    for (const PreStep& st : pre_steps_) {
      sc.next_pieces.clear();
      for (std::string_view p : sc.pieces) {
        if (p.empty()) continue;
        if (st.kind == PreStep::Kind::kByteLevel) {
          if (st.add_prefix_space && p[0] != ' ') {
            sc.arena.emplace_back(" ");
            sc.arena.back().append(p);
            p = sc.arena.back();
          }
          if (st.use_regex) {
            split_piece(p, st.regex, bpe_detail::SplitBehavior::kIsolated, false, sc.next_pieces);
          } else {
            sc.next_pieces.push_back(p);
          }
        } else {
          split_piece(p, st.regex, st.behavior, st.invert, sc.next_pieces);
        }
      }
      std::swap(sc.pieces, sc.next_pieces);
    }
  }

  static void split_piece(std::string_view p, const tokenizer_detail::Regex& re,
                          bpe_detail::SplitBehavior behavior, bool invert,
                          std::vector<std::string_view>& out) {
    using bpe_detail::SplitBehavior;
    if (p.empty()) return;
    // Common case first: Isolated keeps every match and every gap as its own piece.
    if (behavior == SplitBehavior::kIsolated) {
      size_t prev = 0;
      re.for_each_match(p, [&](size_t b, size_t e) {
        if (b > prev) out.push_back(p.substr(prev, b - prev));
        out.push_back(p.substr(b, e - b));
        prev = e;
      });
      if (prev < p.size()) out.push_back(p.substr(prev));
      return;
    }
    struct Part {
      size_t b, e;
      bool match;
    };
    std::vector<Part> parts;
    size_t prev = 0;
    re.for_each_match(p, [&](size_t b, size_t e) {
      if (b > prev) parts.push_back({prev, b, invert});
      parts.push_back({b, e, !invert});
      prev = e;
    });
    if (prev < p.size()) parts.push_back({prev, p.size(), invert});
    std::vector<std::pair<size_t, size_t>> ranges;
    switch (behavior) {
      case SplitBehavior::kRemoved:
        for (const auto& x : parts)
          if (!x.match) ranges.emplace_back(x.b, x.e);
        break;
      case SplitBehavior::kIsolated:
        for (const auto& x : parts) ranges.emplace_back(x.b, x.e);
        break;
      case SplitBehavior::kContiguous: {
        bool prev_match = false;
        for (const auto& x : parts) {
          if (x.match && prev_match && !ranges.empty()) ranges.back().second = x.e;
          else ranges.emplace_back(x.b, x.e);
          prev_match = x.match;
        }
        break;
      }
      case SplitBehavior::kMergedWithPrevious: {
        bool prev_match = false;
        for (const auto& x : parts) {
          if (x.match && !prev_match && !ranges.empty()) ranges.back().second = x.e;
          else ranges.emplace_back(x.b, x.e);
          prev_match = x.match;
        }
        break;
      }
      case SplitBehavior::kMergedWithNext: {
        bool prev_match = false;
        std::vector<std::pair<size_t, size_t>> rev;
        for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
          if (it->match && !prev_match && !rev.empty()) rev.back().first = it->b;
          else rev.emplace_back(it->b, it->e);
          prev_match = it->match;
        }
        ranges.assign(rev.rbegin(), rev.rend());
        break;
      }
    }
    for (const auto& [b, e] : ranges)
      if (e > b) out.push_back(p.substr(b, e - b));
  }

  /// BPE of one pre-token (raw bytes); appends ids.
  void encode_word(std::string_view w, bpe_detail::Scratch& sc, std::vector<int32_t>& ids) const {
    if (w.empty()) return;
    if (ignore_merges_) {
      const int32_t id = (byte_level_ ? bytes_to_id_ : vocab_).find(w);
      if (id >= 0) {
        ids.push_back(id);
        return;
      }
    }
    if (byte_level_ && w.size() == 1 && simple_units_) {
      const int32_t id = byte_to_id_[static_cast<unsigned char>(w[0])];
      if (id >= 0) {
        ids.push_back(id);
        return;
      }
    }
    const bool cacheable = w.size() <= kMaxCachedWordBytes;
    if (cacheable && cache_->get(w, ids)) return;
    const size_t before = ids.size();
    merge_word(w, sc, ids);
    if (cacheable) cache_->put(w, ids.data() + before, ids.size() - before);
  }

  /// Initial symbols (one per byte, or per character without ByteLevel) and the merge loop:
  /// always merge the lowest-ranked adjacent pair, leftmost first (HF's Word::merge_all).
  void merge_word(std::string_view w, bpe_detail::Scratch& sc, std::vector<int32_t>& ids) const {
    using Sym = bpe_detail::Scratch::Sym;
    auto& syms = sc.syms;
    syms.clear();
    if (byte_level_ && simple_units_) {
      bool prev_unk = false;
      for (unsigned char c : w) {
        const int32_t id = byte_to_id_[c];
        if (id >= 0) {
          syms.push_back(Sym{id, 0, 0, true});
          prev_unk = false;
        } else {
          add_unknown(syms, prev_unk);
        }
      }
    } else {
      initial_symbols_slow(w, syms);
    }
    const int32_t n = static_cast<int32_t>(syms.size());
    if (n == 0) return;
    for (int32_t k = 0; k < n; ++k) {
      syms[static_cast<size_t>(k)].prev = k - 1;
      syms[static_cast<size_t>(k)].next = (k + 1 < n) ? k + 1 : -1;
    }
    if (n <= kSmallWord) {
      merge_small(sc);
    } else {
      merge_heap(sc);
    }
    for (const Sym& s : syms)
      if (s.alive) ids.push_back(s.id);
  }

  /// Words up to this many symbols use a linear scan over cached pair ranks (no heap traffic).
  static constexpr int32_t kSmallWord = 24;

  /// Linear-scan merge for short words: O(n) per merge, with each pair's rank looked up once.
  void merge_small(bpe_detail::Scratch& sc) const {
    auto& syms = sc.syms;
    const int32_t n = static_cast<int32_t>(syms.size());
    auto& rank = sc.rank;
    auto& merged = sc.merged;
    rank.resize(static_cast<size_t>(n));
    merged.resize(static_cast<size_t>(n));
    constexpr uint32_t kNone = ~uint32_t{0};
    const auto update = [&](int32_t l) {
      const size_t ul = static_cast<size_t>(l);
      const int32_t r = syms[ul].next;
      if (r < 0 || !merges_.find(syms[ul].id, syms[static_cast<size_t>(r)].id, rank[ul], merged[ul]))
        rank[ul] = kNone;
    };
    for (int32_t k = 0; k < n; ++k) update(k);
    while (true) {
      uint32_t best_rank = kNone;
      int32_t best = -1;
      for (int32_t k = 0; k >= 0; k = syms[static_cast<size_t>(k)].next) {
        if (rank[static_cast<size_t>(k)] < best_rank) {  // strict: ties keep the leftmost
          best_rank = rank[static_cast<size_t>(k)];
          best = k;
        }
      }
      if (best < 0) return;
      auto& left = syms[static_cast<size_t>(best)];
      auto& right = syms[static_cast<size_t>(left.next)];
      left.id = merged[static_cast<size_t>(best)];
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) syms[static_cast<size_t>(right.next)].prev = best;
      if (left.prev >= 0) update(left.prev);
      update(best);
    }
  }

  /// Priority-queue merge (HF's Word::merge_all): pop the lowest (rank, position) pair, skip it
  /// when stale, merge, queue the two new neighbour pairs. O(n log n).
  void merge_heap(bpe_detail::Scratch& sc) const {
    using Sym = bpe_detail::Scratch::Sym;
    using Cand = bpe_detail::Scratch::Cand;
    auto& syms = sc.syms;
    const int32_t n = static_cast<int32_t>(syms.size());
    auto& heap = sc.heap;
    heap.clear();
    const auto later = [](const Cand& x, const Cand& y) {
      return x.rank > y.rank || (x.rank == y.rank && x.pos > y.pos);
    };
    const auto push_pair = [&](int32_t l) {
      const int32_t r = syms[static_cast<size_t>(l)].next;
      if (r < 0) return;
      uint32_t rank;
      int32_t merged;
      const int32_t a = syms[static_cast<size_t>(l)].id, b = syms[static_cast<size_t>(r)].id;
      if (!merges_.find(a, b, rank, merged)) return;
      heap.push_back(Cand{rank, l, a, b, merged});
      std::push_heap(heap.begin(), heap.end(), later);
    };
    for (int32_t k = 0; k + 1 < n; ++k) push_pair(k);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), later);
      const Cand c = heap.back();
      heap.pop_back();
      Sym& left = syms[static_cast<size_t>(c.pos)];
      if (!left.alive || left.id != c.left || left.next < 0) continue;
      Sym& right = syms[static_cast<size_t>(left.next)];
      if (right.id != c.right) continue;  // stale: a neighbour changed since this was queued
      left.id = c.merged;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) syms[static_cast<size_t>(right.next)].prev = c.pos;
      if (left.prev >= 0) push_pair(left.prev);
      push_pair(c.pos);
    }
  }

  /// Unknown unit: HF emits unk (consecutive ones fused into one when fuse_unk) or, without an
  /// unk token, drops the unit.
  void add_unknown(std::vector<bpe_detail::Scratch::Sym>& syms, bool& prev_unk) const {
    if (unk_id_ < 0) return;
    if (!(fuse_unk_ && prev_unk)) syms.push_back(bpe_detail::Scratch::Sym{unk_id_, 0, 0, true});
    prev_unk = true;
  }

  /// Initial symbols when units need string lookups: no ByteLevel (units are characters), or a
  /// continuing_subword_prefix / end_of_word_suffix, or byte_fallback.
  void initial_symbols_slow(std::string_view w, std::vector<bpe_detail::Scratch::Sym>& syms) const {
    std::string key;
    size_t i = 0;
    bool first = true, prev_unk = false;
    while (i < w.size()) {
      size_t e = i;
      if (byte_level_) {
        e = i + 1;
      } else {
        unicode::next_code_point(w, e);
      }
      const bool last = e >= w.size();
      key.clear();
      if (!first) key += continuing_subword_prefix_;
      if (byte_level_) unicode::append_utf8(key, unicode::byte_to_code_point()[static_cast<unsigned char>(w[i])]);
      else key.append(w.substr(i, e - i));
      if (last) key += end_of_word_suffix_;
      if (const int32_t id = vocab_.find(key); id >= 0) {
        syms.push_back(bpe_detail::Scratch::Sym{id, 0, 0, true});
        prev_unk = false;
      } else {
        bool done = false;
        if (byte_fallback_) {
          std::vector<int32_t> fb;
          for (size_t k = i; k < e; ++k) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "<0x%02X>", static_cast<unsigned char>(w[k]));
            const int32_t f = vocab_.find(std::string_view(buf));
            if (f < 0) {
              fb.clear();
              break;
            }
            fb.push_back(f);
          }
          if (!fb.empty()) {
            for (int32_t id : fb) syms.push_back(bpe_detail::Scratch::Sym{id, 0, 0, true});
            done = true;
            prev_unk = false;
          }
        }
        if (!done) add_unknown(syms, prev_unk);
      }
      first = false;
      i = e;
    }
  }

  // ---- loading --------------------------------------------------------------------------------

  void set_vocab_size(size_t n) {
    if (id_to_token_.size() < n) {
      id_to_token_.resize(n);
      id_to_bytes_.resize(n);
      is_special_.resize(n, 0);
    }
  }

  void add_added_token(AddedToken t, const std::string& where) {
    if (t.id < 0) throw FormatError(where + ": added token '" + t.content + "' has a negative id");
    if (t.content.empty()) throw FormatError(where + ": added token " + std::to_string(t.id) + " is empty");
    set_vocab_size(static_cast<size_t>(t.id) + 1);
    const size_t u = static_cast<size_t>(t.id);
    id_to_token_[u] = t.content;
    is_special_[u] = t.special ? 1 : 0;
    added_by_content_.insert(t.content, t.id, true);
    added_.push_back(std::move(t));
  }

  static void trie_insert(std::vector<TrieNode>& trie, std::string_view s, int32_t index) {
    if (trie.empty()) trie.emplace_back();
    int32_t node = 0;
    for (unsigned char c : s) {
      auto& nx = trie[static_cast<size_t>(node)].next;
      auto it = std::lower_bound(nx.begin(), nx.end(), c,
                                 [](const std::pair<unsigned char, int32_t>& p, unsigned char v) { return p.first < v; });
      if (it != nx.end() && it->first == c) {
        node = it->second;
      } else {
        const int32_t fresh = static_cast<int32_t>(trie.size());
        nx.insert(it, {c, fresh});  // may reallocate trie[node].next only, not `trie`
        trie.emplace_back();
        node = fresh;
      }
    }
    trie[static_cast<size_t>(node)].added = index;
  }

  void build_added_index() {
    trie_raw_.assign(1, TrieNode{});
    trie_norm_.assign(1, TrieNode{});
    first_raw_.fill(0);
    first_norm_.fill(0);
    for (size_t k = 0; k < added_.size(); ++k) {
      const AddedToken& t = added_[k];
      // Without a normalizer both passes see the same text; match everything in the raw pass.
      const bool norm = t.normalized && nfc_;
      trie_insert(norm ? trie_norm_ : trie_raw_, t.content, static_cast<int32_t>(k));
      (norm ? first_norm_ : first_raw_)[static_cast<unsigned char>(t.content[0])] = 1;
    }
    // Rust regex's Unicode \\w (what HF's single_word check uses): Alphabetic, marks, decimal
    // digits, connector punctuation and the joiners; Alphabetic approximated by L + Nl + M.
    word_char_re_ = tokenizer_detail::Regex("[\\p{L}\\p{Nl}\\p{Nd}\\p{M}\\p{Pc}\\x{200C}\\x{200D}]", false,
                                            "single_word check");
  }

  /// Byte-level tables once vocab_ is filled: initial id per byte, id_to_bytes_, bytes_to_id_.
  void finish_vocab() {
    byte_to_id_.fill(-1);
    if (byte_level_) {
      const auto& tbl = unicode::byte_to_code_point();
      for (int b = 0; b < 256; ++b) {
        std::string s;
        unicode::append_utf8(s, tbl[static_cast<size_t>(b)]);
        byte_to_id_[static_cast<size_t>(b)] = vocab_.find(s);
      }
    }
    simple_units_ = continuing_subword_prefix_.empty() && end_of_word_suffix_.empty();
    // Added tokens keep their spelling when they reuse a vocabulary id (HF looks them up first).
    vocab_.for_each([&](std::string_view tok, int32_t id) {
      const size_t u = static_cast<size_t>(id);
      if (id_to_token_[u].empty()) id_to_token_[u] = tok;
    });
    for (size_t u = 0; u < id_to_token_.size(); ++u) {
      const std::string& tok = id_to_token_[u];
      if (!unicode::is_valid_utf8(tok)) {
        id_to_bytes_[u] = tok;
        continue;
      }
      id_to_bytes_[u] = decode_byte_level_ ? unicode::byte_level_decode(tok) : tok;
    }
    if (ignore_merges_ && byte_level_) {
      bytes_to_id_.reserve(vocab_.size());
      std::string raw;
      vocab_.for_each([&](std::string_view tok, int32_t id) {
        raw.clear();
        bool ok = unicode::is_valid_utf8(tok);
        for (size_t i = 0; ok && i < tok.size();) {
          const int b = unicode::code_point_to_byte(unicode::next_code_point(tok, i));
          if (b < 0) ok = false;
          else raw.push_back(static_cast<char>(b));
        }
        if (ok) bytes_to_id_.insert(raw, id, false);
      });
    }
  }

  void add_merge(std::string_view a, std::string_view b, uint32_t rank, bool overwrite,
                 const std::string& where) {
    const int32_t ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia < 0 || ib < 0) {
      throw FormatError(where + ": merge " + std::to_string(rank) + " ('" + std::string(a) + "' '" + std::string(b) +
                        "') uses a token missing from the vocabulary");
    }
    std::string merged(a);
    merged.append(b.substr(std::min(b.size(), continuing_subword_prefix_.size())));
    const int32_t im = vocab_.find(merged);
    if (im < 0) {
      throw FormatError(where + ": merge " + std::to_string(rank) + " ('" + std::string(a) + "' '" + std::string(b) +
                        "') makes '" + merged + "', which is not in the vocabulary");
    }
    merges_.insert(ia, ib, rank, im, overwrite);
  }

  static std::string token_content(const nlohmann::json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return {};
  }

  static bool json_bool(const nlohmann::json& obj, const char* key, bool dflt) {
    if (!obj.is_object()) return dflt;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return dflt;
    if (it->is_boolean()) return it->get<bool>();
    if (it->is_number()) return it->get<double>() != 0;
    return dflt;
  }

  static std::string json_string(const nlohmann::json& obj, const char* key) {
    if (!obj.is_object()) return {};
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_string()) return {};
    return it->get<std::string>();
  }

  void parse_normalizer(const nlohmann::json& n, const std::string& where) {
    if (n.is_null()) return;
    const std::string type = json_string(n, "type");
    if (type == "NFC") {
      nfc_ = true;
    } else if (type == "Sequence") {
      if (n.contains("normalizers") && n["normalizers"].is_array())
        for (const auto& x : n["normalizers"]) parse_normalizer(x, where);
    } else {
      throw UnsupportedError(where + ": normalizer '" + type +
                             "' is not supported by BpeTokenizer (supported: NFC, Sequence)");
    }
  }

  static bpe_detail::SplitBehavior parse_behavior(const std::string& s, const std::string& where) {
    using B = bpe_detail::SplitBehavior;
    if (s == "Isolated") return B::kIsolated;
    if (s == "Removed") return B::kRemoved;
    if (s == "MergedWithPrevious") return B::kMergedWithPrevious;
    if (s == "MergedWithNext") return B::kMergedWithNext;
    if (s == "Contiguous") return B::kContiguous;
    throw FormatError(where + ": unknown Split behavior '" + s + "'");
  }

  void add_split(std::string_view pattern, bool literal, bpe_detail::SplitBehavior b, bool invert,
                 const std::string& where) {
    bpe_detail::PreStep st;
    st.kind = bpe_detail::PreStep::Kind::kSplit;
    st.regex = tokenizer_detail::Regex(pattern, literal, where);
    st.behavior = b;
    st.invert = invert;
    pre_steps_.push_back(std::move(st));
  }

  void add_byte_level(bool add_prefix_space, bool use_regex, const std::string& where) {
    bpe_detail::PreStep st;
    st.kind = bpe_detail::PreStep::Kind::kByteLevel;
    st.add_prefix_space = add_prefix_space;
    st.use_regex = use_regex;
    if (use_regex) st.regex = tokenizer_detail::Regex(bpe_detail::kGpt2Pattern, false, where);
    pre_steps_.push_back(std::move(st));
    byte_level_ = true;
  }

  void parse_pre_tokenizer(const nlohmann::json& p, const std::string& where) {
    if (p.is_null()) return;
    const std::string type = json_string(p, "type");
    if (type == "Sequence") {
      if (p.contains("pretokenizers") && p["pretokenizers"].is_array())
        for (const auto& x : p["pretokenizers"]) parse_pre_tokenizer(x, where);
    } else if (type == "Split") {
      const auto& pat = p.value("pattern", nlohmann::json());
      std::string s;
      bool literal;
      if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string()) {
        s = pat["Regex"].get<std::string>();
        literal = false;
      } else if (pat.is_object() && pat.contains("String") && pat["String"].is_string()) {
        s = pat["String"].get<std::string>();
        literal = true;
      } else {
        throw FormatError(where + ": Split pre-tokenizer without a Regex or String pattern");
      }
      add_split(s, literal, parse_behavior(json_string(p, "behavior"), where), json_bool(p, "invert", false),
                where + " (Split pattern)");
    } else if (type == "ByteLevel") {
      add_byte_level(json_bool(p, "add_prefix_space", true), json_bool(p, "use_regex", true), where);
    } else if (type == "Digits") {
      // HF Digits splits on char::is_numeric (= \p{N}); individual_digits isolates each one.
      const bool individual = json_bool(p, "individual_digits", false);
      add_split(individual ? "\\p{N}" : "\\p{N}+", false, bpe_detail::SplitBehavior::kIsolated, false,
                where + " (Digits)");
    } else if (type == "Whitespace") {
      add_split("\\w+|[^\\w\\s]+", false, bpe_detail::SplitBehavior::kRemoved, true, where + " (Whitespace)");
    } else if (type == "WhitespaceSplit") {
      add_split("\\s+", false, bpe_detail::SplitBehavior::kRemoved, false, where + " (WhitespaceSplit)");
    } else {
      throw UnsupportedError(where + ": pre-tokenizer '" + type +
                             "' is not supported by BpeTokenizer (supported: Sequence, Split, ByteLevel, Digits, "
                             "Whitespace, WhitespaceSplit)");
    }
  }

  /// Special-token ids a post-processor adds around a single sequence.
  void parse_post_processor(const nlohmann::json& p, const std::string& where) {
    if (p.is_null()) return;
    const std::string type = json_string(p, "type");
    const auto special_id = [&](const nlohmann::json& pair) -> int32_t {
      // Roberta/Bert store ["<s>", 0].
      if (pair.is_array() && pair.size() == 2 && pair[1].is_number_integer() && pair[1].get<int64_t>() >= 0 &&
          pair[1].get<int64_t>() <= INT32_MAX)
        return static_cast<int32_t>(pair[1].get<int64_t>());
      throw FormatError(where + ": " + type + " post-processor with a malformed cls/sep entry");
    };
    if (type == "ByteLevel") {
      return;  // offsets only
    } else if (type == "Sequence") {
      if (p.contains("processors") && p["processors"].is_array())
        for (const auto& x : p["processors"]) parse_post_processor(x, where);
    } else if (type == "TemplateProcessing") {
      const auto& single = p.value("single", nlohmann::json::array());
      const auto& specials = p.value("special_tokens", nlohmann::json::object());
      std::vector<int32_t> pre, post;
      bool seen_seq = false;
      for (const auto& piece : single) {
        if (piece.contains("Sequence")) {
          seen_seq = true;
        } else if (piece.contains("SpecialToken")) {
          const std::string name = json_string(piece["SpecialToken"], "id");
          auto it = specials.find(name);
          if (it == specials.end() || !it->contains("ids") || !(*it)["ids"].is_array())
            throw FormatError(where + ": TemplateProcessing uses special token '" + name +
                              "' missing from its special_tokens table");
          for (const auto& id : (*it)["ids"]) {
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
              throw FormatError(where + ": TemplateProcessing special token '" + name +
                                "' has an id that is not an integer in [0, 2^31): " + id.dump());
            (seen_seq ? post : pre).push_back(static_cast<int32_t>(id.get<int64_t>()));
          }
        }
      }
      prefix_ids_.insert(prefix_ids_.end(), pre.begin(), pre.end());
      suffix_ids_.insert(suffix_ids_.begin(), post.begin(), post.end());
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      prefix_ids_.push_back(special_id(p.value("cls", nlohmann::json())));
      suffix_ids_.insert(suffix_ids_.begin(), special_id(p.value("sep", nlohmann::json())));
    } else {
      throw UnsupportedError(where + ": post-processor '" + type +
                             "' is not supported by BpeTokenizer (supported: ByteLevel, TemplateProcessing, "
                             "RobertaProcessing, BertProcessing, Sequence)");
    }
  }

  void parse_decoder(const nlohmann::json& d, const std::string& where) {
    if (d.is_null()) {
      decode_byte_level_ = false;
      return;
    }
    const std::string type = json_string(d, "type");
    if (type == "ByteLevel") {
      decode_byte_level_ = true;
    } else if (type == "Sequence" && d.contains("decoders") && d["decoders"].is_array() &&
               d["decoders"].size() == 1) {
      parse_decoder(d["decoders"][0], where);
    } else {
      throw UnsupportedError(where + ": decoder '" + type +
                             "' is not supported by BpeTokenizer (supported: ByteLevel)");
    }
  }

  void load_json(const bpe_detail::TokenizerJson& tj, const nlohmann::json& cfg, const std::string& where) {
    const nlohmann::json& tok = tj.rest;
    if (!tok.is_object() || !tok.contains("model") || !tok["model"].is_object())
      throw FormatError(where + ": no \"model\" object (is this a tokenizer.json?)");
    const auto& model = tok["model"];
    const std::string mtype = json_string(model, "type");
    if (!mtype.empty() && mtype != "BPE") throw UnsupportedError(where + ": model type '" + mtype + "' is not BPE");
    if (!tj.has_vocab) throw FormatError(where + ": model.vocab is missing");
    if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0)
      throw UnsupportedError(where + ": BPE dropout is not supported (it makes encoding random)");

    parse_normalizer(tok.value("normalizer", nlohmann::json()), where);
    parse_pre_tokenizer(tok.value("pre_tokenizer", nlohmann::json()), where);
    parse_post_processor(tok.value("post_processor", nlohmann::json()), where);
    parse_decoder(tok.value("decoder", nlohmann::json()), where);

    ignore_merges_ = json_bool(model, "ignore_merges", false);
    continuing_subword_prefix_ = json_string(model, "continuing_subword_prefix");
    end_of_word_suffix_ = json_string(model, "end_of_word_suffix");
    fuse_unk_ = json_bool(model, "fuse_unk", false);
    byte_fallback_ = json_bool(model, "byte_fallback", false);

    vocab_.reserve(tj.vocab.size());
    int64_t max_id = -1;
    for (const auto& [key, id] : tj.vocab) {
      if (id < 0 || id > INT32_MAX - 1) throw FormatError(where + ": vocab entry '" + key + "' has an invalid id");
      vocab_.insert(key, static_cast<int32_t>(id), true);
      max_id = std::max<int64_t>(max_id, id);
    }
    // The id -> token tables are sized by the largest id: ids far beyond the number of entries
    // (a 50-byte file claiming id 2^31) would allocate gigabytes for nothing. Real vocabularies are dense.
    if (max_id >= 2 * int64_t(tj.vocab.size()) + 1024)
      throw FormatError(where + ": vocab id " + std::to_string(max_id) + " is far beyond its " +
                        std::to_string(tj.vocab.size()) + " entries (ids must be about dense)");
    set_vocab_size(static_cast<size_t>(max_id + 1));

    if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
      // HF does not trust the stored ids: it re-adds each token in order, giving it its model
      // vocabulary id when the content is a vocabulary token, else the next free id after the
      // vocabulary (files HF wrote agree with that; hand-edited ones may not).
      const int64_t vocab_count = static_cast<int64_t>(vocab_.size());
      int64_t max_added = -1;
      for (const auto& a : tok["added_tokens"]) {
        AddedToken t;
        t.content = json_string(a, "content");
        if (t.content.empty()) continue;
        int64_t id = added_by_content_.find(t.content);
        if (id < 0) id = vocab_.find(t.content);
        if (id < 0) id = max_added < 0 ? vocab_count : (max_added >= vocab_count ? max_added + 1 : vocab_count);
        if (id > INT32_MAX - 1) throw FormatError(where + ": too many added tokens");
        max_added = std::max(max_added, id);
        t.id = static_cast<int32_t>(id);
        t.special = json_bool(a, "special", false);
        t.lstrip = json_bool(a, "lstrip", false);
        t.rstrip = json_bool(a, "rstrip", false);
        t.single_word = json_bool(a, "single_word", false);
        t.normalized = json_bool(a, "normalized", !t.special);
        add_added_token(std::move(t), where);
      }
    }
    const std::string unk = model.contains("unk_token") ? token_content(model["unk_token"]) : std::string();
    if (!unk.empty()) {
      unk_id_ = vocab_.find(unk);
      if (unk_id_ < 0) throw FormatError(where + ": unk_token '" + unk + "' is not in the vocabulary");
    }
    finish_vocab();

    merges_.reserve(tj.merges.size());
    uint32_t rank = 0;
    for (const auto& [a, b] : tj.merges) add_merge(a, b, rank++, true, where);

    // tokenizer_config.json: special tokens, add_bos/add_eos, clean-up.
    const std::string bos = cfg.is_object() && cfg.contains("bos_token") ? token_content(cfg["bos_token"]) : "";
    const std::string eos = cfg.is_object() && cfg.contains("eos_token") ? token_content(cfg["eos_token"]) : "";
    if (!bos.empty()) bos_id_ = token_to_id(bos);
    if (!eos.empty()) eos_id_ = token_to_id(eos);
    if (cfg.is_object() && cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean() && bos_id_ >= 0) {
      // As transformers' Llama fast tokenizer: the flag rewrites the template's BOS.
      const bool has = !prefix_ids_.empty() && prefix_ids_[0] == bos_id_;
      if (cfg["add_bos_token"].get<bool>() && !has) prefix_ids_.insert(prefix_ids_.begin(), bos_id_);
      if (!cfg["add_bos_token"].get<bool>() && has) prefix_ids_.erase(prefix_ids_.begin());
    }
    if (cfg.is_object() && cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean() && eos_id_ >= 0) {
      const bool has = !suffix_ids_.empty() && suffix_ids_.back() == eos_id_;
      if (cfg["add_eos_token"].get<bool>() && !has) suffix_ids_.push_back(eos_id_);
      if (!cfg["add_eos_token"].get<bool>() && has) suffix_ids_.pop_back();
    }
    clean_up_spaces_ = json_bool(cfg, "clean_up_tokenization_spaces", false);
    build_added_index();
    check_ids(where);
  }

  void check_ids(const std::string& where) const {
    const auto bad = [&](int32_t id) { return id < 0 || id >= n_vocab(); };
    for (int32_t id : prefix_ids_)
      if (bad(id))
        throw FormatError(where + ": post-processor token id " + std::to_string(id) + " is outside the vocabulary");
    for (int32_t id : suffix_ids_)
      if (bad(id))
        throw FormatError(where + ": post-processor token id " + std::to_string(id) + " is outside the vocabulary");
  }

  /// llama.cpp's pre-tokenizer regexes per tokenizer.ggml.pre, applied one after the other.
  struct GgufPre {
    std::vector<std::string_view> regexes;
    bool ignore_merges = false;
    bool add_bos = false;
    bool clean_spaces = true;
    bool nfc = false;  // the HF tokenizer.json of that family normalizes to NFC
  };
  static bool gguf_pre(const std::string& name, GgufPre& out) {
    static constexpr std::string_view kGpt2 =
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
    static constexpr std::string_view kLlama3 =
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
        "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    static constexpr std::string_view kQwen2 =
        "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
        "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const auto is = [&](std::initializer_list<std::string_view> names) {
      return std::find(names.begin(), names.end(), name) != names.end();
    };
    if (name.empty() || name == "default") {
      out.regexes = {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"};
    } else if (is({"gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "gigachat"})) {
      out.regexes = {kGpt2};
    } else if (is({"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"})) {
      out.regexes = {kLlama3};
      out.ignore_merges = true;
      out.add_bos = true;
    } else if (is({"dbrx", "smaug-bpe"})) {
      out.regexes = {kLlama3};
    } else if (is({"qwen2", "qwen2.5", "qwen-2.5", "deepseek-r1-qwen", "megrez"})) {
      out.regexes = {kQwen2};
      out.clean_spaces = false;
      out.nfc = true;
    } else if (is({"smollm", "starcoder", "refact", "codeshell", "exaone", "minerva-7b", "command-r"})) {
      out.regexes = {"\\p{N}", kGpt2};
      out.clean_spaces = !(name == "smollm" || name == "command-r");
    } else {
      return false;
    }
    return true;
  }

  void load_gguf(const nlohmann::json& meta, const std::string& where) {
    if (!meta.is_object()) throw FormatError(where + ": GGUF metadata is not an object");
    const std::string model = json_string(meta, "tokenizer.ggml.model");
    if (model != "gpt2")
      throw UnsupportedError(where + ": tokenizer.ggml.model is '" + model +
                             "', expected 'gpt2' for a byte-level BPE vocabulary");
    const std::string pre = json_string(meta, "tokenizer.ggml.pre");
    GgufPre gp;
    if (!gguf_pre(pre, gp))
      throw UnsupportedError(where + ": unsupported tokenizer.ggml.pre '" + pre +
                             "' (supported: default, gpt-2, llama-bpe/llama3, qwen2, smollm and aliases)");
    for (auto r : gp.regexes) add_split(r, false, bpe_detail::SplitBehavior::kIsolated, false, where + " (pre '" + pre + "')");
    add_byte_level(false, false, where);
    nfc_ = gp.nfc;
    ignore_merges_ = gp.ignore_merges;
    decode_byte_level_ = true;

    const auto tit = meta.find("tokenizer.ggml.tokens");
    if (tit == meta.end() || !tit->is_array())
      throw FormatError(where + ": tokenizer.ggml.tokens is missing or not an array");
    const auto& tokens = *tit;
    std::vector<int> types(tokens.size(), 1);
    if (auto it = meta.find("tokenizer.ggml.token_type"); it != meta.end() && it->is_array()) {
      if (it->size() != tokens.size())
        throw FormatError(where + ": tokenizer.ggml.token_type has " + std::to_string(it->size()) + " entries for " +
                          std::to_string(tokens.size()) + " tokens");
      for (size_t i = 0; i < tokens.size(); ++i)
        types[i] = (*it)[i].is_number_integer() ? int((*it)[i].get<int64_t>()) : 1;
    }
    set_vocab_size(tokens.size());
    vocab_.reserve(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (!tokens[i].is_string())
        throw FormatError(where + ": tokenizer.ggml.tokens[" + std::to_string(i) + "] is not a string");
      const std::string& s = tokens[i].get_ref<const std::string&>();
      const int32_t id = static_cast<int32_t>(i);
      // GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
      if (types[i] == 3 || types[i] == 4) {
        AddedToken t;
        t.content = s;
        t.id = id;
        t.special = types[i] == 3;
        add_added_token(std::move(t), where);
        id_to_bytes_[i] = s;  // llama.cpp prints control / user-defined tokens verbatim
      } else {
        vocab_.insert(s, id, false);  // first spelling wins, as in llama.cpp's token_to_id
      }
      id_to_token_[i] = s;
    }
    finish_vocab();
    for (size_t i = 0; i < tokens.size(); ++i)
      if (types[i] == 3 || types[i] == 4) id_to_bytes_[i] = id_to_token_[i];

    if (auto it = meta.find("tokenizer.ggml.merges"); it != meta.end() && it->is_array()) {
      merges_.reserve(it->size());
      uint32_t rank = 0;
      for (const auto& m : *it) {
        if (!m.is_string())
          throw FormatError(where + ": tokenizer.ggml.merges[" + std::to_string(rank) + "] is not a string");
        const std::string& s = m.get_ref<const std::string&>();
        const size_t sp = s.find(' ', 1);
        if (sp == std::string::npos)
          throw FormatError(where + ": tokenizer.ggml.merges[" + std::to_string(rank) + "] '" + s + "' is not \"a b\"");
        add_merge(std::string_view(s).substr(0, sp), std::string_view(s).substr(sp + 1), rank, false, where);
        ++rank;
      }
    } else {
      throw FormatError(where + ": tokenizer.ggml.merges is missing (needed for a gpt2 vocabulary)");
    }

    const auto get_id = [&](const char* key) -> int32_t {
      auto it = meta.find(key);
      if (it == meta.end() || !it->is_number_integer()) return -1;
      const int64_t v = it->get<int64_t>();
      return (v >= 0 && v < n_vocab()) ? static_cast<int32_t>(v) : -1;
    };
    bos_id_ = get_id("tokenizer.ggml.bos_token_id");
    eos_id_ = get_id("tokenizer.ggml.eos_token_id");
    const bool add_bos = json_bool(meta, "tokenizer.ggml.add_bos_token", gp.add_bos);
    const bool add_eos = json_bool(meta, "tokenizer.ggml.add_eos_token", false);
    if (add_bos && bos_id_ >= 0) prefix_ids_.push_back(bos_id_);
    if (add_eos && eos_id_ >= 0) suffix_ids_.push_back(eos_id_);
    clean_up_spaces_ = json_bool(meta, "tokenizer.ggml.clean_spaces", gp.clean_spaces);
    build_added_index();
  }

  // model
  bpe_detail::StrIdMap vocab_;             ///< model vocabulary, vocabulary spelling -> id
  bpe_detail::StrIdMap bytes_to_id_;       ///< raw bytes -> id (byte-level + ignore_merges)
  bpe_detail::StrIdMap added_by_content_;  ///< added token content -> id
  std::vector<std::string> id_to_token_;             ///< vocabulary spelling per id
  std::vector<std::string> id_to_bytes_;             ///< decoded bytes per id
  std::vector<uint8_t> is_special_;                  ///< per id
  std::array<int32_t, 256> byte_to_id_{};            ///< byte-level: initial symbol per byte
  bpe_detail::PairMap merges_;
  bool byte_level_ = false;
  bool simple_units_ = true;  ///< no subword prefix / suffix: bytes map straight to ids
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false;
  // pipeline
  bool nfc_ = false;
  std::vector<bpe_detail::PreStep> pre_steps_;
  std::vector<AddedToken> added_;
  std::vector<TrieNode> trie_raw_, trie_norm_;
  std::array<uint8_t, 256> first_raw_{}, first_norm_{};  ///< first bytes of the added tokens
  tokenizer_detail::Regex word_char_re_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  bool decode_byte_level_ = true;
  bool clean_up_spaces_ = false;
  int32_t bos_id_ = -1, eos_id_ = -1;
  std::unique_ptr<bpe_detail::WordCache> cache_;
};

/// Encodes each line of a JSONL text whose objects carry "text" and writes one
/// {"i": i, "ids": [...]} line per input ("i" copied from the input when present).
/// Used by the cross-check driver and the CLI's `tokenize --jsonl`.
inline std::string tokenize_jsonl(const Tokenizer& tok, std::string_view jsonl, bool add_special,
                                  bool parse_special = true) {
  std::string out;
  size_t line_no = 0, pos = 0;
  while (pos < jsonl.size()) {
    size_t e = jsonl.find('\n', pos);
    if (e == std::string_view::npos) e = jsonl.size();
    const std::string_view line = jsonl.substr(pos, e - pos);
    pos = e + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    check_json_text(line, "jsonl line " + std::to_string(line_no));
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& ex) {
      throw FormatError("jsonl line " + std::to_string(line_no) + ": not valid JSON: " + ex.what());
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      throw FormatError("jsonl line " + std::to_string(line_no) + ": expected an object with a string \"text\"");
    nlohmann::json o;
    o["i"] = j.contains("i") ? j["i"] : nlohmann::json(line_no - 1);
    o["ids"] = tok.encode(j["text"].get<std::string>(), add_special, parse_special);
    out += o.dump();
    out += '\n';
  }
  return out;
}

}  // namespace loopus
