// Must compile: the control for the compile-fail tests (same includes, valid policies).
#include <loopus/loopus.hpp>
#include <loopus/ops/reference/ops.hpp>

int main() {
  using Model = loopus::LoopedModel<loopus::Reference, loopus::FixedMixGate, loopus::SharedCache>;
  return sizeof(Model) > 0 ? 0 : 1;
}
