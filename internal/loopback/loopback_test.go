package loopback

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestHostIsLoopbackAndBindable(t *testing.T) {
	h := Host()
	ip := net.ParseIP(h)
	if ip == nil || !ip.IsLoopback() {
		t.Fatalf("Host() = %q, want a loopback address", h)
	}
	a, err := FreeAddr(h)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a, h+":") {
		t.Fatalf("FreeAddr(%q) = %q", h, a)
	}
	l, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("the free address %s cannot be bound: %v", a, err)
	}
	l.Close()
}

func TestFreeAddrNeverRepeatsAndAvoidsEphemeralPorts(t *testing.T) {
	h := Host()
	end := ephemeralStart()
	seen := map[string]bool{}
	for range 200 {
		a, err := FreeAddr(h)
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("FreeAddr returned %s twice", a)
		}
		seen[a] = true
		_, p, _ := net.SplitHostPort(a)
		port, _ := strconv.Atoi(p)
		if end > firstPort && (port < firstPort || port >= end) {
			t.Fatalf("port %d outside [%d, %d), where port-0 binds never land", port, firstPort, end)
		}
	}
	// Ports that are taken are never handed out.
	l, err := net.Listen("tcp", net.JoinHostPort(h, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	if bindable(h, taken) {
		t.Fatalf("port %d is listening but bindable says free", taken)
	}
}
