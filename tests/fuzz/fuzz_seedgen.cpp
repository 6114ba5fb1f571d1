// fuzz_seedgen OUT: writes seed inputs for every fuzz target into OUT/<target>/, from tiny
// models written by the library's own writers and from the real files in LOOPUS_DATA_DIR
// (tokenizer vocabularies cut down to a few hundred tokens, texts cut into short pieces).
// scripts/fuzz_seeds.sh minimises them into tests/fuzz/corpus/.
// SPDX-License-Identifier: MIT
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_models.hpp"
#include "loopus/io/gguf.hpp"
#include "loopus/io/quant.hpp"
#include "loopus/tokenizer/bpe.hpp"

namespace fs = std::filesystem;
using namespace loopus;
using nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

fs::path g_out;
fs::path g_data;

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "fuzz_seedgen: cannot read %s (set LOOPUS_DATA_DIR)\n", p.string().c_str());
    std::exit(2);
  }
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}
void put(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path d = g_out / target;
  fs::create_directories(d);
  std::ofstream f(d / name, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}
std::string data(const std::string& rel) { return read_all(g_data / rel); }
template <class T>
void put_le(std::string& b, T v) {
  b.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// ---- model files ----------------------------------------------------------------------------

void gguf_seeds(const fs::path& tmp) {
  for (auto [arch, an] : {std::pair{Arch::kLlama, "llama"}, {Arch::kQwen3, "qwen3"}, {Arch::kPhi3, "phi3"}})
    for (auto [dt, dn] : {std::pair{DType::kF32, "f32"}, {DType::kF16, "f16"}, {DType::kBF16, "bf16"}}) {
      if (arch != Arch::kLlama && dt != DType::kF32) continue;
      const auto p = tmp / (std::string(an) + "_" + dn + ".gguf");
      save_gguf(*synth_weights(fuzz::tiny_model(arch, dt)), p.string());
      put("fuzz_gguf", p.filename().string(), read_all(p));
    }
  const auto lp = tmp / "looped.gguf";
  save_looped_gguf(*fuzz::tiny_looped(), lp.string());
  put("fuzz_gguf", "looped.gguf", read_all(lp));
  put("fuzz_gguf", "quant_golden.gguf", read_all(fs::path(LOOPUS_SOURCE_DIR) / "tests/golden/quant_golden.gguf"));

  // A llama whose matrices are q8_0 / q4_0 / q4_1 blocks of random bytes (dim 32: one block per row).
  auto w = synth_weights([] {
    auto p = fuzz::tiny_model(Arch::kLlama);
    p.dim = 32;
    p.ff = 32;
    p.heads = 2;
    p.kv_heads = 2;
    return p;
  }());
  io::GgufWriter g;
  gguf_set_hparams(g, w->hp, "quantized");
  std::vector<std::string> keep;
  SplitMix64 rng(5);
  auto blocks = [&](const std::string& name, DType t, int64_t rows, int64_t cols) {
    std::string& b = keep.emplace_back(io::dtype_row_bytes(t, rows * cols), '\0');
    for (char& c : b) c = char(rng.next());
    // Small finite f16 scales (0x2000..0x2fff) so the values are ordinary numbers.
    for (size_t off = 0; off + io::dtype_block_bytes(t) <= b.size(); off += io::dtype_block_bytes(t)) {
      b[off] = char(rng.next());
      b[off + 1] = char(0x20 | (rng.next() & 0x0f));
    }
    g.add_tensor(name, t, {rows, cols}, b.data(), b.size());
  };
  std::vector<std::vector<float>> norms;
  auto norm = [&](const std::string& name, int64_t n) {
    auto& v = norms.emplace_back(size_t(n), 1.f);
    g.add_tensor(name, DType::kF32, {n}, v.data(), v.size() * 4);
  };
  const int64_t d = 32, V = 16, ff = 32, kv = w->hp.kv_dim();
  blocks("token_embd.weight", DType::kQ8_0, V, d);
  norm("output_norm.weight", d);
  const DType kinds[] = {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1};
  for (int l = 0; l < 3; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    norm(p + "attn_norm.weight", d);
    norm(p + "ffn_norm.weight", d);
    blocks(p + "attn_q.weight", kinds[l], d, d);
    blocks(p + "attn_k.weight", kinds[(l + 1) % 3], kv, d);
    blocks(p + "attn_v.weight", kinds[(l + 2) % 3], kv, d);
    blocks(p + "attn_output.weight", kinds[l], d, d);
    blocks(p + "ffn_gate.weight", kinds[(l + 1) % 3], ff, d);
    blocks(p + "ffn_up.weight", kinds[(l + 2) % 3], ff, d);
    blocks(p + "ffn_down.weight", kinds[l], d, ff);
  }
  const auto qp = tmp / "quantized.gguf";
  g.write(qp.string());
  put("fuzz_gguf", "quantized.gguf", read_all(qp));
}

void safetensors_seeds(const fs::path& tmp) {
  put("fuzz_safetensors", "py_written.safetensors",
      read_all(fs::path(LOOPUS_SOURCE_DIR) / "tests/golden/py_written.safetensors"));
  for (int i = 0; i < fuzz::kConfigDirs; ++i) {
    const auto dir = tmp / ("cfg" + std::to_string(i));
    fuzz::write_config_dir(i, dir.string());
    put("fuzz_safetensors", "model" + std::to_string(i) + ".safetensors", read_all(dir / "model.safetensors"));
    put("fuzz_hf_config", "config" + std::to_string(i) + ".json",
        std::string(1, char(i)) + read_all(dir / "config.json"));
  }
  const auto bp = tmp / "bf16";
  save_hf(*synth_weights(fuzz::tiny_model(Arch::kLlama, DType::kBF16)), bp.string());
  put("fuzz_safetensors", "bf16.safetensors", read_all(bp / "model.safetensors"));

  // Config variants: transformers >= 5 rope_parameters, rope_scaling entries, Phi-3 "su" scaling.
  json c = json::parse(read_all(tmp / "cfg0/config.json"));
  c["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "default"}};
  c["rope_scaling"] = {{"rope_type", "default"}};
  put("fuzz_hf_config", "llama_rope_parameters.json", std::string(1, '\0') + c.dump(1));
  json p = json::parse(read_all(tmp / "cfg2/config.json"));
  p["rope_scaling"]["type"] = "su";
  p["rope_scaling"]["factor"] = 4.0;
  p["rope_parameters"] = {{"rope_theta", 10000.0}, {"partial_rotary_factor", 0.5}};
  put("fuzz_hf_config", "phi3_su.json", std::string(1, '\2') + p.dump(1));

  json idx = {{"metadata", {{"total_size", 52}}},
              {"weight_map",
               {{"a.weight", "shard-1.safetensors"},
                {"b.weight", "shard-1.safetensors"},
                {"c.weight", "shard-2.safetensors"}}}};
  put("fuzz_st_index", "index.json", idx.dump(2));
  idx["weight_map"].erase("b.weight");
  put("fuzz_st_index", "index_partial.json", idx.dump());
}

void llama2c_seeds() {
  // dim 8, hidden 16, 2 layers, 2 heads, 1 kv head, vocab 16, seq_len 8: every layout.
  const int32_t dim = 8, hid = 16, L = 2, H = 2, KV = 1, V = 16, T = 8, hs = dim / H;
  SplitMix64 rng(11);
  auto floats = [&](std::string& b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) put_le(b, float(rng.uniform() - 0.5));
  };
  const int64_t kvd = int64_t(KV) * hs;
  for (int version : {0, 1, 2})
    for (bool shared : {true, false}) {
      std::string b;
      if (version == 0) {
        for (int32_t v : {dim, hid, L, H, KV, shared ? V : -V, T}) put_le(b, v);
      } else {
        put_le(b, io::kLlama2cMagic);
        put_le(b, int32_t(version));
        for (int32_t v : {dim, hid, L, H, KV, V, T}) put_le(b, v);
        b.push_back(char(shared ? 1 : 0));
        if (version == 2) put_le(b, int32_t(4));  // group size
        b.resize(io::kLlama2cHeaderV1, '\0');
      }
      const int64_t per_layer = int64_t(dim) * dim * 2 + 2 * kvd * dim + 3 * int64_t(hid) * dim;
      const int64_t mats = int64_t(V) * dim + L * per_layer + (shared ? 0 : int64_t(V) * dim);
      const int64_t normsz = 2 * int64_t(L) * dim + dim;
      if (version == 2) {
        floats(b, normsz);
        // Tensors in order: tok, wq, wk, wv, wo, w1, w2, w3 (per layer), then cls.
        std::vector<int64_t> sizes = {int64_t(V) * dim};
        for (int64_t n : {int64_t(dim) * dim, kvd * dim, kvd * dim, int64_t(dim) * dim, int64_t(hid) * dim,
                          int64_t(dim) * hid, int64_t(hid) * dim})
          for (int l = 0; l < L; ++l) sizes.push_back(n);
        if (!shared) sizes.push_back(int64_t(V) * dim);
        for (int64_t n : sizes) {
          for (int64_t i = 0; i < n; ++i) b.push_back(char(int(rng.next() % 255) - 127));
          for (int64_t gi = 0; gi < n / 4; ++gi) put_le(b, float(0.01 + 0.01 * rng.uniform()));
        }
      } else {
        floats(b, mats + normsz + (version == 0 ? int64_t(T) * hs : 0));
      }
      put("fuzz_llama2c", "v" + std::to_string(version) + (shared ? "_shared" : "_unshared") + ".bin", b);
    }
}

void checkpoint_seeds(const fs::path& tmp) {
  const auto lw = fuzz::tiny_looped();
  const train::PackedData d = fuzz::tiny_train_data();
  for (int steps : {0, 1, 3}) {
    train::TrainModel<Reference> m(lw, train::TrainSelect{}, 9);
    train::Adapter<Reference> ad(m, d, fuzz::tiny_adapt_config());
    for (int i = 0; i < steps; ++i) ad.step();
    const auto p = tmp / "state.bin";
    ad.save(p.string(), {{"seconds", 1.5}, {"original_ppl", 16.0}, {"model", "tiny"}});
    std::string b = read_all(p);
    b.resize(b.size() - 8);  // the target appends the checksum
    put("fuzz_checkpoint", "state_" + std::to_string(steps) + ".bin", b);
  }
}

// ---- tokenizers -----------------------------------------------------------------------------

/// A tokenizer.json cut down to its first `keep` vocabulary ids, the merges among them, its first
/// four added tokens (renumbered after the vocabulary) and a post-processor pointing at them.
std::string shrink_tokenizer_json(const std::string& text, int64_t keep) {
  ojson t = ojson::parse(text);
  ojson& model = t["model"];
  ojson vocab = ojson::object();
  std::set<std::string> in;
  for (auto& [k, v] : model["vocab"].items())
    if (v.get<int64_t>() < keep) {
      vocab[k] = v;
      in.insert(k);
    }
  ojson merges = ojson::array();
  for (const auto& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ', 1);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    }
    if (in.count(a) && in.count(b) && in.count(a + b)) merges.push_back(m);
  }
  model["vocab"] = vocab;
  model["merges"] = merges;
  ojson added = ojson::array();
  std::map<int64_t, int64_t> renumber;
  for (const auto& a : t["added_tokens"]) {
    if (added.size() == 4) break;
    ojson x = a;
    renumber[a["id"].get<int64_t>()] = keep + int64_t(added.size());
    x["id"] = keep + int64_t(added.size());
    added.push_back(x);
  }
  t["added_tokens"] = added;
  if (t.contains("post_processor") && t["post_processor"].is_object()) {
    std::function<void(ojson&)> fix = [&](ojson& p) {
      if (p.is_object()) {
        if (p.contains("ids") && p["ids"].is_array())
          for (auto& id : p["ids"]) id = renumber.count(id.get<int64_t>()) ? renumber[id.get<int64_t>()] : int64_t(0);
        for (auto& [k, v] : p.items()) fix(v);
      } else if (p.is_array()) {
        for (auto& v : p) fix(v);
      }
    };
    fix(t["post_processor"]);
  }
  return t.dump();
}

void tokenizer_json_seeds() {
  for (const char* name : {"llama3", "qwen3"}) {
    const std::string full = data(std::string("tokenizers/") + name + "/tokenizer.json");
    const std::string small = shrink_tokenizer_json(full, 300);
    const json cfg = json::parse(data(std::string("tokenizers/") + name + "/tokenizer_config.json"));
    json c;
    for (const char* k : {"bos_token", "eos_token", "add_bos_token", "add_eos_token", "clean_up_tokenization_spaces"})
      if (cfg.contains(k)) c[k] = cfg[k];
    put("fuzz_tokenizer_json", std::string(name) + ".json", small);
    put("fuzz_tokenizer_json", std::string(name) + "_cfg.json", small + std::string(1, '\0') + c.dump());
  }
  // The other pre-tokenizers, normalizers, post-processors and decoders BpeTokenizer reads.
  ojson t = ojson::parse(R"({
    "version": "1.0",
    "added_tokens": [{"id": 0, "content": "<s>", "special": true, "lstrip": false, "rstrip": false,
                      "single_word": false, "normalized": false},
                     {"id": 1, "content": "</s>", "special": true, "lstrip": true, "rstrip": true,
                      "single_word": true, "normalized": true}],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Digits", "individual_digits": true},
      {"type": "Split", "pattern": {"String": "x"}, "behavior": "MergedWithNext", "invert": false},
      {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Contiguous", "invert": true},
      {"type": "Whitespace"}, {"type": "WhitespaceSplit"},
      {"type": "ByteLevel", "add_prefix_space": true, "use_regex": false}]},
    "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 1], "cls": ["<s>", 0]},
    "decoder": {"type": "Sequence", "decoders": [{"type": "ByteLevel"}]},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "##",
              "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
              "vocab": {"<s>": 0, "</s>": 1, "a": 2, "b": 3, "ab": 4, "##b": 5, "c": 6, "abc": 7, "Ġ": 8},
              "merges": ["a b", ["ab", "c"]]}})");
  put("fuzz_tokenizer_json", "handmade.json", t.dump());
  t["post_processor"] = ojson::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                         "</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}})");
  t["pre_tokenizer"] = ojson::parse(R"({"type": "Split", "pattern": {"Regex": "[a-z]+|\\p{N}{1,3}"},
      "behavior": "Removed", "invert": false})");
  t["model"]["continuing_subword_prefix"] = nullptr;
  t["model"]["ignore_merges"] = false;
  t["model"]["unk_token"] = "c";
  t["normalizer"] = nullptr;
  put("fuzz_tokenizer_json", "handmade_template.json",
      t.dump() + std::string(1, '\0') +
          R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": true, "add_eos_token": true})");
}

