// loopus info: architecture, dims, dtype, parameter count of a model.
// SPDX-License-Identifier: MIT
#include <cstdio>

#include "commands.hpp"
#include "common.hpp"

namespace loopus::cli {

void register_info(CLI::App& app) {
  auto* sub = app.add_subcommand("info", "print a model's architecture, layer count, dims, vocab, dtype and parameter count");
  struct Args {
    ModelArgs model;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  a->model.add_to(*sub);
  sub->add_flag("--json", a->json, "print one JSON object instead of text");
  sub->callback([a] {
    auto m = open_model(a->model);
    const ModelWeights& w = *m.weights;
    const HParams& hp = w.hp;
    nlohmann::json j = {
        {"path", w.path},
        {"format", model_format(*m.file)},
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
        {"kv_bytes_per_token", size_t(hp.n_layer) * size_t(hp.kv_dim()) * 2 * sizeof(float)},
    };
    if (a->json) {
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    for (auto& [k, v] : j.items()) std::printf("%-24s %s\n", k.c_str(), v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
  });
}

}  // namespace loopus::cli
