// loopus against llama.cpp's own outputs (tests/golden/llamacpp/, made as docs/peer_baseline.md §4-5
// describes): tokenizers (ids, pieces, detokenized text) and greedy decoding (ids and logits).
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loopus/io/gguf.hpp"
#include "loopus/io/load_model.hpp"
#include "loopus/model/causal_lm.hpp"
#include "loopus/ops/cpu/ops.hpp"
#include "loopus/tokenizer/bpe.hpp"
#include "loopus/tokenizer/load.hpp"
#include "test_util.hpp"

using namespace loopus;

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;

const char* kStories = "models/stories260K/stories260K.gguf";
const char* kLlamaSpmVocab = "tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf";
const char* kQwen3Json = "tokenizers/qwen3/tokenizer.json";
// Fetched by scripts/get_models.sh into $LOOPUS_MODELS_DIR; LOOPUS_SMOLLM2 overrides with a file.
const char* kSmol = "SmolLM2-135M-Instruct.Q4_1.gguf";
const char* kSmolEnv = "LOOPUS_SMOLLM2";

json golden(const std::string& name) {
  const fs::path p = test::source_dir() / "tests/golden/llamacpp" / name;
  REQUIRE_MESSAGE(fs::exists(p), "missing golden file " << p.string());
  return json::parse(test::read_text(p));
}

std::string ids_str(const Ids& v) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  s << ']';
  return s.str();
}

/// A golden piece: a string, or {"bytes":[...]} where the piece is not valid UTF-8.
std::string piece_bytes(const json& p) {
  if (p.is_string()) return p.get<std::string>();
  std::string s;
  for (const auto& b : p.at("bytes")) s += char(b.get<int>());
  return s;
}

/// A token llama.cpp itself makes special that the tokenizer under test rightly keeps plain:
/// in ids_add_special it is expected as `as_text` (its plain-text ids) instead of `id`.
struct ForcedSpecial {
  int32_t id = -1;
  Ids as_text;
};

/// Every case of a tokenize_*.json against `tok`: both llama_tokenize calls, the pieces of the
/// plain ids and their detokenization, all exact. Returns the number of cases fully matched;
/// *n_forced (when given) counts the cases where `forced` changed the expected ids.
int check_tokenize(const Tokenizer& tok, const json& g, const ForcedSpecial& forced = {}, int* n_forced = nullptr) {
  CHECK_EQ(tok.add_bos(), g.at("add_bos").get<bool>());
  const auto& cases = g.at("cases");
  REQUIRE_EQ(cases.size(), 26u);
  int ok = 0;
  for (const auto& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    const Ids want = c.at("ids").get<Ids>();
    Ids want_sp;
    for (int32_t id : c.at("ids_add_special").get<Ids>()) {
      if (id == forced.id) {
        want_sp.insert(want_sp.end(), forced.as_text.begin(), forced.as_text.end());
        if (n_forced) ++*n_forced;
      } else {
        want_sp.push_back(id);
      }
    }
    INFO("text " << json(text).dump());
    // llama_tokenize(add_special=true, parse_special=true)
    const Ids got_sp = tok.encode(text, true, true);
    CHECK_MESSAGE(got_sp == want_sp, "add_special: got " << ids_str(got_sp) << " want " << ids_str(want_sp));
    // llama_tokenize(add_special=false, parse_special=false)
    const Ids got = tok.encode(text, false, false);
    CHECK_MESSAGE(got == want, "plain: got " << ids_str(got) << " want " << ids_str(want));
    // token_to_piece(lstrip=0) of each golden id; the golden ids contain no control tokens,
    // so llama.cpp's special=true and loopus's streaming piece agree.
    const auto& pieces = c.at("pieces");
    REQUIRE_EQ(pieces.size(), want.size());
    bool pieces_ok = true;
    for (size_t i = 0; i < want.size(); ++i) {
      const std::string gp = tok.token_to_piece(want[i]), wp = piece_bytes(pieces[i]);
      CHECK_MESSAGE(gp == wp, "piece of id " << want[i] << ": got "
                                             << json(gp).dump(-1, ' ', false, json::error_handler_t::replace)
                                             << " want " << pieces[i].dump());
      pieces_ok = pieces_ok && gp == wp;
    }
    // llama_detokenize(ids, remove_special=false, unparse_special=false)
    const std::string detok = tok.decode(want);
    CHECK_EQ(detok, c.at("detok").get<std::string>());
    ok += got_sp == want_sp && got == want && pieces_ok && detok == c.at("detok").get<std::string>();
  }
  return ok;
}

