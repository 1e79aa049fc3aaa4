// Package netns builds the chaos harness's private network: one Linux
// network namespace per node, joined by a bridge the harness owns, and
// iptables rules inside the namespaces that cut links between nodes.
//
// Everything it creates carries the prefix "seqj" (namespaces seqj-<node>,
// the bridge seqj0, host-side veths seqjv-<node>, and one host FORWARD rule
// commented "seqjepsen"), so Cleanup can remove the leftovers of a run that
// was killed. Traffic only ever flows between 10.77.0.0/24 addresses on
// that bridge.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Names and addresses the harness owns.
const (
	Prefix    = "seqj"
	Bridge    = Prefix + "0"
	nsPrefix  = Prefix + "-"
	vethPref  = Prefix + "v-"
	RuleTag   = "seqjepsen"
	Subnet    = "10.77.0"
	HostIP    = Subnet + ".1"
	maskBits  = "24"
	firstNode = 10
	lockPath  = "/run/seqjepsen.lock"
)

// Available reports why the backend cannot run here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("netns backend needs root (it creates namespaces, a bridge and iptables rules); run as root or use --backend local")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("netns backend needs %s on PATH (install iproute2 and iptables) or use --backend local", tool)
		}
	}
	return nil
}

// Net is the bridge and the namespaces of one run.
type Net struct {
	mu    sync.Mutex
	lock  *os.File
	nodes map[string]string // node -> ip
	order []string
	ruled bool
}

// NamespaceName returns the namespace of node.
func NamespaceName(node string) string { return nsPrefix + node }

func vethName(node string) string {
	n := vethPref + node
	if len(n) > 15 { // IFNAMSIZ-1
		n = n[:15]
	}
	return n
}

// Setup takes the host-wide lock (one netns run at a time), removes
// leftovers of earlier runs, and creates the bridge with the host's
// address on it.
func Setup(ctx context.Context) (_ *Net, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	lock, err := takeLock()
	if err != nil {
		return nil, err
	}
	held.Store(true)
	n := &Net{lock: lock, nodes: map[string]string{}}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if _, err := cleanup(); err != nil {
		return nil, fmt.Errorf("netns: removing leftovers of an earlier run: %w", err)
	}
	steps := [][]string{
		{"ip", "link", "add", Bridge, "type", "bridge"},
		{"ip", "addr", "add", HostIP + "/" + maskBits, "dev", Bridge},
		{"ip", "link", "set", Bridge, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return nil, err
		}
	}
	// With br_netfilter loaded, bridged frames pass the host's FORWARD
	// chain, whose policy may be DROP (Docker sets it so). Let ours through.
	if err := run(ctx, forwardRule("-I")...); err != nil {
		return nil, err
	}
	n.ruled = true
	return n, nil
}

func forwardRule(op string) []string {
	r := []string{"iptables", "-w", op, "FORWARD"}
	if op == "-I" {
		r = append(r, "1")
	}
	return append(r, "-i", Bridge, "-o", Bridge, "-m", "comment", "--comment", RuleTag, "-j", "ACCEPT")
}

// AddNode creates node's namespace, wired to the bridge, and returns its
// address.
func (n *Net) AddNode(ctx context.Context, node string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ip, ok := n.nodes[node]; ok {
		return ip, nil
	}
	ip := fmt.Sprintf("%s.%d", Subnet, firstNode+len(n.order))
	ns, veth, peer := NamespaceName(node), vethName(node), "seqjp"+strconv.Itoa(len(n.order))
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", ns},
		{"ip", "-n", ns, "link", "set", peer, "name", "eth0"},
		{"ip", "-n", ns, "addr", "add", ip + "/" + maskBits, "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "link", "set", veth, "master", Bridge},
		{"ip", "link", "set", veth, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s...); err != nil {
			return "", err
		}
	}
	n.nodes[node] = ip
	n.order = append(n.order, node)
	return ip, nil
}

// Wrap returns the command line that runs argv inside node's namespace.
// `ip netns exec` execs in place, so the process id is argv's own.
func Wrap(node string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", NamespaceName(node)}, argv...)
}

// Block installs, for every node, the set of nodes it cannot exchange
// packets with, replacing whatever was cut before (an empty map heals).
// Each endpoint's namespace drops what arrives from the other (INPUT
// only: a sender sees silence, as on a real network, not the EPERM an
// OUTPUT rule would give it), so a cut is symmetric and holds for
// established connections too.
func (n *Net) Block(ctx context.Context, blocked map[string][]string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	sym := map[string]map[string]bool{}
	add := func(a, b string) {
		if sym[a] == nil {
			sym[a] = map[string]bool{}
		}
		sym[a][b] = true
	}
	for a, bs := range blocked {
		for _, b := range bs {
			if a != b {
				add(a, b)
				add(b, a)
			}
		}
	}
	var errs []error
	for _, node := range n.order {
		var rules bytes.Buffer
		rules.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
		peers := make([]string, 0, len(sym[node]))
		for p := range sym[node] {
			peers = append(peers, p)
		}
		sort.Strings(peers)
		for _, p := range peers {
			ip := n.nodes[p]
			if ip == "" {
				errs = append(errs, fmt.Errorf("netns: unknown node %q", p))
				continue
			}
			fmt.Fprintf(&rules, "-A INPUT -s %s/32 -j DROP\n", ip)
		}
		rules.WriteString("COMMIT\n")
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", NamespaceName(node), "iptables-restore", "-w")
		cmd.Stdin = &rules
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("netns: iptables-restore in %s: %v: %s", node, err, out))
		}
	}
	return errors.Join(errs...)
}

