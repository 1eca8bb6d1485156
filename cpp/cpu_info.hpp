// What the processor is, read once from CPUID: vendor, model name, family/model, the data
// cache sizes of one core, and the vector features the kernels care about.
//
// The kernels' blocking follows the cache sizes read here (not one machine's measurements):
// e.g. AMD Zen 4 has 1 MiB of L2 per core and Intel Sapphire Rapids 2 MiB, so a 2 MiB block of
// packed weights stays in L2 on one and is streamed from L3 on the other.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <cpuid.h>
#define RNNKIT_HAVE_CPUID 1
#endif

namespace rnnkit {

struct CpuInfo {
  std::string vendor = "unknown";  // "GenuineIntel", "AuthenticAMD", ...
  std::string model_name = "unknown";
  int family = 0, model = 0;
  // Data (or unified) cache sizes in bytes as one core sees them; 0 where not reported. L3 is
  // the whole cache the core shares.
  std::int64_t l1d = 0, l2 = 0, l3 = 0;
  bool avx2 = false, fma = false, avx512f = false, avx512_bf16 = false, amx_bf16 = false;

  // Fallbacks where CPUID says nothing (another architecture, a hypervisor hiding the leaves):
  // the smallest of the current x86 server cores.
  std::int64_t l2_or_default() const { return l2 > 0 ? l2 : std::int64_t(1) << 20; }
};

#ifdef RNNKIT_HAVE_CPUID
namespace detail {

inline void cpuid(unsigned leaf, unsigned subleaf, unsigned r[4]) {
  __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
}

// Deterministic cache parameters (Intel leaf 4, AMD leaf 0x8000001D: the same layout).
inline void read_cache_leaf(unsigned leaf, CpuInfo& info) {
  for (unsigned i = 0; i < 16; ++i) {
    unsigned r[4];
    cpuid(leaf, i, r);
    const unsigned type = r[0] & 0x1F;  // 1 data, 2 instruction, 3 unified, 0 no more
    if (type == 0) break;
    if (type == 2) continue;
    const unsigned level = (r[0] >> 5) & 0x7;
    const std::int64_t ways = ((r[1] >> 22) & 0x3FF) + 1, partitions = ((r[1] >> 12) & 0x3FF) + 1,
                       line = (r[1] & 0xFFF) + 1, sets = std::int64_t(r[2]) + 1;
    const std::int64_t size = ways * partitions * line * sets;
    if (level == 1) info.l1d = size;
    if (level == 2) info.l2 = size;
    if (level == 3) info.l3 = size;
  }
}

inline CpuInfo read_cpu_info() {
  CpuInfo info;
  unsigned r[4];
  cpuid(0, 0, r);
  const unsigned max_leaf = r[0];
  char vendor[13] = {};
  std::memcpy(vendor, &r[1], 4);
  std::memcpy(vendor + 4, &r[3], 4);
  std::memcpy(vendor + 8, &r[2], 4);
  info.vendor = vendor;

  cpuid(1, 0, r);
  const unsigned base_family = (r[0] >> 8) & 0xF, base_model = (r[0] >> 4) & 0xF;
  info.family = int(base_family == 0xF ? base_family + ((r[0] >> 20) & 0xFF) : base_family);
  info.model =
      int(base_family == 0x6 || base_family == 0xF ? base_model + (((r[0] >> 16) & 0xF) << 4) : base_model);
  info.fma = (r[2] >> 12) & 1;
  const bool osxsave = (r[2] >> 27) & 1;
  // The OS must save the wide registers (XCR0) for the features to be usable.
  std::uint64_t xcr0 = 0;
  if (osxsave) {
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (std::uint64_t(hi) << 32) | lo;
  }
  const bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xE6) == 0xE6;
  if (max_leaf >= 7) {
    cpuid(7, 0, r);
    info.avx2 = ymm && ((r[1] >> 5) & 1);
    info.avx512f = zmm && ((r[1] >> 16) & 1);
    info.amx_bf16 = (r[3] >> 22) & 1;
    cpuid(7, 1, r);
    info.avx512_bf16 = info.avx512f && ((r[0] >> 5) & 1);
  }
  info.fma = info.fma && ymm;

  cpuid(0x80000000u, 0, r);
  const unsigned max_ext = r[0];
  if (max_ext >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      cpuid(0x80000002u + i, 0, r);
      std::memcpy(brand + 16 * i, r, 16);
    }
    std::string name(brand);
    const auto first = name.find_first_not_of(' '), last = name.find_last_not_of(' ');
    info.model_name = first == std::string::npos ? "unknown" : name.substr(first, last - first + 1);
  }
  if (info.vendor == "AuthenticAMD" || info.vendor == "HygonGenuine") {
    if (max_ext >= 0x8000001Du) read_cache_leaf(0x8000001Du, info);
  } else if (max_leaf >= 4) {
    read_cache_leaf(4, info);
  }
  return info;
}

}  // namespace detail
#endif

// The processor's description, read on first use.
inline const CpuInfo& cpu_info() {
#ifdef RNNKIT_HAVE_CPUID
  static const CpuInfo info = detail::read_cpu_info();
#else
  static const CpuInfo info;
#endif
  return info;
}

}  // namespace rnnkit