/// llama.cpp's end-of-generation set: EOS plus the tokens it recognises by text (a subset of
/// the list in its llama-vocab.cpp, enough for these vocabularies).
std::set<int32_t> eog_ids(const Tokenizer& tok, int32_t eos) {
  std::set<int32_t> s{eos};
  for (const char* t :
       {"<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>"}) {
    const Ids ids = tok.encode(t, false, true);
    if (ids.size() == 1) s.insert(ids[0]);
  }
  return s;
}

/// llama_golden's prompt: tokenize(add_special, parse_special), [bos] when that is empty.
Ids prompt_ids(const Tokenizer& tok, const std::string& prompt, int32_t bos) {
  Ids ids = tok.encode(prompt, true, true);
  if (ids.empty()) ids.push_back(bos);
  return ids;
}

struct Greedy {
  Ids ids;                                ///< generated ids, EOG included
  std::vector<std::vector<float>> logits; ///< logits before step k, for k < n_keep
};

/// llama_golden's decode: the whole prompt in one eval, then one token per eval; argmax with
/// ties to the lowest id (std::max_element keeps the first); stop after an EOG token.
Greedy greedy(const std::shared_ptr<const ModelWeights>& w, const Ids& prompt, int n_gen, int n_keep,
              const std::set<int32_t>& eog) {
  const int64_t n_ctx = int64_t(prompt.size()) + n_gen + 16;
  CausalLM<Cpu> lm(w, {.n_ctx = n_ctx, .n_batch = n_ctx});
  std::vector<float> l(size_t(lm.n_vocab()));
  lm.eval(prompt, l.data());
  Greedy r;
  for (int k = 0; k < n_gen; ++k) {
    if (k < n_keep) r.logits.push_back(l);
    const int32_t id = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    r.ids.push_back(id);
    if (eog.count(id)) break;
    lm.eval(std::span<const int32_t>(&id, 1), l.data());
  }
  return r;
}

size_t common_prefix(const Ids& a, const Ids& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

/// The golden header fields every greedy file shares; returns decode.n_logits.
int check_greedy_header(const json& g, const Tokenizer& tok, const char* logits_mode) {
  REQUIRE_EQ(g.at("decode").at("logits_mode").get<std::string>(), logits_mode);
  CHECK_EQ(g.at("bos").get<int32_t>(), tok.bos_id());
  CHECK_EQ(g.at("eos").get<int32_t>(), tok.eos_id());
  CHECK_EQ(g.at("add_bos").get<bool>(), tok.add_bos());
  return g.at("decode").at("n_logits").get<int>();
}

/// The EOG set reproduces the golden's stops: only the last id may be EOG, and only if it stopped there.
void check_stop(const json& c, const Ids& gen, const std::set<int32_t>& eog, int n_gen) {
  const bool stopped = c.at("stopped_at_eog").get<bool>();
  REQUIRE_FALSE(gen.empty());
  CHECK_EQ(bool(eog.count(gen.back())), stopped);
  if (!stopped) CHECK_EQ(int(gen.size()), n_gen);
  for (size_t k = 0; k + 1 < gen.size(); ++k) CHECK_FALSE(eog.count(gen[k]));
}

}  // namespace

// ---- tokenizers --------------------------------------------------------------------------------

