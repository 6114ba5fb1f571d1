// loopus synth: write a random-weight model of any shape as GGUF or a Hugging Face safetensors folder.
// SPDX-License-Identifier: MIT
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/io/looped_io.hpp"
#include "loopus/io/save.hpp"
#include "loopus/model/synth.hpp"
#include "loopus/model/synth_looped.hpp"

namespace loopus::cli {

void register_synth(CLI::App& app) {
  auto* sub =
      app.add_subcommand("synth",
                         "write a random-weight model (seeded) as FILE.gguf or as an HF safetensors folder (dims up to "
                         "loopus's limits, docs/security.md; the weights must fit in memory)");
  struct Args {
    SynthParams p;
    std::string arch = "llama", dtype = "f32", out;
    std::string enc, dec;
    bool loopus = false;
    int n_loops = 8;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("--arch", a->arch, "llama, qwen3 or phi3")->check(CLI::IsMember({"llama", "qwen3", "phi3"}));
  sub->add_option("--dim", a->p.dim, "hidden size")->required()->check(CLI::PositiveNumber);
  sub->add_option("--layers", a->p.layers, "number of layers")->required()->check(CLI::PositiveNumber);
  sub->add_option("--heads", a->p.heads, "attention heads")->required()->check(CLI::PositiveNumber);
  sub->add_option("--kv-heads", a->p.kv_heads, "key/value heads (GQA)")->check(CLI::PositiveNumber);
  sub->add_option("--head-dim", a->p.head_dim, "head dim (default dim / heads)");
  sub->add_option("--ff", a->p.ff, "MLP intermediate size")->required()->check(CLI::PositiveNumber);
  sub->add_option("--vocab", a->p.vocab, "vocabulary size")->required()->check(CLI::PositiveNumber);
  sub->add_option("--ctx", a->p.ctx, "context length recorded in the file");
  sub->add_option("--rope-theta", a->p.rope_theta, "RoPE base");
  sub->add_option("--rms-eps", a->p.rms_eps, "RMSNorm epsilon");
  sub->add_flag("--tied", a->p.tied, "share the output head with the token embedding");
  sub->add_option("--partial-rotary", a->p.partial_rotary, "phi3: fraction of each head's dims that RoPE rotates")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--sliding-window", a->p.sliding_window, "phi3: attention window recorded in the file (0: none)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--rope-orig-ctx", a->p.rope_orig_ctx,
                  "phi3: longrope RoPE scaling with random factors, extended from this original context to --ctx")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--dtype", a->dtype, "f32, f16 or bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  sub->add_option("--seed", a->p.seed, "RNG seed");
  sub->add_flag("--loopus", a->loopus,
                "write a LoopUS checkpoint instead: random selective gate (official init) and random q head");
  sub->add_option("--encoder-layers", a->enc, "with --loopus: encoder layer spec (e.g. 0..0)");
  sub->add_option("--decoder-layers", a->dec, "with --loopus: decoder layer spec (e.g. 3..3)");
  sub->add_option("--loops", a->n_loops, "with --loopus: N stored in the checkpoint")->check(CLI::Range(1, 1024));
  sub->add_option("--out", a->out, "FILE.gguf, or a folder for config.json + model.safetensors")->required();
  sub->callback([a] {
    a->p.arch = a->arch == "qwen3" ? Arch::kQwen3 : a->arch == "phi3" ? Arch::kPhi3 : Arch::kLlama;
    if (a->p.arch != Arch::kPhi3 && (a->p.partial_rotary != 1.f || a->p.sliding_window || a->p.rope_orig_ctx))
      throw UsageError("--partial-rotary, --sliding-window and --rope-orig-ctx need --arch phi3");
    if (a->p.kv_heads <= 0) a->p.kv_heads = a->p.heads;
    a->p.dtype = a->dtype == "bf16" ? DType::kBF16 : a->dtype == "f16" ? DType::kF16 : DType::kF32;
    if (a->p.head_dim <= 0 && a->p.dim % a->p.heads)
      throw UsageError("--dim " + std::to_string(a->p.dim) + " is not a multiple of --heads; pass --head-dim");
    auto w = synth_weights(a->p);
    const bool gguf = a->out.size() > 5 && a->out.substr(a->out.size() - 5) == ".gguf";
    if (a->loopus) {
      auto lw = recast(w, LayerSplit::from_specs(a->enc.empty() ? "none" : a->enc, a->dec.empty() ? "none" : a->dec,
                                                 w->hp.n_layer));
      synth_loop_parts(*lw, a->p.seed);
      lw->defaults.n_loops = a->n_loops;
      if (gguf) save_looped_gguf(*lw, a->out);
      else save_lds(*lw, a->out, "loopus-synth");
    } else if (gguf) {
      save_gguf(*w, a->out);
    } else {
      save_hf(*w, a->out);
    }
    std::fprintf(stderr, "wrote %s (%s, %lld params, %s)\n", a->out.c_str(), w->hp.arch_name().c_str(),
                 (long long)w->n_params(), a->dtype.c_str());
  });
}

}  // namespace loopus::cli
