// Google Benchmark: BpeTokenizer encode throughput (MB/s) on public-domain text, Qwen3 and Llama 3, cache on/off.
// SPDX-License-Identifier: MIT
//
// Data: $LOOPUS_DATA_DIR, else LOOPUS_DEFAULT_DATA_DIR (when the build defines it), else
// ../shared/data relative to the working directory. The HF `tokenizers` numbers to compare with
// come from tests/reference/bench_hf_tokenizers.py (same files, same modes, single thread).
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "loopus/tokenizer/bpe.hpp"

namespace {

std::filesystem::path data_dir() {
  if (const char* e = std::getenv("LOOPUS_DATA_DIR"); e && *e) return e;
#ifdef LOOPUS_DEFAULT_DATA_DIR
  return LOOPUS_DEFAULT_DATA_DIR;
#else
  return "../shared/data";
#endif
}

/// Tokenizers are loaded once and shared by the benchmarks (nullptr when the file is missing).
loopus::BpeTokenizer* tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<loopus::BpeTokenizer>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second.get();
  const auto path = data_dir() / "tokenizers" / name / "tokenizer.json";
  std::unique_ptr<loopus::BpeTokenizer> t;
  if (std::filesystem::exists(path))
    t = std::make_unique<loopus::BpeTokenizer>(loopus::BpeTokenizer::from_json_file(path.string()));
  return (cache[name] = std::move(t)).get();
}

const std::string* text(const std::string& rel) {
  static std::map<std::string, std::string> cache;
  auto it = cache.find(rel);
  if (it != cache.end()) return &it->second;
  const auto path = data_dir() / rel;
  if (!std::filesystem::exists(path)) return nullptr;
  return &(cache[rel] = loopus::unicode::to_valid_utf8(loopus::bpe_detail::read_file(path.string())));
}

std::vector<std::string_view> lines_of(const std::string& s) {
  std::vector<std::string_view> out;
  for (size_t p = 0; p < s.size();) {
    size_t e = s.find('\n', p);
    e = (e == std::string::npos) ? s.size() : e + 1;  // keep the newline, as Python's keepends
    out.emplace_back(s.data() + p, e - p);
    p = e;
  }
  return out;
}

void encode_bench(benchmark::State& state, const std::string& tok_name, const std::string& file, bool by_lines,
                  bool use_cache) {
  loopus::BpeTokenizer* tok = tokenizer(tok_name);
  const std::string* t = text(file);
  if (!tok || !t) {
    state.SkipWithError("tokenizer or text missing (set LOOPUS_DATA_DIR)");
    return;
  }
  tok->set_cache_capacity(use_cache ? loopus::BpeTokenizer::kDefaultCacheCapacity : 0);
  const auto lines = lines_of(*t);
  size_t n_tokens = 0;
  for (auto _ : state) {
    n_tokens = 0;
    if (by_lines) {
      for (std::string_view l : lines) n_tokens += tok->encode(l, false).size();
    } else {
      n_tokens = tok->encode(*t, false).size();
    }
    benchmark::DoNotOptimize(n_tokens);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(t->size()));
  state.counters["tokens"] = static_cast<double>(n_tokens);
  state.counters["bytes_per_token"] = n_tokens ? static_cast<double>(t->size()) / n_tokens : 0.0;
  tok->set_cache_capacity(loopus::BpeTokenizer::kDefaultCacheCapacity);
}

void load_bench(benchmark::State& state, const std::string& tok_name) {
  const auto path = data_dir() / "tokenizers" / tok_name / "tokenizer.json";
  if (!std::filesystem::exists(path)) {
    state.SkipWithError("tokenizer.json missing (set LOOPUS_DATA_DIR)");
    return;
  }
  for (auto _ : state) {
    auto t = loopus::BpeTokenizer::from_json_file(path.string());
    benchmark::DoNotOptimize(t.n_vocab());
  }
}

const bool registered = [] {
  const std::vector<std::pair<std::string, std::string>> files = {
      {"shakespeare", "text/public_domain/tinyshakespeare.txt"},
      {"sherlock", "text/public_domain/sherlock_holmes_adventures_pg1661.txt"}};
  for (const std::string tok : {"qwen3", "llama3"}) {
    benchmark::RegisterBenchmark(("BM_Load/" + tok).c_str(), load_bench, tok)->Iterations(3)->Unit(benchmark::kMillisecond);
    for (const auto& [short_name, rel] : files)
      for (const bool lines : {false, true})
        for (const bool cache : {true, false})
          benchmark::RegisterBenchmark(("BM_Encode/" + tok + "/" + short_name + (lines ? "/lines" : "/whole") +
                                        (cache ? "/cache" : "/nocache"))
                                           .c_str(),
                                       encode_bench, tok, rel, lines, cache)
              ->Unit(benchmark::kMillisecond)
              ->MinTime(1.0);
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
