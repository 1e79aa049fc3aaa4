package gossip

import (
	"net"
	"testing"
)

// A gossip address with a host name binds, and tells the pool, one of the
// name's IPs: memberlist given the name bound every interface and told
// the pool "[::]".
func TestHostNameBindsItsIP(t *testing.T) {
	p, err := Start(Config{Name: "n1", Addr: "localhost:0", Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	host, _, err := net.SplitHostPort(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Fatalf("localhost:0 bound and told %s, want a loopback IP", p.Addr())
	}
}

func TestBindIP(t *testing.T) {
	for in, want := range map[string]string{"": "", "10.0.0.1": "10.0.0.1", "::1": "::1"} {
		if got, err := bindIP(in); err != nil || got != want {
			t.Errorf("bindIP(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
