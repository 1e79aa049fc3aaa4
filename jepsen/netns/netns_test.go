package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The helpers below run as child processes of the test binary, selected by
// SEQJ_NETNS_HELPER, so they can sit inside a namespace or be killed.

func TestHelperProcess(t *testing.T) {
	switch os.Getenv("SEQJ_NETNS_HELPER") {
	case "":
		t.Skip("helper process for the other tests")
	case "listen":
		l, err := net.Listen("tcp", os.Getenv("SEQJ_NETNS_ADDR"))
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(1)
		}
		fmt.Println("LISTENING")
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(0)
			}
			c.Write([]byte("ok"))
			c.Close()
		}
	case "dial":
		c, err := net.DialTimeout("tcp", os.Getenv("SEQJ_NETNS_ADDR"), 500*time.Millisecond)
		if err != nil {
			os.Exit(1)
		}
		c.Close()
		os.Exit(0)
	case "run":
		// A harness run that is about to be killed: network, processes
		// in the namespaces, a partition.
		ctx := context.Background()
		n, err := Setup(ctx)
		if err != nil {
			fmt.Println("SETUP", err)
			os.Exit(1)
		}
		var pids []string
		for _, node := range []string{"a", "b", "c"} {
			if _, err := n.AddNode(ctx, node); err != nil {
				fmt.Println("SETUP", err)
				os.Exit(1)
			}
			argv := Wrap(node, "sleep", "300")
			cmd := exec.Command(argv[0], argv[1:]...)
			// No Pdeathsig: these must outlive the run, as a stuck
			// process would, so Cleanup has to kill them.
			if err := cmd.Start(); err != nil {
				fmt.Println("SETUP", err)
				os.Exit(1)
			}
			pids = append(pids, strconv.Itoa(cmd.Process.Pid))
		}
		if err := n.Block(ctx, map[string][]string{"a": {"b", "c"}}); err != nil {
			fmt.Println("SETUP", err)
			os.Exit(1)
		}
		fmt.Println("READY", strings.Join(pids, ","))
		select {}
	}
}

func requireNetns(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

func helper(mode, addr string, argvPrefix ...string) *exec.Cmd {
	argv := append(argvPrefix, os.Args[0], "-test.run=^TestHelperProcess$")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "SEQJ_NETNS_HELPER="+mode, "SEQJ_NETNS_ADDR="+addr)
	return cmd
}

func reachable(from, addr string) bool {
	var prefix []string
	if from != "" {
		prefix = Wrap(from)
	}
	return helper("dial", addr, prefix...).Run() == nil
}

func assertClean(t *testing.T) {
	t.Helper()
	left, err := Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie (state Z) has exited; it only waits for its parent.
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

func TestNormalRunLeavesNothing(t *testing.T) {
	requireNetns(t)
	ctx := context.Background()
	n, err := Setup(ctx)
	if errors.Is(err, ErrBusy) {
		t.Skip("skipping: a seqjepsen run is using the network")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ips := map[string]string{}
	for _, node := range []string{"a", "b", "c"} {
		if ips[node], err = n.AddNode(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	addr := ips["a"] + ":7000"
	srv := helper("listen", addr, Wrap("a")...)
	out, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); !strings.Contains(line, "LISTENING") {
		t.Fatalf("listener in namespace a: %q", line)
	}
	if !reachable("", addr) || !reachable("b", addr) || !reachable("c", addr) {
		t.Fatal("a is not reachable before any partition")
	}
	if err := n.Block(ctx, map[string][]string{"b": {"a"}}); err != nil {
		t.Fatal(err)
	}
	if reachable("b", addr) {
		t.Fatal("b still reaches a across the cut")
	}
	if !reachable("", addr) || !reachable("c", addr) {
		t.Fatal("the cut between a and b also cut the host or c")
	}
	if err := n.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	if !reachable("b", addr) {
		t.Fatal("b does not reach a after the heal")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Wait() // Close killed it
	assertClean(t)
}

func TestKilledRunLeavesNothingAfterCleanup(t *testing.T) {
	requireNetns(t)
	child := helper("run", "")
	out, _ := child.StdoutPipe()
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.Contains(line, ErrBusy.Error()) {
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
	// Kill the run mid-way, as kill -9 or a crash would.
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	left, err := Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) == 0 {
		t.Fatal("a killed run left nothing, so this test cannot tell whether Cleanup works")
	}
	removed, err := Cleanup()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cleanup removed %d things: %v", len(removed), removed)
	assertClean(t)
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("process %d from the killed run is still alive", pid)
		}
	}
}

// An abort after this process's run let go of the network must not
// remove another run's: Abort then refuses while another holds the lock.
func TestAbortLeavesAnotherRunsNetwork(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	lock, err := takeLock() // another run, as far as Abort can tell
	if errors.Is(err, ErrBusy) {
		t.Skip("skipping: a seqjepsen run is using the network")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if removed, err := Abort(); !errors.Is(err, ErrBusy) || len(removed) > 0 {
		t.Fatalf("Abort while another run holds the lock: removed %v, error %v; want ErrBusy and nothing removed", removed, err)
	}
}

// CheckFree refuses while a live run holds the lock, and does not keep it.
func TestCheckFree(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	lock, err := takeLock() // another run
	if errors.Is(err, ErrBusy) {
		t.Skip("skipping: a seqjepsen run is using the network")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckFree(); !errors.Is(err, ErrBusy) {
		t.Fatalf("CheckFree while another run holds the lock: %v, want ErrBusy", err)
	}
	lock.Close()
	if err := CheckFree(); err != nil {
		t.Fatalf("CheckFree with the lock free: %v", err)
	}
	if err := CheckFree(); err != nil {
		t.Fatalf("CheckFree kept the lock: %v", err)
	}
}
