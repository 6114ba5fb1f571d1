// Model and tokenizer discovery: which tokenizer belongs to a model path, and how a path opens plain or looped.
// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "loopus/io/discover.hpp"
#include "loopus/io/save.hpp"
#include "loopus/model/synth.hpp"
#include "test_util.hpp"
#include "train/train_test_util.hpp"

using namespace loopus;
namespace fs = std::filesystem;

namespace {

std::string stories_gguf() { return test::data_file("models/stories260K/stories260K.gguf"); }
std::string stories_bin() { return test::data_file("models/stories260K/stories260K.bin"); }
std::string tok512() { return test::data_file("models/stories260K/tok512.bin"); }
std::string llama3_json() { return test::data_file("tokenizers/llama3/tokenizer.json"); }

/// A small random plain model saved as an HF folder (no tokenizer in it).
std::string hf_folder(const fs::path& dir) {
  SynthParams p;
  p.layers = 3;
  save_hf(*synth_weights(p), dir.string());
  return dir.string();
}

}  // namespace

TEST_CASE("[loopus] io: open_tokenizer_file picks the format from the path") {
  const std::string text = "Once upon a time, there was a little cat.";
  // the llama2.c tokenizer and the vocabulary inside the GGUF are the same (stories260K ships both)
  auto bin = io::open_tokenizer_file(tok512());
  auto gguf = io::open_tokenizer_file(stories_gguf());
  CHECK(bin->n_vocab() == 512);
  CHECK(gguf->n_vocab() == 512);
  CHECK(bin->encode(text, true) == gguf->encode(text, true));

  // a tokenizer.json, directly or through its folder
  auto json = io::open_tokenizer_file(llama3_json());
  auto folder = io::open_tokenizer_file(fs::path(llama3_json()).parent_path().string());
  CHECK(json->n_vocab() > 128000);
  CHECK(json->encode(text, false) == folder->encode(text, false));

  const auto tmp = test::temp_dir("discover_tokfile");
  CHECK_THROWS_WITH_AS(io::open_tokenizer_file((tmp / "nope.bin").string()),
                       doctest::Contains("tokenizer file not found"), Error);
  CHECK_THROWS_WITH_AS(io::open_tokenizer_file(tmp.string()), doctest::Contains("folder has no tokenizer.json"), Error);
}

TEST_CASE("[loopus] io: tokenizer_path_for finds the model's own vocabulary or the file beside it") {
  const auto tmp = test::temp_dir("discover_beside");

  // a GGUF with a vocabulary is its own tokenizer (save_gguf writes a placeholder one when given none)
  CHECK(io::tokenizer_path_for(io::open_any(stories_gguf(), io::LoadMode::kMmap)) == stories_gguf());
  {
    SynthParams p;
    p.layers = 2;
    save_gguf(*synth_weights(p), (tmp / "synth.gguf").string());
    CHECK(io::tokenizer_path_for(io::open_any((tmp / "synth.gguf").string())) == (tmp / "synth.gguf").string());
  }
  // llama2.c checkpoints never carry one
  CHECK_THROWS_WITH_AS(io::tokenizer_path_for(io::open_any(stories_bin())), doctest::Contains("carry no vocabulary"),
                       Error);

  // a safetensors folder: tokenizer.json beside it, else model.gguf beside it, tokenizer.json first
  const fs::path dir = tmp / "hf";
  hf_folder(dir);
  CHECK_THROWS_WITH_AS(io::tokenizer_path_for(io::open_any(dir.string())),
                       doctest::Contains("no tokenizer.json (or model.gguf)"), Error);
  fs::copy_file(stories_gguf(), dir / "model.gguf");
  CHECK(fs::path(io::tokenizer_path_for(io::open_any(dir.string()))) == dir / "model.gguf");
  fs::copy_file(llama3_json(), dir / "tokenizer.json");
  CHECK(fs::path(io::tokenizer_path_for(io::open_any(dir.string()))) == dir / "tokenizer.json");
  // the folder's index / safetensors file path finds the same folder
  CHECK(fs::path(io::tokenizer_path_for(io::open_any((dir / "model.safetensors").string()))) == dir / "tokenizer.json");

  // open_tokenizer: the discovered one, or the override
  auto t = io::open_tokenizer(io::open_any(dir.string()));
  CHECK(t->n_vocab() > 128000);
  auto o = io::open_tokenizer(io::open_any(stories_bin()), tok512());
  CHECK(o->n_vocab() == 512);
}

