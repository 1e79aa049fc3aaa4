package jepsen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/cluster"
	"github.com/seqd/seqd/jepsen/report"
)

// errAborted ends a run that Options.Abort cut short.
var errAborted = errors.New("interrupted again: aborted")

// abortStartWait is how long an abort waits for a cluster that is still
// starting (its context is cancelled, so it soon gives up and kills what
// it started) before it reports without it; its nodes then die with the
// harness (PR_SET_PDEATHSIG).
const abortStartWait = 3 * time.Second

// isAborted says whether Options.Abort cut the run short.
func (r *run) isAborted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.aborted
}

// makeOut creates the run directory and its bin/, unless the run was
// aborted first.
func (r *run) makeOut() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.aborted {
		return errAborted
	}
	if err := MakeOut(r.o.Out); err != nil {
		return err
	}
	r.outMade = true
	return os.Mkdir(filepath.Join(r.o.Out, "bin"), 0o755)
}

// startCluster starts the cluster, unless the run was aborted first, and
// makes it known to an abort. One aborted while it started is closed.
func (r *run) startCluster(ctx context.Context, opts cluster.Options) (*cluster.Cluster, error) {
	r.mu.Lock()
	if r.aborted {
		r.mu.Unlock()
		return nil, errAborted
	}
	r.starting = true
	r.mu.Unlock()
	defer close(r.started)
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("starting the cluster: %w", err)
	}
	r.mu.Lock()
	r.c = c
	aborted := r.aborted
	r.mu.Unlock()
	if aborted {
		c.Close()
		return nil, errAborted
	}
	return c, nil
}

// abort cuts the run short (Options.Abort): it kills every node, removes
// the network and bin/, and writes a report of what the run got to, marked
// interrupted, with every check unknown, unless the run had begun writing
// its own report, which then stands. stop cancels the run's context;
// done closes when the run's goroutine ends.
func (r *run) abort(base report.Results, done <-chan struct{}, stop func()) *report.Results {
	r.mu.Lock()
	r.aborted = true
	c, starting := r.c, r.starting
	r.mu.Unlock()
	stop() // after aborted is set: the run, cut short, reports nothing
	r.logf("interrupted again: aborting at once: killing every node; no final heal, final reads or checks")
	if c == nil && starting {
		select {
		case <-r.started:
		case <-time.After(abortStartWait):
			r.logf("the cluster was still starting %v after the abort; its nodes die with the harness", abortStartWait)
		}
		r.mu.Lock()
		c = r.c
		r.mu.Unlock()
	}
	if c != nil {
		if err := c.Close(); err != nil {
			r.logf("stopping the cluster: %v", err)
		}
	}

	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	r.mu.Lock()
	reported, outMade, wls, runner, nenv := r.reported, r.outMade, r.wls, r.runner, r.nenv
	res := base
	res.Skipped, res.Nemeses = slices.Clone(r.res.Skipped), slices.Clone(r.res.Nemeses)
	r.mu.Unlock()
	if reported {
		// The run had finished its checks and written its report; only
		// closing harness.log was left.
		<-done
		return r.res
	}
	if runner != nil {
		now := nenv.Now()
		res.WorkloadEnd = now
		res.Faults = runner.Faults()
		for i, f := range res.Faults {
			if f.End == 0 {
				res.Faults[i].End = now
				res.Faults[i].Err = "not healed: the run was aborted while it lasted, and every node killed"
			}
		}
	}
	if c != nil {
		res.Events = c.Events()
		for _, n := range c.Nodes() {
			res.Logs = append(res.Logs, filepath.Join("logs", n.ID+".log"))
		}
	}
	res.Ops = map[string]uint64{}
	for _, w := range wls {
		ok, failed := w.Progress()
		res.Ops[w.Name()+".ok"], res.Ops[w.Name()+".failed"] = ok, failed
		res.Checkers = append(res.Checkers, checker.Result{Checker: "all", Workload: w.Name(), Verdict: checker.Unknown,
			Summary: "Not checked: a second interrupt aborted the run before its checks."})
	}
	// A wrong answer to a nemesis's admin call is known without the
	// checks: an aborted run still reports it (a pass it does not claim).
	if c, ok := faultAnswersFor(false, res.Faults); ok {
		res.Checkers = append(res.Checkers, c)
	}
	res.HarnessError = "interrupted twice: aborted without the final heal, the final reads or the checks (every node was killed; harness.log and the node logs are kept)"
	r.writeReport(&res, outMade, nil)
	return &res
}
