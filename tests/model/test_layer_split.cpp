// LayerSplit: the official layer-spec syntax, pinned against the official code's own outputs.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/model/layer_split.hpp"
#include "test_util.hpp"

using namespace loopus;
using nlohmann::json;

namespace {

json golden() {
  return json::parse(test::read_text(test::source_dir() / "tests/golden/official/layer_specs.json"));
}

/// LDSConfig's resolution of one parse_layer_indices result: None is no
/// layers, a lone negative sentinel [-k] is k..n-1 (the pairs below check the
/// same rule through LDSConfig itself).
std::vector<int> resolve(const json& layers, int n) {
  if (layers.is_null()) return {};
  std::vector<int> v = layers.get<std::vector<int>>();
  if (v.size() == 1 && v[0] < 0) {
    const int k = -v[0];
    v.clear();
    for (int i = k; i < n; ++i) v.push_back(i);
  }
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEST_CASE("[loopus] layer specs equal the official parse_layer_indices (golden from the official code)") {
  const json g = golden();
  const int n = g.at("n_layer");
  // Specs the official code accepts but resolves to a surprise; loopus stops
  // with a clear error instead (docs/loops.md, "Layer specs").
  const std::set<std::string> departures = {"0-", "0..", "7..3", "28", "0..28", "30-", "1,1", "1,-2"};
  int same = 0, errors = 0, departed = 0;
  for (const json& c : g.at("specs")) {
    const std::string spec = c.at("spec");
    CAPTURE(spec);
    if (c.contains("error")) {
      CHECK_THROWS_WITH_AS(LayerSplit::parse_spec(spec, n, "--encoder-layers"),
                           doctest::Contains(("--encoder-layers '" + spec + "'").c_str()), Error);
      ++errors;
    } else if (departures.count(spec)) {
      CHECK_THROWS_AS(LayerSplit::parse_spec(spec, n, "--decoder-layers"), Error);
      ++departed;
    } else {
      CHECK_EQ(LayerSplit::parse_spec(spec, n, "x"), resolve(c.at("layers"), n));
      ++same;
    }
  }
  // The golden must cover every form of the issue: lists, single k, open and closed ranges, empty words.
  CHECK_GE(same, 20);
  CHECK_GE(errors, 8);
  CHECK_EQ(departed, int(departures.size()));
  // Why each departure is one: the official value a user would not expect.
  auto official = [&](const std::string& s) {
    for (const json& c : g.at("specs"))
      if (c.at("spec") == s) return resolve(c.at("layers"), n);
    FAIL("spec " << s << " missing from the golden");
    return std::vector<int>{};
  };
  CHECK_EQ(official("0-"), std::vector<int>{0});  // -0 == 0: the sentinel is lost
  CHECK(official("7..3").empty());                 // a backwards range is silently empty
  CHECK_EQ(official("28").size(), 29u);            // layer 28 of a 28-layer model
  CHECK_EQ(official("1,1"), (std::vector<int>{1, 1}));
}

TEST_CASE("[loopus] encoder/decoder pairs resolve as the official LDSConfig does") {
  const json g = golden();
  const int n = g.at("n_layer");
  int ok = 0;
  for (const json& c : g.at("pairs")) {
    const std::string enc = c.at("encoder_spec"), dec = c.at("decoder_spec");
    CAPTURE(enc);
    CAPTURE(dec);
    if (c.contains("error")) {
      CHECK_THROWS_AS(LayerSplit::from_specs(enc, dec, n), Error);
      continue;
    }
    const LayerSplit s = LayerSplit::from_specs(enc, dec, n);
    CHECK_EQ(s.encoder, c.at("encoder").get<std::vector<int>>());
    CHECK_EQ(s.reasoning, c.at("reasoning").get<std::vector<int>>());
    CHECK_EQ(s.decoder, c.at("decoder").get<std::vector<int>>());
    ++ok;
  }
  CHECK_GE(ok, 6);
}

TEST_CASE("[loopus] a comma list is explicit layers, never a union of ranges") {
  // The bug this replaces: "1,2,27" was read as 0..1 ∪ 0..2 ∪ 0..27.
  CHECK_EQ(LayerSplit::parse_spec("1,2,27", 28, "x"), (std::vector<int>{1, 2, 27}));
  CHECK_EQ(LayerSplit::parse_spec("0,3", 28, "x"), (std::vector<int>{0, 3}));
  CHECK_THROWS_WITH_AS(LayerSplit::parse_spec("0..2,5", 28, "--encoder-layers"),
                       doctest::Contains("'0-2' is not a layer number"), Error);
  CHECK_THROWS_WITH_AS(LayerSplit::parse_spec("0..", 28, "--decoder-layers"),
                       doctest::Contains("layer 0 alone in the official code"), Error);
  CHECK_THROWS_WITH_AS(LayerSplit::parse_spec("1,1", 28, "--decoder-layers"), doctest::Contains("listed twice"), Error);
  CHECK_THROWS_WITH_AS(LayerSplit::parse_spec("7..3", 28, "--decoder-layers"), doctest::Contains("runs backwards"),
                       Error);
  CHECK_THROWS_WITH_AS(LayerSplit::parse_spec("28", 28, "--decoder-layers"), doctest::Contains("does not exist"), Error);
}

TEST_CASE("[loopus] the split's text reads back as the same layers") {
  for (const std::vector<int>& v : {std::vector<int>{0, 2}, std::vector<int>{2, 3, 4}, std::vector<int>{5},
                                    std::vector<int>{0, 1, 3, 7}, std::vector<int>{}}) {
    const std::string t = LayerSplit::range_text(v);
    CAPTURE(t);
    CHECK_EQ(LayerSplit::parse_spec(t, 28, "x"), v);
  }
  CHECK_EQ(LayerSplit::range_text({0, 2}), "0,2");
  CHECK_EQ(LayerSplit::range_text({27}), "27..27");
  CHECK_EQ(LayerSplit::from_specs("0..1", "27..27", 28).text(), "0..1 | 2..26 | 27..27");
}
