// Must NOT compile: a cache policy without slot()/reasoning_slots() is rejected by LoopedModel's static_assert.
#include <loopus/loopus.hpp>
#include <loopus/ops/reference/ops.hpp>

struct NotACache {
  static constexpr std::string_view kName = "not-a-cache";
};

int main() {
  using Model = loopus::LoopedModel<loopus::Reference, loopus::NoGate, NotACache>;
  return sizeof(Model) > 0 ? 0 : 1;
}
