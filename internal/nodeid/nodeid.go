// Package nodeid validates the ids operators give seqd nodes.
package nodeid

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
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
// host:port with a host and a port 1..65535.
func ValidateAddr(field, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if len(addr) > 300 {
		return fmt.Errorf("%s %q... is %d bytes; give host:port", field, addr[:16], len(addr))
	}
	if err != nil {
		return fmt.Errorf("%s %q is not host:port: %v", field, addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%s %q: the port must be 1..65535", field, addr)
	}
	if host == "" {
		return fmt.Errorf("%s %q has no host; other nodes dial it, so give the address they reach", field, addr)
	}
	return nil
}
