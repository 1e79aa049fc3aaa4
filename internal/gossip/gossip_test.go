package gossip

import (
	"net"
	"strconv"
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

// With an advertise host the member binds Addr but tells the pool the
// advertise host with the bound port, as a member behind NAT must: a peer
// that joined through the bound address knows it at the advertised one.
func TestAdvertiseHost(t *testing.T) {
	p1, err := Start(Config{Name: "n1", Addr: "127.0.0.1:0", AdvertiseHost: "127.0.0.2", Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()
	port := strconv.Itoa(int(p1.ml.LocalNode().Port))
	if want := "127.0.0.2:" + port; p1.Addr() != want {
		t.Errorf("bound 127.0.0.1:%s advertising 127.0.0.2: tells %s, want %s", port, p1.Addr(), want)
	}

	p2, err := Start(Config{Name: "n2", Addr: "127.0.0.1:0", Profile: "local"})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if err := p2.Join([]string{"127.0.0.1:" + port}); err != nil {
		t.Fatalf("join at the bound address 127.0.0.1:%s: %v", port, err)
	}
	if got, want := p2.MemberAddr("n1"), "127.0.0.2:"+port; got != want {
		t.Errorf("a peer knows n1 at %q, want the advertised %s", got, want)
	}
	if host, _, _ := net.SplitHostPort(p2.MemberAddr("n2")); host != "127.0.0.1" {
		t.Errorf("a member without an advertise host tells %s, want its bound 127.0.0.1", p2.MemberAddr("n2"))
	}
}