TEST_CASE("[loopus] llama.cpp golden: stories260K SPM tokenizer") {
  const std::string path = test::data_file(kStories);
  const auto tok = load_tokenizer_from_gguf_meta(io::open_gguf(path, io::LoadMode::kMmap).meta, path);
  const json g = golden("tokenize_stories260K.json");
  CHECK_EQ(tok->n_vocab(), g.at("n_vocab").get<int32_t>());
  CHECK_EQ(tok->bos_id(), g.at("bos").get<int32_t>());
  CHECK_EQ(tok->eos_id(), g.at("eos").get<int32_t>());
  CHECK_EQ(check_tokenize(*tok, g), 26);
}

TEST_CASE("[loopus] llama.cpp golden: Llama-2 SPM tokenizer (vocab-only GGUF)") {
  // The vocab-only GGUF has no tensors; the generic GGUF tokenizer loader must still open it.
  const std::string path = test::data_file(kLlamaSpmVocab);
  const io::TensorFile f = io::open_gguf(path, io::LoadMode::kMmap);
  const auto tok = load_tokenizer_from_gguf_meta(f.meta, path);
  CHECK_EQ(tok->kind(), "spm");
  const json g = golden("tokenize_llama_spm.json");
  CHECK_EQ(tok->n_vocab(), g.at("n_vocab").get<int32_t>());
  CHECK_EQ(tok->bos_id(), g.at("bos").get<int32_t>());
  CHECK_EQ(tok->eos_id(), g.at("eos").get<int32_t>());
  CHECK_EQ(check_tokenize(*tok, g), 26);
}

TEST_CASE("[loopus] llama.cpp golden: Qwen3 BPE tokenizer (tokenizer.json)") {
  // The random Qwen3 GGUF took its tokens and merges from this tokenizer.json; llama.cpp's
  // extra [PAD] ids and its bos=<|endoftext|> are not in it, so only eos is compared.
  const BpeTokenizer tok = BpeTokenizer::from_json_file(test::data_file(kQwen3Json));
  const json g = golden("tokenize_qwen3.json");
  CHECK_EQ(tok.eos_id(), g.at("eos").get<int32_t>());
  CHECK_LE(tok.n_vocab(), g.at("n_vocab").get<int32_t>());
  // One known difference: llama.cpp (llama-vocab.cpp, its end-of-generation text list, entry
  // "</s>" for paddleocr) retypes the NORMAL token 128247 "</s>" as CONTROL, so with
  // parse_special it matches "<s>literal bos</s>"'s tail as one id. HF tokenizers (0.23.3)
  // and loopus keep it plain text: "</" "s" ">" = [522, 82, 29], as llama.cpp's own
  // parse_special=false ids for that string also show.
  const ForcedSpecial slash_s{128247, {522, 82, 29}};
  REQUIRE_EQ(tok.token_to_id("</s>"), slash_s.id);
  REQUIRE_FALSE(tok.is_special(slash_s.id));
  CHECK_EQ(tok.encode("</s>", false, false), slash_s.as_text);
  int n_forced = 0;
  CHECK_EQ(check_tokenize(tok, g, slash_s, &n_forced), 26);
  CHECK_EQ(n_forced, 1);  // exactly the one golden case
}

TEST_CASE("[loopus] llama.cpp golden: SmolLM2 BPE tokenizer (GGUF, smollm pre-tokenizer)") {
  LOOPUS_MODEL_OR_SKIP(path, kSmol, kSmolEnv);
  const auto tok = load_tokenizer_from_gguf_meta(io::open_gguf(path, io::LoadMode::kMmap).meta, path);
  CHECK_EQ(tok->kind(), "bpe");
  const json g = golden("tokenize_smollm2.json");
  CHECK_EQ(tok->n_vocab(), g.at("n_vocab").get<int32_t>());
  CHECK_EQ(tok->bos_id(), g.at("bos").get<int32_t>());
  CHECK_EQ(tok->eos_id(), g.at("eos").get<int32_t>());
  CHECK_EQ(check_tokenize(*tok, g), 26);
}

// ---- greedy decoding ---------------------------------------------------------------------------

