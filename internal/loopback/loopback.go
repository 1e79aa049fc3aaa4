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

// FreeAddr returns host:port with a port that was free on host a moment ago.
func FreeAddr(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
