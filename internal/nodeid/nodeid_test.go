package nodeid

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, id := range []string{"a", "alloc1", "s1-r3", "arb.2_x", strings.Repeat("a", 63)} {
		if err := Validate(id); err != nil {
			t.Errorf("Validate(%q): %v", id, err)
		}
	}
	for id, want := range map[string]string{
		"":                         "empty",
		"bad id":                   `"bad id" is not valid`,
		"-a":                       "is not valid",
		strings.Repeat("a", 64):    "is 64 bytes",
		strings.Repeat("x", 1<<20): "is 1048576 bytes",
	} {
		err := Validate(id)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%.20q): %v, want it to say %q", id, err, want)
		}
		// The message never carries a huge id back whole.
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("Validate(%.20q): a %d-byte message", id, len(err.Error()))
		}
	}
}

func TestValidateAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1:7300", "[::1]:1", "arb1.example:65535", "[::]:7301"} {
		if err := ValidateAddr("raft_addr", a); err != nil {
			t.Errorf("ValidateAddr(%q): %v", a, err)
		}
	}
	for a, want := range map[string]string{
		"":                         "is not host:port",
		"not an address":           "is not host:port",
		"foo:0":                    "the port must be 1..65535",
		"bar:99999999":             "the port must be 1..65535",
		"bar:http":                 "the port must be 1..65535",
		":7301":                    "has no host",
		strings.Repeat("h", 1<<20): "is 1048576 bytes",
	} {
		err := ValidateAddr("raft_addr", a)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "raft_addr") {
			t.Errorf("ValidateAddr(%.20q): %v, want it to name raft_addr and say %q", a, err, want)
		}
	}
}
