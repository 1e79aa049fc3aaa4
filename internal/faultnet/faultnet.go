// Package faultnet is a dialer whose connections a test can cut and heal,
// to partition one in-process node from others without root.
package faultnet

import (
	"context"
	"errors"
	"net"
	"sync"
)

// ErrCut is returned by Dial while the dialer is cut.
var ErrCut = errors.New("faultnet: link is cut")

// Dialer dials TCP, remembering its connections so Cut can break them.
type Dialer struct {
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

// New returns a healed dialer.
func New() *Dialer { return &Dialer{conns: make(map[net.Conn]struct{})} }

// Dial is a grpc.WithContextDialer function.
func (d *Dialer) Dial(ctx context.Context, addr string) (net.Conn, error) {
	d.mu.Lock()
	cut := d.cut
	d.mu.Unlock()
	if cut {
		return nil, ErrCut
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut {
		c.Close()
		return nil, ErrCut
	}
	tc := &trackedConn{Conn: c, d: d}
	d.conns[tc] = struct{}{}
	return tc, nil
}

// Cut breaks every open connection and refuses new ones.
func (d *Dialer) Cut() {
	d.mu.Lock()
	d.cut = true
	conns := d.conns
	d.conns = make(map[net.Conn]struct{})
	d.mu.Unlock()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
}

// Heal allows connections again.
func (d *Dialer) Heal() {
	d.mu.Lock()
	d.cut = false
	d.mu.Unlock()
}

type trackedConn struct {
	net.Conn
	d    *Dialer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.d.mu.Lock()
		delete(c.d.conns, c)
		c.d.mu.Unlock()
	})
	return c.Conn.Close()
}
