// A CPU stand-in for the CUDA built-ins the sources in this directory use, so that the tests
// can run the real kernels on machines without a GPU (tests/test_cuda_sources.py). Test-only:
// not installed, never part of the library.
//
// A block's threads are fibers (ucontext) on one OS thread, run round-robin; __syncthreads
// switches to the next fiber, so every thread reaches the barrier before any passes it, and a
// block where some threads exit while others wait at a barrier is reported as an error. With
// FC_EMU_REVERSE=1 the fibers run from the last thread to the first: a shared-memory race
// between two barriers then gives different results than in the default order.
// __shared__ becomes `static`: one copy per kernel instantiation, shared by the block's fibers
// (blocks run one after another). Warp-level intrinsics and atomics are not emulated: the
// kernels use neither.
//
// The driver (fc_emu::main) reads a launch script, runs it and writes the buffers back:
//   in : u32 buffer count; per buffer u64 size + bytes
//        u32 launch count; per launch u32 name length + name, u32 grid[3], u32 block[3],
//             u32 arg count; per arg u8 kind (0 buffer: u32 index | 1 null pointer |
//             2 by value: u32 size + bytes)
//   out: per buffer its bytes.
// Each buffer sits between two guard zones of 0xff bytes (NaN as float and double, -1 as an
// integer): reads there poison results, and any write there is reported.
#pragma once
#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __restrict__ __restrict

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}

inline double __longlong_as_double(long long v) {
  double d;
  std::memcpy(&d, &v, sizeof d);
  return d;
}

namespace fc_emu {

struct Fiber {
  ucontext_t context;
  std::vector<char> stack;
  bool done = false;
  bool at_barrier = false;
};

inline ucontext_t scheduler;
inline std::vector<Fiber> fibers;
inline int current = 0;
inline bool reverse_order = false;
inline std::function<void()> thread_body;

inline void fiber_main() {
  thread_body();
  fibers[current].done = true;  // returns to uc_link (the scheduler)
}

}  // namespace fc_emu

inline void __syncthreads() {
  fc_emu::Fiber& f = fc_emu::fibers[fc_emu::current];
  f.at_barrier = true;
  swapcontext(&f.context, &fc_emu::scheduler);
}

namespace fc_emu {

struct Failure {
  std::string message;
};

// Runs body once per thread of every block of the grid.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& body) {
  constexpr size_t kStack = 256 * 1024;
  const unsigned threads = block.x * block.y * block.z;
  fibers.resize(threads);
  for (Fiber& f : fibers)
    if (f.stack.size() != kStack) f.stack.assign(kStack, 0);
  thread_body = body;
  gridDim = grid;
  blockDim = block;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = {bx, by, bz};
        for (unsigned t = 0; t < threads; ++t) {
          Fiber& f = fibers[t];
          f.done = f.at_barrier = false;
          getcontext(&f.context);
          f.context.uc_stack.ss_sp = f.stack.data();
          f.context.uc_stack.ss_size = f.stack.size();
          f.context.uc_link = &scheduler;
          makecontext(&f.context, fiber_main, 0);
        }
        for (;;) {
          unsigned waiting = 0, finished = 0;
          for (unsigned step = 0; step < threads; ++step) {
            const unsigned t = reverse_order ? threads - 1 - step : step;
            Fiber& f = fibers[t];
            if (f.done) {
              ++finished;
              continue;
            }
            threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            current = int(t);
            f.at_barrier = false;
            swapcontext(&scheduler, &f.context);
            if (f.done)
              ++finished;
            else
              ++waiting;
          }
          if (waiting == 0) break;
          if (finished != 0)
            throw Failure{"block (" + std::to_string(bx) + "," + std::to_string(by) + "," + std::to_string(bz) +
                          "): some threads exited while others wait at __syncthreads"};
        }
      }
}

// A kernel behind a uniform signature: arguments arrive as pointers to their bytes, as in
// cuLaunchKernel; sizes are checked against the kernel's parameter types.
struct Entry {
  std::vector<size_t> arg_sizes;
  std::function<void(void**)> call;
};

