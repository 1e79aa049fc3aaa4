// Package nodeid validates the ids and addresses operators give seqd nodes.
package nodeid

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var valid = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Validate returns an error saying what is wrong with id, or nil.
func Validate(id string) error {
	if id == "" {
		return fmt.Errorf("node id is empty; give every node a unique id such as \"alloc1\"")
	}
	if len(id) > 63 {
		return fmt.Errorf("node id %q... is %d bytes; use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", id[:16], len(id))
	}
	if !valid.MatchString(id) {
		return fmt.Errorf("node id %q is not valid; use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// ValidateAddr returns an error saying what is wrong with addr, an address
// a node advertises to others (field names it), or nil: it must be
// host:port with a host other nodes can dial and a port 1..65535.
func ValidateAddr(field, addr string) error {
	if len(addr) > 300 {
		return fmt.Errorf("%s %q... is %d bytes; give host:port", field, addr[:16], len(addr))
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q is not host:port: %v", field, addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%s %q: the port must be 1..65535", field, addr)
	}
	if host == "" {
		return fmt.Errorf("%s %q has no host, and other nodes cannot dial it; give the address they reach", field, addr)
	}
	if Unspecified(host) {
		return fmt.Errorf("%s %q: %s means every interface, and other nodes cannot dial it; give the address they reach", field, addr, host)
	}
	return nil
}

// Unspecified reports whether host is a listener's "every interface" host
// (empty, 0.0.0.0 or ::, in any spelling): an address to listen on, never
// one to dial from another machine.
func Unspecified(host string) bool {
	if host == "" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.WithZone("").Unmap().IsUnspecified()
}

// ValidateHost returns an error saying what is wrong with host, the host
// part of the addresses a node advertises (field names it), or nil: an IP
// address or a DNS name, with no port, that other nodes can dial.
func ValidateHost(field, host string) error {
	const want = "give the IP address or name other nodes reach this one at, e.g. 10.0.0.1 or arb1.example"
	switch {
	case host == "":
		return fmt.Errorf("%s is empty; %s", field, want)
	case len(host) > 253:
		return fmt.Errorf("%s %q... is %d bytes; a host name has at most 253", field, host[:16], len(host))
	}
	if _, err := netip.ParseAddr(host); err == nil {
		if Unspecified(host) {
			return fmt.Errorf("%s %q means every interface, and other nodes cannot dial it; %s", field, host, want)
		}
		return nil
	}
	if _, port, err := net.SplitHostPort(host); err == nil && port != "" && strings.Trim(port, "0123456789") == "" {
		return fmt.Errorf("%s %q has a port; give the host only (each listener's own port is advertised with it)", field, host)
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		if _, err := netip.ParseAddr(host[1 : len(host)-1]); err == nil {
			return fmt.Errorf("%s %q: write an IPv6 address without brackets", field, host)
		}
	}
	if !hostName(host) {
		return fmt.Errorf("%s %q is neither an IP address nor a host name (dot-separated labels of letters, digits, '-' and '_'); %s", field, host, want)
	}
	return nil
}

// hostName reports whether s is a DNS name: dot-separated labels of 1-63
// letters, digits, '-' or '_' (Docker and Compose names use it), not
// starting or ending with '-', with an optional trailing dot. The last
// label is not all digits, so a mistyped IPv4 address (10.0.0.256, 10.0.0)
// is not taken for a name.
func hostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return false
	}
	labels := strings.Split(s, ".")
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return false
	}
	for _, label := range labels {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// ResolveIP returns host if it is an IP address (or empty), else one of
// the IPs it resolves to, IPv4 first (as Raft's own resolution picks):
// Raft and memberlist advertise, and memberlist binds, only IPs.
func ResolveIP(host string) (string, error) {
	if host == "" {
		return "", nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.String(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err == nil && len(ips) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		return "", err
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap().String(), nil
		}
	}
	return ips[0].String(), nil
}
