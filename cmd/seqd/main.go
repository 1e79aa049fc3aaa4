// Command seqd runs seqd nodes: `seqd demo` starts a whole cluster in one
// process; `seqd start` runs one real node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/seqd/seqd/internal/cliflag"
	"github.com/seqd/seqd/internal/maxprocs"
)

const usage = `seqd: per-user sequence numbers that never go backwards.

Usage:
  seqd demo  [flags]   a whole cluster in one process on loopback (start here)
  seqd start [flags]   one real node (arbiter, allocsvr, store and/or gateway)
  seqd version

Run "seqd demo -h" or "seqd start -h" for the flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// Signals first, so a Ctrl-C during startup still shuts down cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	maxprocs.Raise()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "demo":
		err = runDemo(ctx, os.Args[2:])
	case "start":
		err = runStart(ctx, os.Args[2:])
	case "version", "--version", "-v":
		fmt.Println("seqd", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "seqd: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	var ue *cliflag.UsageError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		// The flag package printed the usage.
	case errors.As(err, &ue):
		if !ue.Printed {
			fmt.Fprintln(os.Stderr, "seqd:", err)
		}
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "seqd:", err)
		os.Exit(1)
	}
}