TEST_CASE("[loopus] llama.cpp golden: stories260K greedy ids exact, full logits within 1e-4") {
  const std::string path = test::data_file(kStories);
  auto f = std::make_shared<const io::TensorFile>(io::open_gguf(path));
  const auto w = load_weights(f);
  const auto tok = load_tokenizer_from_gguf_meta(f->meta, path);
  const json g = golden("stories260K_greedy.json");
  const int n_logits = check_greedy_header(g, *tok, "full");
  const int n_gen = g.at("decode").at("n_gen").get<int>();
  const int V = g.at("n_vocab").get<int>();
  REQUIRE_EQ(w->hp.n_vocab, V);
  const auto eog = eog_ids(*tok, tok->eos_id());
  REQUIRE_EQ(g.at("cases").size(), 4u);

  double max_all = 0;
  for (const auto& c : g.at("cases")) {
    const std::string text = c.at("prompt").get<std::string>();
    INFO("prompt " << json(text).dump());
    const Ids prompt = prompt_ids(*tok, text, tok->bos_id());
    REQUIRE_EQ(prompt, c.at("prompt_ids").get<Ids>());

    const Ids want = c.at("generated_ids").get<Ids>();
    const Greedy r = greedy(w, prompt, n_gen, n_logits, eog);
    CHECK_MESSAGE(r.ids == want, "first difference at step " << common_prefix(r.ids, want) << "\n got  "
                                                               << ids_str(r.ids) << "\n want " << ids_str(want));
    check_stop(c, want, eog, n_gen);

    // logits[i] predicts token after_n_tokens = |prompt| + i; the contexts agree while the ids do.
    const auto& lg = c.at("logits");
    REQUIRE_EQ(int(lg.size()), n_logits);
    REQUIRE_EQ(int(r.logits.size()), n_logits);
    double max_case = 0;
    for (int i = 0; i < n_logits; ++i) {
      REQUIRE_EQ(lg[size_t(i)].at("after_n_tokens").get<size_t>(), prompt.size() + size_t(i));
      const auto ref = lg[size_t(i)].at("logits").get<std::vector<double>>();
      REQUIRE_EQ(int(ref.size()), V);
      for (int v = 0; v < V; ++v)
        max_case = std::max(max_case, std::abs(double(r.logits[size_t(i)][size_t(v)]) - ref[size_t(v)]));
    }
    CHECK_LE(max_case, 1e-4);
    MESSAGE("stories260K " << json(text).dump() << ": " << common_prefix(r.ids, want) << "/" << want.size()
                           << " ids match, max |logit diff| " << max_case);
    max_all = std::max(max_all, max_case);
  }
  MESSAGE("stories260K max |logit diff| over all cases and positions: " << max_all);
}

