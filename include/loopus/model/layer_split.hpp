// LayerSplit: which layers form the encoder, the looped reasoning block and the decoder.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "loopus/core/error.hpp"

namespace loopus {

/// Original layer indices of each block, each sorted. The reasoning block is
/// every layer in neither the encoder nor the decoder.
struct LayerSplit {
  std::vector<int> encoder, reasoning, decoder;

  int n_layer() const { return int(encoder.size() + reasoning.size() + decoder.size()); }

  /// Parses one layer spec of the official syntax for a model of n_layer layers:
  /// "a..b" or "a-b" (inclusive), "k-" (k to the last layer), "k" (0..k),
  /// "none" or "" (empty). Comma-separated specs are unioned (an extension).
  static std::vector<int> parse_spec(const std::string& spec, int n_layer, const std::string& what) {
    auto fail = [&](const std::string& why) -> std::vector<int> {
      throw Error(what + " '" + spec + "': " + why + " (syntax: a..b, a-b, k-, k (= 0..k), none; model has " +
                  std::to_string(n_layer) + " layers, 0.." + std::to_string(n_layer - 1) + ")");
    };
    std::set<int> out;
    auto num = [&](const std::string& s) {
      if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
        fail("'" + s + "' is not a layer number");
      return std::stoi(s);
    };
    std::string s;
    for (char c : spec)
      if (c != ' ') s += c;
    if (s.empty() || s == "none") return {};
    size_t start = 0;
    while (start <= s.size()) {
      size_t comma = s.find(',', start);
      std::string part = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      int a, b;
      if (auto dd = part.find(".."); dd != std::string::npos) {
        a = num(part.substr(0, dd));
        b = num(part.substr(dd + 2));
      } else if (auto dash = part.find('-'); dash != std::string::npos) {
        a = num(part.substr(0, dash));
        b = dash + 1 == part.size() ? n_layer - 1 : num(part.substr(dash + 1));
      } else {
        a = 0;
        b = num(part);
      }
      if (a > b) fail("range start is after its end");
      if (b >= n_layer) fail("layer " + std::to_string(b) + " does not exist");
      for (int i = a; i <= b; ++i) out.insert(i);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return {out.begin(), out.end()};
  }

  /// Builds and validates a split: no overlap, non-empty reasoning block.
  static LayerSplit from_specs(const std::string& enc, const std::string& dec, int n_layer) {
    LayerSplit s;
    s.encoder = parse_spec(enc, n_layer, "--encoder-layers");
    s.decoder = parse_spec(dec, n_layer, "--decoder-layers");
    for (int e : s.encoder)
      if (std::find(s.decoder.begin(), s.decoder.end(), e) != s.decoder.end())
        throw Error("--encoder-layers '" + enc + "' and --decoder-layers '" + dec + "' overlap at layer " +
                    std::to_string(e));
    for (int l = 0; l < n_layer; ++l)
      if (std::find(s.encoder.begin(), s.encoder.end(), l) == s.encoder.end() &&
          std::find(s.decoder.begin(), s.decoder.end(), l) == s.decoder.end())
        s.reasoning.push_back(l);
    if (s.reasoning.empty())
      throw Error("--encoder-layers '" + enc + "' and --decoder-layers '" + dec +
                  "' leave no layer for the reasoning block");
    return s;
  }

  /// The whole model as a reasoning block (what a plain model is recast into by default).
  static LayerSplit all_reasoning(int n_layer) {
    LayerSplit s;
    for (int l = 0; l < n_layer; ++l) s.reasoning.push_back(l);
    return s;
  }

  /// Compact text, e.g. "0..1 | 2..26 | 27..27".
  static std::string range_text(const std::vector<int>& v) {
    if (v.empty()) return "none";
    std::string out;
    size_t i = 0;
    while (i < v.size()) {
      size_t j = i;
      while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
      if (!out.empty()) out += ',';
      out += std::to_string(v[i]);
      out += "..";
      out += std::to_string(v[j]);
      i = j + 1;
    }
    return out;
  }
  std::string text() const {
    return range_text(encoder) + " | " + range_text(reasoning) + " | " + range_text(decoder);
  }
};

}  // namespace loopus