std::vector<std::string> sample_texts() {
  std::vector<std::string> out;
  const std::string inp = data("tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf.inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < inp.size();) {
    size_t e = inp.find(sep, pos);
    if (e == std::string::npos) e = inp.size();
    out.push_back(inp.substr(pos, e - pos));
    pos = e + sep.size();
  }
  const std::string story = data("text/tinystories/tinystoriesv2_sample.txt");
  out.push_back(story.substr(0, 1500));
  std::string multi;
  std::istringstream q(data("tokenizers/qwen3_golden.jsonl"));
  for (std::string line; std::getline(q, line);) multi += json::parse(line)["text"].get<std::string>() + "\n";
  out.push_back(multi.substr(0, 3000));
  out.push_back("<s>[INST] hi [/INST]</s><|begin_of_text|><|im_start|>user\n<|im_end|><|endoftext|>");
  return out;
}

void encode_seeds() {
  const auto texts = sample_texts();
  for (size_t i = 0; i < texts.size(); ++i)
    for (int tok = 0; tok < 3; ++tok) {
      const char sel = char(tok << 2 | int(i % 4));
      put("fuzz_encode_bpe", "t" + std::to_string(i) + "_" + std::to_string(tok), sel + texts[i]);
      if (tok < 2) put("fuzz_encode_spm", "t" + std::to_string(i) + "_" + std::to_string(tok), sel + texts[i]);
    }
  const std::string story = data("text/tinystories/tinystoriesv2_sample.txt");
  // Training data: JSONL and text, each mode.
  std::string jsonl, text;
  std::istringstream s(story.substr(0, 2000));
  int n = 0;
  for (std::string line; std::getline(s, line); ++n) {
    text += line + (n % 3 == 2 ? "\n\n" : "\n");
    if (!line.empty()) jsonl += json{{"text", line}, {"id", n}}.dump() + (n % 4 == 3 ? "\n\n" : "\r\n");
  }
  for (int mode : {0x00, 0x12, 0x2c, 0x3e, 0x06, 0x18}) {
    put("fuzz_train_data", "jsonl_" + std::to_string(mode), std::string(1, char(mode | 1)) + jsonl);
    put("fuzz_train_data", "text_" + std::to_string(mode), std::string(1, char(mode)) + text);
  }
  // Regexes: the pre-tokenizer patterns of the real files and of llama.cpp.
  const char* pats[] = {
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
      R"([\p{P}\$\+<=>\^~\|]+)",
      R"(\p{N}+)",
      R"(\w+|[^\w\s]+)",
      R"([0-9][0-9][0-9])",
      R"(\Q.*\E[^\S\n]x)"};
  int k = 0;
  for (const char* p : pats) {
    put("fuzz_regex", "re" + std::to_string(k),
        std::string(p) + std::string(1, '\0') + texts[size_t(k) % texts.size()]);
    ++k;
  }
  put("fuzz_regex", "literal", std::string("ll") + std::string(2, '\0') + "hello all");
}

