package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc"

	"github.com/seqd/seqd/internal/bugs"
	"github.com/seqd/seqd/internal/grpcconn"
	"github.com/seqd/seqd/jepsen/netns"
)

// netnsBackend runs each node in a namespace of its own on the harness's
// bridge, so links between nodes can be cut.
type netnsBackend struct{ n *netns.Net }

func (b *netnsBackend) name() string { return BackendNetns }

func (b *netnsBackend) addNode(ctx context.Context, id string) (string, error) {
	return b.n.AddNode(ctx, id)
}

func (b *netnsBackend) wrap(id string, argv []string) []string { return netns.Wrap(id, argv...) }

func (b *netnsBackend) canPartition() bool { return true }

func (b *netnsBackend) block(ctx context.Context, blocked map[string][]string) error {
	return b.n.Block(ctx, blocked)
}

func (b *netnsBackend) close() error { return b.n.Close() }

// localBackend runs every node on one loopback address, the cluster's own
// (internal/loopback). It needs no privileges and cannot cut links.
type localBackend struct{ host string }

func (localBackend) name() string { return BackendLocal }

func (b localBackend) addNode(context.Context, string) (string, error) { return b.host, nil }

func (localBackend) wrap(_ string, argv []string) []string { return argv }

func (localBackend) canPartition() bool { return false }

func (localBackend) block(context.Context, map[string][]string) error {
	return fmt.Errorf("the local backend cannot partition the network")
}

func (localBackend) close() error { return nil }

func setClockRate(ctx context.Context, httpAddr string, rate float64) error {
	url := "http://" + httpAddr + bugs.ClockPath + "?rate=" + strconv.FormatFloat(rate, 'f', -1, 64)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return err
	}
	resp, err := directHTTP.Do(req)
	if err != nil {
		return fmt.Errorf("clock failpoint at %s: %w", httpAddr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("clock failpoint at %s: %s: %s", httpAddr, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// directHTTP never goes through a proxy from the environment: the harness
// talks only to its own nodes.
var directHTTP = &http.Client{Transport: &http.Transport{Proxy: nil}}

// DialOptions are the gRPC options the harness uses to reach its nodes:
// seqd's own, and never a proxy from the environment.
func DialOptions() []grpc.DialOption {
	return append(grpcconn.DialOptions(), grpc.WithNoProxy())
}
