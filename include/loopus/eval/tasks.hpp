// The zero-shot tasks of the LoopUS tables, read from the files of ../shared/data/eval (or a folder
// of the same layout) and turned into lm-eval's requests: its prompt templates, preprocessing and
// target delimiter, task by task (docs/evaluation.md lists each).
// SPDX-License-Identifier: MIT
#pragma once
#include <bzlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>
#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/core/read_file.hpp"
#include "loopus/eval/request.hpp"
#include "loopus/eval/text.hpp"

namespace loopus::eval {

enum class TaskType {
  kMultipleChoice,  ///< one request per choice; acc (and acc_norm where lm-eval reports it)
  kLoglikelihood,   ///< one request per document: perplexity and greedy-match acc (LAMBADA)
  kRolling,         ///< the whole document scored in rolling windows (WikiText)
};

/// One document of a task.
struct Doc {
  std::vector<Request> requests;     ///< multiple choice: one per choice; loglikelihood: one
  std::vector<std::string> choices;  ///< the choice texts acc_norm divides by (multiple choice)
  size_t gold = 0;
  std::string text;     ///< rolling: the (detokenized) text that is scored
  double words = 0;     ///< rolling: words of the original document (lm-eval's count)
  double bytes = 0;     ///< rolling: UTF-8 bytes of the original document
  std::string subtask;  ///< MMLU: the subject (lm-eval reports the group with a pooled stderr)
};

struct Task {
  std::string name;
  TaskType type = TaskType::kMultipleChoice;
  bool has_acc_norm = false;  ///< lm-eval reports acc_norm for this task
  std::string source;         ///< the file it was read from
  std::vector<Doc> docs;
};

/// lm-eval's names of the tasks loopus runs.
inline const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = {"arc_easy",   "arc_challenge",  "hellaswag", "piqa", "openbookqa",
                                                 "winogrande", "lambada_openai", "wikitext",  "copa", "wsc273",
                                                 "mmlu"};
  return names;
}

namespace detail {

inline std::string read_bz2(const std::string& path) {
  const std::string packed = read_file_bytes(path, "bzip2 file");
  bz_stream bz{};
  if (BZ2_bzDecompressInit(&bz, 0, 0) != BZ_OK) throw IoError(path + ": cannot start bzip2 decompression");
  std::string out;
  char buf[1 << 16];
  bz.next_in = const_cast<char*>(packed.data());
  bz.avail_in = unsigned(packed.size());
  int rc = BZ_OK;
  while (rc == BZ_OK) {
    bz.next_out = buf;
    bz.avail_out = sizeof(buf);
    rc = BZ2_bzDecompress(&bz);
    out.append(buf, sizeof(buf) - bz.avail_out);
    if (rc == BZ_OK && bz.avail_in == 0 && bz.avail_out != 0) break;  // truncated input
    if (out.size() > (size_t(1) << 31)) {
      BZ2_bzDecompressEnd(&bz);
      throw LimitError(path + ": decompresses to more than 2 GiB");
    }
  }
  BZ2_bzDecompressEnd(&bz);
  if (rc != BZ_STREAM_END) throw FormatError(path + ": not a complete bzip2 stream");
  return out;
}

inline std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t nl = s.find('\n', pos);
    if (nl == std::string::npos) nl = s.size();
    std::string line = s.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    pos = nl + 1;
  }
  return lines;
}

/// Each non-empty line of a JSONL file as an object.
inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  const auto lines = split_lines(read_file_bytes(path, "task data"));
  for (size_t i = 0; i < lines.size(); ++i) {
    if (text::strip(lines[i]).empty()) continue;
    nlohmann::json j = nlohmann::json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) throw FormatError(path + ":" + std::to_string(i + 1) + ": not a JSON object");
    out.push_back(std::move(j));
  }
  return out;
}

