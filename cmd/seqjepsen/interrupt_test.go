package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seqd/seqd/jepsen/report"
)

// TestHelperSeqjepsen is seqjepsen itself, as a process of its own that
// the tests below send signals to.
func TestHelperSeqjepsen(t *testing.T) {
	args := os.Getenv("SEQJEPSEN_HELPER_ARGS")
	if args == "" {
		t.Skip("helper process for TestSecondInterruptStillReports")
	}
	var a []string
	if err := json.Unmarshal([]byte(args), &a); err != nil {
		t.Fatal(err)
	}
	os.Exit(run(a, os.Stdout, os.Stderr))
}

// nodesUnder returns the live processes whose command line mentions dir.
func nodesUnder(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("skipping: cannot list processes: %v", err)
	}
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
			continue // dead, not yet reaped
		}
		out = append(out, e.Name()+" "+strings.ReplaceAll(string(b), "\x00", " "))
	}
	return out
}

// A second Ctrl-C while the first one's shutdown runs cuts it short, and
// still kills every node, removes bin/, writes results.json and the page
// marked interrupted, and exits 2 within seconds. Here the seqd nodes
// only sleep, so the run is still waiting for its cluster to serve when
// the two signals come (SIGINT, then SIGTERM: two of one kind sent at
// once may merge into one).
func TestSecondInterruptStillReports(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "go.mod"), "module github.com/seqd/seqd\n")
	writeFile(t, filepath.Join(src, "cmd", "seqd", "main.go"), "package main\n\nimport \"time\"\n\nfunc main() { time.Sleep(time.Hour) }\n")
	out := filepath.Join(t.TempDir(), "run")
	args, _ := json.Marshal([]string{"run", "--backend", "local", "--workload", "alloc", "--nemesis", "kill", "--time-limit", "1m",
		"--seed", "1", "--src", src, "--out", out})
	child := exec.Command(os.Args[0], "-test.run=^TestHelperSeqjepsen$")
	child.Env = append(os.Environ(), "SEQJEPSEN_HELPER_ARGS="+string(args))
	var stderr strings.Builder
	child.Stdout, child.Stderr = &stderr, &stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	defer func() {
		child.Process.Kill()
		<-exited
	}()
	deadline := time.Now().Add(time.Minute)
	for len(nodesUnder(t, out)) < 6 {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("seqjepsen exited before its nodes started (%v):\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes did not start within a minute:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	signalled := time.Now()
	child.Process.Signal(syscall.SIGINT)
	child.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-exited:
		exited <- err
	case <-time.After(abortLimit + 5*time.Second):
		t.Fatalf("seqjepsen had not exited %v after the second interrupt:\n%s", abortLimit+5*time.Second, stderr.String())
	}
	took := time.Since(signalled)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != report.ExitHarness {
		t.Errorf("exit %v, want code 2", err)
	}
	if took > 10*time.Second {
		t.Errorf("took %v to exit after the second interrupt", took)
	}
	if left := nodesUnder(t, out); len(left) > 0 {
		t.Errorf("nodes left running: %v", left)
	}
	if _, err := os.Stat(filepath.Join(out, "bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bin/ is still there (%v)", err)
	}
	res, err := report.Load(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatalf("no results.json: %v\n%s", err, stderr.String())
	}
	if res.ExitCode != report.ExitHarness || !strings.HasPrefix(res.HarnessError, "interrupted") {
		t.Errorf("results.json: exit %d, harness error %q; want 2, marked interrupted", res.ExitCode, res.HarnessError)
	}
	if _, err := os.Stat(filepath.Join(out, "index.html")); err != nil {
		t.Errorf("no page: %v", err)
	}
	t.Logf("exited %v after the signals:\n%s", took.Round(time.Millisecond), stderr.String())
}
