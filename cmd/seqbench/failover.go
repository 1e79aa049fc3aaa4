package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/seqd/seqd/internal/bench"
	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/router"
)

// maxFailoverRuns caps --runs: each run starts a fresh cluster and takes
// seconds.
const maxFailoverRuns = 1000

// maxFailoverLease caps --lease: a run has one minute to see the
// AllocSvr's keys served again, a lease and more after the fault.
const maxFailoverLease = 20 * time.Second

// failoverResult is one measured fault.
type failoverResult struct {
	Fault string  `json:"fault"`
	Runs  []int64 `json:"runs_ms"`
	// Median of the runs, in milliseconds.
	MedianMs int64  `json:"median_ms"`
	Meaning  string `json:"meaning"`
}

func runFailover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seqbench failover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runs := fs.Int("runs", 3, "measurements per fault")
	lease := fs.Duration("lease", 0, "AllocSvr lease (default: seqd's default, 2s)")
	jsonPath := fs.String("json", "", "write the results as JSON to FILE")
	if err := parseFlags(fs, args, func() error {
		switch {
		case *runs < 1 || *runs > maxFailoverRuns:
			return fmt.Errorf("--runs %d: must be 1..%d", *runs, maxFailoverRuns)
		case *lease < 0 || *lease > maxFailoverLease:
			return fmt.Errorf("--lease %v: must be 0 (seqd's default) .. %v (a run gets one minute)", *lease, maxFailoverLease)
		}
		return checkJSON(*jsonPath)
	}); err != nil {
		return err
	}
	faults := []struct {
		name, meaning string
		measure       func(context.Context, *localcluster.Cluster, *router.Client) (time.Duration, error)
	}{
		{"allocsvr-kill", "from the kill to the first successful Next on a key of the killed AllocSvr", measureAllocKill},
		{"arbiter-leader-kill", "the longest Next across the kill of the arbiter leader", measureLeaderKill},
		{"allocsvr-cut-off", "from cutting an AllocSvr off from the arbiters to the first successful Next on one of its keys at the new owner", measureCutOff},
	}
	var out []failoverResult
	for _, f := range faults {
		r := failoverResult{Fault: f.name, Meaning: f.meaning}
		for i := 0; i < *runs; i++ {
			d, err := oneFailover(ctx, *lease, f.measure)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", f.name, i+1, err)
			}
			r.Runs = append(r.Runs, d.Milliseconds())
			fmt.Fprintf(stderr, "%s run %d: %v\n", f.name, i+1, d.Round(time.Millisecond))
		}
		sorted := slices.Clone(r.Runs)
		slices.Sort(sorted)
		r.MedianMs = sorted[len(sorted)/2]
		out = append(out, r)
	}
	fmt.Fprintf(stdout, "%-22s %10s  %s\n", "fault", "median", "runs (ms)")
	for _, r := range out {
		fmt.Fprintf(stdout, "%-22s %8d ms  %v\n", r.Fault, r.MedianMs, r.Runs)
	}
	leaseText := "2s (default)"
	if *lease > 0 {
		leaseText = lease.String()
	}
	fmt.Fprintf(stdout, "lease %s; each run on a fresh in-process cluster (3 arbiters, 2 AllocSvrs)\n", leaseText)
	if *jsonPath != "" {
		return bench.WriteJSON(*jsonPath, map[string]any{"lease": leaseText, "faults": out})
	}
	return nil
}

// oneFailover runs one measurement on a fresh cluster.
func oneFailover(ctx context.Context, lease time.Duration, measure func(context.Context, *localcluster.Cluster, *router.Client) (time.Duration, error)) (time.Duration, error) {
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, err := localcluster.Start(sctx, localcluster.Options{Lease: lease, GatewayAddr: "-"})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	cl, err := router.New(sctx, router.Config{Addrs: c.ArbiterAddrs()})
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	// keyOf reads ownership from the client's table: take the leader's.
	if err := c.CatchUp(sctx, cl); err != nil {
		return 0, err
	}
	return measure(sctx, c, cl)
}