TEST_CASE("[loopus] llama.cpp golden: SmolLM2 Q4_1 greedy (pos-0 logits max 1.5, mean 0.5, ids while margin >= 2)") {
  LOOPUS_MODEL_OR_SKIP(path, kSmol, kSmolEnv);
  // loopus now multiplies Q4_1 weights as llama.cpp does (8-bit activation blocks, integer dots; each
  // row equal to ggml's vec_dot to f32 rounding), but the rounding of activations to 8 bits turns
  // last-bit differences in the f32 activations (RMSNorm's sum order, SiLU's exp) into whole-step
  // differences in some values, and SmolLM2's outlier channels amplify them: measured, the pos-0
  // logits differ by up to 0.56-0.70 (mean 0.10-0.12), about as much as llama.cpp's own Q4_1 run
  // differs from its run on the same weights in f32 (0.65). Hence the tolerances.
  constexpr double kTol = 1.0;
  auto f = std::make_shared<const io::TensorFile>(io::open_gguf(path));
  const auto w = load_weights(f);
  const auto tok = load_tokenizer_from_gguf_meta(f->meta, path);
  const json g = golden("smollm2_greedy.json");
  const int n_logits = check_greedy_header(g, *tok, "top20");
  const int n_gen = g.at("decode").at("n_gen").get<int>();
  const int V = g.at("n_vocab").get<int>();
  REQUIRE_EQ(w->hp.n_vocab, V);
  const auto eog = eog_ids(*tok, tok->eos_id());
  const auto& cases = g.at("cases");
  REQUIRE_EQ(cases.size(), 4u);

  // Raw float32 [cases][V]: the full logits after each prompt.
  const std::string pos0 = test::read_text(test::source_dir() / "tests/golden/llamacpp" /
                                           g.at("pos0_logits_file").get<std::string>());
  REQUIRE_EQ(pos0.size(), cases.size() * size_t(V) * sizeof(float));

  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const auto& c = cases[ci];
    const std::string text = c.at("prompt").get<std::string>();
    INFO("prompt " << json(text).dump());
    const Ids prompt = prompt_ids(*tok, text, tok->bos_id());
    REQUIRE_EQ(prompt, c.at("prompt_ids").get<Ids>());

    const Ids want = c.at("generated_ids").get<Ids>();
    const auto margin = c.at("top1_top2_margin").get<std::vector<double>>();
    REQUIRE_EQ(margin.size(), want.size());
    check_stop(c, want, eog, n_gen);
    const Greedy r = greedy(w, prompt, n_gen, n_logits, eog);

    // Full logits at position 0.
    std::vector<float> ref(static_cast<size_t>(V));
    std::memcpy(ref.data(), pos0.data() + ci * size_t(V) * sizeof(float), size_t(V) * sizeof(float));
    double d0 = 0, sum0 = 0;
    for (int v = 0; v < V; ++v) {
      const double e = std::abs(double(r.logits[0][size_t(v)]) - double(ref[size_t(v)]));
      d0 = std::max(d0, e);
      sum0 += e;
    }
    // The largest difference over 49,152 logits swings with the f32 summation order of the kernels
    // (0.56-1.13 over the kernel versions of issue 15), the mean too (0.10-0.34; the f32 weights gave
    // up to 0.32). Both bounded, loosely: the greedy ids below are the point.
    CHECK_LE(d0, 1.5 * kTol);
    CHECK_LE(sum0 / V, 0.5);

    // Ids must agree up to (not including) the first step whose margin is below 2 x tolerance:
    // from there a kTol-sized error may flip the argmax and the trajectories may diverge.
    const size_t n_cmp = size_t(std::find_if(margin.begin(), margin.end(), [](double m) { return m < 2 * kTol; }) -
                                margin.begin());
    const size_t same = common_prefix(r.ids, want);
    CHECK_MESSAGE(same >= n_cmp, "greedy id differs at step " << same << " (compared up to step " << n_cmp
                                                                << ")\n got  " << ids_str(r.ids) << "\n want "
                                                                << ids_str(want));

    // Top-20 logits at the recorded positions whose context is still the golden one.
    const auto& lg = c.at("logits");
    REQUIRE_EQ(int(lg.size()), std::min(n_logits, int(want.size())));
    double dtop = 0;
    size_t n_top = 0;
    for (size_t i = 0; i < lg.size() && i <= same && i < r.logits.size(); ++i, ++n_top) {
      REQUIRE_EQ(lg[i].at("after_n_tokens").get<size_t>(), prompt.size() + i);
      const auto& top = lg[i].at("top");
      REQUIRE_EQ(top.size(), 20u);
      for (const auto& e : top) {
        const int32_t id = e.at(0).get<int32_t>();
        REQUIRE(id >= 0);
        REQUIRE(id < V);
        dtop = std::max(dtop, std::abs(double(r.logits[i][size_t(id)]) - e.at(1).get<double>()));
      }
    }
    CHECK_LE(dtop, kTol);
    MESSAGE("SmolLM2 " << json(text).dump() << ": pos0 max |logit diff| " << d0 << "; ids compared on steps [0, "
                       << n_cmp << "), " << same << "/" << want.size() << " leading ids equal; top-20 max diff "
                       << dtop << " over " << n_top << " positions");
  }
}
