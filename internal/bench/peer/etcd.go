package peer

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is a single-node etcd started for a comparison, with its data in a
// temporary directory and client and peer URLs on free loopback ports.
type Etcd struct {
	proc *process
	addr string
}

// StartEtcd starts etcd and waits until /health reports healthy. The error
// wraps ErrNotInstalled when the binary is missing.
func StartEtcd(ctx context.Context) (*Etcd, error) {
	path, err := lookBinary("etcd", "etcd-server")
	if err != nil {
		return nil, err
	}
	cport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", cport)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", pport)
	args := []string{
		"--name", "seqbench", "--data-dir", "data",
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "seqbench=" + peerURL,
		"--initial-cluster-state", "new",
	}
	args = append(args, quietLogFlags(path)...)
	proc, err := startProcess("etcd", path, args...)
	if err != nil {
		return nil, err
	}
	e := &Etcd{proc: proc, addr: fmt.Sprintf("127.0.0.1:%d", cport)}
	err = proc.waitReady(ctx, 20*time.Second, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, client+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		proc.stop()
		return nil, err
	}
	return e, nil
}

// DialEtcd returns a clientv3 client for addr (one gRPC connection, as
// clientv3 always uses), with its logging off.
func DialEtcd(ctx context.Context, addr string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{addr},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		Context:     ctx,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", addr, err)
	}
	return cli, nil
}

// quietLogFlags returns the flags that limit etcd's log to errors, for the
// versions that have them (3.4 has --log-level, but only with the zap
// logger; 3.5 and later log with zap by default).
func quietLogFlags(path string) []string {
	out, _ := exec.Command(path, "--help").CombinedOutput()
	help := string(out)
	var flags []string
	if strings.Contains(help, "--logger") {
		flags = append(flags, "--logger", "zap")
	}
	if strings.Contains(help, "--log-level") {
		flags = append(flags, "--log-level", "error")
	}
	return flags
}

// Addr is the client host:port (gRPC and HTTP).
func (e *Etcd) Addr() string { return e.addr }

// Err reports whether the server has exited, and why.
func (e *Etcd) Err() error {
	select {
	case <-e.proc.exited:
		return e.proc.exitError()
	default:
		return nil
	}
}

// Close stops the server and removes its data.
func (e *Etcd) Close() error {
	if err := e.proc.stop(); err != nil {
		return fmt.Errorf("etcd cleanup: %w", err)
	}
	return nil
}