TEST_CASE("[loopus] io: copy_tokenizer_into puts the tokenizer where discovery finds it") {
  const auto tmp = test::temp_dir("discover_copy");
  const fs::path out = tmp / "out";
  fs::create_directories(out);
  // an explicit tokenizer file: kept by extension
  CHECK(fs::path(io::copy_tokenizer_into(out.string(), stories_bin(), tok512())) == out / "tokenizer.bin");
  CHECK(fs::file_size(out / "tokenizer.bin") == fs::file_size(tok512()));
  CHECK(fs::path(io::copy_tokenizer_into(out.string(), stories_bin(), llama3_json())) == out / "tokenizer.json");
  // a model folder's tokenizer.json
  const fs::path dir = tmp / "hf";
  hf_folder(dir);
  fs::copy_file(llama3_json(), dir / "tokenizer.json");
  const fs::path out2 = tmp / "out2";
  fs::create_directories(out2);
  CHECK(fs::path(io::copy_tokenizer_into(out2.string(), dir.string())) == out2 / "tokenizer.json");
  CHECK(fs::file_size(out2 / "tokenizer.json") == fs::file_size(llama3_json()));
  // nothing to copy: a GGUF carries its vocabulary
  CHECK(io::copy_tokenizer_into(out2.string(), stories_gguf()).empty());
}

TEST_CASE("[loopus] io: open_model opens plain, recast and LoopUS checkpoints") {
  io::OpenModelOptions o;
  auto plain = io::open_model(stories_gguf(), o);
  CHECK(plain.format == "gguf");
  CHECK(plain.looped == nullptr);
  REQUIRE(plain.tok != nullptr);
  CHECK(plain.tok->n_vocab() == 512);
  CHECK(plain.plain->hp.n_layer == 5);

  o.need_tokenizer = false;
  o.recast = true;
  o.encoder_layers = "0..0";
  o.decoder_layers = "4..4";
  auto rec = io::open_model(stories_gguf(), o);
  CHECK(rec.tok == nullptr);
  REQUIRE(rec.looped != nullptr);
  CHECK(rec.looped->split.encoder == std::vector<int>{0});
  CHECK(rec.looped->split.reasoning == std::vector<int>{1, 2, 3});
  CHECK(rec.looped->split.decoder == std::vector<int>{4});
  CHECK(rec.looped->base == rec.plain);
  CHECK(rec.looped->gate == nullptr);

  // recast without specs: no encoder or decoder, every layer is looped
  o.encoder_layers = o.decoder_layers = "";
  auto all = io::open_model(stories_gguf(), o);
  CHECK(all.looped->split.reasoning.size() == 5);

  // a LoopUS checkpoint keeps its split, gate and q head
  const auto tmp = test::temp_dir("discover_ckpt");
  auto lw = test::synth_loopus(test::tiny_params(3), "0..0", "3..3");
  save_lds(*lw, (tmp / "ckpt").string());
  io::OpenModelOptions c;
  c.need_tokenizer = false;
  auto ck = io::open_model((tmp / "ckpt").string(), c);
  CHECK(ck.format == "loopus");
  REQUIRE(ck.looped != nullptr);
  CHECK(ck.plain == ck.looped->base);
  CHECK(ck.looped->split.reasoning == std::vector<int>{1, 2});
  CHECK(ck.looped->gate != nullptr);
  CHECK(ck.looped->q_head != nullptr);
  c.encoder_layers = "0..1";
  CHECK_THROWS_WITH_AS(io::open_model((tmp / "ckpt").string(), c), doctest::Contains("fixes its split"), Error);
}
