// Must NOT compile: Reference storage is opaque outside ops/reference/. Model and policy code gets
// spans, never addresses, so a LoopedModel<Reference, ...> that compiles touches activations only
// through Ops<Reference>.
#include <loopus/core/tensor.hpp>
#include <loopus/ops/reference/ops.hpp>

int main() {
  loopus::Tensor<loopus::Reference> t({4});
  loopus::Span<loopus::Reference> s = t.span();
  float* p = s.p_;  // the address is private to Span and Ops<Reference>
  return p ? 0 : 1;
}
