// Package maxprocs gives seqd's processes at least a few Ps on small
// machines.
//
// Every store and arbiter replica fsyncs its Raft log for each entry. A
// goroutine in fdatasync keeps its P until the runtime hands the P to
// another thread, so with only as many Ps as a small machine has cores (2),
// the rest of the process often waits behind a disk flush. On the 2-core
// development machine, `seqbench send` (the whole cluster in one process)
// acknowledged about 1.1x as many messages with 4 Ps as with 2, in every
// one of five alternating pairs (docs/benchmarks.md).
package maxprocs

import (
	"os"
	"runtime"
)

// Min is the fewest Ps Raise leaves a process with.
const Min = 4

// Raise sets GOMAXPROCS to Min if it is lower, unless the GOMAXPROCS
// environment variable chose it. It returns the value in force.
func Raise() int {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < Min {
		runtime.GOMAXPROCS(Min)
	}
	return runtime.GOMAXPROCS(0)
}