inline std::string str_field(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_string()) throw FormatError(where + ": '" + key + "' must be a string");
  return j[key].get<std::string>();
}
inline std::vector<std::string> str_list(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_array() || j[key].empty())
    throw FormatError(where + ": '" + key + "' must be a non-empty array of strings");
  std::vector<std::string> out;
  for (const auto& v : j[key]) {
    if (!v.is_string()) throw FormatError(where + ": '" + key + "' must be a non-empty array of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}
inline size_t gold_field(const nlohmann::json& j, size_t n, const std::string& where) {
  if (!j.contains("gold") || !j["gold"].is_number_integer() || j["gold"].get<int64_t>() < 0 ||
      j["gold"].get<int64_t>() >= int64_t(n))
    throw FormatError(where + ": 'gold' must be an index into the " + std::to_string(n) + " choices");
  return size_t(j["gold"].get<int64_t>());
}

/// A multiple-choice document: one context, the choices as continuations after lm-eval's " ".
inline Doc mc_doc(const std::string& context, std::vector<std::string> choices, size_t gold) {
  Doc d;
  for (const auto& c : choices) d.requests.push_back({context, " " + c});
  d.choices = std::move(choices);
  d.gold = gold;
  return d;
}

/// MosaicML ICL multiple choice ({"query", "choices", "gold"}) for ARC / OpenBookQA / COPA.
template <class Make>
void read_icl_mc(Task& t, const std::string& path, Make&& make) {
  const auto rows = read_jsonl(path);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 1);
    const std::string query = str_field(rows[i], "query", where);
    auto choices = str_list(rows[i], "choices", where);
    const size_t gold = gold_field(rows[i], choices.size(), where);
    t.docs.push_back(make(query, std::move(choices), gold, where));
  }
}

/// MosaicML ICL partial scoring ({"context_options", "continuation", "gold"}): WinoGrande, WSC273.
inline void read_icl_partial(Task& t, const std::string& path, bool wsc) {
  const auto rows = read_jsonl(path);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 1);
    const auto contexts = str_list(rows[i], "context_options", where);
    const std::string cont = str_field(rows[i], "continuation", where);
    Doc d;
    d.gold = gold_field(rows[i], contexts.size(), where);
    // lm-eval: (context, " " + target). WinoGrande's target is the stripped rest of the sentence;
    // WSC273's is text[pronoun end:], which keeps the space after the pronoun (stripped in the
    // ICL file).
    const std::string target = wsc ? " " + cont : cont;
    for (const auto& c : contexts) d.requests.push_back({c, " " + target});
    d.choices = contexts;
    t.docs.push_back(std::move(d));
  }
}

/// Runs of exactly two spaces become three. The llama.cpp HellaSwag file lost one space where
/// HellaSwag's text had three (around removed [step] / [title] tags); lm-eval's preprocessing
/// turns three back into two, which the file's two would not give.
inline std::string restore_triple_spaces(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] != ' ') {
      out += s[i++];
      continue;
    }
    size_t j = i;
    while (j < s.size() && s[j] == ' ') ++j;
    out.append(j - i == 2 ? 3 : j - i, ' ');
    i = j;
  }
  return out;
}

/// HellaSwag's WikiHow activity labels (their contexts have no ctx_b).
inline bool hellaswag_wikihow(std::string_view label) {
  static constexpr std::string_view kLabels[] = {"Personal Care and Style",
                                                 "Family Life",
                                                 "Food and Entertaining",
                                                 "Computers and Electronics",
                                                 "Health",
                                                 "Home and Garden",
                                                 "Finance and Business",
                                                 "Pets and Animals",
                                                 "Education and Communications",
                                                 "Youth",
                                                 "Sports and Fitness",
                                                 "Relationships",
                                                 "Work World",
                                                 "Cars & Other Vehicles",
                                                 "Travel",
                                                 "Holidays and Traditions",
                                                 "Philosophy and Religion",
                                                 "Uncategorized",
                                                 "Home,Categories"};
  return std::find(std::begin(kLabels), std::end(kLabels), label) != std::end(kLabels);
}

