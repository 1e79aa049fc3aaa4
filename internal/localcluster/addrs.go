package localcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/seqd/seqd/internal/loopback"
)

// addrsFile, in a kept data directory (Options.DataDir), holds the
// addresses the cluster first listened on. The Raft membership stored in
// the data names them, so a cluster started again on that directory must
// listen on the same ones: on fresh random ports its voters could never
// reach each other.
const addrsFile = "addresses.json"

// addrBook is addrsFile's content: the loopback address, and each
// listener's address by key ("arb1/raft", "s1-r2/grpc", "arb1/gossip").
type addrBook struct {
	Host  string            `json:"host"`
	Addrs map[string]string `json:"addrs"`
}

// loadAddrs reads the address book of a kept data directory, if it has
// one; a temporary directory starts with an empty one.
func (c *Cluster) loadAddrs() error {
	c.book = addrBook{Addrs: map[string]string{}}
	if c.tmp != "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(c.opts.DataDir, addrsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &c.book); err != nil || c.book.Host == "" {
		return fmt.Errorf("localcluster: %s is not an address book (%v): remove the data directory to start afresh", filepath.Join(c.opts.DataDir, addrsFile), err)
	}
	if c.book.Addrs == nil {
		c.book.Addrs = map[string]string{}
	}
	return nil
}

// listen listens on key's stored address, or on a free port of the
// cluster's host (and stores it).
func (c *Cluster) listen(key string) (net.Listener, error) {
	addr, stored := c.book.Addrs[key]
	if !stored {
		addr = c.anyPort()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if stored {
			return nil, fmt.Errorf("localcluster: %s: listen on %s, where the data in %s expects it: %w", key, addr, c.opts.DataDir, err)
		}
		return nil, err
	}
	c.book.Addrs[key] = l.Addr().String()
	return l, nil
}

// listenNode opens node id's gRPC and Raft listeners (listen).
func (c *Cluster) listenNode(id string) (grpcLn, raftLn net.Listener, err error) {
	if grpcLn, err = c.listen(id + "/grpc"); err != nil {
		return nil, nil, err
	}
	if raftLn, err = c.listen(id + "/raft"); err != nil {
		grpcLn.Close()
		return nil, nil, err
	}
	return grpcLn, raftLn, nil
}

// freeAddr is key's stored address, or a free one (for memberlist, which
// binds its own sockets).
func (c *Cluster) freeAddr(key string) (string, error) {
	if a, ok := c.book.Addrs[key]; ok {
		return a, nil
	}
	a, err := loopback.FreeAddr(c.host)
	if err == nil {
		c.book.Addrs[key] = a
	}
	return a, err
}

// saveAddrs writes the address book into a kept data directory.
func (c *Cluster) saveAddrs() error {
	if c.tmp != "" {
		return nil
	}
	c.book.Host = c.host
	b, err := json.MarshalIndent(c.book, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.opts.DataDir, 0o755); err != nil {
		return err
	}
	p := filepath.Join(c.opts.DataDir, addrsFile)
	if err := os.WriteFile(p+".tmp", append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}
