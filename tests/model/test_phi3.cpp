// Phi-3 / Phi-4 (phi3 architecture): parity with HF transformers from HF folders and GGUF, recasts, errors.
// SPDX-License-Identifier: MIT
//
// The goldens (tests/golden/phi3/NAME.json + NAME.gguf) come from
// tests/reference/gen_phi3_golden.py: transformers' logits for a `loopus synth
// --arch phi3` model, and the same weights written as GGUF by the gguf
// package (llama.cpp's phi3 names: fused attn_qkv, ffn_up = [gate; up],
// rope_factors_*), a file loopus did not write. The test regenerates each
// model in-process, writes it as an HF folder and as GGUF itself, and checks
// every route against the recorded logits.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/load.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/io/save.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/model/looped_model.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/ops/cpu/train.hpp"
#include "loopus/ops/reference/ops.hpp"
#include "loopus/policies/gate/no_gate.hpp"
#include "loopus/train/loopus_step.hpp"
#include "model/golden_util.hpp"
#include "test_util.hpp"

using namespace loopus;
namespace fs = std::filesystem;

namespace {

using test::fingerprint_matches;
using test::max_abs_diff;
using test::read_json;

const fs::path kGoldenDir = test::source_dir() / "tests" / "golden" / "phi3";

/// The golden's `loopus synth` flags: a phi3 model in f32.
SynthParams synth_params(const nlohmann::json& s) {
  const SynthParams p = test::synth_params(s);
  REQUIRE(p.arch == Arch::kPhi3);
  REQUIRE(p.dtype == DType::kF32);
  return p;
}

template <class B>
std::vector<float> all_logits(std::shared_ptr<const ModelWeights> w, const std::vector<int32_t>& ids,
                              int64_t n_batch = 64) {
  CausalLM<B> lm(std::move(w), {.n_ctx = 64, .n_batch = n_batch});
  std::vector<float> out(ids.size() * size_t(lm.n_vocab()));
  lm.eval(ids, out.data(), /*all_logits=*/true);
  return out;
}

fs::path golden_gguf(const char* name) { return kGoldenDir / (std::string(name) + ".gguf"); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream o(p, std::ios::binary);
  o << s;
}

}  // namespace