/// HellaSwag in llama.cpp's text format: 6 lines per task (activity_label ": " ctx_a " " ctx_b,
/// the gold index, 4 endings). lm-eval's query is preprocess(label ": " ctx_a " "
/// ctx_b.capitalize()); the file keeps ctx_a and ctx_b joined. ActivityNet contexts: ctx_b is
/// the unfinished sentence after the last sentence end ([.!?], closing quotes or brackets, a
/// space). WikiHow contexts have no ctx_b. (docs/evaluation.md: what this cannot recover.)
inline void read_hellaswag(Task& t, const std::string& path) {
  static const text::Pattern sentence_end("[.!?][\"')\\]]*\\s");
  const std::string raw = path.ends_with(".bz2") ? read_bz2(path) : read_file_bytes(path, "task data");
  auto lines = split_lines(raw);
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.size() % 6 != 0)
    throw FormatError(path + ": " + std::to_string(lines.size()) + " lines, not a multiple of 6 (llama.cpp format)");
  for (size_t i = 0; i < lines.size(); i += 6) {
    const std::string where = path + ":" + std::to_string(i + 1);
    const std::string& q = lines[i];
    const size_t colon = q.find(": ");
    if (colon == std::string::npos) throw FormatError(where + ": no 'activity: context' line");
    const std::string label = q.substr(0, colon), ctx = q.substr(colon + 2);
    std::string ctx_a = ctx, ctx_b;
    if (hellaswag_wikihow(label)) {
      ctx_a = restore_triple_spaces(ctx);
    } else if (const size_t end = sentence_end.last_match_end(ctx); end != std::string::npos) {
      ctx_a = std::string(text::rstrip(std::string_view(ctx).substr(0, end)));
      ctx_b = ctx.substr(end);
    }
    const std::string query = text::hellaswag_preprocess(label + ": " + ctx_a + " " + text::capitalize(ctx_b));
    int gold = -1;
    try {
      gold = std::stoi(lines[i + 1]);
    } catch (const std::exception&) {
    }
    if (gold < 0 || gold > 3) throw FormatError(path + ":" + std::to_string(i + 2) + ": the gold label must be 0..3");
    std::vector<std::string> endings;
    for (size_t k = 0; k < 4; ++k)
      endings.push_back(text::hellaswag_preprocess(restore_triple_spaces(lines[i + 2 + k])));
    t.docs.push_back(mc_doc(query, std::move(endings), size_t(gold)));
  }
}

/// WikiText-2 test into the pages of EleutherAI/wikitext_document_level. The file here is the HF
/// split's rows (CRLF, no blank rows); the Salesforce layout it came from (LF, " " lines around
/// headings and at both ends) is rebuilt first; an LF file is taken as that layout already.
/// A page starts at each top-level heading (" = Title = ").
inline std::vector<std::string> wikitext_pages(const std::string& raw) {
  auto is_heading = [](const std::string& l) {
    // two lines of the test split have the heading shape but are formula fragments
    if (l == " = 1 rad / s and a nominal impedance k = " || l == " = 1 henry and capacitance C = ") return false;
    const std::string_view s = text::strip(l);
    return s.starts_with("= ") && s.ends_with(" =");
  };
  auto is_top = [](const std::string& l) {
    const std::string r = text::replace_all(text::replace_all(l, "= = =", "==="), "= =", "==");
    const std::string_view s = text::strip(r);
    return s.starts_with("= ") && s.ends_with(" =");
  };
  std::vector<std::string> lines;
  if (raw.find("\r\n") != std::string::npos) {
    lines.push_back(" ");
    bool first = true;
    for (const std::string& line : split_lines(raw)) {
      if (line.empty()) continue;
      if (is_heading(line)) {
        // one blank line before a top-level heading, two before this one (as in the Salesforce file)
        if (is_top(line) && !first && line != " = The Hustler ( film ) = ") lines.push_back(" ");
        if (!first) lines.push_back(" ");
        lines.push_back(line);
        lines.push_back(" ");
        first = false;
      } else {
        lines.push_back(line);
      }
    }
    lines.push_back(" ");
    lines.push_back("");
  } else {
    size_t pos = 0;
    for (;;) {
      const size_t nl = raw.find('\n', pos);
      lines.push_back(raw.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
      if (nl == std::string::npos) break;
      pos = nl + 1;
    }
  }
  std::vector<std::string> pages;
  std::string cur;
  bool have = false;
  for (const std::string& line : lines) {
    if (is_top(line)) {
      if (!text::strip(cur).empty()) pages.push_back(cur);
      cur.clear();
      have = false;
    }
    if (have) cur += '\n';
    cur += line;
    have = true;
  }
  pages.push_back(cur);
  return pages;
}

}  // namespace detail

