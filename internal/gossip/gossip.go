// Package gossip runs the hashicorp/memberlist pool that arbiters and
// AllocSvrs share, and tracks what it says about each member's liveness.
package gossip

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/seqd/seqd/internal/nodeid"
	"github.com/seqd/seqd/internal/slogadapt"
)

// State is a member's liveness as the pool sees it.
type State string

const (
	Unknown State = "unknown"
	Alive   State = "alive"
	Suspect State = "suspect"
	Dead    State = "dead"
	Left    State = "left"
)

// Profile picks memberlist's timing: "lan" (the default) or "local" (fast
// probes, for loopback clusters and tests).
type Profile string

// Config configures a pool member.
type Config struct {
	// Name must be unique in the pool; see ArbiterName and AllocSvrName.
	Name string
	// Addr is host:port for both TCP and UDP. Port 0 picks a free port.
	Addr string
	// AdvertiseHost, if set, is the host the pool is told instead of
	// Addr's, with the bound port: peers behind NAT, or on another network
	// than Addr's, reach this member there. A name is resolved to one of
	// its IPs, as Addr's is.
	AdvertiseHost string
	Profile       Profile
	Logger        *slog.Logger
	// OnChange, if set, is called after any member's state changed.
	OnChange func()
}

// ArbiterName is an arbiter's member name.
func ArbiterName(id string) string { return "arbiter/" + id }

// AllocSvrName is an AllocSvr instance's member name.
func AllocSvrName(id string, inc uint64) string {
	return "allocsvr/" + id + "/" + strconv.FormatUint(inc, 10)
}

// Pool is one member of the gossip pool.
type Pool struct {
	ml       *memberlist.Memberlist
	mu       sync.Mutex
	states   map[string]State
	onChange func()
}

// Start creates the member and binds its port. Call Join to meet others.
func Start(cfg Config) (*Pool, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: bad port", cfg.Addr)
	}
	if host, err = nodeid.ResolveIP(host); err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", cfg.Addr, err)
	}
	var mc *memberlist.Config
	if cfg.Profile == "local" {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	p := &Pool{states: make(map[string]State), onChange: cfg.OnChange}
	mc.Name = cfg.Name
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertisePort = port
	if cfg.AdvertiseHost != "" {
		if mc.AdvertiseAddr, err = nodeid.ResolveIP(cfg.AdvertiseHost); err != nil {
			return nil, fmt.Errorf("gossip advertise host %q: %w", cfg.AdvertiseHost, err)
		}
	}
	mc.Events = (*events)(p)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	mc.Logger = slogadapt.StdLog(logger.With("component", "gossip").WithGroup(""))
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip listen %s: %w", cfg.Addr, err)
	}
	p.ml = ml
	return p, nil
}

// Addr returns the address the pool is told: the advertise host, else the
// bound IP, with the bound port (useful when the port was 0).
func (p *Pool) Addr() string {
	n := p.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Join contacts seeds; it succeeds if at least one answered.
func (p *Pool) Join(seeds []string) error {
	if len(seeds) == 0 {
		return nil
	}
	_, err := p.ml.Join(seeds)
	return err
}

// State returns what the pool says about a member.
func (p *Pool) State(name string) State {
	// Never call into memberlist while holding p.mu: memberlist calls our
	// event delegate (which takes p.mu) while holding its own node lock.
	p.mu.Lock()
	s, ok := p.states[name]
	p.mu.Unlock()
	if ok {
		return s
	}
	for _, m := range p.ml.Members() {
		if m.Name == name {
			return toState(m.State)
		}
	}
	return Unknown
}

// IsDown reports whether the pool has seen the member die or leave.
func (p *Pool) IsDown(name string) bool {
	s := p.State(name)
	return s == Dead || s == Left
}

// MemberAddr returns the gossip address of a live member, or "".
func (p *Pool) MemberAddr(name string) string {
	for _, m := range p.ml.Members() {
		if m.Name == name {
			return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
		}
	}
	return ""
}

// NumMembers returns how many live members this member knows, itself included.
func (p *Pool) NumMembers() int { return p.ml.NumMembers() }

// Members returns the live members' names.
func (p *Pool) Members() []string {
	var out []string
	for _, m := range p.ml.Members() {
		out = append(out, m.Name)
	}
	return out
}

// Kill stops the member without saying goodbye, as a crash would: the
// others find out through failed probes.
func (p *Pool) Kill() error {
	if p == nil || p.ml == nil {
		return nil
	}
	return p.ml.Shutdown()
}

// Close leaves the pool and stops the member.
func (p *Pool) Close() error {
	if p == nil || p.ml == nil {
		return nil
	}
	_ = p.ml.Leave(0)
	return p.ml.Shutdown()
}

func toState(s memberlist.NodeStateType) State {
	switch s {
	case memberlist.StateAlive:
		return Alive
	case memberlist.StateSuspect:
		return Suspect
	case memberlist.StateDead:
		return Dead
	case memberlist.StateLeft:
		return Left
	}
	return Unknown
}

type events Pool

// set runs on memberlist's goroutines, under memberlist's node lock.
func (e *events) set(n *memberlist.Node, s State) {
	e.mu.Lock()
	e.states[n.Name] = s
	e.mu.Unlock()
	if e.onChange != nil {
		e.onChange()
	}
}

func (e *events) NotifyJoin(n *memberlist.Node)   { e.set(n, Alive) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.set(n, toState(n.State)) }
func (e *events) NotifyLeave(n *memberlist.Node) {
	if n.State == memberlist.StateLeft {
		e.set(n, Left)
		return
	}
	e.set(n, Dead)
}
