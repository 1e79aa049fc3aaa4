// Package loopback gives each local test cluster a loopback address of its
// own.
//
// Clusters started side by side (go test runs packages in parallel) used to
// share 127.0.0.1. A node restarted after a kill binds its old port again,
// and in between another package's listener or outgoing connection could
// take that port. On Linux every address in 127.0.0.0/8 reaches the
// loopback interface, and a port bound on 127.a.b.c clashes only with the
// same port on that address or on the wildcard, so a cluster on an address
// of its own keeps its ports.
package loopback

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Host returns a random address in 127.0.0.0/8 that can be bound, or
// 127.0.0.1 where only that one can (macOS, for one).
func Host() string {
	for range 8 {
		ip := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
		if l, err := net.Listen("tcp", net.JoinHostPort(ip, "0")); err == nil {
			l.Close()
			return ip
		}
	}
	return "127.0.0.1"
}

// Ports FreeAddr picks from, below the kernel's ephemeral range.
const (
	firstPort = 10000
	// defaultEphemeral is where Linux's ephemeral range starts by default
	// (net.ipv4.ip_local_port_range).
	defaultEphemeral = 32768
)

var (
	mu sync.Mutex
	// handed holds the ports FreeAddr returned, per host.
	handed = map[string]map[int]bool{}
)

// FreeAddr returns host:port with a port that is free on host for TCP and
// UDP (memberlist binds both), that FreeAddr has not returned before in
// this process, and that lies below the kernel's ephemeral range.
//
// The caller binds the port later, not at once. A port the kernel chose
// for a port-0 bind could meanwhile go to the next port-0 listener, which
// CI saw as "bind: address already in use" for an arbiter's gossip port;
// the kernel picks port-0 ports only inside the ephemeral range.
func FreeAddr(host string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if handed[host] == nil {
		handed[host] = map[int]bool{}
	}
	if end := ephemeralStart(); end > firstPort {
		for range 256 {
			port := firstPort + rand.IntN(end-firstPort)
			if handed[host][port] || !bindable(host, port) {
				continue
			}
			handed[host][port] = true
			return net.JoinHostPort(host, strconv.Itoa(port)), nil
		}
	}
	// No room below the ephemeral range: a port the kernel picks.
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	handed[host][l.Addr().(*net.TCPAddr).Port] = true
	return l.Addr().String(), nil
}

// bindable reports whether port is free on host for TCP and UDP.
func bindable(host string, port int) bool {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// ephemeralStart returns the first port of the kernel's ephemeral range.
var ephemeralStart = sync.OnceValue(func() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeral
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return defaultEphemeral
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return defaultEphemeral
	}
	return n
})
