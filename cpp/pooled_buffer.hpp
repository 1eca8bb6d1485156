// Uninitialised buffers that go back to a pool when released and are reused by later calls.
//
// Why: every sequence call packs its weights into fresh buffers of a few hundred KiB. Allocated
// anew each call, such buffers come from mmap or from a heap that glibc grows and trims again,
// so every call paid page faults on first touch: a batch-1 LSTM call (50 x 128) measured 440 us
// instead of 230 us until glibc's thresholds settled. Pooled, they stay mapped and warm.
// Thread-safe; at most kMaxPooledBytes stay pooled (per element type), larger surplus goes back
// to the system when the buffer is released, i.e. at the end of the call that used it: a call
// with larger buffers (a long inference sequence) does not leave them resident.
// rnnkit.memory_stats() reports the pooled bytes; rnnkit.empty_cache() frees them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "fork_safety.hpp"
#include "memory_blocks.hpp"

namespace rnnkit {

template <class T>
class PooledBuffer {
 public:
  // Holds the scratch of the benchmark's largest training shape (LSTM T=100, B=64, I=H=512,
  // float32: 50 MiB of gate gradients and 4-8 MiB of packed weights), so repeated calls of it
  // reuse warm buffers.
  static constexpr std::size_t kMaxPooledBytes = std::size_t(64) << 20;

  PooledBuffer() = default;
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  PooledBuffer(PooledBuffer&& other) noexcept { swap(other); }
  PooledBuffer& operator=(PooledBuffer&& other) noexcept {
    swap(other);
    return *this;
  }
  ~PooledBuffer() { release(); }

  // Bytes held by the pool (buffers not in use).
  static std::size_t pooled_bytes() {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    return p.bytes;
  }
  // Frees every pooled buffer (rnnkit.empty_cache).
  static void clear_pool() noexcept {
    std::vector<Block> blocks;
    {
      Pool& p = pool();
      std::lock_guard<std::mutex> lock(p.mutex);
      blocks.swap(p.free);
      p.bytes = 0;
    }
  }

  // Room for n elements (contents unspecified); may throw std::bad_alloc.
  void resize(std::size_t n) {
    if (n > capacity_) {
      release();
      take(n);
    }
    size_ = n;
  }
  // Memory from allocate_block (memory_blocks.hpp: a large buffer is unmapped when freed, not
  // left on the heap). T is float or double: no constructors to run.
  struct Free {
    std::size_t bytes = 0;
    void operator()(T* p) const noexcept { free_block(p, bytes); }
  };
  using Memory = std::unique_ptr<T, Free>;

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  std::size_t size() const { return size_; }

 private:
  struct Block {
    Memory data;
    std::size_t capacity;
  };
  struct Pool {
    std::mutex mutex;
    std::vector<Block> free;
    std::size_t bytes = 0;
  };
  static Pool& pool() {
    static Pool* p = [] {
      Pool* q = new Pool();  // never destroyed: buffers may be released during exit
      hold_across_fork<&PooledBuffer::pool_mutex>();
      return q;
    }();
    return *p;
  }
  static std::mutex& pool_mutex() { return pool().mutex; }

  void swap(PooledBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
    std::swap(size_, other.size_);
  }

  // The smallest pooled block that holds n, or a new one.
  void take(std::size_t n) {
    {
      Pool& p = pool();
      std::lock_guard<std::mutex> lock(p.mutex);
      std::size_t best = p.free.size();
      for (std::size_t i = 0; i < p.free.size(); ++i)
        if (p.free[i].capacity >= n && (best == p.free.size() || p.free[i].capacity < p.free[best].capacity))
          best = i;
      if (best < p.free.size()) {
        data_ = std::move(p.free[best].data);
        capacity_ = p.free[best].capacity;
        p.bytes -= capacity_ * sizeof(T);
        p.free.erase(p.free.begin() + std::ptrdiff_t(best));
        return;
      }
    }
    // Not zeroed (a fresh mapping is, by the OS). When it fails, pooled buffers of other sizes may be what
    // is missing: free them and try once more (then std::bad_alloc, MemoryError).
    const std::size_t bytes = std::max<std::size_t>(n, 1) * sizeof(T);
    T* fresh = static_cast<T*>(allocate_block(bytes));
    if (!fresh) {
      clear_pool();
      fresh = static_cast<T*>(allocate_block(bytes));
    }
    if (!fresh) throw std::bad_alloc();
    data_ = Memory(fresh, Free{bytes});
    capacity_ = n;
  }

  // Runs in the destructor: must not throw (a failure to record the buffer frees it instead).
  void release() noexcept {
    if (!data_) return;
    std::vector<Block> evicted;  // freed after the lock is released
    try {
      Pool& p = pool();
      std::lock_guard<std::mutex> lock(p.mutex);
      const std::size_t bytes = capacity_ * sizeof(T);
      if (bytes <= kMaxPooledBytes) {
        // Room for the buffer just used: the least recently pooled ones go first. (Keeping them
        // instead made a call that follows calls of other sizes map and fault its scratch anew
        // every time: the benchmark's large LSTM inference, 52 MiB of gx after the vanilla RNN's
        // 13 MiB buffers, took 145 instead of 127 ms per call at 1 thread on Zen 5.)
        std::size_t n = 0;
        for (std::size_t left = p.bytes; left + bytes > kMaxPooledBytes; ++n)
          left -= p.free[n].capacity * sizeof(T);
        evicted.reserve(n);  // may throw: before anything is changed
        for (std::size_t i = 0; i < n; ++i) {
          p.bytes -= p.free[i].capacity * sizeof(T);
          evicted.push_back(std::move(p.free[i]));
        }
        p.free.erase(p.free.begin(), p.free.begin() + std::ptrdiff_t(n));
        p.free.push_back(Block{std::move(data_), capacity_});
        p.bytes += bytes;
      }
    } catch (...) {
    }
    data_.reset();
    capacity_ = size_ = 0;
  }

  Memory data_;
  std::size_t capacity_ = 0, size_ = 0;
};

}  // namespace rnnkit
