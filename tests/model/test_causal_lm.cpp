// The plain model against golden outputs: stories260K greedy ids and logits, GGUF and llama2.c.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "loopus/io/load_model.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "test_util.hpp"

using namespace loopus;

namespace {

nlohmann::json golden() {
  return nlohmann::json::parse(test::read_text(test::data_file("models/stories260K/stories260K_greedy_ref.json")));
}

template <class Backend>
void check_stories(const std::shared_ptr<const ModelWeights>& w, int n_steps) {
  const auto g = golden();
  const auto ids = g["greedy_ids"].get<std::vector<int32_t>>();
  const auto logits_ref = g["logits_first_positions"];
  CausalLM<Backend> lm(w, {.n_ctx = 512, .n_batch = 64});
  std::vector<float> logits(size_t(lm.n_vocab()));
  int32_t tok = g["start_token"].get<int32_t>();
  for (int pos = 0; pos < n_steps; ++pos) {
    lm.eval(std::span<const int32_t>(&tok, 1), logits.data());
    if (pos < int(logits_ref.size())) {
      double max_err = 0;
      for (int i = 0; i < lm.n_vocab(); ++i)
        max_err = std::max(max_err, std::abs(double(logits[size_t(i)]) - logits_ref[size_t(pos)][size_t(i)].get<double>()));
      INFO("position " << pos);
      CHECK_LT(max_err, 1e-4);
    }
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    REQUIRE_MESSAGE(next == ids[size_t(pos)], "greedy id differs at step " << pos);
    tok = next;
  }
}

}  // namespace

TEST_CASE("[loopus] stories260K GGUF: 256 greedy ids exact, logits within 1e-4 (Cpu)") {
  auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  CHECK_EQ(w->hp.n_layer, 5);
  CHECK_EQ(w->hp.n_embd, 64);
  CHECK(w->hp.tied_output == false);  // the GGUF stores output.weight as a copy
  check_stories<Cpu>(w, 256);
}

TEST_CASE("[loopus] stories260K llama2.c .bin: 256 greedy ids exact (Cpu)") {
  auto w = load_weights(test::data_file("models/stories260K/stories260K.bin"));
  CHECK(w->hp.tied_output);
  check_stories<Cpu>(w, 256);
}

TEST_CASE("[loopus] stories260K: Reference backend matches the golden logits") {
  auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  check_stories<Reference>(w, 8);
}

TEST_CASE("[loopus] batched prefill equals token-by-token decode") {
  auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  const auto ids = golden()["greedy_ids"].get<std::vector<int32_t>>();
  std::vector<int32_t> seq(ids.begin(), ids.begin() + 100);
  CausalLM<Cpu> a(w, {.n_ctx = 256, .n_batch = 32});  // 4 chunks
  CausalLM<Cpu> b(w, {.n_ctx = 256, .n_batch = 1});
  const int V = a.n_vocab();
  std::vector<float> la(static_cast<size_t>(V) * seq.size()), lb(static_cast<size_t>(V));
  a.eval(seq, la.data(), /*all_logits=*/true);
  double max_err = 0;
  for (size_t t = 0; t < seq.size(); ++t) {
    b.eval(std::span<const int32_t>(&seq[t], 1), lb.data());
    for (int i = 0; i < V; ++i) max_err = std::max(max_err, double(std::abs(la[t * size_t(V) + size_t(i)] - lb[size_t(i)])));
  }
  CHECK_LT(max_err, 1e-4);
}

TEST_CASE("[loopus] bf16 and f16 weights stay close to f32") {
  auto w32 = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  for (DType t : {DType::kBF16, DType::kF16}) {
    ModelLoadOptions o;
    o.weights.matrix_dtype = t;
    auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"), o);
    CHECK_EQ(w->matrix_dtype(), std::string(dtype_name(t)));
    CausalLM<Cpu> a(w32, {.n_ctx = 64, .n_batch = 64}), b(w, {.n_ctx = 64, .n_batch = 64});
    std::vector<int32_t> seq = {1, 403, 407, 261, 378, 432};
    std::vector<float> la(512), lb(512);
    a.eval(seq, la.data());
    b.eval(seq, lb.data());
    double num = 0, den = 0;
    for (int i = 0; i < 512; ++i) {
      num += double(la[size_t(i)] - lb[size_t(i)]) * (la[size_t(i)] - lb[size_t(i)]);
      den += double(la[size_t(i)]) * la[size_t(i)];
    }
    INFO(dtype_name(t));
    CHECK_LT(std::sqrt(num / den), t == DType::kBF16 ? 2e-2 : 2e-3);
  }
}

TEST_CASE("[loopus] context overflow is an error, not a crash") {
  auto w = load_weights(test::data_file("models/stories260K/stories260K.gguf"));
  CausalLM<Cpu> lm(w, {.n_ctx = 4, .n_batch = 4});
  std::vector<int32_t> seq = {1, 2, 3, 4, 5};
  std::vector<float> l(512);
  CHECK_THROWS_AS(lm.eval(seq, l.data()), Error);
}
