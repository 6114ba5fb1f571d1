// io/quantize_model.hpp: whole models re-quantized and read back; looped GGUFs, --keep, fallbacks, errors.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "loopus/core/quant.hpp"
#include "loopus/core/quantize.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/io/quantize_model.hpp"
#include "loopus/io/save.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "test_util.hpp"

using loopus::DType;
namespace fs = std::filesystem;
namespace io = loopus::io;

namespace {

loopus::SynthParams qm_params(loopus::Arch arch = loopus::Arch::kLlama) {
  loopus::SynthParams p;
  p.arch = arch;
  p.dim = 256;  // rows of whole 256-value blocks, except w_down's (ff)
  p.layers = 3;
  p.heads = 4;
  p.kv_heads = 2;
  p.ff = 288;  // w_down rows: 288 = 9 x 32, not whole 256-blocks
  p.vocab = 300;
  p.seed = 11;
  return p;
}

/// Every matrix of `a` (as loaded, dtype kept), by GGUF name.
std::vector<std::pair<std::string, loopus::Weight>> matrices(const loopus::ModelWeights& w) {
  const auto n = loopus::NameScheme::gguf();
  std::vector<std::pair<std::string, loopus::Weight>> v = {{n.embd, w.tok_embd}};
  for (int l = 0; l < w.hp.n_layer; ++l) {
    const auto& L = w.layers[size_t(l)];
    const std::string p = n.layer_prefix(l);
    for (const auto& [name, m] : {std::pair{n.wq, &L.wq},
                                  {n.wk, &L.wk},
                                  {n.wv, &L.wv},
                                  {n.wo, &L.wo},
                                  {n.w_gate, &L.w_gate},
                                  {n.w_up, &L.w_up},
                                  {n.w_down, &L.w_down}})
      v.emplace_back(p + name, *m);
  }
  if (!w.hp.tied_output) v.emplace_back(n.output, w.output);
  return v;
}

std::vector<float> widen(const loopus::Weight& m) {
  std::vector<float> v(size_t(m.numel()));
  loopus::dequantize_rows(m, 0, m.rows, v.data());
  return v;
}

std::vector<unsigned char> quantize_all(DType t, const std::vector<float>& x) {
  std::vector<unsigned char> q(loopus::dtype_row_bytes(t, int64_t(x.size())));
  loopus::quantize_row(t, x.data(), int64_t(x.size()), q.data());
  return q;
}

loopus::ModelLoadOptions keep_dtypes() {
  loopus::ModelLoadOptions o;
  o.weights.dequantize = false;
  return o;
}

/// Loads `out` and checks each matrix against quantize(widen(input matrix)) in the type `expect(name, cols)`
/// gives: the bytes equal, and so their dequantization.
template <class Expect>
void check_requantized(const loopus::ModelWeights& in, const std::string& out, Expect expect) {
  const auto q = loopus::load_weights(out, keep_dtypes());
  const auto a = matrices(in), b = matrices(*q);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    const loopus::Weight &src = a[i].second, &got = b[i].second;
    const DType t = expect(a[i].first, src);
    REQUIRE(got.dtype == t);
    REQUIRE(got.rows == src.rows);
    REQUIRE(got.cols == src.cols);
    const auto want = quantize_all(t, widen(src));
    REQUIRE(want.size() == got.nbytes());
    CHECK(std::memcmp(want.data(), got.data, want.size()) == 0);
    std::vector<float> wd(size_t(src.numel()));
    loopus::dequantize(t, want.data(), src.numel(), wd.data());
    CHECK(widen(got) == wd);
  }
}

}  // namespace

