// Package workload generates client traffic against a cluster under test,
// records every operation on the run's clock, and judges the history with
// the checkers of the guarantees it exercises.
package workload

import (
	"context"
	"fmt"
	"time"

	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/nemesis"
)

// Env is what a workload runs against.
type Env struct {
	Cluster *cluster.Cluster
	// Origin is the run's time zero; every recorded time is since Origin.
	Origin time.Time
	Seed   uint64
	Logf   func(format string, args ...any)
}

// Now reads the run's clock.
func (e *Env) Now() time.Duration { return time.Since(e.Origin) }

// Sample is one operation reduced to what throughput and latency plots
// need.
type Sample struct {
	Start, End time.Duration
	OK         bool
}

// Gap is the longest stretch without a successful operation on one
// continuously used key, overlapping one fault: how long that fault made
// the key unavailable.
type Gap struct {
	Fault    string        `json:"fault"`
	FaultIdx int           `json:"fault_index"`
	Key      uint64        `json:"key"`
	From     time.Duration `json:"from_ns"`
	To       time.Duration `json:"to_ns"`
}

// Artifact is a file a workload wrote into the run directory.
type Artifact struct {
	Name string `json:"name"`
	Path string `json:"path"` // relative to the run directory
	Note string `json:"note,omitempty"`
}

// CheckOptions bound the checkers.
type CheckOptions struct {
	// Timeout bounds each expensive checker (linearizability); past it
	// the verdict is unknown.
	Timeout time.Duration
}

// Workload is one kind of traffic with its checkers. The runner calls
// Start, then Run until the time limit and quiet period end, then Final
// (after the final heal), then Check and Artifacts, then Close.
type Workload interface {
	Name() string
	Start(ctx context.Context, env *Env) error
	// Run issues operations until ctx ends.
	Run(ctx context.Context) error
	// Final issues the final reads, once the cluster has healed.
	Final(ctx context.Context) error
	// Progress counts operations so far (for the live progress line).
	Progress() (ok, failed uint64)
	// Counts breaks the history down for the report.
	Counts() map[string]uint64
	Check(ctx context.Context, opt CheckOptions) []checker.Result
	Samples() []Sample
	// Unavailability measures, per fault, the longest gap on keys the
	// workload used continuously.
	Unavailability(faults []nemesis.Fault) []Gap
	// Artifacts writes the history and any visualization into dir.
	Artifacts(ctx context.Context, dir string, faults []nemesis.Fault, results []checker.Result) ([]Artifact, error)
	Close() error
}

// Names lists the workloads --workload accepts.
var Names = []string{"alloc", "messages", "all"}

// New returns the workloads a --workload value names.
func New(name string, alloc AllocOptions) (ws []Workload, missing []string, err error) {
	switch name {
	case "alloc":
		return []Workload{NewAlloc(alloc)}, nil, nil
	case "messages":
		return []Workload{NewMessages(MessagesOptions{})}, nil, nil
	case "all":
		return []Workload{NewAlloc(alloc), NewMessages(MessagesOptions{})}, nil, nil
	}
	return nil, nil, fmt.Errorf("unknown workload %q; use alloc, messages or all", name)
}

// NeedsStore reports whether any of ws drives the message store.
func NeedsStore(ws []Workload) bool {
	for _, w := range ws {
		if w.Name() == "messages" {
			return true
		}
	}
	return false
}
