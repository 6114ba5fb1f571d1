// Training data: text or JSONL -> documents -> token ids (BOS per document) -> packed or padded sequences, shuffled batches, held-out split.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/core/json_check.hpp"
#include "loopus/core/random.hpp"
#include "loopus/core/read_file.hpp"
#include "loopus/tokenizer/tokenizer.hpp"

namespace loopus::train {

/// How a plain text file is cut into documents (JSONL: one document per line, its "text").
enum class DocSplit {
  kBlankLine,  ///< blocks separated by one or more blank lines (lines inside a block joined with '\n')
  kLine,       ///< every non-empty line
};

inline DocSplit parse_doc_split(const std::string& s) {
  if (s == "blank") return DocSplit::kBlankLine;
  if (s == "line") return DocSplit::kLine;
  throw UsageError("DocSplit must be blank or line, got '" + s + "'");
}

/// The lines of a file, without their "\n" / "\r\n".
inline std::vector<std::string> read_lines(const std::string& path) {
  const std::string text = read_file_bytes(path, "training data");
  std::vector<std::string> lines;
  size_t b = 0;
  while (b < text.size()) {
    size_t e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    size_t n = e - b;
    if (n > 0 && text[b + n - 1] == '\r') --n;
    lines.emplace_back(text, b, n);
    b = e + 1;
  }
  return lines;
}

inline bool is_jsonl(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot != std::string::npos && (path.substr(dot) == ".jsonl" || path.substr(dot) == ".ndjson");
}

/// Documents of lines [begin, end) of a file. JSONL lines must be objects with
/// a string "text" (blank lines skipped); `where` names the file in errors.
inline std::vector<std::string> documents(const std::vector<std::string>& lines, size_t begin, size_t end, bool jsonl,
                                          DocSplit split, const std::string& where) {
  std::vector<std::string> docs;
  if (jsonl) {
    for (size_t i = begin; i < end; ++i) {
      if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
      nlohmann::json j;
      check_json_text(lines[i], where + ":" + std::to_string(i + 1));
      try {
        j = nlohmann::json::parse(lines[i]);
      } catch (const std::exception& e) {
        throw FormatError(where + ":" + std::to_string(i + 1) + ": not valid JSON (" + e.what() + ")");
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw FormatError(where + ":" + std::to_string(i + 1) + ": expected an object with a string field \"text\"");
      docs.push_back(j["text"].get<std::string>());
    }
    return docs;
  }
  std::string cur;
  bool open = false;
  for (size_t i = begin; i < end; ++i) {
    const bool blank = lines[i].find_first_not_of(" \t") == std::string::npos;
    if (split == DocSplit::kLine) {
      if (!blank) docs.push_back(lines[i]);
      continue;
    }
    if (blank) {
      if (open) docs.push_back(std::move(cur));
      cur.clear();
      open = false;
    } else {
      if (open) cur += '\n';
      cur += lines[i];
      open = true;
    }
  }
  if (open) docs.push_back(std::move(cur));
  return docs;
}

/// Token ids of the documents, concatenated: BOS (when the vocabulary has one)
/// + the text (special-token strings in it are plain text) [+ EOS] per document.
/// When `starts` is given it receives the offset of each document in the stream.
inline std::vector<int32_t> tokenize_documents(const std::vector<std::string>& docs, const Tokenizer& tok,
                                               bool eos = false, std::vector<int64_t>* starts = nullptr) {
  std::vector<int32_t> ids;
  for (const auto& d : docs) {
    if (starts) starts->push_back(int64_t(ids.size()));
    if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
    const auto t = tok.encode(d, /*add_special=*/false, /*parse_special=*/false);
    ids.insert(ids.end(), t.begin(), t.end());
    if (eos && tok.eos_id() >= 0) ids.push_back(tok.eos_id());
  }
  return ids;
}

/// Train and held-out token streams.
struct Corpus {
  std::vector<int32_t> train, val;
  std::vector<int64_t> train_starts, val_starts;  ///< offset of each document in its stream
  int64_t train_docs = 0, val_docs = 0;
  int64_t train_lines = 0, val_lines = 0;
};

/// Reads `data` (and `val` when given; else the last val_percent % of the
/// lines of `data`, split by line before documents are formed).
inline Corpus load_corpus(const std::string& data, const std::string& val, double val_percent, const Tokenizer& tok,
                          DocSplit split, bool eos = false) {
  if (val.empty() && !(val_percent >= 0 && val_percent < 100))
    throw UsageError("val_percent must be in [0, 100), got " + std::to_string(val_percent));
  Corpus c;
  const auto lines = read_lines(data);
  size_t cut = lines.size();
  if (val.empty()) cut = size_t(double(lines.size()) * (100.0 - val_percent) / 100.0);
  auto tr = documents(lines, 0, cut, is_jsonl(data), split, data);
  c.train = tokenize_documents(tr, tok, eos, &c.train_starts);
  c.train_docs = int64_t(tr.size());
  c.train_lines = int64_t(cut);
  if (!val.empty()) {
    const auto vl = read_lines(val);
    auto vd = documents(vl, 0, vl.size(), is_jsonl(val), split, val);
    c.val = tokenize_documents(vd, tok, eos, &c.val_starts);
    c.val_docs = int64_t(vd.size());
    c.val_lines = int64_t(vl.size());
  } else if (cut < lines.size()) {
    auto vd = documents(lines, cut, lines.size(), is_jsonl(data), split, data);
    c.val = tokenize_documents(vd, tok, eos, &c.val_starts);
    c.val_docs = int64_t(vd.size());
    c.val_lines = int64_t(lines.size() - cut);
  }
  return c;
}

/// Training sequences of seq_len tokens, in one of two layouts:
/// - packed: the token stream cut into consecutive sequences (documents back
///   to back; the tail shorter than seq_len is dropped); every position is a token.
/// - padded (the official layout): one document per sequence, truncated to
///   seq_len and right-padded with pad_id; positions past valid(i) carry no
///   label (-100) and, under causal attention, never affect the valid ones.
class PackedData {
 public:
  PackedData() = default;
  PackedData(std::vector<int32_t> ids, int64_t seq_len) : ids_(std::move(ids)), T_(seq_len) {
    if (seq_len < 2) throw UsageError("seq_len must be >= 2, got " + std::to_string(seq_len));
    ids_.resize(size_t(size() * T_));
  }
  /// The padded layout: documents [starts[k], starts[k+1]) of `stream`; documents
  /// of fewer than 2 tokens (nothing to predict) are skipped.
  static PackedData padded(const std::vector<int32_t>& stream, const std::vector<int64_t>& starts, int64_t seq_len,
                           int32_t pad_id) {
    if (seq_len < 2) throw UsageError("seq_len must be >= 2, got " + std::to_string(seq_len));
    PackedData d;
    d.T_ = seq_len;
    for (size_t k = 0; k < starts.size(); ++k) {
      const int64_t b = starts[k], e = k + 1 < starts.size() ? starts[k + 1] : int64_t(stream.size());
      if (b < 0 || e < b || e > int64_t(stream.size())) throw UsageError("padded data: document offsets out of order");
      const int64_t n = std::min(e - b, seq_len);
      if (n < 2) continue;
      d.ids_.insert(d.ids_.end(), stream.begin() + b, stream.begin() + b + n);
      d.ids_.insert(d.ids_.end(), size_t(seq_len - n), pad_id);
      d.valid_.push_back(n);
    }
    return d;
  }
  int64_t seq_len() const { return T_; }
  int64_t size() const { return T_ ? int64_t(ids_.size()) / T_ : 0; }
  bool padded() const { return !valid_.empty(); }
  /// Tokens of sequence i that are real (seq_len when packed).
  int64_t valid(int64_t i) const { return valid_.empty() ? T_ : valid_[size_t(i)]; }
  /// Real tokens in all sequences (positions minus padding).
  int64_t tokens() const {
    if (valid_.empty()) return size() * T_;
    int64_t n = 0;
    for (int64_t v : valid_) n += v;
    return n;
  }
  const int32_t* seq(int64_t i) const { return ids_.data() + i * T_; }
  /// Labels of sequence i: the ids, -100 on padding.
  void labels(int64_t i, int32_t* out) const {
    const int32_t* s = seq(i);
    const int64_t v = valid(i);
    for (int64_t t = 0; t < T_; ++t) out[t] = t < v ? s[t] : -100;
  }
  /// The first n sequences (the held-out check subset).
  PackedData head(int64_t n) const {
    PackedData d;
    d.T_ = T_;
    n = std::min(n, size());
    d.ids_.assign(ids_.begin(), ids_.begin() + n * T_);
    if (!valid_.empty()) d.valid_.assign(valid_.begin(), valid_.begin() + n);
    return d;
  }

 private:
  std::vector<int32_t> ids_;
  std::vector<int64_t> valid_;  ///< empty when packed
  int64_t T_ = 0;
};

/// Batches of `batch` sequences in a seeded random order, reshuffled each
/// epoch; (epoch, pos) is all the state a resume needs.
class Batcher {
 public:
  struct State {
    int64_t epoch = 0, pos = 0;
  };
  Batcher(const PackedData& d, int64_t batch, uint64_t seed) : d_(d), B_(batch), seed_(seed) {
    if (d_.size() < batch)
      throw UsageError("the training data has " + std::to_string(d_.size()) + " sequences of " +
                       std::to_string(d_.seq_len()) + " tokens; batch = " + std::to_string(batch) + " needs more");
    shuffle();
  }
  /// Copies the next B sequences into out[B·T] (and their labels into labels[B·T], when given).
  void next(int32_t* out, int32_t* labels = nullptr) {
    for (int64_t b = 0; b < B_; ++b) {
      if (st_.pos >= d_.size()) {
        ++st_.epoch;
        st_.pos = 0;
        shuffle();
      }
      const int64_t i = order_[size_t(st_.pos++)];
      std::memcpy(out + b * d_.seq_len(), d_.seq(i), size_t(d_.seq_len()) * sizeof(int32_t));
      if (labels) d_.labels(i, labels + b * d_.seq_len());
    }
  }
  State state() const { return st_; }
  /// Sequences per epoch.
  int64_t sequences() const { return d_.size(); }
  /// Continues at a saved state: epoch >= 0, 0 <= pos <= sequences().
  void set_state(State s) {
    if (s.epoch < 0 || s.pos < 0 || s.pos > d_.size())
      throw UsageError("Batcher::set_state: epoch " + std::to_string(s.epoch) + ", position " + std::to_string(s.pos) +
                       " is not a position in " + std::to_string(d_.size()) + " sequences");
    st_ = s;
    shuffle();
  }

 private:
  void shuffle() {
    order_.resize(size_t(d_.size()));
    for (int64_t i = 0; i < d_.size(); ++i) order_[size_t(i)] = i;
    SplitMix64 r(seed_ ^ (0xda7a5eedull + uint64_t(st_.epoch) * 0x9e3779b97f4a7c15ull));
    for (int64_t i = d_.size() - 1; i > 0; --i) std::swap(order_[size_t(i)], order_[size_t(r.next() % uint64_t(i + 1))]);
  }
  const PackedData& d_;
  int64_t B_;
  uint64_t seed_;
  State st_;
  std::vector<int64_t> order_;
};

}  // namespace loopus::train