// keyOf returns a key served by AllocSvr node id.
func keyOf(cl *router.Client, id string) (uint64, error) {
	t := cl.Table()
	for k := uint64(1); k < 1<<40; k += t.SectionSize {
		if t.Slots[(k/t.SectionSize)%uint64(t.NumSlots)].Owner == id {
			return k, nil
		}
	}
	return 0, fmt.Errorf("no key is served by %s", id)
}

// hammer calls Next on key until stop, reporting each success's end time.
func hammer(cl *router.Client, key uint64, stop <-chan struct{}, ok func(start, end time.Time)) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := cl.Next(ctx, key)
			cancel()
			if err == nil {
				ok(start, time.Now())
			}
		}
	}()
	return &wg
}

func measureAllocKill(ctx context.Context, c *localcluster.Cluster, cl *router.Client) (time.Duration, error) {
	key, err := keyOf(cl, c.AllocSvr(0).AllocSvr().ID())
	if err != nil {
		return 0, err
	}
	var mu sync.Mutex
	// killed is when the kill has finished: a call that started before it
	// may still have been answered by the dying node.
	var killed, back time.Time
	stop := make(chan struct{})
	wg := hammer(cl, key, stop, func(start, end time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if !killed.IsZero() && back.IsZero() && start.After(killed) {
			back = end
		}
	})
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(500 * time.Millisecond)
	kill := time.Now()
	c.KillAllocSvr(0)
	mu.Lock()
	killed = time.Now()
	mu.Unlock()
	return waitBack(ctx, &mu, &back, kill)
}

func measureCutOff(ctx context.Context, c *localcluster.Cluster, cl *router.Client) (time.Duration, error) {
	key, err := keyOf(cl, c.AllocSvr(0).AllocSvr().ID())
	if err != nil {
		return 0, err
	}
	var mu sync.Mutex
	var cut, back time.Time
	stop := make(chan struct{})
	// Served again means served by the new owner, so ask it directly.
	other := c.AllocSvr(1).AllocSvr().ID()
	wg := hammer(cl, key, stop, func(start, end time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if !cut.IsZero() && back.IsZero() && start.After(cut) && cl.Table().Slots[(key/cl.Table().SectionSize)%uint64(cl.Table().NumSlots)].Owner == other {
			back = end
		}
	})
	defer func() { close(stop); wg.Wait(); c.HealAllocSvr(0) }()
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	cut = time.Now()
	mu.Unlock()
	c.CutAllocSvr(0)
	return waitBack(ctx, &mu, &back, cut)
}

func waitBack(ctx context.Context, mu *sync.Mutex, back *time.Time, from time.Time) (time.Duration, error) {
	for {
		mu.Lock()
		b := *back
		mu.Unlock()
		if !b.IsZero() {
			return b.Sub(from), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("not served again: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func measureLeaderKill(ctx context.Context, c *localcluster.Cluster, cl *router.Client) (time.Duration, error) {
	keys := []uint64{}
	for _, i := range []int{0, 1} {
		k, err := keyOf(cl, c.AllocSvr(i).AllocSvr().ID())
		if err != nil {
			return 0, err
		}
		keys = append(keys, k)
	}
	var mu sync.Mutex
	var worst time.Duration
	var kill time.Time
	stop := make(chan struct{})
	var wgs []*sync.WaitGroup
	for _, k := range keys {
		wgs = append(wgs, hammer(cl, k, stop, func(start, end time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if !kill.IsZero() && end.After(kill) {
				worst = max(worst, end.Sub(start))
			}
		}))
	}
	time.Sleep(500 * time.Millisecond)
	leader := -1
	for i := range c.Arbiters {
		if n := c.Arbiter(i); n != nil && n.Arbiter().IsLeader() {
			leader = i
		}
	}
	if leader < 0 {
		return 0, fmt.Errorf("no arbiter leader")
	}
	mu.Lock()
	kill = time.Now()
	mu.Unlock()
	c.KillArbiter(leader)
	// Run on across the election and a while after it.
	for c.Leader() == nil {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	time.Sleep(3 * time.Second)
	close(stop)
	for _, wg := range wgs {
		wg.Wait()
	}
	mu.Lock()
	defer mu.Unlock()
	return worst, nil
}
