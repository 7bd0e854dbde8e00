// Request-stream driver for DRAMsim3, used by benchmarks/dram_vs_outside.py.
//
// DRAMsim3's own trace front end measures a read's latency from the cycle the controller
// accepted it, and its bandwidth over every simulated cycle; this driver reports each read's
// completion cycle, so both latency (from the cycle the request was offered) and achieved
// bandwidth (over the time to serve the whole stream) are computed as for our model.
//
// Build (DRAMSIM3 is a DRAMsim3 checkout built with cmake, libdramsim3.so at its root):
//   g++ -O2 -std=c++11 -I DRAMSIM3/src -I DRAMSIM3/ext/headers -I DRAMSIM3/ext/fmt/include \
//       -DFMT_HEADER_ONLY=1 benchmarks/dram_vs_outside_dramsim3.cc \
//       -L DRAMSIM3 -Wl,-rpath,DRAMSIM3 -ldramsim3 -o dramsim3_stream
// Run: dramsim3_stream CONFIG.ini TRACE OUTPUT_DIR
//
// TRACE: one request a line, "cycle address R|W", cycles non-decreasing (DRAMsim3 clock
// cycles), addresses unique. Requests are offered in order at their cycle; one the controller
// does not accept is offered again next cycle (and holds back those behind it).
// Output on stdout: "R index done_cycle" for every read (the cycle its data is back),
// "W index accepted_cycle" for every write (writes are posted: DRAMsim3 acknowledges a write
// when its write buffer takes it), then "END cycle" (all reads back, all writes accepted),
// then DRAMsim3's own statistics (its PrintStats: row hits, activates, ...).

#include <cstdint>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <string>
#include <unordered_map>
#include <vector>

#include "memory_system.h"

struct Request {
    uint64_t cycle;
    uint64_t addr;
    bool is_write;
};

int main(int argc, char **argv) {
    if (argc != 4) {
        std::cerr << "usage: " << argv[0] << " CONFIG.ini TRACE OUTPUT_DIR\n";
        return 2;
    }
    std::ifstream in(argv[2]);
    if (!in) {
        std::cerr << argv[2] << ": cannot open the trace\n";
        return 2;
    }
    std::vector<Request> reqs;
    uint64_t cycle, addr;
    std::string op;
    while (in >> cycle >> std::hex >> addr >> std::dec >> op) {
        reqs.push_back({cycle, addr, op == "W"});
    }

    uint64_t clk = 0;
    std::unordered_map<uint64_t, std::deque<size_t>> waiting;  // address -> read indices
    std::vector<uint64_t> done(reqs.size(), 0);
    size_t reads_left = 0;
    for (const auto &r : reqs) reads_left += r.is_write ? 0 : 1;

    auto on_read = [&](uint64_t a) {
        auto it = waiting.find(a);
        if (it == waiting.end() || it->second.empty()) return;
        done[it->second.front()] = clk;
        it->second.pop_front();
        --reads_left;
    };
    auto on_write = [](uint64_t) {};
    dramsim3::MemorySystem mem(argv[1], argv[3], on_read, on_write);

    size_t next = 0;
    const uint64_t limit = (reqs.empty() ? 0 : reqs.back().cycle) + 100000000ULL;
    while ((next < reqs.size() || reads_left > 0) && clk < limit) {
        mem.ClockTick();
        while (next < reqs.size() && reqs[next].cycle <= clk) {
            const Request &r = reqs[next];
            if (!mem.WillAcceptTransaction(r.addr, r.is_write)) break;
            mem.AddTransaction(r.addr, r.is_write);
            if (r.is_write) {
                done[next] = clk;
            } else {
                waiting[r.addr].push_back(next);
            }
            ++next;
        }
        ++clk;
    }
    if (clk >= limit) {
        std::cerr << "the stream did not finish in " << limit << " cycles\n";
        return 1;
    }
    uint64_t end = 0;
    for (size_t i = 0; i < reqs.size(); ++i) {
        std::printf("%c %zu %llu\n", reqs[i].is_write ? 'W' : 'R', i,
                    static_cast<unsigned long long>(done[i]));
        if (done[i] > end) end = done[i];
    }
    std::printf("END %llu\n", static_cast<unsigned long long>(end));
    std::fflush(stdout);
    mem.PrintStats();  // DRAMsim3's own counters, into OUTPUT_DIR (and its stdout)
    return 0;
}
