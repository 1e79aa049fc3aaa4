// Command seqbench loads seqd and compares it, in one run on one machine,
// with what people would use instead: Redis INCR and an etcd CAS counter
// for sequences, a Redis INCR+XADD Lua script for message inboxes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/seqd/seqd/internal/cliflag"
	"github.com/seqd/seqd/internal/maxprocs"
)

const usage = `seqbench: load generator and side-by-side comparisons for seqd.

Usage:
  seqbench alloc         [flags]  closed-loop Next/NextBatch load on one seqd cluster
  seqbench compare       [flags]  the same load on a gRPC no-op, seqd, Redis and etcd
  seqbench send          [flags]  acknowledged message sends, 1:1 or to groups
                                  (with send-to-last-member delivery times)
  seqbench sync          [flags]  events/s read through Sync and Subscribe
  seqbench compare-store [flags]  the 1:1 send load on seqd and on a Redis inbox
                                  (INCR + XADD in one Lua script, appendfsync always)
  seqbench disk          [flags]  on-disk bytes per stored message
  seqbench failover      [flags]  unavailability after an AllocSvr kill, an arbiter
                                  leader kill and an AllocSvr cut off from the arbiters

Without --addr they start an in-process seqd cluster on loopback (the
message commands with one store shard of 3 replicas).
Run "seqbench <command> -h" for the flags.

SEQBENCH_CPUPROFILE=FILE writes a CPU profile of the whole process (load
generator and in-process cluster) to FILE.
`

func main() {
	// Signals first: Ctrl-C stops the run and still cleans up every process
	// and temporary directory seqbench started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The in-process cluster is seqd's nodes in this process.
	maxprocs.Raise()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	stopProfile := func() {}
	if path := os.Getenv("SEQBENCH_CPUPROFILE"); path != "" {
		var err error
		if stopProfile, err = startCPUProfile(path); err != nil {
			fmt.Fprintln(os.Stderr, "seqbench:", err)
			os.Exit(1)
		}
	}
	code := run(ctx)
	stopProfile()
	stop()
	os.Exit(code)
}

func run(ctx context.Context) int {
	var err error
	switch os.Args[1] {
	case "alloc":
		err = runAlloc(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "compare":
		err = runCompare(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "send":
		err = runSend(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "sync":
		err = runSyncBench(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "compare-store":
		err = runCompareStore(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "disk":
		err = runDisk(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "failover":
		err = runFailover(ctx, os.Args[2:], os.Stdout, os.Stderr)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "seqbench: unknown command %q\n\n%s", os.Args[1], usage)
		return 2
	}
	return exitCode(os.Args[1], err, os.Stderr)
}

// exitCode reports command cmd's err and returns the exit code: 0 for
// success or -h, 2 for bad usage (nothing was started), 1 for a run that
// failed.
func exitCode(cmd string, err error, stderr io.Writer) int {
	var ue *cliflag.UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		if !ue.Printed { // the flag package prints its own errors
			fmt.Fprintf(stderr, "seqbench: %v\nRun \"seqbench %s -h\" for the flags.\n", err, cmd)
		}
		return 2
	}
	fmt.Fprintln(stderr, "seqbench:", err)
	return 1
}

func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("SEQBENCH_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("SEQBENCH_CPUPROFILE: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