struct TaskOptions {
  std::filesystem::path data_dir;  ///< the folder laid out as ../shared/data/eval
  std::filesystem::path mmlu_dir;  ///< MMLU: a folder with test/<subject>_test.csv (the standard layout)
  size_t limit = 0;                ///< keep the first `limit` documents (0: all)
};

/// Reads a task's documents (FormatError / IoError naming the file on bad input).
inline Task load_task(const std::string& name, const TaskOptions& o) {
  Task t;
  t.name = name;
  const auto file = [&](const char* rel) {
    t.source = (o.data_dir / rel).string();
    return t.source;
  };
  if (name == "arc_easy" || name == "arc_challenge") {
    t.has_acc_norm = true;
    detail::read_icl_mc(t,
                        file(name == "arc_easy" ? "mosaicml_icl/arc_easy.jsonl" : "mosaicml_icl/arc_challenge.jsonl"),
                        [](const std::string& q, std::vector<std::string> c, size_t gold, const std::string& where) {
                          if (!q.starts_with("Question: "))
                            throw FormatError(where + ": the query must start with 'Question: '");
                          return detail::mc_doc(q + "\nAnswer:", std::move(c), gold);
                        });
  } else if (name == "openbookqa") {
    t.has_acc_norm = true;
    detail::read_icl_mc(t, file("mosaicml_icl/openbook_qa.jsonl"),
                        [](const std::string& q, std::vector<std::string> c, size_t gold, const std::string&) {
                          return detail::mc_doc(q, std::move(c), gold);
                        });
  } else if (name == "copa") {
    // lm-eval: premise without its last character + " because" / " therefore"; choices with the
    // first letter lower-cased and a leading space, after the target delimiter " ".
    detail::read_icl_mc(t, file("mosaicml_icl/copa.jsonl"),
                        [](const std::string& q, std::vector<std::string> c, size_t gold, const std::string& where) {
                          const size_t at = q.rfind(", ");
                          const std::string conn = at == std::string::npos ? "" : q.substr(at + 2);
                          if (conn != "because" && conn != "therefore")
                            throw FormatError(where + ": the query must end with ', because' or ', therefore'");
                          for (auto& ch : c)
                            if (!ch.empty() && static_cast<unsigned char>(ch[0]) < 0x80)
                              ch = char(std::tolower(static_cast<unsigned char>(ch[0]))) + ch.substr(1);
                          Doc d;
                          for (const auto& ch : c) d.requests.push_back({q.substr(0, at) + " " + conn, "  " + ch});
                          d.choices = c;
                          d.gold = gold;
                          return d;
                        });
  } else if (name == "winogrande" || name == "wsc273") {
    detail::read_icl_partial(t,
                             file(name == "winogrande" ? "mosaicml_icl/winogrande.jsonl"
                                                       : "mosaicml_icl/winograd_wsc.jsonl"),
                             name == "wsc273");
  } else if (name == "piqa") {
    t.has_acc_norm = true;
    const std::string path = file("piqa/valid.jsonl");
    const auto rows = detail::read_jsonl(path);
    const std::string labels_path = (o.data_dir / "piqa/valid-labels.lst").string();
    auto labels = detail::split_lines(read_file_bytes(labels_path, "PIQA labels"));
    while (!labels.empty() && labels.back().empty()) labels.pop_back();
    if (labels.size() != rows.size())
      throw FormatError(labels_path + ": " + std::to_string(labels.size()) + " labels for " +
                        std::to_string(rows.size()) + " questions in " + path);
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string where = path + ":" + std::to_string(i + 1);
      if (labels[i] != "0" && labels[i] != "1")
        throw FormatError(labels_path + ":" + std::to_string(i + 1) + ": not 0 or 1");
      t.docs.push_back(
          detail::mc_doc("Question: " + detail::str_field(rows[i], "goal", where) + "\nAnswer:",
                         {detail::str_field(rows[i], "sol1", where), detail::str_field(rows[i], "sol2", where)},
                         size_t(labels[i][0] - '0')));
    }
  } else if (name == "hellaswag") {
    t.has_acc_norm = true;
    std::string path = (o.data_dir / "hellaswag/hellaswag_val_full.txt").string();
    if (!std::filesystem::exists(path)) path += ".bz2";
    t.source = path;
    detail::read_hellaswag(t, path);
  } else if (name == "lambada_openai") {
    t.type = TaskType::kLoglikelihood;
    const std::string path = file("lambada/lambada_test.jsonl");
    const auto rows = detail::read_jsonl(path);
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string where = path + ":" + std::to_string(i + 1);
      const std::string text = detail::str_field(rows[i], "text", where);
      // text.split(' ')[:-1] joined / ' ' + the last piece
      const size_t sp = text.rfind(' ');
      if (sp == std::string::npos) throw FormatError(where + ": a LAMBADA text needs at least two words");
      Doc d;
      d.requests.push_back({text.substr(0, sp), " " + text.substr(sp + 1)});
      t.docs.push_back(std::move(d));
    }
  } else if (name == "wikitext") {
    t.type = TaskType::kRolling;
    const std::string path = file("wikitext-2-raw/wiki.test.raw");
    for (const std::string& page : detail::wikitext_pages(read_file_bytes(path, "task data"))) {
      Doc d;
      d.text = text::wikitext_detokenize(page);
      d.words = double(text::split_whitespace_count(page));
      d.bytes = double(page.size());
      t.docs.push_back(std::move(d));
    }
  } else if (name == "mmlu") {
    if (o.mmlu_dir.empty())
      throw UsageError("mmlu: its data is not bundled; give the folder with test/<subject>_test.csv (--mmlu-dir)");
    const auto test_dir = o.mmlu_dir / "test";
    if (!std::filesystem::is_directory(test_dir))
      throw IoError(test_dir.string() + ": not a folder (MMLU layout: test/<subject>_test.csv)");
    t.source = test_dir.string();
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(test_dir))
      if (e.path().filename().string().ends_with("_test.csv")) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw FormatError(test_dir.string() + ": no <subject>_test.csv files");
    for (const auto& f : files) {
      std::string subject = f.filename().string();
      subject = subject.substr(0, subject.size() - std::string("_test.csv").size());
      const std::string desc = "The following are multiple choice questions (with answers) about " +
                               text::replace_all(subject, "_", " ") + ".\n\n";
      const auto rows = text::parse_csv(read_file_bytes(f.string(), "MMLU file"), f.string());
      for (size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        const std::string where = f.string() + ":" + std::to_string(i + 1);
        if (r.size() != 6) throw FormatError(where + ": an MMLU row has 6 fields (question, A, B, C, D, answer)");
        if (r[5].size() != 1 || r[5][0] < 'A' || r[5][0] > 'D')
          throw FormatError(where + ": the answer must be A, B, C or D");
        const std::string ctx = desc + std::string(text::strip(r[0])) + "\nA. " + r[1] + "\nB. " + r[2] + "\nC. " +
                                r[3] + "\nD. " + r[4] + "\nAnswer:";
        t.docs.push_back(detail::mc_doc(ctx, {"A", "B", "C", "D"}, size_t(r[5][0] - 'A')));
        t.docs.back().subtask = subject;
      }
    }
  } else {
    std::string known;
    for (const auto& n : task_names()) known += (known.empty() ? "" : ", ") + n;
    throw UsageError("unknown task '" + name + "' (known: " + known + ")");
  }
  if (t.docs.empty()) throw FormatError(t.source + ": no documents");
  if (o.limit > 0 && t.docs.size() > o.limit) t.docs.resize(o.limit);
  return t;
}

}  // namespace loopus::eval
