// Per-thread scratch memory that survives across calls.
//
// A fresh multi-MB allocation per call costs milliseconds in page faults on this class of
// machine, so each (thread, slot) keeps its buffer and only grows it. Every request is
// bounded by the caller's tile sizes (never by the batch), so the arena stays bounded too.
// Compiled without ISA flags: it is shared by every ISA's kernels.
#pragma once
#include <cstddef>

namespace fastconv {

enum WorkspaceSlot { kSlotTile = 0, kSlotTile2 = 1, kSlotPackA = 2, kSlotShared = 3, kNumSlots = 4 };

// 64-byte aligned, at least `bytes` long, contents unspecified. Valid until the same thread
// asks for the same slot again. Throws std::bad_alloc when the memory cannot be had.
void* thread_workspace(std::size_t bytes, int slot);

}  // namespace fastconv