TEST_CASE("[loopus] quantize_model: fallback rule and type names") {
  using loopus::quantize_fallback;
  CHECK(quantize_fallback(DType::kQ4_K, 512) == DType::kQ4_K);
  CHECK(quantize_fallback(DType::kQ4_K, 576) == DType::kQ8_0);  // SmolLM2's 576: 18 x 32
  CHECK(quantize_fallback(DType::kQ6_K, 64) == DType::kQ8_0);
  CHECK(quantize_fallback(DType::kQ5_K, 172) == DType::kF16);
  CHECK(quantize_fallback(DType::kQ4_0, 172) == DType::kF16);
  CHECK(quantize_fallback(DType::kQ8_0, 96) == DType::kQ8_0);
  CHECK(quantize_fallback(DType::kBF16, 7) == DType::kBF16);
  CHECK(loopus::parse_quant_type("q4_k") == DType::kQ4_K);
  CHECK(loopus::parse_quant_type("BF16") == DType::kBF16);
  CHECK_THROWS_WITH_AS(loopus::parse_quant_type("Q3_K", "--type"),
                       doctest::Contains("--type 'Q3_K': not a type loopus writes"), loopus::UsageError);
  CHECK(loopus::detail::glob_match("blk.*.attn_q.weight", "blk.12.attn_q.weight"));
  CHECK(loopus::detail::glob_match("blk.1.*", "blk.1.ffn_up.weight"));
  CHECK_FALSE(loopus::detail::glob_match("blk.1.*", "blk.12.ffn_up.weight"));
  CHECK(loopus::detail::glob_match("?lk.*", "blk.0.x"));
  CHECK(loopus::detail::glob_match("*", ""));
  CHECK_FALSE(loopus::detail::glob_match("token_embd.weight", "token_embd.weight2"));
}

TEST_CASE("[loopus] quantize_model: every type, read back, equals quantize of the dequantized input") {
  const fs::path dir = loopus::test::temp_dir("quantize_model_types");
  const auto w = loopus::synth_weights(qm_params());
  const std::string in = (dir / "in.gguf").string();
  loopus::save_gguf(*w, in);
  const auto src = loopus::load_weights(in, keep_dtypes());
  for (DType t : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kF16,
                  DType::kBF16, DType::kF32}) {
    CAPTURE(loopus::dtype_name(t));
    const std::string out = (dir / ("out_" + std::string(loopus::dtype_name(t)) + ".gguf")).string();
    loopus::QuantizeOptions o;
    o.type = t;
    o.threads = 2;
    const auto r = loopus::quantize_model(in, out, o);
    CHECK_FALSE(r.looped);
    CHECK(r.has_vocab);  // save_gguf's placeholder vocabulary is copied
    CHECK(r.matrices.size() == 1 + 3 * 7 + 1);
    check_requantized(*src, out, [&](const std::string&, const loopus::Weight& m) {
      return loopus::quantize_fallback(t, m.cols);
    });
    for (const auto& m : r.matrices)
      CHECK(m.fell_back == (m.name.find("ffn_down") != std::string::npos && loopus::dtype_block_size(t) == 256));
    const io::TensorFile f = io::open_gguf(out);
    CHECK(f.get("blk.0.attn_norm.weight").dtype == DType::kF32);
    CHECK(f.get("output_norm.weight").dtype == DType::kF32);
    CHECK(f.meta.at("general.file_type").get<int>() == int(loopus::gguf_file_type(t)));
    CHECK(f.meta.at("tokenizer.ggml.tokens").size() == 300);
  }
  // K-quant fallback: ffn_down (rows of 288) as q8_0.
  const auto q = loopus::load_weights((dir / "out_q4_K.gguf").string(), keep_dtypes());
  CHECK(q->layers[0].w_down.dtype == DType::kQ8_0);
  CHECK(q->layers[0].wq.dtype == DType::kQ4_K);
  // Threads only split rows: one thread writes the same file (same name: general.name is the file's stem).
  loopus::QuantizeOptions o1;
  o1.type = DType::kQ4_K;
  o1.threads = 1;
  fs::create_directories(dir / "t1");
  loopus::quantize_model(in, (dir / "t1" / "out_q4_K.gguf").string(), o1);
  CHECK(loopus::test::read_text(dir / "t1" / "out_q4_K.gguf") == loopus::test::read_text(dir / "out_q4_K.gguf"));
}

