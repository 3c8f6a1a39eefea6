#include "workspace.h"

#include <cstdlib>
#include <new>

namespace fastconv {

namespace {
struct Arena {
  void* ptr[kNumSlots] = {};
  std::size_t size[kNumSlots] = {};
  ~Arena() {
    for (void* p : ptr) std::free(p);
  }
};
thread_local Arena arena;
}  // namespace

void* thread_workspace(std::size_t bytes, int slot) {
  if (bytes == 0) bytes = 64;
  if (arena.size[slot] < bytes) {
    std::size_t rounded = (bytes + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    std::free(arena.ptr[slot]);
    arena.ptr[slot] = p;
    arena.size[slot] = rounded;
  }
  return arena.ptr[slot];
}

}  // namespace fastconv
