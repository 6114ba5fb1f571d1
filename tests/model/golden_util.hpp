// Reading the parity goldens of tests/reference/gen_*_golden.py: files, base64 logits, synth flags, fingerprints.
// SPDX-License-Identifier: MIT
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/core/error.hpp"
#include "loopus/io/load.hpp"
#include "loopus/model/layer_split.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"
#include "test_util.hpp"

namespace loopus::test {

/// The *.json goldens of tests/golden/SUB, sorted.
inline std::vector<std::filesystem::path> golden_files(const std::string& sub) {
  const std::filesystem::path dir = source_dir() / "tests" / "golden" / sub;
  std::vector<std::filesystem::path> out;
  if (std::filesystem::is_directory(dir))
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.path().extension() == ".json") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

inline nlohmann::json read_json(const std::filesystem::path& p) { return nlohmann::json::parse(read_text(p)); }

/// Decodes the generators' "base64 of little-endian float32" fields.
inline std::vector<float> b64_f32(const std::string& s, const std::string& what) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<uint8_t> bytes;
  bytes.reserve(s.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=') break;
    const int v = val(c);
    if (v < 0) throw FormatError(what + ": invalid base64 character");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(uint8_t(acc >> bits));
    }
  }
  if (bytes.size() % 4) throw FormatError(what + ": base64 payload is not a whole number of float32");
  std::vector<float> out(bytes.size() / 4);
  for (size_t i = 0; i < out.size(); ++i) {
    const uint32_t u = uint32_t(bytes[4 * i]) | uint32_t(bytes[4 * i + 1]) << 8 | uint32_t(bytes[4 * i + 2]) << 16 |
                       uint32_t(bytes[4 * i + 3]) << 24;
    std::memcpy(&out[i], &u, 4);
  }
  return out;
}

/// Golden logits with their declared shape checked.
inline std::vector<float> golden_logits(const nlohmann::json& j, const std::string& key, const std::string& shape_key,
                                        int64_t rows, int64_t cols) {
  auto v = b64_f32(j.at(key).get<std::string>(), key);
  REQUIRE_EQ(j.at(shape_key).at(0).get<int64_t>(), rows);
  REQUIRE_EQ(j.at(shape_key).at(1).get<int64_t>(), cols);
  REQUIRE_EQ(int64_t(v.size()), rows * cols);
  return v;
}

inline float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0.f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE_EQ(a.size(), b.size());
  return max_abs_diff(a.data(), b.data(), a.size());
}

/// The SynthParams of `loopus synth` flags as recorded in a golden ("kv-heads": 2, ...).
inline SynthParams synth_params(const nlohmann::json& s) {
  SynthParams p;
  const std::string arch = s.at("arch");
  REQUIRE_MESSAGE((arch == "llama" || arch == "qwen3" || arch == "phi3"), "unknown arch " << arch);
  p.arch = arch == "qwen3" ? Arch::kQwen3 : arch == "phi3" ? Arch::kPhi3 : Arch::kLlama;
  p.dim = s.at("dim");
  p.layers = s.at("layers");
  p.heads = s.at("heads");
  p.kv_heads = s.value("kv-heads", p.heads);
  p.head_dim = s.value("head-dim", 0);
  p.ff = s.at("ff");
  p.vocab = s.at("vocab");
  p.ctx = s.value("ctx", p.ctx);
  p.rope_theta = s.value("rope-theta", p.rope_theta);
  p.rms_eps = s.value("rms-eps", p.rms_eps);
  const std::string dt = s.value("dtype", std::string("f32"));
  p.dtype = dt == "bf16" ? DType::kBF16 : dt == "f16" ? DType::kF16 : DType::kF32;
  p.tied = s.value("tied", false);
  p.seed = s.at("seed").get<uint64_t>();
  p.partial_rotary = s.value("partial-rotary", p.partial_rotary);  // phi3 only
  p.sliding_window = s.value("sliding-window", p.sliding_window);
  p.rope_orig_ctx = s.value("rope-orig-ctx", p.rope_orig_ctx);
  return p;
}

/// True when every tensor written to `folder` matches the golden's fingerprint
/// (dtype, shape, sum, sum of squares); each mismatch is a failed check saying
/// that the synth generator changed and the goldens need regenerating.
inline bool fingerprint_matches(const std::filesystem::path& folder, const nlohmann::json& fp, double rtol) {
  const io::TensorFile f = io::open_any(folder.string());
  bool ok = int64_t(f.tensors.size()) == int64_t(fp.size());
  CHECK_MESSAGE(ok, folder.string() << " has " << f.tensors.size() << " tensors, the golden's model had " << fp.size());
  for (const auto& [name, rec] : fp.items()) {
    const io::TensorRecord* r = f.find(name);
    if (!r) {
      FAIL_CHECK("tensor '" << name << "' of the golden's model is not in " << folder.string());
      ok = false;
      continue;
    }
    if (rec.at("dtype") != "float32" || r->dtype != DType::kF32) {
      FAIL_CHECK("tensor '" << name << "': the parity goldens are f32 only");
      ok = false;
      continue;
    }
    std::vector<int64_t> shape = rec.at("shape");
    const auto* x = static_cast<const float*>(r->data);
    double sum = 0, sumsq = 0;
    for (int64_t i = 0; i < r->numel(); ++i) {
      sum += double(x[i]);
      sumsq += double(x[i]) * double(x[i]);
    }
    const double es = rec.at("sum"), eq = rec.at("sumsq");
    const bool same = shape == r->shape && std::abs(sum - es) <= rtol * (1.0 + std::abs(es)) + 1e-9 &&
                      std::abs(sumsq - eq) <= rtol * (1.0 + eq) + 1e-9;
    if (!same) {
      FAIL_CHECK("tensor '" << name << "' differs from the model the golden was generated from (sum "
                            << std::setprecision(17) << sum << " vs " << es
                            << "): the synth generator changed; regenerate the goldens with "
                               "tests/reference/gen_*_golden.py");
      ok = false;
    }
  }
  return ok;
}

/// The model a LoopUS golden was made from: what `loopus synth --loopus` builds (the plain synth
/// weights split into blocks plus synth_loop_parts()). The weights fingerprint guards against drift.
inline std::shared_ptr<LoopedWeights> synth_looped(const nlohmann::json& s) {
  const SynthParams p = synth_params(s);
  auto w = synth_weights(p);
  auto lw = recast(w, LayerSplit::from_specs(s.value("encoder-layers", std::string("none")),
                                             s.value("decoder-layers", std::string("none")), w->hp.n_layer));
  synth_loop_parts(*lw, p.seed);
  lw->defaults.n_loops = s.value("loops", 8);
  return lw;
}

}  // namespace loopus::test