// Heal removes every cut.
func (n *Net) Heal(ctx context.Context) error { return n.Block(ctx, nil) }

// Close removes everything this run created (and any leftovers with the
// prefix) and releases the lock. Processes still running in the
// namespaces are killed first, since a namespace with processes in it
// outlives its name.
func (n *Net) Close() error {
	_, err := cleanup()
	if n.lock != nil {
		held.Store(false)
		n.lock.Close()
		n.lock = nil
	}
	return err
}

// Leftovers lists what exists with the harness's prefix: namespaces,
// links (bridge and veths) and host iptables rules.
func Leftovers() ([]string, error) {
	var out []string
	nss, err := namespaces()
	if err != nil {
		return nil, err
	}
	for _, ns := range nss {
		out = append(out, "netns "+ns)
	}
	links, err := links()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		out = append(out, "link "+l)
	}
	rules, err := hostRules()
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		out = append(out, "iptables "+r)
	}
	return out, nil
}

// ErrBusy means a live seqjepsen run holds the host-wide lock.
var ErrBusy = errors.New("netns: a seqjepsen run is in progress on this host (it holds " + lockPath + "); wait for it, or stop it with Ctrl-C")

// CheckFree returns ErrBusy while a live run holds the host-wide lock, so
// that a second run is refused before it writes anything. The run takes
// the lock itself later (a run starting in between still fails then).
func CheckFree() error {
	lock, err := takeLock()
	if errors.Is(err, ErrBusy) {
		return err
	}
	if lock != nil {
		lock.Close()
	}
	return nil
}

// takeLock takes the host-wide lock without waiting. The kernel drops it
// when its holder dies, so a killed run never blocks the next one.
func takeLock() (*os.File, error) {
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("netns: lock %s: %w", lockPath, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, ErrBusy
	}
	return lock, nil
}

// Cleanup removes every namespace, link and host rule with the harness's
// prefix, killing processes left in those namespaces, and returns what it
// removed. It is what `seqjepsen cleanup` runs (every netns run also starts
// and ends with it). It refuses with ErrBusy while a live run holds the
// lock, so it never pulls the network from under a run in progress.
func Cleanup() ([]string, error) {
	lock, err := takeLock()
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	return cleanup()
}

// held says whether a Net of this process holds the host-wide lock.
var held atomic.Bool

// Abort tears down this process's network at once, as an aborted run
// must: while a run of this process holds the lock (its network may be
// half built, or in use), without waiting for it; otherwise as Cleanup,
// which refuses with ErrBusy while another run holds the lock, so an
// abort that comes after its own run let go never removes another's.
func Abort() ([]string, error) {
	if held.Load() {
		return cleanup()
	}
	return Cleanup()
}

func cleanup() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var removed []string
	var errs []error
	nss, err := namespaces()
	if err != nil {
		return nil, err
	}
	for _, ns := range nss {
		for _, pid := range nsPids(ctx, ns) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				removed = append(removed, fmt.Sprintf("process %d in %s", pid, ns))
			}
		}
	}
	for _, ns := range nss {
		waitNoPids(ctx, ns)
		if err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "netns "+ns)
	}
	ls, err := links()
	if err != nil {
		errs = append(errs, err)
	}
	// Veths first: deleting a namespace already took most of them.
	sort.Slice(ls, func(i, j int) bool { return ls[i] != Bridge && ls[j] == Bridge })
	for _, l := range ls {
		if err := run(ctx, "ip", "link", "del", l); err != nil && linkExists(l) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "link "+l)
	}
	rules, err := hostRules()
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range rules {
		args := append([]string{"iptables", "-w"}, strings.Fields(strings.Replace(r, "-A ", "-D ", 1))...)
		for i, a := range args { // the comment is quoted in -S output
			args[i] = strings.Trim(a, `"`)
		}
		if err := run(ctx, args...); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "iptables "+r)
	}
	return removed, errors.Join(errs...)
}

func namespaces() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var nss []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) {
			nss = append(nss, f[0])
		}
	}
	return nss, nil
}

func nsPids(ctx context.Context, ns string) []int {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitNoPids(ctx context.Context, ns string) {
	for len(nsPids(ctx, ns)) > 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

func links() ([]string, error) {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip link show: %w", err)
	}
	var ls []string
	for _, line := range strings.Split(string(out), "\n") {
		// "7: seqj0: <...>" or "8: seqjv-arb1@if2: <...>"
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, Prefix) {
			ls = append(ls, name)
		}
	}
	return ls, nil
}

func linkExists(name string) bool {
	return exec.Command("ip", "link", "show", name).Run() == nil
}

func hostRules() ([]string, error) {
	out, err := exec.Command("iptables", "-w", "-S", "FORWARD").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables -S FORWARD: %w", err)
	}
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-A ") && strings.Contains(line, RuleTag) {
			rules = append(rules, line)
		}
	}
	return rules, nil
}

func run(ctx context.Context, argv ...string) error {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
