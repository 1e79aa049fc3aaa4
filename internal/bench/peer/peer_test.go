package peer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func requireBinary(t *testing.T, bin string) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		t.Skipf("%s not installed", bin)
	}
}

// checkCleanedUp asserts the process is gone and its directory removed.
func checkCleanedUp(t *testing.T, p *process) {
	t.Helper()
	select {
	case <-p.exited:
	default:
		t.Errorf("%s still running after Close", p.name)
	}
	if _, err := os.Stat(p.dir); !os.IsNotExist(err) {
		t.Errorf("%s left its directory %s behind (%v)", p.name, p.dir, err)
	}
}

func TestMissingBinaryIsReportedWithInstallHint(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := StartRedis(context.Background())
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "redis-server not found in PATH; apt-get install redis-server") {
		t.Errorf("redis: %v", err)
	}
	_, err = StartEtcd(context.Background())
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "etcd not found in PATH") {
		t.Errorf("etcd: %v", err)
	}
}

func TestRedisIncrAndPipeline(t *testing.T) {
	requireBinary(t, "redis-server")
	ctx := context.Background()
	r, err := StartRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := NewRedisClient(r.Addr(), 4)
	for want := int64(1); want <= 3; want++ {
		if got, err := c.Incr(ctx, "seq:7").Result(); err != nil || got != want {
			t.Fatalf("INCR seq:7 = %d, %v; want %d", got, err, want)
		}
	}
	pipe := c.Pipeline()
	a, b, d := pipe.Incr(ctx, "seq:7"), pipe.Incr(ctx, "seq:8"), pipe.Incr(ctx, "seq:7")
	if _, err := pipe.Exec(ctx); err != nil || a.Val() != 4 || b.Val() != 1 || d.Val() != 5 {
		t.Fatalf("pipeline = [%d %d %d], %v; want [4 1 5]", a.Val(), b.Val(), d.Val(), err)
	}
	c.Close()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	checkCleanedUp(t, r.proc)
}

func TestEtcdIncrementIsAtomicUnderContention(t *testing.T) {
	requireBinary(t, "etcd")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := StartEtcd(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := DialEtcd(ctx, e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// Every increment of one hot key must return a distinct value, and the
	// counter must end at the number of increments.
	const workers, each = 8, 25
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				n, _, err := Increment(ctx, cli, "seq:hot")
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if seen[n] {
					errs <- errors.New("value handed out twice")
				}
				seen[n] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "seq:hot")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "200" || len(seen) != workers*each {
		t.Fatalf("counter %v (%v) after %d distinct increments, want 200", resp, err, len(seen))
	}
	cli.Close()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	checkCleanedUp(t, e.proc)
}

func TestProcessExitIsReportedWithOutput(t *testing.T) {
	requireBinary(t, "sh")
	sh, _ := exec.LookPath("sh")
	p, err := startProcess("fake-server", sh, "-c", "echo 'bind: address in use' >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	err = p.waitReady(context.Background(), 5*time.Second, func(context.Context) error { return errors.New("not yet") })
	if err == nil || !strings.Contains(err.Error(), "fake-server exited") || !strings.Contains(err.Error(), "bind: address in use") {
		t.Fatalf("got %v, want the exit and the output tail", err)
	}
}

func TestRedisInboxScriptAppendsOneEntryPerCopy(t *testing.T) {
	requireBinary(t, "redis-server")
	ctx := context.Background()
	r, err := StartRedisWith(ctx, RedisOptions{AppendFsync: "always"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := NewRedisClient(r.Addr(), 2)
	defer c.Close()
	if got, err := c.ConfigGet(ctx, "appendfsync").Result(); err != nil || got["appendfsync"] != "always" {
		t.Fatalf("appendfsync = %v, %v; want always", got, err)
	}
	in, err := NewInbox(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// Users 1 and 2 exchange three messages; user 3 gets one alone.
	for i, want := range [][]int64{{1, 1}, {2, 2}, {3, 3}} {
		got, err := in.Append(ctx, []byte("hello"), 1, 2)
		if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("send %d: seqs %v, %v; want %v", i, got, err, want)
		}
	}
	if got, err := in.Append(ctx, []byte("solo"), 3); err != nil || len(got) != 1 || got[0] != 1 {
		t.Fatalf("one copy: %v, %v", got, err)
	}
	msgs, err := c.XRange(ctx, "inbox:2", "-", "+").Result()
	if err != nil || len(msgs) != 3 {
		t.Fatalf("inbox:2 = %v, %v; want 3 entries", msgs, err)
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("%d-1", i+1); m.ID != want || m.Values["body"] != "hello" {
			t.Errorf("inbox:2[%d] = %s %v; want id %s body hello", i, m.ID, m.Values, want)
		}
	}
	if n, _ := c.XLen(ctx, "inbox:3").Result(); n != 1 {
		t.Errorf("inbox:3 has %d entries, want 1", n)
	}
	if _, err := StartRedisWith(ctx, RedisOptions{AppendFsync: "sometimes"}); err == nil || !strings.Contains(err.Error(), "always, everysec or no") {
		t.Errorf("bad appendfsync: %v", err)
	}
}
