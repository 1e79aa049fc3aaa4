package main

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/seqd/seqd/allocsvr"
	"github.com/seqd/seqd/internal/bench"
	"github.com/seqd/seqd/internal/cliflag"
	"github.com/seqd/seqd/store"
)

// Bounds on seqbench's flags. Each keeps a run from an input it could
// only crash on (out of memory, an overflow) or fail every operation
// with; all are checked before anything starts.
const (
	// maxConcurrency caps workers per run: each has a goroutine and a
	// 35 KiB latency histogram (Redis systems also a pooled connection),
	// so 10,000 workers take about 350 MiB before the first call.
	maxConcurrency = 10_000
	// maxBatch is an AllocSvr's default NextBatch limit.
	maxBatch = allocsvr.DefaultMaxBatch
	// maxPreload caps the events sync loads and the messages disk sends.
	maxPreload = 1_000_000_000
	// maxSyncUsers caps sync's --users: it keeps 8 bytes per inbox.
	maxSyncUsers = 1 << 24
	// minRate and maxRate bound a positive --rate: below minRate a
	// worker's pacing interval no longer fits a time.Duration.
	minRate, maxRate = 0.001, 1e9
)

// parseFlags parses args into fs (cliflag.Parse) and runs check, then the
// checks every command shares: --addr holds host:port addresses, and a
// flag whose usage begins "with --X:" is not given without --X. Every
// failure is a *cliflag.UsageError, except -h's flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string, check func() error) error {
	if err := cliflag.Parse(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	err := check()
	if err == nil && set["addr"] {
		err = checkAddrs(fs.Lookup("addr").Value.String())
	}
	fs.Visit(func(f *flag.Flag) {
		if err != nil {
			return
		}
		if dep, ok := strings.CutPrefix(f.Usage, "with --"); ok {
			if dep, _, ok = strings.Cut(dep, ":"); ok && !set[dep] {
				err = fmt.Errorf("--%s is for use with --%s, which is not given", f.Name, dep)
			}
		}
	})
	if err != nil {
		return &cliflag.UsageError{Err: err}
	}
	return nil
}

// checkAddrs checks --addr: comma-separated host:port, each port 1..65535
// (empty: the in-process cluster).
func checkAddrs(list string) error {
	for _, a := range cliflag.SplitList(list) {
		if !cliflag.HostPort(a) {
			return fmt.Errorf("--addr %q is not host:port with a port 1..65535 (several: comma-separated)", a)
		}
	}
	return nil
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func checkConcurrency(name string, n int) error {
	if n < 1 || n > maxConcurrency {
		return fmt.Errorf("%s %d: must be at least 1 and at most %d", name, n, maxConcurrency)
	}
	return nil
}

func checkBodyBytes(n int) error {
	// A body over the store's limit fails every send.
	if limit := store.DefaultLimits.MaxBody; n < 1 || n > limit {
		return fmt.Errorf("--body-bytes %d: must be 1..%d (the store's 64 KiB body limit)", n, limit)
	}
	return nil
}

// maxRunTime bounds --duration and --warmup: a week is a soak test; more is
// a typo (the progress line and the report's figures stop making sense).
const maxRunTime = 7 * 24 * time.Hour

// checkTimes checks a measured duration and its warm-up.
func checkTimes(duration, warmup time.Duration) error {
	switch {
	case duration <= 0:
		return fmt.Errorf("--duration %v: must be positive", duration)
	case duration > maxRunTime:
		return fmt.Errorf("--duration %v: must be at most %v", duration, maxRunTime)
	case warmup < 0:
		return fmt.Errorf("--warmup %v: must be 0 (none) or positive", warmup)
	case warmup > maxRunTime:
		return fmt.Errorf("--warmup %v: must be at most %v", warmup, maxRunTime)
	}
	return nil
}

func checkRate(rate float64) error {
	if rate != 0 && !(rate >= minRate && rate <= maxRate) { // NaN fails both
		return fmt.Errorf("--rate %v: must be 0 (as fast as possible) or %g..%g per second", rate, minRate, maxRate)
	}
	return nil
}

// checkJSON checks that the --json file can be written, so a run never
// ends by losing its results; "" means no file.
func checkJSON(path string) error {
	if path == "" {
		return nil
	}
	return bench.CheckJSONPath(path)
}
