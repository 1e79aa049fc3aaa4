package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/seqd/seqd/internal/cliflag"
	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/router"
)

// seqdTarget is the cluster a run talks to: the one at --addr, or an
// in-process one started for the run.
type seqdTarget struct {
	addrs []string
	local *localcluster.Cluster
}

// openSeqd returns the cluster at addr (comma-separated bootstrap
// addresses) or, when addr is empty, starts a local one without a message
// store.
func openSeqd(ctx context.Context, addr string, stderr io.Writer) (*seqdTarget, error) {
	return openCluster(ctx, addr, stderr, localcluster.Options{ClusterID: "seqbench"})
}

// storeShards and storeReplicas shape the in-process cluster the message
// commands start: one store shard of three replicas (Raft, fsync on).
const (
	storeShards   = 1
	storeReplicas = 3
)

// openStore is openSeqd for the message commands: the local cluster also
// runs a store shard of three replicas. dataDir, if set, keeps the
// cluster's data there (the caller removes it).
func openStore(ctx context.Context, addr, dataDir string, stderr io.Writer) (*seqdTarget, error) {
	return openStoreRetaining(ctx, addr, dataDir, 0, stderr)
}

// openStoreRetaining is openStore with the local store's retention
// period (0: off).
func openStoreRetaining(ctx context.Context, addr, dataDir string, retention time.Duration, stderr io.Writer) (*seqdTarget, error) {
	return openCluster(ctx, addr, stderr, localcluster.Options{
		ClusterID: "seqbench", Shards: storeShards, StoreReplicas: storeReplicas, DataDir: dataDir, Retention: retention,
	})
}

func openCluster(ctx context.Context, addr string, stderr io.Writer, opts localcluster.Options) (*seqdTarget, error) {
	if addr != "" {
		return &seqdTarget{addrs: cliflag.SplitList(addr)}, nil
	}
	what := "3 arbiters, 2 AllocSvrs, a gateway"
	if opts.Shards > 0 {
		what = fmt.Sprintf("3 arbiters, 2 AllocSvrs, %d store shard(s) of %d replicas with fsync, a gateway", opts.Shards, opts.StoreReplicas)
	}
	fmt.Fprintf(stderr, "seqbench: no --addr; starting an in-process seqd cluster (%s) on loopback\n", what)
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := localcluster.Start(sctx, opts)
	if err != nil {
		return nil, fmt.Errorf("start local cluster: %w", err)
	}
	fmt.Fprintf(stderr, "seqbench: local cluster serving after %v; gateway %s\n", time.Since(start).Round(time.Millisecond), c.GatewayAddr())
	return &seqdTarget{addrs: []string{c.GatewayAddr()}, local: c}, nil
}

// client bootstraps a router client from the target's addresses; the
// client then sends each key straight to its AllocSvr. A cluster still
// starting gets up to 10 s to answer, once its port is open (probeAddrs).
func (t *seqdTarget) client(ctx context.Context, batching bool) (*router.Client, error) {
	if t.local == nil {
		if err := probeAddrs(ctx, t.addrs); err != nil {
			return nil, err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return router.New(cctx, router.Config{Addrs: t.addrs, DisableBatching: !batching})
}

// probeAddrs fails when every address has refused TCP connections for
// probeWait: nothing listens there, and the router's bootstrap would retry
// it for its whole 10 s. The wait covers a node started just before (`seqd
// demo &` then seqbench) that has not opened its port yet. An address that
// accepts, or does not answer at all (a slow or far host), passes: the
// bootstrap waits for it.
func probeAddrs(ctx context.Context, addrs []string) error {
	d := net.Dialer{Timeout: time.Second}
	for deadline := time.Now().Add(probeWait); ; {
		for _, a := range addrs {
			c, err := d.DialContext(ctx, "tcp", a)
			if err == nil {
				c.Close()
				return nil
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("--addr %s: connection refused for %v, nothing listens there; start seqd or give its gRPC address", strings.Join(addrs, ","), probeWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// probeWait is how long probeAddrs lets every address refuse.
const probeWait = 2 * time.Second

func (t *seqdTarget) Close() error {
	if t.local != nil {
		return t.local.Close()
	}
	return nil
}

// stageSource is where the stage report reads the store's metrics: the
// in-process cluster, the --metrics URL, or nowhere.
func (t *seqdTarget) stageSource(metricsURL string) gatherFunc {
	switch {
	case t.local != nil:
		return t.local.Gatherer().Gather
	case metricsURL != "":
		return scrapeMetrics(cliflag.SplitList(metricsURL)...)
	}
	return nil
}

// describe says what cluster a run measured.
func (t *seqdTarget) describe() string {
	if t.local == nil {
		return "seqd at " + strings.Join(t.addrs, ",")
	}
	s := fmt.Sprintf("in-process on loopback: %d arbiters, %d AllocSvrs", len(t.local.ArbiterAddrs()), len(t.local.AllocSvrs))
	if n := len(t.local.Stores); n > 0 {
		s += fmt.Sprintf(", %d store shard(s) × %d replicas (Raft, fsync on)", n, len(t.local.Stores[0]))
	}
	return s + ", a gateway"
}
