// Evaluation harness: a task's documents -> token requests -> scores -> lm-eval's metrics, for any
// LanguageModel (plain, recast, adapted, official LoopUS) at any loop budget.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"
#include "loopus/eval/loglikelihood.hpp"
#include "loopus/eval/metrics.hpp"
#include "loopus/eval/request.hpp"
#include "loopus/eval/rolling.hpp"
#include "loopus/eval/tasks.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/tokenizer/tokenizer.hpp"

namespace loopus::eval {

enum class RollingWindows {
  kLmEval,    ///< lm-eval's disjoint windows of max_length tokens
  kOfficial,  ///< the official LoopUS evaluation: `window` tokens every `stride`
};

struct EvalOptions {
  PairEncoding encoding = PairEncoding::kWhole;
  RollingWindows rolling = RollingWindows::kLmEval;
  int64_t max_length = 2048;            ///< lm-eval's max_length (the model's training context by default)
  int64_t window = 1024, stride = 512;  ///< kOfficial windows
  bool share_context = true;            ///< ScoreOptions::share_context
  int64_t batch_tokens = 512;           ///< ScoreOptions::batch_tokens
};

/// A task's requests in tokens; doc_of[i] is the document request i belongs to.
struct PreparedTask {
  const Task* task = nullptr;
  std::vector<TokenRequest> requests;
  std::vector<size_t> doc_of;
  int64_t longest_input = 1;  ///< tokens the model must hold for the longest request
};

inline PreparedTask prepare(const Task& t, const Tokenizer& tok, const EvalOptions& o) {
  PreparedTask p;
  p.task = &t;
  for (size_t d = 0; d < t.docs.size(); ++d) {
    const Doc& doc = t.docs[d];
    if (t.type == TaskType::kRolling) {
      const std::vector<int32_t> toks = tok.encode(doc.text, /*add_special=*/true);
      auto windows = o.rolling == RollingWindows::kLmEval ? rolling_windows(toks, prefix_token(tok), o.max_length)
                                                          : strided_windows(toks, o.window, o.stride);
      for (auto& w : windows) {
        p.requests.push_back(std::move(w));
        p.doc_of.push_back(d);
      }
    } else {
      for (const Request& r : doc.requests) {
        p.requests.push_back(encode_request(tok, r, o.encoding));
        p.doc_of.push_back(d);
      }
    }
  }
  const int64_t cut = o.rolling == RollingWindows::kOfficial && t.type == TaskType::kRolling
                          ? std::max(o.max_length, o.window)
                          : o.max_length;
  for (const auto& r : p.requests)
    p.longest_input = std::max<int64_t>(p.longest_input,
                                        std::min<int64_t>(int64_t(r.context.size() + r.continuation.size()) - 1, cut));
  return p;
}

/// The context a model needs to score a prepared task: the longest request in one
/// forward pass (one halting decision per request), and room for the batches.
inline ContextParams context_params(const PreparedTask& p, const EvalOptions& o) {
  ContextParams cp;
  cp.n_ctx = std::max(p.longest_input, o.batch_tokens);
  cp.n_batch = cp.n_ctx;
  return cp;
}

/// Scores a prepared task (see loglikelihood()).
template <LanguageModel Model>
std::vector<Loglik> score(Model& m, const PreparedTask& p, const EvalOptions& o, const ScoreCallback& progress = {}) {
  ScoreOptions so;
  so.max_length = p.task->type == TaskType::kRolling && o.rolling == RollingWindows::kOfficial
                      ? std::max(o.max_length, o.window)
                      : o.max_length;
  so.share_context = o.share_context;
  so.batch_tokens = o.batch_tokens;
  return loglikelihood(m, p.requests, so, progress);
}

/// One number of the results table.
struct MetricRow {
  std::string task, metric;
  double value = NAN, stderr_ = NAN;  ///< stderr NaN where lm-eval reports none
  size_t n = 0;                       ///< documents
  int loops = 1;                      ///< loop budget B (1 for a plain model)
  double mean_loops = 1;              ///< loops the model ran, averaged over its requests
};

/// lm-eval's metrics of a task from its scores: acc (+ acc_norm) for multiple choice,
/// perplexity and acc for LAMBADA, word / byte perplexity and bits per byte for WikiText.
inline std::vector<MetricRow> task_metrics(const PreparedTask& p, const std::vector<Loglik>& s, int loops) {
  const Task& t = *p.task;
  if (s.size() != p.requests.size()) throw UsageError("task_metrics: one score per request needed");
  double loop_sum = 0;
  for (const auto& x : s) loop_sum += x.loops;
  const double mean_loops = s.empty() ? 1 : loop_sum / double(s.size());
  std::vector<MetricRow> rows;
  auto add = [&](const std::string& metric, double v, double se) {
    rows.push_back({t.name, metric, v, se, t.docs.size(), loops, mean_loops});
  };
  if (t.type == TaskType::kMultipleChoice) {
    std::vector<ChoiceScores> cs(t.docs.size());
    for (size_t d = 0; d < t.docs.size(); ++d) {
      cs[d].choices = t.docs[d].choices;
      cs[d].gold = t.docs[d].gold;
    }
    for (size_t i = 0; i < s.size(); ++i) cs[p.doc_of[i]].ll.push_back(s[i].ll);
    std::vector<double> a, an;
    for (const auto& c : cs) {
      a.push_back(acc(c));
      if (t.has_acc_norm) an.push_back(acc_norm(c));
    }
    double se = mean_stderr(a);
    if (!t.docs.empty() && !t.docs[0].subtask.empty()) {  // a group: lm-eval pools the subtasks' stderrs
      std::map<std::string, std::vector<double>> by;
      for (size_t d = 0; d < t.docs.size(); ++d) by[t.docs[d].subtask].push_back(a[d]);
      std::vector<double> ses, ns;
      for (const auto& [name, v] : by) {
        ses.push_back(mean_stderr(v));
        ns.push_back(double(v.size()));
      }
      se = pooled_stderr(ses, ns);
    }
    add("acc", mean(a), se);
    if (t.has_acc_norm) add("acc_norm", mean(an), mean_stderr(an));
  } else if (t.type == TaskType::kLoglikelihood) {
    std::vector<double> ll, greedy;
    for (const auto& x : s) {
      ll.push_back(x.ll);
      greedy.push_back(x.greedy ? 1.0 : 0.0);
    }
    add("perplexity", perplexity(ll), perplexity_stderr(ll));
    add("acc", mean(greedy), mean_stderr(greedy));
  } else {
    std::vector<Weighted> words(t.docs.size()), bytes(t.docs.size());
    for (size_t d = 0; d < t.docs.size(); ++d) {
      words[d].weight = t.docs[d].words;
      bytes[d].weight = t.docs[d].bytes;
    }
    for (size_t i = 0; i < s.size(); ++i) {
      words[p.doc_of[i]].ll += s[i].ll;
      bytes[p.doc_of[i]].ll += s[i].ll;
    }
    add("word_perplexity", weighted_perplexity(words), NAN);
    add("byte_perplexity", weighted_perplexity(bytes), NAN);
    add("bits_per_byte", bits_per_byte(bytes), NAN);
  }
  return rows;
}

}  // namespace loopus::eval
