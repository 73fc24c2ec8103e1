/* Hash-map peers of pskv-bench dram --peers (peers_maps.h): what a trainer
 * would hand-write instead of an embedding store. absl::flat_hash_map and
 * boost::unordered_flat_map map a key to its slot in the peer's own slab of
 * rows (DIM weights + DIM Adagrad state, as the flat array of
 * workload_dram.c), each driven by
 *   - a plain loop: find, then copy the weights (pull) or step the row
 *     (push), key after key;
 *   - a software-pipelined loop, the best a hand-written loop does: absl
 *     prefetches key i+2D's control bytes and slot (map.prefetch), finds
 *     key i+D and prefetches its row, then uses row i; boost 1.81 has no
 *     prefetch and no public bucket interface, so its loop has two stages:
 *     find key i+D and prefetch its row, use row i.
 * Push sums the gradients of repeated keys first (bench_sum_batch), as pskv
 * does, and steps each distinct row once with the same kernel as the flat
 * loops (bench_adagrad). The maps' tables and the slabs sit on huge pages,
 * as pskv's shards and the flat arrays do: the peers pay no TLB misses the
 * others are spared.
 * SPDX-License-Identifier: BSD-2-Clause */
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <utility>

#include <absl/container/flat_hash_map.h>
#include <boost/unordered/unordered_flat_map.hpp>

#include "peers_maps.h"

