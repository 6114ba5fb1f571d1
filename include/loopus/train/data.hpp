// Training data: text or JSONL -> documents -> token ids (BOS per document) -> packed sequences, shuffled batches, held-out split.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/model/synth.hpp"
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
  throw Error("--docs must be blank or line, got '" + s + "'");
}

/// The lines of a file, without their "\n" / "\r\n".
inline std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open training data");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  if (f.bad()) throw Error(path + ": read error");
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
      try {
        j = nlohmann::json::parse(lines[i]);
      } catch (const std::exception& e) {
        throw Error(where + ":" + std::to_string(i + 1) + ": not valid JSON (" + e.what() + ")");
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw Error(where + ":" + std::to_string(i + 1) + ": expected an object with a string field \"text\"");
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
inline std::vector<int32_t> tokenize_documents(const std::vector<std::string>& docs, const Tokenizer& tok,
                                               bool eos = false) {
  std::vector<int32_t> ids;
  for (const auto& d : docs) {
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
  int64_t train_docs = 0, val_docs = 0;
  int64_t train_lines = 0, val_lines = 0;
};

/// Reads `data` (and `val` when given; else the last val_percent % of the
/// lines of `data`, split by line before documents are formed).
inline Corpus load_corpus(const std::string& data, const std::string& val, double val_percent, const Tokenizer& tok,
                          DocSplit split, bool eos = false) {
  if (val.empty() && !(val_percent >= 0 && val_percent < 100))
    throw Error("--val-percent must be in [0, 100), got " + std::to_string(val_percent));
  Corpus c;
  const auto lines = read_lines(data);
  size_t cut = lines.size();
  if (val.empty()) cut = size_t(double(lines.size()) * (100.0 - val_percent) / 100.0);
  auto tr = documents(lines, 0, cut, is_jsonl(data), split, data);
  c.train = tokenize_documents(tr, tok, eos);
  c.train_docs = int64_t(tr.size());
  c.train_lines = int64_t(cut);
  if (!val.empty()) {
    const auto vl = read_lines(val);
    auto vd = documents(vl, 0, vl.size(), is_jsonl(val), split, val);
    c.val = tokenize_documents(vd, tok, eos);
    c.val_docs = int64_t(vd.size());
    c.val_lines = int64_t(vl.size());
  } else if (cut < lines.size()) {
    auto vd = documents(lines, cut, lines.size(), is_jsonl(data), split, data);
    c.val = tokenize_documents(vd, tok, eos);
    c.val_docs = int64_t(vd.size());
    c.val_lines = int64_t(lines.size() - cut);
  }
  return c;
}

/// A token stream cut into consecutive sequences of seq_len tokens (documents
/// packed back to back; the tail shorter than seq_len is dropped).
class PackedData {
 public:
  PackedData() = default;
  PackedData(std::vector<int32_t> ids, int64_t seq_len) : ids_(std::move(ids)), T_(seq_len) {
    if (seq_len < 2) throw Error("--seq-len must be >= 2, got " + std::to_string(seq_len));
  }
  int64_t seq_len() const { return T_; }
  int64_t size() const { return T_ ? int64_t(ids_.size()) / T_ : 0; }
  int64_t tokens() const { return size() * T_; }
  const int32_t* seq(int64_t i) const { return ids_.data() + i * T_; }

 private:
  std::vector<int32_t> ids_;
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
      throw Error("the training data has " + std::to_string(d_.size()) + " sequences of " +
                  std::to_string(d_.seq_len()) + " tokens; --batch " + std::to_string(batch) + " needs more");
    shuffle();
  }
  /// Copies the next B sequences into out[B·T].
  void next(int32_t* out) {
    for (int64_t b = 0; b < B_; ++b) {
      if (st_.pos >= d_.size()) {
        ++st_.epoch;
        st_.pos = 0;
        shuffle();
      }
      std::memcpy(out + b * d_.seq_len(), d_.seq(order_[size_t(st_.pos++)]), size_t(d_.seq_len()) * sizeof(int32_t));
    }
  }
  State state() const { return st_; }
  void set_state(State s) {
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
