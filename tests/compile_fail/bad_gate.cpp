// Must NOT compile: a gate without blend()/reserve() is rejected by LoopedModel's static_assert.
#include <loopus/loopus.hpp>
#include <loopus/ops/reference/ops.hpp>

struct NotAGate {
  static constexpr std::string_view kName = "not-a-gate";
};

int main() {
  using Model = loopus::LoopedModel<loopus::Reference, NotAGate, loopus::PerDepthCache>;
  return sizeof(Model) > 0 ? 0 : 1;
}
