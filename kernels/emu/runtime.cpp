// The emulator's runtime: launches, the per-block fiber scheduler, barriers, warp
// collectives and shared memory. The model is described at the top of cuda_emu.h.

#include "ember_cuda.h"  // (with EMBER_CUDA_EMULATOR defined: cuda_emu.h and EmberStrides)

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#define ASAN_POISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#endif

// ---- Switching stacks ----
//
// A fiber's saved state is its stack pointer: switch_stacks(&save, next) pushes the
// callee-saved registers (System V x86-64: rbp, rbx, r12-r15) and the SSE and x87 control
// words on the current stack, stores the stack pointer in *save, loads `next` and pops the
// same from there. A new fiber's stack is laid out as if it had switched away just before
// its first instruction (fiber_stack_init). No system call and no signal mask, unlike
// swapcontext, whose AddressSanitizer interceptor also clears the shadow of the whole target
// stack on every switch.

#if !defined(__x86_64__)
#error "the CUDA emulator's stack switch is written for x86-64 (System V)"
#endif

extern "C" void ember_emu_switch_stacks(void** save, void* next);
asm(R"(
    .text
    .globl ember_emu_switch_stacks
    .type ember_emu_switch_stacks, @function
ember_emu_switch_stacks:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ember_emu_switch_stacks, .-ember_emu_switch_stacks
)");

namespace emu {

thread_local const ThreadContext* current_thread = nullptr;

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kStaticSharedLimit = 48 * 1024;  // CUDA's limit for static shared memory
constexpr size_t kDynamicSharedLimit = 227 * 1024;  // the opt-in limit of sm_90
constexpr size_t kRedzone = 64;                     // poisoned bytes after each shared array
constexpr size_t kMaxDeposit = 64;                  // bytes one lane gives a warp collective

// A fiber's stack: mmap'd, with a guard page below it (stacks grow down).
struct Stack {
    void* base = nullptr;  // the guard page
    void* bottom = nullptr;
    size_t bytes = 0;
    bool abandoned = false;  // a failed launch left a fiber's frames on it
};

// Stacks are reused across launches on the same OS thread (a deque: growing it keeps the
// stacks already handed out where they are).
struct StackPool {
    std::deque<Stack> stacks;
    ~StackPool() {
        for (Stack& stack : stacks) munmap(stack.base, stack.bytes + static_cast<size_t>(getpagesize()));
    }
    Stack& get(size_t index) {
        while (stacks.size() <= index) {
            size_t page = static_cast<size_t>(getpagesize());
            void* base = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (base == MAP_FAILED) {
                std::fprintf(stderr, "cuda emulator: cannot map a fiber stack\n");
                std::abort();
            }
            mprotect(base, page, PROT_NONE);
            stacks.push_back(Stack{base, static_cast<char*>(base) + page, kStackBytes, false});
        }
        return stacks[index];
    }
};
thread_local StackPool stack_pool;

enum class State { Runnable, AtBarrier, AtWarp, Done };

struct Fiber {
    ThreadContext context;
    void* saved_sp = nullptr;  // where the fiber's registers are while it does not run
    Stack* stack = nullptr;
    State state = State::Runnable;
    unsigned shared_declarations = 0;  // static shared arrays this thread has declared
    struct PendingCopy {
        void* destination;
        const void* source;
        size_t bytes;
    };
    std::vector<PendingCopy> pending_copies;  // cp.async not yet waited for
    void* fake_stack = nullptr;        // AddressSanitizer's bookkeeping across switches
};

// The state of one warp's collective in progress.
struct WarpCollective {
    unsigned arrived = 0;   // lanes that have called it
    unsigned expected = 0;  // its mask (set by the first lane)
    size_t bytes = 0;       // bytes each lane deposits
    unsigned generation = 0;
    unsigned char deposits[2][32][kMaxDeposit];  // by generation parity, then lane
};

struct SharedArray {
    size_t offset;
    size_t bytes;
};

struct Launch {
    const char* kernel = nullptr;
    void (*entry)(void**) = nullptr;
    void** args = nullptr;
    dim3 grid, block;
    uint3 block_idx{0, 0, 0};
    unsigned threads = 0;
    uint64_t rng = 0;

