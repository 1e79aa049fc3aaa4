// Package peer starts the systems seqd is compared against (redis-server,
// etcd and a no-op gRPC Sequencer) on loopback ports, and connects to them
// with the clients their users use (go-redis, clientv3).
package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotInstalled is returned when a peer's binary is not in PATH.
var ErrNotInstalled = errors.New("not installed")

// lookBinary finds bin in PATH, or explains how to install it.
func lookBinary(bin, aptPkg string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s not found in PATH; apt-get install %s: %w", bin, aptPkg, ErrNotInstalled)
	}
	return path, nil
}

// freePort returns a loopback port nobody listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is a server binary started for a comparison, with its own
// temporary directory.
type process struct {
	name   string
	cmd    *exec.Cmd
	dir    string
	out    *tail
	exited chan struct{}
	err    error // from Wait, valid once exited is closed
}

// startProcess runs path with args in a fresh temporary directory.
func startProcess(name, path string, args ...string) (*process, error) {
	dir, err := os.MkdirTemp("", "seqbench-"+name+"-")
	if err != nil {
		return nil, err
	}
	p := &process{name: name, dir: dir, out: &tail{max: 4096}, exited: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// exitError reports why the process ended, with the tail of its output.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited (%v): %s", p.name, p.err, p.out.String())
}

// waitReady polls ready until it succeeds, the process exits or ctx ends.
func (p *process) waitReady(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		select {
		case <-p.exited:
			return p.exitError()
		default:
		}
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		last = ready(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %v; output: %s", p.name, timeout, last, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop ends the process (SIGTERM, then SIGKILL after 5 s) and removes its
// directory.
func (p *process) stop() error {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
	return os.RemoveAll(p.dir)
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return "(no output)"
	}
	return s
}
