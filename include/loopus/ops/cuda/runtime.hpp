// The CUDA runtime as Ops<Cuda> uses it: devices, device memory, copies, synchronisation. Plain C++
// declarations (no CUDA header), defined in src/cuda/runtime.cu of the compiled loopus::cuda library.
// SPDX-License-Identifier: MIT
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace loopus::cuda {

/// What the driver reports of the current device.
struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
  size_t total_bytes = 0;
};

/// Number of CUDA devices; 0 when there is none or no driver (never throws).
int device_count();
/// Why there is no usable device ("" when device_count() > 0): the runtime's own words.
std::string no_device_reason();
/// Makes device n current for the calling thread and every thread that calls afterwards (the
/// default is device 0). Throws UsageError naming n and the number of devices when n is out of range.
void select_device(int n);
/// The device the calling thread runs on.
DeviceInfo current_device();

/// Device memory: throws LimitError (out of memory) or Error naming the request.
void* device_alloc(size_t bytes);
void device_free(void* p) noexcept;

/// Copies on the calling thread's stream (cudaStreamPerThread); host memory is pageable, so
/// host-to-device returns once the source may be reused and device-to-host once the data is there.
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_on_device(void* dst, const void* src, size_t bytes);
/// Waits for the calling thread's stream.
void synchronize();

/// Bytes of device scratch slot `slot` of the calling thread, grown to at least `bytes` (contents
/// undefined after growth). Growing synchronises the thread's stream first.
void* scratch(int slot, size_t bytes);
enum ScratchSlot : int { kScratchIds, kScratchAttn, kScratchConv, kScratchReduce, kScratchSlots };

/// Throws an Error naming `what` when the last kernel launch failed (a launch-configuration error).
void check_launch(const char* what);

}  // namespace loopus::cuda
