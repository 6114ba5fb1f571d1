// LayerSplit: which layers form the encoder, the looped reasoning block and the decoder.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <cctype>
#include <string>
#include <utility>
#include <vector>

#include "loopus/core/error.hpp"

namespace loopus {

/// Original layer indices of each block, each sorted. The reasoning block is
/// every layer in neither the encoder nor the decoder.
struct LayerSplit {
  std::vector<int> encoder, reasoning, decoder;

  int n_layer() const { return int(encoder.size() + reasoning.size() + decoder.size()); }

  /// Parses one layer spec exactly as the official `parse_layer_indices`
  /// (then `LDSConfig`'s open-range expansion) does, for a model of n_layer layers:
  ///  - "" (no option), "none", "empty", "[]" (any case): no layers;
  ///  - "k": layers 0..k;
  ///  - "a..b" or "a-b": a..b inclusive;
  ///  - "k.." or "k-": k to the last layer;
  ///  - "i,j,..." (two or more): exactly those layers ("0,3" is layers 0 and 3).
  /// Where the official code would silently do something surprising, this
  /// throws an Error naming the spec instead (docs/loops.md lists each case):
  /// "0.."/"0-" (officially layer 0 only), a range that runs backwards
  /// (officially empty), a layer the model does not have, a negative or
  /// repeated index (officially Python indexing or a layer built twice).
  static std::vector<int> parse_spec(const std::string& spec, int n_layer, const std::string& what) {
    auto fail = [&](const std::string& why) -> std::vector<int> {
      throw UsageError(what + " '" + spec + "': " + why +
                       " (syntax: k = 0..k, a..b, a-b, k.., k-, i,j,... = those layers, " + "none; model has " +
                       std::to_string(n_layer) + " layers, 0.." + std::to_string(n_layer - 1) + ")");
    };
    auto trim = [](std::string x) {
      const auto b = x.find_first_not_of(" \t"), e = x.find_last_not_of(" \t");
      return b == std::string::npos ? std::string() : x.substr(b, e - b + 1);
    };
    auto num = [&](const std::string& raw) {
      const std::string t = trim(raw);
      if (t.empty() || t.size() > 9 || !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; }))
        fail("'" + t + "' is not a layer number" +
             (t.find('-') != std::string::npos ? " (a comma list holds single layers, not ranges)" : ""));
      const int v = std::stoi(t);
      if (v >= n_layer) fail("layer " + std::to_string(v) + " does not exist");
      return v;
    };
    auto range = [&](int a, int b) {
      if (a > b) fail("range " + std::to_string(a) + ".." + std::to_string(b) + " runs backwards");
      std::vector<int> out;
      for (int i = a; i <= b; ++i) out.push_back(i);
      return out;
    };
    std::string s = trim(spec);
    std::string lower = s;
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (s.empty() || lower == "none" || lower == "empty" || lower == "[]") return {};
    {  // "a..b" is "a-b" (copied char by char: GCC 12 warns falsely on std::string::replace here)
      std::string t;
      for (size_t i = 0; i < s.size(); ++i) {
        const bool dots = s[i] == '.' && i + 1 < s.size() && s[i + 1] == '.';
        t.push_back(dots ? '-' : s[i]);
        i += dots ? 1 : 0;
      }
      s = std::move(t);
    }
    const bool comma = s.find(',') != std::string::npos;
    if (!comma && s.back() == '-') {  // "k-": k to the last layer
      const int k = num(s.substr(0, s.size() - 1));
      if (k == 0) fail("'0-' / '0..' is layer 0 alone in the official code (-0 == 0); write 0 for that, 0-" +
                       std::to_string(n_layer - 1) + " for every layer");
      return range(k, n_layer - 1);
    }
    if (!comma && s.find('-') != std::string::npos) {  // "a-b"
      const size_t dash = s.find('-');
      return range(num(s.substr(0, dash)), num(s.substr(dash + 1)));
    }
    std::vector<int> out;  // "k" or "i,j,..."
    for (size_t b = 0;;) {
      const size_t e = s.find(',', b);
      out.push_back(num(s.substr(b, e == std::string::npos ? std::string::npos : e - b)));
      if (e == std::string::npos) break;
      b = e + 1;
    }
    if (out.size() == 1) return range(0, out[0]);
    std::sort(out.begin(), out.end());
    if (std::adjacent_find(out.begin(), out.end()) != out.end())
      fail("layer " + std::to_string(*std::adjacent_find(out.begin(), out.end())) + " is listed twice");
    return out;
  }

  /// Builds and validates a split: no overlap, non-empty reasoning block.
  static LayerSplit from_specs(const std::string& enc, const std::string& dec, int n_layer) {
    LayerSplit s;
    s.encoder = parse_spec(enc, n_layer, "encoder spec");
    s.decoder = parse_spec(dec, n_layer, "decoder spec");
    for (int e : s.encoder)
      if (std::find(s.decoder.begin(), s.decoder.end(), e) != s.decoder.end())
        throw UsageError("encoder spec '" + enc + "' and decoder spec '" + dec + "' overlap at layer " +
                         std::to_string(e));
    for (int l = 0; l < n_layer; ++l)
      if (std::find(s.encoder.begin(), s.encoder.end(), l) == s.encoder.end() &&
          std::find(s.decoder.begin(), s.decoder.end(), l) == s.decoder.end())
        s.reasoning.push_back(l);
    if (s.reasoning.empty())
      throw UsageError("encoder spec '" + enc + "' and decoder spec '" + dec +
                       "' leave no layer for the reasoning block");
    return s;
  }

  /// The whole model as a reasoning block (what a plain model is recast into by default).
  static LayerSplit all_reasoning(int n_layer) {
    LayerSplit s;
    for (int l = 0; l < n_layer; ++l) s.reasoning.push_back(l);
    return s;
  }

  /// One block as a spec that parse_spec reads back to the same layers:
  /// "a..b" for a contiguous run, else the comma list ("0,2,5"), "none" when empty.
  static std::string range_text(const std::vector<int>& v) {
    if (v.empty()) return "none";
    bool run = true;
    for (size_t i = 1; i < v.size(); ++i) run = run && v[i] == v[i - 1] + 1;
    if (run) return std::to_string(v.front()) + ".." + std::to_string(v.back());
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) out.push_back(',');
      out += std::to_string(v[i]);
    }
    return out;
  }
  /// The whole split, e.g. "0..1 | 2..26 | 27..27".
  std::string text() const {
    return range_text(encoder) + " | " + range_text(reasoning) + " | " + range_text(decoder);
  }
};

}  // namespace loopus
