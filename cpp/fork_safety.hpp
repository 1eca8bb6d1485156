// rnnkit across fork(): a forked child (multiprocessing's default start method on Linux) has
// only the thread that called fork. Any lock another thread held at that moment would stay
// locked in the child forever, and a thread team whose workers do not exist there would wait
// for them forever.
//
// * Locks around short critical sections (the BLAS thread-count switch, the buffer pools, the
//   output block cache) are held across fork: a prepare handler takes each (waiting for at
//   most one short critical section), the parent and child handlers release it. The child
//   thus inherits them unlocked and the data they guard consistent.
// * The team (team.hpp) is rebuilt in the child: no workers, fresh locks; workers are started
//   again by the child's first call that splits its work.
//
// What this cannot fix: OpenBLAS's own fork handler waits for its worker threads, so a fork
// while another thread is inside a multi-threaded BLAS product (rnnkit's large weight
// gradients, or NumPy's matmul: NumPy deadlocks the same way) can hang the parent in fork() or
// the child. The remedy is the multiprocessing start methods that do not fork a threaded
// process: "spawn" or "forkserver" (README, "Threads and fork").
#pragma once

#include <pthread.h>

#include <mutex>

namespace rnnkit {

// Registers the handlers that hold the mutex `Lock()` across fork (see above). Call once, when
// the mutex is created.
template <std::mutex& (*Lock)()>
void hold_across_fork() {
  pthread_atfork([] { Lock().lock(); }, [] { Lock().unlock(); }, [] { Lock().unlock(); });
}

}  // namespace rnnkit
