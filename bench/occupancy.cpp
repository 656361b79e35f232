// Theoretical occupancy from the CUDA toolkit's own calculator (cuda_occupancy.h,
// a header-only host API: the rules the Nsight occupancy calculator applies), for
// the GPU performance model (bench/cuda_model.py), which compiles this with g++.
//
// stdin, one query per line (whitespace-separated integers):
//   major minor max_threads_per_sm regs_per_sm smem_per_sm smem_per_block_optin
//   reserved_smem_per_block sms  kernel_max_threads regs static_smem  block_threads dynamic_smem
// stdout, one line per query:
//   blocks_per_sm limiting_factors limit_regs limit_smem limit_warps limit_blocks
// (limiting_factors: cudaOccLimitingFactor bits; a limit of -1 means "no limit").
#include <cuda_occupancy.h>

#include <climits>
#include <cstdio>

int main() {
  long long major, minor, threads_sm, regs_sm, smem_sm, smem_optin, reserved, sms, kernel_threads, regs,
      static_smem, block, dynamic_smem;
  while (std::scanf("%lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld", &major, &minor,
                    &threads_sm, &regs_sm, &smem_sm, &smem_optin, &reserved, &sms, &kernel_threads, &regs,
                    &static_smem, &block, &dynamic_smem) == 13) {
    cudaOccDeviceProp prop;
    prop.computeMajor = static_cast<int>(major);
    prop.computeMinor = static_cast<int>(minor);
    prop.maxThreadsPerBlock = 1024;
    prop.maxThreadsPerMultiprocessor = static_cast<int>(threads_sm);
    prop.regsPerBlock = 65536;
    prop.regsPerMultiprocessor = static_cast<int>(regs_sm);
    prop.warpSize = 32;
    prop.sharedMemPerBlock = 48 * 1024;
    prop.sharedMemPerMultiprocessor = static_cast<size_t>(smem_sm);
    prop.numSms = static_cast<int>(sms);
    prop.sharedMemPerBlockOptin = static_cast<size_t>(smem_optin);
    prop.reservedSharedMemPerBlock = static_cast<size_t>(reserved);

    cudaOccFuncAttributes attr;
    attr.maxThreadsPerBlock = static_cast<int>(kernel_threads);
    attr.numRegs = static_cast<int>(regs);
    attr.sharedSizeBytes = static_cast<size_t>(static_smem);
    attr.partitionedGCConfig = PARTITIONED_GC_OFF;
    // The launchers opt in to more than 48 KiB only where they need it; the opt-in
    // limit lets the calculator accept any launch the runtime accepted.
    attr.shmemLimitConfig = FUNC_SHMEM_LIMIT_OPTIN;
    attr.maxDynamicSharedSizeBytes = static_cast<size_t>(smem_optin) - static_cast<size_t>(static_smem);
    attr.numBlockBarriers = 1;

    cudaOccDeviceState state;  // default cache preference and carveout, as a plain launch
    cudaOccResult result;
    if (cudaOccMaxActiveBlocksPerMultiprocessor(&result, &prop, &attr, &state, static_cast<int>(block),
                                                static_cast<size_t>(dynamic_smem)) != CUDA_OCC_SUCCESS) {
      std::printf("error\n");
      continue;
    }
    auto limit = [](int v) { return v == INT_MAX ? -1 : v; };
    std::printf("%d %u %d %d %d %d\n", result.activeBlocksPerMultiprocessor, result.limitingFactors,
                limit(result.blockLimitRegs), limit(result.blockLimitSharedMem), limit(result.blockLimitWarps),
                limit(result.blockLimitBlocks));
  }
  return 0;
}
