package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/seqd/seqd/internal/cliflag"
	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/internal/node"
	"github.com/seqd/seqd/keyspace"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
	"github.com/seqd/seqd/router"
)

func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("seqd demo", flag.ContinueOnError)
	var (
		addr      = fs.String("addr", "127.0.0.1:7400", "gateway gRPC address")
		httpAddr  = fs.String("http-addr", "127.0.0.1:7480", "metrics address for every node (empty disables)")
		data      = fs.String("data", "", "data directory (default: a temporary one, removed on exit)")
		arbiters  = fs.Int("arbiters", 3, "arbiter voters")
		allocs    = fs.Int("allocsvrs", 2, "AllocSvrs")
		logLevel  = fs.String("log-level", "error", "debug, info, warn or error")
		logFormat = fs.String("log-format", "text", "text or json")
		once      = fs.Bool("once", false, "start, print a sample, and exit (for scripts and tests)")
	)
	if err := cliflag.Parse(fs, args); err != nil {
		return err
	}
	if *arbiters < 1 || *arbiters%2 == 0 || *arbiters > 7 {
		return cliflag.Usagef("--arbiters %d: use an odd number from 1 to 7", *arbiters)
	}
	if *allocs < 1 || *allocs > 16 {
		return cliflag.Usagef("--allocsvrs %d: use 1 to 16", *allocs)
	}
	logger, levels, err := newLeveledLogger(*logLevel, *logFormat)
	if err != nil {
		return err
	}
	// Take the public ports first so a busy one fails before anything starts.
	var metricsLn net.Listener
	if *httpAddr != "" {
		if metricsLn, err = net.Listen("tcp", *httpAddr); err != nil {
			return fmt.Errorf("metrics listen %s: %w (pick another with --http-addr, or --http-addr '' to disable)", *httpAddr, err)
		}
		defer metricsLn.Close()
	}
	probe, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("gateway listen %s: %w (pick another with --addr)", *addr, err)
	}
	probe.Close()

	fmt.Printf("seqd demo: starting %d arbiters, %d AllocSvrs, a 3-replica message store and a gateway on loopback\n", *arbiters, *allocs)
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := localcluster.Start(startCtx, localcluster.Options{
		Arbiters: *arbiters, AllocSvrs: *allocs, GatewayAddr: *addr, DataDir: *data, Host: "127.0.0.1",
		ClusterID: "seqd-demo", Logger: logger, Shards: 1, StoreReplicas: 3,
	})
	if err != nil {
		return err
	}
	defer func() {
		// Stopping the whole cluster at once makes its nodes' Raft
		// transports report each other gone; at the default level those
		// errors are only noise on the way out.
		if levels.Level() == slog.LevelError {
			levels.Set(slog.LevelError + 1)
		}
		c.Close()
	}()
	if metricsLn != nil {
		// As every node serves them (seqd start --http-addr).
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(c.Gatherer(), promhttp.HandlerOpts{}))
		mux.Handle("/healthz", node.Healthz(c.Health))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(metricsLn)
		defer srv.Close()
	}

	// Show it working: a few numbers through the gateway, as a client sees them.
	cl, err := router.New(ctx, router.Config{Addrs: []string{c.GatewayAddr()}})
	if err != nil {
		return err
	}
	var sample []uint64
	for i := 0; i < 3; i++ {
		s, err := cl.Next(ctx, 42)
		if err != nil {
			cl.Close()
			return fmt.Errorf("demo allocation failed: %w", err)
		}
		sample = append(sample, s)
	}
	msgs := cl.Messages()
	sent, err := msgs.Send(ctx, &seqdv1.SendRequest{Sender: 1, Recipients: []uint64{2}, ClientMsgId: fmt.Sprintf("demo-%d", time.Now().UnixNano()),
		Conversation: &seqdv1.Conversation{Type: seqdv1.ConversationType_CONVERSATION_TYPE_DIRECT, Id: keyspace.DirectConversationID(1, []uint64{2})},
		Body:         []byte("hello from seqd demo")})
	if err != nil {
		cl.Close()
		return fmt.Errorf("demo send failed: %w", err)
	}
	synced, err := msgs.Sync(ctx, &seqdv1.SyncRequest{User: 2})
	cl.Close()
	if err != nil {
		return fmt.Errorf("demo sync failed: %w", err)
	}

	fmt.Printf("gateway   %s\n", c.GatewayAddr())
	if metricsLn != nil {
		fmt.Printf("metrics   http://%s/metrics\n", metricsLn.Addr())
	}
	if *data == "" {
		fmt.Printf("data      %s (removed on exit)\n", c.DataDir())
	} else {
		fmt.Printf("data      %s\n", c.DataDir())
	}
	fmt.Printf("sample    Next(42) x3 = %v\n", sample)
	fmt.Printf("          Send(1 -> 2) = message %s; Sync(user 2) = %d event(s), checkpoint %d\n", sent.MessageId, len(synced.Events), synced.NextCheckpoint)
	if *once {
		fmt.Println("done (--once): the cluster stops now")
		return nil
	}
	fmt.Printf("try       go run ./cmd/seqctl --addr %s next 42\n", c.GatewayAddr())
	fmt.Printf("          go run ./cmd/seqctl --addr %s send --from 1 --to 2 \"hi\"\n", c.GatewayAddr())
	fmt.Printf("          go run ./cmd/seqctl --addr %s sync --user 2\n", c.GatewayAddr())
	fmt.Printf("          go run ./cmd/seqctl --addr %s status\n", c.GatewayAddr())
	fmt.Println("ready")
	<-ctx.Done()
	fmt.Println("seqd demo: shutting down")
	return nil
}
