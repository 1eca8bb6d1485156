// A cache of large blocks for the arrays rnnkit returns (outputs, workspaces, gradients).
//
// Why: a fresh multi-megabyte allocation is mapped anew by the OS and every 4 KiB page is
// zeroed on first touch; for a training step that measured at 10-15% of the time. Arrays made
// here hand their block back to this cache when NumPy frees them, and the next call of the same
// size reuses it without page faults.
//
// Bound: at most limit() bytes stay cached (rnnkit.set_cache_limit; kDefaultLimit by default);
// when a returned block does not fit, the least recently returned blocks are freed to make room,
// so a workload whose sizes change (many sequence lengths) keeps its recent sizes and no more.
// A block larger than the limit goes straight back to the system. When an allocation fails,
// the cached blocks are freed and it is tried once more before std::bad_alloc (MemoryError).
// Thread-safe.
#pragma once

#include <pybind11/numpy.h>

#include <cstddef>
#include <cstdlib>
#include <iterator>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "common.hpp"
#include "fork_safety.hpp"
#include "memory_blocks.hpp"

namespace rnnkit {

class BlockCache {
 public:
  static constexpr std::size_t kMinBytes = kLargeBytes;  // smaller: plain malloc, not cached
  // The default limit: repeated training steps of the benchmark's largest shape (LSTM T=100,
  // B=64, I=H=512, float32) return 121 MiB of blocks per step (outputs, workspace, gradients),
  // so they all still come from the cache; see bench/RESULTS.md for what a miss costs.
  static constexpr std::size_t kDefaultLimit = std::size_t(256) << 20;

  static BlockCache& instance() {
    static BlockCache* cache = [] {
      BlockCache* c = new BlockCache();  // never destroyed: arrays may outlive exit
      hold_across_fork<&BlockCache::lock>();
      return c;
    }();
    return *cache;
  }
  static std::mutex& lock() { return instance().mutex_; }

  void* take(std::size_t bytes) {
    if (bytes >= kMinBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = free_.begin(); it != free_.end(); ++it)  // most recently returned first
        if (it->bytes == bytes) {
          void* p = it->p;
          free_.erase(it);
          cached_ -= bytes;
          return p;
        }
    }
    void* p = allocate(bytes);
    if (!p) {  // cached blocks of other sizes may be what is missing
      clear();
      p = allocate(bytes);
    }
    if (!p) throw std::bad_alloc();
    return p;
  }

  // Called from a capsule's destructor (NumPy freeing an array): must not throw.
  void give(void* p, std::size_t bytes) noexcept {
    std::vector<Entry> evicted;
    try {
      if (bytes >= kMinBytes) {
        evicted.reserve(16);
        std::lock_guard<std::mutex> lock(mutex_);
        if (bytes <= limit_) {
          while (cached_ + bytes > limit_) {  // least recently returned first
            evicted.push_back(free_.back());
            cached_ -= free_.back().bytes;
            free_.pop_back();
          }
          free_.push_front(Entry{p, bytes});
          cached_ += bytes;
          p = nullptr;
        }
      }
    } catch (...) {  // no room for the bookkeeping: free the block instead of caching it
    }
    for (const Entry& e : evicted) free_block(e.p, e.bytes);
    free_block(p, bytes);
  }

  // Frees every cached block (rnnkit.empty_cache).
  void clear() noexcept {
    std::list<Entry> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      cached_ = 0;
    }
    for (const Entry& e : blocks) free_block(e.p, e.bytes);
  }

  // Sets the limit, freeing cached blocks beyond it (least recently returned first).
  void set_limit(std::size_t bytes) {
    std::list<Entry> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      while (cached_ > limit_) {  // least recently returned first
        cached_ -= free_.back().bytes;
        evicted.splice(evicted.begin(), free_, std::prev(free_.end()));
      }
    }
    for (const Entry& e : evicted) free_block(e.p, e.bytes);
  }

  std::size_t limit() {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_;
  }
  std::size_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

 private:
  struct Entry {
    void* p;
    std::size_t bytes;
  };

  static void* allocate(std::size_t bytes) { return allocate_block(bytes); }

  std::mutex mutex_;
  std::list<Entry> free_;  // most recently returned first
  std::size_t cached_ = 0;
  std::size_t limit_ = kDefaultLimit;
};

// A C-contiguous NumPy array of `shape` whose memory comes from (and returns to) BlockCache.
// Its contents are uninitialised. std::bad_alloc (MemoryError) if it cannot be allocated.
template <class T>
pybind11::array_t<T, pybind11::array::c_style> cached_array(const std::vector<index_t>& shape) {
  std::size_t count = 1;
  for (index_t d : shape) count *= std::size_t(d);
  const std::size_t bytes = count * sizeof(T);
  struct Block {
    void* p;
    std::size_t bytes;
    ~Block() {
      if (p) BlockCache::instance().give(p, bytes);
    }
  };
  void* p = BlockCache::instance().take(bytes);
  Block* block;
  try {
    block = new Block{p, bytes};
  } catch (...) {
    BlockCache::instance().give(p, bytes);
    throw;
  }
  // Owned here until the capsule holds it, so that a failure on the way gives the block back.
  std::unique_ptr<Block> guard(block);
  pybind11::capsule owner(block, [](void* b) { delete static_cast<Block*>(b); });
  guard.release();
  T* data = static_cast<T*>(p);
  return pybind11::array_t<T, pybind11::array::c_style>(shape, data, owner);
}

}  // namespace rnnkit
