// A host project using the installed loopus package: synthesize a tiny model, recast and loop it.
#include <cstdio>
#include <loopus/loopus.hpp>
#include <loopus/model/synth.hpp>
#include <loopus/ops/cpu/ops.hpp>
#if defined(LOOPUS_HAS_CUDA)
#include <loopus/ops/cuda/ops.hpp>
#endif

int main() {
  loopus::SynthParams p;
  p.layers = 3;
  auto w = loopus::synth_weights(p);
  auto lw = loopus::recast(w, loopus::LayerSplit::from_specs("0..0", "2..2", 3));
  loopus::LoopParams lp;
  lp.halting = loopus::HaltingParams::parse("fixed", 4);
  loopus::LoopedModel<loopus::Cpu, loopus::NoGate, loopus::PerDepthCache> m(lw, lp, {.n_ctx = 16});
  std::vector<int32_t> ids = {1, 2, 3};
  std::vector<float> logits(static_cast<size_t>(m.n_vocab()));
  m.eval(ids, logits.data());
  std::printf("consumer ok: %d loops, logit[0] = %f\n", m.last_loops(), logits[0]);
#if defined(LOOPUS_HAS_CUDA)
  // the same model type on the GPU compiles and links; it runs where a device is present
  using GpuModel = loopus::LoopedModel<loopus::Cuda, loopus::NoGate, loopus::PerDepthCache>;
  if (loopus::cuda::device_count() > 0) {
    GpuModel g(lw, lp, {.n_ctx = 16});
    std::vector<float> gl(logits.size());
    g.eval(ids, gl.data());
    std::printf("consumer on CUDA: logit[0] = %f\n", gl[0]);
  } else {
    std::printf("consumer: loopus::cuda linked; %s\n", loopus::cuda::no_device_reason().c_str());
  }
#endif
  return m.last_loops() == 4 ? 0 : 1;
}
