// Must compile: the control for the compile-fail tests (same includes, valid policies). Every
// member of LoopedModel is instantiated on the Reference backend, whose storage is opaque: the
// model and policy code compiles without reaching a single activation address.
#include <loopus/loopus.hpp>
#include <loopus/ops/reference/ops.hpp>

template class loopus::LoopedModel<loopus::Reference, loopus::NoGate, loopus::PerDepthCache>;
template class loopus::LoopedModel<loopus::Reference, loopus::FixedMixGate, loopus::SharedCache>;
template class loopus::LoopedModel<loopus::Reference, loopus::SelectiveGate, loopus::NoCache>;
template class loopus::CausalLM<loopus::Reference>;

int main() { return 0; }