TEST_CASE("[phi3] logits match HF transformers from the HF folder, loopus GGUF and llama.cpp-layout GGUF") {
  const auto files = test::golden_files("phi3");
  REQUIRE_MESSAGE(files.size() >= 3, "goldens missing in tests/golden/phi3 (run tests/reference/gen_phi3_golden.py)");
  for (const auto& path : files) {
    CAPTURE(path.filename().string());
    const auto g = read_json(path);
    const SynthParams p = synth_params(g.at("synth"));
    const std::vector<int32_t> ids = g.at("input_ids");
    const auto want = test::b64_f32(g.at("logits_f32le_b64"), "logits_f32le_b64");
    REQUIRE_EQ(want.size(), ids.size() * size_t(p.vocab));
    const double tol = g.value("tolerance_max_abs", 1e-4);

    auto w = synth_weights(p);
    const fs::path dir = test::temp_dir("phi3_" + path.stem().string());
    save_hf(*w, (dir / "hf").string());
    save_gguf(*w, (dir / "model.gguf").string());
    if (!fingerprint_matches(dir / "hf", g.at("weights_fingerprint"), g.value("weights_fingerprint_rtol", 1e-9)))
      continue;
    // save_hf writes transformers' config: the generator recorded what it loaded.
    CHECK_EQ(hf_config(w->hp, "f32"), g.at("hf_config"));

    const fs::path py_gguf = kGoldenDir / g.at("gguf_file").get<std::string>();
    auto from_hf = load_weights((dir / "hf").string());
    auto from_gguf = load_weights((dir / "model.gguf").string());
    auto from_py = load_weights(py_gguf.string());
    for (const auto* m : {from_hf.get(), from_gguf.get(), from_py.get()}) {
      CHECK_EQ(m->hp.arch, Arch::kPhi3);
      CHECK_EQ(m->hp.n_rot, w->hp.n_rot);
      CHECK_EQ(m->hp.rope_style, RopeStyle::kHalf);
      CHECK_EQ(m->hp.tied_output, p.tied);
      CHECK_EQ(m->hp.sliding_window, p.sliding_window);
      CHECK_EQ(m->hp.rope_scaling.active(), p.rope_orig_ctx > 0);
      CHECK_EQ(m->hp.rope_scaling.long_factor, w->hp.rope_scaling.long_factor);
      CHECK_EQ(m->hp.rope_scaling.short_factor, w->hp.rope_scaling.short_factor);
      CHECK(std::abs(m->hp.rope_scaling.attn_factor - w->hp.rope_scaling.attn_factor) < 1e-6f);
    }
    if (g.contains("attention_factor"))
      CHECK(std::abs(w->hp.rope_scaling.attn_factor - g.at("attention_factor").get<float>()) < 1e-6f);

    const float e_mem = max_abs_diff(all_logits<Cpu>(w, ids), want);
    const float e_hf = max_abs_diff(all_logits<Cpu>(from_hf, ids), want);
    const float e_gguf = max_abs_diff(all_logits<Cpu>(from_gguf, ids), want);
    const float e_py = max_abs_diff(all_logits<Cpu>(from_py, ids), want);
    const float e_ref = max_abs_diff(all_logits<Reference>(from_py, ids), want);
    MESSAGE(path.stem().string() << ": max |logit - transformers| in-memory " << e_mem << ", HF folder " << e_hf
                                 << ", loopus GGUF " << e_gguf << ", gguf-py GGUF " << e_py << ", Reference backend "
                                 << e_ref);
    CHECK_LT(e_mem, tol);
    CHECK_LT(e_hf, tol);
    CHECK_LT(e_gguf, tol);
    CHECK_LT(e_py, tol);
    CHECK_LT(e_ref, tol);

    if (g.contains("short_logits_f32le_b64")) {  // longrope: a sequence within the original context
      const int n = g.at("short_len");
      const std::vector<int32_t> sids(ids.begin(), ids.begin() + n);
      const auto want_s = test::b64_f32(g.at("short_logits_f32le_b64"), "short_logits_f32le_b64");
      const float es_hf = max_abs_diff(all_logits<Cpu>(from_hf, sids), want_s);
      const float es_py = max_abs_diff(all_logits<Cpu>(from_py, sids), want_s);
      MESSAGE(path.stem().string() << " (" << n << " ids, short factors): HF folder " << es_hf << ", gguf-py GGUF "
                                   << es_py);
      CHECK_LT(es_hf, tol);
      CHECK_LT(es_py, tol);
    }

    // loopus' GGUF writer produces what gguf-py wrote in llama.cpp's layout: same tensors, same bytes.
    const io::TensorFile mine = io::open_any((dir / "model.gguf").string());
    const io::TensorFile ref = io::open_any(py_gguf.string());
    CHECK_EQ(mine.tensors.size(), ref.tensors.size());
    for (const auto& r : ref.tensors) {
      CAPTURE(r.name);
      const io::TensorRecord* m = mine.find(r.name);
      REQUIRE(m != nullptr);
      CHECK_EQ(m->shape, r.shape);
      CHECK_EQ(m->dtype, r.dtype);
      CHECK((m->nbytes == r.nbytes && std::memcmp(m->data, r.data, r.nbytes) == 0));
    }
    for (const char* key : {"phi3.rope.dimension_count", "phi3.attention.sliding_window", "phi3.context_length",
                            "phi3.rope.scaling.original_context_length", "phi3.attention.head_count_kv"})
      CHECK_MESSAGE(mine.meta.value(key, nlohmann::json()) == ref.meta.value(key, nlohmann::json()), key);
    fs::remove_all(dir);
  }
}

TEST_CASE("[phi3] the fused tensors split as HF and llama.cpp order them") {
  // q rows, then k, then v; gate rows, then up (transformers' chunk(2) and ggml's swiglu agree).
  auto w = load_weights(golden_gguf("phi3_tiny").string());
  const io::TensorFile f = io::open_any(golden_gguf("phi3_tiny").string());
  const HParams& hp = w->hp;
  const auto* qkv = static_cast<const float*>(f.get("blk.1.attn_qkv.weight").data);
  const auto* gu = static_cast<const float*>(f.get("blk.1.ffn_up.weight").data);
  const LayerWeights& L = w->layers[1];
  const int64_t d = hp.n_embd, q = hp.q_dim(), kv = hp.kv_dim(), ff = hp.n_ff;
  CHECK(std::memcmp(L.wq.data, qkv, size_t(q * d) * 4) == 0);
  CHECK(std::memcmp(L.wk.data, qkv + q * d, size_t(kv * d) * 4) == 0);
  CHECK(std::memcmp(L.wv.data, qkv + (q + kv) * d, size_t(kv * d) * 4) == 0);
  CHECK(std::memcmp(L.w_gate.data, gu, size_t(ff * d) * 4) == 0);
  CHECK(std::memcmp(L.w_up.data, gu + ff * d, size_t(ff * d) * 4) == 0);
  CHECK_EQ(L.wq.rows, q);
  CHECK_EQ(L.w_up.rows, ff);
}