    std::vector<Fiber> fibers;
    std::vector<unsigned> runnable;
    std::vector<WarpCollective> warps;
    unsigned at_barrier = 0;
    unsigned done = 0;
    Fiber* running = nullptr;

    unsigned char* shared = nullptr;
    size_t dynamic_bytes = 0;
    size_t shared_capacity = 0;
    size_t static_end = 0;  // end of the static arrays placed so far (redzones included)
    size_t shared_used = 0;  // the most any finished block used (0: no block finished yet)
    std::vector<SharedArray> arrays;

    void* scheduler_sp = nullptr;
    void* scheduler_fake_stack = nullptr;
    const void* scheduler_stack_bottom = nullptr;
    size_t scheduler_stack_bytes = 0;

    bool failed = false;
    std::string error;
};
thread_local Launch* launch_now = nullptr;

uint64_t next_random(uint64_t& state) {  // splitmix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

std::string block_name(const Launch& launch) {
    char text[96];
    std::snprintf(text, sizeof text, "block (%u, %u, %u)", launch.block_idx.x, launch.block_idx.y,
                  launch.block_idx.z);
    return text;
}

void set_error(Launch& launch, const std::string& message) {
    if (!launch.failed) {
        launch.failed = true;
        launch.error = message + " [" + block_name(launch) + "]";
    }
}

// From a fiber back to the scheduler. Returns when the scheduler runs this fiber again
// (never, if `finished`).
void switch_to_scheduler(bool finished) {
    Launch& launch = *launch_now;
    Fiber& fiber = *launch.running;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(finished ? nullptr : &fiber.fake_stack, launch.scheduler_stack_bottom,
                                   launch.scheduler_stack_bytes);
#endif
    ember_emu_switch_stacks(&fiber.saved_sp, launch.scheduler_sp);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(fiber.fake_stack, nullptr, nullptr);
#endif
    (void)finished;
}

void fiber_main() {
    Launch& launch = *launch_now;
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &launch.scheduler_stack_bottom, &launch.scheduler_stack_bytes);
#endif
    launch.entry(launch.args);
    Fiber& fiber = *launch.running;
    fiber.state = State::Done;
    launch.done++;
    if (launch.at_barrier > 0 && launch.at_barrier + launch.done == launch.threads) {
        char text[160];
        std::snprintf(text, sizeof text,
                      "__syncthreads() not reached by every thread of the block: %u thread(s) "
                      "returned while %u wait at the barrier",
                      launch.done, launch.at_barrier);
        set_error(launch, text);
    }
    switch_to_scheduler(true);
}

void make_runnable(Launch& launch, unsigned index) {
    launch.fibers[index].state = State::Runnable;
    launch.runnable.push_back(index);
}

// Describes who waits where when no thread can run.
std::string deadlock_report(const Launch& launch) {
    unsigned at_warp = 0;
    int first_warp_waiter = -1;
    for (unsigned i = 0; i < launch.threads; i++) {
        if (launch.fibers[i].state == State::AtWarp) {
            if (first_warp_waiter < 0) first_warp_waiter = static_cast<int>(i);
            at_warp++;
        }
    }
    char text[256];
    std::snprintf(text, sizeof text,
                  "deadlock: no thread can go on (%u at __syncthreads, %u at a warp collective "
                  "(first: thread %d), %u returned, of %u)",
                  launch.at_barrier, at_warp, first_warp_waiter, launch.done, launch.threads);
    return text;
}

// The initial stack of a fiber: the frame ember_emu_switch_stacks pops (control words, six
// zeroed registers) below a return address that starts fiber_main, placed so that fiber_main
// begins with the stack alignment of a called function (rsp ≡ 8 mod 16).
void* fiber_stack_init(const Stack& stack) {
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack.bottom) + stack.bytes) & ~uintptr_t(15);
    uint64_t* slot = reinterpret_cast<uint64_t*>(top - 16);
    // A fiber that ran here before left AddressSanitizer's marks for its frames; the frame
    // written here must be addressable (deeper frames rewrite their own marks on entry).
    ASAN_UNPOISON_MEMORY_REGION(reinterpret_cast<void*>(top - 128), 128);
    slot[0] = reinterpret_cast<uint64_t>(&fiber_main);  // popped by `ret`
    slot[1] = 0;
    for (int r = 1; r <= 6; r++) slot[-r] = 0;  // rbp, rbx, r12-r15
    uint32_t* control = reinterpret_cast<uint32_t*>(slot - 7);
    control[0] = 0x1f80;  // MXCSR: all exceptions masked, round to nearest
    control[1] = 0x037f;  // x87 control word: the same
    return slot - 7;
}