namespace {

constexpr size_t kHuge = size_t{2} << 20;

size_t huge_round(size_t bytes) { return (bytes + kHuge - 1) / kHuge * kHuge; }

/* Blocks of 2 MiB and more from mmap, advised as huge pages; smaller ones
 * from malloc. */
template <class T> struct huge_alloc {
    using value_type = T;
    huge_alloc() = default;
    template <class U> huge_alloc(const huge_alloc<U> &) noexcept {}
    T *allocate(size_t n)
    {
        size_t bytes = n * sizeof(T);
        void *p;
        if (bytes < kHuge) {
            p = std::malloc(bytes);
            if (p == nullptr)
                throw std::bad_alloc();
        } else {
            p = mmap(nullptr, huge_round(bytes), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                throw std::bad_alloc();
            madvise(p, huge_round(bytes), MADV_HUGEPAGE);
        }
        return static_cast<T *>(p);
    }
    void deallocate(T *p, size_t n) noexcept
    {
        size_t bytes = n * sizeof(T);
        if (bytes < kHuge)
            std::free(p);
        else
            munmap(p, huge_round(bytes));
    }
};
template <class T, class U> bool operator==(const huge_alloc<T> &, const huge_alloc<U> &)
{
    return true;
}
template <class T, class U> bool operator!=(const huge_alloc<T> &, const huge_alloc<U> &)
{
    return false;
}

/* Each library's default hasher for the key: what a user gets. */
using entry_alloc = huge_alloc<std::pair<const uint64_t, uint32_t>>;
using absl_map = absl::flat_hash_map<uint64_t, uint32_t, absl::Hash<uint64_t>,
                                     std::equal_to<uint64_t>, entry_alloc>;
using boost_map = boost::unordered_flat_map<uint64_t, uint32_t, boost::hash<uint64_t>,
                                            std::equal_to<uint64_t>, entry_alloc>;

/* Keys in flight between a find and the use of its row. A row is 4 (pull)
 * or 8 (push) lines: 8 rows ahead keep the core's line-fill buffers busy;
 * 4 and 16 were no better in short runs on the 2-core VM. */
constexpr size_t kAhead = 8;
constexpr size_t kRing = 2 * kAhead; /* a power of two above kAhead */

/* absl's table can prefetch a key's probe start; boost 1.81's cannot. */
template <class Map> struct can_prefetch : std::false_type {};
template <> struct can_prefetch<absl_map> : std::true_type {};

template <class Map> void prefetch_key(const Map &map, uint64_t key)
{
    if constexpr (can_prefetch<Map>::value)
        map.prefetch(key);
    else
        (void)map, (void)key;
}

} // namespace

/* What the C side holds: one peer, its map and its rows. */
struct bench_map {
    virtual ~bench_map() = default;
    virtual int pull(const uint64_t *keys, size_t n, float *out) const = 0;
    virtual int push(const uint64_t *keys, size_t n, const float *grads, bench_sum *sum) = 0;
};

namespace {

template <class Map, bool Pipelined> struct map_peer final : bench_map {
    Map map;
    float *rows = nullptr;
    size_t slab_bytes = 0;

    explicit map_peer(uint64_t nkeys)
    {
        slab_bytes = huge_round(static_cast<size_t>(nkeys) * ROW_FLOATS * sizeof(float));
        void *p = mmap(nullptr, slab_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED)
            throw std::bad_alloc();
        madvise(p, slab_bytes, MADV_HUGEPAGE);
        std::memset(p, 0, slab_bytes); /* touched now, not in a measured loop */
        rows = static_cast<float *>(p);
        map.reserve(static_cast<size_t>(nkeys));
        for (uint64_t r = 0; r < nkeys; r++)
            map.emplace(r * 0x9e3779b97f4a7c15ull, static_cast<uint32_t>(r)); /* bench_scramble */
    }
    ~map_peer() override { munmap(rows, slab_bytes); }

    /* n items, item i being key_at(i): use(i, row) for each, in order. */
    template <bool Write, class KeyAt, class Use> int each(size_t n, KeyAt key_at, Use use) const
    {
        if constexpr (!Pipelined) {
            for (size_t i = 0; i < n; i++) {
                auto it = map.find(key_at(i));
                if (it == map.end())
                    return -1;
                use(i, rows + static_cast<size_t>(it->second) * ROW_FLOATS);
            }
        } else {
            const int lines = (Write ? ROW_FLOATS : DIM) * static_cast<int>(sizeof(float)) / 64;
            float *ring[kRing];
            auto fetch = [&](size_t j) {
                auto it = map.find(key_at(j));
                if (it == map.end())
                    return false;
                float *row = rows + static_cast<size_t>(it->second) * ROW_FLOATS;
                for (int l = 0; l < lines; l++)
                    __builtin_prefetch(reinterpret_cast<const char *>(row) + 64 * l, Write, 3);
                ring[j % kRing] = row;
                return true;
            };
            if constexpr (can_prefetch<Map>::value)
                for (size_t j = 0; j < n && j < 2 * kAhead; j++)
                    prefetch_key(map, key_at(j));
            for (size_t j = 0; j < n && j < kAhead; j++)
                if (!fetch(j))
                    return -1;
            for (size_t i = 0; i < n; i++) {
                if (can_prefetch<Map>::value && i + 2 * kAhead < n)
                    prefetch_key(map, key_at(i + 2 * kAhead));
                if (i + kAhead < n && !fetch(i + kAhead))
                    return -1;
                use(i, ring[i % kRing]);
            }
        }
        return 0;
    }

    int pull(const uint64_t *keys, size_t n, float *out) const override
    {
        return each<false>(
            n, [keys](size_t i) { return keys[i]; },
            [out](size_t i, const float *row) {
                std::memcpy(out + i * DIM, row, DIM * sizeof(float));
            });
    }

    int push(const uint64_t *keys, size_t n, const float *grads, bench_sum *sum) override
    {
        bench_sum_batch(sum, keys, n, grads);
        const uint32_t *first = sum->first;
        const float *const *grad = sum->grad;
        return each<true>(
            sum->m, [keys, first](size_t d) { return keys[first[d]]; },
            [grad](size_t d, float *row) { bench_adagrad(row, row + DIM, grad[d]); });
    }
};

struct peer_kind {
    const char *name;
    bench_map *(*create)(uint64_t nkeys);
};

template <class Peer> bench_map *create(uint64_t nkeys) { return new Peer(nkeys); }

const peer_kind kinds[] = {
    {"absl plain", create<map_peer<absl_map, false>>},
    {"absl pipelined", create<map_peer<absl_map, true>>},
    {"boost plain", create<map_peer<boost_map, false>>},
    {"boost pipelined", create<map_peer<boost_map, true>>},
};

} // namespace

extern "C" {

int bench_maps_count(void) { return static_cast<int>(sizeof kinds / sizeof kinds[0]); }

const char *bench_maps_name(int i) { return kinds[i].name; }

bench_map *bench_map_create(int i, uint64_t nkeys)
{
    try {
        return kinds[i].create(nkeys);
    } catch (const std::bad_alloc &) {
        return nullptr;
    }
}

void bench_map_free(bench_map *m) { delete m; }

int bench_map_pull(const bench_map *m, const uint64_t *keys, size_t n, float *out)
{
    return m->pull(keys, n, out);
}

int bench_map_push(bench_map *m, const uint64_t *keys, size_t n, const float *grads,
                   bench_sum *sum)
{
    return m->push(keys, n, grads, sum);
}

} // extern "C"