TEST_CASE("[phi3] a recast phi3 model runs, and its LoopUS checkpoints (lds folder, GGUF) load back") {
  const auto g = read_json(kGoldenDir / "phi3_tiny.json");
  const std::vector<int32_t> ids = g.at("input_ids");
  auto base = load_weights(golden_gguf("phi3_tiny").string());
  const int64_t V = base->hp.n_vocab;
  std::vector<float> plain(static_cast<size_t>(V)), looped1(static_cast<size_t>(V));
  {
    CausalLM<Cpu> lm(base, {.n_ctx = 64, .n_batch = 64});
    lm.eval(ids, plain.data());
  }
  // B = 1 without a gate is the plain model.
  auto lw = recast(base, LayerSplit::from_specs("0..0", "2..2", base->hp.n_layer));
  {
    LoopParams lp;
    lp.halting.max_loops = 1;
    LoopedModel<Cpu, NoGate, PerDepthCache> m(lw, lp, {.n_ctx = 64, .n_batch = 64});
    m.eval(ids, looped1.data());
    CHECK_LT(max_abs_diff(plain, looped1), 1e-5f);
  }
  // With the selective gate and 3 loops: the in-memory model, the official lds folder and the loopus GGUF agree.
  synth_loop_parts(*lw, 5);
  LoopParams lp;
  lp.halting = HaltingParams::parse("fixed", 3);
  auto run = [&](std::shared_ptr<const LoopedWeights> l) {
    LoopedModel<Cpu, SelectiveGate, PerDepthCache> m(l, lp, {.n_ctx = 64, .n_batch = 64}, SelectiveGate(l->gate));
    std::vector<float> out(static_cast<size_t>(V));
    m.eval(ids, out.data());
    return out;
  };
  const auto mem = run(lw);
  CHECK_GT(max_abs_diff(mem, plain), 1e-3f);  // the loops do something
  for (float x : mem) REQUIRE(std::isfinite(x));
  const fs::path dir = test::temp_dir("phi3_lds");
  save_lds(*lw, (dir / "lds").string(), "phi3-tiny");
  save_looped_gguf(*lw, (dir / "looped.gguf").string());
  const auto cfg = read_json(dir / "lds" / "config.json");
  CHECK_EQ(cfg.at("base_config_dict").at("model_type"), "phi3");
  CHECK_EQ(cfg.at("base_config_dict").at("architectures").at(0), "Phi3ForCausalLM");
  const io::TensorFile st = io::open_any((dir / "lds").string());
  CHECK(st.find("encoder.layers.0.self_attn.qkv_proj.weight"));
  CHECK(st.find("reasoning.layers.0.mlp.gate_up_proj.weight"));
  CHECK(st.find("decoder.layers.0.mlp.gate_up_proj.weight"));
  for (const auto& path : {dir / "lds", dir / "looped.gguf"}) {
    CAPTURE(path.string());
    auto back = load_looped(path.string(), "", "");
    CHECK_EQ(back->base->hp.arch, Arch::kPhi3);
    CHECK_EQ(back->split.text(), lw->split.text());
    CHECK_LT(max_abs_diff(run(back), mem), 1e-5f);
  }
  fs::remove_all(dir);
}

TEST_CASE("[phi3] longrope checkpoints keep their factors through lds and GGUF") {
  auto base = load_weights(golden_gguf("phi3_tiny_longrope").string());
  REQUIRE(base->hp.rope_scaling.active());
  auto lw = recast(base, LayerSplit::from_specs("0..0", "none", base->hp.n_layer));
  synth_loop_parts(*lw, 9);
  const fs::path dir = test::temp_dir("phi3_lds_longrope");
  save_lds(*lw, (dir / "lds").string());
  save_looped_gguf(*lw, (dir / "looped.gguf").string());
  for (const auto& path : {dir / "lds", dir / "looped.gguf"}) {
    CAPTURE(path.string());
    auto back = load_looped(path.string(), "", "");
    const RopeScaling& a = back->base->hp.rope_scaling;
    const RopeScaling& b = base->hp.rope_scaling;
    CHECK_EQ(a.long_factor, b.long_factor);
    CHECK_EQ(a.short_factor, b.short_factor);
    CHECK_EQ(a.orig_ctx, b.orig_ctx);
    CHECK(std::abs(a.attn_factor - b.attn_factor) < 1e-6f);
  }
  fs::remove_all(dir);
}