// Sets up thread `i` of the block as a fiber that starts in fiber_main.
void prepare_fiber(Launch& launch, unsigned i) {
    Fiber& fiber = launch.fibers[i];
    unsigned x = i % launch.block.x, y = (i / launch.block.x) % launch.block.y,
             z = i / (launch.block.x * launch.block.y);
    fiber.context = ThreadContext{{x, y, z}, launch.block_idx, launch.block, launch.grid, i % 32, i / 32};
    fiber.shared_declarations = 0;
    fiber.pending_copies.clear();
    fiber.fake_stack = nullptr;
    fiber.stack = &stack_pool.get(i);
    // A launch that failed abandoned its fibers mid-call, leaving AddressSanitizer's marks on
    // their frames; clear them. (After a normal launch the frames' own prologues rewrite
    // their marks, and clearing 256 KiB of stack per thread per block would cost more than
    // the kernels.)
    if (fiber.stack->abandoned) {
        ASAN_UNPOISON_MEMORY_REGION(fiber.stack->bottom, fiber.stack->bytes);
        fiber.stack->abandoned = false;
    }
    fiber.saved_sp = fiber_stack_init(*fiber.stack);
    make_runnable(launch, i);
}

// Runs one block to its end (or the launch's first error).
void run_block(Launch& launch) {
    // Shared memory: poisoned bytes (0xff: a NaN as f32, f16 or f64), the redzones and the
    // unused tail unaddressable under AddressSanitizer. Only the part the launch's earlier
    // blocks used is refilled (every block declares the same arrays).
    size_t used = launch.shared_used == 0 ? launch.shared_capacity : launch.shared_used;
    ASAN_UNPOISON_MEMORY_REGION(launch.shared, used);
    std::memset(launch.shared, 0xff, used);
    ASAN_POISON_MEMORY_REGION(launch.shared, used);
    ASAN_UNPOISON_MEMORY_REGION(launch.shared, launch.dynamic_bytes);
    launch.arrays.clear();
    launch.static_end = launch.dynamic_bytes + kRedzone;

    launch.at_barrier = 0;
    launch.done = 0;
    launch.runnable.clear();
    for (WarpCollective& warp : launch.warps) {
        warp.arrived = 0;
        warp.generation = 0;
    }
    for (unsigned i = 0; i < launch.threads; i++) prepare_fiber(launch, i);

    while (!launch.failed) {
        if (launch.runnable.empty()) {
            if (launch.done < launch.threads) set_error(launch, deadlock_report(launch));
            break;
        }
        size_t pick = next_random(launch.rng) % launch.runnable.size();
        unsigned index = launch.runnable[pick];
        launch.runnable[pick] = launch.runnable.back();
        launch.runnable.pop_back();

        Fiber& fiber = launch.fibers[index];
        launch.running = &fiber;
        current_thread = &fiber.context;
#if EMU_ASAN
        __sanitizer_start_switch_fiber(&launch.scheduler_fake_stack, fiber.stack->bottom, fiber.stack->bytes);
#endif
        ember_emu_switch_stacks(&launch.scheduler_sp, fiber.saved_sp);
#if EMU_ASAN
        __sanitizer_finish_switch_fiber(launch.scheduler_fake_stack, nullptr, nullptr);
#endif
        current_thread = nullptr;
        launch.running = nullptr;
    }
    if (launch.failed) {
        for (Fiber& fiber : launch.fibers)
            if (fiber.stack) fiber.stack->abandoned = true;
    } else if (launch.static_end > launch.shared_used) {
        launch.shared_used = launch.static_end < launch.shared_capacity ? launch.static_end : launch.shared_capacity;
    }
}

}  // namespace

