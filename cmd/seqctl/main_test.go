package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/localcluster"
)

// result is one seqctl invocation as a user sees it.
type result struct {
	code           int
	stdout, stderr string
}

// seqctl runs the command line in-process.
func seqctl(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// ok runs seqctl and fails the test unless it exits 0.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := seqctl(t, args...)
	if r.code != 0 {
		t.Fatalf("seqctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// reusable is a cluster shared by the tests of one round: with -count N
// every test runs N times in this process, and the tests use fixed user
// and group ids, so each round gets fresh clusters. A round starts when a
// test that already ran asks again.
type reusable struct {
	shards int
	mu     sync.Mutex
	c      *localcluster.Cluster
	err    error
	seen   map[string]bool
}

var (
	shared    = &reusable{shards: 0}
	msgShared = &reusable{shards: 1}
)

func (r *reusable) get(t *testing.T) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[t.Name()] {
		r.close()
	}
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	r.seen[t.Name()] = true
	if r.c == nil && r.err == nil {
		r.c, r.err = startCluster(r.shards)
	}
	if r.err != nil {
		t.Fatalf("start cluster: %v", r.err)
	}
	return r.c.GatewayAddr()
}

// close ends the round: the next test starts a new cluster.
func (r *reusable) close() {
	if r.c != nil {
		r.c.Close()
	}
	r.c, r.err, r.seen = nil, nil, nil
}

// sharedCluster is one cluster for the tests that do not change its
// membership; TestMain closes it.
func sharedCluster(t *testing.T) string { return shared.get(t) }

// msgCluster is one cluster with a 3-replica message store for the tests
// that only send and read; TestMain closes it. Each test uses its own
// users so that they do not see each other's messages.
func msgCluster(t *testing.T) string { return msgShared.get(t) }

// ownCluster is a cluster for one test that changes it.
func ownCluster(t *testing.T) *localcluster.Cluster {
	t.Helper()
	return ownClusterShards(t, 0)
}

// ownClusterShards is ownCluster with message-store shards.
func ownClusterShards(t *testing.T, shards int) *localcluster.Cluster {
	t.Helper()
	c, err := startCluster(shards)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startCluster starts a cluster with the given number of message-store
// shards (0 for none).
func startCluster(shards int) (*localcluster.Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return localcluster.Start(ctx, localcluster.Options{Fast: true, Lease: time.Second, Shards: shards})
}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.close()
	msgShared.close()
	os.Exit(code)
}

// fields splits a table's lines into cells.
func fields(s string) [][]string {
	var out [][]string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		out = append(out, strings.Fields(l))
	}
	return out
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--bogus", "status"}, "flag provided but not defined: -bogus"},
		{[]string{"--timeout", "0s", "status"}, "--timeout 0s: give a positive duration"},
		{[]string{"--addr", "nohostport", "status"}, `--addr "nohostport" is not host:port`},
		{[]string{"--addr", "127.0.0.1:99999", "status"}, `--addr "127.0.0.1:99999" is not host:port with a port 1..65535`},
		{[]string{"--addr", "127.0.0.1:", "status"}, `--addr "127.0.0.1:" is not host:port`},
		{[]string{"--addr", "127.0.0.1:0", "status"}, `--addr "127.0.0.1:0" is not host:port`},
		{[]string{"--json", "--json", "status"}, "--json is given twice; give it once"},
		{[]string{"next"}, "next: missing KEY"},
		{[]string{"current"}, "current: missing KEY"},
		{[]string{"next", "abc"}, `key "abc" is not a positive integer`},
		{[]string{"next", "1", "-5"}, `key "-5" is not a positive integer`},
		{[]string{"next", "1.5"}, `key "1.5" is not a positive integer`},
		{[]string{"next", "0"}, "key 0 is reserved; keys start at 1"},
		{[]string{"current", "0"}, "key 0 is reserved; keys start at 1"},
		{[]string{"next", "18446744073709551616"}, "is too large"},
		{[]string{"next", "7", "--json"}, "global flags such as --json go before the command"},
		{[]string{"status", "--json"}, "status: flag provided but not defined: -json (global flags such as --json go before the command)"},
		{[]string{"sync", "--user", "2", "--addr", "127.0.0.1:1"}, "(global flags such as --addr go before the command)"},
		{[]string{"group", "create", "-5", "--owner", "1"}, "flag provided but not defined: -5 (ids and seqs are positive numbers)"},
		{[]string{"sync", "--user", "2", "--after", "-1"}, `invalid value "-1" for flag -after: parse error (ids, seqs and counts are not negative)`},
		{[]string{"next", "--"}, "next: missing KEY"},
		{[]string{"replicas", "--shard", ""}, "--shard is empty"},
		{[]string{"routes", "extra"}, "routes takes no arguments"},
		{[]string{"status", "--verbose"}, "flag provided but not defined: -verbose"},
		{[]string{"drain"}, "drain: missing NODE"},
		{[]string{"drain", "a", "b"}, "drain takes one NODE"},
		{[]string{"drain", "bad id"}, `node id "bad id" is not valid`},
		{[]string{"drain", "alloc1", "--wait-timeout", "-1s"}, "--wait-timeout -1s"},
		{[]string{"drain", "alloc1", "--wait-timeout", "1000000h"}, "--wait-timeout is for use with --wait"},
		{[]string{"arbiter"}, "arbiter: missing subcommand"},
		{[]string{"arbiter", "promote", "arb1"}, `unknown subcommand "promote"`},
		{[]string{"arbiter", "join", "arb4", "--grpc-addr", "127.0.0.1:1"}, "--raft-addr is required"},
		{[]string{"arbiter", "join", "arb4", "--raft-addr", "127.0.0.1:1"}, "--grpc-addr is required"},
		{[]string{"arbiter", "join", "--raft-addr", "x", "--grpc-addr", "127.0.0.1:1", "arb4"}, `--raft-addr "x" is not host:port`},
		{[]string{"arbiter", "join", "--raft-addr", "127.0.0.1:1", "--grpc-addr", "127.0.0.1:2"}, "arbiter join: missing ID"},
		{[]string{"arbiter", "join", "arb4", "--raft-addr", "foo:0", "--grpc-addr", "127.0.0.1:2"}, `--raft-addr "foo:0": the port must be 1..65535`},
		{[]string{"arbiter", "join", "arb4", "--raft-addr", "127.0.0.1:1", "--grpc-addr", "bar:99999999"}, `--grpc-addr "bar:99999999": the port must be 1..65535`},
		{[]string{"arbiter", "join", "arb4", "--raft-addr", ":7301", "--grpc-addr", "127.0.0.1:2"}, `--raft-addr ":7301" has no host`},
		{[]string{"arbiter", "join", "arb4", "--raft-addr", "0.0.0.0:7301", "--grpc-addr", "127.0.0.1:2"}, `--raft-addr "0.0.0.0:7301": 0.0.0.0 means every interface, and other nodes cannot dial it`},
		{[]string{"arbiter", "join", "arb4", "--raft-addr", "127.0.0.1:1", "--grpc-addr", "[::]:7300"}, `--grpc-addr "[::]:7300": :: means every interface`},
		{[]string{"arbiter", "join", "arb4", "--raft-addr", "127.0.0.1:1", "--grpc-addr", "127.0.0.1:2", "--gossip-addr", "0.0.0.0:7302"}, `--gossip-addr "0.0.0.0:7302": 0.0.0.0 means every interface`},
		{[]string{"drain", strings.Repeat("x", 1<<20)}, "is 1048576 bytes"},
		{[]string{"arbiter", "remove"}, "arbiter remove: missing ID"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			// Had any of these reached a server, the exit code would be 0
			// or 1, not 2.
			r := seqctl(t, tc.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2; stderr: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

func TestHelpListsEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		out := ok(t, args...)
		for _, want := range []string{"next KEY", "current KEY", "routes", "status", "drain NODE", "--wait", "arbiter join ID", "--raft-addr", "arbiter remove ID", "--addr", "--json", "--timeout",
			"send --from A --to B", "send --from A --group G", "sync --user B", "tail --user B", "unread --user B", "read --user B", "history --user B",
			"recall --from A --msg ID", "delete --user B --msg ID", "group create G", "group add G", "group remove G", "group show G", "group sync G", "group history G"} {
			if !strings.Contains(out, want) {
				t.Errorf("seqctl %v: usage lacks %q:\n%s", args, want, out)
			}
		}
	}
	for _, args := range [][]string{{"drain", "-h"}, {"help", "drain"}} {
		if out := ok(t, args...); !strings.Contains(out, "--wait-timeout D") || strings.Contains(out, "arbiter join ID") {
			t.Errorf("seqctl %v: want drain's own usage, got:\n%s", args, out)
		}
	}
}

func TestUnreachableAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{{"status"}, {"routes"}, {"next", "1"}, {"current", "1"}, {"drain", "alloc1"}, {"arbiter", "remove", "arb1"},
		{"send", "--from", "1", "--to", "2", "hi"}, {"sync", "--user", "2"}, {"tail", "--user", "2"}, {"unread", "--user", "2"}, {"group", "show", "7"}} {
		start := time.Now()
		r := seqctl(t, append([]string{"--addr", addr, "--timeout", "5s"}, args...)...)
		if r.code != 1 {
			t.Errorf("%v: exit %d, want 1", args, r.code)
		}
		if !strings.Contains(r.stderr, "seqctl: cannot reach "+addr) || !strings.Contains(r.stderr, "seqd demo") {
			t.Errorf("%v: stderr %q does not say the address is unreachable", args, r.stderr)
		}
		// A refused connection is known at once; waiting out --timeout
		// would make a typo in --addr look like a hang.
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%v: took %v to report a refused connection", args, d)
		}
	}
	// A listener that never answers (or a --timeout too short to connect)
	// is not called unreachable: the message names the timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	r := seqctl(t, "--addr", silent.Addr().String(), "--timeout", "300ms", "status")
	if want := "no connection to " + silent.Addr().String() + " within --timeout 300ms"; r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("status at a silent listener: exit %d, stderr %q, want 1 and %q", r.code, r.stderr, want)
	}
}
