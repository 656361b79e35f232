// Must abort: half of the block waits at one __syncthreads(), half at another.
#include "../../csrc/simt/simt.h"

#include <cstdio>

__global__ void divergent(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
    out[threadIdx.x] = 1;
  } else {
    __syncthreads();
    out[threadIdx.x] = 2;
  }
}

int main() {
  int out[64] = {};
  SIMT_LAUNCH(divergent, 1, 64, 0, nullptr, out);
  std::printf("divergent barrier was not detected\n");
  return 0;
}