template <class... A, size_t... I>
void call_with(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
  kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <class... A>
Entry entry(void (*kernel)(A...)) {
  return Entry{{sizeof(A)...}, [kernel](void** args) { call_with(kernel, args, std::index_sequence_for<A...>{}); }};
}

// Defined by the generated file that includes the kernels: name expression -> kernel.
std::map<std::string, Entry> kernel_table();

constexpr size_t kGuard = 4096;

struct Reader {
  FILE* f;
  template <class U>
  U get() {
    U v;
    if (std::fread(&v, sizeof v, 1, f) != 1) throw Failure{"truncated launch script"};
    return v;
  }
  void bytes(void* dst, size_t n) {
    if (n && std::fread(dst, 1, n, f) != n) throw Failure{"truncated launch script"};
  }
};

inline int run(const char* in_path, const char* out_path) {
  FILE* in = std::fopen(in_path, "rb");
  if (!in) throw Failure{std::string("cannot open ") + in_path};
  Reader r{in};
  std::vector<std::vector<unsigned char>> buffers(r.get<uint32_t>());
  std::vector<size_t> sizes;
  for (auto& b : buffers) {
    const size_t n = r.get<uint64_t>();
    sizes.push_back(n);
    b.assign(n + 2 * kGuard, 0xff);
    r.bytes(b.data() + kGuard, n);
  }
  const std::map<std::string, Entry> table = kernel_table();
  const uint32_t launches = r.get<uint32_t>();
  for (uint32_t l = 0; l < launches; ++l) {
    std::string name(r.get<uint32_t>(), '\0');
    r.bytes(name.data(), name.size());
    dim3 grid{r.get<uint32_t>(), r.get<uint32_t>(), r.get<uint32_t>()};
    dim3 block{r.get<uint32_t>(), r.get<uint32_t>(), r.get<uint32_t>()};
    const uint32_t nargs = r.get<uint32_t>();
    std::vector<std::vector<unsigned char>> values(nargs);
    std::vector<void*> args(nargs);
    for (uint32_t a = 0; a < nargs; ++a) {
      const uint8_t kind = r.get<uint8_t>();
      if (kind == 2) {
        values[a].resize(r.get<uint32_t>());
        r.bytes(values[a].data(), values[a].size());
      } else {
        void* pointer = nullptr;
        if (kind == 0) {
          const uint32_t index = r.get<uint32_t>();
          if (index >= buffers.size()) throw Failure{"bad buffer index"};
          pointer = buffers[index].data() + kGuard;
        }
        values[a].resize(sizeof pointer);
        std::memcpy(values[a].data(), &pointer, sizeof pointer);
      }
      args[a] = values[a].data();
    }
    auto it = table.find(name);
    if (it == table.end()) throw Failure{"no kernel named " + name};
    const Entry& e = it->second;
    if (e.arg_sizes.size() != nargs) throw Failure{name + ": expected " + std::to_string(e.arg_sizes.size()) +
                                                   " arguments, got " + std::to_string(nargs)};
    for (uint32_t a = 0; a < nargs; ++a)
      if (e.arg_sizes[a] != values[a].size())
        throw Failure{name + ": argument " + std::to_string(a) + " has " + std::to_string(values[a].size()) +
                      " bytes, the kernel takes " + std::to_string(e.arg_sizes[a])};
    void** argv = args.data();
    launch(grid, block, [&e, argv] { e.call(argv); });
  }
  std::fclose(in);
  for (size_t i = 0; i < buffers.size(); ++i)
    for (size_t k = 0; k < kGuard; ++k)
      if (buffers[i][k] != 0xff || buffers[i][kGuard + sizes[i] + k] != 0xff)
        throw Failure{"out-of-bounds write next to buffer " + std::to_string(i)};
  FILE* out = std::fopen(out_path, "wb");
  if (!out) throw Failure{std::string("cannot open ") + out_path};
  for (size_t i = 0; i < buffers.size(); ++i) std::fwrite(buffers[i].data() + kGuard, 1, sizes[i], out);
  std::fclose(out);
  return 0;
}

inline int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s LAUNCHES_IN BUFFERS_OUT\n", argv[0]);
    return 2;
  }
  const char* reverse = std::getenv("FC_EMU_REVERSE");
  reverse_order = reverse != nullptr && std::strcmp(reverse, "1") == 0;
  try {
    return run(argv[1], argv[2]);
  } catch (const Failure& f) {
    std::fprintf(stderr, "emulation failed: %s\n", f.message.c_str());
    return 1;
  }
}

}  // namespace fc_emu
