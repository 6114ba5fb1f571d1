// example_generate: load a model, recast it into encoder -> loop -> decoder, and generate greedily.
//
//   example_generate [-m MODEL.gguf] [-p PROMPT] [--encoder-layers SPEC] [--decoder-layers SPEC]
//                    [--loops B] [--halt RULE] [--alpha A] [-n N]
//
// MODEL defaults to stories260K in the shared data folder ($LOOPUS_DATA_DIR, else ../shared/data).
// Each generated token is printed followed by [the loop iterations it used]; a summary line ends the
// output. With --loops 1 --alpha 1 the looped model computes exactly what the original model computes.
// SPDX-License-Identifier: MIT
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <loopus/io/looped_io.hpp>     // load_looped(): open a model file and recast it
#include <loopus/loopus.hpp>           // LoopedModel, the policies, generate()
#include <loopus/ops/cpu/ops.hpp>      // the Cpu backend (Eigen + OpenMP)
#include <loopus/tokenizer/load.hpp>   // the tokenizer stored in a GGUF's metadata

namespace {

/// stories260K in the shared data folder: $LOOPUS_DATA_DIR when set, else ../shared/data.
std::string default_model() {
  const char* env = std::getenv("LOOPUS_DATA_DIR");
  const std::filesystem::path dir = env && *env ? env : "../shared/data";
  return (dir / "models/stories260K/stories260K.gguf").string();
}

struct Options {
  std::string model = default_model();
  std::string prompt = "Once upon a time";
  std::string enc = "0..0";    // encoder: the first layer (official layer-spec syntax: "0..1", "2-4", "none")
  std::string dec = "4..4";    // decoder: the last layer; the layers in between form the reasoning block
  int loops = 4;               // B: the most iterations of the reasoning block per token
  std::string halt = "fixed";  // fixed | conv:EPS | kl:EPS (q:THR needs a trained confidence head)
  float alpha = 0.5f;          // FixedMixGate: h <- alpha * p + (1 - alpha) * h
  int n_predict = 32;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw loopus::UsageError("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "-m") o.model = value;
    else if (flag == "-p") o.prompt = value;
    else if (flag == "--encoder-layers") o.enc = value;
    else if (flag == "--decoder-layers") o.dec = value;
    else if (flag == "--loops") o.loops = std::stoi(value);
    else if (flag == "--halt") o.halt = value;
    else if (flag == "--alpha") o.alpha = std::stof(value);
    else if (flag == "-n") o.n_predict = std::stoi(value);
    else throw loopus::UsageError("unknown option " + flag + " (see the comment at the top of generate.cpp)");
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);

  // 1. Open the model and recast it: the encoder and decoder layers run once per token, the layers
  //    in between become the reasoning block. The weights are shared, not copied.
  std::shared_ptr<const loopus::LoopedWeights> lw = loopus::load_looped(o.model, o.enc, o.dec);
  std::printf("model: %s, split %s\n", o.model.c_str(), lw->split.text().c_str());

  // 2. A GGUF carries its vocabulary in its metadata.
  auto tok = loopus::load_tokenizer_from_gguf_meta(lw->base->source->meta, o.model);
  const std::vector<int32_t> prompt = tok->encode(o.prompt, /*add_special=*/true);  // BOS + the text

  // 3. How the loop runs: B = o.loops iterations at most, stopped early by the halting rule.
  //    The halting rule is a runtime value; the gate and the cache are types (see compile_time.cpp).
  loopus::LoopParams lp;
  lp.halting = loopus::HaltingParams::parse(o.halt, o.loops);

  // 4. The looped model: CPU backend, a constant-mix gate, one KV cache per loop depth.
  //    The context holds the prompt and everything we generate.
  const loopus::ContextParams cp{.n_ctx = int64_t(prompt.size()) + o.n_predict};
  loopus::LoopedModel<loopus::Cpu, loopus::FixedMixGate, loopus::PerDepthCache> model(lw, lp, cp,
                                                                                      loopus::FixedMixGate(o.alpha));

  // 5. Greedy decoding (temperature 0). generate() resets the model, feeds the prompt, then calls
  //    back with each new id; last_loops() says how many iterations that id's forward pass ran.
  std::fputs(o.prompt.c_str(), stdout);
  loopus::Sampler greedy(loopus::SamplerParams{.temperature = 0.f});
  loopus::GenerateParams gp{.n_predict = o.n_predict, .stop_id = tok->eos_id()};
  int32_t prev = prompt.back();
  const loopus::GenerateResult r = loopus::generate(model, prompt, gp, greedy, [&](int32_t id) {
    std::printf("%s[%d]", tok->token_to_piece(id, prev).c_str(), model.last_loops());
    std::fflush(stdout);
    prev = id;
  });

  // 6. The plain text again (without the loop counts), and the loops each token used.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), r.ids.begin(), r.ids.end());
  std::printf("\n\ntext: %s\n", tok->decode(all, /*skip_special=*/true).c_str());
  std::printf("loops per token (B = %d, halt %s):", model.n_loops_max(), lp.halting.text().c_str());
  for (int l : r.loops_per_token) std::printf(" %d", l);
  std::printf("\ngenerated %zu tokens, %.3f ms/token\n", r.ids.size(), r.ms_per_token());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "example_generate: %s\n", e.what());
  return 1;
}