TEST_CASE("[loopus] quantize_model: a quantized input is dequantized, then re-quantized, --keep keeps its bytes") {
  const fs::path dir = loopus::test::temp_dir("quantize_model_requant");
  const auto w = loopus::synth_weights(qm_params());
  const std::string f32 = (dir / "f32.gguf").string(), q41 = (dir / "q4_1.gguf").string();
  loopus::save_gguf(*w, f32);
  loopus::QuantizeOptions o;
  o.type = DType::kQ4_1;
  loopus::quantize_model(f32, q41, o);
  const auto src = loopus::load_weights(q41, keep_dtypes());
  REQUIRE(src->layers[0].wq.dtype == DType::kQ4_1);

  o.type = DType::kQ6_K;
  o.keep = {"token_embd.weight", "blk.1.*"};
  const std::string out = (dir / "q6_K.gguf").string();
  const auto r = loopus::quantize_model(q41, out, o);
  int kept = 0;
  for (const auto& m : r.matrices) kept += m.kept;
  CHECK(kept == 1 + 7);
  check_requantized(*src, out, [&](const std::string& name, const loopus::Weight& m) {
    if (name == "token_embd.weight" || name.rfind("blk.1.", 0) == 0) return DType::kQ4_1;
    return loopus::quantize_fallback(DType::kQ6_K, m.cols);
  });
  // The kept tensors are the input's bytes (check_requantized compared them with a re-quantization of
  // themselves; q4_1 is not idempotent in general, so compare with the file too).
  const auto q = loopus::load_weights(out, keep_dtypes());
  CHECK(std::memcmp(q->tok_embd.data, src->tok_embd.data, src->tok_embd.nbytes()) == 0);
  CHECK(std::memcmp(q->layers[1].w_up.data, src->layers[1].w_up.data, src->layers[1].w_up.nbytes()) == 0);
}

TEST_CASE("[loopus] quantize_model: Hugging Face, Phi-3 and tied inputs give the GGUF's rows") {
  const fs::path dir = loopus::test::temp_dir("quantize_model_hf");
  SUBCASE("an HF llama folder (rotate-half Q/K rows) quantizes to the same tensors as its GGUF") {
    const auto w = loopus::synth_weights(qm_params());
    loopus::save_hf(*w, (dir / "hf").string());
    loopus::save_gguf(*w, (dir / "in.gguf").string());
    loopus::QuantizeOptions o;
    o.type = DType::kQ5_K;
    const auto r = loopus::quantize_model((dir / "hf").string(), (dir / "from_hf.gguf").string(), o);
    CHECK(r.format == "hf");
    CHECK_FALSE(r.has_vocab);
    loopus::quantize_model((dir / "in.gguf").string(), (dir / "from_gguf.gguf").string(), o);
    const io::TensorFile a = io::open_gguf((dir / "from_hf.gguf").string());
    const io::TensorFile b = io::open_gguf((dir / "from_gguf.gguf").string());
    REQUIRE(a.tensors.size() == b.tensors.size());
    for (const auto& t : b.tensors) {
      CAPTURE(t.name);
      const io::TensorRecord& u = a.get(t.name);
      REQUIRE(u.dtype == t.dtype);
      REQUIRE(u.nbytes == t.nbytes);
      CHECK(std::memcmp(u.data, t.data, t.nbytes) == 0);
    }
  }
  SUBCASE("phi3: the fused attn_qkv and ffn_up, tied output") {
    auto p = qm_params(loopus::Arch::kPhi3);
    p.tied = true;
    const auto w = loopus::synth_weights(p);
    const std::string in = (dir / "phi3.gguf").string(), out = (dir / "phi3_q8.gguf").string();
    loopus::save_gguf(*w, in);
    loopus::QuantizeOptions o;
    o.type = DType::kQ8_0;
    o.keep = {"blk.2.attn_qkv.weight"};
    const auto r = loopus::quantize_model(in, out, o);
    CHECK(r.matrices.size() == 1 + 3 * 4);  // embd; qkv, o, gate_up, down per layer; tied head
    const auto src = loopus::load_weights(in, keep_dtypes());
    check_requantized(*src, out, [&](const std::string& name, const loopus::Weight&) {
      const bool kept = name.rfind("blk.2.", 0) == 0 &&
                        (name == "blk.2.attn_q.weight" || name == "blk.2.attn_k.weight" ||
                         name == "blk.2.attn_v.weight");
      return kept ? DType::kF32 : DType::kQ8_0;
    });
    const io::TensorFile f = io::open_gguf(out);
    CHECK(f.get("blk.0.attn_qkv.weight").dtype == DType::kQ8_0);
    CHECK(f.get("blk.2.attn_qkv.weight").dtype == DType::kF32);
    CHECK(f.find("output.weight") == nullptr);
  }
}

