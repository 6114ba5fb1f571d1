// loopus info: architecture, dims, dtype, parameter count of a model.
// SPDX-License-Identifier: MIT
#include <cstdio>

#include "commands.hpp"
#include "common.hpp"
#include "loopus/analysis/bench.hpp"

namespace loopus::cli {

void register_info(CLI::App& app) {
  auto* sub = app.add_subcommand("info", "print a model's architecture, layer count, dims, vocab, dtype and parameter count; for a looped model "
      "(a LoopUS checkpoint, or loop options given) also the split, gate, halting and KV cache bytes per token");
  struct Args {
    ModelArgs model;
    LoopArgs loop;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*sub);
  a->loop.add_to(*sub);
  sub->add_flag("--json", a->json, "print one JSON object instead of text");
  sub->callback([a] {
    auto m = open_runnable(a->model, a->loop, /*need_tokenizer=*/false);
    const ModelWeights& w = *m.plain;
    const HParams& hp = w.hp;
    nlohmann::json j = {
        {"path", w.path},
        {"format", m.format},
        {"arch", hp.arch_name()},
        {"n_layer", hp.n_layer},
        {"n_embd", hp.n_embd},
        {"n_head", hp.n_head},
        {"n_head_kv", hp.n_head_kv},
        {"head_dim", hp.head_dim},
        {"n_ff", hp.n_ff},
        {"n_vocab", hp.n_vocab},
        {"n_ctx_train", hp.n_ctx_train},
        {"rope_theta", hp.rope_theta},
        {"rope_style", hp.rope_style == RopeStyle::kHalf ? "half" : "interleaved"},
        {"rms_eps", hp.rms_eps},
        {"qk_norm", hp.qk_norm},
        {"tied_output", hp.tied_output},
        {"dtype", w.matrix_dtype()},
        {"n_params", w.n_params()},
        {"weight_bytes_per_token", w.bytes_per_token()},
        {"kv_bytes_per_token", analysis::kv_bytes_per_token(hp)},
    };
    if (m.looped) {  // the recast: split, gate, halting, and KV cache per token for each cache policy
      const LoopedWeights& lw = *m.looped;
      const LoopRunSpec& sp = a->loop.spec;
      const std::string gate = sp.gate == "auto" ? (lw.gate ? "selective" : "none") : sp.gate;
      j["split"] = {{"encoder", LayerSplit::range_text(lw.split.encoder)},
                    {"reasoning", LayerSplit::range_text(lw.split.reasoning)},
                    {"decoder", LayerSplit::range_text(lw.split.decoder)}};
      j["encoder_layers"] = lw.split.encoder;  // the index lists, as the official config.json stores them
      j["reasoning_layers"] = lw.split.reasoning;
      j["decoder_layers"] = lw.split.decoder;
      j["loops"] = sp.loops;
      j["gate"] = gate + (gate == "selective" && !lw.gate ? " (fresh, official init)" : "");
      if (lw.gate) j["gate_rank"] = lw.gate->r;
      j["q_head"] = bool(lw.q_head);
      j["halting"] = sp.halting(lw).text();
      j["kv_bytes_per_token_per_depth_cache"] = analysis::looped_kv_bytes_per_token(lw, "per-depth", sp.loops);
      j["kv_bytes_per_token_shared_cache"] = analysis::looped_kv_bytes_per_token(lw, "shared", sp.loops);
      j["checkpoint_defaults"] = {{"N", lw.defaults.n_loops},
                                  {"q_threshold", lw.defaults.q_threshold},
                                  {"halting_strategy", lw.defaults.halting_strategy}};
    }
    if (a->json) {
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    for (auto& [k, v] : j.items()) std::printf("%-24s %s\n", k.c_str(), v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
  });
}

}  // namespace loopus::cli
