// Test-only driver for check_hf_tokenizers.py: encodes/decodes JSONL texts with loopus::BpeTokenizer.
// SPDX-License-Identifier: MIT
//
// Build (the check script does this itself):
//   g++ -std=c++20 -O2 -march=native -Iinclude tests/reference/bpe_encode_driver.cpp -lpcre2-8 -o bpe_encode_driver
// Usage:
//   bpe_encode_driver TOKENIZER(.json | .gguf) IN.jsonl OUT.jsonl [--add-special] [--no-parse-special]
// IN lines are {"i": .., "text": ..}; OUT lines are {"i": .., "ids": [..], "decoded": ..}. decoded is
// decode(ids, skip_special=false) without clean_up_tokenization_spaces, which is what HF
// `tokenizers` returns. Timing and load time go to stderr.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "loopus/io/gguf.hpp"
#include "loopus/tokenizer/bpe.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s TOKENIZER IN.jsonl OUT.jsonl [--add-special] [--no-parse-special]\n", argv[0]);
    return 2;
  }
  bool add_special = false, parse_special = true;
  for (int k = 4; k < argc; ++k) {
    if (std::strcmp(argv[k], "--add-special") == 0) add_special = true;
    else if (std::strcmp(argv[k], "--no-parse-special") == 0) parse_special = false;
  }
  try {
    const std::string path = argv[1];
    const auto t0 = std::chrono::steady_clock::now();
    loopus::BpeTokenizer tok =
        (path.size() > 5 && path.substr(path.size() - 5) == ".gguf")
            ? loopus::BpeTokenizer::from_gguf_meta(loopus::io::open_gguf(path).meta, path)
            : loopus::BpeTokenizer::from_json_file(path);
    const auto t1 = std::chrono::steady_clock::now();
    tok.set_clean_up_spaces(false);
    const std::string in = loopus::bpe_detail::read_file(argv[2]);
    std::ofstream out(argv[3], std::ios::binary);
    double enc_s = 0;
    size_t bytes = 0, n = 0;
    size_t pos = 0;
    while (pos < in.size()) {
      size_t e = in.find('\n', pos);
      if (e == std::string::npos) e = in.size();
      const std::string line = in.substr(pos, e - pos);
      pos = e + 1;
      if (line.empty()) continue;
      const nlohmann::json j = nlohmann::json::parse(line);
      const std::string text = j.at("text").get<std::string>();
      const auto a = std::chrono::steady_clock::now();
      const auto ids = tok.encode(text, add_special, parse_special);
      enc_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
      bytes += text.size();
      ++n;
      nlohmann::json o;
      o["i"] = j.value("i", nlohmann::json(n - 1));
      o["ids"] = ids;
      o["decoded"] = tok.decode(ids, false);
      out << o.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    }
    std::fprintf(stderr, "load %.0f ms; %zu texts, %zu bytes, encode %.3f s (%.2f MB/s)\n",
                 std::chrono::duration<double, std::milli>(t1 - t0).count(), n, bytes, enc_s,
                 enc_s > 0 ? bytes / enc_s / 1e6 : 0.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