TEST_CASE("[loopus] quantize_model: a looped GGUF keeps its split, f32 gate and q head, --keep reasoning") {
  const fs::path dir = loopus::test::temp_dir("quantize_model_looped");
  const auto w = loopus::synth_weights(qm_params());
  auto lw = loopus::recast(w, loopus::LayerSplit::from_specs("0..0", "2..2", 3));
  loopus::synth_loop_parts(*lw, 5);
  lw->defaults.n_loops = 6;
  const std::string in = (dir / "looped.gguf").string(), out = (dir / "looped_q4_0.gguf").string();
  loopus::save_looped_gguf(*lw, in);
  loopus::QuantizeOptions o;
  o.type = DType::kQ4_0;
  o.keep = {"reasoning"};
  const auto r = loopus::quantize_model(in, out, o);
  CHECK(r.looped);
  const auto ql = loopus::load_looped(out, "", "", keep_dtypes());
  CHECK(ql->split.encoder == lw->split.encoder);
  CHECK(ql->split.reasoning == lw->split.reasoning);
  CHECK(ql->defaults.n_loops == 6);
  REQUIRE(ql->gate);
  REQUIRE(ql->q_head);
  CHECK(ql->gate->A_log == lw->gate->A_log);
  CHECK(ql->gate->delta_w == lw->gate->delta_w);
  CHECK(ql->gate->in_w == lw->gate->in_w);
  CHECK(ql->q_head->w == lw->q_head->w);
  CHECK(ql->q_head->b == lw->q_head->b);
  const io::TensorFile f = io::open_gguf(out);
  for (const auto& t : f.tensors)
    if (t.name.rfind("loopus.", 0) == 0) {
      CAPTURE(t.name);
      CHECK(t.dtype == DType::kF32);
    }
  CHECK(f.get("blk.1.attn_q.weight").dtype == DType::kF32);  // the reasoning layer, kept
  CHECK(f.get("blk.0.attn_q.weight").dtype == DType::kQ4_0);
  CHECK(f.get("blk.2.ffn_down.weight").dtype == DType::kQ4_0);  // rows of 288: whole 32-value blocks
}

TEST_CASE("[loopus] quantize_model: bad options and paths are errors naming them, the input is never touched") {
  const fs::path dir = loopus::test::temp_dir("quantize_model_errors");
  const auto w = loopus::synth_weights(qm_params());
  const std::string in = (dir / "in.gguf").string();
  loopus::save_gguf(*w, in);
  const std::string before = loopus::test::read_text(in);
  loopus::QuantizeOptions o;
  o.type = DType::kQ8_0;
  CHECK_THROWS_WITH_AS(loopus::quantize_model(in, in, o), doctest::Contains("is the input model"), loopus::UsageError);
  CHECK_THROWS_WITH_AS(loopus::quantize_model(in, (dir / "." / "in.gguf").string(), o),
                       doctest::Contains("is the input model"), loopus::UsageError);
  CHECK_THROWS_WITH_AS(loopus::quantize_model(in, dir.string(), o), doctest::Contains("is a folder"),
                       loopus::UsageError);
  CHECK_THROWS_WITH_AS(loopus::quantize_model((dir / "missing.gguf").string(), (dir / "o.gguf").string(), o),
                       doctest::Contains("missing.gguf: no such file"), loopus::IoError);
  o.keep = {"reasoning"};
  CHECK_THROWS_WITH_AS(loopus::quantize_model(in, (dir / "o.gguf").string(), o),
                       doctest::Contains("is not a LoopUS checkpoint"), loopus::UsageError);
  o.keep = {"blk.9.*"};
  CHECK_THROWS_WITH_AS(loopus::quantize_model(in, (dir / "o.gguf").string(), o),
                       doctest::Contains("'blk.9.*' matches no tensor"), loopus::UsageError);
  o.keep = {};
  o.type = DType::kI32;
  CHECK_THROWS_AS(loopus::quantize_model(in, (dir / "o.gguf").string(), o), loopus::UsageError);
  o.type = DType::kQ8_0;
  o.fallback = DType::kQ4_K;
  CHECK_THROWS_AS(loopus::quantize_model(in, (dir / "o.gguf").string(), o), loopus::UsageError);
  CHECK_FALSE(fs::exists(dir / "o.gguf"));
  CHECK(loopus::test::read_text(in) == before);
  CHECK(loopus::test::temp_files_in(dir).empty());
}
