package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/jepsen/netns"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// TestMain removes the binary the tests built, once every test (and every
// -count repetition) is done with it.
func TestMain(m *testing.M) {
	code := m.Run()
	if binary != "" {
		os.RemoveAll(filepath.Dir(binary))
	}
	os.Exit(code)
}

func seqdBinary(t testing.TB) string {
	buildOnce.Do(func() {
		src, err := ModuleRoot(".")
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "seqj-cluster-test-")
		if err != nil {
			buildErr = err
			return
		}
		binary, buildErr = Build(context.Background(), src, dir, "")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func requireNetns(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: starts a real cluster; not with -short")
	}
	if err := netns.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

// TestHelperProcess is a harness run that the killed-run test kills.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("SEQJ_CLUSTER_HELPER") != "run" {
		t.Skip("helper process for TestKilledRunLeavesNothing")
	}
	dir, _ := os.MkdirTemp("", "seqj-cluster-helper-")
	c, err := Start(context.Background(), Options{Dir: dir, Backend: BackendNetns, Binary: seqdBinary(t)})
	if err != nil {
		fmt.Println("START", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
	if err := c.Partition(context.Background(), map[string][]string{"alloc1": {"arb1", "arb2", "arb3"}}); err != nil {
		fmt.Println("START", err)
		os.Exit(1)
	}
	var pids []string
	for _, n := range c.Nodes() {
		pids = append(pids, strconv.Itoa(n.PID()))
	}
	fmt.Println("READY", strings.Join(pids, ","))
	select {}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

func waitDead(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("seqd process %d outlived the run", pid)
		}
	}
}

func assertClean(t *testing.T) {
	t.Helper()
	left, err := netns.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func TestNormalRunLeavesNothing(t *testing.T) {
	requireNetns(t)
	c, err := Start(context.Background(), Options{Dir: t.TempDir(), Backend: BackendNetns, Binary: seqdBinary(t)})
	if errors.Is(err, netns.ErrBusy) {
		t.Skip("skipping: a seqjepsen run is using the network")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Partition(context.Background(), map[string][]string{"alloc1": {"arb1", "arb2", "arb3"}}); err != nil {
		c.Close()
		t.Fatal(err)
	}
	var pids []int
	for _, n := range c.Nodes() {
		pids = append(pids, n.PID())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitDead(t, pids)
	assertClean(t)
	if ev := c.Events(); len(ev) > 0 {
		t.Errorf("nodes exited by themselves: %v", ev)
	}
}

func TestKilledRunLeavesNothing(t *testing.T) {
	requireNetns(t)
	seqdBinary(t) // build once here, so the child finds it in the build cache
	child := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	child.Env = append(os.Environ(), "SEQJ_CLUSTER_HELPER=run")
	out, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		lines <- l
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(3 * time.Minute):
		child.Process.Kill()
		child.Wait()
		t.Fatal("the child run did not start its cluster within 3 minutes")
	}
	if strings.Contains(line, netns.ErrBusy.Error()) {
		child.Process.Kill()
		child.Wait()
		t.Skip("skipping: a seqjepsen run is using the network")
	}
	if !strings.HasPrefix(line, "READY ") {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child: %q", line)
	}
	var pids []int
	for _, p := range strings.Split(strings.TrimSpace(strings.TrimPrefix(line, "READY ")), ",") {
		pid, _ := strconv.Atoi(p)
		pids = append(pids, pid)
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	// The nodes die with the harness (Pdeathsig), before any cleanup.
	waitDead(t, pids)
	left, err := netns.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) == 0 {
		t.Fatal("the killed run left nothing, so this test cannot tell whether Cleanup works")
	}
	if _, err := netns.Cleanup(); err != nil {
		t.Fatal(err)
	}
	assertClean(t)
}

// sleepers is a cluster of n local "nodes" that only sleep: enough to
// test process handling without building seqd.
func sleepers(t *testing.T, n int) *Cluster {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skipf("skipping: no sleep binary to run as a node: %v", err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{opts: Options{Dir: dir, Binary: sleep, Logf: t.Logf}, be: localBackend{host: "127.0.0.1"},
		byID: map[string]*Node{}, pool: grpcconn.NewPool(), origin: time.Now()}
	for i := range n {
		node := &Node{ID: fmt.Sprintf("n%d", i), Role: Arbiter, c: c, args: []string{"3600"}}
		c.nodes = append(c.nodes, node)
		c.byID[node.ID] = node
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Close may come from an aborting run while the run itself still heals
// (restarts nodes) or closes too: every call returns with every node
// dead, and no node starts afterwards.
func TestCloseRacingWithRestartsLeavesNoNode(t *testing.T) {
	c := sleepers(t, 4)
	for _, n := range c.Nodes() {
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
	}
	var pids []int
	for _, n := range c.Nodes() {
		pids = append(pids, n.PID())
	}
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // a heal restarting whatever is down
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, n := range c.Nodes() {
				if n.Start() == nil {
					mu.Lock()
					pids = append(pids, n.PID())
					mu.Unlock()
				}
				n.Kill()
			}
		}
	})
	restarted := func() bool { mu.Lock(); defer mu.Unlock(); return len(pids) > 8 }
	for deadline := time.Now().Add(10 * time.Second); !restarted() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	var closers sync.WaitGroup
	for range 2 {
		closers.Go(func() {
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			for _, n := range c.Nodes() {
				if n.Running() {
					t.Errorf("%s runs after Close returned", n.ID)
				}
			}
		})
	}
	closers.Wait()
	close(stop)
	wg.Wait()
	for _, n := range c.Nodes() {
		if err := n.Start(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: Start after Close gave %v, want ErrClosed", n.ID, err)
		}
		if n.Running() {
			t.Errorf("%s started after Close", n.ID)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	waitDead(t, slices.DeleteFunc(pids, func(p int) bool { return p == 0 }))
}

func TestMetricValue(t *testing.T) {
	text := `# HELP seqd_store_format The store format this replica's build applies.
# TYPE seqd_store_format gauge
seqd_store_format_older 3
seqd_store_format{shard="s1"} 7
seqd_store_halted 0
seqd_store_outbox_items{shard="s2",x="}"} NaN
`
	for _, c := range []struct {
		name, want string
		ok         bool
	}{
		{"seqd_store_format", "7", true},         // labelled (store metrics carry their shard)
		{"seqd_store_halted", "0", true},         // unlabelled (builds before the shard label)
		{"seqd_store_outbox_items", "NaN", true}, // a brace inside a label value
		{"seqd_store", "", false},                // a prefix of names is no name
		{"seqd_store_subscribers", "", false},
	} {
		v, ok, err := metricValue(strings.NewReader(text), c.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := strconv.FormatFloat(v, 'g', -1, 64); ok != c.ok || ok && got != c.want {
			t.Errorf("metricValue(%s) = %s, %v; want %q, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}