void llama2c_tok_seeds() {
  put("fuzz_llama2c_tok", "tok512.bin", data("models/stories260K/tok512.bin"));
  std::string b;
  put_le(b, int32_t(8));
  for (const char* t : {"<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", " a", "b", " ab", "\xe2\x96\x81x"}) {
    put_le(b, -1.5f);
    put_le(b, int32_t(std::strlen(t)));
    b += t;
  }
  put("fuzz_llama2c_tok", "tiny.bin", b);
}

/// A GGUF holding only the tokenizer.* keys of `meta`, its vocabulary cut to `keep` tokens.
std::string vocab_gguf(const fs::path& tmp, json meta, size_t keep, const std::string& pre = "") {
  io::GgufWriter g;
  for (const char* k : {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"})
    if (meta.contains(k) && meta[k].size() > keep) meta[k].erase(meta[k].begin() + std::ptrdiff_t(keep), meta[k].end());
  if (meta.contains("tokenizer.ggml.merges")) {
    std::set<std::string> in;
    for (const auto& t : meta["tokenizer.ggml.tokens"]) in.insert(t.get<std::string>());
    json kept = json::array();
    for (const auto& m : meta["tokenizer.ggml.merges"]) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ', 1);
      if (in.count(s.substr(0, sp)) && in.count(s.substr(sp + 1)) && in.count(s.substr(0, sp) + s.substr(sp + 1)))
        kept.push_back(m);
    }
    meta["tokenizer.ggml.merges"] = kept;
  }
  if (!pre.empty()) meta["tokenizer.ggml.pre"] = pre;
  json vocab = json::object();
  for (auto& [k, v] : meta.items())
    if (k.rfind("tokenizer.", 0) == 0 && k != "tokenizer.chat_template") vocab[k] = v;
  gguf_set_vocab(g, vocab, 0);
  const auto p = tmp / "vocab.gguf";
  g.write(p.string());
  return read_all(p);
}

void gguf_tokenizer_seeds(const fs::path& tmp) {
  const json stories = io::open_gguf((g_data / "models/stories260K/stories260K.gguf").string()).meta;
  put("fuzz_gguf_tokenizer", "stories260K.gguf", vocab_gguf(tmp, stories, 512));
  const json spm = io::open_gguf((g_data / "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf").string()).meta;
  put("fuzz_gguf_tokenizer", "llama_spm.gguf", vocab_gguf(tmp, spm, 400));
  const json gpt2 = io::open_gguf((g_data / "tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf").string()).meta;
  for (const char* pre : {"gpt-2", "llama-bpe", "qwen2", "smollm", "default", "dbrx"})
    put("fuzz_gguf_tokenizer", std::string("gpt2_") + pre + ".gguf", vocab_gguf(tmp, gpt2, 400, pre));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seedgen OUT_DIR\n");
    return 2;
  }
  g_out = argv[1];
  const char* e = std::getenv("LOOPUS_DATA_DIR");
  g_data = e && *e ? fs::path(e) : fs::path(LOOPUS_DEFAULT_DATA_DIR);
  const fs::path tmp = g_out / ".tmp";
  fs::create_directories(tmp);
  gguf_seeds(tmp);
  safetensors_seeds(tmp);
  llama2c_seeds();
  checkpoint_seeds(tmp);
  tokenizer_json_seeds();
  encode_seeds();
  llama2c_tok_seeds();
  gguf_tokenizer_seeds(tmp);
  fs::remove_all(tmp);
  std::printf("fuzz_seedgen: seeds written to %s\n", g_out.string().c_str());
  return 0;
}
