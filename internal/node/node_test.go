package node

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seqd/seqd/internal/datadir"
	"github.com/seqd/seqd/internal/raftnode"
)

// A node whose store cannot open its data frees the Raft port it bound,
// so a peer's connections to it are refused instead of left unanswered,
// and a node started again at once can bind it.
func TestFailedNewFreesTheRaftPort(t *testing.T) {
	dir := t.TempDir()
	// The node's own directory (its identity recorded)...
	d, err := datadir.Claim(dir, datadir.Identity{ClusterID: "seqd", NodeID: "s1-r1", Shard: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	// ...with a file where the store keeps its Badger directory: the store
	// role fails after the Raft port is bound.
	if err := os.MkdirAll(filepath.Join(dir, "store"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "store", "badger"), []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := ln.Addr().String()
	ln.Close()

	_, err = New(Config{ID: "s1-r1", Roles: []string{RoleStore}, DataDir: dir, GRPCAddr: "127.0.0.1:0", RaftAddr: raftAddr,
		Shard: "s1", StorePeers: []raftnode.Peer{{ID: "s1-r1", Addr: raftAddr}}, Arbiters: []string{"127.0.0.1:1"}})
	if err == nil {
		t.Fatal("New succeeded on a data directory whose Badger path is a file")
	}
	if !strings.Contains(err.Error(), "badger") {
		t.Fatalf("New: %v, want the store's failure to open Badger", err)
	}
	if c, err := net.Dial("tcp", raftAddr); err == nil {
		c.Close()
		t.Fatalf("the Raft port %s still accepts connections after New failed", raftAddr)
	}
	ln, err = net.Listen("tcp", raftAddr)
	if err != nil {
		t.Fatalf("binding the Raft port again after New failed: %v", err)
	}
	ln.Close()
}

// TestStoreNeedsFreeSpace: a store replica does not start on a disk with
// less free space than Badger needs to open (a write to a mapped page the
// file system cannot back kills the process instead of failing).
func TestStoreNeedsFreeSpace(t *testing.T) {
	defer func(old uint64) { minStoreSpace = old }(minStoreSpace)
	minStoreSpace = 1 << 62
	_, err := New(Config{ID: "s1-r1", Roles: []string{RoleStore}, DataDir: t.TempDir(), GRPCAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		Shard: "s1", StorePeers: []raftnode.Peer{{ID: "s1-r1", Addr: "127.0.0.1:7501"}}, Arbiters: []string{"127.0.0.1:1"}})
	if err == nil || !strings.Contains(err.Error(), "MiB free; a store replica needs at least") {
		t.Fatalf("New on a disk without the space: %v", err)
	}
}