void sync_threads() {
    Launch& launch = *launch_now;
    Fiber& fiber = *launch.running;
    fiber.state = State::AtBarrier;
    launch.at_barrier++;
    if (launch.at_barrier + launch.done == launch.threads) {
        if (launch.done > 0) {
            char text[160];
            std::snprintf(text, sizeof text,
                          "__syncthreads() not reached by every thread of the block: %u thread(s) "
                          "returned while %u wait at the barrier",
                          launch.done, launch.at_barrier);
            fail(text);
        }
        launch.at_barrier = 0;
        for (unsigned i = 0; i < launch.threads; i++)
            if (launch.fibers[i].state == State::AtBarrier) make_runnable(launch, i);
    }
    switch_to_scheduler(false);
}

void warp_exchange(unsigned mask, const void* mine, size_t bytes, void* all) {
    Launch& launch = *launch_now;
    Fiber& fiber = *launch.running;
    unsigned lane = fiber.context.lane;
    unsigned warp_index = fiber.context.warp;
    WarpCollective& warp = launch.warps[warp_index];
    unsigned lanes_in_block = launch.threads - warp_index * 32;
    unsigned existing = lanes_in_block >= 32 ? 0xffffffffu : ((1u << lanes_in_block) - 1u);

    if (bytes > kMaxDeposit) fail("a warp collective moves more than 64 bytes per lane");
    if (!((mask >> lane) & 1u)) fail("a lane called a warp collective whose mask leaves it out");
    if (mask & ~existing) fail("a warp collective's mask names lanes that do not exist in this block");
    if (warp.arrived == 0) {
        warp.expected = mask;
        warp.bytes = bytes;
    } else if (mask != warp.expected || bytes != warp.bytes) {
        fail("lanes of a warp are in different collectives (or disagree on the mask)");
    }
    unsigned slot = warp.generation & 1u;
    if (bytes > 0) std::memcpy(warp.deposits[slot][lane], mine, bytes);
    warp.arrived |= 1u << lane;
    fiber.state = State::AtWarp;
    if (warp.arrived == warp.expected) {
        warp.arrived = 0;
        warp.generation++;
        for (unsigned l = 0; l < 32; l++)
            if ((mask >> l) & 1u) make_runnable(launch, warp_index * 32 + l);
    }
    switch_to_scheduler(false);
    if (bytes > 0) {
        for (unsigned l = 0; l < 32; l++)
            if ((mask >> l) & 1u)
                std::memcpy(static_cast<unsigned char*>(all) + l * bytes, warp.deposits[slot][l], bytes);
    }
}

void* static_shared(size_t bytes, size_t align) {
    Launch& launch = *launch_now;
    Fiber& fiber = *launch.running;
    unsigned declaration = fiber.shared_declarations++;
    if (declaration < launch.arrays.size()) {
        const SharedArray& array = launch.arrays[declaration];
        if (array.bytes != bytes) fail("threads of a block declare different shared arrays");
        return launch.shared + array.offset;
    }
    if (declaration > launch.arrays.size()) fail("threads of a block declare different shared arrays");
    size_t alignment = align < 16 ? 16 : align;
    size_t offset = (launch.static_end + alignment - 1) / alignment * alignment;
    if (offset + bytes > launch.shared_capacity)
        fail("static shared memory exceeds CUDA's 48 KiB per block");
    launch.arrays.push_back(SharedArray{offset, bytes});
    launch.static_end = offset + bytes + kRedzone;
    ASAN_UNPOISON_MEMORY_REGION(launch.shared + offset, bytes);
    return launch.shared + offset;
}

void* dynamic_shared() { return launch_now->shared; }

void async_copy(void* destination, const void* source, size_t bytes) {
    launch_now->running->pending_copies.push_back({destination, source, bytes});
}

