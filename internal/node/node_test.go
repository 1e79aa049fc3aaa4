package node

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/seqd/seqd/internal/raftnode"
)

// A node whose store cannot open its data frees the Raft port it bound,
// so a peer's connections to it are refused instead of left unanswered,
// and a node started again at once can bind it.
func TestFailedNewFreesTheRaftPort(t *testing.T) {
	dir := t.TempDir()
	// A file where the store keeps its Badger directory: the store role
	// fails after the Raft port is bound.
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
	t.Logf("New: %v", err)
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
