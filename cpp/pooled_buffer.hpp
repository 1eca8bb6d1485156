// Uninitialised buffers that go back to a pool when released and are reused by later calls.
//
// Why: every sequence call packs its weights into fresh buffers of a few hundred KiB. Allocated
// anew each call, such buffers come from mmap or from a heap that glibc grows and trims again,
// so every call paid page faults on first touch: a batch-1 LSTM call (50 x 128) measured 440 us
// instead of 230 us until glibc's thresholds settled. Pooled, they stay mapped and warm.
// Thread-safe; at most kMaxPooledBytes stay pooled, larger surplus goes back to the system.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "fork_safety.hpp"

namespace rnnkit {

template <class T>
class PooledBuffer {
 public:
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

  // Room for n elements (contents unspecified); may throw std::bad_alloc.
  void resize(std::size_t n) {
    if (n > capacity_) {
      release();
      take(n);
    }
    size_ = n;
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  std::size_t size() const { return size_; }

 private:
  struct Block {
    std::unique_ptr<T[]> data;
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
    data_.reset(new T[n]);  // default-initialised: no zeroing
    capacity_ = n;
  }

  void release() {
    if (!data_) return;
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    if (p.bytes + capacity_ * sizeof(T) <= kMaxPooledBytes) {
      p.bytes += capacity_ * sizeof(T);
      p.free.push_back(Block{std::move(data_), capacity_});
    }
    data_.reset();
    capacity_ = size_ = 0;
  }

  std::unique_ptr<T[]> data_;
  std::size_t capacity_ = 0, size_ = 0;
};

}  // namespace rnnkit