void async_wait_all() {
    Fiber& fiber = *launch_now->running;
    for (const Fiber::PendingCopy& copy : fiber.pending_copies) std::memcpy(copy.destination, copy.source, copy.bytes);
    fiber.pending_copies.clear();
}

void fail(const char* message) {
    Launch& launch = *launch_now;
    set_error(launch, message);
    launch.running->state = State::Done;
    switch_to_scheduler(true);
    std::abort();  // unreachable: a failed launch never resumes its fibers
}

}  // namespace emu

// The host's side: one launch, run to its end. Returns 0, or 1 with a message in `error`.
struct EmberEmuLaunch {
    unsigned grid[3];
    unsigned block[3];
    unsigned shared_bytes;
    unsigned long long seed;
};

extern "C" int ember_emu_launch(const char* kernel, void (*entry)(void**), void** args,
                                const EmberEmuLaunch* config, char* error, size_t error_capacity) {
    using namespace emu;
    auto report = [&](const std::string& message) {
        std::snprintf(error, error_capacity, "%s", message.c_str());
        return 1;
    };
    if (launch_now != nullptr) return report("a kernel launched from inside a kernel");

    dim3 grid{config->grid[0], config->grid[1], config->grid[2]};
    dim3 block{config->block[0], config->block[1], config->block[2]};
    unsigned long long threads = 1ull * block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0)
        return report("invalid launch configuration: a zero grid or block dimension");
    if (threads > 1024 || block.z > 64 || grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu)
        return report("invalid launch configuration: block or grid too large for CUDA");
    if (config->shared_bytes > kDynamicSharedLimit)
        return report("invalid launch configuration: dynamic shared memory over 227 KiB");

    Launch launch;
    launch.kernel = kernel;
    launch.entry = entry;
    launch.args = args;
    launch.grid = grid;
    launch.block = block;
    launch.threads = static_cast<unsigned>(threads);
    launch.rng = config->seed;
    launch.fibers.resize(launch.threads);
    launch.runnable.reserve(launch.threads);
    launch.warps.resize((launch.threads + 31) / 32);
    launch.dynamic_bytes = config->shared_bytes;
    launch.shared_capacity = launch.dynamic_bytes + kRedzone + kStaticSharedLimit + kRedzone;
    launch.shared = static_cast<unsigned char*>(std::malloc(launch.shared_capacity));
    if (launch.shared == nullptr) return report("out of host memory for shared memory");

    // Blocks run one at a time, in a seeded order.
    unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
    uint64_t order_rng = config->seed ^ 0x5bd1e995ull;
    uint64_t start = blocks > 1 ? next_random(order_rng) % blocks : 0;
    uint64_t step = 1;  // a step coprime with `blocks` visits every block once
    if (blocks > 2) {
        step = next_random(order_rng) % blocks;
        auto gcd = [](uint64_t a, uint64_t b) {
            while (b) { uint64_t t = a % b; a = b; b = t; }
            return a;
        };
        while (step == 0 || gcd(step, blocks) != 1) step = (step + 1) % blocks;
    }
    launch_now = &launch;
    for (unsigned long long n = 0; n < blocks && !launch.failed; n++) {
        unsigned long long b = (start + n * step) % blocks;
        launch.block_idx = uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                                 static_cast<unsigned>(b / (1ull * grid.x * grid.y))};
        run_block(launch);
    }
    launch_now = nullptr;
    ASAN_UNPOISON_MEMORY_REGION(launch.shared, launch.shared_capacity);
    std::free(launch.shared);
    if (launch.failed) return report(launch.error);
    return 0;
}

// AddressSanitizer's settings for the processes the emulator is linked into: no leak check
// (the test harness exits with threads alive), a small quarantine (tests allocate a lot),
// and the shadow gap left accessible, which the CUDA driver needs when it shares the process.
#if EMU_ASAN
extern "C" const char* __asan_default_options() {
    return "detect_leaks=0:quarantine_size_mb=64:allocator_may_return_null=1:protect_shadow_gap=0";
}
#endif
