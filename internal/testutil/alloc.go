package testutil

import "runtime"

// Allocation is what a function allocated on the heap.
type Allocation struct {
	Objects uint64 // heap allocations (mallocs)
	Bytes   uint64 // bytes allocated, freed or not
}

// Allocated runs f once and returns what the process allocated meanwhile.
// The counters are the process's: call it from a test that does not run in
// parallel with others (no t.Parallel in it or its parent), whose own
// goroutines are quiet, and compare with a margin. Unlike time, these counts
// do not change with the machine's load, which is why a test that must
// prove "bounded" or "linear" counts them. testing.AllocsPerRun counts
// objects alone; this also counts bytes, which tells a 50 MB parse from a
// refusal.
func Allocated(f func()) Allocation {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return Allocation{Objects: after.Mallocs - before.Mallocs, Bytes: after.TotalAlloc - before.TotalAlloc}
}
