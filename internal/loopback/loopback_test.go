package loopback

import (
	"net"
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
