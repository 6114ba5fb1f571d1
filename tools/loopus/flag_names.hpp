// The library's errors name parameters (AdaptConfig::batch, LoopRunSpec::min_loops, ...); the CLI names the flag.
// SPDX-License-Identifier: MIT
#pragma once
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace loopus::cli {

/// Rewrites the parameter names a library error message uses into the flags
/// that set them, so `loopus adapt --batch 0` says "--batch must be >= 1"
/// rather than "AdaptConfig::batch must be >= 1". Only these exact names are
/// replaced (longest first, so AdaptConfig::warmup_steps is not read as
/// AdaptConfig::warmup); any other text is left as it is.
inline std::string flag_names(std::string msg) {
  static const std::vector<std::pair<std::string, std::string>> kNames = [] {
    std::vector<std::pair<std::string, std::string>> v = {
        // model/looped_dispatch.hpp: LoopRunSpec
        {"LoopRunSpec::min_loops", "--min-loops"},
        {"LoopRunSpec::loops", "--loops"},
        {"LoopRunSpec::exit_fill", "--exit-fill"},
        {"LoopRunSpec::cache", "--cache"},
        {"LoopRunSpec::gate", "--gate"},
        // model/layer_split.hpp: LayerSplit::from_specs
        {"encoder spec '", "--encoder-layers '"},
        {"decoder spec '", "--decoder-layers '"},
        // train/adapt.hpp: AdaptConfig
        {"AdaptConfig::batch", "--batch"},
        {"AdaptConfig::seq_len", "--seq-len"},
        {"AdaptConfig::accum", "--accum"},
        {"AdaptConfig::max_tokens", "--tokens"},
        {"AdaptConfig::max_steps", "--steps"},
        {"AdaptConfig::lr", "--lr"},
        {"AdaptConfig::warmup", "--warmup"},
        {"AdaptConfig::warmup_steps", "--warmup-steps"},
        {"AdaptConfig::gate_lr_mult", "--gate-lr-mult"},
        {"AdaptConfig::schedule", "--schedule"},
        // train/loopus_step.hpp, train/driver.hpp, eval/perplexity.hpp: memory checks (core/memory.hpp)
        {"AdaptRunOptions::eval_batch", "--eval-batch"},
        {"PerplexityOptions::window", "--window"},
        {"PerplexityOptions::n_ctx", "--ctx-size"},
        {"PerplexityOptions::chunks", "--chunks"},
        // train/data.hpp
        {"DocSplit must be", "--docs must be"},
        {"val_percent must be", "--val-percent must be"},
        {"seq_len must be", "--seq-len must be"},
        {"; batch = ", "; --batch "},
        // train/loopus_step.hpp: StepConfig
        {"StepConfig::n_steps", "--n-steps"},
        {"StepConfig::n_supervision", "--n-supervision"},
        {"StepConfig::n_apply", "--n-apply"},
        {"use seq_len <= ", "use --seq-len <= "},
        // policies/halting/halting.hpp, model/looped_model.hpp
        {"halting spec '", "--halt '"},
        {"max_loops (B) must be", "--loops must be"},
        {"halting rule ", "--halt "},
        // policies/gate/fixed_mix_gate.hpp
        {"FixedMixGate: alpha must be in [0, 1] (gate spec mix:ALPHA)", "--gate mix:ALPHA needs 0 <= alpha <= 1"},
        // train/driver.hpp, io/discover.hpp
        {"set AdaptRunOptions::resume to continue it, or choose another AdaptRunOptions::out",
         "pass --resume to continue it, or use another --out"},
        {"AdaptRunOptions::resume is set but there is no train_state.bin there",
         "--resume but no train_state.bin there"},
        {"leave encoder_layers/decoder_layers empty", "drop --encoder-layers/--decoder-layers"},
        {"needs encoder_layers and decoder_layers", "needs --encoder-layers and --decoder-layers"},
        {"give AdaptRunOptions::val a file or a larger AdaptRunOptions::val_percent",
         "pass --val FILE or a larger --val-percent"},
        {"give a tokenizer file (OpenModelOptions::tokenizer)", "pass --tokenizer FILE"},
        {"give their tokenizer.bin (OpenModelOptions::tokenizer)", "pass --tokenizer tokenizer.bin"},
        // io/quantize_model.hpp: QuantizeOptions
        {"QuantizeOptions::type", "--type"},
        {"QuantizeOptions::keep", "--keep"},
        {"QuantizeOptions::fallback", "--fallback"},
        // train/params.hpp: TrainSelect::parse
        {"TrainSelect '", "--train '"},
    };
    std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    return v;
  }();
  for (const auto& [name, flag] : kNames)
    for (size_t at = msg.find(name); at != std::string::npos; at = msg.find(name, at + flag.size()))
      msg.replace(at, name.size(), flag);
  return msg;
}

}  // namespace loopus::cli