TEST_CASE("[phi3] unsupported rope scaling and out-of-window sequences give clear errors") {
  const fs::path dir = test::temp_dir("phi3_errors");
  SynthParams p;
  p.arch = Arch::kPhi3;
  p.dim = 32;
  p.layers = 1;
  p.heads = 2;
  p.kv_heads = 1;
  p.ff = 32;
  p.vocab = 64;
  p.sliding_window = 8;
  auto w = synth_weights(p);
  save_hf(*w, (dir / "hf").string());
  const fs::path cfgp = dir / "hf" / "config.json";
  const auto good = read_json(cfgp);

  for (const std::string type : {"yarn", "dynamic", "linear"}) {
    auto c = good;
    c["rope_scaling"] = {{"type", type}, {"factor", 2.0}};
    write_text(cfgp, c.dump());
    const std::string msg = error_of([&] { load_weights((dir / "hf").string()); });
    CAPTURE(msg);
    CHECK(msg.find("config.json") != std::string::npos);
    CHECK(msg.find("'" + type + "'") != std::string::npos);
  }
  {  // transformers >= 5 spelling
    auto c = good;
    c["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 4.0}};
    write_text(cfgp, c.dump());
    const std::string msg = error_of([&] { load_weights((dir / "hf").string()); });
    CHECK(msg.find("config.json") != std::string::npos);
    CHECK(msg.find("yarn") != std::string::npos);
  }
  {  // longrope with factors of the wrong length
    auto c = good;
    c["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1.0, 1.0}}, {"long_factor", {2.0, 2.0}}};
    c["original_max_position_embeddings"] = 1024;
    write_text(cfgp, c.dump());
    const std::string msg = error_of([&] { load_weights((dir / "hf").string()); });
    CHECK(msg.find("longrope") != std::string::npos);
    CHECK(msg.find((dir / "hf").string()) != std::string::npos);
  }
  {  // a GGUF with only one of the two rope factor tensors
    const io::TensorFile src = io::open_any(golden_gguf("phi3_tiny_longrope").string());
    std::vector<io::TensorRecord> recs;
    for (const auto& r : src.tensors)
      if (r.name != "rope_factors_short.weight") recs.push_back(r);
    nlohmann::json meta = src.meta;
    io::write_gguf((dir / "half.gguf").string(), meta, recs);
    const std::string msg = error_of([&] { load_weights((dir / "half.gguf").string()); });
    CHECK(msg.find("half.gguf") != std::string::npos);
    CHECK(msg.find("rope_factors_short.weight") != std::string::npos);
  }

  write_text(cfgp, good.dump());
  auto back = load_weights((dir / "hf").string());
  CHECK_EQ(back->hp.sliding_window, 8);
  // Within the window: runs. Beyond it: refused (no window mask), naming the model.
  CausalLM<Cpu> lm(back, {.n_ctx = 32, .n_batch = 4});
  std::vector<int32_t> ids(8, 3);
  std::vector<float> out(size_t(p.vocab));
  lm.eval(ids, out.data());
  const int32_t one = 5;
  const std::string msg = error_of([&] { lm.eval(std::span<const int32_t>(&one, 1), out.data()); });
  CHECK(msg.find("sliding window") != std::string::npos);
  CHECK(msg.find((dir / "hf").string()) != std::string::npos);
  // Training has no window mask either: longer training sequences are refused up front.
  auto lw = recast(back, LayerSplit::from_specs("none", "none", back->hp.n_layer));
  synth_loop_parts(*lw, 3);
  train::TrainModel<Cpu, float> tm(lw, train::TrainSelect{});
  CHECK_NOTHROW(train::LoopusTrainer<Cpu, float>(tm, 1, 8));
  const std::string tmsg = error_of([&] { train::LoopusTrainer<Cpu, float>(tm, 1, 9); });
  CHECK(tmsg.find("sliding window of 8") != std::string::npos);
  fs::remove_all(dir);
}
