// Smoke test of the op library built by CMake against libtorch: the ops are
// registered with the dispatcher and compute what ATen computes.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <string>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what);
    ++failures;
  }
}

at::Tensor call_relu(const at::Tensor& x, const std::string& backend) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastconv::relu", "")
                       .typed<at::Tensor(const at::Tensor&, c10::string_view)>();
  return op.call(x, backend);
}

}  // namespace

int main() {
  const at::Tensor x = at::randn({4, 5, 6});
  const at::Tensor expected = at::relu(x);
  expect(at::equal(call_relu(x, "cpu"), expected), "relu on cpu");
  expect(at::equal(call_relu(x, "simt"), expected), "relu on simt");
  bool threw = false;
  try {
    call_relu(x, "nope");
  } catch (const c10::ValueError&) {
    threw = true;
  }
  expect(threw, "unknown backend raises ValueError");
  // The autograd kernels are C++ too: backward works with no Python in the process.
  for (const char* backend : {"cpu", "simt"}) {
    const at::Tensor leaf = at::randn({4, 5}).requires_grad_();
    call_relu(leaf, backend).sum().backward();
    expect(at::equal(leaf.grad(), (leaf > 0).to(leaf.scalar_type())), "relu backward through its autograd kernel");
  }
  std::printf(failures ? "FAILED\n" : "ops: ok\n");
  return failures ? 1 : 0;
}
