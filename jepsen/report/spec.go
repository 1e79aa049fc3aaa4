package report

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/workload"
)

// Spec is everything that decides what a run does; results.json keeps it,
// so `seqjepsen repro` can run the same thing again.
type Spec struct {
	Scenario  string        `json:"scenario,omitempty"`
	Workload  string        `json:"workload"`
	Nemesis   string        `json:"nemesis"`
	TimeLimit time.Duration `json:"time_limit_ns"`
	// Quiet is how long the workload keeps running after the final heal,
	// before the final reads.
	Quiet     time.Duration `json:"quiet_ns"`
	Seed      uint64        `json:"seed"`
	Bug       string        `json:"bug,omitempty"`
	Backend   string        `json:"backend"`
	AllocSvrs int           `json:"allocsvrs"`
	// StoreShards is the number of message-store shards (of three
	// replicas each) the messages workload runs on.
	StoreShards int `json:"store_shards,omitempty"`
	// Retention is the store's inbox retention (--retention; 0: off).
	Retention time.Duration `json:"retention_ns,omitempty"`
	Lease     time.Duration `json:"lease_ns"`
	Step      uint64        `json:"step"`
	// Schedule of faults.
	Schedule     nemesis.Schedule      `json:"schedule"`
	CheckTimeout time.Duration         `json:"check_timeout_ns"`
	Alloc        workload.AllocOptions `json:"alloc"`
}

// Args renders the spec as seqjepsen run flags (the ones that differ from
// the defaults are enough, but all are given so the command stands alone).
func (s Spec) Args(out string) []string {
	a := []string{"seqjepsen", "run"}
	if s.Scenario != "" {
		a = append(a, "--scenario", s.Scenario)
	}
	a = append(a,
		"--workload", s.Workload,
		"--nemesis", orNone(s.Nemesis),
		"--time-limit", s.TimeLimit.String(),
		"--quiet", s.Quiet.String(),
		"--seed", strconv.FormatUint(s.Seed, 10),
		"--backend", s.Backend,
		"--allocsvrs", strconv.Itoa(s.AllocSvrs),
		"--store-shards", strconv.Itoa(max(s.StoreShards, 1)),
		"--lease", s.Lease.String(),
		"--step", strconv.FormatUint(s.Step, 10),
		"--fault-interval", durRange(s.Schedule.Interval),
		"--fault-hold", durRange(s.Schedule.Hold),
		"--check-timeout", s.CheckTimeout.String(),
	)
	if s.Bug != "" {
		a = append(a, "--bug", s.Bug)
	}
	if s.Retention > 0 {
		a = append(a, "--retention", s.Retention.String())
	}
	if s.Alloc.Rate > 0 {
		a = append(a, "--rate", strconv.FormatFloat(s.Alloc.Rate, 'f', -1, 64))
	}
	return append(a, "--out", out)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func durRange(r [2]time.Duration) string { return r[0].String() + "-" + r[1].String() }

// ParseRange parses "3s-10s".
func ParseRange(s string) ([2]time.Duration, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return [2]time.Duration{}, fmt.Errorf("%q: want a range like 3s-10s", s)
	}
	a, err := time.ParseDuration(lo)
	if err != nil {
		return [2]time.Duration{}, fmt.Errorf("%q: want a range like 3s-10s of positive durations (the lower bound %q: %v)", s, lo, err)
	}
	b, err := time.ParseDuration(hi)
	if err != nil {
		return [2]time.Duration{}, fmt.Errorf("%q: want a range like 3s-10s of positive durations (the upper bound %q: %v)", s, hi, err)
	}
	if b < a {
		return [2]time.Duration{}, fmt.Errorf("%q: the upper bound is below the lower", s)
	}
	return [2]time.Duration{a, b}, nil
}

// ShellQuote joins args into one line a shell runs as given.
func ShellQuote(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
			b.WriteString(a)
			continue
		}
		b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
	}
	return b.String()
}
